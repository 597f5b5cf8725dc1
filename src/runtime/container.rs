//! The container lifecycle over the state directory: create, start, state, kill, delete, run,
//! exec, pause, resume, update, ps, list.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};

use super::cgroups::Cgroup;
use super::error::{io_err, Result, RuntimeError};
use super::process::{self, ExecPlan, NamespacePlan};
use super::state::{self, ContainerState, StateRoot, Status};
use super::sync::{Channel, Msg};
use super::{console, hooks, init, seccomp, spec};

/// How the container's terminal (if `process.terminal`) reaches the caller.
pub enum Console {
    None,
    /// A unix socket the caller listens on; the pty master is sent there (runc's protocol).
    Socket(PathBuf),
    /// Keep the master here (for `run`/`exec` in the foreground) and proxy our stdio to it.
    Proxy,
}

impl Console {
    /// With a terminal: the socket the container's process sends its pty master over, and in
    /// proxy mode our end of it (where the master arrives).
    fn endpoints(&self, terminal: bool) -> Result<(Option<OwnedFd>, Option<UnixStream>)> {
        Ok(match (self, terminal) {
            (Console::Socket(p), true) => (Some(console::connect(p)?), None),
            (Console::Proxy, true) => {
                let (a, b) = UnixStream::pair().map_err(io_err("socketpair", "console"))?;
                (Some(OwnedFd::from(a)), Some(b))
            }
            _ => (None, None),
        })
    }
}

pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console: Console,
    pub preserve_fds: i32,
    pub no_pivot: bool,
}

/// Undo a half-made container when create fails: no process, cgroup or state dir survives.
struct CreateGuard<'a> {
    root: &'a StateRoot,
    id: String,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(pid, None, Duration::from_secs(5));
        }
        if let Some(cg) = &self.cgroup {
            kill_cgroup(cg, Signal::SIGKILL);
            let _ = cg.destroy();
        }
        let _ = self.root.remove(&self.id);
    }
}

/// Path to a socket in the state dir, short enough for sockaddr_un even when the state dir
/// path is long (containerd's are): go through a descriptor of the directory.
fn socket_path(dir_fd: &std::fs::File) -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/fd/{}/{}",
        dir_fd.as_raw_fd(),
        state::START_SOCKET
    ))
}

fn open_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::File::open(dir).map_err(io_err("open", dir))
}

/// The namespaces to create and join for a new container.
fn namespace_plan(spec: &Spec) -> Result<NamespacePlan> {
    let mut plan = NamespacePlan {
        join: Vec::new(),
        new_user: false,
        new_cgroup: false,
        new_other: CloneFlags::empty(),
    };
    for ns in spec::namespaces(spec) {
        let flag = CloneFlags::from_bits_truncate(ns.typ() as i32);
        match ns.path() {
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|e| {
                    RuntimeError::Invalid(format!(
                        "namespace path {} ({}): {e}",
                        p.display(),
                        ns.typ()
                    ))
                })?;
                plan.join.push((flag, OwnedFd::from(f)));
            }
            None => match ns.typ() {
                LinuxNamespaceType::User => plan.new_user = true,
                LinuxNamespaceType::Cgroup => plan.new_cgroup = true,
                _ => plan.new_other |= flag,
            },
        }
    }
    Ok(plan)
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("slipway-tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(io_err("write pid file", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("write pid file", path))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

fn compile_seccomp(spec: &Spec, root: &StateRoot) -> Result<Option<seccomp::Program>> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Ok(Some(seccomp::compile_cached(
            s,
            &root.root.join(".seccomp-cache"),
        )?)),
        None => Ok(None),
    }
}

/// Create a container: its init waits, fully set up, for `start`.
/// Returns the state and, in `Console::Proxy` mode, the pty master.
pub fn create(root: &StateRoot, o: &CreateOptions) -> Result<(ContainerState, Option<OwnedFd>)> {
    state::check_id(&o.id)?;
    process::check_preserved(o.preserve_fds)?;
    let bundle = o.bundle.canonicalize().map_err(|e| {
        RuntimeError::Invalid(format!(
            "bundle {}: {e}: pass --bundle DIR with a config.json",
            o.bundle.display()
        ))
    })?;
    let spec = spec::load(&bundle)?;
    spec::validate(&spec)?;
    let rootfs = spec::rootfs_path(&spec, &bundle)?;
    let pid_file = o.pid_file.as_deref().map(absolute);
    let process = spec.process().as_ref().expect("validated");
    let terminal = process.terminal().unwrap_or(false);
    if terminal && matches!(o.console, Console::None) {
        return Err(RuntimeError::Invalid(
            "process.terminal is true: pass --console-socket (or set terminal to false)".into(),
        ));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let cgroup = Cgroup::new(
        linux.cgroups_path().as_ref().and_then(|p| p.to_str()),
        &o.id,
    )?;
    let seccomp = compile_seccomp(&spec, root)?;
    let exec = ExecPlan::new(process, seccomp, o.preserve_fds)?;
    let ns = namespace_plan(&spec)?;
    let own_mount_ns = spec::has_namespace(&spec, LinuxNamespaceType::Mount);

    let dir = root.claim(&o.id)?;
    let mut guard = CreateGuard {
        root,
        id: o.id.clone(),
        cgroup: None,
        pid: None,
        armed: true,
    };
    cgroup.create()?;
    guard.cgroup = Some(cgroup.clone());
    if let Some(res) = spec::effective_resources(&spec) {
        cgroup.apply(&res)?;
    }

    let dir_fd = open_dir(&dir)?;
    let listener = UnixListener::bind(socket_path(&dir_fd))
        .map_err(io_err("bind start socket", dir.join(state::START_SOCKET)))?;
    // A host directory: it must not exist in the container's init (CVE-2024-21626).
    drop(dir_fd);
    let (console_fd, proxy_end) = o.console.endpoints(terminal)?;
    let annotations: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
    let created = state::now_rfc3339();
    let state_json = |pid: i32, status: &str| {
        serde_json::json!({
            "ociVersion": "1.2.0", "id": o.id, "status": status, "pid": pid,
            "bundle": bundle, "annotations": annotations,
        })
        .to_string()
    };

    let (parent_chan, child_chan) = Channel::pair().map_err(io_err("socketpair", "handshake"))?;
    let (stage1_pid, in_cgroup) = fork_stage1(&cgroup)?;
    if stage1_pid == 0 {
        drop(parent_chan);
        let ctx = init::InitContext {
            id: &o.id,
            spec: &spec,
            rootfs: &rootfs,
            bundle: &bundle,
            cgroup: &cgroup,
            exec: &exec,
            listener: &listener,
            console_socket: console_fd.as_ref(),
            no_pivot: o.no_pivot,
            state_template: &state_json,
        };
        let enter = || {
            if in_cgroup {
                return Ok(());
            }
            cgroup
                .add_pid(std::process::id() as i32)
                .map_err(RuntimeError::from)
        };
        process::stage1(&child_chan, &ns, &enter, &mut || {
            init::run(&ctx, &child_chan)
        });
    }
    drop(child_chan);
    drop(listener);
    drop(console_fd);
    let mut stage1_reaped = false;
    let result = (|| -> Result<i32> {
        let mut init_pid = None;
        loop {
            let msg = parent_chan
                .recv()
                .map_err(io_err("handshake", "container init"))?;
            match msg {
                Some(Msg::MapIds(pid)) => {
                    process::write_id_maps(
                        pid,
                        linux.uid_mappings().as_deref().unwrap_or(&[]),
                        linux.gid_mappings().as_deref().unwrap_or(&[]),
                    )?;
                    parent_chan
                        .send(&Msg::MapsDone)
                        .map_err(io_err("handshake", "container init"))?;
                }
                Some(Msg::InitPid(pid)) => {
                    init_pid = Some(pid);
                    guard.pid = Some(pid);
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1_pid), None);
                    stage1_reaped = true;
                }
                Some(Msg::RunCreateRuntimeHooks) => {
                    let pid = init_pid.unwrap_or(0);
                    #[allow(deprecated)]
                    if let Some(h) = spec.hooks() {
                        let s = state_json(pid, "created");
                        hooks::run(h.prestart().as_deref().unwrap_or(&[]), &s, "prestart")?;
                        hooks::run(
                            h.create_runtime().as_deref().unwrap_or(&[]),
                            &s,
                            "createRuntime",
                        )?;
                    }
                    parent_chan
                        .send(&Msg::HooksDone)
                        .map_err(io_err("handshake", "container init"))?;
                }
                Some(Msg::Ready) => {
                    return init_pid.ok_or_else(|| {
                        RuntimeError::Init("init ready before its pid was known".into())
                    })
                }
                Some(Msg::Error(e)) => return Err(RuntimeError::Reported(e)),
                Some(other) => {
                    return Err(RuntimeError::Init(format!("unexpected message {other:?}")))
                }
                None => {
                    return Err(RuntimeError::Init(
                        "the container init exited during setup".into(),
                    ))
                }
            }
        }
    })();
    if !stage1_reaped {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1_pid), None);
    }
    let pid = result?;
    let master = match proxy_end {
        Some(end) => Some(console::recv_fd(end.as_raw_fd())?),
        None => None,
    };
    let pid_start_time = state::proc_stat(pid).map(|s| s.1).unwrap_or(0);
    let st = ContainerState {
        id: o.id.clone(),
        pid,
        pid_start_time,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created,
        cgroup: cgroup.clone(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        own_mount_ns,
    };
    root.save_spec(&o.id, &spec)?;
    root.save(&st)?;
    if let Some(p) = pid_file {
        write_pid_file(&p, pid)?;
    }
    guard.armed = false;
    Ok((st, master))
}

/// Fork stage 1, directly into the container's cgroup where the kernel allows it (cgroup v2).
/// Returns (pid as fork returns it, whether the child is in the cgroup already).
fn fork_stage1(cgroup: &Cgroup) -> Result<(i32, bool)> {
    if let Some(pid) = cgroup.unified_dir().and_then(process::fork_into_cgroup) {
        return Ok((pid, true));
    }
    Ok((process::fork()?, false))
}

/// Let a created container run its program.
pub fn start(root: &StateRoot, id: &str) -> Result<()> {
    let st = load_in(
        root,
        id,
        Status::Created,
        "only a created container can be started",
    )?;
    let dir_fd = open_dir(&root.dir(id))?;
    let sock = socket_path(&dir_fd);
    let mut conn = UnixStream::connect(&sock)
        .map_err(io_err("connect", root.dir(id).join(state::START_SOCKET)))?;
    conn.write_all(b"s")
        .map_err(io_err("start", root.dir(id)))?;
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    let _ = std::fs::remove_file(root.dir(id).join(state::START_SOCKET));
    if !reply.is_empty() {
        return Err(RuntimeError::Reported(reply));
    }
    let spec = root.load_spec(id)?;
    if let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststart().clone()) {
        // A failing poststart hook is reported but does not stop the container (OCI).
        if let Err(e) = hooks::run(
            &h,
            &state::oci_state_json(&st, Status::Running),
            "poststart",
        ) {
            eprintln!("warning: {e}");
        }
    }
    Ok(())
}

pub fn state_json(root: &StateRoot, id: &str) -> Result<String> {
    let st = root.load(id)?;
    Ok(state::oci_state_json(&st, root.status(&st)))
}

/// Parse `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| RuntimeError::Invalid(format!("unknown signal number {n}")));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .map_err(|_| RuntimeError::Invalid(format!("unknown signal {s:?} (try TERM, KILL, 15)")))
}

fn kill_cgroup(cg: &Cgroup, sig: Signal) {
    let _ = cg.kill_all(sig);
}

pub fn kill(root: &StateRoot, id: &str, sig: Signal, all: bool) -> Result<()> {
    let st = root.load(id)?;
    let status = root.status(&st);
    if status == Status::Stopped {
        return Err(RuntimeError::WrongState {
            id: id.into(),
            status: status.to_string(),
            what: "nothing to signal".into(),
        });
    }
    if all {
        if status == Status::Paused && sig == Signal::SIGKILL {
            kill_cgroup(&st.cgroup, sig);
            st.cgroup.thaw()?;
        } else {
            kill_cgroup(&st.cgroup, sig);
        }
        return Ok(());
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), sig)
        .map_err(|e| RuntimeError::Sys(format!("kill {} {sig}", st.pid), e))
}

/// Wait until a process is gone (or a zombie nobody here can reap).
fn wait_gone(pid: i32, start_time: Option<u64>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_micros(100);
    loop {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        let alive = match start_time {
            Some(t) => state::process_alive(pid, t),
            None => state::proc_stat(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X'),
        };
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

pub fn delete(root: &StateRoot, id: &str, force: bool) -> Result<()> {
    state::check_id(id)?;
    let st = match root.load(id) {
        Ok(st) => st,
        Err(RuntimeError::NotFound(_)) if force => return Ok(()),
        Err(RuntimeError::NotFound(i)) => {
            // A directory without state is a create that died half-way: clear it.
            if root.dir(id).exists() {
                return root.remove(id);
            }
            return Err(RuntimeError::NotFound(i));
        }
        Err(e) => return Err(e),
    };
    let status = root.status(&st);
    match status {
        Status::Running | Status::Paused if !force => {
            return Err(RuntimeError::WrongState {
                id: id.into(),
                status: status.to_string(),
                what: "stop it first (kill) or delete with --force".into(),
            })
        }
        Status::Stopped => {}
        _ => {
            // Everything in the cgroup at once: a dying PID-namespace init waits for the
            // other members of its namespace, so killing only the init can stall.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(st.pid), Signal::SIGKILL);
            kill_cgroup(&st.cgroup, Signal::SIGKILL);
            if status == Status::Paused {
                let _ = st.cgroup.thaw();
            }
            wait_gone(st.pid, Some(st.pid_start_time), Duration::from_secs(10));
        }
    }
    // Whatever the init left behind in its cgroup dies with it.
    for _ in 0..100 {
        let pids = st.cgroup.pids().unwrap_or_default();
        if pids.is_empty() {
            break;
        }
        kill_cgroup(&st.cgroup, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(5));
    }
    st.cgroup.destroy()?;
    if let Ok(spec) = root.load_spec(id) {
        if let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststop().clone()) {
            if let Err(e) = hooks::run(&h, &state::oci_state_json(&st, Status::Stopped), "poststop")
            {
                eprintln!("warning: {e}");
            }
        }
    }
    root.remove(id)
}

/// Load a container that must be in `want`; `why` explains the refusal otherwise.
fn load_in(root: &StateRoot, id: &str, want: Status, why: &str) -> Result<ContainerState> {
    let st = root.load(id)?;
    let status = root.status(&st);
    if status != want {
        return Err(RuntimeError::WrongState {
            id: id.into(),
            status: status.to_string(),
            what: why.into(),
        });
    }
    Ok(st)
}

pub fn pause(root: &StateRoot, id: &str) -> Result<()> {
    let st = load_in(
        root,
        id,
        Status::Running,
        "only a running container can be paused",
    )?;
    Ok(st.cgroup.freeze()?)
}

pub fn resume(root: &StateRoot, id: &str) -> Result<()> {
    let st = load_in(
        root,
        id,
        Status::Paused,
        "only a paused container can be resumed",
    )?;
    Ok(st.cgroup.thaw()?)
}

pub fn update(root: &StateRoot, id: &str, res: &LinuxResources) -> Result<()> {
    let st = root.load(id)?;
    if root.status(&st) == Status::Stopped {
        return Err(RuntimeError::WrongState {
            id: id.into(),
            status: "stopped".into(),
            what: "cannot update its resources".into(),
        });
    }
    Ok(st.cgroup.apply(res)?)
}

pub fn pids(root: &StateRoot, id: &str) -> Result<Vec<i32>> {
    let st = root.load(id)?;
    Ok(st.cgroup.pids()?)
}

pub struct ListEntry {
    pub state: ContainerState,
    pub status: Status,
}

pub fn list(root: &StateRoot) -> Vec<ListEntry> {
    root.ids()
        .into_iter()
        .filter_map(|id| root.load(&id).ok())
        .map(|st| {
            let status = root.status(&st);
            ListEntry { state: st, status }
        })
        .collect()
}

/// Signals a foreground `run`/`exec` passes on to the container's process.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGWINCH,
    libc::SIGALRM,
];

/// Block forwarded signals and SIGCHLD so `wait_forwarding` can take them synchronously.
/// Called before forking; the container's processes reset the mask before exec.
pub fn block_signals() {
    // SAFETY: building and installing a signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Become the reaper of the container's processes, so that `run` and `exec` can wait for them.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| RuntimeError::Sys("PR_SET_CHILD_SUBREAPER".into(), e))
}

/// Wait for `pid` to exit, forwarding signals to it; returns its exit code (128+N for a
/// signal death, as shells do). Reaps any other orphan that lands on us meanwhile.
pub fn wait_forwarding(pid: i32, on_winch: &dyn Fn()) -> i32 {
    // SAFETY: signal-set manipulation and sigwaitinfo on our own blocked set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, *s);
        }
        loop {
            // Reap first: the child may have exited before we started waiting.
            loop {
                let mut status = 0;
                let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if r <= 0 {
                    break;
                }
                if r == pid {
                    if libc::WIFEXITED(status) {
                        return libc::WEXITSTATUS(status);
                    }
                    if libc::WIFSIGNALED(status) {
                        return 128 + libc::WTERMSIG(status);
                    }
                }
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig < 0 || sig == libc::SIGCHLD {
                continue;
            }
            if sig == libc::SIGWINCH {
                on_winch();
                continue;
            }
            libc::kill(pid, sig);
        }
    }
}

/// Options of `exec`.
pub struct ExecOptions {
    pub process: Process,
    pub pid_file: Option<PathBuf>,
    pub console: Console,
    pub detach: bool,
    pub preserve_fds: i32,
}

fn same_namespace(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Start a new process inside a running container: its namespaces, cgroup, and the
/// container's seccomp profile. Returns (host pid, pty master in proxy mode).
pub fn exec(root: &StateRoot, id: &str, o: &ExecOptions) -> Result<(i32, Option<OwnedFd>)> {
    let st = root.load(id)?;
    let status = root.status(&st);
    if !matches!(status, Status::Running | Status::Created) {
        return Err(RuntimeError::WrongState {
            id: id.into(),
            status: status.to_string(),
            what: "cannot exec into it".into(),
        });
    }
    let spec = root.load_spec(id)?;
    if o.process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(RuntimeError::Invalid("exec needs a command".into()));
    }
    let terminal = o.process.terminal().unwrap_or(false);
    if terminal && matches!(o.console, Console::None) {
        return Err(RuntimeError::Invalid(
            "a terminal was requested: pass --console-socket".into(),
        ));
    }
    process::check_preserved(o.preserve_fds)?;
    let seccomp = compile_seccomp(&spec, root)?;
    let plan = ExecPlan::new(&o.process, seccomp, o.preserve_fds)?;
    let mut ns = NamespacePlan {
        join: Vec::new(),
        new_user: false,
        new_cgroup: false,
        new_other: CloneFlags::empty(),
    };
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let theirs = PathBuf::from(format!("/proc/{}/ns/{name}", st.pid));
        if !same_namespace(&theirs, Path::new(&format!("/proc/self/ns/{name}"))) {
            let f = std::fs::File::open(&theirs).map_err(io_err("open namespace", &theirs))?;
            ns.join.push((flag, OwnedFd::from(f)));
        }
    }
    let (console_fd, proxy_end) = o.console.endpoints(terminal)?;
    let pid_file = o.pid_file.as_deref().map(absolute);
    let init_root = PathBuf::from(format!("/proc/{}/root", st.pid));
    let (parent_chan, child_chan) = Channel::pair().map_err(io_err("socketpair", "handshake"))?;
    let (stage1_pid, in_cgroup) = fork_stage1(&st.cgroup)?;
    if stage1_pid == 0 {
        drop(parent_chan);
        let enter = || {
            if !in_cgroup {
                st.cgroup.add_pid(std::process::id() as i32)?;
            }
            // Still in the host's namespaces: /proc/self is ours, not the container's.
            plan.apply_rlimits()
        };
        let mut stage2 = || -> Result<std::convert::Infallible> {
            let mut keep = vec![child_chan.raw()];
            keep.extend(console_fd.as_ref().map(|c| c.as_raw_fd()));
            process::close_fds_except(3 + o.preserve_fds, &keep);
            if !st.own_mount_ns {
                super::rootfs::chroot(&init_root)?;
            }
            if let Some(sock) = &console_fd {
                nix::unistd::setsid().map_err(|e| RuntimeError::Init(format!("setsid: {e}")))?;
                let (master, slave, _) = console::open_pty()?;
                console::hand_over(sock.as_raw_fd(), master, &slave, o.process.console_size())?;
            }
            process::finalize(&plan)
        };
        process::stage1(&child_chan, &ns, &enter, &mut stage2);
    }
    drop(child_chan);
    drop(console_fd);
    let mut pid = None;
    let mut failure = None;
    loop {
        match parent_chan.recv() {
            Ok(Some(Msg::InitPid(p))) => {
                pid = Some(p);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1_pid), None);
            }
            Ok(Some(Msg::Error(e))) => failure = Some(e),
            Ok(Some(other)) => failure = Some(format!("unexpected message {other:?}")),
            Ok(None) => break,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    if pid.is_none() {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1_pid), None);
    }
    if let Some(e) = failure {
        if let Some(p) = pid {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p), None);
        }
        return Err(RuntimeError::Init(e));
    }
    let pid =
        pid.ok_or_else(|| RuntimeError::Init("exec: the process exited before reporting".into()))?;
    if let Some(p) = pid_file {
        write_pid_file(&p, pid)?;
    }
    let master = match proxy_end {
        Some(end) => Some(console::recv_fd(end.as_raw_fd())?),
        None => None,
    };
    Ok((pid, master))
}
