//! Builds: stacks, buildpacks, slugs.

pub mod stack;
