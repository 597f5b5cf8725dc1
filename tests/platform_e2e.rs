//! The platform end to end (root): the real `slipway daemon` (with its supervisor) and
//! `slipway router` as processes of their own, driven by the real CLI, each test with its own
//! data dir, socket, bridges, subnets and ports; apps answer through the router.
//! Stacks are shared (`SLIPWAY_TEST_STACKS_DIR`, default /var/lib/slipway).
mod platform_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use platform_support::running::{containers, Platform};
use platform_support::*;

#[test]
fn deploy_configure_roll_back_run_log_and_destroy_through_the_router() {
    let p = Platform::start();
    let w = &p.world;
    w.ok(&["create", "shop"]);
    w.ok(&["env", "set", "-a", "shop", "GREETING=hi"]);

    // A directory.
    let src = w.dir.path().join("src");
    write_app(&src, "one");
    let out = w.ok(&["deploy", "-a", "shop", src.to_str().unwrap()]);
    let url = format!("http://shop.localhost:{}", w.router_port);
    assert!(out.contains(&format!("v1 is live at {url}")), "{out}");
    p.answers("shop", "one hi");

    // A config change makes a release and restarts the app with it.
    let out = w.ok(&["env", "set", "-a", "shop", "GREETING=bonjour"]);
    assert!(out.contains("done, v2"), "{out}");
    p.answers("shop", "one bonjour");

    // A tarball under a top folder, and the same tarball from a URL.
    write_app(&src, "two");
    let tgz = w.dir.path().join("two.tgz");
    tarball(&src, "shop-two", &tgz);
    w.ok(&["deploy", "-a", "shop", tgz.to_str().unwrap()]);
    p.answers("shop", "two bonjour");
    write_app(&src, "three");
    let tgz3 = w.dir.path().join("three.tgz");
    tarball(&src, "shop-three", &tgz3);
    let port = serve_file(std::fs::read(&tgz3).unwrap());
    let out = w.ok(&[
        "deploy",
        "-a",
        "shop",
        &format!("http://127.0.0.1:{port}/three.tgz"),
    ]);
    assert!(out.contains("Downloading"), "{out}");
    p.answers("shop", "three bonjour");

    // Rollback: the code and config vars of v1, no build.
    let out = w.ok(&["rollback", "-a", "shop", "v1"]);
    assert!(out.contains("v5 (rollback to v1)"), "{out}");
    p.answers("shop", "one hi");

    // Hostile archives are refused by name; v5 keeps serving all along.
    refuse_hostile_archives(w, "shop", || p.answers("shop", "one hi"));

    // A postdeploy command that fails: hook-error, and v5 keeps serving.
    write_app(&src, "four");
    std::fs::write(
        src.join("Procfile"),
        "web: exec python3 -u server.py\npostdeploy: echo migrating; exit 4\n",
    )
    .unwrap();
    let out = w.fails(&["deploy", "-a", "shop", src.to_str().unwrap()]);
    assert!(
        out.contains("hook-error") && out.contains("migrating") && out.contains("v5 keeps serving"),
        "{out}"
    );
    p.answers("shop", "one hi");

    // Containers pass through: scale, ps, one-offs with their exit code.
    w.ok(&["scale", "-a", "shop", "web=2"]);
    w.eventually("two web containers are up", Duration::from_secs(60), || {
        let ps: serde_json::Value =
            serde_json::from_str(&w.ok(&["ps", "-a", "shop", "--json"])).unwrap();
        ps.as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "web" && c["state"] == "up")
            .count()
            == 2
    });
    let out = w
        .cmd()
        .args([
            "run",
            "-a",
            "shop",
            "--",
            "echo \"run $GREETING $CONTAINER\"; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("run hi run-"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // With a terminal, the one-off gets one (a pty, sized as ours).
    let out = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "stty cols 77 rows 22; {SLIPWAY} run -a shop -- 'tty; echo \"size $(stty size)\"; exit 5'"
        ))
        .arg("/dev/null")
        .envs(w.env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The program's very first look at its terminal sees the caller's size.
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(
        text.contains("/dev/pts/") && text.contains("size 22 77"),
        "{text}"
    );

    // Logs: the app's output, platform events and router lines, in one place.
    for _ in 0..3 {
        p.answers("shop", "one hi");
    }
    w.eventually("the logs hold everything", Duration::from_secs(20), || {
        let logs = w.ok(&["logs", "-a", "shop", "-n", "2000"]);
        logs.contains("served / one")
            && logs.contains("slipway[router]")
            && logs.contains("slipway[deploy]: deployment 1 started")
            && logs.contains("slipway[platform]")
    });
    let web = w.ok(&["logs", "-a", "shop", "--ps", "web", "-n", "100"]);
    assert!(web.lines().all(|l| l.contains("app[web.")), "{web}");

    // Destroy: containers, routes, releases, slugs, cache and logs go.
    w.ok(&["destroy", "shop", "--confirm", "shop"]);
    let got = p.get("shop");
    assert!(matches!(&got, Err(e) if e.starts_with("404")), "{got:?}");
    assert_eq!(containers(w), Vec::<String>::new());
    assert_eq!(w.files_mentioning("shop"), Vec::<String>::new());
    assert!(w.ok(&["apps"]).contains("No apps"));
}

#[test]
fn a_daemon_killed_mid_deployment_restarts_consistent() {
    let mut p = Platform::start();
    let w = &p.world;
    w.ok(&["create", "shop"]);
    let src = w.dir.path().join("src");
    write_app(&src, "one");
    w.ok(&["deploy", "-a", "shop", src.to_str().unwrap()]);
    p.answers("shop", "one hello");

    // A new version whose web process takes its time to listen: the daemon dies while the
    // rollout waits for it.
    write_app(&src, "two");
    let server = std::fs::read_to_string(src.join("server.py")).unwrap();
    std::fs::write(
        src.join("server.py"),
        format!("import time\ntime.sleep(20)\n{server}"),
    )
    .unwrap();
    let mut deploy = w
        .cmd()
        .args(["deploy", "-a", "shop", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    w.eventually("the rollout starts", Duration::from_secs(120), || {
        w.ok(&["deployments", "-a", "shop"]).contains("starting")
    });
    std::thread::sleep(Duration::from_secs(2));
    p.kill_daemon();
    let out = deploy.wait().unwrap();
    assert!(
        !out.success(),
        "the CLI lost its daemon: it must say the deployment did not end"
    );
    // The router keeps serving v1 while the daemon is away.
    p.answers("shop", "one hello");

    p.start_daemon();
    let w = &p.world;
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["deployments", "-a", "shop", "--json"])).unwrap();
    assert_eq!(list[0]["status"], "aborted", "{list}");
    assert!(
        list[0]["reason"]
            .as_str()
            .unwrap()
            .contains("daemon stopped during this deployment"),
        "{list}"
    );
    let releases: serde_json::Value =
        serde_json::from_str(&w.ok(&["releases", "-a", "shop", "--json"])).unwrap();
    assert_eq!(releases[0]["status"], "failed", "{releases}");
    assert_eq!(releases[1]["status"], "succeeded", "{releases}");
    // v1 serves, and keeps serving once the half-started v2 is gone.
    p.answers("shop", "one hello");
    w.eventually("only v1's containers run", Duration::from_secs(90), || {
        let ps: serde_json::Value =
            serde_json::from_str(&w.ok(&["ps", "-a", "shop", "--json"])).unwrap();
        ps.as_array().unwrap().iter().all(|c| c["release"] == 1)
    });
    p.answers("shop", "one hello");

    // A new deployment works.
    write_app(&src, "three");
    let out = w.ok(&["deploy", "-a", "shop", src.to_str().unwrap()]);
    assert!(out.contains("v3 is live"), "{out}");
    p.answers("shop", "three hello");
    w.ok(&["destroy", "shop", "--confirm", "shop"]);
    assert_eq!(containers(w), Vec::<String>::new());
}
