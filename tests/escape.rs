//! The escape suite: hostile bundles, images and exec requests, each checked by what it did
//! to the HOST (canary files outside every bundle, the runtime binary, host sysctls), not by
//! what the runtime says. Runs as root against the runtime named by SLIPWAY_ESCAPE_RUNTIME
//! (slipway-runtime by default), so that the same cases run against runc and crun
//! (scripts/escape-suite prints them side by side). With SLIPWAY_ESCAPE_REPORT=FILE every
//! case appends `case<TAB>outcome<TAB>detail` to FILE, outcome being blocked or ok (held),
//! escaped, failed (a required behaviour is missing) or error (could not be judged).
//!
//! Every case is safe on a vulnerable runtime: the targets are canaries in the case's temp
//! dir, a copy of the runtime binary, and harmless sysctls that a guard restores.
mod common;

#[path = "escape/harness.rs"]
mod harness;

#[path = "escape/exe.rs"]
mod exe;

#[path = "escape/fds.rs"]
mod fds;

#[path = "escape/sysctl.rs"]
mod sysctl;

#[path = "escape/mounts.rs"]
mod mounts;

#[path = "escape/dev.rs"]
mod dev;

#[path = "escape/process.rs"]
mod process;
