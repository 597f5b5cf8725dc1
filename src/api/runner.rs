//! What the daemon asks of the supervisor, as one trait: [`Supervisor`] implements it, and
//! the API's tests drive the daemon with a fake of their own. The value types are the
//! supervisor's.
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

pub use crate::supervisor::size::SIZE_NAMES;
pub use crate::supervisor::{
    BadSize, ContainerInfo, CronJobInfo, Events, Formation, OneOffMode, Release, RolloutError,
    Scale, Size,
};
use crate::supervisor::{Supervisor, SupervisorError};

/// A failed request to the supervisor, with its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(pub String);

impl From<SupervisorError> for RunnerError {
    fn from(e: SupervisorError) -> RunnerError {
        RunnerError(e.to_string())
    }
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
    pub input: Option<File>,
    /// Its output (stdout, or the pty).
    pub output: File,
    /// Its stderr (attached runs), or the monitor's own errors (terminal runs).
    pub errors: Option<File>,
    /// Blocks until it exited; its exit status.
    pub wait: Box<dyn FnOnce() -> Result<i32, RunnerError> + Send>,
    /// Sizes its terminal (rows, columns).
    pub resize: Option<Resize>,
}

/// Sizes a one-off's terminal (rows, columns).
pub type Resize = Box<dyn Fn(u16, u16) + Send + Sync>;

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
    /// The scheduled jobs of the app's current release, with their last and next runs.
    fn cron(&self, app: &str) -> Vec<CronJobInfo>;
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

impl Runner for Supervisor {
    fn rollout(
        &self,
        release: &Release,
        formation: &Formation,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), RolloutError> {
        Supervisor::rollout(self, release, formation, log)
    }

    fn scale(&self, app: &str, formation: &Formation) -> Result<(), RunnerError> {
        Ok(Supervisor::scale(self, app, formation)?)
    }

    fn restart(&self, app: &str, target: Option<&str>) -> Result<(), RunnerError> {
        Ok(Supervisor::restart(self, app, target)?)
    }

    fn stop_app(&self, app: &str) -> Result<(), RunnerError> {
        Ok(Supervisor::stop_app(self, app)?)
    }

    fn ps(&self, app: &str) -> Vec<ContainerInfo> {
        Supervisor::ps(self, app)
    }

    fn cron(&self, app: &str) -> Vec<CronJobInfo> {
        Supervisor::cron(self, app)
    }

    fn one_off(
        &self,
        release: &Release,
        command: &str,
        size: Size,
        env: &[(String, String)],
        mode: OneOffMode,
    ) -> Result<OneOff, RunnerError> {
        let mut o = self.one_off_with(release, command, size, env, mode)?;
        let name = o.name.clone();
        if mode == OneOffMode::Detached {
            return Ok(OneOff { name, io: None });
        }
        let file = |fd: OwnedFd| File::from(fd);
        let lost = || RunnerError(format!("one-off {name} started without its output"));
        let (input, output, resize): (_, _, Option<Resize>) = match (mode, o.pty.take()) {
            (OneOffMode::Terminal { .. }, Some(pty)) => {
                let clone = |f: &File| {
                    f.try_clone()
                        .map_err(|e| RunnerError(format!("one-off {name}: its pty: {e}")))
                };
                let sizer = Arc::new(clone(&pty)?);
                let resize = move |rows, cols| {
                    let _ = set_window_size(&sizer, rows, cols);
                };
                (Some(clone(&pty)?), pty, Some(Box::new(resize) as _))
            }
            _ => (
                o.stdin.take().map(|s| file(s.into())),
                o.stdout.take().map(|s| file(s.into())).ok_or_else(lost)?,
                None,
            ),
        };
        let errors = o.stderr.take().map(|s| file(s.into()));
        Ok(OneOff {
            name,
            io: Some(OneOffIo {
                input,
                output,
                errors,
                wait: Box::new(move || Ok(o.wait()?)),
                resize,
            }),
        })
    }
}

/// TIOCSWINSZ on a pty.
fn set_window_size(pty: &File, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize on a descriptor we own.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
