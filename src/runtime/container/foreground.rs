//! `run` and `exec` in the foreground: signals forwarded to the container's process, orphans
//! reaped, its exit status returned.
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::process::reap_children;

/// Signals a foreground `run`/`exec` passes on to the container's process.
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGWINCH,
    Signal::SIGALRM,
];

/// The forwarded signals and SIGCHLD.
fn waited_for() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(*s);
    }
    set
}

/// Block forwarded signals and SIGCHLD so `wait_forwarding` can take them synchronously.
/// Called before forking; the container's processes reset the mask before exec.
pub fn block_signals() {
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited_for()), None);
}

/// Become the reaper of the container's processes, so that `run` and `exec` can wait for them.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| RuntimeError::Sys("PR_SET_CHILD_SUBREAPER".into(), e))
}

/// Wait for `pid` to exit, forwarding signals to it; returns its exit code (128+N for a
/// signal death, as shells do). Reaps any other orphan that lands on us meanwhile.
pub fn wait_forwarding(pid: i32, on_winch: &dyn Fn()) -> i32 {
    let set = waited_for();
    loop {
        // Reap first: the child may have exited before we started waiting.
        if let Some(code) = reap_children(pid) {
            return code;
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(Signal::SIGWINCH) => on_winch(),
            Ok(sig) => {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }
}
