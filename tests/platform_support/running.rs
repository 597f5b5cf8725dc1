//! A test's slipway as it runs on a host: the real `slipway daemon` and `slipway router`
//! processes of a [`World`], started, killed and started again as a test needs, and stopped
//! with everything they ran when the test ends (passed or not).
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slipway::api::routes::Backend;
use slipway::supervisor::{Events, Options, Supervisor};

use super::{World, RUNTIME, SLIPWAY};

/// A world with its daemon and router running.
pub struct Platform {
    pub world: World,
    daemon: Option<Child>,
    router: Option<Child>,
}

struct NoEvents;
impl Events for NoEvents {
    fn backends_changed(&self, _: &str, _: Vec<Backend>) {}
    fn event(&self, _: &str, _: &str) {}
}

impl Platform {
    /// With an empty config file and the router's defaults.
    pub fn start() -> Platform {
        Platform::start_with("", &[])
    }

    /// With `config` as the config file (after the TCP API's address on the world's API
    /// port, which git remotes use too) and `router_args` for `slipway router`.
    pub fn start_with(config: &str, router_args: &[&str]) -> Platform {
        let world = World::new();
        world.write_config(&format!(
            "api_listen = \"127.0.0.1:{}\"\n{config}",
            world.api_port
        ));
        Platform::start_in(world, router_args)
    }

    /// Starts the daemon and the router of `world`, its config file written.
    pub fn start_in(world: World, router_args: &[&str]) -> Platform {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "platform tests need root (containers, networks): run them as root"
        );
        let mut p = Platform {
            world,
            daemon: None,
            router: None,
        };
        p.start_daemon();
        let log = std::fs::File::create(p.world.dir.path().join("router.log")).unwrap();
        p.router = Some(
            p.world
                .cmd()
                .arg("router")
                .args(router_args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let port = p.world.router_port;
        p.world
            .eventually("the router listens", Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        p
    }

    /// Starts the daemon; returns once it said READY=1 (it serves and has recovered).
    pub fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.world.dir.path().join("daemon.log"))
            .unwrap();
        // As systemd does for Type=notify: the daemon says READY=1 once it serves.
        let notify_path = self.world.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        self.daemon = Some(
            self.world
                .cmd()
                .arg("daemon")
                .env(
                    "SLIPWAY_API_LISTEN",
                    format!("127.0.0.1:{}", self.world.api_port),
                )
                .env("NOTIFY_SOCKET", &notify_path)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let mut buf = [0u8; 256];
        let n = notify
            .recv(&mut buf)
            .expect("the daemon never said READY=1");
        assert_eq!(&buf[..n], b"READY=1");
        assert!(
            std::os::unix::net::UnixStream::connect(self.world.socket()).is_ok(),
            "READY=1 before the API listens"
        );
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.world.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// GET / of `app` through the router: the body of a 200, or why not.
    pub fn get(&self, app: &str) -> Result<String, String> {
        self.get_path(app, "/")
    }

    /// GET PATH of `app` through the router: the body of a 200, or why not.
    pub fn get_path(&self, app: &str, path: &str) -> Result<String, String> {
        match self
            .world
            .get_path(self.world.router_port, &format!("{app}.localhost"), path)
        {
            Some((200, body)) => Ok(body),
            Some((status, body)) => Err(format!("{status}: {body}")),
            None => Err("no connection".into()),
        }
    }

    /// Waits until `app` answers `want` (trimmed) through the router.
    pub fn answers(&self, app: &str, want: &str) {
        self.answers_at(app, "/", want)
    }

    /// Waits until `app` answers `want` (trimmed) at `path` through the router.
    pub fn answers_at(&self, app: &str, path: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.get_path(app, path);
            if got.as_deref().map(str::trim) == Ok(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{app}{path} answers {got:?}, not {want:?}\ndaemon:\n{}\nits deployments:\n{}",
                self.daemon_log(),
                self.last_deployment(app)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The list of `app`'s deployments and the log of the last one, for failure messages.
    pub fn last_deployment(&self, app: &str) -> String {
        let (_, list, _) = self.world.cli(&["deployments", "-a", app]);
        let id = list
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("0");
        let (_, log, err) = self.world.cli(&["deployments", "show", id]);
        format!("{list}\n{log}{err}")
    }

    /// SIGKILL to the daemon (its containers' monitors and the router live on).
    pub fn kill_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// `slipway ps -a APP --json`.
    pub fn ps(&self, app: &str) -> Vec<serde_json::Value> {
        let out = self.world.ok(&["ps", "-a", app, "--json"]);
        match serde_json::from_str(&out) {
            Ok(serde_json::Value::Array(list)) => list,
            other => panic!("ps: {other:?}\n{out}"),
        }
    }

    /// Waits until `app` has `n` containers of `kind` up.
    pub fn wait_up(&self, app: &str, kind: &str, n: usize) {
        let what = format!("{n} {kind} containers of {app} up");
        self.world.eventually(&what, Duration::from_secs(90), || {
            let ps = self.ps(app);
            ps.iter()
                .filter(|c| c["kind"] == kind && c["state"] == "up")
                .count()
                == n
        });
    }

    /// The lines of `app`'s router log.
    pub fn router_log(&self, app: &str) -> Vec<String> {
        let path = self.world.data().join("logs").join(app).join("router.log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        for child in [self.daemon.take(), self.router.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever a failed test left running: a fresh supervisor adopts it and stops it.
        let apps: Vec<String> = std::fs::read_dir(self.world.data().join("supervisor/apps"))
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
        if !apps.is_empty() {
            let options = Options {
                monitor_exe: Some(SLIPWAY.into()),
                stop_grace: Duration::from_secs(2),
                ..Options::default()
            };
            if let Ok(sup) =
                Supervisor::start_with(&self.world.config(), Arc::new(NoEvents), options)
            {
                for app in &apps {
                    let _ = sup.stop_app(app);
                }
            }
        }
    }
}

/// The runtime's containers of this world.
pub fn containers(w: &World) -> Vec<String> {
    let out = Command::new(RUNTIME)
        .arg("--root")
        .arg(w.run_dir().join("runtime"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}
