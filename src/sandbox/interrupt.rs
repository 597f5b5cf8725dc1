//! Ending a sandbox's work early, the same way whatever the reason: Ctrl-C, SIGTERM or SIGHUP
//! to the process, or a reader that went away (a closed stdout, as with `| head -1`). The
//! running container is stopped (SIGTERM, then SIGKILL after a grace period), the caller sees
//! `interrupted()` and returns, and its guards clean up exactly as on success.
//!
//! `block_signals` must run before the process starts any thread; `watch` starts the one
//! thread that waits for them (after the caller entered its private mount namespace, which a
//! multi-threaded process cannot).
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use super::launch::Launcher;

/// The signal number that ended the work (SIGPIPE for a closed reader); 0 while none.
static REASON: AtomicI32 = AtomicI32::new(0);
static RUNNING: Mutex<Option<(Launcher, String)>> = Mutex::new(None);
static WATCHER: Once = Once::new();

/// How long a stopped container gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Hold Ctrl-C, SIGTERM and SIGHUP for the watcher: call first thing, before any thread.
pub fn block_signals() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals()), None);
}

/// Start waiting for the blocked signals (once per process).
pub fn start_watcher() {
    WATCHER.call_once(|| {
        std::thread::spawn(|| loop {
            if let Ok(sig) = signals().wait() {
                interrupt(sig as i32);
            }
        });
    });
}

/// Stop the work: remember why, and stop the container that runs now, if any.
pub fn interrupt(reason: i32) {
    let first = REASON
        .compare_exchange(0, reason, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !first {
        return;
    }
    let running = RUNNING.lock().map(|r| r.clone()).unwrap_or(None);
    if let Some((launcher, id)) = running {
        launcher.stop(&id, STOP_GRACE);
    }
}

/// Why the work was stopped (a signal number), if it was.
pub fn interrupted() -> Option<i32> {
    match REASON.load(Ordering::SeqCst) {
        0 => None,
        r => Some(r),
    }
}

/// While this lives, an interruption stops container `id`. Register before checking
/// `interrupted()` and starting the container: an interruption between the two is then seen
/// by one side or the other.
pub struct Watch;

impl Watch {
    pub fn new(launcher: &Launcher, id: &str) -> Watch {
        start_watcher();
        if let Ok(mut r) = RUNNING.lock() {
            *r = Some((launcher.clone(), id.to_string()));
        }
        Watch
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut r) = RUNNING.lock() {
            *r = None;
        }
    }
}
