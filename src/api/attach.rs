//! `POST /v1/apps/APP/run`: a one-off container of the current release. Detached, it answers
//! with the container's name and its output goes to the app's logs. Attached, the request
//! upgrades the connection (`Upgrade: slipway-attach`) and the two sides exchange frames
//! ([`super::wire::frame`]): input from the client, output and finally the exit code from the
//! daemon.
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::daemon::Daemon;
use super::events::PLATFORM_LOG;
use super::http::{ApiError, ApiResult, JsonBody};
use super::runner::{OneOffIo, OneOffMode, Size};
use super::wire::{frame, RunRequest, RunStarted, ATTACH_PROTOCOL};
use crate::build::env_vars;

/// Longest command line of a one-off.
const MAX_COMMAND: usize = 64 * 1024;

pub async fn run(
    State(d): State<Arc<Daemon>>,
    Path(app): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    d.store.get_app(&app)?;
    let upgrade_asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(ATTACH_PROTOCOL));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let JsonBody(spec): JsonBody<RunRequest> = JsonBody::from_request(req, &()).await?;
    if spec.command.trim().is_empty() || spec.command.len() > MAX_COMMAND {
        return Err(ApiError::bad_request(format!(
            "give the command to run (at most {MAX_COMMAND} bytes), e.g. `slipway run -a {app} -- bash`"
        )));
    }
    let size = match &spec.size {
        Some(s) => Size::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Size::M,
    };
    for (k, v) in &spec.env {
        env_vars::check(k, v).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if !spec.detached && !upgrade_asked {
        return Err(ApiError::bad_request(format!(
            "an attached run upgrades the connection (`Upgrade: {ATTACH_PROTOCOL}`): use the slipway CLI, or run it --detached"
        )));
    }
    let current = d.store.current_release(&app)?.ok_or_else(|| {
        ApiError::conflict(format!(
            "app {app} has no release to run a command in; deploy it first (`slipway deploy -a {app} DIR`)"
        ))
    })?;
    let mode = match (spec.detached, spec.tty) {
        (true, _) => OneOffMode::Detached,
        (false, true) => OneOffMode::Terminal {
            rows: spec.rows.unwrap_or(0),
            cols: spec.cols.unwrap_or(0),
        },
        (false, false) => OneOffMode::Attached,
    };
    let d2 = d.clone();
    let spec2 = spec.clone();
    let one_off = tokio::task::spawn_blocking(move || {
        let release = d2.runner_release(&current)?;
        d2.runner
            .one_off(&release, &spec2.command, size, &spec2.env, mode)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the one-off container could not start: {e}"),
                )
            })
    })
    .await
    .map_err(|e| ApiError::internal(format!("the run stopped: {e}")))??;
    d.log(
        &app,
        PLATFORM_LOG,
        &format!(
            "{} started ({}{})",
            one_off.name,
            if spec.detached {
                "detached"
            } else {
                "attached"
            },
            if spec.tty { ", terminal" } else { "" }
        ),
    );
    if spec.detached {
        return Ok(Json(RunStarted {
            container: one_off.name,
        })
        .into_response());
    }
    let Some(io) = one_off.io else {
        return Err(ApiError::internal(
            "the supervisor started the one-off without its input and output; run it --detached and read `slipway logs`",
        ));
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => bridge(TokioIo::new(upgraded), io).await,
            Err(e) => eprintln!("slipway daemon: attaching to {}: {e}", one_off.name),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(ATTACH_PROTOCOL));
    Ok(response)
}

/// Copies frames between the client and the process until it exits, then sends its code.
async fn bridge<S>(stream: S, io: OneOffIo)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut from_client, to_client) = tokio::io::split(stream);
    let to_client = std::sync::Arc::new(tokio::sync::Mutex::new(to_client));
    let OneOffIo {
        input,
        output,
        errors,
        wait,
        resize,
    } = io;
    let input_task = tokio::spawn(async move {
        let mut input = input.map(tokio::fs::File::from_std);
        while let Ok(Some((kind, payload))) = frame::read(&mut from_client).await {
            match kind {
                frame::STDIN => {
                    if let Some(i) = input.as_mut() {
                        if i.write_all(&payload).await.is_err() || i.flush().await.is_err() {
                            input = None;
                        }
                    }
                }
                frame::STDIN_EOF => input = None,
                frame::RESIZE if payload.len() == 4 => {
                    let rows = u16::from_be_bytes([payload[0], payload[1]]);
                    let cols = u16::from_be_bytes([payload[2], payload[3]]);
                    if let Some(resize) = &resize {
                        resize(rows, cols);
                    }
                }
                _ => {}
            }
        }
    });
    let pumps = [
        Some((output, frame::OUTPUT)),
        errors.map(|e| (e, frame::ERRORS)),
    ]
    .into_iter()
    .flatten()
    .map(|(file, kind)| {
        let to_client = to_client.clone();
        tokio::spawn(pump(tokio::fs::File::from_std(file), kind, to_client))
    })
    .collect::<Vec<_>>();
    for p in pumps {
        let _ = p.await;
    }
    let code = tokio::task::spawn_blocking(wait)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let mut to_client = to_client.lock().await;
    let last = match code {
        Ok(code) => frame::encode(frame::EXIT, &code.to_be_bytes()),
        Err(message) => frame::encode(frame::ERROR, message.as_bytes()),
    };
    let _ = to_client.write_all(&last).await;
    let _ = to_client.shutdown().await;
    input_task.abort();
}

/// Sends what `file` gives as frames of `kind` until it ends (it keeps reading when the
/// client is gone: the process must not block on a full pipe).
async fn pump<W: tokio::io::AsyncWrite + Unpin>(
    mut file: tokio::fs::File,
    kind: u8,
    to_client: std::sync::Arc<tokio::sync::Mutex<W>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut client_gone = false;
    loop {
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if !client_gone => {
                let mut w = to_client.lock().await;
                client_gone = w.write_all(&frame::encode(kind, &buf[..n])).await.is_err();
            }
            Ok(_) => {}
        }
    }
}
