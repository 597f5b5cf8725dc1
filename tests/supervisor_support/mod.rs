//! What the supervisor's tests share (root): a world per test (data dir, run dir, bridge,
//! subnet), the fixture app built with the real `slipway build`, releases made from it, an
//! `Events` recorder, HTTP, and the list of what a test could leave on the host.
#![allow(dead_code)]

#[path = "../leftovers_support/mod.rs"]
mod leftovers;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slipway::api::routes::Backend;
use slipway::config::{Config, NetworkSettings};
use slipway::platform::process_types::ProcessType;
use slipway::supervisor::{Events, Options, Release, Supervisor};

pub const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");
pub const RUNTIME: &str = env!("CARGO_BIN_EXE_slipway-runtime");
static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apps")
        .join(name)
}

/// Events as the control plane would receive them.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<(String, String)>>,
    pub backends: Mutex<HashMap<String, Vec<Backend>>>,
    /// Every backends report, in order.
    pub reports: Mutex<Vec<(String, Vec<Backend>)>>,
}

impl Events for Recorder {
    fn backends_changed(&self, app: &str, backends: Vec<Backend>) {
        self.backends
            .lock()
            .unwrap()
            .insert(app.to_string(), backends.clone());
        self.reports
            .lock()
            .unwrap()
            .push((app.to_string(), backends));
    }

    fn event(&self, app: &str, line: &str) {
        self.events
            .lock()
            .unwrap()
            .push((app.to_string(), line.to_string()));
    }
}

impl Recorder {
    pub fn backends(&self, app: &str) -> Vec<Backend> {
        self.backends
            .lock()
            .unwrap()
            .get(app)
            .cloned()
            .unwrap_or_default()
    }

    /// The events of `app` that contain `needle`.
    pub fn matching(&self, app: &str, needle: &str) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, l)| a == app && l.contains(needle))
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub fn all(&self, app: &str) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == app)
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One test's world.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub subnet: String,
    pub events: Arc<Recorder>,
}

impl Env {
    pub fn new() -> Env {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "supervisor tests need root (containers, mounts, networks): run them as root"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let bridge = format!("slws{:x}{n}", pid % 0xffff);
        let subnet = format!("10.{}.{}.0/24", 60 + (pid % 40), 10 + n);
        let dir = tempfile::Builder::new()
            .prefix("slipway-supervisor-test")
            .tempdir()
            .unwrap();
        Env {
            dir,
            bridge,
            subnet,
            events: Arc::new(Recorder::default()),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn stacks_dir() -> PathBuf {
        std::env::var("SLIPWAY_TEST_STACKS_DIR")
            .unwrap_or("/var/lib/slipway".into())
            .into()
    }

    pub fn config(&self) -> Config {
        let mut c = Config::in_data_dir(&self.data());
        c.run_dir = self.run_dir();
        c.stacks_dir = Env::stacks_dir();
        c.runtime = RUNTIME.into();
        let net = NetworkSettings {
            bridge: self.bridge.clone(),
            subnet: self.subnet.clone(),
        };
        c.app_network = net.clone();
        c.build_network = net;
        c
    }

    /// Options for tests: the real binaries, short timeouts (hang guards, not assertions).
    pub fn options(&self) -> Options {
        Options {
            monitor_exe: Some(SLIPWAY.into()),
            stop_grace: Duration::from_secs(5),
            boot_timeout: Duration::from_secs(30),
            drain: Duration::from_millis(300),
            ..Options::default()
        }
    }

    pub fn start(&self) -> Supervisor {
        self.start_with(self.options())
    }

    pub fn start_with(&self, options: Options) -> Supervisor {
        Supervisor::start_with(&self.config(), self.events.clone(), options).unwrap()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(SLIPWAY);
        c.arg("--data-dir").arg(self.data());
        c.env("SLIPWAY_STACKS_DIR", Env::stacks_dir());
        c.env("SLIPWAY_RUN_DIR", self.run_dir());
        for (k, v) in [
            ("SLIPWAY_BUILD_BRIDGE", &self.bridge),
            ("SLIPWAY_BUILD_SUBNET", &self.subnet),
            ("SLIPWAY_APP_BRIDGE", &self.bridge),
            ("SLIPWAY_APP_SUBNET", &self.subnet),
        ] {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Build `fixture` (under tests/fixtures/apps) as `app` with the real `slipway build`;
    /// the unpacked slug's directory.
    pub fn build(&self, fixture_name: &str, app: &str) -> PathBuf {
        let v = self.build_json(fixture_name, app);
        PathBuf::from(v["unpacked"].as_str().unwrap())
    }

    /// `slipway build --json`'s result.
    pub fn build_json(&self, fixture_name: &str, app: &str) -> serde_json::Value {
        let out = self
            .cmd()
            .args(["build", "--json", "-a", app])
            .arg(fixture(fixture_name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build of {fixture_name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn log_file(&self, app: &str, source: &str) -> PathBuf {
        self.data()
            .join("logs")
            .join(app)
            .join(format!("{source}.log"))
    }

    pub fn log(&self, app: &str, source: &str) -> String {
        std::fs::read_to_string(self.log_file(app, source)).unwrap_or_default()
    }

    /// Whatever the supervisor could have left on the host, described; empty when nothing.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = leftovers::leftovers(&self.data(), &self.run_dir(), RUNTIME);
        for e in walkdir::WalkDir::new(self.run_dir().join("supervisor"))
            .into_iter()
            .flatten()
        {
            if e.file_type().is_file() {
                found.push(format!("state file {}", e.path().display()));
            }
        }
        let me = self.dir.path().to_string_lossy().into_owned();
        for line in std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
        {
            if line.contains(&me) {
                found.push(format!("mount {line}"));
            }
        }
        for pid in self.processes() {
            found.push(format!("process {pid}"));
        }
        found
    }

    /// Processes that belong to this test's world (their command line names its directory).
    pub fn processes(&self) -> Vec<i32> {
        let me = self.dir.path().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 2..i + 3))
                .is_some_and(|s| s == "Z");
            if !zombie && String::from_utf8_lossy(&cmdline).contains(&me) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Wait (bounded) until nothing is left; what still is otherwise.
    pub fn settle(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = self.leftovers();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever a failed test left running: a fresh supervisor adopts it and stops it.
        let apps: Vec<String> = std::fs::read_dir(self.run_dir().join("supervisor"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let desired: Vec<String> = std::fs::read_dir(self.data().join("supervisor/apps"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".json")
                    .map(String::from)
            })
            .collect();
        if !apps.is_empty() || !desired.is_empty() {
            let mut o = self.options();
            o.stop_grace = Duration::from_secs(2);
            if let Ok(sup) = Supervisor::start_with(&self.config(), self.events.clone(), o) {
                for app in apps.iter().chain(&desired) {
                    let _ = sup.stop_app(app);
                }
            }
        }
        use slipway::network::bridge::{Network, NetworkConfig};
        if let Ok(n) = Network::new(NetworkConfig::new(
            &self.bridge,
            self.subnet.parse().unwrap(),
            self.data().join("network"),
        )) {
            let _ = n.teardown_network();
        }
    }
}

/// A release of `app` from the slug at `slug`, with these process types.
pub fn release(
    app: &str,
    version: u32,
    slug: &Path,
    types: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Release {
    Release {
        app: app.to_string(),
        version,
        slug_dir: slug.to_path_buf(),
        process_types: types
            .iter()
            .map(|(name, command)| ProcessType {
                name: name.to_string(),
                command: command.to_string(),
                origin: "Procfile".into(),
            })
            .collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        stack: "run".into(),
    }
}

pub const WEB: &str = "python3 server.py";

/// GET / from `addr`: the body of a 200 answer.
pub fn get(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    if !resp.starts_with("HTTP/1.") || !resp.contains(" 200 ") {
        return Err(format!("unexpected answer: {resp}"));
    }
    Ok(resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The JSON a fixture web container answers with.
pub fn get_json(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let body = get(addr)?;
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// Wait (bounded, a hang guard) until `f` gives Some.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client sending requests, one after the other, to the app's current backends (as the
/// router would), until stopped: each answer's release, or what failed.
pub struct Client {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Result<String, String>>>,
}

impl Client {
    pub fn start(events: Arc<Recorder>, app: &str) -> Client {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let app = app.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut results = Vec::new();
            let mut n = 0usize;
            while !flag.load(Ordering::SeqCst) {
                let backends = events.backends(&app);
                if backends.is_empty() {
                    results.push(Err("no backend".to_string()));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                n += 1;
                let b = &backends[n % backends.len()];
                results.push(
                    get_json(b.address)
                        .map(|v| v["CONTAINER_VERSION"].as_str().unwrap_or("?").to_string())
                        .map_err(|e| format!("{} {}: {e}", b.container, b.address)),
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            results
        });
        Client { stop, thread }
    }

    pub fn stop(self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}
