//! Config var names and values: the one check for everything that becomes a config var.
//!
//! A config var is app-owner input, and its name becomes a host file name (one file per var in
//! a build's ENV_DIR) and an environment variable name: only names made of `[A-Za-z0-9_]`, at
//! most 64 characters, not starting with `_` (Heroku's and Scalingo's rule), so that a name can
//! never be a path (`/`, `..`) or an option; values at most 32 KiB, without NUL bytes (no
//! environment variable can hold one).

/// Longest config var name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest config var value, in bytes.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// What a config var name may be, for error messages.
pub const NAME_RULE: &str = "a config var name has only letters, digits and '_' ([A-Za-z0-9_]), \
     1 to 64 characters, and does not start with '_'";

/// Characters of a refused name quoted back in an error.
const QUOTE_LIMIT: usize = 80;

/// App-owner input as quoted in an error: debug-quoted (control characters escaped) and cut
/// after `limit` characters.
pub(crate) fn quote(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(limit).collect();
        format!("{cut:?}…")
    }
}

/// Why a config var was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigVarError {
    #[error("config var name {name} is not allowed: {NAME_RULE}; rename it")]
    BadName { name: String },
    #[error("config var {name}: its value is {len} bytes, over the limit of 32 KiB ({MAX_VALUE_BYTES} bytes); keep large data in a file of the app or in a service, not in a config var")]
    ValueTooLong { name: String, len: usize },
    #[error("config var {name}: its value contains a NUL byte, which no environment variable can hold; remove it")]
    NulInValue { name: String },
}

/// Checks a config var name against [`NAME_RULE`].
pub fn check_name(name: &str) -> Result<(), ConfigVarError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ConfigVarError::BadName {
            name: quote(name, QUOTE_LIMIT),
        })
    }
}

/// Checks a config var: its name ([`check_name`]) and its value (size, no NUL).
pub fn check(name: &str, value: &str) -> Result<(), ConfigVarError> {
    check_name(name)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(ConfigVarError::ValueTooLong {
            name: name.to_string(),
            len: value.len(),
        });
    }
    if value.contains('\0') {
        return Err(ConfigVarError::NulInValue {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_follow_the_rule() {
        for name in [
            "DATABASE_URL",
            "a",
            "lower_case",
            "X1",
            "1ST",
            "WEB__CONCURRENCY",
            &"A".repeat(64),
        ] {
            check_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn names_that_could_be_paths_or_options_are_refused_with_the_rule() {
        for name in [
            "",
            "../../etc/cron.d/x",
            "a/b",
            "..",
            ".",
            ".env",
            "_PRIVATE",
            "-e",
            "WITH SPACE",
            "TAB\t",
            "NUL\0",
            "DASH-ED",
            "DOT.TED",
            "ÉTÉ",
            &"A".repeat(65),
        ] {
            let e = check_name(name).unwrap_err();
            let message = e.to_string();
            assert!(matches!(e, ConfigVarError::BadName { .. }), "{name:?}");
            assert!(message.contains(NAME_RULE), "{message}");
        }
    }

    #[test]
    fn long_or_hostile_names_are_quoted_shortened_and_escaped() {
        let message = check_name(&format!("{}\n/x", "A".repeat(200)))
            .unwrap_err()
            .to_string();
        assert!(message.contains('…'), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(message.len() < 400, "{message}");
    }

    #[test]
    fn values_up_to_32_kib_without_nul() {
        check("BIG", &"x".repeat(MAX_VALUE_BYTES)).unwrap();
        check("EMPTY", "").unwrap();
        check("MULTI", "line one\nline two").unwrap();
        let e = check("BIG", &"x".repeat(MAX_VALUE_BYTES + 1)).unwrap_err();
        assert!(e.to_string().contains("32769 bytes"), "{e}");
        let e = check("NUL", "a\0b").unwrap_err();
        assert!(e.to_string().contains("NUL byte"), "{e}");
        assert!(matches!(
            check("../x", "ok").unwrap_err(),
            ConfigVarError::BadName { .. }
        ));
    }
}
