//! Sandboxed containers: one typed description (`Container`: layers, binds, process, limits)
//! and one way to run it (`Sandbox`), for builds, app processes, one-offs and hooks alike.
//!
//! A sandbox takes, in order, a workspace, an overlay root (the read-only layers under an
//! ephemeral upper), a network namespace joined to a bridge through CNI, and a container in
//! the runtime; each is held by a guard and given back in reverse order when the sandbox is
//! dropped, whatever happened (success, error, interruption). What a process killed with
//! SIGKILL left behind is swept by the next sandbox made in the same place.
//!
//! The process that makes sandboxes must have entered a private mount namespace first
//! (`mounts::enter_private_mount_ns`), while it was single-threaded: the overlays then exist
//! only there and die with it.
pub mod interrupt;
pub mod launch;
pub mod mounts;
pub mod spec;
pub mod workspace;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::Spec;

use crate::config::NetworkSettings;
use crate::network::bridge::{Network, NetworkConfig};
use crate::network::netns::{Netns, NetnsDir};
use crate::runtime::pid1;
use crate::sys::io::{at, PathError};

pub use launch::{Launcher, Outcome};
pub use spec::{Bind, ProcessSpec};
pub use workspace::Workspace;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot enter a private mount namespace: {0} (slipway must run as root, and before it starts threads)")]
    Unshare(nix::Error),
    #[error("mount overlay on {target}: {source} (lower: {lower})")]
    Overlay {
        target: PathBuf,
        lower: String,
        source: nix::Error,
    },
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("start {runtime}: {source} (install slipway-runtime next to slipway, or set SLIPWAY_RUNTIME)")]
    Spawn {
        runtime: PathBuf,
        source: std::io::Error,
    },
    #[error("container network: {0}")]
    Network(String),
}

/// Where sandboxes keep their things (from the `Config`).
#[derive(Debug, Clone)]
pub struct Place {
    /// Parent of the workspaces (one directory per sandbox).
    pub workspaces: PathBuf,
    /// Network namespace files and the runtime's state root live under it.
    pub run_dir: PathBuf,
    pub network: NetworkSettings,
    /// The network layer's leases and cached results.
    pub network_state: PathBuf,
    pub runtime: PathBuf,
}

impl Place {
    pub fn launcher(&self) -> Launcher {
        Launcher {
            runtime: self.runtime.clone(),
            root: self.run_dir.join("runtime"),
        }
    }

    fn network(&self) -> Result<Network, SandboxError> {
        let subnet =
            self.network.subnet.parse().map_err(|e| {
                SandboxError::Network(format!("subnet {}: {e}", self.network.subnet))
            })?;
        Network::new(NetworkConfig::new(
            &self.network.bridge,
            subnet,
            &self.network_state,
        ))
        .map_err(|e| SandboxError::Network(e.to_string()))
    }

    fn netns_dir(&self) -> Result<NetnsDir, SandboxError> {
        std::fs::create_dir_all(&self.run_dir).map_err(at("create", &self.run_dir))?;
        NetnsDir::open(&self.run_dir).map_err(|e| SandboxError::Network(e.to_string()))
    }
}

/// What runs in a sandbox.
#[derive(Debug, Clone)]
pub struct Container {
    /// Read-only layers, top first; the stack is the last.
    pub layers: Vec<PathBuf>,
    pub binds: Vec<Bind>,
    pub process: ProcessSpec,
}

/// The container's place on its bridge; detached (address lease released) and its network
/// namespace deleted when dropped.
struct Attached {
    network: Network,
    netns: Option<Netns>,
    id: String,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(netns) = self.netns.take() {
            let _ = self.network.detach(netns.path(), &self.id, "eth0");
            let _ = netns.delete();
        }
    }
}

/// A prepared sandbox. Fields drop in order: the container (in `Drop`), the network, the
/// overlay, the workspace.
pub struct Sandbox {
    _attached: Attached,
    _overlay: mounts::Overlay,
    workspace: Workspace,
    launcher: Launcher,
    spec: Spec,
    ip: Ipv4Addr,
    /// Whether `run` saw the container end (then the runtime has removed it).
    ran_to_end: bool,
}

impl Sandbox {
    /// Prepare `c` in `workspace` (made by `Workspace::create` in `place.workspaces` and
    /// filled by the caller with whatever its binds show).
    pub fn prepare(
        place: &Place,
        workspace: Workspace,
        c: &Container,
    ) -> Result<Sandbox, SandboxError> {
        let dir = workspace.dir().to_path_buf();
        let layers: Vec<&Path> = c.layers.iter().map(PathBuf::as_path).collect();
        let overlay = mounts::mount_overlay(
            &layers,
            &dir.join("upper"),
            &dir.join("work"),
            &dir.join("rootfs"),
        )?;
        let id = workspace.id().to_string();
        let netns = place
            .netns_dir()?
            .create(&id)
            .map_err(|e| SandboxError::Network(e.to_string()))?;
        let attached = Attached {
            network: place.network()?,
            netns: Some(netns),
            id: id.clone(),
        };
        let netns_path = attached
            .netns
            .as_ref()
            .expect("just made")
            .path()
            .to_path_buf();
        let att = attached
            .network
            .attach(&netns_path, &id, "eth0")
            .map_err(|e| SandboxError::Network(e.to_string()))?;
        let mut spec = spec::sandboxed_spec(&c.process, &dir.join("rootfs"), &netns_path, &c.binds);
        // The program is never PID 1 itself: signals reach it, orphans are reaped.
        spec.set_annotations(Some(HashMap::from([(
            pid1::ANNOTATION.to_string(),
            "true".to_string(),
        )])));
        Ok(Sandbox {
            _attached: attached,
            _overlay: overlay,
            workspace,
            launcher: place.launcher(),
            spec,
            ip: att.ip,
            ran_to_end: false,
        })
    }

    /// Remove what sandboxes of dead owners left in `place`: their containers, network
    /// namespace files, address leases and workspaces.
    pub fn sweep(place: &Place) {
        let abandoned = workspace::abandoned(&place.workspaces);
        if abandoned.is_empty() {
            return;
        }
        let launcher = place.launcher();
        let network = place.network().ok();
        let netns_dir = place.netns_dir().ok();
        for id in abandoned {
            launcher.kill(&id);
            launcher.remove(&id);
            if let Some(dir) = &netns_dir {
                if let (Some(net), Ok(path)) = (&network, dir.path_of(&id)) {
                    let _ = net.detach(&path, &id, "eth0");
                }
                let _ = dir.delete(&id);
            }
            let _ = std::fs::remove_dir_all(place.workspaces.join(&id));
        }
    }

    pub fn id(&self) -> &str {
        self.workspace.id()
    }

    pub fn workspace(&self) -> &Path {
        self.workspace.dir()
    }

    /// The container's address on its bridge.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn launcher(&self) -> &Launcher {
        &self.launcher
    }

    /// Run the container to its end (or `timeout`), its output line by line to `on_line`.
    /// An interruption (`interrupt`) stops it; the caller then sees `interrupt::interrupted()`.
    pub fn run(
        &mut self,
        timeout: Duration,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Outcome, SandboxError> {
        let _watch = interrupt::Watch::new(&self.launcher, self.workspace.id());
        if let Some(sig) = interrupt::interrupted() {
            return Ok(Outcome::Exited(128 + sig));
        }
        let bundle = self.workspace.dir().join("bundle");
        let outcome =
            self.launcher
                .run(self.workspace.id(), &bundle, &self.spec, timeout, on_line)?;
        self.ran_to_end = outcome != Outcome::TimedOut;
        Ok(outcome)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.ran_to_end {
            self.launcher.kill(self.workspace.id());
            self.launcher.remove(self.workspace.id());
        }
    }
}
