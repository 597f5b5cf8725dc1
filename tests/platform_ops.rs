//! The platform as it is operated and as things fail (root): the real `slipway daemon` and
//! `slipway router` processes (`platform_support::running`), real containers behind the
//! router, settings from the config file, the daemon SIGKILLed while requests flow and web
//! containers killed behind its back. Each test has its own world; waits are hang guards,
//! not timing assertions.
mod platform_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use platform_support::running::{containers, Platform};
use platform_support::*;

/// Creates and deploys `app` from [`write_named_app`] with `web` web containers and
/// `clock` clocks, and waits until the router reaches every web container.
fn deploy_named(p: &Platform, app: &str, web: u32, clock: u32) {
    let w = &p.world;
    w.ok(&["create", app]);
    let src = w.dir.path().join(format!("src-{app}"));
    write_named_app(&src);
    w.ok(&["deploy", "-a", app, src.to_str().unwrap()]);
    w.ok(&[
        "scale",
        "-a",
        app,
        &format!("web={web}"),
        &format!("clock={clock}"),
    ]);
    p.wait_up(app, "web", web as usize);
    p.wait_up(app, "clock", clock as usize);
    let mut seen = BTreeSet::new();
    w.eventually(
        "the router reaches every web container",
        Duration::from_secs(60),
        || {
            if let Ok(name) = p.get(app) {
                seen.insert(name);
            }
            seen.len() == web as usize
        },
    );
}

/// Requests to one app through the router, one after the other, until stopped: each
/// answer's body, or what went wrong.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Result<String, String>>>,
}

impl Traffic {
    fn start(router_port: u16, app: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let host = format!("{app}.localhost");
        let thread = std::thread::spawn(move || {
            let mut results = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                results.push(match get_at(router_port, &host) {
                    Some((200, body)) => Ok(body),
                    Some((status, body)) => Err(format!("{status}: {body}")),
                    None => Err("no connection to the router".into()),
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            results
        });
        Traffic { stop, thread }
    }

    fn stop(self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// What identifies each container of `app` and its life so far: name → (pid, restarts,
/// state, start time, release).
fn identities(p: &Platform, app: &str) -> BTreeMap<String, String> {
    p.ps(app)
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            let life = format!(
                "pid={} restarts={} state={} started_at={} release={}",
                c["pid"], c["restarts"], c["state"], c["started_at"], c["release"]
            );
            (name, life)
        })
        .collect()
}

/// The numbers of the `tick N` lines in `app`'s `clock-1` log, in order.
fn ticks(w: &World, app: &str) -> Vec<u64> {
    let path = w.data().join("logs").join(app).join("clock-1.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("app[clock.1]: tick "))
        .map(|(_, n)| n.trim().parse().unwrap())
        .collect()
}

#[test]
fn settings_of_the_config_file_take_effect_boot_timeout_and_one_offs() {
    let p = Platform::start_with("boot_timeout = 3\nmax_one_offs = 1\n", &[]);
    let w = &p.world;
    w.ok(&["create", "shop"]);
    let src = w.dir.path().join("src");
    write_app(&src, "one");
    w.ok(&["deploy", "-a", "shop", src.to_str().unwrap()]);
    p.answers("shop", "one hello");

    // One one-off at a time.
    w.ok(&["run", "-a", "shop", "--detached", "--", "sleep 1000"]);
    let out = w.fails(&["run", "-a", "shop", "--detached", "--", "true"]);
    assert!(out.contains("already runs 1 one-off"), "{out}");

    // A web process that never listens: the deployment ends with timeout-error at the
    // configured boot timeout, and v1 keeps serving.
    std::fs::write(src.join("Procfile"), "web: exec sleep 100000\n").unwrap();
    let out = w.fails(&["deploy", "-a", "shop", src.to_str().unwrap()]);
    assert!(
        out.contains("timeout-error") && out.contains("within 3 s"),
        "{out}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["deployments", "-a", "shop", "--json"])).unwrap();
    assert_eq!(list[0]["status"], "timeout-error", "{list}");
    p.answers("shop", "one hello");
    w.ok(&["destroy", "shop", "--confirm", "shop"]);
    assert_eq!(containers(w), Vec::<String>::new());
}

#[test]
fn requests_through_the_router_are_shared_by_three_real_web_containers() {
    let p = Platform::start();
    deploy_named(&p, "trio", 3, 0);
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let name = p
            .get("trio")
            .unwrap_or_else(|e| panic!("a request failed: {e}"));
        *served.entry(name).or_default() += 1;
    }
    // Binomial(300, 1/3): mean 100, sd 8.2; 40 and 180 are more than 7 sd away.
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["web-1", "web-2", "web-3"],
        "{served:?}"
    );
    for (name, n) in &served {
        assert!(
            (40..=180).contains(n),
            "{name} served {n} of 300: {served:?}"
        );
    }
    // The router logged each request with the container that served it.
    p.world
        .eventually("300 request lines", Duration::from_secs(20), || {
            p.router_log("trio")
                .iter()
                .filter(|l| l.contains("at=info") && l.contains("status=200"))
                .count()
                >= 300
        });
    for (name, n) in &served {
        let logged = p
            .router_log("trio")
            .iter()
            .filter(|l| l.contains(&format!("container={name} ")) && l.contains("status=200"))
            .count();
        // Deploying made a few requests of its own.
        assert!(logged >= *n, "{name}: {logged} lines for {n} answers");
    }
}

#[test]
fn a_daemon_killed_under_traffic_loses_no_request_no_log_line_and_duplicates_no_container() {
    let mut p = Platform::start();
    deploy_named(&p, "steady", 2, 1);
    let before = identities(&p, "steady");
    let runtime_before: BTreeSet<String> = containers(&p.world).into_iter().collect();
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(runtime_before.len(), 3, "{runtime_before:?}");

    let traffic = Traffic::start(p.world.router_port, "steady");
    std::thread::sleep(Duration::from_secs(1));
    p.kill_daemon();
    let ticks_at_kill = ticks(&p.world, "steady").len();
    std::thread::sleep(Duration::from_secs(2));
    p.start_daemon();
    // The new daemon has adopted everything and had time to (wrongly) act on it.
    std::thread::sleep(Duration::from_secs(2));
    let results = traffic.stop();

    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        results.len()
    );
    assert!(
        results.len() >= 20,
        "only {} requests were made",
        results.len()
    );
    let answered: BTreeSet<&str> = results.iter().flatten().map(String::as_str).collect();
    assert_eq!(answered, BTreeSet::from(["web-1", "web-2"]));

    // The same containers, with the same processes, never restarted.
    assert_eq!(identities(&p, "steady"), before);
    let runtime_after: BTreeSet<String> = containers(&p.world).into_iter().collect();
    assert_eq!(runtime_after, runtime_before);

    // The clock's log: every number once, in order, on through the daemon's absence.
    let ticks = ticks(&p.world, "steady");
    let expected: Vec<u64> = (0..ticks.len() as u64).collect();
    assert!(
        ticks == expected,
        "ticks lost, repeated or out of order: {ticks:?}"
    );
    assert!(
        ticks.len() > ticks_at_kill + 20,
        "the clock stopped: {} ticks at the kill, {} now",
        ticks_at_kill,
        ticks.len()
    );
    let platform = std::fs::read_to_string(p.world.data().join("logs/steady/platform.log"))
        .unwrap_or_default();
    assert!(!platform.contains("Restarting"), "{platform}");
}

#[test]
fn with_the_daemon_gone_a_killed_web_container_is_skipped_and_quarantined_by_the_router() {
    let mut p = Platform::start_with("", &["--quarantine", "60s"]);
    deploy_named(&p, "trio", 3, 0);
    let victim = p
        .ps("trio")
        .into_iter()
        .find(|c| c["name"] == "web-2")
        .expect("web-2 runs");
    let pid = victim["pid"].as_i64().unwrap() as i32;
    let address: std::net::SocketAddr = victim["address"].as_str().unwrap().parse().unwrap();

    // Nobody to restart it or to change the routes: the router still lists web-2.
    p.kill_daemon();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    p.world
        .eventually("web-2 stops answering", Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err()
        });
    let lines_before = p.router_log("trio").len();

    for i in 0..60 {
        let name = p
            .get("trio")
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_ne!(name, "web-2");
    }
    // P(web-2 is never picked before its quarantine) = (2/3)^60, about 3e-11.
    p.world
        .eventually("the requests are logged", Duration::from_secs(20), || {
            p.router_log("trio")[lines_before..]
                .iter()
                .filter(|l| l.contains("at=info"))
                .count()
                >= 60
        });
    let lines = p.router_log("trio")[lines_before..].to_vec();
    let refusals: Vec<&String> = lines.iter().filter(|l| l.contains("code=R18")).collect();
    assert_eq!(refusals.len(), 1, "{lines:#?}");
    assert!(refusals[0].contains("container=web-2 "), "{refusals:?}");
    // After its one failure, web-2 got nothing: every request was served by another.
    let served: Vec<&String> = lines.iter().filter(|l| l.contains("at=info")).collect();
    assert_eq!(served.len(), 60, "{lines:#?}");
    assert!(
        served
            .iter()
            .all(|l| l.contains("status=200") && !l.contains("container=web-2 ")),
        "{served:#?}"
    );

    // The daemon comes back and brings web-2 back.
    p.start_daemon();
    p.wait_up("trio", "web", 3);
    let back = p
        .ps("trio")
        .into_iter()
        .find(|c| c["name"] == "web-2")
        .expect("web-2 runs again");
    assert_ne!(back["pid"].as_i64().unwrap() as i32, pid);
}

#[test]
fn scheduled_jobs_are_listed_with_their_next_run() {
    let p = Platform::start();
    let w = &p.world;
    w.ok(&["create", "jobs"]);
    let out = w.ok(&["cron", "-a", "jobs"]);
    assert!(out.contains("no scheduled jobs"), "{out}");
    let src = w.dir.path().join("src-jobs");
    write_app(&src, "one");
    std::fs::write(
        src.join("cron.json"),
        r#"{"jobs": [{"command": "0 3 1 1 * echo happy new year", "size": "S"},
                     {"command": "* * * * * echo cron-ran-in-$CONTAINER"}]}"#,
    )
    .unwrap();
    w.ok(&["deploy", "-a", "jobs", src.to_str().unwrap()]);
    let table = w.ok(&["cron", "-a", "jobs"]);
    assert!(
        table.contains("0 3 1 1 *") && table.contains("echo happy new year"),
        "{table}"
    );
    let jobs: serde_json::Value =
        serde_json::from_str(&w.ok(&["cron", "-a", "jobs", "--json"])).unwrap();
    let job = &jobs[0];
    assert_eq!(job["size"], "S", "{jobs}");
    assert!(job["last_run"].is_null(), "{jobs}");
    let next = job["next_run"].as_str().unwrap();
    assert!(next.contains("-01-01T03:00:00"), "{next}");
    assert!(w.fails(&["cron", "-a", "nope"]).contains("no app nope"));

    // The every-minute job runs within a minute, as a one-off of the release, its output in
    // the app's logs.
    w.eventually(
        "the every-minute job to run",
        Duration::from_secs(90),
        || {
            w.ok(&["logs", "-a", "jobs", "-n", "500"])
                .contains("cron-ran-in-")
        },
    );
    let jobs: serde_json::Value =
        serde_json::from_str(&w.ok(&["cron", "-a", "jobs", "--json"])).unwrap();
    assert!(jobs[1]["last_run"].is_string(), "{jobs}");
}
