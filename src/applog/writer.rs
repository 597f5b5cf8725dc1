//! Appending to one source's log file, with one rotation past a size bound.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::line::{push_lines, Timestamp};
use super::{io_err, AppLogError};

/// Default size past which `SOURCE.log` is rotated to `SOURCE.log.1`: 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Buffered lines are written out once they reach this size, or on [`LogWriter::flush`].
const BUFFER_BYTES: usize = 64 * 1024;

/// The writer of one source's file, `DATA_DIR/logs/APP/SOURCE.log`.
///
/// Lines are buffered until [`flush`](LogWriter::flush) (or drop), and always written whole.
/// When a line would take the file past `max_bytes`, the file is renamed to `SOURCE.log.1`
/// (replacing the previous one) and a new file is started. Only one writer may write a
/// given file at a time (one process, one owner).
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    rotated: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    buf: Vec<u8>,
}

impl LogWriter {
    /// Opens (creating when missing) the file of `source` in `app`'s log directory.
    pub fn open(
        data_dir: &Path,
        app: &str,
        source: &str,
        max_bytes: u64,
    ) -> Result<LogWriter, AppLogError> {
        let path = super::source_file(data_dir, app, source)?;
        let dir = path.parent().expect("a source file has a directory");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(io_err("create log directory", dir))?;
        let file = open_append(&path)?;
        let size = file
            .metadata()
            .map_err(io_err("inspect log file", &path))?
            .len();
        Ok(LogWriter {
            rotated: path.with_extension("log.1"),
            path,
            file,
            size,
            max_bytes: max_bytes.max(1),
            buf: Vec::with_capacity(BUFFER_BYTES),
        })
    }

    /// The file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `message` as one or more lines `TIME SOURCE[PROCESS]: …` (see
    /// [`crate::applog`] for how line breaks and control characters are kept out).
    pub fn append(
        &mut self,
        time: Timestamp,
        source: &str,
        process: &str,
        message: &str,
    ) -> Result<(), AppLogError> {
        let mut lines = Vec::new();
        push_lines(&mut lines, time, source, process, message);
        self.append_lines(&lines)
    }

    /// Appends lines already in the log line shape (whole lines, each ending in `\n`, in
    /// time order). The rotation check is made once for all of them: the file may end up
    /// larger than the bound by at most this call's bytes.
    pub fn append_lines(&mut self, lines: &[u8]) -> Result<(), AppLogError> {
        let added = lines.len() as u64;
        if self.size > 0 && self.size + added > self.max_bytes {
            self.flush()?;
            self.rotate()?;
        }
        self.buf.extend_from_slice(lines);
        self.size += added;
        if self.buf.len() >= BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes buffered lines to the file.
    pub fn flush(&mut self) -> Result<(), AppLogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self
            .file
            .write_all(&self.buf)
            .map_err(io_err("append to log file", &self.path));
        // On error the lines are dropped rather than kept growing: logs must never stall
        // or exhaust the process that writes them.
        self.buf.clear();
        result
    }

    fn rotate(&mut self) -> Result<(), AppLogError> {
        std::fs::rename(&self.path, &self.rotated)
            .map_err(io_err("rotate log file", &self.path))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn open_append(path: &Path) -> Result<File, AppLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        // The directory is the platform's; a symlink there is never ours to follow.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("open log file", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(micros: i64) -> Timestamp {
        Timestamp { micros }
    }

    #[test]
    fn appends_whole_lines_and_rotates_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), "app", "web-1", 200).unwrap();
        for i in 0..10 {
            w.append(t(i), "app", "web-1", &format!("line {i}"))
                .unwrap();
        }
        w.flush().unwrap();
        let current = std::fs::read_to_string(w.path()).unwrap();
        let rotated = std::fs::read_to_string(dir.path().join("logs/app/web-1.log.1")).unwrap();
        assert!(current.len() <= 200 && rotated.len() <= 200);
        assert!(current.ends_with("line 9\n"), "{current}");
        assert!(rotated.ends_with('\n'));
        // Only one rotated file is kept.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("logs/app"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn reopening_continues_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut w = LogWriter::open(dir.path(), "app", "router", 1 << 20).unwrap();
            w.append(t(1), "slipway", "router", "first").unwrap();
        }
        let mut w = LogWriter::open(dir.path(), "app", "router", 1 << 20).unwrap();
        w.append(t(2), "slipway", "router", "second").unwrap();
        drop(w);
        let text = std::fs::read_to_string(dir.path().join("logs/app/router.log")).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn refuses_symlinks_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs/app")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("logs/app/web-1.log")).unwrap();
        assert!(LogWriter::open(dir.path(), "app", "web-1", 100).is_err());
        assert!(LogWriter::open(dir.path(), "..", "web-1", 100).is_err());
        assert!(LogWriter::open(dir.path(), "app", "../x", 100).is_err());
    }
}
