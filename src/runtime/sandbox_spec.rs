//! The spec of an unprivileged, sandboxed process: what build containers and app containers
//! share. Starts from `spec::default_spec` (namespaces, masked paths, device rules) and takes
//! away everything else: a non-root user with no capability at all (not even in the bounding
//! set), no_new_privs, the default seccomp profile for no capabilities, memory (without swap)
//! and pids limits, a private /tmp, the host's resolv.conf read-only, and an existing network
//! namespace (set up by the caller through CNI).
use std::path::Path;

use serde_json::{json, Value};

pub struct SandboxedProcess<'a> {
    pub rootfs: &'a Path,
    pub netns: &'a Path,
    pub hostname: &'a str,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: &'a str,
    pub uid: u32,
    pub memory_bytes: u64,
    pub pids_limit: i64,
}

/// The spec as JSON, for the caller to add its own mounts before parsing it.
pub fn sandboxed_spec(p: &SandboxedProcess) -> Value {
    let mut v = serde_json::to_value(super::spec::default_spec(false)).expect("spec serializes");
    // Never above the host's own hard limit: raising one needs CAP_SYS_RESOURCE.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 1024));
    let nofile = hard.min(65536);
    v["root"] = json!({"path": p.rootfs, "readonly": false});
    v["hostname"] = p.hostname.into();
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = json!(p.args);
    v["process"]["env"] = json!(p.env);
    v["process"]["cwd"] = p.cwd.into();
    v["process"]["user"] = json!({"uid": p.uid, "gid": p.uid});
    v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": nofile, "hard": nofile}]);
    v["process"]["capabilities"] =
        json!({"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []});
    v["process"]["noNewPrivileges"] = true.into();
    v["linux"]["seccomp"] =
        serde_json::to_value(super::seccomp::profile::default_profile_for(&[])).expect("json");
    v["linux"]["resources"]["memory"] = json!({"limit": p.memory_bytes, "swap": p.memory_bytes});
    v["linux"]["resources"]["pids"] = json!({"limit": p.pids_limit});
    for ns in v["linux"]["namespaces"].as_array_mut().expect("namespaces") {
        if ns["type"] == "network" {
            ns["path"] = json!(p.netns);
        }
    }
    let mounts = v["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    if Path::new("/etc/resolv.conf").exists() {
        mounts.push(bind(
            "/etc/resolv.conf",
            Path::new("/etc/resolv.conf"),
            true,
        ));
    }
    v
}

/// A bind mount entry (nosuid, nodev; read-only if asked).
pub fn bind(dest: &str, source: &Path, ro: bool) -> Value {
    let mut options = vec!["rbind", "nosuid", "nodev"];
    if ro {
        options.push("ro");
    }
    json!({"destination": dest, "type": "bind", "source": source, "options": options})
}
