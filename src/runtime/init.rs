//! The container init (stage 2 of `create`): builds the container's world inside its new
//! namespaces, reports ready, waits for `start` on its start socket, then execs the program.
use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::{Result, RuntimeError};
use super::process::{self, ExecPlan};
use super::rootfs;
use super::state::Status;
use super::sync::{Channel, Msg};
use super::syscall::{Linux, Syscall};
use super::{console, hooks, loopback, mountopts, spec};

pub struct InitContext<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub cgroup: &'a super::cgroups::Cgroup,
    pub exec: &'a ExecPlan,
    pub listener: &'a UnixListener,
    pub console_socket: Option<&'a OwnedFd>,
    pub no_pivot: bool,
    pub state_template: &'a dyn Fn(i32, Status) -> String,
}

pub fn run(ctx: &InitContext, chan: &Channel) -> Result<Infallible> {
    let linux = ctx.spec.linux().clone().unwrap_or_default();
    let has = |t| spec::has_namespace(ctx.spec, t);
    let own_mount_ns = has(LinuxNamespaceType::Mount);
    let user_ns = has(LinuxNamespaceType::User);
    // Our pid as the host sees it: /proc is still the host's procfs here.
    let host_pid: i32 = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or(0);

    // Nothing of the runtime's survives into the container but stdio, the descriptors it was
    // told to preserve, and our own channels (closed or close-on-exec before the program
    // runs): in particular no host directory a container path could walk through.
    let mut keep = vec![chan.raw(), ctx.listener.as_raw_fd()];
    keep.extend(ctx.console_socket.map(|s| s.as_raw_fd()));
    process::close_fds_except(3 + ctx.exec.preserve_fds, &keep);

    nix::unistd::setsid().map_err(|e| RuntimeError::Init(format!("setsid: {e}")))?;

    let requested_propagation = linux
        .rootfs_propagation()
        .as_deref()
        .and_then(mountopts::propagation);
    // The rootfs (bound onto itself), the root of every container path from here on.
    let sys = &Linux;
    let devices = linux.devices().clone().unwrap_or_default();
    // The rootfs (bound onto itself), the root of every container path from here on.
    let root = if own_mount_ns {
        let layout = rootfs::Layout {
            rootfs: ctx.rootfs,
            bundle: ctx.bundle,
            mounts: spec::mounts(ctx.spec),
            devices: &devices,
            propagation: requested_propagation,
            cgroup: ctx.cgroup,
            cgroup_ns: has(LinuxNamespaceType::Cgroup),
            user_ns,
        };
        Some(rootfs::prepare(sys, &layout)?)
    } else {
        None
    };

    // spec::validate let through only sysctls of namespaces this process is in; /proc is
    // still the host's procfs, which the image cannot have tampered with.
    for (key, value) in linux.sysctl().clone().unwrap_or_default() {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        sys.write_proc(Path::new(&path), &value).map_err(|e| {
            RuntimeError::Init(format!(
                "sysctl {key}={value}: {e} (only namespaced sysctls can be set)"
            ))
        })?;
    }
    let new_netns = spec::namespaces(ctx.spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none());
    if new_netns {
        // A new network namespace starts with `lo` down; apps expect 127.0.0.1 to work.
        loopback::bring_up()?;
    }
    if has(LinuxNamespaceType::Uts) {
        if let Some(h) = ctx.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            sys.sethostname(h)
                .map_err(|e| RuntimeError::Init(format!("sethostname {h}: {e}")))?;
        }
        if let Some(d) = ctx.spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            sys.setdomainname(d)
                .map_err(|e| RuntimeError::Init(format!("setdomainname {d}: {e}")))?;
        }
    } else if ctx
        .spec
        .hostname()
        .as_deref()
        .is_some_and(|h| !h.is_empty())
    {
        return Err(RuntimeError::Invalid(
            "hostname is set but the container has no uts namespace".into(),
        ));
    }
    ctx.exec.apply_rlimits(sys)?;

    #[allow(deprecated)]
    let hooks = ctx.spec.hooks().clone().unwrap_or_default();
    #[allow(deprecated)]
    let runtime_hooks =
        hooks.prestart().iter().flatten().count() + hooks.create_runtime().iter().flatten().count();
    if runtime_hooks > 0 {
        chan.send(&Msg::RunCreateRuntimeHooks).map_err(chan_err)?;
        match chan.recv().map_err(chan_err)? {
            Some(Msg::HooksDone) => {}
            other => {
                return Err(RuntimeError::Init(format!(
                    "expected hooks done, got {other:?}"
                )))
            }
        }
    }
    if let Some(h) = hooks.create_container() {
        hooks::run(
            h,
            &(ctx.state_template)(host_pid, Status::Created),
            "createContainer",
        )?;
    }

    let process = ctx.spec.process().as_ref().expect("validated");
    let terminal = process.terminal().unwrap_or(false);
    // Send the pty's master to the caller, make the slave our terminal.
    let hand_over = |master, slave: OwnedFd| {
        let sock = ctx.console_socket.ok_or_else(|| {
            RuntimeError::Invalid("process.terminal is true: pass --console-socket".into())
        })?;
        console::hand_over(sock.as_raw_fd(), master, &slave, process.console_size())
    };
    if let Some(root) = &root {
        let masked = linux.masked_paths().clone().unwrap_or_default();
        let readonly = linux.readonly_paths().clone().unwrap_or_default();
        rootfs::protect(sys, root.as_fd(), &masked, &readonly)?;
        if terminal {
            let (master, slave) = rootfs::console(sys, root.as_fd())?;
            hand_over(master, slave)?;
        }
    }
    drop(root);

    if own_mount_ns && !ctx.no_pivot {
        rootfs::pivot(sys, ctx.rootfs)?;
    } else {
        rootfs::chroot(sys, ctx.rootfs)?;
    }
    if own_mount_ns {
        if ctx
            .spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false)
        {
            rootfs::remount_readonly(sys, Path::new("/"), MsFlags::empty())?;
        }
        if let Some(p) = requested_propagation {
            rootfs::set_root_propagation(sys, p)?;
        }
    } else if terminal {
        // No mount namespace of its own: no /dev/console to set up, only the pty.
        let (master, slave, _) = console::open_pty()?;
        hand_over(master, slave)?;
    }

    chan.send(&Msg::Ready).map_err(chan_err)?;

    // Wait for `start`. Its connection doubles as the error channel: it is close-on-exec, so
    // `start` reads EOF once the program runs, or our error message if exec failed.
    let conn = loop {
        match ctx.listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RuntimeError::Init(format!("wait for start: {e}"))),
        }
    };
    let conn = process::raise_fd(OwnedFd::from(conn), 3 + ctx.exec.preserve_fds)?;
    let mut conn = UnixStream::from(conn);
    let mut b = [0u8; 1];
    let _ = conn.read(&mut b);
    let r = (|| -> Result<Infallible> {
        if let Some(h) = hooks.start_container() {
            hooks::run(
                h,
                &(ctx.state_template)(host_pid, Status::Running),
                "startContainer",
            )?;
        }
        // Under the init, the exec happens in its child: the outcome comes back here.
        let mut started = |r: std::result::Result<(), String>| {
            if let Err(msg) = r {
                let _ = (&conn).write_all(msg.as_bytes());
            }
        };
        process::finalize(sys, ctx.exec, &mut started)
    })();
    let e = r.expect_err("finalize only returns on error");
    let _ = conn.write_all(e.to_string().as_bytes());
    process::exit_now(127)
}

fn chan_err(e: std::io::Error) -> RuntimeError {
    RuntimeError::Init(format!("handshake with the runtime: {e}"))
}

/// Adopt an inherited raw descriptor.
pub fn owned(fd: i32) -> OwnedFd {
    // SAFETY: callers pass descriptors they own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
