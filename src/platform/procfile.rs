//! Procfile: the process types of an app, as Heroku and Scalingo read them.
//!
//! One `type: command` a line, in file order. `#` comment lines and blank
//! lines are skipped, `\r` is stripped (files written on Windows), and a
//! leading UTF-8 byte order mark is ignored. Anything else that does not
//! parse is an error naming the line, because a silently dropped line is a
//! process that never starts.

use std::path::Path;

use crate::build::process_type::{is_valid_type, TYPE_RULE};
use crate::build::untrusted::{read_text_beneath, UntrustedFileError};

/// Longest Procfile line quoted back in an error message.
const QUOTE_LIMIT: usize = 80;

/// A parsed Procfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Procfile {
    /// `(type, command)` in file order; types are unique.
    pub entries: Vec<(String, String)>,
}

/// Largest Procfile read, in bytes.
const MAX_PROCFILE_BYTES: u64 = 1 << 20;

/// Reading an app's Procfile from its source.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "Procfile: {0}: make it a regular UTF-8 text file of at most 1 MiB in the app's source"
    )]
    File(UntrustedFileError),
    #[error(transparent)]
    Parse(#[from] ProcfileError),
}

/// The app's Procfile, if it has one: a regular file at the root of `source` (a link there is
/// not followed, so that the host's files stay out of reach).
pub fn read_from(source: &Path) -> Result<Option<Procfile>, ReadError> {
    read_text_beneath(source, "Procfile", MAX_PROCFILE_BYTES)
        .map_err(ReadError::File)?
        .map(|text| Procfile::parse(&text))
        .transpose()
        .map_err(ReadError::from)
}

/// Why a Procfile was refused. Every message starts with `Procfile line N:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcfileError {
    #[error("Procfile line {line}: {content:?} has no ':'; write each process as `type: command`, for example `web: ./server`")]
    MissingColon { line: usize, content: String },
    #[error("Procfile line {line}: process type {kind:?} is not allowed; a type has {TYPE_RULE} (in {content:?})")]
    BadType {
        line: usize,
        kind: String,
        content: String,
    },
    #[error("Procfile line {line}: process type {kind:?} has an empty command; write the command after the ':' or remove the line")]
    EmptyCommand { line: usize, kind: String },
    #[error("Procfile line {line}: process type {kind:?} is already defined on line {first_line}; keep one of the two lines ({content:?})")]
    DuplicateType {
        line: usize,
        kind: String,
        first_line: usize,
        content: String,
    },
}

impl ProcfileError {
    /// The 1-based line the error is about.
    pub fn line(&self) -> usize {
        match self {
            ProcfileError::MissingColon { line, .. }
            | ProcfileError::BadType { line, .. }
            | ProcfileError::EmptyCommand { line, .. }
            | ProcfileError::DuplicateType { line, .. } => *line,
        }
    }
}

/// A line as quoted in an error: at most [`QUOTE_LIMIT`] characters.
fn quote(line: &str) -> String {
    if line.chars().count() <= QUOTE_LIMIT {
        line.to_string()
    } else {
        let mut cut: String = line.chars().take(QUOTE_LIMIT).collect();
        cut.push('…');
        cut
    }
}

impl Procfile {
    /// Parses a Procfile's text. An empty file gives no entries.
    pub fn parse(text: &str) -> Result<Procfile, ProcfileError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut first_lines: Vec<usize> = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let line = raw.replace('\r', "");
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((kind, command)) = trimmed.split_once(':') else {
                return Err(ProcfileError::MissingColon {
                    line: line_no,
                    content: quote(trimmed),
                });
            };
            let kind = kind.trim();
            if !is_valid_type(kind) {
                return Err(ProcfileError::BadType {
                    line: line_no,
                    kind: quote(kind),
                    content: quote(trimmed),
                });
            }
            let command = command.trim();
            if command.is_empty() {
                return Err(ProcfileError::EmptyCommand {
                    line: line_no,
                    kind: kind.to_string(),
                });
            }
            if let Some(position) = entries.iter().position(|(k, _)| k == kind) {
                return Err(ProcfileError::DuplicateType {
                    line: line_no,
                    kind: kind.to_string(),
                    first_line: first_lines[position],
                    content: quote(trimmed),
                });
            }
            entries.push((kind.to_string(), command.to_string()));
            first_lines.push(line_no);
        }
        Ok(Procfile { entries })
    }

    /// The command of process type `kind`, if the Procfile defines it.
    pub fn get(&self, kind: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, command)| command.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(procfile: &Procfile) -> Vec<(&str, &str)> {
        procfile
            .entries
            .iter()
            .map(|(k, c)| (k.as_str(), c.as_str()))
            .collect()
    }

    #[test]
    fn parses_types_in_file_order() {
        let text = "web: bundle exec puma -C config/puma.rb\nworker:bundle exec sidekiq\npostdeploy:   rake db:migrate  \n";
        let procfile = Procfile::parse(text).unwrap();
        assert_eq!(
            pairs(&procfile),
            vec![
                ("web", "bundle exec puma -C config/puma.rb"),
                ("worker", "bundle exec sidekiq"),
                ("postdeploy", "rake db:migrate"),
            ]
        );
        assert_eq!(procfile.get("worker"), Some("bundle exec sidekiq"));
        assert_eq!(procfile.get("clock"), None);
    }

    #[test]
    fn command_keeps_later_colons() {
        let procfile = Procfile::parse("web: gunicorn app:app --bind 0.0.0.0:$PORT").unwrap();
        assert_eq!(
            procfile.get("web"),
            Some("gunicorn app:app --bind 0.0.0.0:$PORT")
        );
    }

    #[test]
    fn skips_comments_blank_lines_carriage_returns_and_bom() {
        let text = "\u{feff}# processes\r\n\r\n   \r\nweb: ./server\r\n  # indented comment\r\nclock_2-b: ./clock\r\n";
        let procfile = Procfile::parse(text).unwrap();
        assert_eq!(
            pairs(&procfile),
            vec![("web", "./server"), ("clock_2-b", "./clock")]
        );
    }

    #[test]
    fn empty_file_has_no_entries() {
        assert!(Procfile::parse("").unwrap().entries.is_empty());
        assert!(Procfile::parse("\n# nothing\n\n")
            .unwrap()
            .entries
            .is_empty());
    }

    #[test]
    fn type_names_up_to_63_characters() {
        let long = "a".repeat(63);
        assert!(Procfile::parse(&format!("{long}: x")).is_ok());
        let too_long = "a".repeat(64);
        let err = Procfile::parse(&format!("{too_long}: x")).unwrap_err();
        assert!(matches!(err, ProcfileError::BadType { line: 1, .. }));
    }

    #[test]
    fn missing_colon_names_line_and_content() {
        let err = Procfile::parse("web: ./a\n\nworker ./b\n").unwrap_err();
        assert_eq!(
            err,
            ProcfileError::MissingColon {
                line: 3,
                content: "worker ./b".into()
            }
        );
        let message = err.to_string();
        assert!(message.starts_with("Procfile line 3: "), "{message}");
        assert!(message.contains("worker ./b"), "{message}");
        assert!(message.contains("type: command"), "{message}");
    }

    #[test]
    fn bad_type_names_are_refused_with_the_rule() {
        for (text, kind) in [
            ("web server: x", "web server"),
            (": x", ""),
            ("wéb: x", "wéb"),
            ("web.1: x", "web.1"),
            ("$(rm -rf /): x", "$(rm -rf /)"),
        ] {
            let err = Procfile::parse(text).unwrap_err();
            match &err {
                ProcfileError::BadType {
                    line: 1, kind: k, ..
                } => assert_eq!(k, kind),
                other => panic!("{text:?}: {other:?}"),
            }
            let message = err.to_string();
            assert!(message.starts_with("Procfile line 1: "), "{message}");
            assert!(message.contains(TYPE_RULE), "{message}");
        }
    }

    #[test]
    fn empty_command_is_refused() {
        let err = Procfile::parse("web: ./a\nworker:   \r\n").unwrap_err();
        assert_eq!(
            err,
            ProcfileError::EmptyCommand {
                line: 2,
                kind: "worker".into()
            }
        );
        assert!(err.to_string().starts_with("Procfile line 2: "));
    }

    #[test]
    fn duplicate_type_names_both_lines() {
        let err = Procfile::parse("web: ./a\n# again\nweb: ./b\n").unwrap_err();
        assert_eq!(
            err,
            ProcfileError::DuplicateType {
                line: 3,
                kind: "web".into(),
                first_line: 1,
                content: "web: ./b".into()
            }
        );
        let message = err.to_string();
        assert!(message.contains("line 1"), "{message}");
        assert_eq!(err.line(), 3);
    }

    #[test]
    fn long_lines_are_shortened_in_errors() {
        let line = format!("web {}", "x".repeat(500));
        let message = Procfile::parse(&line).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for text in ["\0", ":", "::::", "\u{feff}", "\r", "a:\u{0}", "#:\n:#"] {
            let _ = Procfile::parse(text);
        }
    }
}
