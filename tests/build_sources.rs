//! Fetching buildpacks for real: git repositories made in temp dirs (served
//! through `file://`), tarballs served by a small HTTP server on 127.0.0.1,
//! and the failures a user should be able to act on.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use slipway::build::source::{BuildpackSource, SourceError};

fn sh(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=slipway-test",
            "-c",
            "user.email=test@slipway.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn write_exe(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A git repo holding a buildpack whose bin/compile says `version`.
fn buildpack_repo(dir: &Path) {
    sh(dir, &["init", "--quiet", "-b", "master"]);
    write_exe(&dir.join("bin/detect"), "#!/bin/sh\necho Test\n");
    write_exe(&dir.join("bin/compile"), "#!/bin/sh\necho v1\n");
    sh(dir, &["add", "."]);
    sh(dir, &["commit", "--quiet", "-m", "v1"]);
    sh(dir, &["tag", "v1"]);
    write_exe(&dir.join("bin/compile"), "#!/bin/sh\necho v2\n");
    sh(dir, &["commit", "--quiet", "-am", "v2"]);
}

fn compile_of(dir: &Path) -> String {
    fs::read_to_string(dir.join("bin/compile")).unwrap()
}

fn tmp_leftovers(cache: &Path) -> Vec<String> {
    fs::read_dir(cache)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn git_tag_branch_and_commit() {
    let repo = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    buildpack_repo(repo.path());
    let url = format!("file://{}", repo.path().display());

    // A tag gives the tagged content, although master moved on.
    let tagged = BuildpackSource::parse(&format!("{url}#v1"), Path::new("/")).unwrap();
    assert_eq!(
        tagged,
        BuildpackSource::Git {
            url: url.clone(),
            reference: Some("v1".into())
        }
    );
    let dir = tagged.fetch(cache.path()).unwrap();
    assert_eq!(dir, cache.path().join(tagged.cache_key()));
    assert_eq!(compile_of(&dir), "#!/bin/sh\necho v1\n");
    // Fetched once: a marker left in the checkout is still there next time.
    fs::write(dir.join("marker"), "").unwrap();
    assert_eq!(tagged.fetch(cache.path()).unwrap(), dir);
    assert!(dir.join("marker").exists(), "a tag is not fetched again");

    // No ref: the default branch, fetched again each time since it moves.
    let head = BuildpackSource::parse(&url, Path::new("/")).unwrap();
    let head_dir = head.fetch(cache.path()).unwrap();
    assert_eq!(compile_of(&head_dir), "#!/bin/sh\necho v2\n");
    write_exe(&repo.path().join("bin/compile"), "#!/bin/sh\necho v3\n");
    sh(repo.path(), &["commit", "--quiet", "-am", "v3"]);
    assert_eq!(
        compile_of(&head.fetch(cache.path()).unwrap()),
        "#!/bin/sh\necho v3\n"
    );

    // A named branch behaves the same.
    let branch = BuildpackSource::parse(&format!("{url}#master"), Path::new("/")).unwrap();
    assert_eq!(
        compile_of(&branch.fetch(cache.path()).unwrap()),
        "#!/bin/sh\necho v3\n"
    );

    // A commit sha (not a branch or tag name) still works.
    let v1_sha = sh(repo.path(), &["rev-list", "-n", "1", "v1"]);
    let commit = BuildpackSource::parse(&format!("{url}#{v1_sha}"), Path::new("/")).unwrap();
    assert_eq!(
        compile_of(&commit.fetch(cache.path()).unwrap()),
        "#!/bin/sh\necho v1\n"
    );
    let short =
        BuildpackSource::parse(&format!("{url}#{}", &v1_sha[..10]), Path::new("/")).unwrap();
    assert_eq!(
        compile_of(&short.fetch(cache.path()).unwrap()),
        "#!/bin/sh\necho v1\n"
    );

    // A local path to the repo with #ref is the same as file://.
    let local = BuildpackSource::parse("repo#v1", repo.path().parent().unwrap());
    assert!(local.is_err(), "the temp dir is not called repo");
    let name = repo
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let local =
        BuildpackSource::parse(&format!("{name}#v1"), repo.path().parent().unwrap()).unwrap();
    assert_eq!(local, tagged);
    assert!(tmp_leftovers(cache.path()).is_empty());
}

#[test]
fn git_unknown_ref_fails_clearly() {
    let repo = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    buildpack_repo(repo.path());
    let spec = format!("file://{}#no-such-tag", repo.path().display());
    let err = BuildpackSource::parse(&spec, Path::new("/"))
        .unwrap()
        .fetch(cache.path())
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, SourceError::FetchFailed { tool: "git", .. }),
        "{err:?}"
    );
    assert!(message.contains(&spec), "{message}");
    assert!(message.contains("no-such-tag"), "{message}");
    assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn git_repo_without_compile_is_not_a_buildpack() {
    let repo = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    sh(repo.path(), &["init", "--quiet", "-b", "master"]);
    write_exe(&repo.path().join("bin/detect"), "#!/bin/sh\n");
    fs::write(repo.path().join("README"), "not a buildpack yet\n").unwrap();
    sh(repo.path(), &["add", "."]);
    sh(repo.path(), &["commit", "--quiet", "-m", "half"]);
    let source =
        BuildpackSource::parse(&format!("file://{}", repo.path().display()), Path::new("/"))
            .unwrap();
    let err = source.fetch(cache.path()).unwrap_err();
    assert!(matches!(err, SourceError::NotABuildpack { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("it has no bin/compile"), "{message}");
    assert!(!message.contains("no bin/detect"), "{message}");
    assert_eq!(
        fs::read_dir(cache.path()).unwrap().count(),
        0,
        "nothing cached"
    );
}

#[test]
fn git_unreachable_repo_fails_with_gits_reason() {
    let cache = tempfile::tempdir().unwrap();
    let source = BuildpackSource::Git {
        url: "http://127.0.0.1:1/bp.git".into(),
        reference: None,
    };
    let err = source.fetch(cache.path()).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, SourceError::FetchFailed { tool: "git", .. }),
        "{err:?}"
    );
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(message.contains("fatal"), "git's own words: {message}");
}

/// A tiny HTTP/1.0 server on 127.0.0.1 serving fixed bodies, stopped on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(routes: HashMap<String, Vec<u8>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: a test makes a handful of requests.
            for stream in listener.incoming().take(100) {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => {}
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let _ = match routes.get(path) {
                    Some(body) => stream
                        .write_all(
                            format!(
                                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|_| stream.write_all(body)),
                    None => stream.write_all(
                        b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A gzipped tar of a buildpack, under `prefix` (e.g. "bp-1.0/") or at the top.
fn buildpack_tgz(prefix: &str, with_pax_global_header: bool) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    if with_pax_global_header {
        // What `git archive` (and so GitHub's tarballs) starts with.
        let body = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
        let mut header = tar::Header::new_ustar();
        header.set_path("pax_global_header").unwrap();
        header.set_entry_type(tar::EntryType::XGlobalHeader);
        header.set_size(body.len() as u64);
        header.set_mode(0o666);
        header.set_cksum();
        builder.append(&header, &body[..]).unwrap();
    }
    for (name, content, mode) in [
        ("bin/detect", "#!/bin/sh\necho Tarball\n", 0o755),
        ("bin/compile", "#!/bin/sh\necho from tarball\n", 0o755),
        ("README.md", "a buildpack\n", 0o644),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{prefix}{name}"), content.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn check_tarball_buildpack(dir: &Path) {
    assert_eq!(compile_of(dir), "#!/bin/sh\necho from tarball\n");
    let mode = fs::metadata(dir.join("bin/compile"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(dir.join("README.md").is_file());
    assert!(!dir.join("pax_global_header").exists());
}

#[test]
fn tarballs_over_http_with_and_without_a_top_level_folder() {
    let cache = tempfile::tempdir().unwrap();
    let mut routes = HashMap::new();
    routes.insert("/flat.tgz".to_string(), buildpack_tgz("", false));
    routes.insert(
        "/wrapped.tar.gz".to_string(),
        buildpack_tgz("heroku-buildpack-test-1.2/", true),
    );
    let hostile = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        let name = b"../escaped";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        builder.into_inner().unwrap()
    };
    routes.insert("/hostile.tar".to_string(), hostile);
    let server = Server::start(routes);

    let flat = BuildpackSource::parse(&server.url("/flat.tgz"), Path::new("/")).unwrap();
    assert!(matches!(flat, BuildpackSource::Tarball { .. }));
    let dir = flat.fetch(cache.path()).unwrap();
    assert_eq!(dir, cache.path().join(flat.cache_key()));
    check_tarball_buildpack(&dir);

    let wrapped = BuildpackSource::parse(&server.url("/wrapped.tar.gz"), Path::new("/")).unwrap();
    let dir = wrapped.fetch(cache.path()).unwrap();
    check_tarball_buildpack(&dir);
    assert!(!dir.join("heroku-buildpack-test-1.2").exists());

    let hostile = BuildpackSource::parse(&server.url("/hostile.tar"), Path::new("/")).unwrap();
    let err = hostile.fetch(cache.path()).unwrap_err();
    assert!(matches!(err, SourceError::Archive { .. }), "{err:?}");
    assert!(err.to_string().contains("../escaped"), "{err}");
    assert!(!cache.path().join("escaped").exists());

    let missing = BuildpackSource::parse(&server.url("/missing.tgz"), Path::new("/")).unwrap();
    let err = missing.fetch(cache.path()).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, SourceError::FetchFailed { tool: "curl", .. }),
        "{err:?}"
    );
    assert!(message.contains("404"), "{message}");

    // Once fetched, a tarball is reused without asking the server again.
    drop(server);
    check_tarball_buildpack(&flat.fetch(cache.path()).unwrap());
    assert!(tmp_leftovers(cache.path()).is_empty());
    let entries: Vec<PathBuf> = fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

#[test]
fn local_tarball_file_is_fetched_through_file_url() {
    let base = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    fs::write(base.path().join("bp.tgz"), buildpack_tgz("bp/", false)).unwrap();
    let source = BuildpackSource::parse("bp.tgz", base.path()).unwrap();
    assert_eq!(
        source,
        BuildpackSource::Tarball {
            url: format!("file://{}/bp.tgz", base.path().display())
        }
    );
    check_tarball_buildpack(&source.fetch(cache.path()).unwrap());
}

#[test]
fn unreachable_tarball_url_fails_clearly() {
    let cache = tempfile::tempdir().unwrap();
    let source = BuildpackSource::parse("http://127.0.0.1:1/x.tgz", Path::new("/")).unwrap();
    let err = source.fetch(cache.path()).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, SourceError::FetchFailed { tool: "curl", .. }),
        "{err:?}"
    );
    assert!(message.contains("http://127.0.0.1:1/x.tgz"), "{message}");
    assert!(
        message.contains("curl: (7)"),
        "curl's own reason: {message}"
    );
    assert_eq!(
        fs::read_dir(cache.path()).unwrap().count(),
        0,
        "nothing left"
    );
}
