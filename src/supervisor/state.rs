//! What the supervisor and a monitor tell each other through files, and where those live.
//!
//! * `RUN_DIR/supervisor/APP/INSTANCE.spec.json`: written by the supervisor (mode 0600, it
//!   holds config vars), read and removed by the monitor it starts.
//! * `RUN_DIR/supervisor/APP/INSTANCE.json`: the container's state, written only by its
//!   monitor (the first version by the monitor's launcher, before anyone learns the monitor's
//!   pid), always replaced whole (`sys::atomic`). The supervisor reads it; a new supervisor
//!   re-adopts the monitors it finds there.
//! * `DATA_DIR/supervisor/apps/APP.json`: the desired state of an app (current release and
//!   formation), written by the supervisor, so that a restarted daemon or a rebooted host brings
//!   the formation back without the control plane.
//!
//! An instance is one run of one container: `web-1` restarted is a new instance of `web-1`.
//! Its id (`APP.NAME.HEX`) names the workspace, the runtime's container and the network
//! namespace; its file name in the app's state directory is `NAME.HEX`.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::size::Size;
use crate::sys::io::{at, PathError};
use crate::sys::procfs;

/// How a monitor holds its container's stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Its own session, outliving whoever started it; output to the app's log.
    Daemon,
    /// The caller's stdio is the container's (a one-off or a hook).
    Attached,
    /// Like `Attached`, with a pty whose master is sent over the monitor's stdin (a unix
    /// socket) to the caller.
    Terminal,
}

/// Where sandboxes live (the `sandbox::Place` of app containers, as plain data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceSpec {
    pub workspaces: PathBuf,
    pub run_dir: PathBuf,
    pub bridge: String,
    pub subnet: String,
    pub network_state: PathBuf,
    pub runtime: PathBuf,
}

/// Everything a monitor needs to run one container: the supervisor writes it, the monitor
/// reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorSpec {
    pub id: String,
    pub app: String,
    /// `web-1`, `run-3`, `postdeploy-1`.
    pub name: String,
    /// Process type (`web`, `worker`), `run` for one-offs.
    pub kind: String,
    pub index: u32,
    pub release: u32,
    pub size: Size,
    pub command: String,
    /// Config vars and extra variables (later entries win).
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub slug_dir: PathBuf,
    pub stack_dir: PathBuf,
    /// Where app logs go (`DATA_DIR`).
    pub data_dir: PathBuf,
    pub state_file: PathBuf,
    pub place: PlaceSpec,
    pub mode: Mode,
    /// Wait for TCP on `ip:port` before calling the container up (web).
    pub probe: bool,
    pub one_off: bool,
    /// SIGTERM to SIGKILL, when stopped.
    pub grace_ms: u64,
    /// `Mode::Terminal`: the pty's size (rows, columns) when the command starts.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// Carried over from the instance this one replaces (restart policy, `ps`).
    pub restarts: u32,
    pub backoff_step: u32,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Being prepared (overlay, network) or its process not yet started.
    Starting,
    /// Its process runs (web: not yet accepting TCP).
    Running,
    /// Its process runs and, for web, accepts TCP on its port.
    Up,
    /// Asked to stop: SIGTERM sent, SIGKILL after the grace period.
    Stopping,
    /// Ended; `exit` says how.
    Exited,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit status; 128+N after signal N.
    pub code: i32,
    /// The kernel's OOM killer killed a process of the container.
    pub oom: bool,
    /// The monitor was asked to stop it.
    pub stopped: bool,
    /// It outlived the grace period and was killed with SIGKILL.
    pub killed: bool,
    pub at: String,
}

impl Exit {
    /// The signal that ended it, when the status says so (128+N).
    pub fn signal(&self) -> Option<i32> {
        (129..=128 + 64)
            .contains(&self.code)
            .then_some(self.code - 128)
    }
}

/// The state file of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    pub id: String,
    pub app: String,
    pub name: String,
    pub kind: String,
    pub release: u32,
    pub size: Size,
    pub port: u16,
    pub one_off: bool,
    pub command: String,
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
    pub phase: Phase,
    /// Host pid of the container's init.
    pub pid: Option<i32>,
    pub ip: Option<Ipv4Addr>,
    /// RFC 3339, and milliseconds since the epoch (for the restart policy).
    pub started_at: String,
    pub started_ms: u64,
    pub restarts: u32,
    pub backoff_step: u32,
    pub exit: Option<Exit>,
    /// Why the container could not be started, when it could not.
    pub error: Option<String>,
}

impl MonitorState {
    /// The first state of the instance `spec` describes, run by monitor `pid`.
    pub fn initial(spec: &MonitorSpec, pid: i32) -> MonitorState {
        let now = std::time::SystemTime::now();
        MonitorState {
            id: spec.id.clone(),
            app: spec.app.clone(),
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            release: spec.release,
            size: spec.size,
            port: spec.port,
            one_off: spec.one_off,
            command: spec.command.clone(),
            monitor_pid: pid,
            monitor_start_time: procfs::stat(pid).map_or(0, |s| s.start_time),
            phase: Phase::Starting,
            pid: None,
            ip: None,
            started_at: rfc3339(now),
            started_ms: unix_ms(now),
            restarts: spec.restarts,
            backoff_step: spec.backoff_step,
            exit: None,
            error: None,
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), PathError> {
        let data = serde_json::to_vec_pretty(self).expect("state serializes");
        crate::sys::atomic::write(path, &data).map_err(at("write the container state", path))
    }

    pub fn read(path: &Path) -> Option<MonitorState> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Whether the monitor that writes this file still runs (not a reused pid).
    pub fn monitor_alive(&self) -> bool {
        procfs::is_alive(self.monitor_pid, self.monitor_start_time)
    }
}

/// `2026-11-26T10:00:00.000000+00:00`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    crate::applog::Timestamp::from(t).to_string()
}

pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Write `spec` for the monitor, readable by root only.
pub fn write_spec(path: &Path, spec: &MonitorSpec) -> Result<(), PathError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let data = serde_json::to_vec(spec).expect("spec serializes");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(at("write the monitor spec", path))?;
    f.write_all(&data)
        .map_err(at("write the monitor spec", path))
}

/// Read the spec at `path` and remove the file (it holds config vars).
pub fn take_spec(path: &Path) -> Result<MonitorSpec, String> {
    let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_slice(&data).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// A file name of an app's state directory that is a state file (not a spec, not a
/// temporary): its instance file name (`NAME.HEX`).
pub fn state_file_stem(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".json")?;
    (!stem.starts_with('.') && !stem.ends_with(".spec")).then_some(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_show_in_the_status() {
        let e = |code| Exit {
            code,
            oom: false,
            stopped: false,
            killed: false,
            at: String::new(),
        };
        assert_eq!(e(137).signal(), Some(9));
        assert_eq!(e(143).signal(), Some(15));
        assert_eq!(e(3).signal(), None);
        assert_eq!(e(128).signal(), None);
    }

    #[test]
    fn only_state_files_are_state_files() {
        assert_eq!(state_file_stem("web-1.ab12.json"), Some("web-1.ab12"));
        assert_eq!(state_file_stem("web-1.ab12.spec.json"), None);
        assert_eq!(state_file_stem(".web-1.ab12.json.tmp-4"), None);
        assert_eq!(state_file_stem("x.txt"), None);
    }

    #[test]
    fn the_spec_is_private_and_read_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.spec.json");
        let spec = MonitorSpec {
            id: "app.web-1.00".into(),
            app: "app".into(),
            name: "web-1".into(),
            kind: "web".into(),
            index: 1,
            release: 1,
            size: Size::M,
            command: "x".into(),
            env: vec![("SECRET".into(), "1".into())],
            port: 5000,
            slug_dir: "/s".into(),
            stack_dir: "/t".into(),
            data_dir: "/d".into(),
            state_file: "/r/x.json".into(),
            place: PlaceSpec {
                workspaces: "/w".into(),
                run_dir: "/r".into(),
                bridge: "b".into(),
                subnet: "10.0.0.0/24".into(),
                network_state: "/n".into(),
                runtime: "/rt".into(),
            },
            mode: Mode::Daemon,
            probe: true,
            one_off: false,
            grace_ms: 1000,
            console_size: Some((24, 80)),
            restarts: 0,
            backoff_step: 0,
        };
        write_spec(&p, &spec).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(take_spec(&p).unwrap(), spec);
        assert!(!p.exists());
    }
}
