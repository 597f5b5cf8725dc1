//! Builds: stacks, buildpacks, slugs.

pub mod cache;
pub mod release;
pub mod slug;
pub mod source;
pub mod stack;
