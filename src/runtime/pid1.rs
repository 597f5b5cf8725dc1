//! A minimal init for PID 1 of a container (what tini is to Docker's `--init`), asked for with
//! the `run.slipway.init` annotation.
//!
//! A program that is PID 1 of its pid namespace gets no default signal actions: SIGTERM does
//! nothing unless it installs a handler (Flask's and Node's dev servers, `python3 -m
//! http.server` don't), so a platform's stop turns into a kill after the grace period. And
//! every orphan of the container is reparented to it, and a program that never expected
//! children never reaps them. This init instead runs the program as its only child, in a
//! process group of its own (the terminal's foreground group when there is one), passes each
//! signal it gets on to that group, reaps every child that ends, and exits as the program did
//! (its code, or 128+N after signal N).
//!
//! It runs after every privilege is gone (user, capabilities, no_new_privs, seccomp): what it
//! does (wait, kill its own children, exit) needs none.
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;

use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

/// The annotation that asks the runtime for this init.
pub const ANNOTATION: &str = "run.slipway.init";

/// Signals the init does not pass on: the ones about its own children, and those it cannot
/// block anyway.
const NOT_FORWARDED: &[Signal] = &[Signal::SIGCHLD, Signal::SIGKILL, Signal::SIGSTOP];

/// Run `path` as the only child and supervise it; never returns. `started` hears once whether
/// the program's exec succeeded (Err with the reason otherwise), while the init still holds
/// the caller's descriptors; everything above stdio is closed right after.
pub fn run(
    path: &CStr,
    argv: &[CString],
    envp: &[CString],
    terminal: bool,
    started: &mut dyn FnMut(Result<(), String>),
) -> ! {
    // Blocked from before the fork: no signal can arrive between the fork and the wait loop
    // and be lost. The child unblocks them before exec.
    let all = SigSet::all();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), None);
    let (status_read, status_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => fail(started, format!("init: pipe: {e}")),
    };
    // SAFETY: the init is single-threaded (the runtime forks only from single-threaded
    // processes), so the child may run any code before exec.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(status_read);
            exec_child(path, argv, envp, terminal, status_write)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => fail(started, format!("init: fork: {e}")),
    };
    drop(status_write);
    // EOF: the exec succeeded (the descriptor was close-on-exec); bytes: why it did not.
    let mut why = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::fs::File::from(status_read), &mut why);
    if !why.is_empty() {
        let _ = waitpid(child, None);
        fail(started, String::from_utf8_lossy(&why).into_owned());
    }
    started(Ok(()));
    // `ps` in the container shows what PID 1 is, not a second copy of the runtime.
    let _ = nix::sys::prctl::set_name(c"slipway-init");
    // Nothing of the runtime's stays open in the container's PID 1.
    super::process::close_fds_except(3, &[]);
    supervise(child, &all)
}

fn fail(started: &mut dyn FnMut(Result<(), String>), why: String) -> ! {
    started(Err(why));
    super::process::exit_now(127)
}

fn exec_child(
    path: &CStr,
    argv: &[CString],
    envp: &[CString],
    terminal: bool,
    status: OwnedFd,
) -> ! {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    if terminal {
        // The program's group becomes the terminal's foreground, so Ctrl-C reaches it.
        let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid());
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let e = match nix::unistd::execve(path, argv, envp) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let msg = format!("exec {path:?}: {e}");
    let _ = nix::unistd::write(&status, msg.as_bytes());
    super::process::exit_now(127)
}

/// Forward signals to the program's group and reap children until the program ends.
fn supervise(child: Pid, all: &SigSet) -> ! {
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGCHLD {
            if let Some(code) = super::process::reap_children(child.as_raw()) {
                super::process::exit_now(code);
            }
            continue;
        }
        if NOT_FORWARDED.contains(&sig) {
            continue;
        }
        // The whole group, as a platform's stop expects; the program alone if it left it.
        if killpg(child, sig).is_err() {
            let _ = kill(child, sig);
        }
    }
}
