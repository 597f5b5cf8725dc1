//! The API's routes and handlers (paths under [`PREFIX`]):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/apps`, `POST /v1/apps` | list, create (`{"name"}`) |
//! | `GET /v1/apps/APP`, `DELETE /v1/apps/APP?confirm=APP` | info, destroy |
//! | `POST /v1/apps/APP/deployments` | deploy: a tar(.gz) body, or `{"source_url"}` |
//! | `GET /v1/apps/APP/deployments`, `GET /v1/deployments/ID[/stream]` | list, show, follow |
//! | `GET /v1/apps/APP/releases`, `POST /v1/apps/APP/rollback` | releases, `{"version"}` |
//! | `GET`, `PATCH /v1/apps/APP/config` | config vars, `{"set":{…},"unset":[…]}` |
//! | `GET`, `PATCH /v1/apps/APP/formation` | formation, `{"changes":[…]}` |
//! | `GET /v1/apps/APP/ps`, `POST /v1/apps/APP/restart` | containers, `{"target"}` |
//! | `GET /v1/apps/APP/cron` | scheduled jobs (cron.json) with their last and next runs |
//! | `POST /v1/apps/APP/run` | one-off (`Upgrade: slipway-attach` when attached) |
//! | `GET`, `POST /v1/apps/APP/domains`, `DELETE …/domains/DOMAIN` | custom domains |
//! | `GET /v1/apps/APP/logs?lines=N&follow=true&ps=web` | logs |
//! | `GET`, `POST /v1/keys`, `DELETE /v1/keys/NAME` | SSH keys that may push, `{"name","public_key"}` |
//!
//! On the unix socket (root only by its mode) every request is served; on TCP, only those
//! with `Authorization: Bearer TOKEN`.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;

use super::daemon::Daemon;
use super::deploy::{self, RollOutFailure};
use super::events::PLATFORM_LOG;
use super::http::{streamed, ApiError, ApiResult, JsonBody};
use super::runner::Size;
use super::wire::*;
use crate::applog::{self, LogLine};
use crate::build::app_name::check_app_name;
use crate::build::env_vars;
use crate::build::process_type::is_valid_type;
use crate::build::source::{BuildpackPolicy, BuildpackSource};
use crate::platform::git;
use crate::platform::model::{
    ConfigVars, Deployment, DeploymentStatus, FormationEntry, NewDeployment, Release,
    ReleaseStatus, SourceKind, DEFAULT_SIZE,
};

type D = State<Arc<Daemon>>;

/// Every route, for both listeners.
pub fn router(d: Arc<Daemon>) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/apps", get(list_apps).post(create_app))
        .route(
            "/apps/{app}",
            get(app_info).delete(destroy_app).patch(update_app),
        )
        .route(
            "/apps/{app}/github",
            axum::routing::put(super::github::link).delete(super::github::unlink),
        )
        .route(
            "/apps/{app}/deployments",
            get(list_deployments).post(create_deployment),
        )
        .route("/deployments/{id}", get(show_deployment))
        .route("/deployments/{id}/stream", get(stream_deployment))
        .route("/apps/{app}/releases", get(list_releases))
        .route("/apps/{app}/rollback", post(rollback))
        .route("/apps/{app}/config", get(get_config).patch(patch_config))
        .route(
            "/apps/{app}/formation",
            get(get_formation).patch(patch_formation),
        )
        .route("/apps/{app}/ps", get(ps))
        .route("/apps/{app}/cron", get(cron))
        .route("/apps/{app}/restart", post(restart))
        .route("/apps/{app}/run", post(super::attach::run))
        .route("/apps/{app}/domains", get(list_domains).post(add_domain))
        .route("/apps/{app}/domains/{domain}", delete(remove_domain))
        .route("/apps/{app}/logs", get(logs))
        .route("/keys", get(super::keys::list).post(super::keys::add))
        .route("/keys/{name}", delete(super::keys::remove));
    Router::new()
        .nest(PREFIX, api)
        .route(super::github::WEBHOOK_PATH, post(super::github::webhook))
        .route("/{repo}/{*rest}", any(super::git_http::serve))
        .fallback(|| async {
            ApiError::not_found(format!(
                "no such API path; this daemon serves {PREFIX}/…: update the slipway CLI to the daemon's version"
            ))
        })
        .with_state(d)
}

/// Serves the unix socket until `stop` turns true.
pub async fn serve_unix(
    d: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    serve(listener, router(d), stop).await
}

/// Serves TCP (token required), over TLS when `tls` is given, until `stop` turns true.
pub async fn serve_tcp(
    d: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(d.clone()).layer(axum::middleware::from_fn_with_state(d, require_token));
    match tls {
        None => serve(listener, app, stop).await,
        Some(config) => match super::tls::TlsListener::new(listener, config) {
            Ok(listener) => serve(listener, app, stop).await,
            Err(e) => eprintln!("slipway daemon: the TLS listener failed: {e}"),
        },
    }
}

async fn serve<L>(listener: L, app: Router, mut stop: tokio::sync::watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}

/// The token a request carries: `Authorization: Bearer TOKEN`, or HTTP Basic with the token
/// as the password (what git sends; the user name is not checked).
fn given_token(req: &Request) -> Option<String> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.trim()).ok()?;
    let (_, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(password.to_string())
}

/// The token, compared in constant time; webhooks prove themselves with their signature
/// instead.
async fn require_token(State(d): D, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/hooks/") {
        return next.run(req).await;
    }
    let ok =
        given_token(&req).is_some_and(|t| bool::from(t.as_bytes().ct_eq(d.token().as_bytes())));
    if !ok {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token: send `Authorization: Bearer TOKEN` with the token `slipway token` prints on the daemon's host (the CLI reads it from SLIPWAY_API_TOKEN; git sends it as the HTTP password)",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"slipway\""),
        );
        return response;
    }
    next.run(req).await
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// The app named in the path, or a 404 that says how to find or make it.
fn existing_app(d: &Daemon, app: &str) -> ApiResult<crate::platform::model::App> {
    Ok(d.store.get_app(app)?)
}

fn blocking_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("the request stopped: {e}"))
}

// ---- apps ----

async fn list_apps(State(d): D) -> ApiResult<Json<Vec<AppSummary>>> {
    let mut out = Vec::new();
    for app in d.store.apps()? {
        let release = d.store.current_release(&app.name)?.map(|r| r.version);
        out.push(AppSummary {
            url: d.url(&app.name),
            name: app.name,
            created_at: app.created_at,
            release,
        });
    }
    Ok(Json(out))
}

async fn create_app(
    State(d): D,
    JsonBody(req): JsonBody<CreateApp>,
) -> ApiResult<(StatusCode, Json<AppSummary>)> {
    check_app_name(&req.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let app = d.store.create_app(&req.name)?;
    d.log(&app.name, PLATFORM_LOG, "app created");
    d.events.refresh_routes(&app.name);
    Ok((
        StatusCode::CREATED,
        Json(AppSummary {
            url: d.url(&app.name),
            name: app.name,
            created_at: app.created_at,
            release: None,
        }),
    ))
}

async fn app_info(State(d): D, Path(app): Path<String>) -> ApiResult<Json<AppInfo>> {
    let a = existing_app(&d, &app)?;
    let release = d.store.current_release(&app)?;
    let formation = match &release {
        Some(r) => crate::platform::model::effective_formation(r, &d.store.formation(&app)?),
        None => d.store.formation(&app)?,
    };
    Ok(Json(AppInfo {
        url: d.url(&app),
        domains: d.store.domains(&app)?,
        last_deployment: d.store.deployments(&app)?.into_iter().next(),
        config_vars: a.config.len(),
        deploy_branch: a.deploy_branch,
        github: d.store.github_link(&app)?.map(|mut l| {
            l.repo = git::without_credentials(&l.repo);
            l
        }),
        name: a.name,
        created_at: a.created_at,
        release,
        formation,
    }))
}

async fn update_app(
    State(d): D,
    Path(app): Path<String>,
    JsonBody(change): JsonBody<AppChange>,
) -> ApiResult<Json<AppInfo>> {
    existing_app(&d, &app)?;
    if let Some(branch) = &change.deploy_branch {
        if branch.is_empty() {
            d.store.set_deploy_branch(&app, None)?;
        } else {
            git::check_branch_name(branch).map_err(ApiError::bad_request)?;
            d.store.set_deploy_branch(&app, Some(branch))?;
        }
    }
    app_info(State(d), Path(app)).await
}

#[derive(Deserialize)]
struct ConfirmQuery {
    confirm: Option<String>,
}

async fn destroy_app(
    State(d): D,
    Path(app): Path<String>,
    query: Result<Query<ConfirmQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    existing_app(&d, &app)?;
    let confirm = query.ok().and_then(|q| q.0.confirm);
    if confirm.as_deref() != Some(app.as_str()) {
        return Err(ApiError::bad_request(format!(
            "destroying app {app} removes its containers, releases, logs and build cache for good; confirm with its name: `slipway destroy {app} --confirm {app}`"
        )));
    }
    d.deployer
        .cancel_app(&d, &app, "the app was destroyed")
        .await;
    let lock = d.app_lock(&app);
    let _guard = lock.lock().await;
    let runner = d.runner.clone();
    let name = app.clone();
    tokio::task::spawn_blocking(move || runner.stop_app(&name))
        .await
        .map_err(blocking_error)?
        .map_err(|e| {
            ApiError::internal(format!(
                "the containers of {app} could not be stopped: {e}; nothing was removed, try again"
            ))
        })?;
    let releases = d.store.releases(&app)?;
    let deployments = d.store.deployments(&app)?;
    d.store.delete_app(&app)?;
    d.events.forget(&app);
    let d2 = d.clone();
    let name = app.clone();
    let leftovers =
        tokio::task::spawn_blocking(move || remove_app_files(&d2, &name, &releases, &deployments))
            .await
            .map_err(blocking_error)?;
    d.forget_lock(&app);
    if !leftovers.is_empty() {
        return Err(ApiError::internal(format!(
            "app {app} was destroyed, but some of its files could not be removed: {}",
            leftovers.join("; ")
        )));
    }
    Ok(Json(serde_json::json!({ "destroyed": app })))
}

/// Removes what a destroyed app leaves on disk: slugs no other app uses, its build cache, its
/// logs, its deployments' logs and work. Returns what could not be removed.
fn remove_app_files(
    d: &Daemon,
    app: &str,
    releases: &[Release],
    deployments: &[Deployment],
) -> Vec<String> {
    use crate::build::archive::remove_tree;
    let data = &d.config().data_dir;
    let mut paths = Vec::new();
    let mut slugs: Vec<&str> = releases.iter().map(|r| r.slug.as_str()).collect();
    slugs.sort();
    slugs.dedup();
    let slug_root = crate::build::slug::SlugStore::new(data)
        .root()
        .to_path_buf();
    for slug in slugs {
        if !crate::build::slug::is_slug_id(slug)
            || d.store.slug_used_elsewhere(slug, app).unwrap_or(true)
        {
            continue;
        }
        for name in [
            format!("{slug}.tar.zst"),
            format!("{slug}.slug.json"),
            format!("{slug}.json"),
            slug.to_string(),
        ] {
            paths.push(slug_root.join(name));
        }
    }
    if let Ok(cache) = crate::build::cache::BuildCache::new(data, app) {
        // The cache and the lock file builds of the app take in turn.
        paths.push(cache.dir().with_extension("lock"));
        paths.push(cache.dir().to_path_buf());
    }
    if let Ok(dir) = applog::app_dir(data, app) {
        paths.push(dir);
    }
    paths.push(git::repo_dir(data, app));
    for dep in deployments {
        paths.push(d.deployments_dir().join(format!("{}.log", dep.id)));
        paths.push(d.deployments_dir().join(dep.id.to_string()));
    }
    paths
        .into_iter()
        .filter_map(|p| {
            remove_tree(&p)
                .err()
                .map(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

// ---- deployments ----

async fn list_deployments(
    State(d): D,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Deployment>>> {
    existing_app(&d, &app)?;
    Ok(Json(d.store.deployments(&app)?))
}

/// A URL the daemon may download: http(s), printable, of reasonable length.
fn check_source_url(url: &str) -> ApiResult<()> {
    let lower = url.to_ascii_lowercase();
    let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
        && url.len() <= 2048
        && url.len() > "http://".len()
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "source URL {:?} is not allowed: give an http:// or https:// URL of a .tar, .tar.gz or .tgz archive (at most 2048 characters, no spaces)",
            url.chars().take(100).collect::<String>()
        )))
    }
}

/// What a deployment request asks for: the body is an archive, or JSON naming a URL or the
/// linked repository's branch.
async fn deployment_source(
    d: &Daemon,
    app: &str,
    req: Request,
    upload_to: &std::path::Path,
) -> ApiResult<(NewDeployment, bool)> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        let JsonBody(body): JsonBody<DeployRequest> = JsonBody::from_request(req, &()).await?;
        return match (body.source_url, body.branch) {
            (Some(url), None) => {
                check_source_url(&url)?;
                Ok((
                    NewDeployment {
                        source: url.clone(),
                        kind: SourceKind::Url,
                        url: Some(url),
                        ..Default::default()
                    },
                    false,
                ))
            }
            (None, Some(branch)) => Ok((super::github::branch_deployment(d, app, &branch)?, false)),
            _ => Err(ApiError::bad_request(
                "give either {\"source_url\": URL} or {\"branch\": NAME} (a branch of the linked GitHub repository)",
            )),
        };
    }
    let Query(origin): Query<ArchiveOrigin> =
        Query::try_from_uri(req.uri()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(commit) = &origin.commit {
        if !git::is_commit_id(commit) {
            return Err(ApiError::bad_request(format!(
                "commit {commit:?} is not a full commit id (40 or 64 lower-case hex digits)"
            )));
        }
    }
    if let Some(branch) = &origin.branch {
        git::check_branch_name(branch).map_err(ApiError::bad_request)?;
    }
    let size = receive_upload(req, upload_to, d.opts.archive_limits.max_archive_bytes).await?;
    let source = match (&origin.branch, &origin.commit) {
        (Some(branch), Some(commit)) => format!("git push {branch} {}", &commit[..7]),
        (None, Some(commit)) => format!("git {}", &commit[..7]),
        _ => format!("archive ({})", human_bytes(size)),
    };
    Ok((
        NewDeployment {
            source,
            kind: SourceKind::Archive,
            version: origin.commit,
            git_branch: origin.branch,
            ..Default::default()
        },
        true,
    ))
}

async fn create_deployment(
    State(d): D,
    Path(app): Path<String>,
    req: Request,
) -> ApiResult<(StatusCode, Json<DeploymentCreated>)> {
    existing_app(&d, &app)?;
    let dir = d.deployments_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(".upload-{}", random_hex()));
    let (new, uploaded) = match deployment_source(&d, &app, req, &tmp).await {
        Ok(x) => x,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    let upload = uploaded.then_some(tmp);
    let created = enqueue_deployment(&d, &app, &new, upload.as_deref()).await;
    if let Some(tmp) = &upload {
        let _ = tokio::fs::remove_file(tmp).await;
    }
    Ok((StatusCode::ACCEPTED, Json(created?)))
}

/// Records a deployment of `app` (its archive moved from `upload` into place) and makes
/// sure the app's worker runs it.
pub(super) async fn enqueue_deployment(
    d: &Arc<Daemon>,
    app: &str,
    new: &NewDeployment,
    upload: Option<&std::path::Path>,
) -> ApiResult<DeploymentCreated> {
    let ahead = d
        .store
        .deployments(app)?
        .into_iter()
        .find(|x| x.status.is_active() || x.status == DeploymentStatus::Queued)
        .map(|x| x.id);
    let dep = d.store.create_deployment(app, new)?;
    if let Some(tmp) = upload {
        let dest = deploy::archive_path(d, dep.id);
        let placed = async {
            tokio::fs::create_dir_all(dest.parent().expect("has a parent")).await?;
            tokio::fs::rename(tmp, &dest).await
        }
        .await;
        if let Err(e) = placed {
            let reason = format!("the upload could not be kept: {e}");
            let _ = d
                .store
                .set_deployment_status(dep.id, DeploymentStatus::Aborted, Some(&reason));
            return Err(ApiError::internal(reason));
        }
    }
    d.deployer.enqueue(d, app);
    Ok(DeploymentCreated {
        deployment: dep,
        queued_behind: ahead,
    })
}

use axum::extract::FromRequest as _;

/// Writes the request body to `path`, at most `limit` bytes.
async fn receive_upload(req: Request, path: &std::path::Path, limit: u64) -> ApiResult<u64> {
    let mut body = req.into_body();
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())))?;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(format!("the upload broke off: {e}; deploy again"))
        })?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the archive is larger than {limit} bytes; deploy a smaller one (leave dependencies and build output out)"),
                ));
            }
            file.write_all(&data)
                .await
                .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
        }
    }
    if total == 0 {
        return Err(ApiError::bad_request(
            "the request has no archive: send a .tar, .tar.gz or .tgz as the body, or JSON {\"source_url\": …}",
        ));
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
    Ok(total)
}

/// 16 random hex digits, for temporary names.
fn random_hex() -> String {
    let mut b = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    hex::encode(b)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} bytes"),
    }
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "deployment id {id:?} is not a number; `slipway deployments -a APP` lists them"
        ))
    })
}

fn existing_deployment(d: &Daemon, id: &str) -> ApiResult<Deployment> {
    let id = parse_id(id)?;
    d.store.deployment(id)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no deployment {id}; `slipway deployments -a APP` lists an app's deployments"
        ))
    })
}

async fn show_deployment(State(d): D, Path(id): Path<String>) -> ApiResult<Json<DeploymentDetail>> {
    let dep = existing_deployment(&d, &id)?;
    let path = d.deployments_dir().join(format!("{}.log", dep.id));
    let log = tokio::fs::read(&path)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(Json(DeploymentDetail {
        url: (dep.status == DeploymentStatus::Success).then(|| d.url(&dep.app)),
        deployment: dep,
        log,
    }))
}

async fn stream_deployment(State(d): D, Path(id): Path<String>) -> ApiResult<Response> {
    let dep = existing_deployment(&d, &id)?;
    let (tx, response) = streamed("application/x-ndjson");
    deploy::follow(d, dep.id, tx);
    Ok(response)
}

// ---- releases ----

async fn list_releases(State(d): D, Path(app): Path<String>) -> ApiResult<Json<Vec<Release>>> {
    existing_app(&d, &app)?;
    Ok(Json(d.store.releases(&app)?))
}

/// Rolls out `release` (new, pending) under the app's lock the caller holds; on failure the
/// message says what still serves.
async fn apply_release(d: &Arc<Daemon>, release: &Release) -> ApiResult<()> {
    let events = d.clone();
    let app = release.app.clone();
    let sink = Arc::new(move |line: &str| events.log(&app, PLATFORM_LOG, line));
    deploy::roll_out(d, release, sink).await.map_err(|e| {
        let serving = match d.store.current_release(&release.app) {
            Ok(Some(r)) => format!("{} keeps serving", r.label()),
            _ => "no release serves".into(),
        };
        let status = match e {
            RollOutFailure::Prepare(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RollOutFailure::Rollout(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(
            status,
            format!(
                "release {} ({}) did not start: {e}; {serving}",
                release.label(),
                release.cause
            ),
        )
    })
}

async fn rollback(
    State(d): D,
    Path(app): Path<String>,
    JsonBody(req): JsonBody<Rollback>,
) -> ApiResult<Json<Release>> {
    existing_app(&d, &app)?;
    let lock = d.app_lock(&app);
    let _guard = lock.lock().await;
    let target = d.store.release(&app, req.version)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "app {app} has no release v{}; `slipway releases -a {app}` lists them",
            req.version
        ))
    })?;
    if target.status != ReleaseStatus::Succeeded {
        return Err(ApiError::conflict(format!(
            "v{} never went live ({}); roll back to a release that did (`slipway releases -a {app}`)",
            target.version,
            target.status.as_str()
        )));
    }
    let release = d.store.create_release(
        &app,
        &target.slug,
        &target.stack,
        &target.config,
        &target.process_types,
        &format!("rollback to {}", target.label()),
    )?;
    apply_release(&d, &release).await?;
    // The app's config vars follow the release it runs.
    d.store.set_config(&app, &target.config)?;
    Ok(Json(
        d.store.release(&app, release.version)?.unwrap_or(release),
    ))
}

// ---- config vars ----

async fn get_config(State(d): D, Path(app): Path<String>) -> ApiResult<Json<ConfigVars>> {
    Ok(Json(existing_app(&d, &app)?.config))
}

/// Checks a config change before anything is saved.
fn check_config_change(d: &Daemon, change: &ConfigChange) -> ApiResult<()> {
    if change.set.is_empty() && change.unset.is_empty() {
        return Err(ApiError::bad_request(
            "nothing to change: give KEY=VALUE pairs to set, or KEY names to unset",
        ));
    }
    for (k, v) in &change.set {
        env_vars::check(k, v).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if k == "BUILDPACK_URL" {
            let policy = BuildpackPolicy {
                allow_local: d.config().allow_local_buildpacks,
            };
            BuildpackSource::parse_with(v, std::path::Path::new("/nonexistent"), policy)
                .map_err(|e| ApiError::bad_request(format!("config var BUILDPACK_URL: {e}")))?;
        }
    }
    for k in &change.unset {
        env_vars::check_name(k).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(())
}

async fn patch_config(
    State(d): D,
    Path(app): Path<String>,
    JsonBody(change): JsonBody<ConfigChange>,
) -> ApiResult<Json<ConfigChanged>> {
    existing_app(&d, &app)?;
    check_config_change(&d, &change)?;
    let lock = d.app_lock(&app);
    let _guard = lock.lock().await;
    let old = existing_app(&d, &app)?.config;
    let mut new = old.clone();
    for (k, v) in &change.set {
        new.insert(k.clone(), v.clone());
    }
    for k in &change.unset {
        new.remove(k);
    }
    let mut cause = Vec::new();
    if !change.set.is_empty() {
        cause.push(format!(
            "set {}",
            change.set.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !change.unset.is_empty() {
        cause.push(format!("unset {}", change.unset.join(", ")));
    }
    let cause = cause.join("; ");
    d.store.set_config(&app, &new)?;
    let Some(current) = d.store.current_release(&app)? else {
        d.log(
            &app,
            PLATFORM_LOG,
            &format!("config vars changed ({cause})"),
        );
        return Ok(Json(ConfigChanged {
            config: new,
            release: None,
        }));
    };
    let release = d.store.create_release(
        &app,
        &current.slug,
        &current.stack,
        &new,
        &current.process_types,
        &cause,
    )?;
    if let Err(e) = apply_release(&d, &release).await {
        // The change did not take: the config vars stay those of the release that serves.
        d.store.set_config(&app, &old)?;
        return Err(ApiError::new(
            e.status,
            format!("{}; the config change was undone", e.message),
        ));
    }
    Ok(Json(ConfigChanged {
        config: new,
        release: Some(release.version),
    }))
}

// ---- formation ----

async fn get_formation(
    State(d): D,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<FormationEntry>>> {
    existing_app(&d, &app)?;
    let saved = d.store.formation(&app)?;
    Ok(Json(match d.store.current_release(&app)? {
        Some(r) => crate::platform::model::effective_formation(&r, &saved),
        None => saved,
    }))
}

async fn patch_formation(
    State(d): D,
    Path(app): Path<String>,
    JsonBody(req): JsonBody<ScaleChange>,
) -> ApiResult<Json<Vec<FormationEntry>>> {
    existing_app(&d, &app)?;
    if req.changes.is_empty() {
        return Err(ApiError::bad_request(
            "nothing to scale: give TYPE=COUNT[:SIZE] pairs, e.g. web=2 worker=1:L",
        ));
    }
    let lock = d.app_lock(&app);
    let _guard = lock.lock().await;
    let current = d.store.current_release(&app)?;
    let saved = d.store.formation(&app)?;
    let base = match &current {
        Some(r) => crate::platform::model::effective_formation(r, &saved),
        None => saved.clone(),
    };
    let mut changed = Vec::new();
    for c in &req.changes {
        if !is_valid_type(&c.kind) {
            return Err(ApiError::bad_request(format!(
                "process type {:?} is not allowed: {}",
                c.kind,
                crate::build::process_type::TYPE_RULE
            )));
        }
        if let Some(r) = &current {
            if r.command(&c.kind).is_none() || c.kind == crate::platform::model::POSTDEPLOY {
                return Err(ApiError::bad_request(format!(
                    "{} has no process type {:?} (it has: {}); add it to the Procfile and deploy",
                    r.label(),
                    c.kind,
                    r.process_types
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if let Some(size) = &c.size {
            if let Err(e) = Size::parse(size) {
                return Err(ApiError::bad_request(format!("{}: {e}", c.kind)));
            }
        }
        if let Some(count) = c.count {
            if count > crate::platform::formation::MAX_COUNT {
                return Err(ApiError::bad_request(format!(
                    "{} containers of {}: at most {} per type",
                    count,
                    c.kind,
                    crate::platform::formation::MAX_COUNT
                )));
            }
        }
        let was = base.iter().find(|e| e.kind == c.kind);
        changed.push(FormationEntry {
            kind: c.kind.clone(),
            count: c
                .count
                .or(was.map(|e| e.count))
                .unwrap_or(u32::from(c.kind == "web")),
            size: c
                .size
                .as_deref()
                .and_then(|s| Size::parse(s).ok())
                .map(|s| s.name().to_string())
                .or(was.map(|e| e.size.clone()))
                .unwrap_or_else(|| DEFAULT_SIZE.into()),
        });
    }
    d.store.set_formation(&app, &changed)?;
    let summary = changed
        .iter()
        .map(|e| format!("{}={}:{}", e.kind, e.count, e.size))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(r) = &current {
        let formation = d.formation_for(r)?;
        let runner = d.runner.clone();
        let name = app.clone();
        let scaled = tokio::task::spawn_blocking(move || runner.scale(&name, &formation))
            .await
            .map_err(blocking_error)?;
        if let Err(e) = scaled {
            d.store
                .set_formation(&app, &saved_or_default(&base, &changed))?;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("scaling {app} to {summary} failed: {e}; the formation was left as it was"),
            ));
        }
    }
    d.log(&app, PLATFORM_LOG, &format!("scaled to {summary}"));
    let saved = d.store.formation(&app)?;
    Ok(Json(match current {
        Some(r) => crate::platform::model::effective_formation(&r, &saved),
        None => saved,
    }))
}

/// The entries of `base` for the types `changed` touched: what to save to undo a change.
fn saved_or_default(base: &[FormationEntry], changed: &[FormationEntry]) -> Vec<FormationEntry> {
    changed
        .iter()
        .map(|c| {
            base.iter()
                .find(|b| b.kind == c.kind)
                .cloned()
                .unwrap_or(FormationEntry {
                    kind: c.kind.clone(),
                    count: u32::from(c.kind == "web"),
                    size: DEFAULT_SIZE.into(),
                })
        })
        .collect()
}

async fn ps(State(d): D, Path(app): Path<String>) -> ApiResult<Json<PsList>> {
    existing_app(&d, &app)?;
    let runner = d.runner.clone();
    let containers = tokio::task::spawn_blocking(move || runner.ps(&app))
        .await
        .map_err(blocking_error)?;
    Ok(Json(PsList { containers }))
}

async fn cron(
    State(d): D,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<super::runner::CronJobInfo>>> {
    existing_app(&d, &app)?;
    let runner = d.runner.clone();
    let jobs = tokio::task::spawn_blocking(move || runner.cron(&app))
        .await
        .map_err(blocking_error)?;
    Ok(Json(jobs))
}

async fn restart(
    State(d): D,
    Path(app): Path<String>,
    JsonBody(req): JsonBody<RestartRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    existing_app(&d, &app)?;
    if let Some(t) = &req.target {
        if !applog::is_valid_source(t) && !is_valid_type(t) {
            return Err(ApiError::bad_request(format!(
                "{t:?} is neither a process type nor a container name (web, web-2); `slipway ps -a {app}` lists them"
            )));
        }
    }
    if d.store.current_release(&app)?.is_none() {
        return Err(ApiError::conflict(format!(
            "app {app} runs nothing yet; deploy it first (`slipway deploy -a {app} DIR`)"
        )));
    }
    let lock = d.app_lock(&app);
    let _guard = lock.lock().await;
    let runner = d.runner.clone();
    let (name, target) = (app.clone(), req.target.clone());
    tokio::task::spawn_blocking(move || runner.restart(&name, target.as_deref()))
        .await
        .map_err(blocking_error)?
        .map_err(|e| ApiError::bad_request(format!("restart of {app} failed: {e}")))?;
    let what = req
        .target
        .clone()
        .unwrap_or_else(|| "all containers".into());
    d.log(&app, PLATFORM_LOG, &format!("restart of {what} requested"));
    Ok(Json(serde_json::json!({ "restarted": what })))
}

// ---- domains ----

async fn list_domains(State(d): D, Path(app): Path<String>) -> ApiResult<Json<Vec<String>>> {
    existing_app(&d, &app)?;
    Ok(Json(d.store.domains(&app)?))
}

fn check_domain(d: &Daemon, domain: &str) -> ApiResult<String> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if !super::routes::is_host_name(&domain) || !domain.contains('.') {
        return Err(ApiError::bad_request(format!(
            "{domain:?} is not a host name: give a domain such as www.example.com"
        )));
    }
    let base = &d.config().base_domain;
    if domain == *base || domain.ends_with(&format!(".{base}")) {
        return Err(ApiError::bad_request(format!(
            "{domain} is under the base domain {base}, where every app has its own NAME.{base}; add a domain outside it"
        )));
    }
    Ok(domain)
}

async fn add_domain(
    State(d): D,
    Path(app): Path<String>,
    JsonBody(req): JsonBody<DomainRequest>,
) -> ApiResult<(StatusCode, Json<Vec<String>>)> {
    existing_app(&d, &app)?;
    let domain = check_domain(&d, &req.domain)?;
    d.store.add_domain(&app, &domain)?;
    d.events.refresh_routes(&app);
    d.log(&app, PLATFORM_LOG, &format!("domain {domain} added"));
    Ok((StatusCode::CREATED, Json(d.store.domains(&app)?)))
}

async fn remove_domain(
    State(d): D,
    Path((app, domain)): Path<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    existing_app(&d, &app)?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    d.store.remove_domain(&app, &domain)?;
    d.events.refresh_routes(&app);
    d.log(&app, PLATFORM_LOG, &format!("domain {domain} removed"));
    Ok(Json(d.store.domains(&app)?))
}

// ---- logs ----

#[derive(Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
    ps: Option<String>,
}

/// Whether `line` is of process `ps`: `web` takes `web`, `web-1`, `web-2`…; `web-2` only
/// itself.
fn of_process(line: &LogLine, ps: Option<&str>) -> bool {
    match ps {
        None => true,
        Some(p) => {
            line.process == p
                || line
                    .process
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
        }
    }
}

async fn logs(
    State(d): D,
    Path(app): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    existing_app(&d, &app)?;
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "bad logs query: {e}; use lines=N (a number), follow=true|false, ps=TYPE or CONTAINER"
        ))
    })?;
    let lines = q.lines.unwrap_or(100).min(100_000);
    let data = d.config().data_dir.clone();
    let mut follower = if q.follow {
        Some(applog::Follow::new(&data, &app).map_err(ApiError::internal)?)
    } else {
        None
    };
    let past = tokio::task::spawn_blocking({
        let (data, app) = (data.clone(), app.clone());
        let n = if q.ps.is_some() {
            lines.saturating_mul(20).max(lines)
        } else {
            lines
        };
        move || applog::tail(&data, &app, n)
    })
    .await
    .map_err(blocking_error)?
    .map_err(ApiError::internal)?;
    let ps = q.ps.clone();
    let mut past: Vec<LogLine> = past
        .into_iter()
        .filter(|l| of_process(l, ps.as_deref()))
        .collect();
    let skip = past.len().saturating_sub(lines);
    past.drain(..skip);
    let (tx, response) = streamed("text/plain; charset=utf-8");
    tokio::spawn(async move {
        let mut text = String::new();
        for l in &past {
            text.push_str(&l.to_string());
            text.push('\n');
        }
        if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
            return;
        }
        let Some(mut follow) = follower.take() else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tx.is_closed() {
                return;
            }
            let Ok(new) = follow.poll() else { return };
            let mut text = String::new();
            for l in new.iter().filter(|l| of_process(l, ps.as_deref())) {
                text.push_str(&l.to_string());
                text.push('\n');
            }
            if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_filters_take_a_type_or_one_container() {
        let line = |p: &str| LogLine {
            time: crate::applog::Timestamp { micros: 0 },
            source: "app".into(),
            process: p.into(),
            message: String::new(),
        };
        assert!(of_process(&line("web-1"), Some("web")));
        assert!(of_process(&line("web"), Some("web")));
        assert!(!of_process(&line("webhook-1"), Some("web")));
        assert!(of_process(&line("web-2"), Some("web-2")));
        assert!(!of_process(&line("web-2"), Some("web-1")));
        assert!(of_process(&line("router"), None));
    }

    #[test]
    fn source_urls_are_http_only() {
        assert!(check_source_url("https://example.com/app.tgz").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://x/y",
            "http://",
            "https://a b",
            "-o /x",
        ] {
            assert!(check_source_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_are_written_the_users_way() {
        assert_eq!(human_bytes(12), "12 bytes");
        assert_eq!(human_bytes(12_345), "12.3 kB");
    }
}
