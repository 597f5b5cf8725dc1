//! Per-app logs: one directory per app, one file per source, one line per event.
//!
//! Layout: `DATA_DIR/logs/APP/SOURCE.log` (`router.log`, `platform.log`, `web-1.log`, …),
//! each rotated once to `SOURCE.log.1` past a size bound. A line has the Heroku shape:
//!
//! ```text
//! 2026-11-26T10:00:00.000000+00:00 slipway[router]: at=info method=GET path="/" …
//! ```
//!
//! that is `TIMESTAMP SOURCE[PROCESS]: MESSAGE`, the timestamp always UTC with microseconds
//! and the fixed width above, so that text order is time order.
//!
//! Invariants:
//! * App and source names are validated before they become path components ([`validate_app`],
//!   [`validate_source`]): they come from users and containers and are treated as hostile.
//! * One writer ([`LogWriter`]) per file, in one process: appends are whole lines, so a
//!   reader sees at most a trailing partial line, which it leaves for the next read.
//! * A message never spans lines: embedded line breaks become separate lines with the same
//!   prefix, other control characters are escaped.
//! * Readers ([`tail`], [`Follow`]) merge an app's files in time order.

mod line;
mod reader;
mod writer;

use std::path::{Path, PathBuf};

pub use line::{LogLine, Timestamp, TIMESTAMP_LEN};
pub use reader::{tail, Follow};
pub use writer::{LogWriter, DEFAULT_MAX_BYTES};

/// Name of the logs area under the data directory.
pub const LOGS_DIR: &str = "logs";

/// What an app name may contain, for error messages.
pub const APP_NAME_RULE: &str =
    "a lower-case DNS label: letters, digits and '-', 1 to 63 characters, not starting or ending with '-'";

/// What a log source name may contain, for error messages.
pub const SOURCE_NAME_RULE: &str =
    "lower-case letters, digits, '.' and '-', 1 to 64 characters, starting with a letter or digit";

/// What can go wrong with app logs.
#[derive(Debug, thiserror::Error)]
pub enum AppLogError {
    #[error("{name:?} is not a valid app name: an app name is {APP_NAME_RULE}")]
    BadAppName { name: String },
    #[error("{name:?} is not a valid log source name: a source name has {SOURCE_NAME_RULE}")]
    BadSourceName { name: String },
    #[error("{action} {path}: {source}; check that the data directory is writable by slipway")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> AppLogError + 'a {
    move |source| AppLogError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// True for a lower-case DNS label (RFC 1123): `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
/// Such a name is safe as one path component and as the first label of a host name.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Checks an app name against [`APP_NAME_RULE`].
pub fn validate_app(name: &str) -> Result<(), AppLogError> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(AppLogError::BadAppName { name: name.into() })
    }
}

/// True for a name made of [`SOURCE_NAME_RULE`]: never `.`, `..` or a hidden file.
pub fn is_valid_source(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

/// Checks a source name against [`SOURCE_NAME_RULE`].
pub fn validate_source(name: &str) -> Result<(), AppLogError> {
    if is_valid_source(name) {
        Ok(())
    } else {
        Err(AppLogError::BadSourceName { name: name.into() })
    }
}

/// The log directory of `app`: `DATA_DIR/logs/APP`.
pub fn app_dir(data_dir: &Path, app: &str) -> Result<PathBuf, AppLogError> {
    validate_app(app)?;
    Ok(data_dir.join(LOGS_DIR).join(app))
}

/// The current file of one source: `DATA_DIR/logs/APP/SOURCE.log`.
pub fn source_file(data_dir: &Path, app: &str, source: &str) -> Result<PathBuf, AppLogError> {
    validate_source(source)?;
    Ok(app_dir(data_dir, app)?.join(format!("{source}.log")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_dns_labels() {
        for good in ["a", "web", "my-app", "a1", &"x".repeat(63)] {
            assert!(validate_app(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "..",
            "a/b",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(validate_app(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_names_cannot_escape_the_directory() {
        for good in ["router", "web-1", "platform", "web.1"] {
            assert!(validate_source(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "Web",
            "a\0",
            &"x".repeat(65),
        ] {
            assert!(validate_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_under_the_data_dir() {
        let p = source_file(Path::new("/d"), "app", "web-1").unwrap();
        assert_eq!(p, Path::new("/d/logs/app/web-1.log"));
        assert!(source_file(Path::new("/d"), "../x", "web").is_err());
    }
}
