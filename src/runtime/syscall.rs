//! The privileged steps of the container's setup behind one small trait.
//!
//! What the init and the exec'd process do is mostly *order*: the bounding set shrinks
//! before the uid changes (or the change would keep capabilities), no_new_privs comes before a
//! filter loaded without CAP_SYS_ADMIN, masks come after every mount (or a later mount could
//! cover them), descriptors are closed before the program runs. `Linux` passes each call to
//! the kernel; `Recorder` (tests only) writes each call down, so the order is checked without
//! root, while the integration tests, as root, check that the real calls do what they should.
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use super::capabilities::{self, CapSets};
use super::error::Result;
use super::seccomp;

pub trait Syscall {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount_detach(&self, target: &Path) -> nix::Result<()>;
    /// pivot_root(".", "."): the old root ends up stacked under the new one.
    fn pivot_root_here(&self) -> nix::Result<()>;
    fn chroot(&self, path: &Path) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    fn setdomainname(&self, name: &str) -> nix::Result<()>;
    fn mknodat(
        &self,
        dir: BorrowedFd,
        name: &OsStr,
        kind: SFlag,
        perm: Mode,
        dev: libc::dev_t,
    ) -> nix::Result<()>;
    /// chown of `name` in `dir`, never following a symlink there.
    fn fchownat(&self, dir: BorrowedFd, name: &OsStr, uid: u32, gid: u32) -> nix::Result<()>;
    fn setns(&self, fd: BorrowedFd, ns: CloneFlags) -> nix::Result<()>;
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// A write to a kernel interface under /proc (sysctls, oom_score_adj).
    fn write_proc(&self, path: &Path, value: &str) -> std::io::Result<()>;
    fn setrlimit(&self, resource: Resource, soft: u64, hard: u64) -> nix::Result<()>;
    fn set_keepcaps(&self, keep: bool) -> nix::Result<()>;
    fn drop_bounding(&self, sets: &CapSets) -> Result<()>;
    fn setgroups(&self, gids: &[Gid]) -> nix::Result<()>;
    fn setresgid(&self, gid: Gid) -> nix::Result<()>;
    fn setresuid(&self, uid: Uid) -> nix::Result<()>;
    /// Effective, permitted and inheritable sets, and ambient ones.
    fn capset(&self, sets: &CapSets) -> Result<()>;
    fn set_no_new_privs(&self) -> nix::Result<()>;
    fn seccomp(&self, program: &seccomp::Program) -> Result<()>;
    /// Mark every descriptor from `first` on close-on-exec.
    fn close_fds_from(&self, first: RawFd);
    fn reset_signals(&self);
    /// Only returns on failure.
    fn execve(&self, path: &CStr, argv: &[CString], envp: &[CString]) -> nix::Error;
}

/// The kernel.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(src, target, fstype, flags, data)
    }
    fn umount_detach(&self, target: &Path) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }
    fn pivot_root_here(&self) -> nix::Result<()> {
        nix::unistd::pivot_root(".", ".")
    }
    fn chroot(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chroot(path)
    }
    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }
    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }
    fn setdomainname(&self, name: &str) -> nix::Result<()> {
        // SAFETY: a pointer and length of a live string.
        let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        nix::errno::Errno::result(r).map(drop)
    }
    fn mknodat(
        &self,
        dir: BorrowedFd,
        name: &OsStr,
        kind: SFlag,
        perm: Mode,
        dev: libc::dev_t,
    ) -> nix::Result<()> {
        nix::sys::stat::mknodat(dir, name, kind, perm, dev)
    }
    fn fchownat(&self, dir: BorrowedFd, name: &OsStr, uid: u32, gid: u32) -> nix::Result<()> {
        nix::unistd::fchownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
    }
    fn setns(&self, fd: BorrowedFd, ns: CloneFlags) -> nix::Result<()> {
        nix::sched::setns(fd, ns)
    }
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }
    fn write_proc(&self, path: &Path, value: &str) -> std::io::Result<()> {
        std::fs::write(path, value)
    }
    fn setrlimit(&self, resource: Resource, soft: u64, hard: u64) -> nix::Result<()> {
        nix::sys::resource::setrlimit(resource, soft, hard)
    }
    fn set_keepcaps(&self, keep: bool) -> nix::Result<()> {
        nix::sys::prctl::set_keepcaps(keep)
    }
    fn drop_bounding(&self, sets: &CapSets) -> Result<()> {
        capabilities::apply_bounding(sets)
    }
    fn setgroups(&self, gids: &[Gid]) -> nix::Result<()> {
        nix::unistd::setgroups(gids)
    }
    fn setresgid(&self, gid: Gid) -> nix::Result<()> {
        nix::unistd::setresgid(gid, gid, gid)
    }
    fn setresuid(&self, uid: Uid) -> nix::Result<()> {
        nix::unistd::setresuid(uid, uid, uid)
    }
    fn capset(&self, sets: &CapSets) -> Result<()> {
        capabilities::apply_sets(sets)
    }
    fn set_no_new_privs(&self) -> nix::Result<()> {
        nix::sys::prctl::set_no_new_privs()
    }
    fn seccomp(&self, program: &seccomp::Program) -> Result<()> {
        Ok(seccomp::install(program)?)
    }
    fn close_fds_from(&self, first: RawFd) {
        super::process::close_fds_from(first)
    }
    fn reset_signals(&self) {
        super::process::reset_signals()
    }
    fn execve(&self, path: &CStr, argv: &[CString], envp: &[CString]) -> nix::Error {
        match nix::unistd::execve(path, argv, envp) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}

#[cfg(test)]
pub mod fake {
    //! A `Syscall` that only writes down what was asked, in order.
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    pub struct Recorder {
        pub calls: RefCell<Vec<String>>,
    }

    impl Recorder {
        fn note(&self, call: String) {
            self.calls.borrow_mut().push(call);
        }

        /// Index of the first call starting with `prefix`; panics with the whole log if none.
        pub fn position(&self, prefix: &str) -> usize {
            let calls = self.calls.borrow();
            calls
                .iter()
                .position(|c| c.starts_with(prefix))
                .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
        }

        /// Indices of every call starting with `prefix`.
        pub fn positions(&self, prefix: &str) -> Vec<usize> {
            let calls = self.calls.borrow();
            (0..calls.len())
                .filter(|i| calls[*i].starts_with(prefix))
                .collect()
        }
    }

    /// A path as the kernel would see it: descriptors through /proc/self/fd named by target.
    fn shown(p: &Path) -> String {
        if p.starts_with("/proc/self/fd") {
            if let Ok(t) = std::fs::read_link(p) {
                return t.display().to_string();
            }
        }
        p.display().to_string()
    }

    impl Syscall for Recorder {
        fn mount(
            &self,
            src: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            _data: Option<&str>,
        ) -> nix::Result<()> {
            let src = src.map(shown).unwrap_or_default();
            let fstype = fstype.unwrap_or("");
            self.note(format!("mount {src} {} {fstype} {flags:?}", shown(target)));
            Ok(())
        }
        fn umount_detach(&self, target: &Path) -> nix::Result<()> {
            self.note(format!("umount {}", target.display()));
            Ok(())
        }
        fn pivot_root_here(&self) -> nix::Result<()> {
            self.note("pivot_root".into());
            Ok(())
        }
        fn chroot(&self, path: &Path) -> nix::Result<()> {
            self.note(format!("chroot {}", path.display()));
            Ok(())
        }
        fn chdir(&self, path: &Path) -> nix::Result<()> {
            self.note(format!("chdir {}", path.display()));
            Ok(())
        }
        fn sethostname(&self, name: &str) -> nix::Result<()> {
            self.note(format!("sethostname {name}"));
            Ok(())
        }
        fn setdomainname(&self, name: &str) -> nix::Result<()> {
            self.note(format!("setdomainname {name}"));
            Ok(())
        }
        fn mknodat(
            &self,
            _dir: BorrowedFd,
            name: &OsStr,
            _kind: SFlag,
            _perm: Mode,
            _dev: libc::dev_t,
        ) -> nix::Result<()> {
            self.note(format!("mknod {}", name.to_string_lossy()));
            Ok(())
        }
        fn fchownat(&self, _dir: BorrowedFd, name: &OsStr, uid: u32, gid: u32) -> nix::Result<()> {
            self.note(format!("chown {} {uid}:{gid}", name.to_string_lossy()));
            Ok(())
        }
        fn setns(&self, _fd: BorrowedFd, ns: CloneFlags) -> nix::Result<()> {
            self.note(format!("setns {ns:?}"));
            Ok(())
        }
        fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
            self.note(format!("unshare {flags:?}"));
            Ok(())
        }
        fn write_proc(&self, path: &Path, value: &str) -> std::io::Result<()> {
            self.note(format!("write {} {value}", path.display()));
            Ok(())
        }
        fn setrlimit(&self, resource: Resource, soft: u64, hard: u64) -> nix::Result<()> {
            self.note(format!("setrlimit {resource:?} {soft} {hard}"));
            Ok(())
        }
        fn set_keepcaps(&self, keep: bool) -> nix::Result<()> {
            self.note(format!("keepcaps {keep}"));
            Ok(())
        }
        fn drop_bounding(&self, _sets: &CapSets) -> Result<()> {
            self.note("drop_bounding".into());
            Ok(())
        }
        fn setgroups(&self, gids: &[Gid]) -> nix::Result<()> {
            self.note(format!("setgroups {gids:?}"));
            Ok(())
        }
        fn setresgid(&self, gid: Gid) -> nix::Result<()> {
            self.note(format!("setresgid {gid}"));
            Ok(())
        }
        fn setresuid(&self, uid: Uid) -> nix::Result<()> {
            self.note(format!("setresuid {uid}"));
            Ok(())
        }
        fn capset(&self, _sets: &CapSets) -> Result<()> {
            self.note("capset".into());
            Ok(())
        }
        fn set_no_new_privs(&self) -> nix::Result<()> {
            self.note("no_new_privs".into());
            Ok(())
        }
        fn seccomp(&self, _program: &seccomp::Program) -> Result<()> {
            self.note("seccomp".into());
            Ok(())
        }
        fn close_fds_from(&self, first: RawFd) {
            self.note(format!("close_fds_from {first}"));
        }
        fn reset_signals(&self) {
            self.note("reset_signals".into());
        }
        fn execve(&self, path: &CStr, _argv: &[CString], _envp: &[CString]) -> nix::Error {
            self.note(format!("execve {}", path.to_string_lossy()));
            nix::Error::ENOEXEC
        }
    }
}
