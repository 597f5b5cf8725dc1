//! slipway's built-in seccomp profile.
//!
//! The policy: deny by default with EPERM, allow the syscalls that ordinary programs use, and
//! grant the privileged ones only together with the capability that makes them meaningful. The
//! allowlist is kept as broad as Docker's default profile (so that software which runs under
//! Docker runs here) and never broader; in one place it is narrower (`socketcall`, see below).
//!
//! Names of syscalls that exist only on some architectures (`_llseek` on x86, `arm_fadvise64_64`
//! on arm, `arch_prctl` on x86_64) sit in the same list: a rule for a syscall that does not exist
//! on an architecture compiles to nothing there, so this widens nothing.
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Syscalls every container may make, whatever its capabilities.
pub const ALLOWED: &[&str] = &[
    // Files, directories and descriptors.
    "access",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "ioctl",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pipe",
    "pipe2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "setxattr",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
    // Polling, events and asynchronous I/O (io_uring stays out: a large attack surface that
    // Docker also refuses).
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "fanotify_mark",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "_newselect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "select",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    // Memory.
    "brk",
    "madvise",
    "membarrier",
    "memfd_create",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    // Processes, threads and scheduling. `clone`, `clone3` and `personality` have rules of their
    // own below; `ptrace` and its relatives depend on the kernel version.
    "arch_prctl",
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "futex",
    "futex_time64",
    "futex_waitv",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "restart_syscall",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setpgid",
    "setpriority",
    "setrlimit",
    "setsid",
    "tgkill",
    "tkill",
    "ugetrlimit",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    // Landlock lets a program sandbox itself further; it can only reduce privilege.
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    // Credentials (the capability set decides what actually succeeds).
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getuid",
    "getuid32",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setuid",
    "setuid32",
    // Signals.
    "pause",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "sigprocmask",
    "sigreturn",
    // Time (reading clocks only; setting them needs CAP_SYS_TIME below). `adjtimex` and
    // `clock_adjtime` with a zero mode only read; the kernel checks CAP_SYS_TIME for writes.
    "adjtimex",
    "alarm",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "times",
    // System V and POSIX IPC (private to the container's IPC namespace).
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    // Networking (`socket` has a rule of its own below).
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketpair",
    // System information.
    "getrandom",
    "sysinfo",
    "uname",
    // Architecture-specific entry points (each exists only where its name says).
    "modify_ldt",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "riscv_flush_icache",
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    "s390_runtime_instr",
];

/// `ptrace` and the calls that read or write another process's memory. Before Linux 4.8 a
/// traced process could change its syscall number after seccomp had checked it (a seccomp
/// bypass), so on older kernels these need CAP_SYS_PTRACE like everything else here.
pub const PTRACE_FAMILY: &[&str] = &[
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// Extra syscalls granted with a capability: without the capability the kernel refuses them
/// anyway, with it the container is meant to be able to use them.
pub const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", PTRACE_FAMILY),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `personality` values a program may set: the Linux default, 32-bit mode, UNAME26 (both
/// alone and combined), and 0xffffffff, which only queries. Anything else (READ_IMPLIES_EXEC,
/// ADDR_NO_RANDOMIZE, …) weakens exploit mitigations.
pub const PERSONALITY_VALUES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// Namespace flags refused in `clone` without CAP_SYS_ADMIN:
/// CLONE_NEWNS | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// AF_ALG: the kernel crypto API as a socket family, the door to CVE-2026-31431.
pub const AF_ALG: u64 = 38;
/// AF_VSOCK: host/guest sockets, which would let a container reach a hypervisor's services.
pub const AF_VSOCK: u64 = 40;

/// The built-in profile for a container with no extra capabilities.
pub fn default_profile() -> LinuxSeccomp {
    default_profile_for(&[])
}

/// The built-in profile for a container holding `capabilities` (names such as `CAP_SYS_ADMIN`
/// or `SYS_ADMIN`, any case). Each capability adds the syscalls it governs, as Docker does.
pub fn default_profile_for(capabilities: &[String]) -> LinuxSeccomp {
    let has = |cap: &str| {
        capabilities.iter().any(|given| {
            let given = given.trim().to_ascii_uppercase();
            given == cap || format!("CAP_{given}") == cap
        })
    };
    let sys_admin = has("CAP_SYS_ADMIN");
    let ptrace_safe = kernel_at_least(4, 8);

    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    if ptrace_safe {
        allowed.extend_from_slice(PTRACE_FAMILY);
    }
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            allowed.extend_from_slice(names);
        }
    }
    // A syscall newer than the host's libseccomp cannot be named in a filter; leaving it out
    // means it gets the default EPERM, exactly as on a host whose kernel predates it.
    allowed.retain(|name| super::syscall_is_known(name));
    allowed.sort_unstable();
    allowed.dedup();

    let mut rules = Vec::new();

    // The 32-bit x86 socketcall multiplexer passes the address family behind a pointer that
    // seccomp cannot read, so the AF_ALG/AF_VSOCK refusal below would not hold on that ABI.
    // Docker closes that path with AppArmor/SELinux; slipway has no LSM, so it refuses the
    // multiplexer itself (ENOSYS: it differs from the default EPERM, so libseccomp keeps the rule
    // instead of letting its socket companion rules allow socketcall(SYS_SOCKET)). It must come
    // before the socket rules. 64-bit programs never use it; 32-bit ones lose networking.
    rules.push(rule(&["socketcall"], errno(libc::ENOSYS), vec![]));

    rules.push(rule(&allowed, LinuxSeccompAction::ScmpActAllow, vec![]));

    for value in PERSONALITY_VALUES {
        rules.push(rule(
            &["personality"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, *value, None)],
        ));
    }

    // Every socket family except AF_ALG (38) and AF_VSOCK (40), as in Docker, but written so
    // that the upper half of the 64-bit register cannot smuggle a family past the check: the
    // kernel truncates the argument to an int, so a rule such as "a0 > 40" would allow
    // (1 << 32) | 40, which the kernel reads as AF_VSOCK. Each condition below implies that
    // the upper half is zero. Families up to 63 are covered (the kernel knows 45 today).
    // Conditions on one argument inside one rule would be OR'ed (runc's convention, which
    // `compile` follows), so each range is a rule of its own.
    let masked = |mask_low_bits: u64, value: u64| {
        arg(
            0,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            !mask_low_bits,
            Some(value),
        )
    };
    for condition in [
        arg(0, LinuxSeccompOperator::ScmpCmpLt, AF_ALG, None),
        arg(0, LinuxSeccompOperator::ScmpCmpEq, AF_ALG + 1, None),
        arg(0, LinuxSeccompOperator::ScmpCmpEq, AF_VSOCK + 1, None), // 41
        masked(0x1, 42),                                             // 42..=43
        masked(0x3, 44),                                             // 44..=47
        masked(0xf, 48),                                             // 48..=63
    ] {
        rules.push(rule(
            &["socket"],
            LinuxSeccompAction::ScmpActAllow,
            vec![condition],
        ));
    }

    if sys_admin {
        rules.push(rule(
            &["clone", "clone3"],
            LinuxSeccompAction::ScmpActAllow,
            vec![],
        ));
    } else {
        // New namespaces are refused: they expose kernel code (user namespaces above all) that
        // a container has no business reaching. s390 swaps clone's first two arguments.
        let flags_index = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        rules.push(rule(
            &["clone"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(
                flags_index,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                CLONE_NAMESPACE_FLAGS,
                Some(0),
            )],
        ));
        // clone3 passes its flags in memory, out of seccomp's sight. ENOSYS makes glibc and
        // musl fall back to clone, where the rule above applies.
        rules.push(rule(&["clone3"], errno(libc::ENOSYS), vec![]));
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(libc::EPERM as u32));
    profile.set_architectures(Some(default_architectures()));
    profile.set_syscalls(Some(rules));
    profile
}

/// The architectures a container on this host may use: the native one and the 32-bit ABIs the
/// kernel can also run (so a 32-bit binary is filtered, not let through).
pub fn default_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn errno(value: i32) -> (LinuxSeccompAction, Option<u32>) {
    (LinuxSeccompAction::ScmpActErrno, Some(value as u32))
}

trait IntoAction {
    fn into_action(self) -> (LinuxSeccompAction, Option<u32>);
}
impl IntoAction for LinuxSeccompAction {
    fn into_action(self) -> (LinuxSeccompAction, Option<u32>) {
        (self, None)
    }
}
impl IntoAction for (LinuxSeccompAction, Option<u32>) {
    fn into_action(self) -> (LinuxSeccompAction, Option<u32>) {
        self
    }
}

fn rule(names: &[&str], action: impl IntoAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let (action, errno_ret) = action.into_action();
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|name| name.to_string()).collect());
    rule.set_action(action);
    rule.set_errno_ret(errno_ret);
    if !args.is_empty() {
        rule.set_args(Some(args));
    }
    rule
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let builder = match value_two {
        Some(value_two) => builder.value_two(value_two),
        None => builder,
    };
    // Every field is set or has a default, so building cannot fail.
    builder.build().unwrap_or_default()
}

/// Whether the running kernel is at least `major.minor` (false when uname cannot be read).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain arrays of chars, valid all zero. (nix's uname needs a nix
    // feature slipway does not enable.)
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct it is given and NUL-terminates every field.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    // SAFETY: the field is NUL-terminated (by uname, or by the zeroing) within its array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
    release_at_least(&release, major, minor)
}

/// Whether a kernel release string such as "6.1.0-18-amd64" is at least `major.minor`.
pub(super) fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (Some(have_major), Some(have_minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    (have_major, have_minor) >= (major, minor)
}
