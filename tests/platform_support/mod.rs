//! Shared by the platform tests: a world per test (data dir, run dir, socket, bridge, subnet,
//! ports), the `slipway` CLI pointed at it, raw HTTP requests to the API, and app sources.
#![allow(dead_code)]

pub mod running;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");
pub const RUNTIME: &str = env!("CARGO_BIN_EXE_slipway-runtime");
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A test's own slipway world: nothing in it is shared with other tests but the stacks.
pub struct World {
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub subnet: String,
    pub app_bridge: String,
    pub app_subnet: String,
    pub router_port: u16,
    pub api_port: u16,
    /// The slipway binary the world's commands (the daemon among them) run.
    pub slipway: PathBuf,
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl World {
    pub fn new() -> World {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix("slipway-platform-test")
            .tempdir()
            .unwrap();
        World {
            dir,
            bridge: format!("slwp{:x}{n}", pid % 0xffff),
            subnet: format!("10.{}.{}.0/24", 100 + (pid % 40), 2 * n),
            app_bridge: format!("slwq{:x}{n}", pid % 0xffff),
            app_subnet: format!("10.{}.{}.0/24", 100 + (pid % 40), 2 * n + 1),
            router_port: free_port(),
            api_port: free_port(),
            slipway: SLIPWAY.into(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("api.sock")
    }

    pub fn stacks_dir() -> String {
        std::env::var("SLIPWAY_TEST_STACKS_DIR").unwrap_or("/var/lib/slipway".into())
    }

    /// The environment that points a slipway (daemon, build, CLI) at this world.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "SLIPWAY_CONFIG",
                self.dir.path().join("config.toml").display().to_string(),
            ),
            ("SLIPWAY_DATA_DIR", self.data().display().to_string()),
            ("SLIPWAY_RUN_DIR", self.run_dir().display().to_string()),
            ("SLIPWAY_STACKS_DIR", Self::stacks_dir()),
            ("SLIPWAY_RUNTIME", RUNTIME.into()),
            (
                "SLIPWAY_BUILDPACKS_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/buildpacks").into(),
            ),
            ("SLIPWAY_SOCKET", self.socket().display().to_string()),
            ("SLIPWAY_BUILD_BRIDGE", self.bridge.clone()),
            ("SLIPWAY_BUILD_SUBNET", self.subnet.clone()),
            ("SLIPWAY_APP_BRIDGE", self.app_bridge.clone()),
            ("SLIPWAY_APP_SUBNET", self.app_subnet.clone()),
            (
                "SLIPWAY_ROUTER_LISTEN",
                format!("127.0.0.1:{}", self.router_port),
            ),
            ("SLIPWAY_BASE_DOMAIN", "localhost".into()),
            ("NO_COLOR", "1".into()),
        ]
    }

    /// The Config a daemon of this world resolves (as the library sees it).
    pub fn config(&self) -> slipway::config::Config {
        let mut c = slipway::config::Config::in_data_dir(&self.data());
        c.run_dir = self.run_dir();
        c.socket = self.socket();
        c.git_socket = self.run_dir().join("git.sock");
        c.git_authorized_keys = self.data().join("git-home/.ssh/authorized_keys");
        c.token_file = self.data().join("api-token");
        c.stacks_dir = Self::stacks_dir().into();
        c.buildpacks_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("buildpacks");
        c.runtime = RUNTIME.into();
        c.build_network.bridge = self.bridge.clone();
        c.build_network.subnet = self.subnet.clone();
        c.app_network.bridge = self.app_bridge.clone();
        c.app_network.subnet = self.app_subnet.clone();
        c.router_listen = format!("127.0.0.1:{}", self.router_port);
        c
    }

    /// An empty config file (the host's /etc/slipway stays out of the test).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.dir.path().join("config.toml"), text).unwrap();
    }

    /// The slipway CLI against this world.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.slipway);
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c.env_remove("SLIPWAY_API_URL");
        c.env_remove("SLIPWAY_API_TOKEN");
        c.env_remove("SLIPWAY_API_LISTEN");
        c.stdin(Stdio::null());
        c
    }

    /// Runs the CLI: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out: Output = self.cmd().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the CLI and insists it succeeds: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args);
        assert_eq!(code, 0, "slipway {args:?} failed ({code}):\n{out}\n{err}");
        out
    }

    /// Runs the CLI and insists it fails: stdout and stderr together.
    pub fn fails(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args);
        assert_ne!(code, 0, "slipway {args:?} succeeded:\n{out}\n{err}");
        format!("{out}{err}")
    }

    /// Waits until the daemon answers on its socket.
    pub fn wait_for_socket(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(Instant::now() < deadline, "the daemon never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A raw HTTP/1.1 request on the unix socket: (status, body).
    pub fn http_unix(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let s = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        http(s, method, path, &[], body)
    }

    /// A raw HTTP/1.1 request on the TCP API: (status, body).
    pub fn http_tcp(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let s = std::net::TcpStream::connect(("127.0.0.1", self.api_port)).unwrap();
        http(s, method, path, headers, body)
    }

    /// Waits (bounded) until `check` holds.
    pub fn eventually(&self, what: &str, within: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !check() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every file and directory under the data dir whose path mentions `needle`.
    pub fn files_mentioning(&self, needle: &str) -> Vec<String> {
        walkdir::WalkDir::new(self.data())
            .into_iter()
            .flatten()
            .map(|e| e.path().display().to_string())
            .filter(|p| p.contains(needle))
            .collect()
    }

    /// GET http://HOST/ through the router (or any local port): (status, body).
    pub fn get(&self, port: u16, host: &str) -> Option<(u16, String)> {
        self.get_path(port, host, "/")
    }

    /// GET http://HOST/PATH through the router (or any local port): (status, body).
    pub fn get_path(&self, port: u16, host: &str, path: &str) -> Option<(u16, String)> {
        get_path_at(port, host, path)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        use slipway::network::bridge::{Network, NetworkConfig};
        for (bridge, subnet) in [
            (&self.bridge, &self.subnet),
            (&self.app_bridge, &self.app_subnet),
        ] {
            if let Ok(n) = Network::new(NetworkConfig::new(
                bridge,
                subnet.parse().unwrap(),
                self.data().join("network"),
            )) {
                let _ = n.teardown_network();
            }
        }
    }
}

/// GET http://HOST/ on a local port: (status, body), or None without a connection.
pub fn get_at(port: u16, host: &str) -> Option<(u16, String)> {
    get_path_at(port, host, "/")
}

/// GET http://HOST/PATH on a local port: (status, body).
pub fn get_path_at(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(http(s, "GET", path, &[("Host", host)], b""))
}

/// One request on `s` with `Connection: close`: (status, body).
pub fn http<S: Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, dechunk(&body))
}

/// The body of a chunked response (or the text as it is).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return if out.is_empty() {
                body.to_string()
            } else {
                out
            };
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || after.len() < n {
            return out;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// An app whose web process answers `VERSION GREETING` (GREETING from its config vars) and
/// prints a line per request: built by the Procfile buildpack alone, in seconds.
pub fn write_app(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Procfile"), "web: exec python3 -u server.py\n").unwrap();
    std::fs::write(
        dir.join("server.py"),
        format!(
            r#"import http.server, os, sys
VERSION = "{version}"
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s %s\n" % (VERSION, os.environ.get("GREETING", "hello"))).encode()
        print("served %s %s" % (self.path, VERSION), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("listening on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#
        ),
    )
    .unwrap();
}

/// An app whose web process answers with its container's name (`web-2`) and logs nothing
/// per request, and whose `clock` process logs `tick N` (N = 0, 1, 2, …) every 50 ms.
pub fn write_named_app(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("Procfile"),
        "web: exec python3 -u server.py\nclock: exec python3 -u clock.py\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("server.py"),
        r#"import http.server, os
NAME = os.environ["CONTAINER"].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(NAME)))
        self.end_headers()
        self.wfile.write(NAME)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("clock.py"),
        "import itertools, time\nfor n in itertools.count():\n    print('tick', n, flush=True)\n    time.sleep(0.05)\n",
    )
    .unwrap();
}

/// A tar.gz of `dir` under a top-level folder `prefix/`.
pub fn tarball(dir: &Path, prefix: &str, out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    t.append_dir_all(prefix, dir).unwrap();
    t.into_inner().unwrap().finish().unwrap();
}

/// A tar.gz with raw entry names (as attackers write them): (name, kind, data, link).
pub fn hostile_tarball(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)], out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// Deploys each kind of hostile archive to `app` (a path that climbs out, an absolute path, a
/// link out, a file through a link, a device node): each is refused naming its entry, as a
/// build error; `after_each` checks what still serves; nothing lands outside. The number of
/// deployments made.
pub fn refuse_hostile_archives(w: &World, app: &str, after_each: impl Fn()) -> usize {
    use tar::EntryType::{Char, Regular as F, Symlink as L};
    let canary = w.dir.path().join("canary");
    let escape = format!("../../../../../../../..{}", canary.display());
    let abs = format!("/tmp/slipway-abs-canary-{}", std::process::id());
    let through = format!("l/tmp/slipway-link-canary-{}", std::process::id());
    type Entry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![(escape.as_str(), F, b"pwned", None)], escape.as_str()),
        (vec![(abs.as_str(), F, b"pwned", None)], abs.as_str()),
        (vec![("up", L, b"", Some("../../../.."))], "up"),
        (
            vec![("l", L, b"", Some("/")), (through.as_str(), F, b"x", None)],
            through.as_str(),
        ),
        (vec![("null", Char, b"", None)], "null"),
    ];
    for (i, (entries, named)) in cases.iter().enumerate() {
        let tgz = w.dir.path().join(format!("hostile-{i}.tgz"));
        hostile_tarball(entries, &tgz);
        let out = w.fails(&["deploy", "-a", app, tgz.to_str().unwrap()]);
        assert!(out.contains(&format!("{named:?}")), "{named}: {out}");
        assert!(
            out.contains("build-error") && out.contains("refused"),
            "{out}"
        );
        after_each();
    }
    assert!(!canary.exists());
    assert!(!Path::new(&abs).exists());
    assert!(!Path::new(&through[1..]).exists());
    cases.len()
}

/// A static HTTP server on loopback for the files under `root` (git's dumb protocol is
/// enough to clone a bare repository kept there with `git update-server-info`); its port.
pub fn serve_dir(root: PathBuf) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let Some(path) = request_path(&mut conn) else {
                    return;
                };
                let path = path.split('?').next().unwrap_or("").trim_start_matches('/');
                let file = (!path.split('/').any(|p| p == ".."))
                    .then(|| std::fs::read(root.join(path)).ok())
                    .flatten();
                let _ = match file {
                    Some(body) => write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .and_then(|()| conn.write_all(&body)),
                    None => write!(
                        conn,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                };
            });
        }
    });
    port
}

/// Reads a request's head: the path it asks for.
fn request_path(conn: &mut std::net::TcpStream) -> Option<String> {
    let mut buf = [0u8; 4096];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace().nth(1).map(String::from)
}

/// A one-shot HTTP server on loopback that serves `body` to every GET; its port.
pub fn serve_file(body: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                if request_path(&mut conn).is_none() {
                    return;
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/gzip\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
            });
        }
    });
    port
}
