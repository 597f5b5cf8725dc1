//! Shared fixtures for the runtime's integration tests (run as root): a busybox rootfs per
//! test, bundles with a tweakable config.json, a private state root per test,
//! and cleanup that leaves no container, cgroup, state dir or zombie behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

pub const RUNTIME: &str = env!("CARGO_BIN_EXE_slipway-runtime");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique name for this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Locate a static busybox on the host.
fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox not found: run scripts/install-deps (it installs busybox-static)");
}

/// Fill `dir` with a busybox root filesystem.
pub fn make_busybox_rootfs(dir: &Path) {
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(busybox(), dir.join("bin/busybox")).unwrap();
    // Ask the host's copy: executing a file just written races with other threads' forks
    // that still hold it open for writing (ETXTBSY).
    let out = Command::new(busybox()).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").unwrap();
}

/// One test's world: a bundle and a private runtime state root.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub ids: std::sync::Mutex<Vec<String>>,
}

impl Fixture {
    /// A bundle with its own busybox rootfs and `slipway-runtime spec`'s defaults, with
    /// `process.terminal` off and `args` set.
    pub fn new(args: &[&str]) -> Fixture {
        become_subreaper();
        let dir = tempfile::Builder::new()
            .prefix("slipway-test")
            .tempdir()
            .unwrap();
        let root = dir.path().join("state");
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let out = Command::new(RUNTIME)
            .arg("spec")
            .arg("--bundle")
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A rootfs of its own per test, removed with the test's temp dir.
        let rootfs = dir.path().join("rootfs");
        make_busybox_rootfs(&rootfs);
        let f = Fixture {
            dir,
            root,
            bundle,
            ids: Default::default(),
        };
        f.edit(|c| {
            c["root"]["path"] = rootfs.to_str().unwrap().into();
            c["process"]["terminal"] = false.into();
            c["process"]["args"] = args
                .iter()
                .map(|s| Value::from(*s))
                .collect::<Vec<_>>()
                .into();
        });
        f
    }

    /// The bundle's rootfs (every test has its own copy, so writing to it is fine).
    pub fn private_rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn config(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.bundle.join("config.json")).unwrap()).unwrap()
    }

    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut c = self.config();
        f(&mut c);
        std::fs::write(
            self.bundle.join("config.json"),
            serde_json::to_vec_pretty(&c).unwrap(),
        )
        .unwrap();
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(RUNTIME);
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null());
        c
    }

    /// Run a runtime command to completion and capture its output.
    pub fn rt(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub fn id(&self) -> String {
        let id = unique("t");
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// `run` the bundle to completion: (exit code, stdout, stderr).
    pub fn run(&self) -> (i32, String, String) {
        let id = self.id();
        let out = self
            .cmd()
            .args(["run", "--bundle"])
            .arg(&self.bundle)
            .arg(&id)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `create` with stdio sent to files (a container holding a pipe open would keep the
    /// caller's read from ending). Returns the id; panics with the error on failure.
    pub fn create(&self) -> String {
        let id = self.id();
        let out_path = self.dir.path().join(format!("{id}.out"));
        let out = std::fs::File::create(&out_path).unwrap();
        let status = self
            .cmd()
            .args(["create", "--bundle"])
            .arg(&self.bundle)
            .arg(&id)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "create failed: {}",
            std::fs::read_to_string(&out_path).unwrap()
        );
        id
    }

    /// What the container of `id` printed (create's stdout and stderr).
    pub fn output_of(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.out"))).unwrap_or_default()
    }

    pub fn state(&self, id: &str) -> Value {
        let out = self.rt(&["state", id]);
        assert!(
            out.status.success(),
            "state: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rt(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (bounded) until the container's status is `want`.
    pub fn wait_status(&self, id: &str, want: &str) {
        for _ in 0..500 {
            let out = self.rt(&["state", id]);
            if out.status.success()
                && serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"] == want
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("container {id} never reached {want}: {}", self.state(id));
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let _ = self.rt(&["delete", "--force", id]);
        }
        reap_orphans();
    }
}

/// Container inits outlive the `create` that forked them and are re-parented to us (we are a
/// subreaper): reap them so no zombie is left behind.
pub fn become_subreaper() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        // Reap continuously: a container's PID-namespace init cannot finish dying while a
        // zombie of its namespace that was re-parented to us waits to be reaped.
        std::thread::spawn(|| loop {
            reap_orphans_once();
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
    });
}

/// Reap zombies adopted from containers, leaving the children `Command` waits for alone
/// (those share our session; container processes run in sessions of their own).
pub fn reap_orphans() {
    for _ in 0..50 {
        if !reap_orphans_once() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// One pass; true while adopted processes are still running.
fn reap_orphans_once() -> bool {
    let me = std::process::id() as i32;
    let my_sid = unsafe { libc::getsid(0) };
    {
        let mut left = false;
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() < 4 || f[1].parse::<i32>() != Ok(me) || f[3].parse::<i32>() == Ok(my_sid) {
                continue;
            }
            if f[0] == "Z" {
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            } else {
                left = true;
            }
        }
        left
    }
}

/// Whether any cgroup directory of this container id exists on the host.
pub fn cgroup_exists(id: &str) -> bool {
    let out = Command::new("find")
        .args([
            "/sys/fs/cgroup",
            "-maxdepth",
            "4",
            "-type",
            "d",
            "-name",
            id,
        ])
        .output()
        .unwrap();
    !out.stdout.is_empty()
}
