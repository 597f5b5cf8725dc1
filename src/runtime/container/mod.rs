//! The container lifecycle over the state directory, one operation group per file:
//! `create` (the parent side of the init handshake), `exec` (a new process in a running
//! container), `lifecycle` (start, state, kill, delete, pause, resume, update, ps, list) and
//! `foreground` (what `run` and `exec` do while they wait in the foreground).
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;

use super::cgroups::Cgroup;
use super::error::{Result, RuntimeError};
use super::state::{self, ContainerState, StateRoot, Status};
use super::{console, process, seccomp};
use crate::sys::io::at;

mod create;
mod exec;
mod foreground;
mod lifecycle;

pub use create::{create, CreateOptions};
pub use exec::{exec, ExecOptions};
pub use foreground::{become_subreaper, block_signals, wait_forwarding};
pub use lifecycle::{
    delete, kill, list, parse_signal, pause, pids, resume, start, state_json, update, ListEntry,
};

/// How the container's terminal (if `process.terminal`) reaches the caller.
pub enum Console {
    None,
    /// A unix socket the caller listens on; the pty master is sent there (runc's protocol).
    Socket(PathBuf),
    /// Keep the master here (for `run`/`exec` in the foreground) and proxy our stdio to it.
    Proxy,
}

impl Console {
    /// With a terminal: the socket the container's process sends its pty master over, and in
    /// proxy mode our end of it (where the master arrives).
    fn endpoints(&self, terminal: bool) -> Result<(Option<OwnedFd>, Option<UnixStream>)> {
        Ok(match (self, terminal) {
            (Console::Socket(p), true) => (Some(console::connect(p)?), None),
            (Console::Proxy, true) => {
                let (a, b) = UnixStream::pair().map_err(at("socketpair", "console"))?;
                (Some(OwnedFd::from(a)), Some(b))
            }
            _ => (None, None),
        })
    }
}

/// Path to a socket in the state dir, short enough for sockaddr_un even when the state dir
/// path is long (containerd's are): go through a descriptor of the directory.
pub(super) fn socket_path(dir_fd: &std::fs::File) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}/{}",
        dir_fd.as_raw_fd(),
        state::START_SOCKET
    ))
}

pub(super) fn open_dir(dir: &Path) -> Result<std::fs::File> {
    Ok(std::fs::File::open(dir).map_err(at("open", dir))?)
}

pub(super) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    Ok(crate::sys::atomic::write(path, pid.to_string().as_bytes())
        .map_err(at("write pid file", path))?)
}

pub(super) fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

pub(super) fn compile_seccomp(spec: &Spec, root: &StateRoot) -> Result<Option<seccomp::Program>> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Ok(Some(seccomp::compile_cached(
            s,
            &root.root.join(".seccomp-cache"),
        )?)),
        None => Ok(None),
    }
}

/// Fork stage 1, directly into the container's cgroup where the kernel allows it (cgroup v2).
/// Returns (pid as fork returns it, whether the child is in the cgroup already).
pub(super) fn fork_stage1(cgroup: &Cgroup) -> Result<(i32, bool)> {
    process::ensure_single_threaded()?;
    if let Some(pid) = cgroup.unified_dir().and_then(process::fork_into_cgroup) {
        return Ok((pid, true));
    }
    Ok((process::fork()?, false))
}

pub(super) fn kill_cgroup(cg: &Cgroup, sig: Signal) {
    let _ = cg.kill_all(sig);
}

/// Wait until a process is gone (or a zombie nobody here can reap).
pub(super) fn wait_gone(pid: i32, start_time: Option<u64>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_micros(100);
    loop {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        let alive = match start_time {
            Some(t) => crate::sys::procfs::is_alive(pid, t),
            None => crate::sys::procfs::stat(pid).is_some_and(|s| s.is_live()),
        };
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// Load a container that must be in `want`; `why` explains the refusal otherwise.
pub(super) fn load_in(
    root: &StateRoot,
    id: &str,
    want: Status,
    why: &str,
) -> Result<ContainerState> {
    let st = root.load(id)?;
    let status = root.status(&st);
    if status != want {
        return Err(RuntimeError::WrongState {
            id: id.into(),
            status: status.to_string(),
            what: why.into(),
        });
    }
    Ok(st)
}
