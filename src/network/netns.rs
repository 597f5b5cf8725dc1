//! Named network namespaces kept alive by a bind mount at `<run_dir>/netns/<name>`.
//!
//! A namespace is created on a short-lived dedicated thread: the thread unshares
//! `CLONE_NEWNET` (which changes only that thread's namespace, never the process's other
//! threads), bind-mounts its own `/proc/thread-self/ns/net` onto the target file, and exits.
//! The mount is then the only reference that keeps the namespace alive, so deleting the mount
//! (detached unmount + unlink) frees it once no process lives in it any more.
//!
//! The `<run_dir>/netns` directory is bound onto itself and made a private mount, so the
//! namespace mounts made below it do not propagate into other mount namespaces (a propagated
//! copy would pin the namespace there after our unmount). A mount namespace created while a
//! namespace is mounted still receives a copy at creation time; container runtimes drop it when
//! they pivot_root and detach the old root. (`ip netns` makes its directory shared instead, so
//! that unmounts propagate too; with private we trade that for never pushing new namespace
//! mounts into the mount namespaces of running builds and containers.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

/// Errors from network namespace handling.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {name:?}: {reason}; use 1 to 64 characters among letters, digits, '_', '-' and '.', not starting with '.'")]
    InvalidName { name: String, reason: &'static str },
    #[error("network namespace {path} already exists; delete it first or pick another name")]
    AlreadyExists { path: PathBuf },
    #[error("network namespace {path} does not exist (or is not a mounted network namespace); create it first")]
    NotFound { path: PathBuf },
    #[error("cannot prepare the network namespace directory {path}: {source}; check that the run dir is writable and that we run as root")]
    PrepareDir { path: PathBuf, source: io::Error },
    #[error("cannot create network namespace {path} during {step}: {source}; creating namespaces needs root (CAP_SYS_ADMIN)")]
    Create {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error("cannot delete network namespace {path} during {step}: {source}")]
    Delete {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error("cannot enter network namespace {path}: {source}; check that it still exists and that we run as root")]
    Enter { path: PathBuf, source: io::Error },
    #[error("cannot release the network namespace directory {path}: {source}")]
    Release { path: PathBuf, source: io::Error },
    #[error("the thread working in network namespace {path} panicked; this is a bug")]
    ThreadPanicked { path: PathBuf },
}

/// The directory `<run_dir>/netns` holding named network namespaces.
#[derive(Debug, Clone)]
pub struct NetnsDir {
    dir: PathBuf,
}

impl NetnsDir {
    /// Opens (and prepares on first use) `<run_dir>/netns` as a private mount point.
    pub fn open(run_dir: &Path) -> Result<Self, NetnsError> {
        let dir = run_dir.join("netns");
        let prepare_err = |source| NetnsError::PrepareDir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(prepare_err)?;
        // A lock serialises the "is it a mount point yet?" check with the bind mount, so two
        // processes preparing the same run dir do not stack two mounts.
        let _lock =
            crate::sys::lock::exclusive(&run_dir.join("netns.lock")).map_err(prepare_err)?;
        let canonical = dir.canonicalize().map_err(prepare_err)?;
        if !is_mount_point(&canonical).map_err(prepare_err)? {
            mount(
                Some(&canonical),
                &canonical,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| prepare_err(io::Error::from(e)))?;
        }
        // Private even if it was already a mount point: a shared parent mount would otherwise
        // propagate every namespace mount into its peers.
        mount(
            None::<&str>,
            &canonical,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| prepare_err(io::Error::from(e)))?;
        Ok(Self { dir: canonical })
    }

    /// The directory path (`<run_dir>/netns`, canonicalised).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the namespace `name` is (or would be) mounted.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, NetnsError> {
        validate_name(name)?;
        Ok(self.dir.join(name))
    }

    /// Creates a new, empty network namespace (only a down `lo`) named `name`.
    pub fn create(&self, name: &str) -> Result<Netns, NetnsError> {
        let path = self.path_of(name)?;
        // O_EXCL: never mount over an existing namespace.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetnsError::AlreadyExists { path })
            }
            Err(source) => {
                return Err(NetnsError::Create {
                    path,
                    step: "creating the mount target file",
                    source,
                })
            }
        }
        let target = path.clone();
        let outcome = std::thread::Builder::new()
            .name("netns-create".into())
            .spawn(move || -> Result<(), (&'static str, io::Error)> {
                // Only this thread moves into the new namespace; it exits right after, so the
                // change cannot leak into any other thread of the process.
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("unshare", io::Error::from(e)))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| ("bind-mounting the namespace", io::Error::from(e)))
            })
            .map_err(|source| NetnsError::Create {
                path: path.clone(),
                step: "spawning the namespace thread",
                source,
            })?
            .join();
        let failure = match outcome {
            Ok(Ok(())) => return Ok(Netns { path }),
            Ok(Err((step, source))) => NetnsError::Create {
                path: path.clone(),
                step,
                source,
            },
            Err(_) => NetnsError::ThreadPanicked { path: path.clone() },
        };
        let _ = std::fs::remove_file(&path);
        Err(failure)
    }

    /// Deletes the namespace `name`; deleting one that does not exist succeeds.
    pub fn delete(&self, name: &str) -> Result<(), NetnsError> {
        delete_path(&self.path_of(name)?)
    }

    /// Names of the namespaces currently present in the directory.
    pub fn list(&self) -> Result<Vec<String>, NetnsError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| NetnsError::PrepareDir {
            path: self.dir.clone(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Unmounts the directory's own private bind mount and removes it, when no namespace is
    /// left in it. For tests and uninstall; a running host keeps the directory.
    pub fn release(self) -> Result<(), NetnsError> {
        let release_err = |source| NetnsError::Release {
            path: self.dir.clone(),
            source,
        };
        if !self.list()?.is_empty() {
            return Err(release_err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                "network namespaces are still mounted there; delete them first",
            )));
        }
        while is_mount_point(&self.dir).map_err(release_err)? {
            umount2(&self.dir, MntFlags::MNT_DETACH)
                .map_err(|e| release_err(io::Error::from(e)))?;
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(release_err(e)),
        }
    }
}

/// A mounted network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    /// Refers to an existing namespace mount (any path, e.g. `/run/netns/x` or `/proc/PID/ns/net`).
    pub fn from_path(path: impl Into<PathBuf>) -> Result<Self, NetnsError> {
        let path = path.into();
        if !is_netns(&path) {
            return Err(NetnsError::NotFound { path });
        }
        Ok(Self { path })
    }

    /// The path given to CNI plugins as `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the namespace, e.g. to pass it to `setns` in a container's init.
    pub fn open(&self) -> Result<OwnedFd, NetnsError> {
        open_netns(&self.path)
    }

    /// Runs `work` on a dedicated thread that has entered this namespace, and returns its
    /// result. Sockets created by `work` stay in the namespace after the thread ends.
    pub fn run_in<T, F>(&self, work: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        run_in_netns(&self.path, work)
    }

    /// Deletes the namespace (detached unmount, then unlink); idempotent.
    pub fn delete(self) -> Result<(), NetnsError> {
        delete_path(&self.path)
    }
}

/// Opens the network namespace at `path` after checking it is one.
pub fn open_netns(path: &Path) -> Result<OwnedFd, NetnsError> {
    if !is_netns(path) {
        return Err(NetnsError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(OwnedFd::from(file))
}

/// Runs `work` on a scoped thread that entered the network namespace at `path`.
///
/// The thread is dedicated and ends with `work`, so the namespace switch never affects the
/// caller's thread or any pooled thread.
pub fn run_in_netns<T, F>(path: &Path, work: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let fd = open_netns(path)?;
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("netns-enter".into())
            .spawn_scoped(scope, move || -> Result<T, NetnsError> {
                setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
                    path: path.to_path_buf(),
                    source: io::Error::from(e),
                })?;
                Ok(work())
            })
            .map_err(|source| NetnsError::Enter {
                path: path.to_path_buf(),
                source,
            })?;
        handle.join().map_err(|_| NetnsError::ThreadPanicked {
            path: path.to_path_buf(),
        })?
    })
}

/// True when `path` is a mounted network namespace (nsfs), as opposed to a missing path or
/// the empty file left behind after an unmount.
pub fn is_netns(path: &Path) -> bool {
    matches!(statfs(path), Ok(s) if s.filesystem_type() == NSFS_MAGIC)
}

fn delete_path(path: &Path) -> Result<(), NetnsError> {
    let delete_err = |step, source| NetnsError::Delete {
        path: path.to_path_buf(),
        step,
        source,
    };
    // Loop: a namespace mounted twice on the same file must lose both mounts.
    while is_netns(path) {
        umount2(path, MntFlags::MNT_DETACH)
            .map_err(|e| delete_err("unmounting (MNT_DETACH)", io::Error::from(e)))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(delete_err("removing the mount target file", e)),
    }
}

fn validate_name(name: &str) -> Result<(), NetnsError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Some("it contains a character other than letters, digits, '_', '-' and '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetnsError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// True when `path` (canonical) is the mount point of some mount in our mount namespace.
fn is_mount_point(path: &Path) -> io::Result<bool> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = path.to_string_lossy();
    Ok(mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| unescape_mountinfo(mount_point) == wanted))
}

/// Undoes the octal escapes (`\040` for space, …) that mountinfo uses in paths.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(value) = field
                .get(i + 1..i + 4)
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
            {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("c1-web.1_x").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "sp ace", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/run/a\\040b"), "/run/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn missing_path_is_not_a_netns() {
        assert!(!is_netns(Path::new("/nonexistent/netns/x")));
        assert!(!is_netns(Path::new("/")));
    }
}
