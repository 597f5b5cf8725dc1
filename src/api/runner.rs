//! What the daemon asks of the supervisor, as one trait: the supervisor implements it, and
//! the API's tests drive the daemon with a fake of their own.
//!
//! The value types (sizes, formations, releases, containers, rollout errors, events) are the
//! supervisor's interface as agreed; they are defined here until `crate::supervisor` exports
//! them, then re-exported from there.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::platform::process_types::ProcessType;

/// Container sizes (Scalingo's): memory and pids limits grow with the size.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Size {
    S,
    #[default]
    M,
    L,
    XL,
    #[serde(rename = "2XL")]
    XXL,
    #[serde(rename = "3XL")]
    XXXL,
}

/// What `Size::parse` accepts, for error messages.
pub const SIZE_NAMES: &str = "S, M, L, XL, 2XL, 3XL";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown container size {0:?}: use one of {SIZE_NAMES}")]
pub struct BadSize(pub String);

impl Size {
    pub const ALL: [Size; 6] = [Size::S, Size::M, Size::L, Size::XL, Size::XXL, Size::XXXL];

    /// Case-insensitive; `XXL` and `XXXL` are accepted for `2XL` and `3XL`.
    pub fn parse(s: &str) -> Result<Size, BadSize> {
        match s.trim().to_ascii_uppercase().as_str() {
            "S" => Ok(Size::S),
            "M" => Ok(Size::M),
            "L" => Ok(Size::L),
            "XL" => Ok(Size::XL),
            "2XL" | "XXL" => Ok(Size::XXL),
            "3XL" | "XXXL" => Ok(Size::XXXL),
            _ => Err(BadSize(s.to_string())),
        }
    }

    /// The name users write: `2XL` for XXL.
    pub fn name(&self) -> &'static str {
        match self {
            Size::S => "S",
            Size::M => "M",
            Size::L => "L",
            Size::XL => "XL",
            Size::XXL => "2XL",
            Size::XXXL => "3XL",
        }
    }
}

/// How many containers of one type, of which size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    pub count: u32,
    pub size: Size,
}

/// Process type → scale. `web` defaults to 1, other types to 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formation(pub BTreeMap<String, Scale>);

/// What the supervisor runs: one release of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub app: String,
    pub version: u32,
    /// The unpacked slug layer (`DATA_DIR/slugs/ID`).
    pub slug_dir: PathBuf,
    pub process_types: Vec<ProcessType>,
    pub env: Vec<(String, String)>,
}

/// One container of an app, as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// `web-1`, `run-4821`.
    pub name: String,
    /// Process type (`web`), or `run` for one-offs.
    pub kind: String,
    /// `up`, `starting`, `crashed`, `stopping`, …
    pub state: String,
    pub release: u32,
    pub size: Size,
    pub pid: Option<i32>,
    pub address: Option<SocketAddr>,
    pub restarts: u32,
    pub started_at: String,
}

/// Why a rollout failed; the previous release keeps serving in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("{container} did not accept connections on $PORT within {secs} s of starting; make the web process listen on 0.0.0.0:$PORT, sooner")]
    BootTimeout { container: String, secs: u64 },
    #[error("{container} exited with status {code} while the release started; see its log lines (slipway logs) and fix the process")]
    Crashed { container: String, code: i32 },
    #[error("the release or postdeploy command exited with status {code}; see the deployment log above and fix the command")]
    HookFailed { code: i32 },
    #[error("the release or postdeploy command was still running at its time limit and was stopped; make it finish sooner")]
    HookTimeout,
    #[error("the release could not start: {0}")]
    Start(String),
}

/// A failed request to the supervisor, with its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(pub String);

/// How a one-off holds its stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneOffMode {
    /// Output to the app's log; nobody waits.
    Detached,
    /// stdin, stdout and stderr are pipes the caller holds.
    Attached,
    /// A pty the caller holds.
    Terminal,
}

/// A one-off container (`slipway run`).
pub struct OneOff {
    /// The container's name (`run-1`).
    pub name: String,
    /// Attached and terminal runs: its stdio and exit status.
    pub io: Option<OneOffIo>,
}

/// The stdio of an attached one-off. Dropping it stops the one-off.
pub struct OneOffIo {
    /// Its input (a pipe, or the pty).
    pub input: Option<std::fs::File>,
    /// Its output (stdout, or the pty).
    pub output: std::fs::File,
    /// Its stderr (attached runs; with a pty everything comes through `output`).
    pub errors: Option<std::fs::File>,
    /// Blocks until it exited; its exit status.
    pub wait: Box<dyn FnOnce() -> Result<i32, RunnerError> + Send>,
    /// Sizes its terminal (rows, columns).
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
}

/// What the supervisor tells the daemon as containers come and go.
pub trait Events: Send + Sync {
    /// The web containers that take traffic for `app` now.
    fn backends_changed(&self, app: &str, backends: Vec<super::routes::Backend>);
    /// A platform event of `app` (`web-1 crashed with code 1, restarting in 2 s`).
    fn event(&self, app: &str, line: &str);
}

/// What the daemon asks of the supervisor. Every call may block: the daemon calls them from
/// blocking threads.
pub trait Runner: Send + Sync + 'static {
    /// Starts `release` with `formation`, waits until its web containers answer, runs its
    /// postdeploy command, switches traffic and stops the previous release's containers.
    fn rollout(
        &self,
        release: &Release,
        formation: &Formation,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), RolloutError>;
    /// Brings the app's containers to `formation` (current release).
    fn scale(&self, app: &str, formation: &Formation) -> Result<(), RunnerError>;
    /// Restarts every container of the app, those of one type, or one container.
    fn restart(&self, app: &str, target: Option<&str>) -> Result<(), RunnerError>;
    /// Stops every container of the app.
    fn stop_app(&self, app: &str) -> Result<(), RunnerError>;
    /// The app's containers.
    fn ps(&self, app: &str) -> Vec<ContainerInfo>;
    /// Starts a one-off container of `release` running `command`.
    fn one_off(
        &self,
        release: &Release,
        command: &str,
        size: Size,
        env: &[(String, String)],
        mode: OneOffMode,
    ) -> Result<OneOff, RunnerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_users_write_them() {
        assert_eq!(Size::parse("2xl"), Ok(Size::XXL));
        assert_eq!(Size::parse("XXXL"), Ok(Size::XXXL));
        assert_eq!(Size::parse("m"), Ok(Size::M));
        assert!(Size::parse("4XL").is_err());
        for s in Size::ALL {
            assert_eq!(Size::parse(s.name()), Ok(s));
        }
    }
}
