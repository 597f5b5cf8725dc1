//! Builds: buildpacks, slugs.

pub mod app_name;
pub mod archive;
pub mod builder;
pub mod cache;
pub mod env_vars;
pub mod process_type;
pub mod release;
pub mod slug;
pub mod source;
pub mod untrusted;
