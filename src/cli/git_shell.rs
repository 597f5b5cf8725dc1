//! `slipway git-shell --key NAME --git-socket PATH`: the forced command of every key in the
//! git user's `authorized_keys`. sshd runs it with the client's command in
//! `SSH_ORIGINAL_COMMAND`; only git's push and fetch of an app's repository are let through,
//! and git is not run here: the SSH channel (stdin, stdout, stderr) is handed to the daemon,
//! which runs git as for a push over HTTP and answers with its exit code.
use std::path::PathBuf;

use clap::Args;

use slipway::api::git_ssh::{hand_over, GitService, GitShellRequest};
use slipway::build::app_name::check_app_name;
use slipway::platform::ssh_keys::check_key_name;

#[derive(Debug, Args)]
pub struct GitShellArgs {
    /// The key sshd authenticated (from its authorized_keys line).
    #[arg(long)]
    pub key: String,
    /// The daemon's git socket.
    #[arg(long)]
    pub git_socket: PathBuf,
}

/// What this account is for, said to anyone who asks it for something else.
const ONLY_GIT: &str = "this account only serves `git push` and `git fetch` of slipway apps: add the remote with `slipway git-remote -a APP --ssh git@HOST`, then `git push slipway main`";

/// The service and app of `command` (`git-receive-pack '/shop.git'` and its spellings), or
/// why it is refused.
fn parse_command(command: &str) -> Result<(GitService, String), String> {
    let (program, rest) = command
        .strip_prefix("git ")
        .map(|r| r.trim_start())
        .map(|r| r.split_once(' ').unwrap_or((r, "")))
        .map(|(p, r)| (format!("git-{p}"), r))
        .unwrap_or_else(|| {
            let (p, r) = command.split_once(' ').unwrap_or((command, ""));
            (p.to_string(), r)
        });
    let service = match program.as_str() {
        "git-receive-pack" => GitService::ReceivePack,
        "git-upload-pack" => GitService::UploadPack,
        _ => {
            return Err(format!(
                "{:?} is refused: {ONLY_GIT}",
                command.chars().take(80).collect::<String>()
            ))
        }
    };
    // git quotes the path in single quotes; by hand it may come bare. Anything a shell
    // would read otherwise (more words, quotes inside) is no app.
    let rest = rest.trim();
    let path = match rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(inner) => inner,
        None => rest,
    };
    let app = path
        .strip_prefix("~/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    let app = app.strip_suffix('/').unwrap_or(app);
    let app = app.strip_suffix(".git").unwrap_or(app);
    check_app_name(app).map_err(|_| {
        format!(
            "{:?} names no app: the repository of app APP is APP.git (`slipway git-remote -a APP --ssh git@HOST`)",
            path.chars().take(80).collect::<String>()
        )
    })?;
    Ok((service, app.to_string()))
}

pub fn run(a: GitShellArgs) -> anyhow::Result<u8> {
    let refuse = |message: &str| {
        eprintln!("slipway: {message}");
        Ok(1)
    };
    if check_key_name(&a.key).is_err() {
        return refuse("this key's authorized_keys line is damaged; ask the host's admin to run `slipway keys`");
    }
    let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    if command.trim().is_empty() {
        return refuse(&format!("no interactive shell here: {ONLY_GIT}"));
    }
    let (service, app) = match parse_command(command.trim()) {
        Ok(parsed) => parsed,
        Err(e) => return refuse(&e),
    };
    let request = GitShellRequest {
        key: a.key,
        service,
        app,
    };
    match hand_over(&a.git_socket, &request) {
        Ok(answer) => match (answer.exit_code, answer.error) {
            (Some(code), _) => Ok(u8::try_from(code).unwrap_or(1)),
            (None, Some(e)) => refuse(&e),
            (None, None) => refuse("the daemon gave no answer; push again"),
        },
        Err(e) => refuse(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_spells_its_commands_in_several_ways() {
        for (command, service) in [
            ("git-receive-pack 'shop.git'", GitService::ReceivePack),
            ("git-receive-pack '/shop.git'", GitService::ReceivePack),
            ("git-receive-pack '~/shop.git'", GitService::ReceivePack),
            ("git-receive-pack 'shop'", GitService::ReceivePack),
            ("git receive-pack '/shop.git'", GitService::ReceivePack),
            ("git-upload-pack '/shop.git/'", GitService::UploadPack),
            ("git-upload-pack shop.git", GitService::UploadPack),
        ] {
            assert_eq!(
                parse_command(command),
                Ok((service, "shop".to_string())),
                "{command}"
            );
        }
    }

    #[test]
    fn other_commands_options_and_paths_out_are_refused() {
        for command in [
            "bash",
            "sh -c 'git-receive-pack shop.git'",
            "git-upload-archive 'shop.git'",
            "git-receive-pack '--upload-pack=touch /tmp/x'",
            "git-receive-pack '-shop.git'",
            "git-receive-pack '../shop.git'",
            "git-receive-pack '/srv/other/shop.git'",
            "git-receive-pack 'shop.git' extra",
            "git-receive-pack 'sh'op.git'",
            "git-receive-pack 'shop.git'; id",
            "git-receive-pack ''",
            "git-receive-pack",
            "git receive-pack",
            "git",
            "scp -t /tmp",
        ] {
            assert!(parse_command(command).is_err(), "{command}");
        }
    }
}
