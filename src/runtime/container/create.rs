//! `create`: the runtime's side of the init handshake. Forks stage 1, answers its requests
//! (id maps, runtime hooks) and returns once the init waits, fully set up, for `start`.
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{
    absolute, compile_seccomp, fork_stage1, kill_cgroup, open_dir, socket_path, wait_gone,
    write_pid_file, Console,
};
use crate::runtime::cgroups::Cgroup;
use crate::runtime::error::{Result, RuntimeError};
use crate::runtime::process::{self, ExecPlan, NamespacePlan};
use crate::runtime::state::{self, ContainerState, StateRoot, Status};
use crate::runtime::sync::{Channel, Msg};
use crate::runtime::{console, hooks, init, spec};
use crate::sys::io::at;

pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console: Console,
    pub preserve_fds: i32,
    pub no_pivot: bool,
}

/// Undo a half-made container when create fails: no process, cgroup or state dir survives.
struct CreateGuard<'a> {
    root: &'a StateRoot,
    id: String,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(pid, None, Duration::from_secs(5));
        }
        if let Some(cg) = &self.cgroup {
            kill_cgroup(cg, Signal::SIGKILL);
            let _ = cg.destroy();
        }
        let _ = self.root.remove(&self.id);
    }
}

/// The namespaces to create and join for a new container.
fn namespace_plan(spec: &Spec) -> Result<NamespacePlan> {
    let mut plan = NamespacePlan {
        join: Vec::new(),
        new_user: false,
        new_cgroup: false,
        new_other: CloneFlags::empty(),
    };
    for ns in spec::namespaces(spec) {
        let flag = CloneFlags::from_bits_truncate(ns.typ() as i32);
        match ns.path() {
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|e| {
                    RuntimeError::Invalid(format!(
                        "namespace path {} ({}): {e}",
                        p.display(),
                        ns.typ()
                    ))
                })?;
                plan.join.push((flag, OwnedFd::from(f)));
            }
            None => match ns.typ() {
                LinuxNamespaceType::User => plan.new_user = true,
                LinuxNamespaceType::Cgroup => plan.new_cgroup = true,
                _ => plan.new_other |= flag,
            },
        }
    }
    Ok(plan)
}

/// Create a container: its init waits, fully set up, for `start`.
/// Returns the state and, in `Console::Proxy` mode, the pty master.
pub fn create(root: &StateRoot, o: &CreateOptions) -> Result<(ContainerState, Option<OwnedFd>)> {
    state::check_id(&o.id)?;
    process::check_preserved(o.preserve_fds)?;
    let bundle = o.bundle.canonicalize().map_err(|e| {
        RuntimeError::Invalid(format!(
            "bundle {}: {e}: pass --bundle DIR with a config.json",
            o.bundle.display()
        ))
    })?;
    let spec = spec::load(&bundle)?;
    spec::validate(&spec)?;
    let rootfs = spec::rootfs_path(&spec, &bundle)?;
    let pid_file = o.pid_file.as_deref().map(absolute);
    let process = spec.process().as_ref().expect("validated");
    let terminal = process.terminal().unwrap_or(false);
    if terminal && matches!(o.console, Console::None) {
        return Err(RuntimeError::Invalid(
            "process.terminal is true: pass --console-socket (or set terminal to false)".into(),
        ));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let cgroup = Cgroup::new(
        linux.cgroups_path().as_ref().and_then(|p| p.to_str()),
        &o.id,
    )?;
    let seccomp = compile_seccomp(&spec, root)?;
    let mut exec = ExecPlan::new(process, seccomp, o.preserve_fds)?;
    exec.init = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::runtime::pid1::ANNOTATION))
        .is_some_and(|v| v == "true");
    let ns = namespace_plan(&spec)?;
    let own_mount_ns = spec::has_namespace(&spec, LinuxNamespaceType::Mount);

    let dir = root.claim(&o.id)?;
    let mut guard = CreateGuard {
        root,
        id: o.id.clone(),
        cgroup: None,
        pid: None,
        armed: true,
    };
    cgroup.create()?;
    guard.cgroup = Some(cgroup.clone());
    if let Some(res) = spec::effective_resources(&spec) {
        cgroup.apply(&res)?;
    }

    let dir_fd = open_dir(&dir)?;
    let listener = UnixListener::bind(socket_path(&dir_fd))
        .map_err(at("bind start socket", dir.join(state::START_SOCKET)))?;
    // A host directory: it must not exist in the container's init (CVE-2024-21626).
    drop(dir_fd);
    let (console_fd, proxy_end) = o.console.endpoints(terminal)?;
    let annotations: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
    let created = state::now_rfc3339();
    let state_json = |pid: i32, status: Status| {
        state::OciState {
            oci_version: state::OCI_VERSION,
            id: &o.id,
            status,
            pid,
            bundle: &bundle,
            annotations: &annotations,
            created: None,
            rootfs: None,
            owner: None,
        }
        .to_json()
    };

    let (parent_chan, child_chan) = Channel::pair().map_err(at("socketpair", "handshake"))?;
    let (stage1_pid, in_cgroup) = fork_stage1(&cgroup)?;
    if stage1_pid == 0 {
        drop(parent_chan);
        let ctx = init::InitContext {
            id: &o.id,
            spec: &spec,
            rootfs: &rootfs,
            bundle: &bundle,
            cgroup: &cgroup,
            exec: &exec,
            listener: &listener,
            console_socket: console_fd.as_ref(),
            no_pivot: o.no_pivot,
            state_template: &state_json,
        };
        let enter = || {
            if in_cgroup {
                return Ok(());
            }
            cgroup
                .add_pid(std::process::id() as i32)
                .map_err(RuntimeError::from)
        };
        process::stage1(&child_chan, &ns, &enter, &mut || {
            init::run(&ctx, &child_chan)
        });
    }
    drop(child_chan);
    drop(listener);
    drop(console_fd);
    let mut stage1_reaped = false;
    let result = (|| -> Result<i32> {
        let mut init_pid = None;
        loop {
            let msg = parent_chan
                .recv()
                .map_err(at("handshake", "container init"))?;
            match msg {
                Some(Msg::MapIds(pid)) => {
                    process::write_id_maps(
                        pid,
                        linux.uid_mappings().as_deref().unwrap_or(&[]),
                        linux.gid_mappings().as_deref().unwrap_or(&[]),
                    )?;
                    parent_chan
                        .send(&Msg::MapsDone)
                        .map_err(at("handshake", "container init"))?;
                }
                Some(Msg::InitPid(pid)) => {
                    init_pid = Some(pid);
                    guard.pid = Some(pid);
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1_pid), None);
                    stage1_reaped = true;
                }
                Some(Msg::RunCreateRuntimeHooks) => {
                    let pid = init_pid.unwrap_or(0);
                    #[allow(deprecated)]
                    if let Some(h) = spec.hooks() {
                        let s = state_json(pid, Status::Created);
                        hooks::run(h.prestart().as_deref().unwrap_or(&[]), &s, "prestart")?;
                        hooks::run(
                            h.create_runtime().as_deref().unwrap_or(&[]),
                            &s,
                            "createRuntime",
                        )?;
                    }
                    parent_chan
                        .send(&Msg::HooksDone)
                        .map_err(at("handshake", "container init"))?;
                }
                Some(Msg::Ready) => {
                    return init_pid.ok_or_else(|| {
                        RuntimeError::Init("init ready before its pid was known".into())
                    })
                }
                Some(Msg::Error(e)) => return Err(RuntimeError::Reported(e)),
                Some(other) => {
                    return Err(RuntimeError::Init(format!("unexpected message {other:?}")))
                }
                None => {
                    return Err(RuntimeError::Init(
                        "the container init exited during setup".into(),
                    ))
                }
            }
        }
    })();
    if !stage1_reaped {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(stage1_pid), None);
    }
    let pid = result?;
    let master = match proxy_end {
        Some(end) => Some(console::recv_fd(end.as_raw_fd())?),
        None => None,
    };
    let pid_start_time = crate::sys::procfs::stat(pid).map_or(0, |s| s.start_time);
    let st = ContainerState {
        id: o.id.clone(),
        pid,
        pid_start_time,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created,
        cgroup: cgroup.clone(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        own_mount_ns,
    };
    root.save_spec(&o.id, &spec)?;
    root.save(&st)?;
    if let Some(p) = pid_file {
        write_pid_file(&p, pid)?;
    }
    guard.armed = false;
    Ok((st, master))
}
