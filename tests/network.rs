//! Root-only integration tests of slipway's networking: real namespaces, a real bridge, the
//! Debian CNI plugins and iptables. Every test has its own run dir, data dir, bridge name
//! (`swt<random>`) and subnet (`10.213.X.0/24`), and a guard that tears everything down even
//! when the test fails. Traffic stays on loopback and inside the test's own namespaces.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use slipway::network::bridge::{Attachment, Network, NetworkConfig};
use slipway::network::host_guard::{rules_mentioning, HostService};
use slipway::network::netns::{is_netns, Netns, NetnsDir};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A third octet no other test of this process uses and no route of the host covers.
fn free_subnet() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (random_u64() % 256) as u32,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let routes = std::process::Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for _ in 0..256 {
        let octet = NEXT.fetch_add(1, Ordering::SeqCst) % 256;
        let prefix = format!("10.213.{octet}.");
        if !routes.contains(&prefix) {
            return format!("10.213.{octet}.0/24");
        }
    }
    panic!("no free 10.213.X.0/24 subnet on this host");
}

/// Everything one test creates; dropping it removes all of it.
struct TestNet {
    _temp: tempfile::TempDir,
    run_dir: PathBuf,
    netns_dir: Option<NetnsDir>,
    network: Network,
    subnet_prefix: String,
    attached: Vec<(PathBuf, String)>,
    /// Host links a test added itself (deleted on drop).
    extra_links: Vec<String>,
}

impl TestNet {
    fn new(host_services: Vec<HostService>) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the network integration tests need root (namespaces, bridges, iptables)"
        );
        let temp = tempfile::tempdir().expect("temp dir");
        let run_dir = temp.path().join("run");
        let data_dir = temp.path().join("data");
        std::fs::create_dir_all(&run_dir).unwrap();
        let subnet = free_subnet();
        let subnet_prefix = subnet.trim_end_matches("0/24").to_string();
        let bridge = format!("swt{:08x}", random_u64() as u32);
        let mut config = NetworkConfig::new(bridge, subnet.parse().unwrap(), data_dir);
        config.host_services = host_services;
        let network = Network::new(config).expect("valid network config");
        let netns_dir = NetnsDir::open(&run_dir).expect("netns dir");
        Self {
            _temp: temp,
            run_dir,
            netns_dir: Some(netns_dir),
            network,
            subnet_prefix,
            attached: Vec::new(),
            extra_links: Vec::new(),
        }
    }

    fn netns_dir(&self) -> &NetnsDir {
        self.netns_dir.as_ref().unwrap()
    }

    fn container(&mut self, id: &str) -> (Netns, Attachment) {
        let netns = self.netns_dir().create(id).expect("create netns");
        self.attached
            .push((netns.path().to_path_buf(), id.to_string()));
        let started = Instant::now();
        let attachment = self
            .network
            .attach(netns.path(), id, "eth0")
            .expect("attach");
        eprintln!(
            "attach {id}: {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        (netns, attachment)
    }

    fn detach(&self, netns: &Path, id: &str) {
        let started = Instant::now();
        self.network.detach(netns, id, "eth0").expect("detach");
        eprintln!(
            "detach {id}: {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for (path, id) in &self.attached {
            let _ = self.network.detach(path, id, "eth0");
        }
        for link in &self.extra_links {
            let _ = std::process::Command::new("ip")
                .args(["link", "delete", link])
                .output();
        }
        if let Some(dir) = self.netns_dir.take() {
            for name in dir.list().unwrap_or_default() {
                let _ = dir.delete(&name);
            }
            let _ = dir.release();
        }
        if let Err(e) = self.network.teardown_network() {
            eprintln!("teardown of {} failed: {e}", self.network.name());
        }
    }
}

/// Opens a TCP connection from inside `netns`.
fn connect_from(netns: &Netns, to: SocketAddr) -> std::io::Result<TcpStream> {
    netns
        .run_in(move || TcpStream::connect_timeout(&to, CONNECT_TIMEOUT))
        .expect("enter netns")
}

/// Sends `message` over a fresh connection from `netns` and returns what `listener` got.
fn round_trip(netns: &Netns, listener: &TcpListener, to: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut client = connect_from(netns, to).expect("connect");
    client.write_all(message).unwrap();
    drop(client);
    let (mut server_side, _) = listener.accept().unwrap();
    let mut received = Vec::new();
    server_side.read_to_end(&mut received).unwrap();
    received
}

/// The IPv4 default gateway in the calling thread's network namespace.
fn default_gateway_here() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/thread-self/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"00000000") && fields.get(7) == Some(&"00000000") {
            let gw = u32::from_str_radix(fields.get(2)?, 16).ok()?;
            Some(Ipv4Addr::from(u32::from_be(gw)))
        } else {
            None
        }
    })
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(&dir))
        .map(str::to_string)
        .collect()
}

#[test]
fn namespaces_are_created_entered_and_deleted_without_touching_the_host() {
    let test = TestNet::new(Vec::new());
    let dir = test.netns_dir();
    let host_ns = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    let netns = dir.create("c-enter").unwrap();
    assert!(is_netns(netns.path()));
    assert!(matches!(
        dir.create("c-enter"),
        Err(slipway::network::NetnsError::AlreadyExists { .. })
    ));
    assert!(dir.create("../escape").is_err());
    assert_eq!(dir.list().unwrap(), vec!["c-enter".to_string()]);

    use std::os::unix::fs::MetadataExt;
    let inside = netns
        .run_in(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino())
        .unwrap();
    assert_ne!(inside, host_ns.ino(), "run_in must enter the namespace");
    let after = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    assert_eq!(after.ino(), host_ns.ino(), "the caller's thread stays put");
    // A fresh namespace has only its own loopback, which is down until CNI's loopback runs.
    let links = netns
        .run_in(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
        .unwrap();
    assert!(links.contains("lo:") && !links.contains("eth0"));

    let path = netns.path().to_path_buf();
    netns.delete().unwrap();
    assert!(!path.exists());
    dir.delete("c-enter").expect("deleting twice succeeds");
    assert!(
        mounts_under(&path).is_empty(),
        "no mount left at {}",
        path.display()
    );
}

#[test]
fn two_containers_on_one_bridge_reach_each_other_via_the_gateway_route() {
    let mut test = TestNet::new(Vec::new());
    let (ns_a, a) = test.container("c-a");
    let (ns_b, b) = test.container("c-b");
    assert_ne!(a.ip, b.ip);
    assert!(a.ip.to_string().starts_with(&test.subnet_prefix));
    assert_eq!(a.gateway, test.network.gateway());
    assert!(a.host_veth.as_deref().is_some_and(link_exists));
    assert!(link_exists(test.network.bridge()));

    // The kernel's default route inside the container goes via the bridge gateway.
    let gateway = ns_a.run_in(default_gateway_here).unwrap();
    assert_eq!(gateway, Some(test.network.gateway()));

    // The loopback plugin brought `lo` up: a container talks to itself on 127.0.0.1.
    let (loop_listener, loop_addr) = ns_a
        .run_in(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            (l, addr)
        })
        .unwrap();
    assert_eq!(
        round_trip(&ns_a, &loop_listener, loop_addr, b"self"),
        b"self"
    );

    // b listens on its bridge address; a connects to it across the bridge.
    let b_ip = b.ip;
    let listener = ns_b
        .run_in(move || TcpListener::bind(SocketAddrV4::new(b_ip, 0)).unwrap())
        .unwrap();
    let to = listener.local_addr().unwrap();
    assert_eq!(round_trip(&ns_a, &listener, to, b"hello b"), b"hello b");

    test.network
        .check(ns_a.path(), "c-a", "eth0")
        .expect("CHECK passes on a fresh attachment");
    test.detach(ns_a.path(), "c-a");
    test.detach(ns_b.path(), "c-b");
}

#[test]
fn host_loopback_is_unreachable_and_only_listed_gateway_ports_are_open() {
    // A service on the host's loopback, on the port that the network lets containers use.
    let loopback_service = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = loopback_service.local_addr().unwrap().port();
    let mut test = TestNet::new(vec![HostService::Tcp(port)]);
    let (ns, attachment) = test.container("c-guard");
    let gateway = attachment.gateway;

    // The gateway address is the host, but the loopback-bound service does not listen there.
    let err = connect_from(&ns, SocketAddr::from((gateway, port))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // 127.0.0.1 in the container is the container's own loopback, not the host's.
    let err = connect_from(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    // A host service bound on the gateway address, on the allowed port, is reachable.
    let gateway_service = TcpListener::bind((gateway, port)).unwrap();
    assert_eq!(
        round_trip(
            &ns,
            &gateway_service,
            SocketAddr::from((gateway, port)),
            b"to router"
        ),
        b"to router"
    );

    // A host service on the gateway address but on a port not listed is refused by the
    // firewall (ICMP admin-prohibited: "no route to host"), not merely unanswered.
    let unlisted = TcpListener::bind((gateway, 0)).unwrap();
    let unlisted_addr = unlisted.local_addr().unwrap();
    let err = connect_from(&ns, unlisted_addr).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");
    drop((loopback_service, gateway_service, unlisted));

    // The host still reaches the container (the router's direction).
    let c_ip = attachment.ip;
    let in_container = ns
        .run_in(move || TcpListener::bind(SocketAddrV4::new(c_ip, 0)).unwrap())
        .unwrap();
    let to = in_container.local_addr().unwrap();
    let mut client = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT).expect("host -> container");
    client.write_all(b"request").unwrap();
    drop(client);
    let (mut served, _) = in_container.accept().unwrap();
    let mut got = Vec::new();
    served.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request");
    test.detach(ns.path(), "c-guard");
}

#[test]
fn detach_and_teardown_leave_no_veth_bridge_rule_or_mount() {
    let mut test = TestNet::new(vec![HostService::Tcp(8080)]);
    let (ns_keep, keep) = test.container("c-keep");
    let (ns_gone, gone) = test.container("c-gone");
    let bridge = test.network.bridge().to_string();
    assert!(!rules_mentioning(&test.subnet_prefix).unwrap().is_empty());
    let nat_comment = r#"id: \"c-gone\""#;
    assert!(!rules_mentioning(nat_comment).unwrap().is_empty());

    // The bridge has no IPv6 address: no link-local path from containers to host services.
    let bridge_v6 =
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"));
    if let Ok(value) = bridge_v6 {
        assert_eq!(value.trim(), "1");
    }

    // Detach twice: the second DEL finds nothing and still succeeds.
    test.detach(ns_keep.path(), "c-keep");
    test.detach(ns_keep.path(), "c-keep");
    assert!(!keep.host_veth.as_deref().is_some_and(link_exists));
    ns_keep.delete().unwrap();

    // A namespace deleted before detach: DEL still releases the lease and the NAT rules.
    let gone_path = ns_gone.path().to_path_buf();
    ns_gone.delete().unwrap();
    test.detach(&gone_path, "c-gone");
    assert!(rules_mentioning(nat_comment).unwrap().is_empty());
    assert!(!gone.host_veth.as_deref().is_some_and(link_exists));

    test.network.teardown_network().unwrap();
    test.network
        .teardown_network()
        .expect("teardown is idempotent");
    assert!(!link_exists(&bridge), "bridge {bridge} still exists");
    assert_eq!(
        rules_mentioning(&test.subnet_prefix).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(rules_mentioning(&bridge).unwrap(), Vec::<String>::new());
    assert_eq!(
        rules_mentioning(test.network.name()).unwrap(),
        Vec::<String>::new()
    );
    let veths_on_bridge = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter(|link| {
            std::fs::read_link(link.path().join("master"))
                .is_ok_and(|master| master.ends_with(&bridge))
        })
        .count();
    assert_eq!(veths_on_bridge, 0);

    let run_dir = test.run_dir.clone();
    test.netns_dir.take().unwrap().release().unwrap();
    assert_eq!(mounts_under(&run_dir), Vec::<String>::new());
}

#[test]
fn attach_refuses_a_path_that_is_not_a_namespace() {
    let test = TestNet::new(Vec::new());
    test.network
        .check_plugins()
        .expect("loopback, bridge and host-local speak CNI 1.0.0");
    let not_ns = test.run_dir.join("plain-file");
    std::fs::write(&not_ns, b"").unwrap();
    let err = test.network.attach(&not_ns, "c-bad", "eth0").unwrap_err();
    assert!(
        err.to_string().contains("not a mounted network namespace"),
        "{err}"
    );
    assert!(test.network.attach(&not_ns, "bad/id", "eth0").is_err());
}

fn ip(args: &[&str]) {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Egress is NATed to the host's address, and nothing outside the bridge can open a
/// connection into it. "Outside" is another namespace of the test, joined to the host by a
/// veth pair: no packet leaves the machine.
#[test]
fn egress_is_masqueraded_and_outsiders_cannot_connect_in() {
    let mut test = TestNet::new(Vec::new());
    let (ns, attachment) = test.container("c-egress");
    let octet = test.subnet_prefix.split('.').nth(2).unwrap().to_string();
    let host_side_ip = format!("10.214.{octet}.1");
    let outside_ip: Ipv4Addr = format!("10.214.{octet}.2").parse().unwrap();
    let host_link = format!("{}o", test.network.bridge());

    let outside = test.netns_dir().create("outside").unwrap();
    test.extra_links.push(host_link.clone());
    let pid = std::process::id().to_string();
    let subnet = test.network.subnet().to_string();
    let (link_cmd, addr_cmd, up_cmd, route_cmd) = (
        vec![
            "link", "add", "eth0", "type", "veth", "peer", "name", &host_link, "netns", &pid,
        ],
        format!("addr add {outside_ip}/30 dev eth0"),
        "link set eth0 up".to_string(),
        format!("route add {subnet} via {host_side_ip}"),
    );
    outside
        .run_in(|| {
            // `ip` inherits this thread's namespace; the peer goes to the host's (our pid's).
            ip(&link_cmd);
            for cmd in [&addr_cmd, &up_cmd, &route_cmd] {
                ip(&cmd.split(' ').collect::<Vec<_>>());
            }
        })
        .unwrap();
    ip(&[
        "addr",
        "add",
        &format!("{host_side_ip}/30"),
        "dev",
        &host_link,
    ]);
    ip(&["link", "set", &host_link, "up"]);

    // Container -> outside: allowed, and the outside sees the host's address (NAT).
    let listener = outside
        .run_in(move || TcpListener::bind(SocketAddrV4::new(outside_ip, 0)).unwrap())
        .unwrap();
    let to = listener.local_addr().unwrap();
    let client = connect_from(&ns, to).expect("egress through NAT");
    let (_served, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip().to_string(), host_side_ip, "source is masqueraded");
    drop(client);

    // Outside -> container: new connections are dropped on the host's forwarding path.
    let c_ip = attachment.ip;
    let in_container = ns
        .run_in(move || TcpListener::bind(SocketAddrV4::new(c_ip, 0)).unwrap())
        .unwrap();
    let target = in_container.local_addr().unwrap();
    let attempt = outside
        .run_in(move || TcpStream::connect_timeout(&target, Duration::from_secs(1)))
        .unwrap();
    assert!(attempt.is_err(), "an outsider reached the container");

    test.detach(ns.path(), "c-egress");
}

/// Not a check: prints attach/detach latencies (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn measure_attach_and_detach() {
    let mut test = TestNet::new(Vec::new());
    let mut attach_ms = Vec::new();
    let mut detach_ms = Vec::new();
    let mut namespaces = Vec::new();
    for i in 0..10 {
        let id = format!("bench-{i}");
        let netns = test.netns_dir().create(&id).unwrap();
        test.attached.push((netns.path().to_path_buf(), id.clone()));
        let started = Instant::now();
        test.network.attach(netns.path(), &id, "eth0").unwrap();
        attach_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        namespaces.push((netns, id));
    }
    for (netns, id) in &namespaces {
        let started = Instant::now();
        test.network.detach(netns.path(), id, "eth0").unwrap();
        detach_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let first = attach_ms[0];
    let mut steady = attach_ms[1..].to_vec();
    steady.sort_by(f64::total_cmp);
    detach_ms.sort_by(f64::total_cmp);
    eprintln!(
        "first attach (creates bridge and rules): {first:.1} ms; next 9 attaches median {:.1} ms (min {:.1}, max {:.1}); detach median {:.1} ms (min {:.1}, max {:.1})",
        steady[steady.len() / 2],
        steady[0],
        steady[steady.len() - 1],
        detach_ms[detach_ms.len() / 2],
        detach_ms[0],
        detach_ms[detach_ms.len() - 1]
    );
}

#[test]
fn parallel_attaches_get_distinct_addresses_and_a_second_attach_is_refused() {
    let mut test = TestNet::new(Vec::new());
    let ids: Vec<String> = (0..4).map(|i| format!("c-par{i}")).collect();
    let namespaces: Vec<Netns> = ids
        .iter()
        .map(|id| {
            let netns = test.netns_dir().create(id).unwrap();
            test.attached.push((netns.path().to_path_buf(), id.clone()));
            netns
        })
        .collect();
    let network = &test.network;
    let mut addresses: Vec<Ipv4Addr> = std::thread::scope(|scope| {
        let handles: Vec<_> = namespaces
            .iter()
            .zip(&ids)
            .map(|(netns, id)| scope.spawn(move || network.attach(netns.path(), id, "eth0")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("parallel attach").ip)
            .collect()
    });
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 4, "every container has its own address");

    // The guard rules were installed once, not once per concurrent attach.
    let jumps = rules_mentioning(&format!("-j SLIPWAY-IN-{}", network.bridge())).unwrap();
    assert_eq!(jumps.len(), 1, "{jumps:?}");

    let err = network
        .attach(namespaces[0].path(), &ids[0], "eth0")
        .unwrap_err();
    assert!(err.to_string().contains("already attached"), "{err}");
    let recorded = network
        .attachment(namespaces[0].path(), &ids[0], "eth0")
        .unwrap()
        .expect("the first attachment is still recorded");
    assert!(addresses.contains(&recorded.ip));
    // The refused attach did not disturb the first one.
    network
        .check(namespaces[0].path(), &ids[0], "eth0")
        .unwrap();

    for (netns, id) in namespaces.iter().zip(&ids) {
        test.detach(netns.path(), id);
    }
}

/// Cleans up the propagation test: the other mount namespace's process, the namespaces, the
/// run dir's mount and the shared mount standing in for a systemd host's `/`.
struct PropagationGuard {
    other: std::process::Child,
    netns_dir: Option<NetnsDir>,
    shared: PathBuf,
}

impl Drop for PropagationGuard {
    fn drop(&mut self) {
        let _ = self.other.kill();
        let _ = self.other.wait();
        if let Some(dir) = self.netns_dir.take() {
            for name in dir.list().unwrap_or_default() {
                let _ = dir.delete(&name);
            }
            let _ = dir.release();
        }
        let _ = nix::mount::umount2(&self.shared, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn namespace_mounts_do_not_propagate_into_other_mount_namespaces() {
    use nix::mount::{mount, MsFlags};
    let temp = tempfile::tempdir().unwrap();
    // Like `/` on a systemd host: a shared mount, whose peers see every new mount below it.
    let shared = temp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    mount(
        Some(&shared),
        &shared,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let other = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "unchanged", "sleep", "600"])
        .spawn()
        .expect("run unshare");
    let mut guard = PropagationGuard {
        other,
        netns_dir: None,
        shared: shared.clone(),
    };
    mount(
        None::<&str>,
        &shared,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    // Restart the other namespace now that the mount is shared, so it holds a peer of it.
    let _ = guard.other.kill();
    let _ = guard.other.wait();
    guard.other = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "unchanged", "sleep", "600"])
        .spawn()
        .expect("run unshare");
    let other_mountinfo = format!("/proc/{}/mountinfo", guard.other.id());
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{}/ns/mnt", guard.other.id())).ok()
        == Some(ours.clone())
    {
        assert!(
            Instant::now() < deadline,
            "unshare did not enter a new mount namespace"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let run_dir = shared.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let dir = NetnsDir::open(&run_dir).unwrap();
    let netns = dir.create("c-prop").unwrap();
    guard.netns_dir = Some(dir);
    let ns_path = netns.path().to_string_lossy().into_owned();
    assert!(mounts_under(netns.path())
        .iter()
        .any(|l| l.contains(&ns_path)));
    let theirs = std::fs::read_to_string(&other_mountinfo).unwrap();
    assert!(
        !theirs.contains("c-prop"),
        "the namespace mount leaked into another mount namespace:\n{theirs}"
    );
    // Our own netns directory mount is private (no "shared:" peer group tag).
    let dir_path = guard
        .netns_dir
        .as_ref()
        .unwrap()
        .path()
        .to_string_lossy()
        .into_owned();
    let dir_mount = mounts_under(Path::new(&dir_path))
        .into_iter()
        .find(|l| l.split(' ').nth(4) == Some(dir_path.as_str()))
        .expect("the netns dir is a mount point");
    assert!(!dir_mount.contains("shared:"), "{dir_mount}");
}
