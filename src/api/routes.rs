//! The route table: what the daemon tells the router, as one JSON file `routes.json` in the
//! run directory.
//!
//! ```json
//! {"version":1,"generation":7,"base_domain":"localhost",
//!  "apps":{"shop":{"domains":["shop.example.com"],
//!                  "backends":[{"container":"web-1","address":"10.88.0.5:5000"}],
//!                  "tls":{"shop.example.com":{"cert":"/path/fullchain.pem","key":"/path/key.pem"}}}}}
//! ```
//!
//! Invariants:
//! * The file is only ever replaced whole ([`RouteTable::write_atomic`]: temporary file,
//!   fsync, rename, fsync of the directory), so a reader sees the old table or the new one.
//! * A table that is written or read has passed [`RouteTable::validate`]: a known version,
//!   app names that are DNS labels, lower-case host names, no domain claimed twice.
//! * `generation` only informs (logs, tests); the router applies whatever table it reads.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// File name of the route table in the run directory.
pub const ROUTES_FILE: &str = "routes.json";

/// The only format version this code reads and writes.
pub const ROUTES_VERSION: u32 = 1;

/// The whole route table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    pub version: u32,
    /// Grows with every table the daemon writes.
    pub generation: u64,
    /// Apps answer at `NAME.<base_domain>`; the router's own setting wins over this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_domain: Option<String>,
    #[serde(default)]
    pub apps: BTreeMap<String, AppRoutes>,
}

/// How one app is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoutes {
    /// Custom domains (lower-case host names) besides `NAME.<base_domain>`.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The web containers of the current release.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Certificate and key files (PEM) per domain, for HTTPS.
    #[serde(default)]
    pub tls: BTreeMap<String, TlsFiles>,
}

/// One web container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The container's name within its app, e.g. `web-1`.
    pub container: String,
    pub address: SocketAddr,
}

/// PEM files of one domain: the certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What can go wrong with the route table.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("route table {path} does not exist; the daemon writes it when apps are deployed")]
    Missing { path: PathBuf },
    #[error("{action} route table {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("route table {path} is not valid JSON of the expected shape: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "route table is invalid: {0}; fix the table's writer, the router keeps its last good table"
    )]
    Invalid(String),
}

impl RouteTable {
    /// An empty table of the current version.
    pub fn new(generation: u64) -> RouteTable {
        RouteTable {
            version: ROUTES_VERSION,
            generation,
            ..RouteTable::default()
        }
    }

    /// Path of the table in `run_dir`.
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(ROUTES_FILE)
    }

    /// Reads and validates `run_dir/routes.json`.
    pub fn read(run_dir: &Path) -> Result<RouteTable, RoutesError> {
        let path = Self::path(run_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RoutesError::Missing { path })
            }
            Err(source) => {
                return Err(RoutesError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        let table: RouteTable =
            serde_json::from_slice(&bytes).map_err(|source| RoutesError::Parse {
                path: path.clone(),
                source,
            })?;
        table.validate()?;
        Ok(table)
    }

    /// Validates, then replaces `run_dir/routes.json` atomically (creating `run_dir` when
    /// missing): readers see either the previous table or this one, never a mix.
    pub fn write_atomic(&self, run_dir: &Path) -> Result<(), RoutesError> {
        self.validate()?;
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RoutesError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(run_dir).map_err(io("create the directory of", run_dir))?;
        let path = Self::path(run_dir);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = run_dir.join(format!(
            ".{ROUTES_FILE}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let json = serde_json::to_vec_pretty(self).expect("a route table serializes");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&json)?;
                f.write_all(b"\n")?;
                f.sync_all()
            })
            .map_err(io("write", &tmp))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(io("replace", &path)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        // The rename is durable once the directory is synced.
        File::open(run_dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync the directory of", run_dir))
    }

    /// Checks the invariants listed in the module docs.
    pub fn validate(&self) -> Result<(), RoutesError> {
        let bad = |msg: String| Err(RoutesError::Invalid(msg));
        if self.version != ROUTES_VERSION {
            return bad(format!(
                "version {} is not supported (this slipway reads version {ROUTES_VERSION})",
                self.version
            ));
        }
        if let Some(base) = &self.base_domain {
            if !is_host_name(base) {
                return bad(format!(
                    "base_domain {base:?} is not a lower-case host name"
                ));
            }
        }
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        let mut certified: HashMap<&str, &str> = HashMap::new();
        for (app, routes) in &self.apps {
            if !crate::applog::is_dns_label(app) {
                return bad(format!(
                    "app name {app:?} is not {}",
                    crate::applog::APP_NAME_RULE
                ));
            }
            for domain in &routes.domains {
                if !is_host_name(domain) {
                    return bad(format!(
                        "domain {domain:?} of app {app} is not a lower-case host name"
                    ));
                }
                if let Some(other) = claimed.insert(domain, app) {
                    return bad(format!(
                        "domain {domain} is claimed by apps {other} and {app}"
                    ));
                }
            }
            for backend in &routes.backends {
                if !crate::applog::is_valid_source(&backend.container) {
                    return bad(format!(
                        "container name {:?} of app {app} is not {}",
                        backend.container,
                        crate::applog::SOURCE_NAME_RULE
                    ));
                }
            }
            for domain in routes.tls.keys() {
                if !is_host_name(domain) {
                    return bad(format!(
                        "TLS domain {domain:?} of app {app} is not a lower-case host name"
                    ));
                }
                if let Some(other) = certified.insert(domain, app) {
                    return bad(format!(
                        "TLS domain {domain} has certificates from apps {other} and {app}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// True for a lower-case host name: dot-separated DNS labels, at most 253 characters.
pub fn is_host_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(crate::applog::is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RouteTable {
        let mut table = RouteTable::new(3);
        table.base_domain = Some("apps.test".into());
        table.apps.insert(
            "shop".into(),
            AppRoutes {
                domains: vec!["shop.example.com".into()],
                backends: vec![Backend {
                    container: "web-1".into(),
                    address: "10.88.0.5:5000".parse().unwrap(),
                }],
                tls: BTreeMap::from([(
                    "shop.example.com".into(),
                    TlsFiles {
                        cert: "/c.pem".into(),
                        key: "/k.pem".into(),
                    },
                )]),
            },
        );
        table
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        sample().write_atomic(&run).unwrap();
        assert_eq!(RouteTable::read(&run).unwrap(), sample());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&run).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn reads_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(ROUTES_FILE),
            r#"{"version":1,"generation":7,"base_domain":"localhost","apps":{"shop":{
                "domains":["example.com"],
                "backends":[{"container":"web-1","address":"10.88.0.5:5000"}],
                "tls":{"example.com":{"cert":"/path/fullchain.pem","key":"/path/key.pem"}}}}}"#,
        )
        .unwrap();
        let table = RouteTable::read(dir.path()).unwrap();
        assert_eq!(table.generation, 7);
        assert_eq!(table.apps["shop"].backends[0].address.port(), 5000);
    }

    #[test]
    fn refuses_bad_tables() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            RouteTable::read(dir.path()),
            Err(RoutesError::Missing { .. })
        ));
        std::fs::write(dir.path().join(ROUTES_FILE), "{").unwrap();
        assert!(matches!(
            RouteTable::read(dir.path()),
            Err(RoutesError::Parse { .. })
        ));

        let mut table = sample();
        table.version = 2;
        assert!(table.validate().is_err());

        let mut table = sample();
        table.apps.insert("../etc".into(), AppRoutes::default());
        assert!(table.write_atomic(dir.path()).is_err());

        let mut table = sample();
        let mut other = AppRoutes::default();
        other.domains.push("shop.example.com".into());
        table.apps.insert("other".into(), other);
        let err = table.validate().unwrap_err().to_string();
        assert!(
            err.contains("claimed by apps other and shop") || err.contains("shop and other"),
            "{err}"
        );

        let mut table = sample();
        table
            .apps
            .get_mut("shop")
            .unwrap()
            .domains
            .push("Shop.Example.com".into());
        assert!(table.validate().is_err());

        let mut table = sample();
        table.apps.get_mut("shop").unwrap().backends[0].container = "../x".into();
        assert!(table.validate().is_err());
    }

    #[test]
    fn host_names() {
        assert!(is_host_name("localhost"));
        assert!(is_host_name("a.b-c.example"));
        assert!(!is_host_name(""));
        assert!(!is_host_name("a..b"));
        assert!(!is_host_name("a.b."));
        assert!(!is_host_name("*.example.com"));
    }
}
