//! The container of one app process: the run stack as the lower layer, the slug above it,
//! an ephemeral upper layer; the stack's unprivileged user, no capabilities, the default
//! seccomp profile, memory and pids limits by size, its own network namespace.
use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::json;

use crate::build::stack::STACK_UID;

/// What the process needs to know about itself.
pub struct AppProcess<'a> {
    pub app: &'a str,
    /// Process type and index, e.g. ("web", 1).
    pub kind: &'a str,
    pub index: u32,
    pub command: &'a str,
    pub port: u16,
    pub release: &'a str,
    pub env: &'a [(String, String)],
    pub memory_bytes: u64,
    pub pids_limit: i64,
}

/// Source `.profile.d/*.sh` and `.profile`, then exec the command, as Heroku does.
pub fn wrap_command(command: &str) -> Vec<String> {
    vec![
        "/bin/bash".into(),
        "-c".into(),
        format!(
            "for f in /app/.profile.d/*.sh; do [ -r \"$f\" ] && . \"$f\"; done; [ -r /app/.profile ] && . /app/.profile; exec {command}"
        ),
    ]
}

pub fn spec(p: &AppProcess, rootfs: &Path, netns: &Path) -> Spec {
    let mut v =
        serde_json::to_value(crate::runtime::spec::default_spec(false)).expect("spec serializes");
    let hostname = format!("{}-{}-{}", p.app, p.kind, p.index);
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/app".into(),
        "LANG=C.UTF-8".into(),
        format!("PORT={}", p.port),
        format!("APP={}", p.app),
        format!("CONTAINER={}-{}", p.kind, p.index),
        format!("CONTAINER_VERSION={}", p.release),
        format!("CONTAINER_MEMORY={}", p.memory_bytes),
        "STACK=slipway-run".into(),
        format!("HOSTNAME={hostname}"),
    ];
    env.extend(p.env.iter().map(|(k, val)| format!("{k}={val}")));
    v["root"] = json!({"path": rootfs, "readonly": false});
    v["hostname"] = hostname.into();
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = json!(wrap_command(p.command));
    v["process"]["env"] = json!(env);
    v["process"]["cwd"] = "/app".into();
    v["process"]["user"] = json!({"uid": STACK_UID, "gid": STACK_UID});
    v["process"]["capabilities"] =
        json!({"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []});
    v["process"]["noNewPrivileges"] = true.into();
    v["linux"]["seccomp"] =
        serde_json::to_value(crate::runtime::seccomp::profile::default_profile_for(&[]))
            .expect("json");
    v["linux"]["resources"] = json!({
        "memory": {"limit": p.memory_bytes, "swap": p.memory_bytes},
        "pids": {"limit": p.pids_limit},
    });
    for ns in v["linux"]["namespaces"].as_array_mut().expect("namespaces") {
        if ns["type"] == "network" {
            ns["path"] = json!(netns);
        }
    }
    let mounts = v["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    if Path::new("/etc/resolv.conf").exists() {
        mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro", "nosuid", "nodev"]}));
    }
    serde_json::from_value(v).expect("valid spec")
}
