//! Integration tests of slipway-runtime (root): each asserts the kernel-visible effect of one
//! part of the OCI spec. cgroup limits live in tests/runtime_cgroups.rs (they also run in the
//! pure cgroup v2 guest).
mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn pid_namespace_hides_host_processes() {
    let f = Fixture::new(&["sh", "-c", "echo pid=$$; ls /proc | grep -c '^[0-9]'"]);
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pid=1"), "{out}");
    // The shell, ls and grep at most: no host process is visible.
    let n: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(n <= 3, "container sees {n} processes: {out}");
}

#[test]
fn hostname_and_domainname() {
    let f = Fixture::new(&["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"]);
    f.edit(|c| {
        c["hostname"] = "box-one".into();
        c["domainname"] = "example.test".into();
    });
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "box-one\nexample.test\n");
}

#[test]
fn exit_code_propagates() {
    let f = Fixture::new(&["sh", "-c", "exit 42"]);
    assert_eq!(f.run().0, 42);
}

#[test]
fn signal_death_becomes_128_plus_n() {
    let f = Fixture::new(&["sleep", "100"]);
    let id = f.id();
    let child = f
        .cmd()
        .args(["run", "--bundle"])
        .arg(&f.bundle)
        .arg(&id)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    f.wait_status(&id, "running");
    f.ok(&["kill", &id, "KILL"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // run deleted the container after it exited.
    assert!(!f.root.join(&id).exists());
}

#[test]
fn no_runtime_descriptor_leaks_into_the_container() {
    // ls opens one directory descriptor of its own (3).
    let f = Fixture::new(&["ls", "/proc/self/fd"]);
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
}

#[test]
fn dropped_capability_makes_privileged_call_fail() {
    // Default set (Docker's) has no CAP_SYS_ADMIN: sethostname in the uts namespace fails.
    let f = Fixture::new(&["hostname", "changed"]);
    let (code, _, _) = f.run();
    assert_ne!(code, 0);
    // Granting it makes the same call work.
    f.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push("CAP_SYS_ADMIN".into());
        }
        c["process"]["args"] = json!(["sh", "-c", "hostname changed && hostname"]);
        // The default filter follows the capabilities, as Docker's does.
        let caps: Vec<String> =
            serde_json::from_value(c["process"]["capabilities"]["bounding"].clone()).unwrap();
        c["linux"]["seccomp"] = serde_json::to_value(
            slipway::runtime::seccomp::profile::default_profile_for(&caps),
        )
        .unwrap();
    });
    let (code, out, err) = f.run();
    assert_eq!((code, out.as_str()), (0, "changed\n"), "{err}");
    // And without CAP_CHOWN, chown fails even for root.
    let f = Fixture::new(&["chown", "1", "/tmp"]);
    f.edit(|c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = json!(["CAP_KILL"]);
        }
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
    let (code, _, err) = f.run();
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
}

#[test]
fn capabilities_reach_the_process_exactly() {
    let f = Fixture::new(&[
        "sh",
        "-c",
        "grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status; grep NoNewPrivs /proc/self/status",
    ]);
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    // Docker's default set is 0x00000000a80425fb.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

#[test]
fn masked_paths_are_unreadable() {
    // The host's /proc/timer_list is several KiB; masked, it reads as /dev/null.
    assert!(std::fs::metadata("/proc/timer_list").is_ok());
    let f = Fixture::new(&["sh", "-c", "wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; echo x > /proc/sys/kernel/hostname && echo WROTE"]);
    let (_, out, err) = f.run();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "0",
        "timer_list should read as /dev/null: {out} {err}"
    );
    assert_eq!(lines[1].trim(), "0", "/sys/firmware should be empty: {out}");
    assert!(!out.contains("WROTE"), "/proc/sys must be read-only: {out}");
    assert!(err.contains("Read-only file system"), "{err}");
}

#[test]
fn readonly_rootfs_refuses_writes() {
    let f = Fixture::new(&["sh", "-c", "touch /newfile"]);
    f.edit(|c| c["root"]["readonly"] = true.into());
    let (code, _, err) = f.run();
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // And a writable one accepts them (on a private copy).
    f.private_rootfs();
    f.edit(|c| c["root"]["readonly"] = false.into());
    assert_eq!(f.run().0, 0);
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_host_uid() {
    let f = Fixture::new(&["sh", "-c", "id -u; cat /proc/self/uid_map; sleep 100"]);
    f.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    });
    let id = f.create();
    let pid = f.state(&id)["pid"].as_i64().unwrap();
    f.ok(&["start", &id]);
    // Seen from the host, the container's root is uid 200000.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("200000"),
        "{uid_line}"
    );
    for _ in 0..200 {
        if f.output_of(&id).contains("200000") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = f.output_of(&id);
    assert!(out.starts_with("0\n"), "inside it is root: {out}");
    assert!(out.contains("200000"), "{out}");
    f.ok(&["delete", "--force", &id]);
}

#[test]
fn create_start_state_delete_lifecycle() {
    let f = Fixture::new(&["sleep", "100"]);
    let id = f.create();
    let st = f.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    let pid = st["pid"].as_i64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The init waits: its program has not run yet.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");
    f.ok(&["start", &id]);
    assert_eq!(f.state(&id)["status"], "running");
    let out = f.rt(&["delete", &id]);
    assert!(
        !out.status.success(),
        "delete of a running container needs --force"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let list = f.ok(&["list", "--format", "json"]);
    let v: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["id"], id.as_str());
    f.ok(&["kill", &id, "KILL"]);
    f.wait_status(&id, "stopped");
    f.ok(&["delete", &id]);
    assert!(!f.root.join(&id).exists());
    assert!(!cgroup_exists(&id));
    let out = f.rt(&["state", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn exec_joins_namespaces_and_cgroup() {
    let f = Fixture::new(&["sleep", "100"]);
    let id = f.create();
    f.ok(&["start", &id]);
    let pid = f.state(&id)["pid"].as_i64().unwrap();
    let out = f.ok(&[
        "exec",
        "--env",
        "X=42",
        &id,
        "sh",
        "-c",
        "echo $X; for n in pid mnt net; do readlink /proc/self/ns/$n; done; cat /proc/1/comm",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "42");
    for (i, ns) in ["pid", "mnt", "net"].iter().enumerate() {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(
            lines[1 + i],
            theirs.to_str().unwrap(),
            "{ns} namespace differs"
        );
    }
    assert_eq!(lines[4], "sleep", "exec sees the container's pid 1");
    // It ran in the container's cgroup: the pids of the cgroup included it (`ps` lists the
    // cgroup), checked through a long-running exec.
    let pidfile = f.dir.path().join("exec.pid");
    // Detached, it keeps its stdio: give it none, or it would hold our pipes open.
    let st = f
        .cmd()
        .args([
            "exec",
            "--detach",
            "--pid-file",
            pidfile.to_str().unwrap(),
            &id,
            "sleep",
            "50",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let exec_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids: Vec<i32> = serde_json::from_str(&f.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(pids.contains(&exec_pid), "{pids:?} lacks {exec_pid}");
    let cg_init = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let cg_exec = std::fs::read_to_string(format!("/proc/{exec_pid}/cgroup")).unwrap();
    assert_eq!(cg_init, cg_exec);
    // exit codes of exec propagate too.
    let out = f.rt(&["exec", &id, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
}

/// What a pty master yields until `needle` shows up (or the container closes the pty).
fn read_pty_until(master: std::os::fd::OwnedFd, needle: &str) -> String {
    let mut file = std::fs::File::from(master);
    let mut text = String::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.contains(needle) {
            break;
        }
    }
    text
}

#[test]
fn terminal_through_console_socket() {
    let f = Fixture::new(&["sh", "-c", "tty; stty size"]);
    f.edit(|c| {
        c["process"]["terminal"] = true.into();
        c["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    });
    let sock_path = f.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let id = f.id();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        slipway::runtime::console::recv_fd(conn.as_raw_fd()).unwrap()
    });
    let out = f.rt(&[
        "create",
        "--bundle",
        f.bundle.to_str().unwrap(),
        "--console-socket",
        sock_path.to_str().unwrap(),
        &id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let master = receiver.join().unwrap();
    f.ok(&["start", &id]);
    let text = read_pty_until(master, "100");
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(text.contains("30 100"), "{text:?}");
}

#[test]
fn hooks_run_in_order() {
    let f = Fixture::new(&["true"]);
    let log_dir = f.dir.path().join("hooklog");
    std::fs::create_dir(&log_dir).unwrap();
    let log = log_dir.join("log");
    let host_hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read -r state; echo {name} >> {}", log.display())]});
    f.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooklog", "type": "bind", "source": log_dir, "options": ["rbind"]}));
        c["hooks"] = json!({
            "prestart": [host_hook("prestart")],
            "createRuntime": [host_hook("createRuntime")],
            "createContainer": [host_hook("createContainer")],
            // startContainer runs inside the container: its path and files are the container's.
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer >> /hooklog/log"]}],
            "poststart": [host_hook("poststart")],
            "poststop": [host_hook("poststop")],
        });
    });
    let (code, _, err) = f.run();
    assert_eq!(code, 0, "{err}");
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
}

#[test]
fn hook_receives_state_and_failure_aborts_create() {
    let f = Fixture::new(&["true"]);
    let state_file = f.dir.path().join("state.json");
    f.edit(|c| {
        c["hooks"] = json!({"createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", state_file.display())]},
            {"path": "/bin/false"},
        ]});
    });
    let id = f.id();
    let out = f.rt(&["create", "--bundle", f.bundle.to_str().unwrap(), &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("createRuntime hook") && err.contains("/bin/false"),
        "{err}"
    );
    let st: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(st["id"], id.as_str());
    assert!(st["pid"].as_i64().unwrap() > 0);
    assert!(
        !f.root.join(&id).exists(),
        "a failed create leaves no state"
    );
    assert!(!cgroup_exists(&id));
}

#[test]
fn pause_and_resume() {
    // A busy loop keeps appending to a file; frozen, it cannot.
    let f = Fixture::new(&["sh", "-c", "while :; do echo x >> /tmp/count; done"]);
    f.edit(|c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
    let id = f.create();
    f.ok(&["start", &id]);
    let pid = f.state(&id)["pid"].as_i64().unwrap();
    let count_file = format!("/proc/{pid}/root/tmp/count");
    let size = || std::fs::metadata(&count_file).map(|m| m.len()).unwrap_or(0);
    let wait_growth = |from: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while size() <= from && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        size() > from
    };
    assert!(wait_growth(0), "the loop runs");
    f.ok(&["pause", &id]);
    assert_eq!(f.state(&id)["status"], "paused");
    let frozen = size();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(size(), frozen, "a paused container made progress");
    f.ok(&["resume", &id]);
    assert_eq!(f.state(&id)["status"], "running");
    assert!(wait_growth(frozen), "a resumed container runs again");
    f.ok(&["delete", "--force", &id]);
}

#[test]
fn bind_mount_readonly_and_tmpfs() {
    let f = Fixture::new(&[
        "sh",
        "-c",
        "cat /data/hello; echo no > /data/hello; grep ' /scratch ' /proc/mounts",
    ]);
    let data = f.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello"), "hi\n").unwrap();
    f.edit(|c| {
        let m = c["mounts"].as_array_mut().unwrap();
        m.push(json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro"]}));
        m.push(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=1777"]}));
    });
    let (_, out, err) = f.run();
    assert!(out.starts_with("hi\n"), "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(out.contains("tmpfs /scratch tmpfs"), "{out}");
    assert_eq!(std::fs::read_to_string(data.join("hello")).unwrap(), "hi\n");
}

#[test]
fn user_and_groups_and_cwd() {
    let f = Fixture::new(&["sh", "-c", "id; pwd; umask"]);
    f.edit(|c| {
        c["process"]["user"] =
            json!({"uid": 1000, "gid": 1001, "additionalGids": [20, 30], "umask": 18});
        c["process"]["cwd"] = "/tmp".into();
    });
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("uid=1000 gid=1001 groups=20,30"), "{out}");
    assert!(out.contains("/tmp\n0022"), "{out}");
}

#[test]
fn rlimits_and_oom_score_adj() {
    let f = Fixture::new(&["sh", "-c", "ulimit -n; cat /proc/self/oom_score_adj"]);
    f.edit(|c| {
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512}]);
        c["process"]["oomScoreAdj"] = 300.into();
    });
    let (code, out, err) = f.run();
    assert_eq!((code, out.as_str()), (0, "512\n300\n"), "{err}");
}

#[test]
fn sysctl_in_the_container_network_namespace() {
    let f = Fixture::new(&["cat", "/proc/sys/net/ipv4/ip_default_ttl"]);
    f.edit(|c| c["linux"]["sysctl"] = json!({"net.ipv4.ip_default_ttl": "42"}));
    let (code, out, err) = f.run();
    assert_eq!((code, out.as_str()), (0, "42\n"), "{err}");
    assert_ne!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl").unwrap(),
        "42\n"
    );
}

#[test]
fn joins_an_existing_namespace_by_path() {
    let a = Fixture::new(&["sleep", "100"]);
    let id = a.create();
    a.ok(&["start", &id]);
    let pid = a.state(&id)["pid"].as_i64().unwrap();
    let b = Fixture::new(&["readlink", "/proc/self/ns/net"]);
    b.edit(|c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = format!("/proc/{pid}/ns/net").into();
            }
        }
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(out.trim(), theirs.to_str().unwrap());
}

#[test]
fn devices_and_dev_symlinks() {
    let f = Fixture::new(&["sh", "-c", "ls -l /dev/null /dev/fuse | cut -c1; readlink /dev/fd; readlink /dev/ptmx; echo ok > /dev/null"]);
    f.edit(|c| {
        c["linux"]["devices"] =
            json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}]);
    });
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "c\nc\n/proc/self/fd\npts/ptmx\n");
}

#[test]
fn seccomp_rule_fails_a_syscall_with_the_given_errno() {
    let f = Fixture::new(&["sh", "-c", "mkdir /tmp/x; echo rc=$?"]);
    f.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        });
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
    let (_, out, err) = f.run();
    assert!(err.contains("Permission denied"), "EACCES expected: {err}");
    assert!(out.contains("rc=1"), "{out}");
}

#[test]
fn default_seccomp_profile_refuses_new_user_namespaces() {
    // Creating a user namespace needs no capability: only the filter stops it.
    let f = Fixture::new(&["unshare", "-U", "true"]);
    assert!(
        f.config()["linux"]["seccomp"]["syscalls"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "spec ships the default profile"
    );
    let (code, _, err) = f.run();
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    f.edit(|c| {
        c["linux"]
            .as_object_mut()
            .unwrap()
            .remove("seccomp")
            .map(drop)
            .unwrap_or(())
    });
    let (code, _, err) = f.run();
    assert_eq!(code, 0, "without the filter it works: {err}");
}

#[test]
fn exec_with_a_terminal_through_console_socket() {
    let f = Fixture::new(&["sleep", "100"]);
    let id = f.create();
    f.ok(&["start", &id]);
    let sock_path = f.dir.path().join("exec-console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        slipway::runtime::console::recv_fd(conn.as_raw_fd()).unwrap()
    });
    let out = f.rt(&[
        "exec",
        "-t",
        "--detach",
        "--console-socket",
        sock_path.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "tty; sleep 1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read_pty_until(receiver.join().unwrap(), "\n");
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    f.ok(&["delete", "--force", &id]);
}

#[test]
fn run_with_a_terminal_proxies_our_own_terminal() {
    // `script` gives `run` a pseudo-terminal as stdin/stdout, as a user's shell would.
    let f = Fixture::new(&["sh", "-c", "tty; echo size=$(stty size)"]);
    f.edit(|c| c["process"]["terminal"] = true.into());
    let id = f.id();
    let cmd = format!(
        "stty rows 24 cols 90; {} --root {} run --bundle {} {id}",
        RUNTIME,
        f.root.display(),
        f.bundle.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("/dev/pts/0"), "{text:?}");
    assert!(
        text.contains("size=24 90"),
        "the window size is passed on: {text:?}"
    );
}

#[test]
fn rootfs_propagation_applies_to_the_container_root() {
    // Shared and unbindable only make sense for the container's own root: applied to the
    // host-inherited tree before pivot_root they made pivot_root fail.
    for (asked, shows) in [
        ("shared", "shared:"),
        ("rshared", "shared:"),
        ("unbindable", "unbindable"),
        ("private", ""),
        // A slave of a private mount is private: what shows depends on the host.
        ("slave", ""),
    ] {
        let f = Fixture::new(&["sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"]);
        f.edit(|c| c["linux"]["rootfsPropagation"] = asked.into());
        let (code, out, err) = f.run();
        assert_eq!(code, 0, "rootfsPropagation {asked}: {err}");
        assert!(out.contains(shows), "rootfsPropagation {asked}: {out}");
        if asked == "private" {
            assert!(
                !out.contains("shared:") && !out.contains("master:"),
                "{out}"
            );
        }
    }
}

#[test]
fn the_init_reaps_orphans_and_passes_on_sigterm() {
    // Under the minimal init the program is not PID 1: an orphan is reaped, and SIGTERM to the
    // container stops a program that installed no handler.
    let f = Fixture::new(&[
        "sh",
        "-c",
        "(sleep 0.2 &); sleep 1; ps -o stat,comm | grep -c '^Z' || true; exec sleep 100",
    ]);
    f.edit(|c| c["annotations"] = serde_json::json!({"run.slipway.init": "true"}));
    let id = f.id();
    let child = f
        .cmd()
        .args(["run", "--bundle"])
        .arg(&f.bundle)
        .arg(&id)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(std::time::Duration::from_millis(1800));
    let kill = f.cmd().args(["kill", &id, "TERM"]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let _ = pid;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "a zombie was left"
    );
    // sleep died of SIGTERM, and the init said so.
    assert_eq!(out.status.code(), Some(128 + 15));
}

#[test]
fn a_kill_by_the_memory_limit_is_named() {
    // 200 MB into a shell variable under a 32 MiB limit.
    let f = Fixture::new(&[
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    f.edit(|c| {
        c["linux"]["resources"]["memory"] =
            serde_json::json!({"limit": 32 << 20, "swap": 32 << 20});
    });
    let (code, out, err) = f.run();
    assert!(!out.contains("survived"), "{out}");
    assert!(
        err.contains("out of memory (limit 32 MiB)"),
        "exit {code}, stderr: {err}"
    );
}
