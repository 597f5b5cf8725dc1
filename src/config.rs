//! Where slipway keeps things and how its networks are laid out, resolved once.
//!
//! Every value comes from, in order: a command-line flag, an environment variable (clap reads
//! both into `Overrides`), `/etc/slipway/config.toml` (or the file `SLIPWAY_CONFIG` names),
//! then the default here. The result is a plain `Config` value that library code takes as an
//! argument: no library module reads the environment or guesses a path of its own, so several
//! slipways (one per test) run side by side with nothing shared.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_CONFIG_FILE: &str = "/etc/slipway/config.toml";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/slipway";
pub const DEFAULT_RUN_DIR: &str = "/run/slipway";
pub const DEFAULT_BUILD_BRIDGE: &str = "slipway0";
pub const DEFAULT_BUILD_SUBNET: &str = "10.209.0.0/24";
pub const DEFAULT_APP_BRIDGE: &str = "slipway1";
pub const DEFAULT_APP_SUBNET: &str = "10.210.0.0/24";
pub const DEFAULT_BASE_DOMAIN: &str = "localhost";
pub const DEFAULT_ROUTER_LISTEN: &str = "0.0.0.0:80";
pub const DEFAULT_GIT_USER: &str = "git";
/// Heroku's and Scalingo's: a web container has a minute to accept TCP on `$PORT`.
pub const DEFAULT_BOOT_TIMEOUT_SECS: u64 = 60;
/// SIGTERM to SIGKILL, as on Heroku and Scalingo.
pub const DEFAULT_STOP_GRACE_SECS: u64 = 30;
pub const DEFAULT_MAX_ONE_OFFS: usize = 10;
/// Upper bound of the two durations above: an hour is already more than any app needs.
const MAX_SUPERVISOR_SECS: u64 = 3600;
/// Upper bound of one-offs per app: each holds a container.
const MAX_ONE_OFFS_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message} (see the README's configuration section for the keys)")]
    Parse { path: PathBuf, message: String },
    #[error("{what} {value:?}: {message}")]
    Value {
        what: &'static str,
        value: String,
        message: String,
    },
}

/// A bridge and the subnet its containers get addresses from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    pub bridge: String,
    pub subnet: String,
}

/// Everything resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Stacks, slugs, caches, the database, logs.
    pub data_dir: PathBuf,
    /// Runtime state: sockets, network namespace files, container state, routes.
    pub run_dir: PathBuf,
    /// Where stacks are built and kept (the data dir unless set apart).
    pub stacks_dir: PathBuf,
    /// The `slipway-runtime` binary.
    pub runtime: PathBuf,
    /// Built-in buildpacks.
    pub buildpacks_dir: PathBuf,
    pub build_network: NetworkSettings,
    pub app_network: NetworkSettings,
    /// The daemon's API socket (root only).
    pub socket: PathBuf,
    /// The daemon's TCP API, when set (token required).
    pub api_listen: Option<SocketAddr>,
    /// The TCP API over HTTPS: a PEM certificate chain and its key (both, or neither).
    pub api_tls: Option<TlsFiles>,
    /// The TCP API's bearer token (generated at the daemon's first start; root only).
    pub token_file: PathBuf,
    pub router_listen: String,
    /// Apps answer at NAME.<base domain>.
    pub base_domain: String,
    /// Whether app owners may name host paths as buildpacks (`.buildpacks`, BUILDPACK_URL).
    pub allow_local_buildpacks: bool,
    /// The `authorized_keys` file the daemon writes from `slipway keys` (sshd reads it for
    /// the git user).
    pub git_authorized_keys: PathBuf,
    /// The socket `slipway git-shell` hands an SSH push to the daemon on.
    pub git_socket: PathBuf,
    /// The account sshd runs `slipway git-shell` as: its group may use the git socket.
    pub git_user: String,
    /// How long a web container has to accept TCP on `$PORT` after it starts.
    pub boot_timeout: Duration,
    /// SIGTERM to SIGKILL when a container is stopped.
    pub stop_grace_period: Duration,
    /// Most one-off containers per app at once.
    pub max_one_offs: usize,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Values given on the command line or in the environment; `None` falls through.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub stacks_dir: Option<PathBuf>,
    pub runtime: Option<PathBuf>,
    pub buildpacks_dir: Option<PathBuf>,
    pub build_bridge: Option<String>,
    pub build_subnet: Option<String>,
    pub app_bridge: Option<String>,
    pub app_subnet: Option<String>,
    pub socket: Option<PathBuf>,
    pub api_listen: Option<String>,
    pub token_file: Option<PathBuf>,
    pub router_listen: Option<String>,
    pub base_domain: Option<String>,
    pub allow_local_buildpacks: Option<bool>,
    pub git_authorized_keys: Option<PathBuf>,
    pub git_socket: Option<PathBuf>,
    pub git_user: Option<String>,
    /// Seconds.
    pub boot_timeout: Option<u64>,
    /// Seconds.
    pub stop_grace_period: Option<u64>,
    pub max_one_offs: Option<usize>,
}

/// The config file's shape: every key optional, unknown keys refused (a typo must not be
/// silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    stacks_dir: Option<PathBuf>,
    runtime: Option<PathBuf>,
    buildpacks_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    api_listen: Option<String>,
    api_tls_cert: Option<PathBuf>,
    api_tls_key: Option<PathBuf>,
    token_file: Option<PathBuf>,
    router_listen: Option<String>,
    base_domain: Option<String>,
    allow_local_buildpacks: Option<bool>,
    git_authorized_keys: Option<PathBuf>,
    git_socket: Option<PathBuf>,
    git_user: Option<String>,
    boot_timeout: Option<u64>,
    stop_grace_period: Option<u64>,
    max_one_offs: Option<usize>,
    build_network: Option<FileNetwork>,
    app_network: Option<FileNetwork>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNetwork {
    bridge: Option<String>,
    subnet: Option<String>,
}

impl Config {
    /// Resolve: overrides, then the config file (when it exists), then the defaults.
    /// `exe_dir` is where the running binary lives, to find `slipway-runtime` and the
    /// buildpacks installed next to it.
    pub fn resolve(o: Overrides, exe_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let path = o
            .config_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?,
            // Only the default file may be missing; a file the user named must exist.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && o.config_file.is_none() => {
                FileConfig::default()
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::merge(o, file, exe_dir)
    }

    /// The defaults with everything under `data_dir`, and no config file read: for tests and
    /// tools that must not depend on the host's /etc.
    pub fn in_data_dir(data_dir: &Path) -> Config {
        let o = Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            ..Default::default()
        };
        Self::merge(o, FileConfig::default(), None).expect("the defaults are valid")
    }

    fn merge(o: Overrides, f: FileConfig, exe_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let data_dir = o
            .data_dir
            .or(f.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let run_dir = o
            .run_dir
            .or(f.run_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
        let beside = |name: &str| exe_dir.map(|d| d.join(name)).filter(|p| p.exists());
        let runtime = o
            .runtime
            .or(f.runtime)
            .or_else(|| beside("slipway-runtime"))
            .unwrap_or_else(|| PathBuf::from("slipway-runtime"));
        let buildpacks_dir = o
            .buildpacks_dir
            .or(f.buildpacks_dir)
            .or_else(|| installed_buildpacks(exe_dir))
            .unwrap_or_else(|| PathBuf::from("/usr/local/share/slipway/buildpacks"));
        let (fb, fa) = (
            f.build_network.unwrap_or_default(),
            f.app_network.unwrap_or_default(),
        );
        let network = |bridge: Option<String>, subnet: Option<String>, db: &str, ds: &str| {
            let n = NetworkSettings {
                bridge: bridge.unwrap_or_else(|| db.to_string()),
                subnet: subnet.unwrap_or_else(|| ds.to_string()),
            };
            check_network(&n).map(|_| n)
        };
        let build_network = network(
            o.build_bridge.or(fb.bridge),
            o.build_subnet.or(fb.subnet),
            DEFAULT_BUILD_BRIDGE,
            DEFAULT_BUILD_SUBNET,
        )?;
        let app_network = network(
            o.app_bridge.or(fa.bridge),
            o.app_subnet.or(fa.subnet),
            DEFAULT_APP_BRIDGE,
            DEFAULT_APP_SUBNET,
        )?;
        let api_listen = match o.api_listen.or(f.api_listen) {
            Some(s) if !s.is_empty() => Some(s.parse().map_err(|e| ConfigError::Value {
                what: "API listen address",
                value: s.clone(),
                message: format!("{e}: use IP:PORT, e.g. 127.0.0.1:7480"),
            })?),
            _ => None,
        };
        let api_tls = match (f.api_tls_cert, f.api_tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (cert, _) => {
                return Err(ConfigError::Value {
                    what: "API TLS files",
                    value: cert.map_or("api_tls_key".into(), |_| "api_tls_cert".into()),
                    message: "give both api_tls_cert and api_tls_key (PEM files), or neither"
                        .into(),
                })
            }
        };
        let git_user = o
            .git_user
            .or(f.git_user)
            .unwrap_or_else(|| DEFAULT_GIT_USER.into());
        check_user_name(&git_user)?;
        let boot_timeout = bounded(
            "boot_timeout (SLIPWAY_BOOT_TIMEOUT)",
            o.boot_timeout.or(f.boot_timeout),
            DEFAULT_BOOT_TIMEOUT_SECS,
            1..=MAX_SUPERVISOR_SECS,
        )?;
        let stop_grace_period = bounded(
            "stop_grace_period (SLIPWAY_STOP_GRACE_PERIOD)",
            o.stop_grace_period.or(f.stop_grace_period),
            DEFAULT_STOP_GRACE_SECS,
            0..=MAX_SUPERVISOR_SECS,
        )?;
        let max_one_offs = bounded(
            "max_one_offs (SLIPWAY_MAX_ONE_OFFS)",
            o.max_one_offs.or(f.max_one_offs),
            DEFAULT_MAX_ONE_OFFS,
            1..=MAX_ONE_OFFS_LIMIT,
        )?;
        Ok(Config {
            boot_timeout: Duration::from_secs(boot_timeout),
            stop_grace_period: Duration::from_secs(stop_grace_period),
            max_one_offs,
            stacks_dir: o
                .stacks_dir
                .or(f.stacks_dir)
                .unwrap_or_else(|| data_dir.clone()),
            socket: o
                .socket
                .or(f.socket)
                .unwrap_or_else(|| run_dir.join("slipway.sock")),
            token_file: o
                .token_file
                .or(f.token_file)
                .unwrap_or_else(|| data_dir.join("api-token")),
            router_listen: o
                .router_listen
                .or(f.router_listen)
                .unwrap_or_else(|| DEFAULT_ROUTER_LISTEN.into()),
            base_domain: o
                .base_domain
                .or(f.base_domain)
                .unwrap_or_else(|| DEFAULT_BASE_DOMAIN.into()),
            allow_local_buildpacks: o
                .allow_local_buildpacks
                .or(f.allow_local_buildpacks)
                .unwrap_or(false),
            git_authorized_keys: o
                .git_authorized_keys
                .or(f.git_authorized_keys)
                .unwrap_or_else(|| data_dir.join("git-home/.ssh/authorized_keys")),
            git_socket: o
                .git_socket
                .or(f.git_socket)
                .unwrap_or_else(|| run_dir.join("git.sock")),
            git_user,
            data_dir,
            run_dir,
            runtime,
            buildpacks_dir,
            build_network,
            app_network,
            api_listen,
            api_tls,
        })
    }
}

/// The built-in buildpacks: installed beside the binary's share dir, or the source tree's
/// `buildpacks/` when running from a checkout (target/{debug,release}[/deps]).
fn installed_buildpacks(exe_dir: Option<&Path>) -> Option<PathBuf> {
    let dir = exe_dir?;
    let candidates = [
        dir.join("../share/slipway/buildpacks"),
        dir.join("../../buildpacks"),
        dir.join("../../../buildpacks"),
    ];
    candidates.into_iter().find(|p| p.join("procfile").is_dir())
}

/// A user name as `useradd` makes them (it is looked up, never run).
fn check_user_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Value {
            what: "git user",
            value: name.to_string(),
            message: "use a user name of 1-32 characters from [A-Za-z0-9_.-]".into(),
        })
    }
}

/// `value` (else `default`), refused outside `range`.
fn bounded<T>(
    what: &'static str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        return Ok(v);
    }
    Err(ConfigError::Value {
        what,
        value: v.to_string(),
        message: format!("use a number from {} to {}", range.start(), range.end()),
    })
}

/// A bridge name the kernel accepts and a subnet that parses as IPv4 CIDR.
fn check_network(n: &NetworkSettings) -> Result<(), ConfigError> {
    let ok_name = !n.bridge.is_empty()
        && n.bridge.len() <= 15
        && n.bridge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok_name {
        return Err(ConfigError::Value {
            what: "bridge name",
            value: n.bridge.clone(),
            message: "use 1-15 characters from [A-Za-z0-9_-]".into(),
        });
    }
    let (addr, len) = n.subnet.split_once('/').unwrap_or((&n.subnet, ""));
    let ok = addr.parse::<std::net::Ipv4Addr>().is_ok()
        && len.parse::<u8>().is_ok_and(|l| (8..=28).contains(&l));
    if !ok {
        return Err(ConfigError::Value {
            what: "subnet",
            value: n.subnet.clone(),
            message: "use an IPv4 CIDR between /8 and /28, e.g. 10.210.0.0/24".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let (_d, p) = file(
            "data_dir = \"/srv/slipway\"\nrun_dir = \"/run/x\"\n[app_network]\nbridge = \"apps0\"\n",
        );
        let c = Config::resolve(
            Overrides {
                config_file: Some(p),
                run_dir: Some("/tmp/run".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/slipway"));
        assert_eq!(c.run_dir, PathBuf::from("/tmp/run"));
        assert_eq!(c.stacks_dir, PathBuf::from("/srv/slipway"));
        assert_eq!(c.socket, PathBuf::from("/tmp/run/slipway.sock"));
        assert_eq!(c.token_file, PathBuf::from("/srv/slipway/api-token"));
        assert_eq!(
            c.git_authorized_keys,
            PathBuf::from("/srv/slipway/git-home/.ssh/authorized_keys")
        );
        assert_eq!(c.git_socket, PathBuf::from("/tmp/run/git.sock"));
        assert_eq!(c.git_user, "git");
        assert_eq!(c.app_network.bridge, "apps0");
        assert_eq!(c.app_network.subnet, DEFAULT_APP_SUBNET);
        assert_eq!(c.build_network.bridge, DEFAULT_BUILD_BRIDGE);
        assert!(!c.allow_local_buildpacks);
        assert_eq!(
            c.boot_timeout,
            Duration::from_secs(DEFAULT_BOOT_TIMEOUT_SECS)
        );
        assert_eq!(c.stop_grace_period, Duration::from_secs(30));
        assert_eq!(c.max_one_offs, DEFAULT_MAX_ONE_OFFS);
    }

    #[test]
    fn supervisor_settings_come_from_the_file_unless_overridden() {
        let (_d, p) = file("boot_timeout = 5\nstop_grace_period = 0\nmax_one_offs = 3\n");
        let o = |boot_timeout| Overrides {
            config_file: Some(p.clone()),
            boot_timeout,
            ..Default::default()
        };
        let c = Config::resolve(o(None), None).unwrap();
        assert_eq!(c.boot_timeout, Duration::from_secs(5));
        assert_eq!(c.stop_grace_period, Duration::ZERO);
        assert_eq!(c.max_one_offs, 3);
        let c = Config::resolve(o(Some(7)), None).unwrap();
        assert_eq!(c.boot_timeout, Duration::from_secs(7));

        let bad = |o: Overrides| Config::merge(o, FileConfig::default(), None).unwrap_err();
        let e = bad(Overrides {
            boot_timeout: Some(0),
            ..Default::default()
        });
        assert!(
            e.to_string().contains("boot_timeout") && e.to_string().contains("1 to 3600"),
            "{e}"
        );
        let e = bad(Overrides {
            max_one_offs: Some(100_000),
            ..Default::default()
        });
        assert!(e.to_string().contains("max_one_offs"), "{e}");
        let (_d, p) = file("boot_timeout = -1\n");
        let e = Config::resolve(
            Overrides {
                config_file: Some(p),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("boot_timeout"), "{e}");
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_rule() {
        let (_d, p) = file("data_dri = \"/x\"\n");
        let e = Config::resolve(
            Overrides {
                config_file: Some(p),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("data_dri"), "{e}");
        let bad = |o: Overrides| Config::merge(o, FileConfig::default(), None).unwrap_err();
        let e = bad(Overrides {
            app_bridge: Some("a-bridge-name-too-long".into()),
            ..Default::default()
        });
        assert!(e.to_string().contains("1-15 characters"), "{e}");
        let e = bad(Overrides {
            build_subnet: Some("10.0.0.0".into()),
            ..Default::default()
        });
        assert!(e.to_string().contains("CIDR"), "{e}");
        let e = bad(Overrides {
            api_listen: Some("localhost".into()),
            ..Default::default()
        });
        assert!(e.to_string().contains("IP:PORT"), "{e}");
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let o = Overrides {
            config_file: Some("/nonexistent/slipway.toml".into()),
            ..Default::default()
        };
        assert!(Config::resolve(o, None).is_err());
    }
}
