//! The CNI protocol (spec 1.0.0): running plugin binaries and reading what they answer.
//!
//! A plugin is an executable found in one of the plugin directories (Debian's
//! `containernetworking-plugins` installs them in `/usr/lib/cni`). It gets its parameters in
//! `CNI_*` environment variables, the network configuration as JSON on stdin, and answers
//! with a result (ADD), nothing (DEL, CHECK), a version report (VERSION), or an error object
//! and a non-zero exit status. Chained plugins of a configuration list each get the previous
//! plugin's result as `prevResult`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The CNI specification version slipway speaks.
pub const CNI_VERSION: &str = "1.0.0";

/// Where Debian (`/usr/lib/cni`) and upstream tarballs (`/opt/cni/bin`) install the plugins.
pub const DEFAULT_PLUGIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

/// How long one plugin call may take before it is killed.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Plugins shell out to `iptables`, `ip`, … so they need a sane PATH even when ours is odd.
const PLUGIN_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
        }
    }
}

impl std::fmt::Display for CniCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors from running a CNI plugin.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} not found in {searched:?}; install Debian's containernetworking-plugins package or point the plugin directories at the binaries")]
    PluginNotFound {
        plugin: String,
        searched: Vec<PathBuf>,
    },
    #[error("invalid CNI plugin name {plugin:?}: a plugin type is a bare file name")]
    InvalidPluginName { plugin: String },
    #[error("cannot run CNI plugin {path} for {command}: {source}")]
    Spawn {
        path: PathBuf,
        command: CniCommand,
        source: io::Error,
    },
    #[error("CNI plugin {plugin} {command} did not finish within {timeout:?} and was killed; check the host's network tools (iptables lock, hung netlink) and retry")]
    Timeout {
        plugin: String,
        command: CniCommand,
        timeout: Duration,
    },
    #[error("CNI plugin {plugin} {command} failed with code {code} ({}): {msg}{}", code_meaning(*.code), if .details.is_empty() { String::new() } else { format!(" ({})", .details) })]
    Plugin {
        plugin: String,
        command: CniCommand,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command} exited with {status} without a CNI error object; stderr: {stderr:?}; stdout: {stdout:?}")]
    Crashed {
        plugin: String,
        command: CniCommand,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("CNI plugin {plugin} {command} answered something that is not a valid CNI {what}: {source}; output: {output:?}")]
    BadOutput {
        plugin: String,
        command: CniCommand,
        what: &'static str,
        source: serde_json::Error,
        output: String,
    },
    #[error("the CNI network configuration for plugin {plugin} is not a JSON object; this is a bug in the caller")]
    BadConfig { plugin: String },
}

impl CniError {
    /// The CNI error code when the plugin reported one.
    pub fn code(&self) -> Option<u32> {
        match self {
            CniError::Plugin { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What a well-known CNI error code means (spec 1.0.0, "Error" section).
pub fn code_meaning(code: u32) -> &'static str {
    match code {
        1 => "incompatible CNI version",
        2 => "unsupported field in network configuration",
        3 => "container unknown or does not exist",
        4 => "invalid necessary environment variables",
        5 => "I/O failure",
        6 => "failed to decode content",
        7 => "invalid network config",
        11 => "try again later",
        100.. => "plugin-specific error",
        _ => "reserved error code",
    }
}

/// The error object a failing plugin prints on stdout.
#[derive(Debug, Clone, Deserialize)]
struct ErrorObject {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// An interface created or configured by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path for container-side interfaces; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address assigned by the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR notation, e.g. `10.213.7.2/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route installed in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings a plugin suggests (the runtime writes resolv.conf itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The result of an ADD (spec 1.0.0 result type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Parses a result, e.g. one cached after an ADD.
    pub fn from_json(value: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }
}

/// The answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

/// The per-call runtime parameters (`CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`).
#[derive(Debug, Clone, Default)]
pub struct RuntimeArgs {
    pub container_id: String,
    /// None (empty `CNI_NETNS`) is allowed for DEL when the namespace is already gone.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` key/value pairs.
    pub args: BTreeMap<String, String>,
}

/// Finds and runs CNI plugins.
#[derive(Debug, Clone)]
pub struct PluginRunner {
    plugin_dirs: Vec<PathBuf>,
    timeout: Duration,
}

impl Default for PluginRunner {
    fn default() -> Self {
        Self::new(
            DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
            DEFAULT_PLUGIN_TIMEOUT,
        )
    }
}

impl PluginRunner {
    pub fn new(plugin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        Self {
            plugin_dirs,
            timeout,
        }
    }

    pub fn plugin_dirs(&self) -> &[PathBuf] {
        &self.plugin_dirs
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The executable for plugin type `plugin`, searched in the plugin directories in order.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
            return Err(CniError::InvalidPluginName {
                plugin: plugin.to_string(),
            });
        }
        self.plugin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| is_executable(path))
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: plugin.to_string(),
                searched: self.plugin_dirs.clone(),
            })
    }

    /// Asks a plugin which spec versions it supports.
    pub fn version(&self, plugin: &str) -> Result<VersionInfo, CniError> {
        let config = serde_json::json!({ "cniVersion": CNI_VERSION });
        let output = self.exec(
            plugin,
            CniCommand::Version,
            &RuntimeArgs::default(),
            &config,
        )?;
        serde_json::from_slice(&output).map_err(|source| CniError::BadOutput {
            plugin: plugin.to_string(),
            command: CniCommand::Version,
            what: "version report",
            source,
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }

    /// Runs ADD with one plugin configuration; returns the raw result JSON (to chain it as the
    /// next plugin's `prevResult`, unchanged) next to its typed form.
    pub fn add(&self, config: &Value, args: &RuntimeArgs) -> Result<(Value, CniResult), CniError> {
        let plugin = plugin_type(config)?;
        let output = self.exec(&plugin, CniCommand::Add, args, config)?;
        let bad = |source| CniError::BadOutput {
            plugin: plugin.clone(),
            command: CniCommand::Add,
            what: "result",
            source,
            output: String::from_utf8_lossy(&output).into_owned(),
        };
        let raw: Value = serde_json::from_slice(&output).map_err(bad)?;
        let typed = CniResult::from_json(&raw).map_err(bad)?;
        Ok((raw, typed))
    }

    /// Runs DEL with one plugin configuration (which should carry the ADD's `prevResult`).
    pub fn del(&self, config: &Value, args: &RuntimeArgs) -> Result<(), CniError> {
        let plugin = plugin_type(config)?;
        self.exec(&plugin, CniCommand::Del, args, config)
            .map(|_| ())
    }

    /// Runs CHECK with one plugin configuration (which must carry the ADD's `prevResult`).
    pub fn check(&self, config: &Value, args: &RuntimeArgs) -> Result<(), CniError> {
        let plugin = plugin_type(config)?;
        self.exec(&plugin, CniCommand::Check, args, config)
            .map(|_| ())
    }

    /// Runs one plugin call and returns its stdout on success.
    pub fn exec(
        &self,
        plugin: &str,
        command: CniCommand,
        args: &RuntimeArgs,
        config: &Value,
    ) -> Result<Vec<u8>, CniError> {
        let path = self.find(plugin)?;
        let stdin_data = serde_json::to_vec(config).map_err(|_| CniError::BadConfig {
            plugin: plugin.to_string(),
        })?;
        let cni_path = std::env::join_paths(&self.plugin_dirs)
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let cni_args = args
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let spawn_err = |source| CniError::Spawn {
            path: path.clone(),
            command,
            source,
        };
        let mut child = Command::new(&path)
            .env_clear()
            .env("PATH", PLUGIN_PATH_ENV)
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", &args.container_id)
            .env("CNI_NETNS", args.netns.as_deref().unwrap_or(Path::new("")))
            .env("CNI_IFNAME", &args.ifname)
            .env("CNI_ARGS", cni_args)
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills the plugin and whatever it spawned
            // (iptables, the IPAM plugin) together.
            .process_group(0)
            .spawn()
            .map_err(spawn_err)?;
        let pgid = child.id() as i32;
        let mut stdin = child.stdin.take();
        // Write stdin on its own thread: a plugin that answers before reading all of it must
        // not deadlock us.
        let writer = std::thread::spawn(move || {
            if let Some(stdin) = stdin.as_mut() {
                let _ = stdin.write_all(&stdin_data);
            }
        });
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(child.wait_with_output());
        });
        let output = match done_rx.recv_timeout(self.timeout) {
            Ok(result) => result.map_err(spawn_err)?,
            Err(_) => {
                // Kill the whole group: the plugin and whatever it started.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                // Reap it so it does not linger as a zombie; a grandchild that escaped the group
                // and holds the pipes must not hang us either.
                let _ = done_rx.recv_timeout(Duration::from_secs(2));
                return Err(CniError::Timeout {
                    plugin: plugin.to_string(),
                    command,
                    timeout: self.timeout,
                });
            }
        };
        let _ = writer.join();
        if output.status.success() {
            return Ok(output.stdout);
        }
        match serde_json::from_slice::<ErrorObject>(&output.stdout) {
            Ok(error) => Err(CniError::Plugin {
                plugin: plugin.to_string(),
                command,
                code: error.code,
                msg: error.msg,
                details: error.details,
            }),
            Err(_) => Err(CniError::Crashed {
                plugin: plugin.to_string(),
                command,
                status: output.status.to_string(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }),
        }
    }
}

fn plugin_type(config: &Value) -> Result<String, CniError> {
    config
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CniError::BadConfig {
            plugin: "<missing \"type\">".to_string(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The stdin configuration for one plugin of a configuration list: the plugin's own object
/// plus the list's `cniVersion` and `name`, the previous result (if any) and runtime config.
pub fn plugin_config(
    list_name: &str,
    plugin: &Value,
    prev_result: Option<&Value>,
) -> Result<Value, CniError> {
    let mut config = plugin.clone();
    let object = config.as_object_mut().ok_or_else(|| CniError::BadConfig {
        plugin: plugin.to_string(),
    })?;
    object.insert("cniVersion".into(), Value::from(CNI_VERSION));
    object.insert("name".into(), Value::from(list_name));
    match prev_result {
        Some(prev) => {
            object.insert("prevResult".into(), prev.clone());
        }
        None => {
            object.remove("prevResult");
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_parses_spec_example() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "swt1", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "eth0", "mac": "11:22:33:44:55:66", "sandbox": "/run/slipway/netns/c1"}
            ],
            "ips": [{"address": "10.213.7.2/24", "gateway": "10.213.7.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.0.0.53"]},
            "unknownField": true
        });
        let result = CniResult::from_json(&raw).unwrap();
        assert_eq!(result.interfaces.len(), 2);
        assert_eq!(result.ips[0].interface, Some(1));
        assert_eq!(result.ips[0].gateway, Some("10.213.7.1".parse().unwrap()));
        assert_eq!(result.routes[0].gw, None);
        assert_eq!(result.dns.nameservers, vec!["10.0.0.53".to_string()]);
    }

    #[test]
    fn minimal_result_parses() {
        let result = CniResult::from_json(&json!({"cniVersion": "1.0.0"})).unwrap();
        assert!(result.ips.is_empty());
        assert!(CniResult::from_json(&json!({"ips": 3})).is_err());
    }

    #[test]
    fn plugin_config_adds_list_fields_and_prev_result() {
        let plugin = json!({"type": "bridge", "bridge": "swt1", "name": "ignored"});
        let prev = json!({"cniVersion": "1.0.0"});
        let config = plugin_config("net", &plugin, Some(&prev)).unwrap();
        assert_eq!(config["name"], "net");
        assert_eq!(config["cniVersion"], CNI_VERSION);
        assert_eq!(config["prevResult"], prev);
        assert!(plugin_config("net", &json!([1]), None).is_err());
    }

    #[test]
    fn error_messages_name_the_code() {
        let err = CniError::Plugin {
            plugin: "bridge".into(),
            command: CniCommand::Add,
            code: 7,
            msg: "bad subnet".into(),
            details: String::new(),
        };
        let text = err.to_string();
        assert!(text.contains("invalid network config"), "{text}");
        assert!(text.contains("bad subnet"), "{text}");
        assert_eq!(err.code(), Some(7));
    }

    #[test]
    fn plugin_names_cannot_escape_the_plugin_dirs() {
        let runner = PluginRunner::new(vec![PathBuf::from("/usr/lib/cni")], Duration::from_secs(1));
        assert!(matches!(
            runner.find("../../bin/sh"),
            Err(CniError::InvalidPluginName { .. })
        ));
        assert!(matches!(
            runner.find("no-such-plugin"),
            Err(CniError::PluginNotFound { .. })
        ));
    }

    /// A fake plugin script exercises the protocol without touching the network.
    fn fake_plugin(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn fake_plugins_report_results_errors_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        fake_plugin(
            dir.path(),
            "echoer",
            r#"cat >/dev/null; printf '{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24"}],"routes":[],"dns":{},"x":"%s"}' "$CNI_COMMAND $CNI_IFNAME $CNI_CONTAINERID""#,
        );
        fake_plugin(
            dir.path(),
            "failer",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"later"}'; exit 1"#,
        );
        fake_plugin(dir.path(), "crasher", "echo boom >&2; exit 2");
        fake_plugin(dir.path(), "sleeper", "exec sleep 30");
        let runner = PluginRunner::new(vec![dir.path().to_path_buf()], Duration::from_millis(300));
        let args = RuntimeArgs {
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            args: BTreeMap::new(),
        };

        let (raw, typed) = runner.add(&json!({"type": "echoer"}), &args).unwrap();
        assert_eq!(raw["x"], "ADD eth0 c1");
        assert_eq!(typed.ips[0].address, "10.1.2.3/24");

        let err = runner.del(&json!({"type": "failer"}), &args).unwrap_err();
        assert_eq!(err.code(), Some(11));

        let err = runner.del(&json!({"type": "crasher"}), &args).unwrap_err();
        assert!(matches!(err, CniError::Crashed { ref stderr, .. } if stderr.contains("boom")));

        let err = runner.del(&json!({"type": "sleeper"}), &args).unwrap_err();
        assert!(matches!(err, CniError::Timeout { .. }), "{err}");
    }
}
