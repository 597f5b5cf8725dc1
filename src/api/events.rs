//! What the daemon does with the supervisor's news: web containers that come and go become
//! the router's `routes.json`, platform events become lines of the app's `platform.log`.
//!
//! Invariants:
//! * The daemon is the only writer of `routes.json` and of every app's `platform.log`.
//! * A new table is written whole each time (backends of every app, custom domains from the
//!   store, the base domain), under one lock, so tables never go back in time.
//! * At start the backends of the table on disk are kept: a restarted daemon does not take
//!   traffic away from containers that are still running while the supervisor re-adopts them.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::routes::{AppRoutes, Backend, RouteTable, RoutesError};
use super::runner::Events;
use crate::applog::{LogWriter, Timestamp, DEFAULT_MAX_BYTES};
use crate::config::Config;
use crate::platform::store::Store;

/// Log source of the daemon's lines in an app's logs (`slipway[PROCESS]: …`).
pub const PLATFORM_SOURCE: &str = "slipway";
/// The file (and process) platform events go to.
pub const PLATFORM_LOG: &str = "platform";

/// The platform log of every app: one writer per app, one process.
pub struct PlatformLogs {
    data_dir: PathBuf,
    writers: Mutex<HashMap<String, LogWriter>>,
}

impl PlatformLogs {
    pub fn new(data_dir: PathBuf) -> PlatformLogs {
        PlatformLogs {
            data_dir,
            writers: Mutex::new(HashMap::new()),
        }
    }

    /// Appends `slipway[PROCESS]: message` to `app`'s platform.log (failures are reported on
    /// the daemon's stderr: logs never stop the platform).
    pub fn log(&self, app: &str, process: &str, message: &str) {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if !writers.contains_key(app) {
            match LogWriter::open(&self.data_dir, app, PLATFORM_LOG, DEFAULT_MAX_BYTES) {
                Ok(w) => {
                    writers.insert(app.to_string(), w);
                }
                Err(e) => {
                    eprintln!("slipway daemon: {e}");
                    return;
                }
            }
        }
        let w = writers.get_mut(app).expect("inserted above");
        let result = w
            .append(Timestamp::now(), PLATFORM_SOURCE, process, message)
            .and_then(|()| w.flush());
        if let Err(e) = result {
            eprintln!("slipway daemon: {e}");
        }
    }

    /// Closes `app`'s writer (its logs are about to be removed).
    pub fn forget(&self, app: &str) {
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
    }
}

/// The route table as the daemon keeps it, and the platform logs.
pub struct PlatformEvents {
    run_dir: PathBuf,
    base_domain: String,
    store: Arc<Store>,
    backends: Mutex<BTreeMap<String, Vec<Backend>>>,
    generation: Mutex<u64>,
    pub logs: PlatformLogs,
}

impl PlatformEvents {
    /// Starts from the table on disk, if there is a readable one.
    pub fn new(config: &Config, store: Arc<Store>) -> PlatformEvents {
        let (backends, generation) = match RouteTable::read(&config.run_dir) {
            Ok(table) => (
                table
                    .apps
                    .into_iter()
                    .map(|(app, routes)| (app, routes.backends))
                    .collect(),
                table.generation,
            ),
            Err(_) => (BTreeMap::new(), 0),
        };
        PlatformEvents {
            run_dir: config.run_dir.clone(),
            base_domain: config.base_domain.clone(),
            store,
            backends: Mutex::new(backends),
            generation: Mutex::new(generation),
            logs: PlatformLogs::new(config.data_dir.clone()),
        }
    }

    /// Writes the table: every app of the store with its domains and known backends.
    pub fn write_routes(&self) -> Result<(), RoutesError> {
        let backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let apps = self
            .store
            .apps()
            .map_err(|e| RoutesError::Invalid(format!("the app list cannot be read: {e}")))?;
        let mut table = RouteTable::new(*generation + 1);
        table.base_domain = Some(self.base_domain.clone()).filter(|d| !d.is_empty());
        for app in apps {
            let domains = self
                .store
                .domains(&app.name)
                .map_err(|e| RoutesError::Invalid(format!("domains of {}: {e}", app.name)))?;
            table.apps.insert(
                app.name.clone(),
                AppRoutes {
                    domains,
                    backends: backends.get(&app.name).cloned().unwrap_or_default(),
                    tls: BTreeMap::new(),
                },
            );
        }
        table.write_atomic(&self.run_dir)?;
        *generation += 1;
        Ok(())
    }

    /// Writes the table, reporting a failure in `app`'s log and on stderr.
    pub fn refresh_routes(&self, app: &str) {
        if let Err(e) = self.write_routes() {
            eprintln!("slipway daemon: {e}");
            self.logs
                .log(app, PLATFORM_LOG, &format!("routes not updated: {e}"));
        }
    }

    /// Drops `app` from the table (it was destroyed).
    pub fn forget(&self, app: &str) {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
        self.logs.forget(app);
        if let Err(e) = self.write_routes() {
            eprintln!("slipway daemon: {e}");
        }
    }

    /// The backends `app` has now.
    pub fn backends(&self, app: &str) -> Vec<Backend> {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
            .unwrap_or_default()
    }
}

impl Events for PlatformEvents {
    fn backends_changed(&self, app: &str, backends: Vec<Backend>) {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.to_string(), backends);
        self.refresh_routes(app);
    }

    fn event(&self, app: &str, line: &str) {
        self.logs.log(app, PLATFORM_LOG, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_domains_make_the_table_and_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let mut config = Config::in_data_dir(&d.path().join("data"));
        config.run_dir = d.path().join("run");
        config.base_domain = "apps.test".into();
        let store = Arc::new(Store::open(&config.data_dir).unwrap());
        store.create_app("shop").unwrap();
        store.create_app("blog").unwrap();
        store.add_domain("shop", "shop.example.com").unwrap();
        let events = PlatformEvents::new(&config, store.clone());
        let backend = Backend {
            container: "web-1".into(),
            address: "10.0.0.5:5000".parse().unwrap(),
        };
        events.backends_changed("shop", vec![backend.clone()]);
        events.event("shop", "web-1 started");
        let table = RouteTable::read(&config.run_dir).unwrap();
        assert_eq!(table.base_domain.as_deref(), Some("apps.test"));
        assert_eq!(table.apps["shop"].backends, vec![backend.clone()]);
        assert_eq!(table.apps["shop"].domains, vec!["shop.example.com"]);
        assert!(table.apps["blog"].backends.is_empty());
        let first = table.generation;
        // A restarted daemon keeps the backends until the supervisor says otherwise.
        let again = PlatformEvents::new(&config, store.clone());
        assert_eq!(again.backends("shop"), vec![backend]);
        store.delete_app("shop").unwrap();
        again.forget("shop");
        let table = RouteTable::read(&config.run_dir).unwrap();
        assert!(table.generation > first);
        assert!(!table.apps.contains_key("shop"));
        let log = std::fs::read_to_string(config.data_dir.join("logs/shop/platform.log")).unwrap();
        assert!(log.contains("slipway[platform]: web-1 started"), "{log}");
    }
}
