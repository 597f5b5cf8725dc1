//! Stacks: the root filesystems that builds and app containers run on: their
//! recipes (`recipe`), the store that keeps them (`store`) and the build that
//! makes them with mmdebstrap (`builder`).
//!
//! A stack is built from a recipe (`rootfs/<name>.stack`, format in
//! `rootfs/README.md`) into `<data>/stacks/<name>-<id>/rootfs`, with its
//! metadata in `<data>/stacks/<name>-<id>/stack.json`. The id is a hash of
//! everything that feeds the tree (the recipe and the recipes it extends, the
//! setup script, the host's apt sources and extra CA certificates, the
//! busybox binary), so a changed input gives a new id and a new build, and an
//! unchanged one is found again with a few file reads.
//!
//! A stored stack is never modified: builds go to a temporary directory next
//! to the final one and are renamed into place only when complete, so a
//! half-built stack is never seen. Nothing on disk enforces read-only-ness
//! (a read-only bind mount does not survive a reboot, and root ignores file
//! modes), so every user of a stack must mount it read-only: as the lower
//! layer of an overlay, or with a read-only bind mount.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::sys::io::{at, PathError};

mod builder;
mod recipe;
mod store;

pub use recipe::{Recipe, RecipeSet, StackKind};
pub use store::{Stack, StackMetadata, StackStore, StoredStack};

/// Where the host keeps extra CA certificates (Debian's convention).
pub const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// The account builds and apps run as inside every stack (see `rootfs/setup.sh`).
pub const STACK_USER: &str = "slipway";
/// uid and gid of [`STACK_USER`].
pub const STACK_UID: u32 = 10000;

/// What can go wrong with recipes and stacks.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("unknown stack {name:?}: known stacks are {known}")]
    UnknownStack { name: String, known: String },
    #[error("recipe of stack {name:?}, line {line}: {problem}; fix the recipe (format in rootfs/README.md)")]
    Recipe {
        name: String,
        line: usize,
        problem: String,
    },
    #[error("recipe of stack {name:?}: {problem}; fix the recipe (format in rootfs/README.md)")]
    RecipeShape { name: String, problem: String },
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("no apt sources on this host (looked in /etc/apt/sources.list and /etc/apt/sources.list.d/*.{{list,sources}}); configure apt so that `apt-get update` works, then retry")]
    NoAptSources,
    #[error("{tool} not found ({source}); run scripts/install-deps")]
    ToolMissing {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building stack {name:?} failed: {detail}; the partial tree was removed, see the output above")]
    BuildFailed { name: String, detail: String },
    #[error("metadata {path} is not valid stack metadata: {source}; remove that stack directory and rebuild")]
    BadMetadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, StackError>;

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(at("creating", path))?;
    file.write_all(bytes).map_err(at("writing", path))?;
    Ok(file.sync_all().map_err(at("syncing", path))?)
}
