//! Reading files of trees the app controls (its source, what a build container wrote) on the
//! host, without ever following a symlink: a `Procfile` that is a link to `/etc/shadow`, or a
//! build result replaced by one, must not make the host read (and quote back) a host file.
//!
//! The path is opened one component at a time below a trusted directory with `O_NOFOLLOW`, and
//! the file must be a regular file of bounded size (`O_NONBLOCK`, so a FIFO cannot hang the
//! builder).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;

use crate::sys::io::{at, PathError};

/// Why a file of an app-controlled tree was not read. The messages state the fact; callers say
/// what to do, which depends on who controls the tree.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFileError {
    #[error(
        "{path} is a symlink (or its path goes through one), which slipway does not follow here"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path} is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error(transparent)]
    Io(#[from] PathError),
}

fn io_error(path: &Path, errno: Errno) -> UntrustedFileError {
    match errno {
        Errno::ELOOP | Errno::ENOTDIR => UntrustedFileError::Symlink {
            path: path.to_path_buf(),
        },
        e => PathError::new("reading", path, e.into()).into(),
    }
}

/// Read `root/relative` (components separated by `/`, none of them `..`) as text of at most
/// `limit` bytes; `Ok(None)` when it does not exist. `root` itself is trusted (the caller made
/// it); nothing below it is followed when it is a symlink.
pub fn read_text_beneath(
    root: &Path,
    relative: &str,
    limit: u64,
) -> Result<Option<String>, UntrustedFileError> {
    let path = root.join(relative);
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
    assert!(
        !parts.is_empty() && parts.iter().all(|p| *p != ".." && *p != "."),
        "read_text_beneath takes a plain relative path, got {relative:?}"
    );
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir: OwnedFd = match open(root, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(io_error(root, e)),
    };
    let (last, parents) = parts.split_last().expect("not empty");
    for part in parents {
        dir = match openat(
            dir.as_fd(),
            *part,
            dir_flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match openat(dir.as_fd(), *last, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(io_error(&path, e)),
    };
    let meta = file.metadata().map_err(at("reading", &path))?;
    if !meta.is_file() {
        return Err(UntrustedFileError::NotAFile { path });
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(at("reading", &path))?;
    if bytes.len() as u64 > limit {
        return Err(UntrustedFileError::TooLarge { path, limit });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| UntrustedFileError::NotText { path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_plain_files_and_reports_absent_ones() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("out")).unwrap();
        std::fs::write(root.path().join("out/used"), "python\n").unwrap();
        assert_eq!(
            read_text_beneath(root.path(), "out/used", 100).unwrap(),
            Some("python\n".into())
        );
        assert_eq!(
            read_text_beneath(root.path(), "out/none", 100).unwrap(),
            None
        );
        assert_eq!(
            read_text_beneath(root.path(), "no/such", 100).unwrap(),
            None
        );
        let missing_root = root.path().join("missing");
        assert_eq!(read_text_beneath(&missing_root, "x", 100).unwrap(), None);
    }

    #[test]
    fn symlinks_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "host secret").unwrap();
        symlink(host.path().join("secret"), root.path().join("Procfile")).unwrap();
        symlink(host.path(), root.path().join("out")).unwrap();
        symlink("Procfile", root.path().join("relative")).unwrap();
        for name in ["Procfile", "out/secret", "relative"] {
            let e = read_text_beneath(root.path(), name, 100).unwrap_err();
            let message = e.to_string();
            assert!(
                matches!(e, UntrustedFileError::Symlink { .. }),
                "{name}: {message}"
            );
            assert!(!message.contains("host secret"), "{message}");
        }
    }

    #[test]
    fn fifos_directories_and_large_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&root.path().join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        std::fs::create_dir(root.path().join("dir")).unwrap();
        std::fs::write(root.path().join("big"), "x".repeat(101)).unwrap();
        std::fs::write(root.path().join("binary"), [0xff, 0xfe]).unwrap();
        let e = read_text_beneath(root.path(), "fifo", 100).unwrap_err();
        assert!(matches!(e, UntrustedFileError::NotAFile { .. }), "{e}");
        let e = read_text_beneath(root.path(), "dir", 100).unwrap_err();
        assert!(matches!(e, UntrustedFileError::NotAFile { .. }), "{e}");
        let e = read_text_beneath(root.path(), "big", 100).unwrap_err();
        assert!(e.to_string().contains("larger than 100 bytes"), "{e}");
        let e = read_text_beneath(root.path(), "binary", 100).unwrap_err();
        assert!(matches!(e, UntrustedFileError::NotText { .. }), "{e}");
    }
}
