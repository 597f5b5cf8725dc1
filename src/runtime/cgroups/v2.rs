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
    let enabled = match files::read_path(&path) {
        Ok(text) => text,
        Err(_) if !dir.exists() => return Ok(false),
        Err(e) => return Err(e),
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
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
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
    // swappiness has no per-cgroup knob on v2 and is ignored, as runc and crun do.
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
