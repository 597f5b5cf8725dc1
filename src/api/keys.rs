//! `/v1/keys`: the public keys allowed to push over SSH, and the `authorized_keys` file the
//! daemon keeps in step with them (written at start and after every change).
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::daemon::Daemon;
use super::http::{ApiError, ApiResult, JsonBody};
use super::wire::KeyRequest;
use crate::platform::model::SshKey;
use crate::platform::ssh_keys::{self, check_key_name, material_of, parse_public_key};

type D = State<Arc<Daemon>>;

/// Rewrites the `authorized_keys` file from the stored keys: a line per key that may only run
/// `slipway git-shell`.
pub fn write_authorized_keys(d: &Daemon) -> Result<(), String> {
    let config = d.config();
    let keys = d.store.ssh_keys().map_err(|e| e.to_string())?;
    let text = ssh_keys::authorized_keys(&d.opts.slipway_exe, &config.git_socket, &keys)
        .map_err(|e| e.to_string())?;
    ssh_keys::write_authorized_keys(&config.git_authorized_keys, &text).map_err(|e| {
        format!(
            "writing {}: {e}; check that its directory is writable by root (config key git_authorized_keys)",
            config.git_authorized_keys.display()
        )
    })
}

pub async fn list(State(d): D) -> ApiResult<Json<Vec<SshKey>>> {
    Ok(Json(d.store.ssh_keys()?))
}

pub async fn add(
    State(d): D,
    JsonBody(req): JsonBody<KeyRequest>,
) -> ApiResult<(StatusCode, Json<SshKey>)> {
    check_key_name(&req.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let parsed =
        parse_public_key(&req.public_key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // One change at a time: the duplicate check, the row and the file agree.
    let _guard = d.keys_lock.lock().await;
    let keys = d.store.ssh_keys()?;
    if let Some(same) = keys
        .iter()
        .find(|k| material_of(&k.public_key) == parsed.material())
    {
        return Err(ApiError::conflict(format!(
            "this key is added already, as {}; a key has one name (`slipway keys remove {}` first to rename it)",
            same.name, same.name
        )));
    }
    let key = SshKey {
        name: req.name.clone(),
        public_key: parsed.line(),
        fingerprint: parsed.fingerprint,
        created_at: String::new(),
    };
    if !d.store.add_ssh_key(&key)? {
        return Err(ApiError::conflict(format!(
            "a key named {} exists already; pick another name, or `slipway keys remove {}` first",
            req.name, req.name
        )));
    }
    if let Err(e) = write_authorized_keys(&d) {
        // A key sshd does not know would not work: the change is undone.
        let _ = d.store.remove_ssh_key(&req.name);
        return Err(ApiError::internal(format!("key not added: {e}")));
    }
    let added = d
        .store
        .ssh_keys()?
        .into_iter()
        .find(|k| k.name == req.name)
        .unwrap_or(key);
    Ok((StatusCode::CREATED, Json(added)))
}

pub async fn remove(State(d): D, Path(name): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    check_key_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let _guard = d.keys_lock.lock().await;
    if !d.store.remove_ssh_key(&name)? {
        return Err(ApiError::not_found(format!(
            "no key named {name}; `slipway keys` lists them"
        )));
    }
    // Even while its line lingers (the write failed), the git socket refuses a removed key.
    write_authorized_keys(&d).map_err(|e| {
        ApiError::internal(format!(
            "key {name} was removed and may no longer push, but {e}"
        ))
    })?;
    Ok(Json(serde_json::json!({ "removed": name })))
}
