//! slipway's OCI container runtime: an OCI runtime spec (config.json) becomes a running,
//! isolated container. Knows nothing of apps.
//!
//! One file per kernel concern, in the style of crun: `namespaces`, `rootfs`, `cgroups`,
//! `seccomp`, `capabilities`, `console`, `hooks`; `process` holds the clone and init handshake,
//! `container` the lifecycle (create, start, kill, delete, exec) over `state`.
pub mod cgroups;
pub mod seccomp;
