//! Apps linked to a GitHub repository: a push to the linked branch deploys.
//!
//! `POST /hooks/github` takes GitHub's webhook deliveries. It needs no API token; each
//! delivery proves itself with `X-Hub-Signature-256`, the HMAC-SHA256 of the raw body under
//! the link's secret, compared in constant time. The repository the payload names picks the
//! links to consider (several apps may link one repository, on different branches);
//! `?app=NAME` narrows it to one.
//!
//! * `ping` → 200 once the signature holds.
//! * `push` to the linked branch → one deployment per app of exactly the `after` commit,
//!   fetched from the link's URL (not from the payload), with SOURCE_VERSION set.
//! * Pushes to other branches, of tags, or deleting the branch → 200 with the reason.
//! * A delivery id (`X-GitHub-Delivery`) seen before → 200 naming the deployment it made;
//!   GitHub redelivers on timeouts, and a redelivery must not deploy twice.
//! * The same payload under another delivery id → the same answer. The signature covers the
//!   body only, so whoever captured a signed push could otherwise send it again, later, to
//!   roll the app back to that commit.
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::daemon::Daemon;
use super::http::{ApiError, ApiResult, JsonBody};
use super::wire::{LinkCreated, LinkRequest};
use crate::platform::git;
use crate::platform::model::{GithubLink, NewDeployment, SourceKind};

/// `PUT /v1/apps/APP/github`: links the app (replacing an earlier link).
pub async fn link(
    State(d): State<Arc<Daemon>>,
    Path(app): Path<String>,
    JsonBody(req): JsonBody<LinkRequest>,
) -> ApiResult<Json<LinkCreated>> {
    d.store.get_app(&app)?;
    git::check_url(&req.repo, "repository").map_err(|e| ApiError::bad_request(e.to_string()))?;
    git::check_branch_name(&req.branch).map_err(ApiError::bad_request)?;
    let secret = match req.secret {
        Some(s) if s.len() < 16 || s.len() > 256 || s.chars().any(|c| c.is_control()) => {
            return Err(ApiError::bad_request(
                "the webhook secret must be 16 to 256 printable characters; leave --secret out to have one made",
            ))
        }
        Some(s) => s,
        None => new_secret(),
    };
    let link = GithubLink {
        app: app.clone(),
        repo: req.repo,
        branch: req.branch,
        secret: secret.clone(),
        created_at: String::new(),
    };
    d.store.set_github_link(&link)?;
    let mut link = d.store.github_link(&app)?.unwrap_or(link);
    // A token in the URL stays in the store: answers never show it.
    link.repo = git::without_credentials(&link.repo);
    d.log(
        &app,
        super::deploy::DEPLOY_PROCESS,
        &format!(
            "linked to {} (pushes to {} deploy)",
            git::without_credentials(&link.repo),
            link.branch
        ),
    );
    Ok(Json(LinkCreated {
        link,
        secret,
        webhook_path: WEBHOOK_PATH.into(),
    }))
}

/// `DELETE /v1/apps/APP/github`.
pub async fn unlink(
    State(d): State<Arc<Daemon>>,
    Path(app): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    d.store.get_app(&app)?;
    if !d.store.remove_github_link(&app)? {
        return Err(ApiError::not_found(format!(
            "app {app} is linked to no repository"
        )));
    }
    d.log(
        &app,
        super::deploy::DEPLOY_PROCESS,
        "unlinked from its repository",
    );
    Ok(Json(serde_json::json!({ "unlinked": app })))
}

/// Where GitHub sends its webhooks.
pub const WEBHOOK_PATH: &str = "/hooks/github";

/// How a payload's digest is kept among delivery ids.
const PAYLOAD_KEY: &str = "sha256:";

/// GitHub's own cap on a webhook payload.
const MAX_PAYLOAD: usize = 25 << 20;

/// A deployment of `branch` of the app's linked repository at its head (`slipway deploy
/// --branch`).
pub fn branch_deployment(d: &Daemon, app: &str, branch: &str) -> ApiResult<NewDeployment> {
    git::check_branch_name(branch).map_err(ApiError::bad_request)?;
    let link = d.store.github_link(app)?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "app {app} is linked to no repository; link one with `slipway integrations link -a {app} --repo https://github.com/OWNER/REPO --branch main`"
        ))
    })?;
    Ok(NewDeployment {
        source: format!("{} {branch}", git::without_credentials(&link.repo)),
        kind: SourceKind::Git,
        url: Some(link.repo),
        version: None,
        git_branch: Some(branch.to_string()),
    })
}

/// A repository URL reduced to what identifies it: `host/owner/repo`, lower case, without
/// scheme, credentials, `.git` or a trailing slash.
pub fn repo_identity(url: &str) -> String {
    let plain = git::without_credentials(url.trim());
    let rest = plain.split_once("://").map_or(plain.as_str(), |(_, r)| r);
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(".git").unwrap_or(rest);
    rest.to_ascii_lowercase()
}

/// A secret for a link made without one: 32 random bytes, hex.
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    hex::encode(b)
}

/// Whether `signature` (`sha256=HEX`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signature_holds(secret: &str, body: &[u8], signature: Option<&str>) -> bool {
    let Some(given) = signature
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h.trim()).ok())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    // verify_slice compares in constant time.
    !secret.is_empty() && mac.verify_slice(&given).is_ok()
}

#[derive(Debug, Deserialize)]
struct Repository {
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    full_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    repository: Option<Repository>,
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    deleted: bool,
}

#[derive(Debug, Deserialize)]
pub struct HookQuery {
    #[serde(default)]
    app: Option<String>,
}

/// What the webhook did, per app.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HookAnswer {
    /// Deployments made: (app, deployment id).
    #[serde(default)]
    pub deployed: Vec<(String, i64)>,
    /// Why nothing was deployed, when nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /hooks/github`.
pub async fn webhook(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<HookQuery>,
    req: Request,
) -> ApiResult<(StatusCode, Json<HookAnswer>)> {
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), MAX_PAYLOAD)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the payload is larger than {MAX_PAYLOAD} bytes"),
            )
        })?;
    let payload: Payload = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a GitHub webhook payload ({e}); set the webhook's content type to application/json"
        ))
    })?;
    let repo = payload.repository.as_ref().ok_or_else(|| {
        ApiError::bad_request("the payload names no repository; only repository webhooks are taken")
    })?;
    let names: Vec<String> = [&repo.html_url, &repo.clone_url]
        .into_iter()
        .flatten()
        .map(|u| repo_identity(u))
        .collect();
    let full_name = repo.full_name.clone().unwrap_or_default();
    let links: Vec<GithubLink> = d
        .store
        .github_links()?
        .into_iter()
        .filter(|l| q.app.as_deref().is_none_or(|a| a == l.app))
        .filter(|l| names.contains(&repo_identity(&l.repo)))
        .collect();
    if links.is_empty() {
        return Err(ApiError::not_found(format!(
            "no app is linked to {full_name}; link one with `slipway integrations link -a APP --repo URL`"
        )));
    }
    let signature = header(&headers, "x-hub-signature-256");
    let verified: Vec<GithubLink> = links
        .into_iter()
        .filter(|l| signature_holds(&l.secret, &body, signature))
        .collect();
    if verified.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 is missing or does not match: give the webhook the secret `slipway integrations link` printed",
        ));
    }
    let ignored = |reason: String| {
        Ok((
            StatusCode::OK,
            Json(HookAnswer {
                deployed: Vec::new(),
                ignored: Some(reason),
            }),
        ))
    };
    match header(&headers, "x-github-event") {
        Some("ping") => return ignored("pong: the webhook reaches slipway".into()),
        Some("push") => {}
        Some(other) => return ignored(format!("{other} events deploy nothing; only push does")),
        None => {
            return Err(ApiError::bad_request(
                "no X-GitHub-Event header: this endpoint takes GitHub's webhooks",
            ))
        }
    }
    let Some(branch) = payload
        .git_ref
        .as_deref()
        .and_then(|r| r.strip_prefix("refs/heads/"))
    else {
        return ignored(format!(
            "{} is not a branch; tags deploy nothing",
            payload.git_ref.as_deref().unwrap_or("the push")
        ));
    };
    let after = payload.after.clone().unwrap_or_default();
    if payload.deleted || after.bytes().all(|b| b == b'0') {
        return ignored(format!("branch {branch} was deleted; nothing to deploy"));
    }
    if !git::is_commit_id(&after) {
        return Err(ApiError::bad_request(format!(
            "`after` {after:?} is not a full commit id"
        )));
    }
    let delivery = header(&headers, "x-github-delivery")
        .filter(|id| !id.is_empty() && id.len() <= 100 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from);
    let keys: Vec<String> = delivery
        .into_iter()
        .chain([format!(
            "{PAYLOAD_KEY}{}",
            hex::encode(Sha256::digest(&body))
        )])
        .collect();
    let mut answer = HookAnswer::default();
    let mut reasons = Vec::new();
    for link in verified {
        if link.branch != branch {
            reasons.push(format!(
                "{}: pushes to {branch} deploy nothing (the linked branch is {})",
                link.app, link.branch
            ));
            continue;
        }
        // Seen before under its delivery id (a redelivery), or its very bytes under another
        // id (a captured payload played again): nothing more is deployed.
        let mut seen = None;
        for key in &keys {
            if !d.store.record_delivery(key, &link.app)? && seen.is_none() {
                seen = Some((key, d.store.delivery_deployment(key, &link.app)?));
            }
        }
        if let Some((key, earlier)) = seen {
            let what = match key.strip_prefix(PAYLOAD_KEY) {
                Some(_) => "this payload".to_string(),
                None => format!("delivery {key}"),
            };
            reasons.push(format!(
                "{}: {what} was taken before{}",
                link.app,
                earlier
                    .map(|dep| format!(" (deployment {dep})"))
                    .unwrap_or_default()
            ));
            continue;
        }
        let new = NewDeployment {
            source: format!("github {branch} {}", &after[..7]),
            kind: SourceKind::Git,
            url: Some(link.repo.clone()),
            version: Some(after.clone()),
            git_branch: Some(branch.to_string()),
        };
        let created = super::server::enqueue_deployment(&d, &link.app, &new, None).await?;
        for key in &keys {
            d.store
                .set_delivery_deployment(key, &link.app, created.deployment.id)?;
        }
        answer
            .deployed
            .push((link.app.clone(), created.deployment.id));
    }
    if answer.deployed.is_empty() {
        answer.ignored = Some(reasons.join("; "));
    }
    let status = if answer.deployed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_identified_whatever_the_url_form() {
        let id = "github.com/acme/shop";
        for url in [
            "https://github.com/acme/shop",
            "https://github.com/Acme/Shop.git",
            "https://user:tok@github.com/acme/shop/",
            "http://github.com/acme/shop.git",
        ] {
            assert_eq!(repo_identity(url), id, "{url}");
        }
        assert_ne!(repo_identity("https://github.com/acme/shop2"), id);
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_raw_body() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body
        // "Hello, World!".
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_holds(
            "It's a Secret to Everybody",
            b"Hello, World!",
            Some(good)
        ));
        assert!(!signature_holds(
            "It's a Secret to Everybody",
            b"Hello, World?",
            Some(good)
        ));
        assert!(!signature_holds("another", b"Hello, World!", Some(good)));
        assert!(!signature_holds(
            "It's a Secret to Everybody",
            b"Hello, World!",
            None
        ));
        assert!(!signature_holds(
            "It's a Secret to Everybody",
            b"Hello, World!",
            Some("sha1=757107ea")
        ));
        assert!(!signature_holds("", b"", Some("sha256=")));
    }
}
