//! App names: the one check for a name that becomes host paths (the build cache
//! `<data>/cache/<app>`, workspaces), container ids and host names (`myapp-web-1`).
//!
//! An app name is a lower-case DNS label of at most 40 characters, starting with a letter (as
//! on Heroku), so that it is always one plain path component and leaves room in a 63-character
//! host name for the process type and number.

use super::env_vars::quote;

/// Longest app name.
pub const MAX_APP_NAME_LEN: usize = 40;

/// What an app name may be, for error messages.
pub const APP_NAME_RULE: &str = "an app name is a lower-case DNS label: 1 to 40 characters of \
     a-z, 0-9 and '-', starting with a letter and not ending with '-'";

/// Characters of a refused name quoted back in an error.
const QUOTE_LIMIT: usize = 60;

/// Why an app name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("app name {quoted} is not allowed: {APP_NAME_RULE}; pick another name (e.g. `my-app`)")]
pub struct AppNameError {
    quoted: String,
}

/// Checks `name` against [`APP_NAME_RULE`].
pub fn check_app_name(name: &str) -> Result<(), AppNameError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_APP_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        return Ok(());
    }
    Err(AppNameError {
        quoted: quote(name, QUOTE_LIMIT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_up_to_40_characters() {
        for good in ["a", "app", "my-app-2", "a1", "x--y", &"a".repeat(40)] {
            check_app_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_rule() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "a.b",
            "a_b",
            "My-App",
            "-a",
            "a-",
            "1app",
            "app ",
            "é",
            "a\0",
            &"a".repeat(41),
        ] {
            let message = check_app_name(bad).unwrap_err().to_string();
            assert!(message.contains(APP_NAME_RULE), "{bad:?}: {message}");
        }
        let long = check_app_name(&format!("{}/../x", "a".repeat(100)))
            .unwrap_err()
            .to_string();
        assert!(long.contains('…') && long.len() < 400, "{long}");
    }
}
