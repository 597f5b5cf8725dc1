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

    #[test]
    fn env_lookup() {
        let env = vec!["PATH=/bin".to_string(), "PATHX=1".to_string()];
        assert_eq!(env_get(&env, "PATH"), Some("/bin"));
        assert_eq!(env_get(&env, "HOME"), None);
    }
}
