//! Shared by the build tests (root): a test's own data dir, run dir, bridge and subnet, the
//! `slipway` CLI pointed at them, builds with their JSON result, and a slug's web process
//! started with `slipway slug run`. Stacks are shared (`SLIPWAY_TEST_STACKS_DIR`, default
//! /var/lib/slipway; scripts/test builds them first).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");
pub const RUNTIME: &str = env!("CARGO_BIN_EXE_slipway-runtime");
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A file or directory under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// One test's world for builds and slug runs.
pub struct BuildEnv {
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub subnet: String,
}

impl BuildEnv {
    /// `tag` (4 characters) starts the bridge name, and the subnets of this test binary are
    /// `10.B.N.0/24` with B from `second_octet` to 39 above it: pick a range that stays clear
    /// of the other test binaries' and of slipway's own defaults (10.209 and 10.210), which a
    /// slipway installed on the same host is using.
    pub fn new(tag: &str, second_octet: u32) -> BuildEnv {
        assert!(
            !(second_octet..second_octet + 40).any(|b| b == 209 || b == 210),
            "test subnets 10.{second_octet}-{}.x.x would meet slipway's default networks",
            second_octet + 39
        );
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "build tests need root (containers, mounts, networks): run them as root"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // Bridge names are at most 15 characters; subnets unique per process and test.
        let bridge = format!("{tag}{:x}{n}", pid % 0xffff);
        let subnet = format!("10.{}.{}.0/24", second_octet + (pid % 40), n);
        let dir = tempfile::Builder::new()
            .prefix(&format!("slipway-{tag}-test"))
            .tempdir()
            .unwrap();
        BuildEnv {
            dir,
            bridge,
            subnet,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The CLI against this world.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(SLIPWAY);
        c.arg("--data-dir").arg(self.data());
        c.env(
            "SLIPWAY_STACKS_DIR",
            std::env::var("SLIPWAY_TEST_STACKS_DIR").unwrap_or("/var/lib/slipway".into()),
        );
        c.env(
            "SLIPWAY_BUILDPACKS_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("buildpacks"),
        );
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

    /// `slipway build DIR --json ARGS`: (success, build output, result JSON).
    pub fn build(&self, dir: &Path, args: &[&str]) -> (bool, String, Value) {
        let out = self
            .cmd()
            .arg("build")
            .arg(dir)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), log, json)
    }

    /// A build that must succeed: (build output, result JSON).
    pub fn build_ok(&self, dir: &Path, args: &[&str]) -> (String, Value) {
        let (ok, log, json) = self.build(dir, args);
        assert!(ok, "build of {} failed:\n{log}", dir.display());
        (log, json)
    }

    /// Starts the slug's web process on port 5000 with `slipway slug run`: the process, the
    /// address it announced once its port accepted connections, and a thread collecting
    /// the rest of its output.
    pub fn slug_run(&self, slug: &str) -> SlugRun {
        let mut child = self
            .cmd()
            .args(["slug", "run", slug, "--port", "5000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Its lines, read by a thread: waiting for the announcement has a deadline, so a port
        // that never answers fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut rest = Vec::new();
            let mut announced = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if announced {
                    rest.push(line);
                } else {
                    announced = line.contains("listening on http://");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
            rest.join("\n")
        });
        // Announced once the port accepts connections; the app may print before that.
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut early = Vec::new();
        let first = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on http://") => break line,
                Ok(line) => early.push(line),
                Err(_) => {
                    stop(&mut child);
                    panic!(
                        "slug run never announced a listening port:\n{}",
                        early.join("\n")
                    );
                }
            }
        };
        let addr = first
            .split_whitespace()
            .last()
            .unwrap()
            .trim_start_matches("http://")
            .to_string();
        // Its stderr is drained too: a full pipe would stop it.
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let log = std::thread::spawn(move || {
            let out = reader.join().unwrap_or_default();
            format!("{out}\n{}", errors.join().unwrap_or_default())
        });
        SlugRun { child, addr, log }
    }
}

impl Drop for BuildEnv {
    fn drop(&mut self) {
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

/// A slug's web process, running.
pub struct SlugRun {
    pub child: Child,
    /// `IP:PORT`.
    pub addr: String,
    log: std::thread::JoinHandle<String>,
}

impl SlugRun {
    /// Stops it (SIGTERM, as Ctrl-C would); what it printed after announcing its address.
    pub fn stop(mut self) -> String {
        stop(&mut self.child);
        self.log.join().unwrap()
    }
}

/// SIGTERM, then SIGKILL after 30 s.
pub fn stop(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `GET PATH` over HTTP/1.0: the raw response, or why there is none.
pub fn get(addr: &str, path: &str) -> String {
    match TcpStream::connect(addr) {
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes());
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            resp
        }
        Err(e) => format!("connect error: {e}"),
    }
}

/// Waits until `GET /` answers 200 (its response), or the server exits, or `timeout`.
pub fn wait_for_200(addr: &str, timeout: Duration, server: &mut Child) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(status) = server.try_wait().unwrap() {
            return Err(format!("the app exited ({status}) before answering"));
        }
        let resp = get(addr, "/");
        if resp.starts_with("HTTP/1.") && resp.contains(" 200 ") {
            return Ok(resp);
        }
        last = resp;
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// The slug id of a build's result.
pub fn slug_of(json: &Value) -> String {
    json["slug"].as_str().unwrap().to_string()
}
