//! The `slipway` command line.

mod build;
mod monitor;
mod router;
mod slug;
mod stacks;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use slipway::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "A self-hosted application platform for bare Linux hosts"
)]
pub struct Cli {
    #[command(flatten)]
    pub paths: PathArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Where things are: each flag falls back to its environment variable, then to
/// /etc/slipway/config.toml, then to the default.
#[derive(Debug, Args)]
pub struct PathArgs {
    /// The config file [default: /etc/slipway/config.toml].
    #[arg(long, global = true, env = "SLIPWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where slipway keeps stacks, slugs, caches and its database [default: /var/lib/slipway].
    #[arg(long, global = true, env = "SLIPWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Runtime state: network namespaces, container state [default: /run/slipway].
    #[arg(long, global = true, env = "SLIPWAY_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// Where stacks are kept [default: the data dir].
    #[arg(long, global = true, env = "SLIPWAY_STACKS_DIR")]
    pub stacks_dir: Option<PathBuf>,
    /// The built-in buildpacks [default: beside the binary].
    #[arg(long, global = true, env = "SLIPWAY_BUILDPACKS_DIR")]
    pub buildpacks_dir: Option<PathBuf>,
    /// The slipway-runtime binary [default: beside this one].
    #[arg(long, global = true, env = "SLIPWAY_RUNTIME")]
    pub runtime: Option<PathBuf>,
    /// Bridge of the build network [default: slipway0].
    #[arg(long, global = true, env = "SLIPWAY_BUILD_BRIDGE")]
    pub build_bridge: Option<String>,
    /// Subnet of the build network [default: 10.209.0.0/24].
    #[arg(long, global = true, env = "SLIPWAY_BUILD_SUBNET")]
    pub build_subnet: Option<String>,
    /// Bridge of the app network [default: slipway1].
    #[arg(long, global = true, env = "SLIPWAY_APP_BRIDGE")]
    pub app_bridge: Option<String>,
    /// Subnet of the app network [default: 10.210.0.0/24].
    #[arg(long, global = true, env = "SLIPWAY_APP_SUBNET")]
    pub app_subnet: Option<String>,
}

impl PathArgs {
    /// Resolve every path and network default once.
    pub fn config(&self) -> anyhow::Result<Config> {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(PathBuf::from));
        let o = Overrides {
            config_file: self.config.clone(),
            data_dir: self.data_dir.clone(),
            run_dir: self.run_dir.clone(),
            stacks_dir: self.stacks_dir.clone(),
            buildpacks_dir: self.buildpacks_dir.clone(),
            runtime: self.runtime.clone(),
            build_bridge: self.build_bridge.clone(),
            build_subnet: self.build_subnet.clone(),
            app_bridge: self.app_bridge.clone(),
            app_subnet: self.app_subnet.clone(),
            ..Default::default()
        };
        Ok(Config::resolve(o, exe_dir.as_deref())?)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, list and prune the build and run stacks.
    #[command(subcommand)]
    Stacks(stacks::StacksCommand),
    /// Build a source directory into a slug with buildpacks.
    Build(build::BuildArgs),
    /// Manage per-app build caches.
    #[command(subcommand)]
    Cache(build::CacheCommand),
    /// Run slugs.
    #[command(subcommand)]
    Slug(SlugCommand),
    /// Run the HTTP router (the data plane) in the foreground.
    Router(router::RouterArgs),
    /// The monitor of one container (started by the supervisor).
    #[command(hide = true)]
    Monitor(monitor::MonitorArgs),
}

#[derive(Debug, Subcommand)]
pub enum SlugCommand {
    /// Run one process of a slug in a container, in the foreground (Ctrl-C stops it).
    Run(slug::SlugRunArgs),
    /// List the slugs in the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a slug (any unique id prefix).
    Rm { slug: String },
    /// Remove all but the newest slugs of each app.
    Prune {
        /// How many of each app's newest slugs to keep.
        #[arg(long, default_value_t = 2)]
        keep: usize,
    },
}

/// Run the command; Ok holds the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Monitor(args) = cli.command {
        return monitor::run(args);
    }
    let config = cli.paths.config()?;
    match cli.command {
        Command::Stacks(command) => stacks::run(&config, command).map(|_| 0),
        Command::Build(args) => build::build(&config, args),
        Command::Cache(command) => build::cache(&config, command).map(|_| 0),
        Command::Slug(SlugCommand::Run(args)) => slug::run(&config, args),
        Command::Slug(SlugCommand::List { json }) => slug::list(&config, json).map(|_| 0),
        Command::Slug(SlugCommand::Rm { slug }) => slug::remove(&config, &slug).map(|_| 0),
        Command::Slug(SlugCommand::Prune { keep }) => slug::prune(&config, keep).map(|_| 0),
        Command::Router(args) => router::run(&config, args).map(|_| 0),
        Command::Monitor(_) => unreachable!("handled first"),
    }
}
