//! `slipway build` and `slipway cache`.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use slipway::build::builder::{self, BuildOptions};
use slipway::build::cache::BuildCache;

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
    /// Runtime state and network namespaces.
    #[arg(
        long = "run-dir",
        env = "SLIPWAY_RUN_DIR",
        default_value = "/run/slipway"
    )]
    pub run_dir: PathBuf,
    /// Bridge of the build network.
    #[arg(long, env = "SLIPWAY_BUILD_BRIDGE", default_value = "slipway0")]
    pub bridge: String,
    /// Subnet of the build network.
    #[arg(long, env = "SLIPWAY_BUILD_SUBNET", default_value = "10.209.0.0/24")]
    pub subnet: String,
    /// Where stacks are kept (default: the data dir).
    #[arg(long = "stacks-dir", env = "SLIPWAY_STACKS_DIR")]
    pub stacks_dir: Option<PathBuf>,
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

pub fn build(data_dir: &Path, a: BuildArgs) -> anyhow::Result<()> {
    let mut opts = BuildOptions::new(&a.dir, &a.app, data_dir);
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv}: use KEY=VALUE"))?;
        opts.env.push((k.to_string(), v.to_string()));
    }
    opts.buildpack = a.buildpack.clone();
    opts.buildpack_policy.allow_local = a.allow_local_buildpacks;
    opts.timeout = Duration::from_secs(a.timeout);
    opts.slug_limit = a.slug_limit_mb << 20;
    opts.memory_limit = a.memory_mb << 20;
    opts.source_version = a.source_version.clone();
    opts.run_dir = a.run_dir.clone();
    if let Some(s) = &a.stacks_dir {
        opts.stacks_dir = s.clone();
    }
    opts.bridge = a.bridge.clone();
    opts.subnet = a.subnet.clone();
    let json = a.json;
    let mut log = |line: &str| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let result = builder::build(&opts, &mut log).context("build failed")?;
    if let Some(out) = &a.output {
        std::fs::copy(&result.archive, out)
            .with_context(|| format!("copy the slug to {}", out.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "-----> Built slug {} in {:.1} s",
            result.slug, result.build_seconds
        );
    }
    Ok(())
}

pub fn cache(data_dir: &Path, c: CacheCommand) -> anyhow::Result<()> {
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
