use std::path::{Path, PathBuf};
pub struct BuildCache {
    dir: PathBuf,
}
#[derive(Debug, thiserror::Error)]
#[error("cache: {0}")]
pub struct CacheError(String);
impl BuildCache {
    pub fn new(data_dir: &Path, app: &str) -> Result<BuildCache, CacheError> {
        Ok(BuildCache {
            dir: data_dir.join("cache").join(app),
        })
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ensure(&self, uid: u32, gid: u32) -> Result<(), CacheError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| CacheError(e.to_string()))?;
        let _ = std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid));
        Ok(())
    }
    pub fn clear(&self) -> Result<u64, CacheError> {
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(0)
    }
    pub fn size(&self) -> u64 {
        0
    }
}
