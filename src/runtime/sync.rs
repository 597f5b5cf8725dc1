//! The handshake between the runtime and the processes it forks.
//!
//! A SOCK_SEQPACKET socketpair keeps message boundaries, so each message is one `send`: a tag
//! byte and a payload. Either side seeing EOF knows the other died.
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

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
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn send(&self, msg: &Msg) -> std::io::Result<()> {
        let b = msg.encode();
        loop {
            match send(self.fd.as_raw_fd(), &b, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Next message; `None` when the peer closed its end (it exited).
    pub fn recv(&self) -> std::io::Result<Option<Msg>> {
        let mut buf = vec![0u8; MAX];
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    return Msg::decode(&buf[..n])
                        .map(Some)
                        .ok_or_else(|| std::io::Error::other("malformed handshake message"))
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
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
