//! The stack store: stacks kept under `<data>/stacks/<name>-<id>`, found by
//! the hash of their inputs, built once under a lock and renamed into place.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::builder::{find_busybox, package_versions, tree_size, BUILD_FORMAT};
use super::recipe::{is_stack_name, RecipeSet, StackKind};
use super::{write_synced, Result, StackError, HOST_CA_DIR};
use crate::sys::io::{at, PathError};

/// Hex digits of the sha256 kept in a stack id.
const ID_LEN: usize = 12;

const METADATA_FILE: &str = "stack.json";
pub(super) const ROOTFS_DIR: &str = "rootfs";
const LOCK_FILE: &str = ".lock";
const TMP_PREFIX: &str = ".tmp-";

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
    pub(super) stacks_dir: PathBuf,
    pub(super) recipes: RecipeSet,
    pub(super) ca_dir: PathBuf,
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
            let bytes = fs::read(&path).map_err(at("reading CA certificate", &path))?;
            feed(&format!("ca:{}", path.display()), &bytes);
        }
        match recipe.kind {
            StackKind::Debian { .. } => {
                for path in self.apt_sources()? {
                    let bytes = fs::read(&path).map_err(at("reading apt sources", &path))?;
                    feed(&format!("apt:{}", path.display()), &bytes);
                }
            }
            StackKind::Busybox => {
                let busybox = find_busybox()?;
                let bytes = fs::read(&busybox).map_err(at("reading", &busybox))?;
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
        fs::create_dir_all(&self.stacks_dir).map_err(at("creating", &self.stacks_dir))?;
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
            Err(e) => return Err(PathError::new("reading", &self.stacks_dir, e).into()),
        };
        let mut current_ids: BTreeMap<String, Option<String>> = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(at("reading", &self.stacks_dir))?;
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
        fs::create_dir_all(&self.stacks_dir).map_err(at("creating", &self.stacks_dir))?;
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
            Err(e) => return Err(PathError::new("reading", &meta_path, e).into()),
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
        for entry in fs::read_dir(&self.stacks_dir).map_err(at("reading", &self.stacks_dir))? {
            let entry = entry.map_err(at("reading", &self.stacks_dir))?;
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
        fs::create_dir_all(&tmp).map_err(at("creating", &tmp))?;
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
            fs::rename(&tmp, &final_dir).map_err(at("renaming build into", &final_dir))?;
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

    /// `*.crt` files of the CA dir, sorted; none when the dir is missing.
    fn ca_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        match fs::read_dir(&self.ca_dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry.map_err(at("reading", &self.ca_dir))?.path();
                    if path.extension().is_some_and(|e| e == "crt") && path.is_file() {
                        files.push(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PathError::new("reading", &self.ca_dir, e).into()),
        }
        files.sort();
        Ok(files)
    }

    /// The host's apt source files, in the order apt reads them. The stack
    /// gets its packages from wherever the host does; no mirror is named here.
    /// The host's apt sources for a stack of `suite`: as they are when the host runs that
    /// suite, else copies (in `tmp`) with the host's codename replaced by `suite`
    /// (`bookworm-updates` becomes `trixie-updates`), so another Debian release comes from
    /// the same mirrors and proxies the host uses.
    pub(super) fn apt_sources_for(&self, suite: &str, tmp: &Path) -> Result<Vec<PathBuf>> {
        let files = self.apt_sources()?;
        let host = host_codename(&self.apt_dir);
        let Some(host) = host.filter(|h| h != suite) else {
            return Ok(files);
        };
        let dir = tmp.join("apt-sources");
        fs::create_dir_all(&dir).map_err(at("creating", &dir))?;
        let mut out = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let text = fs::read_to_string(f).map_err(at("reading", f))?;
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let copy = dir.join(format!("{i}-{name}"));
            fs::write(&copy, replace_codename(&text, &host, suite))
                .map_err(at("writing", &copy))?;
            out.push(copy);
        }
        Ok(out)
    }

    pub(super) fn apt_sources(&self) -> Result<Vec<PathBuf>> {
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
                let path = entry.map_err(at("reading", &dir))?.path();
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

/// The Debian codename the host's apt sources are for (`VERSION_CODENAME` of the os-release
/// beside them).
fn host_codename(apt_dir: &Path) -> Option<String> {
    let etc = apt_dir.parent()?;
    let text = fs::read_to_string(etc.join("os-release")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// `text` with the suite words `from`, `from-updates`, `from-security`, … turned into `to`'s
/// on `Suites:` and one-line `deb` entries; other words (URLs, keyrings, comments) stay.
fn replace_codename(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let l = line.trim_start();
        let is_suite_line =
            l.starts_with("Suites:") || l.starts_with("deb ") || l.starts_with("deb-src ");
        if !is_suite_line {
            out.push_str(line);
            continue;
        }
        let replaced: Vec<String> = line
            .split(' ')
            .map(|w| match w.strip_prefix(from) {
                Some(rest) if rest.is_empty() || rest.starts_with(['-', '\n']) => {
                    format!("{to}{rest}")
                }
                _ => w.to_string(),
            })
            .collect();
        out.push_str(&replaced.join(" "));
    }
    out
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

/// Flushes the filesystem holding `path`, so that a tree renamed into place
/// after this survives a crash whole.
fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(at("opening", path))?;
    nix::unistd::syncfs(&dir)
        .map_err(|e| PathError::new("syncing the filesystem of", path, e.into()))?;
    Ok(())
}

fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PathError::new("removing", path, e).into()),
    }
}

/// An exclusive `flock` on a file, released when dropped (or when the
/// process dies, so a crashed build never leaves the store locked).
struct BuildLock {
    _lock: Flock<File>,
}

impl BuildLock {
    fn acquire(path: &Path) -> Result<Self> {
        let lock = crate::sys::lock::exclusive(path).map_err(at("locking", path))?;
        Ok(BuildLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_release_comes_from_the_same_mirrors() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        assert_eq!(
            replace_codename(deb822, "bookworm", "trixie"),
            deb822.replace("bookworm bookworm-updates", "trixie trixie-updates")
        );
        let one_line =
            "deb http://mirror.example/debian-security bookworm-security main\n# bookworm\n";
        assert_eq!(
            replace_codename(one_line, "bookworm", "trixie"),
            "deb http://mirror.example/debian-security trixie-security main\n# bookworm\n"
        );
    }

    use crate::stacks::recipe::recipe_set as set;
    use crate::stacks::STACK_UID;
    use std::os::unix::fs::MetadataExt;

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

    /// Building a stack needs root and busybox-static: without them the test fails, saying
    /// so, rather than passing unseen.
    fn can_build_busybox() -> bool {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "stack builds need root (chown, mknod): run the tests as root"
        );
        assert!(
            find_busybox().is_ok(),
            "busybox-static is missing: run scripts/install-deps"
        );
        true
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
