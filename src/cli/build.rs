//! `slipway build` and `slipway cache`.
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use slipway::build::builder::{self, BuildError, BuildOptions};
use slipway::build::cache::BuildCache;
use slipway::config::Config;
use slipway::platform::{process_types, procfile};
use slipway::sandbox::{interrupt, mounts};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The app's source directory.
    pub dir: PathBuf,
    /// App name (its build cache is kept per app): a lower-case DNS label of at most 40
    /// characters, starting with a letter.
    #[arg(long, short = 'a', default_value = "app")]
    pub app: String,
    /// Copy the slug (tar.zst) here too.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Config vars for the build (KEY=VALUE; names of [A-Za-z0-9_], at most 64 characters,
    /// not starting with '_'). They are the app's: a BUILDPACK_URL among them picks a
    /// buildpack by URL (local paths only with --allow-local-buildpacks).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Force one buildpack, chosen by the operator: a URL, a directory, a git repository or a
    /// tarball of this host. Wins over BUILDPACK_URL and .buildpacks.
    #[arg(long)]
    pub buildpack: Option<String>,
    /// Let the app's own buildpack sources (.buildpacks lines, BUILDPACK_URL) name
    /// directories and files of this host (paths and file:// URLs), not only URLs.
    #[arg(long = "allow-local-buildpacks")]
    pub allow_local_buildpacks: bool,
    /// Stop the build after this many seconds.
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
    /// Largest allowed slug (unpacked), in MiB.
    #[arg(long = "slug-limit-mb", default_value_t = 1024)]
    pub slug_limit_mb: u64,
    /// Memory limit of the build container, in MiB.
    #[arg(long = "memory-mb", default_value_t = 2048)]
    pub memory_mb: u64,
    /// Commit the source comes from (SOURCE_VERSION).
    #[arg(long = "source-version")]
    pub source_version: Option<String>,
    /// Print the result as JSON on stdout (build output goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Empty an app's build cache.
    Clear {
        #[arg(long, short = 'a')]
        app: String,
    },
}

pub fn build(config: &Config, a: BuildArgs) -> anyhow::Result<u8> {
    // Ctrl-C, SIGTERM and SIGHUP stop the build through the same cleanup as its end.
    interrupt::block_signals();
    let mut opts = BuildOptions::new(&a.dir, &a.app);
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv}: use KEY=VALUE"))?;
        opts.env.push((k.to_string(), v.to_string()));
    }
    opts.buildpack = a.buildpack.clone();
    opts.buildpack_policy.allow_local = a.allow_local_buildpacks || config.allow_local_buildpacks;
    opts.timeout = Duration::from_secs(a.timeout);
    opts.slug_limit = a.slug_limit_mb << 20;
    opts.memory_limit = a.memory_mb << 20;
    opts.source_version = a.source_version.clone();
    // A bad Procfile fails the build before anything runs.
    procfile::read_from(&a.dir)?;
    mounts::enter_private_mount_ns()?;
    interrupt::start_watcher();
    let json = a.json;
    let mut log = |line: &str| {
        let written = if json {
            writeln!(std::io::stderr(), "{line}")
        } else {
            writeln!(std::io::stdout(), "{line}")
        };
        // Nobody reads any more (`| head`): stop as SIGPIPE would, cleaning up.
        if written.is_err() {
            interrupt::interrupt(libc::SIGPIPE);
        }
    };
    let result = match builder::build(config, &opts, &mut log) {
        Err(BuildError::Interrupted(sig)) => {
            let _ = writeln!(
                std::io::stderr(),
                "build stopped (signal {sig}); nothing was kept"
            );
            return Ok((128 + sig) as u8);
        }
        r => r.context("build failed")?,
    };
    let types = process_types::resolve(result.procfile.as_deref(), &result.default_process_types)?;
    if types.is_empty() {
        log(" !     No process types: add a Procfile (web: <command>) so the app can run.");
    } else {
        log(&format!(
            "-----> Process types: {}",
            types
                .iter()
                .filter(|p| !process_types::is_phase(&p.name))
                .map(|p| format!("{} ({})", p.name, p.origin))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for phase in types.iter().filter(|p| process_types::is_phase(&p.name)) {
            log(&format!(
                "-----> {} phase: `{}` (runs once per release, {})",
                phase.name,
                phase.command,
                if phase.name == "release" {
                    "before it goes live"
                } else {
                    "after its containers start, before traffic switches"
                }
            ));
        }
    }
    if let Some(out) = &a.output {
        std::fs::copy(&result.archive, out)
            .with_context(|| format!("copy the slug to {}", out.display()))?;
    }
    if json {
        // The build's result with the process types the platform resolves from it.
        let mut out = serde_json::to_value(&result)?;
        out["process_types"] = serde_json::to_value(&types)?;
        let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&out)?);
    } else {
        log(&format!(
            "-----> Built slug {} in {:.1} s",
            result.slug, result.build_seconds
        ));
    }
    Ok(0)
}

pub fn cache(config: &Config, c: CacheCommand) -> anyhow::Result<()> {
    let data_dir = config.data_dir.as_path();
    match c {
        CacheCommand::Clear { app } => {
            let cache = BuildCache::new(data_dir, &app)?;
            let freed = cache.clear()?;
            println!(
                "cleared the build cache of {app} ({:.1} MB)",
                freed as f64 / 1e6
            );
            Ok(())
        }
    }
}
