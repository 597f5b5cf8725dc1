//! `slipway slug run`: run one process of a built slug in a container, in the foreground.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use slipway::build::builder::BuildResult;
use slipway::build::launch::{runtime_binary, Launcher, Outcome};
use slipway::build::sandbox;
use slipway::network::bridge::{Network, NetworkConfig};
use slipway::network::netns::NetnsDir;
use slipway::stacks::StackStore;
use slipway::supervisor::app_spec::{self, AppProcess};

#[derive(Debug, Args)]
pub struct SlugRunArgs {
    /// Slug id (as printed by `slipway build`).
    pub slug: String,
    /// Process type to run.
    #[arg(long, short = 'p', default_value = "web")]
    pub process: String,
    #[arg(long, default_value_t = 5000)]
    pub port: u16,
    /// Config vars (KEY=VALUE).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    #[arg(long = "memory-mb", default_value_t = 512)]
    pub memory_mb: u64,
    #[arg(
        long = "run-dir",
        env = "SLIPWAY_RUN_DIR",
        default_value = "/run/slipway"
    )]
    pub run_dir: PathBuf,
    /// Where stacks are kept (default: the data dir).
    #[arg(long = "stacks-dir", env = "SLIPWAY_STACKS_DIR")]
    pub stacks_dir: Option<PathBuf>,
    #[arg(long, env = "SLIPWAY_APP_BRIDGE", default_value = "slipway1")]
    pub bridge: String,
    #[arg(long, env = "SLIPWAY_APP_SUBNET", default_value = "10.210.0.0/24")]
    pub subnet: String,
}

pub fn run(data_dir: &Path, a: SlugRunArgs) -> anyhow::Result<()> {
    let meta_path = data_dir.join("slugs").join(format!("{}.json", a.slug));
    let meta: BuildResult = serde_json::from_slice(
        &std::fs::read(&meta_path)
            .with_context(|| format!("slug {} not found ({})", a.slug, meta_path.display()))?,
    )?;
    let Some(pt) = meta.process_types.iter().find(|p| p.name == a.process) else {
        bail!(
            "the slug has no {:?} process type (it has: {})",
            a.process,
            meta.process_types
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
        env.push((k.to_string(), v.to_string()));
    }
    sandbox::enter_private_mount_ns()?;
    let stack = StackStore::new(a.stacks_dir.as_deref().unwrap_or(data_dir)).ensure("run")?;
    let id = format!("{}-{}-{}", meta.app, a.process, std::process::id());
    let ws = data_dir.join("containers").join(&id);
    for d in ["upper", "work", "rootfs", "bundle"] {
        std::fs::create_dir_all(ws.join(d))?;
    }
    let _cleanup = scopeguard(ws.clone());
    let _overlay = sandbox::mount_overlay(
        &[&meta.unpacked, &stack.path],
        &ws.join("upper"),
        &ws.join("work"),
        &ws.join("rootfs"),
    )?;
    std::fs::create_dir_all(&a.run_dir)?;
    let netns_dir = NetnsDir::open(&a.run_dir)?;
    let netns = netns_dir.create(&id)?;
    let network = Network::new(NetworkConfig::new(
        &a.bridge,
        a.subnet.parse()?,
        data_dir.join("network"),
    ))?;
    let att = network.attach(netns.path(), &id, "eth0")?;
    let spec = app_spec::spec(
        &AppProcess {
            app: &meta.app,
            kind: &a.process,
            index: 1,
            command: &pt.command,
            port: a.port,
            release: &meta.slug[..12],
            env: &env,
            memory_bytes: a.memory_mb << 20,
            pids_limit: 256,
        },
        &ws.join("rootfs"),
        netns.path(),
    );
    println!("{} listening on http://{}:{}", a.process, att.ip, a.port);
    let launcher = Launcher {
        runtime: runtime_binary(),
        root: a.run_dir.join("runtime"),
    };
    // SIGTERM / SIGINT stop the container (SIGTERM, then SIGKILL after 10 s).
    stop_on_signal(launcher.runtime.clone(), launcher.root.clone(), id.clone());
    let outcome = launcher.run(
        &id,
        &ws.join("bundle"),
        &spec,
        Duration::from_secs(u64::MAX / 4),
        &mut |line| println!("app[{}.1]: {line}", a.process),
    );
    let _ = network.detach(netns.path(), &id, "eth0");
    let _ = netns.delete();
    match outcome? {
        Outcome::Exited(code) => println!("{} exited with code {code}", a.process),
        Outcome::TimedOut => {}
    }
    Ok(())
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn scopeguard(p: PathBuf) -> Cleanup {
    Cleanup(p)
}

fn stop_on_signal(runtime: PathBuf, root: PathBuf, id: String) {
    // SAFETY: blocking signals for this thread and those it starts, before any is started.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            let l = Launcher { runtime, root };
            l.stop(&id, Duration::from_secs(10));
        });
    }
}
