//! The mounts a sandboxed container stands on: a private mount namespace for the process that
//! prepares them, and overlay roots.
//!
//! The process that prepares sandboxes enters a private mount namespace before it mounts
//! anything, so overlay roots exist only there: when the process ends, for any reason, the
//! kernel takes them down with it. No mount can leak onto the host.
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::SandboxError;

/// Move this process into a mount namespace of its own whose mounts never propagate back.
/// Must be called while the process is single-threaded.
pub fn enter_private_mount_ns() -> Result<(), SandboxError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(SandboxError::Unshare)?;
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None)
        .map_err(SandboxError::Unshare)
}

/// A mounted overlay; unmounted when dropped.
#[derive(Debug)]
pub struct Overlay {
    pub target: PathBuf,
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = umount2(&self.target, MntFlags::MNT_DETACH);
    }
}

/// Mount an overlay at `target`: `lower` layers top first (read-only), writes go to `upper`.
pub fn mount_overlay(
    lower: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<Overlay, SandboxError> {
    mount_overlay_with(lower, upper, work, target, "")
}

/// `mount_overlay` with extra overlayfs options (`redirect_dir=off`, …).
pub fn mount_overlay_with(
    lower: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
    options: &str,
) -> Result<Overlay, SandboxError> {
    let lower_opt = lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    // userxattr-free, metacopy off: the defaults are the safe ones for untrusted upper dirs.
    let mut data = format!(
        "lowerdir={lower_opt},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if !options.is_empty() {
        data.push(',');
        data.push_str(options);
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|source| SandboxError::Overlay {
        target: target.to_path_buf(),
        lower: lower_opt.clone(),
        source,
    })?;
    Ok(Overlay {
        target: target.to_path_buf(),
    })
}
