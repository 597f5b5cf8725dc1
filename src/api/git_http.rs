//! Every app's git remote over HTTP: git's smart protocol at `/APP.git/…` on the daemon's TCP
//! listener, served by Debian's `git http-backend` (CGI) with the API token as the HTTP
//! password.
//!
//! A push runs `git receive-pack`, which runs the platform's `pre-receive` hook
//! (`slipway git-hook pre-receive`) before it moves any ref: the hook deploys the pushed
//! commit and streams the deployment to the pusher (`remote:` lines). A failed deployment
//! fails the hook, so the push is rejected and the branch keeps its commit.
//!
//! The same receive-pack environment ([`receive_env`]) serves pushes over SSH.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::daemon::Daemon;
use super::http::ApiError;
use crate::build::app_name::check_app_name;
use crate::platform::git;

/// The hook git runs before it moves a ref.
const PRE_RECEIVE: &str = "pre-receive";

/// Largest header block a CGI answer may have.
const MAX_CGI_HEADERS: usize = 64 << 10;

/// The services of the smart protocol; nothing else of a repository is served.
fn is_smart_path(rest: &str) -> bool {
    matches!(rest, "info/refs" | "git-upload-pack" | "git-receive-pack")
}

/// Where the platform's hooks live (`core.hooksPath` of every receive-pack it runs).
pub fn hooks_dir(data_dir: &Path) -> PathBuf {
    git::repos_dir(data_dir).join("hooks")
}

/// Writes the platform's hooks: a `pre-receive` that runs `slipway_exe git-hook pre-receive`.
/// Rewritten at every start, so it always names the running slipway.
pub fn install_hooks(data_dir: &Path, slipway_exe: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = hooks_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let exe = slipway_exe.display().to_string().replace('\'', r"'\''");
    let script = format!("#!/bin/sh\nexec '{exe}' git-hook {PRE_RECEIVE}\n");
    let path = dir.join(PRE_RECEIVE);
    crate::sys::atomic::write(&path, script.as_bytes())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
}

/// The environment of a `git receive-pack` or `upload-pack` for `app`: the platform's hooks
/// and checks as command-line config (the repository's own config cannot turn them off), and
/// what the hook needs to reach the daemon.
pub fn receive_env(d: &Daemon, app: &str) -> Vec<(OsString, OsString)> {
    let data_dir = &d.config().data_dir;
    let config = [
        ("core.hooksPath", hooks_dir(data_dir).display().to_string()),
        ("receive.fsckObjects", "true".into()),
        (
            "receive.maxInputSize",
            d.opts.archive_limits.max_archive_bytes.to_string(),
        ),
        ("receive.keepAlive", "5".into()),
        ("http.receivepack", "true".into()),
        ("uploadpack.allowFilter", "true".into()),
    ];
    let mut env: Vec<(OsString, OsString)> = vec![
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_CONFIG_COUNT".into(), config.len().to_string().into()),
        ("SLIPWAY_GIT_APP".into(), app.into()),
        ("SLIPWAY_SOCKET".into(), d.config().socket.clone().into()),
    ];
    for (i, (key, value)) in config.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}").into(), key.into()));
        env.push((format!("GIT_CONFIG_VALUE_{i}").into(), value.into()));
    }
    env.extend(
        super::deploy::config_env(d.config())
            .into_iter()
            .map(|(k, v)| (k.into(), v.into())),
    );
    env
}

/// The repository of `repo` (`APP.git`), made when missing, or why it cannot be served.
pub fn app_repository(d: &Daemon, repo: &str) -> Result<(String, PathBuf), ApiError> {
    let app = repo.strip_suffix(".git").ok_or_else(|| {
        ApiError::not_found(format!(
            "no such path; an app's git remote is /APP.git (`slipway git-remote -a APP` adds it), the API is under {}",
            super::wire::PREFIX
        ))
    })?;
    check_app_name(app).map_err(|e| ApiError::not_found(e.to_string()))?;
    d.store.get_app(app)?;
    let dir = git::repo_dir(&d.config().data_dir, app);
    git::ensure_repo(&dir).map_err(ApiError::internal)?;
    Ok((app.to_string(), dir))
}

/// `/{repo}/{*rest}`: one exchange of git's smart HTTP protocol.
pub async fn serve(
    State(d): State<Arc<Daemon>>,
    UrlPath((repo, rest)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    match exchange(&d, &repo, &rest, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn exchange(
    d: &Arc<Daemon>,
    repo: &str,
    rest: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let (app, _) = {
        let (d, repo) = (d.clone(), repo.to_string());
        tokio::task::spawn_blocking(move || app_repository(&d, &repo))
            .await
            .map_err(ApiError::internal)??
    };
    if !is_smart_path(rest) {
        return Err(ApiError::not_found(format!(
            "/{repo}/{rest} is not served: only git's smart HTTP protocol is (git 1.6.6 and later)"
        )));
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("GIT_PROJECT_ROOT", git::repos_dir(&d.config().data_dir))
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{app}.git/{rest}"))
        .env("REQUEST_METHOD", req.method().as_str())
        .env("QUERY_STRING", req.uri().query().unwrap_or(""))
        .env("REMOTE_USER", "slipway")
        .env("REMOTE_ADDR", "127.0.0.1")
        .envs(receive_env(d, &app))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (var, name) in [
        ("CONTENT_TYPE", "content-type"),
        ("CONTENT_LENGTH", "content-length"),
        ("HTTP_CONTENT_ENCODING", "content-encoding"),
        ("GIT_PROTOCOL", "git-protocol"),
    ] {
        if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        ApiError::internal(format!(
            "git http-backend could not start: {e}; install git"
        ))
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // The request body flows in while the answer flows out: a push's pack can be large.
    let mut body = req.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if stdin.write_all(&data).await.is_err() {
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("slipway daemon: git http-backend: {line}");
        }
    });
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let mut out = BufReader::new(stdout);
    let mut builder = Response::builder().status(StatusCode::OK);
    let mut seen = 0usize;
    loop {
        let mut line = String::new();
        let n = (&mut out)
            .take((MAX_CGI_HEADERS - seen) as u64)
            .read_line(&mut line)
            .await
            .map_err(|e| ApiError::internal(format!("reading git http-backend: {e}")))?;
        seen += n;
        if n == 0 || seen >= MAX_CGI_HEADERS {
            return Err(ApiError::internal(
                "git http-backend answered without a complete header block",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok());
            if let Some(code) = code.and_then(|c: u16| StatusCode::from_u16(c).ok()) {
                builder = builder.status(code);
            }
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            builder = builder.header(n, v);
        }
    }
    builder
        .body(Body::from_stream(tokio_util::io::ReaderStream::new(out)))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_smart_protocol_is_served() {
        for ok in ["info/refs", "git-upload-pack", "git-receive-pack"] {
            assert!(is_smart_path(ok));
        }
        for no in [
            "HEAD",
            "config",
            "objects/info/packs",
            "hooks/pre-receive",
            "../x",
        ] {
            assert!(!is_smart_path(no), "{no}");
        }
    }

    #[test]
    fn the_hook_names_the_running_slipway_quoted() {
        let dir = tempfile::tempdir().unwrap();
        install_hooks(dir.path(), Path::new("/opt/it's/slipway")).unwrap();
        let text = std::fs::read_to_string(hooks_dir(dir.path()).join(PRE_RECEIVE)).unwrap();
        assert_eq!(
            text,
            "#!/bin/sh\nexec '/opt/it'\\''s/slipway' git-hook pre-receive\n"
        );
    }
}
