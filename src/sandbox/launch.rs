//! Running one container through `slipway-runtime run`, its output streamed line by line,
//! under a deadline.
//!
//! slipway drives its runtime as podman and containerd do: through the runc-compatible
//! command line. That keeps the caller's process free of fork-and-exec subtleties (the
//! daemon is multi-threaded) and gives every container its own reaper.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;

use crate::sys::child::{self, Output, Supervised};
use crate::sys::io::at;

use super::SandboxError;

/// How the container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code (128+N for a signal death, as the runtime reports it).
    Exited(i32),
    /// Killed at the deadline.
    TimedOut,
}

/// The runtime binary and its state root.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub runtime: PathBuf,
    pub root: PathBuf,
}

impl Launcher {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root").arg(&self.root);
        c
    }

    /// Write `spec` into `bundle` and run it as container `id`, calling `on_line` for each
    /// line of its output (stdout and stderr together, in order), killing it at `timeout`.
    pub fn run(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        timeout: Duration,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Outcome, SandboxError> {
        let config = bundle.join("config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(spec).expect("spec serializes"),
        )
        .map_err(at("write the container bundle", &config))?;
        let mut cmd = self.command();
        cmd.args(["run", "--bundle"]).arg(bundle).arg(id);
        // At the deadline the container goes first; `run` then cleans it up and ends.
        let kill = || self.kill(id);
        let f = child::run(
            &mut cmd,
            Supervised {
                output: Output::Lines(on_line),
                timeout: Some(timeout),
                on_timeout: Some(&kill),
                grace: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .map_err(|source| SandboxError::Spawn {
            runtime: self.runtime.clone(),
            source,
        })?;
        if f.timed_out {
            return Ok(Outcome::TimedOut);
        }
        Ok(Outcome::Exited(
            f.status.and_then(|s| s.code()).unwrap_or(128),
        ))
    }

    /// Stop the container as platforms do: SIGTERM to its init (which passes it on to the
    /// program's process group), then, if it is still there after `grace`, SIGKILL to
    /// everything in it. `run` then cleans it up.
    pub fn stop(&self, id: &str, grace: Duration) {
        let _ = self
            .command()
            .args(["kill", id, "TERM"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running(id) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill(id);
    }

    fn is_running(&self, id: &str) -> bool {
        self.command()
            .args(["state", id])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .is_some_and(|v| v["status"] == "running" || v["status"] == "created")
    }

    /// SIGKILL everything in the container; `run` then cleans it up.
    pub fn kill(&self, id: &str) {
        let _ = self
            .command()
            .args(["kill", "--all", id, "KILL"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Remove whatever is left of container `id` (a `run` that was killed leaves it).
    pub fn remove(&self, id: &str) {
        let _ = self
            .command()
            .args(["delete", "--force", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
