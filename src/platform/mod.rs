//! Platform: what an app is made of (Procfile, releases, config vars, deployments) and the
//! store that keeps it.

pub mod formation;
pub mod git;
pub mod model;
pub mod process_types;
pub mod procfile;
pub mod source_archive;
pub mod ssh_keys;
pub mod store;
