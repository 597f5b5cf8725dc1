//! Request log lines, off the request path.
//!
//! Each worker thread formats its lines straight into its own shard (a buffer per app,
//! behind a lock that only the writer thread ever contends for). Every [`BATCH_INTERVAL`]
//! the writer thread takes the shards' buffers, merges each app's lines from all shards
//! in time order, and appends them to the app's `router.log` (one [`LogWriter`] per app,
//! which rotates the file). A shard holds at most [`SHARD_LIMIT`] bytes: past that (the
//! disk is slower than the traffic) lines are dropped and counted, never waited for.
//!
//! Errors of requests that name no app (an unknown host, no usable `Host`) have no log of
//! their own: they are counted per code and reported on stderr, a line per code at most
//! every [`UNROUTED_REPORT_INTERVAL`] (anyone can send such requests, as fast as they like).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::applog::{LogWriter, Timestamp};

/// How often buffered lines are written out.
const BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Most bytes a shard buffers between two batches.
const SHARD_LIMIT: usize = 16 * 1024 * 1024;

/// Least time between two stderr reports of errors for no app.
const UNROUTED_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// After a file cannot be opened, how long until the writer tries again.
const RETRY_OPEN: Duration = Duration::from_secs(30);

/// The request log: shards for the workers, and the writer thread.
#[derive(Debug)]
pub(crate) struct RequestLog {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    dropped: AtomicU64,
    stop: AtomicBool,
}

#[derive(Debug, Default)]
struct Shard {
    /// Whole lines per app, in the order they were written.
    apps: HashMap<Arc<str>, Vec<u8>>,
    bytes: usize,
    /// Errors of requests for no app: (code, description, count).
    unrouted: Vec<(&'static str, &'static str, u64)>,
}

/// One worker thread's side of the request log.
#[derive(Debug, Clone)]
pub(crate) struct LogShard {
    shard: Arc<Mutex<Shard>>,
    inner: Arc<Inner>,
}

impl LogShard {
    /// Appends one line `TIMESTAMP slipway[router]: MESSAGE` for `app`; `message` writes
    /// the message, which must be one line without control characters.
    pub fn line(&self, app: &Arc<str>, message: impl FnOnce(&mut Vec<u8>)) {
        let stamp = Timestamp::now().to_bytes();
        let mut shard = self.shard.lock().expect("log shard lock");
        if shard.bytes >= SHARD_LIMIT {
            drop(shard);
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let buffer = match shard.apps.get_mut(app) {
            Some(buffer) => buffer,
            None => shard.apps.entry(Arc::clone(app)).or_default(),
        };
        let before = buffer.len();
        buffer.extend_from_slice(&stamp);
        buffer.extend_from_slice(b" slipway[router]: ");
        message(buffer);
        buffer.push(b'\n');
        let added = buffer.len() - before;
        shard.bytes += added;
    }
}

impl LogShard {
    /// Counts an error answered to a request that names no app (`code`, e.g. `R10`).
    pub fn unrouted(&self, code: &'static str, desc: &'static str) {
        let mut shard = self.shard.lock().expect("log shard lock");
        count_code(&mut shard.unrouted, code, desc, 1);
    }
}

impl RequestLog {
    /// Starts the writer thread for `DATA_DIR/logs/APP/router.log` files.
    pub fn start(
        data_dir: PathBuf,
        max_bytes: u64,
    ) -> std::io::Result<(RequestLog, JoinHandle<()>)> {
        let inner = Arc::new(Inner::default());
        let writer_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("router-log".into())
            .spawn(move || write_loop(&writer_inner, &data_dir, max_bytes))?;
        Ok((RequestLog { inner }, handle))
    }

    /// A new shard, for one worker thread.
    pub fn shard(&self) -> LogShard {
        let shard = Arc::new(Mutex::new(Shard::default()));
        self.inner
            .shards
            .lock()
            .expect("log shards lock")
            .push(Arc::clone(&shard));
        LogShard {
            shard,
            inner: Arc::clone(&self.inner),
        }
    }

    /// Asks the writer to write out everything buffered so far and stop.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }
}

fn write_loop(inner: &Inner, data_dir: &Path, max_bytes: u64) {
    // Batches are bursts of work: at a lower priority they wait for a free core instead of
    // preempting the workers (which shows in the requests' tail latency).
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: setpriority only reads its arguments; PRIO_PROCESS with a thread id sets
    // that thread's nice value on Linux.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) };
    let mut writers: HashMap<Arc<str>, LogWriter> = HashMap::new();
    let mut failed: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut reported_drops = 0;
    let mut unrouted = Unrouted::default();
    loop {
        std::thread::sleep(BATCH_INTERVAL);
        let stop = inner.stop.load(Ordering::Relaxed);
        // Take every shard's buffers, then write without holding any shard.
        let shards: Vec<_> = inner.shards.lock().expect("log shards lock").clone();
        let mut batch: HashMap<Arc<str>, Vec<Vec<u8>>> = HashMap::new();
        for shard in shards {
            let taken = {
                let mut shard = shard.lock().expect("log shard lock");
                shard.bytes = 0;
                unrouted.add(std::mem::take(&mut shard.unrouted));
                std::mem::take(&mut shard.apps)
            };
            for (app, lines) in taken {
                batch.entry(app).or_default().push(lines);
            }
        }
        for (app, parts) in batch {
            let Some(writer) = writer_for(&mut writers, &mut failed, data_dir, &app, max_bytes)
            else {
                continue;
            };
            let lines = merge_by_time(parts);
            if let Err(e) = writer.append_lines(&lines).and_then(|()| writer.flush()) {
                eprintln!("slipway router: {e}");
            }
        }
        let drops = inner.dropped.load(Ordering::Relaxed);
        if drops != reported_drops {
            eprintln!(
                "slipway router: {} request log lines dropped (log writer too slow); {drops} in all",
                drops - reported_drops
            );
            reported_drops = drops;
        }
        unrouted.report(stop);
        if stop {
            return;
        }
    }
}

/// Adds `n` to `code`'s count in `counts` (a handful of codes: a list is enough).
fn count_code(
    counts: &mut Vec<(&'static str, &'static str, u64)>,
    code: &'static str,
    desc: &'static str,
    n: u64,
) {
    match counts.iter_mut().find(|(c, _, _)| *c == code) {
        Some((_, _, count)) => *count += n,
        None => counts.push((code, desc, n)),
    }
}

/// Counts of errors for no app, not yet reported.
#[derive(Default)]
struct Unrouted {
    counts: Vec<(&'static str, &'static str, u64)>,
    /// When each code was last reported.
    last_report: Vec<(&'static str, Instant)>,
}

impl Unrouted {
    fn add(&mut self, taken: Vec<(&'static str, &'static str, u64)>) {
        for (code, desc, n) in taken {
            count_code(&mut self.counts, code, desc, n);
        }
    }

    /// A stderr line per code counted, unless that code's last report is recent (`all`:
    /// regardless).
    fn report(&mut self, all: bool) {
        let now = Instant::now();
        self.counts.retain(|&(code, desc, n)| {
            let last = self.last_report.iter().find(|(c, _)| *c == code);
            if !all && last.is_some_and(|(_, at)| now - *at < UNROUTED_REPORT_INTERVAL) {
                return true;
            }
            eprintln!(
                "slipway router: at=error code={code} desc=\"{desc}\" requests={n} (for no app, since the last report)"
            );
            self.last_report.retain(|(c, _)| *c != code);
            self.last_report.push((code, now));
            false
        });
    }
}

/// Merges buffers of whole lines, each in time order, into one in time order (the lines
/// start with fixed-width timestamps, so comparing their first bytes compares times).
fn merge_by_time(mut parts: Vec<Vec<u8>>) -> Vec<u8> {
    if parts.len() == 1 {
        return parts.pop().expect("one part");
    }
    let total = parts.iter().map(Vec::len).sum();
    let mut merged = Vec::with_capacity(total);
    let mut cursors = vec![0usize; parts.len()];
    let line_end = |part: &[u8], at: usize| {
        part[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(part.len(), |i| at + i + 1)
    };
    loop {
        let mut best: Option<usize> = None;
        for (i, part) in parts.iter().enumerate() {
            let at = cursors[i];
            if at >= part.len() {
                continue;
            }
            let stamp = &part[at..part.len().min(at + crate::applog::TIMESTAMP_LEN)];
            let earlier = best.is_none_or(|b| {
                let other = &parts[b][cursors[b]..];
                stamp < &other[..other.len().min(crate::applog::TIMESTAMP_LEN)]
            });
            if earlier {
                best = Some(i);
            }
        }
        let Some(i) = best else { break };
        let end = line_end(&parts[i], cursors[i]);
        merged.extend_from_slice(&parts[i][cursors[i]..end]);
        cursors[i] = end;
    }
    merged
}

fn writer_for<'a>(
    writers: &'a mut HashMap<Arc<str>, LogWriter>,
    failed: &mut HashMap<Arc<str>, Instant>,
    data_dir: &Path,
    app: &Arc<str>,
    max_bytes: u64,
) -> Option<&'a mut LogWriter> {
    if !writers.contains_key(app) {
        if failed.get(app).is_some_and(|at| at.elapsed() < RETRY_OPEN) {
            return None;
        }
        match LogWriter::open(data_dir, app, "router", max_bytes) {
            Ok(writer) => {
                failed.remove(app);
                writers.insert(Arc::clone(app), writer);
            }
            Err(e) => {
                eprintln!("slipway router: request log of app {app} not written: {e}");
                failed.insert(Arc::clone(app), Instant::now());
                return None;
            }
        }
    }
    writers.get_mut(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_in_time_order() {
        let a =
            b"2026-01-01T00:00:00.000001+00:00 x\n2026-01-01T00:00:00.000003+00:00 z\n".to_vec();
        let b = b"2026-01-01T00:00:00.000002+00:00 y\n".to_vec();
        let merged = merge_by_time(vec![a, b]);
        assert_eq!(
            String::from_utf8(merged).unwrap(),
            "2026-01-01T00:00:00.000001+00:00 x\n\
             2026-01-01T00:00:00.000002+00:00 y\n\
             2026-01-01T00:00:00.000003+00:00 z\n"
        );
    }

    #[test]
    fn lines_reach_the_file_and_full_shards_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (log, thread) = RequestLog::start(dir.path().to_path_buf(), 1 << 20).unwrap();
        let app: Arc<str> = "app".into();
        let shard = log.shard();
        shard.line(&app, |out| out.extend_from_slice(b"at=info status=200"));
        log.shard()
            .line(&app, |out| out.extend_from_slice(b"at=info status=201"));
        shard.shard.lock().unwrap().bytes = SHARD_LIMIT;
        shard.line(&app, |out| out.extend_from_slice(b"dropped"));
        assert_eq!(log.inner.dropped.load(Ordering::Relaxed), 1);
        log.stop();
        thread.join().unwrap();
        let lines = crate::applog::tail(dir.path(), "app", 10).unwrap();
        let messages: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["at=info status=200", "at=info status=201"]);
        assert_eq!(lines[0].process, "router");
    }
}
