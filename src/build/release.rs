//! The output of a buildpack's `bin/release`, and how it meets the Procfile.
//!
//! `bin/release BUILD_DIR` prints YAML such as
//!
//! ```yaml
//! ---
//! addons: []
//! default_process_types:
//!   web: bundle exec puma
//! config_vars:
//!   LANG: en_US.UTF-8
//! ```
//!
//! `addons` and unknown keys are ignored; empty output means the buildpack
//! has nothing to say. Process types keep the order the buildpack printed.

use serde_yaml_ng::Value;

use super::env_vars::{self, ConfigVarError};
use super::process_type;

/// Lines of the buildpack's output quoted back in an error.
const QUOTED_LINES: usize = 3;
/// Characters of each quoted line.
const QUOTED_WIDTH: usize = 100;

/// What a buildpack's `bin/release` declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// `(type, command)` in the order the buildpack printed them.
    pub default_process_types: Vec<(String, String)>,
    /// `(name, value)` in the order the buildpack printed them (older buildpacks only).
    pub config_vars: Vec<(String, String)>,
}

/// Why the output of `bin/release` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("bin/release printed something that is not YAML ({reason}); its output began with: {start}; fix the buildpack's bin/release")]
    NotYaml { reason: String, start: String },
    #[error("bin/release printed {found} where a YAML map (`default_process_types:` ...) was expected; its output began with: {start}; fix the buildpack's bin/release")]
    NotAMap { found: &'static str, start: String },
    #[error("bin/release: `{key}` is {found}, expected a map of names to strings; its output began with: {start}; fix the buildpack's bin/release")]
    SectionNotAMap {
        key: &'static str,
        found: &'static str,
        start: String,
    },
    #[error("bin/release: in `{key}`, entry {entry} is {found}, expected a string; its output began with: {start}; fix the buildpack's bin/release")]
    WrongType {
        key: &'static str,
        entry: String,
        found: &'static str,
        start: String,
    },
    #[error("bin/release: process type {kind:?} in `default_process_types` is not allowed (a type has {rule}); fix the buildpack's bin/release")]
    BadProcessType { kind: String, rule: &'static str },
    #[error("bin/release: in `config_vars`: {0}; fix the buildpack's bin/release")]
    BadConfigVar(ConfigVarError),
}

/// The first lines of `text`, shortened, for error messages.
fn first_lines(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .take(QUOTED_LINES)
        .map(|line| {
            let line = line.trim_end_matches('\r');
            if line.chars().count() > QUOTED_WIDTH {
                let mut cut: String = line.chars().take(QUOTED_WIDTH).collect();
                cut.push('…');
                cut
            } else {
                line.to_string()
            }
        })
        .collect();
    format!("{:?}", lines.join("\n"))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Reads one `name: value` section. `scalars_as_strings` accepts numbers and
/// booleans as values (config vars such as `WEB_CONCURRENCY: 2`); commands
/// must be strings.
fn string_map(
    root: &serde_yaml_ng::Mapping,
    key: &'static str,
    scalars_as_strings: bool,
    text: &str,
) -> Result<Vec<(String, String)>, ReleaseError> {
    let section = match root.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Mapping(map)) => map,
        Some(other) => {
            return Err(ReleaseError::SectionNotAMap {
                key,
                found: kind_of(other),
                start: first_lines(text),
            })
        }
    };
    let mut pairs = Vec::with_capacity(section.len());
    for (name, value) in section {
        let name = match name {
            Value::String(s) => s.clone(),
            // YAML reads `1:` or `true:` as non-strings; names are text.
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ReleaseError::WrongType {
                    key,
                    entry: "a name".into(),
                    found: kind_of(other),
                    start: first_lines(text),
                })
            }
        };
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) if scalars_as_strings => n.to_string(),
            Value::Bool(b) if scalars_as_strings => b.to_string(),
            other => {
                return Err(ReleaseError::WrongType {
                    key,
                    entry: format!("{name:?}"),
                    found: kind_of(other),
                    start: first_lines(text),
                })
            }
        };
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Parses the standard output of `bin/release`.
pub fn parse_release(yaml: &str) -> Result<ReleaseInfo, ReleaseError> {
    if yaml.trim().is_empty() {
        return Ok(ReleaseInfo::default());
    }
    let value: Value = serde_yaml_ng::from_str(yaml).map_err(|e| ReleaseError::NotYaml {
        reason: e.to_string(),
        start: first_lines(yaml),
    })?;
    let root = match value {
        Value::Null => return Ok(ReleaseInfo::default()),
        Value::Mapping(map) => map,
        other => {
            return Err(ReleaseError::NotAMap {
                found: kind_of(&other),
                start: first_lines(yaml),
            })
        }
    };
    let default_process_types = string_map(&root, "default_process_types", false, yaml)?;
    if let Some((kind, _)) = default_process_types
        .iter()
        .find(|(kind, _)| !process_type::is_valid_type(kind))
    {
        return Err(ReleaseError::BadProcessType {
            kind: kind.clone(),
            rule: process_type::TYPE_RULE,
        });
    }
    let config_vars = string_map(&root, "config_vars", true, yaml)?;
    // They become config vars of the app, and so ENV_DIR file names of its next builds.
    for (name, value) in &config_vars {
        env_vars::check(name, value).map_err(ReleaseError::BadConfigVar)?;
    }
    Ok(ReleaseInfo {
        default_process_types,
        config_vars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn heroku_ruby_style_output() {
        let yaml = "--- \naddons: []\ndefault_process_types:\n  web: bundle exec puma -C config/puma.rb\n  console: bin/rails console\n  rake: bundle exec rake\n";
        let info = parse_release(yaml).unwrap();
        assert_eq!(
            info.default_process_types,
            owned(&[
                ("web", "bundle exec puma -C config/puma.rb"),
                ("console", "bin/rails console"),
                ("rake", "bundle exec rake"),
            ])
        );
        assert!(info.config_vars.is_empty());
    }

    #[test]
    fn python_style_output_with_addons_list_and_quotes() {
        let yaml = "---\naddons:\n  - heroku-postgresql\ndefault_process_types:\n  web: \"gunicorn app:app --bind 0.0.0.0:$PORT\"\n";
        let info = parse_release(yaml).unwrap();
        assert_eq!(
            info.default_process_types,
            owned(&[("web", "gunicorn app:app --bind 0.0.0.0:$PORT")])
        );
    }

    #[test]
    fn old_buildpacks_config_vars_with_scalars() {
        let yaml = "---\nconfig_vars:\n  LANG: en_US.UTF-8\n  WEB_CONCURRENCY: 2\n  DEBUG: false\n  PATH: bin:/usr/bin\ndefault_process_types: {web: ./web}\n";
        let info = parse_release(yaml).unwrap();
        assert_eq!(
            info.config_vars,
            owned(&[
                ("LANG", "en_US.UTF-8"),
                ("WEB_CONCURRENCY", "2"),
                ("DEBUG", "false"),
                ("PATH", "bin:/usr/bin"),
            ])
        );
        assert_eq!(info.default_process_types, owned(&[("web", "./web")]));
    }

    #[test]
    fn config_var_names_that_could_be_paths_are_refused() {
        for name in ["../../etc/cron.d/x", "_HIDDEN", "a/b", "WITH-DASH"] {
            let yaml = format!("config_vars:\n  {name:?}: x\n");
            let err = parse_release(&yaml).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, ReleaseError::BadConfigVar(_)),
                "{name}: {message}"
            );
            assert!(message.contains("[A-Za-z0-9_]"), "{message}");
            assert!(
                message.contains("fix the buildpack's bin/release"),
                "{message}"
            );
        }
        let big = format!("config_vars:\n  BIG: {}\n", "x".repeat(40_000));
        assert!(parse_release(&big).is_err());
    }

    #[test]
    fn empty_and_null_outputs_are_empty_info() {
        for yaml in [
            "",
            "\n  \n",
            "---\n",
            "--- \n",
            "~",
            "---\naddons: []\n",
            "default_process_types:\n",
            "default_process_types: ~\nconfig_vars: {}\n",
        ] {
            assert_eq!(
                parse_release(yaml).unwrap(),
                ReleaseInfo::default(),
                "{yaml:?}"
            );
        }
    }

    #[test]
    fn crlf_output_parses() {
        let info = parse_release("---\r\ndefault_process_types:\r\n  web: ./w\r\n").unwrap();
        assert_eq!(info.default_process_types, owned(&[("web", "./w")]));
    }

    #[test]
    fn not_a_map_quotes_the_output() {
        let err = parse_release("-----> Installing\nweb: x\n").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("-----> Installing"), "{message}");
        let err = parse_release("just some words").unwrap_err();
        assert!(
            matches!(
                err,
                ReleaseError::NotAMap {
                    found: "a string",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("just some words"));
        let err = parse_release("- web\n- worker\n").unwrap_err();
        assert!(matches!(
            err,
            ReleaseError::NotAMap {
                found: "a list",
                ..
            }
        ));
    }

    #[test]
    fn invalid_yaml_quotes_the_first_lines_only() {
        let yaml = "default_process_types:\n  web: [unclosed\nline3\nline4\nline5-not-quoted\n";
        let err = parse_release(yaml).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ReleaseError::NotYaml { .. }), "{err:?}");
        assert!(message.contains("default_process_types:"), "{message}");
        assert!(!message.contains("line5-not-quoted"), "{message}");
    }

    #[test]
    fn wrong_types_are_named() {
        let err = parse_release("default_process_types: web\n").unwrap_err();
        assert!(matches!(
            err,
            ReleaseError::SectionNotAMap {
                key: "default_process_types",
                found: "a string",
                ..
            }
        ));
        let err = parse_release("default_process_types:\n  web: [a, b]\n").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("\"web\""), "{message}");
        assert!(message.contains("a list"), "{message}");
        let err = parse_release("default_process_types:\n  web: 5\n").unwrap_err();
        assert!(matches!(
            err,
            ReleaseError::WrongType {
                found: "a number",
                ..
            }
        ));
        let err = parse_release("config_vars:\n  A: {b: c}\n").unwrap_err();
        assert!(matches!(
            err,
            ReleaseError::WrongType {
                key: "config_vars",
                ..
            }
        ));
        let err = parse_release("config_vars: [A]\n").unwrap_err();
        assert!(matches!(err, ReleaseError::SectionNotAMap { .. }));
    }

    #[test]
    fn bad_process_type_names_are_refused() {
        let err = parse_release("default_process_types:\n  \"web server\": ./x\n").unwrap_err();
        assert!(matches!(err, ReleaseError::BadProcessType { .. }));
        assert!(err.to_string().contains("web server"));
    }
}
