//! `slipway daemon`: the control plane. State in SQLite, the API on a root-only unix socket
//! (and on TCP with a bearer token when asked), deployments one at a time per app, containers
//! through the supervisor ([`Runner`]).
//!
//! Start-up order: open the store; mark what a killed daemon left half-done as `aborted`
//! (deployments) and `failed` (releases); start the supervisor with the daemon's [`Events`];
//! listen; resume queued deployments; bring apps whose containers run another release than
//! the current one back to it; tell systemd it is ready (`READY=1` on `NOTIFY_SOCKET`).
//! On SIGTERM or SIGINT it stops accepting, stops running builds (their deployments become
//! `aborted`), and exits; containers keep running (their monitors outlive the daemon).
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::deploy::Deployer;
use super::events::{PlatformEvents, PLATFORM_LOG};
use super::http::ApiError;
use super::runner::{self, Events, Formation, Runner, Scale, Size};
use crate::build::slug::SlugStore;
use crate::config::Config;
use crate::platform::model::{self, effective_formation, DeploymentStatus, SourceKind};
use crate::platform::source_archive::ArchiveLimits;
use crate::platform::store::{Store, StoreError};

/// Where deployments keep their work (uploaded archive, unpacked source) and logs.
pub const DEPLOYMENTS_DIR: &str = "deployments";

/// What the daemon is run with, besides the [`Config`].
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub config: Config,
    /// The `slipway` binary that runs builds (`slipway build --json`) in child processes.
    pub slipway_exe: PathBuf,
    /// Longest build.
    pub build_timeout: Duration,
    /// Bounds of uploaded and downloaded source archives.
    pub archive_limits: ArchiveLimits,
    /// Builds of different apps that may run at once.
    pub parallel_builds: usize,
}

impl DaemonOptions {
    pub fn new(config: Config, slipway_exe: PathBuf) -> DaemonOptions {
        DaemonOptions {
            config,
            slipway_exe,
            build_timeout: Duration::from_secs(20 * 60),
            archive_limits: ArchiveLimits::default(),
            parallel_builds: 2,
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API's TLS certificate: {0}; fix api_tls_cert and api_tls_key in the config file")]
    Tls(String),
    #[error("another slipway daemon answers on {0}; stop it first (`systemctl stop slipway`), or give this one its own --socket")]
    AlreadyRunning(PathBuf),
    #[error("the API cannot listen on {addr}: {source}; pick a free address with --listen (SLIPWAY_API_LISTEN)")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the supervisor could not start: {0}")]
    Runner(String),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io {
        action,
        path,
        source,
    }
}

/// The daemon's state, shared by its tasks.
pub struct Daemon {
    pub opts: DaemonOptions,
    pub store: Arc<Store>,
    pub events: Arc<PlatformEvents>,
    pub runner: Arc<dyn Runner>,
    pub deployer: Deployer,
    token: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Keeps changes of the SSH keys (and of the authorized_keys file) one at a time.
    pub(crate) keys_lock: tokio::sync::Mutex<()>,
}

impl Daemon {
    pub fn config(&self) -> &Config {
        &self.opts.config
    }

    /// The API token (for the TCP listener).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The lock that keeps an app's rollouts, config changes, scaling and destruction one at
    /// a time.
    pub fn app_lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn forget_lock(&self, app: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app);
    }

    /// `http://NAME.<base domain>[:PORT]`, the app's address through the router.
    pub fn url(&self, app: &str) -> String {
        app_url(self.config(), app)
    }

    /// `DATA_DIR/deployments`.
    pub fn deployments_dir(&self) -> PathBuf {
        self.config().data_dir.join(DEPLOYMENTS_DIR)
    }

    /// A line in the app's platform log: `slipway[PROCESS]: message`.
    pub fn log(&self, app: &str, process: &str, message: &str) {
        self.events.logs.log(app, process, message);
    }

    /// What the supervisor needs of `release`: its slug unpacked (once), its config as
    /// environment. Blocking.
    pub fn runner_release(&self, release: &model::Release) -> Result<runner::Release, ApiError> {
        let slug_dir = SlugStore::new(&self.config().data_dir)
            .unpack(&release.slug)
            .map_err(|e| {
                ApiError::internal(format!(
                    "the slug of {} {} is not usable: {e}",
                    release.app,
                    release.label()
                ))
            })?;
        Ok(runner::Release {
            app: release.app.clone(),
            version: release.version,
            slug_dir,
            process_types: release.process_types.clone(),
            env: release
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            // The stack the slug was built for names its run stack.
            stack: crate::build::builder::run_stack_of(&release.stack).to_string(),
        })
    }

    /// The formation `release` runs with: the app's saved counts and sizes, else web 1 and
    /// the other types 0, size M.
    pub fn formation_for(&self, release: &model::Release) -> Result<Formation, StoreError> {
        let saved = self.store.formation(&release.app)?;
        Ok(Formation(
            effective_formation(release, &saved)
                .into_iter()
                .map(|e| {
                    let size = Size::parse(&e.size).unwrap_or_default();
                    (
                        e.kind,
                        Scale {
                            count: e.count,
                            size,
                        },
                    )
                })
                .collect(),
        ))
    }
}

/// The app's address through the router.
pub fn app_url(config: &Config, app: &str) -> String {
    let port = config
        .router_listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .filter(|p| *p != 80)
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!("http://{app}.{}{port}", config.base_domain)
}

/// The API token in `path`: read, or made (32 random bytes, hex) when missing, root-only.
pub fn ensure_token(path: &Path) -> Result<String, DaemonError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().to_string()),
        Ok(_) => {
            return Err(DaemonError::Io {
                action: "reading the API token in",
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "it holds fewer than 32 characters; delete the file and restart the daemon to make a new token",
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("reading the API token in", path)(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(io_err("reading", Path::new("/dev/urandom")))?;
    let token = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("creating the API token", path))?;
    writeln!(file, "{token}")
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing the API token", path))?;
    Ok(token)
}

/// Tells systemd (`Type=notify`) how the daemon stands; nothing without `NOTIFY_SOCKET`.
pub fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr)),
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        eprintln!("slipway daemon: telling systemd {state:?} on {path}: {e}");
    }
}

/// Binds a socket of the daemon: bound under a temporary name, given `mode` (and `group`),
/// renamed into place, so that nobody else can connect in between. A stale socket (no daemon
/// answers) is replaced; a live one is an error.
fn bind_socket(
    path: &Path,
    mode: u32,
    group: Option<nix::unistd::Gid>,
) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("creating the socket directory", dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err("removing the stale socket", path))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    // Unique per bind: one process may bind several sockets at once (tests run daemons in
    // threads).
    static BINDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BINDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener =
        std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err("binding the socket", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| {
            nix::unistd::chown(&tmp, None, group).map_err(std::io::Error::from)?;
            std::fs::rename(&tmp, path)
        })
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err("placing the socket", path)(e)
        })?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("configuring the socket", path))?;
    Ok(listener)
}

/// Binds the git socket: for the git user's group (0660) when that user exists, else for
/// root alone (0600; pushes over SSH cannot reach the daemon then).
fn bind_git_socket(config: &Config) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    let group = match nix::unistd::User::from_name(&config.git_user) {
        Ok(Some(user)) => Some(user.gid),
        _ => {
            eprintln!(
                "slipway daemon: no user {:?}: pushes over SSH are off (scripts/install makes the user; the config key git_user names another)",
                config.git_user
            );
            None
        }
    };
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    bind_socket(&config.git_socket, mode, group)
}

/// What a killed daemon left: active deployments become `aborted`, pending releases
/// `failed`, work directories of finished deployments go; queued deployments whose upload
/// is gone are aborted too. Returns the apps with queued deployments to resume.
fn recover(
    store: &Store,
    events: &PlatformEvents,
    deployments_dir: &Path,
) -> Result<Vec<String>, DaemonError> {
    let reason = format!(
        "the daemon stopped during this deployment (it was restarted at {}); the previous release kept serving; deploy again",
        crate::applog::Timestamp::now()
    );
    for d in store.abort_unfinished(&reason)? {
        events.logs.log(
            &d.app,
            PLATFORM_LOG,
            &format!("deployment {} aborted: {reason}", d.id),
        );
        let log = deployments_dir.join(format!("{}.log", d.id));
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&log) {
            let _ = writeln!(f, " !     Deployment aborted: {reason}");
        }
    }
    std::fs::create_dir_all(deployments_dir).map_err(io_err("creating", deployments_dir))?;
    let queued = store.deployments_in(&[DeploymentStatus::Queued])?;
    for entry in std::fs::read_dir(deployments_dir)
        .map_err(io_err("listing", deployments_dir))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let keep = name
            .parse::<i64>()
            .is_ok_and(|id| queued.iter().any(|q| q.id == id));
        if entry.path().is_dir() && !keep || name.starts_with(".upload-") {
            let _ = crate::build::archive::remove_tree(&entry.path());
        }
    }
    let mut apps = Vec::new();
    for q in queued {
        let archive = deployments_dir.join(q.id.to_string()).join("archive");
        if q.source_kind == SourceKind::Archive && !archive.is_file() {
            store.set_deployment_status(
                q.id,
                DeploymentStatus::Aborted,
                Some("its uploaded source was lost when the daemon stopped; deploy again"),
            )?;
            continue;
        }
        if !apps.contains(&q.app) {
            apps.push(q.app);
        }
    }
    Ok(apps)
}

/// Brings every app whose containers run another release than its current one (a rollout
/// the killed daemon left half-done) back to its current release.
async fn reconcile(d: Arc<Daemon>) {
    let apps = match d.store.apps() {
        Ok(apps) => apps,
        Err(e) => {
            eprintln!("slipway daemon: reconcile: {e}");
            return;
        }
    };
    for app in apps {
        let Ok(Some(current)) = d.store.current_release(&app.name) else {
            continue;
        };
        let lock = d.app_lock(&app.name);
        let _guard = lock.lock().await;
        let runner = d.runner.clone();
        let name = app.name.clone();
        let containers = tokio::task::spawn_blocking(move || runner.ps(&name))
            .await
            .unwrap_or_default();
        let stray = containers
            .iter()
            .any(|c| c.kind != "run" && c.release != current.version);
        if !stray {
            continue;
        }
        d.log(
            &app.name,
            PLATFORM_LOG,
            &format!(
                "containers of another release than {} found after a restart; rolling {} out again",
                current.label(),
                current.label()
            ),
        );
        let d2 = d.clone();
        let result = super::deploy::roll_out(&d2, &current, Arc::new(|_: &str| {})).await;
        if let Err(e) = result {
            d.log(
                &app.name,
                PLATFORM_LOG,
                &format!("{} could not be rolled out again: {e}", current.label()),
            );
        }
    }
}

/// Runs the daemon until `shutdown` resolves. `make_runner` starts the supervisor with the
/// daemon's events.
pub async fn run(
    opts: DaemonOptions,
    make_runner: impl FnOnce(&Config, Arc<dyn Events>) -> Result<Arc<dyn Runner>, String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let config = opts.config.clone();
    std::fs::create_dir_all(&config.data_dir).map_err(io_err("creating", &config.data_dir))?;
    let store = Arc::new(Store::open(&config.data_dir)?);
    let events = Arc::new(PlatformEvents::new(&config, store.clone()));
    let deployments_dir = config.data_dir.join(DEPLOYMENTS_DIR);
    let resume = recover(&store, &events, &deployments_dir)?;
    let token = ensure_token(&config.token_file)?;
    super::git_http::install_hooks(&config.data_dir, &opts.slipway_exe)
        .map_err(io_err("writing the git hooks in", &config.data_dir))?;
    // Checkouts of pushes a killed daemon left behind (their pushes failed with it).
    let _ =
        crate::build::archive::remove_tree(&crate::platform::git::checkouts_dir(&config.data_dir));
    let unix = bind_socket(&config.socket, 0o600, None)?;
    let git = bind_git_socket(&config).inspect_err(|_| {
        let _ = std::fs::remove_file(&config.socket);
    })?;
    let tcp = match config.api_listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| DaemonError::Listen { addr, source })?,
        ),
        None => None,
    };
    let tls = match &config.api_tls {
        Some(files) => Some(
            super::tls::single_cert_config(&files.cert, &files.key).map_err(DaemonError::Tls)?,
        ),
        None => None,
    };
    let runner = match make_runner(&config, events.clone()) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&config.socket);
            let _ = std::fs::remove_file(&config.git_socket);
            return Err(DaemonError::Runner(e));
        }
    };
    let daemon = Arc::new(Daemon {
        deployer: Deployer::new(opts.parallel_builds),
        opts,
        store,
        events,
        runner,
        token,
        locks: Mutex::new(HashMap::new()),
        keys_lock: tokio::sync::Mutex::new(()),
    });
    // sshd may still hold keys removed, or miss keys added, while the daemon was away.
    if let Err(e) = super::keys::write_authorized_keys(&daemon) {
        eprintln!("slipway daemon: pushes over SSH will not work: {e}");
    }
    // The table on disk may predate apps destroyed or domains changed while the daemon was
    // away; backends stay as they were.
    if let Err(e) = daemon.events.write_routes() {
        eprintln!("slipway daemon: {e}");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    let unix =
        tokio::net::UnixListener::from_std(unix).map_err(io_err("listening on", &config.socket))?;
    servers.push(tokio::spawn(super::server::serve_unix(
        daemon.clone(),
        unix,
        stop_rx.clone(),
    )));
    let git = tokio::net::UnixListener::from_std(git)
        .map_err(io_err("listening on", &config.git_socket))?;
    servers.push(tokio::spawn(super::git_ssh::serve(
        daemon.clone(),
        git,
        stop_rx.clone(),
    )));
    if let Some(tcp) = tcp {
        let addr = tcp.local_addr().ok();
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|source| DaemonError::Listen {
            addr: addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            source,
        })?;
        servers.push(tokio::spawn(super::server::serve_tcp(
            daemon.clone(),
            tcp,
            tls.clone(),
            stop_rx.clone(),
        )));
    }
    for app in resume {
        daemon.deployer.enqueue(&daemon, &app);
    }
    tokio::spawn(reconcile(daemon.clone()));
    eprintln!(
        "slipway daemon: listening on {}{}",
        config.socket.display(),
        config
            .api_listen
            .map(|a| format!(
                " and {}://{a} (token in {})",
                if config.api_tls.is_some() {
                    "https"
                } else {
                    "http"
                },
                config.token_file.display()
            ))
            .unwrap_or_default()
    );
    sd_notify("READY=1");

    shutdown.await;
    sd_notify("STOPPING=1");
    eprintln!("slipway daemon: stopping");
    let _ = stop_tx.send(true);
    daemon.deployer.stop_all(&daemon).await;
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    let _ = std::fs::remove_file(&config.socket);
    let _ = std::fs::remove_file(&config.git_socket);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_router_port_unless_80() {
        let mut c = Config::in_data_dir(Path::new("/d"));
        c.router_listen = "0.0.0.0:80".into();
        assert_eq!(app_url(&c, "shop"), "http://shop.localhost");
        c.router_listen = "127.0.0.1:8080".into();
        c.base_domain = "apps.example.com".into();
        assert_eq!(app_url(&c, "shop"), "http://shop.apps.example.com:8080");
    }

    #[test]
    fn the_token_is_made_once_root_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/api-token");
        let t = ensure_token(&p).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(ensure_token(&p).unwrap(), t);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&p, "short").unwrap();
        assert!(ensure_token(&p).is_err());
    }

    #[test]
    fn a_live_socket_is_not_taken_over() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/api.sock");
        let l = bind_socket(&p, 0o600, None).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            bind_socket(&p, 0o600, None),
            Err(DaemonError::AlreadyRunning(_))
        ));
        drop(l);
        // Stale now: replaced.
        bind_socket(&p, 0o600, None).unwrap();
    }
}
