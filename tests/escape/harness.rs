//! The escape suite's harness: one isolated world per case (temp dir, private state root, a
//! copy of the runtime under test, canary files outside every bundle), the host checks that
//! run after every case, and the per-case report line.
//!
//! The runtime under test is `SLIPWAY_ESCAPE_RUNTIME` (a path, or a name looked up in PATH),
//! slipway-runtime by default. Every case runs a private copy of it, so an attack that
//! overwrites "the runtime binary" only ever reaches that copy; cleanup uses the original.
//! Bundles get the config of `slipway-runtime spec`, whichever runtime runs them, so the
//! reference runtimes see exactly the same input.
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{become_subreaper, make_busybox_rootfs, reap_orphans, unique};

/// slipway's own runtime binary: the default runtime under test and the spec generator.
pub const SLIPWAY_RUNTIME: &str = env!("CARGO_BIN_EXE_slipway-runtime");

/// How long one runtime command may take before the case calls it an error.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Host sysctls every case checks before and after: an escape through `linux.sysctl` (or a
/// write to the host's /proc) shows here.
pub const WATCHED_SYSCTLS: &[&str] = &[
    "kernel.core_uses_pid",
    "kernel.core_pattern",
    "kernel.shmmax",
    "kernel.msgmax",
    "kernel.hostname",
    "kernel.domainname",
    "vm.overcommit_ratio",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_default_ttl",
];

/// Cases that may change a host sysctl (when the runtime is vulnerable) run alone: the others
/// would otherwise see the change between their before and after readings.
static SYSCTL_LOCK: RwLock<()> = RwLock::new(());

enum SysctlLock {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// What a case found.
pub enum Finding {
    /// The attack did nothing to the host, or the required behaviour is there.
    Held(String),
    /// The attack reached the host (or broke the isolation property the case checks).
    Escaped(String),
    /// A required behaviour (not an escape) is missing.
    Failed(String),
}

/// What a case body returns: a finding, or an error when the case could not be judged
/// (setup failed, or the runtime could not run even the harmless control container).
pub type CaseResult = std::result::Result<Finding, String>;

/// Whether a case is about an escape (passes as "blocked") or a behaviour (passes as "ok").
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Escape,
    Behaviour,
}

/// A finished runtime command.
pub struct Res {
    pub code: Option<i32>,
    /// Where stdout went: a detached container's output keeps arriving there.
    pub stdout_path: PathBuf,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Res {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// One line for reports: exit status and the first line of stderr.
    pub fn brief(&self) -> String {
        let status = if self.timed_out {
            "timed out".to_string()
        } else {
            format!("exit {}", self.code.unwrap_or(-1))
        };
        format!("{status}: {}", one_line(&self.stderr))
    }
}

/// Text squeezed onto one line (tabs and newlines become spaces), at most 600 chars.
pub fn one_line(s: &str) -> String {
    let s: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out: String = s.chars().take(600).collect();
    if s.chars().count() > 600 {
        out.push('…');
    }
    out
}

/// A bundle: config.json from `slipway-runtime spec` (terminal off) and a busybox rootfs of
/// its own, both in the case's temp dir.
pub struct Bundle {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn config(&self) -> Value {
        serde_json::from_slice(&fs::read(self.dir.join("config.json")).unwrap()).unwrap()
    }

    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut c = self.config();
        f(&mut c);
        fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&c).unwrap(),
        )
        .unwrap();
    }

    /// Drop the spec's mounts whose destination is `dest`.
    pub fn remove_mount(&self, dest: &str) {
        self.edit(|c| {
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["destination"] != dest)
        });
    }

    pub fn add_mount(&self, m: Value) {
        self.edit(|c| c["mounts"].as_array_mut().unwrap().push(m));
    }

    /// Drop a namespace from `linux.namespaces`.
    pub fn remove_namespace(&self, typ: &str) {
        self.edit(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != typ)
        });
    }

    /// A path inside the rootfs (`p` absolute, as the container sees it).
    pub fn path(&self, p: &str) -> PathBuf {
        self.rootfs.join(p.trim_start_matches('/'))
    }

    /// Write a file into the rootfs (creating parents).
    pub fn write(&self, p: &str, content: &str, mode: u32) {
        let path = self.path(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = fs::remove_file(&path);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Replace whatever is at `p` in the rootfs with a symlink to `target`.
    pub fn symlink(&self, p: &str, target: impl AsRef<Path>) {
        let path = self.path(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path).unwrap(),
            Ok(_) => fs::remove_file(&path).unwrap(),
            Err(_) => {}
        }
        std::os::unix::fs::symlink(target, &path).unwrap();
    }
}

/// What a canary tree looks like: every entry (not following symlinks) with its type, mode,
/// owner, size, content and link target.
type Snapshot = Vec<(String, String)>;

fn snapshot(root: &Path) -> Snapshot {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let mut entries: Vec<_> = match fs::read_dir(dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(e) => {
                out.push((dir.display().to_string(), format!("unreadable: {e}")));
                return;
            }
        };
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let Ok(m) = fs::symlink_metadata(&p) else {
                out.push((rel, "vanished".into()));
                continue;
            };
            let ft = m.file_type();
            let desc = if ft.is_symlink() {
                format!("symlink -> {}", fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                format!("dir mode {:o} uid {}", m.mode(), m.uid())
            } else if ft.is_file() {
                let content = fs::read(&p).unwrap_or_default();
                format!(
                    "file mode {:o} uid {} ino {} {:?}",
                    m.mode(),
                    m.uid(),
                    m.ino(),
                    String::from_utf8_lossy(&content)
                )
            } else {
                format!("special mode {:o} rdev {}", m.mode(), m.rdev())
            };
            out.push((rel.clone(), desc));
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.iter().find(|(k2, _)| k2 == k) {
            None => d.push(format!("{k} removed")),
            Some((_, v2)) if v2 != v => d.push(format!("{k} changed ({v} => {v2})")),
            _ => {}
        }
    }
    for (k, v) in after {
        if !before.iter().any(|(k2, _)| k2 == k) {
            d.push(format!("{k} created ({v})"));
        }
    }
    d
}

/// sha256 of a file through sha256sum (hashing tens of MiB in a debug build is slow).
pub fn sha256(path: &Path) -> String {
    match Command::new("sha256sum").arg(path).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        Ok(o) => format!(
            "unreadable: {}",
            one_line(&String::from_utf8_lossy(&o.stderr))
        ),
        Err(e) => panic!("sha256sum: {e}"),
    }
}

pub fn read_sysctl(key: &str) -> String {
    fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// Puts host sysctls back as they were, whatever happened.
pub struct SysctlGuard(Vec<(String, String)>);

impl SysctlGuard {
    pub fn new(keys: &[&str]) -> SysctlGuard {
        SysctlGuard(
            keys.iter()
                .map(|k| (k.to_string(), read_sysctl(k)))
                .collect(),
        )
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            if read_sysctl(k) != *v {
                let path = format!("/proc/sys/{}", k.replace('.', "/"));
                if let Err(e) = fs::write(&path, v) {
                    eprintln!("escape suite: could not restore {k}={v}: {e}");
                }
            }
        }
    }
}

/// The runtime under test: its path.
fn runtime_under_test() -> PathBuf {
    let name = std::env::var("SLIPWAY_ESCAPE_RUNTIME").unwrap_or_else(|_| SLIPWAY_RUNTIME.into());
    if name.contains('/') {
        return PathBuf::from(name);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(&name);
        if p.is_file() {
            return p;
        }
    }
    panic!("SLIPWAY_ESCAPE_RUNTIME={name}: not found in PATH");
}

fn spec_template() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(SLIPWAY_RUNTIME)
            .arg("spec")
            .arg("--bundle")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slipway-runtime spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap()
    })
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "the escape suite needs root (containers need namespaces, cgroups and mounts): \
             run it as root, e.g. `sudo scripts/escape-suite`; it never passes without running"
        );
    }
}

/// One case's world.
pub struct Harness {
    pub name: String,
    pub dir: tempfile::TempDir,
    /// The copy of the runtime under test that every command of the case runs.
    pub runtime: PathBuf,
    original: PathBuf,
    runtime_sha: String,
    pub state: PathBuf,
    ids: Mutex<Vec<String>>,
    logs: Mutex<Vec<(String, PathBuf)>>,
    canaries: Vec<(PathBuf, Snapshot)>,
    sysctls: Vec<(String, String)>,
    _lock: SysctlLock,
}

impl Harness {
    fn new(name: &str, alone: bool) -> Harness {
        require_root();
        become_subreaper();
        let lock = if alone {
            SysctlLock::Exclusive(SYSCTL_LOCK.write().unwrap_or_else(|e| e.into_inner()))
        } else {
            SysctlLock::Shared(SYSCTL_LOCK.read().unwrap_or_else(|e| e.into_inner()))
        };
        let dir = tempfile::Builder::new()
            .prefix("slipway-escape-")
            .tempdir()
            .unwrap();
        let original = runtime_under_test();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let runtime = bin.join(original.file_name().unwrap());
        // A child writes the copy: a descriptor open for writing in this (threaded) process
        // could leak into a concurrent fork and make executing the copy fail with ETXTBSY.
        let st = Command::new("cp")
            .arg(&original)
            .arg(&runtime)
            .status()
            .unwrap();
        assert!(st.success(), "copy {} failed", original.display());
        let runtime_sha = sha256(&runtime);
        let state = dir.path().join("state");
        let sysctls = WATCHED_SYSCTLS
            .iter()
            .map(|k| (k.to_string(), read_sysctl(k)))
            .collect();
        Harness {
            name: name.into(),
            dir,
            runtime,
            original,
            runtime_sha,
            state,
            ids: Default::default(),
            logs: Default::default(),
            canaries: Vec::new(),
            sysctls,
            _lock: lock,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A canary directory outside every bundle, holding a secret file (and `extra` files),
    /// watched for any change until the case ends.
    pub fn canary_dir(&mut self, name: &str, extra: &[&str]) -> PathBuf {
        let d = self.path(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("secret"), self.secret()).unwrap();
        for f in extra {
            fs::write(d.join(f), format!("canary {f}\n")).unwrap();
        }
        self.watch(&d);
        d
    }

    /// Watch an existing directory tree for changes.
    pub fn watch(&mut self, dir: &Path) {
        assert!(dir.is_dir(), "{} is not a directory", dir.display());
        self.canaries.push((dir.to_path_buf(), snapshot(dir)));
    }

    /// The content of every canary `secret`: seeing it in a container's output is an escape.
    pub fn secret(&self) -> String {
        format!("CANARY-SECRET-{}\n", self.name)
    }

    pub fn secret_token(&self) -> String {
        format!("CANARY-SECRET-{}", self.name)
    }

    /// A fresh bundle named `name` running `args`.
    pub fn bundle(&self, name: &str, args: &[&str]) -> Bundle {
        let dir = self.path(name).join("bundle");
        let rootfs = self.path(name).join("rootfs");
        fs::create_dir_all(&dir).unwrap();
        make_busybox_rootfs(&rootfs);
        let mut c = spec_template().clone();
        c["root"]["path"] = rootfs.to_str().unwrap().into();
        c["process"]["terminal"] = false.into();
        c["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
        fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&c).unwrap(),
        )
        .unwrap();
        Bundle { dir, rootfs }
    }

    pub fn new_id(&self) -> String {
        let id = unique("esc");
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// The runtime under test (the copy) with our state root.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root").arg(&self.state);
        c
    }

    /// Run a command to completion (bounded), stdio to files so that a container holding
    /// them open cannot keep us waiting.
    pub fn run_cmd(&self, mut cmd: Command, timeout: Duration) -> Res {
        let n = unique("out");
        let out_path = self.path(&format!("{n}.stdout"));
        let err_path = self.path(&format!("{n}.stderr"));
        let out = fs::File::create(&out_path).unwrap();
        let err = fs::File::create(&err_path).unwrap();
        let spawned = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn();
        let mut child = match spawned {
            Ok(c) => c,
            // E.g. ETXTBSY: a container holds the runtime binary open for writing.
            Err(e) => {
                return Res {
                    code: None,
                    stdout_path: out_path,
                    stdout: String::new(),
                    stderr: format!("cannot execute {:?}: {e}", cmd.get_program()),
                    timed_out: false,
                }
            }
        };
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Res {
            code: status.and_then(|s| s.code()),
            stdout_path: out_path.clone(),
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
            timed_out,
        }
    }

    /// A runtime command with our state root.
    pub fn rt(&self, args: &[&str]) -> Res {
        let mut c = self.cmd();
        c.args(args);
        self.run_cmd(c, COMMAND_TIMEOUT)
    }

    /// `run` the bundle to completion.
    pub fn run(&self, b: &Bundle) -> Res {
        let id = self.new_id();
        self.rt(&["run", "--bundle", b.dir.to_str().unwrap(), &id])
    }

    /// `create` the bundle; the container's stdio goes to create's output files.
    /// Returns the id and the result of create.
    pub fn create(&self, b: &Bundle, extra: &[&str]) -> (String, Res) {
        let id = self.new_id();
        let mut args = vec!["create", "--bundle", b.dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&id);
        let r = self.rt(&args);
        self.logs
            .lock()
            .unwrap()
            .push((id.clone(), r.stdout_path.clone()));
        (id, r)
    }

    /// Where the output of the container `id` (made by `create`) goes.
    pub fn container_log(&self, id: &str) -> PathBuf {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    /// What the container `id` printed so far.
    pub fn container_output(&self, id: &str) -> String {
        fs::read_to_string(self.container_log(id)).unwrap_or_default()
    }

    /// `create` with extra descriptors from 3 on (`--preserve-fds`): each of `fds` becomes
    /// 3, 4, … in the runtime process.
    pub fn create_with_fds(&self, b: &Bundle, fds: &[RawFd]) -> (String, Res) {
        let id = self.new_id();
        let mut c = self.cmd();
        c.args([
            "create",
            "--preserve-fds",
            &fds.len().to_string(),
            "--bundle",
        ])
        .arg(&b.dir)
        .arg(&id);
        let fds = fds.to_vec();
        // SAFETY: dup2/fcntl only, between fork and exec.
        unsafe {
            c.pre_exec(move || {
                // Out of the way first, so a target number never clobbers a source.
                let moved: Vec<RawFd> = fds
                    .iter()
                    .map(|fd| libc::fcntl(*fd, libc::F_DUPFD, 100))
                    .collect();
                for (i, fd) in moved.iter().enumerate() {
                    if *fd < 0 || libc::dup2(*fd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let r = self.run_cmd(c, COMMAND_TIMEOUT);
        self.logs
            .lock()
            .unwrap()
            .push((id.clone(), r.stdout_path.clone()));
        (id, r)
    }

    pub fn start(&self, id: &str) -> Res {
        self.rt(&["start", id])
    }

    pub fn delete(&self, id: &str) -> Res {
        self.rt(&["delete", "--force", id])
    }

    /// The container init's host pid, from `state`.
    pub fn pid(&self, id: &str) -> Option<i32> {
        self.pid_by(&self.runtime, id)
    }

    fn pid_by(&self, runtime: &Path, id: &str) -> Option<i32> {
        let mut c = Command::new(runtime);
        c.arg("--root").arg(&self.state).args(["state", id]);
        let r = self.run_cmd(c, COMMAND_TIMEOUT);
        let v: Value = serde_json::from_str(&r.stdout).ok()?;
        v["pid"].as_i64().map(|p| p as i32).filter(|p| *p > 0)
    }

    /// Wait (bounded) until the process `pid` executes the bundle's busybox: the runtime's
    /// own code is gone from it.
    pub fn wait_exec_busybox(&self, b: &Bundle, pid: i32) -> bool {
        let want = match fs::metadata(b.path("/bin/busybox")) {
            Ok(m) => (m.dev(), m.ino()),
            Err(_) => return false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(m) = fs::metadata(format!("/proc/{pid}/exe")) {
                if (m.dev(), m.ino()) == want {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Create + start with the bundle's args, returning (id, init pid) once the program runs;
    /// Err with the runtime's words otherwise.
    pub fn start_container(&self, b: &Bundle) -> std::result::Result<(String, i32), String> {
        let (id, r) = self.create(b, &[]);
        if !r.ok() {
            return Err(format!("create: {}", r.brief()));
        }
        let r = self.start(&id);
        if !r.ok() {
            return Err(format!("start: {}", r.brief()));
        }
        let pid = self.pid(&id).ok_or("state has no pid")?;
        if !self.wait_exec_busybox(b, pid) {
            return Err(format!("container {id} never ran its program"));
        }
        Ok((id, pid))
    }

    /// Listen on a console socket; the returned closure waits (bounded) for the pty master.
    pub fn console_socket(&self) -> (PathBuf, ConsoleWait) {
        let path = self.path(&format!("{}.sock", unique("console")));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        (path, ConsoleWait(listener))
    }

    /// Check the host after the case: canaries, the runtime copy, sysctls.
    fn host_changes(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (p, before) in &self.canaries {
            for d in diff(before, &snapshot(p)) {
                found.push(format!("canary {}: {d}", p.display()));
            }
        }
        let sha = sha256(&self.runtime);
        if sha != self.runtime_sha {
            found.push(format!(
                "runtime binary copy {} changed (sha256 {} => {})",
                self.runtime.display(),
                self.runtime_sha,
                sha
            ));
        }
        for (k, v) in &self.sysctls {
            let now = read_sysctl(k);
            if now != *v {
                found.push(format!("host sysctl {k} changed: {v} => {now}"));
            }
        }
        found
    }

    /// Delete every container of the case (with the original binary: the copy may have been
    /// overwritten) and check that nothing is left: processes, cgroups, state, mounts.
    fn cleanup(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let ids = self.ids.lock().unwrap().clone();
        // The inits still known to the runtime: each must be gone after delete.
        let inits: Vec<(String, i32, String)> = ids
            .iter()
            .filter_map(|id| {
                let pid = self.pid_by(&self.original, id)?;
                Some((id.clone(), pid, start_time(pid)?))
            })
            .collect();
        for id in &ids {
            let mut c = Command::new(&self.original);
            c.arg("--root")
                .arg(&self.state)
                .args(["delete", "--force", id]);
            let _ = self.run_cmd(c, COMMAND_TIMEOUT);
        }
        reap_orphans();
        for (id, pid, started) in &inits {
            if start_time(*pid).as_ref() == Some(started) {
                leaks.push(format!(
                    "init {pid} of {id} still running after delete --force"
                ));
            }
        }
        for id in &ids {
            if cgroup_left(id) {
                leaks.push(format!("cgroup of {id} left behind"));
            }
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if let Some(mp) = line.split_whitespace().nth(4) {
                if mp.starts_with(&dir) {
                    leaks.push(format!("mount left at {mp}"));
                    // Off the tree before the temp dir is removed: never recurse into it.
                    let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        leaks
    }
}

/// A live (not zombie) process's start time (field 22 of /proc/PID/stat), to tell it from a
/// later namesake.
fn start_time(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    f.get(19).map(|s| s.to_string())
}

/// Whether a cgroup named `id` is left in any mounted cgroup hierarchy (only real cgroup
/// filesystems count: a plain directory where a hierarchy used to be mounted is none).
fn cgroup_left(id: &str) -> bool {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .any(|mp| {
            let out = Command::new("find")
                .arg(&mp)
                .args(["-maxdepth", "3", "-type", "d", "-name", id])
                .output()
                .unwrap();
            !out.stdout.is_empty()
        })
}

/// The listening end of a console socket.
pub struct ConsoleWait(std::os::unix::net::UnixListener);

impl ConsoleWait {
    /// Wait up to `timeout` for a runtime to connect and send the pty master.
    pub fn master(&self, timeout: Duration) -> Option<OwnedFd> {
        let deadline = Instant::now() + timeout;
        let conn = loop {
            match self.0.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return None,
            }
        };
        conn.set_nonblocking(false).ok()?;
        conn.set_read_timeout(Some(timeout)).ok()?;
        recv_fd(conn.as_raw_fd())
    }
}

/// Receive one descriptor (SCM_RIGHTS), as runc's console-socket protocol sends it.
fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Some(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    None
}

/// Read a pty master until `needle` shows up, it closes, or `timeout` passes.
pub fn read_until(master: &OwnedFd, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    // SAFETY: borrowing the descriptor for reads; ManuallyDrop keeps it owned by `master`.
    let mut f = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(master.as_raw_fd()) });
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !text.contains(needle) {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n <= 0 {
            continue;
        }
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    text
}

/// Append one line to the report file named by SLIPWAY_ESCAPE_REPORT.
fn report(case: &str, outcome: &str, detail: &str) {
    let Ok(path) = std::env::var("SLIPWAY_ESCAPE_REPORT") else {
        return;
    };
    let line = format!("{case}\t{outcome}\t{}\n", one_line(detail));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("SLIPWAY_ESCAPE_REPORT={path}: {e}"));
    // One write: lines of parallel cases never interleave (O_APPEND).
    f.write_all(line.as_bytes()).unwrap();
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Run one case: build its world, run the body, check the host, clean up, record the outcome
/// (`case<TAB>blocked|ok|escaped|failed|error<TAB>detail`), and fail the test unless the case
/// held.
pub fn case(name: &str, kind: Kind, body: impl FnOnce(&mut Harness) -> CaseResult) {
    run_case(name, kind, false, body)
}

/// A case that may change host sysctls when the runtime is vulnerable: it runs while no other
/// case does, so no other case sees the change between its before and after readings.
pub fn case_alone(name: &str, kind: Kind, body: impl FnOnce(&mut Harness) -> CaseResult) {
    run_case(name, kind, true, body)
}

fn run_case(name: &str, kind: Kind, alone: bool, body: impl FnOnce(&mut Harness) -> CaseResult) {
    let mut h = Harness::new(name, alone);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut h)))
        .unwrap_or_else(|p| Err(format!("case panicked: {}", panic_text(&*p))));
    let leaks = h.cleanup();
    let changes = h.host_changes();
    let runtime = h.original.display().to_string();
    drop(h);
    let pass = if kind == Kind::Behaviour {
        "ok"
    } else {
        "blocked"
    };
    let (outcome, detail) = if !changes.is_empty() {
        let found = match &result {
            Ok(Finding::Escaped(d)) => format!("{d}; "),
            _ => String::new(),
        };
        (
            "escaped",
            format!("{found}host changed: {}", changes.join("; ")),
        )
    } else {
        match result {
            Ok(Finding::Held(d)) if leaks.is_empty() => (pass, d),
            Ok(Finding::Held(d)) => ("error", format!("{d}; left behind: {}", leaks.join("; "))),
            Ok(Finding::Escaped(d)) => ("escaped", d),
            Ok(Finding::Failed(d)) => ("failed", d),
            Err(e) => ("error", e),
        }
    };
    report(name, outcome, &detail);
    eprintln!("escape case {name} [{runtime}]: {outcome}: {detail}");
    if outcome != pass {
        panic!("{name}: {}: {detail}", outcome.to_uppercase());
    }
}
