//! `slipway-runtime`: slipway's OCI runtime behind a runc-compatible command line, so that
//! podman (`--runtime`), containerd (`ctr run --runc-binary`) and slipway itself can drive it.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use oci_spec::runtime::{LinuxResources, Process};
use slipway::runtime::container::{self, Console, CreateOptions, ExecOptions};
use slipway::runtime::state::{self, StateRoot};
use slipway::runtime::{self_exe, spec, RuntimeError};

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
enum ListFormat {
    Table,
    Json,
}

#[derive(clap::Args)]
struct CreateArgs {
    /// Bundle directory (holding config.json).
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    /// Write the container init's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket to receive the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Use chroot instead of pivot_root (for ramfs roots).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for compatibility: no session keyring is created.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass this many extra descriptors (from 3 on) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
    id: String,
}

#[derive(Subcommand)]
enum Command {
    /// Write a default config.json into the bundle directory.
    Spec {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
    },
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
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
        create: CreateArgs,
        /// Return once started, leaving the container running.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a new process inside a running container.
    Exec(ExecArgs),
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
    Update(UpdateArgs),
    /// Print what this runtime supports, as OCI features JSON.
    Features,
}

#[derive(clap::Args)]
struct ExecArgs {
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Extra environment variables (KEY=VALUE).
    #[arg(long, short = 'e')]
    env: Vec<String>,
    /// Allocate a pseudo-terminal.
    #[arg(long, short = 't')]
    tty: bool,
    /// UID[:GID] to run as.
    #[arg(long, short = 'u')]
    user: Option<String>,
    #[arg(long = "additional-gids", short = 'g')]
    additional_gids: Vec<u32>,
    /// A process.json holding the whole OCI process (then no command is given).
    #[arg(long, short = 'p')]
    process: Option<PathBuf>,
    #[arg(long, short = 'd')]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Add a capability (CAP_NAME) to the process.
    #[arg(long = "cap", short = 'c')]
    caps: Vec<String>,
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
    /// Accepted for compatibility (SELinux and AppArmor are not supported).
    #[arg(long = "process-label")]
    process_label: Option<String>,
    #[arg(long)]
    apparmor: Option<String>,
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct UpdateArgs {
    /// A JSON file with OCI linux.resources ("-" for stdin).
    #[arg(long, short = 'r')]
    resources: Option<PathBuf>,
    #[arg(long)]
    memory: Option<i64>,
    #[arg(long = "memory-swap")]
    memory_swap: Option<i64>,
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<i64>,
    #[arg(long = "cpu-shares")]
    cpu_shares: Option<u64>,
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    id: String,
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

fn create_options(a: &CreateArgs, console: Console) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console,
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
    }
}

fn dispatch(cli: &Cli, root: &StateRoot) -> R<u8> {
    match &cli.command {
        Command::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(RuntimeError::Invalid(format!(
                    "{} exists already: remove it first",
                    path.display()
                )));
            }
            let rootless = cli.rootless.as_deref() == Some("true");
            let s = spec::default_spec(rootless);
            let text = serde_json::to_string_pretty(&s).expect("spec serializes");
            std::fs::write(&path, text + "\n")
                .map_err(|e| RuntimeError::Invalid(format!("write {}: {e}", path.display())))?;
            Ok(0)
        }
        Command::Create(a) => {
            let console = a
                .console_socket
                .clone()
                .map_or(Console::None, Console::Socket);
            container::create(root, &create_options(a, console))?;
            Ok(0)
        }
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
        } => run(root, create, *detach, *keep),
        Command::Exec(a) => exec(root, a),
        Command::Ps { format, id, .. } => {
            let pids = container::pids(root, id)?;
            match format {
                ListFormat::Json => println!("{}", serde_json::to_string(&pids).expect("json")),
                ListFormat::Table => {
                    println!("{:>8} {:>8}  CMD", "PID", "PPID");
                    for pid in pids {
                        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                            .map(|b| {
                                String::from_utf8_lossy(&b)
                                    .replace('\0', " ")
                                    .trim()
                                    .to_string()
                            })
                            .unwrap_or_default();
                        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .ok()
                            .and_then(|s| {
                                s.rsplit(')')
                                    .next()?
                                    .split_whitespace()
                                    .nth(1)
                                    .map(String::from)
                            })
                            .unwrap_or_default();
                        println!("{pid:>8} {ppid:>8}  {cmd}");
                    }
                }
            }
            Ok(0)
        }
        Command::List { format, quiet } => {
            let entries = container::list(root);
            if *quiet {
                for e in &entries {
                    println!("{}", e.state.id);
                }
            } else if *format == ListFormat::Json {
                let v: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "ociVersion": "1.2.0", "id": e.state.id,
                            "pid": if e.status == state::Status::Stopped { 0 } else { e.state.pid },
                            "status": e.status.to_string(), "bundle": e.state.bundle,
                            "rootfs": e.state.rootfs, "created": e.state.created, "owner": "root",
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string(&v).expect("json"));
            } else {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                    "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                );
                for e in &entries {
                    let pid = if e.status == state::Status::Stopped {
                        0
                    } else {
                        e.state.pid
                    };
                    println!(
                        "{:<20} {:<8} {:<10} {:<40} {:<32} root",
                        e.state.id,
                        pid,
                        e.status,
                        e.state.bundle.display(),
                        e.state.created
                    );
                }
            }
            Ok(0)
        }
        Command::Pause { id } => container::pause(root, id).map(|_| 0),
        Command::Resume { id } => container::resume(root, id).map(|_| 0),
        Command::Update(a) => {
            let res = update_resources(a)?;
            container::update(root, &a.id, &res).map(|_| 0)
        }
        Command::Features => {
            println!("{}", features());
            Ok(0)
        }
    }
}

fn run(root: &StateRoot, a: &CreateArgs, detach: bool, keep: bool) -> R<u8> {
    if !detach {
        container::become_subreaper()?;
        container::block_signals();
    }
    let console = match &a.console_socket {
        Some(p) => Console::Socket(p.clone()),
        None if !detach => Console::Proxy,
        None => Console::None,
    };
    let (st, master) = container::create(root, &create_options(a, console))?;
    // Size the pty before the program runs, so its first look at the window is right.
    if let Some(m) = &master {
        slipway::runtime::console::copy_window_size(m);
    }
    if let Err(e) = container::start(root, &a.id) {
        let _ = container::delete(root, &a.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let _raw = master.as_ref().map(slipway::runtime::console::proxy);
    let winch = || {
        if let Some(m) = &master {
            slipway::runtime::console::copy_window_size(m);
        }
    };
    let code = container::wait_forwarding(st.pid, &winch);
    drop(_raw);
    if !keep {
        container::delete(root, &a.id, true)?;
    }
    Ok(code.clamp(0, 255) as u8)
}

fn exec(root: &StateRoot, a: &ExecArgs) -> R<u8> {
    let process = match &a.process {
        Some(path) => {
            let text = if path == Path::new("-") {
                std::io::read_to_string(std::io::stdin()).unwrap_or_default()
            } else {
                std::fs::read_to_string(path).map_err(|e| {
                    RuntimeError::Invalid(format!("--process {}: {e}", path.display()))
                })?
            };
            serde_json::from_str::<Process>(&text).map_err(|e| {
                RuntimeError::Invalid(format!(
                    "--process {}: not an OCI process: {e}",
                    path.display()
                ))
            })?
        }
        None => {
            if a.command.is_empty() {
                return Err(RuntimeError::Invalid(
                    "exec needs a command (or --process FILE)".into(),
                ));
            }
            let saved = root
                .load_spec(&a.id)
                .map_err(|_| RuntimeError::NotFound(a.id.clone()))?;
            let mut p = saved.process().clone().unwrap_or_default();
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(a.tty));
            // The exec'd program starts before we could resize its pty: size it at birth.
            if a.tty {
                if let Some((rows, cols)) = slipway::runtime::console::our_window_size() {
                    let size =
                        serde_json::from_value(serde_json::json!({"height": rows, "width": cols}))
                            .expect("a console size");
                    p.set_console_size(Some(size));
                }
            }
            let mut env = p.env().clone().unwrap_or_default();
            for kv in &a.env {
                let key = kv.split('=').next().unwrap_or("");
                env.retain(|e| e.split('=').next() != Some(key));
                env.push(kv.clone());
            }
            p.set_env(Some(env));
            if let Some(cwd) = &a.cwd {
                p.set_cwd(cwd.clone());
            }
            if let Some(u) = &a.user {
                let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
                let parse = |s: &str| {
                    s.parse::<u32>().map_err(|_| {
                        RuntimeError::Invalid(format!("--user {u}: use numeric UID[:GID]"))
                    })
                };
                p.user_mut().set_uid(parse(uid)?);
                p.user_mut().set_gid(parse(gid)?);
            }
            if !a.additional_gids.is_empty() {
                p.user_mut()
                    .set_additional_gids(Some(a.additional_gids.clone()));
            }
            if a.no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            if !a.caps.is_empty() {
                let mut caps = p.capabilities().clone().unwrap_or_default();
                for name in &a.caps {
                    let c: oci_spec::runtime::Capability = serde_json::from_value(
                        serde_json::Value::String(name.clone()),
                    )
                    .map_err(|_| RuntimeError::Invalid(format!("unknown capability {name}")))?;
                    for set in [
                        caps.bounding().clone(),
                        caps.effective().clone(),
                        caps.permitted().clone(),
                    ] {
                        let _ = set;
                    }
                    let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                        let mut s = s.clone().unwrap_or_default();
                        s.insert(c);
                        Some(s)
                    };
                    let (b, e, pm) = (
                        add(caps.bounding()),
                        add(caps.effective()),
                        add(caps.permitted()),
                    );
                    caps.set_bounding(b);
                    caps.set_effective(e);
                    caps.set_permitted(pm);
                }
                p.set_capabilities(Some(caps));
            }
            p
        }
    };
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
    let _raw = master.as_ref().map(slipway::runtime::console::proxy);
    let winch = || {
        if let Some(m) = &master {
            slipway::runtime::console::copy_window_size(m);
        }
    };
    let code = container::wait_forwarding(pid, &winch);
    Ok(code.clamp(0, 255) as u8)
}

fn update_resources(a: &UpdateArgs) -> R<LinuxResources> {
    if let Some(path) = &a.resources {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).unwrap_or_default()
        } else {
            std::fs::read_to_string(path).map_err(|e| {
                RuntimeError::Invalid(format!("--resources {}: {e}", path.display()))
            })?
        };
        return serde_json::from_str(&text).map_err(|e| {
            RuntimeError::Invalid(format!(
                "--resources {}: not OCI linux.resources: {e}",
                path.display()
            ))
        });
    }
    let mut v = serde_json::json!({});
    let mut mem = serde_json::Map::new();
    if let Some(x) = a.memory {
        mem.insert("limit".into(), x.into());
    }
    if let Some(x) = a.memory_swap {
        mem.insert("swap".into(), x.into());
    }
    if let Some(x) = a.memory_reservation {
        mem.insert("reservation".into(), x.into());
    }
    if !mem.is_empty() {
        v["memory"] = mem.into();
    }
    let mut cpu = serde_json::Map::new();
    if let Some(x) = a.cpu_shares {
        cpu.insert("shares".into(), x.into());
    }
    if let Some(x) = a.cpu_quota {
        cpu.insert("quota".into(), x.into());
    }
    if let Some(x) = a.cpu_period {
        cpu.insert("period".into(), x.into());
    }
    if let Some(x) = &a.cpuset_cpus {
        cpu.insert("cpus".into(), x.clone().into());
    }
    if let Some(x) = &a.cpuset_mems {
        cpu.insert("mems".into(), x.clone().into());
    }
    if !cpu.is_empty() {
        v["cpu"] = cpu.into();
    }
    if let Some(x) = a.pids_limit {
        v["pids"] = serde_json::json!({"limit": x});
    }
    if let Some(x) = a.blkio_weight {
        v["blockIO"] = serde_json::json!({"weight": x});
    }
    serde_json::from_value(v).map_err(|e| RuntimeError::Invalid(format!("update: {e}")))
}

fn features() -> String {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid",
            "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "runbindable",
            "rw", "shared", "slave", "strictatime", "suid", "sync", "tmpcopyup", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {"org.opencontainers.runtime-spec.features.runtime": "slipway-runtime"}
    }))
    .expect("json")
}
