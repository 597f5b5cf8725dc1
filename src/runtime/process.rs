//! Forking a container's processes and the steps they take before exec.
//!
//! The runtime forks a short-lived *stage 1* that joins or creates the namespaces (user first,
//! then the rest) and forks the real process (*stage 2*: the container init, or an `exec`ed
//! process), so that a new PID namespace applies to it. Stage 1 reports the host pid of stage 2
//! and exits. Stage 2 sets up the container and finally calls `finalize`, which switches user,
//! capabilities, no_new_privs and seccomp and execs the program. Every step that can fail sends
//! its error back over the handshake channel, so the runtime can say exactly what went wrong.
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{ForkResult, Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};

use super::capabilities::{self, CapSets};
use super::error::{Result, RuntimeError};
use super::inroot;
use super::seccomp;
use super::sync::{Channel, Msg};
use super::syscall::{Linux, Syscall};

/// Containers are forked only from a single-threaded process: the child of a multi-threaded
/// one inherits locks (the allocator's, stdio's) that other threads held at the fork and may
/// deadlock on its first allocation. The runtime CLI never starts a thread before its last
/// fork; a multi-threaded caller (the daemon) runs the `slipway-runtime` binary instead.
pub fn ensure_single_threaded() -> Result<()> {
    let threads = crate::sys::procfs::stat(std::process::id() as i32).map_or(1, |s| s.num_threads);
    if threads > 1 {
        return Err(RuntimeError::Invalid(format!(
            "the runtime forks containers only from a single-threaded process, and this one has {threads} threads: run containers through the slipway-runtime binary (as slipway's builder and monitors do)"
        )));
    }
    Ok(())
}

/// Fork. The runtime is single-threaded whenever it forks (checked by the callers through
/// `ensure_single_threaded`), so the child may allocate freely.
pub fn fork() -> Result<i32> {
    // SAFETY: see above; the child never returns into code that assumes other threads.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child.as_raw()),
        Ok(ForkResult::Child) => Ok(0),
        Err(e) => Err(RuntimeError::Init(format!(
            "fork: {}",
            std::io::Error::from(e)
        ))),
    }
}

/// Fork straight into a cgroup (clone3 with CLONE_INTO_CGROUP, cgroup v2 only): the child
/// starts life in the container's cgroup, so nobody has to migrate it by writing
/// `cgroup.procs`, which costs an RCU grace period (milliseconds) on the start path.
/// Returns None when the kernel cannot (older than 5.7, or not a v2 directory): fork and
/// migrate instead.
pub fn fork_into_cgroup(cgroup_dir: &std::path::Path) -> Option<i32> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let dir = std::fs::File::open(cgroup_dir).ok()?;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: without CLONE_VM and with no stack given, clone3 behaves as fork; the runtime
    // is single-threaded here (see `fork`).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return None;
    }
    Some(pid as i32)
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit skips atexit handlers and stdio flushing that belong to the parent.
    unsafe { libc::_exit(code) }
}

/// Reap every child that has ended, without waiting; the exit code of `child` once it is among
/// them: its own, or 128+N after a death by signal N, as shells report it.
pub fn reap_children(child: i32) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid only writes the status into a local. Raw rather than nix's waitpid,
        // which reaps a child killed by a real-time signal and then fails, losing its status.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return code;
        }
        if pid == child {
            if libc::WIFEXITED(status) {
                code = Some(libc::WEXITSTATUS(status));
            } else if libc::WIFSIGNALED(status) {
                code = Some(128 + libc::WTERMSIG(status));
            }
        }
    }
}

/// Namespaces stage 1 must enter.
pub struct NamespacePlan {
    /// Existing namespaces to join, user first and mount last.
    pub join: Vec<(CloneFlags, OwnedFd)>,
    pub new_user: bool,
    pub new_cgroup: bool,
    /// Other namespaces to create (mount, pid, net, uts, ipc).
    pub new_other: CloneFlags,
}

/// Stage 1: enter namespaces, fork stage 2, report its pid, exit.
/// `enter_cgroup` runs first so every later process starts inside the container's cgroup.
pub fn stage1(
    chan: &Channel,
    ns: &NamespacePlan,
    enter_cgroup: &dyn Fn() -> Result<()>,
    stage2: &mut dyn FnMut() -> Result<Infallible>,
) -> ! {
    let r = (|| -> Result<(i32, OwnedFd)> {
        if ns.join.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWPID) {
            // Processes of the container will see us: no /proc/PID access to our memory,
            // descriptors or executable until the program's own exec resets this.
            nix::sys::prctl::set_dumpable(false)
                .map_err(|e| RuntimeError::Init(format!("PR_SET_DUMPABLE: {e}")))?;
        }
        enter_cgroup()?;
        for (flag, fd) in &ns.join {
            Linux.setns(fd.as_fd(), *flag).map_err(|e| {
                RuntimeError::Init(format!("join {} namespace: {e}", ns_name(*flag)))
            })?;
            if *flag == CloneFlags::CLONE_NEWUSER {
                become_root()?;
            }
        }
        if ns.new_user {
            Linux
                .unshare(CloneFlags::CLONE_NEWUSER)
                .map_err(|e| RuntimeError::Init(format!("create user namespace: {e}")))?;
            chan.send(&Msg::MapIds(std::process::id() as i32))
                .map_err(chan_err)?;
            match chan.recv().map_err(chan_err)? {
                Some(Msg::MapsDone) => {}
                other => {
                    return Err(RuntimeError::Init(format!(
                        "expected id maps, got {other:?}"
                    )))
                }
            }
            become_root()?;
        }
        let mut flags = ns.new_other;
        if ns.new_cgroup {
            // After entering the cgroup, so the namespace's root is the container's cgroup.
            flags |= CloneFlags::CLONE_NEWCGROUP;
        }
        if !flags.is_empty() {
            Linux
                .unshare(flags)
                .map_err(|e| RuntimeError::Init(format!("create namespaces {flags:?}: {e}")))?;
        }
        // Stage 2 waits on this pipe until its pid is reported, so the runtime always knows
        // the pid (to kill it on failure) before stage 2 can report anything itself.
        let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| RuntimeError::Init(format!("pipe: {e}")))?;
        let pid = fork()?;
        if pid == 0 {
            drop(go_write);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&go_read, &mut b);
            drop(go_read);
            match stage2() {
                Ok(never) => match never {},
                Err(e) => {
                    let _ = chan.send(&Msg::Error(e.to_string()));
                    exit_now(1);
                }
            }
        }
        drop(go_read);
        Ok((pid, go_write))
    })();
    match r {
        Ok((pid, go)) => {
            let _ = chan.send(&Msg::InitPid(pid));
            let _ = nix::unistd::write(&go, b"g");
            exit_now(0)
        }
        Err(e) => {
            let _ = chan.send(&Msg::Error(e.to_string()));
            exit_now(1)
        }
    }
}

fn chan_err(e: std::io::Error) -> RuntimeError {
    RuntimeError::Init(format!("handshake with the runtime: {e}"))
}

fn become_root() -> Result<()> {
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).map_err(|e| {
        RuntimeError::Init(format!(
            "setgid 0 in the user namespace (is gid 0 mapped?): {e}"
        ))
    })?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).map_err(|e| {
        RuntimeError::Init(format!(
            "setuid 0 in the user namespace (is uid 0 mapped?): {e}"
        ))
    })
}

pub fn ns_name(flag: CloneFlags) -> &'static str {
    match flag {
        CloneFlags::CLONE_NEWUSER => "user",
        CloneFlags::CLONE_NEWNS => "mnt",
        CloneFlags::CLONE_NEWPID => "pid",
        CloneFlags::CLONE_NEWNET => "net",
        CloneFlags::CLONE_NEWUTS => "uts",
        CloneFlags::CLONE_NEWIPC => "ipc",
        CloneFlags::CLONE_NEWCGROUP => "cgroup",
        _ => "unknown",
    }
}

/// Write uid_map and gid_map of a process that just unshared its user namespace.
pub fn write_id_maps(
    pid: i32,
    uid: &[oci_spec::runtime::LinuxIdMapping],
    gid: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<()> {
    let fmt = |m: &[oci_spec::runtime::LinuxIdMapping]| {
        m.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    for (file, maps) in [("uid_map", uid), ("gid_map", gid)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, fmt(maps)).map_err(|e| {
            RuntimeError::Init(format!(
                "write {path}: {e} (check linux.{}Mappings)",
                &file[..3]
            ))
        })?;
    }
    Ok(())
}

/// Everything `finalize` needs, prepared before the fork.
pub struct ExecPlan {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub caps: CapSets,
    pub no_new_privs: bool,
    pub seccomp: Option<seccomp::Program>,
    pub preserve_fds: i32,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    /// Run the program under slipway's minimal init (`pid1`) instead of as PID 1 itself.
    pub init: bool,
}

fn cstr(s: impl AsRef<[u8]>, what: &str) -> Result<CString> {
    CString::new(s.as_ref())
        .map_err(|_| RuntimeError::Invalid(format!("{what} contains a NUL byte")))
}

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => Resource::RLIMIT_CPU,
        RlimitFsize => Resource::RLIMIT_FSIZE,
        RlimitData => Resource::RLIMIT_DATA,
        RlimitStack => Resource::RLIMIT_STACK,
        RlimitCore => Resource::RLIMIT_CORE,
        RlimitRss => Resource::RLIMIT_RSS,
        RlimitNproc => Resource::RLIMIT_NPROC,
        RlimitNofile => Resource::RLIMIT_NOFILE,
        RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        RlimitAs => Resource::RLIMIT_AS,
        RlimitLocks => Resource::RLIMIT_LOCKS,
        RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        RlimitNice => Resource::RLIMIT_NICE,
        RlimitRtprio => Resource::RLIMIT_RTPRIO,
        RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

impl ExecPlan {
    pub fn new(
        p: &Process,
        seccomp: Option<seccomp::Program>,
        preserve_fds: i32,
    ) -> Result<ExecPlan> {
        let args = p.args().clone().unwrap_or_default();
        let env = p.env().clone().unwrap_or_default();
        let argv = args
            .iter()
            .map(|a| cstr(a, "process.args"))
            .collect::<Result<Vec<_>>>()?;
        let envp = env
            .iter()
            .map(|e| cstr(e, "process.env"))
            .collect::<Result<Vec<_>>>()?;
        let caps = capabilities::from_spec(p.capabilities().as_ref())?;
        let rlimits = p
            .rlimits()
            .iter()
            .flatten()
            .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
            .collect();
        Ok(ExecPlan {
            path: cstr(&args[0], "process.args[0]")?,
            argv,
            envp,
            env,
            cwd: p.cwd().clone(),
            uid: p.user().uid(),
            gid: p.user().gid(),
            additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
            umask: p.user().umask(),
            caps,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            seccomp,
            preserve_fds,
            rlimits,
            oom_score_adj: p.oom_score_adj(),
            terminal: p.terminal().unwrap_or(false),
            init: false,
        })
    }

    /// Resource limits and the OOM score; must run while the process still has its
    /// privileges, and where /proc/self is the host's view of this process.
    pub fn apply_rlimits(&self, sys: &dyn Syscall) -> Result<()> {
        for (res, soft, hard) in &self.rlimits {
            sys.setrlimit(*res, *soft, *hard).map_err(|e| {
                let hint = if e == nix::Error::EPERM {
                    " (raising a hard limit needs CAP_SYS_RESOURCE, which this host does not grant: lower the hard limit)"
                } else {
                    ""
                };
                RuntimeError::Init(format!("set {res:?} to soft {soft} hard {hard}: {e}{hint}"))
            })?;
        }
        if let Some(adj) = self.oom_score_adj {
            sys.write_proc(Path::new("/proc/self/oom_score_adj"), &adj.to_string())
                .map_err(|e| RuntimeError::Init(format!("set oom_score_adj {adj}: {e}")))?;
        }
        Ok(())
    }
}

/// Find the program like execvp does, but with the container's PATH.
fn lookup(plan: &ExecPlan) -> Result<CString> {
    let prog = plan.path.as_bytes();
    if prog.contains(&b'/') {
        return Ok(plan.path.clone());
    }
    let path_var = super::spec::env_get(&plan.env, "PATH")
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(std::ffi::OsStr::from_bytes(prog));
        if let Ok(m) = std::fs::metadata(&cand) {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return cstr(cand.as_os_str().as_bytes(), "path");
            }
        }
    }
    Err(RuntimeError::Init(format!(
        "executable {:?} not found in $PATH ({path_var}) in the container",
        plan.path
    )))
}

/// Add HOME from the container's /etc/passwd when the process has none, as runc does.
fn home_env(plan: &ExecPlan) -> Option<CString> {
    if super::spec::env_get(&plan.env, "HOME").is_some() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let home = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[2].parse() == Ok(plan.uid)).then(|| f[5].to_string())
        })
        .next()
        .unwrap_or_else(|| "/".to_string());
    CString::new(format!("HOME={home}")).ok()
}

/// Change into the process's working directory, resolved inside the container's root (we are
/// past pivot_root or chroot, so `/` is the container's) with no magic links: a cwd such as
/// `/proc/self/fd/3` can never reach a descriptor of the runtime (CVE-2024-21626). Created
/// when missing, as runc does.
fn enter_cwd(cwd: &Path) -> Result<()> {
    let fail = |what: &str, e: nix::Error| {
        RuntimeError::Init(format!(
            "{what} the working directory {} inside the container: {e}{}",
            cwd.display(),
            if e == nix::Error::ELOOP {
                " (too many symlinks, or a /proc magic link: use a plain path)"
            } else {
                ""
            }
        ))
    };
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail("open / to resolve", e))?;
    let dir = match inroot::open(root.as_fd(), cwd, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Err(nix::Error::ENOENT) => {
            inroot::mkdir_all(root.as_fd(), cwd, 0o755).map_err(|e| fail("create", e))?
        }
        r => r.map_err(|e| fail("resolve", e))?,
    };
    nix::unistd::fchdir(dir.as_fd()).map_err(|e| fail("enter", e))
}

/// The last steps before the user's program: identity, capabilities, no_new_privs, seccomp,
/// descriptors, exec (under the minimal init when the plan asks for it; `started` then hears
/// whether the program's exec worked). Only returns on failure.
pub fn finalize(
    sys: &dyn Syscall,
    plan: &ExecPlan,
    started: &mut dyn FnMut(std::result::Result<(), String>),
) -> Result<Infallible> {
    let init_err = |what: &str, e: nix::Error| RuntimeError::Init(format!("{what}: {e}"));
    if let Some(mask) = plan.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    enter_cwd(&plan.cwd)?;
    let path = lookup(plan)?;
    let mut envp = plan.envp.clone();
    envp.extend(home_env(plan));

    // Keep the permitted set across the uid change; it is trimmed to the spec's sets below.
    sys.set_keepcaps(true)
        .map_err(|e| init_err("PR_SET_KEEPCAPS", e))?;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we have it.
    // The filter then also covers the remaining setup syscalls, which every sane profile allows.
    if let Some(prog) = plan.seccomp.as_ref().filter(|_| !plan.no_new_privs) {
        sys.seccomp(prog)?;
    }
    // Before the uid changes: a process that is no longer root cannot shrink it.
    sys.drop_bounding(&plan.caps)?;
    if !plan.additional_gids.is_empty() || Uid::current().is_root() {
        let groups: Vec<Gid> = plan
            .additional_gids
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        // In a user namespace whose setgroups is denied this fails; only an error if asked for.
        if let Err(e) = sys.setgroups(&groups) {
            if !plan.additional_gids.is_empty() {
                return Err(init_err("setgroups (additionalGids)", e));
            }
        }
    }
    sys.setresgid(Gid::from_raw(plan.gid))
        .map_err(|e| init_err(&format!("setgid {}", plan.gid), e))?;
    sys.setresuid(Uid::from_raw(plan.uid))
        .map_err(|e| init_err(&format!("setuid {}", plan.uid), e))?;
    sys.capset(&plan.caps)?;
    sys.set_keepcaps(false)
        .map_err(|e| init_err("PR_SET_KEEPCAPS", e))?;
    if plan.no_new_privs {
        sys.set_no_new_privs()
            .map_err(|e| init_err("PR_SET_NO_NEW_PRIVS", e))?;
    }
    sys.reset_signals();
    sys.close_fds_from(3 + plan.preserve_fds);
    // Last, so the filter constrains the program and not our setup.
    if let Some(prog) = plan.seccomp.as_ref().filter(|_| plan.no_new_privs) {
        sys.seccomp(prog)?;
    }
    if plan.init {
        super::pid1::run(&path, &plan.argv, &envp, plan.terminal, started);
    }
    let e = sys.execve(&path, &plan.argv, &envp);
    Err(RuntimeError::Init(format!("exec {:?}: {e}", path)))
}

/// Default dispositions and an empty mask: the runtime ignores SIGPIPE (Rust does) and blocks
/// signals it forwards, and neither may leak into the container's program.
pub fn reset_signals() {
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing the default action runs no handler code of ours.
            let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Mark every descriptor from `first` on close-on-exec: nothing of the runtime's reaches the
/// container except stdio and the descriptors it was told to preserve. Close-on-exec rather
/// than close, so the error channel still works if exec fails.
pub fn close_fds_from(first: i32) {
    close_range(first, RawFd::MAX, true);
}

/// Close every descriptor from `first` on except those in `keep`: called first thing in a
/// forked stage, so that no descriptor the runtime held (its state directory, namespace files)
/// exists while the container's paths are resolved.
pub fn close_fds_except(first: RawFd, keep: &[RawFd]) {
    for (lo, hi) in ranges_to_close(first, keep) {
        close_range(lo, hi, false);
    }
}

/// The inclusive ranges from `first` to the highest descriptor number that leave out `keep`.
fn ranges_to_close(first: RawFd, keep: &[RawFd]) -> Vec<(RawFd, RawFd)> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|k| *k >= first).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = Vec::new();
    let mut from = first;
    for k in keep.into_iter().chain(std::iter::once(RawFd::MAX)) {
        if k > from {
            ranges.push((from, k - 1));
        }
        from = k.saturating_add(1);
    }
    ranges
}

/// Close (or mark close-on-exec) the descriptors `first..=last`.
fn close_range(first: RawFd, last: RawFd, cloexec: bool) {
    let flags = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC as libc::c_int
    } else {
        0
    };
    // SAFETY: closing or flagging descriptor numbers this process will not use again. (nix has
    // no close_range.)
    if unsafe { libc::close_range(first as libc::c_uint, last as libc::c_uint, flags) } == 0 {
        return;
    }
    // Kernels before 5.9: what /proc/self/fd lists (the host's procfs, before pivot).
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds.into_iter().filter(|fd| (first..=last).contains(fd)) {
            // SAFETY: as above; harmless on a descriptor already closed. Raw calls: these are
            // descriptor numbers, not descriptors we own or know to be open (nix's fcntl and
            // close take owned or borrowed ones).
            unsafe {
                if cloexec {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                } else {
                    libc::close(fd);
                }
            }
        }
    }
}

/// `--preserve-fds N` passes descriptors 3..3+N: each must be open, or a descriptor the
/// runtime opens later could take a free number in that range and reach the container.
pub fn check_preserved(count: i32) -> Result<()> {
    for fd in 3..3 + count.max(0) {
        // SAFETY: F_GETFD only reads descriptor flags; raw, since `fd` may well not be open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(RuntimeError::Invalid(format!(
                "--preserve-fds {count}: descriptor {fd} is not open; pass only open descriptors"
            )));
        }
    }
    Ok(())
}

/// Move a descriptor to a number at or above `min` (close-on-exec), so it cannot collide with
/// descriptors the container is meant to inherit.
pub fn raise_fd(fd: OwnedFd, min: RawFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    let n = nix::fcntl::fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(min))
        .map_err(|e| RuntimeError::Init(format!("dup descriptor: {}", std::io::Error::from(e))))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor, which nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(n) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::fake::Recorder;

    fn plan(no_new_privs: bool) -> ExecPlan {
        let mut p = Process::default();
        p.set_args(Some(vec!["/bin/true".into()]));
        // Our own working directory: entering it changes nothing for the other tests.
        p.set_cwd(std::env::current_dir().unwrap());
        p.user_mut().set_uid(1000);
        p.user_mut().set_gid(1000);
        p.set_no_new_privileges(Some(no_new_privs));
        let program = seccomp::Program {
            filter: vec![libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0x7fff_0000,
            }],
            flags: 0,
        };
        ExecPlan::new(&p, Some(program), 2).unwrap()
    }

    fn before(rec: &Recorder, a: &str, b: &str) {
        assert!(
            rec.position(a) < rec.position(b),
            "{a} must come before {b}: {:#?}",
            rec.calls.borrow()
        );
    }

    #[test]
    fn with_no_new_privs_the_filter_is_the_last_step_before_exec() {
        let rec = Recorder::default();
        let e = finalize(&rec, &plan(true), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("exec"), "{e}");
        before(&rec, "drop_bounding", "setresuid");
        before(&rec, "setresgid", "setresuid");
        before(&rec, "setresuid", "capset");
        before(&rec, "capset", "keepcaps false");
        before(&rec, "no_new_privs", "seccomp");
        before(&rec, "close_fds_from 5", "seccomp");
        before(&rec, "seccomp", "execve");
        assert_eq!(rec.positions("seccomp").len(), 1);
    }

    #[test]
    fn without_no_new_privs_the_filter_is_loaded_while_privileged() {
        let rec = Recorder::default();
        finalize(&rec, &plan(false), &mut |_| {}).unwrap_err();
        before(&rec, "keepcaps true", "seccomp");
        before(&rec, "seccomp", "drop_bounding");
        before(&rec, "seccomp", "setresuid");
        assert!(rec.positions("no_new_privs").is_empty());
        before(&rec, "close_fds_from 5", "execve");
    }

    #[test]
    fn a_multi_threaded_process_may_not_fork_containers() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let e = ensure_single_threaded().unwrap_err();
        assert!(e.to_string().contains("single-threaded"), "{e}");
        drop(tx);
        let _ = t.join();
    }

    #[test]
    fn closing_leaves_out_exactly_the_kept_descriptors() {
        let max = RawFd::MAX - 1;
        assert_eq!(ranges_to_close(3, &[]), vec![(3, max)]);
        assert_eq!(
            ranges_to_close(3, &[9, 5, 5, 2]),
            vec![(3, 4), (6, 8), (10, max)]
        );
        assert_eq!(ranges_to_close(3, &[3, 4]), vec![(5, max)]);
    }
}
