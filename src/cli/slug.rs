//! `slipway slug run`: run one process of a built slug in a container, in the foreground.
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use slipway::build::builder::{run_stack_of, BuildResult};
use slipway::build::slug::{is_slug_id, SlugStore};
use slipway::config::Config;
use slipway::platform::process_types;
use slipway::sandbox::{interrupt, mounts, Outcome, Place, Sandbox, Workspace};
use slipway::stacks::StackStore;
use slipway::supervisor::app_spec::{self, AppProcess};

#[derive(Debug, Args)]
pub struct SlugRunArgs {
    /// Slug id as printed by `slipway build` (any unique prefix).
    pub slug: String,
    /// Process type to run.
    #[arg(long, short = 'p', default_value = "web")]
    pub process: String,
    /// The port the process listens on ($PORT), 1-65535.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Config vars (KEY=VALUE).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    #[arg(long = "memory-mb", default_value_t = 512)]
    pub memory_mb: u64,
}

/// The one slug whose id starts with `prefix`, as git finds a commit.
fn find_slug(config: &Config, prefix: &str) -> anyhow::Result<String> {
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("slug id {prefix:?}: use the hex id `slipway build` printed (or a prefix of it)");
    }
    let dir = config.data_dir.join("slugs");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(String::from))
        .filter(|id| is_slug_id(id) && id.starts_with(prefix))
        .collect();
    found.sort();
    match found.len() {
        0 => bail!(
            "no slug {prefix} in {} (build one with `slipway build`)",
            dir.display()
        ),
        1 => Ok(found.remove(0)),
        n => bail!("slug id {prefix} is ambiguous ({n} slugs start with it): give more characters"),
    }
}

pub fn run(config: &Config, a: SlugRunArgs) -> anyhow::Result<u8> {
    // Ctrl-C, SIGTERM and SIGHUP stop the container through the same cleanup as its end.
    interrupt::block_signals();
    let slug = find_slug(config, &a.slug)?;
    let meta_path = config.data_dir.join("slugs").join(format!("{slug}.json"));
    let meta: BuildResult = serde_json::from_slice(
        &std::fs::read(&meta_path).with_context(|| format!("read {}", meta_path.display()))?,
    )?;
    let types = process_types::resolve(meta.procfile.as_deref(), &meta.default_process_types)?;
    let Some(pt) = types.iter().find(|p| p.name == a.process) else {
        bail!(
            "the slug has no {:?} process type (it has: {})",
            a.process,
            types
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let mut env = Vec::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv}: use KEY=VALUE"))?;
        slipway::build::env_vars::check(k, v)?;
        env.push((k.to_string(), v.to_string()));
    }
    // A buildpack's config_vars are defaults: a var given here wins (as on Heroku).
    for (k, v) in &meta.config_vars {
        if !env.iter().any(|(name, _)| name == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    mounts::enter_private_mount_ns()?;
    interrupt::start_watcher();
    let stack = StackStore::new(&config.stacks_dir).ensure(run_stack_of(&meta.stack))?;
    let place = Place {
        workspaces: config.data_dir.join("containers"),
        run_dir: config.run_dir.clone(),
        network: config.app_network.clone(),
        network_state: config.data_dir.join("network"),
        runtime: config.runtime.clone(),
    };
    Sandbox::sweep(&place);
    let id = format!("{}-{}-{}", meta.app, a.process, std::process::id());
    let workspace = Workspace::create(&place.workspaces, &id)?;
    let memory_bytes = a.memory_mb << 20;
    let container = app_spec::container(
        &AppProcess {
            app: &meta.app,
            kind: &a.process,
            index: 1,
            command: &pt.command,
            port: a.port,
            release: &meta.slug[..12],
            size: "custom",
            env: &env,
            memory_bytes,
            pids_limit: 256,
        },
        &meta.unpacked,
        &stack.path,
    );
    let mut sandbox = Sandbox::prepare(&place, workspace, &container)?;
    if a.process == "web" {
        announce_when_listening(SocketAddr::from((sandbox.ip(), a.port)), &a.process);
    }
    let label = a.process.clone();
    let outcome = sandbox.run(Duration::from_secs(u64::MAX / 4), &mut |line| {
        if writeln!(std::io::stdout(), "app[{label}.1]: {line}").is_err() {
            // Nobody reads any more (`| head`): stop as SIGPIPE would, cleaning up.
            interrupt::interrupt(libc::SIGPIPE);
        }
    })?;
    drop(sandbox);
    let code = match outcome {
        Outcome::Exited(code) => code,
        Outcome::TimedOut => 124,
    };
    match interrupt::interrupted() {
        Some(sig) => eprintln!("{} stopped (signal {sig})", a.process),
        None if code == 137 => eprintln!(
            "{} exited: killed (code 137); if it ran out of memory, raise --memory-mb (now {})",
            a.process, a.memory_mb
        ),
        None => eprintln!("{} exited with code {code}", a.process),
    }
    Ok(code.clamp(0, 255) as u8)
}

/// Say where the process listens once its port accepts connections (not before).
fn announce_when_listening(addr: SocketAddr, process: &str) {
    let process = process.to_string();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let _ = writeln!(std::io::stdout(), "{process} listening on http://{addr}");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "{process} has not accepted connections on {addr} for 2 minutes: does it listen on $PORT ({}), on all addresses (0.0.0.0)?",
            addr.port()
        );
    });
}

/// One stored slug, as `slug list` shows it.
#[derive(serde::Serialize)]
struct SlugEntry {
    id: String,
    app: String,
    bytes: u64,
    unpacked_bytes: u64,
    /// Seconds since the epoch the archive was written.
    created: u64,
}

fn entries(config: &Config) -> Vec<SlugEntry> {
    let store = SlugStore::new(&config.data_dir);
    store
        .ids()
        .into_iter()
        .filter_map(|id| {
            let slug = store.get(&id)?;
            let app = std::fs::read(store.root().join(format!("{id}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice::<BuildResult>(&b).ok())
                .map_or_else(|| "?".to_string(), |r| r.app);
            let created = std::fs::metadata(&slug.archive)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            Some(SlugEntry {
                id,
                app,
                bytes: slug.size,
                unpacked_bytes: slug.unpacked_size,
                created,
            })
        })
        .collect()
}

pub fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    let mut all = entries(config);
    all.sort_by(|a, b| (&a.app, b.created).cmp(&(&b.app, a.created)));
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<14} {:<20} {:>10} {:>10}",
        "SLUG", "APP", "SIZE", "UNPACKED"
    );
    for e in &all {
        println!(
            "{:<14} {:<20} {:>8.1}MB {:>8.1}MB",
            &e.id[..12],
            e.app,
            e.bytes as f64 / 1e6,
            e.unpacked_bytes as f64 / 1e6
        );
    }
    Ok(())
}

pub fn remove(config: &Config, prefix: &str) -> anyhow::Result<()> {
    let id = find_slug(config, prefix)?;
    let freed = SlugStore::new(&config.data_dir).remove(&id)?;
    println!("removed slug {} ({:.1} MB)", &id[..12], freed as f64 / 1e6);
    Ok(())
}

pub fn prune(config: &Config, keep: usize) -> anyhow::Result<()> {
    let store = SlugStore::new(&config.data_dir);
    let mut all = entries(config);
    all.sort_by(|a, b| (&a.app, b.created).cmp(&(&b.app, a.created)));
    let (mut removed, mut freed, mut kept_of_app) = (0, 0u64, (String::new(), 0usize));
    for e in all {
        if kept_of_app.0 != e.app {
            kept_of_app = (e.app.clone(), 0);
        }
        if kept_of_app.1 < keep {
            kept_of_app.1 += 1;
            continue;
        }
        match store.remove(&e.id) {
            Ok(n) => {
                removed += 1;
                freed += n;
            }
            Err(err) => eprintln!("kept {}: {err}", &e.id[..12]),
        }
    }
    println!("removed {removed} slugs ({:.1} MB)", freed as f64 / 1e6);
    Ok(())
}
