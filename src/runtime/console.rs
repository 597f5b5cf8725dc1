//! Terminals: the init opens a pty inside the container's devpts and hands the master to the
//! caller over a unix socket (`--console-socket`) with SCM_RIGHTS, as runc does.
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;

use super::error::{Result, RuntimeError};

/// Connect to the caller's console socket (before fork, in the runtime's mount namespace).
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let s = UnixStream::connect(path).map_err(|e| {
        RuntimeError::Invalid(format!(
            "console socket {}: {e}: the caller must listen on it",
            path.display()
        ))
    })?;
    Ok(OwnedFd::from(s))
}

/// Open a new pty in the container; returns (master, slave, slave path).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd, String)> {
    let fail = |what: String| {
        move |e: nix::Error| RuntimeError::Init(format!("{what}: {}", std::io::Error::from(e)))
    };
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags).map_err(fail("open /dev/ptmx".into()))?;
    nix::pty::grantpt(&master)
        .and_then(|()| nix::pty::unlockpt(&master))
        .map_err(fail("unlock pty".into()))?;
    let name = nix::pty::ptsname_r(&master).map_err(fail("ptsname".into()))?;
    let slave = nix::fcntl::open(name.as_str(), flags, Mode::empty())
        .map_err(fail(format!("open {name}")))?;
    Ok((master.into(), slave, name))
}

/// Send a descriptor over a connected unix socket.
pub fn send_fd(socket: RawFd, fd: RawFd) -> Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"console")];
    sendmsg::<()>(socket, &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| RuntimeError::Init(format!("send the pty over the console socket: {e}")))?;
    Ok(())
}

/// Receive a descriptor sent with `send_fd`.
pub fn recv_fd(socket: RawFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| RuntimeError::Init(format!("receive the pty: {e}")))?;
    for c in msg
        .cmsgs()
        .map_err(|e| RuntimeError::Init(format!("receive the pty: {e}")))?
    {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(RuntimeError::Init(
        "no descriptor arrived on the console socket".into(),
    ))
}

/// The slave side of a pty master, without a path lookup (TIOCGPTPEER), after unlocking it:
/// the master may come from a devpts inside a container's root, whose /dev/pts paths the
/// image controls.
pub fn peer_of(master: &OwnedFd) -> Result<OwnedFd> {
    let fail = |what: &str| {
        RuntimeError::Init(format!(
            "{what} of the container's pty (is /dev/ptmx the devpts one?): {}",
            std::io::Error::last_os_error()
        ))
    };
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on a descriptor we own, with a valid pointer for TIOCSPTLCK.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(fail("unlock"));
        }
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        let slave = libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags);
        if slave < 0 {
            return Err(fail("open the slave"));
        }
        Ok(OwnedFd::from_raw_fd(slave))
    }
}

/// Send the pty's master to the caller over `socket`, then make the slave our controlling
/// terminal and stdio, sized as the process asks.
pub fn hand_over(
    socket: RawFd,
    master: OwnedFd,
    slave: &OwnedFd,
    size: Option<oci_spec::runtime::Box>,
) -> Result<()> {
    send_fd(socket, master.as_raw_fd())?;
    drop(master);
    become_terminal(
        slave,
        size.map_or(0, |s| s.height() as u32),
        size.map_or(0, |s| s.width() as u32),
    )
}

/// Make `slave` the controlling terminal and the stdio of the calling process.
pub fn become_terminal(slave: &OwnedFd, rows: u32, cols: u32) -> Result<()> {
    if rows > 0 || cols > 0 {
        let ws = libc::winsize {
            ws_row: rows as u16,
            ws_col: cols as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize it is given; `slave` is ours. (nix has no
        // wrapper for the terminal ioctls used here.)
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    nix::unistd::dup2_stdin(slave)
        .and_then(|()| nix::unistd::dup2_stdout(slave))
        .and_then(|()| nix::unistd::dup2_stderr(slave))
        .map_err(|e| RuntimeError::Init(format!("dup pty: {}", std::io::Error::from(e))))?;
    // SAFETY: TIOCSCTTY on our stdin, which is now the slave, with no pointer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(RuntimeError::Init(format!(
            "set controlling terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Restores the caller's terminal mode when dropped.
pub struct ProxyGuard {
    saved: Option<nix::sys::termios::Termios>,
    output: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        // Let the last output of the container reach our stdout before we return.
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Copy our stdin to the pty master and the master to our stdout (foreground `run`/`exec`);
/// our own terminal goes raw meanwhile so keys reach the container untouched.
pub fn proxy(master: &OwnedFd) -> ProxyGuard {
    use nix::sys::termios;
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        copy_window_size(master);
    }
    let input = master.try_clone().ok();
    let output = master.try_clone().ok();
    if let Some(m) = input {
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(m);
            let _ = std::io::copy(&mut std::io::stdin(), &mut f);
        });
    }
    let output = output.map(|m| {
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(m);
            let mut out = std::io::stdout();
            let mut buf = [0u8; 8192];
            loop {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if std::io::Write::write_all(&mut out, &buf[..n]).is_err() {
                            break;
                        }
                        let _ = std::io::Write::flush(&mut out);
                    }
                }
            }
        })
    });
    ProxyGuard { saved, output }
}

/// Our own terminal's size (rows, columns), when stdin is a terminal.
pub fn our_window_size() -> Option<(u64, u64)> {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0)
            .then_some((u64::from(ws.ws_row), u64::from(ws.ws_col)))
    }
}

/// Give the pty the size of our own terminal.
pub fn copy_window_size(master: &OwnedFd) {
    // SAFETY: ioctls with a valid winsize pointer.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}
