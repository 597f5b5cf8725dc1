//! The container's filesystem view: mounts, devices, pivot_root, masked and read-only paths.
//!
//! Runs in the container init, inside its new mount namespace, before the user's program.
//! Every mount target is resolved inside the rootfs (symlinks followed as if the rootfs were
//! `/`), so a hostile image cannot point a mount at a host path with a symlink. The rootfs is
//! not yet visible to any container process while this runs, so nothing can swap a path
//! between the check and the mount.
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::cgroups::{Cgroup, Version};
use super::error::{io_err, Result, RuntimeError};
use super::mountopts;

fn sys_mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let data = data.filter(|d| !d.is_empty());
    mount(src, target, fstype, flags, data).map_err(|e| {
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

/// Resolve `path` inside `root`, following symlinks as if `root` were `/`; never escapes.
pub fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    let mut queue: VecDeque<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(comp) = queue.pop_front() {
        if comp == ".." {
            cur.pop();
            continue;
        }
        let candidate = root.join(&cur).join(&comp);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && links < 40 => {
                links += 1;
                if let Ok(target) = fs::read_link(&candidate) {
                    if target.is_absolute() {
                        cur = PathBuf::new();
                    }
                    let mut front: Vec<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_os_string()),
                            Component::ParentDir => Some("..".into()),
                            _ => None,
                        })
                        .collect();
                    while let Some(c) = front.pop() {
                        queue.push_front(c);
                    }
                    continue;
                }
                cur.push(&comp);
            }
            _ => cur.push(&comp),
        }
    }
    root.join(cur)
}

/// Make a mount point: a file when mounting a file, a directory otherwise.
fn create_target(target: &Path, as_file: bool) -> Result<()> {
    if target.exists() {
        return Ok(());
    }
    if as_file {
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_err("create mount point", parent))?;
        }
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .map(drop)
            .map_err(io_err("create mount point", target))
    } else {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(target)
            .map_err(io_err("create mount point", target))
    }
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
pub fn remount_readonly(path: &Path, extra: MsFlags) -> Result<()> {
    let flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra | locked_flags(path);
    sys_mount(None, path, None, flags, None)
}

/// What the init needs to know besides the spec's mounts.
pub struct MountContext<'a> {
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    /// The container's cgroup (its hierarchies and directories), for `cgroup` mounts.
    pub cgroup: &'a Cgroup,
    pub cgroup_ns: bool,
    pub user_ns: bool,
}

/// Mount one spec entry under the rootfs.
pub fn mount_entry(m: &Mount, ctx: &MountContext) -> Result<()> {
    let options = m.options().clone().unwrap_or_default();
    let opts = mountopts::parse(&options);
    let typ = m.typ().clone().unwrap_or_default();
    let target = resolve_in_root(ctx.rootfs, m.destination());
    if !target.starts_with(ctx.rootfs) {
        return Err(RuntimeError::Init(format!(
            "mount destination {} escapes the rootfs",
            m.destination().display()
        )));
    }
    if opts.bind || typ == "bind" {
        let src = m.source().clone().unwrap_or_default();
        let src = if src.is_relative() {
            ctx.bundle.join(src)
        } else {
            src
        };
        let meta = fs::metadata(&src).map_err(|e| {
            RuntimeError::Init(format!(
                "bind mount source {} for {}: {e}",
                src.display(),
                m.destination().display()
            ))
        })?;
        create_target(&target, !meta.is_dir())?;
        let mut flags = MsFlags::MS_BIND;
        if opts.recursive {
            flags |= MsFlags::MS_REC;
        }
        sys_mount(Some(&src), &target, None, flags, None)?;
        // A bind mount ignores most flags on the first call: apply them with a remount.
        let wanted = opts.flags & !(MsFlags::MS_REMOUNT);
        if !wanted.is_empty() {
            let mut f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | wanted | locked_flags(&target);
            if !wanted.contains(MsFlags::MS_RDONLY) {
                f.remove(MsFlags::MS_RDONLY);
            }
            sys_mount(None, &target, None, f, None)?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        create_target(&target, false)?;
        mount_cgroup(&target, &opts, ctx)?;
    } else {
        create_target(&target, false)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
        let r = sys_mount(
            Some(&src),
            &target,
            Some(&typ),
            opts.flags,
            Some(&opts.data),
        );
        if let Err(e) = r {
            // Without its own network namespace a user namespace may not mount sysfs:
            // fall back to a read-only recursive bind of the host's /sys, as runc does.
            if typ == "sysfs" && ctx.user_ns {
                sys_mount(
                    Some(Path::new("/sys")),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                remount_readonly(&target, MsFlags::empty())?;
            } else {
                return Err(e);
            }
        }
    }
    for p in &opts.propagation {
        sys_mount(None, &target, None, *p, None)?;
    }
    Ok(())
}

/// `cgroup` mounts: cgroup2 on a unified host; on v1 a tmpfs holding one mount per hierarchy.
/// With a cgroup namespace each hierarchy is mounted fresh (its root is the container's
/// cgroup); without one, the container's own cgroup directory is bind-mounted, so the
/// container never sees its siblings.
fn mount_cgroup(target: &Path, opts: &mountopts::MountOptions, ctx: &MountContext) -> Result<()> {
    let flags = opts.flags
        & (MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_RELATIME
            | MsFlags::MS_RDONLY);
    // The layout the cgroup layer found on the host: no second look at mountinfo.
    if let Some(host) = ctx.cgroup.unified_dir() {
        if ctx.cgroup_ns {
            return sys_mount(
                Some(Path::new("cgroup2")),
                target,
                Some("cgroup2"),
                flags,
                None,
            );
        }
        sys_mount(
            Some(host),
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        if flags.contains(MsFlags::MS_RDONLY) {
            remount_readonly(target, flags & !MsFlags::MS_RDONLY)?;
        }
        return Ok(());
    }
    sys_mount(
        Some(Path::new("tmpfs")),
        target,
        Some("tmpfs"),
        (flags & !MsFlags::MS_RDONLY) | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )?;
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
        let dest = target.join(&name);
        create_target(&dest, false)?;
        if ctx.cgroup_ns {
            let options = d.hierarchy.controllers.join(",");
            sys_mount(
                Some(Path::new("cgroup")),
                &dest,
                Some("cgroup"),
                flags,
                Some(&options),
            )?;
        } else {
            // Only the container's own directory: it never sees its siblings.
            sys_mount(
                Some(&d.dir),
                &dest,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            if flags.contains(MsFlags::MS_RDONLY) {
                remount_readonly(&dest, flags & !MsFlags::MS_RDONLY)?;
            }
        }
        // Combined hierarchies (cpu,cpuacct) are reachable by each controller name too.
        let name = name.to_string_lossy().into_owned();
        if name.contains(',') {
            for alias in name.split(',') {
                let _ = symlink(&name, target.join(alias));
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        remount_readonly(
            target,
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
/// host's node of the same path.
fn make_device(rootfs: &Path, d: &DeviceNode, user_ns: bool) -> Result<()> {
    let target = resolve_in_root(rootfs, d.path);
    if let Some(parent) = target.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err("create", parent))?;
    }
    if user_ns {
        create_target(&target, true)?;
        return sys_mount(Some(d.path), &target, None, MsFlags::MS_BIND, None);
    }
    let _ = fs::remove_file(&target);
    mknod(
        &target,
        d.kind,
        Mode::from_bits_truncate(d.mode),
        makedev(d.major, d.minor),
    )
    .map_err(|e| RuntimeError::Init(format!("mknod {}: {e}", target.display())))?;
    // mknod honours the umask: set the exact mode and owner afterwards.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&target, fs::Permissions::from_mode(d.mode & 0o7777))
        .map_err(|e| RuntimeError::Init(format!("chmod {}: {e}", target.display())))?;
    nix::unistd::chown(&target, Some(d.uid.into()), Some(d.gid.into()))
        .map_err(|e| RuntimeError::Init(format!("chown {}: {e}", target.display())))
}

pub fn create_devices(
    rootfs: &Path,
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
            make_device(rootfs, &node, user_ns)?;
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
        make_device(rootfs, &node, user_ns)?;
    }
    Ok(())
}

/// The usual /dev symlinks.
pub fn dev_symlinks(rootfs: &Path, with_ptmx: bool) -> Result<()> {
    let mut links = vec![
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "dev/core"));
    }
    if with_ptmx {
        links.push(("pts/ptmx", "dev/ptmx"));
    }
    for (src, dst) in links {
        let dst = rootfs.join(dst);
        if dst.symlink_metadata().is_ok() {
            if dst.file_name() == Some("ptmx".as_ref()) {
                let _ = fs::remove_file(&dst);
            } else {
                continue;
            }
        }
        symlink(src, &dst).map_err(io_err("symlink", &dst))?;
    }
    Ok(())
}

/// Make the host's mounts invisible to propagation from the container (and vice versa).
pub fn isolate_propagation(flags: MsFlags) -> Result<()> {
    sys_mount(None, Path::new("/"), None, flags, None)
}

/// The rootfs must be a mount point for pivot_root.
pub fn bind_rootfs(rootfs: &Path) -> Result<()> {
    sys_mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

/// pivot_root into the rootfs and detach the old root, so the host's tree is unreachable.
pub fn pivot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs)
        .map_err(|e| RuntimeError::Init(format!("chdir {}: {e}", rootfs.display())))?;
    // pivot_root(".", ".") stacks the old root under the new one; no put_old dir needed.
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| RuntimeError::Init(format!("pivot_root {}: {e}", rootfs.display())))?;
    // Keep the unmount of the old root from propagating back to the host.
    sys_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| RuntimeError::Init(format!("detach old root: {e}")))?;
    nix::unistd::chdir("/").map_err(|e| RuntimeError::Init(format!("chdir /: {e}")))
}

/// Without a mount namespace there is nothing to pivot: chroot only.
pub fn chroot(rootfs: &Path) -> Result<()> {
    nix::unistd::chroot(rootfs)
        .map_err(|e| RuntimeError::Init(format!("chroot {}: {e}", rootfs.display())))?;
    nix::unistd::chdir("/").map_err(|e| RuntimeError::Init(format!("chdir /: {e}")))
}

/// Hide a path: /dev/null over files, an empty read-only tmpfs over directories.
pub fn mask_path(path: &Path) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        sys_mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
    } else {
        sys_mount(
            Some(Path::new("/dev/null")),
            path,
            None,
            MsFlags::MS_BIND,
            None,
        )
    }
}

/// Make a path read-only (a bind of itself, remounted read-only).
pub fn readonly_path(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    sys_mount(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    remount_readonly(path, MsFlags::MS_REC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_never_escapes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("a/rel")).unwrap();
        symlink("b", root.join("a/sib")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/passwd")),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/a/rel/x")),
            root.join("etc/x")
        );
        assert_eq!(resolve_in_root(root, Path::new("/../../x")), root.join("x"));
        assert_eq!(
            resolve_in_root(root, Path::new("/a/sib/c")),
            root.join("a/b/c")
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_in_root(root, Path::new("/loop")).starts_with(root));
    }
}
