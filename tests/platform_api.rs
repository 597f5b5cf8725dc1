//! The control plane's API, store and CLI against a daemon whose supervisor is a fake that
//! records what it is asked (the daemon runs in this process; the CLI is the real binary).
//! Tests that deploy run real builds: root, and the stacks (`SLIPWAY_TEST_STACKS_DIR`,
//! default /var/lib/slipway).
mod platform_support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform_support::*;
use slipway::api::daemon::{self, DaemonOptions};
use slipway::api::routes::{Backend, RouteTable};
use slipway::api::runner::*;

/// The supervisor's stand-in: rollouts succeed (or fail as told), one-offs run on the host.
struct Fake {
    events: Arc<dyn Events>,
    calls: Mutex<Vec<String>>,
    fail_rollouts: Mutex<bool>,
    rollout_delay: Duration,
    containers: Mutex<BTreeMap<String, Vec<ContainerInfo>>>,
}

impl Fake {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Runner for Fake {
    fn rollout(
        &self,
        release: &Release,
        formation: &Formation,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), RolloutError> {
        std::thread::sleep(self.rollout_delay);
        let f: Vec<String> = formation
            .0
            .iter()
            .map(|(k, s)| format!("{k}={}:{}", s.count, s.size.name()))
            .collect();
        self.calls.lock().unwrap().push(format!(
            "rollout {} v{} {} {}",
            release.app,
            release.version,
            f.join(","),
            release
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
        assert!(release.slug_dir.join("app/Procfile").is_file());
        if *self.fail_rollouts.lock().unwrap() {
            log("web-1 exited with code 1");
            return Err(RolloutError::Crashed {
                container: "web-1".into(),
                code: 1,
            });
        }
        log("web-1 up");
        self.containers.lock().unwrap().insert(
            release.app.clone(),
            vec![ContainerInfo {
                name: "web-1".into(),
                kind: "web".into(),
                state: "up".into(),
                release: release.version,
                size: Size::M,
                pid: Some(1),
                address: Some("10.1.2.3:5000".parse().unwrap()),
                restarts: 0,
                started_at: "now".into(),
            }],
        );
        self.events.backends_changed(
            &release.app,
            vec![Backend {
                container: "web-1".into(),
                address: "10.1.2.3:5000".parse().unwrap(),
            }],
        );
        self.events.event(&release.app, "web-1 is up");
        Ok(())
    }

    fn scale(&self, app: &str, formation: &Formation) -> Result<(), RunnerError> {
        let f: Vec<String> = formation
            .0
            .iter()
            .map(|(k, s)| format!("{k}={}:{}", s.count, s.size.name()))
            .collect();
        self.calls
            .lock()
            .unwrap()
            .push(format!("scale {app} {}", f.join(",")));
        Ok(())
    }

    fn restart(&self, app: &str, target: Option<&str>) -> Result<(), RunnerError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("restart {app} {}", target.unwrap_or("all")));
        Ok(())
    }

    fn stop_app(&self, app: &str) -> Result<(), RunnerError> {
        self.calls.lock().unwrap().push(format!("stop {app}"));
        self.containers.lock().unwrap().remove(app);
        Ok(())
    }

    fn ps(&self, app: &str) -> Vec<ContainerInfo> {
        self.containers
            .lock()
            .unwrap()
            .get(app)
            .cloned()
            .unwrap_or_default()
    }

    fn cron(&self, _app: &str) -> Vec<slipway::api::runner::CronJobInfo> {
        Vec::new()
    }

    fn one_off(
        &self,
        release: &Release,
        command: &str,
        size: Size,
        env: &[(String, String)],
        mode: OneOffMode,
    ) -> Result<OneOff, RunnerError> {
        self.calls.lock().unwrap().push(format!(
            "run {} v{} {} {command:?}",
            release.app,
            release.version,
            size.name()
        ));
        if mode == OneOffMode::Detached {
            return Ok(OneOff {
                name: "run-1".into(),
                io: None,
            });
        }
        let mut child = std::process::Command::new("sh")
            .args(["-c", command])
            .envs(env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let file = |fd: std::os::fd::OwnedFd| std::fs::File::from(fd);
        let input = file(child.stdin.take().unwrap().into());
        let output = file(child.stdout.take().unwrap().into());
        let errors = file(child.stderr.take().unwrap().into());
        Ok(OneOff {
            name: "run-2".into(),
            io: Some(OneOffIo {
                input: Some(input),
                output,
                errors: Some(errors),
                wait: Box::new(move || Ok(child.wait().unwrap().code().unwrap_or(255))),
                resize: None,
            }),
        })
    }
}

/// A daemon with the fake supervisor, running on its own thread until dropped.
struct Daemon {
    world: World,
    fake: Arc<Mutex<Option<Arc<Fake>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start() -> Daemon {
        Self::start_with(Duration::ZERO)
    }

    fn start_with(rollout_delay: Duration) -> Daemon {
        let world = World::new();
        world.write_config("");
        let mut config = world.config();
        config.api_listen = Some(format!("127.0.0.1:{}", world.api_port).parse().unwrap());
        let mut opts = DaemonOptions::new(config, SLIPWAY.into());
        opts.build_timeout = Duration::from_secs(600);
        // Small bounds, so that a decompression bomb is quick to make.
        opts.archive_limits.max_unpacked_bytes = 64 << 20;
        let fake: Arc<Mutex<Option<Arc<Fake>>>> = Arc::default();
        let slot = fake.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(daemon::run(
                opts,
                move |_config, events| {
                    let f = Arc::new(Fake {
                        events,
                        calls: Mutex::default(),
                        fail_rollouts: Mutex::new(false),
                        rollout_delay,
                        containers: Mutex::default(),
                    });
                    *slot.lock().unwrap() = Some(f.clone());
                    Ok(f as Arc<dyn Runner>)
                },
                async move {
                    let _ = stopped.await;
                },
            ))
            .unwrap();
            rt.shutdown_timeout(Duration::from_secs(5));
        });
        world.wait_for_socket(Duration::from_secs(20));
        Daemon {
            world,
            fake,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn fake(&self) -> Arc<Fake> {
        self.fake.lock().unwrap().clone().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn need_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "deploying tests need root (builds run in containers): run them as root"
    );
}

#[test]
fn apps_are_created_listed_shown_and_destroyed() {
    let d = Daemon::start();
    let w = &d.world;
    let e = w.fails(&["create", "My_App"]);
    assert!(e.contains("lower-case DNS label"), "{e}");
    let out = w.ok(&["create", "shop"]);
    assert!(out.contains("http://shop.localhost:"), "{out}");
    let e = w.fails(&["create", "shop"]);
    assert!(e.contains("already exists"), "{e}");
    let apps: serde_json::Value = serde_json::from_str(&w.ok(&["apps", "--json"])).unwrap();
    assert_eq!(apps[0]["name"], "shop");
    let info: serde_json::Value =
        serde_json::from_str(&w.ok(&["info", "-a", "shop", "--json"])).unwrap();
    assert_eq!(info["release"], serde_json::Value::Null);
    // Config vars before any release are kept for the first one.
    let out = w.ok(&["env", "set", "-a", "shop", "GREETING=hi", "B=2"]);
    assert!(out.contains("next deployment"), "{out}");
    let e = w.fails(&["env", "set", "-a", "shop", "_BAD=1"]);
    assert!(e.contains("[A-Za-z0-9_]"), "{e}");
    let e = w.fails(&["env", "set", "-a", "shop", "BUILDPACK_URL=/srv/bp"]);
    assert!(e.contains("BUILDPACK_URL"), "{e}");
    w.ok(&["env", "unset", "-a", "shop", "B"]);
    let vars: serde_json::Value =
        serde_json::from_str(&w.ok(&["env", "-a", "shop", "--json"])).unwrap();
    assert_eq!(vars, serde_json::json!({"GREETING": "hi"}));
    // Domains reach the router's table.
    w.ok(&["domains", "add", "-a", "shop", "Shop.Example.com"]);
    let e = w.fails(&["domains", "add", "-a", "shop", "x.localhost"]);
    assert!(e.contains("base domain"), "{e}");
    assert_eq!(w.ok(&["domains", "-a", "shop"]).trim(), "shop.example.com");
    let table = RouteTable::read(&w.run_dir()).unwrap();
    assert_eq!(table.apps["shop"].domains, vec!["shop.example.com"]);
    // Scaling before the first release is saved for it.
    let f: serde_json::Value =
        serde_json::from_str(&w.ok(&["scale", "-a", "shop", "web=2:L", "--json"])).unwrap();
    assert_eq!(f[0]["count"], 2);
    // Destroy asks for the name, then leaves nothing.
    let e = w.fails(&["destroy", "shop"]);
    assert!(e.contains("--confirm shop"), "{e}");
    w.ok(&["destroy", "shop", "--confirm", "shop"]);
    assert!(w.ok(&["apps"]).contains("No apps"));
    assert!(d.fake().calls().contains(&"stop shop".to_string()));
    assert_eq!(w.files_mentioning("shop"), Vec::<String>::new());
    let table = RouteTable::read(&w.run_dir()).unwrap();
    assert!(table.apps.is_empty());
}

#[test]
fn bad_requests_get_a_clear_4xx_and_change_nothing() {
    let d = Daemon::start();
    let w = &d.world;
    w.ok(&["create", "shop"]);
    // Unknown app.
    let e = w.fails(&["info", "-a", "nope"]);
    assert!(
        e.contains("no app nope") && e.contains("slipway apps"),
        "{e}"
    );
    let (status, body) = w.http_unix("GET", "/v1/apps/nope/releases", b"");
    assert_eq!(status, 404, "{body}");
    // Malformed JSON.
    let (status, body) = w.http_unix("POST", "/v1/apps", b"{\"name\": ");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed JSON"), "{body}");
    let (status, body) = w.http_unix("POST", "/v1/apps", b"{\"name\": \"x\", \"extra\": 1}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = w.http_unix("PATCH", "/v1/apps/shop/config", b"[1,2]");
    assert_eq!(status, 400, "{body}");
    let (status, _) = w.http_unix("GET", "/v1/nothing-here", b"");
    assert_eq!(status, 404);
    // The TCP API wants the token.
    let token = std::fs::read_to_string(w.data().join("api-token")).unwrap();
    let token = token.trim();
    assert_eq!(w.ok(&["token"]).trim(), token);
    let create = br#"{"name":"sneaky"}"#;
    for auth in ["", "Bearer wrong", "Basic x"] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        let (status, body) = w.http_tcp("POST", "/v1/apps", &headers, create);
        assert_eq!(status, 401, "{auth}: {body}");
        assert!(body.contains("slipway token"), "{body}");
    }
    let wrong_len = format!("Bearer {}x", token);
    let (status, _) = w.http_tcp("POST", "/v1/apps", &[("Authorization", &wrong_len)], create);
    assert_eq!(status, 401);
    // Nothing changed.
    let apps: serde_json::Value = serde_json::from_str(&w.ok(&["apps", "--json"])).unwrap();
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
    assert_eq!(apps[0]["name"], "shop");
    // The right token works, from the CLI too.
    let bearer = format!("Bearer {token}");
    let (status, body) = w.http_tcp("GET", "/v1/apps", &[("Authorization", &bearer)], b"");
    assert_eq!(status, 200, "{body}");
    let url = format!("http://127.0.0.1:{}", w.api_port);
    let out = w
        .cmd()
        .args(["apps", "--api-url", &url])
        .env("SLIPWAY_API_TOKEN", token)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("shop"));
    let out = w
        .cmd()
        .args(["apps", "--api-url", &url])
        .env("SLIPWAY_API_TOKEN", "nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong API token"));
    // No daemon: the CLI says how to start one.
    let out = w
        .cmd()
        .args(["apps"])
        .env("SLIPWAY_SOCKET", w.dir.path().join("none.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the slipway daemon") && err.contains("slipway daemon"),
        "{err}"
    );
}

#[test]
fn hostile_archives_are_refused_with_the_entry_named_and_nothing_written_outside() {
    let d = Daemon::start();
    let w = &d.world;
    w.ok(&["create", "shop"]);
    let cases = refuse_hostile_archives(w, "shop", || {});
    // A decompression bomb and a file that is no archive.
    let bomb = w.dir.path().join("bomb.tgz");
    {
        let f = std::fs::File::create(&bomb).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_path("big").unwrap();
        h.set_size(100 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, std::io::Read::take(std::io::repeat(0), 100 << 20))
            .unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    let out = w.fails(&["deploy", "-a", "shop", bomb.to_str().unwrap()]);
    assert!(out.contains("unpacks to more than"), "{out}");
    let junk = w.dir.path().join("junk.tgz");
    std::fs::write(&junk, b"not an archive at all").unwrap();
    let out = w.fails(&["deploy", "-a", "shop", junk.to_str().unwrap()]);
    assert!(out.contains("not a tar archive"), "{out}");
    // No release was made, every deployment says why, and no work is left.
    assert!(w.ok(&["releases", "-a", "shop"]).contains("No releases"));
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["deployments", "-a", "shop", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), cases + 2);
    for dep in list.as_array().unwrap() {
        assert_eq!(dep["status"], "build-error", "{dep}");
    }
    let left: Vec<_> = std::fs::read_dir(w.data().join("deployments"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(d.fake().calls().iter().all(|c| !c.starts_with("rollout")));
}

#[test]
fn deploys_release_roll_back_scale_run_and_queue_in_order() {
    need_root();
    let d = Daemon::start_with(Duration::from_secs(2));
    let w = &d.world;
    w.ok(&["create", "shop"]);
    w.ok(&["env", "set", "-a", "shop", "GREETING=hi"]);
    let src = w.dir.path().join("src");
    write_app(&src, "one");
    let out = w.ok(&["deploy", "-a", "shop", src.to_str().unwrap()]);
    assert!(out.contains("Procfile"), "{out}");
    assert!(
        out.contains(&format!(
            "v1 is live at http://shop.localhost:{}",
            w.router_port
        )),
        "{out}"
    );
    assert!(d.fake().calls()[0].starts_with("rollout shop v1 web=1:M GREETING=hi"));
    let table = RouteTable::read(&w.run_dir()).unwrap();
    assert_eq!(table.apps["shop"].backends.len(), 1);

    // Two deployments at once: the second waits for the first, and says so.
    write_app(&src, "two");
    let first = w
        .cmd()
        .args(["deploy", "-a", "shop", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    w.eventually("the first deployment runs", Duration::from_secs(30), || {
        let list = w.ok(&["deployments", "-a", "shop"]);
        list.contains("building") || list.contains("starting")
    });
    let tgz = w.dir.path().join("app.tgz");
    tarball(&src, "shop-main", &tgz);
    let second = w.ok(&["deploy", "-a", "shop", tgz.to_str().unwrap()]);
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(second.contains("queued"), "{second}");
    assert!(second.contains("v3 is live"), "{second}");
    let deps: Vec<serde_json::Value> =
        serde_json::from_str(&w.ok(&["deployments", "-a", "shop", "--json"])).unwrap();
    assert_eq!(deps.len(), 3);
    assert_eq!(deps[0]["release"], 3);
    assert_eq!(deps[1]["release"], 2);
    assert!(deps[1]["finished_at"].as_str() <= deps[0]["started_at"].as_str());

    // A URL the daemon downloads (a single top folder is stripped).
    let port = serve_file(std::fs::read(&tgz).unwrap());
    let out = w.ok(&[
        "deploy",
        "-a",
        "shop",
        &format!("http://127.0.0.1:{port}/app.tgz"),
    ]);
    assert!(
        out.contains("Downloading") && out.contains("v4 is live"),
        "{out}"
    );

    // Config change, rollback: new releases without a build.
    let out = w.ok(&["env", "set", "-a", "shop", "GREETING=bonjour"]);
    assert!(out.contains("done, v5"), "{out}");
    let out = w.ok(&["rollback", "-a", "shop", "v1"]);
    assert!(out.contains("v6 (rollback to v1)"), "{out}");
    let calls = d.fake().calls();
    assert!(calls
        .iter()
        .any(|c| c.starts_with("rollout shop v5 web=1:M GREETING=bonjour")));
    assert!(
        calls
            .last()
            .unwrap()
            .starts_with("rollout shop v6 web=1:M GREETING=hi"),
        "{calls:?}"
    );
    let releases: Vec<serde_json::Value> =
        serde_json::from_str(&w.ok(&["releases", "-a", "shop", "--json"])).unwrap();
    assert_eq!(releases.len(), 6);
    assert_eq!(releases[0]["slug"], releases[5]["slug"]);

    // A failed rollout keeps the release that serves and says so.
    *d.fake().fail_rollouts.lock().unwrap() = true;
    let e = w.fails(&["env", "set", "-a", "shop", "GREETING=broken"]);
    assert!(
        e.contains("v6 keeps serving") && e.contains("undone"),
        "{e}"
    );
    let vars: serde_json::Value =
        serde_json::from_str(&w.ok(&["env", "-a", "shop", "--json"])).unwrap();
    assert_eq!(vars["GREETING"], "hi");
    *d.fake().fail_rollouts.lock().unwrap() = false;

    // Formation and containers pass through.
    w.ok(&["scale", "-a", "shop", "web=3:L"]);
    assert!(d
        .fake()
        .calls()
        .last()
        .unwrap()
        .starts_with("scale shop web=3:L"));
    let e = w.fails(&["scale", "-a", "shop", "worker=1"]);
    assert!(e.contains("no process type \"worker\""), "{e}");
    let e = w.fails(&["scale", "-a", "shop", "web=1:HUGE"]);
    assert!(e.contains("S, M, L"), "{e}");
    let ps: serde_json::Value =
        serde_json::from_str(&w.ok(&["ps", "-a", "shop", "--json"])).unwrap();
    assert_eq!(ps[0]["name"], "web-1");
    w.ok(&["restart", "-a", "shop", "web"]);
    assert_eq!(d.fake().calls().last().unwrap(), "restart shop web");

    // One-offs: attached (exit code and output come back), detached.
    let (code, out, err) = w.cli(&[
        "run",
        "-a",
        "shop",
        "--size",
        "L",
        "--",
        "sh",
        "-c",
        "echo out-$X; exit 7",
    ]);
    assert_eq!((code, out.as_str()), (7, "out-\n"), "{err}");
    assert!(d
        .fake()
        .calls()
        .last()
        .unwrap()
        .starts_with("run shop v6 L"));
    let out = w
        .cmd()
        .args([
            "run",
            "-a",
            "shop",
            "-e",
            "X=1",
            "--",
            "echo out-$X; echo err >&2; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-1\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "err\n",
        "{:?}",
        d.fake().calls().last()
    );
    let out = w.ok(&["run", "-a", "shop", "--detached", "--", "sleep", "1"]);
    assert!(out.contains("run-1"), "{out}");

    // The app's log holds the platform's lines.
    let logs = w.ok(&["logs", "-a", "shop", "-n", "500"]);
    for needle in [
        "slipway[deploy]: deployment 1 started",
        "release v6 (rollback to v1) is live",
        "slipway[platform]: web-1 is up",
        "scaled to web=3:L",
    ] {
        assert!(logs.contains(needle), "{needle}:\n{logs}");
    }
    let only = w.ok(&["logs", "-a", "shop", "--ps", "deploy"]);
    assert!(only.lines().all(|l| l.contains("[deploy]")), "{only}");

    // Destroy: no slug, cache, log or deployment of it is left.
    w.ok(&["destroy", "shop", "--confirm", "shop"]);
    assert_eq!(w.files_mentioning("shop"), Vec::<String>::new());
    let slugs: Vec<_> = std::fs::read_dir(w.data().join("slugs"))
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(slugs.is_empty(), "{slugs:?}");
    let deployments: Vec<_> = std::fs::read_dir(w.data().join("deployments"))
        .unwrap()
        .flatten()
        .collect();
    assert!(deployments.is_empty(), "{deployments:?}");
}
