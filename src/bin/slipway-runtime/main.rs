//! `slipway-runtime`: slipway's OCI runtime behind a runc-compatible command line, so that
//! podman (`--runtime`), containerd (`ctr run --runc-binary`) and slipway itself can drive it.
mod create;
mod exec;
mod list;
mod spec_cmd;
mod update;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use slipway::runtime::container;
use slipway::runtime::state::{self, StateRoot};
use slipway::runtime::{self_exe, RuntimeError};

#[derive(Parser)]
#[command(
    name = "slipway-runtime",
    version,
    about = "slipway's OCI container runtime (runc-compatible command line)"
)]
struct Cli {
    /// Directory for container state (tmpfs recommended).
    #[arg(long, global = true, env = "SLIPWAY_RUNTIME_ROOT", default_value = state::DEFAULT_ROOT)]
    root: PathBuf,
    /// Append errors and debug messages to this file instead of only stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility; systemd-style cgroupsPath values are refused with a message.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (checkpointing is not supported).
    #[arg(long, global = true)]
    criu: Option<String>,
    /// Accepted for compatibility: rootless mode is decided by the spec's user namespace.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Write a default config.json into the bundle directory.
    Spec {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
    },
    /// Create a container; its process waits for `start`.
    Create(create::CreateArgs),
    /// Run the program of a created container.
    Start { id: String },
    /// Print the OCI state of a container as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init, or to all its processes.
    Kill {
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Remove a stopped container (or any, with --force).
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// Create, start and wait for a container; its exit status becomes ours.
    Run {
        #[command(flatten)]
        create: create::CreateArgs,
        /// Return once started, leaving the container running.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a new process inside a running container.
    Exec(exec::ExecArgs),
    /// List the processes of a container.
    Ps {
        #[arg(long, short = 'f', value_enum, default_value = "table")]
        format: ListFormat,
        id: String,
        /// Accepted for compatibility with `runc ps ID -- ps options` (ignored).
        #[arg(trailing_var_arg = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        #[arg(long, short = 'f', value_enum, default_value = "table")]
        format: ListFormat,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a running container's resource limits.
    Update(update::UpdateArgs),
    /// Print what this runtime supports, as OCI features JSON.
    Features,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that fork into a container run from a copy of this binary that the container
    // cannot write (see runtime::self_exe); the others never meet a container process.
    if matches!(
        cli.command,
        Command::Create(_) | Command::Run { .. } | Command::Exec(_)
    ) {
        if let Err(e) = self_exe::ensure_protected() {
            log_error(&cli, &e.to_string());
            return ExitCode::from(1);
        }
    }
    let root = StateRoot::new(&cli.root);
    match dispatch(&cli, &root) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log_error(&cli, &e.to_string());
            ExitCode::from(1)
        }
    }
}

fn log_error(cli: &Cli, msg: &str) {
    eprintln!("slipway-runtime: {msg}");
    if let Some(path) = &cli.log {
        let line = match cli.log_format {
            LogFormat::Json => format!(
                "{}\n",
                serde_json::json!({"level": "error", "msg": msg, "time": state::now_rfc3339()})
            ),
            LogFormat::Text => format!("{} error: {msg}\n", state::now_rfc3339()),
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

type R<T> = Result<T, RuntimeError>;

fn dispatch(cli: &Cli, root: &StateRoot) -> R<u8> {
    match &cli.command {
        Command::Spec { bundle } => spec_cmd::spec(bundle, cli.rootless.as_deref() == Some("true")),
        Command::Create(a) => create::create(root, a),
        Command::Start { id } => container::start(root, id).map(|_| 0),
        Command::State { id } => {
            println!("{}", container::state_json(root, id)?);
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let sig = container::parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            container::kill(root, id, sig, *all).map(|_| 0)
        }
        Command::Delete { force, id } => container::delete(root, id, *force).map(|_| 0),
        Command::Run {
            create,
            detach,
            keep,
        } => create::run(root, create, *detach, *keep),
        Command::Exec(a) => exec::exec(root, a),
        Command::Ps { format, id, .. } => list::ps(root, id, *format),
        Command::List { format, quiet } => list::list(root, *format, *quiet),
        Command::Pause { id } => container::pause(root, id).map(|_| 0),
        Command::Resume { id } => container::resume(root, id).map(|_| 0),
        Command::Update(a) => update::update(root, a),
        Command::Features => {
            let f = slipway::runtime::features::features();
            println!(
                "{}",
                serde_json::to_string_pretty(&f).expect("features serialize")
            );
            Ok(0)
        }
    }
}
