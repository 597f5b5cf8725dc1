//! `slipway monitor SPEC` (hidden): the monitor of one container, started by the supervisor.
//! See `slipway::supervisor::monitor`.
use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The spec file the supervisor wrote (read and removed).
    pub spec: PathBuf,
}

pub fn run(a: MonitorArgs) -> anyhow::Result<u8> {
    let code = slipway::supervisor::monitor::main(&a.spec);
    Ok(code.clamp(0, 255) as u8)
}
