//! Pushes over SSH: the daemon's git socket (`RUN_DIR/git.sock`) and the protocol
//! `slipway git-shell` speaks on it.
//!
//! sshd runs `slipway git-shell --key NAME` as the git user, forced by the key's
//! `authorized_keys` line. The git-shell checks the command the client asked for and hands
//! its stdin, stdout and stderr (the SSH channel) to the daemon with SCM_RIGHTS, along with
//! one JSON line ([`GitShellRequest`]). The daemon runs `git receive-pack` or `upload-pack`
//! on the app's repository with those descriptors as its stdio, in the same environment as a
//! push over HTTP ([`super::git_http::receive_env`]): the same pre-receive hook deploys, as
//! root, under the daemon. It answers with one JSON line ([`GitShellAnswer`]): git's exit
//! code, or why nothing ran.
//!
//! Why the git user may be trusted with the key name it sends: the socket is open to the git
//! user's group alone, and that account runs nothing but the forced command of a key sshd has
//! just verified. The daemon still checks that the key exists (a key removed while its line
//! lingered in the file is refused) and takes nothing else from the request but a service
//! and an app name it checks again. Only this protocol is served here, never the API.
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, Interest};

use super::daemon::Daemon;
use super::events::PLATFORM_LOG;
use crate::build::app_name::check_app_name;
use crate::platform::ssh_keys::check_key_name;

/// Largest request line.
const MAX_REQUEST: usize = 4096;

/// Largest answer line.
const MAX_ANSWER: usize = 64 << 10;

/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Git sessions served at once; more are told to try again.
const MAX_SESSIONS: usize = 64;

/// How long git gets to stop after its client went away, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The two services of git's protocol over SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GitService {
    #[serde(rename = "git-receive-pack")]
    ReceivePack,
    #[serde(rename = "git-upload-pack")]
    UploadPack,
}

impl GitService {
    /// The `git` subcommand that serves it.
    fn subcommand(self) -> &'static str {
        match self {
            GitService::ReceivePack => "receive-pack",
            GitService::UploadPack => "upload-pack",
        }
    }
}

/// What a git-shell asks for, sent with its three descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitShellRequest {
    /// The key sshd authenticated (from the forced command).
    pub key: String,
    pub service: GitService,
    pub app: String,
}

/// The daemon's answer: git's exit code, or why git did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitShellAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Hands this process's stdin, stdout and stderr to the daemon listening on `socket` with
/// `request`, and waits for its answer (the git-shell side).
pub fn hand_over(socket: &Path, request: &GitShellRequest) -> Result<GitShellAnswer, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "the slipway daemon does not answer on {}: {e}; is it running (`systemctl status slipway`)?",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(request).expect("serializes");
    line.push(b'\n');
    let fds: [RawFd; 3] = [0, 1, 2];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&line)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("handing the connection to the daemon: {e}"))?;
    stream
        .write_all(&line[sent..])
        .map_err(|e| format!("handing the connection to the daemon: {e}"))?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading the daemon's answer: {e}"))?;
    serde_json::from_slice(&answer).map_err(|_| {
        "the daemon stopped before git finished (it was restarted?); push again".to_string()
    })
}

/// Serves the git socket until `stop` turns true.
pub async fn serve(
    d: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let sessions = Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("slipway daemon: git socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let (d, sessions) = (d.clone(), sessions.clone());
        tokio::spawn(async move {
            let answer = match sessions.try_acquire() {
                Ok(_permit) => session(&d, &stream).await,
                Err(_) => Err(format!(
                    "the daemon serves {MAX_SESSIONS} git sessions already; try again in a moment"
                )),
            };
            let answer = match answer {
                Ok(code) => GitShellAnswer {
                    exit_code: Some(code),
                    error: None,
                },
                Err(e) => GitShellAnswer {
                    exit_code: None,
                    error: Some(e),
                },
            };
            let mut line = serde_json::to_vec(&answer).expect("serializes");
            line.push(b'\n');
            let mut stream = stream;
            let _ = stream.write_all(&line).await;
        });
    }
}

/// One git-shell's session: its request, git run with its descriptors; git's exit code.
async fn session(d: &Arc<Daemon>, stream: &tokio::net::UnixStream) -> Result<i32, String> {
    let (request, [stdin, stdout, stderr]) = tokio::time::timeout(REQUEST_TIMEOUT, receive(stream))
        .await
        .map_err(|_| "no request arrived in time".to_string())??;
    check_key_name(&request.key).map_err(|e| e.to_string())?;
    check_app_name(&request.app).map_err(|e| e.to_string())?;
    let known = d
        .store
        .ssh_keys()
        .map_err(|e| e.to_string())?
        .iter()
        .any(|k| k.name == request.key);
    if !known {
        return Err(format!(
            "key {} may no longer push: it was removed (`slipway keys` lists the keys)",
            request.key
        ));
    }
    let (app, dir) = {
        let (d, repo) = (d.clone(), format!("{}.git", request.app));
        tokio::task::spawn_blocking(move || super::git_http::app_repository(&d, &repo))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)?
    };
    let peer = stream
        .peer_cred()
        .map(|c| format!(", uid {}", c.uid()))
        .unwrap_or_default();
    if request.service == GitService::ReceivePack {
        d.log(
            &app,
            PLATFORM_LOG,
            &format!("git push over SSH with key {}{peer}", request.key),
        );
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg(request.service.subcommand())
        .arg(&dir)
        .current_dir(&dir)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .envs(super::git_http::receive_env(d, &app))
        .env("SLIPWAY_GIT_KEY", &request.key)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Its own process group: the hook it runs stops with it when the client goes away.
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    // The pusher's descriptors live on in git alone: the SSH channel closes when git ends.
    drop(cmd);
    let mut child = spawned.map_err(|e| format!("git could not start: {e}"))?;
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| format!("waiting for git: {e}"))?,
        () = closed(stream) => {
            // The git-shell is gone (its SSH session ended): so must git and its hook be.
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGTERM);
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            let _ = child.kill().await;
            return Err("the client went away".into());
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Resolves when the peer closes its end (or sends what the protocol has no place for).
async fn closed(stream: &tokio::net::UnixStream) {
    let mut buf = [0u8; 64];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// Reads the request line and the three descriptors that come with its first byte.
async fn receive(
    stream: &tokio::net::UnixStream,
) -> Result<(GitShellRequest, [OwnedFd; 3]), String> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let mut fds: Vec<OwnedFd> = Vec::new();
    while !buf[..len].contains(&b'\n') {
        if len == buf.len() {
            return Err(format!("the request is longer than {MAX_REQUEST} bytes"));
        }
        stream
            .readable()
            .await
            .map_err(|e| format!("reading the request: {e}"))?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(&mut buf[len..])];
            let mut space = nix::cmsg_space!([RawFd; 3]);
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let mut received = Vec::new();
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(list) = c {
                    // Owned at once: every descriptor is closed on every path out.
                    received.extend(
                        list.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            Ok((
                msg.bytes,
                received,
                msg.flags.contains(MsgFlags::MSG_CTRUNC),
            ))
        });
        let (n, received, truncated) = match got {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("reading the request: {e}")),
        };
        fds.extend(received);
        if truncated {
            return Err("more descriptors than stdin, stdout and stderr were sent".into());
        }
        if n == 0 {
            return Err("the connection closed before its request".into());
        }
        len += n;
    }
    let end = buf[..len].iter().position(|b| *b == b'\n').unwrap_or(len);
    let request: GitShellRequest = serde_json::from_slice(&buf[..end])
        .map_err(|e| format!("the request is not the git-shell's: {e}"))?;
    let fds: [OwnedFd; 3] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        format!(
            "{} descriptors arrived; stdin, stdout and stderr are expected",
            fds.len()
        )
    })?;
    Ok((request, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_json_the_git_shell_sends() {
        let r = GitShellRequest {
            key: "alice".into(),
            service: GitService::ReceivePack,
            app: "shop".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"key":"alice","service":"git-receive-pack","app":"shop"}"#
        );
        assert!(serde_json::from_str::<GitShellRequest>(
            r#"{"key":"a","service":"git-upload-archive","app":"x"}"#
        )
        .is_err());
        assert!(serde_json::from_str::<GitShellRequest>(
            r#"{"key":"a","service":"git-upload-pack","app":"x","env":{}}"#
        )
        .is_err());
    }
}
