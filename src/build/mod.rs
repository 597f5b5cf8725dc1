//! Builds: stacks, buildpacks, slugs.

pub mod stack;
pub mod cache;
pub mod release;
pub mod slug;
pub mod source;
