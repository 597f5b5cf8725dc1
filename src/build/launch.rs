//! Running one container to completion through `slipway-runtime run`, with its output
//! streamed line by line and a deadline. Builds use it; so do one-off app processes.
//!
//! slipway drives its runtime as podman and containerd do: through the runc-compatible
//! command line. That keeps the caller's process free of fork-and-exec subtleties (the
//! daemon is multi-threaded) and gives every container its own reaper.
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("write the container bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("start {runtime}: {source} (install slipway-runtime next to slipway, or set SLIPWAY_RUNTIME)")]
    Spawn {
        runtime: PathBuf,
        source: std::io::Error,
    },
    #[error("pipe: {0}")]
    Pipe(nix::Error),
}

/// How the container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code (128+N for a signal death, as the runtime reports it).
    Exited(i32),
    /// Killed at the deadline.
    TimedOut,
}

/// The runtime binary: `SLIPWAY_RUNTIME`, else `slipway-runtime` next to the running binary,
/// else on PATH.
pub fn runtime_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SLIPWAY_RUNTIME") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        // Test binaries live in target/*/deps; the runtime one level up.
        for dir in [exe.parent(), exe.parent().and_then(|p| p.parent())]
            .into_iter()
            .flatten()
        {
            let cand = dir.join("slipway-runtime");
            if cand.is_file() {
                return cand;
            }
        }
    }
    PathBuf::from("slipway-runtime")
}

pub struct Launcher {
    pub runtime: PathBuf,
    /// The runtime's state root.
    pub root: PathBuf,
}

impl Launcher {
    /// Write `spec` into `bundle` and run it as container `id`, calling `on_line` for each
    /// line of its output (stdout and stderr together, in order), killing it at `timeout`.
    pub fn run(
        &self,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        timeout: Duration,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Outcome, LaunchError> {
        let config = bundle.join("config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(spec).expect("spec serializes"),
        )
        .map_err(|source| LaunchError::Bundle {
            path: config.clone(),
            source,
        })?;
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
        let write_err: OwnedFd = write_end.try_clone().map_err(|e| LaunchError::Bundle {
            path: config.clone(),
            source: e,
        })?;
        let mut child = Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.root)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(write_err))
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                runtime: self.runtime.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let r = BufReader::new(std::fs::File::from(read_end));
            for line in r.split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        // After the deadline: kill the container, then give `run` this long to clean up.
        let cleanup_grace = Duration::from_secs(30);
        let mut timed_out = false;
        let mut finished = true;
        loop {
            let now = Instant::now();
            let wait = if timed_out {
                Duration::from_millis(100)
            } else {
                deadline
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            };
            match rx.recv_timeout(wait) {
                Ok(line) => on_line(&line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout)
                    if !timed_out && Instant::now() >= deadline =>
                {
                    timed_out = true;
                    self.kill(id);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if timed_out && Instant::now() >= deadline + cleanup_grace {
                        // Something still holds the output pipe: stop waiting for it.
                        let _ = child.kill();
                        finished = false;
                        break;
                    }
                }
            }
        }
        if finished {
            let _ = reader.join();
        }
        let status = child.wait().map_err(|source| LaunchError::Spawn {
            runtime: self.runtime.clone(),
            source,
        })?;
        if timed_out {
            return Ok(Outcome::TimedOut);
        }
        Ok(Outcome::Exited(status.code().unwrap_or(128)))
    }

    /// Stop the container as platforms do: SIGTERM to its main process, then, if it is still
    /// there after `grace`, SIGKILL to everything in it. `run` then cleans it up.
    pub fn stop(&self, id: &str, grace: Duration) {
        let _ = Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.root)
            .args(["kill", id, "TERM"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let out = Command::new(&self.runtime)
                .arg("--root")
                .arg(&self.root)
                .args(["state", id])
                .output();
            let running = out
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .is_some_and(|v| v["status"] == "running" || v["status"] == "created");
            if !running {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill(id);
    }

    /// SIGKILL everything in the container; `run` then cleans it up.
    pub fn kill(&self, id: &str) {
        let _ = Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.root)
            .args(["kill", "--all", id, "KILL"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
