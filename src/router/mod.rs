//! The router: slipway's data plane, a reverse proxy in its own process (`slipway router`)
//! that keeps serving the last routes it was given while the daemon is away.
//!
//! * The `Host` header (or the HTTP/2 `:authority`) picks the app: `NAME.<base domain>`
//!   (port ignored, case-insensitive) or one of the app's custom domains.
//! * Each request, and each new upgraded connection (WebSocket, …), goes to one of the app's
//!   backends picked at random. A backend that refuses the connection (or cannot be reached
//!   within the connect timeout) is quarantined for a short while (2 s by default) and the
//!   request is tried on another one; nothing has been sent anywhere at that point, so this
//!   is safe for every request. A request on a reused upstream connection that the backend
//!   had just closed is sent again on a fresh connection when it had not been written yet,
//!   or when it has no body and an idempotent method (see `upstream` for the exact rules).
//! * HTTP/1.1 with keep-alive on both sides (upstream connections are pooled per backend),
//!   HTTP/2 from clients on the TLS listener (ALPN), bodies streamed both ways and never held
//!   whole, `Upgrade` connections joined byte for byte after the backend's `101`.
//! * Requests carry `X-Forwarded-For` (the client's address appended), `X-Forwarded-Proto`,
//!   `X-Forwarded-Port`, `X-Request-Id` (the client's when it has 20 to 200 characters of
//!   `[A-Za-z0-9+/=._-]`, a new UUID v4 otherwise) and `Via: 1.1 slipway`; hop-by-hop headers
//!   (RFC 9110 §7.6.1: `Connection` and the headers it names, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`, `Trailer`,
//!   `Proxy-Authorization`) are removed in both directions, except what an upgrade needs.
//! * HTTPS on `--tls-listen`: the certificate is chosen by SNI among the files the route
//!   table names per domain (reloaded with the table).
//! * One line per request in the app's `router.log` (see [`crate::applog`]):
//!   `slipway[router]: at=info method=GET path="/x" host=app.localhost request_id=…
//!   fwd="1.2.3.4" container=web-1 connect=1ms service=3ms status=200 bytes=123 protocol=http`.
//!   `connect` is the time to open the upstream connection (0 when one was reused),
//!   `service` the rest of the exchange until the last byte of the response.
//!
//! # Error codes
//!
//! Instead of a hung or reset connection, the client gets a short page with the code, the
//! same code in the `X-Slipway-Error` response header, and a log line
//! `at=error code=R1x desc="…"` in the app's `router.log` (when an app was found):
//!
//! | code | status | meaning |
//! |------|--------|---------|
//! | R10 | 404 | No app answers to this host name (the page names the host). |
//! | R11 | 503 | The app has no web container running (none in the route table). |
//! | R12 | 503 | Every web container of the app refused the connection or was unreachable. |
//! | R13 | 504 | The backend sent no response head within the backend timeout (30 s) after the request body (no request-body progress for that long also counts). |
//! | R14 | 502 | The backend closed or reset the connection before a complete response head. |
//! | R15 | 400 | The request has no usable `Host` (missing or malformed). |
//! | R16 | 499 (log only) | The client closed the connection before the response was complete. |
//! | R17 | (log only) | The backend closed the connection in the middle of the response body; the client's response is cut short. |
//! | R18 | (log only, `at=warning`) | One web container refused the connection; it is quarantined and the request went to another. |
//! | R19 | (log only) | The backend sent nothing for the body idle timeout (55 s) in the middle of the response body; the client's response is cut short. |
//!
//! # Robustness
//!
//! Request heads must arrive within the header timeout (20 s), which also closes client
//! connections left idle between requests; heads are bounded in size; connections beyond the
//! connection cap wait in the listen backlog; idle keep-alive connections beyond their own cap
//! are closed when they go idle. On SIGTERM (or SIGINT) the router stops accepting, lets
//! requests in flight finish (up to the drain timeout), writes out its logs and exits 0.
//!
//! # Threads
//!
//! One worker thread per CPU (`workers`), each with a single-threaded tokio runtime. The
//! calling thread accepts connections and hands each to the worker with the fewest open
//! connections (it also watches the routes file and waits for the shutdown signal). A
//! client connection, the upstream connections it uses (pooled per worker) and their tasks
//! all stay on one worker, as in nginx's worker processes: no work stealing and no wake-ups
//! across threads on the request path. One more thread writes the request logs.
//!
//! # Invariants
//!
//! * The route table is swapped whole; a request keeps the table and the backend it started
//!   with. A missing or malformed routes file keeps the last good table.
//! * Nothing on the request path touches the disk: each worker formats its log lines into
//!   its own bounded buffer, which the log thread writes out every 50 ms; when a buffer is
//!   full (the disk is slower than the traffic), lines are dropped and counted, never waited
//!   for.
//! * Errors of requests that name no app (R10, and R15 without a known host) belong to no
//!   app's log: they are counted per code and reported on stderr at most every 10 s (see
//!   `reqlog`); a `CONNECT` to an app's host name is in that app's log.

mod proxy;
mod reqlog;
mod server;
mod table;
mod tls;
mod upstream;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use server::Router;

/// Default address of the HTTP listener.
pub const DEFAULT_LISTEN: &str = crate::config::DEFAULT_ROUTER_LISTEN;

/// Everything the router needs, resolved by the caller (flags and environment are the CLI's).
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// HTTP listener.
    pub listen: SocketAddr,
    /// Worker threads, each serving its own share of the connections.
    pub workers: usize,
    /// HTTPS listener (HTTP/1.1 and HTTP/2), when set.
    pub tls_listen: Option<SocketAddr>,
    /// Where `routes.json` is read from.
    pub run_dir: PathBuf,
    /// Data directory: request logs go to `DATA_DIR/logs/APP/router.log`.
    pub data_dir: PathBuf,
    /// Apps answer at `NAME.<base_domain>`; `None` takes the route table's, else `localhost`.
    pub base_domain: Option<String>,
    /// Longest wait for a response head after the request (or for request-body progress).
    pub backend_timeout: Duration,
    /// Longest wait for an upstream TCP connection.
    pub connect_timeout: Duration,
    /// Longest silence of a backend in the middle of a response body (a rolling window,
    /// Heroku's 55 s): past it the response is cut short (R19).
    pub body_idle_timeout: Duration,
    /// How long a backend that refused a connection gets no new requests.
    pub quarantine: Duration,
    /// Time a client has to send each request head (also the idle keep-alive limit).
    pub header_timeout: Duration,
    /// Longest wait for requests in flight at shutdown.
    pub drain_timeout: Duration,
    /// Most client connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Most client connections kept idle between requests (each worker keeps its share).
    pub max_idle_connections: usize,
    /// Largest request head (HTTP/1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Most idle pooled connections per backend.
    pub max_idle_per_backend: usize,
    /// Idle pooled upstream connections are closed after this long.
    pub upstream_idle_timeout: Duration,
    /// Size past which `router.log` is rotated.
    pub log_max_bytes: u64,
    /// How often the routes file is checked when no file event arrives.
    pub poll_interval: Duration,
}

impl RouterConfig {
    /// The defaults, listening on [`DEFAULT_LISTEN`].
    pub fn new(run_dir: PathBuf, data_dir: PathBuf) -> RouterConfig {
        RouterConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tls_listen: None,
            run_dir,
            data_dir,
            base_domain: None,
            backend_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            body_idle_timeout: Duration::from_secs(55),
            quarantine: Duration::from_secs(2),
            header_timeout: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(20),
            max_connections: 10_000,
            max_idle_connections: 2_000,
            max_header_bytes: 64 * 1024,
            max_idle_per_backend: 64,
            upstream_idle_timeout: Duration::from_secs(60),
            log_max_bytes: crate::applog::DEFAULT_MAX_BYTES,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What can stop the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen / --tls-listen (ports below 1024 need root or CAP_NET_BIND_SERVICE)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare run directory {path}: {source}; create it or pass --run-dir")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the router's {what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("base domain {0:?} is not a lower-case host name such as apps.example.com")]
    BadBaseDomain(String),
}

/// Runs the router until SIGTERM or SIGINT, then drains and returns.
///
/// Prints `slipway router: listening on http://ADDR` (and `https://ADDR`) on stdout once
/// the listeners are bound, which is how callers learn ports chosen by the system.
pub fn run(config: RouterConfig) -> Result<(), RouterError> {
    raise_fd_limit();
    let router = Router::bind(config)?;
    println!(
        "slipway router: listening on http://{}",
        router.local_addr()
    );
    if let Some(addr) = router.tls_addr() {
        println!("slipway router: listening on https://{addr}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    router.serve(shutdown_signal)
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, RouterError> {
    use tokio::signal::unix::{signal, SignalKind};
    let start = |source| RouterError::Start {
        what: "signal handler",
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(start)?;
    let mut int = signal(SignalKind::interrupt()).map_err(start)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Each client connection can hold an upstream one: lift the soft descriptor limit to the
/// hard one so that `max_connections` is not cut short by the default 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Parses a duration such as `30s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?} has an unknown unit: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
