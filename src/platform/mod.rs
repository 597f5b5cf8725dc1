//! Platform: what an app is made of (Procfile, releases, config vars, deployments).

pub mod process_types;
pub mod procfile;
