//! cgroup v1 (legacy and hybrid hosts): one directory per hierarchy, v1 file names and units.
use super::files::{self, Presence};
use super::resources::{self, DeviceRule};
use super::{
    backoff, make_dirs, make_leaf_fast, Cgroup, CgroupError, Hierarchy, Version, SETTLE_TIMEOUT,
};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxNetwork};
use std::path::Path;
use std::time::{Duration, Instant};

/// mkdir the cgroup in one v1 hierarchy; returns how many levels were made.
pub(crate) fn create(hierarchy: &Hierarchy, components: &[&str]) -> Result<usize, CgroupError> {
    let made = match make_leaf_fast(&hierarchy.mount, components) {
        Some(made) => made,
        None => make_dirs(&hierarchy.mount, components, |_| Ok(true))?,
    };
    if hierarchy.has("cpuset") {
        seed_cpuset(&hierarchy.mount, components)?;
    }
    Ok(made)
}

/// A new v1 cpuset starts with empty `cpuset.cpus` and `cpuset.mems`, and adding a task to it
/// fails with ENOSPC. Copy the parent's values into every level that is still empty (a
/// parent made by a concurrent create may not be seeded yet either).
fn seed_cpuset(mount: &Path, components: &[&str]) -> Result<(), CgroupError> {
    for name in ["cpuset.cpus", "cpuset.mems"] {
        let mut parent_value = files::read(mount, name)?;
        let mut dir = mount.to_path_buf();
        for part in components {
            dir.push(part);
            let value = files::read(&dir, name)?;
            if value.is_empty() {
                files::write(&dir, name, &parent_value, Presence::Required)?;
            } else {
                parent_value = value;
            }
        }
    }
    Ok(())
}

pub(crate) fn apply_memory(dir: &Path, memory: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = memory
        .limit()
        .map(|l| resources::memory_limit("memory limit", l, "-1"))
        .transpose()?;
    let swap = memory
        .swap()
        .map(|s| resources::memory_limit("memory+swap limit", s, "-1"))
        .transpose()?;
    if let (Some(l), Some(s)) = (memory.limit(), memory.swap()) {
        if s >= 0 && l < 0 {
            return Err(CgroupError::InvalidResource(format!(
                "memory swap {s} is limited while the memory limit is unlimited: cgroup v1 \
                 needs memory+swap >= memory, so set a memory limit too (or swap -1)"
            )));
        }
        if s >= 0 && s < l {
            return Err(CgroupError::InvalidResource(format!(
                "memory swap {s} is below the memory limit {l}: swap counts memory plus swap, \
                 so it must be at least the memory limit (-1 for unlimited)"
            )));
        }
    }
    // memory.memsw.limit_in_bytes must stay >= memory.limit_in_bytes after every write:
    // lowering goes limit first, raising goes memsw first. Try limit first; EINVAL means the
    // new limit is above the current memsw, so raise memsw first.
    let mut swap_written = false;
    if let Some(limit) = &limit {
        let path = dir.join("memory.limit_in_bytes");
        match files::try_write(&path, limit) {
            Ok(()) => {}
            Err(e) if swap.is_some() && e.raw_os_error() == Some(libc::EINVAL) => {
                write_memsw(dir, swap.as_deref().unwrap_or("-1"))?;
                swap_written = true;
                files::write(dir, "memory.limit_in_bytes", limit, Presence::Required)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(files::open_error(&path, e))
            }
            Err(e) => return Err(files::write_error(&path, limit, &e)),
        }
    }
    if let (Some(swap), false) = (&swap, swap_written) {
        write_memsw(dir, swap)?;
    }
    if let Some(reservation) = memory.reservation() {
        let value = if reservation < 0 {
            "-1".to_string()
        } else {
            reservation.to_string()
        };
        files::write(
            dir,
            "memory.soft_limit_in_bytes",
            &value,
            Presence::Required,
        )?;
    }
    if let Some(swappiness) = memory.swappiness() {
        if swappiness > 100 {
            return Err(CgroupError::InvalidResource(format!(
                "memory swappiness {swappiness} is out of range: use 0..=100"
            )));
        }
        files::write(
            dir,
            "memory.swappiness",
            &swappiness.to_string(),
            Presence::Required,
        )?;
    }
    if let Some(disable) = memory.disable_oom_killer() {
        files::write(
            dir,
            "memory.oom_control",
            if disable { "1" } else { "0" },
            Presence::Required,
        )?;
    }
    if let Some(tcp) = memory.kernel_tcp() {
        apply_kernel_tcp(dir, tcp)?;
    }
    // The general kernel memory limit (`kernel`) is ignored, as runc does: since 5.16 the
    // kernel accepts memory.kmem.limit_in_bytes and does nothing with it.
    Ok(())
}

/// `memory.kmem.tcp.limit_in_bytes`: the TCP socket buffers of the cgroup, which v1 kernels
/// still limit (unlike kernel memory in general). -1 means no limit.
fn apply_kernel_tcp(dir: &Path, tcp: i64) -> Result<(), CgroupError> {
    let value = match tcp {
        -1 => "-1".to_string(),
        t if t < 0 => {
            return Err(CgroupError::InvalidResource(format!(
                "memory kernelTCP {t} is negative: use -1 for no limit or a byte count"
            )))
        }
        t => t.to_string(),
    };
    if files::write(
        dir,
        "memory.kmem.tcp.limit_in_bytes",
        &value,
        Presence::Optional,
    )? || tcp == -1
    {
        return Ok(());
    }
    Err(CgroupError::Unsupported(format!(
        "linux.resources.memory.kernelTCP {tcp} is set, but {} has no \
         memory.kmem.tcp.limit_in_bytes: this kernel does not limit TCP buffer memory per \
         cgroup (built without CONFIG_MEMCG_KMEM, or booted with cgroup.memory=nokmem); drop \
         kernelTCP",
        dir.display()
    )))
}

fn write_memsw(dir: &Path, value: &str) -> Result<(), CgroupError> {
    if files::write(
        dir,
        "memory.memsw.limit_in_bytes",
        value,
        Presence::Optional,
    )? || value == "-1"
    {
        return Ok(());
    }
    Err(CgroupError::Unsupported(format!(
        "memory swap limit {value} is set, but {} has no memory.memsw.limit_in_bytes: the \
         kernel runs without swap accounting; boot with swapaccount=1 or drop memory.swap",
        dir.display()
    )))
}

/// Whether any field the `cpu` controller (not cpuset) handles is set.
pub(crate) fn cpu_controller_fields_set(cpu: &LinuxCpu) -> bool {
    cpu.shares().is_some_and(|s| s != 0)
        || cpu.quota().is_some_and(|q| q != 0)
        || cpu.period().is_some_and(|p| p != 0)
        || cpu.burst().is_some()
        || cpu.idle().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some_and(|p| p != 0)
}

pub(crate) fn apply_cpu(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        files::write(dir, "cpu.shares", &shares.to_string(), Presence::Required)?;
    }
    if let Some(period) = cpu.period().filter(|p| *p != 0) {
        files::write(
            dir,
            "cpu.cfs_period_us",
            &period.to_string(),
            Presence::Required,
        )?;
    }
    if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
        let value = if quota < 0 {
            "-1".to_string()
        } else {
            quota.to_string()
        };
        files::write(dir, "cpu.cfs_quota_us", &value, Presence::Required)?;
    }
    if let Some(burst) = cpu.burst() {
        files::write(
            dir,
            "cpu.cfs_burst_us",
            &burst.to_string(),
            Presence::Required,
        )?;
    }
    if let Some(idle) = cpu.idle() {
        files::write(dir, "cpu.idle", &idle.to_string(), Presence::Required)?;
    }
    // Real-time budget: the period first, since the runtime must fit within it.
    if let Some(period) = cpu.realtime_period().filter(|p| *p != 0) {
        write_rt(dir, "cpu.rt_period_us", &period.to_string())?;
    }
    if let Some(runtime) = cpu.realtime_runtime() {
        write_rt(dir, "cpu.rt_runtime_us", &runtime.to_string())?;
    }
    Ok(())
}

fn write_rt(dir: &Path, name: &str, value: &str) -> Result<(), CgroupError> {
    match files::write(dir, name, value, Presence::Optional)? {
        true => Ok(()),
        false => Err(CgroupError::Unsupported(format!(
            "{name} is not offered in {}: the kernel lacks CONFIG_RT_GROUP_SCHED; drop \
             linux.resources.cpu.realtimeRuntime/realtimePeriod",
            dir.display()
        ))),
    }
}

pub(crate) fn apply_blkio(dir: &Path, blkio: &LinuxBlockIo) -> Result<(), CgroupError> {
    // Weights exist only with a proportional I/O scheduler (CFQ, or BFQ under its own
    // prefix); without one they are skipped, as runc does.
    if let Some(weight) = blkio.weight() {
        let value = weight.to_string();
        if !files::write(dir, "blkio.weight", &value, Presence::Optional)? {
            files::write(dir, "blkio.bfq.weight", &value, Presence::Optional)?;
        }
    }
    if let Some(weight) = blkio.leaf_weight() {
        files::write(
            dir,
            "blkio.leaf_weight",
            &weight.to_string(),
            Presence::Optional,
        )?;
    }
    for device in blkio.weight_device().iter().flatten() {
        if let Some(weight) = device.weight() {
            let line = format!("{}:{} {weight}", device.major(), device.minor());
            if !files::write(dir, "blkio.weight_device", &line, Presence::Optional)? {
                files::write(dir, "blkio.bfq.weight_device", &line, Presence::Optional)?;
            }
        }
        if let Some(weight) = device.leaf_weight() {
            let line = format!("{}:{} {weight}", device.major(), device.minor());
            files::write(dir, "blkio.leaf_weight_device", &line, Presence::Optional)?;
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            blkio.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            blkio.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            blkio.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            blkio.throttle_write_iops_device(),
        ),
    ];
    for (name, devices) in throttles {
        for device in devices.iter().flatten() {
            let line = format!("{}:{} {}", device.major(), device.minor(), device.rate());
            files::write(dir, name, &line, Presence::Required)?;
        }
    }
    Ok(())
}

/// net_cls class id and net_prio priorities: v1 only, cgroup v2 has no equivalent.
pub(crate) fn apply_network(cgroup: &Cgroup, network: &LinuxNetwork) -> Result<(), CgroupError> {
    let v1_host = |controller: &str| {
        cgroup
            .host_of(controller)
            .filter(|d| d.hierarchy.version == Version::V1)
            .ok_or_else(|| {
                CgroupError::Unsupported(format!(
                "linux.resources.network needs the v1 {controller} controller, which this host \
                 does not mount (cgroup v2 has no equivalent): drop linux.resources.network"
            ))
            })
    };
    if let Some(class_id) = network.class_id() {
        let d = v1_host("net_cls")?;
        files::write(
            &d.dir,
            "net_cls.classid",
            &class_id.to_string(),
            Presence::Required,
        )?;
    }
    if let Some(priorities) = network.priorities().as_ref().filter(|p| !p.is_empty()) {
        let d = v1_host("net_prio")?;
        for p in priorities {
            if p.name().is_empty() || p.name().contains(char::is_whitespace) {
                return Err(CgroupError::InvalidResource(format!(
                    "network priority interface name {:?} is empty or has spaces",
                    p.name()
                )));
            }
            let line = format!("{} {}", p.name(), p.priority());
            files::write(&d.dir, "net_prio.ifpriomap", &line, Presence::Required)?;
        }
    }
    Ok(())
}

/// Write the rules in order, each to `devices.allow` or `devices.deny`. The kernel applies
/// them like the OCI semantics: `a` resets to allow-all or deny-all (a spec starting with a
/// deny-all rule thus starts from nothing), other lines add exceptions.
pub(crate) fn apply_devices(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let allow_path = dir.join("devices.allow");
    let deny_path = dir.join("devices.deny");
    let mut allow = None;
    let mut deny = None;
    for rule in rules {
        let (slot, path) = if rule.allow {
            (&mut allow, &allow_path)
        } else {
            (&mut deny, &deny_path)
        };
        if slot.is_none() {
            *slot = Some(files::open_for_write(path).map_err(|e| files::open_error(path, e))?);
        }
        let Some(file) = slot.as_mut() else { continue };
        for line in resources::v1_device_lines(rule) {
            files::write_value(file, path, &line)?;
        }
    }
    Ok(())
}

pub(crate) fn freeze(dir: &Path) -> Result<(), CgroupError> {
    files::write(dir, "freezer.state", "FROZEN", Presence::Required)?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut step = Duration::from_micros(50);
    loop {
        match files::read(dir, "freezer.state")?.as_str() {
            "FROZEN" => return Ok(()),
            // Thawed by someone else meanwhile: ask again.
            "THAWED" => {
                files::write(dir, "freezer.state", "FROZEN", Presence::Required)?;
            }
            _ => {}
        }
        if !backoff(&mut step, deadline) {
            // Leave it running rather than half frozen.
            files::write(dir, "freezer.state", "THAWED", Presence::Required)?;
            return Err(CgroupError::Io {
                path: dir.join("freezer.state"),
                msg: format!(
                    "processes did not freeze within {} s (one may be stuck in uninterruptible \
                     sleep, e.g. on a hung mount): the cgroup was thawed again; retry",
                    SETTLE_TIMEOUT.as_secs()
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxMemoryBuilder;

    /// A directory standing in for a v1 memory cgroup, with the files the kernel offers.
    fn fake_memory_cgroup(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        dir
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn kernel_tcp_limit_is_written_where_the_kernel_offers_it() {
        let dir = fake_memory_cgroup(&["memory.limit_in_bytes", "memory.kmem.tcp.limit_in_bytes"]);
        let memory = LinuxMemoryBuilder::default()
            .limit(64i64 << 20)
            .kernel_tcp(16i64 << 20)
            .kernel(8i64 << 20)
            .build()
            .unwrap();
        apply_memory(dir.path(), &memory).unwrap();
        assert_eq!(
            read(dir.path(), "memory.kmem.tcp.limit_in_bytes"),
            (16i64 << 20).to_string()
        );
        assert!(
            !dir.path().join("memory.kmem.limit_in_bytes").exists(),
            "the general kernel memory limit is not written"
        );
        let unlimited = LinuxMemoryBuilder::default()
            .kernel_tcp(-1)
            .build()
            .unwrap();
        apply_memory(dir.path(), &unlimited).unwrap();
        assert_eq!(read(dir.path(), "memory.kmem.tcp.limit_in_bytes"), "-1");
        let negative = LinuxMemoryBuilder::default()
            .kernel_tcp(-5)
            .build()
            .unwrap();
        let e = apply_memory(dir.path(), &negative).unwrap_err().to_string();
        assert!(e.contains("kernelTCP -5 is negative"), "{e}");
    }

    #[test]
    fn kernel_tcp_limit_on_a_kernel_without_it_says_so() {
        let dir = fake_memory_cgroup(&["memory.limit_in_bytes"]);
        let memory = LinuxMemoryBuilder::default()
            .kernel_tcp(16i64 << 20)
            .build()
            .unwrap();
        let e = apply_memory(dir.path(), &memory).unwrap_err().to_string();
        assert!(
            e.contains("kernelTCP") && e.contains("memory.kmem.tcp.limit_in_bytes"),
            "{e}"
        );
        assert!(e.contains("drop kernelTCP"), "{e}");
        // No limit asked: nothing to refuse.
        let unlimited = LinuxMemoryBuilder::default()
            .kernel_tcp(-1)
            .build()
            .unwrap();
        apply_memory(dir.path(), &unlimited).unwrap();
    }
}
