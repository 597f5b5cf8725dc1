//! `.slugignore`: gitignore-style patterns at the app root naming paths that
//! are removed from the app dir before it is packed as a slug.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Result, SlugError};
use crate::sys::io::{at, walking, PathError};

/// The file at the app root listing paths removed before packing.
pub const SLUGIGNORE_FILE: &str = ".slugignore";

/// Applies `<app_dir>/.slugignore` (gitignore-style patterns relative to the
/// app root, as on Heroku): removes every matching file, symlink or
/// directory from `app_dir` and returns their paths relative to `app_dir`,
/// in walk order. Without a `.slugignore` nothing is removed.
pub fn apply_slugignore(app_dir: &Path) -> Result<Vec<PathBuf>> {
    let file = app_dir.join(SLUGIGNORE_FILE);
    let text = match fs::symlink_metadata(&file) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PathError::new("reading", &file, e).into()),
        // A symlinked .slugignore could make the host read any file.
        Ok(meta) if !meta.is_file() => {
            return Err(SlugError::Unpackable {
                path: file,
                reason: "it is not a regular file; make .slugignore a plain text file".into(),
            })
        }
        Ok(_) => fs::read(&file).map_err(at("reading", &file))?,
    };
    let text = String::from_utf8_lossy(&text);
    let mut builder = ::ignore::gitignore::GitignoreBuilder::new(app_dir);
    for (index, line) in text.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if let Err(e) = builder.add_line(None, line) {
            return Err(SlugError::BadSlugignore {
                line: index + 1,
                pattern: line.to_string(),
                reason: e.to_string(),
            });
        }
    }
    let matcher = builder.build().map_err(|e| SlugError::BadSlugignore {
        line: 0,
        pattern: String::new(),
        reason: e.to_string(),
    })?;
    let mut removed = Vec::new();
    let mut walker = walkdir::WalkDir::new(app_dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.map_err(walking("walking", app_dir))?;
        let is_dir = entry.file_type().is_dir();
        if !matcher.matched(entry.path(), is_dir).is_ignore() {
            continue;
        }
        if is_dir {
            walker.skip_current_dir();
            fs::remove_dir_all(entry.path()).map_err(at("removing", entry.path()))?;
        } else {
            fs::remove_file(entry.path()).map_err(at("removing", entry.path()))?;
        }
        let relative = entry.path().strip_prefix(app_dir).unwrap_or(entry.path());
        removed.push(relative.to_path_buf());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_slugignore_pattern_names_the_line() {
        let app = tempfile::tempdir().unwrap();
        fs::write(app.path().join(".slugignore"), "*.log\nfoo{a,b\n").unwrap();
        let err = apply_slugignore(app.path()).unwrap_err();
        assert!(
            matches!(err, SlugError::BadSlugignore { line: 2, .. }),
            "{err:?}"
        );
    }
}
