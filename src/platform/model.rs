//! What the platform keeps about apps: the records of the store, as plain values.
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::process_types::ProcessType;

/// Config vars, sorted by name.
pub type ConfigVars = BTreeMap<String, String>;

/// An app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub created_at: String,
    /// The config vars the next release gets.
    pub config: ConfigVars,
    /// The branch a `git push` deploys; `main` or `master` when unset.
    #[serde(default)]
    pub deploy_branch: Option<String>,
}

/// Where a deployment stands. The active ones are `building`, `starting` and
/// `running-postdeploy`; the others after `queued` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentStatus {
    Queued,
    Building,
    Starting,
    RunningPostdeploy,
    Success,
    BuildError,
    HookError,
    TimeoutError,
    CrashedError,
    Aborted,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 10] = [
        DeploymentStatus::Queued,
        DeploymentStatus::Building,
        DeploymentStatus::Starting,
        DeploymentStatus::RunningPostdeploy,
        DeploymentStatus::Success,
        DeploymentStatus::BuildError,
        DeploymentStatus::HookError,
        DeploymentStatus::TimeoutError,
        DeploymentStatus::CrashedError,
        DeploymentStatus::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Queued => "queued",
            DeploymentStatus::Building => "building",
            DeploymentStatus::Starting => "starting",
            DeploymentStatus::RunningPostdeploy => "running-postdeploy",
            DeploymentStatus::Success => "success",
            DeploymentStatus::BuildError => "build-error",
            DeploymentStatus::HookError => "hook-error",
            DeploymentStatus::TimeoutError => "timeout-error",
            DeploymentStatus::CrashedError => "crashed-error",
            DeploymentStatus::Aborted => "aborted",
        }
    }

    pub fn parse(text: &str) -> Option<DeploymentStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Building or rolling out: at most one per app.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Building
                | DeploymentStatus::Starting
                | DeploymentStatus::RunningPostdeploy
        )
    }

    /// Done, one way or the other.
    pub fn is_final(self) -> bool {
        !self.is_active() && self != DeploymentStatus::Queued
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One deployment: a source built into a release and rolled out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: i64,
    pub app: String,
    pub status: DeploymentStatus,
    /// What was deployed, for people: `archive (12.3 kB)`, `https://…`.
    pub source: String,
    /// Where the source comes from.
    #[serde(default)]
    pub source_kind: SourceKind,
    /// The URL the daemon downloads the archive from (`url`), or fetches the branch from
    /// (`git`).
    pub source_url: Option<String>,
    /// The commit deployed (SOURCE_VERSION of the build), when the source is one.
    #[serde(default)]
    pub source_version: Option<String>,
    /// The branch a `git` source is fetched from.
    #[serde(default)]
    pub git_branch: Option<String>,
    /// The release it made (set once the build succeeded).
    pub release: Option<u32>,
    /// Why it failed or was aborted.
    pub reason: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// How a deployment gets its source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// An archive uploaded with the request (a `git push` sends its commit this way).
    #[default]
    Archive,
    /// An archive the daemon downloads from `source_url`.
    Url,
    /// A branch the daemon fetches from the git repository at `source_url` (a linked GitHub
    /// repository), at `source_version` when given, else at the branch's head.
    Git,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Archive => "archive",
            SourceKind::Url => "url",
            SourceKind::Git => "git",
        }
    }

    pub fn parse(text: &str) -> Option<SourceKind> {
        [SourceKind::Archive, SourceKind::Url, SourceKind::Git]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// What a new deployment is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewDeployment {
    /// For people: `archive (12.3 kB)`, `https://…`, `git main 1a2b3c4`.
    pub source: String,
    pub kind: SourceKind,
    pub url: Option<String>,
    pub version: Option<String>,
    pub git_branch: Option<String>,
}

/// An app linked to a GitHub repository: pushes to `branch` deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubLink {
    pub app: String,
    /// The repository's URL (`https://github.com/OWNER/REPO`); it is fetched from there.
    pub repo: String,
    pub branch: String,
    /// The webhook secret (HMAC-SHA256 key of `X-Hub-Signature-256`); never shown.
    #[serde(skip_serializing, default)]
    pub secret: String,
    pub created_at: String,
}

/// A public key allowed to push over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKey {
    pub name: String,
    /// One `authorized_keys` line's key part: `TYPE BASE64 [COMMENT]`.
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub created_at: String,
}

/// Whether a release went live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseStatus {
    /// Being rolled out.
    Pending,
    /// Went live (it may since have been replaced).
    Succeeded,
    /// Its rollout failed; the release before it kept serving.
    Failed,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Pending => "pending",
            ReleaseStatus::Succeeded => "succeeded",
            ReleaseStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<ReleaseStatus> {
        [
            ReleaseStatus::Pending,
            ReleaseStatus::Succeeded,
            ReleaseStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// An immutable release `vN`: a slug, a snapshot of the config vars, the process types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub app: String,
    pub version: u32,
    pub status: ReleaseStatus,
    /// The slug id (sha256 of its archive).
    pub slug: String,
    /// The run stack its containers use.
    pub stack: String,
    pub config: ConfigVars,
    pub process_types: Vec<ProcessType>,
    /// Why it was made: `deploy 12`, `set FOO`, `rollback to v3`.
    pub cause: String,
    pub created_at: String,
}

impl Release {
    /// `v3`.
    pub fn label(&self) -> String {
        format!("v{}", self.version)
    }

    /// The command of process type `kind`, if the release has it.
    pub fn command(&self, kind: &str) -> Option<&str> {
        self.process_types
            .iter()
            .find(|p| p.name == kind)
            .map(|p| p.command.as_str())
    }
}

/// How many containers of one process type run, and how large they are (a size name such
/// as `M`, `2XL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u32,
    pub size: String,
}

/// The size containers get unless scaled otherwise.
pub const DEFAULT_SIZE: &str = "M";

/// The formation of a release: every process type it has, with the count and size the app
/// asked for, else `web` 1 and the others 0 (as on Heroku and Scalingo), size M.
pub fn effective_formation(release: &Release, saved: &[FormationEntry]) -> Vec<FormationEntry> {
    release
        .process_types
        .iter()
        .filter(|p| p.name != POSTDEPLOY)
        .map(|p| {
            saved
                .iter()
                .find(|e| e.kind == p.name)
                .cloned()
                .unwrap_or_else(|| FormationEntry {
                    kind: p.name.clone(),
                    count: u32::from(p.name == "web"),
                    size: DEFAULT_SIZE.into(),
                })
        })
        .collect()
}

/// The Procfile entry that runs once per deployment rather than as containers.
pub const POSTDEPLOY: &str = "postdeploy";

#[cfg(test)]
mod tests {
    use super::*;

    fn release(types: &[&str]) -> Release {
        Release {
            app: "a".into(),
            version: 1,
            status: ReleaseStatus::Succeeded,
            slug: "0".repeat(64),
            stack: "run".into(),
            config: ConfigVars::new(),
            process_types: types
                .iter()
                .map(|t| ProcessType {
                    name: t.to_string(),
                    command: format!("./{t}"),
                    origin: "Procfile".into(),
                })
                .collect(),
            cause: "deploy 1".into(),
            created_at: String::new(),
        }
    }

    #[test]
    fn statuses_round_trip_and_classify() {
        for s in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert!(!(s.is_active() && s.is_final()));
        }
        assert!(DeploymentStatus::RunningPostdeploy.is_active());
        assert!(DeploymentStatus::Aborted.is_final());
        assert!(!DeploymentStatus::Queued.is_final());
        assert_eq!(DeploymentStatus::parse("done"), None);
    }

    #[test]
    fn web_defaults_to_one_and_others_to_zero() {
        let r = release(&["web", "worker", "postdeploy"]);
        let saved = vec![FormationEntry {
            kind: "worker".into(),
            count: 2,
            size: "L".into(),
        }];
        let f = effective_formation(&r, &saved);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(
            (f[0].kind.as_str(), f[0].count, f[0].size.as_str()),
            ("web", 1, "M")
        );
        assert_eq!(
            (f[1].kind.as_str(), f[1].count, f[1].size.as_str()),
            ("worker", 2, "L")
        );
        assert_eq!(r.command("worker"), Some("./worker"));
    }
}
