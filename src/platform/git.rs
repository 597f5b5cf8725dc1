//! The apps' git repositories and the checkout of one commit into a build's source.
//!
//! Every app has a bare repository, `DATA_DIR/git/APP.git`, that `git push` writes to (over
//! HTTP or SSH) and that a linked GitHub repository is fetched into. A deployment of a commit
//! checks it out, with its submodules, into the deployment's own directory.
//!
//! Everything in a repository is the app owner's, so:
//! * Objects are checked as they arrive (`receive.fsckObjects`): tree entries such as `.git`,
//!   `..` or names with a slash are refused before anything is stored.
//! * Sizes are bounded before a byte is written: the commit's entry count and the sum of its
//!   blob sizes (from `ls-tree -l`, submodules included) against the limits of an uploaded
//!   archive, so a repository of one large blob named a thousand times cannot fill the disk.
//! * A checkout writes only below its destination: `checkout-index` never writes through a
//!   symlink it made, and a submodule's directory is made by walking real directories only.
//! * Submodule URLs come from the app's `.gitmodules`: only `https://`, `http://` and
//!   `git://` are fetched (`protocol.allow=never` keeps `file://`, `ext::` and ssh helpers
//!   out), every operand follows `--`, and git never prompts. Submodules are cloned, never
//!   updated with `git submodule`, so a `.gitmodules` `update = !command` runs nothing.
//! * The user's and the system's git config are not read: the platform's git behaves the
//!   same on every host.
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::source_archive::ArchiveLimits;
use crate::sys::child::{self, Output, Supervised};

/// The branches a push deploys when the app names none (Heroku's: `main` and `master`).
pub const DEFAULT_DEPLOY_BRANCHES: [&str; 2] = ["main", "master"];

/// Longest one git command may take (a clone of a large submodule included).
const GIT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Nesting of submodules within submodules.
const MAX_SUBMODULE_DEPTH: usize = 4;

/// Submodules in one checkout, all levels together.
const MAX_SUBMODULES: usize = 50;

/// The environment a hook gets from `git receive-pack` (and the platform's own config for
/// it): a command run for another repository (a submodule) must not inherit it.
const REPOSITORY_ENV: [&str; 11] = [
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_PARAMETERS",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_PREFIX",
    "GIT_NAMESPACE",
    "GIT_COMMON_DIR",
];

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {action} failed: {detail}")]
    Failed { action: String, detail: String },
    #[error("{0}")]
    Refused(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, GitError>;

/// Where the apps' repositories live.
pub fn repos_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("git")
}

/// Where a push's commit is checked out for a moment (emptied by the daemon at its start).
pub fn checkouts_dir(data_dir: &Path) -> PathBuf {
    repos_dir(data_dir).join(".checkouts")
}

/// The repository of `app` (a checked app name).
pub fn repo_dir(data_dir: &Path, app: &str) -> PathBuf {
    repos_dir(data_dir).join(format!("{app}.git"))
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
pub fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A branch name as git accepts it (`git check-ref-format --branch`), minus what would read
/// as an option or need quoting: at most 200 characters of letters, digits and `._/-`.
pub fn check_branch_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("/.");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "branch name {:?} is not allowed: use letters, digits, `.`, `_`, `-` and `/` (at most 200), not starting with `-`, `.` or `/`",
            name.chars().take(100).collect::<String>()
        ))
    }
}

/// A git command with the platform's settings: no user or system config, no prompts, only
/// network transports that run no helper program.
pub fn git() -> Command {
    let mut cmd = Command::new("git");
    for var in REPOSITORY_ENV {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .args([
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.https.allow=always",
            "-c",
            "protocol.http.allow=always",
            "-c",
            "protocol.git.allow=always",
            "-c",
            "advice.detachedHead=false",
            "-c",
            "core.symlinks=true",
        ]);
    cmd
}

/// Runs `cmd` to the end under the git deadline; its stdout, or why it failed.
fn run(cmd: &mut Command, action: &str) -> Result<Vec<u8>> {
    let done = child::run(
        cmd,
        Supervised {
            output: Output::Capture,
            timeout: Some(GIT_TIMEOUT),
            ..Default::default()
        },
    )
    .map_err(|e| GitError::Failed {
        action: action.to_string(),
        detail: format!("git could not start: {e}; install git"),
    })?;
    if done.success() {
        return Ok(done.stdout);
    }
    let stderr = String::from_utf8_lossy(&done.stderr);
    let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut detail = last[last.len().saturating_sub(3)..].join("; ");
    if done.timed_out {
        detail = format!("timed out after {} s; {detail}", GIT_TIMEOUT.as_secs());
    }
    Err(GitError::Failed {
        action: action.to_string(),
        detail,
    })
}

/// Makes the bare repository at `dir` unless it exists. Force pushes are allowed (as on
/// Heroku); received objects are checked.
pub fn ensure_repo(dir: &Path) -> Result<()> {
    if dir.join("HEAD").is_file() {
        return Ok(());
    }
    let parent = dir.parent().expect("a repository has a parent");
    std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
        action: "creating",
        path: parent.to_path_buf(),
        source,
    })?;
    // Made aside and renamed: a half-made repository is never found at its name.
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(parent)
        .map_err(|source| GitError::Io {
            action: "creating a directory in",
            path: parent.to_path_buf(),
            source,
        })?;
    run(
        git()
            .args(["init", "--quiet", "--bare", "--initial-branch=main", "--"])
            .arg(tmp.path()),
        "init",
    )?;
    for (key, value) in [
        ("receive.fsckObjects", "true"),
        ("receive.denyNonFastForwards", "false"),
        ("core.logAllRefUpdates", "true"),
        ("gc.autoDetach", "false"),
    ] {
        run(
            git()
                .arg("--git-dir")
                .arg(tmp.path())
                .args(["config", key, value]),
            "config",
        )?;
    }
    let made = tmp.keep();
    std::fs::rename(&made, dir).or_else(|e| {
        let _ = std::fs::remove_dir_all(&made);
        // Another request made it meanwhile: theirs is as good.
        if dir.join("HEAD").is_file() {
            Ok(())
        } else {
            Err(GitError::Io {
                action: "renaming a new repository to",
                path: dir.to_path_buf(),
                source: e,
            })
        }
    })
}

/// The commit `rev` names in the repository `git_dir`.
pub fn resolve_commit(git_dir: &Path, rev: &str) -> Result<String> {
    let out = run(
        git()
            .arg("--git-dir")
            .arg(git_dir)
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}")),
        "rev-parse",
    )
    .map_err(|_| GitError::Refused(format!("{rev} names no commit of the repository")))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Fetches `branch` of `url` into `git_dir` (as `refs/remotes/linked/BRANCH`): the commit it
/// points at.
pub fn fetch_branch(git_dir: &Path, url: &str, branch: &str) -> Result<String> {
    check_url(url, "repository")?;
    check_branch_name(branch).map_err(GitError::Refused)?;
    let local = format!("refs/remotes/linked/{branch}");
    let (plain, auth) = split_credentials(url);
    run(
        git()
            .envs(auth)
            .arg("--git-dir")
            .arg(git_dir)
            .args([
                "fetch",
                "--quiet",
                "--no-tags",
                "--force",
                "--recurse-submodules=no",
                "--",
                &plain,
            ])
            .arg(format!("+refs/heads/{branch}:{local}")),
        &format!("fetch of {branch} from {plain}"),
    )?;
    resolve_commit(git_dir, &local)
}

/// The URL without a `user:password@` part, for messages.
pub fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// `url` without its `user:password@`, and the environment that hands them to git as an
/// `Authorization` header instead: a command line is readable by every local user
/// (`/proc/PID/cmdline`), a process's environment only by its owner.
fn split_credentials(url: &str) -> (String, Vec<(String, String)>) {
    let plain = without_credentials(url);
    let userinfo = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo);
    let Some(userinfo) = userinfo else {
        return (plain, Vec::new());
    };
    let decoded = percent_decode(userinfo);
    let pair = if decoded.contains(':') {
        decoded
    } else {
        format!("{decoded}:")
    };
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair);
    let env = vec![
        ("GIT_CONFIG_COUNT".into(), "1".into()),
        ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
        (
            "GIT_CONFIG_VALUE_0".into(),
            format!("Authorization: Basic {basic}"),
        ),
    ];
    (plain, env)
}

/// `%XX` escapes decoded (as URLs carry user names and passwords); others kept.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL the platform fetches from: https, http or git, printable, no spaces.
pub fn check_url(url: &str, what: &str) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    let ok = ["https://", "http://", "git://"]
        .iter()
        .any(|s| lower.starts_with(s) && url.len() > s.len())
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(GitError::Refused(format!(
            "{what} URL {:?} is not allowed: give an https://, http:// or git:// URL (at most 2048 characters, no spaces)",
            without_credentials(&url.chars().take(200).collect::<String>())
        )))
    }
}

/// What a checkout may still write.
struct Budget {
    bytes: u64,
    entries: u64,
    submodules: usize,
}

/// One entry of `git ls-tree -r -l`.
struct TreeEntry {
    mode: String,
    id: String,
    size: Option<u64>,
    path: String,
}

/// Checks `commit` of `git_dir` out into `dest` (an empty or missing directory), submodules
/// included, within `limits`. `objects_env` is extra environment for the commands on
/// `git_dir` itself (a push's quarantined objects); `base_url` is the URL the repository came
/// from, which relative submodule URLs are resolved against. Returns how many submodules
/// were checked out.
pub fn checkout(
    git_dir: &Path,
    commit: &str,
    dest: &Path,
    limits: &ArchiveLimits,
    objects_env: &[(OsString, OsString)],
    base_url: Option<&str>,
) -> Result<usize> {
    let mut budget = Budget {
        bytes: limits.max_unpacked_bytes,
        entries: limits.max_entries,
        submodules: MAX_SUBMODULES,
    };
    let scratch = tempfile::Builder::new()
        .prefix("slipway-checkout-")
        .tempdir()
        .map_err(|source| GitError::Io {
            action: "creating a temporary directory in",
            path: std::env::temp_dir(),
            source,
        })?;
    checkout_level(
        git_dir,
        commit,
        dest,
        objects_env,
        base_url,
        scratch.path(),
        0,
        &mut budget,
    )?;
    Ok(MAX_SUBMODULES - budget.submodules)
}

#[allow(clippy::too_many_arguments)]
fn checkout_level(
    git_dir: &Path,
    commit: &str,
    dest: &Path,
    objects_env: &[(OsString, OsString)],
    base_url: Option<&str>,
    scratch: &Path,
    depth: usize,
    budget: &mut Budget,
) -> Result<()> {
    let repo = || {
        let mut cmd = git();
        cmd.arg("--git-dir").arg(git_dir);
        cmd.envs(objects_env.iter().map(|(k, v)| (k, v)));
        cmd
    };
    if !is_commit_id(commit) {
        return Err(GitError::Refused(format!(
            "{commit:?} is not a full commit id"
        )));
    }
    let entries = list_tree(&mut repo(), commit)?;
    let mut gitlinks = Vec::new();
    for e in &entries {
        budget.entries = budget.entries.checked_sub(1).ok_or_else(|| {
            GitError::Refused(format!(
                "commit {commit} has too many files (more than the limit of entries of a source); leave generated files and dependencies out of the repository"
            ))
        })?;
        budget.bytes = budget.bytes.checked_sub(e.size.unwrap_or(0)).ok_or_else(|| {
            GitError::Refused(format!(
                "commit {commit} holds more bytes than a source may (the unpacked limit); leave large files out of the repository"
            ))
        })?;
        if e.mode == "160000" {
            gitlinks.push(e);
        }
    }
    std::fs::create_dir_all(dest).map_err(|source| GitError::Io {
        action: "creating",
        path: dest.to_path_buf(),
        source,
    })?;
    let index = scratch.join(format!("index-{depth}-{}", budget.submodules));
    run(
        repo()
            .env("GIT_INDEX_FILE", &index)
            .args(["read-tree", "--end-of-options", commit]),
        "read-tree",
    )?;
    run(
        repo()
            .env("GIT_INDEX_FILE", &index)
            .arg("--work-tree")
            .arg(dest)
            .args(["checkout-index", "--all", "--force"]),
        "checkout",
    )?;
    let _ = std::fs::remove_file(&index);
    if gitlinks.is_empty() {
        return Ok(());
    }
    if depth >= MAX_SUBMODULE_DEPTH {
        return Err(GitError::Refused(format!(
            "submodules nest deeper than {MAX_SUBMODULE_DEPTH} levels"
        )));
    }
    let urls = submodule_urls(&mut repo(), commit)?;
    for link in gitlinks {
        budget.submodules = budget.submodules.checked_sub(1).ok_or_else(|| {
            GitError::Refused(format!(
                "the source has more than {MAX_SUBMODULES} submodules"
            ))
        })?;
        let Some(url) = urls.get(&link.path) else {
            return Err(GitError::Refused(format!(
                "submodule {} has no URL in .gitmodules; add it (`git submodule add URL {}`)",
                link.path, link.path
            )));
        };
        let url = absolute_submodule_url(url, base_url, &link.path)?;
        check_url(&url, &format!("submodule {}", link.path))?;
        let clone = scratch.join(format!("sub-{}.git", budget.submodules));
        let (plain, auth) = split_credentials(&url);
        run(
            git()
                .envs(auth)
                .args(["clone", "--quiet", "--bare", "--no-tags", "--"])
                .arg(&plain)
                .arg(&clone),
            &format!("clone of submodule {} from {plain}", link.path),
        )?;
        if resolve_commit(&clone, &link.id).is_err() {
            return Err(GitError::Refused(format!(
                "submodule {}: commit {} is not in {}; push it there first",
                link.path,
                link.id,
                without_credentials(&url)
            )));
        }
        let sub_dest = real_dir_below(dest, &link.path)?;
        checkout_level(
            &clone,
            &link.id,
            &sub_dest,
            &[],
            Some(&url),
            scratch,
            depth + 1,
            budget,
        )?;
        let _ = std::fs::remove_dir_all(&clone);
    }
    Ok(())
}

/// Every entry of the commit's tree, recursively.
fn list_tree(cmd: &mut Command, commit: &str) -> Result<Vec<TreeEntry>> {
    let out = run(
        cmd.args([
            "ls-tree",
            "-r",
            "-l",
            "-z",
            "--full-tree",
            "--end-of-options",
        ])
        .arg(commit),
        "ls-tree",
    )?;
    let mut entries = Vec::new();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let record = String::from_utf8_lossy(record);
        let (meta, path) = record
            .split_once('\t')
            .ok_or_else(|| GitError::Refused(format!("unexpected ls-tree line {record:?}")))?;
        let mut fields = meta.split_whitespace();
        let (Some(mode), Some(_kind), Some(id), Some(size)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(GitError::Refused(format!(
                "unexpected ls-tree line {record:?}"
            )));
        };
        entries.push(TreeEntry {
            mode: mode.to_string(),
            id: id.to_string(),
            size: size.parse().ok(),
            path: path.to_string(),
        });
    }
    Ok(entries)
}

/// Path → URL of the submodules `.gitmodules` of `commit` declares.
fn submodule_urls(cmd: &mut Command, commit: &str) -> Result<HashMap<String, String>> {
    let out = run(
        cmd.args(["config", "-z", "--list", "--blob"])
            .arg(format!("{commit}:.gitmodules")),
        "reading .gitmodules",
    )
    .map_err(|_| {
        GitError::Refused(
            "the source has submodules but no readable .gitmodules; add them with `git submodule add URL PATH`"
                .into(),
        )
    })?;
    let mut paths = HashMap::new();
    let mut urls = HashMap::new();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let record = String::from_utf8_lossy(record);
        let Some((key, value)) = record.split_once('\n') else {
            continue;
        };
        let Some(rest) = key.strip_prefix("submodule.") else {
            continue;
        };
        if let Some(name) = rest.strip_suffix(".path") {
            paths.insert(name.to_string(), value.to_string());
        } else if let Some(name) = rest.strip_suffix(".url") {
            urls.insert(name.to_string(), value.to_string());
        }
    }
    Ok(paths
        .into_iter()
        .filter_map(|(name, path)| urls.remove(&name).map(|url| (path, url)))
        .collect())
}

/// A submodule URL made absolute: `../lib.git` is resolved against the URL the repository
/// came from, as `git submodule` does.
fn absolute_submodule_url(url: &str, base: Option<&str>, path: &str) -> Result<String> {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return Ok(url.to_string());
    }
    let Some(base) = base else {
        return Err(GitError::Refused(format!(
            "submodule {path} has the relative URL {url:?}, which means nothing for a pushed repository; give its absolute https:// URL in .gitmodules"
        )));
    };
    let mut base = base.trim_end_matches('/').to_string();
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            match base.rfind('/') {
                Some(i) if !base[..i].ends_with('/') => base.truncate(i),
                _ => {
                    return Err(GitError::Refused(format!(
                        "submodule {path}: {url:?} climbs above {base}"
                    )))
                }
            }
            rest = r;
        } else {
            break;
        }
    }
    Ok(format!("{base}/{rest}"))
}

/// `dest/rel` as a real directory: every part of `rel` that exists must be a directory (not
/// a link); missing parts are made.
fn real_dir_below(dest: &Path, rel: &str) -> Result<PathBuf> {
    let mut at = dest.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(GitError::Refused(format!(
                "submodule path {rel:?} is not allowed"
            )));
        }
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(GitError::Refused(format!(
                    "submodule path {rel:?} goes through {}, which is not a directory",
                    at.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|source| GitError::Io {
                    action: "creating",
                    path: at.clone(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(GitError::Io {
                    action: "reading",
                    path: at,
                    source,
                })
            }
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare repository whose one commit holds `files` (path, content) and a link
    /// `out -> /etc`: its commit id.
    fn repo_with(dir: &Path, files: &[(&str, &str)]) -> String {
        let work = dir.join("work");
        for (path, text) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::os::unix::fs::symlink("/etc", work.join("out")).unwrap();
        let git_in = |args: &[&str]| {
            let out = git()
                .current_dir(&work)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git_in(&["init", "-q"]);
        git_in(&["add", "-A"]);
        git_in(&["commit", "-q", "-m", "x"]);
        git_in(&["rev-parse", "HEAD"])
    }

    #[test]
    fn a_checkout_is_bounded_before_anything_is_written_and_keeps_links_as_links() {
        let d = tempfile::tempdir().unwrap();
        let commit = repo_with(
            d.path(),
            &[
                ("a.txt", &"a".repeat(1000)),
                ("dir/b.txt", &"b".repeat(1000)),
            ],
        );
        let git_dir = d.path().join("work/.git");
        let limits = |bytes, entries| ArchiveLimits {
            max_archive_bytes: 1 << 20,
            max_unpacked_bytes: bytes,
            max_entries: entries,
        };
        for (bytes, entries, says) in [(1500, 100, "bytes"), (1 << 20, 2, "too many files")] {
            let dest = d.path().join(format!("dest-{bytes}-{entries}"));
            let e = checkout(&git_dir, &commit, &dest, &limits(bytes, entries), &[], None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
            assert!(!dest.exists(), "{} was written", dest.display());
        }
        let dest = d.path().join("dest");
        assert_eq!(
            checkout(&git_dir, &commit, &dest, &limits(1 << 20, 100), &[], None).unwrap(),
            0
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("dir/b.txt"))
                .unwrap()
                .len(),
            1000
        );
        // The link is checked out as a link, never followed.
        let link = std::fs::symlink_metadata(dest.join("out")).unwrap();
        assert!(link.file_type().is_symlink());
        assert!(!dest.join("passwd").exists());
        // Only full commit ids.
        assert!(checkout(&git_dir, "HEAD", &dest, &limits(1 << 20, 100), &[], None).is_err());
    }

    #[test]
    fn commit_ids_are_full_lower_case_hex() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0123456789abcdef".repeat(4)));
        assert!(!is_commit_id(&"A".repeat(40)));
        assert!(!is_commit_id("abc123"));
        assert!(!is_commit_id(&format!("{}g", "a".repeat(39))));
    }

    #[test]
    fn branch_names_exclude_options_and_traversal() {
        for good in ["main", "master", "release/2.1", "feature_x-y"] {
            assert!(check_branch_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-f",
            "--upload-pack=x",
            "a..b",
            "/main",
            "main/",
            "a b",
            "x.lock",
            "a//b",
            "a/.b",
            "ma$in",
            "ma\nin",
        ] {
            assert!(check_branch_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_submodule_urls_resolve_against_the_origin() {
        let base = Some("https://github.com/acme/shop.git");
        assert_eq!(
            absolute_submodule_url("../lib.git", base, "lib").unwrap(),
            "https://github.com/acme/lib.git"
        );
        assert_eq!(
            absolute_submodule_url("../../other/lib", base, "lib").unwrap(),
            "https://github.com/other/lib"
        );
        assert!(absolute_submodule_url("../../../x", base, "lib").is_err());
        assert!(absolute_submodule_url("../lib.git", None, "lib").is_err());
        assert_eq!(
            absolute_submodule_url("https://x.org/a.git", None, "a").unwrap(),
            "https://x.org/a.git"
        );
    }

    #[test]
    fn only_network_urls_without_helpers_are_fetched() {
        for good in [
            "https://github.com/a/b.git",
            "http://127.0.0.1:9/x",
            "git://h/x",
        ] {
            assert!(check_url(good, "x").is_ok(), "{good}");
        }
        for bad in [
            "file:///etc",
            "ext::sh -c touch% /tmp/pwned",
            "ssh://-oProxyCommand=x/y",
            "/srv/repo.git",
            "--upload-pack=touch /tmp/x",
            "https://",
            "https://a b",
        ] {
            assert!(check_url(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_go_to_a_header_not_the_command_line() {
        let (plain, env) = split_credentials("https://ghp_abc%21@github.com/a/b.git");
        assert_eq!(plain, "https://github.com/a/b.git");
        let header = &env
            .iter()
            .find(|(k, _)| k == "GIT_CONFIG_VALUE_0")
            .unwrap()
            .1;
        // base64("ghp_abc!:")
        assert_eq!(header, "Authorization: Basic Z2hwX2FiYyE6");
        let (plain, env) = split_credentials("https://github.com/a/b.git");
        assert_eq!(plain, "https://github.com/a/b.git");
        assert!(env.is_empty());
    }

    #[test]
    fn credentials_are_left_out_of_messages() {
        assert_eq!(
            without_credentials("https://user:secret@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(without_credentials("git://h/x"), "git://h/x");
    }
}
