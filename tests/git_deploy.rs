//! Deploying with git (root): `git push` over HTTP to the daemon with the real git client, and
//! GitHub webhooks with bodies shaped as GitHub sends them, a local repository served on
//! loopback standing in for GitHub. Each test has its own world (data dir, bridges, ports).
mod platform_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use platform_support::running::Platform;
use platform_support::*;

/// `git` in `dir`, with the world's environment (the credential helper finds the token).
fn git(w: &World, dir: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        // The host's CA bundle setting would win over the test's http.sslCAInfo.
        .env_remove("GIT_SSL_CAINFO")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", w.dir.path());
    for (k, v) in w.env() {
        cmd.env(k, v);
    }
    // The CLI the credential helper names is the one under test.
    let path = format!(
        "{}:{}",
        Path::new(SLIPWAY).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = cmd.env("PATH", path).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn git_ok(w: &World, dir: &Path, args: &[&str]) -> String {
    let (ok, out) = git(w, dir, args);
    assert!(ok, "git {args:?} failed:\n{out}");
    out
}

/// A static site app: python's http.server serves `www/`; `index.html` says `text`.
fn write_site(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(
        dir.join("Procfile"),
        "web: cd www && exec python3 -m http.server --bind 0.0.0.0 \"$PORT\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("www/index.html"), format!("{text}\n")).unwrap();
}

fn commit_all(w: &World, dir: &Path, message: &str) -> String {
    git_ok(w, dir, &["add", "-A"]);
    git_ok(w, dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git_ok(w, dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// Creates `app` and a repository of a site saying `text`, committed, with the `slipway`
/// remote `git-remote` adds, which must be a `scheme` URL to the daemon: the repository and
/// its commit.
fn app_with_remote(w: &World, app: &str, text: &str, scheme: &str) -> (PathBuf, String) {
    w.ok(&["create", app]);
    let repo = w.dir.path().join(app);
    write_site(&repo, text);
    git_ok(w, &repo, &["init", "-q"]);
    let first = commit_all(w, &repo, text);
    let out = w
        .cmd()
        .current_dir(&repo)
        .args(["git-remote", "-a", app])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let url = git_ok(w, &repo, &["remote", "get-url", "slipway"]);
    assert_eq!(
        url.trim(),
        format!("{scheme}://127.0.0.1:{}/{app}.git", w.api_port)
    );
    (repo, first)
}

/// The commit `branch` of the app's remote points at (none when it has no such branch).
fn remote_head(w: &World, dir: &Path, branch: &str) -> Option<String> {
    let out = git_ok(
        w,
        dir,
        &["ls-remote", "slipway", &format!("refs/heads/{branch}")],
    );
    out.split_whitespace().next().map(String::from)
}

fn deployments(w: &World, app: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&w.ok(&["deployments", "-a", app, "--json"])).unwrap()
}

#[test]
fn a_push_deploys_and_a_failing_one_is_rejected_with_the_branch_unmoved() {
    let p = Platform::start_with("", &[]);
    let w = &p.world;
    // A pack far larger than a JSON request may be: 4 MB that do not compress.
    let repo = w.dir.path().join("site");
    std::fs::create_dir_all(repo.join("www")).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(repo.join("www/noise.bin"), &noise).unwrap();
    let (repo, first) = app_with_remote(w, "site", "one", "http");

    // A push deploys: the build's output reaches the pusher as it happens.
    let out = git_ok(w, &repo, &["push", "slipway", "main"]);
    assert!(
        out.contains("remote: -----> Procfile app detected"),
        "{out}"
    );
    assert!(out.contains("is live at http://site.localhost"), "{out}");
    p.answers_at("site", "/", "one");
    assert_eq!(
        remote_head(w, &repo, "main").as_deref(),
        Some(first.as_str())
    );
    let deps = deployments(w, "site");
    assert_eq!(deps[0]["source_version"], first.as_str());
    assert_eq!(deps[0]["source"], format!("git push main {}", &first[..7]));

    // A wrong token is refused before anything is stored.
    let bad = format!("http://slipway:wrong@127.0.0.1:{}/site.git", w.api_port);
    let (ok, out) = git(
        w,
        &repo,
        &["-c", "credential.helper=", "push", &bad, "main:stolen"],
    );
    assert!(!ok && out.contains("Authentication failed"), "{out}");
    assert_eq!(remote_head(w, &repo, "stolen"), None);

    // A push whose build fails is rejected: the branch keeps its commit, v1 keeps serving.
    std::fs::remove_file(repo.join("Procfile")).unwrap();
    std::fs::write(repo.join("Gemfile"), "source 'https://rubygems.org'\n").unwrap();
    commit_all(w, &repo, "broken");
    let (ok, out) = git(w, &repo, &["push", "slipway", "main"]);
    assert!(!ok, "{out}");
    assert!(out.contains("pre-receive hook declined"), "{out}");
    assert!(out.contains("build-error"), "{out}");
    assert!(
        out.contains("Push rejected: main keeps its commit"),
        "{out}"
    );
    assert_eq!(
        remote_head(w, &repo, "main").as_deref(),
        Some(first.as_str())
    );
    assert_eq!(p.get("site").unwrap().trim(), "one");

    // Another branch is kept without deploying.
    let before = deployments(w, "site").len();
    let out = git_ok(w, &repo, &["push", "slipway", "HEAD:feature"]);
    assert!(out.contains("feature: kept without deploying"), "{out}");
    assert_eq!(deployments(w, "site").len(), before);

    // A force push deploys the new history; pushing it again changes nothing.
    git_ok(w, &repo, &["reset", "-q", "--hard", &first]);
    write_site(&repo, "two");
    git_ok(w, &repo, &["commit", "-q", "-a", "--amend", "-m", "two"]);
    let second = git_ok(w, &repo, &["rev-parse", "HEAD"]).trim().to_string();
    let (ok, out) = git(w, &repo, &["push", "slipway", "main"]);
    assert!(!ok && out.contains("[rejected]"), "{out}");
    git_ok(w, &repo, &["push", "--force", "slipway", "main"]);
    p.answers_at("site", "/", "two");
    assert_eq!(
        remote_head(w, &repo, "main").as_deref(),
        Some(second.as_str())
    );
    let before = deployments(w, "site").len();
    let out = git_ok(w, &repo, &["push", "slipway", "main"]);
    assert!(out.contains("Everything up-to-date"), "{out}");
    assert_eq!(deployments(w, "site").len(), before);

    // With a deploy branch set, main no longer deploys and that branch does.
    w.ok(&["deploy-branch", "-a", "site", "production"]);
    let info = w.ok(&["info", "-a", "site"]);
    assert!(
        info.contains("Deploys on:   git push to production"),
        "{info}"
    );
    write_site(&repo, "three");
    commit_all(w, &repo, "three");
    let out = git_ok(w, &repo, &["push", "slipway", "main"]);
    assert!(out.contains("main: kept without deploying"), "{out}");
    assert_eq!(p.get("site").unwrap().trim(), "two");
    git_ok(w, &repo, &["push", "slipway", "main:production"]);
    p.answers_at("site", "/", "three");
    w.ok(&["deploy-branch", "-a", "site", "--reset"]);

    // Submodules are checked out before the build, from their own URL.
    let served = w.dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let lib = w.dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("lib.txt"), "from the submodule\n").unwrap();
    git_ok(w, &lib, &["init", "-q"]);
    commit_all(w, &lib, "lib");
    let bare = served.join("lib.git");
    git_ok(
        w,
        w.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            lib.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git_ok(w, &bare, &["update-server-info"]);
    let port = serve_dir(served);
    let lib_url = format!("http://127.0.0.1:{port}/lib.git");
    git_ok(w, &repo, &["submodule", "add", "-q", &lib_url, "www/lib"]);
    commit_all(w, &repo, "with a submodule");
    let out = git_ok(w, &repo, &["push", "slipway", "main"]);
    assert!(out.contains("Checked out 1 submodule"), "{out}");
    p.answers_at("site", "/lib/lib.txt", "from the submodule");

    // A link out of the source to the host's secrets stays a link: it is resolved inside
    // the container, never on the host, so the host's file is not served.
    std::os::unix::fs::symlink("/etc/shadow", repo.join("www/leak")).unwrap();
    commit_all(w, &repo, "a link out");
    git_ok(w, &repo, &["push", "slipway", "main"]);
    p.answers_at("site", "/lib/lib.txt", "from the submodule");
    let host_secret = std::fs::read_to_string("/etc/shadow").unwrap();
    let first_line = host_secret.lines().next().unwrap();
    match p.get_path("site", "/leak") {
        Ok(body) => assert!(
            !body.contains(first_line),
            "the host's /etc/shadow was served"
        ),
        Err(e) => assert!(!e.contains(first_line), "{e}"),
    }

    // A submodule URL that would run a program is refused, naming it; the site still serves.
    let served_before = remote_head(w, &repo, "main");
    git_ok(
        w,
        &repo,
        &[
            "config",
            "-f",
            ".gitmodules",
            "submodule.www/lib.url",
            "ext::sh -c touch% /tmp/slipway-pwned",
        ],
    );
    commit_all(w, &repo, "a hostile submodule URL");
    let (ok, out) = git(w, &repo, &["push", "slipway", "main"]);
    assert!(!ok && out.contains("is not allowed"), "{out}");
    assert!(!Path::new("/tmp/slipway-pwned").exists());
    assert_eq!(remote_head(w, &repo, "main"), served_before);
    assert_eq!(
        p.get_path("site", "/lib/lib.txt").unwrap().trim(),
        "from the submodule"
    );

    // Destroying the app removes its repository.
    w.ok(&["destroy", "site", "--confirm", "site"]);
    assert!(!w.data().join("git/site.git").exists());
}

/// A buildpack that builds static sites and writes the commit it built (SOURCE_VERSION) to
/// `www/version`: a tarball under `served`, by its URL path.
fn version_buildpack(w: &World, served: &Path) -> &'static str {
    let bp = w.dir.path().join("bp");
    std::fs::create_dir_all(bp.join("bin")).unwrap();
    for (name, text) in [
        ("detect", "#!/bin/sh\necho Versioned\n"),
        (
            "compile",
            "#!/bin/sh\nset -e\necho \"-----> Building $SOURCE_VERSION\"\nprintf '%s\\n' \"$SOURCE_VERSION\" > \"$1/www/version\"\n",
        ),
        ("release", "#!/bin/sh\necho '--- {}'\n"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let path = bp.join("bin").join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    tarball(&bp, ".", &served.join("bp.tgz"));
    "bp.tgz"
}

/// Makes (or updates) the bare copy of `repo` at `bare`, servable by git's dumb protocol.
fn publish(w: &World, repo: &Path, bare: &Path) {
    if !bare.exists() {
        git_ok(
            w,
            w.dir.path(),
            &["init", "-q", "--bare", bare.to_str().unwrap()],
        );
    }
    git_ok(
        w,
        repo,
        &["push", "-q", "--force", "--all", bare.to_str().unwrap()],
    );
    git_ok(w, bare, &["update-server-info"]);
}

/// POSTs a webhook delivery: (status, body).
fn deliver(
    w: &World,
    event: &str,
    delivery: &str,
    body: &str,
    signature: Option<&str>,
) -> (u16, String) {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("User-Agent", "GitHub-Hookshot/5a1e7b3"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
        ("X-GitHub-Hook-ID", "4242"),
    ];
    if let Some(s) = signature {
        headers.push(("X-Hub-Signature-256", s));
    }
    w.http_tcp("POST", "/hooks/github", &headers, body.as_bytes())
}

fn sign(secret: &str, body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A push event as GitHub sends it (the fields slipway reads, and a few it does not).
fn push_event(url: &str, git_ref: &str, before: &str, after: &str) -> String {
    serde_json::json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "compare": format!("{url}/compare/{}...{}", &before[..12], &after[..12]),
        "commits": [{"id": after, "message": "a change", "distinct": true}],
        "head_commit": {"id": after, "message": "a change"},
        "repository": {
            "id": 1296269,
            "name": "shop",
            "full_name": "acme/shop",
            "private": false,
            "html_url": url,
            "clone_url": format!("{url}.git"),
            "default_branch": "main"
        },
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "sender": {"login": "octocat", "id": 1}
    })
    .to_string()
}

#[test]
fn github_pushes_deploy_the_signed_commit_once_and_nothing_else() {
    let p = Platform::start_with("", &[]);
    let w = &p.world;
    let served = w.dir.path().join("github");
    std::fs::create_dir_all(served.join("acme")).unwrap();
    let bp = version_buildpack(w, &served);
    let port = serve_dir(served.clone());
    let github = format!("http://127.0.0.1:{port}");
    w.ok(&["create", "shop"]);
    w.ok(&[
        "env",
        "set",
        "-a",
        "shop",
        &format!("BUILDPACK_URL={github}/{bp}"),
    ]);
    let repo = w.dir.path().join("shop");
    write_site(&repo, "hello");
    git_ok(w, &repo, &["init", "-q"]);
    let first = commit_all(w, &repo, "first");
    publish(w, &repo, &served.join("acme/shop.git"));
    let secret = "a webhook secret of some length";
    let url = format!("{github}/acme/shop");
    let out = w.ok(&[
        "integrations",
        "link",
        "-a",
        "shop",
        "--repo",
        // As for a private repository: a token in the URL, which nothing shows again.
        &format!("{}.git", url.replace("http://", "http://bot:t0ken%21@")),
        "--branch",
        "main",
        "--secret",
        secret,
    ]);
    assert!(
        out.contains("/hooks/github") && !out.contains("t0ken"),
        "{out}"
    );
    assert!(w
        .ok(&["integrations", "-a", "shop"])
        .contains("pushes to main deploy"));
    let info = w.ok(&["info", "-a", "shop"]);
    assert!(
        info.contains(&format!("pushes to main of {url}.git")),
        "{info}"
    );
    let json = w.ok(&["info", "-a", "shop", "--json"]);
    assert!(!json.contains("t0ken") && !json.contains(secret), "{json}");

    // GitHub's ping when the webhook is made.
    let ping = serde_json::json!({
        "zen": "Keep it logically awesome.",
        "hook_id": 4242,
        "repository": {"full_name": "acme/shop", "html_url": url, "clone_url": format!("{url}.git")}
    })
    .to_string();
    let (status, body) = deliver(w, "ping", "p-1", &ping, Some(&sign(secret, &ping)));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pong"), "{body}");

    // Unsigned, wrongly signed, signed with another secret: 401, nothing deployed.
    let zero = "0".repeat(40);
    let push = push_event(&url, "refs/heads/main", &zero, &first);
    for signature in [
        None,
        Some("sha256=00".to_string()),
        Some(sign("another secret!!", &push)),
    ] {
        let (status, body) = deliver(w, "push", "d-bad", &push, signature.as_deref());
        assert_eq!(status, 401, "{body}");
    }
    // Another branch, a tag, a deleted branch: 200 with the reason, nothing deployed.
    for (r, after, why) in [
        (
            "refs/heads/feature",
            first.as_str(),
            "the linked branch is main",
        ),
        ("refs/tags/v1", first.as_str(), "tags deploy nothing"),
        ("refs/heads/main", zero.as_str(), "deleted"),
    ] {
        let body = push_event(&url, r, &first, after);
        let (status, answer) = deliver(
            w,
            "push",
            &format!("d-{r}"),
            &body,
            Some(&sign(secret, &body)),
        );
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains(why), "{r}: {answer}");
    }
    assert!(deployments(w, "shop").is_empty());

    // A signed push to main deploys exactly that commit, with SOURCE_VERSION set.
    let sig = sign(secret, &push);
    let (status, answer) = deliver(w, "push", "d-1", &push, Some(&sig));
    assert_eq!(status, 202, "{answer}");
    p.answers_at("shop", "/version", &first);
    // GitHub redelivers: the same delivery id deploys nothing more.
    let (status, answer) = deliver(w, "push", "d-1", &push, Some(&sig));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("taken before"), "{answer}");
    assert_eq!(deployments(w, "shop").len(), 1);

    // Somebody who captured that signed payload plays it again later, under a new delivery
    // id: the same bytes deploy nothing (no rollback by replay).
    let (status, answer) = deliver(w, "push", "d-replayed", &push, Some(&sig));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("this payload was taken before"), "{answer}");
    assert_eq!(deployments(w, "shop").len(), 1);

    // Two more commits land on main; the webhook of the first of them deploys that one,
    // not the branch's head.
    write_site(&repo, "second");
    let second = commit_all(w, &repo, "second");
    write_site(&repo, "third");
    let third = commit_all(w, &repo, "third");
    publish(w, &repo, &served.join("acme/shop.git"));
    let push = push_event(&url, "refs/heads/main", &first, &second);
    let (status, answer) = deliver(w, "push", "d-2", &push, Some(&sign(secret, &push)));
    assert_eq!(status, 202, "{answer}");
    p.answers_at("shop", "/version", &second);
    assert_eq!(p.get("shop").unwrap().trim(), "second");
    let log = w.ok(&[
        "deployments",
        "show",
        &deployments(w, "shop")[0]["id"].to_string(),
    ]);
    assert!(log.contains(&format!("-----> Building {second}")), "{log}");

    // By hand: the linked branch at its head.
    let out = w.ok(&["deploy", "-a", "shop", "--branch", "main"]);
    assert!(out.contains("is live"), "{out}");
    p.answers_at("shop", "/version", &third);

    // Unlinked: deliveries find no app.
    w.ok(&["integrations", "unlink", "-a", "shop"]);
    let push = push_event(&url, "refs/heads/main", &second, &third);
    let (status, _) = deliver(w, "push", "d-3", &push, Some(&sign(secret, &push)));
    assert_eq!(status, 404);
    assert_eq!(deployments(w, "shop").len(), 3);
}

#[test]
fn with_a_certificate_the_git_remote_is_https_and_a_push_deploys_through_it() {
    use rcgen::{CertificateParams, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let p = Platform::start_with(
        &format!(
            "api_tls_cert = {:?}\napi_tls_key = {:?}\n",
            cert_file.display().to_string(),
            key_file.display().to_string()
        ),
        &[],
    );
    let w = &p.world;
    let (repo, _) = app_with_remote(w, "secure", "over tls", "https");

    // A client that does not trust the certificate stops at the handshake.
    let (ok, out) = git(w, &repo, &["push", "slipway", "main"]);
    assert!(!ok && out.contains("certificate"), "{out}");
    let ca = format!("http.sslCAInfo={}", cert_file.display());
    let out = git_ok(w, &repo, &["-c", &ca, "push", "slipway", "main"]);
    assert!(out.contains("is live at"), "{out}");
    p.answers("secure", "over tls");
    // The CLI over the TCP API: with the CA trusted, and refused without.
    let api = format!("https://127.0.0.1:{}", w.api_port);
    let out = w
        .cmd()
        .args(["--api-url", &api, "apps"])
        .env("SLIPWAY_API_CA", &cert_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("secure"), "{out:?}");
    let out = w.cmd().args(["--api-url", &api, "apps"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("SLIPWAY_API_CA"),
        "{text}"
    );
    // Plain HTTP on the TLS port is no way around it.
    let plain = format!("http://127.0.0.1:{}/secure.git", w.api_port);
    let (ok, _) = git(w, &repo, &["ls-remote", &plain]);
    assert!(!ok);
}

/// The processes whose environment points at this world's data dir (git, hooks, builds),
/// but those that run the apps.
fn processes_of(w: &World) -> Vec<String> {
    let needle = format!("SLIPWAY_DATA_DIR={}", w.data().display());
    // What runs the apps stays: the daemon, the router, monitors and containers' inits.
    let daemon_like = |cmdline: &str| {
        [" daemon", " router", " monitor", "slipway-runtime"]
            .iter()
            .any(|p| cmdline.contains(p))
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let env = String::from_utf8_lossy(&env);
            if !env.split('\0').any(|v| v == needle) {
                return None;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (!daemon_like(&cmdline)).then_some(cmdline)
        })
        .collect()
}

#[test]
fn a_push_interrupted_mid_deployment_leaves_nothing_behind_and_the_next_one_works() {
    let p = Platform::start_with("", &[]);
    let w = &p.world;
    let (repo, _) = app_with_remote(w, "slow", "zero", "http");
    git_ok(w, &repo, &["push", "slipway", "main"]);
    p.answers("slow", "zero");
    for (round, signal) in [(1, libc::SIGINT), (2, libc::SIGKILL)] {
        write_site(&repo, &format!("round {round}"));
        // A web process that takes a while to listen: the rollout, and so the push, lasts.
        std::fs::write(
            repo.join("Procfile"),
            "web: sleep 3 && cd www && exec python3 -m http.server --bind 0.0.0.0 \"$PORT\"\n",
        )
        .unwrap();
        commit_all(w, &repo, &format!("round {round}"));
        let before = deployments(w, "slow").len();
        let mut cmd = Command::new("git");
        cmd.current_dir(&repo)
            .args(["push", "slipway", "main"])
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", w.dir.path())
            .envs(w.env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let path = format!(
            "{}:{}",
            Path::new(SLIPWAY).parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut push = cmd.env("PATH", path).spawn().unwrap();
        // Interrupted while the deployment runs, as Ctrl-C (the whole process group) or
        // SIGKILL would.
        w.eventually("the deployment to start", Duration::from_secs(30), || {
            deployments(w, "slow").len() > before
        });
        unsafe { libc::kill(-(push.id() as i32), signal) };
        let _ = push.wait();
        // The deployment goes on without its pusher; then nothing of the push is left.
        w.eventually("the deployment to end", Duration::from_secs(60), || {
            let status = deployments(w, "slow")[0]["status"].clone();
            !["queued", "building", "starting", "running-postdeploy"]
                .iter()
                .any(|s| status == *s)
        });
        p.answers("slow", &format!("round {round}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = processes_of(w);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running after the push's deployment ended: {left:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let checkouts = w.data().join("git/.checkouts");
        let left: Vec<_> = std::fs::read_dir(&checkouts)
            .into_iter()
            .flatten()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    // A later push works.
    write_site(&repo, "after");
    commit_all(w, &repo, "after");
    let out = git_ok(w, &repo, &["push", "slipway", "main"]);
    assert!(out.contains("is live"), "{out}");
    p.answers("slow", "after");
}
