//! The router's compiled route table: host name to app, app to backends, SNI name to
//! certificate. Built from a [`RouteTable`] and swapped whole.
//!
//! Backend state (quarantine, pooled connections) is kept across reloads for backends that
//! stay (same container name and address), so a reload neither forgets a refusing backend
//! nor drops warm connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio_rustls::rustls::sign::CertifiedKey;

use crate::api::routes::RouteTable;

static START: OnceLock<Instant> = OnceLock::new();

thread_local! {
    static RECENT_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Milliseconds on a monotonic clock private to this process (never 0 after start).
pub(crate) fn now_ms() -> u64 {
    let ms = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    RECENT_MS.with(|recent| recent.set(ms));
    ms
}

/// This thread's latest [`now_ms`] reading: each request reads the clock when it starts,
/// so under traffic this is at most a request old, without another clock read. For pool
/// ages, quarantine and idle stamps, not for timeouts.
pub(crate) fn recent_ms() -> u64 {
    RECENT_MS.with(|recent| recent.get())
}

/// The [`tokio::time::Instant`] of a [`now_ms`] value.
pub(crate) fn instant_at(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(*START.get_or_init(Instant::now))
        + std::time::Duration::from_millis(ms.saturating_sub(1))
}

/// One web container, as the router tracks it.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Unique in this process: keys the worker threads' connection pools.
    pub id: u64,
    pub container: Arc<str>,
    pub addr: SocketAddr,
    /// [`now_ms`] until which no new connection is tried (0: never quarantined).
    quarantined_until: AtomicU64,
}

impl Backend {
    fn new(container: &str, addr: SocketAddr) -> Backend {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Backend {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            container: container.into(),
            addr,
            quarantined_until: AtomicU64::new(0),
        }
    }

    pub fn is_quarantined(&self, now: u64) -> bool {
        self.quarantined_until.load(Ordering::Relaxed) > now
    }

    pub fn quarantine(&self, until: u64) {
        self.quarantined_until.store(until, Ordering::Relaxed);
    }
}

/// One app's routing state.
#[derive(Debug)]
pub(crate) struct App {
    pub name: Arc<str>,
    pub backends: Vec<Arc<Backend>>,
}

/// The compiled table.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub generation: u64,
    /// `.` + base domain, lower-case.
    base_suffix: String,
    apps: HashMap<String, Arc<App>>,
    domains: HashMap<String, Arc<App>>,
    pub certs: HashMap<String, Arc<CertifiedKey>>,
}

impl Routes {
    /// An empty table answering at `NAME.<base_domain>`.
    pub fn empty(base_domain: &str) -> Routes {
        Routes {
            base_suffix: format!(".{base_domain}"),
            ..Routes::default()
        }
    }

    /// Compiles `table`; `base_override` wins over the table's base domain. Backends that
    /// `previous` already had keep their state. Certificates that cannot be loaded are left
    /// out, each with a warning (the rest of the table still applies).
    pub fn build(
        table: &RouteTable,
        base_override: Option<&str>,
        previous: &Routes,
        warnings: &mut Vec<String>,
    ) -> Routes {
        let base = base_override
            .or(table.base_domain.as_deref())
            .unwrap_or("localhost");
        let mut known: HashMap<(&str, SocketAddr), &Arc<Backend>> = HashMap::new();
        for app in previous.apps.values() {
            for b in &app.backends {
                known.insert((&b.container, b.addr), b);
            }
        }
        let mut routes = Routes::empty(base);
        routes.generation = table.generation;
        for (name, app_routes) in &table.apps {
            let backends = app_routes
                .backends
                .iter()
                .map(|b| match known.get(&(b.container.as_str(), b.address)) {
                    Some(existing) => Arc::clone(existing),
                    None => Arc::new(Backend::new(&b.container, b.address)),
                })
                .collect();
            let app = Arc::new(App {
                name: name.as_str().into(),
                backends,
            });
            for domain in &app_routes.domains {
                routes.domains.insert(domain.clone(), Arc::clone(&app));
            }
            for (domain, files) in &app_routes.tls {
                match super::tls::load_certified_key(&files.cert, &files.key) {
                    Ok(key) => {
                        routes.certs.insert(domain.clone(), key);
                    }
                    Err(e) => warnings.push(format!(
                        "no HTTPS for {domain} (app {name}): {e}; fix the files, they are read again with the next route table"
                    )),
                }
            }
            routes.apps.insert(name.clone(), app);
        }
        routes
    }

    /// The app that answers to `host` (lower-case, without port or trailing dot).
    pub fn app_for_host(&self, host: &str) -> Option<&Arc<App>> {
        if let Some(app) = self.domains.get(host) {
            return Some(app);
        }
        let name = host.strip_suffix(&self.base_suffix)?;
        self.apps.get(name)
    }

    /// Every backend of every app.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.apps.values().flat_map(|app| app.backends.iter())
    }

    /// Number of apps and of backends, for logs.
    pub fn counts(&self) -> (usize, usize) {
        (self.apps.len(), self.backends().count())
    }
}

/// The host a request is for: lower-case, port and trailing dot removed; `None` when
/// `raw` is not a plausible host (then no app can match).
pub(crate) fn normalize_host(raw: &str) -> Option<String> {
    let host = if raw.starts_with('[') {
        // An IPv6 literal: never an app, but worth naming in the answer.
        &raw[..=raw.find(']')?]
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let plausible = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    plausible.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::{AppRoutes, Backend as TableBackend};

    fn table() -> RouteTable {
        let mut t = RouteTable::new(1);
        t.apps.insert(
            "shop".into(),
            AppRoutes {
                domains: vec!["shop.example.com".into()],
                backends: vec![TableBackend {
                    container: "web-1".into(),
                    address: "127.0.0.1:5000".parse().unwrap(),
                }],
                tls: Default::default(),
            },
        );
        t
    }

    #[test]
    fn hosts_pick_apps() {
        let routes = Routes::build(&table(), None, &Routes::default(), &mut Vec::new());
        let name = |h: &str| {
            normalize_host(h).and_then(|h| routes.app_for_host(&h).map(|a| a.name.to_string()))
        };
        assert_eq!(name("shop.localhost").as_deref(), Some("shop"));
        assert_eq!(name("SHOP.LocalHost:8080").as_deref(), Some("shop"));
        assert_eq!(name("shop.localhost.").as_deref(), Some("shop"));
        assert_eq!(name("shop.example.com").as_deref(), Some("shop"));
        assert_eq!(name("other.localhost"), None);
        assert_eq!(name("x.shop.localhost"), None);
        assert_eq!(name("localhost"), None);
        assert_eq!(normalize_host("a b"), None);
        assert_eq!(normalize_host("a:b"), None);
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));

        let routes = Routes::build(&table(), Some("apps.test"), &routes, &mut Vec::new());
        assert!(routes.app_for_host("shop.apps.test").is_some());
        assert!(routes.app_for_host("shop.localhost").is_none());
    }

    #[test]
    fn backends_keep_their_state_across_reloads() {
        let first = Routes::build(&table(), None, &Routes::default(), &mut Vec::new());
        let b1 = Arc::clone(first.backends().next().unwrap());
        b1.quarantine(now_ms() + 10_000);
        let second = Routes::build(&table(), None, &first, &mut Vec::new());
        let b2 = second.backends().next().unwrap();
        assert!(Arc::ptr_eq(&b1, b2));
        assert!(b2.is_quarantined(now_ms()));
    }

    #[test]
    fn unreadable_certificates_are_warnings() {
        let mut t = table();
        t.apps.get_mut("shop").unwrap().tls.insert(
            "shop.example.com".into(),
            crate::api::routes::TlsFiles {
                cert: "/nonexistent/cert.pem".into(),
                key: "/nonexistent/key.pem".into(),
            },
        );
        let mut warnings = Vec::new();
        let routes = Routes::build(&t, None, &Routes::default(), &mut warnings);
        assert!(routes.certs.is_empty());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("/nonexistent/cert.pem"),
            "{warnings:?}"
        );
        assert!(routes.app_for_host("shop.example.com").is_some());
    }
}
