//! The OCI spec of a sandboxed process, built with oci-spec's types: what build containers,
//! app containers and one-offs share.
//!
//! Starts from `runtime::spec::default_spec` (namespaces, masked and read-only paths, device
//! rules) and takes away everything else: a non-root user with no capability at all (not even
//! in the bounding set), no_new_privs, the default seccomp profile for no capabilities, memory
//! (without swap) and pids limits, a private /tmp, the host's resolv.conf read-only, and a
//! network namespace the sandbox made (joined by path). In that namespace any port may be
//! bound by the unprivileged user (`net.ipv4.ip_unprivileged_port_start=0`, as Docker does):
//! an app may listen on port 80 without a capability.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCapabilitiesBuilder, LinuxMemoryBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, RootBuilder,
    Spec, UserBuilder,
};

use crate::runtime::seccomp::profile::default_profile_for;
use crate::runtime::spec::default_spec;

/// A host directory or file shown inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub dest: String,
    pub source: PathBuf,
    pub readonly: bool,
}

impl Bind {
    pub fn new(dest: &str, source: &Path, readonly: bool) -> Bind {
        Bind {
            dest: dest.to_string(),
            source: source.to_path_buf(),
            readonly,
        }
    }

    fn mount(&self) -> Mount {
        let mut options = vec!["rbind".to_string(), "nosuid".into(), "nodev".into()];
        if self.readonly {
            options.push("ro".into());
        }
        MountBuilder::default()
            .destination(&self.dest)
            .typ("bind")
            .source(&self.source)
            .options(options)
            .build()
            .expect("a bind mount has every field it needs")
    }
}

/// The process and its limits.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// The stack's unprivileged user (uid = gid).
    pub uid: u32,
    pub hostname: String,
    pub memory_bytes: u64,
    pub pids_limit: i64,
}

/// The spec of `p` with `rootfs` as root, joining the network namespace at `netns`, with
/// `binds` on top of the defaults.
pub fn sandboxed_spec(p: &ProcessSpec, rootfs: &Path, netns: &Path, binds: &[Bind]) -> Spec {
    let mut spec = default_spec(false);
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(false)
            .build()
            .expect("root"),
    ));
    spec.set_hostname(Some(p.hostname.clone()));

    // Never above the host's own hard limit: raising one needs CAP_SYS_RESOURCE.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 1024));
    let nofile = hard.min(65536);
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(false));
    process.set_args(Some(p.args.clone()));
    process.set_env(Some(p.env.clone()));
    process.set_cwd(PathBuf::from(&p.cwd));
    process.set_user(
        UserBuilder::default()
            .uid(p.uid)
            .gid(p.uid)
            .build()
            .expect("user"),
    );
    process.set_rlimits(Some(vec![PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(nofile)
        .hard(nofile)
        .build()
        .expect("rlimit")]));
    let none = std::collections::HashSet::new();
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(none.clone())
            .effective(none.clone())
            .permitted(none.clone())
            .inheritable(none.clone())
            .ambient(none)
            .build()
            .expect("capabilities"),
    ));
    process.set_no_new_privileges(Some(true));
    spec.set_process(Some(process));

    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_seccomp(Some(default_profile_for(&[])));
    linux.set_resources(Some(
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(p.memory_bytes as i64)
                    .swap(p.memory_bytes as i64)
                    .build()
                    .expect("memory"),
            )
            .pids(
                LinuxPidsBuilder::default()
                    .limit(p.pids_limit)
                    .build()
                    .expect("pids"),
            )
            .build()
            .expect("resources"),
    ));
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for ns in namespaces.iter_mut() {
        if ns.typ() == LinuxNamespaceType::Network {
            ns.set_path(Some(netns.to_path_buf()));
        }
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_sysctl(Some(HashMap::from([(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "0".to_string(),
    )])));
    spec.set_linux(Some(linux));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["nosuid".into(), "nodev".into(), "mode=1777".into()])
            .build()
            .expect("tmpfs"),
    );
    let resolv = Path::new("/etc/resolv.conf");
    if resolv.exists() {
        mounts.push(Bind::new("/etc/resolv.conf", resolv, true).mount());
    }
    mounts.extend(binds.iter().map(Bind::mount));
    spec.set_mounts(Some(mounts));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_privileged_is_left() {
        let p = ProcessSpec {
            args: vec!["/bin/true".into()],
            env: vec!["A=1".into()],
            cwd: "/app".into(),
            uid: 10000,
            hostname: "h".into(),
            memory_bytes: 64 << 20,
            pids_limit: 64,
        };
        let binds = [Bind::new("/env", Path::new("/srv/env"), true)];
        // Stands for the namespace the sandbox made (validate checks it exists and is not ours).
        let ns = tempfile::NamedTempFile::new().unwrap();
        let s = sandboxed_spec(&p, Path::new("/r"), ns.path(), &binds);
        let process = s.process().as_ref().unwrap();
        assert_eq!(process.user().uid(), 10000);
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().unwrap();
        assert!(caps.bounding().as_ref().unwrap().is_empty());
        assert!(caps.permitted().as_ref().unwrap().is_empty());
        let linux = s.linux().as_ref().unwrap();
        let mem = linux.resources().as_ref().unwrap().memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        let netns = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(netns.path().as_deref(), Some(ns.path()));
        assert_eq!(
            linux.sysctl().as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        let env = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/env"))
            .unwrap();
        assert!(env.options().as_ref().unwrap().contains(&"ro".to_string()));
        // What slipway-runtime will check before running it.
        crate::runtime::spec::validate(&s).unwrap();
    }
}
