//! `slipway daemon` (the control plane, in the foreground; systemd runs it as
//! `slipway.service`) and `slipway token`.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use slipway::api::daemon::{self, DaemonOptions};
use slipway::api::runner::{Events, Runner};
use slipway::config::Config;
use slipway::supervisor::Supervisor;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Also serve the API on TCP at IP:PORT, with the bearer token (`slipway token`).
    #[arg(long, env = "SLIPWAY_API_LISTEN")]
    pub listen: Option<String>,
    /// The router's listen address, for the URLs the daemon gives out.
    #[arg(long, env = "SLIPWAY_ROUTER_LISTEN")]
    pub router_listen: Option<String>,
    /// Apps answer at NAME.BASE_DOMAIN.
    #[arg(long, env = "SLIPWAY_BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// The account sshd runs `slipway git-shell` as (its group may use the git socket).
    #[arg(long, env = "SLIPWAY_GIT_USER")]
    pub git_user: Option<String>,
    /// The authorized_keys file written from `slipway keys`.
    #[arg(long, env = "SLIPWAY_GIT_AUTHORIZED_KEYS")]
    pub git_authorized_keys: Option<std::path::PathBuf>,
    /// Longest build, in seconds.
    #[arg(long, default_value_t = 1200)]
    pub build_timeout: u64,
    /// Builds of different apps that may run at once.
    #[arg(long, default_value_t = 2)]
    pub parallel_builds: usize,
    /// Seconds a web container has to accept TCP on $PORT [default: 60].
    #[arg(long, env = "SLIPWAY_BOOT_TIMEOUT")]
    pub boot_timeout: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when a container stops [default: 30].
    #[arg(long, env = "SLIPWAY_STOP_GRACE_PERIOD")]
    pub stop_grace_period: Option<u64>,
    /// Most one-off containers per app at once [default: 10].
    #[arg(long, env = "SLIPWAY_MAX_ONE_OFFS")]
    pub max_one_offs: Option<usize>,
}

/// The supervisor the daemon drives: it re-adopts the containers a previous daemon left.
fn start_runner(config: &Config, events: Arc<dyn Events>) -> Result<Arc<dyn Runner>, String> {
    Supervisor::start(config, events)
        .map(|s| Arc::new(s) as Arc<dyn Runner>)
        .map_err(|e| e.to_string())
}

pub fn run(config: Config, a: DaemonArgs) -> anyhow::Result<u8> {
    let exe = std::env::current_exe().context("finding the slipway binary (for builds)")?;
    let mut opts = DaemonOptions::new(config, exe);
    opts.build_timeout = Duration::from_secs(a.build_timeout);
    opts.parallel_builds = a.parallel_builds.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the daemon's runtime")?;
    let result = rt.block_on(daemon::run(opts, start_runner, async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }));
    // Blocking calls into the supervisor (a rollout) are not waited for past this.
    rt.shutdown_timeout(Duration::from_secs(5));
    result.context("the daemon stopped")?;
    Ok(0)
}

/// `slipway token`: the TCP API's token (root only; the daemon makes it at its first start).
pub fn token(config: &Config) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&config.token_file).with_context(|| {
        format!(
            "reading {}: the daemon writes the token at its first start (as root); start it (`systemctl start slipway`), and run this as root",
            config.token_file.display()
        )
    })?;
    println!("{}", text.trim());
    Ok(0)
}
