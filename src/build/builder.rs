//! `slipway build`: a source directory becomes a slug.
//!
//! The source is copied to `/app` in a throw-away build container on the build stack (an
//! overlay over the read-only stack), with the app's cache at `/cache` and its config vars in
//! `/env`; the buildpacks run there as the stack's unprivileged user, in their own mount, pid,
//! ipc, uts, cgroup and network namespaces (egress through NAT for package registries, never
//! the host's loopback), under memory and pids limits and a deadline. `/app` is then packed
//! into a content-addressed slug, and the release metadata is written beside it.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::app_name::{check_app_name, AppNameError};
use super::cache::BuildCache;
use super::env_vars::{self, ConfigVarError};
use super::release::parse_release;
use super::slug::{Slug, SlugStore};
use super::source::{parse_buildpacks_file, BuildpackPolicy, BuildpackSource, SourceError};
use super::untrusted::{read_text_beneath, UntrustedFileError};
use crate::config::Config;
use crate::sandbox::{interrupt, Bind, Container, Outcome, Place, ProcessSpec, Sandbox, Workspace};
use crate::stacks::{Stack, StackStore, STACK_UID};
use crate::sys::io::{at, PathError};

const BUILD_SCRIPT: &str = include_str!("build.sh");

/// Largest app file the host reads (Procfile, .buildpacks) and largest result file of the
/// build container (release YAML, lists), in bytes.
const MAX_METADATA_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Input(String),
    #[error("no buildpack recognised this app (tried: {tried}); add requirements.txt, package.json, go.mod, index.html or a Procfile, or set BUILDPACK_URL")]
    NotDetected { tried: String },
    /// The build's output was streamed as it happened: the message does not repeat it;
    /// `last_lines` keeps its end for callers that did not show it.
    #[error("buildpack {name} failed with exit code {code} (its output is above)")]
    BuildpackFailed {
        name: String,
        code: i32,
        last_lines: String,
    },
    #[error("buildpack {name}: bin/release failed")]
    ReleaseFailed { name: String },
    #[error("the build took longer than {limit:?} and was stopped{during}; make it faster or raise the timeout (--timeout)")]
    Timeout { limit: Duration, during: String },
    #[error("the build container failed with exit code {code} (its output is above)")]
    Container { code: i32, last_lines: String },
    #[error(transparent)]
    AppName(#[from] AppNameError),
    #[error(transparent)]
    ConfigVar(#[from] ConfigVarError),
    #[error("app file {0}: make it a regular UTF-8 text file of at most 1 MiB in the app's source (links are not followed, so that the build host's files stay out of reach)")]
    AppFile(UntrustedFileError),
    #[error("the build container's results cannot be read: {0}; a buildpack replaced files in /slipway/out, which slipway writes itself: fix the buildpack")]
    BuildResults(UntrustedFileError),
    #[error(transparent)]
    Stack(#[from] crate::stacks::StackError),
    #[error(transparent)]
    Slug(#[from] super::slug::SlugError),
    #[error(transparent)]
    Source(#[from] super::source::SourceError),
    #[error(transparent)]
    Release(#[from] super::release::ReleaseError),
    #[error(transparent)]
    Cache(#[from] super::cache::CacheError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("the build was stopped (signal {0}); nothing of it was kept")]
    Interrupted(i32),
    #[error(transparent)]
    Io(#[from] PathError),
}

/// What a build is asked to do (where things live comes from the `Config`).
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub source_dir: PathBuf,
    pub app: String,
    /// Config vars (ENV_DIR); `BUILDPACK_URL` among them picks the buildpack. App-owned:
    /// names and values are checked ([`env_vars::check`]).
    pub env: Vec<(String, String)>,
    /// A buildpack the operator chose (any source form, local paths included); it wins over
    /// the app's `BUILDPACK_URL` and `.buildpacks`.
    pub buildpack: Option<String>,
    /// What the app's own buildpack sources (`BUILDPACK_URL`, `.buildpacks`) may name.
    pub buildpack_policy: BuildpackPolicy,
    pub source_version: Option<String>,
    pub timeout: Duration,
    pub slug_limit: u64,
    pub memory_limit: u64,
    pub pids_limit: i64,
}

impl BuildOptions {
    pub fn new(source_dir: impl Into<PathBuf>, app: impl Into<String>) -> Self {
        BuildOptions {
            source_dir: source_dir.into(),
            app: app.into(),
            env: Vec::new(),
            buildpack: None,
            buildpack_policy: BuildpackPolicy::default(),
            source_version: None,
            timeout: Duration::from_secs(20 * 60),
            slug_limit: 1 << 30,
            memory_limit: 2 << 30,
            pids_limit: 4096,
        }
    }
}

/// The stacks an app can choose with its `STACK` config var: (name, build stack, run stack).
/// Side by side as Heroku keeps heroku-22 and heroku-24.
pub const STACKS: &[(&str, &str, &str)] = &[
    ("slipway-12", "build", "run"),
    ("slipway-13", "build-13", "run-13"),
];
/// The stack of apps that do not choose one.
pub const DEFAULT_STACK: &str = "slipway-12";

/// (name, build stack, run stack) of the stack `opts` asks for.
fn chosen_stack(
    opts: &BuildOptions,
) -> Result<(&'static str, &'static str, &'static str), BuildError> {
    let asked = opts
        .env
        .iter()
        .find(|(k, _)| k == "STACK")
        .map_or(DEFAULT_STACK, |(_, v)| v.as_str());
    STACKS
        .iter()
        .find(|(name, _, _)| *name == asked)
        .copied()
        .ok_or_else(|| {
            BuildError::Input(format!(
                "config var STACK={asked:?} names no stack; set one of: {} (Debian 12 and 13)",
                STACKS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            ))
        })
}

/// The run stack of a slug built on `stack` (as `BuildResult::stack` records it; `run` for
/// slugs recorded before stacks had names).
pub fn run_stack_of(stack: &str) -> &str {
    STACKS
        .iter()
        .find(|(name, _, run)| *name == stack || *run == stack)
        .map_or("run", |s| s.2)
}

/// Detection order of the built-in buildpacks.
pub const BUILTIN_ORDER: &[&str] = &["python", "nodejs", "go", "static", "procfile"];

/// What a build produced; also written as `<data>/slugs/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildResult {
    pub slug: String,
    pub app: String,
    pub archive: PathBuf,
    pub unpacked: PathBuf,
    /// The last buildpack's `default_process_types` (the platform merges them with the
    /// Procfile).
    pub default_process_types: Vec<(String, String)>,
    /// The app's Procfile as the build found it (a regular file of the source, links not
    /// followed), for the platform to read.
    pub procfile: Option<String>,
    pub buildpacks: Vec<String>,
    pub stack: String,
    pub build_stack_id: String,
    pub slug_bytes: u64,
    pub unpacked_bytes: u64,
    pub build_seconds: f64,
    /// Time the buildpacks' compile steps took; the rest of build_seconds is the builder's.
    #[serde(default)]
    pub compile_seconds: f64,
    pub source_version: Option<String>,
    pub config_vars: Vec<(String, String)>,
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    hex::encode(b)
}

/// Copy a tree, keeping modes, times and symlinks, skipping `.git`; owned by `uid` afterwards.
/// Returns the newest modification time of the source (seconds).
fn copy_tree(from: &Path, to: &Path, uid: u32) -> Result<u64, BuildError> {
    use std::os::unix::fs::MetadataExt;
    let mut newest = 0u64;
    // Directories get their times last: copying into them changes them.
    let mut dir_times = Vec::new();
    for entry in walkdir::WalkDir::new(from)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
    {
        let entry =
            entry.map_err(|e| BuildError::Input(format!("read source {}: {e}", from.display())))?;
        let rel = entry.path().strip_prefix(from).expect("under the root");
        let dest = to.join(rel);
        let meta = entry.metadata().map_err(|e| {
            BuildError::Input(format!("read source {}: {e}", entry.path().display()))
        })?;
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).map_err(at("create", &dest))?;
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            let _ = std::fs::set_permissions(
                &dest,
                std::os::unix::fs::PermissionsExt::from_mode(mode | 0o700),
            );
            dir_times.push((dest.clone(), meta.mtime(), meta.mtime_nsec()));
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(at("read link", entry.path()))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(at("create link", &dest))?;
            set_mtime(&dest, meta.mtime(), meta.mtime_nsec());
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &dest).map_err(at("copy", entry.path()))?;
            set_mtime(&dest, meta.mtime(), meta.mtime_nsec());
        } else {
            continue; // sockets, fifos, devices do not belong in a slug
        }
        newest = newest.max(meta.mtime().max(0) as u64);
        let _ = std::os::unix::fs::lchown(&dest, Some(uid), Some(uid));
    }
    for (dir, secs, nsecs) in dir_times.into_iter().rev() {
        set_mtime(&dir, secs, nsecs);
    }
    Ok(newest)
}

/// Set the access and modification times of `path` itself (never a link's target).
fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsecs);
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// Write `content` to a new file at `path`, replacing a file or symlink there without following
/// it: buildpacks are fetched from the app's sources and may hold a symlink of that name.
fn write_replacing(path: &Path, content: &str) -> Result<(), BuildError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PathError::new("replace", path, e).into()),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(at("write", path))?;
    Ok(())
}

/// A buildpack ready to mount: its dir (a writable copy, for `export`) and its label.
struct PreparedBuildpack {
    label: String,
}

fn prepare_buildpacks(
    config: &Config,
    opts: &BuildOptions,
    ws: &Path,
    mode: &mut String,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<PreparedBuildpack>, BuildError> {
    let fetch_cache = config.data_dir.join("buildpacks");
    std::fs::create_dir_all(&fetch_cache).map_err(at("create", &fetch_cache))?;
    let url = opts
        .env
        .iter()
        .find(|(k, _)| k == "BUILDPACK_URL")
        .map(|(_, v)| v.as_str());
    let chosen: Option<Vec<BuildpackSource>> = if let Some(spec) = &opts.buildpack {
        Some(vec![BuildpackSource::parse(spec, &opts.source_dir)?])
    } else if let Some(url) = url {
        let source = BuildpackSource::parse_with(url, &opts.source_dir, opts.buildpack_policy)
            .map_err(|e| SourceError::InConfigVar {
                name: "BUILDPACK_URL",
                cause: Box::new(e),
            })?;
        Some(vec![source])
    } else if let Some(text) =
        read_text_beneath(&opts.source_dir, ".buildpacks", MAX_METADATA_BYTES)
            .map_err(BuildError::AppFile)?
    {
        let listed = parse_buildpacks_file(&text, &opts.source_dir, opts.buildpack_policy)?;
        if listed.is_empty() {
            return Err(BuildError::Input(
                ".buildpacks lists no buildpack: add one URL per line, or remove the file".into(),
            ));
        }
        Some(listed)
    } else {
        None
    };
    let mut sources: Vec<(String, PathBuf)> = Vec::new();
    if let Some(chosen) = chosen {
        *mode = "all".into();
        for src in chosen {
            let label = src.to_string();
            log(&format!("-----> Fetching buildpack {label}"));
            sources.push((label, src.fetch(&fetch_cache)?));
        }
    } else {
        *mode = "detect".into();
        for name in BUILTIN_ORDER {
            let dir = config.buildpacks_dir.join(name);
            if !dir.join("bin/detect").is_file() {
                return Err(BuildError::Input(format!(
                    "built-in buildpack {} is missing (set buildpacks_dir in the config, or SLIPWAY_BUILDPACKS_DIR)",
                    dir.display()
                )));
            }
            sources.push((name.to_string(), dir));
        }
    }
    let mut out = Vec::new();
    for (i, (label, dir)) in sources.into_iter().enumerate() {
        let dest = ws.join("buildpacks").join(i.to_string());
        copy_tree(&dir, &dest, STACK_UID)?;
        write_replacing(&dest.join(".slipway-name"), &label)?;
        out.push(PreparedBuildpack { label });
    }
    Ok(out)
}

/// The build container: the build stack under the workspace's overlay, the source at `/app`,
/// the cache, config vars, buildpacks and the build script bound in.
fn build_container(
    opts: &BuildOptions,
    ws: &Path,
    stack_name: &str,
    stack: &Stack,
    cache_dir: &Path,
) -> Container {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/app".into(),
        "LANG=C.UTF-8".into(),
        format!("STACK={stack_name}"),
        format!("APP={}", opts.app),
        "BUILD_DIR=/app".into(),
        "CACHE_DIR=/cache".into(),
        "ENV_DIR=/env".into(),
    ];
    if let Some(sv) = &opts.source_version {
        env.push(format!("SOURCE_VERSION={sv}"));
    }
    Container {
        layers: vec![stack.path.clone()],
        binds: vec![
            Bind::new("/app", &ws.join("app"), false),
            Bind::new("/cache", cache_dir, false),
            Bind::new("/env", &ws.join("env"), true),
            Bind::new("/buildpacks", &ws.join("buildpacks"), false),
            Bind::new("/slipway", &ws.join("slipway"), false),
        ],
        process: ProcessSpec {
            args: vec!["/bin/bash".into(), "/slipway/build.sh".into()],
            env,
            cwd: "/app".into(),
            uid: STACK_UID,
            hostname: "build".into(),
            memory_bytes: opts.memory_limit,
            pids_limit: opts.pids_limit,
        },
    }
}

/// A result file the build script wrote in `/slipway/out` (`None`: not written). The build ran
/// the app's code as the owner of that directory, so nothing there is followed if it is a
/// symlink.
fn build_result_file(slipway_dir: &Path, name: &str) -> Result<Option<String>, BuildError> {
    read_text_beneath(slipway_dir, &format!("out/{name}"), MAX_METADATA_BYTES)
        .map_err(BuildError::BuildResults)
}

fn last_lines(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where builds keep their sandboxes.
pub fn build_place(config: &Config) -> Place {
    Place {
        workspaces: config.data_dir.join("builds"),
        run_dir: config.run_dir.clone(),
        network: config.build_network.clone(),
        network_state: config.data_dir.join("network"),
        runtime: config.runtime.clone(),
    }
}

/// Run a build; `log` receives the build output line by line. The calling process must be in
/// a private mount namespace (`sandbox::mounts::enter_private_mount_ns`).
pub fn build(
    config: &Config,
    opts: &BuildOptions,
    log: &mut dyn FnMut(&str),
) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    // App-owned names become host paths: check them before anything is made.
    check_app_name(&opts.app)?;
    for (name, value) in &opts.env {
        env_vars::check(name, value)?;
    }
    if !opts.source_dir.is_dir() {
        return Err(BuildError::Input(format!(
            "source {} is not a directory",
            opts.source_dir.display()
        )));
    }
    let procfile = read_text_beneath(&opts.source_dir, "Procfile", MAX_METADATA_BYTES)
        .map_err(BuildError::AppFile)?;
    let cache = BuildCache::new(&config.data_dir, &opts.app)?;
    // Builds of one app run one after the other: they share its cache.
    let _cache_lock = cache.lock(&mut || {
        log(&format!(
            "-----> Waiting for another build of {} to finish",
            opts.app
        ))
    })?;
    let stacks = StackStore::new(&config.stacks_dir);
    let (stack_name, build_stack, _) = chosen_stack(opts)?;
    let stack = stacks.ensure_with_progress(build_stack, &mut |line: &str| {
        log(&format!("       {line}"))
    })?;

    let place = build_place(config);
    Sandbox::sweep(&place);
    let id = format!("build-{}-{}", opts.app, random_suffix());
    let ws = Workspace::create(&place.workspaces, &id)?;
    for d in ["app", "env", "buildpacks", "slipway/out"] {
        let p = ws.dir().join(d);
        std::fs::create_dir_all(&p).map_err(at("create", &p))?;
    }
    let source_epoch = copy_tree(&opts.source_dir, &ws.dir().join("app"), STACK_UID)?;
    let _ = std::os::unix::fs::lchown(ws.dir().join("app"), Some(STACK_UID), Some(STACK_UID));
    for (k, val) in &opts.env {
        let p = ws.dir().join("env").join(k);
        std::fs::write(&p, val).map_err(at("write", &p))?;
    }
    let mut mode = String::new();
    let packs = prepare_buildpacks(config, opts, ws.dir(), &mut mode, log)?;
    let slipway_dir = ws.dir().join("slipway");
    std::fs::write(slipway_dir.join("build.sh"), BUILD_SCRIPT)
        .map_err(at("write", &slipway_dir))?;
    std::fs::write(slipway_dir.join("mode"), &mode).map_err(at("write", &slipway_dir))?;
    for p in [
        slipway_dir.clone(),
        slipway_dir.join("out"),
        ws.dir().join("buildpacks"),
    ] {
        let _ = std::os::unix::fs::lchown(&p, Some(STACK_UID), Some(STACK_UID));
    }
    cache.ensure(STACK_UID, STACK_UID)?;
    if let Some(sig) = interrupt::interrupted() {
        return Err(BuildError::Interrupted(sig));
    }

    let cache_view = ws.dir().join("cache-view");
    let container = build_container(opts, ws.dir(), stack_name, &stack, &cache_view);
    let mut sandbox = Sandbox::prepare(&place, ws, &container)?;
    // Made after the sandbox, so dropped before it: the view is unmounted before the
    // workspace holding it is removed.
    let cache_session = cache.session(sandbox.workspace(), STACK_UID)?;
    debug_assert_eq!(cache_session.view(), cache_view);
    let mut lines: Vec<String> = Vec::new();
    let outcome = sandbox.run(opts.timeout, &mut |line| {
        log(line);
        lines.push(line.to_string());
        if lines.len() > 200 {
            lines.drain(..100);
        }
    });
    if let Some(sig) = interrupt::interrupted() {
        return Err(BuildError::Interrupted(sig));
    }
    let outcome = outcome?;
    let result_file = |name: &str| build_result_file(&slipway_dir, name);
    match outcome {
        Outcome::TimedOut => {
            let phase = result_file("phase").ok().flatten().unwrap_or_default();
            let during = match phase.trim() {
                "" => String::new(),
                p => format!(" during {p}"),
            };
            return Err(BuildError::Timeout {
                limit: opts.timeout,
                during,
            });
        }
        Outcome::Exited(0) => {}
        Outcome::Exited(code) => {
            // Unreadable (replaced by the build): the generic error below.
            let failure = result_file("failure").ok().flatten().unwrap_or_default();
            let words: Vec<&str> = failure.split_whitespace().collect();
            return Err(match words.first().copied() {
                Some("detect") => BuildError::NotDetected {
                    tried: packs
                        .iter()
                        .map(|p| p.label.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                Some("compile") => BuildError::BuildpackFailed {
                    name: words.get(3..).map(|w| w.join(" ")).unwrap_or_default(),
                    code: words.get(2).and_then(|c| c.parse().ok()).unwrap_or(code),
                    last_lines: last_lines(&lines, 15),
                },
                Some("release") => BuildError::ReleaseFailed {
                    name: words.get(2..).map(|w| w.join(" ")).unwrap_or_default(),
                },
                _ => BuildError::Container {
                    code,
                    last_lines: last_lines(&lines, 15),
                },
            });
        }
    }

    // The last buildpack's release decides the default process types.
    let used: Vec<String> = result_file("used")?
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    let mut defaults = Vec::new();
    let mut config_vars = Vec::new();
    let mut compile_seconds = 0.0;
    for i in 0..packs.len() {
        if let Some(text) = result_file(&format!("release-{i}.yml"))? {
            let info = parse_release(&text)?;
            if !info.default_process_types.is_empty() {
                defaults = info.default_process_types;
            }
            config_vars.extend(info.config_vars);
        }
        let times = result_file(&format!("compile-time-{i}"))?.unwrap_or_default();
        let mut w = times.split_whitespace().map(|x| x.parse::<f64>().ok());
        if let (Some(Some(start)), Some(Some(end))) = (w.next(), w.next()) {
            compile_seconds += end - start;
        }
    }

    log("-----> Compressing...");
    let slugs = SlugStore::new(&config.data_dir);
    let app_dir = sandbox.workspace().join("app");
    let slug: Slug = slugs.pack_clamped(&app_dir, opts.slug_limit, Some(source_epoch))?;
    // The packed tree becomes the slug's layer as it is: no need to unpack the archive.
    let unpacked = slugs.adopt(&slug.id, &app_dir)?;
    if !slug.removed_by_slugignore.is_empty() {
        log(&format!(
            "       Removed by .slugignore: {}",
            slug.removed_by_slugignore
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    log(&format!(
        "       Done: {:.1} MB (slug {})",
        slug.size as f64 / 1e6,
        &slug.id[..12]
    ));
    let result = BuildResult {
        slug: slug.id.clone(),
        app: opts.app.clone(),
        archive: slug.archive.clone(),
        unpacked,
        default_process_types: defaults,
        procfile,
        buildpacks: used,
        stack: stack_name.into(),
        build_stack_id: stack.id.clone(),
        slug_bytes: slug.size,
        unpacked_bytes: slug.unpacked_size,
        build_seconds: started.elapsed().as_secs_f64(),
        compile_seconds,
        source_version: opts.source_version.clone(),
        config_vars,
    };
    // Only a successful build's changes reach the stored cache.
    cache_session.commit()?;
    let meta = slug.archive.with_extension("").with_extension("json");
    std::fs::write(&meta, serde_json::to_vec_pretty(&result).expect("json"))
        .map_err(at("write", &meta))?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A temporary data dir, app source and workspace, and a canary dir standing for the rest
    /// of the host: its file must stay as it is.
    struct Scene {
        dir: tempfile::TempDir,
    }

    impl Scene {
        fn new() -> Scene {
            let dir = tempfile::tempdir().unwrap();
            for d in ["app", "data", "ws", "canary"] {
                std::fs::create_dir(dir.path().join(d)).unwrap();
            }
            std::fs::write(dir.path().join("canary/secret"), "host secret\n").unwrap();
            Scene { dir }
        }
        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }
        fn opts(&self) -> BuildOptions {
            BuildOptions::new(self.path("app"), "app")
        }
        fn config(&self) -> Config {
            let mut config = Config::in_data_dir(&self.path("data"));
            config.buildpacks_dir = self.path("no-builtins");
            config
        }
        /// A buildpack directory with executable bin/detect and bin/compile.
        fn buildpack(&self, name: &str) -> PathBuf {
            let bp = self.path(name);
            std::fs::create_dir_all(bp.join("bin")).unwrap();
            for f in ["bin/detect", "bin/compile"] {
                std::fs::write(bp.join(f), "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(bp.join(f), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            }
            bp
        }
        fn prepare(&self, opts: &BuildOptions) -> Result<Vec<PreparedBuildpack>, BuildError> {
            let mut mode = String::new();
            prepare_buildpacks(
                &self.config(),
                opts,
                &self.path("ws"),
                &mut mode,
                &mut |_| {},
            )
        }
        fn canary_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(self.path("canary"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["secret"], "new files in the canary dir");
            assert_eq!(
                std::fs::read_to_string(self.path("canary/secret")).unwrap(),
                "host secret\n"
            );
        }
    }

    #[test]
    fn app_owned_buildpack_sources_may_not_name_host_paths() {
        let scene = Scene::new();
        let bp = scene.buildpack("bp");
        let mut opts = scene.opts();
        opts.env = vec![("BUILDPACK_URL".into(), bp.display().to_string())];
        let e = scene.prepare(&opts).err().expect("refused").to_string();
        assert!(
            e.starts_with("config var BUILDPACK_URL: buildpack source")
                && e.contains("names a path on the build host"),
            "{e}"
        );
        opts.env.clear();
        std::fs::write(
            scene.path("app/.buildpacks"),
            format!("# mine\n{}\n", bp.display()),
        )
        .unwrap();
        let e = scene.prepare(&opts).err().expect("refused").to_string();
        assert!(e.starts_with(".buildpacks line 2: "), "{e}");
        // The operator may allow them, and may always name one on the command line.
        opts.buildpack_policy.allow_local = true;
        assert_eq!(scene.prepare(&opts).unwrap().len(), 1);
        opts.buildpack_policy.allow_local = false;
        opts.buildpack = Some(bp.display().to_string());
        assert_eq!(
            scene.prepare(&opts).unwrap()[0].label,
            bp.display().to_string()
        );
    }

    #[test]
    fn a_buildpack_cannot_redirect_the_name_file_to_the_host() {
        let scene = Scene::new();
        let bp = scene.buildpack("bp");
        symlink(scene.path("canary/secret"), bp.join(".slipway-name")).unwrap();
        let mut opts = scene.opts();
        opts.buildpack = Some(bp.display().to_string());
        scene.prepare(&opts).unwrap();
        scene.canary_untouched();
        let name_file = scene.path("ws/buildpacks/0/.slipway-name");
        assert!(!name_file.symlink_metadata().unwrap().is_symlink());
        assert_eq!(
            std::fs::read_to_string(name_file).unwrap(),
            bp.display().to_string()
        );
    }

    #[test]
    fn symlinked_app_files_are_not_followed_to_the_host() {
        let scene = Scene::new();
        symlink(scene.path("canary/secret"), scene.path("app/.buildpacks")).unwrap();
        let e = scene
            .prepare(&scene.opts())
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(".buildpacks is a symlink"), "{e}");
        assert!(!e.contains("host secret"), "{e}");
    }

    #[test]
    fn build_results_replaced_by_symlinks_are_refused() {
        let scene = Scene::new();
        let slipway = scene.path("ws");
        std::fs::create_dir(slipway.join("out")).unwrap();
        std::fs::write(slipway.join("out/used"), "One\n").unwrap();
        symlink(
            scene.path("canary/secret"),
            slipway.join("out/release-0.yml"),
        )
        .unwrap();
        assert_eq!(
            build_result_file(&slipway, "used").unwrap().as_deref(),
            Some("One\n")
        );
        assert!(build_result_file(&slipway, "failure").unwrap().is_none());
        let e = build_result_file(&slipway, "release-0.yml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is a symlink") && !e.contains("host secret"),
            "{e}"
        );
        // The whole directory swapped for a link to the host.
        std::fs::remove_dir_all(slipway.join("out")).unwrap();
        symlink(scene.path("canary"), slipway.join("out")).unwrap();
        assert!(build_result_file(&slipway, "secret").is_err());
    }

    #[test]
    fn names_are_checked_before_anything_is_made() {
        let scene = Scene::new();
        let mut opts = scene.opts();
        opts.env = vec![("../../canary/pwned".into(), "x".into())];
        let e = build(&scene.config(), &opts, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("[A-Za-z0-9_]"), "{e}");
        let mut opts = scene.opts();
        opts.app = "../canary".into();
        let e = build(&scene.config(), &opts, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("lower-case DNS label"), "{e}");
        scene.canary_untouched();
        assert_eq!(std::fs::read_dir(scene.path("data")).unwrap().count(), 0);
    }
}
