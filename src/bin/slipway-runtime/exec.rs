//! `exec`: flags become an `ExecRequest` on top of the container's saved process.
use std::path::{Path, PathBuf};

use oci_spec::runtime::Process;
use slipway::runtime::console;
use slipway::runtime::container::{self, Console, ExecOptions};
use slipway::runtime::exec_process::{self, ExecRequest};
use slipway::runtime::state::StateRoot;
use slipway::runtime::RuntimeError;

use crate::R;

#[derive(clap::Args)]
pub struct ExecArgs {
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (KEY=VALUE).
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Allocate a pseudo-terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// UID[:GID] to run as.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    #[arg(long = "additional-gids", short = 'g')]
    pub additional_gids: Vec<u32>,
    /// A process.json holding the whole OCI process (then no command is given).
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Add a capability (CAP_NAME) to the process.
    #[arg(long = "cap", short = 'c')]
    pub caps: Vec<String>,
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Accepted for compatibility (SELinux and AppArmor are not supported).
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The process to run: a whole `--process` file, or the container's own process changed by
/// the flags.
fn process(root: &StateRoot, a: &ExecArgs) -> R<Process> {
    if let Some(path) = &a.process {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).unwrap_or_default()
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| RuntimeError::Invalid(format!("--process {}: {e}", path.display())))?
        };
        return serde_json::from_str::<Process>(&text).map_err(|e| {
            RuntimeError::Invalid(format!(
                "--process {}: not an OCI process: {e}",
                path.display()
            ))
        });
    }
    let saved = root
        .load_spec(&a.id)
        .map_err(|_| RuntimeError::NotFound(a.id.clone()))?;
    let req = ExecRequest {
        args: a.command.clone(),
        terminal: a.tty,
        console_size: if a.tty {
            console::our_window_size()
        } else {
            None
        },
        env: a.env.clone(),
        cwd: a.cwd.clone(),
        user: a.user.clone(),
        additional_gids: a.additional_gids.clone(),
        no_new_privs: a.no_new_privs,
        add_caps: a.caps.clone(),
    };
    exec_process::process_for(&saved.process().clone().unwrap_or_default(), &req)
}

pub fn exec(root: &StateRoot, a: &ExecArgs) -> R<u8> {
    let process = process(root, a)?;
    let terminal = process.terminal().unwrap_or(false);
    let console = match &a.console_socket {
        Some(p) => Console::Socket(p.clone()),
        None if terminal && !a.detach => Console::Proxy,
        None => Console::None,
    };
    if !a.detach {
        container::become_subreaper()?;
        container::block_signals();
    }
    let opts = ExecOptions {
        process,
        pid_file: a.pid_file.clone(),
        console,
        detach: a.detach,
        preserve_fds: a.preserve_fds,
    };
    let (pid, master) = container::exec(root, &a.id, &opts)?;
    if a.detach {
        return Ok(0);
    }
    let _raw = master.as_ref().map(console::proxy);
    let winch = || {
        if let Some(m) = &master {
            console::copy_window_size(m);
        }
    };
    let code = container::wait_forwarding(pid, &winch);
    Ok(code.clamp(0, 255) as u8)
}
