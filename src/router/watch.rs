//! Keeps the live route table in step with `RUN_DIR/routes.json`: inotify on the run
//! directory for prompt reloads, and a periodic stat as a fallback (inotify unavailable,
//! the directory replaced, events lost).
//!
//! A missing or bad file keeps the last good table; each distinct problem is logged once.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use inotify::{Inotify, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::table::Routes;
use super::RouterConfig;
use crate::api::routes::{RouteTable, RoutesError, ROUTES_FILE};

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

pub(crate) struct Watcher {
    run_dir: PathBuf,
    base_override: Option<String>,
    routes: Arc<ArcSwap<Routes>>,
    poll_interval: Duration,
    /// The file version last looked at (`None`: missing), whether it loaded or not.
    seen: Option<Option<Fingerprint>>,
}

impl Watcher {
    pub fn new(config: &RouterConfig, routes: Arc<ArcSwap<Routes>>) -> Watcher {
        Watcher {
            run_dir: config.run_dir.clone(),
            base_override: config.base_domain.clone(),
            routes,
            poll_interval: config.poll_interval,
            seen: None,
        }
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
        let meta = std::fs::metadata(RouteTable::path(&self.run_dir)).ok()?;
        Some(Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }

    /// Loads the file when it changed since the last look.
    pub fn reload(&mut self) {
        let fingerprint = self.fingerprint();
        if self.seen == Some(fingerprint) {
            return;
        }
        self.seen = Some(fingerprint);
        let current = self.routes.load();
        match RouteTable::read(&self.run_dir) {
            Ok(table) => {
                let mut warnings = Vec::new();
                let routes = Routes::build(
                    &table,
                    self.base_override.as_deref(),
                    &current,
                    &mut warnings,
                );
                for warning in warnings {
                    eprintln!("slipway router: {warning}");
                }
                let (apps, backends) = routes.counts();
                eprintln!(
                    "slipway router: routes generation {}: {apps} apps, {backends} backends",
                    routes.generation
                );
                self.routes.store(Arc::new(routes));
            }
            Err(RoutesError::Missing { path }) => eprintln!(
                "slipway router: {} is missing; keeping routes generation {} until the daemon writes it",
                path.display(),
                current.generation
            ),
            Err(e) => eprintln!(
                "slipway router: {e}; keeping routes generation {}",
                current.generation
            ),
        }
    }

    /// Watches until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut events = self.watch_dir();
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buffer = vec![0u8; 4096];
        loop {
            tokio::select! {
                changed = readable(&mut events, &mut buffer) => {
                    if changed.is_err() {
                        // The directory went away or inotify failed: the stat fallback
                        // goes on, and the watch is set up again on the next tick.
                        events = None;
                    }
                    self.reload();
                }
                _ = tick.tick() => {
                    if events.is_none() {
                        events = self.watch_dir();
                    }
                    self.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    fn watch_dir(&self) -> Option<AsyncFd<Inotify>> {
        let inotify = Inotify::init().ok()?;
        inotify
            .watches()
            .add(
                &self.run_dir,
                WatchMask::MOVED_TO
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF,
            )
            .ok()?;
        // SAFETY: `Inotify` owns its descriptor, keeps it open for its whole life and
        // always returns that same descriptor.
        unsafe { AsyncFd::register(inotify) }.ok()
    }
}

/// Waits for inotify events that concern the routes file; `Err` when the watch is gone.
/// Without a watch it never resolves (the periodic stat does the work).
async fn readable(events: &mut Option<AsyncFd<Inotify>>, buffer: &mut [u8]) -> Result<(), ()> {
    let Some(fd) = events else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = fd.readable_mut().await.map_err(|_| ())?;
        match guard.get_inner_mut().read_events(buffer) {
            Ok(events) => {
                let mut relevant = false;
                for event in events {
                    if event.mask.intersects(
                        inotify::EventMask::IGNORED
                            | inotify::EventMask::DELETE_SELF
                            | inotify::EventMask::MOVE_SELF,
                    ) {
                        return Err(());
                    }
                    relevant |= event.name.is_some_and(|n| n == ROUTES_FILE);
                }
                if relevant {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => guard.clear_ready(),
            Err(_) => return Err(()),
        }
    }
}
