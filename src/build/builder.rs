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

use crate::runtime::sandbox_spec::{bind, sandboxed_spec, SandboxedProcess};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::cache::BuildCache;
use super::launch::{Launcher, Outcome};
use super::release::{merge_process_types, parse_release};
use super::sandbox;
use super::slug::{Slug, SlugStore};
use super::source::{parse_buildpacks_file, BuildpackSource};
use super::stack::{StackStore, STACK_UID};
use crate::network::bridge::{Network, NetworkConfig};
use crate::network::netns::NetnsDir;
use crate::platform::procfile::Procfile;

const BUILD_SCRIPT: &str = include_str!("build.sh");

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Input(String),
    #[error("no buildpack recognised this app (tried: {tried}); add requirements.txt, package.json, go.mod, index.html or a Procfile, or set BUILDPACK_URL")]
    NotDetected { tried: String },
    #[error("buildpack {name} failed with exit code {code}; its last lines:\n{last_lines}")]
    BuildpackFailed {
        name: String,
        code: i32,
        last_lines: String,
    },
    #[error("buildpack {name}: bin/release failed")]
    ReleaseFailed { name: String },
    #[error("the build took longer than {0:?} and was stopped; make it faster or raise the timeout (--timeout)")]
    Timeout(Duration),
    #[error("the build container failed (exit code {code}); last lines:\n{last_lines}")]
    Container { code: i32, last_lines: String },
    #[error(transparent)]
    Stack(#[from] super::stack::StackError),
    #[error(transparent)]
    Slug(#[from] super::slug::SlugError),
    #[error(transparent)]
    Source(#[from] super::source::SourceError),
    #[error(transparent)]
    Release(#[from] super::release::ReleaseError),
    #[error(transparent)]
    Procfile(#[from] crate::platform::procfile::ProcfileError),
    #[error(transparent)]
    Cache(#[from] super::cache::CacheError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error(transparent)]
    Launch(#[from] super::launch::LaunchError),
    #[error("network for the build: {0}")]
    Network(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

/// Everything a build needs to know.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub source_dir: PathBuf,
    pub app: String,
    pub data_dir: PathBuf,
    /// Where stacks live (default: the data dir); tests share one stacks dir between
    /// otherwise separate data dirs.
    pub stacks_dir: PathBuf,
    /// Runtime state, network namespaces: `/run/slipway`.
    pub run_dir: PathBuf,
    /// Config vars (ENV_DIR); `BUILDPACK_URL` among them picks the buildpack.
    pub env: Vec<(String, String)>,
    pub source_version: Option<String>,
    pub timeout: Duration,
    pub slug_limit: u64,
    pub memory_limit: u64,
    pub pids_limit: i64,
    /// The build network's bridge and subnet.
    pub bridge: String,
    pub subnet: String,
    pub builtin_buildpacks: PathBuf,
}

impl BuildOptions {
    pub fn new(
        source_dir: impl Into<PathBuf>,
        app: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        let data_dir: PathBuf = data_dir.into();
        BuildOptions {
            source_dir: source_dir.into(),
            app: app.into(),
            stacks_dir: data_dir.clone(),
            data_dir,
            run_dir: PathBuf::from("/run/slipway"),
            env: Vec::new(),
            source_version: None,
            timeout: Duration::from_secs(20 * 60),
            slug_limit: 1 << 30,
            memory_limit: 2 << 30,
            pids_limit: 4096,
            bridge: "slipway0".into(),
            subnet: "10.209.0.0/24".into(),
            builtin_buildpacks: builtin_buildpacks_dir(),
        }
    }
}

/// The built-in buildpacks: `SLIPWAY_BUILDPACKS_DIR`, the installed copy, or the source tree.
pub fn builtin_buildpacks_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SLIPWAY_BUILDPACKS_DIR") {
        return PathBuf::from(p);
    }
    let installed = Path::new("/usr/local/share/slipway/buildpacks");
    if installed.is_dir() {
        return installed.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("buildpacks")
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
    pub process_types: Vec<ProcessType>,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessType {
    pub name: String,
    pub command: String,
    pub origin: String,
}

/// Remove workspaces of builds whose builder died without cleaning up (killed, say): each
/// workspace records its builder's pid and start time; mounts died with that builder's
/// private mount namespace, so only files remain.
fn remove_abandoned_workspaces(builds: &Path) {
    let Ok(entries) = std::fs::read_dir(builds) else {
        return;
    };
    for e in entries.flatten() {
        let owner = std::fs::read_to_string(e.path().join("builder")).unwrap_or_default();
        let mut w = owner.split_whitespace().map(|x| x.parse::<u64>().ok());
        let alive = match (w.next().flatten(), w.next().flatten()) {
            (Some(pid), Some(start)) => crate::sys::procfs::is_alive(pid as i32, start),
            // No owner recorded yet: a build that is just starting.
            _ => true,
        };
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Files of one build, removed when the build ends.
struct Workspace {
    dir: PathBuf,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    hex::encode(b)
}

/// Copy a tree, keeping modes and symlinks, skipping `.git`; owned by `uid` afterwards.
fn copy_tree(from: &Path, to: &Path, uid: u32) -> Result<(), BuildError> {
    for entry in walkdir::WalkDir::new(from)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
    {
        let entry =
            entry.map_err(|e| BuildError::Input(format!("read source {}: {e}", from.display())))?;
        let rel = entry.path().strip_prefix(from).expect("under the root");
        let dest = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).map_err(io("create", &dest))?;
            let mode = entry
                .metadata()
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
                .unwrap_or(0o755);
            let _ = std::fs::set_permissions(
                &dest,
                std::os::unix::fs::PermissionsExt::from_mode(mode | 0o700),
            );
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(io("read link", entry.path()))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(io("create link", &dest))?;
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &dest).map_err(io("copy", entry.path()))?;
        } else {
            continue; // sockets, fifos, devices do not belong in a slug
        }
        let _ = std::os::unix::fs::lchown(&dest, Some(uid), Some(uid));
    }
    Ok(())
}

/// A buildpack ready to mount: its dir (a writable copy, for `export`) and its label.
struct PreparedBuildpack {
    label: String,
}

fn prepare_buildpacks(
    opts: &BuildOptions,
    ws: &Path,
    mode: &mut String,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<PreparedBuildpack>, BuildError> {
    let fetch_cache = opts.data_dir.join("buildpacks");
    std::fs::create_dir_all(&fetch_cache).map_err(io("create", &fetch_cache))?;
    let url = opts
        .env
        .iter()
        .find(|(k, _)| k == "BUILDPACK_URL")
        .map(|(_, v)| v.clone());
    let dotfile = opts.source_dir.join(".buildpacks");
    let mut sources: Vec<(String, PathBuf)> = Vec::new();
    if let Some(url) = url {
        *mode = "all".into();
        log(&format!("-----> Fetching buildpack {url}"));
        let src = BuildpackSource::parse(&url, &opts.source_dir)?;
        sources.push((url.clone(), src.fetch(&fetch_cache)?));
    } else if dotfile.is_file() {
        *mode = "all".into();
        let text = std::fs::read_to_string(&dotfile).map_err(io("read", &dotfile))?;
        for src in parse_buildpacks_file(&text, &opts.source_dir)? {
            let label = match &src {
                BuildpackSource::Dir(p) => p.display().to_string(),
                BuildpackSource::Git { url, reference } => match reference {
                    Some(r) => format!("{url}#{r}"),
                    None => url.clone(),
                },
                BuildpackSource::Tarball { url } => url.clone(),
            };
            log(&format!("-----> Fetching buildpack {label}"));
            sources.push((label, src.fetch(&fetch_cache)?));
        }
        if sources.is_empty() {
            return Err(BuildError::Input(
                ".buildpacks lists no buildpack: add one URL per line, or remove the file".into(),
            ));
        }
    } else {
        *mode = "detect".into();
        for name in BUILTIN_ORDER {
            let dir = opts.builtin_buildpacks.join(name);
            if !dir.join("bin/detect").is_file() {
                return Err(BuildError::Input(format!(
                    "built-in buildpack {} is missing (set SLIPWAY_BUILDPACKS_DIR)",
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
        let name_file = dest.join(".slipway-name");
        std::fs::write(&name_file, &label).map_err(io("write", &name_file))?;
        out.push(PreparedBuildpack { label });
    }
    Ok(out)
}

/// The OCI spec of the build container.
fn build_spec(
    opts: &BuildOptions,
    ws: &Path,
    rootfs: &Path,
    netns: &Path,
    stack_name: &str,
    cache_dir: &Path,
) -> Result<Spec, BuildError> {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/app".into(),
        "LANG=C.UTF-8".into(),
        format!("STACK=slipway-{stack_name}"),
        format!("APP={}", opts.app),
        "BUILD_DIR=/app".into(),
        "CACHE_DIR=/cache".into(),
        "ENV_DIR=/env".into(),
    ];
    if let Some(sv) = &opts.source_version {
        env.push(format!("SOURCE_VERSION={sv}"));
    }
    let mut v = sandboxed_spec(&SandboxedProcess {
        rootfs,
        netns,
        hostname: "build",
        args: vec!["/bin/bash".into(), "/slipway/build.sh".into()],
        env,
        cwd: "/app",
        uid: STACK_UID,
        memory_bytes: opts.memory_limit,
        pids_limit: opts.pids_limit,
    });
    let mounts = v["mounts"].as_array_mut().expect("mounts");
    mounts.push(bind("/app", &ws.join("app"), false));
    mounts.push(bind("/cache", cache_dir, false));
    mounts.push(bind("/env", &ws.join("env"), true));
    mounts.push(bind("/buildpacks", &ws.join("buildpacks"), false));
    mounts.push(bind("/slipway", &ws.join("slipway"), false));
    serde_json::from_value(v).map_err(|e| BuildError::Input(format!("build spec: {e}")))
}

fn last_lines(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run a build. Must be called from a single-threaded process (it enters a private mount
/// namespace); `log` receives the build output line by line.
pub fn build(opts: &BuildOptions, log: &mut dyn FnMut(&str)) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    if !opts.source_dir.is_dir() {
        return Err(BuildError::Input(format!(
            "source {} is not a directory",
            opts.source_dir.display()
        )));
    }
    // A bad Procfile fails the build before anything runs.
    let procfile_path = opts.source_dir.join("Procfile");
    let procfile = if procfile_path.is_file() {
        let text = std::fs::read_to_string(&procfile_path).map_err(io("read", &procfile_path))?;
        Some(Procfile::parse(&text)?)
    } else {
        None
    };
    let cache = BuildCache::new(&opts.data_dir, &opts.app)?;
    sandbox::enter_private_mount_ns()?;

    let stacks = StackStore::new(&opts.stacks_dir);
    let stack =
        stacks.ensure_with_progress("build", &mut |line: &str| log(&format!("       {line}")))?;

    let id = format!("build-{}-{}", opts.app, random_suffix());
    let builds = opts.data_dir.join("builds");
    let ws = Workspace {
        dir: builds.join(&id),
    };
    remove_abandoned_workspaces(&builds);
    std::fs::create_dir_all(&ws.dir).map_err(io("create", &ws.dir))?;
    let me = std::process::id() as i32;
    let start = crate::sys::procfs::stat(me).map_or(0, |s| s.start_time);
    std::fs::write(ws.dir.join("builder"), format!("{me} {start}"))
        .map_err(io("write", &ws.dir))?;
    for d in [
        "app",
        "env",
        "buildpacks",
        "slipway/out",
        "upper",
        "work",
        "rootfs",
        "bundle",
    ] {
        let p = ws.dir.join(d);
        std::fs::create_dir_all(&p).map_err(io("create", &p))?;
    }
    copy_tree(&opts.source_dir, &ws.dir.join("app"), STACK_UID)?;
    let _ = std::os::unix::fs::lchown(ws.dir.join("app"), Some(STACK_UID), Some(STACK_UID));
    for (k, val) in &opts.env {
        let p = ws.dir.join("env").join(k);
        std::fs::write(&p, val).map_err(io("write", &p))?;
    }
    let mut mode = String::new();
    let packs = prepare_buildpacks(opts, &ws.dir, &mut mode, log)?;
    let slipway_dir = ws.dir.join("slipway");
    std::fs::write(slipway_dir.join("build.sh"), BUILD_SCRIPT)
        .map_err(io("write", &slipway_dir))?;
    std::fs::write(slipway_dir.join("mode"), &mode).map_err(io("write", &slipway_dir))?;
    for p in [
        slipway_dir.clone(),
        slipway_dir.join("out"),
        ws.dir.join("buildpacks"),
    ] {
        let _ = std::os::unix::fs::lchown(&p, Some(STACK_UID), Some(STACK_UID));
    }
    cache.ensure(STACK_UID, STACK_UID)?;

    let _overlay = sandbox::mount_overlay(
        &[&stack.path],
        &ws.dir.join("upper"),
        &ws.dir.join("work"),
        &ws.dir.join("rootfs"),
    )?;

    // The build's own network namespace, joined to the build bridge with NAT egress.
    std::fs::create_dir_all(&opts.run_dir).map_err(io("create", &opts.run_dir))?;
    let netns_dir =
        NetnsDir::open(&opts.run_dir).map_err(|e| BuildError::Network(e.to_string()))?;
    let netns = netns_dir
        .create(&id)
        .map_err(|e| BuildError::Network(e.to_string()))?;
    let subnet = opts
        .subnet
        .parse()
        .map_err(|e| BuildError::Input(format!("build subnet {}: {e}", opts.subnet)))?;
    let network = Network::new(NetworkConfig::new(
        &opts.bridge,
        subnet,
        opts.data_dir.join("network"),
    ))
    .map_err(|e| BuildError::Network(e.to_string()))?;
    network
        .attach(netns.path(), &id, "eth0")
        .map_err(|e| BuildError::Network(e.to_string()))?;
    let spec = build_spec(
        opts,
        &ws.dir,
        &ws.dir.join("rootfs"),
        netns.path(),
        &stack.name,
        cache.dir(),
    )?;

    let launcher = Launcher {
        runtime: super::launch::runtime_binary(),
        root: opts.run_dir.join("runtime"),
    };
    let mut lines: Vec<String> = Vec::new();
    let outcome = launcher.run(
        &id,
        &ws.dir.join("bundle"),
        &spec,
        opts.timeout,
        &mut |line| {
            log(line);
            lines.push(line.to_string());
            if lines.len() > 200 {
                lines.drain(..100);
            }
        },
    );
    let _ = network.detach(netns.path(), &id, "eth0");
    let _ = netns.delete();
    let outcome = outcome?;
    let out = slipway_dir.join("out");
    match outcome {
        Outcome::TimedOut => return Err(BuildError::Timeout(opts.timeout)),
        Outcome::Exited(0) => {}
        Outcome::Exited(code) => {
            let failure = std::fs::read_to_string(out.join("failure")).unwrap_or_default();
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
    let used: Vec<String> = std::fs::read_to_string(out.join("used"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    let mut defaults = Vec::new();
    let mut config_vars = Vec::new();
    for i in 0..packs.len() {
        let p = out.join(format!("release-{i}.yml"));
        if let Ok(text) = std::fs::read_to_string(&p) {
            let info = parse_release(&text)?;
            if !info.default_process_types.is_empty() {
                defaults = info.default_process_types;
            }
            config_vars.extend(info.config_vars);
        }
    }
    let compile_seconds: f64 = (0..packs.len())
        .filter_map(|i| std::fs::read_to_string(out.join(format!("compile-time-{i}"))).ok())
        .filter_map(|s| {
            let mut w = s.split_whitespace().map(|x| x.parse::<f64>().ok());
            Some(w.next()??..w.next()??)
        })
        .map(|r| r.end - r.start)
        .sum();
    let process_types: Vec<ProcessType> = merge_process_types(procfile.as_ref(), &defaults)
        .into_iter()
        .map(|(name, command, origin)| ProcessType {
            name,
            command,
            origin: origin.to_string(),
        })
        .collect();

    log("-----> Compressing...");
    let slugs = SlugStore::new(&opts.data_dir);
    let slug: Slug = slugs.pack(&ws.dir.join("app"), opts.slug_limit)?;
    // The packed tree becomes the slug's layer as it is: no need to unpack the archive.
    let unpacked = slugs.adopt(&slug.id, &ws.dir.join("app"))?;
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
    if process_types.is_empty() {
        log(" !     No process types: add a Procfile (web: <command>) so the app can run.");
    } else {
        log(&format!(
            "-----> Process types: {}",
            process_types
                .iter()
                .map(|p| format!("{} ({})", p.name, p.origin))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let result = BuildResult {
        slug: slug.id.clone(),
        app: opts.app.clone(),
        archive: slug.archive.clone(),
        unpacked,
        process_types,
        buildpacks: used,
        stack: "run".into(),
        build_stack_id: stack.id.clone(),
        slug_bytes: slug.size,
        unpacked_bytes: slug.unpacked_size,
        build_seconds: started.elapsed().as_secs_f64(),
        compile_seconds,
        source_version: opts.source_version.clone(),
        config_vars,
    };
    let meta = slug.archive.with_extension("").with_extension("json");
    std::fs::write(&meta, serde_json::to_vec_pretty(&result).expect("json"))
        .map_err(io("write", &meta))?;
    Ok(result)
}
