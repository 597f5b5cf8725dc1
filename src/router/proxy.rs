//! One request through the router: host to app, header rewriting, forwarding, the error
//! pages, upgrades, and the request's log line.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, COOKIE, HOST, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;

use super::server::Conn;
use super::table::{instant_at, normalize_host, now_ms, App};
use super::upstream::{forward, ForwardError, RequestHead};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_SLIPWAY_ERROR: HeaderName = HeaderName::from_static("x-slipway-error");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The router's error codes (documented in [`crate::router`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
    R16,
    R17,
    R18,
    R19,
}

impl Code {
    fn status(self) -> StatusCode {
        match self {
            Code::R10 => StatusCode::NOT_FOUND,
            Code::R11 | Code::R12 => StatusCode::SERVICE_UNAVAILABLE,
            Code::R13 => StatusCode::GATEWAY_TIMEOUT,
            Code::R14 | Code::R17 | Code::R18 | Code::R19 => StatusCode::BAD_GATEWAY,
            Code::R15 => StatusCode::BAD_REQUEST,
            Code::R16 => StatusCode::from_u16(499).expect("499 is a status code"),
        }
    }

    /// Short description for log lines.
    fn desc(self) -> &'static str {
        match self {
            Code::R10 => "Unknown host",
            Code::R11 => "No web containers",
            Code::R12 => "All web containers refused the connection",
            Code::R13 => "Backend timeout",
            Code::R14 => "Backend closed the connection",
            Code::R15 => "Bad request",
            Code::R16 => "Client closed the connection",
            Code::R17 => "Backend closed the connection mid-response",
            Code::R18 => "Container refused the connection, request sent to another",
            Code::R19 => "Backend idle in the middle of the response",
        }
    }

    /// Sentence for the error page.
    fn explain(self) -> &'static str {
        match self {
            Code::R10 => "No app is served at this host name.",
            Code::R11 => "This app has no web container running. If it was just deployed or scaled, try again in a moment.",
            Code::R12 => "None of this app's web containers accepted the connection.",
            Code::R13 => "The app did not answer in time.",
            Code::R14 => "The app closed the connection without answering.",
            Code::R15 => "The request has no usable Host header.",
            Code::R16 | Code::R17 | Code::R18 | Code::R19 => "The request was interrupted.",
        }
    }

    fn is_warning(self) -> bool {
        self == Code::R18
    }

    fn name(self) -> &'static str {
        match self {
            Code::R10 => "R10",
            Code::R11 => "R11",
            Code::R12 => "R12",
            Code::R13 => "R13",
            Code::R14 => "R14",
            Code::R15 => "R15",
            Code::R16 => "R16",
            Code::R17 => "R17",
            Code::R18 => "R18",
            Code::R19 => "R19",
        }
    }
}

/// One request and its response, logged to the app's `router.log` when dropped (that is,
/// when the response body is finished or abandoned).
pub(crate) struct Exchange {
    conn: Arc<Conn>,
    app: Option<Arc<App>>,
    /// [`now_ms`] at the start.
    start: u64,
    method: Method,
    uri: Uri,
    host: String,
    request_id: HeaderValue,
    /// `X-Forwarded-For` as sent, when the client sent one (else the client's address).
    fwd: Option<String>,
    /// The backend that served it: an index in `app`'s list.
    container: Option<usize>,
    connect_ms: u64,
    status: u16,
    bytes: u64,
    code: Option<Code>,
    complete: bool,
}

impl Exchange {
    fn begin(conn: Arc<Conn>, req: &Request<Incoming>) -> Exchange {
        conn.request_started();
        Exchange {
            conn,
            app: None,
            start: now_ms(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: String::new(),
            request_id: HeaderValue::from_static(""),
            fwd: None,
            container: None,
            connect_ms: 0,
            status: 0,
            bytes: 0,
            code: None,
            complete: false,
        }
    }

    /// Ends the exchange with the error page of `code`.
    fn fail(mut self, code: Code, detail: &str) -> Response<ProxyBody> {
        self.code = Some(code);
        self.status = code.status().as_u16();
        error_page(code, detail, self)
    }

    /// Writes the log message of this exchange (one line, fields already escaped).
    fn write_message(
        &self,
        line: &mut Vec<u8>,
        code: Option<Code>,
        container: Option<usize>,
        service_ms: u64,
    ) {
        let mut number = itoa::Buffer::new();
        let mut put = |text: &str| line.extend_from_slice(text.as_bytes());
        match code {
            None => put("at=info"),
            Some(code) => {
                put(if code.is_warning() {
                    "at=warning code="
                } else {
                    "at=error code="
                });
                put(code.name());
                put(" desc=\"");
                put(code.desc());
                put("\"");
            }
        }
        put(" method=");
        put(self.method.as_str());
        put(" path=\"");
        push_quoted(
            &mut put,
            self.uri.path_and_query().map_or("/", |p| p.as_str()),
        );
        put("\" host=");
        put(&self.host);
        put(" request_id=");
        put(self.request_id.to_str().unwrap_or(""));
        put(" fwd=\"");
        push_quoted(
            &mut put,
            self.fwd.as_deref().unwrap_or(&self.conn.client_ip),
        );
        put("\" container=");
        let container = self
            .app
            .as_ref()
            .zip(container)
            .and_then(|(app, i)| app.backends.get(i));
        put(container.map_or("none", |b| &b.container));
        for (name, value, unit) in [
            (" connect=", self.connect_ms, "ms"),
            (" service=", service_ms, "ms"),
            (" status=", u64::from(self.status), ""),
            (" bytes=", self.bytes, ""),
        ] {
            put(name);
            put(number.format(value));
            put(unit);
        }
        put(if self.conn.tls {
            " protocol=https"
        } else {
            " protocol=http"
        });
    }

    /// Logs this exchange to the app's `router.log`.
    fn log(&self, code: Option<Code>, container: Option<usize>, service_ms: u64) {
        if let Some(app) = &self.app {
            self.conn.log.line(&app.name, |line| {
                self.write_message(line, code, container, service_ms)
            });
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.complete && self.code.is_none() {
            self.code = Some(Code::R16);
            if self.status == 0 {
                self.status = Code::R16.status().as_u16();
            }
        }
        if self.app.is_some() {
            let total = now_ms() - self.start;
            self.log(
                self.code,
                self.container,
                total.saturating_sub(self.connect_ms),
            );
        } else if let Some(code) = self.code {
            self.conn.log.unrouted(code.name(), code.desc());
        }
        self.conn.request_finished();
    }
}

/// The response body sent to the client: the backend's, streamed, or an error page.
pub(crate) struct ProxyBody {
    inner: Inner,
    exchange: Option<Exchange>,
    /// Aborts a backend body that sends nothing for too long.
    idle: IdleTimer,
}

/// Why the router gives up on a response body.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing for {0:?} in the middle of its response")]
struct BodyIdle(std::time::Duration);

/// The rolling idle window of a backend's response body. The clock is read only when the
/// body has to wait after some progress, and the timer exists only once it had to wait at
/// all, so bodies that arrive with their head cost nothing.
struct IdleTimer {
    limit: std::time::Duration,
    /// [`now_ms`] of the last wait that followed progress.
    last_progress: u64,
    /// Something came (the response head, a frame) since `last_progress` was read.
    progressed: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimer {
    fn new(limit: std::time::Duration) -> IdleTimer {
        // A deadline past a year would only risk overflowing the clock.
        const LONGEST: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
        IdleTimer {
            limit: limit.min(LONGEST),
            last_progress: 0,
            progressed: true,
            timer: None,
        }
    }

    /// The body is waiting for the backend: true once it has waited the whole window.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.progressed {
            self.progressed = false;
            self.last_progress = now_ms();
        }
        let limit = self.limit.as_millis() as u64;
        let due = instant_at(self.last_progress + limit);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

enum Inner {
    Upstream(Incoming),
    Page(Option<Bytes>),
}

impl ProxyBody {
    fn exchange(&mut self) -> &mut Exchange {
        self.exchange
            .as_mut()
            .expect("the exchange lives as long as the body")
    }
}

/// What the client's side of hyper gets when a response body breaks off.
type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Upstream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(polled) => {
                    this.idle.progressed = true;
                    polled.map(|frame| frame.map_err(BodyError::from))
                }
                Poll::Pending if this.idle.expired(cx) => {
                    // Ends the client's response unfinished: it must not look complete.
                    this.exchange().code = Some(Code::R19);
                    return Poll::Ready(Some(Err(BodyIdle(this.idle.limit).into())));
                }
                Poll::Pending => return Poll::Pending,
            },
            Inner::Page(page) => page.take().map(|data| Ok(Frame::data(data))),
        };
        let exchange = this.exchange();
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    exchange.bytes += data.len() as u64;
                }
            }
            Some(Err(_)) => {
                exchange.code.get_or_insert(Code::R17);
            }
            None => exchange.complete = true,
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Page(page) => page.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Page(page) => SizeHint::with_exact(page.as_ref().map_or(0, |p| p.len() as u64)),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper drops a body without polling it when nothing is left to send (HEAD, 204,
        // 304, empty bodies): that is a complete response too.
        if self.is_end_stream() {
            if let Some(exchange) = &mut self.exchange {
                exchange.complete = true;
            }
        }
    }
}

/// Serves one request from a client connection.
pub(crate) async fn handle(
    conn: Arc<Conn>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut exchange = Exchange::begin(Arc::clone(&conn), &req);
    let Some(host) = request_authority(&req).and_then(normalize_host) else {
        return Ok(exchange.fail(Code::R15, "The request has no usable Host header."));
    };
    exchange.host = host;
    // The app is kept, not the table: its reference count is the only one touched.
    let app = conn
        .shared
        .routes
        .load()
        .app_for_host(&exchange.host)
        .cloned();
    if req.method() == Method::CONNECT {
        // In the app's log when the host names one.
        exchange.app = app;
        return Ok(exchange.fail(Code::R15, "CONNECT is not supported."));
    }
    let Some(app) = app else {
        let detail = format!("No app is served at {}.", html_escape(&exchange.host));
        return Ok(exchange.fail(Code::R10, &detail));
    };
    let no_backends = app.backends.is_empty();
    exchange.app = Some(app);
    let client_upgrade = prepare_request(&conn, &mut req, &mut exchange);
    if no_backends {
        return Ok(exchange.fail(Code::R11, Code::R11.explain()));
    }

    let (parts, body) = req.into_parts();
    let head = RequestHead {
        method: parts.method,
        uri: origin_form(&parts.uri),
        headers: parts.headers,
    };
    let mut refused = Vec::new();
    let app = exchange.app.as_deref().expect("set above");
    let forwarded = forward(&conn.shared.upstream, app, head, body, &mut refused).await;
    for backend in &refused {
        exchange.log(Some(Code::R18), Some(*backend), 0);
    }
    let forwarded = match forwarded {
        Ok(forwarded) => forwarded,
        Err(ForwardError::AllRefused) => {
            return Ok(exchange.fail(Code::R12, Code::R12.explain()));
        }
        Err(ForwardError::Timeout(backend)) => {
            exchange.container = Some(backend);
            return Ok(exchange.fail(Code::R13, Code::R13.explain()));
        }
        Err(ForwardError::Closed(backend)) => {
            exchange.container = Some(backend);
            return Ok(exchange.fail(Code::R14, Code::R14.explain()));
        }
        Err(ForwardError::ClientGone(backend)) => {
            exchange.container = Some(backend);
            return Ok(exchange.fail(Code::R16, Code::R16.explain()));
        }
    };
    exchange.container = Some(forwarded.backend);
    exchange.connect_ms = forwarded.connect_ms;
    let mut response = forwarded.response;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(client) = client_upgrade else {
            return Ok(exchange.fail(Code::R14, "The app switched protocols unasked."));
        };
        let backend = hyper::upgrade::on(&mut response);
        let token = conn.shared.task_token();
        tokio::spawn(async move {
            let _token = token;
            if let (Ok(client), Ok(backend)) = tokio::join!(client, backend) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(backend),
                )
                .await;
            }
        });
    }
    exchange.status = response.status().as_u16();
    *response.version_mut() = Version::HTTP_11;
    strip_hop_by_hop(response.headers_mut(), switching);
    let idle = IdleTimer::new(conn.shared.upstream.body_idle_timeout);
    Ok(response.map(|body| ProxyBody {
        inner: Inner::Upstream(body),
        exchange: Some(exchange),
        idle,
    }))
}

/// The authority the request is for: the URI's (HTTP/2, absolute form), else `Host`.
fn request_authority(req: &Request<Incoming>) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req.headers().get(HOST)?.to_str().ok(),
    }
}

/// Rewrites the request's headers for the backend (see [`crate::router`]); returns the
/// client side of an upgrade the client asked for.
fn prepare_request(
    conn: &Conn,
    req: &mut Request<Incoming>,
    exchange: &mut Exchange,
) -> Option<hyper::upgrade::OnUpgrade> {
    let version = req.version();
    let upgrade = version == Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && has_token(req.headers(), CONNECTION, "upgrade");
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut *req));
    // The URI's authority wins over Host (RFC 9112 §3.2.2), and HTTP/2 has no Host.
    let authority = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let headers = req.headers_mut();
    headers.reserve(8);
    strip_hop_by_hop(headers, upgrade);
    if let Some(authority) = authority {
        headers.insert(HOST, authority);
    }
    if version == Version::HTTP_2 {
        join_cookies(headers);
    }

    if headers.contains_key(X_FORWARDED_FOR) {
        let mut fwd = String::new();
        for previous in headers.get_all(X_FORWARDED_FOR) {
            if let Ok(previous) = previous.to_str() {
                fwd.push_str(previous);
                fwd.push_str(", ");
            }
        }
        fwd.push_str(&conn.client_ip);
        if let Ok(value) = HeaderValue::from_str(&fwd) {
            headers.insert(X_FORWARDED_FOR, value);
        }
        exchange.fwd = Some(fwd);
    } else {
        headers.insert(X_FORWARDED_FOR, conn.client_ip_header.clone());
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    headers.insert(X_FORWARDED_PORT, conn.port_header.clone());

    let kept = headers
        .get(X_REQUEST_ID)
        .filter(|id| is_sane_request_id(id.as_bytes()))
        .cloned();
    exchange.request_id = match kept {
        Some(id) => id,
        None => {
            let id = new_request_id();
            headers.insert(X_REQUEST_ID, id.clone());
            id
        }
    };
    headers.append(VIA, HeaderValue::from_static("1.1 slipway"));
    on_upgrade
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1); with `upgrade`, keeps `Upgrade` and
/// sends `Connection: upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    const HOP_BY_HOP: [HeaderName; 8] = [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRANSFER_ENCODING,
        TRAILER,
        PROXY_AUTHORIZATION,
        UPGRADE,
    ];
    // One pass over the names (standard names compare as tags), then lookups only for
    // what is there: most requests have none, most responses `Connection: keep-alive`.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        }
    }
    if present & 1 != 0 {
        let listed: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual tokens name no header, or one removed below anyway.
            .filter(|token| {
                !["close", "keep-alive", "upgrade"]
                    .iter()
                    .any(|usual| token.eq_ignore_ascii_case(usual))
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in listed {
            if name != HOST {
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 && !(upgrade && *name == UPGRADE) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// True when a comma-separated header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// HTTP/2 may split cookies over several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// `/path?query` of `uri` (what an HTTP/1.1 origin server expects).
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        // Already `/path?query` (or `*`).
        return uri.clone();
    }
    uri.path_and_query()
        .and_then(|pq| pq.as_str().parse().ok())
        .unwrap_or_else(|| Uri::from_static("/"))
}

/// Kept when sent by the client: 20 to 200 characters of `[A-Za-z0-9+/=._-]` (Heroku's
/// rule, widened by `.` and `_`).
fn is_sane_request_id(id: &[u8]) -> bool {
    (20..=200).contains(&id.len())
        && id.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'.' | b'_' | b'-')
        })
}

/// A new request id: a random UUID v4.
fn new_request_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).expect("a UUID is header-safe")
}

/// Writes `text` for a double-quoted log field through `put`: quotes, backslashes and
/// control characters escaped.
fn push_quoted(put: &mut impl FnMut(&str), text: &str) {
    if !text
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || b.is_ascii_control())
    {
        put(text);
        return;
    }
    for c in text.chars() {
        match c {
            '"' => put("\\\""),
            '\\' => put("\\\\"),
            c if c.is_control() => put(&format!("\\x{:02x}", c as u32)),
            c => put(c.encode_utf8(&mut [0u8; 4])),
        }
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The short page a client gets instead of a hung connection.
fn error_page(code: Code, detail_html: &str, exchange: Exchange) -> Response<ProxyBody> {
    let status = code.status();
    let title = status.canonical_reason().unwrap_or("Router error");
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{} {title}</title></head>\n\
         <body><h1>{title}</h1>\n<p>{detail_html}</p>\n<p><small>slipway router, error {}</small></p></body></html>\n",
        status.as_u16(),
        code.name()
    );
    let idle = IdleTimer::new(exchange.conn.shared.upstream.body_idle_timeout);
    let mut response = Response::new(ProxyBody {
        inner: Inner::Page(Some(Bytes::from(page))),
        exchange: Some(exchange),
        idle,
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(X_SLIPWAY_ERROR, HeaderValue::from_static(code.name()));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(KEEP_ALIVE, "timeout=5".parse().unwrap());
        h.insert(TE, "trailers".parse().unwrap());
        h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(UPGRADE, "websocket".parse().unwrap());
        h.insert(PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrades_keep_what_they_need() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "Upgrade, host".parse().unwrap());
        h.insert(UPGRADE, "websocket".parse().unwrap());
        h.insert(HOST, "a.localhost".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[CONNECTION], "upgrade");
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[HOST], "a.localhost");
    }

    #[test]
    fn request_ids() {
        assert!(is_sane_request_id(b"0123456789abcdefghij"));
        assert!(!is_sane_request_id(b"short"));
        assert!(!is_sane_request_id(b"0123456789abcdefghij\"x"));
        assert!(!is_sane_request_id("a".repeat(201).as_bytes()));
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(is_sane_request_id(id.as_bytes()));
    }

    #[test]
    fn cookies_are_joined() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1".parse().unwrap());
        h.append(COOKIE, "b=2".parse().unwrap());
        join_cookies(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h[COOKIE], "a=1; b=2");
    }

    #[test]
    fn origin_forms() {
        assert_eq!(origin_form(&"/a?b=1".parse().unwrap()), "/a?b=1");
        assert_eq!(
            origin_form(&"http://x.localhost/a?b".parse().unwrap()),
            "/a?b"
        );
        assert_eq!(origin_form(&"http://x.localhost".parse().unwrap()), "/");
        assert_eq!(origin_form(&"*".parse().unwrap()), "*");
    }

    #[test]
    fn log_fields_are_escaped() {
        let mut out = String::new();
        push_quoted(&mut |t: &str| out.push_str(t), "/a\"b\\c\n");
        assert_eq!(out, "/a\\\"b\\\\c\\x0a");
        assert_eq!(html_escape("<x&\">"), "&lt;x&amp;&quot;&gt;");
    }
}
