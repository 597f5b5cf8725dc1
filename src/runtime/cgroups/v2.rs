//! cgroup v2: one tree; controllers must be enabled in every ancestor's
//! `cgroup.subtree_control` before a child can use them.
use super::files::{self, Presence};
use super::resources;
use super::{backoff, make_dirs, make_leaf_fast, CgroupError, Hierarchy, SETTLE_TIMEOUT};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

/// mkdir the cgroup, enabling the hierarchy's controllers in each ancestor on the way (the
/// root included); returns how many levels were made.
pub(crate) fn create(hierarchy: &Hierarchy, components: &[&str]) -> Result<usize, CgroupError> {
    let wanted = &hierarchy.controllers;
    if wanted.is_empty() {
        // Hybrid hosts' cgroup2 mount: only process tracking, nothing to enable.
        if let Some(made) = make_leaf_fast(&hierarchy.mount, components) {
            return Ok(made);
        }
    }
    make_dirs(&hierarchy.mount, components, |_| {
        let mut dir = hierarchy.mount.clone();
        if !enable_controllers(&dir, wanted)? {
            return Ok(false);
        }
        for part in &components[..components.len() - 1] {
            dir.push(part);
            if !enable_controllers(&dir, wanted)? {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// Enable `wanted` controllers in `dir/cgroup.subtree_control`, skipping those already on.
/// Ok(false): the directory vanished (a concurrent destroy), so the caller starts over.
pub(crate) fn enable_controllers(dir: &Path, wanted: &[String]) -> Result<bool, CgroupError> {
    if wanted.is_empty() {
        return Ok(true);
    }
    let path = dir.join("cgroup.subtree_control");
    // A cgroup being removed answers ENODEV before its directory disappears.
    let vanished = |e: &std::io::Error| {
        e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
    };
    let enabled = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if vanished(&e) || !dir.exists() => return Ok(false),
        Err(_) => files::read_path(&path)?,
    };
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !enabled.contains(&c.as_str()))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    let value = missing.join(" ");
    match files::try_write(&path, &value) {
        Ok(()) => Ok(true),
        Err(e) if vanished(&e) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::Io {
            path,
            msg: format!(
                "enabling {value:?} failed: {e}: this cgroup holds processes itself, and cgroup                  v2 lets only cgroups without processes hand controllers to children: choose a                  cgroupsPath whose parents hold no processes"
            ),
        }),
        Err(e) => Err(files::write_error(&path, &value, &e)),
    }
}

pub(crate) fn apply_memory(dir: &Path, memory: &LinuxMemory) -> Result<(), CgroupError> {
    if let Some(limit) = memory.limit() {
        let value = resources::memory_limit("memory limit", limit, "max")?;
        files::write(dir, "memory.max", &value, Presence::Required)?;
    }
    if let Some(reservation) = memory.reservation() {
        let value = if reservation < 0 {
            "max".to_string()
        } else {
            reservation.to_string()
        };
        files::write(dir, "memory.low", &value, Presence::Required)?;
    }
    if let Some(swap) = memory.swap() {
        let value = resources::swap_v2(swap, memory.limit())?;
        // Without swap accounting the file is absent; unlimited swap then needs no write.
        let written = files::write(dir, "memory.swap.max", &value, Presence::Optional)?;
        if !written && value != "max" {
            return Err(CgroupError::Unsupported(format!(
                "memory swap limit is set, but {} has no memory.swap.max: the kernel runs \
                 without swap accounting; drop memory.swap or enable it (swapaccount=1)",
                dir.display()
            )));
        }
    }
    // swappiness has no per-cgroup knob on v2 and is ignored, as runc and crun do. So are
    // the kernel memory limits (kernel, kernelTCP): v2 has no separate knob for them because
    // memory.max counts kernel memory and TCP socket buffers along with the rest.
    if memory.disable_oom_killer() == Some(true) {
        return Err(CgroupError::Unsupported(
            "memory.disableOOMKiller has no cgroup v2 equivalent: drop it".to_string(),
        ));
    }
    Ok(())
}

pub(crate) fn apply_cpu(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        let weight = resources::cpu_weight_from_shares(shares);
        files::write(dir, "cpu.weight", &weight.to_string(), Presence::Required)?;
    }
    if let Some(value) = resources::cpu_max(cpu.quota(), cpu.period()) {
        files::write(dir, "cpu.max", &value, Presence::Required)?;
    }
    if let Some(burst) = cpu.burst() {
        files::write(dir, "cpu.max.burst", &burst.to_string(), Presence::Required)?;
    }
    if let Some(idle) = cpu.idle() {
        files::write(dir, "cpu.idle", &idle.to_string(), Presence::Required)?;
    }
    if cpu.realtime_runtime().is_some_and(|r| r != 0)
        || cpu.realtime_period().is_some_and(|p| p != 0)
    {
        return Err(CgroupError::Unsupported(
            "linux.resources.cpu.realtimeRuntime/realtimePeriod have no cgroup v2 equivalent: \
             drop them"
                .to_string(),
        ));
    }
    Ok(())
}

pub(crate) fn apply_io(dir: &Path, blkio: &LinuxBlockIo) -> Result<(), CgroupError> {
    // BFQ takes blkio's own 1..=1000 scale; the generic io.weight takes 1..=10000. Both exist
    // only with a proportional scheduler and are skipped without one, as runc does.
    if let Some(weight) = blkio.weight() {
        if !files::write(
            dir,
            "io.bfq.weight",
            &weight.to_string(),
            Presence::Optional,
        )? {
            let value = format!("default {}", resources::io_weight_from_blkio(weight));
            files::write(dir, "io.weight", &value, Presence::Optional)?;
        }
    }
    for device in blkio.weight_device().iter().flatten() {
        if let Some(weight) = device.weight() {
            let line = format!(
                "{}:{} {}",
                device.major(),
                device.minor(),
                resources::io_weight_from_blkio(weight)
            );
            files::write(dir, "io.weight", &line, Presence::Optional)?;
        }
    }
    let throttles = [
        ("rbps", blkio.throttle_read_bps_device()),
        ("wbps", blkio.throttle_write_bps_device()),
        ("riops", blkio.throttle_read_iops_device()),
        ("wiops", blkio.throttle_write_iops_device()),
    ];
    for (key, devices) in throttles {
        for device in devices.iter().flatten() {
            let line = format!(
                "{}:{} {key}={}",
                device.major(),
                device.minor(),
                device.rate()
            );
            files::write(dir, "io.max", &line, Presence::Required)?;
        }
    }
    Ok(())
}

/// OCI `linux.resources.unified`: file name to value, written as given. Names must be plain
/// control file names of this cgroup, never paths.
pub(crate) fn apply_unified(
    dir: &Path,
    unified: &HashMap<String, String>,
) -> Result<(), CgroupError> {
    for (name, value) in unified {
        let plain = !name.is_empty()
            && !name.contains('/')
            && !name.starts_with('.')
            && name.contains('.')
            && !matches!(
                name.as_str(),
                "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control"
            );
        if !plain {
            return Err(CgroupError::InvalidResource(format!(
                "linux.resources.unified key {name:?} is not a controller file name (e.g. \
                 \"memory.high\"); paths and process-moving files are not allowed"
            )));
        }
        files::write(dir, name, value, Presence::Required)?;
    }
    Ok(())
}

pub(crate) fn freeze(dir: &Path) -> Result<(), CgroupError> {
    files::write(dir, "cgroup.freeze", "1", Presence::Required)?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut step = Duration::from_micros(50);
    loop {
        let events = files::read(dir, "cgroup.events")?;
        if files::keyed_value(&events, "frozen") == Some(1) {
            return Ok(());
        }
        if !backoff(&mut step, deadline) {
            files::write(dir, "cgroup.freeze", "0", Presence::Required)?;
            return Err(CgroupError::Io {
                path: dir.join("cgroup.events"),
                msg: format!(
                    "processes did not freeze within {} s (one may be stuck in the kernel): the \
                     cgroup was thawed again; retry",
                    SETTLE_TIMEOUT.as_secs()
                ),
            });
        }
    }
}

/// cgroup v2 logic against a temporary directory standing in for the cgroup root. The kernel
/// would create control files in new directories; the tests create the ones they look at.
#[cfg(test)]
mod tests {
    use super::super::{Cgroup, Layout};
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
    };
    use std::fs;
    use std::path::Path;

    fn fake_root(available: &str, enabled: &str) -> (tempfile::TempDir, Layout) {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), available).unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), enabled).unwrap();
        fs::create_dir(root.path().join("slipway")).unwrap();
        fs::write(root.path().join("slipway/cgroup.subtree_control"), "").unwrap();
        let layout = Layout::unified_at(root.path(), available);
        (root, layout)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    fn touch(dir: &Path, names: &[&str]) {
        for name in names {
            fs::write(dir.join(name), "").unwrap();
        }
    }

    #[test]
    fn create_enables_offered_controllers_in_every_ancestor() {
        let (root, layout) = fake_root("cpu io memory pids", "");
        let cg = Cgroup::with_layout(None, "web-1", &layout).unwrap();
        cg.create().unwrap();
        assert_eq!(
            read(&root.path().join("cgroup.subtree_control")),
            "+cpu +io +memory +pids"
        );
        assert_eq!(
            read(&root.path().join("slipway/cgroup.subtree_control")),
            "+cpu +io +memory +pids"
        );
        assert!(root.path().join("slipway/web-1").is_dir());
        assert_eq!(
            cg.unified_dir(),
            Some(root.path().join("slipway/web-1").as_path())
        );
    }

    #[test]
    fn create_writes_only_missing_controllers() {
        let (root, layout) = fake_root("cpu memory pids", "cpu memory");
        let cg = Cgroup::with_layout(None, "a", &layout).unwrap();
        cg.create().unwrap();
        assert_eq!(read(&root.path().join("cgroup.subtree_control")), "+pids");
    }

    #[test]
    fn apply_writes_v2_files_in_v2_units() {
        let (root, layout) = fake_root("cpuset cpu io memory hugetlb pids", "");
        let cg = Cgroup::with_layout(Some("/slipway/x"), "x", &layout).unwrap();
        cg.create().unwrap();
        let leaf = root.path().join("slipway/x");
        touch(
            &leaf,
            &[
                "memory.max",
                "memory.low",
                "memory.swap.max",
                "cpu.weight",
                "cpu.max",
                "cpuset.cpus",
                "cpuset.mems",
                "pids.max",
                "io.max",
                "hugetlb.2MB.max",
            ],
        );
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(256i64 << 20)
                    .reservation(128i64 << 20)
                    .swap(512i64 << 20)
                    .swappiness(10u64)
                    // No v2 knob (memory.max counts socket buffers): accepted, not written.
                    .kernel_tcp(16i64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0")
                    .mems("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(128i64).build().unwrap())
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
                        .major(8i64)
                        .minor(0i64)
                        .rate(1_048_576u64)
                        .build()
                        .unwrap()])
                    .build()
                    .unwrap(),
            )
            .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(-1i64)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        cg.apply(&resources).unwrap();
        let file = |name: &str| read(&leaf.join(name));
        assert_eq!(file("memory.max"), (256u64 << 20).to_string());
        assert_eq!(file("memory.low"), (128u64 << 20).to_string());
        assert_eq!(file("memory.swap.max"), (256u64 << 20).to_string());
        assert_eq!(file("cpu.weight"), "39");
        assert_eq!(file("cpu.max"), "50000 100000");
        assert_eq!(file("cpuset.cpus"), "0");
        assert_eq!(file("pids.max"), "128");
        assert_eq!(file("io.max"), "8:0 rbps=1048576");
        assert_eq!(file("hugetlb.2MB.max"), "max");
        // No io.weight / io.bfq.weight here (no proportional scheduler): skipped, no error.
        assert!(!leaf.join("io.weight").exists());
    }

    #[test]
    fn update_writes_only_what_is_set() {
        let (root, layout) = fake_root("cpu memory pids", "");
        let cg = Cgroup::with_layout(None, "u", &layout).unwrap();
        cg.create().unwrap();
        let leaf = root.path().join("slipway/u");
        touch(&leaf, &["pids.max"]);
        // memory.max does not exist: writing it would fail, so this also proves it is not written.
        let update = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(-1i64).build().unwrap())
            .memory(LinuxMemoryBuilder::default().build().unwrap())
            .build()
            .unwrap();
        cg.apply(&update).unwrap();
        assert_eq!(read(&leaf.join("pids.max")), "max");
    }

    #[test]
    fn missing_controller_and_bad_values_are_clear_errors() {
        let (_root, layout) = fake_root("cpu memory", "");
        let cg = Cgroup::with_layout(None, "e", &layout).unwrap();
        cg.create().unwrap();
        let pids = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(5i64).build().unwrap())
            .build()
            .unwrap();
        let msg = cg.apply(&pids).unwrap_err().to_string();
        assert!(msg.contains("no pids controller"), "{msg}");
        let tiny = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1000i64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let msg = cg.apply(&tiny).unwrap_err().to_string();
        assert!(
            msg.contains("memory limit 1000 is below the kernel's minimum"),
            "{msg}"
        );
        let required = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let msg = cg.apply(&required).unwrap_err().to_string();
        assert!(
            msg.contains("memory.max") && msg.contains("does not offer"),
            "{msg}"
        );
    }

    #[test]
    fn freeze_oom_kill_and_destroy_on_fake_tree() {
        let (root, layout) = fake_root("memory pids", "");
        let cg = Cgroup::with_layout(None, "f", &layout).unwrap();
        cg.create().unwrap();
        let leaf = root.path().join("slipway/f");
        touch(&leaf, &["cgroup.freeze", "cgroup.kill"]);
        fs::write(leaf.join("cgroup.events"), "populated 0\nfrozen 1\n").unwrap();
        fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n",
        )
        .unwrap();
        cg.freeze().unwrap();
        assert_eq!(read(&leaf.join("cgroup.freeze")), "1");
        assert!(cg.is_frozen().unwrap());
        cg.thaw().unwrap();
        assert_eq!(read(&leaf.join("cgroup.freeze")), "0");
        assert_eq!(cg.oom_kills().unwrap(), 2);
        cg.kill_all(nix::sys::signal::Signal::SIGKILL).unwrap();
        assert_eq!(read(&leaf.join("cgroup.kill")), "1");
        // A directory with plain files is not a cgroup: destroy refuses instead of looping.
        assert!(cg.destroy().is_err());
        for entry in fs::read_dir(&leaf).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        fs::remove_file(root.path().join("slipway/cgroup.subtree_control")).unwrap();
        cg.destroy().unwrap();
        assert!(
            !root.path().join("slipway").exists(),
            "empty /slipway parent removed"
        );
    }

    #[test]
    fn unified_keys_must_be_plain_file_names() {
        let (root, layout) = fake_root("memory", "");
        let cg = Cgroup::with_layout(None, "k", &layout).unwrap();
        cg.create().unwrap();
        touch(&root.path().join("slipway/k"), &["memory.high"]);
        for bad in ["../../x", "cgroup.procs", "", "memory"] {
            let res = LinuxResourcesBuilder::default()
                .unified(
                    [(bad.to_string(), "1".to_string())]
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>(),
                )
                .build()
                .unwrap();
            assert!(cg.apply(&res).is_err(), "{bad:?} accepted");
        }
        let ok = LinuxResourcesBuilder::default()
            .unified(
                [("memory.high".to_string(), "1000000".to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        cg.apply(&ok).unwrap();
        assert_eq!(read(&root.path().join("slipway/k/memory.high")), "1000000");
    }
}
