//! Replacing a file atomically: readers see the old content or the new, never a part.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `data` to `path` through a temporary file in the same directory, flushed to disk
/// and renamed over `path`. The temporary's name holds our pid and a counter and is created
/// exclusively, so concurrent writers of the same file (other processes, other threads) never
/// share one; it is removed when anything fails.
pub fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let (tmp, mut file) = create_temporary(path)?;
    let result = (|| {
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file `.NAME.tmp-PID-N` beside `path`. A name taken already (left by a crashed
/// process that had our pid) is skipped.
fn create_temporary(path: &Path) -> std::io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no file name to write"))?;
    for _ in 0..16 {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = path.with_file_name(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        ErrorKind::AlreadyExists,
        "no free temporary name beside the file",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_content_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        super::write(&p, b"one").unwrap();
        super::write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(super::write(&d.path().join("no/such/dir/f"), b"x").is_err());
    }

    #[test]
    fn concurrent_writers_never_leave_a_mixture() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::thread::scope(|s| {
            for n in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        super::write(p, &[n; 4096]).unwrap();
                        let got = std::fs::read(p).unwrap();
                        assert_eq!(got.len(), 4096);
                        assert!(got.iter().all(|b| *b == got[0]));
                    }
                });
            }
        });
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
