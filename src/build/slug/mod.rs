//! Slugs: a built app (`/app` after the buildpacks ran) packed as a
//! content-addressed `tar.zst`, and unpacked once into a read-only directory
//! that every container of the slug mounts as an overlay layer.
//!
//! Layout under `<data>/slugs`:
//!
//! ```text
//! <sha256>.tar.zst   the archive; its id is the sha256 of these bytes
//! <sha256>.slug.json {"unpacked_size": N}, written before the archive appears
//! <sha256>/app/      the unpacked slug (directories 0555, files without write bits)
//! <sha256>.json      the builder's record of the build (not written here)
//! .tmp-*, .*.tmp-*   work in progress; renamed into place only when complete
//! ```
//!
//! Archives are written by [`SlugStore::pack`] only, but unpacking still
//! treats them as hostile: the build that produced `/app` ran the app's own
//! code, and an archive on disk may have been replaced. Unpacking checks the
//! archive's sha256 against its id, then extracts it with the hardened
//! reader of [`crate::build::archive`].
//!
//! Symlinks with an absolute target are kept: they are resolved inside the
//! container (a Python virtualenv's `bin/python -> /usr/bin/python3`), never
//! on the host. Host code must not follow symlinks inside an unpacked slug.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::archive::{
    extract_tar, remove_tree, symlink_problem, write_item, ArchiveError, ExtractOptions, PackItem,
};
use crate::sys::io::{at, walking, PathError};

mod ignore;

pub use self::ignore::{apply_slugignore, SLUGIGNORE_FILE};

/// Where the slug sits inside an unpacked layer (`/app` in containers).
pub const LAYER_APP_DIR: &str = "app";
/// Name of the store under the data directory.
pub const SLUGS_DIR: &str = "slugs";
/// zstd level: 3 is zstd's default, a good ratio at a few hundred MB/s.
const ZSTD_LEVEL: i32 = 3;
const TMP_PREFIX: &str = ".tmp-";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique name for work in progress in `dir`.
fn tmp_path(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!(
        "{TMP_PREFIX}{what}-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What can go wrong with slugs.
#[derive(Debug, thiserror::Error)]
pub enum SlugError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("the slug would be {size} bytes unpacked ({size_mb} MB), over the limit of {limit} bytes ({limit_mb} MB); list large paths that the app does not need at run time (tests, docs, build caches) in .slugignore at the app root")]
    SlugTooLarge {
        size: u64,
        limit: u64,
        size_mb: u64,
        limit_mb: u64,
    },
    #[error(".slugignore line {line}: {pattern:?} is not a valid pattern ({reason}); use gitignore-style patterns such as `*.log`, `/tmp` or `docs/`")]
    BadSlugignore {
        line: usize,
        pattern: String,
        reason: String,
    },
    #[error("cannot pack {path}: {reason}")]
    Unpackable { path: PathBuf, reason: String },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{id:?} is not a slug id (64 lower-case hex digits)")]
    BadId { id: String },
    #[error("no slug {id} in {root}; build the app again to make it")]
    NoSuchSlug { id: String, root: PathBuf },
    #[error("slug archive {path} has sha256 {actual}, not its id; the file is damaged: delete it and build the app again")]
    Corrupt { path: PathBuf, actual: String },
    #[error("slug {id} is in use by a running container (pid {pid}): stop it first")]
    InUse { id: String, pid: i32 },
}

type Result<T> = std::result::Result<T, SlugError>;

/// A packed slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug {
    /// sha256 (hex) of the `tar.zst` archive.
    pub id: String,
    pub archive: PathBuf,
    /// Bytes of the archive.
    pub size: u64,
    /// Bytes of the regular files in it.
    pub unpacked_size: u64,
    /// Paths (relative to the app root) that `.slugignore` removed from the
    /// app dir before packing; empty for slugs found with [`SlugStore::get`].
    pub removed_by_slugignore: Vec<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SlugMeta {
    unpacked_size: u64,
}

/// Removes a file or a directory tree on drop, unless disarmed.
struct Cleanup {
    path: Option<PathBuf>,
}

impl Cleanup {
    fn new(path: &Path) -> Self {
        Cleanup {
            path: Some(path.to_path_buf()),
        }
    }
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = remove_tree(&path);
        }
    }
}

/// Writes through to `inner` while hashing and counting the bytes.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// True for 64 lower-case hex digits: ids become file names, so nothing else
/// (no `/`, no `..`) may get through.
pub fn is_slug_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The content-addressed slug store under `<data>/slugs`.
#[derive(Debug, Clone)]
pub struct SlugStore {
    root: PathBuf,
}

impl SlugStore {
    pub fn new(data_dir: &Path) -> SlugStore {
        SlugStore {
            root: data_dir.join(SLUGS_DIR),
        }
    }

    /// `<data>/slugs`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn archive_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.tar.zst"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.slug.json"))
    }

    fn ensure_root(&self) -> Result<()> {
        Ok(fs::create_dir_all(&self.root).map_err(at("creating the slug store", &self.root))?)
    }

    /// Apply .slugignore (gitignore-style patterns relative to the app root, like Heroku's: remove matching paths from app_dir BEFORE packing; report what was removed), always drop `.git`, then pack app_dir as a tar.zst (entries under `./`, numeric owners kept, symlinks kept as symlinks, no device files), writing to a temp file in the store and renaming to `<sha>.tar.zst` (same content => same id, reuse). Error SlugTooLarge when the unpacked size exceeds `limit` bytes (say the size, the limit, and to use .slugignore), leaving no partial file.
    ///
    /// The unpacked size counts the bytes of regular files. Devices, FIFOs and
    /// sockets are left out; hard links are stored as separate files; mtimes
    /// are kept (Python compares them with its `.pyc` files), so an unchanged
    /// directory packs to the same id. A relative symlink that climbs out of
    /// the app dir is refused here, since unpacking would refuse it.
    pub fn pack(&self, app_dir: &Path, limit: u64) -> Result<Slug> {
        self.pack_clamped(app_dir, limit, None)
    }

    /// `pack`, with every mtime in the archive no later than `mtime_clamp` (seconds): a build
    /// passes its source's newest time, so that rebuilding the same source with the same
    /// buildpacks gives the same slug id (the unpacked layer keeps its real times).
    pub fn pack_clamped(
        &self,
        app_dir: &Path,
        limit: u64,
        mtime_clamp: Option<u64>,
    ) -> Result<Slug> {
        let removed = apply_slugignore(app_dir)?;
        let (items, unpacked_size) = collect_items(app_dir)?;
        if unpacked_size > limit {
            return Err(SlugError::SlugTooLarge {
                size: unpacked_size,
                limit,
                size_mb: unpacked_size / 1_000_000,
                limit_mb: limit / 1_000_000,
            });
        }
        self.ensure_root()?;
        let tmp = tmp_path(&self.root, "pack");
        let mut cleanup = Cleanup::new(&tmp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(at("creating", &tmp))?;
        let writer = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let encoder = zstd::Encoder::new(writer, ZSTD_LEVEL).map_err(at("compressing", &tmp))?;
        let mut builder = tar::Builder::new(encoder);
        for item in &items {
            write_item(&mut builder, item, mtime_clamp)?;
        }
        let encoder = builder.into_inner().map_err(at("writing", &tmp))?;
        let mut writer = encoder.finish().map_err(at("compressing", &tmp))?;
        writer.flush().map_err(at("writing", &tmp))?;
        let size = writer.bytes;
        let id = hex::encode(writer.hasher.finalize());
        let file = writer
            .inner
            .into_inner()
            .map_err(|e| at("writing", &tmp)(e.into_error()))?;
        file.sync_all().map_err(at("syncing", &tmp))?;
        drop(file);

        let archive = self.archive_path(&id);
        if archive.exists() {
            // Same bytes, same id: keep the stored one.
            drop(cleanup);
        } else {
            self.write_meta(&id, unpacked_size)?;
            fs::rename(&tmp, &archive).map_err(at("renaming into place", &archive))?;
            cleanup.disarm();
        }
        Ok(Slug {
            id,
            archive,
            size,
            unpacked_size,
            removed_by_slugignore: removed,
        })
    }

    fn write_meta(&self, id: &str, unpacked_size: u64) -> Result<()> {
        let path = self.meta_path(id);
        let json = serde_json::to_vec(&SlugMeta { unpacked_size }).expect("plain struct");
        Ok(crate::sys::atomic::write(&path, &json).map_err(at("writing", &path))?)
    }

    /// Unpack once into `<root>/<id>/` (temp dir + rename; concurrent callers OK) and make it read-only (directories 0555, files drop write bits) — containers mount it as a read-only overlay layer. Returns the dir.
    ///
    /// The returned dir is an overlay layer: the slug's files are in its
    /// `app/` ([`LAYER_APP_DIR`]), so that on top of a stack they show at
    /// `/app`. The archive's sha256 is checked against `id` before anything
    /// is extracted; a mismatch or any hostile entry leaves nothing behind.
    pub fn unpack(&self, id: &str) -> Result<PathBuf> {
        if !is_slug_id(id) {
            return Err(SlugError::BadId { id: id.into() });
        }
        let dest = self.root.join(id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let archive = self.archive_path(id);
        let file = match File::open(&archive) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SlugError::NoSuchSlug {
                    id: id.into(),
                    root: self.root.clone(),
                })
            }
            other => other.map_err(at("opening", &archive))?,
        };
        // Check the bytes before trusting any of them.
        let mut hasher = Sha256::new();
        io::copy(&mut BufReader::with_capacity(1 << 20, &file), &mut hasher)
            .map_err(at("reading", &archive))?;
        let actual = hex::encode(hasher.finalize());
        if actual != id {
            return Err(SlugError::Corrupt {
                path: archive,
                actual,
            });
        }
        let file = File::open(&archive).map_err(at("opening", &archive))?;
        let tmp = tmp_path(&self.root, &format!("unpack-{}", &id[..12]));
        let cleanup = Cleanup::new(&tmp);
        fs::create_dir(&tmp).map_err(at("creating", &tmp))?;
        let decoder = zstd::Decoder::new(file).map_err(at("decompressing", &archive))?;
        let options = ExtractOptions {
            keep_owners: true,
            // Modes stay as built: the layer is only ever an overlay lower layer, which the
            // kernel never writes, and the app must be able to change /app through copy-up.
            read_only: false,
            max_unpacked: None,
        };
        // The layer holds `app/`, so that overlaid on a stack it shows at /app.
        let app = tmp.join(LAYER_APP_DIR);
        fs::create_dir(&app).map_err(at("creating", &app))?;
        extract_tar(decoder, &app, &options)?;
        publish_layer(&tmp, &dest, cleanup)
    }

    /// Install `app_dir` (the tree `pack` just packed as `id`) as the slug's unpacked layer by
    /// renaming it into place: the same bytes as unpacking the archive, without reading it
    /// back. When the layer exists already (an unchanged app), `app_dir` is left for the
    /// caller to remove.
    pub fn adopt(&self, id: &str, app_dir: &Path) -> Result<PathBuf> {
        if !is_slug_id(id) {
            return Err(SlugError::BadId { id: id.into() });
        }
        let dest = self.root.join(id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = tmp_path(&self.root, &format!("adopt-{}", &id[..12]));
        let cleanup = Cleanup::new(&tmp);
        fs::create_dir(&tmp).map_err(at("creating", &tmp))?;
        let app = tmp.join(LAYER_APP_DIR);
        fs::rename(app_dir, &app).map_err(at("moving into the slug store", app_dir))?;
        publish_layer(&tmp, &dest, cleanup)
    }

    /// Ids of the slugs in the store (those with an archive), sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".tar.zst").map(String::from))
            .filter(|id| is_slug_id(id))
            .collect();
        ids.sort();
        ids
    }

    /// Remove slug `id` (archive, unpacked layer, metadata); the bytes freed. Refused while a
    /// running container has the layer in its root.
    pub fn remove(&self, id: &str) -> Result<u64> {
        if !is_slug_id(id) {
            return Err(SlugError::BadId { id: id.into() });
        }
        let layer = self.root.join(id);
        if let Some(pid) = layer_user(&layer) {
            return Err(SlugError::InUse { id: id.into(), pid });
        }
        let freed = self.get(id).map_or(0, |s| s.size + s.unpacked_size);
        remove_tree(&layer).map_err(at("removing", &layer))?;
        for f in [
            self.archive_path(id),
            self.meta_path(id),
            self.root.join(format!("{id}.json")),
        ] {
            match fs::remove_file(&f) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(at("removing", &f)(e).into())
                }
                _ => {}
            }
        }
        Ok(freed)
    }

    /// The stored slug `id`, if its archive is in the store.
    pub fn get(&self, id: &str) -> Option<Slug> {
        if !is_slug_id(id) {
            return None;
        }
        let archive = self.archive_path(id);
        let size = fs::metadata(&archive).ok().filter(|m| m.is_file())?.len();
        let unpacked_size = match fs::read(self.meta_path(id))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SlugMeta>(&bytes).ok())
        {
            Some(meta) => meta.unpacked_size,
            None => unpacked_size_of(&archive).ok()?,
        };
        Some(Slug {
            id: id.to_string(),
            archive,
            size,
            unpacked_size,
            removed_by_slugignore: Vec::new(),
        })
    }
}

/// A process whose mount table shows `layer` as an overlay layer (containers mount in
/// namespaces of their own, so every process's table is read).
fn layer_user(layer: &Path) -> Option<i32> {
    let needle = layer.to_str()?;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(table) = fs::read_to_string(entry.path().join("mountinfo")) else {
            continue;
        };
        let uses = table.lines().any(|l| {
            l.contains(" - overlay ")
                && l.split([',', '=', ':', ' '])
                    .any(|part| part == needle || part.strip_prefix(needle) == Some("/"))
        });
        if uses {
            return Some(pid);
        }
    }
    None
}

/// Sum of the regular file sizes in an archive, read from its headers.
fn unpacked_size_of(archive: &Path) -> io::Result<u64> {
    let decoder = zstd::Decoder::new(File::open(archive)?)?;
    let mut tar = tar::Archive::new(decoder);
    let mut total = 0u64;
    for entry in tar.entries()? {
        let entry = entry?;
        if entry.header().entry_type().is_file() {
            total += entry.header().size()?;
        }
    }
    Ok(total)
}

/// Walks `app_dir` in name order (so that the same tree gives the same
/// archive) and returns what to pack and the sum of regular file sizes.
fn collect_items(app_dir: &Path) -> Result<(Vec<PackItem>, u64)> {
    let mut items = Vec::new();
    let mut total = 0u64;
    let walker = walkdir::WalkDir::new(app_dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        // `.git` never ships (Heroku and Scalingo alike).
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == OsStr::new(".git")));
    for entry in walker {
        let entry = entry.map_err(walking("walking", app_dir))?;
        let meta = entry
            .metadata()
            .map_err(walking("reading metadata of", entry.path()))?;
        let relative = entry.path().strip_prefix(app_dir).unwrap_or(Path::new(""));
        let mut name = b"./".to_vec();
        name.extend_from_slice(relative.as_os_str().as_bytes());
        let file_type = meta.file_type();
        let mut link_target = None;
        if file_type.is_dir() {
            if !relative.as_os_str().is_empty() {
                name.push(b'/');
            }
        } else if file_type.is_file() {
            total = total.saturating_add(meta.len());
        } else if file_type.is_symlink() {
            let target = fs::read_link(entry.path()).map_err(at("reading link", entry.path()))?;
            let components: Vec<&[u8]> = relative
                .as_os_str()
                .as_bytes()
                .split(|&b| b == b'/')
                .collect();
            if let Some(problem) = symlink_problem(&components, target.as_os_str().as_bytes()) {
                return Err(SlugError::Unpackable {
                    path: entry.path().to_path_buf(),
                    reason: format!(
                        "{problem}; make it point inside the app (relative), or to an absolute path such as /usr/bin/python3"
                    ),
                });
            }
            link_target = Some(target);
        } else {
            // Devices, FIFOs and sockets have no place in a slug.
            continue;
        }
        items.push(PackItem {
            path: entry.path().to_path_buf(),
            name,
            meta,
            link_target,
        });
    }
    Ok((items, total))
}

/// Move a finished layer from `tmp` to `dest`, its top directory read-only (nothing on the
/// host may add to a stored slug). Another caller finishing first is fine: same content.
fn publish_layer(tmp: &Path, dest: &Path, mut cleanup: Cleanup) -> Result<PathBuf> {
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o555))
        .map_err(at("making read-only", tmp))?;
    match fs::rename(tmp, dest) {
        Ok(()) => {
            cleanup.disarm();
            Ok(dest.to_path_buf())
        }
        Err(_) if dest.is_dir() => Ok(dest.to_path_buf()),
        Err(e) => Err(PathError::new("renaming into place", dest, e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn write(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// A small app tree with the usual suspects.
    fn sample_app(dir: &Path) {
        write(&dir.join("Procfile"), "web: ./server\n");
        write(&dir.join("server"), "#!/bin/sh\necho hi\n");
        fs::set_permissions(dir.join("server"), fs::Permissions::from_mode(0o4755)).unwrap();
        write(&dir.join("lib/app.py"), "print('x')\n");
        write(&dir.join(".git/HEAD"), "ref: refs/heads/main\n");
        write(&dir.join(".profile.d/env.sh"), "export A=1\n");
        symlink("lib/app.py", dir.join("link-rel")).unwrap();
        symlink("/usr/bin/python3", dir.join("lib/python")).unwrap();
        let long = "d".repeat(120);
        write(&dir.join(&long).join("f".repeat(150)), "deep\n");
    }

    fn list(tar_zst: &Path) -> Vec<String> {
        let decoder = zstd::Decoder::new(File::open(tar_zst).unwrap()).unwrap();
        let mut archive = tar::Archive::new(decoder);
        archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn pack_twice_gives_the_same_id_and_one_archive() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        sample_app(app.path());
        let store = SlugStore::new(data.path());
        let first = store.pack(app.path(), 1 << 30).unwrap();
        let second = store.pack(app.path(), 1 << 30).unwrap();
        assert_eq!(first.id, second.id);
        assert!(is_slug_id(&first.id));
        assert_eq!(
            first.archive,
            store.root().join(format!("{}.tar.zst", first.id))
        );
        let bytes = fs::read(&first.archive).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), first.id);
        assert_eq!(first.size, bytes.len() as u64);
        let expected = ["Procfile", "server", "lib/app.py", ".profile.d/env.sh"]
            .iter()
            .map(|p| fs::metadata(app.path().join(p)).unwrap().len())
            .sum::<u64>()
            + 5;
        assert_eq!(first.unpacked_size, expected);
        let leftovers: Vec<_> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(store.get(&first.id).unwrap().unpacked_size, expected);
        assert_eq!(store.get(&first.id).unwrap().size, first.size);
    }

    #[test]
    fn entries_are_under_dot_slash_and_git_is_gone() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        sample_app(app.path());
        let slug = SlugStore::new(data.path())
            .pack(app.path(), 1 << 30)
            .unwrap();
        let names = list(&slug.archive);
        assert_eq!(names[0], "./");
        assert!(names.iter().all(|n| n.starts_with("./")), "{names:?}");
        assert!(names.contains(&"./lib/app.py".to_string()));
        assert!(names.contains(&"./lib/".to_string()));
        assert!(names.iter().any(|n| n.len() > 250), "long names kept");
        assert!(!names.iter().any(|n| n.contains(".git")), "{names:?}");
        // The source tree keeps its .git: only the slug drops it.
        assert!(app.path().join(".git/HEAD").exists());
    }

    #[test]
    fn slugignore_removes_paths_before_packing() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        let a = app.path();
        write(
            &a.join(".slugignore"),
            "# big things\r\n*.log\n/tmp\ndocs/\n!keep.log\n\n",
        );
        write(&a.join("app.py"), "x");
        write(&a.join("server.log"), "log");
        write(&a.join("keep.log"), "kept");
        write(&a.join("lib/deep/trace.log"), "log");
        write(&a.join("tmp/cache.bin"), "tmp");
        write(&a.join("lib/tmp/data"), "only the root tmp goes");
        write(&a.join("docs/index.md"), "docs");
        write(&a.join("lib/docs/api.md"), "docs anywhere");
        write(&a.join("docs.txt"), "a file named docs.txt stays");
        symlink("/etc/passwd", a.join("evil.log")).unwrap();
        let store = SlugStore::new(data.path());
        let slug = store.pack(a, 1 << 30).unwrap();
        let mut removed: Vec<String> = slug
            .removed_by_slugignore
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            [
                "docs",
                "evil.log",
                "lib/deep/trace.log",
                "lib/docs",
                "server.log",
                "tmp"
            ]
        );
        assert!(!a.join("tmp").exists() && !a.join("docs").exists());
        assert!(a.join("lib/tmp/data").exists());
        assert!(
            fs::metadata("/etc/passwd").is_ok(),
            "symlink target untouched"
        );
        let names = list(&slug.archive);
        for gone in [
            "./server.log",
            "./tmp/",
            "./docs/",
            "./lib/docs/",
            "./evil.log",
        ] {
            assert!(!names.contains(&gone.to_string()), "{gone} in {names:?}");
        }
        for kept in [
            "./keep.log",
            "./docs.txt",
            "./lib/tmp/data",
            "./.slugignore",
        ] {
            assert!(names.contains(&kept.to_string()), "{kept} not in {names:?}");
        }
    }

    #[test]
    fn too_large_leaves_nothing_in_the_store() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        write(&app.path().join("big"), &"x".repeat(10_000));
        let store = SlugStore::new(data.path());
        let err = store.pack(app.path(), 9_999).unwrap_err();
        match &err {
            SlugError::SlugTooLarge { size, limit, .. } => {
                assert_eq!((*size, *limit), (10_000, 9_999));
            }
            other => panic!("{other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("10000") && message.contains("9999"),
            "{message}"
        );
        assert!(message.contains(".slugignore"), "{message}");
        let stored = fs::read_dir(store.root()).map(|d| d.count()).unwrap_or(0);
        assert_eq!(stored, 0);
        assert!(store.pack(app.path(), 10_000).is_ok(), "limit is inclusive");
    }

    #[test]
    fn escaping_relative_symlink_is_refused_at_pack_time() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        write(&app.path().join("a/file"), "x");
        symlink("../../etc/passwd", app.path().join("a/link")).unwrap();
        let store = SlugStore::new(data.path());
        let err = store.pack(app.path(), 1 << 30).unwrap_err();
        assert!(matches!(err, SlugError::Unpackable { .. }), "{err:?}");
        assert!(err.to_string().contains("a/link"), "{err}");
        let leftovers = fs::read_dir(store.root()).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn unpack_is_read_only_and_faithful() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        sample_app(app.path());
        fs::set_permissions(app.path().join("lib"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::lchown(app.path().join("lib/app.py"), Some(10000), Some(10001)).unwrap();
        std::os::unix::fs::lchown(app.path(), Some(10000), Some(10000)).unwrap();
        let store = SlugStore::new(data.path());
        let slug = store.pack(app.path(), 1 << 30).unwrap();
        let layer = store.unpack(&slug.id).unwrap();
        assert_eq!(layer, store.root().join(&slug.id));
        assert_eq!(
            store.unpack(&slug.id).unwrap(),
            layer,
            "second unpack reuses"
        );
        let names: Vec<_> = fs::read_dir(&layer)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["app"], "the layer holds app/ only");
        let dir = layer.join(LAYER_APP_DIR);
        let top = fs::metadata(&dir).unwrap();
        assert_eq!((top.uid(), top.gid()), (10000, 10000), "owner of /app kept");

        assert_eq!(
            fs::read_to_string(dir.join("Procfile")).unwrap(),
            "web: ./server\n"
        );
        let server = fs::metadata(dir.join("server")).unwrap();
        assert_eq!(server.mode() & 0o7000, 0, "setuid bits dropped");
        assert_ne!(
            server.mode() & 0o200,
            0,
            "modes kept: the app may change /app by copy-up"
        );
        let app_py = fs::metadata(dir.join("lib/app.py")).unwrap();
        assert_eq!((app_py.uid(), app_py.gid()), (10000, 10001));
        assert_eq!(app_py.mode() & 0o777, 0o644);
        let original = fs::metadata(app.path().join("lib/app.py")).unwrap();
        assert_eq!(app_py.mtime(), original.mtime());
        {
            let d = layer.clone();
            assert_eq!(
                fs::metadata(&d).unwrap().mode() & 0o7777,
                0o555,
                "{}",
                d.display()
            );
        }
        assert_eq!(
            fs::read_link(dir.join("link-rel")).unwrap(),
            Path::new("lib/app.py")
        );
        assert_eq!(
            fs::read_link(dir.join("lib/python")).unwrap(),
            Path::new("/usr/bin/python3")
        );
        assert!(!dir.join(".git").exists());
        let long = dir.join("d".repeat(120)).join("f".repeat(150));
        assert_eq!(fs::read_to_string(long).unwrap(), "deep\n");
        let tmp_left = fs::read_dir(store.root())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(TMP_PREFIX)
            })
            .count();
        assert_eq!(tmp_left, 0);
    }

    #[test]
    fn concurrent_unpacks_agree() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        sample_app(app.path());
        let store = SlugStore::new(data.path());
        let slug = store.pack(app.path(), 1 << 30).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                let id = slug.id.clone();
                std::thread::spawn(move || store.unpack(&id).unwrap())
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap(), store.root().join(&slug.id));
        }
        let entries: Vec<_> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 3, "{entries:?}"); // archive, meta, dir
    }

    #[test]
    fn bad_ids_and_missing_slugs() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path());
        for id in ["", "../x", &"A".repeat(64), &"0".repeat(63)] {
            assert!(
                matches!(store.unpack(id), Err(SlugError::BadId { .. })),
                "{id}"
            );
            assert!(store.get(id).is_none());
        }
        let id = "0".repeat(64);
        assert!(matches!(
            store.unpack(&id),
            Err(SlugError::NoSuchSlug { .. })
        ));
        assert!(store.get(&id).is_none());
    }

    #[test]
    fn damaged_archive_is_detected() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        sample_app(app.path());
        let store = SlugStore::new(data.path());
        let slug = store.pack(app.path(), 1 << 30).unwrap();
        let mut bytes = fs::read(&slug.archive).unwrap();
        bytes.extend_from_slice(b"trailing junk");
        fs::write(&slug.archive, bytes).unwrap();
        let err = store.unpack(&slug.id).unwrap_err();
        assert!(matches!(err, SlugError::Corrupt { .. }), "{err:?}");
        assert!(!store.root().join(&slug.id).exists());
    }

    /// Writes a hostile archive as `<sha>.tar.zst` into the store, so that
    /// the hash check passes and only the extraction rules stand in the way.
    fn store_hostile(store: &SlugStore, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> String {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        let tar_bytes = builder.into_inner().unwrap();
        let compressed = zstd::encode_all(&tar_bytes[..], 3).unwrap();
        let id = hex::encode(Sha256::digest(&compressed));
        fs::create_dir_all(store.root()).unwrap();
        fs::write(store.root().join(format!("{id}.tar.zst")), compressed).unwrap();
        id
    }

    fn raw_header(
        kind: tar::EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        size: u64,
    ) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(size);
        let field = &mut header.as_old_mut().name;
        field[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        header.set_cksum();
        header
    }

    fn assert_refused(id_and_store: (&SlugStore, String), entry: &str) {
        let (store, id) = id_and_store;
        let err = store.unpack(&id).unwrap_err();
        match &err {
            SlugError::Archive(ArchiveError::HostileEntry { entry: e, .. }) => {
                assert_eq!(e, entry, "{err}")
            }
            other => panic!("expected a refused entry {entry}, got {other:?}"),
        }
        assert!(err.to_string().contains(entry));
        assert!(!store.root().join(&id).exists());
        let tmp_left = fs::read_dir(store.root())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(TMP_PREFIX)
            })
            .count();
        assert_eq!(tmp_left, 0, "temp dir removed");
    }

    #[test]
    fn hostile_parent_dir_path_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path());
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(tar::EntryType::Regular, b"../x", None, 1),
                &b"x"[..],
            )
            .unwrap();
        });
        assert_refused((&store, id), "../x");
        assert!(!data.path().join("slugs/x").exists() && !data.path().join("x").exists());
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(tar::EntryType::Regular, b"./a/../../x", None, 1),
                &b"x"[..],
            )
            .unwrap();
        });
        assert_refused((&store, id), "./a/../../x");
    }

    #[test]
    fn hostile_absolute_path_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path());
        let target = format!("{}/escaped", data.path().display());
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(tar::EntryType::Regular, target.as_bytes(), None, 1),
                &b"x"[..],
            )
            .unwrap();
        });
        assert_refused((&store, id), &target);
        assert!(!Path::new(&target).exists());
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(tar::EntryType::Regular, b"/etc/x", None, 1),
                &b"x"[..],
            )
            .unwrap();
        });
        assert_refused((&store, id), "/etc/x");
        assert!(!Path::new("/etc/x").exists());
    }

    #[test]
    fn hostile_write_through_symlink_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path());
        let before = fs::read("/etc/passwd").unwrap();
        // A symlink to /etc/passwd, then a file written "through" it.
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(
                    tar::EntryType::Symlink,
                    b"./passwd",
                    Some(b"/etc/passwd"),
                    0,
                ),
                io::empty(),
            )
            .unwrap();
            b.append(
                &raw_header(tar::EntryType::Regular, b"./passwd", None, 5),
                &b"owned"[..],
            )
            .unwrap();
            b.append(
                &raw_header(tar::EntryType::Symlink, b"./etc", Some(b"/etc"), 0),
                io::empty(),
            )
            .unwrap();
            b.append(
                &raw_header(tar::EntryType::Regular, b"./etc/slipway-owned", None, 5),
                &b"owned"[..],
            )
            .unwrap();
        });
        assert_refused((&store, id), "./etc/slipway-owned");
        assert_eq!(fs::read("/etc/passwd").unwrap(), before);
        assert!(!Path::new("/etc/slipway-owned").exists());

        // The same through a symlinked directory pointing at a temp dir.
        let target = outside.path().as_os_str().as_bytes().to_vec();
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(tar::EntryType::Symlink, b"./out", Some(&target), 0),
                io::empty(),
            )
            .unwrap();
            b.append(
                &raw_header(tar::EntryType::Regular, b"./out/x", None, 1),
                &b"x"[..],
            )
            .unwrap();
        });
        assert_refused((&store, id), "./out/x");
        assert!(!outside.path().join("x").exists());
    }

    #[test]
    fn hostile_relative_symlink_out_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path());
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(
                    tar::EntryType::Symlink,
                    b"./a/up",
                    Some(b"../../etc/passwd"),
                    0,
                ),
                io::empty(),
            )
            .unwrap();
        });
        assert_refused((&store, id), "./a/up");
    }

    #[test]
    fn hostile_hard_links_are_refused() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path());
        for target in [
            &b"/etc/passwd"[..],
            b"../../../../etc/passwd",
            b"./not-there",
        ] {
            let id = store_hostile(&store, |b| {
                b.append(
                    &raw_header(tar::EntryType::Link, b"./link", Some(target), 0),
                    io::empty(),
                )
                .unwrap();
            });
            assert_refused((&store, id), "./link");
        }
        // A hard link through a symlink to a file outside.
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(tar::EntryType::Symlink, b"./etc", Some(b"/etc"), 0),
                io::empty(),
            )
            .unwrap();
            b.append(
                &raw_header(tar::EntryType::Link, b"./link", Some(b"./etc/passwd"), 0),
                io::empty(),
            )
            .unwrap();
        });
        assert_refused((&store, id), "./link");
        let passwd = fs::metadata("/etc/passwd").unwrap();
        assert_eq!(passwd.nlink(), 1, "no new link to /etc/passwd");
    }

    #[test]
    fn hard_link_inside_is_kept() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path());
        let id = store_hostile(&store, |b| {
            b.append(
                &raw_header(tar::EntryType::Regular, b"./a", None, 2),
                &b"hi"[..],
            )
            .unwrap();
            b.append(
                &raw_header(tar::EntryType::Link, b"./b", Some(b"./a"), 0),
                io::empty(),
            )
            .unwrap();
        });
        let dir = store.unpack(&id).unwrap().join(LAYER_APP_DIR);
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"hi");
        assert_eq!(
            fs::metadata(dir.join("a")).unwrap().ino(),
            fs::metadata(dir.join("b")).unwrap().ino()
        );
    }

    #[test]
    fn device_nodes_and_fifos_are_refused() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path());
        for (kind, name) in [
            (tar::EntryType::Char, "./null"),
            (tar::EntryType::Block, "./sda"),
            (tar::EntryType::Fifo, "./pipe"),
        ] {
            let id = store_hostile(&store, |b| {
                b.append(&raw_header(kind, name.as_bytes(), None, 0), io::empty())
                    .unwrap();
            });
            assert_refused((&store, id), name);
        }
    }

    #[test]
    fn special_files_are_left_out_of_a_pack() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        write(&app.path().join("a"), "x");
        nix::unistd::mkfifo(
            &app.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let slug = SlugStore::new(data.path())
            .pack(app.path(), 1 << 30)
            .unwrap();
        assert_eq!(list(&slug.archive), ["./", "./a"]);
    }

    /// Pack and unpack times of a 50 MB app dir (no assertion on time):
    /// `cargo test --release --lib measure_pack_unpack -- --ignored --nocapture`.
    /// `SLUG_MEASURE_DIR=/some/tree` measures a copy of a real tree instead.
    #[test]
    #[ignore]
    fn measure_pack_unpack() {
        let data = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        if let Ok(source) = std::env::var("SLUG_MEASURE_DIR") {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{source}/."))
                .arg(app.path())
                .status()
                .unwrap();
            assert!(status.success());
        } else {
            // 30 MB of source-like text in 2000 files, 20 MB of random bytes in 20.
            let line = "def handler(request):\n    return render(request, 'index.html', {'items': items})\n";
            let text = line.repeat(15_000 / line.len() + 1);
            for i in 0..2000 {
                write(
                    &app.path().join(format!("src/pkg{}/mod{i}.py", i % 40)),
                    &text[..15_000],
                );
            }
            let mut seed = 0x9e3779b97f4a7c15u64;
            for i in 0..20 {
                let bytes: Vec<u8> = (0..1_000_000)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                fs::write(app.path().join(format!("blob{i}.bin")), bytes).unwrap();
            }
        }
        let store = SlugStore::new(data.path());
        let started = std::time::Instant::now();
        let slug = store.pack(app.path(), u64::MAX).unwrap();
        let packed = started.elapsed();
        let started = std::time::Instant::now();
        store.unpack(&slug.id).unwrap();
        let unpacked = started.elapsed();
        println!(
            "unpacked {:.1} MB, archive {:.1} MB: pack {:.0} ms, unpack {:.0} ms",
            slug.unpacked_size as f64 / 1e6,
            slug.size as f64 / 1e6,
            packed.as_secs_f64() * 1e3,
            unpacked.as_secs_f64() * 1e3
        );
    }
}
