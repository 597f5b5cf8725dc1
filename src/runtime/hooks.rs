//! OCI hooks: programs run at fixed points of the lifecycle with the state JSON on stdin.
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use super::error::{Result, RuntimeError};

/// Run hooks in order; the first failure stops the sequence.
pub fn run(hooks: &[Hook], state_json: &str, stage: &str) -> Result<()> {
    for h in hooks {
        run_one(h, state_json).map_err(|msg| RuntimeError::Hook {
            path: h.path().clone(),
            msg: format!("{stage} hook: {msg}"),
        })?;
    }
    Ok(())
}

fn run_one(h: &Hook, state_json: &str) -> std::result::Result<(), String> {
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may not read its stdin: a broken pipe is not an error.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(format!("failed: {status}")),
            None => {}
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {}s", h.timeout().unwrap_or(0)));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
