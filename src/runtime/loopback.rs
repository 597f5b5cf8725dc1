//! The loopback interface of a new network namespace, which the kernel creates down.
//!
//! runc and crun bring it up, and apps expect 127.0.0.1 to answer inside their container
//! (a database on localhost, a health check). Other interfaces are the network layer's
//! business (CNI), not the runtime's.
use std::os::fd::AsRawFd;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::error::{Result, RuntimeError};

/// Set IFF_UP on `lo` of the calling process's network namespace.
pub fn bring_up() -> Result<()> {
    let fail = |what: &str, e: std::io::Error| {
        RuntimeError::Init(format!(
            "bring up lo in the container's network namespace: {what}: {e}"
        ))
    };
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail("socket", e.into()))?;
    // SAFETY: an all-zero ifreq is valid; the name fits with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags member of a valid ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(fail("read flags", std::io::Error::last_os_error()));
        }
        let flags = req.ifr_ifru.ifru_flags;
        if flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(fail("set IFF_UP", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
