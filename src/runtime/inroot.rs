//! Paths inside a container's root, resolved with the kernel's help.
//!
//! Everything an image or a config supplies (mount destinations, `/dev` entries, masked paths,
//! the working directory) is a path *inside* the container, and the image controls the
//! symlinks along it. Each such path is resolved here, relative to a descriptor of the root,
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`:
//! - `..` and absolute symlinks stop at the root, as if it were `/`;
//! - magic links (`/proc/self/fd/N`, `/proc/PID/root`) are refused, so a descriptor the
//!   runtime holds can never be walked through (CVE-2024-21626);
//! - more than 40 links fail with ELOOP instead of leaving the rest unresolved (a chain
//!   of 41 links once reached the host).
//!
//! The result is a descriptor, and callers mount onto that descriptor (`fd_path`), so that
//! nothing can swap a component for a symlink between the check and the use
//! (CVE-2021-30465). Kernels without openat2 (before 5.6) get a userspace walk with the same
//! rules: one component at a time with O_NOFOLLOW, symlinks expanded here, within the root.
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// The kernel's own limit on symlinks followed in one lookup.
const MAX_LINKS: usize = 40;

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `path` with `.` removed and `..` applied lexically, never above `/`; always absolute.
/// A hostile `../../x` becomes `/x`: the same place RESOLVE_IN_ROOT would reach.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Open `path` inside the tree rooted at `root`, following symlinks as if `root` were `/`.
/// `flags` are the open flags (O_PATH, O_DIRECTORY, O_NOFOLLOW for the last component, …);
/// O_CLOEXEC is always added.
pub fn open(root: BorrowedFd, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlag::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let rel = relative(path);
        // EAGAIN: a concurrent rename raced the `..` check; the kernel asks us to retry.
        for _ in 0..16 {
            match openat2(root, rel.as_path(), how) {
                Err(Errno::EAGAIN) => continue,
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                r => return r,
            }
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            return Err(Errno::EAGAIN);
        }
    }
    walk(root, path, flags)
}

/// A path for `openat2`: relative to the root descriptor (`.` for the root itself).
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// The userspace equivalent of RESOLVE_IN_ROOT for kernels without openat2.
fn walk(root: BorrowedFd, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let step = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // Directories from the root down to the current one: `..` pops, never past the root.
    let mut dirs: Vec<OwnedFd> = vec![openat(root, ".", step | OFlag::O_DIRECTORY, Mode::empty())?];
    let mut queue: VecDeque<OsString> = components(path);
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let last = queue.is_empty();
        let cur = dirs.last().expect("the root is never popped");
        let fd = openat(cur.as_fd(), name.as_os_str(), step, Mode::empty())?;
        let kind = SFlag::from_bits_truncate(fstat(&fd)?.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFLNK && !(last && flags.contains(OFlag::O_NOFOLLOW)) {
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::ELOOP);
            }
            let target = nix::fcntl::readlinkat(cur.as_fd(), name.as_os_str())?;
            let target = Path::new(&target);
            if target.is_absolute() {
                dirs.truncate(1);
            }
            let mut front = components(target);
            front.extend(queue);
            queue = front;
            continue;
        }
        if last {
            // Reopen by name with the caller's flags; O_NOFOLLOW so a swap since the check
            // fails instead of being followed.
            return openat(
                cur.as_fd(),
                name.as_os_str(),
                flags | OFlag::O_NOFOLLOW,
                Mode::empty(),
            );
        }
        if kind != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        dirs.push(fd);
    }
    // The path named the root itself (or ended in `..`).
    openat(
        dirs.last().expect("the root is never popped").as_fd(),
        ".",
        flags,
        Mode::empty(),
    )
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// The parent directory of `path` (created if missing) and the last component's name.
/// The last component is *not* resolved: callers create, replace or inspect it themselves
/// with the `*at` calls, which never follow it.
pub fn parent_of(root: BorrowedFd, path: &Path) -> Result<(OwnedFd, OsString), Errno> {
    let path = clean(path);
    let name = path.file_name().ok_or(Errno::EINVAL)?.to_os_string();
    let parent = mkdir_all(root, path.parent().unwrap_or(Path::new("/")), 0o755)?;
    Ok((parent, name))
}

/// Make every missing directory of `path` inside the root (each one with `mkdirat` under a
/// descriptor resolved in the root) and return an O_PATH descriptor of the last one.
pub fn mkdir_all(root: BorrowedFd, path: &Path, mode: u32) -> Result<OwnedFd, Errno> {
    let path = clean(path);
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    match open(root, &path, dir_flags) {
        Err(Errno::ENOENT) => {}
        r => return r,
    }
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err(Errno::ENOENT),
    };
    let parent_fd = mkdir_all(root, parent, mode)?;
    match mkdirat(parent_fd.as_fd(), name, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    // Through the root again: `name` may be a symlink the image put there.
    open(root, &path, dir_flags)
}

/// An O_PATH descriptor of the file at `path`, created empty when missing (a mount point for
/// a file). A symlink at the last component is followed inside the root.
pub fn create_file(root: BorrowedFd, path: &Path, mode: u32) -> Result<OwnedFd, Errno> {
    match open(root, path, OFlag::O_PATH) {
        Err(Errno::ENOENT) => {}
        r => return r,
    }
    let (parent, name) = parent_of(root, path)?;
    match openat(
        parent.as_fd(),
        name.as_os_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    ) {
        Ok(_) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    open(root, path, OFlag::O_PATH)
}

/// A path that names exactly what `fd` refers to, for calls that only take paths (mount).
/// Valid while the process sees a procfs at /proc that it trusts: the host's, before
/// pivot_root.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The file type of an open descriptor.
pub fn kind(fd: &impl AsFd) -> Result<SFlag, Errno> {
    let st = fstat(fd.as_fd())?;
    Ok(SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))
}

/// Whether the last component of `name` under `dir` exists (without following it).
pub fn exists_at(dir: BorrowedFd, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

/// Force the userspace walk (tests of the fallback).
#[cfg(test)]
fn set_no_openat2(v: bool) {
    NO_OPENAT2.store(v, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn resolved(root: &Path, p: &str) -> Result<PathBuf, Errno> {
        let r = fs::File::open(root).unwrap();
        let fd = open(r.as_fd(), Path::new(p), OFlag::O_PATH)?;
        Ok(fs::read_link(fd_path(&fd)).unwrap())
    }

    fn world() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "").unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("a/rel")).unwrap();
        symlink("b", root.join("a/sib")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        // 41 links: one more than the kernel follows.
        for i in 0..41 {
            symlink(format!("/l{}", i + 1), root.join(format!("l{i}"))).unwrap();
        }
        fs::create_dir(root.join("l41")).unwrap();
        d
    }

    fn check(root: &Path) {
        let canon = root.canonicalize().unwrap();
        assert_eq!(
            resolved(root, "/abs/passwd").unwrap(),
            canon.join("etc/passwd")
        );
        assert_eq!(resolved(root, "/a/rel").unwrap(), canon.join("etc"));
        assert_eq!(resolved(root, "/../../etc").unwrap(), canon.join("etc"));
        assert_eq!(resolved(root, "/a/sib").unwrap(), canon.join("a/b"));
        assert_eq!(resolved(root, "/").unwrap(), canon);
        assert_eq!(resolved(root, "/loop"), Err(Errno::ELOOP));
        assert_eq!(resolved(root, "/l0"), Err(Errno::ELOOP));
        assert_eq!(resolved(root, "/l1").unwrap(), canon.join("l41"));
    }

    #[test]
    fn resolves_inside_the_root_with_openat2() {
        let d = world();
        check(d.path());
    }

    #[test]
    fn the_userspace_walk_follows_the_same_rules() {
        let d = world();
        set_no_openat2(true);
        let r = std::panic::catch_unwind(|| check(d.path()));
        set_no_openat2(false);
        r.unwrap();
    }

    #[test]
    fn magic_links_are_refused() {
        let d = world();
        let keep = fs::File::open(d.path()).unwrap();
        let root = fs::File::open("/").unwrap();
        let p = format!("/proc/self/fd/{}/etc", keep.as_raw_fd());
        assert!(matches!(
            open(root.as_fd(), Path::new(&p), OFlag::O_PATH),
            Err(Errno::ELOOP) | Err(Errno::EXDEV)
        ));
    }

    #[test]
    fn mkdir_all_stays_inside() {
        let d = world();
        let root = fs::File::open(d.path()).unwrap();
        let fd = mkdir_all(root.as_fd(), Path::new("/abs/new/deep"), 0o755).unwrap();
        let canon = d.path().canonicalize().unwrap();
        assert_eq!(
            fs::read_link(fd_path(&fd)).unwrap(),
            canon.join("etc/new/deep")
        );
        assert_eq!(
            mkdir_all(root.as_fd(), Path::new("/l0/x"), 0o755).err(),
            Some(Errno::ELOOP)
        );
        let f = create_file(root.as_fd(), Path::new("/a/rel/file"), 0o644).unwrap();
        assert_eq!(fs::read_link(fd_path(&f)).unwrap(), canon.join("etc/file"));
        assert_eq!(clean(Path::new("../../x/./y/..")), PathBuf::from("/x"));
    }
}
