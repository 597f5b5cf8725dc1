//! Git: the remote of an app (`git-remote`, `deploy-branch`), the hook that deploys a push
//! (`git-hook`, run by git itself), the credential helper that hands git the API token, and
//! the GitHub link (`integrations`).
use std::ffi::OsString;
use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use http::Method;

use slipway::api::client::{Client, Endpoint};
use slipway::api::wire::{AppChange, AppInfo, LinkCreated, LinkRequest};
use slipway::build::app_name::check_app_name;
use slipway::config::Config;
use slipway::platform::git;
use slipway::platform::source_archive::ArchiveLimits;

use super::api::{encode, runtime, AppArg, Style};
use super::deploy::{follow, pack_dir, report_end, upload};

#[derive(Debug, Args)]
pub struct GitRemoteArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// The remote's name.
    #[arg(long, short = 'r', default_value = "slipway")]
    pub remote: String,
    /// Push over SSH to USER@HOST[:PORT] (the git user `scripts/install` made) instead of
    /// HTTP.
    #[arg(long, value_name = "USER@HOST[:PORT]")]
    pub ssh: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployBranchArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// The branch a push deploys; none shows it.
    pub branch: Option<String>,
    /// Go back to the default (`main` or `master`).
    #[arg(long, conflicts_with = "branch")]
    pub reset: bool,
}

#[derive(Debug, Args)]
pub struct GitHookArgs {
    /// The hook git runs (only `pre-receive`).
    pub hook: String,
}

#[derive(Debug, Args)]
pub struct IntegrationsArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[command(subcommand)]
    pub command: Option<IntegrationsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCommand {
    /// Link the app to a GitHub repository: a push to BRANCH deploys it.
    Link {
        #[command(flatten)]
        app: AppArg,
        /// The repository: https://github.com/OWNER/REPO (for a private one,
        /// https://TOKEN@github.com/OWNER/REPO).
        #[arg(long)]
        repo: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// The webhook secret (16 characters or more); one is made and printed when absent.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Remove the link.
    Unlink {
        #[command(flatten)]
        app: AppArg,
    },
}

/// The URL of the daemon's HTTP API, as the CLI reaches it.
fn api_base(config: &Config) -> anyhow::Result<String> {
    if let Some(url) = std::env::var("SLIPWAY_API_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let from_env = std::env::var("SLIPWAY_API_LISTEN")
        .ok()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    let addr = from_env.or(config.api_listen).context(
        "the daemon has no TCP listener for git: set api_listen in /etc/slipway/config.toml (e.g. \"0.0.0.0:7480\"), or push over SSH with --ssh git@HOST",
    )?;
    let host = if addr.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        addr.ip().to_string()
    };
    let scheme = if config.api_tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{host}:{}", addr.port()))
}

/// `slipway git-remote -a APP`: adds (or points) the remote of the repository in the
/// current directory at the app.
pub fn git_remote(client: &Client, config: &Config, a: GitRemoteArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let rt = runtime()?;
    let _: AppInfo = rt.block_on(client.json(
        Method::GET,
        &format!("/v1/apps/{}", encode(&app)),
        None::<&()>,
    ))?;
    let url = match &a.ssh {
        Some(target) => {
            let (user_host, port) = match target.rsplit_once(':') {
                Some((uh, p)) if p.parse::<u16>().is_ok() => (uh, Some(p)),
                _ => (target.as_str(), None),
            };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("ssh://{user_host}{port}/{app}.git")
        }
        None => format!("{}/{app}.git", api_base(config)?),
    };
    let git_in_cwd = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .status()
            .context("running git")
    };
    let exists = std::process::Command::new("git")
        .args(["remote", "get-url", &a.remote])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running git (is this a git repository?)")?
        .success();
    let verb = if exists { "set-url" } else { "add" };
    if !git_in_cwd(&["remote", verb, &a.remote, &url])?.success() {
        bail!("git remote {verb} failed: run this inside a git repository (`git init`)");
    }
    if a.ssh.is_none() {
        // git asks this helper for the password: the API token, never written to .git/config.
        let exe = std::env::current_exe().context("finding the slipway binary")?;
        let helper = format!(
            "!'{}' git-credential",
            exe.display().to_string().replace('\'', r"'\''")
        );
        git_in_cwd(&["config", &format!("credential.{url}.helper"), &helper])?;
    }
    println!("Git remote {} added: {url}", a.remote);
    println!("Deploy with: git push {} main", a.remote);
    Ok(0)
}

/// `slipway git-credential get`: git's credential helper protocol; answers with the API
/// token (SLIPWAY_API_TOKEN, or the token file when readable), nothing otherwise.
pub fn git_credential(config: &Config, operation: &str) -> anyhow::Result<u8> {
    // git writes the request on stdin; it must be read to the end in any case.
    let mut request = String::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        request.push_str(&line);
    }
    if operation != "get" {
        return Ok(0);
    }
    let token = std::env::var("SLIPWAY_API_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| std::fs::read_to_string(&config.token_file).ok())
        .map(|t| t.trim().to_string());
    if let Some(token) = token {
        println!("username=slipway\npassword={token}");
    }
    Ok(0)
}

/// `slipway deploy-branch -a APP [BRANCH | --reset]`.
pub fn deploy_branch(client: &Client, a: DeployBranchArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let rt = runtime()?;
    let path = format!("/v1/apps/{}", encode(&app));
    let info: AppInfo = if a.branch.is_some() || a.reset {
        rt.block_on(client.json(
            Method::PATCH,
            &path,
            Some(&AppChange {
                deploy_branch: Some(a.branch.unwrap_or_default()),
            }),
        ))?
    } else {
        rt.block_on(client.json(Method::GET, &path, None::<&()>))?
    };
    match info.deploy_branch {
        Some(b) => println!("A push to {b} deploys {app}."),
        None => println!("A push to main or master deploys {app}."),
    }
    Ok(0)
}

/// A ref update git hands its pre-receive hook.
#[derive(Debug, PartialEq, Eq)]
struct RefUpdate {
    old: String,
    new: String,
    name: String,
}

fn read_updates(input: impl BufRead) -> anyhow::Result<Vec<RefUpdate>> {
    let mut updates = Vec::new();
    for line in input.lines() {
        let line = line.context("reading the pushed refs")?;
        let mut parts = line.split_whitespace();
        if let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) {
            updates.push(RefUpdate {
                old: old.into(),
                new: new.into(),
                name: name.into(),
            });
        }
    }
    Ok(updates)
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

/// Of the pushed refs, the one that deploys: the app's branch, else `main`, else `master`.
fn deploy_ref<'a>(updates: &'a [RefUpdate], branch: Option<&str>) -> Option<&'a RefUpdate> {
    let wanted: Vec<String> = match branch {
        Some(b) => vec![format!("refs/heads/{b}")],
        None => git::DEFAULT_DEPLOY_BRANCHES
            .iter()
            .map(|b| format!("refs/heads/{b}"))
            .collect(),
    };
    wanted
        .iter()
        .find_map(|w| updates.iter().find(|u| &u.name == w))
}

/// `slipway git-hook pre-receive`, run by `git receive-pack` before it moves any ref: deploys
/// the pushed commit of the deploy branch and fails (so the push is rejected) when the
/// deployment does. What it prints reaches the pusher as `remote:` lines.
pub fn git_hook(config: &Config, a: GitHookArgs) -> anyhow::Result<u8> {
    if a.hook != "pre-receive" {
        bail!("unknown hook {:?}: only pre-receive deploys", a.hook);
    }
    let app = std::env::var("SLIPWAY_GIT_APP")
        .context("SLIPWAY_GIT_APP is not set: this hook runs under the daemon's git service")?;
    check_app_name(&app)?;
    let updates = read_updates(std::io::stdin().lock())?;
    let client = Client::new(Endpoint::Unix(config.socket.clone()));
    let rt = runtime()?;
    let info: AppInfo = rt.block_on(client.json(
        Method::GET,
        &format!("/v1/apps/{}", encode(&app)),
        None::<&()>,
    ))?;
    let deploying = deploy_ref(&updates, info.deploy_branch.as_deref());
    let deploy_branches = info
        .deploy_branch
        .clone()
        .unwrap_or_else(|| "main or master".into());
    for u in &updates {
        if Some(u) == deploying {
            continue;
        }
        let what = u.name.strip_prefix("refs/heads/").unwrap_or(&u.name);
        println!(
            "-----> {what}: kept without deploying (a push to {deploy_branches} deploys {app})"
        );
    }
    let Some(update) = deploying else {
        return Ok(0);
    };
    let branch = update.name.trim_start_matches("refs/heads/").to_string();
    if is_zero(&update.new) {
        println!(" !     Deleting {branch}, the branch that deploys {app}, is refused.");
        return Ok(1);
    }
    if !git::is_commit_id(&update.new) {
        bail!("git gave the hook {:?}, which is no commit id", update.new);
    }
    let was = if is_zero(&update.old) {
        "a new branch".to_string()
    } else {
        format!("was {}", &update.old[..7.min(update.old.len())])
    };
    println!(
        "-----> Deploying {branch} ({}, {was}) to {app}",
        &update.new[..7]
    );
    let source = checkout_pushed(config, &update.new)?;
    let packed = pack_dir(&source.path().join("src"))?;
    drop(source);
    let created = rt.block_on(upload(
        &client,
        &app,
        packed.path(),
        &format!("?commit={}&branch={}", update.new, encode(&branch)),
    ))?;
    drop(packed);
    let id = created.deployment.id;
    if let Some(ahead) = created.queued_behind {
        println!("-----> Deployment {id} is queued: deployment {ahead} of {app} runs first");
    }
    let end = rt.block_on(follow(&client, id))?;
    let code = report_end(id, &app, end);
    if code != 0 {
        println!(" !     Push rejected: {branch} keeps its commit; fix the app and push again");
    }
    let _ = std::io::stdout().flush();
    Ok(code)
}

/// Checks the pushed commit out (submodules included) into a directory of its own, from the
/// objects git has just received and not yet accepted.
fn checkout_pushed(config: &Config, commit: &str) -> anyhow::Result<tempfile::TempDir> {
    let git_dir = match std::env::var_os("GIT_DIR") {
        Some(dir) => std::env::current_dir()?.join(dir),
        None => std::env::current_dir()?,
    };
    let objects_env: Vec<(OsString, OsString)> = [
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_QUARANTINE_PATH",
    ]
    .into_iter()
    .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)))
    .collect();
    let scratch_root = git::checkouts_dir(&config.data_dir);
    std::fs::create_dir_all(&scratch_root)
        .with_context(|| format!("creating {}", scratch_root.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("push-")
        .tempdir_in(&scratch_root)
        .with_context(|| format!("creating a directory in {}", scratch_root.display()))?;
    let n = git::checkout(
        &git_dir,
        commit,
        &scratch.path().join("src"),
        &ArchiveLimits::default(),
        &objects_env,
        None,
    )?;
    if n > 0 {
        println!(
            "-----> Checked out {n} submodule{}",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(scratch)
}

/// `slipway integrations`: show, link, unlink.
pub fn integrations(client: &Client, a: IntegrationsArgs) -> anyhow::Result<u8> {
    let rt = runtime()?;
    match a.command {
        None => {
            let app = a.app.resolve(None)?;
            let info: AppInfo = rt.block_on(client.json(
                Method::GET,
                &format!("/v1/apps/{}", encode(&app)),
                None::<&()>,
            ))?;
            match info.github {
                Some(l) => println!(
                    "{app} is linked to {} (pushes to {} deploy)",
                    git::without_credentials(&l.repo),
                    l.branch
                ),
                None => println!("{app} is linked to no repository: `slipway integrations link -a {app} --repo https://github.com/OWNER/REPO`"),
            }
            Ok(0)
        }
        Some(IntegrationsCommand::Link {
            app,
            repo,
            branch,
            secret,
        }) => {
            let app = app.resolve(Some(&a.app))?;
            let made: LinkCreated = rt.block_on(client.json(
                Method::PUT,
                &format!("/v1/apps/{}/github", encode(&app)),
                Some(&LinkRequest {
                    repo,
                    branch,
                    secret: secret.clone(),
                }),
            ))?;
            let s = Style::stdout();
            println!(
                "{} {app} is linked to {}: pushes to {} deploy.",
                s.green("----->"),
                git::without_credentials(&made.link.repo),
                made.link.branch
            );
            println!("Add a webhook to the repository (Settings → Webhooks):");
            println!("  Payload URL:  http(s)://THIS-HOST{}", made.webhook_path);
            println!("  Content type: application/json");
            if secret.is_none() {
                println!("  Secret:       {}", made.secret);
            } else {
                println!("  Secret:       the one you gave");
            }
            println!("  Events:       just the push event");
            Ok(0)
        }
        Some(IntegrationsCommand::Unlink { app }) => {
            let app = app.resolve(Some(&a.app))?;
            let _: serde_json::Value = rt.block_on(client.json(
                Method::DELETE,
                &format!("/v1/apps/{}/github", encode(&app)),
                None::<&()>,
            ))?;
            println!("{app} is no longer linked.");
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(name: &str) -> RefUpdate {
        RefUpdate {
            old: "0".repeat(40),
            new: "a".repeat(40),
            name: name.into(),
        }
    }

    #[test]
    fn main_deploys_before_master_and_a_set_branch_alone() {
        let both = [update("refs/heads/master"), update("refs/heads/main")];
        assert_eq!(deploy_ref(&both, None).unwrap().name, "refs/heads/main");
        let master = [update("refs/heads/master"), update("refs/tags/v1")];
        assert_eq!(deploy_ref(&master, None).unwrap().name, "refs/heads/master");
        assert!(deploy_ref(&both, Some("production")).is_none());
        let prod = [update("refs/heads/production")];
        assert_eq!(
            deploy_ref(&prod, Some("production")).unwrap().name,
            "refs/heads/production"
        );
        assert!(deploy_ref(&[update("refs/heads/feature")], None).is_none());
    }

    #[test]
    fn pushed_refs_are_read_one_a_line() {
        let input = format!("{} {} refs/heads/main\n\n", "0".repeat(40), "b".repeat(40));
        let updates = read_updates(input.as_bytes()).unwrap();
        assert_eq!(updates.len(), 1);
        assert!(is_zero(&updates[0].old));
        assert_eq!(updates[0].name, "refs/heads/main");
    }
}
