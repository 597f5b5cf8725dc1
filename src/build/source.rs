//! Where buildpacks come from: a directory, a git repository (optionally at
//! a `#ref`), or a tarball, as named by `BUILDPACK_URL` or a line of
//! `.buildpacks` (the conventions of Heroku, Scalingo and Dokku).
//!
//! Fetching uses the `git` and `curl` binaries and caches each source in
//! `<cache_dir>/<16 hex digits of sha256(spec)>/`. A fetch goes to a
//! temporary directory next to it and is renamed into place only once it is
//! known to be a buildpack, so a half-fetched or broken source is never
//! reused. Git sources checked out at a branch (or at the default branch)
//! are fetched again every time, since the branch may have moved; tags,
//! commits and tarballs are fetched once.
//!
//! Specs come from users (config vars, files in the app), so they never
//! reach a command line where they could be read as options: a spec may not
//! start with `-`, git gets `--` before its operands, and curl only speaks
//! http, https and file (and follows redirects to http and https only).
//! Tarballs are extracted with the same hardened extractor as slugs.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::archive::{extract_tar, remove_tree, ArchiveError, ExtractOptions};
use crate::sys::child::{self, Output, Supervised};
use crate::sys::io::{at, PathError};

/// Longest time one `git` command may take.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest time a tarball download may take (curl `--max-time`).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest tarball downloaded (curl `--max-filesize`).
pub const MAX_DOWNLOAD_BYTES: u64 = 512 * 1024 * 1024;
/// Largest buildpack a tarball may unpack to.
pub const MAX_UNPACKED_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Lines of a tool's error output quoted in an error.
const STDERR_LINES: usize = 5;
/// Hex digits of the spec's sha256 that name its cache directory.
const KEY_LEN: usize = 16;
const TMP_PREFIX: &str = ".tmp-";
const SOURCE_FORMS: &str = "https://…, http://…, git://…, ssh://…, file://…, git@host:path, a directory, or a .tgz/.tar.gz/.tar tarball URL";
/// The forms an app may use when local buildpacks are not allowed.
const URL_FORMS: &str = "https://…, http://…, git://…, ssh://… or git@host:path, each with an optional #ref, or a .tgz/.tar.gz/.tar tarball URL";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What can go wrong with buildpack sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("empty buildpack source; give one of: {SOURCE_FORMS}")]
    Empty,
    #[error("buildpack source {spec:?}: {problem}; give one of: {SOURCE_FORMS}")]
    BadSpec { spec: String, problem: String },
    #[error("buildpack source {spec:?}: {path} does not exist; check the path (relative paths start at {base})")]
    NotFound {
        spec: String,
        path: PathBuf,
        base: PathBuf,
    },
    #[error("buildpack source {spec:?}: #{reference} given, but {what} has no branches or tags; remove the #ref")]
    RefNotApplicable {
        spec: String,
        reference: String,
        what: &'static str,
    },
    #[error("buildpack source {spec:?} names a path on the build host, which an app may not use; give a buildpack URL instead ({URL_FORMS}), for example by pushing the buildpack to a git server, or have the operator allow local buildpacks (slipway build --allow-local-buildpacks)")]
    LocalNotAllowed { spec: String },
    /// The cause is part of the message (and not a `source`, which error reports would print
    /// a second time).
    #[error(".buildpacks line {line}: {cause}")]
    InFile {
        line: usize,
        cause: Box<SourceError>,
    },
    #[error("config var {name}: {cause}")]
    InConfigVar {
        name: &'static str,
        cause: Box<SourceError>,
    },
    #[error("{tool} not found ({source}); run scripts/install-deps")]
    ToolMissing {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("could not fetch buildpack {spec} with {tool}: {detail}; check the URL and #ref, and that this host can reach it")]
    FetchFailed {
        spec: String,
        tool: &'static str,
        detail: String,
    },
    #[error("{spec} is not a buildpack: {problem}; a buildpack needs executable bin/detect and bin/compile at its top (or under one top-level folder of a tarball)")]
    NotABuildpack { spec: String, problem: String },
    #[error("buildpack tarball {spec}: {source}")]
    Archive {
        spec: String,
        #[source]
        source: ArchiveError,
    },
    #[error(transparent)]
    Io(#[from] PathError),
}

type Result<T> = std::result::Result<T, SourceError>;

/// What buildpack sources that the app owns (its `.buildpacks`, its `BUILDPACK_URL` config
/// var) may name: the operator's choice, passed into the builder. By default only URLs; a
/// buildpack the operator names itself (`slipway build --buildpack`) is not subject to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildpackPolicy {
    /// Also directories, repositories and tarballs on the build host (bare paths and
    /// `file://` URLs).
    pub allow_local: bool,
}

impl BuildpackPolicy {
    /// Every source form: for buildpacks the operator names.
    pub const OPERATOR: BuildpackPolicy = BuildpackPolicy { allow_local: true };
}

/// Where a buildpack comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildpackSource {
    /// A directory on this host, used where it is.
    Dir(PathBuf),
    /// A git repository; `reference` is a branch, tag or commit.
    Git {
        url: String,
        reference: Option<String>,
    },
    /// A tar archive (gzip-compressed or not), over http(s) or `file://`.
    Tarball { url: String },
}

impl fmt::Display for BuildpackSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildpackSource::Dir(path) => write!(f, "{}", path.display()),
            BuildpackSource::Git {
                url,
                reference: Some(reference),
            } => write!(f, "{url}#{reference}"),
            BuildpackSource::Git { url, .. } => write!(f, "{url}"),
            BuildpackSource::Tarball { url } => write!(f, "{url}"),
        }
    }
}

/// True when the path part of a URL (before `?`) names a tarball.
fn has_tarball_suffix(url: &str) -> bool {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    [".tgz", ".tar.gz", ".tar"]
        .iter()
        .any(|s| path.ends_with(s))
}

/// A working tree (`.git` inside) or a bare repository.
fn is_git_repo(dir: &Path) -> bool {
    dir.join(".git").exists() || is_bare_git_repo(dir)
}

/// A bare repository: git's own files at the top, no working tree.
fn is_bare_git_repo(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

/// `user@host:path`, git's scp-like syntax for ssh.
fn is_scp_like(spec: &str) -> bool {
    let Some((user_host, path)) = spec.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    word(user) && word(host) && !path.is_empty() && !path.starts_with("//")
}

/// Branch, tag or commit names: what git accepts, minus what could be
/// taken for an option or a path trick.
fn check_reference(spec: &str, reference: &str) -> Result<()> {
    let problem = if reference.is_empty() {
        Some("the #ref after '#' is empty")
    } else if reference.len() > 255 {
        Some("the #ref is longer than 255 characters")
    } else if reference.starts_with('-') {
        Some("the #ref starts with '-'")
    } else if reference.contains("..") || reference.contains("@{") {
        Some("the #ref contains '..' or '@{'")
    } else if reference
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        Some("the #ref contains a character git does not allow in names (space, ~ ^ : ? * [ \\)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(SourceError::BadSpec {
            spec: spec.into(),
            problem: problem.into(),
        }),
        None => Ok(()),
    }
}

impl BuildpackSource {
    /// `https://…`, `http://…`, `git://…`, `file://…`, `git@host:path`, a local directory (absolute or relative to `base`), a tarball (`.tgz`, `.tar.gz`, `.tar` by URL path suffix); `#ref` selects a branch, tag or commit for git. A `file://` URL to a directory that is a git repo is Git; to a tarball is Tarball; to a plain directory is Dir.
    ///
    /// `ssh://…` is git too. A local directory that is a git repository
    /// becomes Git when a `#ref` is given (else its files are used as they
    /// are); a local tarball file becomes a `file://` Tarball.
    ///
    /// Every form is accepted: this is for a buildpack the operator names. Sources the app
    /// owns go through [`BuildpackSource::parse_with`].
    pub fn parse(spec: &str, base: &Path) -> Result<BuildpackSource> {
        Self::parse_with(spec, base, BuildpackPolicy::OPERATOR)
    }

    /// [`BuildpackSource::parse`] under `policy`: without `allow_local`, bare paths and
    /// `file://` URLs are refused before anything on the host is looked at, so that an app
    /// can neither use nor probe the build host's files.
    pub fn parse_with(spec: &str, base: &Path, policy: BuildpackPolicy) -> Result<BuildpackSource> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(SourceError::Empty);
        }
        let bad = |problem: &str| SourceError::BadSpec {
            spec: spec.into(),
            problem: problem.into(),
        };
        if spec.starts_with('-') {
            return Err(bad("it starts with '-'"));
        }
        if spec.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("it contains spaces or control characters"));
        }
        let (location, reference) = match spec.split_once('#') {
            Some((location, reference)) => {
                check_reference(spec, reference)?;
                (location, Some(reference.to_string()))
            }
            None => (spec, None),
        };
        if location.is_empty() {
            return Err(bad("nothing before the '#'"));
        }
        let lower = location.to_ascii_lowercase();
        let no_ref = |what: &'static str| -> Result<()> {
            match &reference {
                Some(reference) => Err(SourceError::RefNotApplicable {
                    spec: spec.into(),
                    reference: reference.clone(),
                    what,
                }),
                None => Ok(()),
            }
        };
        let git = || BuildpackSource::Git {
            url: location.to_string(),
            reference: reference.clone(),
        };

        for scheme in ["https://", "http://", "git://", "ssh://"] {
            if let Some(rest) = lower.strip_prefix(scheme) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(bad("the URL has no host"));
                }
                if scheme.starts_with("http") && has_tarball_suffix(location) {
                    no_ref("a tarball")?;
                    return Ok(BuildpackSource::Tarball {
                        url: location.to_string(),
                    });
                }
                return Ok(git());
            }
        }
        if lower.contains("://") && !lower.starts_with("file://") {
            return Err(bad("unsupported URL scheme"));
        }
        if is_scp_like(location) {
            return Ok(git());
        }
        // Everything from here on names something on this host.
        if !policy.allow_local {
            return Err(SourceError::LocalNotAllowed { spec: spec.into() });
        }
        if lower.starts_with("file://") {
            let rest = &location["file://".len()..];
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path, as in file:///srv/buildpacks/python",
                ));
            }
            let path = PathBuf::from(path);
            if has_tarball_suffix(location) {
                no_ref("a tarball")?;
                return Ok(BuildpackSource::Tarball {
                    url: location.to_string(),
                });
            }
            if !path.is_dir() {
                return Err(SourceError::NotFound {
                    spec: spec.into(),
                    path,
                    base: base.to_path_buf(),
                });
            }
            if is_git_repo(&path) {
                return Ok(git());
            }
            no_ref("a plain directory (not a git repository)")?;
            return Ok(BuildpackSource::Dir(path));
        }

        let path = if Path::new(location).is_absolute() {
            PathBuf::from(location)
        } else {
            base.join(location)
        };
        if path.is_file() && has_tarball_suffix(location) {
            no_ref("a tarball")?;
            return Ok(BuildpackSource::Tarball {
                url: format!("file://{}", path.display()),
            });
        }
        if !path.is_dir() {
            return Err(SourceError::NotFound {
                spec: spec.into(),
                path,
                base: base.to_path_buf(),
            });
        }
        match &reference {
            Some(reference) if is_git_repo(&path) => Ok(BuildpackSource::Git {
                url: format!("file://{}", path.display()),
                reference: Some(reference.clone()),
            }),
            Some(reference) => Err(SourceError::RefNotApplicable {
                spec: spec.into(),
                reference: reference.clone(),
                what: "a plain directory (not a git repository)",
            }),
            // A bare repository has no working tree to use as a buildpack: clone its HEAD.
            None if is_bare_git_repo(&path) => Ok(BuildpackSource::Git {
                url: format!("file://{}", path.display()),
                reference: None,
            }),
            None => Ok(BuildpackSource::Dir(path)),
        }
    }

    /// The cache directory name of this source: 16 hex digits of the
    /// sha256 of its spec (as [`fmt::Display`] writes it).
    pub fn cache_key(&self) -> String {
        let digest = Sha256::digest(self.to_string().as_bytes());
        hex::encode(digest)[..KEY_LEN].to_string()
    }

    /// Fetch into `cache_dir/<sha256 of the spec, 16 hex>/` (temp dir + rename; reuse when present, except for git branch refs which are re-fetched), using the `git` and `curl` binaries (curl with --fail --location --max-time, and --proto =http,https,file), and return the buildpack dir. Must contain bin/detect and bin/compile (error says what is missing). Tarballs may wrap everything in one top-level folder: strip it. Errors say what could not be fetched and why (stderr of git/curl, last lines).
    ///
    /// A [`BuildpackSource::Dir`] is checked and returned as it is, not
    /// copied. A re-fetched branch replaces the cached checkout by rename:
    /// a build still running from the old one should have its own copy.
    pub fn fetch(&self, cache_dir: &Path) -> Result<PathBuf> {
        if let BuildpackSource::Dir(dir) = self {
            check_buildpack(&self.to_string(), dir)?;
            return Ok(dir.clone());
        }
        fs::create_dir_all(cache_dir).map_err(at("creating", cache_dir))?;
        let dest = cache_dir.join(self.cache_key());
        if dest.is_dir() && check_buildpack(&self.to_string(), &dest).is_ok() {
            let moving_branch = matches!(self, BuildpackSource::Git { .. }) && on_branch(&dest);
            if !moving_branch {
                return Ok(dest);
            }
        }
        let work = cache_dir.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            self.cache_key(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&work).map_err(at("creating", &work))?;
        let result = self
            .fetch_into(&work)
            .and_then(|tree| {
                check_buildpack(&self.to_string(), &tree)?;
                Ok(tree)
            })
            .and_then(|tree| install(&tree, &dest, cache_dir));
        let _ = remove_tree(&work);
        result.map(|()| dest)
    }

    /// Fetches into `work` (an empty directory) and returns the buildpack's
    /// root inside it.
    fn fetch_into(&self, work: &Path) -> Result<PathBuf> {
        match self {
            BuildpackSource::Dir(dir) => Ok(dir.clone()),
            BuildpackSource::Git { url, reference } => {
                let tree = work.join("tree");
                git_clone(&self.to_string(), url, reference.as_deref(), &tree)?;
                Ok(tree)
            }
            BuildpackSource::Tarball { url } => {
                let spec = self.to_string();
                let download = work.join("download");
                curl_download(&spec, url, &download)?;
                let tree = work.join("tree");
                fs::create_dir(&tree).map_err(at("creating", &tree))?;
                unpack_tarball(&spec, &download, &tree)?;
                single_top_level_dir(&tree)
            }
        }
    }
}

/// `.buildpacks`: one source per line, blank lines and '#' comments ignored, \r stripped.
/// The file is the app's, so its sources are parsed under the operator's `policy`.
pub fn parse_buildpacks_file(
    text: &str,
    base: &Path,
    policy: BuildpackPolicy,
) -> Result<Vec<BuildpackSource>> {
    let mut sources = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.replace('\r', "");
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let source =
            BuildpackSource::parse_with(line, base, policy).map_err(|e| SourceError::InFile {
                line: index + 1,
                cause: Box::new(e),
            })?;
        sources.push(source);
    }
    Ok(sources)
}

/// Checks that `dir` holds executable `bin/detect` and `bin/compile`.
fn check_buildpack(spec: &str, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut not_executable = Vec::new();
    for name in ["bin/detect", "bin/compile"] {
        match fs::metadata(dir.join(name)) {
            Ok(meta) if meta.is_file() => {
                if meta.permissions().mode() & 0o111 == 0 {
                    not_executable.push(name);
                }
            }
            _ => missing.push(name),
        }
    }
    let problem = if !missing.is_empty() {
        format!("it has no {}", missing.join(" and no "))
    } else if !not_executable.is_empty() {
        format!(
            "{} is not executable (chmod +x it in the buildpack)",
            not_executable.join(" and ")
        )
    } else {
        return Ok(());
    };
    Err(SourceError::NotABuildpack {
        spec: spec.into(),
        problem,
    })
}

/// Moves a fetched tree into place, replacing an older one. When another
/// fetch of the same source won the race, its tree is kept.
fn install(tree: &Path, dest: &Path, cache_dir: &Path) -> Result<()> {
    if dest.exists() {
        let old = cache_dir.join(format!(
            "{TMP_PREFIX}old-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if fs::rename(dest, &old).is_ok() {
            let _ = remove_tree(&old);
        }
    }
    match fs::rename(tree, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(PathError::new("moving into place", dest, e).into()),
    }
}

/// The last lines of a tool's error output, on one line.
fn last_lines(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(STDERR_LINES);
    let joined = lines[start..].join(" / ");
    if joined.is_empty() {
        "no error output".into()
    } else {
        joined
    }
}

/// How a tool run ended.
struct ToolRun {
    success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    timed_out: bool,
}

/// Runs a tool in its own process group with a deadline; on timeout the
/// whole group is killed (git starts helpers such as `git-remote-https`).
fn run_tool(tool: &'static str, command: &mut Command, timeout: Duration) -> Result<ToolRun> {
    let f = child::run(
        command,
        Supervised {
            output: Output::Capture,
            timeout: Some(timeout),
            ..Default::default()
        },
    )
    .map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            SourceError::ToolMissing { tool, source }
        } else {
            PathError::new("starting", tool, source).into()
        }
    })?;
    Ok(ToolRun {
        success: f.success(),
        timed_out: f.timed_out,
        stdout: f.stdout,
        stderr: f.stderr,
    })
}

fn git_command() -> Command {
    let mut command = Command::new("git");
    // Never wait for a password or a host key answer: there is no one to type it.
    command.env("GIT_TERMINAL_PROMPT", "0");
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    command.args(["-c", "advice.detachedHead=false"]);
    command
}

fn failed(spec: &str, tool: &'static str, run: &ToolRun) -> SourceError {
    let detail = if run.timed_out {
        format!("timed out; {}", last_lines(&run.stderr))
    } else {
        last_lines(&run.stderr)
    };
    SourceError::FetchFailed {
        spec: spec.into(),
        tool,
        detail,
    }
}

/// Clones `url` into `tree` (which must not exist), at `reference` when
/// given: a branch or tag with a shallow clone, else a commit with a full
/// clone and a detached checkout.
fn git_clone(spec: &str, url: &str, reference: Option<&str>, tree: &Path) -> Result<()> {
    if url.starts_with('-') {
        return Err(SourceError::BadSpec {
            spec: spec.into(),
            problem: "the URL starts with '-'".into(),
        });
    }
    let mut shallow = git_command();
    shallow.args(["clone", "--quiet", "--depth", "1"]);
    if let Some(reference) = reference {
        shallow.args(["--branch", reference]);
    }
    shallow.arg("--").arg(url).arg(tree);
    let run = run_tool("git", &mut shallow, GIT_TIMEOUT)?;
    if run.success {
        return Ok(());
    }
    let looks_like_commit = reference
        .is_some_and(|r| (4..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_hexdigit()));
    if !looks_like_commit || run.timed_out {
        return Err(failed(spec, "git", &run));
    }
    let _ = remove_tree(tree);
    let mut full = git_command();
    full.args(["clone", "--quiet", "--no-checkout", "--"])
        .arg(url)
        .arg(tree);
    let run = run_tool("git", &mut full, GIT_TIMEOUT)?;
    if !run.success {
        return Err(failed(spec, "git", &run));
    }
    let mut checkout = git_command();
    checkout
        .arg("-C")
        .arg(tree)
        .args(["checkout", "--quiet", "--detach"])
        .arg(reference.unwrap_or_default())
        .arg("--");
    let run = run_tool("git", &mut checkout, GIT_TIMEOUT)?;
    if !run.success {
        return Err(failed(spec, "git", &run));
    }
    Ok(())
}

/// True when the checkout in `dir` follows a branch (HEAD is symbolic),
/// false for a tag or commit (detached HEAD).
fn on_branch(dir: &Path) -> bool {
    let mut command = git_command();
    command
        .arg("-C")
        .arg(dir)
        .args(["symbolic-ref", "--quiet", "HEAD"]);
    match run_tool("git", &mut command, Duration::from_secs(30)) {
        Ok(run) => run.success && !run.stdout.is_empty(),
        // Unknown: fetch again rather than serve something stale.
        Err(_) => true,
    }
}

fn curl_download(spec: &str, url: &str, output: &Path) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    if !["http://", "https://", "file://"]
        .iter()
        .any(|s| lower.starts_with(s))
    {
        return Err(SourceError::BadSpec {
            spec: spec.into(),
            problem: "a tarball URL must start with http://, https:// or file://".into(),
        });
    }
    let mut command = Command::new("curl");
    command
        .args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--max-time", &DOWNLOAD_TIMEOUT.as_secs().to_string()])
        .args(["--max-filesize", &MAX_DOWNLOAD_BYTES.to_string()])
        .args([
            "--proto",
            "=http,https,file",
            "--proto-redir",
            "=http,https",
        ])
        .arg("--output")
        .arg(output)
        .arg(url);
    // curl enforces --max-time itself; the extra minute only catches a hang.
    let run = run_tool(
        "curl",
        &mut command,
        DOWNLOAD_TIMEOUT + Duration::from_secs(60),
    )?;
    if !run.success {
        return Err(failed(spec, "curl", &run));
    }
    Ok(())
}

/// Extracts a tar, tar.gz or tar.zst file (told apart by their first bytes).
fn unpack_tarball(spec: &str, file: &Path, tree: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    let mut probe = File::open(file).map_err(at("opening", file))?;
    let n = probe.read(&mut magic).map_err(at("reading", file))?;
    let reader = BufReader::new(File::open(file).map_err(at("opening", file))?);
    let options = ExtractOptions {
        keep_owners: false,
        read_only: false,
        max_unpacked: Some(MAX_UNPACKED_BYTES),
    };
    let archive_err = |source| SourceError::Archive {
        spec: spec.into(),
        source,
    };
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        extract_tar(flate2::read::GzDecoder::new(reader), tree, &options).map_err(archive_err)?;
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let decoder = zstd::Decoder::new(reader).map_err(at("decompressing", file))?;
        extract_tar(decoder, tree, &options).map_err(archive_err)?;
    } else {
        extract_tar(reader, tree, &options).map_err(archive_err)?;
    }
    Ok(())
}

/// The buildpack root of an extracted tarball: `tree` itself, or its only
/// entry when that is a directory and `tree` has no `bin/` (GitHub's
/// archives wrap everything in `<repo>-<ref>/`).
fn single_top_level_dir(tree: &Path) -> Result<PathBuf> {
    if tree.join("bin").is_dir() {
        return Ok(tree.to_path_buf());
    }
    let entries: Vec<_> = fs::read_dir(tree)
        .map_err(at("reading", tree))?
        .collect::<io::Result<_>>()
        .map_err(at("reading", tree))?;
    if let [only] = entries.as_slice() {
        if only.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            return Ok(only.path());
        }
    }
    Ok(tree.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(url: &str, reference: Option<&str>) -> BuildpackSource {
        BuildpackSource::Git {
            url: url.into(),
            reference: reference.map(Into::into),
        }
    }

    fn tarball(url: &str) -> BuildpackSource {
        BuildpackSource::Tarball { url: url.into() }
    }

    /// A base dir with a plain dir, a git-looking dir, a bare-looking repo and a tarball.
    fn fixture() -> tempfile::TempDir {
        let base = tempfile::tempdir().unwrap();
        fs::create_dir_all(base.path().join("plain/bin")).unwrap();
        fs::create_dir_all(base.path().join("repo/.git")).unwrap();
        let bare = base.path().join("bare.git");
        fs::create_dir_all(bare.join("objects")).unwrap();
        fs::create_dir_all(bare.join("refs")).unwrap();
        fs::write(bare.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(base.path().join("bp.tgz"), "not really").unwrap();
        base
    }

    #[test]
    fn parse_table() {
        let base = fixture();
        let b = base.path();
        let root = b.display().to_string();
        let cases: Vec<(String, BuildpackSource)> = vec![
            (
                "https://github.com/heroku/heroku-buildpack-python".into(),
                git("https://github.com/heroku/heroku-buildpack-python", None),
            ),
            (
                "https://github.com/heroku/heroku-buildpack-python.git#v250".into(),
                git(
                    "https://github.com/heroku/heroku-buildpack-python.git",
                    Some("v250"),
                ),
            ),
            (
                "http://example.test/bp.git#main".into(),
                git("http://example.test/bp.git", Some("main")),
            ),
            (
                "git://example.test/bp.git#0123abcd".into(),
                git("git://example.test/bp.git", Some("0123abcd")),
            ),
            (
                "ssh://git@example.test/bp.git".into(),
                git("ssh://git@example.test/bp.git", None),
            ),
            (
                "git@github.com:heroku/heroku-buildpack-go.git#release/v1".into(),
                git(
                    "git@github.com:heroku/heroku-buildpack-go.git",
                    Some("release/v1"),
                ),
            ),
            (
                "https://example.test/buildpacks/python.tgz".into(),
                tarball("https://example.test/buildpacks/python.tgz"),
            ),
            (
                "https://example.test/v1/bp.TAR.GZ?token=x".into(),
                tarball("https://example.test/v1/bp.TAR.GZ?token=x"),
            ),
            (
                "http://example.test/bp.tar".into(),
                tarball("http://example.test/bp.tar"),
            ),
            (
                format!("file://{root}/repo#v1"),
                git(&format!("file://{root}/repo"), Some("v1")),
            ),
            (
                format!("file://{root}/repo"),
                git(&format!("file://{root}/repo"), None),
            ),
            (
                format!("file://{root}/bare.git"),
                git(&format!("file://{root}/bare.git"), None),
            ),
            (
                format!("file://{root}/plain"),
                BuildpackSource::Dir(b.join("plain")),
            ),
            (
                format!("file://{root}/bp.tgz"),
                tarball(&format!("file://{root}/bp.tgz")),
            ),
            (
                format!("file://localhost{root}/plain"),
                BuildpackSource::Dir(b.join("plain")),
            ),
            ("plain".into(), BuildpackSource::Dir(b.join("plain"))),
            ("./plain/".into(), BuildpackSource::Dir(b.join("./plain/"))),
            (
                format!("{root}/plain"),
                BuildpackSource::Dir(b.join("plain")),
            ),
            ("repo".into(), BuildpackSource::Dir(b.join("repo"))),
            (
                "repo#v2".into(),
                git(&format!("file://{root}/repo"), Some("v2")),
            ),
            ("bp.tgz".into(), tarball(&format!("file://{root}/bp.tgz"))),
            (
                "  https://example.test/bp  ".into(),
                git("https://example.test/bp", None),
            ),
        ];
        for (spec, expected) in cases {
            let parsed =
                BuildpackSource::parse(&spec, b).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            assert_eq!(parsed, expected, "{spec:?}");
        }
    }

    #[test]
    fn a_bare_repository_without_a_ref_is_cloned_at_its_head() {
        let base = fixture();
        let bare = base.path().join("bp.git");
        for d in ["objects", "refs"] {
            std::fs::create_dir_all(bare.join(d)).unwrap();
        }
        std::fs::write(bare.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let src = BuildpackSource::parse(bare.to_str().unwrap(), base.path()).unwrap();
        assert!(
            matches!(&src, BuildpackSource::Git { reference: None, url } if url.starts_with("file://")),
            "{src:?}"
        );
    }

    #[test]
    fn parse_refusals() {
        let base = fixture();
        let b = base.path();
        let root = b.display().to_string();
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty"),
            ("   ".into(), "empty"),
            ("--upload-pack=touch /tmp/x".into(), "'-'"),
            ("-oProxyCommand=x".into(), "'-'"),
            (
                "https://example.test/bp#--upload-pack=x".into(),
                "starts with '-'",
            ),
            ("https://example.test/bp#".into(), "empty"),
            ("https://example.test/bp#a..b".into(), "'..'"),
            ("https://example.test/bp#a b".into(), "spaces"),
            ("https://example.test/a b".into(), "spaces"),
            ("https://".into(), "no host"),
            ("https:///path".into(), "no host"),
            ("ftp://example.test/bp.tgz".into(), "unsupported URL scheme"),
            ("https://example.test/bp.tgz#v1".into(), "a tarball"),
            (format!("file://{root}/plain#v1"), "plain directory"),
            ("plain#v1".into(), "plain directory"),
            ("file://relative/path".into(), "absolute path"),
            ("nope".into(), "does not exist"),
            (format!("file://{root}/nope"), "does not exist"),
            ("#v1".into(), "nothing before"),
        ];
        for (spec, needle) in cases {
            let err = BuildpackSource::parse(&spec, b)
                .err()
                .unwrap_or_else(|| panic!("{spec:?} was accepted"));
            let message = err.to_string();
            assert!(message.contains(needle), "{spec:?}: {message}");
        }
    }

    #[test]
    fn display_round_trips_through_parse() {
        let base = fixture();
        for spec in [
            "https://example.test/bp.git#v1",
            "git@example.test:bp.git",
            "https://example.test/bp.tgz",
        ] {
            let source = BuildpackSource::parse(spec, base.path()).unwrap();
            assert_eq!(source.to_string(), spec);
            assert_eq!(
                BuildpackSource::parse(&source.to_string(), base.path()).unwrap(),
                source
            );
        }
    }

    #[test]
    fn cache_keys_are_16_hex_and_differ_by_ref() {
        let a = git("https://example.test/bp", Some("v1"));
        let b = git("https://example.test/bp", Some("v2"));
        assert_eq!(a.cache_key().len(), 16);
        assert!(a.cache_key().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.cache_key(), b.cache_key());
        assert_eq!(a.cache_key(), a.clone().cache_key());
        let digest = hex::encode(Sha256::digest(b"https://example.test/bp#v1"));
        assert_eq!(a.cache_key(), digest[..16]);
    }

    #[test]
    fn buildpacks_file() {
        let base = fixture();
        let text = "# buildpacks, in order\r\nhttps://example.test/a.git#v1\r\n\r\n   \n  # indented comment\nplain\n";
        let sources = parse_buildpacks_file(text, base.path(), BuildpackPolicy::OPERATOR).unwrap();
        assert_eq!(
            sources,
            vec![
                git("https://example.test/a.git", Some("v1")),
                BuildpackSource::Dir(base.path().join("plain")),
            ]
        );
        assert!(
            parse_buildpacks_file("", base.path(), BuildpackPolicy::default())
                .unwrap()
                .is_empty()
        );
        let err = parse_buildpacks_file(
            "plain\n\nftp://x/y\n",
            base.path(),
            BuildpackPolicy::OPERATOR,
        )
        .unwrap_err();
        assert!(
            matches!(err, SourceError::InFile { line: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(".buildpacks line 3: "), "{err}");
    }

    #[test]
    fn app_owned_sources_name_only_urls_unless_local_ones_are_allowed() {
        let base = fixture();
        let b = base.path();
        let root = b.display().to_string();
        let app = BuildpackPolicy::default();
        for spec in [
            "https://github.com/heroku/heroku-buildpack-python#v250",
            "http://example.test/bp.tgz",
            "git://example.test/bp.git",
            "ssh://git@example.test/bp.git",
            "git@github.com:heroku/heroku-buildpack-go.git#main",
        ] {
            BuildpackSource::parse_with(spec, b, app).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
        for spec in [
            "plain".to_string(),
            "./plain".into(),
            "../../etc".into(),
            "/etc".into(),
            "/nonexistent/bp".into(),
            format!("{root}/plain"),
            format!("file://{root}/plain"),
            format!("file://{root}/repo#v1"),
            format!("FILE://{root}/bp.tgz"),
            "file:///etc".into(),
            "bp.tgz".into(),
            "repo#v1".into(),
            "heroku/python".into(),
        ] {
            let e = BuildpackSource::parse_with(&spec, b, app).unwrap_err();
            let message = e.to_string();
            assert!(
                matches!(e, SourceError::LocalNotAllowed { .. }),
                "{spec}: {message}"
            );
            assert!(message.contains("--allow-local-buildpacks"), "{message}");
            assert!(message.contains("https://"), "{message}");
            // Refused the same whether the path exists or not: no probing of host files.
            assert!(!message.contains("does not exist"), "{message}");
        }
        // Other refusals keep their own message.
        let e = BuildpackSource::parse_with("ftp://x/y.tgz", b, app).unwrap_err();
        assert!(e.to_string().contains("unsupported URL scheme"), "{e}");
        // Allowed by the operator: as `parse`.
        let local = BuildpackPolicy { allow_local: true };
        assert_eq!(
            BuildpackSource::parse_with("plain", b, local).unwrap(),
            BuildpackSource::Dir(b.join("plain"))
        );
        let text = "https://example.test/a.git\n# local\n\nplain\n";
        let e = parse_buildpacks_file(text, b, app).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(".buildpacks line 4: buildpack source \"plain\" names a path"),
            "{e}"
        );
        assert_eq!(parse_buildpacks_file(text, b, local).unwrap().len(), 2);
    }

    #[test]
    fn dir_source_is_checked_in_place() {
        let base = fixture();
        let dir = base.path().join("plain");
        let source = BuildpackSource::Dir(dir.clone());
        let cache = tempfile::tempdir().unwrap();
        let err = source.fetch(cache.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("no bin/detect and no bin/compile"),
            "{message}"
        );
        fs::write(dir.join("bin/detect"), "#!/bin/sh\n").unwrap();
        fs::write(dir.join("bin/compile"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("bin/detect"), fs::Permissions::from_mode(0o755)).unwrap();
        let message = source.fetch(cache.path()).unwrap_err().to_string();
        assert!(
            message.contains("bin/compile is not executable"),
            "{message}"
        );
        fs::set_permissions(dir.join("bin/compile"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(source.fetch(cache.path()).unwrap(), dir);
        assert_eq!(
            fs::read_dir(cache.path()).unwrap().count(),
            0,
            "nothing cached"
        );
    }

    #[test]
    fn tool_output_is_cut_to_the_last_lines() {
        let text = b"one\ntwo\n\nthree\nfour\nfive\nsix\n";
        assert_eq!(last_lines(text), "two / three / four / five / six");
        assert_eq!(last_lines(b""), "no error output");
    }

    #[test]
    fn tool_timeout_kills_the_process_group() {
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 30 & sleep 30"]);
        let run = run_tool("sh", &mut command, Duration::from_millis(200)).unwrap();
        assert!(run.timed_out && !run.success);
    }
}
