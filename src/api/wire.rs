//! The daemon's HTTP API as data: request and response bodies (JSON), the events of a
//! streamed deployment (one JSON object a line), and the frames of an attached `run`.
//!
//! Every path starts with [`PREFIX`]. Errors are `{"error": "…"}` with a 4xx or 5xx status;
//! the message says what failed and what to do next.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::runner::ContainerInfo;
use crate::platform::formation::ScaleRequest;
use crate::platform::model::{ConfigVars, Deployment, FormationEntry, GithubLink, Release};

/// The API's version prefix.
pub const PREFIX: &str = "/v1";

/// The header an attached `run` upgrades with (`Upgrade: slipway-attach`).
pub const ATTACH_PROTOCOL: &str = "slipway-attach";

/// Largest JSON request body, in bytes.
pub const MAX_JSON_BODY: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub name: String,
}

/// An app as `apps` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSummary {
    pub name: String,
    pub created_at: String,
    /// The serving release (`v3`), if any.
    pub release: Option<u32>,
    pub url: String,
}

/// An app as `info` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: String,
    pub created_at: String,
    pub url: String,
    pub domains: Vec<String>,
    pub release: Option<Release>,
    pub formation: Vec<FormationEntry>,
    pub last_deployment: Option<Deployment>,
    pub config_vars: usize,
    /// The branch a push deploys (`main` or `master` when unset).
    #[serde(default)]
    pub deploy_branch: Option<String>,
    /// The linked GitHub repository.
    #[serde(default)]
    pub github: Option<GithubLink>,
}

/// A change to an app's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppChange {
    /// The branch a push deploys; an empty string goes back to `main`/`master`.
    #[serde(default)]
    pub deploy_branch: Option<String>,
}

/// Link an app to a GitHub repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub repo: String,
    pub branch: String,
    /// The webhook secret; one is made when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A link just made, with its secret (shown this once) and the webhook's path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkCreated {
    pub link: GithubLink,
    pub secret: String,
    pub webhook_path: String,
}

/// Deploy from a URL the daemon downloads, or from the linked repository's branch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// An archive's http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// A branch of the app's linked GitHub repository, deployed at its head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// What an uploaded archive is, when it is a commit (`git push`): the query of the upload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveOrigin {
    /// The full commit id (SOURCE_VERSION of the build).
    #[serde(default)]
    pub commit: Option<String>,
    /// The branch it was pushed to.
    #[serde(default)]
    pub branch: Option<String>,
}

/// A deployment just recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentCreated {
    pub deployment: Deployment,
    /// The deployment of the same app that runs now, when this one waits for it.
    pub queued_behind: Option<i64>,
}

/// A deployment with its whole log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentDetail {
    pub deployment: Deployment,
    pub log: String,
    pub url: Option<String>,
}

/// One line of a streamed deployment: output, then one final event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamEvent {
    Line { line: String },
    End(DeploymentEnd),
}

/// How a deployment ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentEnd {
    pub status: crate::platform::model::DeploymentStatus,
    pub release: Option<u32>,
    pub url: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub config: ConfigVars,
    /// The release that carries the change, when the app runs.
    pub release: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleChange {
    pub changes: Vec<ScaleRequest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    /// A process type (`web`) or a container (`web-2`); everything when absent.
    #[serde(default)]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRequest {
    pub domain: String,
}

/// The app's containers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PsList {
    pub containers: Vec<ContainerInfo>,
}

/// A one-off container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub command: String,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub detached: bool,
    /// The CLI has a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Its size, for the pty the command starts with (later changes come as RESIZE frames).
    #[serde(default)]
    pub rows: Option<u16>,
    #[serde(default)]
    pub cols: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStarted {
    pub container: String,
}

/// Frame kinds of an attached run: `[kind u8][length u32 big-endian][payload]`.
pub mod frame {
    /// Client → daemon: bytes for the process's input.
    pub const STDIN: u8 = 0;
    /// Client → daemon: the input ended.
    pub const STDIN_EOF: u8 = 1;
    /// Daemon → client: the process's output.
    pub const OUTPUT: u8 = 2;
    /// Daemon → client: the process exited; payload: the exit code, i32 big-endian.
    pub const EXIT: u8 = 3;
    /// Daemon → client: the run failed; payload: the message.
    pub const ERROR: u8 = 4;
    /// Client → daemon: the terminal's size; payload: rows and columns, u16 big-endian each.
    pub const RESIZE: u8 = 5;
    /// Daemon → client: the process's stderr (attached runs without a terminal).
    pub const ERRORS: u8 = 6;
    /// Largest payload of one frame.
    pub const MAX_PAYLOAD: usize = 1 << 16;

    /// One frame, encoded.
    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Reads one frame; `None` at a clean end of the stream.
    pub async fn read<R: tokio::io::AsyncRead + Unpin>(
        r: &mut R,
    ) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 5];
        match r.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut head[1..]).await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {len} bytes, over the limit of {MAX_PAYLOAD}"),
            ));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        Ok(Some((head[0], payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_are_one_json_object_each() {
        let line = StreamEvent::Line {
            line: "-----> Python app detected".into(),
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(text, r#"{"line":"-----> Python app detected"}"#);
        assert_eq!(serde_json::from_str::<StreamEvent>(&text).unwrap(), line);
        let end: StreamEvent = serde_json::from_str(
            r#"{"status":"build-error","release":null,"url":null,"reason":"x"}"#,
        )
        .unwrap();
        assert!(matches!(
            end,
            StreamEvent::End(DeploymentEnd {
                reason: Some(_),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut bytes = frame::encode(frame::OUTPUT, b"hello");
        bytes.extend(frame::encode(frame::EXIT, &3i32.to_be_bytes()));
        let mut r = &bytes[..];
        assert_eq!(
            frame::read(&mut r).await.unwrap(),
            Some((frame::OUTPUT, b"hello".to_vec()))
        );
        assert_eq!(
            frame::read(&mut r).await.unwrap(),
            Some((frame::EXIT, 3i32.to_be_bytes().to_vec()))
        );
        assert_eq!(frame::read(&mut r).await.unwrap(), None);
        let mut huge = &frame::encode(frame::OUTPUT, &[])[..1];
        let _ = frame::read(&mut huge).await;
    }
}

/// A public key allowed to push over SSH: `public_key` is the `.pub` file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    pub name: String,
    pub public_key: String,
}
