//! One shape for a failed file-system operation: what was being done, on what path, and the
//! operating system's answer. Modules wrap it in their own error types
//! (`#[error(transparent)] Io(#[from] PathError)`), so that every such message reads the same.

use std::path::{Path, PathBuf};

/// `{action} {path}: {source}`, for example `creating /var/lib/slipway/slugs: Permission denied`.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct PathError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PathError {
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PathError {
            action,
            path: path.into(),
            source,
        }
    }
}

/// For `map_err`: attaches `action` and `path` to an I/O error. The path is converted only
/// when there is an error, so callers may pass a borrowed one.
pub fn at<P: Into<PathBuf>>(
    action: &'static str,
    path: P,
) -> impl FnOnce(std::io::Error) -> PathError {
    move |source| PathError::new(action, path, source)
}

/// For `map_err` on a `walkdir` entry: the path the walk failed on, or `root` when the error
/// does not name one.
pub fn walking<'a>(
    action: &'static str,
    root: &'a Path,
) -> impl FnOnce(walkdir::Error) -> PathError + 'a {
    move |e| {
        let path = e.path().unwrap_or(root).to_path_buf();
        PathError::new(action, path, e.into())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn says_what_failed_on_what_path() {
        let e = std::fs::read(Path::new("/no/such/file"))
            .map_err(super::at("reading", Path::new("/no/such/file")));
        let text = e.unwrap_err().to_string();
        assert!(text.starts_with("reading /no/such/file: "), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }
}
