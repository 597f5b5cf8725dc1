//! Loading and checking config.json, and the default spec slipway hands out.
//!
//! Everything that can be checked before a process is forked is checked here, so that bad input
//! fails fast with a clear message and nothing (state dir, cgroup, mount) is left behind.
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, Mount, Spec,
};

use super::error::{Result, RuntimeError};
use super::seccomp;

/// Capabilities Docker grants a container by default; slipway grants the same set.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// /proc and /sys paths hidden from containers, as podman does.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
];

/// /proc paths made read-only, as podman does.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device cgroup rules every container gets after its own (as runc's allowed devices): the
/// nodes the runtime creates, ptys, and mknod (creating a node is harmless; using one is what
/// the rules guard). Appended after the spec's rules, so they win over a leading deny-all.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    use LinuxDeviceType::{B, C};
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"), // null
        rule(C, Some(1), Some(5), "rwm"), // zero
        rule(C, Some(1), Some(7), "rwm"), // full
        rule(C, Some(1), Some(8), "rwm"), // random
        rule(C, Some(1), Some(9), "rwm"), // urandom
        rule(C, Some(5), Some(0), "rwm"), // tty
        rule(C, Some(5), Some(1), "rwm"), // console
        rule(C, Some(5), Some(2), "rwm"), // ptmx
        rule(C, Some(136), None, "rwm"),  // pts
    ]
}

/// The resources to apply: the spec's, with the default device rules and one allow rule per
/// device node the spec asks the runtime to create.
pub fn effective_resources(spec: &Spec) -> Option<LinuxResources> {
    let linux = spec.linux().as_ref()?;
    let mut res = linux.resources().clone()?;
    let mut rules = res.devices().clone().unwrap_or_default();
    rules.extend(default_device_rules());
    for d in linux.devices().iter().flatten() {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(d.typ()));
        r.set_major(Some(d.major()));
        r.set_minor(Some(d.minor()));
        r.set_access(Some("rwm".into()));
        rules.push(r);
    }
    res.set_devices(Some(rules));
    Some(res)
}

/// Read and parse `bundle/config.json`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| RuntimeError::Config {
        path: path.clone(),
        msg: match e.kind() {
            std::io::ErrorKind::NotFound => {
                "not found: every bundle needs a config.json (`slipway-runtime spec` writes one)"
                    .into()
            }
            _ => format!("cannot read: {e}"),
        },
    })?;
    let spec: Spec = serde_json::from_str(&text).map_err(|e| RuntimeError::Config {
        path: path.clone(),
        msg: format!("not a valid OCI runtime spec: {e}"),
    })?;
    Ok(spec)
}

/// The rootfs path, resolved against the bundle when relative.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| RuntimeError::Invalid("config.json has no \"root\"".into()))?;
    let p = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let p = p.canonicalize().map_err(|e| {
        RuntimeError::Invalid(format!(
            "root.path {}: {e}: the bundle's rootfs must exist",
            p.display()
        ))
    })?;
    if !p.is_dir() {
        return Err(RuntimeError::Invalid(format!(
            "root.path {} is not a directory",
            p.display()
        )));
    }
    Ok(p)
}

/// Checks that need no kernel: process, mounts, namespaces, seccomp names.
pub fn validate(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| RuntimeError::Invalid("config.json has no \"process\"".into()))?;
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => {
            return Err(RuntimeError::Invalid(
                "process.args is empty: give the command to run".into(),
            ))
        }
    }
    if !process.cwd().is_absolute() {
        return Err(RuntimeError::Invalid(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        )));
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return Err(RuntimeError::Invalid(format!(
                "mount destination {:?} must be an absolute path",
                m.destination()
            )));
        }
    }
    if let Some(linux) = spec.linux() {
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        let mut seen = Vec::new();
        for ns in &namespaces {
            if seen.contains(&ns.typ()) {
                return Err(RuntimeError::Invalid(format!(
                    "namespace {} is listed twice",
                    ns.typ()
                )));
            }
            seen.push(ns.typ());
            if ns.typ() == LinuxNamespaceType::Time {
                return Err(RuntimeError::Invalid(
                    "time namespaces are not supported: remove it from linux.namespaces".into(),
                ));
            }
            if let Some(p) = ns.path() {
                if !p.exists() {
                    return Err(RuntimeError::Invalid(format!(
                        "namespace path {} for {} does not exist",
                        p.display(),
                        ns.typ()
                    )));
                }
            }
        }
        let new_user = namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
        if new_user
            && (linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
                || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty()))
        {
            return Err(RuntimeError::Invalid(
                "a new user namespace needs linux.uidMappings and linux.gidMappings".into(),
            ));
        }
        if let Some(sysctls) = linux.sysctl() {
            check_sysctls(sysctls, &namespaces)?;
            let hostname = spec.hostname().as_deref().filter(|h| !h.is_empty());
            if let (Some(h), Some(v)) = (hostname, sysctls.get("kernel.hostname")) {
                if h != v {
                    return Err(RuntimeError::Invalid(format!(
                        "hostname {h:?} and sysctl kernel.hostname {v:?} disagree: set the \
                         hostname in one place (the \"hostname\" field)"
                    )));
                }
            }
        }
        if let Some(s) = linux.seccomp() {
            seccomp::validate(s)?;
        }
        if let Some(p) = linux.rootfs_propagation() {
            if !matches!(
                p.as_str(),
                "" | "private"
                    | "rprivate"
                    | "slave"
                    | "rslave"
                    | "shared"
                    | "rshared"
                    | "unbindable"
                    | "runbindable"
            ) {
                return Err(RuntimeError::Invalid(format!(
                    "linux.rootfsPropagation {p:?} is not one of private, slave, shared, unbindable (r-prefixed allowed)"
                )));
            }
        }
    }
    Ok(())
}

/// Sysctls of the ipc namespace, besides `fs.mqueue.*` (the list runc and crun accept).
pub const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Sysctls of the uts namespace.
pub const UTS_SYSCTLS: &[&str] = &["kernel.hostname", "kernel.domainname"];

/// What may be set, for error messages.
const SYSCTL_RULE: &str = "only namespaced sysctls can be set: kernel.msgmax, kernel.msgmnb, \
    kernel.msgmni, kernel.sem, kernel.shmall, kernel.shmmax, kernel.shmmni, \
    kernel.shm_rmid_forced and fs.mqueue.* with an ipc namespace of the container's own, net.* \
    with a network namespace of its own, kernel.hostname and kernel.domainname with a uts \
    namespace of its own";

/// The namespace a sysctl belongs to, or None when it is not namespaced (it is the host's).
fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if UTS_SYSCTLS.contains(&key) {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

/// A sysctl key becomes a path under /proc/sys (dots to slashes): only dot-separated names,
/// none of them empty, and nothing that could walk elsewhere.
fn check_sysctl_key(key: &str) -> Result<()> {
    let problem = if key.is_empty() {
        Some("it is empty")
    } else if key.contains('\0') {
        Some("it contains a NUL byte")
    } else if key.contains('/') {
        Some("it contains '/'")
    } else if key.split('.').any(str::is_empty) {
        Some("it has an empty part (a leading, trailing or doubled '.', or '..')")
    } else if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("it contains spaces or control characters")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(RuntimeError::Invalid(format!(
            "sysctl {key:?} is not a sysctl name: {problem}; write it with dots, as in \
             net.ipv4.ip_unprivileged_port_start"
        ))),
        None => Ok(()),
    }
}

/// Whether the namespace file at `path` is the runtime's own namespace of that type (the
/// host's, from the container's point of view): same device and inode, as runc compares.
fn is_runtime_namespace(path: &Path, typ: LinuxNamespaceType) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    // The type's Display is its /proc/PID/ns file name.
    let own = PathBuf::from("/proc/self/ns").join(typ.to_string());
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|e| {
            RuntimeError::Invalid(format!(
                "namespace path {} for {typ}: cannot stat it ({e}): give the path of a \
                 namespace file such as /proc/PID/ns/{typ}",
                p.display(),
            ))
        })
    };
    let (theirs, ours) = (stat(path)?, stat(&own)?);
    Ok(theirs.dev() == ours.dev() && theirs.ino() == ours.ino())
}

/// Every `linux.sysctl` key must be a namespaced sysctl of a namespace the container has for
/// itself (new, or joined by a path that is not the runtime's own): anything else would be
/// written to the host's /proc/sys.
fn check_sysctls(
    sysctls: &std::collections::HashMap<String, String>,
    namespaces: &[LinuxNamespace],
) -> Result<()> {
    let mut keys: Vec<&String> = sysctls.keys().collect();
    keys.sort();
    let mut own: Vec<(LinuxNamespaceType, bool)> = Vec::new();
    for key in keys {
        check_sysctl_key(key)?;
        let Some(typ) = sysctl_namespace(key) else {
            return Err(RuntimeError::Invalid(format!(
                "sysctl {key} is not namespaced: it would change the host; {SYSCTL_RULE}; \
                 remove it from linux.sysctl"
            )));
        };
        let has_own = match own.iter().find(|(t, _)| *t == typ) {
            Some((_, has_own)) => *has_own,
            None => {
                let has_own = match namespaces.iter().find(|n| n.typ() == typ) {
                    None => false,
                    Some(ns) => match ns.path() {
                        None => true,
                        Some(path) => !is_runtime_namespace(path, typ)?,
                    },
                };
                own.push((typ, has_own));
                has_own
            }
        };
        if !has_own {
            return Err(RuntimeError::Invalid(format!(
                "sysctl {key} belongs to the {typ} namespace, but the container shares the \
                 host's (linux.namespaces has no {typ} namespace of its own): it would change \
                 the host; add a new {typ} namespace to linux.namespaces, or remove the sysctl \
                 ({SYSCTL_RULE})"
            )));
        }
    }
    Ok(())
}

/// The spec that `slipway-runtime spec` writes: runc-compatible, with slipway's defaults for
/// capabilities and masked paths.
pub fn default_spec(rootless: bool) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("slipway".into()));
    let caps: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.iter().copied().collect();
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(caps.clone()));
    lc.set_effective(Some(caps.clone()));
    lc.set_permitted(Some(caps));
    lc.set_inheritable(None);
    lc.set_ambient(None);
    if let Some(p) = spec.process_mut() {
        p.set_capabilities(Some(lc));
        p.set_args(Some(vec!["sh".into()]));
        p.set_terminal(Some(true));
    }
    if let Some(l) = spec.linux_mut() {
        let names: Vec<String> = DEFAULT_CAPABILITIES
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect();
        l.set_seccomp(Some(seccomp::profile::default_profile_for(&names)));
        // Deny every device but the defaults the runtime adds (runc's `spec` does the same).
        let mut deny_all = LinuxDeviceCgroup::default();
        deny_all.set_allow(false);
        deny_all.set_access(Some("rwm".into()));
        let mut res = l.resources().clone().unwrap_or_default();
        res.set_devices(Some(vec![deny_all]));
        l.set_resources(Some(res));
        l.set_masked_paths(Some(
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
        ));
        l.set_readonly_paths(Some(
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ));
    }
    if rootless {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let mut linux = oci_spec::runtime::Linux::rootless(uid, gid);
        linux.set_masked_paths(spec.linux().as_ref().and_then(|l| l.masked_paths().clone()));
        linux.set_seccomp(spec.linux().as_ref().and_then(|l| l.seccomp().clone()));
        linux.set_readonly_paths(
            spec.linux()
                .as_ref()
                .and_then(|l| l.readonly_paths().clone()),
        );
        spec.set_linux(Some(linux));
        spec.set_mounts(Some(oci_spec::runtime::get_rootless_mounts()));
    }
    spec
}

/// Namespaces of the spec as (type, optional path), user namespace first.
pub fn namespaces(spec: &Spec) -> Vec<LinuxNamespace> {
    let mut v: Vec<LinuxNamespace> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    v.sort_by_key(|n| match n.typ() {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 2,
        _ => 1,
    });
    v
}

/// Whether a namespace of this type is in the spec (new or joined).
pub fn has_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    namespaces(spec).iter().any(|n| n.typ() == typ)
}

pub fn mounts(spec: &Spec) -> &[Mount] {
    spec.mounts().as_deref().unwrap_or(&[])
}

/// `KEY=VALUE` lookup in an environment list.
pub fn env_get<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_round_trips_and_validates() {
        let s = default_spec(false);
        let json = serde_json::to_string(&s).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        validate(&back).unwrap();
        let caps = back
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.bounding().as_ref().unwrap().len(),
            DEFAULT_CAPABILITIES.len()
        );
    }

    #[test]
    fn unknown_namespace_and_capability_are_rejected_with_their_name() {
        let mut v = serde_json::to_value(default_spec(false)).unwrap();
        v["linux"]["namespaces"][0]["type"] = "bogus".into();
        let e = serde_json::from_value::<Spec>(v).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let mut v = serde_json::to_value(default_spec(false)).unwrap();
        v["process"]["capabilities"]["bounding"][0] = "CAP_NOPE".into();
        let e = serde_json::from_value::<Spec>(v).unwrap_err().to_string();
        assert!(e.contains("CAP_NOPE"), "{e}");
    }

    /// The default spec (new ipc, uts, net namespaces among others) with `sysctls` and the
    /// namespaces changed by `edit`.
    fn with_sysctls(
        sysctls: &[(&str, &str)],
        edit: impl FnOnce(&mut Vec<serde_json::Value>),
    ) -> Result<()> {
        let mut v = serde_json::to_value(default_spec(false)).unwrap();
        let map: serde_json::Map<String, serde_json::Value> = sysctls
            .iter()
            .map(|(k, val)| (k.to_string(), (*val).into()))
            .collect();
        v["linux"]["sysctl"] = map.into();
        let mut namespaces = v["linux"]["namespaces"].as_array().unwrap().clone();
        edit(&mut namespaces);
        v["linux"]["namespaces"] = namespaces.into();
        validate(&serde_json::from_value(v).unwrap())
    }

    fn without(typ: &'static str) -> impl FnOnce(&mut Vec<serde_json::Value>) {
        move |ns| ns.retain(|n| n["type"] != typ)
    }

    fn joined(typ: &'static str, path: String) -> impl FnOnce(&mut Vec<serde_json::Value>) {
        move |ns| {
            for n in ns.iter_mut().filter(|n| n["type"] == typ) {
                n["path"] = path.clone().into();
            }
        }
    }

    fn message(r: Result<()>) -> String {
        r.expect_err("should be refused").to_string()
    }

    #[test]
    fn namespaced_sysctls_are_accepted_with_their_namespace() {
        with_sysctls(
            &[
                ("kernel.shmmax", "1"),
                ("kernel.msgmnb", "1"),
                ("kernel.shm_rmid_forced", "1"),
                ("fs.mqueue.msg_max", "10"),
                ("net.ipv4.ip_unprivileged_port_start", "0"),
                ("net.core.somaxconn", "1024"),
                ("kernel.domainname", "example"),
            ],
            |_| {},
        )
        .unwrap();
        // The default spec sets the hostname; the sysctl may repeat it.
        with_sysctls(&[("kernel.hostname", "slipway")], |_| {}).unwrap();
        let e = message(with_sysctls(&[("kernel.hostname", "other")], |_| {}));
        assert!(e.contains("disagree"), "{e}");
    }

    #[test]
    fn host_sysctls_are_refused_with_the_rule() {
        for key in [
            "kernel.core_pattern",
            "vm.overcommit_memory",
            "kernel.pid_max",
        ] {
            let e = message(with_sysctls(&[(key, "1")], |_| {}));
            assert!(
                e.contains(&format!("sysctl {key} is not namespaced")),
                "{e}"
            );
            assert!(e.contains("would change the host"), "{e}");
            assert!(e.contains("kernel.shmmax") && e.contains("net.*"), "{e}");
        }
    }

    #[test]
    fn sysctls_need_a_namespace_of_the_containers_own() {
        let e = message(with_sysctls(&[("kernel.shmmax", "1")], without("ipc")));
        assert!(
            e.contains("kernel.shmmax belongs to the ipc namespace"),
            "{e}"
        );
        let e = message(with_sysctls(
            &[("fs.mqueue.queues_max", "1")],
            without("ipc"),
        ));
        assert!(e.contains("ipc namespace"), "{e}");
        let e = message(with_sysctls(
            &[("net.ipv4.ip_forward", "1")],
            without("network"),
        ));
        assert!(
            e.contains("net.ipv4.ip_forward belongs to the net namespace"),
            "{e}"
        );
        let e = message(with_sysctls(&[("kernel.domainname", "x")], without("uts")));
        assert!(e.contains("uts namespace"), "{e}");
        // Joining the runtime's own namespace by path is sharing the host's.
        let e = message(with_sysctls(
            &[("net.ipv4.ip_forward", "1")],
            joined("network", "/proc/self/ns/net".into()),
        ));
        assert!(e.contains("shares the host's"), "{e}");
        let e = message(with_sysctls(
            &[("kernel.sem", "1 2 3 4")],
            joined("ipc", "/proc/self/ns/ipc".into()),
        ));
        assert!(e.contains("shares the host's"), "{e}");
        // Any other namespace file (here: a different inode) is the container's own.
        let other = tempfile::NamedTempFile::new().unwrap();
        with_sysctls(
            &[("net.ipv4.ip_forward", "1")],
            joined("network", other.path().display().to_string()),
        )
        .unwrap();
    }

    #[test]
    fn sysctl_keys_that_are_not_names_are_refused() {
        for key in [
            "net/ipv4/ip_forward",
            "net.ipv4.conf.eth0/../../../kernel.core_pattern",
            "net..ipv4",
            "net.ipv4.",
            ".net.ipv4",
            "net.ipv4.\0x",
            "",
            "net.ipv4 x",
        ] {
            let e = message(with_sysctls(&[(key, "1")], |_| {}));
            assert!(e.contains("is not a sysctl name"), "{key:?}: {e}");
        }
    }

    #[test]
    fn env_lookup() {
        let env = vec!["PATH=/bin".to_string(), "PATHX=1".to_string()];
        assert_eq!(env_get(&env, "PATH"), Some("/bin"));
        assert_eq!(env_get(&env, "HOME"), None);
    }
}
