//! seccomp: OCI profile -> BPF program (compiled before fork), installed by the container init.
//!
//! The profile is turned into classic BPF with libseccomp in the runtime process, where
//! allocating and failing with a good message are cheap. The container init, which runs after
//! fork and must not allocate, only hands the finished program to the kernel (`install`).
//!
//! Differences from the letter of the OCI spec, both on the side of safety:
//! - a syscall name that libseccomp does not know on any architecture is an error, not a
//!   warning: a typo would otherwise silently drop a rule and weaken the profile;
//! - `SCMP_ACT_NOTIFY` (and `listenerPath`) are refused: slipway has no seccomp agent.
use std::fs;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use libseccomp::{ScmpSyscall, ScmpVersion};
use nix::sys::memfd::MFdFlags;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use sha2::{Digest, Sha256};

#[path = "seccomp_profile.rs"]
pub mod profile;
pub use profile::{default_architectures, default_profile_for};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Invalid(String),
    #[error(
        "seccomp: loading the filter failed: {0} (EACCES: set no_new_privs or keep CAP_SYS_ADMIN \
         until the filter is installed; EINVAL: a filter flag or instruction this kernel does \
         not support)"
    )]
    Load(std::io::Error),
    #[error("seccomp: the compiled program is empty; compile a profile before installing it")]
    EmptyProgram,
    #[error(
        "seccomp: SECCOMP_FILTER_FLAG_TSYNC could not apply the filter to thread {0} of this \
         process (it has a diverging filter); install the filter before starting threads"
    )]
    ThreadSync(i64),
    #[error("seccomp: libseccomp failed while {what}: {source}; this is a bug in slipway or libseccomp, please report it with the profile")]
    Libseccomp {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: exporting the compiled filter failed: {0}; check that memfd_create works on this host")]
    Export(std::io::Error),
    #[error("seccomp: program cache {path}: {source}; check that the directory is writable, or remove the file")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A compiled classic-BPF filter, ready for seccomp(SECCOMP_SET_MODE_FILTER).
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub filter: Vec<libc::sock_filter>,
    /// SECCOMP_FILTER_FLAG_* bits passed to seccomp(2).
    pub flags: u32,
}

impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.flags == other.flags && self.to_bytes() == other.to_bytes()
    }
}

impl Program {
    /// The program as raw bytes: the flags (little endian u32), then each instruction as the
    /// kernel lays it out (native endian, 8 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(4 + self.filter.len() * INSTRUCTION_SIZE);
        bytes.extend_from_slice(&self.flags.to_le_bytes());
        for insn in &self.filter {
            bytes.extend_from_slice(&insn.code.to_ne_bytes());
            bytes.push(insn.jt);
            bytes.push(insn.jf);
            bytes.extend_from_slice(&insn.k.to_ne_bytes());
        }
        bytes
    }

    /// The inverse of `to_bytes`; `None` when the bytes cannot be a program.
    pub fn from_bytes(bytes: &[u8]) -> Option<Program> {
        let (flags, body) = bytes.split_first_chunk::<4>()?;
        let filter = instructions_from_bytes(body)?;
        (filter.len() <= MAX_INSTRUCTIONS).then_some(Program {
            filter,
            flags: u32::from_le_bytes(*flags),
        })
    }
}

const INSTRUCTION_SIZE: usize = std::mem::size_of::<libc::sock_filter>();
/// The kernel refuses longer programs (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;
/// Syscalls take at most six arguments.
const MAX_ARG_INDEX: usize = 5;
/// The kernel clamps larger values to MAX_ERRNO; a profile asking for more is a mistake.
const MAX_ERRNO: u32 = 4095;

fn instructions_from_bytes(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(INSTRUCTION_SIZE) {
        return None;
    }
    let filter = bytes
        .chunks_exact(INSTRUCTION_SIZE)
        .map(|chunk| libc::sock_filter {
            code: u16::from_ne_bytes([chunk[0], chunk[1]]),
            jt: chunk[2],
            jf: chunk[3],
            k: u32::from_ne_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
        })
        .collect();
    Some(filter)
}

/// Check names, actions, architectures and operators without compiling.
pub fn validate(profile: &LinuxSeccomp) -> Result<(), SeccompError> {
    if profile.listener_path().is_some() || profile.listener_metadata().is_some() {
        return Err(SeccompError::Invalid(
            "linux.seccomp.listenerPath/listenerMetadata are not supported: slipway has no \
             seccomp notification agent; remove them and use SCMP_ACT_ERRNO or SCMP_ACT_TRACE"
                .into(),
        ));
    }
    action_for(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    for arch in profile.architectures().iter().flatten() {
        scmp_arch(*arch)?;
    }
    for flag in profile.flags().iter().flatten() {
        filter_flag(*flag)?;
    }
    for (index, rule) in profile.syscalls().iter().flatten().enumerate() {
        let place = format!("linux.seccomp.syscalls[{index}]");
        action_for(rule.action(), rule.errno_ret(), &place)?;
        for name in rule.names() {
            if !syscall_is_known(name) {
                return Err(unknown_syscall(name, &place));
            }
        }
        for (arg_index, arg) in rule.args().iter().flatten().enumerate() {
            if arg.index() > MAX_ARG_INDEX {
                return Err(SeccompError::Invalid(format!(
                    "{place}.args[{arg_index}].index is {}; syscalls have arguments 0 to \
                     {MAX_ARG_INDEX} only",
                    arg.index()
                )));
            }
        }
    }
    Ok(())
}

/// Compile a profile for this machine's architecture (and the extra ones it lists).
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let ctx = filter_context(profile)?;
    let filter = export_bpf(&ctx)?;
    if filter.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::Invalid(format!(
            "the compiled filter has {} instructions, more than the kernel's limit of \
             {MAX_INSTRUCTIONS}; shorten the profile (merge rules, fewer architectures)",
            filter.len()
        )));
    }
    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= filter_flag(*flag)?;
    }
    Ok(Program { filter, flags })
}

/// The filter in libseccomp's readable pseudo-C form, for inspecting what a profile compiles to.
pub fn pseudo_code(profile: &LinuxSeccomp) -> Result<String, SeccompError> {
    let ctx = filter_context(profile)?;
    let mut file = memfd()?;
    ctx.export_pfc(&file)
        .map_err(|source| libseccomp_failed("exporting the filter as pseudo code", source))?;
    let bytes = read_back(&mut file)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The libseccomp filter for a validated profile.
fn filter_context(profile: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    validate(profile)?;
    let default_action = action_for(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let mut ctx = ScmpFilterContext::new(default_action)
        .map_err(|source| libseccomp_failed("creating the filter context", source))?;

    // A syscall made through an ABI the profile does not list would be checked against the
    // wrong numbers; refuse it as if the ABI did not exist.
    ctx.set_act_badarch(ScmpAction::Errno(libc::ENOSYS))
        .map_err(|source| libseccomp_failed("setting the bad-architecture action", source))?;
    // A binary search over syscall numbers instead of a linear chain: shorter paths through a
    // long allowlist. Older libseccomp ignores the hint, which only costs speed.
    let _ = ctx.set_ctl_optimize(2);

    let native = ScmpArch::native();
    let architectures: Vec<ScmpArch> = match profile.architectures() {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|arch| scmp_arch(*arch))
            .collect::<Result<_, _>>()?,
        _ => vec![native],
    };
    // The context starts with the native architecture and keeps it even when the profile does
    // not list it (as runc does): the container's programs use the native ABI, and leaving it
    // out would send every one of their syscalls to the bad-architecture action.
    for arch in &architectures {
        let arch = if *arch == ScmpArch::Native {
            native
        } else {
            *arch
        };
        if !ctx
            .is_arch_present(arch)
            .map_err(|source| libseccomp_failed("checking the architecture list", source))?
        {
            ctx.add_arch(arch).map_err(|source| {
                libseccomp_failed(&format!("adding architecture {arch:?}"), source)
            })?;
        }
    }
    for (index, rule) in profile.syscalls().iter().flatten().enumerate() {
        let place = format!("linux.seccomp.syscalls[{index}]");
        let action = action_for(rule.action(), rule.errno_ret(), &place)?;
        // libseccomp refuses rules that repeat the default action, and they change nothing.
        if action == default_action {
            continue;
        }
        let condition_sets = condition_sets(rule.args().as_deref().unwrap_or_default());
        for name in rule.names() {
            let syscall =
                ScmpSyscall::from_name(name).map_err(|_| unknown_syscall(name, &place))?;
            for conditions in &condition_sets {
                ctx.add_rule_conditional(action, syscall, conditions)
                    .map_err(|source| {
                        SeccompError::Invalid(format!(
                        "{place}: libseccomp refused the rule for \"{name}\" ({source}); a rule \
                         for the same syscall and arguments with a different action probably \
                         exists, keep only one"
                    ))
                    })?;
            }
        }
    }
    Ok(ctx)
}

/// `compile`, with the result kept in `cache_dir` under the SHA-256 of the profile's JSON, so
/// that containers started with the same profile skip libseccomp. The profile is validated
/// every time (cheap, and the host's libseccomp may have changed); an unreadable or corrupt
/// cache file is ignored and rewritten.
pub fn compile_cached(profile: &LinuxSeccomp, cache_dir: &Path) -> Result<Program, SeccompError> {
    validate(profile)?;
    let path = cache_dir.join(format!("{}.bpf", cache_key(profile)?));
    if let Ok(bytes) = fs::read(&path) {
        if let Some(program) = Program::from_bytes(&bytes) {
            return Ok(program);
        }
    }
    let program = compile(profile)?;
    store_atomically(&path, &program.to_bytes())
        .map_err(|source| SeccompError::Cache { path, source })?;
    Ok(program)
}

/// The cache key: SHA-256 of the profile's JSON, plus the libseccomp version and the machine
/// architecture, which both change the output.
fn cache_key(profile: &LinuxSeccomp) -> Result<String, SeccompError> {
    let json = serde_json::to_vec(profile).map_err(|error| {
        SeccompError::Invalid(format!("the profile cannot be serialised to JSON: {error}"))
    })?;
    let version = ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(&json);
    hasher.update(b"\0libseccomp ");
    hasher.update(version.as_bytes());
    hasher.update(b"\0arch ");
    hasher.update(std::env::consts::ARCH.as_bytes());
    Ok(hex::encode(hasher.finalize()))
}

/// Readers see the old file or the whole new one, never half of it (containers may start
/// concurrently).
fn store_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    crate::sys::atomic::write(path, bytes)
}

/// Install a compiled program in the calling thread. Allocation-free: safe after fork.
///
/// The kernel accepts a filter only from a thread with no_new_privs set or with CAP_SYS_ADMIN
/// in its effective set: set no_new_privs first, or install before dropping capabilities.
pub fn install(program: &Program) -> Result<(), SeccompError> {
    if program.filter.is_empty() {
        return Err(SeccompError::EmptyProgram);
    }
    let Ok(len) = u16::try_from(program.filter.len()) else {
        return Err(SeccompError::Load(io::Error::from_raw_os_error(
            libc::E2BIG,
        )));
    };
    let fprog = libc::sock_fprog {
        len,
        filter: program.filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `program.filter`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            program.flags as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    if rc > 0 {
        // With TSYNC, a positive result is the id of a thread that could not be synchronised.
        return Err(SeccompError::ThreadSync(rc as i64));
    }
    let errno = io::Error::last_os_error();
    // Kernels before 3.17 lack seccomp(2); prctl installs the same filter, but cannot take
    // flags, so only a flag-less program may fall back.
    if errno.raw_os_error() == Some(libc::ENOSYS) && program.flags == 0 {
        // SAFETY: as above.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        return Err(SeccompError::Load(io::Error::last_os_error()));
    }
    Err(SeccompError::Load(errno))
}

/// slipway's default profile: an allowlist as broad as Docker's default, no broader.
pub fn default_profile() -> LinuxSeccomp {
    profile::default_profile()
}

/// Whether libseccomp on this host knows a syscall of that name on any architecture.
pub fn syscall_is_known(name: &str) -> bool {
    // Resolving for the native architecture also answers for names that exist only elsewhere:
    // libseccomp returns a negative pseudo number for those and an error for unknown names.
    !name.is_empty() && ScmpSyscall::from_name(name).is_ok()
}

fn unknown_syscall(name: &str, place: &str) -> SeccompError {
    let version = ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "?".into());
    SeccompError::Invalid(format!(
        "unknown syscall \"{name}\" in {place}; check the spelling or remove it (a syscall newer \
         than this host's libseccomp {version} cannot be filtered either)"
    ))
}

fn libseccomp_failed(what: &str, source: libseccomp::error::SeccompError) -> SeccompError {
    SeccompError::Libseccomp {
        what: what.to_string(),
        source,
    }
}

/// The libseccomp action for an OCI action; `errno_ret` is the errno for ERRNO and the message
/// for TRACE (EPERM when absent, as runc does), and is ignored by the other actions.
fn action_for(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    place: &str,
) -> Result<ScmpAction, SeccompError> {
    let value = errno_ret.unwrap_or(libc::EPERM as u32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            if value > MAX_ERRNO {
                return Err(SeccompError::Invalid(format!(
                    "{place}: errnoRet {value} is not an errno; use a value from 0 to {MAX_ERRNO}"
                )));
            }
            ScmpAction::Errno(value as i32)
        }
        LinuxSeccompAction::ScmpActTrace => match u16::try_from(value) {
            Ok(message) => ScmpAction::Trace(message),
            Err(_) => {
                return Err(SeccompError::Invalid(format!(
                    "{place}: errnoRet {value} does not fit SCMP_ACT_TRACE's 16-bit message; \
                     use a value from 0 to 65535"
                )))
            }
        },
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Invalid(format!(
                "{place}: SCMP_ACT_NOTIFY is not supported (slipway has no seccomp notification \
                 agent); use SCMP_ACT_ERRNO, SCMP_ACT_TRACE or SCMP_ACT_LOG instead"
            )))
        }
    })
}

/// The libseccomp architecture for an OCI one, if the host's libseccomp supports it.
fn scmp_arch(arch: Arch) -> Result<ScmpArch, SeccompError> {
    let scmp = match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    };
    // Every architecture has `read`; if libseccomp cannot resolve it there, it does not know
    // the architecture (e.g. one added after the host's libseccomp was released).
    if scmp != ScmpArch::Native && ScmpSyscall::from_name_by_arch("read", scmp).is_err() {
        return Err(SeccompError::Invalid(format!(
            "architecture {arch} in linux.seccomp.architectures is not supported by this host's \
             libseccomp; remove it or upgrade libseccomp"
        )));
    }
    Ok(scmp)
}

/// The SECCOMP_FILTER_FLAG_* bit for an OCI flag.
fn filter_flag(flag: LinuxSeccompFilterFlag) -> Result<u32, SeccompError> {
    Ok(match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC as u32,
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG as u32,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
            libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32
        }
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
            return Err(SeccompError::Invalid(
                "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to \
                 SCMP_ACT_NOTIFY, which is not supported; remove the flag"
                    .into(),
            ))
        }
    })
}

/// The libseccomp comparison for an OCI argument condition. For SCMP_CMP_MASKED_EQ, OCI's
/// `value` is the mask and `valueTwo` the value the masked argument must equal.
fn comparison(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let index = arg.index() as u32;
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    ScmpArgCompare::new(index, op, datum)
}

/// The condition sets of one OCI rule, each becoming one libseccomp rule. Conditions on
/// distinct arguments must all hold (one rule, AND). When an argument index repeats, each
/// condition becomes a rule of its own (OR): runc does so, and profiles are written for runc.
fn condition_sets(args: &[LinuxSeccompArg]) -> Vec<Vec<ScmpArgCompare>> {
    let conditions: Vec<ScmpArgCompare> = args.iter().map(comparison).collect();
    let index_repeats = args.iter().enumerate().any(|(i, arg)| {
        args[..i]
            .iter()
            .any(|earlier| earlier.index() == arg.index())
    });
    if index_repeats {
        conditions.into_iter().map(|c| vec![c]).collect()
    } else {
        vec![conditions]
    }
}

/// The filter as classic BPF: libseccomp 2.5 exports only to a file descriptor, so through a
/// memfd that is read back.
fn export_bpf(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut file = memfd()?;
    ctx.export_bpf(&file)
        .map_err(|source| libseccomp_failed("exporting the filter as BPF", source))?;
    let bytes = read_back(&mut file)?;
    instructions_from_bytes(&bytes).ok_or_else(|| {
        SeccompError::Export(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "libseccomp exported {} bytes, not a whole number of instructions (or none)",
                bytes.len()
            ),
        ))
    })
}

fn memfd() -> Result<fs::File, SeccompError> {
    let fd = nix::sys::memfd::memfd_create(c"slipway-seccomp", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SeccompError::Export(e.into()))?;
    Ok(fs::File::from(fd))
}

fn read_back(file: &mut fs::File) -> Result<Vec<u8>, SeccompError> {
    file.rewind().map_err(SeccompError::Export)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(SeccompError::Export)?;
    Ok(bytes)
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
