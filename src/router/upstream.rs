//! Upstream side: connections to backends (pooled per backend), random choice among an
//! app's backends, quarantine of refusing ones, and the retries that are safe.
//!
//! Retries happen only before anything reached the client, and only when the request can
//! be sent again unchanged:
//! * the connection was refused or timed out: nothing was sent, any request is retried on
//!   another backend and the refusing one is quarantined;
//! * a pooled connection was found closed before the request was written (hyper hands the
//!   request back): it is sent on a fresh connection to the same backend;
//! * a pooled connection that had been idle for a while ([`REPLAY_AFTER_IDLE_MS`]) failed
//!   after the request was written, and the request has no body and an idempotent method:
//!   it is sent again on a fresh connection (the backend had closed the idle connection as
//!   the request arrived).
//!
//! Pooled connections stay in their backend's pool while a response is read on them; a
//! request takes the most recently used one that is ready for another request. A request
//! that could not be sent again (a body, or a method that is not idempotent) takes none
//! that has been idle for [`REPLAY_AFTER_IDLE_MS`] or more: it opens a new connection
//! rather than risk one the backend is closing.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
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

use super::table::{instant_at, now_ms, recent_ms, App, Backend};

/// A request on a pooled connection idle at least this long keeps a copy of its head, to
/// be sent again if the backend closed the connection as the request arrived. Below it,
/// that race is unlikely enough not to copy every request's headers.
pub(crate) const REPLAY_AFTER_IDLE_MS: u64 = 1000;

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
    /// Longest silence of a backend in the middle of a response body.
    pub body_idle_timeout: Duration,
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
    fn touch(&self, now: u64) {
        self.last.store(now, Ordering::Relaxed);
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
            self.progress.touch(now_ms());
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
    /// Index of the backend in the app's list.
    pub backend: usize,
    /// Time spent opening the connection (0 when a pooled one was used).
    pub connect_ms: u64,
}

/// Why no response head came back.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// Every backend refused the connection (or could not be reached in time).
    AllRefused,
    /// No response head within the backend timeout (from the backend at this index).
    Timeout(usize),
    /// The backend closed or reset the connection before a response head.
    Closed(usize),
    /// The client's request body broke off (the client went away).
    ClientGone(usize),
}

/// Sends the request to one of `app`'s backends (at least one) and returns its response
/// head. Backends that refused the connection on the way are pushed to `refused` (as
/// indexes in the app's list).
pub(crate) async fn forward(
    config: &UpstreamConfig,
    app: &App,
    head: RequestHead,
    body: Incoming,
    refused: &mut Vec<usize>,
) -> Result<Forwarded, ForwardError> {
    let mut sent_at = recent_ms();
    // Only a request body has progress to track.
    let progress = (!body.is_end_stream()).then(|| {
        Arc::new(Progress {
            last: AtomicU64::new(sent_at),
            client_failed: AtomicBool::new(false),
        })
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
                pick(app, &tried, recent_ms()).ok_or(ForwardError::AllRefused)?,
                false,
            ),
        };
        let backend = &app.backends[index];
        if attempts > app.backends.len() + 2 {
            // Every connection closed before the request could be sent.
            return Err(ForwardError::Closed(index));
        }
        let pooled = if fresh {
            None
        } else {
            // A request that could not be sent again takes no connection that sat idle
            // long enough for the backend to be closing it.
            let idle_limit = (!replayable).then_some(REPLAY_AFTER_IDLE_MS);
            checkout(backend, config, idle_limit)
        };
        // Only a request on a connection that was idle a while may have to be sent again.
        let replay = replayable
            && pooled
                .as_ref()
                .is_some_and(|(_, idle)| *idle >= REPLAY_AFTER_IDLE_MS);
        let (mut sender, connect_ms) = match pooled {
            Some((sender, _)) => (sender, 0),
            None => {
                let start = now_ms();
                match connect(backend, config.connect_timeout).await {
                    Ok(sender) => (sender, now_ms() - start),
                    Err(_) => {
                        backend.quarantine(now_ms() + config.quarantine.as_millis() as u64);
                        refused.push(index);
                        tried.push(index);
                        continue;
                    }
                }
            }
        };
        let request = match unsent.take() {
            Some(request) => request,
            None => {
                let head = if replay { head.clone() } else { head.take() }
                    .expect("a request head is only given up when it cannot be needed again");
                let body = match (body.take(), &progress) {
                    (Some(inner), Some(progress)) => Either::Left(RequestBody {
                        inner,
                        progress: Arc::clone(progress),
                    }),
                    _ => Either::Right(Empty::new()),
                };
                head.into_request(body)
            }
        };
        if attempts > 1 {
            sent_at = now_ms();
            if let Some(progress) = &progress {
                progress.touch(sent_at);
            }
        }
        let sent = tokio::select! {
            sent = sender.try_send_request(request) => sent,
            () = head_deadline(progress.as_deref(), sent_at, config.backend_timeout) => {
                return Err(ForwardError::Timeout(index));
            }
        };
        match sent {
            Ok(response) => {
                // After a 101 the connection belongs to the upgraded stream.
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    put_back(backend, sender, config.max_idle_per_backend);
                }
                return Ok(Forwarded {
                    response,
                    backend: index,
                    connect_ms,
                });
            }
            Err(mut error) => {
                if let Some(request) = error.take_message() {
                    unsent = Some(request);
                    again = Some(index);
                } else if progress
                    .as_ref()
                    .is_some_and(|p| p.client_failed.load(Ordering::Relaxed))
                {
                    return Err(ForwardError::ClientGone(index));
                } else if replay {
                    again = Some(index);
                } else {
                    return Err(ForwardError::Closed(index));
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
async fn head_deadline(progress: Option<&Progress>, sent_at: u64, timeout: Duration) {
    let limit = timeout.as_millis() as u64;
    let last = || progress.map_or(sent_at, |p| p.last.load(Ordering::Relaxed));
    let mut due = last() + limit;
    loop {
        tokio::time::sleep_until(instant_at(due)).await;
        let moved = last() + limit;
        if moved <= due {
            return;
        }
        due = moved;
    }
}

thread_local! {
    /// This worker thread's pooled upstream connections, per backend id, most recently
    /// used last. Per thread: a connection's task runs on the thread that opened it.
    static POOLS: RefCell<HashMap<u64, VecDeque<Idle>>> = RefCell::new(HashMap::new());
}

/// A pooled connection to `backend` that is ready for another request, if any, and how
/// long it has been in the pool (ms); with `idle_limit`, only one in the pool for less
/// than that. Closed and stale connections are dropped on the way; busy ones (a response
/// still being read) stay.
fn checkout(
    backend: &Backend,
    config: &UpstreamConfig,
    idle_limit: Option<u64>,
) -> Option<(http1::SendRequest<UpBody>, u64)> {
    let now = recent_ms();
    let oldest = now.saturating_sub(config.idle_timeout.as_millis() as u64);
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let pool = pools.get_mut(&backend.id)?;
        let mut i = pool.len();
        while i > 0 {
            i -= 1;
            let entry = &pool[i];
            if entry.sender.is_closed() || entry.since < oldest {
                pool.remove(i);
            } else if entry.sender.is_ready()
                && idle_limit.is_none_or(|limit| now.saturating_sub(entry.since) < limit)
            {
                let entry = pool.remove(i).expect("index in range");
                return Some((entry.sender, now.saturating_sub(entry.since)));
            }
        }
        None
    })
}

/// Returns a connection to the pool as soon as its response head is in: it becomes ready
/// for the next request once the response body is read.
fn put_back(backend: &Backend, sender: http1::SendRequest<UpBody>, max: usize) {
    if max == 0 {
        return;
    }
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let pool = pools.entry(backend.id).or_default();
        if pool.len() >= max {
            pool.pop_front();
        }
        pool.push_back(Idle {
            sender,
            since: recent_ms(),
        });
    });
}

/// Every second, drops this thread's pooled connections that closed or stayed idle too
/// long (and so, in time, those of backends no longer in the table).
pub(crate) async fn sweep_loop(idle_timeout: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let oldest = now_ms().saturating_sub(idle_timeout.as_millis() as u64);
        POOLS.with(|pools| {
            pools.borrow_mut().retain(|_, pool| {
                pool.retain(|entry| !entry.sender.is_closed() && entry.since >= oldest);
                !pool.is_empty()
            });
        });
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
        .writev(false)
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
