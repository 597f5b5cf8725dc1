//! The platform's state in one SQLite database (`DATA_DIR/slipway.db`, WAL mode): apps and
//! their config vars, releases, deployments, formations, domains.
//!
//! Invariants:
//! * The schema is the sum of [`MIGRATIONS`], applied in order inside one transaction each;
//!   `PRAGMA user_version` holds how many have run. A database of a newer slipway (more
//!   migrations than this code knows) is refused rather than misread.
//! * Release versions of an app are 1, 2, 3, … in creation order and never reused; a release
//!   is never changed except for its status (pending, then succeeded or failed).
//! * A domain belongs to at most one app (primary key).
//! * Deleting an app deletes everything of it (foreign keys with ON DELETE CASCADE).
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::model::{
    App, ConfigVars, Deployment, DeploymentStatus, FormationEntry, GithubLink, NewDeployment,
    Release, ReleaseStatus, SourceKind, SshKey,
};
use super::process_types::ProcessType;
use crate::applog::Timestamp;

/// File name of the database in the data directory.
pub const DB_FILE: &str = "slipway.db";

/// The schema, one step per entry; never edit a step once released, add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: apps, releases, deployments, formation, domains.
    "CREATE TABLE apps (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        config TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE releases (
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        slug TEXT NOT NULL,
        stack TEXT NOT NULL,
        config TEXT NOT NULL,
        process_types TEXT NOT NULL,
        cause TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (app, version)
    );
    CREATE INDEX releases_by_slug ON releases(slug);
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        status TEXT NOT NULL,
        source TEXT NOT NULL,
        source_url TEXT,
        release INTEGER,
        reason TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX deployments_by_app ON deployments(app, id);
    CREATE TABLE formation (
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        type TEXT NOT NULL,
        count INTEGER NOT NULL,
        size TEXT NOT NULL,
        PRIMARY KEY (app, type)
    );
    CREATE TABLE domains (
        domain TEXT PRIMARY KEY,
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    );",
    // 2: git sources, deploy branches, GitHub links and their deliveries, SSH keys.
    "ALTER TABLE deployments ADD COLUMN source_kind TEXT NOT NULL DEFAULT 'archive';
    UPDATE deployments SET source_kind = 'url' WHERE source_url IS NOT NULL;
    ALTER TABLE deployments ADD COLUMN source_version TEXT;
    ALTER TABLE deployments ADD COLUMN git_branch TEXT;
    ALTER TABLE apps ADD COLUMN deploy_branch TEXT;
    CREATE TABLE github_links (
        app TEXT PRIMARY KEY REFERENCES apps(name) ON DELETE CASCADE,
        repo TEXT NOT NULL,
        branch TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE github_deliveries (
        id TEXT NOT NULL,
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        deployment INTEGER,
        received_at TEXT NOT NULL,
        PRIMARY KEY (id, app)
    );
    CREATE TABLE ssh_keys (
        name TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL
    );",
];

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {action}: {source}; check that the data directory is writable and not full")]
    Sqlite {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this slipway knows ({known}); run the slipway that wrote it, or a newer one")]
    NewerSchema {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("database {path}: a {what} stored there cannot be read ({detail}); the file was changed by something else than slipway")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "app {0} already exists; pick another name, or deploy to it with `slipway deploy -a {0}`"
    )]
    AppExists(String),
    #[error("no app {0}; `slipway apps` lists the apps, `slipway create {0}` makes it")]
    NoSuchApp(String),
    #[error("domain {domain} already belongs to app {app}; remove it there first (`slipway domains remove -a {app} {domain}`)")]
    DomainTaken { domain: String, app: String },
    #[error("app {app} has no domain {domain}; `slipway domains -a {app}` lists its domains")]
    NoSuchDomain { app: String, domain: String },
}

type Result<T> = std::result::Result<T, StoreError>;

/// A GitHub link's row: app, repo, branch, secret, created_at.
fn link_from_row(r: &Row) -> rusqlite::Result<GithubLink> {
    Ok(GithubLink {
        app: r.get(0)?,
        repo: r.get(1)?,
        branch: r.get(2)?,
        secret: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// An app's row: name, created_at, config (JSON), deploy_branch.
type RawApp = (String, String, String, Option<String>);

/// The database, shared by the daemon's tasks (one connection behind a lock: every query
/// is short).
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn now() -> String {
    Timestamp::now().to_string()
}

impl Store {
    /// Opens (creating when missing) `DATA_DIR/slipway.db` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let path = data_dir.join(DB_FILE);
        let sql = |action: &'static str| {
            let path = path.clone();
            move |source| StoreError::Sqlite {
                path,
                action,
                source,
            }
        };
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Sqlite {
            path: path.clone(),
            action: "create the data directory",
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        let mut conn = Connection::open(&path).map_err(sql("open"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql("set the busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("switch to WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("enable foreign keys"))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql("read the schema version"))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(StoreError::NewerSchema {
                path,
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction().map_err(sql("begin a migration"))?;
            tx.execute_batch(step).map_err(sql("migrate the schema"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(sql("record the schema version"))?;
            tx.commit().map_err(sql("commit a migration"))?;
        }
        Ok(Store {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            action,
            source,
        }
    }

    fn corrupt(&self, what: &'static str, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
            detail: detail.to_string(),
        }
    }

    // ---- apps ----

    /// Creates app `name` (the caller checked the name).
    pub fn create_app(&self, name: &str) -> Result<App> {
        let created_at = now();
        let inserted = self
            .conn()
            .execute(
                "INSERT INTO apps (name, created_at, config) VALUES (?1, ?2, '{}')
                 ON CONFLICT(name) DO NOTHING",
                params![name, created_at],
            )
            .map_err(self.err("create an app"))?;
        if inserted == 0 {
            return Err(StoreError::AppExists(name.into()));
        }
        Ok(App {
            name: name.into(),
            created_at,
            config: ConfigVars::new(),
            deploy_branch: None,
        })
    }

    fn app_from_row(&self, row: &Row) -> rusqlite::Result<RawApp> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    }

    fn to_app(&self, (name, created_at, config, deploy_branch): RawApp) -> Result<App> {
        let config = serde_json::from_str(&config).map_err(|e| self.corrupt("config", e))?;
        Ok(App {
            name,
            created_at,
            config,
            deploy_branch,
        })
    }

    /// App `name`, if it exists.
    pub fn app(&self, name: &str) -> Result<Option<App>> {
        let raw = self
            .conn()
            .query_row(
                "SELECT name, created_at, config, deploy_branch FROM apps WHERE name = ?1",
                [name],
                |r| self.app_from_row(r),
            )
            .optional()
            .map_err(self.err("read an app"))?;
        raw.map(|r| self.to_app(r)).transpose()
    }

    /// App `name`, or [`StoreError::NoSuchApp`].
    pub fn get_app(&self, name: &str) -> Result<App> {
        self.app(name)?
            .ok_or_else(|| StoreError::NoSuchApp(name.into()))
    }

    /// Every app, by name.
    pub fn apps(&self) -> Result<Vec<App>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, created_at, config, deploy_branch FROM apps ORDER BY name")
            .map_err(self.err("list apps"))?;
        let rows = stmt
            .query_map([], |r| self.app_from_row(r))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("list apps"))?;
        rows.into_iter().map(|r| self.to_app(r)).collect()
    }

    /// Deletes app `name` and all its records.
    pub fn delete_app(&self, name: &str) -> Result<()> {
        let n = self
            .conn()
            .execute("DELETE FROM apps WHERE name = ?1", [name])
            .map_err(self.err("delete an app"))?;
        if n == 0 {
            return Err(StoreError::NoSuchApp(name.into()));
        }
        Ok(())
    }

    /// Replaces the config vars of `app` (the caller checked them).
    pub fn set_config(&self, app: &str, config: &ConfigVars) -> Result<()> {
        let json = serde_json::to_string(config).expect("a map of strings serializes");
        let n = self
            .conn()
            .execute(
                "UPDATE apps SET config = ?2 WHERE name = ?1",
                params![app, json],
            )
            .map_err(self.err("save config vars"))?;
        if n == 0 {
            return Err(StoreError::NoSuchApp(app.into()));
        }
        Ok(())
    }

    /// Sets (or, with None, clears) the branch a push to `app` deploys.
    pub fn set_deploy_branch(&self, app: &str, branch: Option<&str>) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE apps SET deploy_branch = ?2 WHERE name = ?1",
                params![app, branch],
            )
            .map_err(self.err("save the deploy branch"))?;
        if n == 0 {
            return Err(StoreError::NoSuchApp(app.into()));
        }
        Ok(())
    }

    // ---- releases ----

    /// Adds the next release of `app` (status pending) and returns it.
    pub fn create_release(
        &self,
        app: &str,
        slug: &str,
        stack: &str,
        config: &ConfigVars,
        process_types: &[ProcessType],
        cause: &str,
    ) -> Result<Release> {
        let mut conn = self.conn();
        let tx: Transaction = conn.transaction().map_err(self.err("begin a release"))?;
        let last: Option<u32> = tx
            .query_row(
                "SELECT MAX(version) FROM releases WHERE app = ?1",
                [app],
                |r| r.get(0),
            )
            .map_err(self.err("number a release"))?;
        let release = Release {
            app: app.into(),
            version: last.unwrap_or(0) + 1,
            status: ReleaseStatus::Pending,
            slug: slug.into(),
            stack: stack.into(),
            config: config.clone(),
            process_types: process_types.to_vec(),
            cause: cause.into(),
            created_at: now(),
        };
        tx.execute(
            "INSERT INTO releases (app, version, status, slug, stack, config, process_types, cause, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                release.app,
                release.version,
                release.status.as_str(),
                release.slug,
                release.stack,
                serde_json::to_string(&release.config).expect("serializes"),
                serde_json::to_string(&release.process_types).expect("serializes"),
                release.cause,
                release.created_at,
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::NoSuchApp(app.into())
            }
            e => self.err("save a release")(e),
        })?;
        tx.commit().map_err(self.err("commit a release"))?;
        Ok(release)
    }

    /// Sets the status of release `version` of `app`.
    pub fn set_release_status(&self, app: &str, version: u32, status: ReleaseStatus) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE releases SET status = ?3 WHERE app = ?1 AND version = ?2",
                params![app, version, status.as_str()],
            )
            .map_err(self.err("update a release"))?;
        Ok(())
    }

    fn releases_where(&self, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Release>> {
        type Raw = (
            String,
            u32,
            String,
            String,
            String,
            String,
            String,
            String,
            String,
        );
        let conn = self.conn();
        let sql = format!(
            "SELECT app, version, status, slug, stack, config, process_types, cause, created_at
             FROM releases WHERE {filter}"
        );
        let mut stmt = conn.prepare(&sql).map_err(self.err("read releases"))?;
        let rows: Vec<Raw> = stmt
            .query_map(args, |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("read releases"))?;
        rows.into_iter()
            .map(
                |(app, version, status, slug, stack, config, types, cause, created_at)| {
                    Ok(Release {
                        app,
                        version,
                        status: ReleaseStatus::parse(&status)
                            .ok_or_else(|| self.corrupt("release status", &status))?,
                        slug,
                        stack,
                        config: serde_json::from_str(&config)
                            .map_err(|e| self.corrupt("release config", e))?,
                        process_types: serde_json::from_str(&types)
                            .map_err(|e| self.corrupt("release process types", e))?,
                        cause,
                        created_at,
                    })
                },
            )
            .collect()
    }

    /// Every release of `app`, newest first.
    pub fn releases(&self, app: &str) -> Result<Vec<Release>> {
        self.releases_where("app = ?1 ORDER BY version DESC", &[&app])
    }

    /// Release `version` of `app`.
    pub fn release(&self, app: &str, version: u32) -> Result<Option<Release>> {
        Ok(self
            .releases_where("app = ?1 AND version = ?2", &[&app, &version])?
            .pop())
    }

    /// The release that serves `app`: its newest succeeded one.
    pub fn current_release(&self, app: &str) -> Result<Option<Release>> {
        Ok(self
            .releases_where(
                "app = ?1 AND status = 'succeeded' ORDER BY version DESC LIMIT 1",
                &[&app],
            )?
            .pop())
    }

    /// Whether an app other than `app` has a release of `slug`.
    pub fn slug_used_elsewhere(&self, slug: &str, app: &str) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM releases WHERE slug = ?1 AND app != ?2)",
                params![slug, app],
                |r| r.get(0),
            )
            .map_err(self.err("look up a slug"))
    }

    // ---- deployments ----

    const DEPLOYMENT_COLUMNS: &'static str =
        "id, app, status, source, source_url, release, reason, created_at, started_at, finished_at,
         source_kind, source_version, git_branch";

    fn deployments_where(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Deployment>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {} FROM deployments WHERE {filter}",
            Self::DEPLOYMENT_COLUMNS
        );
        let mut stmt = conn.prepare(&sql).map_err(self.err("read deployments"))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<u32>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("read deployments"))?;
        rows.into_iter()
            .map(|r| {
                Ok(Deployment {
                    id: r.0,
                    app: r.1,
                    status: DeploymentStatus::parse(&r.2)
                        .ok_or_else(|| self.corrupt("deployment status", &r.2))?,
                    source: r.3,
                    source_kind: SourceKind::parse(&r.10)
                        .ok_or_else(|| self.corrupt("deployment source kind", &r.10))?,
                    source_url: r.4,
                    source_version: r.11,
                    git_branch: r.12,
                    release: r.5,
                    reason: r.6,
                    created_at: r.7,
                    started_at: r.8,
                    finished_at: r.9,
                })
            })
            .collect()
    }

    /// Records a new deployment of `app`, queued.
    pub fn create_deployment(&self, app: &str, new: &NewDeployment) -> Result<Deployment> {
        let created_at = now();
        let id = {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO deployments
                 (app, status, source, source_url, created_at, source_kind, source_version, git_branch)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    app,
                    new.source,
                    new.url,
                    created_at,
                    new.kind.as_str(),
                    new.version,
                    new.git_branch
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::NoSuchApp(app.into())
                }
                e => self.err("save a deployment")(e),
            })?;
            conn.last_insert_rowid()
        };
        Ok(Deployment {
            id,
            app: app.into(),
            status: DeploymentStatus::Queued,
            source: new.source.clone(),
            source_kind: new.kind,
            source_url: new.url.clone(),
            source_version: new.version.clone(),
            git_branch: new.git_branch.clone(),
            release: None,
            reason: None,
            created_at,
            started_at: None,
            finished_at: None,
        })
    }

    /// Deployment `id`.
    pub fn deployment(&self, id: i64) -> Result<Option<Deployment>> {
        Ok(self.deployments_where("id = ?1", &[&id])?.pop())
    }

    /// The deployments of `app`, newest first.
    pub fn deployments(&self, app: &str) -> Result<Vec<Deployment>> {
        self.deployments_where("app = ?1 ORDER BY id DESC", &[&app])
    }

    /// The oldest queued deployment of `app`.
    pub fn next_queued(&self, app: &str) -> Result<Option<Deployment>> {
        Ok(self
            .deployments_where(
                "app = ?1 AND status = 'queued' ORDER BY id LIMIT 1",
                &[&app],
            )?
            .pop())
    }

    /// Deployments of any app in `statuses`, oldest first.
    pub fn deployments_in(&self, statuses: &[DeploymentStatus]) -> Result<Vec<Deployment>> {
        let list = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        self.deployments_where(&format!("status IN ({list}) ORDER BY id"), &[])
    }

    /// Moves deployment `id` to `status` (stamping the start when it becomes active, the end
    /// when it is final), with a reason when it failed.
    pub fn set_deployment_status(
        &self,
        id: i64,
        status: DeploymentStatus,
        reason: Option<&str>,
    ) -> Result<()> {
        let stamp = now();
        let conn = self.conn();
        let result = if status.is_final() {
            conn.execute(
                "UPDATE deployments SET status = ?2, reason = COALESCE(?3, reason), finished_at = ?4
                 WHERE id = ?1",
                params![id, status.as_str(), reason, stamp],
            )
        } else {
            conn.execute(
                "UPDATE deployments SET status = ?2, reason = COALESCE(?3, reason),
                 started_at = COALESCE(started_at, CASE WHEN ?2 = 'queued' THEN NULL ELSE ?4 END)
                 WHERE id = ?1",
                params![id, status.as_str(), reason, stamp],
            )
        };
        result.map_err(self.err("update a deployment"))?;
        Ok(())
    }

    /// Notes the release deployment `id` made.
    pub fn set_deployment_release(&self, id: i64, version: u32) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE deployments SET release = ?2 WHERE id = ?1",
                params![id, version],
            )
            .map_err(self.err("update a deployment"))?;
        Ok(())
    }

    /// After a crash: every active deployment becomes `aborted` with `reason`, every pending
    /// release `failed`. Returns the deployments aborted.
    pub fn abort_unfinished(&self, reason: &str) -> Result<Vec<Deployment>> {
        let active = self.deployments_in(&[
            DeploymentStatus::Building,
            DeploymentStatus::Starting,
            DeploymentStatus::RunningPostdeploy,
        ])?;
        for d in &active {
            self.set_deployment_status(d.id, DeploymentStatus::Aborted, Some(reason))?;
        }
        self.conn()
            .execute(
                "UPDATE releases SET status = 'failed' WHERE status = 'pending'",
                [],
            )
            .map_err(self.err("fail pending releases"))?;
        Ok(active)
    }

    // ---- GitHub links ----

    /// Links `app` to a GitHub repository (replacing an earlier link).
    pub fn set_github_link(&self, link: &GithubLink) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO github_links (app, repo, branch, secret, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(app) DO UPDATE SET repo = ?2, branch = ?3, secret = ?4, created_at = ?5",
                params![link.app, link.repo, link.branch, link.secret, now()],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::NoSuchApp(link.app.clone())
                }
                e => self.err("save a GitHub link")(e),
            })?;
        Ok(())
    }

    /// The link of `app`, if any.
    pub fn github_link(&self, app: &str) -> Result<Option<GithubLink>> {
        self.conn()
            .query_row(
                "SELECT app, repo, branch, secret, created_at FROM github_links WHERE app = ?1",
                [app],
                link_from_row,
            )
            .optional()
            .map_err(self.err("read a GitHub link"))
    }

    /// Every link, by app.
    pub fn github_links(&self) -> Result<Vec<GithubLink>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT app, repo, branch, secret, created_at FROM github_links ORDER BY app")
            .map_err(self.err("list GitHub links"))?;
        let rows = stmt
            .query_map([], link_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("list GitHub links"))?;
        Ok(rows)
    }

    /// Removes the link of `app`; whether there was one.
    pub fn remove_github_link(&self, app: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM github_links WHERE app = ?1", [app])
            .map_err(self.err("remove a GitHub link"))?;
        Ok(n > 0)
    }

    /// Records delivery `id` for `app`; false when it was recorded before (a redelivery).
    pub fn record_delivery(&self, id: &str, app: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "INSERT INTO github_deliveries (id, app, received_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id, app) DO NOTHING",
                params![id, app, now()],
            )
            .map_err(self.err("record a webhook delivery"))?;
        Ok(n > 0)
    }

    /// Notes the deployment delivery `id` made for `app`.
    pub fn set_delivery_deployment(&self, id: &str, app: &str, deployment: i64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE github_deliveries SET deployment = ?3 WHERE id = ?1 AND app = ?2",
                params![id, app, deployment],
            )
            .map_err(self.err("record a webhook delivery"))?;
        Ok(())
    }

    /// The deployment delivery `id` made for `app`, if it made one.
    pub fn delivery_deployment(&self, id: &str, app: &str) -> Result<Option<i64>> {
        self.conn()
            .query_row(
                "SELECT deployment FROM github_deliveries WHERE id = ?1 AND app = ?2",
                params![id, app],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(self.err("read a webhook delivery"))
    }

    // ---- SSH keys ----

    /// Adds key `name` (the caller checked the key); false when the name is taken.
    pub fn add_ssh_key(&self, key: &SshKey) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "INSERT INTO ssh_keys (name, public_key, fingerprint, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
                params![key.name, key.public_key, key.fingerprint, now()],
            )
            .map_err(self.err("save an SSH key"))?;
        Ok(n > 0)
    }

    /// Every SSH key, by name.
    pub fn ssh_keys(&self) -> Result<Vec<SshKey>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, public_key, fingerprint, created_at FROM ssh_keys ORDER BY name")
            .map_err(self.err("list SSH keys"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SshKey {
                    name: r.get(0)?,
                    public_key: r.get(1)?,
                    fingerprint: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("list SSH keys"))?;
        Ok(rows)
    }

    /// Removes key `name`; whether it existed.
    pub fn remove_ssh_key(&self, name: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM ssh_keys WHERE name = ?1", [name])
            .map_err(self.err("remove an SSH key"))?;
        Ok(n > 0)
    }

    // ---- formation ----

    /// The counts and sizes `app` asked for, by type.
    pub fn formation(&self, app: &str) -> Result<Vec<FormationEntry>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT type, count, size FROM formation WHERE app = ?1 ORDER BY type")
            .map_err(self.err("read the formation"))?;
        let rows = stmt
            .query_map([app], |r| {
                Ok(FormationEntry {
                    kind: r.get(0)?,
                    count: r.get(1)?,
                    size: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("read the formation"))?;
        Ok(rows)
    }

    /// Saves `entries` (other types keep theirs).
    pub fn set_formation(&self, app: &str, entries: &[FormationEntry]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.err("begin a formation"))?;
        for e in entries {
            tx.execute(
                "INSERT INTO formation (app, type, count, size) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(app, type) DO UPDATE SET count = ?3, size = ?4",
                params![app, e.kind, e.count, e.size],
            )
            .map_err(self.err("save the formation"))?;
        }
        tx.commit().map_err(self.err("save the formation"))?;
        Ok(())
    }

    // ---- domains ----

    /// The custom domains of `app`, sorted.
    pub fn domains(&self, app: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT domain FROM domains WHERE app = ?1 ORDER BY domain")
            .map_err(self.err("read domains"))?;
        let rows = stmt
            .query_map([app], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(self.err("read domains"))?;
        Ok(rows)
    }

    /// Gives `domain` (checked by the caller) to `app`.
    pub fn add_domain(&self, app: &str, domain: &str) -> Result<()> {
        let conn = self.conn();
        let owner: Option<String> = conn
            .query_row("SELECT app FROM domains WHERE domain = ?1", [domain], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err("read domains"))?;
        match owner {
            Some(owner) if owner == app => Ok(()),
            Some(owner) => Err(StoreError::DomainTaken {
                domain: domain.into(),
                app: owner,
            }),
            None => {
                conn.execute(
                    "INSERT INTO domains (domain, app, created_at) VALUES (?1, ?2, ?3)",
                    params![domain, app, now()],
                )
                .map_err(self.err("save a domain"))?;
                Ok(())
            }
        }
    }

    /// Takes `domain` from `app`.
    pub fn remove_domain(&self, app: &str, domain: &str) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM domains WHERE domain = ?1 AND app = ?2",
                params![domain, app],
            )
            .map_err(self.err("remove a domain"))?;
        if n == 0 {
            return Err(StoreError::NoSuchDomain {
                app: app.into(),
                domain: domain.into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(name: &str) -> ProcessType {
        ProcessType {
            name: name.into(),
            command: format!("./{name}"),
            origin: "Procfile".into(),
        }
    }

    #[test]
    fn apps_releases_and_cascading_deletes() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_app("shop").unwrap();
        assert!(matches!(
            s.create_app("shop"),
            Err(StoreError::AppExists(_))
        ));
        let mut config = ConfigVars::new();
        config.insert("A".into(), "1".into());
        s.set_config("shop", &config).unwrap();
        assert_eq!(s.get_app("shop").unwrap().config, config);
        let slug = "a".repeat(64);
        let r1 = s
            .create_release("shop", &slug, "run", &config, &[pt("web")], "deploy 1")
            .unwrap();
        let r2 = s
            .create_release("shop", &slug, "run", &config, &[pt("web")], "set A")
            .unwrap();
        assert_eq!((r1.version, r2.version), (1, 2));
        assert!(s.current_release("shop").unwrap().is_none());
        s.set_release_status("shop", 1, ReleaseStatus::Succeeded)
            .unwrap();
        s.set_release_status("shop", 2, ReleaseStatus::Failed)
            .unwrap();
        assert_eq!(s.current_release("shop").unwrap().unwrap().version, 1);
        assert!(!s.slug_used_elsewhere(&slug, "shop").unwrap());
        s.create_app("other").unwrap();
        s.create_release("other", &slug, "run", &config, &[], "deploy 2")
            .unwrap();
        assert!(s.slug_used_elsewhere(&slug, "shop").unwrap());
        s.add_domain("shop", "shop.example.com").unwrap();
        assert!(matches!(
            s.add_domain("other", "shop.example.com"),
            Err(StoreError::DomainTaken { .. })
        ));
        s.set_formation(
            "shop",
            &[FormationEntry {
                kind: "web".into(),
                count: 3,
                size: "L".into(),
            }],
        )
        .unwrap();
        let dep = s.create_deployment("shop", &archive()).unwrap();
        s.delete_app("shop").unwrap();
        assert!(s.releases("shop").unwrap().is_empty());
        assert!(s.domains("shop").unwrap().is_empty());
        assert!(s.formation("shop").unwrap().is_empty());
        assert!(s.deployment(dep.id).unwrap().is_none());
        assert!(s.slug_used_elsewhere(&slug, "shop").unwrap());
        assert!(matches!(
            s.create_release("shop", &slug, "run", &config, &[], "x"),
            Err(StoreError::NoSuchApp(_))
        ));
    }

    #[test]
    fn deployments_queue_and_recover_after_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_app("a").unwrap();
        let one = s.create_deployment("a", &archive()).unwrap();
        let url = NewDeployment {
            source: "https://x/y.tgz".into(),
            kind: SourceKind::Url,
            url: Some("https://x/y.tgz".into()),
            ..Default::default()
        };
        let two = s.create_deployment("a", &url).unwrap();
        assert_eq!(two.source_kind, SourceKind::Url);
        assert_eq!(s.next_queued("a").unwrap().unwrap().id, one.id);
        s.set_deployment_status(one.id, DeploymentStatus::Building, None)
            .unwrap();
        assert_eq!(s.next_queued("a").unwrap().unwrap().id, two.id);
        let r = s
            .create_release(
                "a",
                &"b".repeat(64),
                "run",
                &ConfigVars::new(),
                &[],
                "deploy",
            )
            .unwrap();
        s.set_deployment_release(one.id, r.version).unwrap();
        s.set_deployment_status(one.id, DeploymentStatus::Starting, None)
            .unwrap();
        drop(s);
        // A new daemon on the same file.
        let s = Store::open(d.path()).unwrap();
        let aborted = s.abort_unfinished("the daemon stopped").unwrap();
        assert_eq!(aborted.len(), 1);
        let one = s.deployment(one.id).unwrap().unwrap();
        assert_eq!(one.status, DeploymentStatus::Aborted);
        assert_eq!(one.reason.as_deref(), Some("the daemon stopped"));
        assert!(one.started_at.is_some() && one.finished_at.is_some());
        assert_eq!(one.release, Some(1));
        assert_eq!(
            s.release("a", 1).unwrap().unwrap().status,
            ReleaseStatus::Failed
        );
        assert_eq!(
            s.deployment(two.id).unwrap().unwrap().status,
            DeploymentStatus::Queued
        );
    }

    fn archive() -> NewDeployment {
        NewDeployment {
            source: "archive".into(),
            ..Default::default()
        }
    }

    #[test]
    fn git_sources_and_deploy_branches_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_app("a").unwrap();
        assert_eq!(s.get_app("a").unwrap().deploy_branch, None);
        s.set_deploy_branch("a", Some("production")).unwrap();
        assert_eq!(
            s.get_app("a").unwrap().deploy_branch.as_deref(),
            Some("production")
        );
        let commit = "c".repeat(40);
        let new = NewDeployment {
            source: "git main cccccc".into(),
            kind: SourceKind::Git,
            url: Some("https://github.com/acme/a".into()),
            version: Some(commit.clone()),
            git_branch: Some("main".into()),
        };
        let dep = s.create_deployment("a", &new).unwrap();
        let read = s.deployment(dep.id).unwrap().unwrap();
        assert_eq!(read, dep);
        assert_eq!(read.source_version.as_deref(), Some(commit.as_str()));
        assert!(s.set_deploy_branch("nope", None).is_err());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        drop(Store::open(d.path()).unwrap());
        let conn = Connection::open(d.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        drop(conn);
        let e = Store::open(d.path()).err().unwrap().to_string();
        assert!(e.contains("newer than this slipway"), "{e}");
    }
}
