//! Upstream side: connections to backends (pooled per backend), random choice among an
//! app's backends, quarantine of refusing ones, and the retries that are safe.
//!
//! Retries happen only before anything reached the client, and only when the request can
//! be sent again unchanged:
//! * the connection was refused or timed out: nothing was sent, any request is retried on
//!   another backend and the refusing one is quarantined;
//! * a pooled connection was found closed before the request was written (hyper hands the
//!   request back): it is sent on a fresh connection to the same backend;
//! * a pooled connection failed after the request was written, the request has no body and
//!   an idempotent method: it is sent again on a fresh connection (the backend had closed
//!   the idle connection as the request arrived).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpStream;

use super::table::{now_ms, App, Backend, Routes};

/// The body type of upstream requests.
pub(crate) type UpBody = Either<RequestBody, Empty<Bytes>>;

/// A pooled idle connection.
#[derive(Debug)]
pub(crate) struct Idle {
    sender: http1::SendRequest<UpBody>,
    since: u64,
}

/// Upstream settings, from the router's configuration.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub backend_timeout: Duration,
    pub quarantine: Duration,
    pub max_idle_per_backend: usize,
    pub idle_timeout: Duration,
}

/// The parts of a request that are sent upstream besides its body.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl RequestHead {
    fn into_request(self, body: UpBody) -> Request<UpBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers;
        req
    }
}

/// How far the request body got: the backend timeout runs from the last progress.
#[derive(Debug)]
struct Progress {
    last: AtomicU64,
    client_failed: AtomicBool,
}

impl Progress {
    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }
}

/// The client's request body on its way upstream, recording progress.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    progress: Arc<Progress>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            self.progress.touch();
            if matches!(frame, Some(Err(_))) {
                self.progress.client_failed.store(true, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response head received from a backend.
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub response: Response<Incoming>,
    pub backend: Arc<Backend>,
    /// Time spent opening the connection (0 when a pooled one was used).
    pub connect_ms: u64,
}

/// Why no response head came back.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// Every backend refused the connection (or could not be reached in time).
    AllRefused,
    /// No response head within the backend timeout.
    Timeout(Arc<Backend>),
    /// The backend closed or reset the connection before a response head.
    Closed(Arc<Backend>, String),
    /// The client's request body broke off (the client went away).
    ClientGone(Arc<Backend>),
}

/// Sends the request to one of `app`'s backends (at least one) and returns its response
/// head. Backends that refused the connection on the way are pushed to `refused`.
pub(crate) async fn forward(
    config: &UpstreamConfig,
    app: &App,
    head: RequestHead,
    body: Incoming,
    refused: &mut Vec<Arc<Backend>>,
) -> Result<Forwarded, ForwardError> {
    let progress = Arc::new(Progress {
        last: AtomicU64::new(now_ms()),
        client_failed: AtomicBool::new(false),
    });
    let replayable = body.is_end_stream() && head.method.is_idempotent();
    let mut body = (!body.is_end_stream()).then_some(body);
    let mut head = Some(head);
    // A request hyper handed back unsent: it goes out as it is on the next attempt.
    let mut unsent: Option<Request<UpBody>> = None;
    // The backend to try again on a fresh connection.
    let mut again: Option<usize> = None;
    let mut tried = Vec::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (index, fresh) = match again.take() {
            Some(index) => (index, true),
            None => (
                pick(app, &tried, now_ms()).ok_or(ForwardError::AllRefused)?,
                false,
            ),
        };
        let backend = &app.backends[index];
        if attempts > app.backends.len() + 2 {
            return Err(ForwardError::Closed(
                Arc::clone(backend),
                "connections closed before the request could be sent".into(),
            ));
        }
        let pooled = if fresh {
            None
        } else {
            checkout(backend, config)
        };
        let reused = pooled.is_some();
        let (mut sender, connect_ms) = match pooled {
            Some(sender) => (sender, 0),
            None => {
                let start = now_ms();
                match connect(backend, config.connect_timeout).await {
                    Ok(sender) => (sender, now_ms() - start),
                    Err(_) => {
                        backend.quarantine(now_ms() + config.quarantine.as_millis() as u64);
                        refused.push(Arc::clone(backend));
                        tried.push(index);
                        continue;
                    }
                }
            }
        };
        let request = match unsent.take() {
            Some(request) => request,
            None => {
                let head = if replayable && reused {
                    head.clone()
                } else {
                    head.take()
                }
                .expect("a request head is only given up when it cannot be needed again");
                let body = match body.take() {
                    Some(inner) => Either::Left(RequestBody {
                        inner,
                        progress: Arc::clone(&progress),
                    }),
                    None => Either::Right(Empty::new()),
                };
                head.into_request(body)
            }
        };
        progress.touch();
        let sent = tokio::select! {
            sent = sender.try_send_request(request) => sent,
            () = head_deadline(&progress, config.backend_timeout) => {
                return Err(ForwardError::Timeout(Arc::clone(backend)));
            }
        };
        match sent {
            Ok(response) => {
                // After a 101 the connection belongs to the upgraded stream.
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    tokio::spawn(pool_when_ready(
                        sender,
                        Arc::clone(backend),
                        config.max_idle_per_backend,
                    ));
                }
                return Ok(Forwarded {
                    response,
                    backend: Arc::clone(backend),
                    connect_ms,
                });
            }
            Err(mut error) => {
                if let Some(request) = error.take_message() {
                    unsent = Some(request);
                    again = Some(index);
                } else if progress.client_failed.load(Ordering::Relaxed) {
                    return Err(ForwardError::ClientGone(Arc::clone(backend)));
                } else if reused && replayable {
                    again = Some(index);
                } else {
                    return Err(ForwardError::Closed(
                        Arc::clone(backend),
                        error.into_error().to_string(),
                    ));
                }
            }
        }
    }
}

/// A backend at random among those not tried yet, preferring ones not in quarantine
/// (quarantine is a hint: when every backend left is in it, one of them is still tried).
fn pick(app: &App, tried: &[usize], now: u64) -> Option<usize> {
    let n = app.backends.len();
    for healthy_only in [true, false] {
        let eligible = |i: &usize| {
            let quarantined = healthy_only && app.backends[*i].is_quarantined(now);
            !tried.contains(i) && !quarantined
        };
        let count = (0..n).filter(eligible).count();
        if count > 0 {
            let k = rand::rng().random_range(0..count);
            return (0..n).filter(eligible).nth(k);
        }
    }
    None
}

/// Resolves when the request body has made no progress for `timeout`, or `timeout` after
/// it was sent whole, whichever is the case.
async fn head_deadline(progress: &Progress, timeout: Duration) {
    let limit = timeout.as_millis() as u64;
    loop {
        let due = progress.last.load(Ordering::Relaxed) + limit;
        let now = now_ms();
        if now >= due {
            return;
        }
        tokio::time::sleep(Duration::from_millis(due - now)).await;
    }
}

/// A pooled connection to `backend` that is ready for a request, if any.
fn checkout(backend: &Backend, config: &UpstreamConfig) -> Option<http1::SendRequest<UpBody>> {
    let oldest = now_ms().saturating_sub(config.idle_timeout.as_millis() as u64);
    let mut idle = backend.idle.lock().expect("pool lock");
    while let Some(entry) = idle.pop_back() {
        if entry.sender.is_ready() && entry.since >= oldest {
            return Some(entry.sender);
        }
    }
    None
}

/// Puts the connection back in the pool once its response is fully read.
async fn pool_when_ready(
    mut sender: http1::SendRequest<UpBody>,
    backend: Arc<Backend>,
    max_idle: usize,
) {
    if sender.ready().await.is_err() || max_idle == 0 {
        return;
    }
    let mut idle = backend.idle.lock().expect("pool lock");
    if idle.len() >= max_idle {
        idle.pop_front();
    }
    idle.push_back(Idle {
        sender,
        since: now_ms(),
    });
}

/// Drops pooled connections that closed or stayed idle too long.
pub(crate) fn sweep(routes: &Routes, idle_timeout: Duration) {
    let oldest = now_ms().saturating_sub(idle_timeout.as_millis() as u64);
    for backend in routes.backends() {
        let mut idle = backend.idle.lock().expect("pool lock");
        idle.retain(|entry| !entry.sender.is_closed() && entry.since >= oldest);
    }
}

/// Opens a new HTTP/1.1 connection to `backend`.
async fn connect(
    backend: &Backend,
    timeout: Duration,
) -> Result<http1::SendRequest<UpBody>, std::io::Error> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(backend.addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // Ends when the backend or the router closes the connection; errors are the
        // request's to report.
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}
