//! The per-app build cache: the `CACHE_DIR` that `bin/compile` gets, kept
//! between builds of one app in `<data>/cache/<app>`.
//!
//! Builds write into it as the stack user, and what they write is the app's
//! own doing: everything here walks the tree without following symlinks, so
//! that a symlink planted in the cache (to `/etc/shadow`, say) is changed or
//! removed itself, never its target.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::app_name::{check_app_name, AppNameError};
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

#[cfg(test)]
mod tests {
    use super::*;
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
