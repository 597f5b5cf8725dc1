//! cgroups for containers, on v2 (unified) and v1 (legacy or hybrid) hosts.
//!
//! The host layout is detected once per process ([`Layout::host`]): a `cgroup2` filesystem at
//! `/sys/fs/cgroup` is the unified layout; otherwise every v1 hierarchy is found in
//! `/proc/self/mountinfo` (combined ones such as `cpu,cpuacct` and named ones such as
//! `name=systemd` included), plus the hybrid layout's controller-less cgroup2 mount, which
//! slipway joins too: it tracks the container's processes and offers `cgroup.kill`.
//!
//! A [`Cgroup`] is one directory per hierarchy at the same relative path. Each resource is
//! written through the hierarchy that hosts its controller, in that hierarchy's format
//! (`v1.rs`, `v2.rs`; value conversions in `resources.rs`; the v2 device program in
//! `devices_bpf.rs`).
mod devices_bpf;
mod files;
mod resources;
mod v1;
mod v2;

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("invalid cgroupsPath {0:?}: {1}")]
    InvalidPath(String, String),
    #[error("unsupported resource: {0}")]
    Unsupported(String),
    #[error("invalid resource value: {0}")]
    InvalidResource(String),
    #[error("cgroup layout of this host: {0}")]
    Layout(String),
    #[error("cgroup {path}: device controller program: {msg}")]
    Bpf { path: PathBuf, msg: String },
}

/// The usual mount point of the cgroup filesystems.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Controllers slipway enables on cgroup v2 (those the root offers).
const V2_CONTROLLERS: &[&str] = &[
    "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc",
];

/// cgroup v1 controller names that may appear in a cgroup mount's options.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// cgroup2 only, at the root.
    Unified,
    /// v1 hierarchies only.
    Legacy,
    /// v1 hierarchies for the controllers, plus a cgroup2 mount without (useful) controllers.
    Hybrid,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    pub version: Version,
    /// v1: the controllers bound to it (`cpu`, `cpuacct`, `name=systemd`, ...). v2: the
    /// controllers slipway enables and writes through it (none for hybrid's cgroup2 mount).
    pub controllers: Vec<String>,
    pub mount: PathBuf,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub kind: LayoutKind,
    /// v1 ones first (memory first of all, as the one process listings read), cgroup2 last.
    pub hierarchies: Vec<Hierarchy>,
}

static HOST_LAYOUT: OnceLock<Result<Layout, String>> = OnceLock::new();

impl Layout {
    /// The host's layout under `/sys/fs/cgroup`, detected on first use and then reused for the
    /// life of the process (detection reads mountinfo).
    pub fn host() -> Result<&'static Layout, CgroupError> {
        HOST_LAYOUT
            .get_or_init(|| Layout::detect(Path::new(DEFAULT_ROOT)).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| CgroupError::Layout(e.clone()))
    }

    /// Detect the layout of cgroup filesystems mounted at or under `root`.
    pub fn detect(root: &Path) -> Result<Layout, CgroupError> {
        if root.as_os_str().as_encoded_bytes().contains(&0) {
            let e = format!("{} contains a NUL byte", root.display());
            return Err(CgroupError::Layout(e));
        }
        let st = nix::sys::statfs::statfs(root).map_err(|e| {
            CgroupError::Layout(format!(
                "statfs {}: {}: mount the cgroup filesystems there (systemd does this at boot)",
                root.display(),
                std::io::Error::from(e)
            ))
        })?;
        if st.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC {
            let available = files::read(root, "cgroup.controllers")?;
            return Ok(Layout::unified_at(root, &available));
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
            CgroupError::Layout(format!(
                "reading /proc/self/mountinfo: {e}: is /proc mounted?"
            ))
        })?;
        let layout = Layout::from_mountinfo(&mountinfo, root);
        if layout.hierarchies.is_empty() {
            return Err(CgroupError::Layout(format!(
                "no cgroup hierarchy is mounted under {}: mount cgroup2 (or the v1 controllers) there",
                root.display()
            )));
        }
        Ok(layout)
    }

    /// A unified (cgroup2) layout rooted at `root`, whose `cgroup.controllers` reads
    /// `available`. Tests use it with a directory standing in for the cgroup root.
    pub fn unified_at(root: &Path, available: &str) -> Layout {
        let offered: Vec<&str> = available.split_whitespace().collect();
        Layout {
            kind: LayoutKind::Unified,
            hierarchies: vec![Hierarchy {
                version: Version::V2,
                controllers: V2_CONTROLLERS
                    .iter()
                    .filter(|c| offered.contains(c))
                    .map(|c| c.to_string())
                    .collect(),
                mount: root.to_path_buf(),
            }],
        }
    }

    /// v1 (and hybrid) hierarchies from the text of `/proc/self/mountinfo`.
    pub fn from_mountinfo(mountinfo: &str, root: &Path) -> Layout {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        let mut unified: Option<Hierarchy> = None;
        for line in mountinfo.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let (Some(fstype), _, Some(super_options)) = (right.next(), right.next(), right.next())
            else {
                continue;
            };
            let mount = PathBuf::from(unescape_mountinfo(mount_point));
            if !mount.starts_with(root) {
                continue;
            }
            match fstype {
                "cgroup" => {
                    let controllers: Vec<String> = super_options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    // A hierarchy mounted twice is one hierarchy: keep its first mount.
                    if !controllers.is_empty()
                        && !hierarchies.iter().any(|h| h.controllers == controllers)
                    {
                        hierarchies.push(Hierarchy {
                            version: Version::V1,
                            controllers,
                            mount,
                        });
                    }
                }
                "cgroup2" if unified.is_none() => {
                    unified = Some(Hierarchy {
                        version: Version::V2,
                        controllers: Vec::new(),
                        mount,
                    })
                }
                _ => {}
            }
        }
        // Memory first: process listings and OOM counts read the first hierarchy.
        hierarchies.sort_by_key(|h| !h.has("memory"));
        let kind = if unified.is_some() {
            LayoutKind::Hybrid
        } else {
            LayoutKind::Legacy
        };
        hierarchies.extend(unified);
        Layout { kind, hierarchies }
    }
}

/// Where huge page sizes are listed (`hugepages-2048kB`, ...).
pub const HUGEPAGES_SYSFS: &str = "/sys/kernel/mm/hugepages";

/// The huge page sizes this kernel offers, as cgroup file names spell them (`2MB`, `1GB`).
pub fn hugepage_sizes(sysfs: &Path) -> Vec<String> {
    let mut sizes: Vec<(u64, String)> = std::fs::read_dir(sysfs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let kb = name
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse::<u64>()
                .ok()?;
            Some((kb, resources::hugepage_size_name(kb)))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, name)| name).collect()
}

/// What the kernel says about its controllers, for error messages.
struct KernelControllers {
    /// /proc/cgroups: each controller, its v1 hierarchy (0: none) and whether it is enabled.
    proc_cgroups: Option<String>,
    /// `cgroup.controllers` of the cgroup2 mount, on a hybrid host.
    cgroup2: Option<String>,
}

/// Why `controller` has no hierarchy here, in terms of this host's layout, and what to do.
fn missing_controller(
    kind: LayoutKind,
    hierarchies: &[&Hierarchy],
    controller: &str,
    setting: &str,
    kernel: &KernelControllers,
) -> String {
    let proc_cgroups = kernel.proc_cgroups.as_deref();
    let drop_it = format!("or drop {setting} from the spec");
    if kind == LayoutKind::Unified {
        let mount = hierarchies
            .first()
            .map_or_else(|| DEFAULT_ROOT.into(), |h| h.mount.display().to_string());
        return format!(
            "this host uses cgroup v2 at {mount}, and its cgroup.controllers does not offer \
             {controller}: enable the controller in the kernel (or its boot options), {drop_it}"
        );
    }
    // cgroup v1 calls the io controller blkio.
    let name = if controller == "io" {
        "blkio"
    } else {
        controller
    };
    let v1: Vec<String> = hierarchies
        .iter()
        .filter(|h| h.version == Version::V1)
        .map(|h| h.mount.display().to_string())
        .collect();
    let mut text = format!(
        "this host uses cgroup v1{}, and none of its v1 hierarchies ({}) has the {name} \
         controller",
        if kind == LayoutKind::Hybrid {
            " (hybrid layout)"
        } else {
            ""
        },
        if v1.is_empty() {
            "none mounted".to_string()
        } else {
            v1.join(", ")
        }
    );
    if let Some(unified) = hierarchies.iter().find(|h| h.version == Version::V2) {
        let offers = kernel
            .cgroup2
            .as_deref()
            .is_some_and(|c| c.split_whitespace().any(|c| c == controller));
        text.push_str(&format!(
            "; the cgroup2 mount at {}{} only tracks processes (slipway writes no controller \
             through it on a hybrid host)",
            unified.mount.display(),
            if offers {
                format!(" offers {controller}, but")
            } else {
                String::new()
            }
        ));
    }
    let state = proc_cgroups.and_then(|t| {
        t.lines().find_map(|line| {
            let mut f = line.split_whitespace();
            (f.next()? == name).then(|| (f.next().map(str::to_string), f.nth(1) == Some("1")))
        })
    });
    let parent = v1
        .first()
        .and_then(|m| Path::new(m).parent())
        .map_or_else(|| DEFAULT_ROOT.into(), |p| p.display().to_string());
    match state {
        Some((_, false)) => text.push_str(&format!(
            "; the kernel has it disabled (cgroup_disable= boot option): enable it, {drop_it}"
        )),
        Some((Some(h), true)) if h == "0" => text.push_str(&format!(
            "; the kernel has it, but no v1 hierarchy is mounted for it: mount one (mkdir \
             {parent}/{name} && mount -t cgroup -o {name} cgroup {parent}/{name}), {drop_it}"
        )),
        Some(_) => text.push_str(&format!(
            "; the kernel has it bound to a v1 hierarchy that is not mounted under {parent}: \
             mount it there (mount -t cgroup -o {name} cgroup {parent}/{name}), {drop_it}"
        )),
        None if proc_cgroups.is_some() => text.push_str(&format!(
            "; this kernel has no {name} controller at all (see /proc/cgroups): {drop_it}"
        )),
        None => text.push_str(&format!(": mount the {name} hierarchy, {drop_it}")),
    }
    text
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(d) = octal {
            let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolve OCI `linux.cgroupsPath` to a path relative to each hierarchy root (starting with
/// `/`). Absolute and relative paths both land under the hierarchy root.
pub fn resolve_cgroups_path(cgroups_path: Option<&str>, id: &str) -> Result<String, CgroupError> {
    let Some(raw) = cgroups_path.filter(|p| !p.is_empty()) else {
        if id.is_empty() || id.contains('/') || id == "." || id == ".." || id.contains('\0') {
            return Err(CgroupError::InvalidPath(
                String::new(),
                format!(
                    "container id {id:?} cannot name a cgroup directory: use an id without '/'"
                ),
            ));
        }
        return Ok(format!("/slipway/{id}"));
    };
    let invalid = |why: &str| CgroupError::InvalidPath(raw.to_string(), why.to_string());
    if !raw.starts_with('/') && raw.split(':').count() == 3 {
        return Err(invalid(
            "this is a systemd cgroup path (slice:prefix:name), which needs the systemd cgroup \
             manager; slipway manages cgroups through cgroupfs: give a filesystem path such as \
             /slipway/<id> (podman: --cgroup-manager=cgroupfs)",
        ));
    }
    if raw.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(invalid(
                    "contains a '..' component, which could leave the cgroup hierarchy: use a \
                     path without '..'",
                ))
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(invalid(
            "names the hierarchy root, which a container cannot own: give a path such as \
             /slipway/<id>",
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The container's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    #[serde(flatten)]
    pub hierarchy: Hierarchy,
    pub dir: PathBuf,
}

/// A container's cgroup, on whatever layout the host has. Serializable so that the
/// state file can recreate it for later commands (kill --all, pause, update, delete);
/// serialize it after [`Cgroup::create`], which records the parent directories it made.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cgroup {
    /// Path relative to each hierarchy's root, always starting with '/'.
    pub path: String,
    pub layout: LayoutKind,
    pub dirs: Vec<CgroupDir>,
    /// How many parent levels above the leaf slipway made (and so removes when empty).
    #[serde(default)]
    owned_parents: AtomicUsize,
}

impl Clone for Cgroup {
    fn clone(&self) -> Self {
        Cgroup {
            path: self.path.clone(),
            layout: self.layout,
            dirs: self.dirs.clone(),
            owned_parents: AtomicUsize::new(self.owned_parents.load(Ordering::Relaxed)),
        }
    }
}

/// How long destroy waits for exiting tasks to leave, and freeze for tasks to stop.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sleep with growing steps (50 µs up to 10 ms) until `deadline`; false once it passed.
fn backoff(step: &mut Duration, deadline: Instant) -> bool {
    if Instant::now() >= deadline {
        return false;
    }
    std::thread::sleep(*step);
    *step = (*step * 2).min(Duration::from_millis(10));
    true
}

impl Cgroup {
    /// Resolve `cgroupsPath` from the spec (None: `/slipway/<id>`) on the host's layout.
    pub fn new(cgroups_path: Option<&str>, id: &str) -> Result<Self, CgroupError> {
        Cgroup::with_layout(cgroups_path, id, Layout::host()?)
    }

    /// Like [`Cgroup::new`] on a given layout (tests use a temporary directory as root).
    pub fn with_layout(
        cgroups_path: Option<&str>,
        id: &str,
        layout: &Layout,
    ) -> Result<Self, CgroupError> {
        let path = resolve_cgroups_path(cgroups_path, id)?;
        let relative = &path[1..];
        let dirs = layout
            .hierarchies
            .iter()
            .map(|h| CgroupDir {
                hierarchy: h.clone(),
                dir: h.mount.join(relative),
            })
            .collect();
        // Everything under /slipway is slipway's own; for other paths only what create() made.
        let depth = relative.split('/').count();
        let owned = if relative.starts_with("slipway/") {
            depth - 1
        } else {
            0
        };
        Ok(Cgroup {
            path,
            layout: layout.kind,
            dirs,
            owned_parents: AtomicUsize::new(owned),
        })
    }

    fn components(&self) -> Vec<&str> {
        self.path[1..].split('/').collect()
    }

    /// The directory through which `controller` is written: the v1 hierarchy bound to it,
    /// else the cgroup2 hierarchy when it offers it.
    fn host_of(&self, controller: &str) -> Option<&CgroupDir> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has(controller))
            .or_else(|| {
                self.dirs
                    .iter()
                    .find(|d| d.hierarchy.version == Version::V2 && d.hierarchy.has(controller))
            })
    }

    fn require(&self, controller: &str, setting: &str) -> Result<&CgroupDir, CgroupError> {
        self.host_of(controller).ok_or_else(|| {
            let hierarchies: Vec<&Hierarchy> = self.dirs.iter().map(|d| &d.hierarchy).collect();
            let kernel = KernelControllers {
                proc_cgroups: std::fs::read_to_string("/proc/cgroups").ok(),
                cgroup2: self
                    .v2_dir()
                    .and_then(|d| files::read(&d.hierarchy.mount, "cgroup.controllers").ok()),
            };
            CgroupError::Unsupported(format!(
                "{setting} is set, but this host has no {controller} controller available to \
                 slipway: {}",
                missing_controller(self.layout, &hierarchies, controller, setting, &kernel)
            ))
        })
    }

    fn v2_dir(&self) -> Option<&CgroupDir> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V2)
    }

    /// The container's cgroup2 directory on a unified host (for `clone3(CLONE_INTO_CGROUP)`).
    pub fn unified_dir(&self) -> Option<&Path> {
        (self.layout == LayoutKind::Unified)
            .then(|| self.v2_dir().map(|d| d.dir.as_path()))
            .flatten()
    }

    /// Create the cgroup directories (and enable controllers / seed cpusets as needed).
    pub fn create(&self) -> Result<(), CgroupError> {
        let components = self.components();
        for d in &self.dirs {
            let made = match d.hierarchy.version {
                Version::V1 => v1::create(&d.hierarchy, &components),
                Version::V2 => v2::create(&d.hierarchy, &components),
            };
            match made {
                Ok(made) => {
                    self.owned_parents
                        .fetch_max(made.saturating_sub(1), Ordering::Relaxed);
                }
                Err(e) => {
                    // Leave no half-made cgroup behind in the hierarchies already done.
                    let _ = self.destroy();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Write resource limits. Used for `update` too, so only what is set is written.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(memory) = resources.memory() {
            let d = self.require("memory", "linux.resources.memory")?;
            match d.hierarchy.version {
                Version::V1 => v1::apply_memory(&d.dir, memory)?,
                Version::V2 => v2::apply_memory(&d.dir, memory)?,
            }
        }
        if let Some(cpu) = resources.cpu() {
            if v1::cpu_controller_fields_set(cpu) {
                let d = self.require("cpu", "linux.resources.cpu")?;
                match d.hierarchy.version {
                    Version::V1 => v1::apply_cpu(&d.dir, cpu)?,
                    Version::V2 => v2::apply_cpu(&d.dir, cpu)?,
                }
            }
            let cpus = cpu.cpus().as_deref().filter(|s| !s.is_empty());
            let mems = cpu.mems().as_deref().filter(|s| !s.is_empty());
            if cpus.is_some() || mems.is_some() {
                let d = self.require("cpuset", "linux.resources.cpu.cpus/mems")?;
                // Same file names on v1 and v2.
                if let Some(cpus) = cpus {
                    files::write(&d.dir, "cpuset.cpus", cpus, files::Presence::Required)?;
                }
                if let Some(mems) = mems {
                    files::write(&d.dir, "cpuset.mems", mems, files::Presence::Required)?;
                }
            }
        }
        if let Some(value) = resources
            .pids()
            .as_ref()
            .and_then(|p| resources::pids_max(p.limit()))
        {
            let d = self.require("pids", "linux.resources.pids")?;
            files::write(&d.dir, "pids.max", &value, files::Presence::Required)?;
        }
        if let Some(block_io) = resources.block_io() {
            if let Some(d) = self
                .host_of("blkio")
                .filter(|d| d.hierarchy.version == Version::V1)
            {
                v1::apply_blkio(&d.dir, block_io)?;
            } else {
                let d = self.require("io", "linux.resources.blockIO")?;
                v2::apply_io(&d.dir, block_io)?;
            }
        }
        if let Some(limits) = resources
            .hugepage_limits()
            .as_ref()
            .filter(|l| !l.is_empty())
        {
            // Every size is checked before anything is written.
            let offered = hugepage_sizes(Path::new(HUGEPAGES_SYSFS));
            for limit in limits {
                resources::hugepage_size(limit.page_size(), &offered)?;
            }
            let d = self.require("hugetlb", "linux.resources.hugepageLimits")?;
            for limit in limits {
                let size = limit.page_size();
                let (suffix, value) = match d.hierarchy.version {
                    Version::V1 => ("limit_in_bytes", limit.limit().max(-1).to_string()),
                    Version::V2 if limit.limit() < 0 => ("max", "max".to_string()),
                    Version::V2 => ("max", limit.limit().to_string()),
                };
                let name = format!("hugetlb.{size}.{suffix}");
                if !files::write(&d.dir, &name, &value, files::Presence::Optional)? {
                    return Err(CgroupError::Unsupported(format!(
                        "linux.resources.hugepageLimits: {} has no {name}, so the hugetlb \
                         controller does not know {size} pages (this kernel offers: {}); use \
                         one of those sizes",
                        d.dir.display(),
                        offered.join(", ")
                    )));
                }
                // Reservations count too (kernel 5.7+): limit them alike where the file
                // exists, as runc does, so that reserved-but-unfaulted pages cannot escape.
                let rsvd = format!("hugetlb.{size}.rsvd.{suffix}");
                files::write(&d.dir, &rsvd, &value, files::Presence::Optional)?;
            }
        }
        if let Some(network) = resources.network() {
            v1::apply_network(self, network)?;
        }
        if let Some(rdma) = resources.rdma().as_ref().filter(|r| !r.is_empty()) {
            let d = self.require("rdma", "linux.resources.rdma")?;
            for (device, limit) in rdma {
                if device.is_empty() || device.contains(char::is_whitespace) {
                    return Err(CgroupError::InvalidResource(format!(
                        "rdma device name {device:?} is empty or has spaces"
                    )));
                }
                let mut line = device.clone();
                if let Some(h) = limit.hca_handles() {
                    line.push_str(&format!(" hca_handle={h}"));
                }
                if let Some(o) = limit.hca_objects() {
                    line.push_str(&format!(" hca_object={o}"));
                }
                files::write(&d.dir, "rdma.max", &line, files::Presence::Required)?;
            }
        }
        if let Some(unified) = resources.unified().as_ref().filter(|u| !u.is_empty()) {
            let d = self
                .v2_dir()
                .filter(|_| self.layout == LayoutKind::Unified)
                .ok_or_else(|| {
                    CgroupError::Unsupported(
                        "linux.resources.unified needs a cgroup v2 (unified) host; this host uses \
                     cgroup v1: use the v1 resource fields instead"
                            .to_string(),
                    )
                })?;
            v2::apply_unified(&d.dir, unified)?;
        }
        if let Some(rules) = resources.devices() {
            let rules = resources::device_rules(rules)?;
            if let Some(d) = self
                .host_of("devices")
                .filter(|d| d.hierarchy.version == Version::V1)
            {
                v1::apply_devices(&d.dir, &rules)?;
            } else if let Some(d) = self.v2_dir() {
                devices_bpf::apply(&d.dir, &rules)?;
            } else {
                return Err(CgroupError::Unsupported(
                    "linux.resources.devices is set, but this host has neither the v1 devices \
                     controller nor cgroup2 for a device program: mount one of them"
                        .to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Move a process (and so its future children) into the cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        let value = pid.to_string();
        for d in &self.dirs {
            let path = d.dir.join("cgroup.procs");
            match files::try_write(&path, &value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    return Err(CgroupError::Io {
                        path,
                        msg: format!("adding process {pid}: it has exited"),
                    })
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(CgroupError::Io {
                        path,
                        msg: format!(
                            "adding process {pid}: the cgroup does not exist: create it first"
                        ),
                    })
                }
                Err(e) => return Err(files::write_error(&path, &value, &e)),
            }
        }
        Ok(())
    }

    /// PIDs currently in the cgroup (host view). Every hierarchy holds the same processes;
    /// the first one (memory on v1) is read.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(d) = self.dirs.first() else {
            return Ok(Vec::new());
        };
        let text = files::read(&d.dir, "cgroup.procs")?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// The directory and version that freezes: v1's freezer hierarchy, else cgroup2, whose
    /// freezer is built in (the hybrid cgroup2 mount has it too).
    fn freezer(&self) -> Result<&CgroupDir, CgroupError> {
        self.dirs
            .iter()
            .find(|d| d.hierarchy.version == Version::V1 && d.hierarchy.has("freezer"))
            .or_else(|| self.v2_dir())
            .ok_or_else(|| {
                CgroupError::Unsupported(
                    "pause needs the v1 freezer controller mounted or cgroup2; this host has \
                     neither"
                        .to_string(),
                )
            })
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        let d = self.freezer()?;
        match d.hierarchy.version {
            Version::V1 => v1::freeze(&d.dir),
            Version::V2 => v2::freeze(&d.dir),
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        let d = self.freezer()?;
        match d.hierarchy.version {
            Version::V1 => {
                files::write(&d.dir, "freezer.state", "THAWED", files::Presence::Required).map(drop)
            }
            Version::V2 => {
                files::write(&d.dir, "cgroup.freeze", "0", files::Presence::Required).map(drop)
            }
        }
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let d = self.freezer()?;
        match d.hierarchy.version {
            Version::V1 => Ok(files::read(&d.dir, "freezer.state")? == "FROZEN"),
            Version::V2 => {
                let events = files::read(&d.dir, "cgroup.events")?;
                Ok(files::keyed_value(&events, "frozen") == Some(1))
            }
        }
    }

    /// Send `signal` to every process in the cgroup. SIGKILL goes through cgroup2's
    /// `cgroup.kill` where the kernel has it (5.14+), which also catches processes forking
    /// meanwhile. Otherwise the cgroup is frozen so no process can fork past the listing,
    /// every listed process is signalled, and the cgroup is thawed.
    pub fn kill_all(&self, signal: Signal) -> Result<(), CgroupError> {
        if signal == Signal::SIGKILL {
            if let Some(d) = self.v2_dir() {
                if files::write(&d.dir, "cgroup.kill", "1", files::Presence::Optional)? {
                    return Ok(());
                }
            }
        }
        let frozen = self.freeze().is_ok();
        let result = self.pids().map(|pids| {
            for pid in pids {
                // ESRCH: exited since the listing; nothing to do.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        });
        if frozen {
            self.thaw()?;
        }
        result
    }

    /// Times the OOM killer acted in this cgroup.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let d = self.require("memory", "reading OOM kills")?;
        let (name, key) = match d.hierarchy.version {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        let text = files::read(&d.dir, name)?;
        Ok(files::keyed_value(&text, key).unwrap_or(0))
    }

    /// Remove the cgroup directories; processes must be gone already. Tasks that are still
    /// exiting keep a v1 cgroup busy for a moment, so EBUSY is retried briefly. Afterwards
    /// the empty parents slipway made are removed; one another container still uses stays.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let components = self.components();
        let owned = self
            .owned_parents
            .load(Ordering::Relaxed)
            .min(components.len() - 1);
        let mut first_error = None;
        for d in &self.dirs {
            if let Err(e) = remove_tree(&d.dir) {
                first_error.get_or_insert(e);
                continue;
            }
            let mut parent = d.dir.as_path();
            for _ in 0..owned {
                let Some(p) = parent.parent() else { break };
                parent = p;
                match std::fs::remove_dir(parent) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    // Still used by another container (or one being created): keep it.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ENOTEMPTY) | Some(libc::EBUSY)
                        ) =>
                    {
                        break
                    }
                    Err(e) => {
                        first_error.get_or_insert(files::io_error(
                            parent.to_path_buf(),
                            "removing parent cgroup",
                            e,
                        ));
                        break;
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// rmdir a cgroup and any child cgroups it has (made inside the container), deepest first.
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut step = Duration::from_micros(50);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                let entries = std::fs::read_dir(dir)
                    .map_err(|e| files::io_error(dir.to_path_buf(), "listing child cgroups", e))?;
                let mut children = 0;
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        remove_tree(&entry.path())?;
                        children += 1;
                    }
                }
                if children == 0 {
                    // Not a cgroup (plain files in it): refuse rather than loop.
                    return Err(files::io_error(
                        dir.to_path_buf(),
                        "removing: it holds files, so it is not a cgroup directory; check the path",
                        e,
                    ));
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if !backoff(&mut step, deadline) {
                    return Err(CgroupError::Io {
                        path: dir.to_path_buf(),
                        msg: format!(
                            "cannot remove: processes are still in it after {} s: kill them \
                             first (kill --all), then delete again",
                            SETTLE_TIMEOUT.as_secs()
                        ),
                    });
                }
            }
            Err(e) => return Err(files::io_error(dir.to_path_buf(), "removing the cgroup", e)),
        }
    }
}

/// The usual case: the parents exist (other containers use them), so one mkdir makes the
/// leaf. None: a parent is missing, go the long way.
pub(crate) fn make_leaf_fast(mount: &Path, components: &[&str]) -> Option<usize> {
    let mut leaf = mount.to_path_buf();
    leaf.extend(components);
    match std::fs::create_dir(&leaf) {
        Ok(()) => Some(1),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Some(0),
        Err(_) => None,
    }
}

/// mkdir `mount/components...` (`before_leaf` runs on the leaf's parent once the ancestors
/// exist; false asks to start over); returns how many levels it made (leaf included). A
/// concurrent destroy of another container may remove a shared parent between two mkdirs:
/// ENOENT then restarts from the top.
pub(crate) fn make_dirs(
    mount: &Path,
    components: &[&str],
    mut before_leaf: impl FnMut(&Path) -> Result<bool, CgroupError>,
) -> Result<usize, CgroupError> {
    let mut attempts = 0;
    'again: loop {
        attempts += 1;
        let mut made = 0;
        let mut dir = mount.to_path_buf();
        for (level, part) in components.iter().enumerate() {
            if level + 1 == components.len() && !before_leaf(&dir)? {
                if attempts < 20 {
                    continue 'again;
                }
                return Err(CgroupError::Io {
                    path: dir,
                    msg: "parent cgroup kept disappearing while creating the cgroup: retry"
                        .to_string(),
                });
            }
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => made += 1,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e)
                    if (e.kind() == ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENODEV))
                        && attempts < 20 =>
                {
                    continue 'again
                }
                Err(e) => {
                    let hint = match e.raw_os_error() {
                        Some(libc::EROFS) => ": the cgroup filesystem is read-only here",
                        Some(libc::EACCES) | Some(libc::EPERM) => ": run as root",
                        _ => "",
                    };
                    return Err(files::io_error(
                        dir,
                        &format!("creating the cgroup{hint}"),
                        e,
                    ));
                }
            }
        }
        return Ok(made);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:35 / /other/memory rw,relatime - cgroup cgroup rw,memory
51 31 0:32 / /sys/fs/cgroup/memory2 rw,relatime - cgroup cgroup rw,memory
60 23 0:40 / /sys/fs/cgroup/with\\040space rw - cgroup cgroup rw,pids
";

    #[test]
    fn mountinfo_hybrid_layout() {
        let layout = Layout::from_mountinfo(HYBRID, Path::new("/sys/fs/cgroup"));
        assert_eq!(layout.kind, LayoutKind::Hybrid);
        let summary: Vec<(Version, String, String)> = layout
            .hierarchies
            .iter()
            .map(|h| {
                (
                    h.version,
                    h.controllers.join(","),
                    h.mount.display().to_string(),
                )
            })
            .collect();
        let v1 = |c: &str, m: &str| (Version::V1, c.to_string(), m.to_string());
        assert_eq!(
            summary,
            vec![
                v1("memory", "/sys/fs/cgroup/memory"),
                v1("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
                v1("cpuset", "/sys/fs/cgroup/cpuset"),
                v1("net_cls,net_prio", "/sys/fs/cgroup/net_cls,net_prio"),
                v1("name=systemd", "/sys/fs/cgroup/systemd"),
                v1("pids", "/sys/fs/cgroup/with space"),
                (
                    Version::V2,
                    String::new(),
                    "/sys/fs/cgroup/unified".to_string()
                ),
            ]
        );
    }

    #[test]
    fn mountinfo_legacy_without_cgroup2() {
        let text: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        let layout = Layout::from_mountinfo(&text, Path::new("/sys/fs/cgroup"));
        assert_eq!(layout.kind, LayoutKind::Legacy);
        assert!(layout.hierarchies.iter().all(|h| h.version == Version::V1));
    }

    #[test]
    fn unified_layout_keeps_only_known_offered_controllers() {
        let layout = Layout::unified_at(
            Path::new("/x"),
            "cpuset cpu io memory hugetlb pids rdma misc dmem\n",
        );
        assert_eq!(
            layout.hierarchies[0].controllers,
            ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"]
        );
    }

    #[test]
    fn cgroups_path_resolution() {
        assert_eq!(
            resolve_cgroups_path(None, "web-1").unwrap(),
            "/slipway/web-1"
        );
        assert_eq!(
            resolve_cgroups_path(Some(""), "web-1").unwrap(),
            "/slipway/web-1"
        );
        assert_eq!(resolve_cgroups_path(Some("/a/b"), "x").unwrap(), "/a/b");
        assert_eq!(
            resolve_cgroups_path(Some("a//b/./c/"), "x").unwrap(),
            "/a/b/c"
        );
        let dots = resolve_cgroups_path(Some("/a/../../etc"), "x")
            .unwrap_err()
            .to_string();
        assert!(dots.contains("'..'"), "{dots}");
        let systemd = resolve_cgroups_path(Some("system.slice:slipway:abc"), "x")
            .unwrap_err()
            .to_string();
        assert!(systemd.contains("cgroupfs"), "{systemd}");
        assert!(resolve_cgroups_path(Some("/"), "x").is_err());
        assert!(resolve_cgroups_path(None, "a/b").is_err());
        assert!(resolve_cgroups_path(None, "..").is_err());
    }

    const PROC_CGROUPS: &str = "\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
memory\t4\t47\t1
net_cls\t0\t1\t1
hugetlb\t0\t1\t1
rdma\t0\t1\t0
pids\t8\t1\t1
";

    fn explain(kind: LayoutKind, controller: &str, cgroup2: Option<&str>) -> String {
        let layout = Layout::from_mountinfo(HYBRID, Path::new("/sys/fs/cgroup"));
        let hierarchies: Vec<&Hierarchy> = layout
            .hierarchies
            .iter()
            .filter(|h| kind == LayoutKind::Hybrid || h.version == Version::V1)
            .collect();
        let kernel = KernelControllers {
            proc_cgroups: Some(PROC_CGROUPS.to_string()),
            cgroup2: cgroup2.map(str::to_string),
        };
        missing_controller(kind, &hierarchies, controller, "the setting", &kernel)
    }

    #[test]
    fn a_missing_controller_is_explained_by_the_real_layout() {
        let hugetlb = explain(LayoutKind::Hybrid, "hugetlb", Some("hugetlb\n"));
        assert!(!hugetlb.contains("cgroup.controllers"), "{hugetlb}");
        for part in [
            "cgroup v1 (hybrid layout)",
            "none of its v1 hierarchies (/sys/fs/cgroup/memory, /sys/fs/cgroup/cpu,cpuacct",
            "has the hugetlb controller",
            "the cgroup2 mount at /sys/fs/cgroup/unified offers hugetlb, but only tracks",
            "no v1 hierarchy is mounted for it",
            "mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb",
            "or drop the setting",
        ] {
            assert!(hugetlb.contains(part), "{part:?} missing from: {hugetlb}");
        }
        let legacy = explain(LayoutKind::Legacy, "hugetlb", None);
        assert!(
            !legacy.contains("hybrid") && !legacy.contains("cgroup2"),
            "{legacy}"
        );
        let disabled = explain(LayoutKind::Hybrid, "rdma", None);
        assert!(disabled.contains("cgroup_disable="), "{disabled}");
        let absent = explain(LayoutKind::Hybrid, "misc", None);
        assert!(absent.contains("no misc controller at all"), "{absent}");
        let io = explain(LayoutKind::Hybrid, "io", None);
        assert!(io.contains("the blkio controller"), "{io}");
        let unified = Layout::unified_at(Path::new("/sys/fs/cgroup"), "cpu memory");
        let hierarchies: Vec<&Hierarchy> = unified.hierarchies.iter().collect();
        let kernel = KernelControllers {
            proc_cgroups: None,
            cgroup2: None,
        };
        let v2 = missing_controller(LayoutKind::Unified, &hierarchies, "hugetlb", "x", &kernel);
        assert!(
            v2.contains("cgroup v2 at /sys/fs/cgroup") && v2.contains("does not offer hugetlb"),
            "{v2}"
        );
    }

    #[test]
    fn cgroup_serializes_and_keeps_owned_parents() {
        let layout = Layout::from_mountinfo(HYBRID, Path::new("/sys/fs/cgroup"));
        let cg = Cgroup::with_layout(None, "web-1", &layout).unwrap();
        let json = serde_json::to_string(&cg).unwrap();
        let back: Cgroup = serde_json::from_str(&json).unwrap();
        assert_eq!(back.path, "/slipway/web-1");
        assert_eq!(back.dirs, cg.dirs);
        assert_eq!(back.owned_parents.load(Ordering::Relaxed), 1);
        assert_eq!(
            back.dirs[0].dir,
            Path::new("/sys/fs/cgroup/memory/slipway/web-1")
        );
        let foreign = Cgroup::with_layout(Some("/machine/x"), "x", &layout).unwrap();
        assert_eq!(foreign.owned_parents.load(Ordering::Relaxed), 0);
    }
}
