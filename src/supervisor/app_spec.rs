//! The container of one app process: the run stack as the lowest layer, the slug above it, an
//! ephemeral upper layer (the sandbox's); the stack's unprivileged user, no capabilities, the
//! default seccomp profile, memory and pids limits by size, its own network namespace, and the
//! environment Heroku and Scalingo give a process.
use std::path::Path;

use crate::sandbox::{Container, ProcessSpec};
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
    /// The size name (S, M, L, …), for CONTAINER_SIZE.
    pub size: &'a str,
    pub env: &'a [(String, String)],
    pub memory_bytes: u64,
    pub pids_limit: i64,
}

/// What runs: bash sources `.profile.d/*.sh` and `.profile`, then runs the command line as
/// Heroku and Scalingo do (`bash -c`), so compound commands (`cd x && ./y`, pipes, `exec`)
/// work. The command is an argument of the script, never pasted into it.
///
/// SIGTERM reaches the whole process group (the init passes it on); bash itself only notes
/// it (`trap : TERM`, a handler, so the command still gets the default action) and waits,
/// so the container's exit status is the command's own: 0 for an app that exits cleanly on
/// SIGTERM, 143 for one the signal killed.
pub fn command_args(command: &str) -> Vec<String> {
    const SCRIPT: &str = concat!(
        "trap : TERM; ",
        "for f in /app/.profile.d/*.sh; do [ -r \"$f\" ] && . \"$f\"; done; ",
        "if [ -r /app/.profile ]; then . /app/.profile; fi; ",
        "eval \"$1\""
    );
    vec![
        "/bin/bash".into(),
        "-c".into(),
        SCRIPT.into(),
        "slipway-run".into(),
        command.into(),
    ]
}

/// The container of `p`: `slug` (the unpacked slug layer) over `stack` (the run stack).
pub fn container(p: &AppProcess, slug: &Path, stack: &Path) -> Container {
    let hostname = format!("{}-{}-{}", p.app, p.kind, p.index);
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/app".into(),
        "LANG=C.UTF-8".into(),
        format!("PORT={}", p.port),
        format!("APP={}", p.app),
        format!("CONTAINER={}-{}", p.kind, p.index),
        format!("CONTAINER_VERSION={}", p.release),
        format!("CONTAINER_SIZE={}", p.size),
        format!("CONTAINER_MEMORY={}", p.memory_bytes),
        "STACK=slipway-run".into(),
        format!("HOSTNAME={hostname}"),
    ];
    env.extend(p.env.iter().map(|(k, val)| format!("{k}={val}")));
    Container {
        layers: vec![slug.to_path_buf(), stack.to_path_buf()],
        binds: Vec::new(),
        process: ProcessSpec {
            args: command_args(p.command),
            env,
            cwd: "/app".into(),
            uid: STACK_UID,
            hostname,
            memory_bytes: p.memory_bytes,
            pids_limit: p.pids_limit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_an_argument_not_part_of_the_script() {
        let args = command_args("cd public && exec python3 -m http.server $PORT; echo '\"'");
        assert_eq!(args.len(), 5);
        assert!(!args[2].contains("http.server"));
        assert_eq!(
            args[4],
            "cd public && exec python3 -m http.server $PORT; echo '\"'"
        );
    }

    #[test]
    fn bash_runs_compound_commands_after_the_profile() {
        let d = tempfile::tempdir().unwrap();
        // The script's paths are /app's; run it against a copy with /app rewritten.
        let args = command_args("cd / && echo \"$GREETING\" $(pwd) | tr a-z A-Z");
        let script = args[2].replace("/app", &d.path().display().to_string());
        std::fs::create_dir(d.path().join(".profile.d")).unwrap();
        std::fs::write(d.path().join(".profile.d/a.sh"), "export GREETING=hi\n").unwrap();
        let out = std::process::Command::new("bash")
            .args(["-c", &script, "slipway-run", &args[4]])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "HI /\n");
    }
}
