//! `slipway router`: flags and environment resolved into a [`RouterConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use slipway::config::Config;
use slipway::router::{parse_duration, RouterConfig, DEFAULT_LISTEN};

#[derive(Debug, Args)]
pub struct RouterArgs {
    /// HTTP listen address [default: router_listen of the config file, else 0.0.0.0:80].
    #[arg(long, env = "SLIPWAY_ROUTER_LISTEN")]
    listen: Option<SocketAddr>,
    /// HTTPS listen address (certificates per domain come from the route table).
    #[arg(long, env = "SLIPWAY_ROUTER_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,
    /// Apps answer at NAME.BASE_DOMAIN (default: the route table's, else localhost).
    #[arg(long, env = "SLIPWAY_BASE_DOMAIN")]
    base_domain: Option<String>,
    /// Worker threads (default: one per CPU).
    #[arg(long, env = "SLIPWAY_ROUTER_WORKERS")]
    workers: Option<usize>,
    /// Longest wait for a backend's response head (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    backend_timeout: Duration,
    /// Longest silence of a backend in the middle of a response body (then it is cut short).
    #[arg(long, default_value = "55s", value_parser = parse_duration)]
    body_idle_timeout: Duration,
    /// Longest wait for a connection to a backend.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// How long a backend that refused a connection gets no requests.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    quarantine: Duration,
    /// Time a client has to send a request head; also the idle keep-alive limit.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Longest wait for requests in flight on SIGTERM.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Most client connections at once (more wait in the listen backlog).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Most client connections kept idle between requests.
    #[arg(long, default_value_t = 2_000)]
    max_idle_connections: usize,
    /// Size in bytes past which an app's router.log is rotated.
    #[arg(long, default_value_t = slipway::applog::DEFAULT_MAX_BYTES)]
    log_max_bytes: u64,
}

pub fn run(paths: &Config, args: RouterArgs) -> anyhow::Result<()> {
    // routes.json lives in the run dir; app logs under the data dir.
    let mut config = RouterConfig::new(paths.run_dir.clone(), paths.data_dir.clone());
    // The flag, else the config file's router_listen (the daemon builds app URLs from the
    // same value), else the default.
    config.listen = match args.listen {
        Some(addr) => addr,
        None => paths.router_listen.parse().with_context(|| {
            format!(
                "router_listen {:?} in the config: use IP:PORT, e.g. {DEFAULT_LISTEN}",
                paths.router_listen
            )
        })?,
    };
    config.tls_listen = args.tls_listen;
    if let Some(workers) = args.workers {
        config.workers = workers.max(1);
    }
    config.base_domain = args.base_domain;
    config.backend_timeout = args.backend_timeout;
    config.connect_timeout = args.connect_timeout;
    config.body_idle_timeout = args.body_idle_timeout;
    config.quarantine = args.quarantine;
    config.header_timeout = args.header_timeout;
    config.drain_timeout = args.drain_timeout;
    config.max_connections = args.max_connections.max(1);
    config.max_idle_connections = args.max_idle_connections;
    config.log_max_bytes = args.log_max_bytes;
    slipway::router::run(config).context("router stopped")
}
