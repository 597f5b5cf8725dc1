use super::*;

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("test profile parses")
}

fn invalid_message(result: Result<impl std::fmt::Debug, SeccompError>) -> String {
    match result {
        Err(error @ SeccompError::Invalid(_)) => error.to_string(),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

fn names_allowed(profile: &LinuxSeccomp) -> Vec<String> {
    profile
        .syscalls()
        .iter()
        .flatten()
        .filter(|rule| rule.action() == LinuxSeccompAction::ScmpActAllow)
        .flat_map(|rule| rule.names().clone())
        .collect()
}

#[test]
fn misspelled_syscall_is_named_with_its_rule_index() {
    let message = invalid_message(validate(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_ERRNO"},
            {"names":["read","mkdri"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )));
    assert!(
        message.starts_with(
            "seccomp: unknown syscall \"mkdri\" in linux.seccomp.syscalls[1]; check the spelling or remove it"
        ),
        "{message}"
    );
}

#[test]
fn empty_syscall_name_is_refused() {
    let message = invalid_message(compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[""],"action":"SCMP_ACT_KILL"}]}"#,
    )));
    assert!(message.contains("unknown syscall \"\""), "{message}");
}

#[test]
fn syscall_of_another_architecture_is_accepted_and_harmless() {
    // `_llseek` exists on x86 only; a profile for x86_64 alone may still name it.
    let program = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["_llseek","arm_fadvise64_64"],"action":"SCMP_ACT_ERRNO"}]}"#,
    ))
    .expect("compiles");
    assert!(!program.filter.is_empty());
}

#[test]
fn unknown_architecture_is_refused_when_parsing() {
    let parsed: Result<LinuxSeccomp, _> = serde_json::from_str(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_Z80"]}"#,
    );
    assert!(parsed.is_err());
}

#[test]
fn architecture_unknown_to_libseccomp_is_refused() {
    // LoongArch arrived in libseccomp 2.6; only meaningful where the library predates it.
    if ScmpSyscall::from_name_by_arch("read", ScmpArch::Loongarch64).is_ok() {
        return;
    }
    let message = invalid_message(validate(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_LOONGARCH64"]}"#,
    )));
    assert!(message.contains("SCMP_ARCH_LOONGARCH64"), "{message}");
    assert!(message.contains("not supported"), "{message}");
}

#[test]
fn notify_action_and_listener_are_refused() {
    let message = invalid_message(validate(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    )));
    assert!(
        message.contains("SCMP_ACT_NOTIFY is not supported"),
        "{message}"
    );
    assert!(message.contains("linux.seccomp.syscalls[0]"), "{message}");

    let message = invalid_message(validate(&profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#)));
    assert!(
        message.contains("SCMP_ACT_NOTIFY is not supported"),
        "{message}"
    );

    let message = invalid_message(validate(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock"}"#,
    )));
    assert!(message.contains("listenerPath"), "{message}");
    assert!(message.contains("not supported"), "{message}");
}

#[test]
fn argument_index_beyond_five_is_refused() {
    let message = invalid_message(validate(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ioctl"],"action":"SCMP_ACT_ERRNO",
            "args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
    )));
    assert!(
        message.contains("syscalls[0].args[0].index is 6"),
        "{message}"
    );
}

#[test]
fn errno_out_of_range_is_refused() {
    let message = invalid_message(validate(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ioctl"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}]}"#,
    )));
    assert!(message.contains("errnoRet 70000"), "{message}");
}

#[test]
fn wait_killable_flag_is_refused() {
    let message = invalid_message(validate(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#,
    )));
    assert!(message.contains("WAIT_KILLABLE_RECV"), "{message}");
}

#[test]
fn every_operator_compiles() {
    for op in [
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    ] {
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["personality"],
                "action":"SCMP_ACT_ERRNO","args":[{{"index":0,"value":8,"valueTwo":8,"op":"{op}"}}]}}]}}"#
        );
        let program = compile(&profile(&json)).unwrap_or_else(|e| panic!("{op}: {e}"));
        assert!(!program.filter.is_empty(), "{op}");
    }
}

#[test]
fn every_action_and_flag_compiles() {
    let program = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
            "flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "syscalls":[
              {"names":["read"],"action":"SCMP_ACT_ALLOW"},
              {"names":["write"],"action":"SCMP_ACT_LOG"},
              {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
              {"names":["rmdir"],"action":"SCMP_ACT_KILL"},
              {"names":["getppid"],"action":"SCMP_ACT_KILL_THREAD"},
              {"names":["getpgrp"],"action":"SCMP_ACT_KILL_PROCESS"},
              {"names":["getsid"],"action":"SCMP_ACT_TRAP"},
              {"names":["getpgid"],"action":"SCMP_ACT_TRACE","errnoRet":7},
              {"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":38}
            ]}"#,
    ))
    .expect("compiles");
    assert_eq!(
        program.flags,
        (libc::SECCOMP_FILTER_FLAG_TSYNC
            | libc::SECCOMP_FILTER_FLAG_LOG
            | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW) as u32
    );
}

#[test]
fn several_arguments_and_repeated_indexes_compile() {
    // Distinct indexes: one rule (AND). A repeated index: one rule per condition (OR), which
    // libseccomp would otherwise refuse or merge differently.
    compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":0,"value":2,"op":"SCMP_CMP_EQ"},{"index":1,"value":3,"op":"SCMP_CMP_EQ"}]},
            {"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":1,"value":9,"op":"SCMP_CMP_EQ"},{"index":1,"value":15,"op":"SCMP_CMP_EQ"}]}]}"#,
    ))
    .expect("compiles");
}

#[test]
fn default_profile_compiles_within_kernel_limits() {
    let profile = default_profile();
    validate(&profile).expect("the default profile is valid");
    let program = compile(&profile).expect("the default profile compiles");
    assert!(program.filter.len() > 100);
    assert!(program.filter.len() <= MAX_INSTRUCTIONS);
    assert_eq!(program.flags, 0);
}

#[test]
fn default_profile_allows_the_usual_and_refuses_the_privileged() {
    let allowed = names_allowed(&default_profile());
    for name in [
        "read",
        "write",
        "openat",
        "execve",
        "futex",
        "epoll_wait",
        "getpid",
        "mmap",
    ] {
        assert!(
            allowed.iter().any(|n| n == name),
            "{name} should be allowed"
        );
    }
    for name in [
        "mount",
        "umount2",
        "unshare",
        "setns",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "reboot",
        "kexec_load",
        "init_module",
        "finit_module",
        "swapon",
        "io_uring_setup",
        "userfaultfd",
        "open_by_handle_at",
        "pivot_root",
        "chroot",
    ] {
        assert!(
            !allowed.iter().any(|n| n == name),
            "{name} should be refused"
        );
    }
    assert!(allowed.len() > 300, "{} names", allowed.len());
}

#[test]
fn capabilities_add_their_syscalls() {
    let admin = names_allowed(&default_profile_for(&["CAP_SYS_ADMIN".into()]));
    for name in ["mount", "unshare", "setns", "clone3", "sethostname"] {
        assert!(admin.iter().any(|n| n == name), "{name} with CAP_SYS_ADMIN");
    }
    let chroot = names_allowed(&default_profile_for(&["sys_chroot".into()]));
    assert!(chroot.iter().any(|n| n == "chroot"));
    assert!(!chroot.iter().any(|n| n == "mount"));
    compile(&default_profile_for(&[
        "CAP_SYS_ADMIN".into(),
        "CAP_SYS_PTRACE".into(),
    ]))
    .expect("the widened profile compiles");
}

#[test]
fn kernel_release_comparison() {
    assert!(profile::release_at_least("6.1.0-18-amd64", 4, 8));
    assert!(profile::release_at_least("4.10.0", 4, 8));
    assert!(!profile::release_at_least("4.4.0-210-generic", 4, 8));
    assert!(!profile::release_at_least("garbage", 4, 8));
}

#[test]
fn program_bytes_round_trip() {
    let program = compile(&default_profile()).expect("compiles");
    let bytes = program.to_bytes();
    assert_eq!(Program::from_bytes(&bytes), Some(program));
    assert_eq!(Program::from_bytes(&bytes[..bytes.len() - 3]), None);
    assert_eq!(Program::from_bytes(&[1, 0, 0, 0]), None);
    assert_eq!(Program::from_bytes(&[]), None);
}

#[test]
fn cached_compile_reuses_and_repairs_the_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("seccomp-cache");
    let profile = default_profile();
    let fresh = compile(&profile).expect("compiles");

    let first = compile_cached(&profile, &cache).expect("first cached compile");
    assert_eq!(first, fresh);
    let files: Vec<_> = fs::read_dir(&cache).expect("cache dir").collect();
    assert_eq!(files.len(), 1, "one file, no temporaries left");
    let path = files[0].as_ref().expect("entry").path();

    assert_eq!(compile_cached(&profile, &cache).expect("cache hit"), fresh);

    fs::write(&path, b"not a program").expect("corrupt the cache");
    assert_eq!(compile_cached(&profile, &cache).expect("repaired"), fresh);
    assert_eq!(
        Program::from_bytes(&fs::read(&path).expect("read")),
        Some(fresh)
    );

    // A different profile gets a different file.
    compile_cached(&default_profile_for(&["CAP_SYS_ADMIN".into()]), &cache).expect("second");
    assert_eq!(fs::read_dir(&cache).expect("cache dir").count(), 2);
}

#[test]
fn invalid_profile_is_refused_even_with_a_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let message = invalid_message(compile_cached(
        &profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["nope"],"action":"SCMP_ACT_KILL"}]}"#,
        ),
        dir.path(),
    ));
    assert!(message.contains("unknown syscall \"nope\""), "{message}");
}

#[test]
fn installing_an_empty_program_fails_cleanly() {
    assert!(matches!(
        install(&Program::default()),
        Err(SeccompError::EmptyProgram)
    ));
}

#[test]
#[ignore = "prints the default profile's pseudo code"]
fn print_default_profile_pseudo_code() {
    println!("{}", pseudo_code(&default_profile()).expect("exports"));
}

#[test]
fn native_architecture_is_kept_when_the_profile_omits_it() {
    let text = pseudo_code(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_ARM"],
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
    ))
    .expect("exports");
    assert!(text.contains("filter for arch arm "), "{text}");
    #[cfg(target_arch = "x86_64")]
    assert!(text.contains("filter for arch x86_64 "), "{text}");
    #[cfg(target_arch = "aarch64")]
    assert!(text.contains("filter for arch aarch64 "), "{text}");
}
