//! Reading and writing cgroup control files, with errors that name the file.
//!
//! Control files are written with one `write(2)` each: the kernel parses every write as one
//! complete value, so a short write would be a different (wrong) value, not half of one.
use super::CgroupError;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Whether a missing control file is an error. Kernels differ in which optional files they
/// offer (e.g. `blkio.weight` exists only with the CFQ/BFQ scheduler); like runc, slipway
/// skips an optional one and fails on a required one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    Required,
    Optional,
}

/// Write `value` to `dir/name`. Returns `Ok(false)` when an optional file is absent.
pub(crate) fn write(
    dir: &Path,
    name: &str,
    value: &str,
    presence: Presence,
) -> Result<bool, CgroupError> {
    let path = dir.join(name);
    match open_for_write(&path) {
        Ok(mut file) => {
            write_value(&mut file, &path, value)?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound && presence == Presence::Optional => Ok(false),
        Err(e) => Err(open_error(&path, e)),
    }
}

/// Write one value, keeping the raw error for callers that react to a specific errno.
pub(crate) fn try_write(path: &Path, value: &str) -> std::io::Result<()> {
    let mut file = open_for_write(path)?;
    let n = file.write(value.as_bytes())?;
    if n != value.len() {
        return Err(std::io::Error::new(
            ErrorKind::WriteZero,
            "short write to a cgroup file",
        ));
    }
    Ok(())
}

/// Open a control file once for several writes (e.g. one device rule per write).
pub(crate) fn open_for_write(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

pub(crate) fn write_value(file: &mut File, path: &Path, value: &str) -> Result<(), CgroupError> {
    match file.write(value.as_bytes()) {
        Ok(n) if n == value.len() => Ok(()),
        Ok(n) => Err(CgroupError::Io {
            path: path.to_path_buf(),
            msg: format!(
                "the kernel accepted only {n} of {} bytes of {value:?}",
                value.len()
            ),
        }),
        Err(e) => Err(write_error(path, value, &e)),
    }
}

pub(crate) fn open_error(path: &Path, e: std::io::Error) -> CgroupError {
    let hint = if e.kind() == ErrorKind::NotFound {
        "; the kernel does not offer this file: enable the controller (kernel config or \
         cgroup_enable= boot option) or drop the setting from the spec"
    } else {
        ""
    };
    CgroupError::Io {
        path: path.to_path_buf(),
        msg: format!("cannot open: {e}{hint}"),
    }
}

pub(crate) fn write_error(path: &Path, value: &str, e: &std::io::Error) -> CgroupError {
    let hint = match e.raw_os_error() {
        Some(libc::EINVAL) => "; the kernel rejected the value: check its range and format",
        Some(libc::EBUSY) => {
            "; the kernel cannot apply it now (e.g. a limit below current usage): \
             raise the value or stop processes first"
        }
        Some(libc::ENOSPC) => {
            "; the cgroup has no CPUs or memory nodes (cpuset.cpus/cpuset.mems empty): \
             set them from the parent cgroup"
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "; permission denied: run as root, and check that a parent cgroup allows it"
        }
        _ => "",
    };
    CgroupError::Io {
        path: path.to_path_buf(),
        msg: format!("writing {value:?} failed: {e}{hint}"),
    }
}

/// Read a whole control file (they are small), trimmed of the trailing newline.
pub(crate) fn read(dir: &Path, name: &str) -> Result<String, CgroupError> {
    let path = dir.join(name);
    read_path(&path)
}

pub(crate) fn read_path(path: &Path) -> Result<String, CgroupError> {
    let mut file = File::open(path).map_err(|e| open_error(path, e))?;
    // Plain read() calls: read_to_string would first stat the file for a size hint, which
    // cgroup files do not have (they report 0 or 4096).
    let mut bytes = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path.to_path_buf(), "cannot read", e)),
        }
    }
    let mut text = String::from_utf8(bytes).map_err(|_| CgroupError::Io {
        path: path.to_path_buf(),
        msg: "content is not UTF-8: is this a cgroup file?".to_string(),
    })?;
    let trimmed_len = text.trim_end_matches('\n').len();
    text.truncate(trimmed_len);
    Ok(text)
}

/// Value of `key` in a flat keyed file such as `memory.events` (`key value` per line).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

pub(crate) fn io_error(path: PathBuf, what: &str, e: std::io::Error) -> CgroupError {
    CgroupError::Io {
        path,
        msg: format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_value_finds_exact_key() {
        let text = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(1));
        assert_eq!(keyed_value(text, "oom"), Some(2));
        assert_eq!(keyed_value(text, "missing"), None);
        assert_eq!(keyed_value("populated 1\nfrozen 0", "frozen"), Some(0));
    }

    #[test]
    fn optional_missing_file_is_skipped_required_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!write(dir.path(), "blkio.weight", "100", Presence::Optional).unwrap());
        let err = write(dir.path(), "pids.max", "10", Presence::Required).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pids.max"), "{msg}");
        assert!(msg.contains("does not offer"), "{msg}");
    }

    #[test]
    fn write_replaces_previous_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "1234567\n").unwrap();
        assert!(write(dir.path(), "memory.max", "max", Presence::Required).unwrap());
        assert_eq!(read(dir.path(), "memory.max").unwrap(), "max");
    }
}
