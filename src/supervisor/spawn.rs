//! Starting monitors from the daemon, and signalling them.
//!
//! The daemon is multi-threaded: it never forks a container itself. It execs `slipway monitor
//! SPEC` through `std::process::Command`; in `Daemon` mode that process forks once more and
//! exits, so the monitor that stays is nobody's child but init's and lives on when the daemon
//! stops. Monitors are named by pid and start time, so that a reused pid is never mistaken for
//! one.
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use super::state::{write_spec, MonitorSpec};
use super::SupervisorError;
use crate::sys::procfs;

/// A running monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorRef {
    pub pid: i32,
    pub start_time: u64,
}

impl MonitorRef {
    /// The monitor process `pid` as it is now.
    pub fn of(pid: i32) -> Option<MonitorRef> {
        procfs::stat(pid).map(|s| MonitorRef {
            pid,
            start_time: s.start_time,
        })
    }

    pub fn alive(&self) -> bool {
        procfs::is_alive(self.pid, self.start_time)
    }

    /// Send `sig` to the monitor, if it is still the process we started.
    pub fn signal(&self, sig: Signal) {
        if self.alive() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig);
        }
    }
}

/// The `slipway monitor` command for `spec` (written next to its state file).
pub fn command(exe: &Path, spec: &MonitorSpec) -> Result<Command, SupervisorError> {
    let spec_path = spec.state_file.with_extension("spec.json");
    write_spec(&spec_path, spec)?;
    let mut cmd = Command::new(exe);
    cmd.arg("monitor").arg(&spec_path);
    Ok(cmd)
}

/// Start a monitor in `Daemon` mode; returns once its first state file exists.
pub fn spawn_daemon(exe: &Path, spec: &MonitorSpec) -> Result<MonitorRef, SupervisorError> {
    let mut cmd = command(exe, spec)?;
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| SupervisorError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (out.status.success(), words.next(), words.next()) {
        (true, Some(Ok(pid)), Some(Ok(start_time))) => Ok(MonitorRef {
            pid: pid as i32,
            start_time,
        }),
        _ => {
            let _ = std::fs::remove_file(spec.state_file.with_extension("spec.json"));
            Err(SupervisorError::Monitor {
                container: spec.name.clone(),
                message: format!(
                    "{} ({})",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    out.status
                ),
            })
        }
    }
}
