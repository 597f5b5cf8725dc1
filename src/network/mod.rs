//! Container networking through CNI plugins; knows nothing of apps.
//!
//! * [`netns`]: named network namespaces under `<run_dir>/netns`, and running code inside one.
//! * [`cni`]: the CNI 1.0.0 protocol: running plugin binaries, results, errors, timeouts.
//! * [`bridge`]: a bridge network built from the standard plugins (`loopback`, `bridge`,
//!   `host-local`) with `attach` / `detach` / `check` / `teardown_network`.
//! * [`host_guard`]: the iptables rules that decide what containers can reach on the host
//!   (read its module docs for the full list).
//! * [`addr`]: IPv4 subnets.
//!
//! Host requirements (Debian packages): `containernetworking-plugins` (plugins in
//! `/usr/lib/cni`), `iptables`, `iproute2`. Attaching turns on `net.ipv4.ip_forward`.
//!
//! ```no_run
//! use slipway::network::{bridge::{Network, NetworkConfig}, netns::NetnsDir};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let netns_dir = NetnsDir::open("/run/slipway".as_ref())?;
//! let netns = netns_dir.create("build-42")?;
//! let network = Network::new(NetworkConfig::new(
//!     "slipway0",
//!     "10.213.0.0/24".parse()?,
//!     "/var/lib/slipway/network",
//! ))?;
//! let attachment = network.attach(netns.path(), "build-42", "eth0")?;
//! println!("container address {} via {}", attachment.ip, attachment.gateway);
//! network.detach(netns.path(), "build-42", "eth0")?;
//! netns.delete()?;
//! # Ok(()) }
//! ```
pub mod addr;
pub mod bridge;
pub mod cni;
pub mod host_guard;
pub mod netns;

pub use addr::Ipv4Net;
pub use bridge::{Attachment, Network, NetworkConfig, NetworkError};
pub use cni::{CniError, CniResult, PluginRunner};
pub use host_guard::HostService;
pub use netns::{Netns, NetnsDir, NetnsError};
