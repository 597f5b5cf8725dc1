use std::path::{Path, PathBuf};
pub enum BuildpackSource {
    Dir(PathBuf),
    Git {
        url: String,
        reference: Option<String>,
    },
    Tarball {
        url: String,
    },
}
#[derive(Debug, thiserror::Error)]
#[error("buildpack source: {0}")]
pub struct SourceError(String);
impl BuildpackSource {
    pub fn parse(spec: &str, base: &Path) -> Result<BuildpackSource, SourceError> {
        Ok(BuildpackSource::Dir(base.join(spec)))
    }
    pub fn fetch(&self, _cache_dir: &Path) -> Result<PathBuf, SourceError> {
        match self {
            BuildpackSource::Dir(p) => Ok(p.clone()),
            _ => Err(SourceError("todo".into())),
        }
    }
}
pub fn parse_buildpacks_file(text: &str, base: &Path) -> Result<Vec<BuildpackSource>, SourceError> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| BuildpackSource::parse(l.trim(), base))
        .collect()
}
