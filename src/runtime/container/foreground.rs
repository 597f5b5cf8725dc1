//! `run` and `exec` in the foreground: signals forwarded to the container's process, orphans
//! reaped, its exit status returned.
use crate::runtime::error::{Result, RuntimeError};

/// Signals a foreground `run`/`exec` passes on to the container's process.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGWINCH,
    libc::SIGALRM,
];

/// Block forwarded signals and SIGCHLD so `wait_forwarding` can take them synchronously.
/// Called before forking; the container's processes reset the mask before exec.
pub fn block_signals() {
    // SAFETY: building and installing a signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Become the reaper of the container's processes, so that `run` and `exec` can wait for them.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| RuntimeError::Sys("PR_SET_CHILD_SUBREAPER".into(), e))
}

/// Wait for `pid` to exit, forwarding signals to it; returns its exit code (128+N for a
/// signal death, as shells do). Reaps any other orphan that lands on us meanwhile.
pub fn wait_forwarding(pid: i32, on_winch: &dyn Fn()) -> i32 {
    // SAFETY: signal-set manipulation and sigwaitinfo on our own blocked set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, *s);
        }
        loop {
            // Reap first: the child may have exited before we started waiting.
            loop {
                let mut status = 0;
                let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if r <= 0 {
                    break;
                }
                if r == pid {
                    if libc::WIFEXITED(status) {
                        return libc::WEXITSTATUS(status);
                    }
                    if libc::WIFSIGNALED(status) {
                        return 128 + libc::WTERMSIG(status);
                    }
                }
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig < 0 || sig == libc::SIGCHLD {
                continue;
            }
            if sig == libc::SIGWINCH {
                on_winch();
                continue;
            }
            libc::kill(pid, sig);
        }
    }
}
