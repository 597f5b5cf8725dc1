//! Builds end to end (root): fixture apps are built with `slipway build` in build containers,
//! then their web process runs with `slipway slug run` and answers a real HTTP request.
//! Stacks are shared (`SLIPWAY_TEST_STACKS_DIR`, default /var/lib/slipway; scripts/test builds
//! them first); everything else (data dir, bridge, subnet, run dir) is per test.
mod build_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use build_support::*;
use serde_json::Value;

fn new_env() -> BuildEnv {
    BuildEnv::new("slwb", 150)
}

/// Runs the slug's web process and GETs / from it: the response.
fn serve_and_get(env: &BuildEnv, slug: &str) -> String {
    let mut run = env.slug_run(slug);
    let body = wait_for_200(&run.addr, Duration::from_secs(60), &mut run.child);
    let addr = run.addr.clone();
    let log = run.stop();
    body.unwrap_or_else(|e| panic!("no answer from {addr}: {e}\n{log}"))
}

#[test]
fn python_flask_with_gunicorn() {
    let env = new_env();
    let (log, json) = env.build_ok(&fixture("apps/python"), &["-a", "pyapp"]);
    assert!(log.contains("-----> Python app detected"), "{log}");
    assert_eq!(json["process_types"][0]["name"], "web");
    assert!(json["process_types"][0]["command"]
        .as_str()
        .unwrap()
        .contains("gunicorn"));
    let body = serve_and_get(&env, &slug_of(&json));
    assert!(
        body.contains("hello from python fixture on port 5000"),
        "{body}"
    );

    // A second build of the unchanged app downloads nothing: pip's cache (and the cached
    // virtualenv) come from the app's build cache.
    // With the package index pointing at a dead address, only the cache can satisfy it.
    let (log2, json2) = env.build_ok(
        &fixture("apps/python"),
        &[
            "-a",
            "pyapp",
            "-e",
            "PIP_INDEX_URL=http://127.0.0.1:9/simple",
        ],
    );
    assert!(
        !log2.contains("Downloading"),
        "second build downloaded again:\n{log2}"
    );
    assert_eq!(json2["process_types"], json["process_types"]);
    // `slipway cache clear` empties it: the next build downloads again.
    let out = env
        .cmd()
        .args(["cache", "clear", "-a", "pyapp"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (log3, _) = env.build_ok(&fixture("apps/python"), &["-a", "pyapp"]);
    assert!(
        log3.contains("Downloading") || log3.contains("Collecting"),
        "{log3}"
    );
}

#[test]
fn nodejs_express() {
    let env = new_env();
    let (log, json) = env.build_ok(&fixture("apps/nodejs"), &["-a", "nodeapp"]);
    assert!(log.contains("app detected"), "{log}");
    let body = serve_and_get(&env, &slug_of(&json));
    assert!(
        body.contains("hello from nodejs fixture on port 5000"),
        "{body}"
    );
    // Unchanged app: npm takes every package from the build cache, so nothing new lands in
    // its content store (downloads are stored there by content hash).
    let content = env.data().join("cache/nodeapp/npm/_cacache/content-v2");
    let count = || {
        walkdir::WalkDir::new(&content)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count()
    };
    let before = count();
    assert!(
        before > 0,
        "the first build filled npm's cache at {}",
        content.display()
    );
    let (log2, _) = env.build_ok(&fixture("apps/nodejs"), &["-a", "nodeapp"]);
    assert!(log2.contains("app detected"), "{log2}");
    assert_eq!(
        count(),
        before,
        "the second build downloaded something:\n{log2}"
    );
}

#[test]
fn a_build_cannot_reach_services_on_the_host() {
    let env = new_env();
    // A service on the host's loopback, and one on every host address.
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let (lp, ap) = (
        local.local_addr().unwrap().port(),
        any.local_addr().unwrap().port(),
    );
    let gateway = env.subnet.replace(".0/24", ".1");
    let bp = env.dir.path().join("bp-probe");
    let probe = |what: &str, addr: String| {
        format!("if curl -sS -m 5 -o /dev/null http://{addr}/ 2>/dev/null; then echo \"REACHED {what}\"; else echo \"blocked {what}\"; fi")
    };
    let body = [
        probe("loopback", format!("127.0.0.1:{lp}")),
        probe("gateway-loopback-port", format!("{gateway}:{lp}")),
        probe("gateway-any-port", format!("{gateway}:{ap}")),
    ]
    .join("\n");
    write_buildpack(&bp, "Probe", &body, None);
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let (_, log, _) = env.build(&app, &["-a", "probe", "--buildpack", bp.to_str().unwrap()]);
    for what in ["loopback", "gateway-loopback-port", "gateway-any-port"] {
        assert!(log.contains(&format!("blocked {what}")), "{what}: {log}");
    }
    assert!(!log.contains("REACHED"), "{log}");
}

#[test]
fn go_app() {
    let env = new_env();
    let (_, json) = env.build_ok(&fixture("apps/go"), &["-a", "goapp"]);
    let body = serve_and_get(&env, &slug_of(&json));
    assert!(
        body.contains("hello from go fixture on port 5000"),
        "{body}"
    );
}

#[test]
fn static_site() {
    let env = new_env();
    // What a killed builder left behind is cleared by the next build.
    let abandoned = env.data().join("builds/build-site-dead");
    std::fs::create_dir_all(abandoned.join("app")).unwrap();
    std::fs::write(abandoned.join("owner"), "2147483646 1").unwrap();
    let (_, json) = env.build_ok(&fixture("apps/static"), &["-a", "site"]);
    assert!(!abandoned.exists(), "abandoned workspace not removed");
    let body = serve_and_get(&env, &slug_of(&json));
    assert!(body.contains("hello from static fixture"), "{body}");
}

/// Write a tiny buildpack: detect prints `name`, compile runs `compile_body`.
fn write_buildpack(dir: &Path, name: &str, compile_body: &str, release: Option<&str>) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let files = [
        ("bin/detect", format!("#!/bin/bash\necho {name}\n")),
        ("bin/compile", format!("#!/bin/bash\nset -e\nBUILD_DIR=$1\nCACHE_DIR=$2\nENV_DIR=$3\nBP_DIR=$(cd \"$(dirname \"$0\")\"/..; pwd)\n{compile_body}\n")),
    ];
    for (f, body) in files {
        std::fs::write(dir.join(f), body).unwrap();
    }
    if let Some(r) = release {
        std::fs::write(
            dir.join("bin/release"),
            format!("#!/bin/bash\ncat <<'YAML'\n{r}\nYAML\n"),
        )
        .unwrap();
    }
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rx")
        .arg(dir)
        .status();
}

#[test]
fn two_buildpacks_from_dot_buildpacks_share_exports() {
    let env = new_env();
    let root = env.dir.path();
    let bp1 = root.join("bp-one");
    let bp2 = root.join("bp-two");
    write_buildpack(
        &bp1,
        "One",
        "echo '-----> one compiling'\necho 'export GREETING=hello-from-one' > \"$BP_DIR/export\"",
        None,
    );
    write_buildpack(
        &bp2,
        "Two",
        "echo \"-----> two sees GREETING=$GREETING\"\nmkdir -p \"$BUILD_DIR/www\" && echo \"$GREETING\" > \"$BUILD_DIR/www/index.html\"",
        Some("---\ndefault_process_types:\n  web: python3 -m http.server $PORT --directory /app/www"),
    );
    let app = root.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join(".buildpacks"),
        format!(
            "# two local buildpacks\n{}\n\n{}\r\n",
            bp1.display(),
            bp2.display()
        ),
    )
    .unwrap();
    // Local paths in the app's .buildpacks need the operator's consent.
    let (log, json) = env.build_ok(&app, &["-a", "multi", "--allow-local-buildpacks"]);
    assert!(log.contains("one compiling"), "{log}");
    assert!(log.contains("two sees GREETING=hello-from-one"), "{log}");
    assert_eq!(json["buildpacks"], serde_json::json!(["One", "Two"]));
    // The last buildpack's release decided the web process.
    let body = serve_and_get(&env, &slug_of(&json));
    assert!(body.contains("hello-from-one"), "{body}");
}

#[test]
fn custom_buildpack_from_a_local_git_repository_at_a_tag() {
    let env = new_env();
    let repo = env.dir.path().join("bp-repo");
    let release =
        "---\ndefault_process_types:\n  web: python3 -m http.server $PORT --directory /app/www";
    write_buildpack(&repo, "Custom", "echo '-----> custom v1'\nmkdir -p $BUILD_DIR/www && echo v1-content > $BUILD_DIR/www/index.html", Some(release));
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.email=t@t", "-c", "user.name=t"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "v1"]);
    git(&["tag", "v1"]);
    write_buildpack(
        &repo,
        "Custom",
        "echo '-----> custom v2'\nexit 1",
        Some(release),
    );
    git(&["commit", "-q", "-am", "v2 breaks"]);
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("README"), "an app the custom buildpack builds\n").unwrap();
    let url = format!("file://{}#v1", repo.display());
    let (log, json) = env.build_ok(&app, &["-a", "custom", "--buildpack", &url]);
    assert!(
        log.contains("custom v1") && !log.contains("custom v2"),
        "{log}"
    );
    let body = serve_and_get(&env, &slug_of(&json));
    assert!(body.contains("v1-content"), "{body}");
}

#[test]
fn no_buildpack_detects_lists_those_tried() {
    let env = new_env();
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("notes.txt"), "nothing to build\n").unwrap();
    let (ok, log, _) = env.build(&app, &["-a", "nothing"]);
    assert!(!ok);
    for name in ["python", "nodejs", "go", "static", "procfile"] {
        assert!(log.contains(name), "{name} missing from: {log}");
    }
    assert!(
        !env.data().join("builds").exists()
            || std::fs::read_dir(env.data().join("builds"))
                .unwrap()
                .next()
                .is_none(),
        "build dir left"
    );
}

#[test]
fn failing_buildpack_shows_its_last_lines_and_exit_code() {
    let env = new_env();
    let bp = env.dir.path().join("bp-fail");
    write_buildpack(
        &bp,
        "Failing",
        "echo 'step one'\necho 'something broke here' >&2\nexit 3",
        None,
    );
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let (ok, log, _) = env.build(
        &app,
        &["-a", "failing", "--buildpack", bp.to_str().unwrap()],
    );
    assert!(!ok);
    // Shown once, as it happened, not again in the error.
    assert_eq!(log.matches("something broke here").count(), 1, "{log}");
    assert!(log.contains("exit code 3"), "{log}");
    assert!(
        std::fs::read_dir(env.data().join("builds"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "build dir left"
    );
    assert!(
        std::fs::read_dir(env.data().join("slugs"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "no slug for a failed build"
    );
}

#[test]
fn unfetchable_buildpack_url() {
    let env = new_env();
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let (ok, log, _) = env.build(
        &app,
        &[
            "-a",
            "unfetch",
            "--buildpack",
            "http://127.0.0.1:1/missing.tgz",
        ],
    );
    assert!(!ok);
    assert!(log.contains("127.0.0.1:1/missing.tgz"), "{log}");
}

#[test]
fn malformed_release_yaml() {
    let env = new_env();
    let bp = env.dir.path().join("bp-yaml");
    write_buildpack(
        &bp,
        "BadYaml",
        "true",
        Some("default_process_types: [this is: not: a map"),
    );
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let (ok, log, _) = env.build(
        &app,
        &["-a", "badyaml", "--buildpack", bp.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(log.to_lowercase().contains("release"), "{log}");
}

#[test]
fn procfile_with_a_bad_line_fails_before_building() {
    let env = new_env();
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("Procfile"),
        "web: ./serve\nthis line has no colon\n",
    )
    .unwrap();
    let (ok, log, _) = env.build(&app, &["-a", "badproc"]);
    assert!(!ok);
    assert!(log.contains("Procfile line 2"), "{log}");
    assert!(!log.contains("app detected"), "no buildpack ran: {log}");
}

#[test]
fn slug_over_the_limit() {
    let env = new_env();
    let bp = env.dir.path().join("bp-big");
    write_buildpack(
        &bp,
        "Big",
        "head -c 3145728 /dev/urandom > $BUILD_DIR/big.bin",
        None,
    );
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let (ok, log, _) = env.build(
        &app,
        &[
            "-a",
            "big",
            "--buildpack",
            bp.to_str().unwrap(),
            "--slug-limit-mb",
            "2",
        ],
    );
    assert!(!ok);
    assert!(log.contains("slugignore") || log.contains("limit"), "{log}");
    assert!(
        std::fs::read_dir(env.data().join("slugs"))
            .map(|d| d
                .filter_map(Result::ok)
                .all(|e| !e.file_name().to_string_lossy().ends_with(".zst")))
            .unwrap_or(true),
        "half-written slug left"
    );
}

#[test]
fn build_that_outlives_its_timeout() {
    let env = new_env();
    let bp = env.dir.path().join("bp-slow");
    write_buildpack(&bp, "Slow", "echo 'sleeping'\nsleep 600", None);
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let (ok, log, _) = env.build(
        &app,
        &[
            "-a",
            "slow",
            "--buildpack",
            bp.to_str().unwrap(),
            "--timeout",
            "5",
        ],
    );
    assert!(!ok);
    assert!(log.contains("longer than"), "{log}");
    // It says where the build was.
    assert!(log.contains("during bin/compile of Slow"), "{log}");
    let procs = Command::new("pgrep")
        .args(["-f", "sleep 600"])
        .output()
        .unwrap();
    assert!(procs.stdout.is_empty(), "the build's processes were killed");
}

/// A directory standing for the rest of the host: what a hostile app or build would like to
/// read or write. [`Canary::untouched`] checks nothing was added, changed or removed there.
struct Canary {
    dir: PathBuf,
}

const CANARY_SECRET: &str = "web: host-secret-4711";

impl Canary {
    fn new(env: &BuildEnv) -> Canary {
        let dir = env.dir.path().join("canary");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), CANARY_SECRET).unwrap();
        std::fs::write(dir.join("target"), "unchanged").unwrap();
        Canary { dir }
    }

    fn untouched(&self, log: &str) {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["secret", "target"],
            "files appeared in the canary dir"
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.join("secret")).unwrap(),
            CANARY_SECRET
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.join("target")).unwrap(),
            "unchanged"
        );
        assert!(
            !log.contains("host-secret-4711"),
            "a host file leaked: {log}"
        );
    }
}

fn empty_app(env: &BuildEnv) -> PathBuf {
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("README"), "an app\n").unwrap();
    app
}

#[test]
fn config_var_names_never_become_host_paths() {
    let env = new_env();
    let canary = Canary::new(&env);
    let app = empty_app(&env);
    // From <data>/builds/<id>/env, four levels up is the test dir that holds the canary.
    for var in ["../../../../canary/pwned=y", "_HIDDEN=1", "A/B=1", "=x"] {
        let (ok, log, _) = env.build(&app, &["-a", "envs", "-e", var]);
        assert!(!ok, "{var} was accepted");
        assert!(log.contains("[A-Za-z0-9_]"), "{var}: {log}");
        canary.untouched(&log);
    }
    let big = format!("BIG={}", "x".repeat(40 * 1024));
    let (ok, log, _) = env.build(&app, &["-a", "envs", "-e", &big]);
    assert!(!ok && log.contains("32 KiB"), "{log}");
}

#[test]
fn app_names_are_dns_labels() {
    let env = new_env();
    let canary = Canary::new(&env);
    let app = empty_app(&env);
    for name in ["../../canary", "My_App", "-x", &"a".repeat(41)] {
        let (ok, log, _) = env.build(&app, &[&format!("--app={name}")]);
        assert!(!ok, "{name} was accepted");
        assert!(log.contains("lower-case DNS label"), "{name}: {log}");
        canary.untouched(&log);
    }
    assert!(!env.data().join("cache").exists(), "a cache dir was made");
    let out = env
        .cmd()
        .args(["cache", "clear", "-a", "../../canary"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lower-case DNS label"));
    canary.untouched("");
}

#[test]
fn app_owned_buildpack_sources_name_only_urls() {
    let env = new_env();
    let canary = Canary::new(&env);
    let bp = env.dir.path().join("bp-local");
    write_buildpack(&bp, "Local", "true", None);
    let app = empty_app(&env);
    let bp_path = bp.display().to_string();
    for value in [bp_path.clone(), format!("file://{bp_path}"), "/etc".into()] {
        let var = format!("BUILDPACK_URL={value}");
        let (ok, log, _) = env.build(&app, &["-a", "urls", "-e", &var]);
        assert!(!ok, "{value} was accepted");
        assert!(
            log.contains("config var BUILDPACK_URL")
                && log.contains("names a path on the build host")
                && log.contains("--allow-local-buildpacks"),
            "{value}: {log}"
        );
        canary.untouched(&log);
    }
    std::fs::write(
        app.join(".buildpacks"),
        format!(
            "https://example.invalid/bp.git\n{}/..\n",
            canary.dir.display()
        ),
    )
    .unwrap();
    let (ok, log, _) = env.build(&app, &["-a", "urls"]);
    assert!(!ok);
    assert!(
        log.contains(".buildpacks line 2") && log.contains("names a path on the build host"),
        "{log}"
    );
    assert!(!log.contains("Fetching"), "nothing was fetched: {log}");
    canary.untouched(&log);
    // The operator's own choice on the command line stays allowed.
    std::fs::remove_file(app.join(".buildpacks")).unwrap();
    let var = format!("BUILDPACK_URL={bp_path}");
    let (_, json) = env.build_ok(&app, &["-a", "urls", "-e", &var, "--buildpack", &bp_path]);
    assert_eq!(json["buildpacks"], serde_json::json!(["Local"]));
}

#[test]
fn symlinked_app_files_are_not_read_from_the_host() {
    let env = new_env();
    let canary = Canary::new(&env);
    let app = empty_app(&env);
    std::os::unix::fs::symlink(canary.dir.join("secret"), app.join("Procfile")).unwrap();
    let (ok, log, _) = env.build(&app, &["-a", "linked"]);
    assert!(!ok);
    assert!(log.contains("Procfile is a symlink"), "{log}");
    canary.untouched(&log);
}

#[test]
fn a_hostile_build_cannot_make_the_builder_read_or_write_host_files() {
    let env = new_env();
    let canary = Canary::new(&env);
    let bp = env.dir.path().join("bp-hostile");
    // Its results become links to host files (paths the builder would resolve on the host).
    let compile = format!(
        "ln -sf {secret} /slipway/out/release-0.yml\nln -sf {secret} /slipway/out/used\nls -la /slipway/out",
        secret = canary.dir.join("secret").display()
    );
    write_buildpack(&bp, "Hostile", &compile, None);
    // A fetched buildpack may hold a link where the builder writes the buildpack's label.
    std::os::unix::fs::symlink(canary.dir.join("target"), bp.join(".slipway-name")).unwrap();
    let app = empty_app(&env);
    let (ok, log, _) = env.build(
        &app,
        &["-a", "hostile", "--buildpack", bp.to_str().unwrap()],
    );
    assert!(!ok, "{log}");
    assert!(log.contains("is a symlink"), "{log}");
    canary.untouched(&log);
    assert!(
        std::fs::read_dir(env.data().join("builds"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "build dir left"
    );
}

/// A buildpack that records each build in the cache and fails when the app has a `fail` file.
fn cache_recording_buildpack(env: &BuildEnv) -> PathBuf {
    let bp = env.dir.path().join("bp-cache");
    write_buildpack(
        &bp,
        "Cache",
        concat!(
            "echo \"-----> cache holds: $(ls \"$CACHE_DIR\" | tr '\\n' ' ')\"\n",
            "if [ -f \"$BUILD_DIR/fail\" ]; then touch \"$CACHE_DIR/poison\"; exit 1; fi\n",
            "[ -f \"$BUILD_DIR/slow\" ] && sleep 2\n",
            "touch \"$CACHE_DIR/good-$(cat \"$BUILD_DIR/n\")\"\n",
            "mkdir -p \"$BUILD_DIR/www\" && echo ok > \"$BUILD_DIR/www/index.html\""
        ),
        Some(
            "---\ndefault_process_types:\n  web: python3 -m http.server $PORT --directory /app/www",
        ),
    );
    bp
}

fn app_with(env: &BuildEnv, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let app = env.dir.path().join(name);
    std::fs::create_dir_all(&app).unwrap();
    for (f, content) in files {
        std::fs::write(app.join(f), content).unwrap();
    }
    app
}

#[test]
fn a_failed_build_leaves_the_cache_of_the_last_good_one() {
    let env = new_env();
    let bp = cache_recording_buildpack(&env);
    let bp = bp.to_str().unwrap();
    let good = app_with(&env, "good", &[("n", "1")]);
    env.build_ok(&good, &["-a", "cached", "--buildpack", bp]);
    let bad = app_with(&env, "bad", &[("n", "2"), ("fail", "")]);
    let (ok, log, _) = env.build(&bad, &["-a", "cached", "--buildpack", bp]);
    assert!(!ok, "{log}");
    assert!(log.contains("cache holds: good-1"), "{log}");
    let again = app_with(&env, "again", &[("n", "3")]);
    let (log, _) = env.build_ok(&again, &["-a", "cached", "--buildpack", bp]);
    // The failed build's writes (poison) are gone; the good build's stay.
    assert!(log.contains("cache holds: good-1 "), "{log}");
    assert!(!log.contains("poison"), "{log}");
}

#[test]
fn two_builds_of_one_app_at_once_both_succeed_in_turn() {
    let env = new_env();
    let bp = cache_recording_buildpack(&env);
    let bp = bp.to_str().unwrap();
    let a = app_with(&env, "a", &[("n", "1"), ("slow", "")]);
    let b = app_with(&env, "b", &[("n", "2"), ("slow", "")]);
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| env.build(&a, &["-a", "twice", "--buildpack", bp]));
        let tb = s.spawn(|| env.build(&b, &["-a", "twice", "--buildpack", bp]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(ra.0, "{}", ra.1);
    assert!(rb.0, "{}", rb.1);
    let waited = [&ra.1, &rb.1]
        .iter()
        .filter(|l| l.contains("Waiting for another build of twice"))
        .count();
    assert_eq!(
        waited, 1,
        "one build waits for the other:\n{}\n---\n{}",
        ra.1, rb.1
    );
    // The second build saw the first one's cache: they ran in turn, not at once.
    assert!(
        ra.1.contains("cache holds: good-2") || rb.1.contains("cache holds: good-1"),
        "{}\n---\n{}",
        ra.1,
        rb.1
    );
}

#[test]
fn the_same_source_builds_the_same_slug() {
    let env = new_env();
    for app in ["apps/static", "apps/procfile"] {
        let (_, first) = env.build_ok(&fixture(app), &["-a", "same"]);
        let (_, second) = env.build_ok(&fixture(app), &["-a", "same"]);
        assert_eq!(slug_of(&first), slug_of(&second), "{app} built twice");
    }
}

#[test]
fn slugs_are_listed_pruned_and_removed() {
    let env = new_env();
    let one = app_with(&env, "one", &[("Procfile", "web: sleep 100\n")]);
    let two = app_with(&env, "two", &[("Procfile", "web: sleep 200\n")]);
    let (_, a) = env.build_ok(&one, &["-a", "kept"]);
    std::thread::sleep(Duration::from_millis(1100));
    let (_, b) = env.build_ok(&two, &["-a", "kept"]);
    let list = |env: &BuildEnv| -> Vec<String> {
        let out = env.cmd().args(["slug", "list", "--json"]).output().unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list(&env).len(), 2);
    let st = env
        .cmd()
        .args(["slug", "prune", "--keep", "1"])
        .status()
        .unwrap();
    assert!(st.success());
    // The newest stays.
    assert_eq!(list(&env), vec![slug_of(&b)]);
    assert!(!env.data().join("slugs").join(slug_of(&a)).exists());
    let st = env
        .cmd()
        .args(["slug", "rm", &slug_of(&b)[..8]])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(list(&env).is_empty());
}

#[test]
fn an_app_picks_the_debian_13_stack_with_its_stack_config_var() {
    let env = new_env();
    let app = app_with(
        &env,
        "py313",
        &[
            (".python-version", "3.13\n"),
            ("requirements.txt", ""),
            (
                "Procfile",
                "web: python3 -c 'import sys; print(sys.version)' && exec python3 -m http.server $PORT\n",
            ),
        ],
    );
    // On the default stack (Python 3.11) the version is refused, naming the stack that has it.
    let (ok, log, _) = env.build(&app, &["-a", "py313"]);
    assert!(!ok, "{log}");
    assert!(log.contains("STACK=slipway-13"), "{log}");
    let (log, json) = env.build_ok(&app, &["-a", "py313", "-e", "STACK=slipway-13"]);
    assert!(log.contains("3.13"), "{log}");
    assert_eq!(json["stack"], "slipway-13");
    let body = serve_and_get(&env, &slug_of(&json));
    assert!(body.contains("200"), "{body}");
    let (ok, log, _) = env.build(&app, &["-a", "py313", "-e", "STACK=heroku-24"]);
    assert!(!ok && log.contains("slipway-12, slipway-13"), "{log}");
}

#[test]
fn a_hanging_detect_is_named_and_a_forced_buildpack_that_does_not_detect_says_so() {
    let env = new_env();
    let app = app_with(&env, "app-detect", &[("n", "1")]);
    // bin/detect that never answers.
    let hang = env.dir.path().join("bp-hang");
    write_buildpack(&hang, "Hang", "true", None);
    std::fs::write(hang.join("bin/detect"), "#!/bin/bash\nsleep 600\n").unwrap();
    let (ok, log, _) = env.build(
        &app,
        &[
            "-a",
            "hang",
            "--buildpack",
            hang.to_str().unwrap(),
            "--timeout",
            "5",
        ],
    );
    assert!(!ok);
    assert!(log.contains("during bin/detect of"), "{log}");
    // bin/detect that says no: the chosen buildpack runs, with a notice.
    let no = env.dir.path().join("bp-no");
    write_buildpack(&no, "No", "echo '-----> compiled anyway'", None);
    std::fs::write(no.join("bin/detect"), "#!/bin/bash\nexit 1\n").unwrap();
    let (_, log, _) = env.build(&app, &["-a", "no", "--buildpack", no.to_str().unwrap()]);
    assert!(
        log.contains("does not recognise this app; running it anyway"),
        "{log}"
    );
    assert!(log.contains("compiled anyway"), "{log}");
}
