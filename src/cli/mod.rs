//! The `slipway` command line.

mod api;
mod apps;
mod build;
mod config_vars;
mod daemon;
mod deploy;
mod domains;
mod formation;
mod git;
mod git_shell;
mod keys;
mod logs;
mod monitor;
mod releases;
mod router;
mod run;
mod slug;
mod stacks;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

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

    #[command(flatten)]
    pub api: api::ApiArgs,

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
    /// The daemon's API socket [default: RUN_DIR/slipway.sock].
    #[arg(long, global = true, env = "SLIPWAY_SOCKET")]
    pub socket: Option<PathBuf>,
}

impl PathArgs {
    /// Resolve every path and network default once.
    pub fn config(&self) -> anyhow::Result<Config> {
        self.resolve(self.overrides())
    }

    /// Resolve `o` (these flags plus others).
    pub fn resolve(&self, o: Overrides) -> anyhow::Result<Config> {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(PathBuf::from));
        Ok(Config::resolve(o, exe_dir.as_deref())?)
    }

    /// What the flags and environment set.
    pub fn overrides(&self) -> Overrides {
        Overrides {
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
            socket: self.socket.clone(),
            ..Default::default()
        }
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
    /// Run the control plane (API, deployments, supervisor) in the foreground.
    Daemon(daemon::DaemonArgs),
    /// Print the TCP API's token (root; the daemon makes it at its first start).
    Token,

    /// Create an app.
    Create(apps::CreateArgs),
    /// List the apps.
    Apps(apps::AppsArgs),
    /// Show an app: URL, release, formation, domains, last deployment.
    Info(apps::InfoArgs),
    /// Destroy an app and everything of it (containers, releases, slugs, cache, logs).
    Destroy(apps::DestroyArgs),
    /// Deploy a directory, an archive (.tar, .tar.gz, .tgz) or an archive's URL.
    Deploy(deploy::DeployArgs),
    /// List an app's deployments, or show one (`deployments show ID`).
    Deployments(deploy::DeploymentsArgs),
    /// List an app's releases.
    Releases(releases::ReleasesArgs),
    /// Go back to an earlier release (no build): `rollback -a APP v3`.
    Rollback(releases::RollbackArgs),
    /// Show an app's config vars, or set and unset them (a new release, containers restarted).
    Env(config_vars::EnvArgs),
    /// Scale process types (`web=3 worker=1:L`), or show the formation.
    Scale(formation::ScaleArgs),
    /// List an app's containers.
    Ps(formation::PsArgs),
    /// List an app's scheduled jobs (cron.json) with their last and next runs.
    Cron(formation::PsArgs),
    /// Restart an app's containers, one process type's, or one container.
    Restart(formation::RestartArgs),
    /// Run a command in a one-off container: `run -a APP -- bash`.
    Run(run::RunArgs),
    /// An app's custom domains: list, add, remove.
    Domains(domains::DomainsArgs),
    /// An app's logs: containers, platform events, router lines.
    Logs(logs::LogsArgs),

    /// Add a git remote for an app to the repository here (`git push slipway main` deploys).
    GitRemote(git::GitRemoteArgs),
    /// Show or set the branch a `git push` deploys (default: main or master).
    DeployBranch(git::DeployBranchArgs),
    /// Link an app to a GitHub repository (a push to its branch deploys), or unlink it.
    Integrations(git::IntegrationsArgs),
    /// The hook git runs for a push (started by the daemon's git service).
    #[command(hide = true)]
    GitHook(git::GitHookArgs),
    /// The SSH keys that may push (`git push` over SSH): list, add, remove.
    Keys(keys::KeysArgs),
    /// The forced command of a key in the git user's authorized_keys (run by sshd).
    #[command(hide = true)]
    GitShell(git_shell::GitShellArgs),
    /// git's credential helper: answers with the API token.
    #[command(hide = true)]
    GitCredential { operation: String },

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page, or write one per command into --dir.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
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
    // The git user runs this: it needs no config (which may be root's to read).
    if let Command::GitShell(args) = cli.command {
        return git_shell::run(args);
    }
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "slipway",
                &mut std::io::stdout(),
            );
            return Ok(0);
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(Cli::command(), dir)?;
            return Ok(0);
        }
        Command::Man { dir: None } => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(0);
        }
        _ => {}
    }
    if let Command::Daemon(a) = cli.command {
        let mut o = cli.paths.overrides();
        o.api_listen = a.listen.clone();
        o.router_listen = a.router_listen.clone();
        o.base_domain = a.base_domain.clone();
        o.git_user = a.git_user.clone();
        o.git_authorized_keys = a.git_authorized_keys.clone();
        o.boot_timeout = a.boot_timeout;
        o.stop_grace_period = a.stop_grace_period;
        o.max_one_offs = a.max_one_offs;
        let config = cli.paths.resolve(o)?;
        return daemon::run(config, a);
    }
    let config = cli.paths.config()?;
    let client = || cli.api.client(&config);
    match cli.command {
        Command::Stacks(command) => stacks::run(&config, command).map(|_| 0),
        Command::Build(args) => build::build(&config, args),
        Command::Cache(command) => build::cache(&config, command).map(|_| 0),
        Command::Slug(SlugCommand::Run(args)) => slug::run(&config, args),
        Command::Slug(SlugCommand::List { json }) => slug::list(&config, json).map(|_| 0),
        Command::Slug(SlugCommand::Rm { slug }) => slug::remove(&config, &slug).map(|_| 0),
        Command::Slug(SlugCommand::Prune { keep }) => slug::prune(&config, keep).map(|_| 0),
        Command::Router(args) => router::run(&config, args).map(|_| 0),
        Command::Token => daemon::token(&config),
        Command::Create(a) => apps::create(&client()?, a),
        Command::Apps(a) => apps::list(&client()?, a),
        Command::Info(a) => apps::info(&client()?, a),
        Command::Destroy(a) => apps::destroy(&client()?, a),
        Command::Deploy(a) => deploy::deploy(&client()?, a),
        Command::Deployments(a) => deploy::deployments(&client()?, a),
        Command::Releases(a) => releases::releases(&client()?, a),
        Command::Rollback(a) => releases::rollback(&client()?, a),
        Command::Env(a) => config_vars::env(&client()?, a),
        Command::Scale(a) => formation::scale(&client()?, a),
        Command::Ps(a) => formation::ps(&client()?, a),
        Command::Cron(a) => formation::cron(&client()?, a),
        Command::Restart(a) => formation::restart(&client()?, a),
        Command::Run(a) => run::run(&client()?, a),
        Command::Domains(a) => domains::domains(&client()?, a),
        Command::Logs(a) => logs::logs(&client()?, a),
        Command::GitRemote(a) => git::git_remote(&client()?, &config, a),
        Command::DeployBranch(a) => git::deploy_branch(&client()?, a),
        Command::Integrations(a) => git::integrations(&client()?, a),
        Command::GitHook(a) => git::git_hook(&config, a),
        Command::GitCredential { operation } => git::git_credential(&config, &operation),
        Command::Keys(a) => keys::keys(&client()?, a),
        Command::Daemon(_)
        | Command::Monitor(_)
        | Command::GitShell(_)
        | Command::Completions { .. }
        | Command::Man { .. } => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn app_flags_sit_on_the_parent_or_the_subcommand() {
        let cli = Cli::try_parse_from(["slipway", "env", "set", "-a", "shop", "A=1"]).unwrap();
        assert!(matches!(cli.command, Command::Env(_)));
        let cli = Cli::try_parse_from(["slipway", "run", "-a", "shop", "--", "ls", "-l"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.command, ["ls", "-l"]);
        assert!(Cli::try_parse_from(["slipway", "deployments", "show", "12"]).is_ok());
        assert!(
            Cli::try_parse_from(["slipway", "scale", "-a", "x", "web=2", "worker=1:L"]).is_ok()
        );
    }
}
