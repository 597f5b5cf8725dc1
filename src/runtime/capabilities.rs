//! Capability sets: parsed from the spec before fork, applied by the init just before exec.
//!
//! Order matters: the bounding set is trimmed while the init still holds CAP_SETPCAP, the user
//! switch happens with PR_SET_KEEPCAPS so the permitted set survives it, then the exact sets are
//! written with capset and the ambient set raised (ambient needs the cap in P and I).
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;

use super::error::{Result, RuntimeError};

#[derive(Debug, Clone, Default)]
pub struct CapSets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

fn convert(
    set: &Option<oci_spec::runtime::Capabilities>,
    supported: &CapsHashSet,
) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in set.iter().flatten() {
        let name = format!("CAP_{c}");
        let cap: Capability = name.parse().map_err(|_| {
            RuntimeError::Invalid(format!(
                "unknown capability {name}: see capabilities(7) for the names"
            ))
        })?;
        // A capability newer than the running kernel cannot be granted; runc skips it too.
        if supported.contains(&cap) {
            out.insert(cap);
        }
    }
    Ok(out)
}

pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<CapSets> {
    let Some(c) = c else {
        return Ok(CapSets::default());
    };
    let supported = caps::runtime::thread_all_supported();
    Ok(CapSets {
        bounding: convert(c.bounding(), &supported)?,
        effective: convert(c.effective(), &supported)?,
        permitted: convert(c.permitted(), &supported)?,
        inheritable: convert(c.inheritable(), &supported)?,
        ambient: convert(c.ambient(), &supported)?,
    })
}

fn err(what: &str, e: caps::errors::CapsError) -> RuntimeError {
    RuntimeError::Init(format!("{what}: {e}"))
}

/// Drop every capability outside the bounding set. Needs CAP_SETPCAP, so runs before the
/// user switch.
pub fn apply_bounding(sets: &CapSets) -> Result<()> {
    for cap in caps::runtime::thread_all_supported() {
        if !sets.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| err("drop bounding capability", e))?;
        }
    }
    Ok(())
}

fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0u64, |m, c| m | c.bitmask())
}

/// Write the effective, permitted and inheritable sets in one capset(2) call (set one by one,
/// the kernel refuses intermediate states such as an effective set larger than the permitted
/// one), then raise the ambient ones.
pub fn apply_sets(sets: &CapSets) -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let (e, p, i) = (
        mask(&sets.effective),
        mask(&sets.permitted),
        mask(&sets.inheritable),
    );
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        Data {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: header and data follow the kernel's _LINUX_CAPABILITY_VERSION_3 layout.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if r != 0 {
        return Err(RuntimeError::Init(format!(
            "capset: {}",
            std::io::Error::last_os_error()
        )));
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| err("clear ambient capabilities", e))?;
    for cap in &sets.ambient {
        caps::raise(None, CapSet::Ambient, *cap).map_err(|e| err("raise ambient capability", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_spec_names() {
        let spec = crate::runtime::spec::default_spec(false);
        let sets = from_spec(spec.process().as_ref().unwrap().capabilities().as_ref()).unwrap();
        assert!(sets.bounding.contains(&Capability::CAP_CHOWN));
        assert!(sets.bounding.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(!sets.bounding.contains(&Capability::CAP_SYS_ADMIN));
        assert!(sets.ambient.is_empty());
    }
}
