//! The handshake between the runtime and the processes it forks.
//!
//! A SOCK_SEQPACKET socketpair keeps message boundaries, so each message is one `send`: a tag
//! byte and a payload. Either side seeing EOF knows the other died.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// Stage 1 unshared a user namespace: the parent must write uid/gid maps for this pid.
    MapIds(i32),
    MapsDone,
    /// Host pid of the container init.
    InitPid(i32),
    /// Namespaces and mounts exist: run prestart and createRuntime hooks now.
    RunCreateRuntimeHooks,
    HooksDone,
    /// The init finished setting up and waits for `start`.
    Ready,
    Error(String),
}

const MAX: usize = 64 * 1024;

impl Msg {
    fn encode(&self) -> Vec<u8> {
        let (tag, payload): (u8, Vec<u8>) = match self {
            Msg::MapIds(p) => (1, p.to_le_bytes().to_vec()),
            Msg::MapsDone => (2, vec![]),
            Msg::InitPid(p) => (3, p.to_le_bytes().to_vec()),
            Msg::RunCreateRuntimeHooks => (4, vec![]),
            Msg::HooksDone => (5, vec![]),
            Msg::Ready => (6, vec![]),
            Msg::Error(s) => (7, s.as_bytes()[..s.len().min(MAX - 1)].to_vec()),
        };
        let mut v = Vec::with_capacity(1 + payload.len());
        v.push(tag);
        v.extend_from_slice(&payload);
        v
    }

    fn decode(b: &[u8]) -> Option<Msg> {
        let int = || Some(i32::from_le_bytes(b.get(1..5)?.try_into().ok()?));
        Some(match *b.first()? {
            1 => Msg::MapIds(int()?),
            2 => Msg::MapsDone,
            3 => Msg::InitPid(int()?),
            4 => Msg::RunCreateRuntimeHooks,
            5 => Msg::HooksDone,
            6 => Msg::Ready,
            7 => Msg::Error(String::from_utf8_lossy(&b[1..]).into_owned()),
            _ => return None,
        })
    }
}

/// One end of the handshake channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair. Both ends are close-on-exec: they never reach the container's program.
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid two-element array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: socketpair returned two fresh descriptors we now own.
        unsafe {
            Ok((
                Channel {
                    fd: OwnedFd::from_raw_fd(fds[0]),
                },
                Channel {
                    fd: OwnedFd::from_raw_fd(fds[1]),
                },
            ))
        }
    }

    pub fn send(&self, msg: &Msg) -> std::io::Result<()> {
        let b = msg.encode();
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    b.as_ptr().cast(),
                    b.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Next message; `None` when the peer closed its end (it exited).
    pub fn recv(&self) -> std::io::Result<Option<Msg>> {
        let mut buf = vec![0u8; MAX];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n == 0 {
                return Ok(None);
            }
            if n > 0 {
                return Msg::decode(&buf[..n as usize])
                    .map(Some)
                    .ok_or_else(|| std::io::Error::other("malformed handshake message"));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let (a, b) = Channel::pair().unwrap();
        for m in [
            Msg::MapIds(42),
            Msg::MapsDone,
            Msg::InitPid(-1),
            Msg::RunCreateRuntimeHooks,
            Msg::HooksDone,
            Msg::Ready,
            Msg::Error("boom".into()),
        ] {
            a.send(&m).unwrap();
            assert_eq!(b.recv().unwrap(), Some(m));
        }
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }
}
