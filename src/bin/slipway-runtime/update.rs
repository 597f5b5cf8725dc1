//! `update`: new resource limits for a running container, from flags or a JSON file.
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use slipway::runtime::container;
use slipway::runtime::resources_update::ResourceUpdate;
use slipway::runtime::state::StateRoot;
use slipway::runtime::RuntimeError;

use crate::R;

#[derive(clap::Args)]
pub struct UpdateArgs {
    /// A JSON file with OCI linux.resources ("-" for stdin).
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub memory: Option<i64>,
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<i64>,
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<i64>,
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    pub id: String,
}

pub fn update(root: &StateRoot, a: &UpdateArgs) -> R<u8> {
    container::update(root, &a.id, &resources(a)?).map(|_| 0)
}

fn resources(a: &UpdateArgs) -> R<LinuxResources> {
    if let Some(path) = &a.resources {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).unwrap_or_default()
        } else {
            std::fs::read_to_string(path).map_err(|e| {
                RuntimeError::Invalid(format!("--resources {}: {e}", path.display()))
            })?
        };
        return serde_json::from_str(&text).map_err(|e| {
            RuntimeError::Invalid(format!(
                "--resources {}: not OCI linux.resources: {e}",
                path.display()
            ))
        });
    }
    ResourceUpdate {
        memory: a.memory,
        memory_swap: a.memory_swap,
        memory_reservation: a.memory_reservation,
        cpu_shares: a.cpu_shares,
        cpu_quota: a.cpu_quota,
        cpu_period: a.cpu_period,
        cpuset_cpus: a.cpuset_cpus.clone(),
        cpuset_mems: a.cpuset_mems.clone(),
        pids_limit: a.pids_limit,
        blkio_weight: a.blkio_weight,
    }
    .to_resources()
}
