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
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::reqlog::RequestLog;
use super::table::{now_ms, Routes};
use super::upstream::UpstreamConfig;
use super::{proxy, tls, watch as routes_watch, RouterConfig, RouterError};

/// What every connection and request shares.
pub(crate) struct Shared {
    pub routes: Arc<ArcSwap<Routes>>,
    pub upstream: UpstreamConfig,
    pub log: RequestLog,
    config: RouterConfig,
    /// Client connections idle between requests, and their cap.
    idle: AtomicUsize,
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
    pub peer: SocketAddr,
    pub local_port: u16,
    pub tls: bool,
    state: Mutex<ConnState>,
    /// Wakes the connection task to close the connection once it is idle.
    close: Notify,
}

#[derive(Default)]
struct ConnState {
    in_flight: usize,
    /// Counted in [`Shared::idle`].
    idle: bool,
    /// [`now_ms`] of the last request's end.
    idle_since: u64,
}

impl Conn {
    pub fn request_started(&self) {
        let mut state = self.state.lock().expect("connection state lock");
        state.in_flight += 1;
        if std::mem::take(&mut state.idle) {
            self.shared.idle.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn request_finished(&self) {
        let mut state = self.state.lock().expect("connection state lock");
        state.in_flight -= 1;
        if state.in_flight > 0 {
            return;
        }
        state.idle_since = now_ms();
        if self.shared.idle.fetch_add(1, Ordering::Relaxed)
            >= self.shared.config.max_idle_connections
        {
            // Over the cap of idle keep-alive connections: this one closes instead.
            self.shared.idle.fetch_sub(1, Ordering::Relaxed);
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
        if self.state.get_mut().map(|s| s.idle).unwrap_or(false) {
            self.shared.idle.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A bound router, ready to serve.
pub struct Router {
    shared: Arc<Shared>,
    listener: TcpListener,
    tls_listener: Option<(TcpListener, TlsAcceptor)>,
    shutdown_tx: watch::Sender<bool>,
    log_thread: std::thread::JoinHandle<()>,
}

impl Router {
    /// Loads the route table (an absent or bad one leaves the router with no routes yet),
    /// binds the listeners and starts the routes watcher. Must run inside a tokio runtime.
    pub async fn bind(config: RouterConfig) -> Result<Router, RouterError> {
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
        let tls_listener = match config.tls_listen {
            Some(addr) => Some((
                listen(addr)?,
                TlsAcceptor::from(tls::server_config(Arc::clone(&routes))),
            )),
            None => None,
        };
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
            },
            log,
            config,
            idle: AtomicUsize::new(0),
            tasks: Arc::new(()),
            shutdown,
        });
        tokio::spawn(watcher.run(shared.shutdown.clone()));
        Ok(Router {
            shared,
            listener,
            tls_listener,
            shutdown_tx,
            log_thread,
        })
    }

    /// Address of the HTTP listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Address of the HTTPS listener, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listener
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("a bound listener has an address"))
    }

    /// Serves until `shutdown` resolves, then stops accepting, drains requests in flight
    /// (up to the drain timeout) and writes out the request logs.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.shared.config.max_connections));
        let mut loops = vec![tokio::spawn(accept_loop(
            self.listener,
            None,
            Arc::clone(&self.shared),
            Arc::clone(&limit),
        ))];
        if let Some((listener, acceptor)) = self.tls_listener {
            loops.push(tokio::spawn(accept_loop(
                listener,
                Some(acceptor),
                Arc::clone(&self.shared),
                Arc::clone(&limit),
            )));
        }
        shutdown.await;
        eprintln!("slipway router: shutting down: no new connections, draining requests in flight");
        let _ = self.shutdown_tx.send(true);
        for accept in loops {
            let _ = accept.await;
        }
        let deadline = tokio::time::Instant::now() + self.shared.config.drain_timeout;
        while Arc::strong_count(&self.shared.tasks) > 1 {
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "slipway router: drain timeout: closing {} connections still open",
                    Arc::strong_count(&self.shared.tasks) - 1
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.log.stop();
        let _ = tokio::task::spawn_blocking(move || self.log_thread.join()).await;
    }
}

fn listen(addr: SocketAddr) -> Result<TcpListener, RouterError> {
    let bind = |source| RouterError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind)?;
    socket.set_reuseaddr(true).map_err(bind)?;
    socket.bind(addr).map_err(bind)?;
    socket.listen(4096).map_err(bind)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        // Past the connection cap, new connections wait in the listen backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.changed() => return,
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
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let local_port = stream.local_addr().map_or(0, |a| a.port());
        let conn = Arc::new(Conn {
            shared: Arc::clone(&shared),
            peer,
            local_port,
            tls: acceptor.is_some(),
            state: Mutex::new(ConnState {
                idle_since: now_ms(),
                ..ConnState::default()
            }),
            close: Notify::new(),
        });
        let token = shared.task_token();
        match &acceptor {
            None => {
                tokio::spawn(serve_http1(stream, conn, permit, token));
            }
            Some(acceptor) => {
                tokio::spawn(serve_tls(stream, acceptor.clone(), conn, permit, token));
            }
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
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
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

/// Runs a connection to its end, closing it gracefully when the router shuts down, when it
/// is over the idle cap, or when it stays idle longer than the header timeout.
async fn drive<C: GracefulConnection>(
    connection: C,
    conn: Arc<Conn>,
    permit: OwnedSemaphorePermit,
    token: Arc<()>,
) {
    let _held = (permit, token);
    let mut shutdown = conn.shared.shutdown.clone();
    let idle_limit = conn.shared.config.header_timeout.as_millis() as u64;
    let mut connection = std::pin::pin!(connection);
    let mut closing = *shutdown.borrow();
    if closing {
        connection.as_mut().graceful();
    }
    let idle_check = tokio::time::sleep(Duration::from_millis(idle_limit));
    let mut idle_check = std::pin::pin!(idle_check);
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = conn.close.notified(), if !closing => {
                closing = true;
                connection.as_mut().graceful();
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    connection.as_mut().graceful();
                }
            }
            () = idle_check.as_mut(), if !closing => {
                let idle_for = conn.idle_for(now_ms());
                if idle_for >= idle_limit {
                    closing = true;
                    connection.as_mut().graceful();
                } else {
                    let wait = idle_limit - idle_for;
                    idle_check.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(wait));
                }
            }
        }
    }
}
