//! slipway's OCI container runtime: an OCI runtime spec (config.json) becomes a running,
//! isolated container. Knows nothing of apps.
//!
//! One file per kernel concern, in the style of crun: `namespaces` (in `process`), `rootfs`,
//! `cgroups`, `seccomp`, `capabilities`, `console`, `hooks`; `process` holds the fork stages and
//! the last steps before exec, `init` the container init, `container` the lifecycle over `state`.
pub mod capabilities;
pub mod cgroups;
pub mod console;
pub mod container;
pub mod error;
pub mod exec_process;
pub mod features;
pub mod hooks;
pub mod init;
pub mod inroot;
pub mod loopback;
pub mod mountopts;
pub mod pid1;
pub mod process;
pub mod resources_update;
pub mod rootfs;
pub mod seccomp;
pub mod self_exe;
pub mod spec;
pub mod state;
pub mod sync;
pub mod syscall;

pub use error::{Result, RuntimeError};
