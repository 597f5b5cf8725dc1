//! Running an app's processes: the formation (how many containers of each process type, of
//! which size), rollouts of new releases, restarts, one-offs, release and postdeploy hooks and
//! scheduled jobs; every container under a monitor of its own.
//!
//! Concern and invariants:
//! * The daemon is multi-threaded and never forks a container: each container has a small,
//!   single-threaded monitor process (`slipway monitor`, [`monitor`]) exec'ed by the
//!   supervisor, in a session of its own, that prepares the sandbox, runs the container
//!   through `slipway-runtime`, writes its output to the app log and its state to
//!   `RUN_DIR/supervisor/APP/NAME.HEX.json`, and cleans up when it ends.
//! * Monitors outlive the daemon. [`Supervisor::start`] re-adopts the live ones (a container is
//!   never started twice), cleans after the dead ones and brings the formation back, from the
//!   desired state kept in `DATA_DIR/supervisor/apps/APP.json` (release and formation), so a
//!   restarted daemon or a rebooted host needs nothing from the control plane.
//! * A container that ends on its own is restarted ([`policy`]: at once, then with a capped
//!   exponential backoff); one-offs and hooks never are.
//! * Routing follows readiness: the backends reported through [`Events::backends_changed`]
//!   are the current release's web containers that accept TCP on their port, and a rollout
//!   or restart reports a new container before the one it replaces is stopped.
//! * Containers of the app bridge cannot reach one another ([`isolation`]), nor the host's
//!   services (the network layer's host guard).
//! * Platform events (start, up, crash with status or signal, OOM kill, restart, stop) go
//!   through [`Events::event`], whose implementation writes them to the app's `platform.log`:
//!   the supervisor never opens that file itself (one writer per log file).
pub mod app_spec;
pub mod cron;
mod engine;
mod events;
pub mod isolation;
pub mod monitor;
mod oneoff;
pub mod policy;
mod rollout;
pub mod size;
pub mod spawn;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::platform::process_types::ProcessType;
use crate::sys::io::PathError;

pub use cron::{Clock, CronJobInfo, SystemClock};
pub use oneoff::{OneOff, OneOffMode};
pub use policy::Backoff;
pub use size::{BadSize, Formation, Scale, Size};

/// The port web containers listen on (`$PORT`).
pub const WEB_PORT: u16 = 5000;

/// Procfile entries that are hooks (`platform::process_types::PHASES`), never scaled:
/// Heroku's release phase, run before a release's containers start, and Scalingo's
/// postdeploy, run before traffic switches.
pub const RELEASE_HOOK: &str = "release";
pub const POSTDEPLOY_HOOK: &str = "postdeploy";

/// One release of an app, as the control plane made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub app: String,
    pub version: u32,
    /// The unpacked slug (read-only; the layer above the run stack).
    pub slug_dir: PathBuf,
    pub process_types: Vec<ProcessType>,
    /// Config vars.
    pub env: Vec<(String, String)>,
    /// The run stack its containers stand on (`run`, `run-13`: the stack the slug was built
    /// for).
    #[serde(default = "default_run_stack")]
    pub stack: String,
}

fn default_run_stack() -> String {
    "run".into()
}

impl Release {
    /// The command of process type (or hook) `kind`.
    pub fn command(&self, kind: &str) -> Option<&str> {
        self.process_types
            .iter()
            .find(|p| p.name == kind)
            .map(|p| p.command.as_str())
    }

    /// Process types that run as containers of the formation (hooks excluded).
    pub fn scalable_types(&self) -> impl Iterator<Item = &ProcessType> {
        self.process_types
            .iter()
            .filter(|p| !crate::platform::process_types::is_phase(&p.name))
    }
}

/// One container, as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// `web-1`, `run-2`.
    pub name: String,
    pub kind: String,
    /// starting | up | crashed | stopping
    pub state: String,
    pub release: u32,
    pub size: Size,
    /// Host pid of the container's init.
    pub pid: Option<i32>,
    /// Where a web container listens.
    pub address: Option<SocketAddr>,
    pub restarts: u32,
    /// RFC 3339.
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

impl RolloutError {
    /// The deployment status the control plane records.
    pub fn status(&self) -> &'static str {
        match self {
            RolloutError::BootTimeout { .. } => "timeout-error",
            RolloutError::Crashed { .. } | RolloutError::Start(_) => "crashed-error",
            RolloutError::HookFailed { .. } | RolloutError::HookTimeout => "hook-error",
        }
    }
}

/// What the supervisor tells the control plane. Called from the supervisor's threads, never
/// while it holds a lock of its own (an implementation may call back into it).
pub trait Events: Send + Sync {
    /// The web containers the router should send `app`'s requests to, now.
    fn backends_changed(&self, app: &str, backends: Vec<crate::api::routes::Backend>);
    /// A platform event for `app`'s log (`web.1: State changed from starting to up`).
    fn event(&self, app: &str, line: &str);
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("app {app} has no release running on this host; deploy it first")]
    NoRelease { app: String },
    #[error("app {app} has no process type {kind:?} in release v{release} (it has: {known}); add it to the Procfile")]
    UnknownType {
        app: String,
        kind: String,
        release: u32,
        known: String,
    },
    #[error("{kind:?} is a hook of the Procfile, run on each deployment; it cannot be scaled")]
    NotScalable { kind: String },
    #[error("app {app} has no container or process type {target:?} (containers: {known})")]
    NoSuchContainer {
        app: String,
        target: String,
        known: String,
    },
    #[error("{0}")]
    BadName(String),
    #[error("app {app} already runs {max} one-off containers, the most allowed; wait for one to end (or stop it)")]
    TooManyOneOffs { app: String, max: usize },
    #[error("the run stack is not available: {0}; build it with `slipway stacks build`")]
    Stack(String),
    #[error("start a container monitor ({exe}): {source}; check that the slipway binary is installed there")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the monitor of {container} failed: {message}")]
    Monitor { container: String, message: String },
    #[error("replacing {container}: {source}; the previous container keeps running")]
    Replace {
        container: String,
        #[source]
        source: RolloutError,
    },
    #[error("another supervisor (a slipway daemon) holds {lock} ({why}): only one may supervise a run dir; stop the other one first")]
    Busy { lock: PathBuf, why: String },
    #[error("one-off {name} is detached: its output is in the app's log, and it has no exit status to wait for here")]
    Detached { name: String },
}

/// Settings of the supervisor: `boot_timeout`, `stop_grace` and `max_one_offs` come from
/// the [`Config`] ([`Options::from_config`]); the others are for tests.
#[derive(Clone)]
pub struct Options {
    /// How long a web container has to accept TCP on its port.
    pub boot_timeout: Duration,
    /// SIGTERM to SIGKILL when a container is stopped.
    pub stop_grace: Duration,
    /// Time limit of the release and postdeploy hooks.
    pub hook_timeout: Duration,
    /// How long a replaced web container keeps running after the router was told to leave
    /// it, for requests already on their way.
    pub drain: Duration,
    /// Most one-off containers per app at once (attached, detached and scheduled).
    pub max_one_offs: usize,
    pub backoff: Backoff,
    pub clock: Arc<dyn Clock>,
    /// The `slipway` binary that runs monitors (default: this process's, or the one beside
    /// the runtime).
    pub monitor_exe: Option<PathBuf>,
    /// How often the reconcile thread looks at the monitors.
    pub tick: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            boot_timeout: Duration::from_secs(crate::config::DEFAULT_BOOT_TIMEOUT_SECS),
            stop_grace: Duration::from_secs(crate::config::DEFAULT_STOP_GRACE_SECS),
            hook_timeout: Duration::from_secs(20 * 60),
            drain: Duration::from_secs(1),
            max_one_offs: crate::config::DEFAULT_MAX_ONE_OFFS,
            backoff: Backoff::default(),
            clock: Arc::new(SystemClock),
            monitor_exe: None,
            tick: Duration::from_millis(100),
        }
    }
}

impl Options {
    /// The defaults, with the settings the config file carries.
    pub fn from_config(config: &Config) -> Options {
        Options {
            boot_timeout: config.boot_timeout,
            stop_grace: config.stop_grace_period,
            max_one_offs: config.max_one_offs,
            ..Options::default()
        }
    }
}

/// The supervisor of every app on this host. Cheap to share (`Send + Sync`); its blocking
/// methods belong on blocking threads (`spawn_blocking` in the daemon).
pub struct Supervisor {
    shared: Arc<engine::Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    /// Re-adopt the running monitors, clean after dead ones, and start reconciling every
    /// app's formation (with the config's boot timeout, grace period and one-off limit).
    pub fn start(config: &Config, events: Arc<dyn Events>) -> Result<Supervisor, SupervisorError> {
        Supervisor::start_with(config, events, Options::from_config(config))
    }

    pub fn start_with(
        config: &Config,
        events: Arc<dyn Events>,
        options: Options,
    ) -> Result<Supervisor, SupervisorError> {
        let shared = engine::Shared::start(config, events, options)?;
        let thread = engine::spawn_reconciler(shared.clone());
        Ok(Supervisor {
            shared,
            thread: Some(thread),
        })
    }

    /// Make `release` the app's running release with `formation`: release hook, new
    /// containers, wait until every web container accepts TCP, postdeploy hook, switch the
    /// router, stop the previous containers. On failure the previous release keeps serving.
    pub fn rollout(
        &self,
        release: &Release,
        formation: &Formation,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), RolloutError> {
        rollout::rollout(&self.shared, release, formation, log)
    }

    /// Change the count or size of process types (types not named keep theirs). New
    /// containers start and surplus ones stop in the background; a size change replaces the
    /// type's containers one by one before this returns.
    pub fn scale(&self, app: &str, formation: &Formation) -> Result<(), SupervisorError> {
        rollout::scale(&self.shared, app, formation)
    }

    /// Replace containers one by one (all, those of a process type, or one by name), each new
    /// one up and routed before the old one stops.
    pub fn restart(&self, app: &str, target: Option<&str>) -> Result<(), SupervisorError> {
        rollout::restart(&self.shared, app, target)
    }

    /// Stop every container of the app and forget it: nothing of it is left on the host but
    /// its logs.
    pub fn stop_app(&self, app: &str) -> Result<(), SupervisorError> {
        rollout::stop_app(&self.shared, app)
    }

    pub fn ps(&self, app: &str) -> Vec<ContainerInfo> {
        self.shared.ps(app)
    }

    /// The current release of `app` on this host, if any.
    pub fn current_release(&self, app: &str) -> Option<Release> {
        self.shared.desired(app).map(|d| d.release)
    }

    /// The app's formation as the supervisor keeps it.
    pub fn formation(&self, app: &str) -> Option<Formation> {
        self.shared.desired(app).map(|d| d.formation)
    }

    /// A one-off container of `release` running `command`: attached (the caller gets its
    /// stdio and exit status) or detached (its output goes to the app's log as `run.N`).
    pub fn one_off(
        &self,
        release: &Release,
        command: &str,
        size: Size,
        env: &[(String, String)],
        detached: bool,
    ) -> Result<OneOff, SupervisorError> {
        let mode = if detached {
            OneOffMode::Detached
        } else {
            OneOffMode::Attached
        };
        oneoff::start(&self.shared, release, command, size, env, mode)
    }

    /// `one_off` with a choice of mode, including a pty (`OneOffMode::Terminal`).
    pub fn one_off_with(
        &self,
        release: &Release,
        command: &str,
        size: Size,
        env: &[(String, String)],
        mode: OneOffMode,
    ) -> Result<OneOff, SupervisorError> {
        oneoff::start(&self.shared, release, command, size, env, mode)
    }

    /// The scheduled jobs of the app's current release (cron.json), with their last and next
    /// runs.
    pub fn cron(&self, app: &str) -> Vec<CronJobInfo> {
        self.shared.cron_info(app)
    }
}

impl Drop for Supervisor {
    /// Stops reconciling; the containers keep running, for the next supervisor to adopt.
    fn drop(&mut self) {
        self.shared.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisor_can_be_shared_by_a_multi_threaded_daemon() {
        fn shared<T: Send + Sync>() {}
        shared::<Supervisor>();
        shared::<Options>();
        fn sent<T: Send>() {}
        sent::<OneOff>();
    }

    #[test]
    fn rollout_errors_map_to_deployment_statuses() {
        let boot = RolloutError::BootTimeout {
            container: "web-1".into(),
            secs: 60,
        };
        assert_eq!(boot.status(), "timeout-error");
        assert!(boot.to_string().contains("$PORT"), "{boot}");
        assert_eq!(RolloutError::HookTimeout.status(), "hook-error");
        assert_eq!(RolloutError::HookFailed { code: 1 }.status(), "hook-error");
        assert_eq!(RolloutError::Start("x".into()).status(), "crashed-error");
        let release = Release {
            app: "a".into(),
            version: 1,
            slug_dir: "/s".into(),
            process_types: ["web", "release", "postdeploy", "worker"]
                .iter()
                .map(|n| ProcessType {
                    name: n.to_string(),
                    command: format!("./{n}"),
                    origin: "Procfile".into(),
                })
                .collect(),
            env: Vec::new(),
            stack: "run".into(),
        };
        let scalable: Vec<&str> = release.scalable_types().map(|p| p.name.as_str()).collect();
        assert_eq!(scalable, ["web", "worker"]);
        assert_eq!(release.command(POSTDEPLOY_HOOK), Some("./postdeploy"));
    }
}
