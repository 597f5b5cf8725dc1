//! The built-in buildpacks against apps as users write them (root, registries reachable):
//! each fixture under tests/fixtures/apps is built with `slipway build`, its web process run
//! with `slipway slug run` and asked over HTTP; a second build of the unchanged app reuses
//! its build cache; and what cannot be built (an out-of-date lockfile, a version the stack or
//! the registries cannot provide, a module proxy out of reach, a hostile static.json, a
//! language with no built-in buildpack) ends the build with one clear message.
//! Stacks are shared (`SLIPWAY_TEST_STACKS_DIR`, default /var/lib/slipway); data dir, bridge,
//! subnet and run dir are per test.
mod build_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use build_support::*;
use serde_json::Value;

/// A fixture app under tests/fixtures/apps.
fn fixture(name: &str) -> PathBuf {
    build_support::fixture(&format!("apps/{name}"))
}

fn new_env() -> BuildEnv {
    BuildEnv::new("slwc", 214)
}

/// `slipway build DIR --json -a APP ARGS`: (success, build output, result JSON).
fn build(env: &BuildEnv, dir: &Path, app: &str, args: &[&str]) -> (bool, String, Value) {
    env.build(dir, &[&["-a", app], args].concat())
}

fn build_ok(env: &BuildEnv, dir: &Path, app: &str, args: &[&str]) -> (String, Value) {
    env.build_ok(dir, &[&["-a", app], args].concat())
}

/// The build fails; returns the one message the buildpack gave (its ` !     ` line).
fn build_fails(env: &BuildEnv, dir: &Path, app: &str, args: &[&str]) -> String {
    let (ok, log, _) = build(env, dir, app, args);
    assert!(!ok, "build of {} should have failed:\n{log}", dir.display());
    one_message(&log)
}

/// A copy of a fixture to change, in this test's temp dir.
fn copy_of(env: &BuildEnv, name: &str) -> PathBuf {
    let to = env.dir.path().join(format!("src-{name}"));
    let from = fixture(name);
    for e in walkdir::WalkDir::new(&from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(&from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
    to
}

/// Runs the slug's web process, GETs each path (after `/` answers), stops it.
/// Returns the raw responses (status line, headers, body).
fn serve(env: &BuildEnv, slug: &str, paths: &[&str]) -> Vec<String> {
    let mut run = env.slug_run(slug);
    let ready = wait_for_200(&run.addr, Duration::from_secs(90), &mut run.child);
    let responses = match &ready {
        Ok(_) => paths.iter().map(|p| get(&run.addr, p)).collect(),
        Err(_) => Vec::new(),
    };
    let addr = run.addr.clone();
    let log = run.stop();
    if let Err(e) = ready {
        panic!("no answer from {addr}: {e}\n{log}");
    }
    responses
}

fn serve_root(env: &BuildEnv, slug: &str) -> String {
    serve(env, slug, &["/"]).remove(0)
}

fn status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The value of a response header (case-insensitive name).
fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The distinct ` !     ` lines a failed build printed, but for the builder's own
/// "Buildpack X failed (exit code N)": there must be exactly one.
fn one_message(log: &str) -> String {
    let messages: BTreeSet<&str> = log
        .lines()
        .filter(|l| l.starts_with(" !     "))
        .filter(|l| !(l.contains(" !     Buildpack ") && l.contains("failed (exit code")))
        .collect();
    assert_eq!(
        messages.len(),
        1,
        "expected one error message, got {messages:#?}\n{log}"
    );
    messages.into_iter().next().unwrap().to_string()
}

/// The slug's /app, unpacked.
fn slug_app(json: &Value) -> PathBuf {
    PathBuf::from(json["unpacked"].as_str().unwrap()).join("app")
}

fn web_command(json: &Value) -> String {
    json["process_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .map(|p| p["command"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Build a fixture cold, check its web process answers with `expect`, build it again warm
/// and check the log says the cache was used (`warm_says`). Returns (cold json, warm log).
fn cold_warm_serve(env: &BuildEnv, name: &str, expect: &str, warm_says: &str) -> (Value, String) {
    let (log, json) = build_ok(env, &fixture(name), name, &[]);
    let body = serve_root(env, &slug_of(&json));
    assert!(
        body.contains(expect),
        "{name}: expected {expect:?} in:\n{body}\nbuild:\n{log}"
    );
    let (warm, warm_json) = build_ok(env, &fixture(name), name, &[]);
    assert!(
        warm.contains(warm_says),
        "{name}: the warm build did not reuse the cache ({warm_says:?}):\n{warm}"
    );
    // What the cache restored runs as well as what was installed afresh.
    let body = serve_root(env, &slug_of(&warm_json));
    assert!(
        body.contains(expect),
        "{name} (warm build): expected {expect:?} in:\n{body}\nbuild:\n{warm}"
    );
    (json, warm)
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, s.replacen(from, to, 1)).unwrap();
}

// ---- Python ----------------------------------------------------------------------------

#[test]
fn python_pipenv_flask() {
    let env = new_env();
    let (json, _) = cold_warm_serve(
        &env,
        "python-pipenv",
        "hello from python-pipenv fixture on port 5000",
        "pipenv install skipped",
    );
    assert!(web_command(&json).starts_with("gunicorn"), "{json}");
    // dev-packages are not installed; pipenv itself is not in the slug.
    let site = slug_app(&json).join(".venv/lib/python3.11/site-packages");
    assert!(site.join("flask").is_dir());
    assert!(
        !site.join("iniconfig").exists(),
        "a dev package was installed"
    );
    assert!(!site.join("pipenv").exists());

    let app = copy_of(&env, "python-pipenv");
    replace_in(
        &app.join("Pipfile"),
        "[dev-packages]",
        "six = \"*\"\n\n[dev-packages]",
    );
    let msg = build_fails(&env, &app, "python-pipenv", &[]);
    assert!(
        msg.contains("Pipfile.lock is out of date") && msg.contains("pipenv lock"),
        "{msg}"
    );
}

#[test]
fn python_poetry_flask() {
    let env = new_env();
    let (json, _) = cold_warm_serve(
        &env,
        "python-poetry",
        "hello from python-poetry fixture on port 5000",
        "poetry install skipped",
    );
    let site = slug_app(&json).join(".venv/lib/python3.11/site-packages");
    assert!(site.join("flask").is_dir());
    assert!(
        !site.join("iniconfig").exists(),
        "the dev group was installed"
    );
    assert!(!site.join("poetry").exists(), "poetry went into the slug");

    let app = copy_of(&env, "python-poetry");
    replace_in(
        &app.join("pyproject.toml"),
        "\"gunicorn>=22\"",
        "\"gunicorn>=22\", \"six\"",
    );
    let msg = build_fails(&env, &app, "python-poetry", &[]);
    assert!(
        msg.contains("poetry.lock is out of date") && msg.contains("poetry lock"),
        "{msg}"
    );

    // A Poetry version PyPI does not have: one message with the versions there are.
    let msg = build_fails(
        &env,
        &fixture("python-poetry"),
        "poetry-missing",
        &["-e", "POETRY_VERSION=9.9.9"],
    );
    assert!(
        msg.contains("Poetry 9.9.9") && msg.contains("2.5.1"),
        "{msg}"
    );
}

#[test]
fn python_uv_flask() {
    let env = new_env();
    let (json, _) = cold_warm_serve(
        &env,
        "python-uv",
        "hello from python-uv fixture on port 5000",
        "uv install skipped",
    );
    let site = slug_app(&json).join(".venv/lib/python3.11/site-packages");
    assert!(site.join("flask").is_dir());
    assert!(
        !site.join("iniconfig").exists(),
        "the dev group was installed"
    );

    let app = copy_of(&env, "python-uv");
    replace_in(
        &app.join("pyproject.toml"),
        "\"gunicorn>=22\"",
        "\"gunicorn>=22\", \"six\"",
    );
    let msg = build_fails(&env, &app, "python-uv", &[]);
    assert!(
        msg.contains("uv.lock is out of date") && msg.contains("uv lock"),
        "{msg}"
    );
}

#[test]
fn python_pyproject_flask() {
    let env = new_env();
    cold_warm_serve(
        &env,
        "python-pyproject",
        "hello from python-pyproject fixture on port 5000",
        "Restoring the virtualenv from the cache",
    );
}

#[test]
fn python_django_collectstatic() {
    let env = new_env();
    let (log, json) = build_ok(&env, &fixture("python-django"), "django", &[]);
    assert!(log.contains("collectstatic --noinput"), "{log}");
    assert!(
        web_command(&json).contains("site_config.wsgi:application"),
        "{json}"
    );
    assert!(slug_app(&json).join("staticfiles/site.css").is_file());
    let body = serve_root(&env, &slug_of(&json));
    assert!(
        body.contains("hello from python-django fixture on port 5000; collectstatic: done"),
        "{body}"
    );

    // A broken static files setting fails the build with how to fix or skip it ...
    let app = copy_of(&env, "python-django");
    replace_in(
        &app.join("site_config/settings.py"),
        "STATIC_ROOT = BASE_DIR / \"staticfiles\"",
        "",
    );
    let msg = build_fails(&env, &app, "django", &[]);
    assert!(
        msg.contains("collectstatic") && msg.contains("DISABLE_COLLECTSTATIC=1"),
        "{msg}"
    );
    // ... and DISABLE_COLLECTSTATIC skips it.
    let (log, _) = build_ok(&env, &app, "django", &["-e", "DISABLE_COLLECTSTATIC=1"]);
    assert!(log.contains("Skipping collectstatic"), "{log}");
}

#[test]
fn python_version_the_stack_lacks() {
    let env = new_env();
    let app = copy_of(&env, "python");
    std::fs::write(app.join(".python-version"), "3.12\n").unwrap();
    let msg = build_fails(&env, &app, "pyversion", &[]);
    assert!(
        msg.contains("Python 3.12") && msg.contains(".python-version") && msg.contains("3.11"),
        "{msg}"
    );
    std::fs::remove_file(app.join(".python-version")).unwrap();
    std::fs::write(app.join("runtime.txt"), "python-3.13.1\n").unwrap();
    let msg = build_fails(&env, &app, "pyversion", &[]);
    assert!(
        msg.contains("3.13.1") && msg.contains("runtime.txt") && msg.contains("3.11"),
        "{msg}"
    );
    // The stack's own minor version is honoured.
    std::fs::write(app.join("runtime.txt"), "python-3.11\n").unwrap();
    let (log, _) = build_ok(&env, &app, "pyversion", &[]);
    assert!(log.contains("asked for in runtime.txt"), "{log}");
}

// ---- Node.js ---------------------------------------------------------------------------

/// A devDependency used by the build script must be gone from the slug.
fn assert_pruned(json: &Value) {
    let app = slug_app(json);
    assert!(
        !app.join("node_modules/is-number").exists(),
        "devDependencies not pruned"
    );
}

#[test]
fn nodejs_yarn1_express() {
    let env = new_env();
    let (json, warm) = cold_warm_serve(
        &env,
        "nodejs-yarn1",
        "hello from nodejs-yarn1 fixture on port 5000; node v18",
        "install skipped",
    );
    assert!(warm.contains("heroku-postbuild"), "{warm}");
    assert!(serve_root(&env, &slug_of(&json)).contains("built: yes"));
    assert_pruned(&json);

    let app = copy_of(&env, "nodejs-yarn1");
    replace_in(
        &app.join("package.json"),
        "\"express\": \"^4.19.2\"",
        "\"express\": \"^4.19.2\", \"is-odd\": \"^3.0.1\"",
    );
    let msg = build_fails(&env, &app, "nodejs-yarn1", &[]);
    assert!(msg.contains("yarn.lock is out of date"), "{msg}");
}

#[test]
fn nodejs_yarn_berry_express() {
    let env = new_env();
    let (json, _) = cold_warm_serve(
        &env,
        "nodejs-yarn-berry",
        "hello from nodejs-yarn-berry fixture on port 5000; node v18",
        "install skipped",
    );
    // Plug'n'Play: yarn itself runs the app, from the slug.
    assert_eq!(web_command(&json), "yarn start");
    assert!(slug_app(&json).join(".pnp.cjs").is_file());
    assert!(slug_app(&json).join(".heroku/yarn/bin/yarn").exists());

    let app = copy_of(&env, "nodejs-yarn-berry");
    replace_in(
        &app.join("package.json"),
        "\"express\": \"^4.19.2\"",
        "\"express\": \"^4.19.2\", \"is-odd\": \"^3.0.1\"",
    );
    let msg = build_fails(&env, &app, "nodejs-yarn-berry", &[]);
    assert!(msg.contains("yarn.lock is out of date"), "{msg}");
}

#[test]
fn nodejs_pnpm_express() {
    let env = new_env();
    let (json, _) = cold_warm_serve(
        &env,
        "nodejs-pnpm",
        "hello from nodejs-pnpm fixture on port 5000; node v18.20.4; built: yes",
        "install skipped",
    );
    assert!(!slug_app(&json).join("node_modules/is-number").exists());
    let pnpm_store = slug_app(&json).join("node_modules/.pnpm");
    assert!(
        !std::fs::read_dir(&pnpm_store)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("is-number")),
        "devDependencies not pruned"
    );

    let app = copy_of(&env, "nodejs-pnpm");
    replace_in(
        &app.join("package.json"),
        "\"express\": \"^4.19.2\"",
        "\"express\": \"^4.19.2\", \"is-odd\": \"^3.0.1\"",
    );
    let msg = build_fails(&env, &app, "nodejs-pnpm", &[]);
    assert!(msg.contains("pnpm-lock.yaml is out of date"), "{msg}");

    // A pnpm the registry does not have.
    replace_in(&app.join("package.json"), "pnpm@10.34.9", "pnpm@99.0.0");
    let msg = build_fails(&env, &app, "nodejs-pnpm", &[]);
    assert!(
        msg.contains("pnpm 99.0.0") && msg.contains("10.34.9"),
        "{msg}"
    );
}

#[test]
fn nodejs_engines_node_22() {
    let env = new_env();
    let (json, warm) = cold_warm_serve(
        &env,
        "nodejs-node22",
        "hello from nodejs-node22 fixture on port 5000; node v22.",
        "install skipped",
    );
    assert!(warm.contains("from the build cache"), "{warm}");
    assert!(slug_app(&json).join(".heroku/node/bin/node").is_file());
    assert_pruned(&json);

    let app = copy_of(&env, "nodejs-node22");
    replace_in(&app.join("package.json"), "\"22.x\"", "\"99.x\"");
    let msg = build_fails(&env, &app, "nodejs-node22", &[]);
    assert!(
        msg.contains("Node.js \"99.x\"") && msg.contains("22.") && msg.contains("18.20.4"),
        "{msg}"
    );
}

#[test]
fn nodejs_npm_lockfile_out_of_date() {
    let env = new_env();
    let app = copy_of(&env, "nodejs");
    replace_in(
        &app.join("package.json"),
        "\"express\": \"^4.19.2\"",
        "\"express\": \"^4.19.2\", \"is-odd\": \"^3.0.1\"",
    );
    let msg = build_fails(&env, &app, "npm-stale", &[]);
    assert!(
        msg.contains("package-lock.json is out of date") && msg.contains("npm install"),
        "{msg}"
    );
}

// ---- Go --------------------------------------------------------------------------------

#[test]
fn go_vendored_module_builds_offline() {
    let env = new_env();
    let (log, json) = build_ok(&env, &fixture("go-vendor"), "go-vendor", &[]);
    assert!(log.contains("-mod=vendor"), "{log}");
    assert_eq!(web_command(&json), "bin/vendored");
    let body = serve_root(&env, &slug_of(&json));
    assert!(
        body.contains("hello from go-vendor fixture on port 5000; uuid "),
        "{body}"
    );
    let (warm, _) = build_ok(&env, &fixture("go-vendor"), "go-vendor", &[]);
    assert!(warm.contains("built bin/vendored"), "{warm}");

    // Without vendor/, the module proxy is needed, and it cannot be reached from here.
    let app = copy_of(&env, "go-vendor");
    std::fs::remove_dir_all(app.join("vendor")).unwrap();
    let msg = build_fails(&env, &app, "go-vendor", &[]);
    assert!(
        msg.contains("go mod vendor") && msg.contains("cannot be reached"),
        "{msg}"
    );

    // A Go the stack cannot provide.
    let app = copy_of(&env, "go");
    replace_in(&app.join("go.mod"), "go 1.19", "go 1.22");
    let msg = build_fails(&env, &app, "go-new", &[]);
    assert!(msg.contains("Go 1.22") && msg.contains("1.19"), "{msg}");
    let app = copy_of(&env, "go");
    append(&app.join("go.mod"), "// +heroku goVersion go1.23\n");
    let msg = build_fails(&env, &app, "go-new", &[]);
    assert!(
        msg.contains("Go 1.23") && msg.contains("goVersion"),
        "{msg}"
    );
}

#[test]
fn go_godir_gopath_app() {
    let env = new_env();
    let (log, json) = build_ok(&env, &fixture("go-godir"), "go-godir", &[]);
    assert!(log.contains("GOPATH mode"), "{log}");
    assert_eq!(web_command(&json), "bin/legacyapp");
    let body = serve_root(&env, &slug_of(&json));
    assert!(
        body.contains("hello from go-godir fixture on port 5000"),
        "{body}"
    );
}

// ---- Static ----------------------------------------------------------------------------

#[test]
fn static_json_site() {
    let env = new_env();
    let (log, json) = build_ok(&env, &fixture("static-json"), "static-json", &[]);
    assert!(log.contains("https_only is ignored"), "{log}");
    let r = serve(
        &env,
        &slug_of(&json),
        &[
            "/",
            "/about",
            "/old",
            "/gone/page",
            "/app/some/deep/link",
            "/assets/style.css",
            "/missing",
            "/.env",
        ],
    );
    let [root, about, old, gone, route, asset, missing, dotfile] = &r[..] else {
        panic!("{r:?}")
    };
    assert!(root.contains("hello from static-json fixture"), "{root}");
    assert_eq!(header(root, "Server").unwrap_or(""), "nginx");
    assert_eq!(header(root, "X-Fixture"), Some("static-json"), "{root}");
    // clean_urls, and a header value kept literally (quotes, `;`, `}`, `$`).
    assert!(about.contains("about page (clean URL)"), "{about}");
    assert_eq!(
        header(about, "X-Quoted"),
        Some("a \"quoted\" value; with } and $host"),
        "{about}"
    );
    assert_eq!(
        (status(old), header(old, "Location")),
        (302, Some("/about")),
        "{old}"
    );
    assert_eq!(
        (status(gone), header(gone, "Location")),
        (301, Some("https://example.com/")),
        "{gone}"
    );
    assert!(route.contains("single-page app shell"), "{route}");
    assert_eq!(
        header(asset, "Cache-Control"),
        Some("public, max-age=31536000"),
        "{asset}"
    );
    assert_eq!(status(missing), 404);
    assert!(missing.contains("custom 404 page"), "{missing}");
    assert_eq!(status(dotfile), 404);
    assert!(!dotfile.contains("not-for-the-web"), "{dotfile}");
}

#[test]
fn hostile_static_json_is_refused() {
    let env = new_env();
    let app = env.dir.path().join("hostile");
    std::fs::create_dir_all(app.join("public")).unwrap();
    std::fs::write(app.join("public/index.html"), "hi\n").unwrap();
    std::os::unix::fs::symlink("/etc", app.join("etc-link")).unwrap();
    let cases = [
        (r#"{"root": "../../etc"}"#, "outside the app"),
        (r#"{"root": "etc-link"}"#, "outside the app"),
        (
            r#"{"routes": {"/x { return 200 pwned; } location /y": "index.html"}}"#,
            "not a path",
        ),
        (
            r#"{"headers": {"/": {"X-A": "v;\nadd_header X-Evil 1"}}}"#,
            "control character",
        ),
        (
            r#"{"redirects": {"/a": {"url": "/$host", "status": 301}}}"#,
            "redirect /a",
        ),
        (
            r#"{"routes": {"/**": "../../../etc/passwd"}}"#,
            "outside the document root",
        ),
    ];
    for (i, (spec, says)) in cases.iter().enumerate() {
        std::fs::write(app.join("static.json"), spec).unwrap();
        let msg = build_fails(&env, &app, &format!("hostile{i}"), &[]);
        assert!(
            msg.contains("static.json") && msg.contains(says),
            "{spec}: {msg}"
        );
    }
}

// ---- Languages without a built-in buildpack --------------------------------------------

#[test]
fn unsupported_languages_fail_clearly() {
    let env = new_env();
    for (file, lang) in [
        ("Gemfile", "Ruby"),
        ("pom.xml", "Java"),
        ("composer.json", "PHP"),
        ("Dockerfile", "Dockerfile"),
    ] {
        let app = env.dir.path().join(format!("app-{lang}"));
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join(file), "\n").unwrap();
        // Even with a Procfile, the app is not run as a Procfile app.
        std::fs::write(app.join("Procfile"), "web: ./start\n").unwrap();
        let msg = build_fails(&env, &app, "unsupported", &[]);
        assert!(
            msg.contains(file)
                && msg.contains(lang)
                && msg.contains("BUILDPACK_URL")
                && msg.contains(".buildpacks"),
            "{file}: {msg}"
        );
    }
}
