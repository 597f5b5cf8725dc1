//! Stacks: the root filesystems that builds and app containers run on.
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

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Data directory used when neither a flag nor `SLIPWAY_DATA_DIR` names one.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/slipway";

/// Where the host keeps extra CA certificates (Debian's convention).
pub const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// The account builds and apps run as inside every stack (see `rootfs/setup.sh`).
pub const STACK_USER: &str = "slipway";
/// uid and gid of [`STACK_USER`].
pub const STACK_UID: u32 = 10000;

/// Hex digits of the sha256 kept in a stack id.
const ID_LEN: usize = 12;

/// Bumped when the way a recipe turns into a tree changes in this file.
const BUILD_FORMAT: &str = "slipway-stack-v1";

const METADATA_FILE: &str = "stack.json";
const ROOTFS_DIR: &str = "rootfs";
const LOCK_FILE: &str = ".lock";
const DEB_CACHE_DIR: &str = ".debs";
const TMP_PREFIX: &str = ".tmp-";

const EMBEDDED_RECIPES: &[(&str, &str)] = &[
    ("run", include_str!("../../rootfs/run.stack")),
    ("build", include_str!("../../rootfs/build.stack")),
    ("busybox", include_str!("../../rootfs/busybox.stack")),
];
const EMBEDDED_SETUP: &str = include_str!("../../rootfs/setup.sh");

/// Packages whose versions are recorded in a stack's metadata.
const VERSIONED_PACKAGES: &[&str] = &["python3", "nodejs", "golang-go", "nginx-light", "busybox"];

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
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StackError + 'a {
    move |source| StackError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How a stack's tree is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StackKind {
    /// Debian packages installed by mmdebstrap.
    Debian { suite: String, variant: String },
    /// The host's static busybox with applet links.
    Busybox,
}

/// A parsed recipe, with the packages of the recipes it extends folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: String,
    pub kind: StackKind,
    /// Debian packages, in recipe order, without duplicates.
    pub packages: Vec<String>,
    /// Names of the recipes this one extends, nearest first.
    pub extends: Vec<String>,
}

/// One recipe file before the chain of `extends` is resolved.
#[derive(Debug, Default)]
struct RawRecipe {
    kind: Option<String>,
    suite: Option<String>,
    variant: Option<String>,
    extends: Option<String>,
    packages: Vec<String>,
}

/// Parses `key: value` lines; `#` starts a comment; an indented line
/// continues the previous key. Only `packages` may hold several words.
fn parse_raw(name: &str, text: &str) -> Result<RawRecipe> {
    let mut raw = RawRecipe::default();
    let mut current: Option<String> = None;
    let err = |line: usize, problem: String| StackError::Recipe {
        name: name.to_string(),
        line,
        problem,
    };
    for (index, full_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = full_line.split('#').next().unwrap_or("");
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = if line.starts_with(char::is_whitespace) {
            match &current {
                Some(key) => (key.clone(), line.trim()),
                None => return Err(err(line_no, "indented line with no key before it".into())),
            }
        } else {
            let Some((key, value)) = line.split_once(':') else {
                return Err(err(
                    line_no,
                    format!("expected `key: value`, found {:?}", line.trim()),
                ));
            };
            (key.trim().to_string(), value.trim())
        };
        let words: Vec<&str> = value.split_whitespace().collect();
        let single = |slot: &mut Option<String>| -> Result<()> {
            match words.as_slice() {
                [] => Ok(()),
                [word] if slot.is_none() => {
                    *slot = Some(word.to_string());
                    Ok(())
                }
                [_] => Err(err(line_no, format!("`{key}` given twice"))),
                _ => Err(err(
                    line_no,
                    format!("`{key}` takes one word, found {value:?}"),
                )),
            }
        };
        match key.as_str() {
            "kind" => single(&mut raw.kind)?,
            "suite" => single(&mut raw.suite)?,
            "variant" => single(&mut raw.variant)?,
            "extends" => single(&mut raw.extends)?,
            "packages" => {
                for word in words {
                    if !is_package_name(word) {
                        return Err(err(
                            line_no,
                            format!("{word:?} is not a Debian package name"),
                        ));
                    }
                    raw.packages.push(word.to_string());
                }
            }
            other => {
                return Err(err(
                    line_no,
                    format!(
                        "unknown key `{other}` (known: kind, suite, variant, extends, packages)"
                    ),
                ))
            }
        }
        current = Some(key);
    }
    Ok(raw)
}

/// Debian policy: lower case letters, digits, `+ - .`, at least two chars,
/// starting with a letter or digit. Anything else could smuggle options into
/// mmdebstrap's `--include`.
fn is_package_name(word: &str) -> bool {
    word.len() >= 2
        && word.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn is_stack_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The recipes a store builds from, and the setup script every stack runs.
#[derive(Debug, Clone)]
pub struct RecipeSet {
    texts: BTreeMap<String, String>,
    setup_script: String,
}

impl RecipeSet {
    /// The recipes compiled into this binary (the repository's `rootfs/`).
    pub fn embedded() -> Self {
        RecipeSet {
            texts: EMBEDDED_RECIPES
                .iter()
                .map(|(name, text)| (name.to_string(), text.to_string()))
                .collect(),
            setup_script: EMBEDDED_SETUP.to_string(),
        }
    }

    /// Recipes read from `dir/*.stack`, with `dir/setup.sh` if present (else
    /// the embedded one).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut texts = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_err("reading recipe directory", dir))? {
            let path = entry
                .map_err(io_err("reading recipe directory", dir))?
                .path();
            let (Some(stem), Some("stack")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if !is_stack_name(stem) {
                return Err(StackError::RecipeShape {
                    name: stem.to_string(),
                    problem:
                        "stack names are 1-32 lower case letters and digits, starting with a letter"
                            .into(),
                });
            }
            let text = fs::read_to_string(&path).map_err(io_err("reading recipe", &path))?;
            texts.insert(stem.to_string(), text);
        }
        let setup_path = dir.join("setup.sh");
        let setup_script = if setup_path.exists() {
            fs::read_to_string(&setup_path).map_err(io_err("reading setup script", &setup_path))?
        } else {
            EMBEDDED_SETUP.to_string()
        };
        Ok(RecipeSet {
            texts,
            setup_script,
        })
    }

    /// Names of all recipes, sorted.
    pub fn names(&self) -> Vec<String> {
        self.texts.keys().cloned().collect()
    }

    fn text(&self, name: &str) -> Result<&str> {
        self.texts
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| StackError::UnknownStack {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    /// The recipe `name` with its `extends` chain resolved.
    pub fn recipe(&self, name: &str) -> Result<Recipe> {
        let mut chain: Vec<(String, RawRecipe)> = Vec::new();
        let mut next = Some(name.to_string());
        while let Some(current) = next {
            if chain.iter().any(|(seen, _)| *seen == current) {
                return Err(StackError::RecipeShape {
                    name: name.to_string(),
                    problem: format!("`extends` loops back to {current:?}"),
                });
            }
            let raw = parse_raw(&current, self.text(&current)?)?;
            next = raw.extends.clone();
            chain.push((current, raw));
        }
        let (_, top) = &chain[0];
        let shape = |problem: String| StackError::RecipeShape {
            name: name.to_string(),
            problem,
        };
        let kind = match top.kind.as_deref() {
            Some("debian") => StackKind::Debian {
                suite: top
                    .suite
                    .clone()
                    .ok_or_else(|| shape("a debian stack needs `suite`".into()))?,
                variant: top.variant.clone().unwrap_or_else(|| "minbase".into()),
            },
            Some("busybox") => {
                if !top.packages.is_empty() || top.extends.is_some() {
                    return Err(shape(
                        "a busybox stack takes no packages and extends nothing".into(),
                    ));
                }
                StackKind::Busybox
            }
            Some(other) => {
                return Err(shape(format!(
                    "unknown kind {other:?} (known: debian, busybox)"
                )))
            }
            None => return Err(shape("missing `kind`".into())),
        };
        for (parent_name, parent) in &chain[1..] {
            let same_base = parent.kind == top.kind
                && parent.suite == top.suite
                && parent.variant.as_deref().unwrap_or("minbase")
                    == top.variant.as_deref().unwrap_or("minbase");
            if !same_base {
                return Err(shape(format!(
                    "extends {parent_name:?}, whose kind, suite or variant differ"
                )));
            }
        }
        // Packages of the most distant ancestor first, so the list reads
        // like the stack is layered.
        let mut seen = HashSet::new();
        let packages = chain
            .iter()
            .rev()
            .flat_map(|(_, raw)| raw.packages.iter())
            .filter(|p| seen.insert(p.as_str()))
            .cloned()
            .collect();
        Ok(Recipe {
            name: name.to_string(),
            kind,
            packages,
            extends: chain[1..].iter().map(|(n, _)| n.clone()).collect(),
        })
    }
}

/// What is recorded beside each stored stack in `stack.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackMetadata {
    pub name: String,
    pub id: String,
    #[serde(flatten)]
    pub kind: StackKind,
    pub packages: Vec<String>,
    /// Bytes of file content in the tree (hard links counted once).
    pub size_bytes: u64,
    pub build_seconds: f64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Versions of interesting packages in the tree (python3, nodejs,
    /// golang-go, ...), as dpkg knows them.
    pub versions: BTreeMap<String, String>,
}

/// A stored, complete stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub name: String,
    pub id: String,
    /// The root filesystem; mount it read-only.
    pub path: PathBuf,
    pub metadata: StackMetadata,
}

/// A stack found in the store, current or left over from an older recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStack {
    pub stack: Stack,
    /// The stack's id is the one its recipe gives now.
    pub current: bool,
}

/// Builds stacks on demand and keeps them under `<data>/stacks`.
#[derive(Debug, Clone)]
pub struct StackStore {
    stacks_dir: PathBuf,
    recipes: RecipeSet,
    ca_dir: PathBuf,
    apt_dir: PathBuf,
}

impl StackStore {
    /// A store under `data_dir` using the embedded recipes, the host's CA
    /// certificates and the host's apt sources.
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        StackStore {
            stacks_dir: data_dir.as_ref().join("stacks"),
            recipes: RecipeSet::embedded(),
            ca_dir: PathBuf::from(HOST_CA_DIR),
            apt_dir: PathBuf::from("/etc/apt"),
        }
    }

    /// Builds from other recipes (tests, or an edited `rootfs/`).
    pub fn with_recipes(mut self, recipes: RecipeSet) -> Self {
        self.recipes = recipes;
        self
    }

    /// Trusts the `*.crt` files of `dir` instead of the host's.
    pub fn with_ca_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ca_dir = dir.into();
        self
    }

    pub fn stacks_dir(&self) -> &Path {
        &self.stacks_dir
    }

    pub fn recipes(&self) -> &RecipeSet {
        &self.recipes
    }

    /// The id the recipe `name` gives today (hash of all its inputs).
    pub fn current_id(&self, name: &str) -> Result<String> {
        let recipe = self.recipes.recipe(name)?;
        let mut hash = Sha256::new();
        let mut feed = |label: &str, bytes: &[u8]| {
            // Length-prefixed so that no two input lists hash alike.
            hash.update((label.len() as u64).to_le_bytes());
            hash.update(label.as_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        feed("format", BUILD_FORMAT.as_bytes());
        for recipe_name in std::iter::once(&recipe.name).chain(&recipe.extends) {
            feed(
                &format!("recipe:{recipe_name}"),
                self.recipes.text(recipe_name)?.as_bytes(),
            );
        }
        feed("setup.sh", self.recipes.setup_script.as_bytes());
        for path in self.ca_files()? {
            let bytes = fs::read(&path).map_err(io_err("reading CA certificate", &path))?;
            feed(&format!("ca:{}", path.display()), &bytes);
        }
        match recipe.kind {
            StackKind::Debian { .. } => {
                for path in self.apt_sources()? {
                    let bytes = fs::read(&path).map_err(io_err("reading apt sources", &path))?;
                    feed(&format!("apt:{}", path.display()), &bytes);
                }
            }
            StackKind::Busybox => {
                let busybox = find_busybox()?;
                let bytes = fs::read(&busybox).map_err(io_err("reading", &busybox))?;
                feed("busybox", &bytes);
            }
        }
        Ok(hex::encode(hash.finalize())[..ID_LEN].to_string())
    }

    /// The stack `name` as its recipe is now, if it is already stored.
    pub fn find(&self, name: &str) -> Result<Option<Stack>> {
        let id = self.current_id(name)?;
        self.load(name, &id)
    }

    /// The stack `name` as its recipe is now: found in the store, or built.
    pub fn ensure(&self, name: &str) -> Result<Stack> {
        self.ensure_with_progress(name, &mut |_| {})
    }

    /// Like [`ensure`](Self::ensure), passing each line of build output to
    /// `progress` (nothing when the stack is already stored).
    pub fn ensure_with_progress(
        &self,
        name: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Stack> {
        let id = self.current_id(name)?;
        if let Some(stack) = self.load(name, &id)? {
            return Ok(stack);
        }
        fs::create_dir_all(&self.stacks_dir).map_err(io_err("creating", &self.stacks_dir))?;
        // One build at a time in a store: builds share the package cache and
        // each would half the other's speed on a small host anyway.
        let _lock = BuildLock::acquire(&self.stacks_dir.join(LOCK_FILE))?;
        if let Some(stack) = self.load(name, &id)? {
            return Ok(stack);
        }
        self.remove_leftovers()?;
        self.build(name, &id, progress)
    }

    /// Every stored stack, sorted by name then newest first.
    pub fn list(&self) -> Result<Vec<StoredStack>> {
        let mut found = Vec::new();
        let entries = match fs::read_dir(&self.stacks_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(io_err("reading", &self.stacks_dir)(e)),
        };
        let mut current_ids: BTreeMap<String, Option<String>> = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(io_err("reading", &self.stacks_dir))?;
            let file_name = entry.file_name();
            let Some((name, id)) = file_name.to_str().and_then(split_dir_name) else {
                continue;
            };
            let Some(stack) = self.load(name, id)? else {
                continue;
            };
            let current_id = current_ids
                .entry(name.to_string())
                .or_insert_with(|| self.current_id(name).ok());
            let current = current_id.as_deref() == Some(id);
            found.push(StoredStack { stack, current });
        }
        found.sort_by(|a, b| {
            (
                a.stack.name.as_str(),
                std::cmp::Reverse(a.stack.metadata.created),
            )
                .cmp(&(
                    b.stack.name.as_str(),
                    std::cmp::Reverse(b.stack.metadata.created),
                ))
        });
        Ok(found)
    }

    /// Stored stacks whose id is no longer the one their recipe gives (of
    /// `name` only, when given).
    pub fn stale(&self, name: Option<&str>) -> Result<Vec<Stack>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|s| !s.current && name.is_none_or(|n| n == s.stack.name))
            .map(|s| s.stack)
            .collect())
    }

    /// Removes stale stacks (see [`stale`](Self::stale)) and returns them.
    /// The caller must know that no container still uses them.
    pub fn prune(&self, name: Option<&str>) -> Result<Vec<Stack>> {
        fs::create_dir_all(&self.stacks_dir).map_err(io_err("creating", &self.stacks_dir))?;
        let _lock = BuildLock::acquire(&self.stacks_dir.join(LOCK_FILE))?;
        let stale = self.stale(name)?;
        for stack in &stale {
            let dir = self.stack_dir(&stack.name, &stack.id);
            remove_tree(&dir)?;
        }
        Ok(stale)
    }

    fn stack_dir(&self, name: &str, id: &str) -> PathBuf {
        self.stacks_dir.join(format!("{name}-{id}"))
    }

    /// The stored stack `name-id`, if complete.
    fn load(&self, name: &str, id: &str) -> Result<Option<Stack>> {
        let dir = self.stack_dir(name, id);
        let meta_path = dir.join(METADATA_FILE);
        let bytes = match fs::read(&meta_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &meta_path)(e)),
        };
        let metadata: StackMetadata =
            serde_json::from_slice(&bytes).map_err(|source| StackError::BadMetadata {
                path: meta_path.clone(),
                source,
            })?;
        Ok(Some(Stack {
            name: name.to_string(),
            id: id.to_string(),
            path: dir.join(ROOTFS_DIR),
            metadata,
        }))
    }

    /// Removes temporary trees of builds that died (we hold the lock, so
    /// none is running).
    fn remove_leftovers(&self) -> Result<()> {
        for entry in fs::read_dir(&self.stacks_dir).map_err(io_err("reading", &self.stacks_dir))? {
            let entry = entry.map_err(io_err("reading", &self.stacks_dir))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }

    fn build(&self, name: &str, id: &str, progress: &mut dyn FnMut(&str)) -> Result<Stack> {
        let recipe = self.recipes.recipe(name)?;
        let started = Instant::now();
        let tmp = self.stacks_dir.join(format!("{TMP_PREFIX}{name}-{id}"));
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let result = self.build_in(&recipe, &tmp, progress).and_then(|()| {
            let rootfs = tmp.join(ROOTFS_DIR);
            let metadata = StackMetadata {
                name: name.to_string(),
                id: id.to_string(),
                kind: recipe.kind.clone(),
                packages: recipe.packages.clone(),
                size_bytes: tree_size(&rootfs)?,
                build_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                versions: package_versions(&rootfs)?,
            };
            sync_filesystem(&tmp)?;
            let meta_path = tmp.join(METADATA_FILE);
            let json = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
            write_synced(&meta_path, &json)?;
            let final_dir = self.stack_dir(name, id);
            // The rename is the commit point: before it, nothing looks at tmp.
            fs::rename(&tmp, &final_dir).map_err(io_err("renaming build into", &final_dir))?;
            Ok(Stack {
                name: name.to_string(),
                id: id.to_string(),
                path: final_dir.join(ROOTFS_DIR),
                metadata,
            })
        });
        if result.is_err() {
            let _ = remove_tree(&tmp);
        }
        result
    }

    fn build_in(&self, recipe: &Recipe, tmp: &Path, progress: &mut dyn FnMut(&str)) -> Result<()> {
        let setup = tmp.join("setup.sh");
        write_synced(&setup, self.recipes.setup_script.as_bytes())?;
        let rootfs = tmp.join(ROOTFS_DIR);
        match &recipe.kind {
            StackKind::Debian { suite, variant } => {
                let cache = self.stacks_dir.join(DEB_CACHE_DIR);
                fs::create_dir_all(&cache).map_err(io_err("creating", &cache))?;
                let mut cmd = Command::new("mmdebstrap");
                cmd.arg("--mode=root")
                    .arg("--format=directory")
                    .arg(format!("--variant={variant}"));
                if !recipe.packages.is_empty() {
                    cmd.arg(format!("--include={}", recipe.packages.join(",")));
                }
                // dpkg's per-file fsync makes a build several times slower;
                // the whole tree is synced once before it is committed.
                cmd.arg("--dpkgopt=force-unsafe-io");
                // Documentation is not needed in a stack; copyright files stay.
                for opt in [
                    "path-exclude=/usr/share/man/*",
                    "path-exclude=/usr/share/info/*",
                    "path-exclude=/usr/share/doc/*",
                    "path-include=/usr/share/doc/*/copyright",
                ] {
                    cmd.arg(format!("--dpkgopt={opt}"));
                }
                // Keep downloaded .debs in the store so a changed recipe
                // rebuilds without downloading everything again.
                cmd.arg("--skip=download/empty")
                    .arg("--skip=essential/unlink")
                    .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
                    .arg(format!(
                        "--setup-hook=sync-in {} /var/cache/apt/archives/",
                        cache.display()
                    ))
                    .arg(format!(
                        "--customize-hook=sync-out /var/cache/apt/archives {}",
                        cache.display()
                    ))
                    .arg(format!(
                        "--customize-hook=sh {} \"$1\" {}",
                        shell_quote(&setup),
                        shell_quote(&self.ca_dir)
                    ))
                    .arg(suite)
                    .arg(&rootfs)
                    .args(self.apt_sources()?);
                run_streaming(&recipe.name, cmd, progress)
            }
            StackKind::Busybox => {
                lay_out_busybox(&rootfs)?;
                let mut cmd = Command::new("sh");
                cmd.arg(&setup).arg(&rootfs).arg(&self.ca_dir);
                run_streaming(&recipe.name, cmd, progress)
            }
        }
    }

    /// `*.crt` files of the CA dir, sorted; none when the dir is missing.
    fn ca_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        match fs::read_dir(&self.ca_dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry.map_err(io_err("reading", &self.ca_dir))?.path();
                    if path.extension().is_some_and(|e| e == "crt") && path.is_file() {
                        files.push(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading", &self.ca_dir)(e)),
        }
        files.sort();
        Ok(files)
    }

    /// The host's apt source files, in the order apt reads them. The stack
    /// gets its packages from wherever the host does; no mirror is named here.
    fn apt_sources(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let main = self.apt_dir.join("sources.list");
        if let Ok(text) = fs::read_to_string(&main) {
            let has_entries = text.lines().any(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('#')
            });
            if has_entries {
                files.push(main);
            }
        }
        let dir = self.apt_dir.join("sources.list.d");
        let mut parts = Vec::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries {
                let path = entry.map_err(io_err("reading", &dir))?.path();
                let ext = path.extension().and_then(|e| e.to_str());
                if matches!(ext, Some("list" | "sources")) && path.is_file() {
                    parts.push(path);
                }
            }
        }
        parts.sort();
        files.extend(parts);
        if files.is_empty() {
            return Err(StackError::NoAptSources);
        }
        Ok(files)
    }
}

/// `name-id` → (name, id) when id looks like one of ours.
fn split_dir_name(dir_name: &str) -> Option<(&str, &str)> {
    let (name, id) = dir_name.rsplit_once('-')?;
    let id_ok = id.len() == ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    (id_ok && is_stack_name(name)).then_some((name, id))
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(io_err("creating", path))?;
    file.write_all(bytes).map_err(io_err("writing", path))?;
    file.sync_all().map_err(io_err("syncing", path))
}

/// Flushes the filesystem holding `path`, so that a tree renamed into place
/// after this survives a crash whole.
fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(io_err("opening", path))?;
    // SAFETY: syncfs on a descriptor we own; no memory is involved.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io_err("syncing the filesystem of", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// Runs `cmd`, handing each line of its stdout and stderr to `progress`.
fn run_streaming(name: &str, mut cmd: Command, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (reader, writer) = nix::unistd::pipe().map_err(|e| StackError::Io {
        action: "creating a pipe for",
        path: PathBuf::from(&program),
        source: e.into(),
    })?;
    let writer_err = writer
        .try_clone()
        .map_err(io_err("duplicating a pipe for", Path::new(&program)))?;
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer_err);
    let mut child = cmd.spawn().map_err(|source| StackError::ToolMissing {
        tool: program.clone(),
        source,
    })?;
    // The Command still holds the write ends; drop it so that EOF arrives
    // when the child (and its children) exit.
    drop(cmd);
    for line in BufReader::new(File::from(reader)).lines() {
        match line {
            Ok(line) => progress(&line),
            Err(_) => break,
        }
    }
    let status = child
        .wait()
        .map_err(io_err("waiting for", Path::new(&program)))?;
    if status.success() {
        Ok(())
    } else {
        Err(StackError::BuildFailed {
            name: name.to_string(),
            detail: format!("{program} exited with {status}"),
        })
    }
}

fn find_busybox() -> Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| StackError::ToolMissing {
            tool: "busybox".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// A static busybox, a link for each applet, and the few /etc files that
/// programs expect.
fn lay_out_busybox(root: &Path) -> Result<()> {
    let busybox = find_busybox()?;
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run",
        "var/tmp", "app",
    ] {
        let path = root.join(dir);
        fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
    }
    let target = root.join("bin/busybox");
    fs::copy(&busybox, &target).map_err(io_err("copying busybox to", &target))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &target))?;
    let output = Command::new(&target)
        .arg("--list-full")
        .output()
        .map_err(|source| StackError::ToolMissing {
            tool: target.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(StackError::BuildFailed {
            name: "busybox".into(),
            detail: format!(
                "`busybox --list-full` exited with {}; is it busybox-static?",
                output.status
            ),
        });
    }
    for applet in String::from_utf8_lossy(&output.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet.contains("..") || applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink("/bin/busybox", &link).map_err(io_err("linking", &link))?;
        }
    }
    let etc_files: &[(&str, &str)] = &[
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        (
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
        ),
        ("etc/os-release", "NAME=\"slipway busybox\"\nID=busybox\n"),
    ];
    for (path, content) in etc_files {
        let path = root.join(path);
        fs::write(&path, content).map_err(io_err("writing", &path))?;
    }
    let tmp = root.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(io_err("chmod", &tmp))?;
    Ok(())
}

/// Bytes of regular files and symlinks under `root`, each inode once.
fn tree_size(root: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            StackError::Io {
                action: "measuring",
                path,
                source: e.into(),
            }
        })?;
        let meta = entry.metadata().map_err(|e| StackError::Io {
            action: "measuring",
            path: entry.path().to_path_buf(),
            source: e.into(),
        })?;
        if !meta.is_dir() && seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Versions of [`VERSIONED_PACKAGES`] from the tree's dpkg status, or the
/// busybox banner for a busybox tree.
fn package_versions(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut versions = BTreeMap::new();
    let status_path = root.join("var/lib/dpkg/status");
    match fs::read_to_string(&status_path) {
        Ok(status) => {
            for paragraph in status.split("\n\n") {
                let field = |key: &str| {
                    paragraph
                        .lines()
                        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
                };
                if let (Some(package), Some(version)) = (field("Package:"), field("Version:")) {
                    let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
                    if installed && VERSIONED_PACKAGES.contains(&package.as_str()) {
                        versions.insert(package, version);
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Ok(output) = Command::new(root.join("bin/busybox")).output() {
                let banner = String::from_utf8_lossy(&output.stdout);
                if let Some(version) = banner
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                {
                    versions.insert("busybox".into(), version.to_string());
                }
            }
        }
        Err(e) => return Err(io_err("reading", &status_path)(e)),
    }
    Ok(versions)
}

/// An exclusive `flock` on a file, released when dropped (or when the
/// process dies, so a crashed build never leaves the store locked).
struct BuildLock {
    _file: File,
}

impl BuildLock {
    fn acquire(path: &Path) -> Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err("opening lock file", path))?;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(BuildLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(io_err("locking", path)(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(recipes: &[(&str, &str)]) -> RecipeSet {
        RecipeSet {
            texts: recipes
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            setup_script: EMBEDDED_SETUP.to_string(),
        }
    }

    #[test]
    fn embedded_recipes_parse() {
        let recipes = RecipeSet::embedded();
        let build = recipes.recipe("build").unwrap();
        assert_eq!(build.extends, vec!["run".to_string()]);
        assert!(build.packages.contains(&"python3".to_string()));
        assert!(build.packages.contains(&"golang".to_string()));
        let run = recipes.recipe("run").unwrap();
        assert!(!run.packages.contains(&"golang".to_string()));
        assert_eq!(recipes.recipe("busybox").unwrap().kind, StackKind::Busybox);
    }

    #[test]
    fn continuation_lines_and_comments() {
        let r = set(&[(
            "a",
            "kind: debian # the base\nsuite: bookworm\npackages: bash\n  curl  git\n# all\n\n",
        )]);
        let recipe = r.recipe("a").unwrap();
        assert_eq!(recipe.packages, vec!["bash", "curl", "git"]);
        assert_eq!(
            recipe.kind,
            StackKind::Debian {
                suite: "bookworm".into(),
                variant: "minbase".into()
            }
        );
    }

    #[test]
    fn bad_recipes_are_reported_with_their_line() {
        let cases = [
            ("kind: debian\nsuite: bookworm\npackages: --foo\n", "line 3"),
            ("kind: debian\nsuite bookworm\n", "line 2"),
            ("kind: debian\nsuite: a b\n", "line 2"),
            ("  bash\n", "line 1"),
            ("kind: debian\nmirror: x\n", "unknown key"),
            ("kind: debian\n", "needs `suite`"),
            ("kind: rpm\n", "unknown kind"),
            ("suite: bookworm\n", "missing `kind`"),
            ("kind: busybox\npackages: bash\n", "takes no packages"),
        ];
        for (text, expected) in cases {
            let err = set(&[("a", text)]).recipe("a").unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn extends_loops_and_mismatches_are_refused() {
        let loops = set(&[
            ("a", "kind: debian\nsuite: s\nextends: b\n"),
            ("b", "kind: debian\nsuite: s\nextends: a\n"),
        ]);
        assert!(loops.recipe("a").unwrap_err().to_string().contains("loops"));
        let mismatch = set(&[
            ("a", "kind: debian\nsuite: s\nextends: b\n"),
            ("b", "kind: debian\nsuite: t\n"),
        ]);
        assert!(mismatch
            .recipe("a")
            .unwrap_err()
            .to_string()
            .contains("differ"));
        let unknown = set(&[("a", "kind: debian\nsuite: s\nextends: zz\n")]);
        assert!(matches!(
            unknown.recipe("a"),
            Err(StackError::UnknownStack { .. })
        ));
    }

    #[test]
    fn extended_packages_come_first_without_duplicates() {
        let r = set(&[
            (
                "a",
                "kind: debian\nsuite: s\nextends: b\npackages: gcc bash\n",
            ),
            ("b", "kind: debian\nsuite: s\npackages: bash curl\n"),
        ]);
        assert_eq!(r.recipe("a").unwrap().packages, vec!["bash", "curl", "gcc"]);
    }

    #[test]
    fn dir_names_split_only_when_they_are_ours() {
        assert_eq!(
            split_dir_name("run-0123456789ab"),
            Some(("run", "0123456789ab"))
        );
        assert_eq!(split_dir_name("run-0123456789AB"), None);
        assert_eq!(split_dir_name("run-0123"), None);
        assert_eq!(split_dir_name(".tmp-run-0123456789ab"), None);
        assert_eq!(split_dir_name(".debs"), None);
    }

    fn temp_dir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("slipway-stack-{tag}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn id_changes_with_recipe_and_ca_files() {
        let data = temp_dir("id");
        let ca = temp_dir("ca");
        let store = StackStore::new(data.path()).with_ca_dir(ca.path());
        let a = store.current_id("busybox").unwrap();
        assert_eq!(a.len(), ID_LEN);
        assert_eq!(a, store.current_id("busybox").unwrap());
        fs::write(ca.path().join("extra.crt"), "not really a cert").unwrap();
        let b = store.current_id("busybox").unwrap();
        assert_ne!(a, b);
        let edited = store
            .clone()
            .with_recipes(set(&[("busybox", "kind: busybox\n# edited\n")]));
        assert_ne!(b, edited.current_id("busybox").unwrap());
    }

    /// Builds the busybox stack for real (root only: setup.sh chowns /app).
    #[test]
    fn busybox_stack_builds_once_and_prunes_stale_ids() {
        if !can_build_busybox() {
            return;
        }
        let data = temp_dir("busybox");
        let ca = temp_dir("ca");
        let store = StackStore::new(data.path()).with_ca_dir(ca.path());
        let mut lines = 0;
        let stack = store
            .ensure_with_progress("busybox", &mut |_| lines += 1)
            .unwrap();
        assert!(stack.path.join("bin/sh").symlink_metadata().is_ok());
        assert!(stack.path.join("app").is_dir());
        let passwd = fs::read_to_string(stack.path.join("etc/passwd")).unwrap();
        assert!(passwd.contains("slipway:x:10000:10000:"));
        assert_eq!(
            fs::metadata(stack.path.join("app")).unwrap().uid(),
            STACK_UID
        );
        assert!(stack.metadata.size_bytes > 0);
        assert!(stack.metadata.versions.contains_key("busybox"));
        // Reused, not rebuilt.
        let again = store.ensure("busybox").unwrap();
        assert_eq!(again, stack);

        // A changed recipe gives a new stack; the old one becomes stale.
        let edited = store
            .clone()
            .with_recipes(set(&[("busybox", "kind: busybox\n# v2\n")]));
        let newer = edited.ensure("busybox").unwrap();
        assert_ne!(newer.id, stack.id);
        let listed = edited.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed.iter().filter(|s| s.current).count(), 1);
        let pruned = edited.prune(Some("busybox")).unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!(pruned[0].id, stack.id);
        assert!(!stack.path.exists());
        assert!(newer.path.exists());
        let leftovers: Vec<_> = fs::read_dir(edited.stacks_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn can_build_busybox() -> bool {
        let ok = nix::unistd::Uid::effective().is_root() && find_busybox().is_ok();
        if !ok {
            eprintln!("skipped: needs root and busybox-static");
        }
        ok
    }

    #[test]
    fn concurrent_ensures_build_once() {
        if !can_build_busybox() {
            return;
        }
        let data = temp_dir("race");
        let ca = temp_dir("ca");
        let store = StackStore::new(data.path()).with_ca_dir(ca.path());
        let stacks: Vec<Stack> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|_| scope.spawn(|| store.ensure("busybox").unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(stacks.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn failed_build_leaves_nothing_behind() {
        if !can_build_busybox() {
            return;
        }
        let data = temp_dir("fail");
        let ca = temp_dir("ca");
        let mut recipes = set(&[("busybox", "kind: busybox\n")]);
        recipes.setup_script = "echo setting up; echo broken >&2; exit 3\n".into();
        let store = StackStore::new(data.path())
            .with_ca_dir(ca.path())
            .with_recipes(recipes);
        let mut output = Vec::new();
        let err = store
            .ensure_with_progress("busybox", &mut |line| output.push(line.to_string()))
            .unwrap_err();
        assert!(matches!(err, StackError::BuildFailed { .. }), "{err}");
        assert_eq!(output, vec!["setting up", "broken"]);
        let names: Vec<_> = fs::read_dir(store.stacks_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK_FILE)
            .collect();
        assert!(names.is_empty(), "{names:?}");
        assert!(store.find("busybox").unwrap().is_none());
    }

    #[test]
    fn unknown_stack_names_the_known_ones() {
        let data = temp_dir("unknown");
        let err = StackStore::new(data.path())
            .ensure("nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("busybox") && err.contains("run"), "{err}");
    }
}
