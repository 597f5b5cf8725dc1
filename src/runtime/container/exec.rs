//! `exec`: a new process inside a running container, in its namespaces and cgroup, under the
//! container's seccomp profile.
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::Process;

use super::{absolute, compile_seccomp, fork_stage1, write_pid_file, Console};
use crate::runtime::console;
use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::process::{self, ExecPlan, NamespacePlan};
use crate::runtime::state::{StateRoot, Status};
use crate::runtime::sync::{Channel, Msg};
use crate::runtime::syscall::Linux;
use crate::sys::io::at;

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
            let f = std::fs::File::open(&theirs).map_err(at("open namespace", &theirs))?;
            ns.join.push((flag, OwnedFd::from(f)));
        }
    }
    let (console_fd, proxy_end) = o.console.endpoints(terminal)?;
    let pid_file = o.pid_file.as_deref().map(absolute);
    let init_root = PathBuf::from(format!("/proc/{}/root", st.pid));
    let (parent_chan, child_chan) = Channel::pair().map_err(at("socketpair", "handshake"))?;
    let (stage1_pid, in_cgroup) = fork_stage1(&st.cgroup)?;
    if stage1_pid == 0 {
        drop(parent_chan);
        let enter = || {
            if !in_cgroup {
                st.cgroup.add_pid(std::process::id() as i32)?;
            }
            // Still in the host's namespaces: /proc/self is ours, not the container's.
            plan.apply_rlimits(&Linux)
        };
        let mut stage2 = || -> Result<std::convert::Infallible> {
            let mut keep = vec![child_chan.raw()];
            keep.extend(console_fd.as_ref().map(|c| c.as_raw_fd()));
            process::close_fds_except(3 + o.preserve_fds, &keep);
            if !st.own_mount_ns {
                crate::runtime::rootfs::chroot(&Linux, &init_root)?;
            }
            if let Some(sock) = &console_fd {
                nix::unistd::setsid().map_err(|e| RuntimeError::Init(format!("setsid: {e}")))?;
                let (master, slave, _) = console::open_pty()?;
                console::hand_over(sock.as_raw_fd(), master, &slave, o.process.console_size())?;
            }
            process::finalize(&Linux, &plan, &mut |_| {})
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
        return Err(RuntimeError::Reported(e));
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
