//! The per-app build cache: the `CACHE_DIR` that `bin/compile` gets, kept
//! between builds of one app in `<data>/cache/<app>`.
//!
//! Builds write into it as the stack user, and what they write is the app's
//! own doing: everything here walks the tree without following symlinks, so
//! that a symlink planted in the cache (to `/etc/shadow`, say) is changed or
//! removed itself, never its target.
//!
//! A build never writes the stored cache itself. It sees an overlay whose lower layer is the
//! cache and whose upper layer is its own (`CacheSession`); only a successful build's changes
//! are merged into the cache, so a failed build leaves the cache of the last successful one,
//! as Heroku keeps it. Builds of one app take the app's cache lock in turn (`lock`).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::app_name::{check_app_name, AppNameError};
use super::archive::remove_tree;
use crate::sandbox::mounts::{mount_overlay_with, Overlay};
use crate::sandbox::SandboxError;
use crate::sys::io::{at, walking, PathError};

/// Name of the cache area under the data directory.
pub const CACHE_DIR: &str = "cache";

/// What can go wrong with a build cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    BadAppName(#[from] AppNameError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error(
        "build cache {path} is not a directory; remove it, a new cache is made on the next build"
    )]
    NotADirectory { path: PathBuf },
    #[error("build cache: {0}")]
    Overlay(#[from] SandboxError),
    #[error("lock the build cache {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },
}

/// Held while a build of the app runs; the next build of the same app waits for it.
pub struct CacheLock {
    _file: Flock<fs::File>,
}

/// A build's view of the cache: an overlay over the stored cache, mounted at `view()`;
/// `commit` merges what the build changed into the cache, dropping forgets it.
pub struct CacheSession {
    overlay: Option<Overlay>,
    upper: PathBuf,
    cache: PathBuf,
    view: PathBuf,
}

/// The build cache of one app.
#[derive(Debug, Clone)]
pub struct BuildCache {
    dir: PathBuf,
}

impl BuildCache {
    /// The cache of `app` under `<data_dir>/cache/<app>`; nothing is created yet.
    pub fn new(data_dir: &Path, app: &str) -> Result<BuildCache, CacheError> {
        // One plain path component: no `/`, no `.`, so never `..`.
        check_app_name(app)?;
        Ok(BuildCache {
            dir: data_dir.join(CACHE_DIR).join(app),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the cache dir and gives the whole tree to `uid:gid`. The walk
    /// happens only when the top directory's owner differs (a first build, or
    /// a stack user that changed), so that a warm cache costs one `stat`.
    /// The top directory is made 0700: caches hold downloaded packages and,
    /// at times, credentials of the app.
    pub fn ensure(&self, uid: u32, gid: u32) -> Result<(), CacheError> {
        fs::create_dir_all(&self.dir).map_err(at("creating", &self.dir))?;
        let meta = fs::symlink_metadata(&self.dir).map_err(at("checking", &self.dir))?;
        if !meta.is_dir() {
            return Err(CacheError::NotADirectory {
                path: self.dir.clone(),
            });
        }
        if meta.uid() != uid || meta.gid() != gid {
            for entry in walkdir::WalkDir::new(&self.dir).follow_links(false) {
                let entry = entry.map_err(walking("walking", &self.dir))?;
                // lchown: a symlink gets a new owner itself, its target never.
                std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))
                    .map_err(at("changing the owner of", entry.path()))?;
            }
        }
        if meta.mode() & 0o7777 != 0o700 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(at("setting the mode of", &self.dir))?;
        }
        Ok(())
    }

    /// Take the app's cache lock, waiting (after `on_wait`) while another build holds it.
    pub fn lock(&self, on_wait: &mut dyn FnMut()) -> Result<CacheLock, CacheError> {
        let parent = self.dir.parent().expect("the cache dir has a parent");
        fs::create_dir_all(parent).map_err(at("creating", parent))?;
        let path = self.dir.with_extension("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(at("opening", &path))?;
        let lock_err = |path: &Path, (_, e): (fs::File, nix::Error)| CacheError::Lock {
            path: path.to_path_buf(),
            source: e,
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => Ok(CacheLock { _file: f }),
            Err((file, nix::Error::EWOULDBLOCK)) => {
                on_wait();
                Flock::lock(file, FlockArg::LockExclusive)
                    .map(|f| CacheLock { _file: f })
                    .map_err(|e| lock_err(&path, e))
            }
            Err(e) => Err(lock_err(&path, e)),
        }
    }

    /// Mount the build's view of the cache in `workspace` (`cache-view`, with its own upper
    /// and work dirs there). The caller must be in a private mount namespace.
    pub fn session(&self, workspace: &Path, uid: u32) -> Result<CacheSession, CacheError> {
        let (upper, work, view) = (
            workspace.join("cache-upper"),
            workspace.join("cache-work"),
            workspace.join("cache-view"),
        );
        for d in [&upper, &work, &view] {
            fs::create_dir_all(d).map_err(at("creating", d))?;
        }
        // The view's top directory takes the upper's owner and mode.
        std::os::unix::fs::lchown(&upper, Some(uid), Some(uid))
            .map_err(at("changing the owner of", &upper))?;
        fs::set_permissions(&upper, fs::Permissions::from_mode(0o700))
            .map_err(at("setting the mode of", &upper))?;
        // redirect_dir off: a renamed directory is copied up whole, so merging the upper
        // layer needs no knowledge of redirects.
        let overlay = mount_overlay_with(&[&self.dir], &upper, &work, &view, "redirect_dir=off")?;
        Ok(CacheSession {
            overlay: Some(overlay),
            upper,
            cache: self.dir.clone(),
            view,
        })
    }

    /// Removes the cache and returns the bytes its files held. A missing
    /// cache frees 0 bytes.
    pub fn clear(&self) -> Result<u64, CacheError> {
        let freed = self.size();
        match fs::symlink_metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(PathError::new("checking", &self.dir, e).into()),
            Ok(meta) if !meta.is_dir() => {
                fs::remove_file(&self.dir).map_err(at("removing", &self.dir))?
            }
            Ok(_) => {
                // A build may have left directories without write bits.
                for entry in walkdir::WalkDir::new(&self.dir)
                    .follow_links(false)
                    .into_iter()
                    .flatten()
                {
                    if entry.file_type().is_dir() {
                        let _ =
                            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
                    }
                }
                fs::remove_dir_all(&self.dir).map_err(at("removing", &self.dir))?
            }
        }
        Ok(freed)
    }

    /// Bytes of the regular files in the cache (0 when there is none).
    /// Unreadable parts are skipped: this is a report, not an audit.
    pub fn size(&self) -> u64 {
        walkdir::WalkDir::new(&self.dir)
            .follow_links(false)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

impl CacheSession {
    /// Where the build sees the cache.
    pub fn view(&self) -> &Path {
        &self.view
    }

    /// The build succeeded: merge its changes into the stored cache.
    pub fn commit(mut self) -> Result<(), CacheError> {
        drop(self.overlay.take());
        merge_upper(&self.upper, &self.cache)
    }
}

impl Drop for CacheSession {
    fn drop(&mut self) {
        // Uncommitted: the overlay goes, and the workspace takes the upper layer with it.
        drop(self.overlay.take());
    }
}

/// An overlayfs whiteout: a character device 0:0 marks a lower entry as deleted.
fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// An overlayfs opaque directory hides everything of the lower one.
fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
    else {
        return false;
    };
    let mut value = [0u8; 1];
    // SAFETY: a NUL-terminated path, a static attribute name and a buffer of its stated size;
    // lgetxattr never follows a symlink.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Apply an overlay's upper layer to its (unmounted) lower directory: whiteouts delete,
/// opaque and new directories replace, files and links replace, other directories merge.
/// Renames only: upper and lower are on one filesystem, and nothing is followed.
fn merge_upper(upper: &Path, lower: &Path) -> Result<(), CacheError> {
    for entry in fs::read_dir(upper).map_err(at("reading", upper))? {
        let entry = entry.map_err(at("reading", upper))?;
        let (from, to) = (entry.path(), lower.join(entry.file_name()));
        let meta = fs::symlink_metadata(&from).map_err(at("checking", &from))?;
        let to_meta = fs::symlink_metadata(&to).ok();
        if is_whiteout(&meta) {
            remove_tree(&to).map_err(at("removing", &to))?;
        } else if meta.is_dir() && !is_opaque(&from) && to_meta.as_ref().is_some_and(|m| m.is_dir())
        {
            merge_upper(&from, &to)?;
            fs::set_permissions(&to, meta.permissions()).map_err(at("setting the mode of", &to))?;
        } else {
            if to_meta.is_some_and(|m| m.is_dir()) {
                remove_tree(&to).map_err(at("removing", &to))?;
            }
            fs::rename(&from, &to).map_err(at("moving into the cache", &to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_an_upper_layer_applies_deletions_replacements_and_new_files() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "needs root (whiteouts are device nodes)"
        );
        let d = tempfile::tempdir().unwrap();
        let (upper, lower) = (d.path().join("upper"), d.path().join("lower"));
        for p in [
            "lower/keep",
            "lower/gone",
            "lower/replaced",
            "lower/sub/old",
            "upper/sub",
        ] {
            fs::create_dir_all(d.path().join(p)).unwrap();
        }
        fs::write(lower.join("file"), "old").unwrap();
        fs::write(lower.join("sub/kept"), "kept").unwrap();
        fs::write(upper.join("file"), "new").unwrap();
        fs::write(upper.join("sub/added"), "added").unwrap();
        fs::write(upper.join("replaced"), "now a file").unwrap();
        nix::sys::stat::mknod(
            &upper.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        merge_upper(&upper, &lower).unwrap();
        assert_eq!(fs::read_to_string(lower.join("file")).unwrap(), "new");
        assert_eq!(
            fs::read_to_string(lower.join("sub/added")).unwrap(),
            "added"
        );
        assert_eq!(fs::read_to_string(lower.join("sub/kept")).unwrap(), "kept");
        assert!(lower.join("sub/old").is_dir() && lower.join("keep").is_dir());
        assert!(!lower.join("gone").exists());
        assert_eq!(
            fs::read_to_string(lower.join("replaced")).unwrap(),
            "now a file"
        );
    }
    use crate::build::app_name::APP_NAME_RULE;
    use std::os::unix::fs::symlink;

    #[test]
    fn app_names() {
        let data = Path::new("/nonexistent");
        for good in ["a", "my-app-2", &"a".repeat(40)] {
            assert!(BuildCache::new(data, good).is_ok(), "{good}");
        }
        for bad in ["", "My-App", "../x", "a/b", "a.b", "a_b", &"a".repeat(41)] {
            let err = BuildCache::new(data, bad).unwrap_err();
            assert!(matches!(err, CacheError::BadAppName(_)), "{bad}");
            assert!(err.to_string().contains(APP_NAME_RULE));
        }
        let cache = BuildCache::new(data, "web").unwrap();
        assert_eq!(cache.dir(), Path::new("/nonexistent/cache/web"));
    }

    #[test]
    fn ensure_creates_and_chowns_without_following_symlinks() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let cache = BuildCache::new(data.path(), "app").unwrap();
        fs::create_dir_all(cache.dir().join("pip/wheels")).unwrap();
        fs::write(cache.dir().join("pip/wheels/x.whl"), "wheel").unwrap();
        symlink(outside.path(), cache.dir().join("evil")).unwrap();

        cache.ensure(10000, 10000).unwrap();
        for path in ["", "pip", "pip/wheels", "pip/wheels/x.whl", "evil"] {
            let meta = fs::symlink_metadata(cache.dir().join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (10000, 10000), "{path:?}");
        }
        let target = fs::metadata(outside.path()).unwrap();
        assert_eq!(target.uid(), 0, "symlink target keeps its owner");
        let top = fs::metadata(cache.dir()).unwrap();
        assert_eq!(top.mode() & 0o7777, 0o700);

        // Same owner at the top: the tree is not walked again.
        std::os::unix::fs::lchown(cache.dir().join("pip/wheels/x.whl"), Some(0), Some(0)).unwrap();
        cache.ensure(10000, 10000).unwrap();
        let file = fs::metadata(cache.dir().join("pip/wheels/x.whl")).unwrap();
        assert_eq!(file.uid(), 0);
        // A different owner walks it.
        cache.ensure(10001, 10002).unwrap();
        let file = fs::metadata(cache.dir().join("pip/wheels/x.whl")).unwrap();
        assert_eq!((file.uid(), file.gid()), (10001, 10002));
    }

    #[test]
    fn size_and_clear() {
        let data = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(data.path(), "app").unwrap();
        assert_eq!(cache.size(), 0);
        assert_eq!(cache.clear().unwrap(), 0);
        cache.ensure(0, 0).unwrap();
        fs::create_dir_all(cache.dir().join("a/b")).unwrap();
        fs::write(cache.dir().join("a/one"), vec![0u8; 1000]).unwrap();
        fs::write(cache.dir().join("a/b/two"), vec![0u8; 234]).unwrap();
        symlink("/usr", cache.dir().join("usr")).unwrap();
        fs::set_permissions(cache.dir().join("a/b"), fs::Permissions::from_mode(0o500)).unwrap();
        assert_eq!(cache.size(), 1234, "symlinks are not followed");
        assert_eq!(cache.clear().unwrap(), 1234);
        assert!(!cache.dir().exists());
        assert!(Path::new("/usr/bin").exists());
        cache.ensure(0, 0).unwrap();
        assert!(cache.dir().is_dir());
    }

    #[test]
    fn a_file_in_place_of_the_cache_is_reported() {
        let data = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(data.path(), "app").unwrap();
        fs::create_dir_all(cache.dir().parent().unwrap()).unwrap();
        fs::write(cache.dir(), "oops").unwrap();
        let err = cache.ensure(0, 0).unwrap_err();
        assert!(
            matches!(err, CacheError::Io(_) | CacheError::NotADirectory { .. }),
            "{err:?}"
        );
        cache.clear().unwrap();
        assert!(!cache.dir().exists());
        cache.ensure(0, 0).unwrap();
    }
}
