//! Real cgroups on whatever layout the host has (v1 hybrid here, cgroup2 in the QEMU guest):
//! every test makes its own cgroup with a unique name, puts real processes in it, checks the
//! kernel's effect, and removes it. Run as root; skipped otherwise.
use nix::sys::signal::Signal;
use oci_spec::runtime::{
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use slipway::runtime::cgroups::{Cgroup, Hierarchy, Layout, LayoutKind, Version};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Cgroup tests need root: without it they fail, saying so, rather than pass unseen.
macro_rules! require_root {
    () => {
        assert!(
            is_root(),
            "cgroup tests need root (they create and write real cgroups): run them as root"
        );
    };
}

/// A name no other test (or concurrent test run) uses.
fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A shell that waits for one line on stdin before running `script`, so that it can be moved
/// into the cgroup before it does anything.
fn gated_shell(script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read _go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn /bin/sh")
}

fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
}

/// Removes the cgroup even when an assertion fails halfway.
struct Guard(Cgroup);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill_all(Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.0.pids().unwrap_or_default().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.0.destroy();
    }
}

fn new_cgroup(name: &str) -> Guard {
    let cg = Cgroup::new(None, &unique(name)).unwrap();
    cg.create().unwrap();
    Guard(cg)
}

fn assert_gone(cg: &Cgroup) {
    for d in &cg.dirs {
        assert!(!d.dir.exists(), "{} left behind", d.dir.display());
    }
}

#[test]
fn memory_limit_oom_kills_and_is_counted() {
    require_root!();
    let guard = new_cgroup("oom");
    let cg = &guard.0;
    let limit = 32i64 << 20;
    // Swap equal to the limit: no swap, so exceeding the limit can only end in the OOM killer.
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cg.apply(&resources).unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 0);
    // tail keeps the whole newline-free stream in memory: 256 MiB, bounded even if the limit
    // failed to apply.
    let mut child = gated_shell("head -c 268435456 /dev/zero | tail > /dev/null");
    cg.add_pid(child.id() as i32).unwrap();
    assert!(cg.pids().unwrap().contains(&(child.id() as i32)));
    release(&mut child);
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "allocating 256 MiB under a 32 MiB limit succeeded"
    );
    assert!(cg.oom_kills().unwrap() >= 1, "OOM kill not counted");
    drop(guard);
}

#[test]
fn pids_limit_makes_fork_fail() {
    require_root!();
    let guard = new_cgroup("pids");
    let cg = &guard.0;
    let resources = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(2i64).build().unwrap())
        .build()
        .unwrap();
    cg.apply(&resources).unwrap();
    // The shell itself is one task: the first sleep is the second, the next fork must fail.
    let mut child = gated_shell("for i in 1 2 3; do sleep 30 >/dev/null 2>&1 & done; wait");
    cg.add_pid(child.id() as i32).unwrap();
    release(&mut child);
    let output = wait_output(child);
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        !output.status.success(),
        "all forks succeeded under pids.max=2"
    );
    assert!(stderr.contains("fork"), "unexpected shell error: {stderr}");
    drop(guard);
}

/// Wait for the shell without blocking on its leftover background children forever: kill the
/// cgroup's remaining processes first if the shell is gone.
fn wait_output(child: Child) -> std::process::Output {
    child.wait_with_output().unwrap()
}

#[test]
fn freeze_stops_progress_until_thaw() {
    require_root!();
    let guard = new_cgroup("freeze");
    let cg = &guard.0;
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let mut child = gated_shell(&format!(
        "i=0; while :; do i=$((i+1)); echo $i > {}; done",
        counter.display()
    ));
    cg.add_pid(child.id() as i32).unwrap();
    release(&mut child);
    wait_until("the loop to start", || read_counter(&counter) > 0);
    assert!(!cg.is_frozen().unwrap());
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    let before = std::fs::read_to_string(&counter).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        before,
        "frozen process progressed"
    );
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    let frozen_at = before.trim().parse::<u64>().unwrap_or(0);
    wait_until("the loop to go on after thaw", || {
        read_counter(&counter) > frozen_at
    });
    cg.kill_all(Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    drop(guard);
}

fn read_counter(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn kill_all_reaches_every_process_and_destroy_leaves_nothing() {
    require_root!();
    let parent = unique("nested");
    let cg = Cgroup::new(Some(&format!("/slipway/{parent}/leaf")), "unused").unwrap();
    cg.create().unwrap();
    let guard = Guard(cg.clone());
    let mut child = gated_shell("sleep 60 & sleep 60 & echo started; wait");
    cg.add_pid(child.id() as i32).unwrap();
    release(&mut child);
    wait_until("three processes", || cg.pids().unwrap().len() == 3);
    cg.kill_all(Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    // The sleeps are children of the dead shell, reparented and reaped by init: wait for the
    // cgroup to empty.
    wait_until("the cgroup to empty", || cg.pids().unwrap().is_empty());
    cg.destroy().unwrap();
    assert_gone(&cg);
    for d in &cg.dirs {
        let made_parent = d.hierarchy.mount.join("slipway").join(&parent);
        assert!(
            !made_parent.exists(),
            "{} left behind",
            made_parent.display()
        );
    }
    std::mem::forget(guard);
}

#[test]
fn concurrent_create_and_destroy_share_parents_safely() {
    require_root!();
    let parent = unique("shared");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let parent = parent.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let cg =
                        Cgroup::new(Some(&format!("/slipway/{parent}/c{t}-{i}")), "x").unwrap();
                    cg.create().unwrap();
                    cg.destroy().unwrap();
                    assert_gone(&cg);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for h in &Layout::host().unwrap().hierarchies {
        let p = h.mount.join("slipway").join(&parent);
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

fn device_rules() -> LinuxResources {
    let rule = |allow: bool, typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    };
    LinuxResourcesBuilder::default()
        .devices(vec![
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"), // /dev/null
            rule(true, LinuxDeviceType::C, Some(1), Some(5), "r"),   // /dev/zero, read only
        ])
        .build()
        .unwrap()
}

/// Runs the device checks in a cgroup; returns the shell's report line.
fn device_probe(cg: &Cgroup) -> String {
    cg.apply(&device_rules()).unwrap();
    let mut child = gated_shell(
        "r=''; \
         if echo x > /dev/null; then r=\"${r}null-w:ok \"; else r=\"${r}null-w:denied \"; fi; \
         if head -c1 /dev/zero > /dev/null; then r=\"${r}zero-r:ok \"; else r=\"${r}zero-r:denied \"; fi; \
         if echo x > /dev/zero; then r=\"${r}zero-w:ok \"; else r=\"${r}zero-w:denied \"; fi; \
         if head -c1 /dev/urandom > /dev/null; then r=\"${r}urandom:ok\"; else r=\"${r}urandom:denied\"; fi; \
         echo \"$r\"",
    );
    cg.add_pid(child.id() as i32).unwrap();
    release(&mut child);
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

const DEVICE_EXPECTED: &str = "null-w:ok zero-r:ok zero-w:denied urandom:denied";

#[test]
fn device_rules_are_enforced() {
    require_root!();
    let guard = new_cgroup("devices");
    assert_eq!(device_probe(&guard.0), DEVICE_EXPECTED);
    drop(guard);
}

/// On a hybrid host, the controller-less cgroup2 mount seen as a unified layout: device
/// programs, the freezer, `cgroup.kill` and `cgroup.procs` work on any cgroup2 directory, so
/// the v2 code paths run against the real kernel here too. None on other layouts (there the
/// ordinary tests take the v2 paths).
fn hybrid_cgroup2_layout() -> Option<Layout> {
    let host = Layout::host().unwrap();
    if host.kind != LayoutKind::Hybrid {
        eprintln!("skipped: the other tests cover cgroup2 on this layout");
        return None;
    }
    let unified = host.hierarchies.iter().find(|h| h.version == Version::V2)?;
    Some(Layout {
        kind: LayoutKind::Unified,
        hierarchies: vec![Hierarchy {
            version: Version::V2,
            controllers: vec![],
            mount: unified.mount.clone(),
        }],
    })
}

#[test]
fn device_bpf_program_is_enforced_on_cgroup2() {
    require_root!();
    let Some(layout) = hybrid_cgroup2_layout() else {
        return;
    };
    let cg = Cgroup::with_layout(None, &unique("bpf"), &layout).unwrap();
    cg.create().unwrap();
    let guard = Guard(cg);
    assert_eq!(device_probe(&guard.0), DEVICE_EXPECTED);
    // An update replaces the program instead of stacking a second one (stacked programs
    // must all allow, so a loosened rule set would not take effect).
    let allow_all = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap()])
        .build()
        .unwrap();
    guard.0.apply(&allow_all).unwrap();
    let mut child = gated_shell("echo x > /dev/zero && echo ok");
    guard.0.add_pid(child.id() as i32).unwrap();
    release(&mut child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    drop(guard);
}

#[test]
fn state_round_trip_controls_the_same_cgroup() {
    require_root!();
    let guard = new_cgroup("state");
    let json = serde_json::to_string(&guard.0).unwrap();
    let restored: Cgroup = serde_json::from_str(&json).unwrap();
    let mut child = gated_shell("sleep 60");
    restored.add_pid(child.id() as i32).unwrap();
    assert_eq!(guard.0.pids().unwrap(), vec![child.id() as i32]);
    restored.kill_all(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    drop(guard);
}

/// Cost of the cgroup part of a container start and stop, printed (no assertion):
/// `cargo test --release --test cgroups -- --ignored --nocapture measure`. "cold": no other
/// container, so the shared `/slipway` parent is made and removed every time; "warm": another
/// container keeps it.
#[test]
#[ignore]
fn measure_lifecycle_cost() {
    require_root!();
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(256i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(128i64).build().unwrap())
        .devices(device_rules().devices().clone().unwrap())
        .build()
        .unwrap();
    let mut child = Command::new("/bin/sleep").arg("60").spawn().unwrap();
    let pid = child.id() as i32;
    // The process returns to the root cgroups between rounds.
    let root_procs: Vec<_> = Layout::host()
        .unwrap()
        .hierarchies
        .iter()
        .map(|h| h.mount.join("cgroup.procs"))
        .collect();
    for phase in ["cold", "warm"] {
        let anchor = (phase == "warm").then(|| new_cgroup("anchor"));
        let rounds = 200;
        let mut samples = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for i in 0..rounds {
            let t0 = Instant::now();
            let cg = Cgroup::new(None, &unique(&format!("bench{i}"))).unwrap();
            let t1 = Instant::now();
            cg.create().unwrap();
            let t2 = Instant::now();
            cg.apply(&resources).unwrap();
            let t3 = Instant::now();
            cg.add_pid(pid).unwrap();
            let t4 = Instant::now();
            for p in &root_procs {
                std::fs::write(p, pid.to_string()).unwrap();
            }
            let t5 = Instant::now();
            cg.destroy().unwrap();
            let t6 = Instant::now();
            for (s, d) in samples
                .iter_mut()
                .zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5])
            {
                s.push(d.as_micros() as u64);
            }
        }
        let names = ["new", "create", "apply", "add_pid", "destroy"];
        let mut total = 0;
        let mut line = String::new();
        for (name, s) in names.iter().zip(samples.iter_mut()) {
            s.sort_unstable();
            let median = s[s.len() / 2];
            total += median;
            line.push_str(&format!("{name} {median} us, "));
        }
        println!(
            "{phase} ({:?} layout, {} hierarchies, median of {rounds}): {line}total {total} us",
            Layout::host().unwrap().kind,
            Layout::host().unwrap().hierarchies.len()
        );
        drop(anchor);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn cgroup2_freezer_and_kill_on_real_kernel() {
    require_root!();
    let Some(layout) = hybrid_cgroup2_layout() else {
        return;
    };
    let cg = Cgroup::with_layout(None, &unique("v2freeze"), &layout).unwrap();
    cg.create().unwrap();
    let guard = Guard(cg);
    let cg = &guard.0;
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let mut child = gated_shell(&format!(
        "sleep 60 & i=0; while :; do i=$((i+1)); echo $i > {}; done",
        counter.display()
    ));
    cg.add_pid(child.id() as i32).unwrap();
    release(&mut child);
    wait_until("the loop to start", || read_counter(&counter) > 0);
    assert_eq!(cg.pids().unwrap().len(), 2);
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    let before = std::fs::read_to_string(&counter).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        before,
        "frozen process progressed"
    );
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    // SIGKILL through cgroup.kill, which also reaches the background sleep.
    cg.kill_all(Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    wait_until("the cgroup to empty", || cg.pids().unwrap().is_empty());
    cg.destroy().unwrap();
    assert_gone(cg);
    std::mem::forget(guard);
}

#[test]
fn kernel_tcp_limit_reaches_the_v1_memory_controller() {
    require_root!();
    let guard = new_cgroup("ktcp");
    let limit = 16i64 << 20;
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .kernel_tcp(limit)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    guard.0.apply(&resources).unwrap();
    let v1_memory = guard
        .0
        .dirs
        .iter()
        .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.controllers == ["memory"]);
    match v1_memory {
        Some(d) => {
            let file = d.dir.join("memory.kmem.tcp.limit_in_bytes");
            let value = std::fs::read_to_string(&file).unwrap();
            assert_eq!(value.trim(), limit.to_string(), "{}", file.display());
        }
        // cgroup v2: memory.max covers socket buffers; kernelTCP is accepted and not written.
        None => eprintln!("no v1 memory hierarchy: kernelTCP is accepted without a file"),
    }
    drop(guard);
}

fn hugepage_limit(size: &str, limit: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size(size)
            .limit(limit)
            .build()
            .unwrap()])
        .build()
        .unwrap()
}

fn kernel_has_2mb_pages() -> bool {
    Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir()
}

/// hugetlb's line of /proc/cgroups: (v1 hierarchy or 0, cgroups in it, enabled).
fn hugetlb_in_proc_cgroups() -> Option<(u32, u32, bool)> {
    let text = std::fs::read_to_string("/proc/cgroups").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&"hugetlb")).then(|| {
            (
                f[1].parse().unwrap_or(0),
                f[2].parse().unwrap_or(0),
                f[3] == "1",
            )
        })
    })
}

/// A hybrid layout on a temporary directory: a v1 hugetlb hierarchy and a cgroup2 mount.
fn fake_hybrid_with_hugetlb() -> (tempfile::TempDir, Layout) {
    let root = tempfile::tempdir().unwrap();
    let hierarchy = |version, controllers: &[&str], dir: &str| {
        std::fs::create_dir(root.path().join(dir)).unwrap();
        Hierarchy {
            version,
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            mount: root.path().join(dir),
        }
    };
    let layout = Layout {
        kind: LayoutKind::Hybrid,
        hierarchies: vec![
            hierarchy(Version::V1, &["hugetlb"], "hugetlb"),
            hierarchy(Version::V2, &[], "unified"),
        ],
    };
    (root, layout)
}

/// Needs no root: the v1 logic against directories standing in for the hierarchies.
#[test]
fn hugepage_limits_go_to_the_v1_hugetlb_hierarchy() {
    if !kernel_has_2mb_pages() {
        eprintln!("skipped: this kernel has no 2MB huge pages");
        return;
    }
    let (root, layout) = fake_hybrid_with_hugetlb();
    let cg = Cgroup::with_layout(None, "hp", &layout).unwrap();
    cg.create().unwrap();
    let leaf = root.path().join("hugetlb/slipway/hp");
    for f in [
        "hugetlb.2MB.limit_in_bytes",
        "hugetlb.2MB.rsvd.limit_in_bytes",
    ] {
        std::fs::write(leaf.join(f), "").unwrap();
    }
    cg.apply(&hugepage_limit("2MB", 4 << 20)).unwrap();
    let read = |f: &str| std::fs::read_to_string(leaf.join(f)).unwrap();
    assert_eq!(read("hugetlb.2MB.limit_in_bytes"), (4 << 20).to_string());
    assert_eq!(
        read("hugetlb.2MB.rsvd.limit_in_bytes"),
        (4 << 20).to_string()
    );
    cg.apply(&hugepage_limit("2MB", -1)).unwrap();
    assert_eq!(read("hugetlb.2MB.limit_in_bytes"), "-1");
    // A size the kernel has, but whose files the hierarchy lacks.
    std::fs::remove_file(leaf.join("hugetlb.2MB.limit_in_bytes")).unwrap();
    let e = cg
        .apply(&hugepage_limit("2MB", 1 << 21))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not know 2MB pages"), "{e}");
    // A size the kernel does not have: refused before any file is looked at.
    let e = cg
        .apply(&hugepage_limit("3MB", 1 << 21))
        .unwrap_err()
        .to_string();
    assert!(e.contains("3MB is not offered by this kernel"), "{e}");
    // Without the hugetlb hierarchy, the error tells the layout.
    let without = Layout {
        kind: LayoutKind::Hybrid,
        hierarchies: layout.hierarchies[1..].to_vec(),
    };
    let cg = Cgroup::with_layout(None, "hp", &without).unwrap();
    let e = cg
        .apply(&hugepage_limit("2MB", 1 << 21))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("none of its v1 hierarchies (none mounted)"),
        "{e}"
    );
    assert!(e.contains("has the hugetlb controller"), "{e}");
}

#[test]
fn hugepage_limit_on_the_host_layout_applies_or_says_why_not() {
    require_root!();
    if !kernel_has_2mb_pages() {
        eprintln!("skipped: no 2MB huge pages on this kernel");
        return;
    }
    let guard = new_cgroup("hugetlb");
    let limit = 4i64 << 20;
    let result = guard.0.apply(&hugepage_limit("2MB", limit));
    let host = Layout::host().unwrap();
    let hugetlb = host.hierarchies.iter().find(|h| {
        h.controllers.iter().any(|c| c == "hugetlb")
            && (h.version == Version::V1 || host.kind == LayoutKind::Unified)
    });
    match hugetlb {
        Some(h) => {
            result.unwrap();
            let dir = guard.0.dirs.iter().find(|d| d.hierarchy == *h).unwrap();
            let name = match h.version {
                Version::V1 => "hugetlb.2MB.limit_in_bytes",
                Version::V2 => "hugetlb.2MB.max",
            };
            let value = std::fs::read_to_string(dir.dir.join(name)).unwrap();
            assert_eq!(value.trim(), limit.to_string());
        }
        None => {
            let e = result.unwrap_err().to_string();
            eprintln!("{e}");
            if host.kind == LayoutKind::Unified {
                assert!(
                    e.contains("cgroup.controllers does not offer hugetlb"),
                    "{e}"
                );
            } else {
                assert!(!e.contains("cgroup.controllers does not offer"), "{e}");
                assert!(
                    e.contains("none of its v1 hierarchies") && e.contains("hugetlb controller"),
                    "{e}"
                );
            }
        }
    }
    let e = guard
        .0
        .apply(&hugepage_limit("3MB", limit))
        .unwrap_err()
        .to_string();
    assert!(e.contains("3MB is not offered by this kernel"), "{e}");
    drop(guard);
}

/// A v1 hugetlb hierarchy mounted for one test on a temporary directory. Dropping it removes
/// the cgroup, waits until the kernel has let go of it, and unmounts, so that the controller
/// returns to where it was (a v1 hierarchy outlives its mount while it has child cgroups).
struct HugetlbMount {
    dir: tempfile::TempDir,
    cgroup: Option<Cgroup>,
}

impl HugetlbMount {
    fn mount() -> std::io::Result<HugetlbMount> {
        let dir = tempfile::tempdir()?;
        nix::mount::mount(
            Some("cgroup"),
            dir.path(),
            Some("cgroup"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("hugetlb"),
        )?;
        Ok(HugetlbMount { dir, cgroup: None })
    }

    fn unmount(&self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::empty());
    }
}

impl Drop for HugetlbMount {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            drop(Guard(cg));
        }
        let bound = || hugetlb_in_proc_cgroups().is_some_and(|(h, _, _)| h != 0);
        let wait = |done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        wait(&|| hugetlb_in_proc_cgroups().is_none_or(|(_, n, _)| n <= 1));
        self.unmount();
        wait(&|| !bound());
        // A hierarchy that still had a dying child when it was unmounted stays bound: mount
        // it once more, now childless, and unmount again.
        if bound()
            && nix::mount::mount(
                Some("cgroup"),
                self.dir.path(),
                Some("cgroup"),
                nix::mount::MsFlags::empty(),
                Some("hugetlb"),
            )
            .is_ok()
        {
            self.unmount();
            wait(&|| !bound());
        }
    }
}

#[test]
fn hugepage_limit_on_a_real_v1_hugetlb_hierarchy() {
    require_root!();
    let host = Layout::host().unwrap();
    let free = hugetlb_in_proc_cgroups().is_some_and(|(h, _, on)| h == 0 && on);
    let in_use_by_cgroup2 = host
        .hierarchies
        .iter()
        .filter(|h| h.version == Version::V2)
        .any(|h| {
            std::fs::read_to_string(h.mount.join("cgroup.subtree_control"))
                .is_ok_and(|t| t.contains("hugetlb"))
        });
    if host.kind == LayoutKind::Unified || !free || in_use_by_cgroup2 || !kernel_has_2mb_pages() {
        eprintln!("skipped: needs a v1 host whose hugetlb controller is free to mount");
        return;
    }
    let mut mounted = match HugetlbMount::mount() {
        Ok(m) => m,
        Err(e) => panic!("mount the v1 hugetlb hierarchy: {e}"),
    };
    let layout = Layout {
        kind: LayoutKind::Legacy,
        hierarchies: vec![Hierarchy {
            version: Version::V1,
            controllers: vec!["hugetlb".into()],
            mount: mounted.dir.path().to_path_buf(),
        }],
    };
    let cg = Cgroup::with_layout(None, &unique("hugetlb-v1"), &layout).unwrap();
    cg.create().unwrap();
    let leaf = cg.dirs[0].dir.clone();
    mounted.cgroup = Some(cg.clone());
    let limit = 4i64 << 20;
    cg.apply(&hugepage_limit("2MB", limit)).unwrap();
    for name in [
        "hugetlb.2MB.limit_in_bytes",
        "hugetlb.2MB.rsvd.limit_in_bytes",
    ] {
        let value = std::fs::read_to_string(leaf.join(name)).unwrap();
        assert_eq!(value.trim(), limit.to_string(), "{name}");
    }
    let mut child = gated_shell("true");
    cg.add_pid(child.id() as i32).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![child.id() as i32]);
    release(&mut child);
    child.wait().unwrap();
    drop(mounted);
    assert_eq!(
        hugetlb_in_proc_cgroups().map(|(h, _, _)| h),
        Some(0),
        "the hugetlb controller is free again"
    );
}
