//! The runtime's own executable, out of the containers' reach (CVE-2019-5736).
//!
//! A process the runtime starts inside a container is, until its final exec, a copy of the
//! runtime itself; and an image whose `/bin/sh` is `#!/proc/self/exe` makes that exec run the
//! runtime's binary once more, now as a container process. Either way a process of the
//! container can open `/proc/PID/exe`, which names the host's binary, and write it once it
//! stops being busy: the next run of the runtime on the host would be the attacker's code.
//!
//! So before forking anything into a container the runtime re-executes itself from a copy
//! nothing can write:
//! - first choice, a read-only clone of the binary's mount (`open_tree(OPEN_TREE_CLONE)` +
//!   `mount_setattr(MOUNT_ATTR_RDONLY)`, then `execveat` of it): no copy of the bytes, no memory
//!   cost, and a write through `/proc/PID/exe` fails with EROFS. The clone is a detached
//!   mount that lives exactly as long as the processes executing it: nothing to clean up.
//! - fallback (kernels before 5.12, or without CAP_SYS_ADMIN), a sealed memfd copy, as runc
//!   does: writes fail with EPERM.
//!
//! The processes that join an existing container's pid namespace are also made non-dumpable
//! until their final exec (`process::stage1`), so /proc/PID of theirs cannot be opened at all.
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::statvfs::{fstatvfs, FsFlags};

use super::error::{Result, RuntimeError};

/// Set while re-executing, so that a copy that turns out unprotected fails instead of looping.
const MARKER: &str = "_SLIPWAY_RUNTIME_REEXEC";

/// Return when the running executable cannot be written through `/proc/self/exe`; otherwise
/// re-execute from a protected copy (this call then does not return).
pub fn ensure_protected() -> Result<()> {
    let exe = File::open("/proc/self/exe").map_err(|e| fail("open /proc/self/exe", e))?;
    let reexecuted = std::env::var_os(MARKER).is_some();
    if is_protected(&exe) {
        if reexecuted {
            std::env::remove_var(MARKER);
        }
        return Ok(());
    }
    if reexecuted {
        return Err(RuntimeError::Init(
            "re-executed from a protected copy of the runtime, but /proc/self/exe is still writable: refusing to start containers".into(),
        ));
    }
    let copy = match readonly_clone(&exe) {
        Ok(fd) => fd,
        Err(clone_err) => sealed_copy(&exe).map_err(|copy_err| {
            RuntimeError::Init(format!(
                "protect the runtime binary from containers: read-only clone: {clone_err}; sealed copy: {copy_err}"
            ))
        })?,
    };
    std::env::set_var(MARKER, "1");
    let args = std::env::args_os().map(cstring).collect::<Vec<_>>();
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstring(kv)
        })
        .collect::<Vec<_>>();
    let e = nix::unistd::execveat(
        copy.as_fd(),
        c"",
        &args,
        &env,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .unwrap_err();
    Err(fail(
        "re-execute the runtime from its protected copy",
        e.into(),
    ))
}

fn cstring(s: OsString) -> CString {
    // Arguments and environment came from the kernel as C strings: no NUL inside.
    CString::new(s.into_vec()).unwrap_or_default()
}

fn fail(what: &str, e: std::io::Error) -> RuntimeError {
    RuntimeError::Init(format!("{what}: {e}"))
}

/// Read-only mount, or a memfd sealed against writes.
fn is_protected(exe: &File) -> bool {
    if fstatvfs(exe).is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY)) {
        return true;
    }
    fcntl(exe, FcntlArg::F_GET_SEALS)
        .is_ok_and(|s| SealFlag::from_bits_truncate(s).intersects(SealFlag::F_SEAL_WRITE))
}

/// A detached, read-only bind mount of the executable.
fn readonly_clone(exe: &File) -> std::io::Result<OwnedFd> {
    // SAFETY: open_tree with an empty path on a descriptor we own; it returns a new descriptor.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            exe.as_raw_fd(),
            c"".as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from open_tree.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our detached tree with a valid, correctly sized attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tree)
}

/// A memfd holding a copy of the executable, sealed against any change.
fn sealed_copy(exe: &File) -> std::io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"slipway-runtime",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut dst = File::from(fd);
    let mut src = exe.try_clone()?;
    std::io::copy(&mut src, &mut dst)?;
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    fcntl(&dst, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(OwnedFd::from(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_copy_counts_as_protected_and_refuses_writes() {
        let exe = File::open("/proc/self/exe").unwrap();
        let copy = File::from(sealed_copy(&exe).unwrap());
        assert!(is_protected(&copy));
        // Opening it for writing may succeed; writing never does (F_SEAL_WRITE).
        let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
            use std::io::Write;
            assert!(f.write_all(b"overwrite").is_err());
        }
    }

    #[test]
    fn a_plain_file_is_not_protected() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "x").unwrap();
        let f = File::open(d.path().join("f")).unwrap();
        assert!(!is_protected(&f));
    }
}
