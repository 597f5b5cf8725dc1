//! Request log lines, off the request path: a bounded queue to one writer thread that owns
//! every app's `router.log` writer and writes in batches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::applog::{LogWriter, Timestamp};

/// Lines that can wait for the writer; past that, lines are dropped and counted.
const QUEUE: usize = 131_072;

/// How often queued lines are written out.
const BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// After a file cannot be opened, how long until the writer tries again.
const RETRY_OPEN: Duration = Duration::from_secs(30);

enum Msg {
    Line {
        app: Arc<str>,
        time: Timestamp,
        message: String,
    },
    Stop,
}

/// The sending side, shared by every request.
#[derive(Debug)]
pub(crate) struct RequestLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl RequestLog {
    /// Starts the writer thread for `DATA_DIR/logs/APP/router.log` files.
    pub fn start(
        data_dir: PathBuf,
        max_bytes: u64,
    ) -> std::io::Result<(RequestLog, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        let handle = std::thread::Builder::new()
            .name("router-log".into())
            .spawn(move || write_loop(rx, data_dir, max_bytes, counter))?;
        Ok((RequestLog { tx, dropped }, handle))
    }

    /// Queues one line for `app`; never blocks.
    pub fn send(&self, app: &Arc<str>, message: String) {
        let msg = Msg::Line {
            app: Arc::clone(app),
            time: Timestamp::now(),
            message,
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks the writer to write out everything queued so far and stop.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn write_loop(rx: Receiver<Msg>, data_dir: PathBuf, max_bytes: u64, dropped: Arc<AtomicU64>) {
    let mut writers: HashMap<Arc<str>, LogWriter> = HashMap::new();
    let mut failed: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut reported_drops = 0;
    loop {
        // The writer naps instead of waiting on the queue, so that senders never have a
        // sleeping thread to wake (a system call per request otherwise).
        std::thread::sleep(BATCH_INTERVAL);
        let mut stop = false;
        loop {
            match rx.try_recv() {
                Ok(Msg::Line { app, time, message }) => {
                    let Some(writer) =
                        writer_for(&mut writers, &mut failed, &data_dir, &app, max_bytes)
                    else {
                        continue;
                    };
                    if let Err(e) = writer.append(time, "slipway", "router", &message) {
                        eprintln!("slipway router: {e}");
                    }
                }
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        for writer in writers.values_mut() {
            if let Err(e) = writer.flush() {
                eprintln!("slipway router: {e}");
            }
        }
        let drops = dropped.load(Ordering::Relaxed);
        if drops != reported_drops {
            eprintln!(
                "slipway router: {} request log lines dropped (log writer too slow); {drops} in all",
                drops - reported_drops
            );
            reported_drops = drops;
        }
        if stop {
            return;
        }
    }
}

fn writer_for<'a>(
    writers: &'a mut HashMap<Arc<str>, LogWriter>,
    failed: &mut HashMap<Arc<str>, Instant>,
    data_dir: &std::path::Path,
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
