//! HTTP plumbing of the API: errors as `{"error": …}` responses, JSON request bodies read with
//! a bound and a clear message when malformed, and bodies streamed from a channel.
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::wire::{ErrorBody, MAX_JSON_BODY};
use crate::platform::store::StoreError;

/// An error answer: a status and a message that says what to do next.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.message,
        })
        .expect("serializes");
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::AppExists(_) | StoreError::DomainTaken { .. } => StatusCode::CONFLICT,
            StoreError::NoSuchApp(_) | StoreError::NoSuchDomain { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body: at most [`MAX_JSON_BODY`] bytes, and a 400 that quotes the parser
/// when it is not the JSON expected.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let limited = http_body_util::Limited::new(req.into_body(), MAX_JSON_BODY);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body could not be read ({e}); JSON requests are at most {MAX_JSON_BODY} bytes"),
                )
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request(format!(
                "malformed JSON request body: {e}; send the JSON object this endpoint documents (see `slipway help`)"
            ))
        })
    }
}

/// A response body fed by a channel: each message is sent as it comes, the body ends when
/// every sender is gone.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// A streamed response (`application/x-ndjson` or text) and the sender that feeds it.
pub fn streamed(content_type: &'static str) -> (mpsc::Sender<Bytes>, Response) {
    let (tx, rx) = mpsc::channel(64);
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, content_type)
        .header(axum::http::header::CACHE_CONTROL, "no-cache")
        .body(axum::body::Body::new(ChannelBody(rx)))
        .expect("a valid response");
    (tx, response)
}
