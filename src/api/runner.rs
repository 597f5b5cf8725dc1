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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Size {
    S,
    M,
    L,
    XL,
    XXL,
    XXXL,
}

/// What a size may be, for error messages.
pub const SIZE_RULE: &str = "a size is one of S, M, L, XL, 2XL, 3XL";

impl Size {
    pub const ALL: [Size; 6] = [Size::S, Size::M, Size::L, Size::XL, Size::XXL, Size::XXXL];

    /// `S`, `M`, `L`, `XL`, `2XL` (or `XXL`), `3XL` (or `XXXL`), any case.
    pub fn parse(text: &str) -> Option<Size> {
        let upper = text.to_ascii_uppercase();
        match upper.as_str() {
            "XXL" => return Some(Size::XXL),
            "XXXL" => return Some(Size::XXXL),
            _ => {}
        }
        Self::ALL.into_iter().find(|s| s.name() == upper)
    }

    /// The name users write: `2XL` for XXL.
    pub fn name(self) -> &'static str {
        match self {
            Size::S => "S",
            Size::M => "M",
            Size::L => "L",
            Size::XL => "XL",
            Size::XXL => "2XL",
            Size::XXXL => "3XL",
        }
    }

    pub fn memory_bytes(self) -> u64 {
        const MIB: u64 = 1 << 20;
        match self {
            Size::S => 256 * MIB,
            Size::M => 512 * MIB,
            Size::L => 1024 * MIB,
            Size::XL => 2048 * MIB,
            Size::XXL => 4096 * MIB,
            Size::XXXL => 8192 * MIB,
        }
    }

    pub fn pids_limit(self) -> i64 {
        match self {
            Size::S => 128,
            Size::M => 256,
            Size::L => 512,
            Size::XL => 1024,
            Size::XXL => 2048,
            Size::XXXL => 4096,
        }
    }
}

/// How many containers of one type, of which size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub count: u32,
    pub size: Size,
}

/// Process type → scale. `web` defaults to 1, other types to 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("web container {container} did not accept connections on $PORT within {seconds} s; make the web process listen on 0.0.0.0:$PORT")]
    BootTimeout { container: String, seconds: u64 },
    #[error("container {container} exited with code {code} while starting; see `slipway logs`")]
    Crashed { container: String, code: i32 },
    #[error("the postdeploy command exited with code {code}")]
    HookFailed { code: i32 },
    #[error("the postdeploy command did not finish within its time limit")]
    HookTimeout,
    #[error("containers could not be started: {0}")]
    Start(String),
}

/// A failed request to the supervisor, with its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(pub String);

/// A one-off container (`slipway run`).
pub struct OneOff {
    /// The container's name (`run-4821`).
    pub name: String,
    /// Attached runs: the process's input, output (stdout and stderr together, or its
    /// terminal) and a way to wait for its exit code.
    pub attached: Option<Attached>,
}

/// The stdio of an attached one-off.
pub struct Attached {
    pub input: std::fs::File,
    pub output: std::fs::File,
    /// Blocks until the process exited; its exit code.
    pub wait: Box<dyn FnOnce() -> i32 + Send>,
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
        detached: bool,
    ) -> Result<OneOff, RunnerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_users_write_them() {
        assert_eq!(Size::parse("2xl"), Some(Size::XXL));
        assert_eq!(Size::parse("XXXL"), Some(Size::XXXL));
        assert_eq!(Size::parse("m"), Some(Size::M));
        assert_eq!(Size::parse("4XL"), None);
        for s in Size::ALL {
            assert_eq!(Size::parse(s.name()), Some(s));
        }
        assert!(Size::S.memory_bytes() < Size::XXXL.memory_bytes());
    }
}
