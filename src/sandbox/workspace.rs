//! A sandbox's files on the host (`upper`, `work`, `rootfs`, `bundle`, and whatever its user
//! adds), removed when the sandbox ends; and the sweep of what a killed owner left.
//!
//! Each workspace records its owner (pid and start time). A process killed with SIGKILL runs
//! no destructor, so the next sandbox created in the same place removes every workspace whose
//! owner is gone, with what came with it: the container in the runtime's state, the network
//! namespace file and the address lease (`Sandbox::sweep`).
use std::path::{Path, PathBuf};

use crate::sys::io::at;
use crate::sys::procfs;

use super::SandboxError;

const OWNER_FILE: &str = "owner";

#[derive(Debug)]
pub struct Workspace {
    dir: PathBuf,
    id: String,
}

impl Workspace {
    /// Make `root/ID` for this process, with the directories every sandbox uses.
    pub fn create(root: &Path, id: &str) -> Result<Workspace, SandboxError> {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).map_err(at("create the workspace", &dir))?;
        // The guard exists from here on: a failure below removes the directory.
        let ws = Workspace {
            dir,
            id: id.to_string(),
        };
        let me = std::process::id() as i32;
        let start = procfs::stat(me).map_or(0, |s| s.start_time);
        let owner = ws.dir.join(OWNER_FILE);
        std::fs::write(&owner, format!("{me} {start}")).map_err(at("write", &owner))?;
        for d in ["upper", "work", "rootfs", "bundle"] {
            let p = ws.dir.join(d);
            std::fs::create_dir(&p).map_err(at("create", &p))?;
        }
        Ok(ws)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ids of the workspaces under `root` whose owner process is gone.
pub fn abandoned(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let owner = std::fs::read_to_string(e.path().join(OWNER_FILE)).unwrap_or_default();
            let mut w = owner.split_whitespace().map(|x| x.parse::<u64>().ok());
            match (w.next().flatten(), w.next().flatten()) {
                (Some(pid), Some(start)) => !procfs::is_alive(pid as i32, start),
                // No owner recorded yet: a sandbox that is just being made.
                _ => false,
            }
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_goes_with_its_guard_and_a_dead_owner_is_found() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::create(d.path(), "c1").unwrap();
        assert!(ws.dir().join("rootfs").is_dir());
        assert!(abandoned(d.path()).is_empty());
        // An owner that cannot be alive: pid 1 with another start time.
        std::fs::create_dir(d.path().join("c2")).unwrap();
        std::fs::write(d.path().join("c2/owner"), "1 1").unwrap();
        assert_eq!(abandoned(d.path()), ["c2"]);
        drop(ws);
        assert!(!d.path().join("c1").exists());
    }
}
