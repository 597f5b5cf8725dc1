//! Builds: stacks, buildpacks, slugs.

pub mod builder;
pub mod cache;
pub mod launch;
pub mod release;
pub mod sandbox;
pub mod slug;
pub mod source;
pub mod stack;
