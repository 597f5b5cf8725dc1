//! `update`'s flags as OCI `linux.resources`, built with oci-spec's types so that a misspelt
//! field cannot be silently ignored.
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder,
};

use super::error::{Result, RuntimeError};

/// The limits `update` can change one by one; unset fields stay as they are.
#[derive(Debug, Default, Clone)]
pub struct ResourceUpdate {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
}

impl ResourceUpdate {
    pub fn to_resources(&self) -> Result<LinuxResources> {
        let bad = |e: oci_spec::OciSpecError| RuntimeError::Invalid(format!("update: {e}"));
        let mut res = LinuxResourcesBuilder::default();
        if self.memory.is_some() || self.memory_swap.is_some() || self.memory_reservation.is_some()
        {
            let mut m = LinuxMemoryBuilder::default();
            if let Some(x) = self.memory {
                m = m.limit(x);
            }
            if let Some(x) = self.memory_swap {
                m = m.swap(x);
            }
            if let Some(x) = self.memory_reservation {
                m = m.reservation(x);
            }
            res = res.memory(m.build().map_err(bad)?);
        }
        let cpu_set = self.cpu_shares.is_some()
            || self.cpu_quota.is_some()
            || self.cpu_period.is_some()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some();
        if cpu_set {
            let mut c = LinuxCpuBuilder::default();
            if let Some(x) = self.cpu_shares {
                c = c.shares(x);
            }
            if let Some(x) = self.cpu_quota {
                c = c.quota(x);
            }
            if let Some(x) = self.cpu_period {
                c = c.period(x);
            }
            if let Some(x) = &self.cpuset_cpus {
                c = c.cpus(x.clone());
            }
            if let Some(x) = &self.cpuset_mems {
                c = c.mems(x.clone());
            }
            res = res.cpu(c.build().map_err(bad)?);
        }
        if let Some(x) = self.pids_limit {
            res = res.pids(LinuxPidsBuilder::default().limit(x).build().map_err(bad)?);
        }
        if let Some(x) = self.blkio_weight {
            res = res.block_io(
                LinuxBlockIoBuilder::default()
                    .weight(x)
                    .build()
                    .map_err(bad)?,
            );
        }
        res.build().map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_given_limits_are_set() {
        let u = ResourceUpdate {
            memory: Some(64 << 20),
            pids_limit: Some(10),
            ..Default::default()
        };
        let r = u.to_resources().unwrap();
        assert_eq!(r.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.memory().unwrap().swap(), None);
        assert_eq!(r.pids().unwrap().limit(), 10);
        assert!(r.cpu().is_none() && r.block_io().is_none());
    }
}
