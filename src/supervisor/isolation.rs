//! Containers on the app bridge cannot reach one another: every port of the bridge is an
//! isolated port (the kernel's `brport/isolated` flag), so frames between two containers are
//! never forwarded, while each container still reaches the bridge itself (its gateway: NAT to
//! the internet, the host's allowed services) and the host (the router) still reaches it.
//!
//! One app's containers cannot connect to another app's that way, nor to those of their own
//! app (as on Heroku's common runtime: containers talk through the router or add-ons). A
//! container has no capability, so it can neither change its routes nor send raw frames to get
//! around the bridge.
//!
//! Each monitor sets the flag on every port of the bridge after its container joined it and
//! before the container's process starts: its own port is isolated before anything in it runs,
//! and ports already isolated are left alone.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("isolate the containers of bridge {bridge} from one another ({path}): {source}; the kernel needs bridge port isolation (Linux 4.18 or later)")]
pub struct IsolationError {
    pub bridge: String,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Set `isolated` on every port of `bridge` (under `sys_class_net`, `/sys/class/net` on a
/// host).
pub fn isolate_ports(sys_class_net: &Path, bridge: &str) -> Result<(), IsolationError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        let bridge = bridge.to_string();
        move |source| IsolationError {
            bridge,
            path,
            source,
        }
    };
    let brif = sys_class_net.join(bridge).join("brif");
    for entry in std::fs::read_dir(&brif).map_err(err(&brif))? {
        let entry = entry.map_err(err(&brif))?;
        let flag = entry.path().join("isolated");
        match std::fs::read_to_string(&flag) {
            Ok(v) if v.trim() == "1" => continue,
            // A port that left the bridge meanwhile (its container ended).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            _ => {}
        }
        if let Err(e) = std::fs::write(&flag, "1") {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(err(&flag)(e));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_gets_the_flag() {
        let d = tempfile::tempdir().unwrap();
        for (port, v) in [("veth1", "0\n"), ("veth2", "1\n")] {
            let p = d.path().join("br0/brif").join(port);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("isolated"), v).unwrap();
        }
        isolate_ports(d.path(), "br0").unwrap();
        for port in ["veth1", "veth2"] {
            let v = std::fs::read_to_string(d.path().join("br0/brif").join(port).join("isolated"));
            assert_eq!(v.unwrap().trim(), "1");
        }
        let e = isolate_ports(d.path(), "nobridge").unwrap_err().to_string();
        assert!(e.contains("nobridge"), "{e}");
    }
}
