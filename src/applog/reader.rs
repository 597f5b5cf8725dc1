//! Reading an app's logs: the last lines of all its sources merged in time order, and
//! following new lines as they are written (across rotations and new sources).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::line::LogLine;
use super::{io_err, is_valid_source, AppLogError};

/// How much of a file is read at a time when looking for its last lines.
const BLOCK: u64 = 64 * 1024;

/// The last `n` lines of `app`'s logs, all sources merged, oldest first.
///
/// Each source contributes at most its last `n` lines (from `SOURCE.log`, then
/// `SOURCE.log.1` when the current file has fewer); lines that do not have the log line
/// shape are skipped. An app without logs has none: that is not an error.
pub fn tail(data_dir: &Path, app: &str, n: usize) -> Result<Vec<LogLine>, AppLogError> {
    let dir = super::app_dir(data_dir, app)?;
    let mut merged = Vec::new();
    for source in sources(&dir)? {
        let current = dir.join(format!("{source}.log"));
        let mut lines = last_lines(&current, n)?;
        if lines.len() < n {
            let mut older = last_lines(&dir.join(format!("{source}.log.1")), n - lines.len())?;
            older.append(&mut lines);
            lines = older;
        }
        merged.extend(lines.iter().filter_map(|l| LogLine::parse(l)));
    }
    // Stable: equal times keep the order of the sources' names and of each file.
    merged.sort_by_key(|l| l.time);
    let skip = merged.len().saturating_sub(n);
    merged.drain(..skip);
    Ok(merged)
}

/// The sources that have a current file in `dir`, sorted by name; none when `dir` is missing.
fn sources(dir: &Path) -> Result<Vec<String>, AppLogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list log directory", dir)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| Some(name.strip_suffix(".log")?.to_string()))
        .filter(|source| is_valid_source(source))
        .collect();
    names.sort();
    Ok(names)
}

/// The last `n` complete lines of `path` (none when it is missing). A trailing line
/// without its line break is being written and is left out.
fn last_lines(path: &Path, n: usize) -> Result<Vec<String>, AppLogError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("open log file", path)(e)),
    };
    let len = file
        .metadata()
        .map_err(io_err("inspect log file", path))?
        .len();
    // Read blocks backwards until they hold more than n line breaks (or the whole file).
    let mut pos = len;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut breaks = 0;
    while pos > 0 && breaks <= n {
        let step = BLOCK.min(pos);
        pos -= step;
        let mut block = vec![0; step as usize];
        file.seek(SeekFrom::Start(pos))
            .and_then(|_| file.read_exact(&mut block))
            .map_err(io_err("read log file", path))?;
        breaks += block.iter().filter(|&&b| b == b'\n').count();
        blocks.push(block);
    }
    let bytes: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => return Ok(Vec::new()),
    };
    let mut lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
    if pos > 0 {
        // The first piece started before the part read: not a whole line.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..]
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect())
}

/// Follows an app's logs: each [`poll`](Follow::poll) returns the lines written since the
/// previous one, all sources merged in time order.
///
/// Rotation is followed (the rest of the old file is read before the new one), and sources
/// that appear later are read from their start.
#[derive(Debug)]
pub struct Follow {
    dir: PathBuf,
    cursors: BTreeMap<String, Cursor>,
}

#[derive(Debug)]
struct Cursor {
    path: PathBuf,
    file: File,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
}

impl Cursor {
    fn open(path: PathBuf, at_end: bool) -> Result<Option<Cursor>, AppLogError> {
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open log file", &path)(e)),
        };
        let meta = file.metadata().map_err(io_err("inspect log file", &path))?;
        let offset = if at_end { meta.len() } else { 0 };
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err("read log file", &path))?;
        Ok(Some(Cursor {
            path,
            file,
            inode: meta.ino(),
            offset,
            partial: Vec::new(),
        }))
    }

    /// Reads what was appended since the last call and returns the complete lines.
    fn read_new(&mut self, out: &mut Vec<LogLine>) -> Result<(), AppLogError> {
        let meta = self
            .file
            .metadata()
            .map_err(io_err("inspect log file", &self.path))?;
        if meta.len() < self.offset {
            // Truncated in place: start over.
            self.offset = 0;
            self.partial.clear();
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(io_err("read log file", &self.path))?;
        }
        let mut bytes = std::mem::take(&mut self.partial);
        let read = self
            .file
            .read_to_end(&mut bytes)
            .map_err(io_err("read log file", &self.path))?;
        self.offset += read as u64;
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.partial = bytes.split_off(end);
        out.extend(
            bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| LogLine::parse(&String::from_utf8_lossy(l))),
        );
        Ok(())
    }
}

impl Follow {
    /// Starts following `app`'s logs from the current end of every file.
    pub fn new(data_dir: &Path, app: &str) -> Result<Follow, AppLogError> {
        let mut follow = Follow {
            dir: super::app_dir(data_dir, app)?,
            cursors: BTreeMap::new(),
        };
        follow.discover(true)?;
        Ok(follow)
    }

    fn discover(&mut self, at_end: bool) -> Result<(), AppLogError> {
        for source in sources(&self.dir)? {
            if !self.cursors.contains_key(&source) {
                let path = self.dir.join(format!("{source}.log"));
                if let Some(cursor) = Cursor::open(path, at_end)? {
                    self.cursors.insert(source, cursor);
                }
            }
        }
        Ok(())
    }

    /// The lines written since the previous poll (or since [`Follow::new`]), oldest first.
    pub fn poll(&mut self) -> Result<Vec<LogLine>, AppLogError> {
        self.discover(false)?;
        let mut lines = Vec::new();
        for cursor in self.cursors.values_mut() {
            cursor.read_new(&mut lines)?;
            let rotated = match std::fs::metadata(&cursor.path) {
                Ok(meta) => meta.ino() != cursor.inode,
                Err(_) => false,
            };
            if rotated {
                // The old file is read to its end above; go on with the new one.
                if let Some(mut fresh) = Cursor::open(cursor.path.clone(), false)? {
                    fresh.read_new(&mut lines)?;
                    *cursor = fresh;
                }
            }
        }
        lines.sort_by_key(|l| l.time);
        Ok(lines)
    }

    /// A blocking iterator over new lines, polling every `interval` while there are none.
    pub fn lines(self, interval: Duration) -> FollowLines {
        FollowLines {
            follow: self,
            pending: std::collections::VecDeque::new(),
            interval,
        }
    }
}

/// The iterator of [`Follow::lines`]; it ends only on an error (returned once).
#[derive(Debug)]
pub struct FollowLines {
    follow: Follow,
    pending: std::collections::VecDeque<LogLine>,
    interval: Duration,
}

impl Iterator for FollowLines {
    type Item = Result<LogLine, AppLogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(Ok(line));
            }
            match self.follow.poll() {
                Ok(lines) if lines.is_empty() => std::thread::sleep(self.interval),
                Ok(lines) => self.pending.extend(lines),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LogWriter, Timestamp};
    use super::*;

    fn t(micros: i64) -> Timestamp {
        Timestamp { micros }
    }

    #[test]
    fn tail_merges_sources_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut web = LogWriter::open(dir.path(), "app", "web-1", 1 << 20).unwrap();
        let mut router = LogWriter::open(dir.path(), "app", "router", 1 << 20).unwrap();
        for i in 0..5 {
            web.append(t(i * 10), "app", "web-1", &format!("w{i}"))
                .unwrap();
            router
                .append(t(i * 10 + 5), "slipway", "router", &format!("r{i}"))
                .unwrap();
        }
        drop((web, router));
        let lines = tail(dir.path(), "app", 4).unwrap();
        let messages: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["w3", "r3", "w4", "r4"]);
        assert!(tail(dir.path(), "other", 4).unwrap().is_empty());
        assert!(tail(dir.path(), "../app", 4).is_err());
    }

    #[test]
    fn tail_reaches_into_the_rotated_file_and_skips_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), "app", "web-1", 300).unwrap();
        for i in 0..10 {
            w.append(t(i), "app", "web-1", &format!("m{i}")).unwrap();
        }
        let path = w.path().to_path_buf();
        drop(w);
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2026-11-26T10:00:00.000000+00:00 app[web-1]: half")
            .unwrap();
        let lines = tail(dir.path(), "app", 8).unwrap();
        let messages: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]);
    }

    #[test]
    fn last_lines_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let lines = last_lines(&path, 15_000).unwrap();
        assert_eq!(lines.len(), 15_000);
        assert_eq!(lines[0], "line 5000");
        assert_eq!(lines[14_999], "line 19999");
    }

    #[test]
    fn follow_sees_new_lines_rotation_and_new_sources() {
        let dir = tempfile::tempdir().unwrap();
        let mut web = LogWriter::open(dir.path(), "app", "web-1", 200).unwrap();
        web.append(t(0), "app", "web-1", "before").unwrap();
        web.flush().unwrap();
        let mut follow = Follow::new(dir.path(), "app").unwrap();
        assert!(follow.poll().unwrap().is_empty());
        // Enough lines to rotate the 200-byte file.
        for i in 1..=6 {
            web.append(t(i), "app", "web-1", &format!("w{i}")).unwrap();
            web.flush().unwrap();
        }
        let mut router = LogWriter::open(dir.path(), "app", "router", 1 << 20).unwrap();
        router.append(t(3), "slipway", "router", "r").unwrap();
        router.flush().unwrap();
        let got: Vec<_> = follow
            .poll()
            .unwrap()
            .into_iter()
            .map(|l| l.message)
            .collect();
        // Equal times keep the order of the sources' names.
        assert_eq!(got, ["w1", "w2", "r", "w3", "w4", "w5", "w6"]);
        assert!(follow.poll().unwrap().is_empty());
    }
}
