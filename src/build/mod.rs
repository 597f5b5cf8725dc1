//! Builds: stacks, buildpacks, slugs.
