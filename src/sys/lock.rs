//! An exclusive lock on a lock file (`flock`), held until dropped, or until the process dies, so
//! a crashed holder never leaves it taken.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Open (or create) `path` and wait for the exclusive lock on it.
pub fn exclusive(path: &Path) -> std::io::Result<Flock<File>> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::fcntl::{Flock, FlockArg};

    #[test]
    fn held_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x.lock");
        let held = super::exclusive(&path).unwrap();
        // flock locks belong to the open file, so a second open of the same file conflicts.
        let other = std::fs::File::open(&path).unwrap();
        let (other, e) = Flock::lock(other, FlockArg::LockExclusiveNonblock).unwrap_err();
        assert_eq!(e, nix::errno::Errno::EWOULDBLOCK);
        drop(held);
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
