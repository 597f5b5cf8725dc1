//! Client side: listeners, connection limits and timeouts, TLS, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::reqlog::{LogShard, RequestLog};
use super::table::{now_ms, recent_ms, Routes};
use super::upstream::{self, UpstreamConfig};
use super::{proxy, tls, watch as routes_watch, RouterConfig, RouterError};

/// What every connection and request shares.
pub(crate) struct Shared {
    pub routes: Arc<ArcSwap<Routes>>,
    pub upstream: UpstreamConfig,
    pub log: RequestLog,
    pub config: RouterConfig,
    /// Cloned into every connection and tunnel task; the drain waits for it to be unique.
    tasks: Arc<()>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// A token that keeps the drain waiting while it lives.
    pub fn task_token(&self) -> Arc<()> {
        Arc::clone(&self.tasks)
    }
}

/// One client connection.
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    /// This worker thread's share of the request log.
    pub log: LogShard,
    /// Open connections of this worker thread (for the choice of a worker).
    load: Arc<AtomicUsize>,
    /// This worker thread's connections idle between requests, and their cap (the
    /// worker's share of `max_idle_connections`).
    idle: Arc<AtomicUsize>,
    idle_cap: usize,
    /// The client's address as text (for `X-Forwarded-For` and logs).
    pub client_ip: String,
    /// The same, as the `X-Forwarded-For` of a request that had none.
    pub client_ip_header: http::HeaderValue,
    /// `X-Forwarded-Port`: the port the client connected to.
    pub port_header: http::HeaderValue,
    pub tls: bool,
    state: Mutex<ConnState>,
    /// Wakes the connection task to close the connection once it is idle.
    close: Notify,
}

#[derive(Default)]
struct ConnState {
    in_flight: usize,
    /// Counted in [`Conn::idle`].
    idle: bool,
    /// [`now_ms`] of the last request's end.
    idle_since: u64,
}

impl Conn {
    pub fn request_started(&self) {
        let mut state = self.state.lock().expect("connection state lock");
        state.in_flight += 1;
        if std::mem::take(&mut state.idle) {
            self.idle.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn request_finished(&self) {
        let mut state = self.state.lock().expect("connection state lock");
        state.in_flight -= 1;
        if state.in_flight > 0 {
            return;
        }
        state.idle_since = recent_ms();
        if self.idle.fetch_add(1, Ordering::Relaxed) >= self.idle_cap {
            // Over the cap of idle keep-alive connections: this one closes instead.
            self.idle.fetch_sub(1, Ordering::Relaxed);
            self.close.notify_one();
        } else {
            state.idle = true;
        }
    }

    /// Milliseconds the connection has had no request in flight (0 while it has one).
    fn idle_for(&self, now: u64) -> u64 {
        let state = self.state.lock().expect("connection state lock");
        if state.in_flight > 0 {
            0
        } else {
            now.saturating_sub(state.idle_since)
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
        if self.state.get_mut().map(|s| s.idle).unwrap_or(false) {
            self.idle.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A bound router, ready to serve.
///
/// It serves on [`RouterConfig::workers`] threads, each with its own single-threaded
/// runtime. The calling thread accepts connections and hands each to the worker with the
/// fewest open connections; from then on the connection, the upstream connections it uses
/// (pooled per worker) and their tasks stay on that worker, as in nginx's worker processes:
/// no work stealing or cross-thread wake-ups on the request path.
pub struct Router {
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    tls_listener: Option<std::net::TcpListener>,
    acceptor: Option<TlsAcceptor>,
    watcher: routes_watch::Watcher,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    log_thread: std::thread::JoinHandle<()>,
}

/// An accepted connection on its way to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    tls: bool,
    port_header: http::HeaderValue,
    permit: OwnedSemaphorePermit,
}

/// The accepting side's view of a worker.
#[derive(Clone)]
struct WorkerHandle {
    tx: tokio::sync::mpsc::UnboundedSender<Accepted>,
    /// Open client connections on the worker.
    load: Arc<AtomicUsize>,
}

impl Router {
    /// Loads the route table (an absent or bad one leaves the router with no routes yet),
    /// binds the listeners and starts the request log writer.
    pub fn bind(config: RouterConfig) -> Result<Router, RouterError> {
        if let Some(base) = &config.base_domain {
            if !crate::api::routes::is_host_name(base) {
                return Err(RouterError::BadBaseDomain(base.clone()));
            }
        }
        std::fs::create_dir_all(&config.run_dir).map_err(|source| RouterError::RunDir {
            path: config.run_dir.clone(),
            source,
        })?;
        let routes = Arc::new(ArcSwap::from_pointee(Routes::empty(
            config.base_domain.as_deref().unwrap_or("localhost"),
        )));
        let mut watcher = routes_watch::Watcher::new(&config, Arc::clone(&routes));
        watcher.reload();

        let listener = listen(config.listen)?;
        let local_addr = local_addr_of(&listener, config.listen)?;
        let (tls_listener, tls_addr) = match config.tls_listen {
            Some(addr) => {
                let listener = listen(addr)?;
                let bound = local_addr_of(&listener, addr)?;
                (Some(listener), Some(bound))
            }
            None => (None, None),
        };
        let acceptor = tls_addr.map(|_| TlsAcceptor::from(tls::server_config(Arc::clone(&routes))));
        let (log, log_thread) = RequestLog::start(config.data_dir.clone(), config.log_max_bytes)
            .map_err(|source| RouterError::Start {
                what: "log writer thread",
                source,
            })?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            routes,
            upstream: UpstreamConfig {
                connect_timeout: config.connect_timeout,
                backend_timeout: config.backend_timeout,
                quarantine: config.quarantine,
                max_idle_per_backend: config.max_idle_per_backend,
                idle_timeout: config.upstream_idle_timeout,
                body_idle_timeout: config.body_idle_timeout,
            },
            log,
            config,
            tasks: Arc::new(()),
            shutdown,
        });
        Ok(Router {
            shared,
            listener,
            tls_listener,
            acceptor,
            watcher,
            local_addr,
            tls_addr,
            shutdown_tx,
            log_thread,
        })
    }

    /// Address of the HTTP listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Address of the HTTPS listener, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Serves until the future made by `shutdown` resolves (it is made and awaited on this
    /// thread, which also accepts connections and watches the routes file), then stops
    /// accepting, drains requests in flight (up to the drain timeout) and writes out the
    /// request logs.
    pub fn serve<F, S>(self, shutdown: S) -> Result<(), RouterError>
    where
        S: FnOnce() -> Result<F, RouterError>,
        F: Future<Output = ()>,
    {
        let start = |what| move |source| RouterError::Start { what, source };
        let mut threads = Vec::new();
        let mut workers = Vec::new();
        for index in 0..self.shared.config.workers.max(1) {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let load = Arc::new(AtomicUsize::new(0));
            let shared = Arc::clone(&self.shared);
            let acceptor = self.acceptor.clone();
            let worker_load = Arc::clone(&load);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(start("worker runtime"))?;
            let thread = std::thread::Builder::new()
                .name(format!("router-{index}"))
                .spawn(move || runtime.block_on(worker(shared, rx, worker_load, acceptor)))
                .map_err(start("worker thread"))?;
            threads.push(thread);
            workers.push(WorkerHandle { tx, load });
        }
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(start("control runtime"))?;
        let shared = Arc::clone(&self.shared);
        let (listener, tls_listener, watcher) = (self.listener, self.tls_listener, self.watcher);
        let shutdown_tx = &self.shutdown_tx;
        let result = control.block_on(async move {
            let stop = shutdown()?;
            tokio::spawn(watcher.run(shared.shutdown.clone()));
            let limit = Arc::new(Semaphore::new(shared.config.max_connections));
            let mut loops = Vec::new();
            for (listener, tls) in [(Some(listener), false), (tls_listener, true)] {
                let Some(listener) = listener else { continue };
                let listener = TcpListener::from_std(listener).map_err(start("listener"))?;
                loops.push(tokio::spawn(accept_loop(
                    listener,
                    tls,
                    Arc::clone(&shared),
                    Arc::clone(&limit),
                    workers.clone(),
                )));
            }
            drop(workers);
            stop.await;
            eprintln!(
                "slipway router: shutting down: no new connections, draining requests in flight"
            );
            let _ = shutdown_tx.send(true);
            for accept in loops {
                let _ = accept.await;
            }
            Ok(())
        });
        // The accept loops are gone with their senders: each worker drains and returns.
        let _ = self.shutdown_tx.send(true);
        for thread in threads {
            let _ = thread.join();
        }
        self.shared.log.stop();
        let _ = self.log_thread.join();
        result
    }
}

fn local_addr_of(
    listener: &std::net::TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, RouterError> {
    listener
        .local_addr()
        .map_err(|source| RouterError::Bind { addr, source })
}

fn listen(addr: SocketAddr) -> Result<std::net::TcpListener, RouterError> {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    let fail = |source| RouterError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    // SAFETY: the descriptor was just released by `into_raw_fd`, nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) };
    // tokio's own `listen` needs a runtime, and this runs before there is one.
    nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::MAXCONN)
        .map_err(|errno| fail(std::io::Error::from(errno)))?;
    Ok(std::net::TcpListener::from(fd))
}

/// One worker thread: the connections handed to it, its upstream pools; returns once the
/// router shuts down and its share of the drain is over.
async fn worker(
    shared: Arc<Shared>,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    load: Arc<AtomicUsize>,
    acceptor: Option<TlsAcceptor>,
) {
    let log = shared.log.shard();
    let idle = Arc::new(AtomicUsize::new(0));
    let workers = shared.config.workers.max(1);
    // A share that keeps the total within the cap (at least one each, unless it is 0).
    let max_idle = shared.config.max_idle_connections;
    let idle_cap = if max_idle == 0 {
        0
    } else {
        (max_idle / workers).max(1)
    };
    let sweeper = tokio::spawn(upstream::sweep_loop(shared.upstream.idle_timeout));
    while let Some(accepted) = incoming.recv().await {
        let stream = match TcpStream::from_std(accepted.stream) {
            Ok(stream) => stream,
            Err(e) => {
                load.fetch_sub(1, Ordering::Relaxed);
                eprintln!("slipway router: a worker cannot take a connection: {e}");
                continue;
            }
        };
        let client_ip = accepted.peer.ip().to_canonical().to_string();
        let conn = Arc::new(Conn {
            shared: Arc::clone(&shared),
            log: log.clone(),
            load: Arc::clone(&load),
            idle: Arc::clone(&idle),
            idle_cap,
            client_ip_header: http::HeaderValue::from_str(&client_ip)
                .expect("an IP address is header-safe"),
            client_ip,
            port_header: accepted.port_header,
            tls: accepted.tls,
            state: Mutex::new(ConnState {
                idle_since: now_ms(),
                ..ConnState::default()
            }),
            close: Notify::new(),
        });
        let token = shared.task_token();
        match (&acceptor, accepted.tls) {
            (Some(acceptor), true) => {
                tokio::spawn(serve_tls(
                    stream,
                    acceptor.clone(),
                    conn,
                    accepted.permit,
                    token,
                ));
            }
            _ => {
                tokio::spawn(serve_http1(stream, conn, accepted.permit, token));
            }
        }
    }
    sweeper.abort();
    // Connections on this thread finish while it waits here for all of them.
    let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
    while Arc::strong_count(&shared.tasks) > 1 {
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "slipway router: drain timeout: closing {} connections still open",
                Arc::strong_count(&shared.tasks) - 1
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resolves once the router shuts down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections and hands each to the worker with the fewest open connections.
async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    workers: Vec<WorkerHandle>,
) {
    let mut shutdown = shared.shutdown.clone();
    let port_header = http::HeaderValue::from(listener.local_addr().map_or(0, |a| a.port()));
    loop {
        // Past the connection cap, new connections wait in the listen backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stopped(&mut shutdown) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    eprintln!("slipway router: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let worker = workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.load.fetch_add(1, Ordering::Relaxed);
        let accepted = Accepted {
            stream,
            peer,
            tls,
            port_header: port_header.clone(),
            permit,
        };
        if worker.tx.send(accepted).is_err() {
            worker.load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    conn: Arc<Conn>,
    permit: OwnedSemaphorePermit,
    token: Arc<()>,
) {
    let handshake =
        tokio::time::timeout(conn.shared.config.header_timeout, acceptor.accept(stream));
    let Ok(Ok(stream)) = handshake.await else {
        return;
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_http2(stream, conn, permit, token).await;
    } else {
        serve_http1(stream, conn, permit, token).await;
    }
}

async fn serve_http1<I>(io: I, conn: Arc<Conn>, permit: OwnedSemaphorePermit, token: Arc<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &conn.shared.config;
    let mut builder = http1::Builder::new();
    builder
        // The header timeout is `drive`'s: one timer per connection rather than one per
        // request (hyper's own allocates and arms a timer for every request head).
        .header_read_timeout(None)
        .max_buf_size(config.max_header_bytes.max(8192))
        // One copy into hyper's buffer and one write beat writev of small pieces here
        // (measured), and TLS streams have no vectored writes anyway.
        .writev(false)
        .keep_alive(true);
    let service_conn = Arc::clone(&conn);
    let service = service_fn(move |req| proxy::handle(Arc::clone(&service_conn), req));
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    drive(connection, conn, permit, token).await;
}

async fn serve_http2<I>(io: I, conn: Arc<Conn>, permit: OwnedSemaphorePermit, token: Arc<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &conn.shared.config;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_bytes as u32)
        .max_concurrent_streams(256);
    let service_conn = Arc::clone(&conn);
    let service = service_fn(move |req| proxy::handle(Arc::clone(&service_conn), req));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    drive(connection, conn, permit, token).await;
}

/// A hyper server connection that can be asked to finish gracefully.
trait GracefulConnection: Future {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::UpgradeableConnection<I, S>
where
    Self: Future,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> GracefulConnection for http2::Connection<I, S, E>
where
    Self: Future,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection to its end: closes it gracefully when the router shuts down or when
/// it is over the idle cap, and drops it when it has had no request in flight for the
/// header timeout (which covers both idle keep-alive connections and request heads sent
/// too slowly: a request counts from its complete head).
async fn drive<C: GracefulConnection>(
    connection: C,
    conn: Arc<Conn>,
    permit: OwnedSemaphorePermit,
    token: Arc<()>,
) {
    let _held = (permit, token);
    let idle_limit = conn.shared.config.header_timeout.as_millis() as u64;
    let mut connection = std::pin::pin!(connection);
    // The reasons to close, made once: this loop runs on every wake-up of the connection.
    let mut shutdown = conn.shared.shutdown.clone();
    let close_asked = async {
        tokio::select! {
            () = conn.close.notified() => {}
            () = stopped(&mut shutdown) => {}
        }
    };
    let mut close_asked = std::pin::pin!(close_asked);
    let mut idle_check = std::pin::pin!(tokio::time::sleep(Duration::from_millis(idle_limit)));
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            _ = connection.as_mut() => return,
            () = close_asked.as_mut(), if !closing => {
                closing = true;
                connection.as_mut().graceful();
            }
            () = idle_check.as_mut(), if !closing => {
                let idle_for = conn.idle_for(now_ms());
                if idle_for >= idle_limit {
                    // Nothing is in flight: no answer can be lost by closing at once.
                    return;
                } else {
                    let wait = Duration::from_millis(idle_limit - idle_for);
                    idle_check.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
        }
    }
}
