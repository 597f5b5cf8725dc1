//! The monitor: one small, single-threaded process per container (`slipway monitor SPEC`),
//! what conmon is to podman.
//!
//! It holds the container's life from preparation to cleanup, and outlives the daemon that
//! started it (its own session, reparented to init), so that a restarted daemon re-adopts the
//! container instead of starting a second one:
//!
//! 1. blocks its signals (a signalfd takes them), reads and removes its spec file;
//! 2. `Daemon` mode: forks; the parent writes the first state file with the child's pid and
//!    prints that pid for the supervisor, then exits; the child starts a session of its own;
//! 3. enters a private mount namespace (the overlay root exists only there and dies with the
//!    monitor), prepares the sandbox (overlay of slug and run stack, network namespace on the
//!    app bridge, limits by size), isolates the bridge's ports from one another;
//! 4. creates the container through `slipway-runtime create` (the runtime's minimal init as
//!    PID 1) and starts it; the monitor is a subreaper, so the init, whose parent exits, is
//!    its child and no runtime process stays beside the container. Its output goes to the app
//!    log (`DATA_DIR/logs/APP/NAME.log`, lines `app[web.1]: …`) or to the caller's stdio;
//! 5. records the container's state as it changes (starting, running, up once a web
//!    container accepts TCP on its port, stopping, exited with its status and whether the
//!    kernel's OOM killer struck: the memory cgroup's `oom_kill` counter, read before the
//!    cgroup goes);
//! 6. on SIGTERM, stops the container: SIGTERM to the init, which passes it to the app's
//!    process group; SIGKILL to the init (and so to everything in its pid namespace) after the
//!    grace period;
//! 7. when the container has ended, records how, cleans up (runtime state, network, overlay,
//!    workspace) and exits: with the container's status in the attached modes.
//!
//! Invariants: the monitor never starts a thread of its own before it has entered its mount
//! namespace (the network layer's namespace creation uses a short-lived one); it gives the
//! memory its setup freed back (`malloc_trim`) before it settles to wait; it is the only
//! writer of its state file. Its container's log file (`web-1.log`) is shared only with the
//! instance of the same name that replaces it, during the overlap of a rolling restart or a
//! rollout; both append whole lines.
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};

use super::app_spec::{self, AppProcess};
use super::state::{rfc3339, take_spec, Exit, Mode, MonitorSpec, MonitorState, Phase};
use crate::applog::{LogWriter, Timestamp, DEFAULT_MAX_BYTES};
use crate::config::NetworkSettings;
use crate::sandbox::{mounts, Place, Sandbox, Workspace};

/// Exit status of a monitor whose container could not be started.
pub const SETUP_FAILED: i32 = 125;

/// Longest line written to the log as one; longer output is cut into pieces.
const MAX_LINE: usize = 16 * 1024;

/// How long the output is still read after the container's end (its pipe may be held by a
/// process that escaped nothing but is slow to die).
const DRAIN: Duration = Duration::from_secs(2);

const PROBE_EVERY: Duration = Duration::from_millis(50);

/// How much output is read at once.
const READ_BUF: usize = 16 * 1024;

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// The name of a container's log file (`web-1`) and process label (`web.1`): lower case,
/// as log source names are.
pub fn log_names(name: &str) -> (String, String) {
    let source: String = name
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            '_' => '-',
            c => c,
        })
        .collect();
    let label = match source.rsplit_once('-') {
        Some((kind, n)) if n.bytes().all(|b| b.is_ascii_digit()) => format!("{kind}.{n}"),
        _ => source.clone(),
    };
    (source, label)
}

/// `slipway monitor SPEC`: returns the process's exit status.
pub fn main(spec_path: &Path) -> i32 {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals()), None);
    let spec = match take_spec(spec_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("slipway monitor: {e}; the supervisor writes this file, do not run the monitor by hand");
            return SETUP_FAILED;
        }
    };
    if spec.mode == Mode::Daemon {
        if let Some(code) = daemonize(&spec) {
            return code;
        }
    }
    let me = std::process::id() as i32;
    let mut m = Monitor {
        state: MonitorState::initial(&spec, me),
        spec,
        log: None,
        partial: Vec::new(),
        oom: false,
        last_runtime_lines: Vec::new(),
        buf: vec![0; READ_BUF],
    };
    if m.spec.mode != Mode::Daemon {
        m.save();
    }
    m.run()
}

/// Fork into the background. In the parent: the first state file, the child's pid on stdout,
/// then Some(exit status). In the child: a session of its own, stdio on /dev/null, None.
fn daemonize(spec: &MonitorSpec) -> Option<i32> {
    let (ready_read, ready_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("slipway monitor: pipe: {e}");
            return Some(SETUP_FAILED);
        }
    };
    // SAFETY: the monitor is single-threaded here; the child goes on running Rust code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("slipway monitor: fork: {e}");
            Some(SETUP_FAILED)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(ready_read);
            // The first state exists before anyone learns the pid: a supervisor that starts
            // now finds the monitor in the state directory.
            let state = MonitorState::initial(spec, child.as_raw());
            if let Err(e) = state.write(&spec.state_file) {
                eprintln!("slipway monitor: {e}");
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                return Some(SETUP_FAILED);
            }
            drop(ready_write);
            println!("{} {}", child.as_raw(), state.monitor_start_time);
            Some(0)
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ready_write);
            // Wait for the parent's state file: ours must never be overwritten by it.
            let mut buf = [0u8; 1];
            let _ = std::fs::File::from(ready_read).read(&mut buf);
            let _ = nix::unistd::setsid();
            // Nothing of the daemon's working directory stays pinned.
            let _ = std::env::set_current_dir("/");
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            None
        }
    }
}

struct Monitor {
    spec: MonitorSpec,
    state: MonitorState,
    log: Option<LogWriter>,
    partial: Vec<u8>,
    oom: bool,
    last_runtime_lines: Vec<String>,
    /// The output read buffer.
    buf: Vec<u8>,
}

/// The container while it runs.
struct Running {
    /// The container's init, our child.
    init: Option<nix::unistd::Pid>,
    output: Option<OwnedFd>,
    console: Option<UnixListener>,
}

impl Monitor {
    fn save(&mut self) {
        if let Err(e) = self.state.write(&self.spec.state_file) {
            self.say(&format!("slipway monitor: {e}"));
        }
    }

    /// A message of the monitor's own: to the log (Daemon) or the caller's stderr.
    fn say(&mut self, msg: &str) {
        match &mut self.log {
            Some(w) => {
                let (_, label) = log_names(&self.spec.name);
                let _ = w.append(Timestamp::now(), "slipway", &label, msg);
                let _ = w.flush();
            }
            None => eprintln!("{msg}"),
        }
    }

    fn fail(&mut self, why: String) -> i32 {
        self.say(&format!(
            "slipway: {} could not start: {why}",
            self.spec.name
        ));
        self.state.error = Some(why);
        self.state.phase = Phase::Exited;
        self.state.exit = Some(Exit {
            code: SETUP_FAILED,
            oom: false,
            stopped: false,
            killed: false,
            at: rfc3339(std::time::SystemTime::now()),
        });
        self.save();
        SETUP_FAILED
    }

    fn run(&mut self) -> i32 {
        let sigfd = match SignalFd::with_flags(
            &signals(),
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        ) {
            Ok(fd) => fd,
            Err(e) => return self.fail(format!("signalfd: {e}")),
        };
        if self.spec.mode == Mode::Daemon {
            let (source, _) = log_names(&self.spec.name);
            match LogWriter::open(
                &self.spec.data_dir,
                &self.spec.app,
                &source,
                DEFAULT_MAX_BYTES,
            ) {
                Ok(w) => self.log = Some(w),
                Err(e) => return self.fail(e.to_string()),
            }
        }
        if let Err(e) = mounts::enter_private_mount_ns() {
            return self.fail(e.to_string());
        }
        // The container's init is forked by the runtime's create, which exits: it is ours.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            return self.fail(format!("PR_SET_CHILD_SUBREAPER: {e}"));
        }
        let place = Place {
            workspaces: self.spec.place.workspaces.clone(),
            run_dir: self.spec.place.run_dir.clone(),
            network: NetworkSettings {
                bridge: self.spec.place.bridge.clone(),
                subnet: self.spec.place.subnet.clone(),
            },
            network_state: self.spec.place.network_state.clone(),
            runtime: self.spec.place.runtime.clone(),
        };
        let size = self.spec.size;
        let release = format!("v{}", self.spec.release);
        let kind = self.spec.kind.clone();
        let container = app_spec::container(
            &AppProcess {
                app: &self.spec.app,
                kind: &kind,
                index: self.spec.index,
                command: &self.spec.command,
                port: self.spec.port,
                release: &release,
                size: size.name(),
                env: &self.spec.env,
                memory_bytes: size.memory_bytes(),
                pids_limit: size.pids_limit(),
            },
            &self.spec.slug_dir,
            &self.spec.stack_dir,
        );
        let workspace = match Workspace::create(&place.workspaces, &self.spec.id) {
            Ok(w) => w,
            Err(e) => return self.fail(e.to_string()),
        };
        let sandbox = match Sandbox::prepare(&place, workspace, &container) {
            Ok(s) => s,
            Err(e) => return self.fail(e.to_string()),
        };
        if let Err(e) =
            super::isolation::isolate_ports(Path::new("/sys/class/net"), &place.network.bridge)
        {
            return self.fail(e.to_string());
        }
        self.state.ip = Some(sandbox.ip());
        let code = match self.start(&sandbox) {
            Ok(running) => self.supervise(&sigfd, running, &sandbox),
            Err(why) => self.fail(why),
        };
        // Runtime state, network, overlay and workspace go now, whatever happened.
        drop(sandbox);
        code
    }

    /// Write the bundle, create the container (`slipway-runtime create`: its init, forked by
    /// the runtime, becomes our child since we are a subreaper) and start it.
    fn start(&mut self, sandbox: &Sandbox) -> Result<Running, String> {
        let mut spec = sandbox.spec().clone();
        if let Some(linux) = spec.linux_mut() {
            // Named here, so that the OOM counter can be read where the runtime put it.
            linux.set_cgroups_path(Some(PathBuf::from(cgroup_path(sandbox.id()))));
            if let Some(res) = linux.resources_mut() {
                let cpu = oci_spec::runtime::LinuxCpuBuilder::default()
                    .shares(self.spec.size.cpu_shares())
                    .build()
                    .map_err(|e| format!("cpu resources: {e}"))?;
                res.set_cpu(Some(cpu));
            }
        }
        if self.spec.mode == Mode::Terminal {
            if let Some(p) = spec.process_mut() {
                p.set_terminal(Some(true));
                // Sized at birth: the program's first look at its terminal is right.
                if let Some((rows, cols)) = self.spec.console_size {
                    let size = oci_spec::runtime::BoxBuilder::default()
                        .height(u64::from(rows))
                        .width(u64::from(cols))
                        .build()
                        .map_err(|e| format!("console size: {e}"))?;
                    p.set_console_size(Some(size));
                }
            }
        }
        let bundle = sandbox.workspace().join("bundle");
        let config = bundle.join("config.json");
        std::fs::write(&config, serde_json::to_vec(&spec).expect("spec serializes"))
            .map_err(|e| format!("write {}: {e}", config.display()))?;
        drop(spec);
        let pid_file = sandbox.workspace().join("init.pid");
        let launcher = sandbox.launcher();
        let mut cmd = Command::new(&launcher.runtime);
        cmd.arg("--root").arg(&launcher.root).arg("create");
        let mut console = None;
        let mut output = None;
        match self.spec.mode {
            Mode::Daemon => {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| format!("pipe: {e}"))?;
                let w2 = w.try_clone().map_err(|e| format!("pipe: {e}"))?;
                nix::fcntl::fcntl(
                    &r,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .map_err(|e| format!("pipe: {e}"))?;
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::from(w))
                    .stderr(Stdio::from(w2));
                output = Some(r);
            }
            Mode::Attached => {
                cmd.stdin(Stdio::inherit())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit());
            }
            Mode::Terminal => {
                let sock = sandbox.workspace().join("console.sock");
                let l = UnixListener::bind(&sock)
                    .map_err(|e| format!("console socket {}: {e}", sock.display()))?;
                cmd.arg("--console-socket").arg(&sock);
                // stdin is the caller's socket, for the pty's master: not the container's.
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit());
                console = Some(l);
            }
        }
        cmd.arg("--bundle")
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(sandbox.id());
        let mut r = Running {
            init: None,
            output,
            console,
        };
        let created = cmd
            .status()
            .map_err(|e| format!("start {}: {e}", launcher.runtime.display()))?;
        drop(cmd);
        if !created.success() {
            self.drain(&mut r);
            return Err(self.runtime_error(&format!("the runtime's create ended with {created}")));
        }
        let init = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| format!("the runtime wrote no pid to {}", pid_file.display()))?;
        r.init = Some(nix::unistd::Pid::from_raw(init));
        let started = Command::new(&launcher.runtime)
            .arg("--root")
            .arg(&launcher.root)
            .args(["start", sandbox.id()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("start {}: {e}", launcher.runtime.display()))?;
        if !started.status.success() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(init), None);
            self.drain(&mut r);
            return Err(String::from_utf8_lossy(&started.stderr).trim().to_string());
        }
        self.state.pid = Some(init);
        self.state.phase = if self.spec.probe {
            Phase::Running
        } else {
            Phase::Up
        };
        self.save();
        Ok(r)
    }

    /// What the runtime said (its last lines), or `otherwise`.
    fn runtime_error(&self, otherwise: &str) -> String {
        if self.last_runtime_lines.is_empty() {
            otherwise.to_string()
        } else {
            self.last_runtime_lines.join("; ")
        }
    }

    /// Wait for the container's end, taking its output, signals and probes as they come.
    fn supervise(&mut self, sigfd: &SignalFd, mut r: Running, sandbox: &Sandbox) -> i32 {
        let grace = Duration::from_millis(self.spec.grace_ms);
        let init = r.init.expect("started");
        let mut stop_at: Option<Instant> = None;
        let mut killed = false;
        let mut status: Option<i32> = None;
        let mut drain_until: Option<Instant> = None;
        let mut next_probe = Instant::now();
        let ip = sandbox.ip();
        // Everything the setup allocated and freed goes back to the kernel: the monitor
        // stays small for the container's whole life.
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
        loop {
            if status.is_some()
                && (r.output.is_none() || drain_until.is_some_and(|d| Instant::now() >= d))
            {
                break;
            }
            let now = Instant::now();
            let probing = self.spec.probe
                && self.state.phase == Phase::Running
                && stop_at.is_none()
                && status.is_none();
            let mut wait: Option<Duration> = None;
            let mut sooner = |d: Duration| wait = Some(wait.map_or(d, |w: Duration| w.min(d)));
            if probing {
                sooner(next_probe.saturating_duration_since(now));
            }
            if let Some(at) = stop_at.filter(|_| !killed && status.is_none()) {
                sooner(at.saturating_duration_since(now));
            }
            if let Some(d) = drain_until {
                sooner(d.saturating_duration_since(now));
            }
            let timeout = match wait {
                Some(d) => PollTimeout::try_from(d.max(Duration::from_millis(1)))
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            let (sig_ready, out_ready, con_ready) = {
                let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
                if let Some(o) = &r.output {
                    fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
                }
                if let Some(c) = &r.console {
                    fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
                }
                let _ = nix::poll::poll(&mut fds, timeout);
                let ready = |i: usize| {
                    fds.get(i)
                        .and_then(|f| f.revents())
                        .is_some_and(|e| !e.is_empty())
                };
                let con_i = if r.output.is_some() { 2 } else { 1 };
                (
                    ready(0),
                    r.output.is_some() && ready(1),
                    r.console.is_some() && ready(con_i),
                )
            };
            if sig_ready {
                while let Ok(Some(info)) = sigfd.read_signal() {
                    if info.ssi_signo as i32 == libc::SIGCHLD {
                        continue;
                    }
                    if stop_at.is_none() && status.is_none() {
                        self.state.phase = Phase::Stopping;
                        self.save();
                        // The init passes it on to the app's process group.
                        let _ = nix::sys::signal::kill(init, Signal::SIGTERM);
                        stop_at = Some(Instant::now() + grace);
                    }
                }
                // Reap: the init (whose status is the container's) and anything else.
                loop {
                    match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::Exited(pid, code)) if pid == init => status = Some(code),
                        Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => {
                            status = Some(128 + sig as i32)
                        }
                        Ok(WaitStatus::StillAlive) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                if status.is_some() && drain_until.is_none() {
                    drain_until = Some(Instant::now() + DRAIN);
                }
            }
            if out_ready {
                self.read_output(&mut r);
            }
            if con_ready {
                if let Some(l) = r.console.take() {
                    if let Err(e) = pass_console(&l) {
                        self.say(&format!(
                            "slipway: the terminal could not be passed on: {e}"
                        ));
                    }
                }
            }
            if probing && Instant::now() >= next_probe {
                let addr = SocketAddr::from((ip, self.spec.port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    self.state.phase = Phase::Up;
                    self.save();
                }
                next_probe = Instant::now() + PROBE_EVERY;
            }
            if let Some(at) = stop_at {
                if !killed && status.is_none() && Instant::now() >= at {
                    killed = true;
                    // The init is PID 1 of the container: everything in it dies with it.
                    let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
                }
            }
        }
        self.drain(&mut r);
        self.flush_partial();
        let code = status.unwrap_or(128 + libc::SIGKILL);
        let oom = self.oom || oom_kills(sandbox.id()).unwrap_or(0) > 0;
        if oom && !self.oom {
            let msg = format!(
                "slipway: {}: out of memory (limit {} MiB): the kernel killed a process",
                self.spec.name,
                self.spec.size.memory_bytes() >> 20
            );
            self.say(&msg);
        }
        self.state.phase = Phase::Exited;
        self.state.exit = Some(Exit {
            code,
            oom,
            stopped: stop_at.is_some(),
            killed,
            at: rfc3339(std::time::SystemTime::now()),
        });
        self.save();
        if let Some(w) = &mut self.log {
            let _ = w.flush();
        }
        code
    }

    /// Read what is buffered in the output pipe, without waiting for more.
    fn drain(&mut self, r: &mut Running) {
        if let Some(out) = r.output.take() {
            let mut buf = std::mem::take(&mut self.buf);
            while let Ok(n) = nix::unistd::read(&out, &mut buf) {
                if n == 0 {
                    break;
                }
                self.take_output(&buf[..n]);
            }
            self.buf = buf;
        }
    }

    fn read_output(&mut self, r: &mut Running) {
        let Some(fd) = &r.output else { return };
        let mut buf = std::mem::take(&mut self.buf);
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => r.output = None,
            Ok(n) => self.take_output(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => r.output = None,
        }
        self.buf = buf;
        if let Some(w) = &mut self.log {
            let _ = w.flush();
        }
    }

    fn take_output(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.line(&line[..line.len() - 1]);
        }
        while self.partial.len() > MAX_LINE {
            let piece: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            self.line(&piece);
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
    }

    fn line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let (_, label) = log_names(&self.spec.name);
        // The runtime's own lines (errors, the OOM notice) are the platform's, not the app's.
        let source = if text.starts_with("slipway-runtime: ") {
            if text.contains(": out of memory") {
                self.oom = true;
            }
            if self.last_runtime_lines.len() >= 3 {
                self.last_runtime_lines.remove(0);
            }
            self.last_runtime_lines.push(text.to_string());
            "slipway"
        } else {
            "app"
        };
        if let Some(w) = &mut self.log {
            let _ = w.append(Timestamp::now(), source, &label, text);
        }
    }
}

/// The container's cgroup, relative to each hierarchy's root.
fn cgroup_path(id: &str) -> String {
    format!("/slipway/{id}")
}

/// How many times the kernel's OOM killer struck in the container's memory cgroup (v1
/// `memory.oom_control`, v2 `memory.events`), while the cgroup still exists.
fn oom_kills(id: &str) -> Option<u64> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in mountinfo.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let (fstype, options) = (r.next()?, r.nth(1).unwrap_or(""));
        let file = match fstype {
            "cgroup" if options.split(',').any(|o| o == "memory") => "memory.oom_control",
            "cgroup2" => {
                let controllers =
                    std::fs::read_to_string(Path::new(mount_point).join("cgroup.controllers"))
                        .unwrap_or_default();
                if !controllers.split_whitespace().any(|c| c == "memory") {
                    continue;
                }
                "memory.events"
            }
            _ => continue,
        };
        let path = PathBuf::from(format!("{mount_point}{}/{file}", cgroup_path(id)));
        let text = std::fs::read_to_string(path).ok()?;
        return text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok());
    }
    None
}

/// Take the pty master the container's init sends to the console socket and pass it on to
/// the caller, over our stdin (a unix socket).
fn pass_console(listener: &UnixListener) -> Result<(), String> {
    listener
        .set_nonblocking(false)
        .map_err(|e| format!("console socket: {e}"))?;
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("console socket: {e}"))?;
    let fd = recv_fd(stream.as_raw_fd())?;
    send_fd(0, fd.as_raw_fd())
}

/// Receive one descriptor (SCM_RIGHTS).
pub fn recv_fd(socket: i32) -> Result<OwnedFd, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the terminal: {e}"))?;
    for c in msg
        .cmsgs()
        .map_err(|e| format!("receive the terminal: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err("no descriptor arrived".into())
}

/// Send one descriptor (SCM_RIGHTS).
pub fn send_fd(socket: i32, fd: i32) -> Result<(), String> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(b"pty")];
    sendmsg::<()>(socket, &iov, &cmsg, MsgFlags::empty(), None)
        .map(|_| ())
        .map_err(|e| format!("send the terminal: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_are_valid_sources() {
        assert_eq!(log_names("web-1"), ("web-1".into(), "web.1".into()));
        assert_eq!(
            log_names("Big_Worker-12"),
            ("big-worker-12".into(), "big-worker.12".into())
        );
        assert_eq!(
            log_names("postdeploy"),
            ("postdeploy".into(), "postdeploy".into())
        );
        assert!(crate::applog::validate_source(&log_names("Big_Worker-12").0).is_ok());
    }

    #[test]
    fn descriptors_cross_a_socket() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let f = tempfile::tempfile().unwrap();
        send_fd(a.as_raw_fd(), f.as_raw_fd()).unwrap();
        let got = recv_fd(b.as_raw_fd()).unwrap();
        let st = nix::sys::stat::fstat(&got).unwrap();
        let orig = nix::sys::stat::fstat(&f).unwrap();
        assert_eq!(st.st_ino, orig.st_ino);
    }
}
