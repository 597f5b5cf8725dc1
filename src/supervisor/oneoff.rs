//! One-off containers (`run CMD`): attached to the caller's stdio (or a pty), or detached with
//! their output in the app's log as `run.N`. Never restarted; removed when they end; at most
//! `Options::max_one_offs` per app at once.
//!
//! An attached one-off's monitor is the caller's child (not a daemon): the container's stdio
//! is the monitor's, so the bytes go straight between the container and the caller, and the
//! monitor's exit status is the container's. With a pty, the monitor's stdin is a unix socket
//! over which it sends the pty's master.
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::engine::{Ending, Outbox, Reserve, Role, Shared};
use super::spawn::{self, MonitorRef};
use super::state::Mode;
use super::{Release, Size, SupervisorError};

/// How a one-off holds its stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneOffMode {
    /// Output to the app's log; nobody waits.
    Detached,
    /// stdin, stdout and stderr are pipes the caller holds.
    Attached,
    /// A pty of `rows` x `cols` (0 when unknown), sized before the command starts: the
    /// caller holds its master (`OneOff::pty`) and resizes it later.
    Terminal { rows: u16, cols: u16 },
}

/// A started one-off.
pub struct OneOff {
    /// `run-N`.
    pub name: String,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    /// Attached: the container's stderr. Terminal: the monitor's own errors.
    pub stderr: Option<ChildStderr>,
    /// Terminal: the pty's master (read the output, write the input, size it).
    pub pty: Option<File>,
    app: String,
    id: String,
    child: Option<Child>,
    monitor: Option<MonitorRef>,
    shared: Arc<Shared>,
}

impl OneOff {
    /// The container's exit status (attached), waiting for it. A detached one-off's status
    /// comes from its monitor's record, once it has ended.
    pub fn wait(&mut self) -> Result<i32, SupervisorError> {
        // The caller's ends of stdin go first: the container may be waiting for EOF.
        self.stdin.take();
        if let Some(child) = self.child.as_mut() {
            let status = child.wait().map_err(|e| SupervisorError::Monitor {
                container: self.name.clone(),
                message: format!("wait: {e}"),
            })?;
            self.child = None;
            // Gone from `ps` and from the count of one-offs as soon as we know.
            self.shared.refresh_app(&self.app);
            return Ok(status.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
            }));
        }
        let mut apps = self.shared.lock();
        loop {
            let rt = apps.entry(self.app.clone()).or_default();
            if let Some((_, code)) = rt.exits.iter().find(|(id, _)| id == &self.id) {
                return Ok(*code);
            }
            if let Some(Ending::Failed(why)) = rt.find(&self.id).and_then(|i| i.gone.clone()) {
                return Err(SupervisorError::Monitor {
                    container: self.name.clone(),
                    message: why,
                });
            }
            if rt.find(&self.id).is_none() {
                return Err(SupervisorError::Detached {
                    name: self.name.clone(),
                });
            }
            apps = self.shared.wait_change(apps, Duration::from_millis(200));
        }
    }

    /// Stop it (SIGTERM, SIGKILL after the grace period).
    pub fn stop(&self) {
        if let Some(m) = self.monitor {
            m.signal(Signal::SIGTERM);
        }
    }

    /// Size the pty (Terminal).
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        let Some(pty) = &self.pty else {
            return Ok(());
        };
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a valid winsize on a descriptor we own.
        if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for OneOff {
    /// A caller that goes away stops its attached one-off (and reaps its monitor).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                self.stop();
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
            }
        }
    }
}

pub fn start(
    sh: &Arc<Shared>,
    release: &Release,
    command: &str,
    size: Size,
    env: &[(String, String)],
    mode: OneOffMode,
) -> Result<OneOff, SupervisorError> {
    let app = release.app.as_str();
    crate::applog::validate_app(app).map_err(|e| SupervisorError::BadName(e.to_string()))?;
    let stack = match sh.desired(app) {
        Some(d) if d.release.version == release.version => d.stack_dir,
        _ => sh.run_stack(&release.stack)?,
    };
    let max = sh.settings.options.max_one_offs;
    let mut out = Outbox::default();
    let (id, name) = {
        let mut apps = sh.lock();
        let rt = apps.entry(app.to_string()).or_default();
        let busy: Vec<u32> = rt
            .instances
            .iter()
            .filter(|i| i.role == Role::OneOff && i.gone.is_none() && i.kind == "run")
            .map(|i| i.index)
            .collect();
        if busy.len() >= max {
            return Err(SupervisorError::TooManyOneOffs {
                app: app.into(),
                max,
            });
        }
        let index = (1..).find(|n| !busy.contains(n)).unwrap_or(1);
        let name = format!("run-{index}");
        let id = sh.reserve(
            app,
            rt,
            Reserve {
                name: name.clone(),
                kind: "run".into(),
                index,
                release,
                size,
                command: command.to_string(),
                extra_env: env,
                stack: &stack,
                role: Role::OneOff,
                mode: match mode {
                    OneOffMode::Detached => Mode::Daemon,
                    OneOffMode::Attached => Mode::Attached,
                    OneOffMode::Terminal { .. } => Mode::Terminal,
                },
                restarts: 0,
                backoff_step: 0,
            },
            &mut out,
        );
        (id, name)
    };
    let forget = |sh: &Shared| {
        let mut apps = sh.lock();
        if let Some(rt) = apps.get_mut(app) {
            rt.instances.retain(|i| i.id != id);
        }
    };
    let mut one = OneOff {
        name: name.clone(),
        stdin: None,
        stdout: None,
        stderr: None,
        pty: None,
        app: app.to_string(),
        id: id.clone(),
        child: None,
        monitor: None,
        shared: sh.clone(),
    };
    if mode == OneOffMode::Detached {
        sh.deliver(out);
        let mut apps = sh.lock();
        let inst = apps.get_mut(app).and_then(|rt| rt.find(&id));
        match inst.map(|i| (i.monitor, i.gone.clone())) {
            Some((_, Some(Ending::Failed(why)))) => {
                drop(apps);
                forget(sh);
                return Err(SupervisorError::Monitor {
                    container: name,
                    message: why,
                });
            }
            Some((m, _)) => one.monitor = m,
            None => {}
        }
        return Ok(one);
    }
    // Attached: the monitor is our child; events and spawns of the reservation are ours.
    let mut job = out.spawns.pop().expect("one reservation");
    if let OneOffMode::Terminal { rows, cols } = mode {
        job.spec.console_size = (rows > 0 && cols > 0).then_some((rows, cols));
    }
    sh.deliver(out);
    if let Some(dir) = job.spec.state_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut cmd = match spawn::command(&sh.settings.exe, &job.spec) {
        Ok(c) => c,
        Err(e) => {
            forget(sh);
            return Err(e);
        }
    };
    cmd.process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ours: Option<UnixStream> = None;
    if matches!(mode, OneOffMode::Terminal { .. }) {
        let (a, b) = match UnixStream::pair() {
            Ok(p) => p,
            Err(source) => {
                forget(sh);
                return Err(SupervisorError::Spawn {
                    exe: sh.settings.exe.clone(),
                    source,
                });
            }
        };
        cmd.stdin(Stdio::from(OwnedFd::from(b)));
        ours = Some(a);
    } else {
        cmd.stdin(Stdio::piped());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            forget(sh);
            return Err(SupervisorError::Spawn {
                exe: sh.settings.exe.clone(),
                source,
            });
        }
    };
    drop(cmd);
    let monitor = MonitorRef::of(child.id() as i32);
    {
        let mut apps = sh.lock();
        if let Some(inst) = apps.get_mut(app).and_then(|rt| rt.find(&id)) {
            inst.monitor = monitor;
        }
    }
    one.monitor = monitor;
    one.stdin = child.stdin.take();
    one.stdout = child.stdout.take();
    one.stderr = child.stderr.take();
    if let Some(sock) = ours {
        let _ = sock.set_read_timeout(Some(sh.settings.options.boot_timeout));
        match super::monitor::recv_fd(sock.as_raw_fd()) {
            Ok(fd) => one.pty = Some(File::from(fd)),
            Err(e) => {
                one.stop();
                let mut msg = String::new();
                if let Some(mut err) = one.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut msg);
                }
                let _ = child.wait();
                return Err(SupervisorError::Monitor {
                    container: name,
                    message: format!("{e}; {}", msg.trim()),
                });
            }
        }
    }
    one.child = Some(child);
    Ok(one)
}
