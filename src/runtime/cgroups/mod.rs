//! cgroups for containers, on v2 (unified) and v1 (legacy or hybrid) hosts.
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("invalid cgroupsPath {0:?}: {1}")]
    InvalidPath(String, String),
    #[error("unsupported resource: {0}")]
    Unsupported(String),
}

/// A container's cgroup, on whatever layout the host has. Serializable so that the
/// state file can recreate it for later commands (kill --all, pause, update, delete).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cgroup {
    /// Path relative to each hierarchy's root, always starting with '/'.
    pub path: String,
}

impl Cgroup {
    /// Resolve `cgroupsPath` from the spec (None: `/slipway/<id>`).
    pub fn new(cgroups_path: Option<&str>, id: &str) -> Result<Self, CgroupError> {
        let path = match cgroups_path {
            Some(p) if !p.is_empty() => {
                if p.starts_with('/') {
                    p.to_string()
                } else {
                    format!("/{p}")
                }
            }
            _ => format!("/slipway/{id}"),
        };
        Ok(Cgroup { path })
    }
    /// Create the cgroup directories (and enable controllers / seed cpusets as needed).
    pub fn create(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    /// Write resource limits.
    pub fn apply(&self, _resources: &LinuxResources) -> Result<(), CgroupError> {
        Ok(())
    }
    /// Move a process (and so its future children) into the cgroup.
    pub fn add_pid(&self, _pid: i32) -> Result<(), CgroupError> {
        Ok(())
    }
    /// PIDs currently in the cgroup (host view).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        Ok(vec![])
    }
    pub fn freeze(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn thaw(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(false)
    }
    /// Remove the cgroup directories; processes must be gone already.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    /// Times the OOM killer acted in this cgroup.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        Ok(0)
    }
}
