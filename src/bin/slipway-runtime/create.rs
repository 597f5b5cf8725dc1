//! `create` and `run`.
use slipway::runtime::console;
use slipway::runtime::container::{self, Console, CreateOptions};
use slipway::runtime::state::StateRoot;
use std::path::PathBuf;

use crate::R;

#[derive(clap::Args)]
pub struct CreateArgs {
    /// Bundle directory (holding config.json).
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container init's pid here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to receive the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Use chroot instead of pivot_root (for ramfs roots).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for compatibility: no session keyring is created.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many extra descriptors (from 3 on) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    pub id: String,
}

fn options(a: &CreateArgs, console: Console) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console,
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
    }
}

pub fn create(root: &StateRoot, a: &CreateArgs) -> R<u8> {
    let console = a
        .console_socket
        .clone()
        .map_or(Console::None, Console::Socket);
    container::create(root, &options(a, console))?;
    Ok(0)
}

pub fn run(root: &StateRoot, a: &CreateArgs, detach: bool, keep: bool) -> R<u8> {
    if !detach {
        container::become_subreaper()?;
        container::block_signals();
    }
    let console = match &a.console_socket {
        Some(p) => Console::Socket(p.clone()),
        None if !detach => Console::Proxy,
        None => Console::None,
    };
    let (st, master) = container::create(root, &options(a, console))?;
    // Size the pty before the program runs, so its first look at the window is right.
    if let Some(m) = &master {
        console::copy_window_size(m);
    }
    if let Err(e) = container::start(root, &a.id) {
        let _ = container::delete(root, &a.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let _raw = master.as_ref().map(console::proxy);
    let winch = || {
        if let Some(m) = &master {
            console::copy_window_size(m);
        }
    };
    let code = container::wait_forwarding(st.pid, &winch);
    drop(_raw);
    // A kill by the memory limit looks like any SIGKILL (137): say what it was, while the
    // cgroup's counters still exist.
    if st.cgroup.oom_kills().unwrap_or(0) > 0 {
        let limit = root
            .load_spec(&a.id)
            .ok()
            .and_then(|s| (*s.linux().clone()?.resources().clone()?.memory())?.limit())
            .map(|l| format!(" (limit {} MiB)", l >> 20))
            .unwrap_or_default();
        eprintln!(
            "slipway-runtime: container {}: out of memory{limit}: the kernel killed a process",
            a.id
        );
    }
    if !keep {
        container::delete(root, &a.id, true)?;
    }
    Ok(code.clamp(0, 255) as u8)
}
