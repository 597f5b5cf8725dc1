//! Container state on disk: one directory per container under the runtime root
//! (`--root`, default /run/slipway-runtime), holding `state.json`, a copy of the spec and, while
//! the container is created but not started, the `start.sock` its init waits on.
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::cgroups::Cgroup;
use super::error::{Result, RuntimeError};
use crate::sys::io::{at, PathError};

pub const DEFAULT_ROOT: &str = "/run/slipway-runtime";
pub const START_SOCKET: &str = "start.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What the runtime remembers of a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub pid: i32,
    /// Start time of `pid` (clock ticks since boot) so a recycled pid is never mistaken for it.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub cgroup: Cgroup,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Whether the init shares the runtime's mount namespace (then `exec` needs chroot).
    #[serde(default)]
    pub own_mount_ns: bool,
}

/// The OCI state document printed by `state` and fed to hooks.
/// The OCI runtime spec version this runtime implements: in `state`, `list`, hook state and
/// `features`.
pub const OCI_VERSION: &str = "1.2.0";

/// A container's state as the OCI spec shows it (`state`, `list --format json`, and the
/// state hooks read on stdin). One type for all three, so they cannot drift apart.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: Status,
    /// 0 once stopped, as runc shows it.
    pub pid: i32,
    pub bundle: &'a Path,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<&'a Path>,
    /// `list` shows who owns the container (runc's column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'static str>,
}

impl<'a> OciState<'a> {
    /// The state of a container whose record exists.
    pub fn of(st: &'a ContainerState, status: Status) -> OciState<'a> {
        OciState {
            oci_version: OCI_VERSION,
            id: &st.id,
            status,
            pid: if status == Status::Stopped { 0 } else { st.pid },
            bundle: &st.bundle,
            annotations: &st.annotations,
            created: Some(&st.created),
            rootfs: Some(&st.rootfs),
            owner: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("state serializes")
    }
}

pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId(id.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct StateRoot {
    pub root: PathBuf,
}

impl StateRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateRoot { root: root.into() }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Claim the directory for a new container; fails if the id is taken.
    pub fn claim(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        fs::create_dir_all(&self.root).map_err(at("create state root", &self.root))?;
        let dir = self.dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::Exists(id.to_string()))
            }
            Err(e) => Err(PathError::new("create state dir", dir, e).into()),
        }
    }

    pub fn save(&self, st: &ContainerState) -> Result<()> {
        let dir = self.dir(&st.id);
        let path = dir.join("state.json");
        let data = serde_json::to_vec(st).expect("state serializes");
        Ok(crate::sys::atomic::write(&path, &data).map_err(at("write", &path))?)
    }

    pub fn save_spec(&self, id: &str, spec: &Spec) -> Result<()> {
        let path = self.dir(id).join("config.json");
        let data = serde_json::to_vec(spec).expect("spec serializes");
        Ok(fs::write(&path, data).map_err(at("write", &path))?)
    }

    pub fn load_spec(&self, id: &str) -> Result<Spec> {
        let path = self.dir(id).join("config.json");
        let data = fs::read(&path).map_err(at("read", &path))?;
        serde_json::from_slice(&data).map_err(|e| RuntimeError::Config {
            path,
            msg: format!("corrupt saved spec: {e}"),
        })
    }

    pub fn load(&self, id: &str) -> Result<ContainerState> {
        check_id(id)?;
        let path = self.dir(id).join("state.json");
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()))
            }
            Err(e) => return Err(PathError::new("read", path, e).into()),
        };
        serde_json::from_slice(&data).map_err(|e| RuntimeError::Config {
            path,
            msg: format!("corrupt state file: {e}; `delete --force` removes the container"),
        })
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PathError::new("remove state dir", dir, e).into()),
        }
    }

    /// Ids of every container with a state file.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// The live status of a container, from its process and cgroup.
    pub fn status(&self, st: &ContainerState) -> Status {
        if !crate::sys::procfs::is_alive(st.pid, st.pid_start_time) {
            return Status::Stopped;
        }
        if self.dir(&st.id).join(START_SOCKET).exists() {
            return Status::Created;
        }
        if st.cgroup.is_frozen().unwrap_or(false) {
            return Status::Paused;
        }
        Status::Running
    }
}

/// Field 22 of /proc/PID/stat (start time), and the process state letter.
/// RFC 3339 UTC timestamp with nanoseconds, without a date crate.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "web-1", "abc.def_1+2", &"x".repeat(64)] {
            check_id(ok).unwrap();
        }
        for bad in ["", "a/b", "..", ".hidden", "../x", "a b", "a\0b"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamp_shape() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
