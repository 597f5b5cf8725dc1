//! The API client the CLI uses: HTTP/1.1 over the daemon's unix socket, or over TCP with the
//! bearer token; JSON calls, streamed responses read line by line, and the upgraded
//! connection of an attached run.
use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::wire::{ErrorBody, ATTACH_PROTOCOL};

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Its unix socket (root only).
    Unix(PathBuf),
    /// `HOST:PORT` of its TCP listener, with the token; over TLS when `tls`.
    Tcp {
        addr: String,
        token: String,
        tls: bool,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp {
                addr, tls: true, ..
            } => write!(f, "https://{addr}"),
            Endpoint::Tcp { addr, .. } => write!(f, "http://{addr}"),
        }
    }
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the slipway daemon at {endpoint}: {source}; {hint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
    /// The daemon's answer: its message says what to do.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("talking to the slipway daemon at {endpoint}: {message}")]
    Protocol { endpoint: String, message: String },
}

/// A request body: bytes, or a stream fed through a channel.
pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A body streamed from the returned sender (ends when it is dropped; an error aborts it).
pub fn channel_body() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, ReqBody) {
    struct Channel(mpsc::Receiver<Result<Bytes, std::io::Error>>);
    impl http_body::Body for Channel {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|m| m.map(|r| r.map(Frame::data)))
        }
    }
    let (tx, rx) = mpsc::channel(8);
    (tx, Channel(rx).boxed())
}

/// The client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn protocol(&self, message: impl ToString) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.to_string(),
            message: message.to_string(),
        }
    }

    /// Sends `req` on a new connection.
    async fn send(
        &self,
        mut req: Request<ReqBody>,
        upgrades: bool,
    ) -> Result<Response<Incoming>, ClientError> {
        let connect_err = |source: std::io::Error, hint| ClientError::Connect {
            endpoint: self.endpoint.to_string(),
            source,
            hint,
        };
        let io: Box<dyn Io> = match &self.endpoint {
            Endpoint::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| {
                        let hint = match e.kind() {
                            std::io::ErrorKind::PermissionDenied => "the socket is root's: run slipway as root (sudo), or use the TCP API with a token (SLIPWAY_API_URL, SLIPWAY_API_TOKEN)",
                            _ => "start the daemon (`systemctl start slipway`, or `slipway daemon`), or point SLIPWAY_SOCKET at its socket",
                        };
                        connect_err(e, hint)
                    })?,
            ),
            Endpoint::Tcp { addr, token, tls } => {
                let value = format!("Bearer {token}");
                req.headers_mut().insert(
                    header::AUTHORIZATION,
                    value.parse().map_err(|_| {
                        self.protocol("the API token holds characters a header cannot carry; copy it again from `slipway token`")
                    })?,
                );
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
                    connect_err(
                        e,
                        "check SLIPWAY_API_URL, and that the daemon listens there (--listen)",
                    )
                })?;
                if *tls {
                    Box::new(tls_connect(addr, tcp).await.map_err(|e| {
                        connect_err(
                            e,
                            "the daemon's certificate must be trusted: set SLIPWAY_API_CA to its CA's PEM file, or use http:// if the daemon has no certificate",
                        )
                    })?)
                } else {
                    Box::new(tcp)
                }
            }
        };
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp { addr, .. } => addr.clone(),
        };
        if let Ok(v) = host.parse() {
            req.headers_mut().insert(header::HOST, v);
        }
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.protocol(e))?;
        if upgrades {
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
        } else {
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        sender.send_request(req).await.map_err(|e| self.protocol(e))
    }

    /// The error in a non-success answer.
    async fn error_of(&self, resp: Response<Incoming>) -> ClientError {
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                format!(
                    "the daemon answered {status}: {}",
                    String::from_utf8_lossy(&bytes).trim()
                )
            });
        ClientError::Api { status, message }
    }

    /// Sends `req` and reads its JSON answer.
    async fn answer<T: DeserializeOwned>(&self, req: Request<ReqBody>) -> Result<T, ClientError> {
        let resp = self.send(req, false).await?;
        if !resp.status().is_success() {
            return Err(self.error_of(resp).await);
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("unexpected answer: {e}")))
    }

    fn request(&self, method: Method, path: &str, body: ReqBody) -> Request<ReqBody> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(body)
            .expect("a valid request")
    }

    /// A call with a JSON body (or none) and a JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let mut req = match body {
            Some(b) => self.request(
                method,
                path,
                full(serde_json::to_vec(b).expect("serializes")),
            ),
            None => self.request(method, path, full(Bytes::new())),
        };
        if body.is_some() {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
        }
        self.answer(req).await
    }

    /// A call whose answer is read as it comes.
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
        content_type: Option<&'static str>,
    ) -> Result<Lines, ClientError> {
        let mut req = self.request(method, path, body);
        if let Some(ct) = content_type {
            req.headers_mut()
                .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
        }
        let resp = self.send(req, false).await?;
        if !resp.status().is_success() {
            return Err(self.error_of(resp).await);
        }
        Ok(Lines {
            body: resp.into_body(),
            buf: Vec::new(),
            done: false,
        })
    }

    /// Sends an upload (a streamed body) and reads the JSON answer.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        body: ReqBody,
        content_type: &'static str,
    ) -> Result<T, ClientError> {
        let mut req = self.request(Method::POST, path, body);
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        self.answer(req).await
    }

    /// Posts `body` (JSON) asking to upgrade to the attach protocol; the upgraded stream.
    pub async fn attach(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        let mut req = self.request(
            Method::POST,
            path,
            full(serde_json::to_vec(body).expect("serializes")),
        );
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        h.insert(
            header::UPGRADE,
            http::HeaderValue::from_static(ATTACH_PROTOCOL),
        );
        let resp = self.send(req, true).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.error_of(resp).await);
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| self.protocol(e))?;
        Ok(TokioIo::new(upgraded))
    }
}

/// A streamed answer, read by line or by chunk.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    /// The next line (without its line break); `None` at the end.
    pub async fn next_line(&mut self) -> Result<Option<String>, std::io::Error> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                ));
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.buf);
                return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => self.done = true,
            }
        }
    }

    /// The next chunk of bytes as they came; `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        if !self.buf.is_empty() {
            return Ok(Some(Bytes::from(std::mem::take(&mut self.buf))));
        }
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(None),
            }
        }
    }
}

/// A connection of either kind.
/// TLS over `tcp` to `addr` (`HOST:PORT`), trusting the CA file SLIPWAY_API_CA names, else
/// the system's bundle (SSL_CERT_FILE, or Debian's).
async fn tls_connect(
    addr: &str,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let ca_file = std::env::var_os("SLIPWAY_API_CA")
        .or_else(|| std::env::var_os("SSL_CERT_FILE"))
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca_file)
        .map_err(|e| invalid(format!("reading {}: {e}", ca_file.to_string_lossy())))?
        .flatten()
    {
        let _ = roots.add(cert);
    }
    let config = ClientConfig::builder_with_provider(super::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| invalid(format!("{host}: {e}")))?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}
