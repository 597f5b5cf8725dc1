//! Interrupted commands leave nothing behind (root): a build whose reader goes away (`| head`),
//! a build stopped with SIGTERM, and a `slug run` killed with SIGKILL, whose container the next
//! command sweeps. "Nothing" is: no workspace, no network namespace file, no address lease, no
//! container in the runtime's state, no process of the container.
mod build_support;
mod leftovers_support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use build_support::*;

fn new_env() -> BuildEnv {
    BuildEnv::new("slwi", 160)
}

/// Builds fixture `app` and returns its slug id.
fn build(env: &BuildEnv, app: &str) -> String {
    let (_, json) = env.build_ok(&fixture(app), &["-a", "app"]);
    slug_of(&json)
}

/// What an interrupted command could leave behind.
trait Leftovers {
    /// Whatever an interrupted command could have left, described; empty when nothing.
    fn leftovers(&self) -> Vec<String>;

    /// Wait (bounded) until nothing is left; the list of what still is otherwise.
    fn settle(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.leftovers();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Leftovers for BuildEnv {
    fn leftovers(&self) -> Vec<String> {
        leftovers_support::leftovers(&self.data(), &self.run_dir(), RUNTIME)
    }
}

/// Read `child`'s stdout until a line contains `needle`; the lines read.
fn wait_for_line(child: &mut Child, needle: &str) -> (Vec<String>, std::process::ChildStdout) {
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "ended before {needle:?}:\n{}", seen.join(""));
        seen.push(line.clone());
        if line.contains(needle) {
            return (seen, reader.into_inner());
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A buildpack that prints a line every 100 ms for a minute: still running, and still
/// writing, when its reader goes away.
fn chatty_buildpack(env: &BuildEnv) -> PathBuf {
    let bp = env.dir.path().join("chatty-bp");
    std::fs::create_dir_all(bp.join("bin")).unwrap();
    for (f, body) in [
        ("detect", "#!/bin/sh\necho Chatty\n"),
        (
            "compile",
            "#!/bin/sh\nfor i in $(seq 600); do echo \"line $i\"; sleep 0.1; done\n",
        ),
    ] {
        let p = bp.join("bin").join(f);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    bp
}

#[test]
fn a_build_whose_reader_goes_away_stops_and_leaves_nothing() {
    let env = new_env();
    let bp = chatty_buildpack(&env);
    let mut child = env
        .cmd()
        .args(["build", "-a", "app", "--buildpack"])
        .arg(&bp)
        .arg(fixture("apps/static"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head`: lines read until the buildpack runs, then the pipe is closed mid-build.
    let (_, stdout) = wait_for_line(&mut child, "line 3");
    drop(stdout);
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert!(!err.contains("panicked"), "{err}");
    // Stopped as SIGPIPE would stop it (the build would run a minute otherwise).
    assert_eq!(status.code(), Some(128 + 13), "{err}");
    assert_eq!(env.settle(), Vec::<String>::new());
}

#[test]
fn a_build_stopped_with_sigterm_leaves_nothing() {
    let env = new_env();
    // A build that takes long: its buildpack's compile sleeps.
    let bp = env.dir.path().join("slow-bp");
    std::fs::create_dir_all(bp.join("bin")).unwrap();
    for (f, body) in [
        ("detect", "#!/bin/sh\necho Slow\n"),
        ("compile", "#!/bin/sh\necho compiling; sleep 120\n"),
    ] {
        let p = bp.join("bin").join(f);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mut child = env
        .cmd()
        .args(["build", "-a", "app", "--buildpack"])
        .arg(&bp)
        .arg(fixture("apps/static"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_, _stdout) = wait_for_line(&mut child, "compiling");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(128 + 15));
    assert_eq!(env.settle(), Vec::<String>::new());
}

#[test]
fn a_killed_slug_run_is_swept_by_the_next_command_and_sigterm_stops_at_once() {
    let env = new_env();
    let slug = build(&env, "apps/sigterm-ignoring");
    let run = |env: &BuildEnv| {
        env.cmd()
            .args(["slug", "run", &slug[..12], "--port", "80"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Port 80 as the unprivileged user: bindable in the container's own network namespace.
    let mut first = run(&env);
    let (_, _out1) = wait_for_line(&mut first, "listening on http://");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        !env.leftovers().is_empty(),
        "SIGKILL leaves the container running until someone sweeps it"
    );

    // The next command finds and removes it before making its own.
    let mut second = run(&env);
    let (_, _out2) = wait_for_line(&mut second, "listening on http://");
    // http.server has no SIGTERM handler: under the init the signal still reaches it, and it
    // dies of it (143), not of the SIGKILL that ends the grace period (137).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut second, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "not stopped by SIGTERM itself"
    );
    assert_eq!(env.settle(), Vec::<String>::new());
}
