//! A bridge network: containers' namespaces joined to one Linux bridge on the host through
//! the standard CNI plugins (`loopback`, then `bridge` with `host-local` IPAM), NAT egress
//! through the bridge plugin's `ipMasq`, and the host guard rules of `host_guard.rs`.
//!
//! Host changes made by [`Network::attach`]:
//! * `net.ipv4.ip_forward=1` (host-wide): needed for the NATed egress of build containers
//!   (pip, npm); the bridge plugin's gateway mode turns it on too. With forwarding on, the
//!   host routes between all its interfaces as its FORWARD chain allows; slipway's own rules
//!   only cover its bridges.
//! * the bridge (created here first, with IPv6 disabled, so that no IPv6 link-local address
//!   ever gives containers a path to host services listening on `::`);
//! * per-bridge iptables chains and rules (`host_guard.rs`) and the bridge plugin's per-
//!   container `CNI-…` masquerade chains in the `nat` table.
//!
//! One interface per container per network: the bridge plugin names its masquerade chain after
//! (network, container id), so two interfaces of one container on one network would share it.
//!
//! Not used: `portmap` (the router on the host connects to container addresses directly,
//! nothing is published on host ports) and `firewall` (its shared `CNI-FORWARD` chain is not
//! per network, so it could not be torn down cleanly; `host_guard.rs` writes the equivalent
//! per-bridge FORWARD accepts).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::addr::{parse_interface_addr, Ipv4Net};
use super::cni::{
    plugin_config, CniError, CniResult, PluginRunner, RuntimeArgs, DEFAULT_PLUGIN_DIRS,
    DEFAULT_PLUGIN_TIMEOUT,
};
use super::host_guard::{remove_masquerade_rules, GuardError, GuardRules, HostService};
use super::netns::is_netns;

/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Serialises host-wide setup (bridge creation, iptables jumps) between threads of this
/// process; iptables itself serialises between processes (`-w`).
static HOST_SETUP: Mutex<()> = Mutex::new(());

/// Errors from bridge networks.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network configuration: {what} {value:?} {reason}")]
    InvalidConfig {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid container id {id:?}: use letters, digits, '_', '-' and '.' (CNI rule), at most 128 characters")]
    InvalidContainerId { id: String },
    #[error("invalid interface name {name:?}: use 1 to 15 characters without '/', ':' or whitespace, and not '.', '..' or (for the network interface) 'lo'")]
    InvalidIfname { name: String },
    #[error("container {container_id} is already attached to network {network} as {ifname}; detach it first")]
    AlreadyAttached {
        container_id: String,
        network: String,
        ifname: String,
    },
    #[error("{path} is not a mounted network namespace; create the container's namespace before attaching it")]
    NotANetns { path: PathBuf },
    #[error("{action} container {container_id} on network {network} failed: {source}")]
    Plugin {
        action: &'static str,
        container_id: String,
        network: String,
        #[source]
        source: Box<CniError>,
    },
    #[error("setting up the host firewall for network {network} failed: {source}")]
    Guard {
        network: String,
        #[source]
        source: GuardError,
    },
    #[error("{what} ({path}) failed: {source}; slipway's networking needs root and iproute2")]
    Host {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot {action} the cached CNI result {path}: {source}; check the data dir")]
    Cache {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the CNI result for container {container_id} on network {network} has no IPv4 address on the container side: {result}")]
    NoAddress {
        container_id: String,
        network: String,
        result: String,
    },
}

/// What a caller chooses about a network; see [`NetworkConfig::new`] for the defaults.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Bridge interface name on the host (at most 15 characters).
    pub bridge: String,
    /// The containers' subnet; the gateway lives on the bridge.
    pub subnet: Ipv4Net,
    /// Gateway address on the bridge; default: the subnet's first host address.
    pub gateway: Option<Ipv4Addr>,
    /// NATed access beyond the host (`ipMasq`); builds need it for package registries.
    pub egress: bool,
    /// MTU of the bridge and veths; None lets the kernel pick (1500).
    pub mtu: Option<u32>,
    /// Where host-local IPAM leases and cached ADD results are kept (per network, so tests
    /// running in parallel never share state).
    pub data_dir: PathBuf,
    /// Ports on the gateway address that containers may connect to; everything else on the
    /// host is refused.
    pub host_services: Vec<HostService>,
    /// CNI network name (iptables comments carry it); default `slipway-<bridge>`.
    pub name: Option<String>,
    pub plugin_dirs: Vec<PathBuf>,
    pub plugin_timeout: Duration,
}

impl NetworkConfig {
    /// A network with egress, no host services, the default gateway, MTU and plugin dirs.
    pub fn new(bridge: impl Into<String>, subnet: Ipv4Net, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            bridge: bridge.into(),
            subnet,
            gateway: None,
            egress: true,
            mtu: None,
            data_dir: data_dir.into(),
            host_services: Vec::new(),
            name: None,
            plugin_dirs: DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }
}

/// A container's place on a network, as the plugins reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: Option<String>,
    /// The host end of the veth pair.
    pub host_veth: Option<String>,
    /// The bridge plugin's full result (kept for DEL and CHECK).
    pub result: CniResult,
}

/// A validated bridge network.
#[derive(Debug, Clone)]
pub struct Network {
    name: String,
    bridge: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    egress: bool,
    mtu: Option<u32>,
    data_dir: PathBuf,
    host_services: Vec<HostService>,
    runner: PluginRunner,
}

fn invalid(what: &'static str, value: impl ToString, reason: impl Into<String>) -> NetworkError {
    NetworkError::InvalidConfig {
        what,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn valid_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Network {
    pub fn new(config: NetworkConfig) -> Result<Self, NetworkError> {
        let bridge = config.bridge;
        if bridge.len() > MAX_IFNAME_LEN || !valid_token(&bridge) || bridge.starts_with('.') {
            return Err(invalid(
                "bridge name",
                &bridge,
                "must be 1 to 15 letters, digits, '_', '-' or '.'",
            ));
        }
        let subnet = config.subnet;
        if subnet.prefix_len() > 30 {
            return Err(invalid(
                "subnet",
                subnet,
                "is too small: use a prefix of /30 or shorter",
            ));
        }
        let gateway = match config.gateway {
            Some(gateway) => gateway,
            None => subnet
                .nth(1)
                .expect("a /30 or larger subnet has a first host"),
        };
        if !subnet.contains(gateway) || gateway == subnet.network() || gateway == subnet.broadcast()
        {
            return Err(invalid(
                "gateway",
                gateway,
                format!("must be a host address inside {subnet}"),
            ));
        }
        if let Some(mtu) = config.mtu {
            if !(576..=65535).contains(&mtu) {
                return Err(invalid("MTU", mtu, "must be between 576 and 65535"));
            }
        }
        let name = config.name.unwrap_or_else(|| format!("slipway-{bridge}"));
        if !valid_token(&name) || name.len() > 64 {
            return Err(invalid(
                "network name",
                &name,
                "must be 1 to 64 letters, digits, '_', '-' or '.'",
            ));
        }
        if !config.data_dir.is_absolute() {
            return Err(invalid(
                "data dir",
                config.data_dir.display(),
                "must be an absolute path",
            ));
        }
        Ok(Self {
            name,
            bridge,
            subnet,
            gateway,
            egress: config.egress,
            mtu: config.mtu,
            data_dir: config.data_dir,
            host_services: config.host_services,
            runner: PluginRunner::new(config.plugin_dirs, config.plugin_timeout),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    fn ipam_dir(&self) -> PathBuf {
        self.data_dir.join("ipam")
    }

    /// Cached ADD results of this network, one file per (container, interface).
    fn results_dir(&self) -> PathBuf {
        self.data_dir.join("results").join(&self.name)
    }

    fn result_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        // Unambiguous: container ids cannot contain '@'.
        self.results_dir()
            .join(format!("{container_id}@{ifname}.json"))
    }

    /// The configuration list (spec 1.0.0) for the container interface.
    pub fn conflist(&self) -> Value {
        let mut bridge = json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": self.egress,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{
                    "subnet": self.subnet.to_string(),
                    "gateway": self.gateway.to_string(),
                }]],
                "routes": [{ "dst": "0.0.0.0/0", "gw": self.gateway.to_string() }],
                "dataDir": self.ipam_dir(),
            },
        });
        if let Some(mtu) = self.mtu {
            bridge["mtu"] = json!(mtu);
        }
        json!({
            "cniVersion": super::cni::CNI_VERSION,
            "name": self.name,
            "plugins": [bridge],
        })
    }

    /// The loopback plugin's configuration (run with interface name `lo`).
    pub fn loopback_config(&self) -> Value {
        json!({ "cniVersion": super::cni::CNI_VERSION, "name": self.name, "type": "loopback" })
    }

    fn guard_rules(&self) -> GuardRules<'_> {
        GuardRules {
            bridge: &self.bridge,
            subnet: self.subnet,
            gateway: self.gateway,
            egress: self.egress,
            host_services: &self.host_services,
            comment: format!("slipway network {}", self.name),
        }
    }

    fn plugins(&self) -> Vec<Value> {
        self.conflist()["plugins"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn plugin_error(&self, action: &'static str, id: &str, source: CniError) -> NetworkError {
        NetworkError::Plugin {
            action,
            container_id: id.to_string(),
            network: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// Checks that every plugin this network runs is installed and speaks CNI 1.0.0.
    pub fn check_plugins(&self) -> Result<(), NetworkError> {
        for plugin in ["loopback", "bridge", "host-local"] {
            let info = self
                .runner
                .version(plugin)
                .map_err(|e| self.plugin_error("checking plugins for", "-", e))?;
            if !info
                .supported_versions
                .iter()
                .any(|v| v == super::cni::CNI_VERSION)
            {
                return Err(invalid(
                    "CNI plugin",
                    plugin,
                    format!(
                        "supports only {:?}, not {}; install containernetworking-plugins 1.0 or newer",
                        info.supported_versions,
                        super::cni::CNI_VERSION
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Host-wide preparation shared by every container of this network; idempotent.
    fn prepare_host(&self) -> Result<(), NetworkError> {
        let _serial = HOST_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        write_sysctl(Path::new("/proc/sys/net/ipv4/ip_forward"), "1", true)?;
        self.ensure_bridge()?;
        self.guard_rules()
            .install()
            .map_err(|source| NetworkError::Guard {
                network: self.name.clone(),
                source,
            })
    }

    /// Creates the bridge before the plugin sees it, so that IPv6 is off before the bridge
    /// is ever up (an IPv6 link-local address on it would let containers reach host services
    /// bound to `::` without passing the IPv4 rules).
    fn ensure_bridge(&self) -> Result<(), NetworkError> {
        let sys = Path::new("/sys/class/net").join(&self.bridge);
        if !sys.exists() {
            let mut ip = Command::new("ip");
            ip.args(["link", "add", "name", &self.bridge]);
            if let Some(mtu) = self.mtu {
                ip.args(["mtu", &mtu.to_string()]);
            }
            ip.args(["type", "bridge"]);
            let output = ip.output().map_err(|source| NetworkError::Host {
                what: format!("running ip link add for bridge {}", self.bridge),
                path: PathBuf::from("ip"),
                source,
            })?;
            // Another process may have created it meanwhile: only its absence is an error.
            if !output.status.success() && !sys.exists() {
                return Err(NetworkError::Host {
                    what: format!("creating bridge {}", self.bridge),
                    path: sys,
                    source: io::Error::other(
                        String::from_utf8_lossy(&output.stderr).trim().to_string(),
                    ),
                });
            }
        }
        let disable_ipv6 = Path::new("/proc/sys/net/ipv6/conf")
            .join(&self.bridge)
            .join("disable_ipv6");
        // Absent when the host has IPv6 off altogether, which is just as good.
        write_sysctl(&disable_ipv6, "1", false)
    }

    /// Joins the namespace at `netns` to the network as interface `ifname` (usually `eth0`):
    /// runs `loopback` (brings `lo` up) and then the bridge chain, caches the result for
    /// [`Network::detach`] and [`Network::check`], and returns the container's address.
    /// On failure, whatever was done is undone.
    pub fn attach(
        &self,
        netns: &Path,
        container_id: &str,
        ifname: &str,
    ) -> Result<Attachment, NetworkError> {
        validate_container_id(container_id)?;
        validate_ifname(ifname)?;
        if ifname == "lo" {
            return Err(NetworkError::InvalidIfname {
                name: ifname.to_string(),
            });
        }
        if !is_netns(netns) {
            return Err(NetworkError::NotANetns {
                path: netns.to_path_buf(),
            });
        }
        // A second ADD would fail, and its rollback would then tear down the working first
        // attachment: refuse before touching anything.
        if self.result_path(container_id, ifname).exists() {
            return Err(NetworkError::AlreadyAttached {
                container_id: container_id.to_string(),
                network: self.name.clone(),
                ifname: ifname.to_string(),
            });
        }
        self.prepare_host()?;
        let outcome = self.add_chain(netns, container_id, ifname);
        if outcome.is_err() {
            let _ = self.detach(netns, container_id, ifname);
        }
        outcome
    }

    fn add_chain(
        &self,
        netns: &Path,
        container_id: &str,
        ifname: &str,
    ) -> Result<Attachment, NetworkError> {
        let add_err = |e| self.plugin_error("attaching", container_id, e);
        let lo_args = runtime_args(container_id, Some(netns), "lo");
        self.runner
            .add(&self.loopback_config(), &lo_args)
            .map_err(add_err)?;

        let args = runtime_args(container_id, Some(netns), ifname);
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let config = plugin_config(&self.name, &plugin, prev.as_ref()).map_err(add_err)?;
            let (raw, _) = self.runner.add(&config, &args).map_err(add_err)?;
            prev = Some(raw);
        }
        let raw = prev.unwrap_or_else(|| json!({ "cniVersion": super::cni::CNI_VERSION }));
        let result = CniResult::from_json(&raw).map_err(|e| {
            add_err(CniError::BadOutput {
                plugin: "bridge".into(),
                command: super::cni::CniCommand::Add,
                what: "result",
                source: e,
                output: raw.to_string(),
            })
        })?;
        self.store_result(container_id, ifname, &raw)?;
        self.attachment_from(netns, container_id, ifname, result)
    }

    fn attachment_from(
        &self,
        netns: &Path,
        container_id: &str,
        ifname: &str,
        result: CniResult,
    ) -> Result<Attachment, NetworkError> {
        let no_address = || NetworkError::NoAddress {
            container_id: container_id.to_string(),
            network: self.name.clone(),
            result: serde_json::to_string(&result).unwrap_or_default(),
        };
        let in_container = |ip: &&super::cni::IpConfig| match ip.interface {
            Some(index) => result
                .interfaces
                .get(index)
                .is_some_and(|i| i.sandbox.is_some()),
            None => true,
        };
        let (ip, prefix_len, gateway) = result
            .ips
            .iter()
            .filter(in_container)
            .find_map(|ip| {
                let (addr, prefix) = parse_interface_addr(&ip.address).ok()?;
                let gateway = match ip.gateway {
                    Some(IpAddr::V4(gw)) => gw,
                    _ => self.gateway,
                };
                Some((addr, prefix, gateway))
            })
            .ok_or_else(no_address)?;
        let mac = result
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_some() && i.name == ifname)
            .and_then(|i| i.mac.clone());
        let host_veth = result
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_none() && i.name != self.bridge)
            .map(|i| i.name.clone());
        Ok(Attachment {
            network: self.name.clone(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: netns.to_path_buf(),
            ip,
            prefix_len,
            gateway,
            mac,
            host_veth,
            result,
        })
    }

    fn store_result(
        &self,
        container_id: &str,
        ifname: &str,
        raw: &Value,
    ) -> Result<(), NetworkError> {
        let path = self.result_path(container_id, ifname);
        let cache_err = |source| NetworkError::Cache {
            action: "write",
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(self.results_dir()).map_err(cache_err)?;
        crate::sys::atomic::write(&path, raw.to_string().as_bytes()).map_err(cache_err)
    }

    fn load_result(&self, container_id: &str, ifname: &str) -> Result<Option<Value>, NetworkError> {
        let path = self.result_path(container_id, ifname);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NetworkError::Cache {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// The attachment recorded by an earlier [`Network::attach`] (e.g. after a daemon
    /// restart), if any.
    pub fn attachment(
        &self,
        netns: &Path,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Attachment>, NetworkError> {
        validate_container_id(container_id)?;
        validate_ifname(ifname)?;
        let Some(raw) = self.load_result(container_id, ifname)? else {
            return Ok(None);
        };
        let Ok(result) = CniResult::from_json(&raw) else {
            return Ok(None);
        };
        self.attachment_from(netns, container_id, ifname, result)
            .map(Some)
    }

    /// Asks the plugins whether the container's networking is still as ADD left it.
    pub fn check(
        &self,
        netns: &Path,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), NetworkError> {
        validate_container_id(container_id)?;
        validate_ifname(ifname)?;
        if !is_netns(netns) {
            return Err(NetworkError::NotANetns {
                path: netns.to_path_buf(),
            });
        }
        let prev = self.load_result(container_id, ifname)?;
        let args = runtime_args(container_id, Some(netns), ifname);
        for plugin in self.plugins() {
            let config = plugin_config(&self.name, &plugin, prev.as_ref())
                .map_err(|e| self.plugin_error("checking", container_id, e))?;
            self.runner
                .check(&config, &args)
                .map_err(|e| self.plugin_error("checking", container_id, e))?;
        }
        Ok(())
    }

    /// Removes the container from the network: DEL in reverse order (bridge chain, then
    /// loopback), then the NAT rules of this container (which the bridge plugin leaves behind
    /// when the namespace is already gone), then the cached result.
    ///
    /// Idempotent: detaching a container that is already detached, or whose namespace was
    /// already deleted, succeeds. Every step runs even if an earlier one failed; the first
    /// error is returned.
    pub fn detach(
        &self,
        netns: &Path,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), NetworkError> {
        validate_container_id(container_id)?;
        validate_ifname(ifname)?;
        let del_err = |e| self.plugin_error("detaching", container_id, e);
        // A deleted namespace is passed as an empty CNI_NETNS, which the spec allows for DEL:
        // plugins then release what they hold on the host (IPAM leases) and skip the rest.
        let live_netns = is_netns(netns).then_some(netns);
        let prev = self.load_result(container_id, ifname).unwrap_or(None);
        let args = runtime_args(container_id, live_netns, ifname);
        let mut first_error: Option<NetworkError> = None;
        for plugin in self.plugins().iter().rev() {
            let outcome = plugin_config(&self.name, plugin, prev.as_ref())
                .and_then(|config| self.runner.del(&config, &args));
            if let Err(e) = outcome {
                first_error.get_or_insert(del_err(e));
            }
        }
        if live_netns.is_some() {
            let lo_args = runtime_args(container_id, live_netns, "lo");
            if let Err(e) = self.runner.del(&self.loopback_config(), &lo_args) {
                first_error.get_or_insert(del_err(e));
            }
        }
        if self.egress {
            if let Err(source) = remove_masquerade_rules(&self.name, Some(container_id)) {
                first_error.get_or_insert(NetworkError::Guard {
                    network: self.name.clone(),
                    source,
                });
            }
        }
        let path = self.result_path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                first_error.get_or_insert(NetworkError::Cache {
                    action: "remove",
                    path,
                    source,
                });
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Deletes the bridge, every iptables rule and chain this network created (guard rules,
    /// masquerade chains of containers never detached), its IPAM leases and cached results.
    /// For tests and uninstall: containers still attached lose their connectivity.
    pub fn teardown_network(&self) -> Result<(), NetworkError> {
        let _serial = HOST_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        let mut first_error: Option<NetworkError> = None;
        self.guard_rules().remove();
        if let Err(source) = remove_masquerade_rules(&self.name, None) {
            first_error.get_or_insert(NetworkError::Guard {
                network: self.name.clone(),
                source,
            });
        }
        let sys = Path::new("/sys/class/net").join(&self.bridge);
        if sys.exists() {
            let outcome = Command::new("ip")
                .args(["link", "delete", &self.bridge, "type", "bridge"])
                .output();
            let failure = match outcome {
                Ok(output) if output.status.success() || !sys.exists() => None,
                Ok(output) => Some(io::Error::other(
                    String::from_utf8_lossy(&output.stderr).trim().to_string(),
                )),
                Err(e) => Some(e),
            };
            if let Some(source) = failure {
                first_error.get_or_insert(NetworkError::Host {
                    what: format!("deleting bridge {}", self.bridge),
                    path: sys,
                    source,
                });
            }
        }
        let state = [
            (self.ipam_dir().join(&self.name), "removing IPAM leases"),
            (self.results_dir(), "removing cached CNI results"),
        ];
        for (dir, what) in state {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    first_error.get_or_insert(NetworkError::Host {
                        what: what.into(),
                        path: dir,
                        source,
                    });
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn runtime_args(container_id: &str, netns: Option<&Path>, ifname: &str) -> RuntimeArgs {
    RuntimeArgs {
        container_id: container_id.to_string(),
        netns: netns.map(Path::to_path_buf),
        ifname: ifname.to_string(),
        args: BTreeMap::new(),
    }
}

fn validate_container_id(id: &str) -> Result<(), NetworkError> {
    if valid_token(id) && id.len() <= 128 {
        Ok(())
    } else {
        Err(NetworkError::InvalidContainerId { id: id.to_string() })
    }
}

fn validate_ifname(name: &str) -> Result<(), NetworkError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(NetworkError::InvalidIfname {
            name: name.to_string(),
        })
    }
}

/// Writes a sysctl file unless it already holds `value`; `required` says whether a missing
/// file is an error.
fn write_sysctl(path: &Path, value: &str, required: bool) -> Result<(), NetworkError> {
    match std::fs::read_to_string(path) {
        Ok(current) if current.trim() == value => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(()),
        _ => {}
    }
    std::fs::write(path, value).map_err(|source| NetworkError::Host {
        what: format!("setting sysctl to {value}"),
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NetworkConfig {
        NetworkConfig::new(
            "swt1",
            "10.213.7.0/24".parse().unwrap(),
            "/tmp/slipway-test",
        )
    }

    #[test]
    fn conflist_has_gateway_masquerade_and_private_ipam_dir() {
        let mut config = config();
        config.mtu = Some(1400);
        let network = Network::new(config).unwrap();
        let list = network.conflist();
        assert_eq!(list["name"], "slipway-swt1");
        let bridge = &list["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], true);
        assert_eq!(bridge["mtu"], 1400);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["gateway"], "10.213.7.1");
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/slipway-test/ipam");
        assert_eq!(network.gateway(), Ipv4Addr::new(10, 213, 7, 1));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut c = config();
        c.bridge = "a-very-long-bridge-name".into();
        assert!(Network::new(c).is_err());
        let mut c = config();
        c.bridge = "br/0".into();
        assert!(Network::new(c).is_err());
        let mut c = config();
        c.gateway = Some(Ipv4Addr::new(10, 0, 0, 1));
        assert!(Network::new(c).is_err());
        let mut c = config();
        c.gateway = Some(Ipv4Addr::new(10, 213, 7, 255));
        assert!(Network::new(c).is_err());
        let mut c = config();
        c.subnet = "10.213.7.0/31".parse().unwrap();
        assert!(Network::new(c).is_err());
        let mut c = config();
        c.data_dir = "relative".into();
        assert!(Network::new(c).is_err());
        let mut c = config();
        c.mtu = Some(10);
        assert!(Network::new(c).is_err());
    }

    #[test]
    fn container_ids_and_ifnames_are_validated() {
        assert!(validate_container_id("web-1.abc_2").is_ok());
        assert!(validate_container_id("").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_container_id(&"x".repeat(129)).is_err());
        assert!(validate_ifname("eth0").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attachment_is_read_from_the_container_side() {
        let network = Network::new(config()).unwrap();
        let result = CniResult::from_json(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "swt1", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1234", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/x"}
            ],
            "ips": [{"address": "10.213.7.5/24", "gateway": "10.213.7.1", "interface": 2}]
        }))
        .unwrap();
        let attachment = network
            .attachment_from(Path::new("/run/x"), "c1", "eth0", result)
            .unwrap();
        assert_eq!(attachment.ip, Ipv4Addr::new(10, 213, 7, 5));
        assert_eq!(attachment.prefix_len, 24);
        assert_eq!(attachment.gateway, Ipv4Addr::new(10, 213, 7, 1));
        assert_eq!(attachment.mac.as_deref(), Some("cc:cc:cc:cc:cc:cc"));
        assert_eq!(attachment.host_veth.as_deref(), Some("veth1234"));

        let empty = CniResult::from_json(&json!({"cniVersion": "1.0.0"})).unwrap();
        assert!(matches!(
            network.attachment_from(Path::new("/run/x"), "c1", "eth0", empty),
            Err(NetworkError::NoAddress { .. })
        ));
    }
}
