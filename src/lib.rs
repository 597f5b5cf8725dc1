//! slipway: buildpack builds, an OCI container runtime of its own, and a supervisor for apps.
//!
//! Layers (dependencies point down only): `build` uses `runtime` and `network`;
//! `runtime` and `network` know nothing of apps.
pub mod api;
pub mod applog;
pub mod build;
pub mod config;
pub mod network;
pub mod platform;
pub mod router;
pub mod runtime;
pub mod sandbox;
pub mod stacks;
pub mod supervisor;
pub mod sys;
