//! OCI hooks: programs run at fixed points of the lifecycle with the state JSON on stdin.
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use oci_spec::runtime::Hook;

use super::error::{Result, RuntimeError};
use crate::sys::child::{self, Supervised};

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
    let timeout = h.timeout().filter(|t| *t > 0);
    // At the deadline the hook's whole process group goes, not only the hook itself.
    let f = child::run(
        &mut cmd,
        Supervised {
            stdin: Some(state_json.as_bytes()),
            timeout: timeout.map(|t| Duration::from_secs(t as u64)),
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot start: {e}"))?;
    if f.timed_out {
        return Err(format!("timed out after {}s", timeout.unwrap_or(0)));
    }
    match f.status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("failed: {status}")),
        None => Err("could not be waited for".into()),
    }
}
