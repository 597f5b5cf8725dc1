//! seccomp filters installed for real: a forked child sets no_new_privs, installs a compiled
//! program and makes syscalls; the parent checks what the kernel did (errno, SIGSYS).
//!
//! The child runs only syscalls and `install` (allocation-free) between fork and _exit, so the
//! test harness's other threads cannot deadlock it.
use oci_spec::runtime::LinuxSeccomp;
use slipway::runtime::seccomp::{self, Program};

/// Exit code of a child whose filter could not be installed.
const INSTALL_FAILED: i32 = 100;

enum Outcome {
    Exited(i32),
    Signaled(i32),
}

/// Fork, install `program` in the child, run `check` there and exit with its result.
fn run_filtered(program: &Program, check: fn() -> i32) -> Outcome {
    // SAFETY: the child only makes syscalls and exits; it never returns into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        unsafe {
            // No core files from the SIGSYS tests.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            // Required to install a filter without CAP_SYS_ADMIN, and what containers get.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(INSTALL_FAILED);
            }
            if seccomp::install(program).is_err() {
                libc::_exit(INSTALL_FAILED);
            }
            libc::_exit(check());
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid failed");
    if libc::WIFEXITED(status) {
        Outcome::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Outcome::Signaled(libc::WTERMSIG(status))
    } else {
        panic!("unexpected wait status {status:#x}");
    }
}

fn assert_checks_pass(program: &Program, check: fn() -> i32) {
    match run_filtered(program, check) {
        Outcome::Exited(0) => {}
        Outcome::Exited(INSTALL_FAILED) => panic!("the filter could not be installed"),
        Outcome::Exited(code) => panic!("check {code} failed in the filtered child"),
        Outcome::Signaled(signal) => panic!("the filtered child died of signal {signal}"),
    }
}

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("test profile parses")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A raw syscall's result: Ok(return value) or Err(errno).
fn sys(result: libc::c_long) -> Result<libc::c_long, i32> {
    if result == -1 {
        Err(errno())
    } else {
        Ok(result)
    }
}

#[test]
fn errno_action_returns_the_chosen_errno() {
    let program = seccomp::compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC"],"syscalls":[
            {"names":["getcwd","mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    ))
    .expect("compiles");
    assert_checks_pass(&program, || unsafe {
        let mut buf = [0u8; 256];
        if sys(libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len())) != Err(libc::EACCES) {
            return 1;
        }
        // The path does not matter: the kernel never sees the call.
        let path = c"/nonexistent-slipway-seccomp-test/dir";
        if sys(libc::mkdir(path.as_ptr(), 0o755) as libc::c_long) != Err(libc::EACCES) {
            return 2;
        }
        // Everything else still works.
        if libc::getpid() <= 0 {
            return 3;
        }
        0
    });
}

#[test]
fn masked_argument_rule_refuses_only_matching_values() {
    // personality(READ_IMPLIES_EXEC | anything) refused with EINVAL; other values pass.
    let program = seccomp::compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":22,
             "args":[{"index":0,"value":4194304,"valueTwo":4194304,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
    ))
    .expect("compiles");
    assert_checks_pass(&program, || unsafe {
        const READ_IMPLIES_EXEC: libc::c_long = 0x0400000;
        const ADDR_NO_RANDOMIZE: libc::c_long = 0x0040000;
        if sys(libc::syscall(libc::SYS_personality, READ_IMPLIES_EXEC)) != Err(libc::EINVAL) {
            return 1;
        }
        if sys(libc::syscall(
            libc::SYS_personality,
            READ_IMPLIES_EXEC | ADDR_NO_RANDOMIZE,
        )) != Err(libc::EINVAL)
        {
            return 2;
        }
        if sys(libc::syscall(libc::SYS_personality, ADDR_NO_RANDOMIZE)).is_err() {
            return 3;
        }
        // The previous call reached the kernel: it reports the persona it set.
        if sys(libc::syscall(libc::SYS_personality, 0 as libc::c_long)) != Ok(ADDR_NO_RANDOMIZE) {
            return 4;
        }
        0
    });
}

#[test]
fn several_arguments_in_one_rule_must_all_match() {
    // kill(0, 0) is refused with EDOM; a call matching only one of the two conditions is not.
    let program = seccomp::compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":33,
             "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":1,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
    ))
    .expect("compiles");
    assert_checks_pass(&program, || unsafe {
        if sys(libc::kill(0, 0) as libc::c_long) != Err(libc::EDOM) {
            return 1;
        }
        // Signal 0 to ourselves by pid: only the second condition holds, so the kernel answers.
        if sys(libc::kill(libc::getpid(), 0) as libc::c_long) != Ok(0) {
            return 2;
        }
        0
    });
}

#[test]
fn kill_process_action_kills_with_sigsys() {
    let program = seccomp::compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getppid"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
    ))
    .expect("compiles");
    let outcome = run_filtered(&program, || unsafe {
        libc::syscall(libc::SYS_getppid);
        1
    });
    match outcome {
        Outcome::Signaled(signal) => assert_eq!(signal, libc::SIGSYS),
        Outcome::Exited(code) => panic!("the child exited with {code} instead of dying"),
    }
}

#[test]
fn default_profile_refuses_namespaces_and_mounts_but_runs_programs() {
    let program = seccomp::compile(&seccomp::default_profile()).expect("compiles");
    assert_checks_pass(&program, || unsafe {
        if libc::syscall(libc::SYS_getpid) != libc::getpid() as libc::c_long {
            return 1;
        }
        if sys(libc::unshare(libc::CLONE_NEWUSER) as libc::c_long) != Err(libc::EPERM) {
            return 2;
        }
        let mount = libc::mount(
            c"none".as_ptr(),
            c"/mnt".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        );
        if sys(mount as libc::c_long) != Err(libc::EPERM) {
            return 3;
        }
        if sys(libc::syscall(libc::SYS_setns, 0, 0)) != Err(libc::EPERM) {
            return 4;
        }
        if sys(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)) != Err(libc::EPERM) {
            return 5;
        }
        if sys(libc::syscall(libc::SYS_bpf, 0, 0, 0)) != Err(libc::EPERM) {
            return 6;
        }
        // clone with a namespace flag is refused; clone3 reports ENOSYS so libcs fall back.
        let cloned = libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        );
        if cloned == 0 {
            libc::_exit(0);
        }
        if sys(cloned) != Err(libc::EPERM) {
            return 7;
        }
        if sys(libc::syscall(libc::SYS_clone3, 0, 0)) != Err(libc::ENOSYS) {
            return 8;
        }
        // A plain fork (clone without namespace flags) works.
        let child = libc::fork();
        if child == 0 {
            libc::_exit(42);
        }
        let mut status = 0;
        if child < 0 || libc::waitpid(child, &mut status, 0) != child {
            return 9;
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 42 {
            return 10;
        }
        // Sockets: ordinary families work; AF_VSOCK and AF_ALG do not, including with the
        // family hidden behind high bits the kernel would truncate away.
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return 11;
        }
        libc::close(fd);
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return 12;
        }
        libc::close(fd);
        for family in [libc::AF_VSOCK as u64, libc::AF_ALG as u64] {
            for smuggled in [family, (1u64 << 32) | family] {
                let result = libc::syscall(libc::SYS_socket, smuggled, libc::SOCK_STREAM, 0);
                if sys(result) != Err(libc::EPERM) {
                    if result >= 0 {
                        libc::close(result as i32);
                    }
                    return 13;
                }
            }
        }
        // personality: querying and the usual values pass, READ_IMPLIES_EXEC does not.
        if sys(libc::syscall(
            libc::SYS_personality,
            0xffff_ffff as libc::c_long,
        ))
        .is_err()
        {
            return 14;
        }
        if sys(libc::syscall(libc::SYS_personality, 0x0400000)) != Err(libc::EPERM) {
            return 15;
        }
        0
    });
}

#[test]
fn default_profile_with_sys_admin_allows_mount_namespaces() {
    let program = seccomp::compile(&seccomp::default_profile_for(&["CAP_SYS_ADMIN".into()]))
        .expect("compiles");
    // Running as root: unshare(CLONE_NEWNS) now reaches the kernel and succeeds; the new mount
    // namespace dies with the child.
    assert_checks_pass(&program, || unsafe {
        if sys(libc::unshare(libc::CLONE_NEWNS) as libc::c_long) != Ok(0) {
            return 1;
        }
        if sys(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)) != Err(libc::EPERM) {
            return 2;
        }
        0
    });
}

/// A 32-bit syscall through `int 0x80`, which seccomp sees as the x86 (i386) architecture.
#[cfg(target_arch = "x86_64")]
unsafe fn int80(number: u32, arg0: u32) -> i32 {
    let result: i32;
    // rbx cannot be named as an operand, so the first argument is swapped in and out of it.
    std::arch::asm!(
        "xchg {arg0}, rbx",
        "int 0x80",
        "xchg {arg0}, rbx",
        arg0 = inout(reg) arg0 as u64 => _,
        inlateout("eax") number as i32 => result,
        in("ecx") 0u32,
        out("r8") _, out("r9") _, out("r10") _, out("r11") _,
    );
    result
}

#[cfg(target_arch = "x86_64")]
#[test]
fn default_profile_filters_the_32_bit_abi_too() {
    const I386_GETPID: u32 = 20;
    const I386_SOCKETCALL: u32 = 102;
    const I386_UNSHARE: u32 = 310;
    // Kernels built without IA32 emulation have no such ABI to filter.
    let probe = run_unfiltered(|| unsafe { i32::from(int80(I386_GETPID, 0) == libc::getpid()) });
    let ia32 = matches!(probe, Outcome::Exited(1));
    if !ia32 {
        eprintln!("skipped: this kernel has no IA32 emulation");
        return;
    }
    let program = seccomp::compile(&seccomp::default_profile()).expect("compiles");
    assert_checks_pass(&program, || unsafe {
        if int80(I386_GETPID, 0) != libc::getpid() {
            return 1;
        }
        if int80(I386_UNSHARE, libc::CLONE_NEWUSER as u32) != -libc::EPERM {
            return 2;
        }
        // The multiplexer hides socket families from seccomp, so it is refused outright.
        if int80(I386_SOCKETCALL, 1) != -libc::ENOSYS {
            return 3;
        }
        0
    });
}

#[cfg(target_arch = "x86_64")]
fn run_unfiltered(check: fn() -> i32) -> Outcome {
    // SAFETY: as in run_filtered.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        unsafe { libc::_exit(check()) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        Outcome::Exited(libc::WEXITSTATUS(status))
    } else {
        Outcome::Signaled(libc::WTERMSIG(status))
    }
}

/// Compile time and size of the default profile, and the cost of a cache hit. Run with
/// `cargo test --release --test seccomp -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, prints numbers"]
fn measure_default_profile() {
    use std::time::Instant;
    let profile = seccomp::default_profile();
    let mut compile_times = Vec::new();
    let mut length = 0;
    for _ in 0..50 {
        let start = Instant::now();
        let program = seccomp::compile(&profile).expect("compiles");
        compile_times.push(start.elapsed().as_micros());
        length = program.filter.len();
    }
    let mut profile_times = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        let _ = seccomp::default_profile();
        profile_times.push(start.elapsed().as_micros());
    }
    let dir = tempfile::tempdir().expect("temp dir");
    seccomp::compile_cached(&profile, dir.path()).expect("fills the cache");
    let mut hit_times = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        seccomp::compile_cached(&profile, dir.path()).expect("cache hit");
        hit_times.push(start.elapsed().as_micros());
    }
    let median = |times: &mut Vec<u128>| {
        times.sort_unstable();
        times[times.len() / 2]
    };
    println!(
        "default profile: {} rules, {length} BPF instructions; compile median {} µs; \
         building the profile median {} µs; cache hit median {} µs",
        profile.syscalls().as_ref().map_or(0, |rules| rules.len()),
        median(&mut compile_times),
        median(&mut profile_times),
        median(&mut hit_times),
    );
}
