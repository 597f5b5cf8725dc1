//! The supervisor end to end (root): a fixture app built with `slipway build`, its containers
//! run by monitors, driven through `Supervisor` as the daemon drives it. Each test has its own
//! data dir, run dir, bridge and subnet; waits are hang guards, not timing assertions.
mod supervisor_support;

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use slipway::supervisor::cron::utc;
use slipway::supervisor::{Clock, Formation, OneOffMode, Scale, Size, SupervisorError};
use supervisor_support::*;

const LONG: Duration = Duration::from_secs(90);

fn deploy(
    sup: &slipway::supervisor::Supervisor,
    env: &Env,
    r: &slipway::supervisor::Release,
    f: &Formation,
) {
    let mut log = Vec::new();
    sup.rollout(r, f, &mut |l| log.push(l.to_string()))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", log.join("\n"), env.events.all(&r.app)));
}

fn formation(entries: &[(&str, u32, Size)]) -> Formation {
    let mut f = Formation::default();
    for (kind, count, size) in entries {
        f.set(kind, Scale::new(*count, *size));
    }
    f
}

#[test]
fn three_web_containers_answer_each_with_its_own_name_and_address_and_nothing_is_left() {
    let env = Env::new();
    let slug = env.build("supervisor", "shop");
    let sup = env.start();
    let r = release("shop", 1, &slug, &[("web", WEB)], &[("GREETING", "hello")]);
    deploy(&sup, &env, &r, &Formation::web(3));

    let backends = env.events.backends("shop");
    assert_eq!(backends.len(), 3, "{backends:?}");
    let mut names = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for b in &backends {
        let info = get_json(b.address).unwrap();
        assert_eq!(info["CONTAINER"], b.container.as_str());
        assert_eq!(info["APP"], "shop");
        assert_eq!(info["PORT"], "5000");
        assert_eq!(info["GREETING"], "hello");
        assert_eq!(info["CONTAINER_SIZE"], "M");
        assert_eq!(info["CONTAINER_VERSION"], "v1");
        assert_eq!(info["CONTAINER_MEMORY"], (512u64 << 20).to_string());
        assert_eq!(info["HOSTNAME"], format!("shop-{}", b.container));
        assert_eq!(info["ip"], b.address.ip().to_string());
        names.insert(info["CONTAINER"].as_str().unwrap().to_string());
        ips.insert(b.address.ip());
    }
    assert_eq!(
        names,
        BTreeSet::from(["web-1".into(), "web-2".into(), "web-3".into()])
    );
    assert_eq!(ips.len(), 3);

    let ps = sup.ps("shop");
    assert_eq!(ps.len(), 3, "{ps:?}");
    assert!(
        ps.iter()
            .all(|c| c.state == "up" && c.pid.is_some() && c.release == 1),
        "{ps:?}"
    );
    // The container's output is in its own log file, with the Heroku shape.
    let log = env.log("shop", "web-2");
    assert!(log.contains(" app[web.2]: listening on 5000"), "{log}");

    // Scale down to one, then destroy: nothing of the app is left on the host.
    sup.scale("shop", &formation(&[("web", 1, Size::M)]))
        .unwrap();
    wait_for("two containers stopped", LONG, || {
        (sup.ps("shop").len() == 1 && env.events.backends("shop").len() == 1).then_some(())
    });
    sup.stop_app("shop").unwrap();
    assert!(sup.ps("shop").is_empty());
    assert!(env.events.backends("shop").is_empty());
    assert_eq!(env.settle(), Vec::<String>::new());
}

#[test]
fn a_killed_container_comes_back_and_a_crash_loop_backs_off() {
    let env = Env::new();
    let slug = env.build("supervisor", "loop");
    let sup = env.start();
    let r = release(
        "loop",
        1,
        &slug,
        &[("web", WEB), ("crasher", "echo crashing; exit 3")],
        &[],
    );
    deploy(&sup, &env, &r, &Formation::web(1));
    let first = sup.ps("loop")[0].clone();
    let pid = first.pid.unwrap();

    // SIGKILL to the container's init: the whole container dies; it is back at once.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let back = wait_for("web-1 back up", LONG, || {
        let ps = sup.ps("loop");
        ps.iter()
            .find(|c| c.name == "web-1" && c.state == "up" && c.pid != Some(pid))
            .cloned()
    });
    assert_eq!(back.restarts, 1);
    let b = wait_for("web-1 routed again", LONG, || {
        env.events
            .backends("loop")
            .into_iter()
            .find(|b| Some(b.address) == back.address)
    });
    assert_eq!(get_json(b.address).unwrap()["CONTAINER"], "web-1");
    let events = env.events.all("loop");
    assert!(
        events.contains("web.1: Process exited with status 137 (killed by SIGKILL)"),
        "{events}"
    );
    assert!(events.contains("web.1: Restarting (restart 1)"), "{events}");

    // A process that exits at once: restarted at once, then after 1 s, 2 s, 4 s.
    sup.scale("loop", &formation(&[("crasher", 1, Size::S)]))
        .unwrap();
    wait_for("the third restart of crasher-1", LONG, || {
        (!env
            .events
            .matching("loop", "crasher.1: Restarting in 2 s")
            .is_empty())
        .then_some(())
    });
    let restarts = env.events.matching("loop", "crasher.1: Restarting");
    assert!(
        restarts[0].ends_with("Restarting (restart 1)"),
        "{restarts:?}"
    );
    assert!(restarts[1].contains("in 1 s (restart 2"), "{restarts:?}");
    assert!(restarts[2].contains("in 2 s (restart 3"), "{restarts:?}");
    // While it waits, ps says so; it never spins.
    let crashed = wait_for("crasher-1 shown as crashed", LONG, || {
        sup.ps("loop")
            .into_iter()
            .find(|c| c.name == "crasher-1" && c.state == "crashed")
    });
    assert!(
        crashed.restarts >= 3 && crashed.restarts < 10,
        "{crashed:?}"
    );
    let exits = env
        .events
        .matching("loop", "crasher.1: Process exited with status 3");
    assert!(exits.len() >= 3, "{exits:?}");
    assert!(env
        .log("loop", "crasher-1")
        .contains("app[crasher.1]: crashing"));
    // web-1 was never disturbed by its neighbour.
    assert_eq!(
        sup.ps("loop")
            .iter()
            .find(|c| c.name == "web-1")
            .unwrap()
            .pid,
        back.pid
    );
    sup.stop_app("loop").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}

#[test]
fn a_memory_hog_is_oom_killed_logged_as_such_and_restarted() {
    let env = Env::new();
    let slug = env.build("supervisor", "hog");
    let sup = env.start();
    let hog = "python3 -c \"\nimport time\nprint('eating', flush=True)\na = []\nwhile True:\n    a.append(bytearray(16 << 20))\n\"";
    let r = release("hog", 1, &slug, &[("web", WEB), ("hog", hog)], &[]);
    deploy(&sup, &env, &r, &formation(&[("web", 0, Size::M)]));
    sup.scale("hog", &formation(&[("hog", 1, Size::S)]))
        .unwrap();
    wait_for("the hog's restart", LONG, || {
        (!env.events.matching("hog", "hog.1: Restarting").is_empty()).then_some(())
    });
    let events = env.events.all("hog");
    assert!(
        events.contains("hog.1: Error R15 (Memory quota exceeded)")
            && events.contains("256 MiB limit of size S"),
        "{events}"
    );
    assert!(
        events.contains("hog.1: Process exited with status 137"),
        "{events}"
    );
    let log = env.log("hog", "hog-1");
    assert!(log.contains("app[hog.1]: eating"), "{log}");
    assert!(
        log.contains("slipway[hog.1]: slipway: hog-1: out of memory (limit 256 MiB)"),
        "{log}"
    );
    sup.stop_app("hog").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}

#[test]
fn a_container_sees_no_host_process_and_reaches_neither_another_app_nor_host_services() {
    let env = Env::new();
    let slug = env.build("supervisor", "alpha");
    let sup = env.start();
    let alpha = release("alpha", 1, &slug, &[("web", WEB)], &[]);
    deploy(&sup, &env, &alpha, &Formation::web(1));
    let target = env.events.backends("alpha")[0].address;
    // The host reaches it (the router's path).
    assert_eq!(get_json(target).unwrap()["CONTAINER"], "web-1");

    let beta = release("beta", 1, &slug, &[("web", WEB)], &[]);
    deploy(&sup, &env, &beta, &Formation::web(1));
    let run = |command: &str| -> (i32, String) {
        let mut one = sup.one_off(&beta, command, Size::S, &[], false).unwrap();
        let mut out = String::new();
        one.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        (one.wait().unwrap(), out)
    };
    // Another app's container: no connection.
    let (code, out) = run(&format!(
        "python3 probe.py {} {}",
        target.ip(),
        target.port()
    ));
    assert_eq!(code, 1, "{out}");
    // A service on the host, on the bridge's gateway address: no connection either.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = {
        let ip = target.ip().to_string();
        let (net, _) = ip.rsplit_once('.').unwrap();
        format!("{net}.1")
    };
    let (code, out) = run(&format!("python3 probe.py {gateway} {port}"));
    assert_eq!(code, 1, "{out}");
    // Its own web container is reachable from inside (loopback of its own namespace).
    let (code, out) = run("python3 server.py & sleep 1; python3 probe.py 127.0.0.1 5000");
    assert_eq!(code, 0, "{out}");
    // Its pid namespace holds only its own processes.
    let (code, out) = run(
        "python3 -c \"import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\"",
    );
    assert_eq!(code, 0, "{out}");
    let pids: Vec<i32> = out
        .trim()
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.len() <= 4 && pids.iter().all(|p| *p < 20), "{pids:?}");
    sup.stop_app("alpha").unwrap();
    sup.stop_app("beta").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}

/// Processes in the pid namespace of `init` (a host pid), with their state letters.
fn namespace_processes(init: i32) -> Vec<(i32, char)> {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() != Some(ns.clone()) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some(i) = stat.rfind(')') {
            found.push((pid, stat[i + 2..].chars().next().unwrap_or('?')));
        }
    }
    found
}

#[test]
fn orphans_are_reaped_sigterm_reaches_the_app_and_one_that_ignores_it_is_killed() {
    let env = Env::new();
    let slug = env.build("supervisor", "sig");
    let sup = env.start();
    let r = release(
        "sig",
        1,
        &slug,
        &[
            ("web", WEB),
            (
                "orphans",
                "for i in 1 2 3 4 5; do ( sleep 0.2 & ); done; echo spawned; sleep 100000",
            ),
            (
                "stubborn",
                "trap '' TERM; echo ignoring; while :; do sleep 1; done",
            ),
        ],
        &[],
    );
    deploy(
        &sup,
        &env,
        &r,
        &formation(&[
            ("web", 1, Size::M),
            ("orphans", 1, Size::S),
            ("stubborn", 1, Size::S),
        ]),
    );
    let orphans = wait_for("orphans-1 running", LONG, || {
        sup.ps("sig")
            .into_iter()
            .find(|c| c.name == "orphans-1" && c.pid.is_some())
    });
    wait_for("the orphans spawned", LONG, || {
        env.log("sig", "orphans-1")
            .contains("spawned")
            .then_some(())
    });
    // The sleeps' parents exited at once: the init inherited them and reaps them when they
    // end. What stays is the init, bash and the long sleep.
    let procs = wait_for("only three processes left", LONG, || {
        let p = namespace_processes(orphans.pid.unwrap());
        (p.len() == 3).then_some(p)
    });
    assert!(procs.iter().all(|(_, s)| *s != 'Z'), "{procs:?}");
    wait_for("stubborn ignoring", LONG, || {
        env.log("sig", "stubborn-1")
            .contains("ignoring")
            .then_some(())
    });

    sup.stop_app("sig").unwrap();
    let events = env.events.all("sig");
    // The web process got SIGTERM and exited on its own.
    assert!(env
        .log("sig", "web-1")
        .contains("app[web.1]: web got SIGTERM, exiting"));
    assert!(
        events.contains("web.1: Process exited with status 0"),
        "{events}"
    );
    // The stubborn one outlived the grace period and was killed.
    assert!(
        events.contains("stubborn.1: Error R12 (Exit timeout)"),
        "{events}"
    );
    assert!(
        events.contains("stubborn.1: Process exited with status 137"),
        "{events}"
    );
    assert_eq!(env.settle(), Vec::<String>::new());
}

#[test]
fn one_offs_give_exit_codes_output_ptys_and_detached_logs_within_the_limit() {
    let env = Env::new();
    let slug = env.build("supervisor", "ops");
    let mut o = env.options();
    o.max_one_offs = 2;
    let sup = env.start_with(o);
    let r = release("ops", 1, &slug, &[("web", WEB)], &[("GREETING", "hi")]);
    deploy(&sup, &env, &r, &formation(&[("web", 0, Size::M)]));

    let mut one = sup.one_off(&r, "exit 7", Size::S, &[], false).unwrap();
    assert_eq!(one.wait().unwrap(), 7);
    let extra = [("EXTRA".to_string(), "more".to_string())];
    let mut one = sup
        .one_off(
            &r,
            "read line; echo \"$GREETING $EXTRA $line $CONTAINER\"",
            Size::S,
            &extra,
            false,
        )
        .unwrap();
    use std::io::Write;
    one.stdin.take().unwrap().write_all(b"typed\n").unwrap();
    let mut out = String::new();
    one.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(one.wait().unwrap(), 0);
    assert_eq!(out, "hi more typed run-1\n");

    // With a pty: sized before the command starts, resized when asked.
    let mut tty = sup
        .one_off_with(
            &r,
            "tty; echo \"size $(stty size)\"; read go; echo \"then $(stty size)\"; echo in-a-pty; exit 3",
            Size::S,
            &[],
            OneOffMode::Terminal { rows: 40, cols: 100 },
        )
        .unwrap();
    // Ours to read and write; the one-off keeps the master to size it.
    let mut pty = tty.pty.as_ref().unwrap().try_clone().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut resized = false;
    // EIO once the container's side is closed.
    while let Ok(n) = pty.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if !resized && String::from_utf8_lossy(&seen).contains("size 40 100") {
            tty.resize(50, 120).unwrap();
            use std::io::Write;
            pty.write_all(b"go\r").unwrap();
            resized = true;
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.contains("/dev/pts/")
            && seen.contains("size 40 100")
            && seen.contains("then 50 120")
            && seen.contains("in-a-pty"),
        "{seen}"
    );
    assert_eq!(tty.wait().unwrap(), 3);

    // Detached: the output is in the app's log as run.1, its status known once done.
    let mut d = sup
        .one_off(&r, "echo detached-output-$CONTAINER", Size::S, &[], true)
        .unwrap();
    assert_eq!(d.name, "run-1");
    assert_eq!(d.wait().unwrap(), 0);
    let log = env.log("ops", "run-1");
    assert!(log.contains("app[run.1]: detached-output-run-1"), "{log}");

    // At most two at once.
    let mut a = sup.one_off(&r, "sleep 1000", Size::S, &[], true).unwrap();
    let mut b = sup.one_off(&r, "sleep 1000", Size::S, &[], false).unwrap();
    match sup.one_off(&r, "true", Size::S, &[], true) {
        Err(SupervisorError::TooManyOneOffs { max: 2, .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a third one-off started"),
    }
    assert_eq!(sup.ps("ops").iter().filter(|c| c.kind == "run").count(), 2);
    a.stop();
    b.stop();
    assert_eq!(a.wait().unwrap(), 143);
    assert_eq!(b.wait().unwrap(), 143);
    sup.stop_app("ops").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}

struct TestClock(Mutex<SystemTime>);

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

#[test]
fn a_cron_job_runs_when_the_clock_says_so() {
    let env = Env::new();
    let slug = env.build("supervisor", "cron");
    // The same slug with a cron.json.
    let with_cron = env.dir.path().join("slug-with-cron");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&slug)
        .arg(&with_cron)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::write(
        with_cron.join("app/cron.json"),
        r#"{"jobs":[{"command":"* * * * * echo cron-ran-$CONTAINER","size":"S"},{"command":"0 3 * * * echo nightly"}]}"#,
    )
    .unwrap();
    let clock = Arc::new(TestClock(Mutex::new(utc(2030, 1, 1, 0, 0, 30))));
    let mut o = env.options();
    o.clock = clock.clone();
    let sup = env.start_with(o);
    let r = release("cron", 1, &with_cron, &[("web", WEB)], &[]);
    deploy(&sup, &env, &r, &formation(&[("web", 0, Size::M)]));
    let jobs = sup.cron("cron");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0].schedule, "* * * * *");
    assert_eq!(jobs[0].command, "echo cron-ran-$CONTAINER");
    assert_eq!(jobs[0].size, Size::S);
    assert_eq!(jobs[0].last_run, None);
    assert_eq!(
        jobs[0].next_run.as_deref(),
        Some("2030-01-01T00:01:00.000000+00:00")
    );
    assert_eq!(
        jobs[1].next_run.as_deref(),
        Some("2030-01-01T03:00:00.000000+00:00")
    );
    // Nothing runs before its time.
    std::thread::sleep(Duration::from_millis(500));
    assert!(sup.ps("cron").is_empty());

    *clock.0.lock().unwrap() = utc(2030, 1, 1, 0, 1, 5);
    wait_for("the job's output", LONG, || {
        env.log("cron", "run-1")
            .contains("app[run.1]: cron-ran-run-1")
            .then_some(())
    });
    let jobs = sup.cron("cron");
    assert_eq!(
        jobs[0].last_run.as_deref(),
        Some("2030-01-01T00:01:05.000000+00:00")
    );
    assert_eq!(
        jobs[0].next_run.as_deref(),
        Some("2030-01-01T00:02:00.000000+00:00")
    );
    assert_eq!(jobs[1].last_run, None);
    assert!(!env
        .events
        .matching(
            "cron",
            "scheduler: running `* * * * * echo cron-ran-$CONTAINER` as run.1"
        )
        .is_empty());
    sup.stop_app("cron").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}

#[test]
fn a_new_supervisor_adopts_running_containers_and_a_reboot_brings_the_formation_back() {
    let env = Env::new();
    let slug = env.build("supervisor", "adopt");
    let r = release("adopt", 1, &slug, &[("web", WEB)], &[]);
    let pids: BTreeSet<i32> = {
        let sup = env.start();
        deploy(&sup, &env, &r, &Formation::web(2));
        sup.ps("adopt").iter().map(|c| c.pid.unwrap()).collect()
        // Dropped: the daemon stops, the containers stay.
    };
    assert_eq!(pids.len(), 2);
    for b in env.events.backends("adopt") {
        get_json(b.address).unwrap();
    }

    // Counted before the start: the new supervisor may report while it starts.
    let reports = env.events.reports.lock().unwrap().len();
    let sup = env.start();
    // One supervisor per run dir.
    match slipway::supervisor::Supervisor::start_with(
        &env.config(),
        env.events.clone(),
        env.options(),
    ) {
        Err(SupervisorError::Busy { .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second supervisor started on the same run dir"),
    }
    // Let it reconcile a while: nothing new starts.
    wait_for("the new supervisor's first report", LONG, || {
        (env.events.reports.lock().unwrap().len() > reports).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let ps = sup.ps("adopt");
    let now: BTreeSet<i32> = ps.iter().map(|c| c.pid.unwrap()).collect();
    assert_eq!(now, pids, "{ps:?}");
    assert!(ps.iter().all(|c| c.state == "up"), "{ps:?}");
    assert_eq!(env.events.backends("adopt").len(), 2);
    assert_eq!(
        std::fs::read_dir(env.run_dir().join("supervisor/adopt"))
            .unwrap()
            .count(),
        2,
        "one state file per container"
    );
    assert_eq!(sup.current_release("adopt").unwrap().version, 1);
    drop(sup);

    // A reboot: every monitor and container gone at once, their state files and workspaces
    // stale. The next supervisor cleans up and brings the formation back.
    let monitors: Vec<i32> = std::fs::read_dir(env.run_dir().join("supervisor/adopt"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            v["monitor_pid"].as_i64().map(|p| p as i32)
        })
        .collect();
    for pid in monitors.iter().chain(&pids) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_for("the old processes gone", LONG, || {
        pids.iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
            .then_some(())
    });
    let sup = env.start();
    let ps = wait_for("two new containers up", LONG, || {
        let ps = sup.ps("adopt");
        (ps.len() == 2 && ps.iter().all(|c| c.state == "up")).then_some(ps)
    });
    assert!(ps.iter().all(|c| !pids.contains(&c.pid.unwrap())), "{ps:?}");
    wait_for("routed", LONG, || {
        (env.events.backends("adopt").len() == 2).then_some(())
    });
    for b in env.events.backends("adopt") {
        get_json(b.address).unwrap();
    }
    sup.stop_app("adopt").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}

#[test]
fn restarts_and_resizes_replace_containers_without_dropping_requests() {
    let env = Env::new();
    let slug = env.build("supervisor", "roll");
    let sup = env.start();
    let r = release("roll", 1, &slug, &[("web", WEB)], &[]);
    deploy(&sup, &env, &r, &Formation::web(2));
    let before: BTreeSet<i32> = sup.ps("roll").iter().map(|c| c.pid.unwrap()).collect();
    let client = Client::start(env.events.clone(), "roll");
    sup.restart("roll", None).unwrap();
    sup.scale("roll", &formation(&[("web", 2, Size::L)]))
        .unwrap();
    let results = client.stop();
    assert!(results.len() > 10, "{}", results.len());
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let ps = wait_for("two L containers", LONG, || {
        let ps = sup.ps("roll");
        (ps.len() == 2 && ps.iter().all(|c| c.size == Size::L && c.state == "up")).then_some(ps)
    });
    assert!(
        ps.iter().all(|c| !before.contains(&c.pid.unwrap())),
        "{ps:?}"
    );
    for b in env.events.backends("roll") {
        assert_eq!(get_json(b.address).unwrap()["CONTAINER_SIZE"], "L");
    }
    assert!(matches!(
        sup.restart("roll", Some("worker")),
        Err(SupervisorError::NoSuchContainer { .. })
    ));
    sup.stop_app("roll").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}

/// The pids cgroup of the container whose init is `pid` (v1 `pids` hierarchy, else v2).
fn pids_cgroup(pid: i32) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let entry = |want_v1: bool| {
        text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let v1 = controllers.split(',').any(|c| c == "pids");
            let v2 = controllers.is_empty();
            ((want_v1 && v1) || (!want_v1 && v2)).then(|| path.trim_start_matches('/').to_string())
        })
    };
    match entry(true) {
        Some(path) => std::path::Path::new("/sys/fs/cgroup/pids").join(path),
        None => std::path::Path::new("/sys/fs/cgroup").join(entry(false).unwrap()),
    }
}

/// How many forks the pids limit refused in `cgroup` (`max N` of pids.events).
fn forks_refused(cgroup: &std::path::Path) -> u64 {
    std::fs::read_to_string(cgroup.join("pids.events"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_fork_bomb_in_one_app_leaves_another_app_serving_every_request() {
    let env = Env::new();
    let slug = env.build("supervisor", "calm");
    let sup = env.start();
    let calm = release("calm", 1, &slug, &[("web", WEB)], &[]);
    deploy(&sup, &env, &calm, &Formation::web(1));
    let target = env.events.backends("calm")[0].address;

    // A fork bomb whose every process forks for ever, retrying at once when refused (a
    // shell's bomb dies out, or sleeps in its fork retries, at the limit), in a size S
    // container (128 pids at most).
    let bomb_command = "exec perl -e 'fork while 1'";
    let bomb = release(
        "bomb",
        1,
        &slug,
        &[("web", WEB), ("bomb", bomb_command)],
        &[],
    );
    deploy(&sup, &env, &bomb, &formation(&[("web", 0, Size::M)]));
    sup.scale("bomb", &formation(&[("bomb", 1, Size::S)]))
        .unwrap();
    let init = wait_for("the bomb's container", LONG, || {
        sup.ps("bomb")
            .iter()
            .find(|c| c.state == "up")
            .and_then(|c| c.pid)
    });
    let cgroup = pids_cgroup(init);
    let pids_max: i64 = std::fs::read_to_string(cgroup.join("pids.max"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pids_max, Size::S.pids_limit());
    // The limit is what stops it: the kernel refuses its forks.
    let refused_before = wait_for("the bomb to hit its pids limit", LONG, || {
        let n = forks_refused(&cgroup);
        (n > 0).then_some(n)
    });

    let mut failures = Vec::new();
    for i in 0..200 {
        match get_json(target) {
            Ok(info) => assert_eq!(info["APP"], "calm"),
            Err(e) => failures.push(format!("request {i}: {e}")),
        }
        let current: i64 = std::fs::read_to_string(cgroup.join("pids.current"))
            .map_or(0, |s| s.trim().parse().unwrap_or(0));
        // Forks are refused at the limit; the kernel still lets a process be attached past it
        // (pids.current may exceed pids.max by what moves in), hence a little room, not more.
        assert!(
            current <= pids_max + 2,
            "{current} processes, far past the limit of {pids_max}"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The bomb went on all along.
    assert!(forks_refused(&cgroup) > refused_before);
    assert_eq!(sup.ps("calm")[0].restarts, 0);

    // Stopping it ends every process of the bomb and its cgroup.
    sup.stop_app("bomb").unwrap();
    assert!(sup.ps("bomb").is_empty());
    wait_for("the bomb's cgroup to go", LONG, || {
        (!cgroup.exists()).then_some(())
    });
    assert!(get_json(target).is_ok());
    sup.stop_app("calm").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}
