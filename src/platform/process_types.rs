//! The process types of a release: the Procfile's, then those of the buildpack's
//! `default_process_types` that the Procfile does not define (as on Heroku).
use serde::{Deserialize, Serialize};

use super::procfile::{Procfile, ProcfileError};

/// One process type of a release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessType {
    pub name: String,
    pub command: String,
    /// `Procfile` or `buildpack`.
    pub origin: String,
}

/// Where a process type of a release came from.
pub const ORIGIN_PROCFILE: &str = "Procfile";
/// See [`ORIGIN_PROCFILE`].
pub const ORIGIN_BUILDPACK: &str = "buildpack";

/// Merge: Procfile wins over default_process_types; returns (type, command, origin "Procfile"|"buildpack").
///
/// The Procfile's types come first, in file order, then the buildpack's
/// types that the Procfile does not define, in the buildpack's order (as on
/// Heroku, a Procfile overrides a buildpack type of the same name and leaves
/// the others). A type the buildpack lists twice keeps its first command.
pub fn merge_process_types(
    procfile: Option<&Procfile>,
    defaults: &[(String, String)],
) -> Vec<(String, String, &'static str)> {
    let mut merged: Vec<(String, String, &'static str)> = Vec::new();
    if let Some(procfile) = procfile {
        for (kind, command) in &procfile.entries {
            merged.push((kind.clone(), command.clone(), ORIGIN_PROCFILE));
        }
    }
    for (kind, command) in defaults {
        if !merged.iter().any(|(k, _, _)| k == kind) {
            merged.push((kind.clone(), command.clone(), ORIGIN_BUILDPACK));
        }
    }
    merged
}

/// Procfile entries that are hooks of a rollout, not processes to keep running: `release`
/// (Heroku's release phase, before a release goes live) and `postdeploy` (Scalingo's, after
/// the new containers start). Never scaled.
pub const PHASES: &[&str] = &["release", "postdeploy"];

pub fn is_phase(name: &str) -> bool {
    PHASES.contains(&name)
}

/// The process types of a build: its Procfile (text as the build found it) merged with the
/// buildpack's defaults.
pub fn resolve(
    procfile: Option<&str>,
    defaults: &[(String, String)],
) -> Result<Vec<ProcessType>, ProcfileError> {
    let procfile = procfile.map(Procfile::parse).transpose()?;
    Ok(merge_process_types(procfile.as_ref(), defaults)
        .into_iter()
        .map(|(name, command, origin)| ProcessType {
            name,
            command,
            origin: origin.to_string(),
        })
        .collect())
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
    fn procfile_wins_and_other_defaults_stay() {
        let procfile = Procfile::parse("worker: ./work\nweb: ./custom-web\n").unwrap();
        let defaults = owned(&[("web", "./default-web"), ("console", "./console")]);
        let merged = merge_process_types(Some(&procfile), &defaults);
        assert_eq!(
            merged,
            vec![
                ("worker".into(), "./work".into(), "Procfile"),
                ("web".into(), "./custom-web".into(), "Procfile"),
                ("console".into(), "./console".into(), "buildpack"),
            ]
        );
    }

    #[test]
    fn merge_without_procfile_or_defaults() {
        let defaults = owned(&[("web", "./w"), ("web", "./second")]);
        assert_eq!(
            merge_process_types(None, &defaults),
            vec![("web".into(), "./w".into(), "buildpack")]
        );
        let procfile = Procfile::parse("web: ./p").unwrap();
        assert_eq!(
            merge_process_types(Some(&procfile), &[]),
            vec![("web".into(), "./p".into(), "Procfile")]
        );
        assert!(merge_process_types(None, &[]).is_empty());
        let empty = Procfile::default();
        assert_eq!(merge_process_types(Some(&empty), &defaults).len(), 1);
    }

    #[test]
    fn a_bad_procfile_is_an_error_not_an_empty_list() {
        assert!(resolve(Some("web ./x"), &[]).is_err());
        let types = resolve(Some("web: ./p"), &owned(&[("worker", "./w")])).unwrap();
        assert_eq!(types.len(), 2);
        assert_eq!(types[1].origin, "buildpack");
    }
}
