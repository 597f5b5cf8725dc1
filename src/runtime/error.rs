//! The runtime's error type: every variant says what failed, on what, and what to do next.
use std::path::PathBuf;

use super::cgroups::CgroupError;
use super::seccomp::SeccompError;
use crate::sys::io::PathError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {0:?}: use 1-1024 characters from [A-Za-z0-9_.+-], not starting with '.' (no '/' and no '..')")]
    InvalidId(String),
    #[error("container {0:?} already exists: pick another id, or `delete` the old one first")]
    Exists(String),
    #[error("container {0:?} does not exist (see `list`)")]
    NotFound(String),
    #[error("container {id:?} is {status}, {what}")]
    WrongState {
        id: String,
        status: String,
        what: String,
    },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("{0}: {1}")]
    Sys(String, nix::Error),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("container init failed: {0}")]
    Init(String),
    /// An error a forked stage already described in full; shown as it came.
    #[error("{0}")]
    Reported(String),
    #[error("hook {path}: {msg}")]
    Hook { path: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// Attach a description to a failing system call.
pub fn sys_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::Sys(what, e)
}
