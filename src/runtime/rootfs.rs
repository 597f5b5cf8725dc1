//! The container's filesystem view: mounts, devices, masked and read-only paths, the console,
//! pivot_root.
//!
//! Runs in the container init, inside its new mount namespace, before pivot_root: the host's
//! /proc is still the one this process sees, so `/proc/self/fd/N` names exactly a descriptor
//! we opened. Every path inside the rootfs is resolved by `inroot` (within the root, no magic
//! links, ELOOP past 40 links) and every mount goes onto the descriptor that resolution
//! returned, never onto a path string that a symlink in the image, or a process racing on a
//! shared volume, could redirect. Host-side sources (bind sources of the operator's spec, the
//! host's /dev/null for masks) come from outside the image's reach.
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, umask, Mode, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::cgroups::{Cgroup, Version};
use super::error::{Result, RuntimeError};
use super::inroot::{self, fd_path};
use super::mountopts;
use super::syscall::Syscall;

fn sys_mount(
    sys: &dyn Syscall,
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let data = data.filter(|d| !d.is_empty());
    sys.mount(src, target, fstype, flags, data).map_err(|e| {
        RuntimeError::Init(format!(
            "mount {} on {} (type {}, options {:?}): {e}",
            src.map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into()),
            target.display(),
            fstype.unwrap_or("bind"),
            data.unwrap_or("")
        ))
    })
}

/// Mount onto what `target` refers to; `what` names it in errors (the path in the container).
fn mount_on(
    sys: &dyn Syscall,
    src: Option<&Path>,
    target: &OwnedFd,
    what: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    sys_mount(sys, src, &fd_path(target), fstype, flags, data).map_err(|e| match e {
        RuntimeError::Init(m) => RuntimeError::Init(m.replace(
            &fd_path(target).display().to_string(),
            &what.display().to_string(),
        )),
        e => e,
    })
}

/// Resolve a path of the container inside its root, explaining failures in its terms.
fn resolve_err<'a>(what: &str, path: &'a Path) -> impl FnOnce(Errno) -> RuntimeError + 'a {
    let what = what.to_string();
    move |e| {
        let hint = match e {
            Errno::ELOOP => ": too many symlinks, or a /proc magic link, on the way",
            Errno::ENOTDIR => ": a component on the way is not a directory",
            Errno::ENOENT => ": a symlink on the way points to a path that does not exist",
            _ => "",
        };
        RuntimeError::Init(format!(
            "{what} {} (resolved inside the rootfs): {e}{hint}",
            path.display()
        ))
    }
}

/// Open `path` inside the root again: after a mount, the new mount's root (a descriptor
/// taken before it still names the covered directory).
fn reopen(root: BorrowedFd, path: &Path) -> Result<OwnedFd> {
    inroot::open(root, path, OFlag::O_PATH).map_err(resolve_err("reopen mount point", path))
}

/// Flags a remount must keep: in a user namespace the kernel locks nosuid/nodev/noexec/atime
/// flags of mounts inherited from the parent, and a remount that drops them fails with EPERM.
fn locked_flags(path: &Path) -> MsFlags {
    let mut f = MsFlags::empty();
    if let Ok(st) = nix::sys::statvfs::statvfs(path) {
        use nix::sys::statvfs::FsFlags;
        let fl = st.flags();
        for (a, b) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if fl.contains(a) {
                f |= b;
            }
        }
    }
    f
}

/// Remount a bind mount read-only, keeping its other flags.
pub fn remount_readonly(sys: &dyn Syscall, path: &Path, extra: MsFlags) -> Result<()> {
    let flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra | locked_flags(path);
    sys_mount(sys, None, path, None, flags, None)
}

/// What the init needs to know besides the spec's mounts.
pub struct MountContext<'a> {
    pub sys: &'a dyn Syscall,
    /// The rootfs (after it was bound onto itself), where every container path starts.
    pub root: BorrowedFd<'a>,
    pub bundle: &'a Path,
    /// The container's cgroup (its hierarchies and directories), for `cgroup` mounts.
    pub cgroup: &'a Cgroup,
    pub cgroup_ns: bool,
    pub user_ns: bool,
}

/// What shapes the container's filesystem, for `prepare`.
pub struct Layout<'a> {
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub mounts: &'a [Mount],
    pub devices: &'a [LinuxDevice],
    /// The spec's rootfsPropagation.
    pub propagation: Option<MsFlags>,
    pub cgroup: &'a Cgroup,
    pub cgroup_ns: bool,
    pub user_ns: bool,
}

/// Before the createContainer hooks: keep propagation away from the host, make the rootfs a
/// mount point, mount the spec's entries in order, then devices and the /dev links. Returns
/// the root descriptor every later lookup starts from.
pub fn prepare(sys: &dyn Syscall, l: &Layout) -> Result<OwnedFd> {
    isolate_propagation(sys, l.propagation)?;
    bind_rootfs(sys, l.rootfs)?;
    let root = open_root(l.rootfs)?;
    let ctx = MountContext {
        sys,
        root: root.as_fd(),
        bundle: l.bundle,
        cgroup: l.cgroup,
        cgroup_ns: l.cgroup_ns,
        user_ns: l.user_ns,
    };
    let mut dev_is_fresh = false;
    let mut has_devpts = false;
    for m in l.mounts {
        mount_entry(m, &ctx)?;
        let typ = m.typ().as_deref().unwrap_or("");
        if inroot::clean(m.destination()) == Path::new("/dev") && typ != "bind" {
            dev_is_fresh = !m
                .options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        }
        if typ == "devpts" {
            has_devpts = true;
        }
    }
    create_devices(sys, root.as_fd(), dev_is_fresh, l.devices, l.user_ns)?;
    if dev_is_fresh {
        dev_symlinks(root.as_fd(), has_devpts)?;
    }
    Ok(root)
}

/// After every mount (the hooks' included), before pivot_root: masks, then read-only paths.
pub fn protect(
    sys: &dyn Syscall,
    root: BorrowedFd,
    masked: &[String],
    readonly: &[String],
) -> Result<()> {
    let null = host_null()?;
    for p in masked {
        mask_path(sys, root, Path::new(p), &null)?;
    }
    for p in readonly {
        readonly_path(sys, root, Path::new(p))?;
    }
    Ok(())
}

/// Open the rootfs as the root of every later lookup.
pub fn open_root(rootfs: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::Init(format!("open rootfs {}: {e}", rootfs.display())))
}

/// Mount one spec entry under the rootfs.
pub fn mount_entry(m: &Mount, ctx: &MountContext) -> Result<()> {
    let sys = ctx.sys;
    let options = m.options().clone().unwrap_or_default();
    let opts = mountopts::parse(&options);
    let typ = m.typ().clone().unwrap_or_default();
    let dest = inroot::clean(m.destination());
    let root = ctx.root;
    let mount_point = |as_file: bool| {
        if as_file {
            inroot::create_file(root, &dest, 0o644)
        } else {
            inroot::mkdir_all(root, &dest, 0o755)
        }
        .map_err(resolve_err("mount destination", m.destination()))
    };
    let mount_point = |as_file: bool| -> Result<OwnedFd> {
        let fd = mount_point(as_file)?;
        refuse_procfs_target(&fd, &dest)?;
        Ok(fd)
    };
    if opts.bind || typ == "bind" {
        let src = m.source().clone().unwrap_or_default();
        let src = if src.is_relative() {
            ctx.bundle.join(src)
        } else {
            src
        };
        let meta = std::fs::metadata(&src).map_err(|e| {
            RuntimeError::Init(format!(
                "bind mount source {} for {}: {e}",
                src.display(),
                m.destination().display()
            ))
        })?;
        let target = mount_point(!meta.is_dir())?;
        let mut flags = MsFlags::MS_BIND;
        if opts.recursive {
            flags |= MsFlags::MS_REC;
        }
        mount_on(sys, Some(&src), &target, &dest, None, flags, None)?;
        // A bind mount ignores most flags on the first call: apply them with a remount.
        let wanted = opts.flags & !(MsFlags::MS_REMOUNT);
        if !wanted.is_empty() {
            let top = reopen(root, &dest)?;
            let mut f =
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | wanted | locked_flags(&fd_path(&top));
            if !wanted.contains(MsFlags::MS_RDONLY) {
                f.remove(MsFlags::MS_RDONLY);
            }
            mount_on(sys, None, &top, &dest, None, f, None)?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        let target = mount_point(false)?;
        mount_cgroup(&target, &dest, &opts, ctx)?;
    } else {
        let target = mount_point(false)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let r = mount_on(
            sys,
            Some(&src),
            &target,
            &dest,
            Some(&typ),
            opts.flags,
            Some(&opts.data),
        );
        if let Err(e) = r {
            // Without its own network namespace a user namespace may not mount sysfs:
            // fall back to a read-only recursive bind of the host's /sys, as runc does.
            if typ == "sysfs" && ctx.user_ns {
                mount_on(
                    sys,
                    Some(Path::new("/sys")),
                    &target,
                    &dest,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                remount_readonly(sys, &fd_path(&reopen(root, &dest)?), MsFlags::empty())?;
            } else {
                return Err(e);
            }
        }
    }
    if !opts.propagation.is_empty() {
        let top = reopen(root, &dest)?;
        for p in &opts.propagation {
            mount_on(sys, None, &top, &dest, None, *p, None)?;
        }
    }
    Ok(())
}

/// Files of /proc a mount may cover (lxcfs and similar provide container-aware ones), as
/// runc allows them.
const PROC_MOUNTABLE: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// A mount whose destination lands inside a procfs (an image's `/data -> /proc/sys`, say)
/// would cover kernel interfaces that masks and read-only paths are meant to guard
/// (CVE-2019-16884, CVE-2019-19921 class): refused, except the files in PROC_MOUNTABLE.
fn refuse_procfs_target(target: &OwnedFd, dest: &Path) -> Result<()> {
    let on_proc = nix::sys::statfs::fstatfs(target)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
    if on_proc && !PROC_MOUNTABLE.iter().any(|p| Path::new(p) == dest) {
        return Err(RuntimeError::Init(format!(
            "mount destination {} resolves into /proc (through a symlink of the image?): only /proc itself and {} may be mounted there",
            dest.display(),
            PROC_MOUNTABLE.join(", ")
        )));
    }
    Ok(())
}

/// `cgroup` mounts: cgroup2 on a unified host; on v1 a tmpfs holding one mount per hierarchy.
/// With a cgroup namespace each hierarchy is mounted fresh (its root is the container's
/// cgroup); without one, the container's own cgroup directory is bind-mounted, so the
/// container never sees its siblings.
fn mount_cgroup(
    target: &OwnedFd,
    dest: &Path,
    opts: &mountopts::MountOptions,
    ctx: &MountContext,
) -> Result<()> {
    let sys = ctx.sys;
    let flags = opts.flags
        & (MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_RELATIME
            | MsFlags::MS_RDONLY);
    let readonly = flags.contains(MsFlags::MS_RDONLY);
    // The layout the cgroup layer found on the host: no second look at mountinfo.
    if let Some(host) = ctx.cgroup.unified_dir() {
        if ctx.cgroup_ns {
            return mount_on(
                sys,
                Some(Path::new("cgroup2")),
                target,
                dest,
                Some("cgroup2"),
                flags,
                None,
            );
        }
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount_on(sys, Some(host), target, dest, None, bind, None)?;
        if readonly {
            let top = reopen(ctx.root, dest)?;
            remount_readonly(sys, &fd_path(&top), flags & !MsFlags::MS_RDONLY)?;
        }
        return Ok(());
    }
    let tmpfs_flags =
        (flags & !MsFlags::MS_RDONLY) | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_on(
        sys,
        Some(Path::new("tmpfs")),
        target,
        dest,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
    // Our own fresh tmpfs from here on: nothing of the image is under it.
    let tmpfs = reopen(ctx.root, dest)?;
    let v1 = ctx
        .cgroup
        .dirs
        .iter()
        .filter(|d| d.hierarchy.version == Version::V1);
    for d in v1 {
        let name = d
            .hierarchy
            .mount
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let sub_dest = dest.join(&name);
        nix::sys::stat::mkdirat(
            tmpfs.as_fd(),
            name.as_os_str(),
            Mode::from_bits_truncate(0o755),
        )
        .map_err(resolve_err("create cgroup mount point", &sub_dest))?;
        let sub = reopen(ctx.root, &sub_dest)?;
        if ctx.cgroup_ns {
            let options = d.hierarchy.controllers.join(",");
            mount_on(
                sys,
                Some(Path::new("cgroup")),
                &sub,
                &sub_dest,
                Some("cgroup"),
                flags,
                Some(&options),
            )?;
        } else {
            // Only the container's own directory: it never sees its siblings.
            let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount_on(sys, Some(&d.dir), &sub, &sub_dest, None, bind, None)?;
            if readonly {
                let top = reopen(ctx.root, &sub_dest)?;
                remount_readonly(sys, &fd_path(&top), flags & !MsFlags::MS_RDONLY)?;
            }
        }
        // Combined hierarchies (cpu,cpuacct) are reachable by each controller name too.
        let name = name.to_string_lossy().into_owned();
        if name.contains(',') {
            for alias in name.split(',') {
                let _ = symlinkat(name.as_str(), tmpfs.as_fd(), alias);
            }
        }
    }
    if readonly {
        remount_readonly(
            sys,
            &fd_path(&tmpfs),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}

/// The devices every container gets, as runc and crun create them.
pub fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
}

/// A device node to create in the container's /dev.
struct DeviceNode<'a> {
    path: &'a Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// Create a device node, or in a user namespace (where mknod is refused) bind-mount the
/// host's node of the same path. The node's directory is resolved in the root; the node
/// itself is made with the `*at` calls, which never follow a symlink the image put there.
fn make_device(sys: &dyn Syscall, root: BorrowedFd, d: &DeviceNode, user_ns: bool) -> Result<()> {
    let (dir, name) =
        inroot::parent_of(root, d.path).map_err(resolve_err("device directory", d.path))?;
    let name = name.as_os_str();
    let fail = |what: &str, e: Errno| {
        RuntimeError::Init(format!("{what} device {}: {e}", d.path.display()))
    };
    // Whatever the image has at that name goes: a node, a file, or a symlink to elsewhere.
    match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(fail("replace", e)),
    }
    if user_ns {
        let target = create_at(&dir, name).map_err(|e| fail("create mount point for", e))?;
        return mount_on(
            sys,
            Some(d.path),
            &target,
            d.path,
            None,
            MsFlags::MS_BIND,
            None,
        );
    }
    // mknod honours the umask: clear it so the node gets exactly the mode asked for.
    let old = umask(Mode::empty());
    let made = sys.mknodat(
        dir.as_fd(),
        name,
        d.kind,
        Mode::from_bits_truncate(d.mode & 0o7777),
        makedev(d.major, d.minor),
    );
    umask(old);
    made.map_err(|e| fail("mknod", e))?;
    sys.fchownat(dir.as_fd(), name, d.uid, d.gid)
        .map_err(|e| fail("chown", e))
}

/// An empty regular file `name` in `dir`, created here (never through a symlink), as an
/// O_PATH descriptor.
fn create_at(dir: &OwnedFd, name: &OsStr) -> std::result::Result<OwnedFd, Errno> {
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
    drop(nix::fcntl::openat(
        dir.as_fd(),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?);
    nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

pub fn create_devices(
    sys: &dyn Syscall,
    root: BorrowedFd,
    defaults: bool,
    devices: &[LinuxDevice],
    user_ns: bool,
) -> Result<()> {
    if defaults {
        for (path, major, minor) in default_devices() {
            if devices.iter().any(|d| d.path() == Path::new(path)) {
                continue;
            }
            let node = DeviceNode {
                path: Path::new(path),
                kind: SFlag::S_IFCHR,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            };
            make_device(sys, root, &node, user_ns)?;
        }
    }
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(RuntimeError::Invalid(format!(
                    "device {}: type \"a\" is only valid in cgroup rules",
                    d.path().display()
                )))
            }
        };
        let node = DeviceNode {
            path: d.path(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        make_device(sys, root, &node, user_ns)?;
    }
    Ok(())
}

/// The usual /dev symlinks, made in the container's /dev as resolved in the root (the image
/// may have made /dev itself a symlink: it then leads somewhere inside the root, never out).
pub fn dev_symlinks(root: BorrowedFd, with_ptmx: bool) -> Result<()> {
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    if with_ptmx {
        links.push(("pts/ptmx", "ptmx"));
    }
    let dev = Path::new("/dev");
    let dir = inroot::mkdir_all(root, dev, 0o755).map_err(resolve_err("directory", dev))?;
    for (src, name) in links {
        if inroot::exists_at(dir.as_fd(), OsStr::new(name)) {
            if name != "ptmx" {
                continue;
            }
            // The image's /dev/ptmx (a node or a link) goes: the devpts one is the working one.
            let _ = unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir);
        }
        symlinkat(src, dir.as_fd(), name)
            .map_err(|e| RuntimeError::Init(format!("symlink /dev/{name} -> {src}: {e}")))?;
    }
    Ok(())
}

/// Keep the container's mounts from propagating to the host and back: the whole tree becomes
/// a slave (or private) before anything is mounted. Shared or unbindable, when the spec asks
/// for them, apply to the container's root only after pivot_root (`set_root_propagation`):
/// pivot_root refuses a shared new root or parent.
pub fn isolate_propagation(sys: &dyn Syscall, requested: Option<MsFlags>) -> Result<()> {
    let flags = pre_pivot_propagation(requested);
    sys_mount(
        sys,
        None,
        Path::new("/"),
        None,
        flags | MsFlags::MS_REC,
        None,
    )
}

fn pre_pivot_propagation(requested: Option<MsFlags>) -> MsFlags {
    match requested {
        Some(p) if p.contains(MsFlags::MS_PRIVATE) => MsFlags::MS_PRIVATE,
        _ => MsFlags::MS_SLAVE,
    }
}

/// The spec's rootfsPropagation, on the container's own root after pivot_root.
pub fn set_root_propagation(sys: &dyn Syscall, flags: MsFlags) -> Result<()> {
    sys_mount(
        sys,
        None,
        Path::new("/"),
        None,
        flags | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| RuntimeError::Init(format!("rootfsPropagation: {e}")))
}

/// The rootfs must be a mount point for pivot_root.
pub fn bind_rootfs(sys: &dyn Syscall, rootfs: &Path) -> Result<()> {
    sys_mount(
        sys,
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

/// pivot_root into the rootfs and detach the old root, so the host's tree is unreachable.
pub fn pivot(sys: &dyn Syscall, rootfs: &Path) -> Result<()> {
    sys.chdir(rootfs)
        .map_err(|e| RuntimeError::Init(format!("chdir {}: {e}", rootfs.display())))?;
    // pivot_root(".", ".") stacks the old root under the new one; no put_old dir needed.
    sys.pivot_root_here()
        .map_err(|e| RuntimeError::Init(format!("pivot_root {}: {e}", rootfs.display())))?;
    // Keep the unmount of the old root from propagating back to the host.
    let slave = MsFlags::MS_SLAVE | MsFlags::MS_REC;
    sys_mount(sys, None, Path::new("."), None, slave, None)?;
    sys.umount_detach(Path::new("."))
        .map_err(|e| RuntimeError::Init(format!("detach old root: {e}")))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| RuntimeError::Init(format!("chdir /: {e}")))
}

/// Without a mount namespace there is nothing to pivot: chroot only.
pub fn chroot(sys: &dyn Syscall, rootfs: &Path) -> Result<()> {
    sys.chroot(rootfs)
        .map_err(|e| RuntimeError::Init(format!("chroot {}: {e}", rootfs.display())))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| RuntimeError::Init(format!("chdir /: {e}")))
}

/// The host's null device, checked to be one: masks bind it over files, so a /dev/null that
/// is anything else (CVE-2025-31133 swapped the container's for a symlink) would expose what
/// it points to instead of hiding the file.
pub fn host_null() -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        "/dev/null",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::Init(format!("open the host's /dev/null: {e}")))?;
    let st = nix::sys::stat::fstat(&fd)
        .map_err(|e| RuntimeError::Init(format!("stat the host's /dev/null: {e}")))?;
    let is_chr = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR;
    if !is_chr || st.st_rdev != makedev(1, 3) {
        return Err(RuntimeError::Init(
            "the host's /dev/null is not the null device (char 1:3): fix the host before running containers".into(),
        ));
    }
    Ok(fd)
}

/// Hide a path: the null device over files, an empty read-only tmpfs over directories.
pub fn mask_path(sys: &dyn Syscall, root: BorrowedFd, path: &Path, null: &OwnedFd) -> Result<()> {
    let fd = match inroot::open(root, path, OFlag::O_PATH) {
        Err(Errno::ENOENT) => return Ok(()),
        r => r.map_err(resolve_err("masked path", path))?,
    };
    let is_dir = inroot::kind(&fd).map_err(resolve_err("masked path", path))? == SFlag::S_IFDIR;
    if is_dir {
        mount_on(
            sys,
            Some(Path::new("tmpfs")),
            &fd,
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
    } else {
        mount_on(
            sys,
            Some(&fd_path(null)),
            &fd,
            path,
            None,
            MsFlags::MS_BIND,
            None,
        )
    }
}

/// Make a path read-only (a bind of itself, remounted read-only).
pub fn readonly_path(sys: &dyn Syscall, root: BorrowedFd, path: &Path) -> Result<()> {
    let fd = match inroot::open(root, path, OFlag::O_PATH) {
        Err(Errno::ENOENT) => return Ok(()),
        r => r.map_err(resolve_err("read-only path", path))?,
    };
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount_on(sys, Some(&fd_path(&fd)), &fd, path, None, bind, None)?;
    let top = reopen(root, path)?;
    remount_readonly(sys, &fd_path(&top), MsFlags::MS_REC)
}

/// The container's terminal: a pty of the container's own devpts (opened through the root's
/// /dev/ptmx), bound over /dev/console. Returns the master and the slave.
///
/// /dev/console is created here or must be a plain file or a character device: a symlink
/// there would redirect the bind (CVE-2025-52565), so it is refused, not followed.
pub fn console(sys: &dyn Syscall, root: BorrowedFd) -> Result<(OwnedFd, OwnedFd)> {
    let ptmx = Path::new("/dev/ptmx");
    let master = inroot::open(root, ptmx, OFlag::O_RDWR | OFlag::O_NOCTTY)
        .map_err(resolve_err("open", ptmx))?;
    let slave = super::console::peer_of(&master)?;
    let path = Path::new("/dev/console");
    let (dev, name) = inroot::parent_of(root, path).map_err(resolve_err("directory of", path))?;
    let target = match nix::fcntl::openat(
        dev.as_fd(),
        name.as_os_str(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Err(Errno::ENOENT) => create_at(&dev, &name).map_err(resolve_err("create", path))?,
        r => r.map_err(resolve_err("open", path))?,
    };
    let kind = inroot::kind(&target).map_err(resolve_err("stat", path))?;
    if kind != SFlag::S_IFREG && kind != SFlag::S_IFCHR {
        return Err(RuntimeError::Init(
            "/dev/console in the image is not a file or a device (a symlink?): refusing to mount the terminal through it; remove it from the image".into(),
        ));
    }
    mount_on(
        sys,
        Some(&fd_path(&slave)),
        &target,
        path,
        None,
        MsFlags::MS_BIND,
        None,
    )?;
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::fake::Recorder;

    #[test]
    fn the_host_inherited_tree_is_never_made_shared_or_unbindable() {
        let slave = MsFlags::MS_SLAVE;
        assert_eq!(pre_pivot_propagation(Some(MsFlags::MS_SHARED)), slave);
        assert_eq!(pre_pivot_propagation(Some(MsFlags::MS_UNBINDABLE)), slave);
        assert_eq!(pre_pivot_propagation(Some(MsFlags::MS_SLAVE)), slave);
        assert_eq!(pre_pivot_propagation(None), slave);
        let private = MsFlags::MS_PRIVATE;
        assert_eq!(pre_pivot_propagation(Some(private)), private);
    }

    fn mount(dest: &str, typ: &str) -> Mount {
        serde_json::from_value(serde_json::json!({
            "destination": dest, "type": typ, "source": typ, "options": ["nosuid"]
        }))
        .unwrap()
    }

    #[test]
    fn propagation_then_mounts_then_devices_then_masks() {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        for dir in ["proc/acpi", "proc/sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        std::fs::write(rootfs.join("proc/kcore"), "").unwrap();
        let mounts = [
            mount("/proc", "proc"),
            mount("/dev", "tmpfs"),
            mount("/dev/pts", "devpts"),
        ];
        let cgroup = Cgroup::new(Some("/slipway-unit-test"), "order").unwrap();
        let layout = Layout {
            rootfs: &rootfs,
            bundle: d.path(),
            mounts: &mounts,
            devices: &[],
            propagation: Some(MsFlags::MS_SHARED),
            cgroup: &cgroup,
            cgroup_ns: false,
            user_ns: false,
        };
        let rec = Recorder::default();
        let root = prepare(&rec, &layout).unwrap();
        let masked = ["/proc/kcore".to_string(), "/proc/acpi".to_string()];
        protect(&rec, root.as_fd(), &masked, &["/proc/sys".to_string()]).unwrap();

        let calls = rec.calls.borrow().clone();
        let at = |needle: &str| {
            calls
                .iter()
                .position(|c| c.contains(needle))
                .unwrap_or_else(|| panic!("no call with {needle:?} in {calls:#?}"))
        };
        let canon = rootfs.canonicalize().unwrap();
        let inside = |p: &str| canon.join(p).display().to_string();
        // Nothing is mounted before the host's tree stops propagating, and never as shared.
        assert_eq!(
            calls[0], "mount  /  MsFlags(MS_REC | MS_SLAVE)",
            "{calls:#?}"
        );
        assert!(calls[1].starts_with(&format!("mount {} {}", rootfs.display(), rootfs.display())));
        assert!(at(&format!("{} proc", inside("proc"))) < at("mknod null"));
        assert!(at(&format!("{} devpts", inside("dev/pts"))) < at("mknod null"));
        let last_device = rec.positions("chown").into_iter().max().unwrap();
        let mask_file = at(&format!("mount /dev/null {}", inside("proc/kcore")));
        let mask_dir = at(&format!("mount tmpfs {} tmpfs", inside("proc/acpi")));
        let sys_dir = inside("proc/sys");
        let readonly = at(&format!("{sys_dir} {sys_dir}  MsFlags(MS_BIND | MS_REC)"));
        assert!(last_device < mask_file && mask_file < mask_dir && mask_dir < readonly);
        // The /dev links were made inside the root.
        assert_eq!(
            std::fs::read_link(rootfs.join("dev/ptmx")).unwrap(),
            Path::new("pts/ptmx")
        );
    }
}
