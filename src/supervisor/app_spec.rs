//! The container of one app process: the run stack as the lower layer, the slug above it,
//! an ephemeral upper layer; the stack's unprivileged user, no capabilities, the default
//! seccomp profile, memory and pids limits by size, its own network namespace.
use std::path::Path;

use oci_spec::runtime::Spec;

use crate::runtime::sandbox_spec::{sandboxed_spec, SandboxedProcess};
use crate::stacks::STACK_UID;

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
    let v = sandboxed_spec(&SandboxedProcess {
        rootfs,
        netns,
        hostname: &hostname,
        args: wrap_command(p.command),
        env,
        cwd: "/app",
        uid: STACK_UID,
        memory_bytes: p.memory_bytes,
        pids_limit: p.pids_limit,
    });
    serde_json::from_value(v).expect("valid spec")
}
