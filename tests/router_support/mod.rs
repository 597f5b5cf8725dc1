//! Shared fixtures for the router's tests: small HTTP backends on loopback ports (each
//! answers with its own name and counts connections and requests), a `slipway router`
//! child process with its own run and data directories, and a bare HTTP/1.1 client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use slipway::api::routes::{AppRoutes, Backend, RouteTable};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::Role;

pub const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");

/// Everything the test backends answer with.
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A small HTTP/1.1 server on 127.0.0.1 that answers with its name.
///
/// Paths: `/` (the name), `/headers` (the request headers, one `name: value` a line),
/// `/upload` (reads the body, answers `NAME received N`), `/download?bytes=N` (N bytes,
/// streamed), `/slow?ms=N` (waits before the head), `/gate` (sends `first\n`, waits for
/// [`TestBackend::gate`], then `second\n`), `/drip?n=N&ms=M` (N lines `drop\n`, one every M
/// ms), `/ws` (WebSocket echo).
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    /// Requests answered (any path).
    pub requests: Arc<AtomicUsize>,
    pub gate: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let (a, r, g, n) = (
            accepted.clone(),
            requests.clone(),
            gate.clone(),
            name.to_string(),
        );
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) closes every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (r, g, n) = (r.clone(), g.clone(), n.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        r.fetch_add(1, Ordering::SeqCst);
                        answer(n.clone(), g.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TestBackend {
            name: name.to_string(),
            addr,
            accepted,
            requests,
            gate,
            task: Some(task),
        }
    }

    /// Stops listening and closes every connection: the port refuses from now on.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn text(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).boxed()
}

fn query_number(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn answer(
    name: String,
    gate: Arc<Notify>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let body = match req.uri().path() {
        "/headers" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            text(out)
        }
        "/upload" => {
            let mut total = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    total += data.map_or(0, |d| d.len() as u64);
                } else {
                    return Ok(Response::builder()
                        .status(500)
                        .body(text("body broke off"))
                        .unwrap());
                }
            }
            text(format!("{name} received {total}"))
        }
        "/download" => Zeros {
            left: query_number(&req, "bytes"),
        }
        .boxed(),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_number(&req, "ms"))).await;
            text(name.clone())
        }
        "/gate" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"first\n")).await;
                gate.notified().await;
                let _ = tx.send(Bytes::from_static(b"second\n")).await;
            });
            Channel { rx }.boxed()
        }
        "/drip" => {
            let (n, ms) = (query_number(&req, "n"), query_number(&req, "ms"));
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                for _ in 0..n {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if tx.send(Bytes::from_static(b"drop\n")).await.is_err() {
                        return;
                    }
                }
            });
            Channel { rx }.boxed()
        }
        "/ws" => return Ok(websocket_echo(&mut req)),
        _ => text(name.clone()),
    };
    Ok(Response::builder()
        .header("x-backend", &name)
        .body(body)
        .unwrap())
}

/// Accepts a WebSocket handshake and echoes every message.
fn websocket_echo(req: &mut Request<Incoming>) -> Response<TestBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if msg.is_text() || msg.is_binary() {
                let _ = ws.send(msg).await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(text(""))
        .unwrap()
}

/// `left` zero bytes in 64 KiB frames.
pub struct Zeros {
    pub left: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 65536] = [0; 65536];
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &CHUNK[..n as usize],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

struct Channel {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// A server that reads a request, writes `reply` (raw bytes) and closes the connection.
pub async fn start_raw_backend(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(reply).await;
            });
        }
    });
    (addr, task)
}

/// A server that closes every connection without answering.
pub async fn start_closing_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    start_raw_backend(b"").await
}

/// A server whose response head promises 1000 bytes, of which it sends 10 before closing.
pub async fn start_truncating_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    start_raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789").await
}

/// A loopback address where nothing listens (bound then released).
pub fn refusing_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A router's run and data directories, and its route table.
pub struct World {
    pub dir: tempfile::TempDir,
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
    generation: u64,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let data_dir = dir.path().join("data");
        World {
            dir,
            run_dir,
            data_dir,
            generation: 0,
        }
    }

    /// Writes a table with `apps`: name → containers `web-1`, `web-2`, … at `addrs`.
    pub fn write_routes(&mut self, apps: &[(&str, &[SocketAddr])]) {
        let mut table = RouteTable::new(0);
        for (name, addrs) in apps {
            table.apps.insert(
                name.to_string(),
                AppRoutes {
                    backends: addrs
                        .iter()
                        .enumerate()
                        .map(|(i, a)| Backend {
                            container: format!("web-{}", i + 1),
                            address: *a,
                        })
                        .collect(),
                    ..AppRoutes::default()
                },
            );
        }
        self.write_table(table);
    }

    /// Writes `table` with the next generation number.
    pub fn write_table(&mut self, mut table: RouteTable) {
        self.generation += 1;
        table.generation = self.generation;
        table.write_atomic(&self.run_dir).unwrap();
    }

    /// The lines of `app`'s router.log.
    pub fn router_log(&self, app: &str) -> Vec<String> {
        std::fs::read_to_string(self.data_dir.join("logs").join(app).join("router.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits (up to 10 s) until `app`'s router.log has `n` lines containing `needle`.
    pub async fn wait_for_log(&self, app: &str, needle: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self
                .router_log(app)
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One backend named `name`, routed as app `app`, behind a router started with `extra`.
pub async fn one_backend(name: &str, extra: &[&str]) -> (TestBackend, World, RouterProcess) {
    let backend = TestBackend::start(name).await;
    let mut world = World::new();
    world.write_routes(&[("app", &[backend.addr])]);
    let router = RouterProcess::start(&world, extra);
    (backend, world, router)
}

/// A `slipway router` child process.
pub struct RouterProcess {
    child: Child,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    stderr: PathBuf,
}

impl RouterProcess {
    /// Starts `slipway router` on 127.0.0.1 (a free port) with `world`'s directories and
    /// `extra` flags; returns once it listens.
    pub fn start(world: &World, extra: &[&str]) -> RouterProcess {
        let stderr = world.dir.path().join(format!(
            "router-{}.stderr",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(SLIPWAY)
            .arg("--data-dir")
            .arg(&world.data_dir)
            .args(["router", "--listen", "127.0.0.1:0", "--run-dir"])
            .arg(&world.run_dir)
            .args(extra)
            .env_remove("SLIPWAY_BASE_DOMAIN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start slipway router");
        let stdout = child.stdout.take().unwrap();
        let want_tls = extra.contains(&"--tls-listen");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        let mut tls_addr = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while addr.is_none() || (want_tls && tls_addr.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "router did not start: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            });
            if let Some(a) = line.strip_prefix("slipway router: listening on http://") {
                addr = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("slipway router: listening on https://") {
                tls_addr = Some(a.parse().unwrap());
            }
        }
        RouterProcess {
            child,
            addr: addr.unwrap(),
            tls_addr,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the router printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (up to 10 s) until stderr contains `needle`.
    pub async fn wait_for_stderr(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// A field of /proc/PID/status in KiB (e.g. `VmHWM`, `VmRSS`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    /// Waits (up to `limit`) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The backend's name (from `x-backend`), or "" for router answers.
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn error_code(&self) -> &str {
        self.headers
            .get("x-slipway-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Header lines echoed by `/headers`, as a map (last value wins).
    pub fn echoed_headers(&self) -> BTreeMap<String, String> {
        self.body
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// One HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Client { sender }
    }

    pub async fn send(&mut self, req: Request<TestBody>) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.send(request(host, path)).await.unwrap()
    }
}

/// `GET path` with `Host: host`.
pub fn request(host: &str, path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", host)
        .body(text(""))
        .unwrap()
}

/// Sends `req` on a new connection and returns the response with its body unread.
pub async fn send_streaming(addr: SocketAddr, req: Request<TestBody>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

/// Waits (up to 10 s) until `GET /` for `host` answers `body`.
pub async fn wait_for_body(addr: SocketAddr, host: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, host, "/").await.body != body {
        assert!(Instant::now() < deadline, "{host} never answered {body:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request on a new connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    Client::connect(addr).await.get(host, path).await
}
