//! The names of process types (`web`, `worker`), as Procfiles and buildpacks' `bin/release`
//! give them: one rule for both.

/// Longest process type name accepted (a DNS label, so that the type can be
/// part of a container host name such as `myapp-web-1`).
pub const MAX_TYPE_LEN: usize = 63;

/// What a process type name may contain, for error messages.
pub const TYPE_RULE: &str = "letters, digits, '_' and '-', 1 to 63 characters";

/// True when `kind` is a valid process type name ([`TYPE_RULE`]).
pub fn is_valid_type(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_TYPE_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
