//! Operations on an existing container: start, state, kill, delete, pause, resume, update,
//! ps, list.
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::{Hook, LinuxResources};

use super::{kill_cgroup, load_in, open_dir, socket_path, wait_gone};
use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::hooks;
use crate::runtime::state::{self, ContainerState, StateRoot, Status};
use crate::sys::io::at;

/// Let a created container run its program.
pub fn start(root: &StateRoot, id: &str) -> Result<()> {
    let st = load_in(
        root,
        id,
        Status::Created,
        "only a created container can be started",
    )?;
    let dir_fd = open_dir(&root.dir(id))?;
    let sock = socket_path(&dir_fd);
    let mut conn = UnixStream::connect(&sock)
        .map_err(at("connect", root.dir(id).join(state::START_SOCKET)))?;
    conn.write_all(b"s").map_err(at("start", root.dir(id)))?;
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    let _ = std::fs::remove_file(root.dir(id).join(state::START_SOCKET));
    if !reply.is_empty() {
        return Err(RuntimeError::Reported(reply));
    }
    let spec = root.load_spec(id)?;
    let poststart = spec.hooks().as_ref().and_then(|h| h.poststart().clone());
    run_hooks_warning(poststart, &st, Status::Running, "poststart");
    Ok(())
}

pub fn state_json(root: &StateRoot, id: &str) -> Result<String> {
    let st = root.load(id)?;
    Ok(state::OciState::of(&st, root.status(&st)).to_json())
}

/// Parse `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| RuntimeError::Invalid(format!("unknown signal number {n}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| RuntimeError::Invalid(format!("unknown signal {s:?} (try TERM, KILL, 15)")))
}

pub fn kill(root: &StateRoot, id: &str, sig: Signal, all: bool) -> Result<()> {
    let st = root.load(id)?;
    let status = root.status(&st);
    if status == Status::Stopped {
        return Err(RuntimeError::WrongState {
            id: id.into(),
            status: status.to_string(),
            what: "nothing to signal".into(),
        });
    }
    if all {
        if status == Status::Paused && sig == Signal::SIGKILL {
            kill_cgroup(&st.cgroup, sig);
            st.cgroup.thaw()?;
        } else {
            kill_cgroup(&st.cgroup, sig);
        }
        return Ok(());
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), sig)
        .map_err(|e| RuntimeError::Sys(format!("kill {} {sig}", st.pid), e))
}

pub fn delete(root: &StateRoot, id: &str, force: bool) -> Result<()> {
    state::check_id(id)?;
    let st = match root.load(id) {
        Ok(st) => st,
        Err(RuntimeError::NotFound(_)) if force => return Ok(()),
        Err(RuntimeError::NotFound(i)) => {
            // A directory without state is a create that died half-way: clear it.
            if root.dir(id).exists() {
                return root.remove(id);
            }
            return Err(RuntimeError::NotFound(i));
        }
        Err(e) => return Err(e),
    };
    let status = root.status(&st);
    match status {
        Status::Running | Status::Paused if !force => {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status: status.to_string(),
                what: "stop it first (kill) or delete with --force".into(),
            })
        }
        Status::Stopped => {}
        _ => {
            // Everything in the cgroup at once: a dying PID-namespace init waits for the
            // other members of its namespace, so killing only the init can stall.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), Signal::SIGKILL);
            kill_cgroup(&st.cgroup, Signal::SIGKILL);
            if status == Status::Paused {
                let _ = st.cgroup.thaw();
            }
            wait_gone(st.pid, Some(st.pid_start_time), Duration::from_secs(10));
        }
    }
    // Whatever the init left behind in its cgroup dies with it.
    for _ in 0..100 {
        let pids = st.cgroup.pids().unwrap_or_default();
        if pids.is_empty() {
            break;
        }
        kill_cgroup(&st.cgroup, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(5));
    }
    st.cgroup.destroy()?;
    if let Ok(spec) = root.load_spec(id) {
        let poststop = spec.hooks().as_ref().and_then(|h| h.poststop().clone());
        run_hooks_warning(poststop, &st, Status::Stopped, "poststop");
    }
    root.remove(id)
}

/// Poststart and poststop hooks: a failure is reported but changes nothing (OCI).
fn run_hooks_warning(hooks: Option<Vec<Hook>>, st: &ContainerState, status: Status, stage: &str) {
    if let Some(h) = hooks {
        if let Err(e) = hooks::run(&h, &state::OciState::of(st, status).to_json(), stage) {
            eprintln!("warning: {e}");
        }
    }
}

pub fn pause(root: &StateRoot, id: &str) -> Result<()> {
    let st = load_in(
        root,
        id,
        Status::Running,
        "only a running container can be paused",
    )?;
    Ok(st.cgroup.freeze()?)
}

pub fn resume(root: &StateRoot, id: &str) -> Result<()> {
    let st = load_in(
        root,
        id,
        Status::Paused,
        "only a paused container can be resumed",
    )?;
    Ok(st.cgroup.thaw()?)
}

pub fn update(root: &StateRoot, id: &str, res: &LinuxResources) -> Result<()> {
    let st = root.load(id)?;
    if root.status(&st) == Status::Stopped {
        return Err(RuntimeError::WrongState {
            id: id.into(),
            status: "stopped".into(),
            what: "cannot update its resources".into(),
        });
    }
    Ok(st.cgroup.apply(res)?)
}

pub fn pids(root: &StateRoot, id: &str) -> Result<Vec<i32>> {
    let st = root.load(id)?;
    Ok(st.cgroup.pids()?)
}

pub struct ListEntry {
    pub state: ContainerState,
    pub status: Status,
}

pub fn list(root: &StateRoot) -> Vec<ListEntry> {
    root.ids()
        .into_iter()
        .filter_map(|id| root.load(&id).ok())
        .map(|st| {
            let status = root.status(&st);
            ListEntry { state: st, status }
        })
        .collect()
}
