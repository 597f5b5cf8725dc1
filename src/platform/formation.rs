//! Scaling requests as users write them: `web=3`, `worker=1:L`, `web:2XL` (Heroku's
//! `ps:scale` and Scalingo's `scale` forms).
use serde::{Deserialize, Serialize};

use crate::build::process_type::{is_valid_type, TYPE_RULE};

/// Most containers of one process type.
pub const MAX_COUNT: u32 = 100;

/// One `TYPE=COUNT[:SIZE]` or `TYPE:SIZE`: what changes for one process type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: Option<u32>,
    pub size: Option<String>,
}

/// Why a scaling request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleParseError {
    #[error("{0:?}: write TYPE=COUNT, TYPE=COUNT:SIZE or TYPE:SIZE, e.g. web=3 worker=1:L")]
    Shape(String),
    #[error("{text:?}: process type {kind:?} is not allowed; a type has {TYPE_RULE}")]
    BadType { text: String, kind: String },
    #[error("{text:?}: the count must be a whole number from 0 to {MAX_COUNT}")]
    BadCount { text: String },
    #[error("{text:?}: process type {kind} appears twice; name each type once")]
    Duplicate { text: String, kind: String },
}

/// Parses one argument.
pub fn parse_one(text: &str) -> Result<ScaleRequest, ScaleParseError> {
    let shape = || ScaleParseError::Shape(text.to_string());
    let (kind, count, size) = match text.split_once('=') {
        Some((kind, rest)) => {
            let (count, size) = match rest.split_once(':') {
                Some((c, s)) => (c, Some(s)),
                None => (rest, None),
            };
            let count = count
                .parse::<u32>()
                .ok()
                .filter(|c| *c <= MAX_COUNT && !count.starts_with('+'))
                .ok_or_else(|| ScaleParseError::BadCount {
                    text: text.to_string(),
                })?;
            (kind, Some(count), size)
        }
        None => {
            let (kind, size) = text.split_once(':').ok_or_else(shape)?;
            (kind, None, Some(size))
        }
    };
    if !is_valid_type(kind) {
        return Err(ScaleParseError::BadType {
            text: text.to_string(),
            kind: kind.to_string(),
        });
    }
    if size.is_some_and(|s| s.is_empty()) {
        return Err(shape());
    }
    Ok(ScaleRequest {
        kind: kind.to_string(),
        count,
        size: size.map(String::from),
    })
}

/// Parses every argument; a type may appear once.
pub fn parse_all<S: AsRef<str>>(args: &[S]) -> Result<Vec<ScaleRequest>, ScaleParseError> {
    let mut out: Vec<ScaleRequest> = Vec::new();
    for arg in args {
        let r = parse_one(arg.as_ref())?;
        if out.iter().any(|o| o.kind == r.kind) {
            return Err(ScaleParseError::Duplicate {
                text: arg.as_ref().to_string(),
                kind: r.kind,
            });
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_users_write() {
        let r = parse_all(&["web=3", "worker=1:L", "clock:2XL", "web-2=0"]).unwrap();
        let flat: Vec<_> = r
            .iter()
            .map(|r| (r.kind.as_str(), r.count, r.size.as_deref()))
            .collect();
        assert_eq!(
            flat,
            vec![
                ("web", Some(3), None),
                ("worker", Some(1), Some("L")),
                ("clock", None, Some("2XL")),
                ("web-2", Some(0), None)
            ]
        );
    }

    #[test]
    fn anything_else_says_how_to_write_it() {
        for bad in [
            "web", "web=", "=3", "web=-1", "web=+1", "web=101", "we b=1", "web=1:", "web:",
        ] {
            let e = parse_one(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        let e = parse_all(&["web=1", "web=2"]).unwrap_err();
        assert!(matches!(e, ScaleParseError::Duplicate { .. }));
    }
}
