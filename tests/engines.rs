//! Real container engines drive slipway-runtime (root): podman through `--runtime`, and a
//! private containerd through `ctr run --runc-binary`.
//!
//! The engines reach the runtime through a wrapper script that appends each invocation's argv
//! to a log before exec'ing slipway-runtime, so that a failure shows exactly what the engine
//! asked for; the log is printed on stderr (`cargo test --test engines -- --nocapture` shows it
//! on success too).
//!
//! Nothing here touches the network or the host's own engine state: podman gets private
//! root/runroot/tmpdir directories and config files (file locks, the CNI backend and network
//! configs under the test's directory), containerd runs as a private daemon whose root, state,
//! sockets and FIFOs live in a temp dir, with an image built by hand from the busybox rootfs.
//! Each test checks that the engine and the runtime left no mount, cgroup, container state or
//! process behind.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{become_subreaper, make_busybox_rootfs, unique, RUNTIME};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long one engine command may take on a loaded 2-core machine before the test gives up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long engine processes (conmon, shims, the daemon) may take to go away.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A container's PID 1 that exits 0 on SIGTERM (PID 1 ignores signals it has no handler for).
const TERM_AWARE_LOOP: &str = "trap 'exit 0' TERM; while true; do sleep 0.1; done";

/// The absolute path of a host program, or a failure naming the Debian package to install.
fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path.split(':').chain([
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]);
    for dir in dirs.filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{program} not found: install the Debian package `{package}` \
         (scripts/install-deps installs it)"
    );
}

/// What a finished command left.
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `cmd` with its output in files under `dir` (a detached container or daemon that
/// inherits a pipe would keep a reader waiting forever), killing it after `COMMAND_TIMEOUT`.
fn run_bounded(mut cmd: Command, dir: &Path) -> Finished {
    let name = unique("cmd");
    let out_path = dir.join(format!("{name}.out"));
    let err_path = dir.join(format!("{name}.err"));
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let finished = Finished {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "{shown} did not finish within {COMMAND_TIMEOUT:?}\n{finished}"
    );
    finished
}

/// slipway-runtime behind a wrapper that logs every invocation's argv.
struct LoggedRuntime {
    wrapper: PathBuf,
    log: PathBuf,
    /// Where the runtime keeps container state when the engine passes no `--root`.
    default_root: PathBuf,
}

/// Separates arguments in the log (an argument may hold spaces).
const ARG_SEPARATOR: char = '\u{1f}';

impl LoggedRuntime {
    fn new(dir: &Path) -> LoggedRuntime {
        let wrapper = dir.join("slipway-runtime-logged");
        let log = dir.join("runtime-argv.log");
        let default_root = dir.join("runtime-state");
        // One printf per invocation: a single O_APPEND write, so that concurrent
        // invocations never interleave within a line. SLIPWAY_RUNTIME_ROOT keeps
        // invocations without `--root` (podman passes none) inside the test's directory;
        // an explicit `--root` (containerd passes one) still wins.
        let script = format!(
            "#!/bin/sh\nIFS=$(printf '\\037')\nprintf '%s\\n' \"$*\" >> '{log}'\nunset IFS\n\
             export SLIPWAY_RUNTIME_ROOT='{root}'\nexec '{runtime}' \"$@\"\n",
            log = log.display(),
            root = default_root.display(),
            runtime = RUNTIME,
        );
        std::fs::write(&wrapper, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        LoggedRuntime {
            wrapper,
            log,
            default_root,
        }
    }

    /// Every invocation so far, as argv (without the program name).
    fn invocations(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(ARG_SEPARATOR).map(String::from).collect())
            .collect()
    }

    /// The subcommand of each invocation (`create`, `start`, …), global flags skipped.
    fn subcommands(&self) -> Vec<String> {
        self.invocations()
            .iter()
            .filter_map(|argv| subcommand(argv))
            .collect()
    }

    /// Print what the engine asked of the runtime, one invocation a line.
    fn show(&self, engine: &str) {
        eprintln!("--- {engine} invoked slipway-runtime as:");
        for argv in self.invocations() {
            eprintln!("    slipway-runtime {}", argv.join(" "));
        }
    }

    /// Assert that the engine called each of `wanted` at least once.
    fn assert_called(&self, engine: &str, wanted: &[&str]) {
        let called = self.subcommands();
        for w in wanted {
            assert!(
                called.iter().any(|c| c == w),
                "{engine} never ran `slipway-runtime {w}`; it ran {called:?}"
            );
        }
    }
}

/// The subcommand in a runtime argv: the first word that is neither a global flag nor the
/// value of one.
fn subcommand(argv: &[String]) -> Option<String> {
    const TAKES_VALUE: [&str; 4] = ["--root", "--log", "--log-format", "--criu"];
    let mut words = argv.iter();
    while let Some(w) = words.next() {
        if TAKES_VALUE.contains(&w.as_str()) {
            words.next();
        } else if !w.starts_with('-') {
            return Some(w.clone());
        }
    }
    None
}

/// Mount points at or under `dir` in our mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| *mp == prefix || mp.starts_with(&format!("{prefix}/")))
        .map(String::from)
        .collect()
}

/// Best-effort unmount of whatever is still mounted under `dir`, deepest first.
fn unmount_all_under(dir: &Path) {
    let mut left = mounts_under(dir);
    left.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in left {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Processes (other than us) whose command line mentions `dir`: engine helpers such as
/// conmon, `podman container cleanup`, the containerd daemon and its shims.
fn processes_mentioning(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_str().unwrap();
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Wait (bounded) until no process mentions `dir`; returns those still there.
fn wait_processes_gone(dir: &Path) -> Vec<(i32, String)> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        let left = processes_mentioning(dir);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directories of cgroup `path` (e.g. `/slipway-engines-1-2`) in every hierarchy.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    let mut seen = std::collections::BTreeSet::new();
    let mut candidates = vec![base.join(rel)];
    for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
        candidates.push(e.path().join(rel));
    }
    candidates
        .into_iter()
        .filter(|p| p.is_dir())
        .filter(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())))
        .collect()
}

/// Sub-directories of `dir`, deepest first, then `dir` itself.
fn dirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(dirs_deepest_first(&e.path()));
        }
    }
    out.push(dir.to_path_buf());
    out
}

/// Remove cgroup `path` (and the cgroups the engine made below it) in every hierarchy.
/// Returns the directories that could not be removed, with why (a cgroup that still holds
/// a process refuses with EBUSY).
fn remove_cgroup_tree(path: &str) -> Vec<String> {
    let mut failed = Vec::new();
    for top in cgroup_dirs(path) {
        for d in dirs_deepest_first(&top) {
            if let Err(e) = std::fs::remove_dir(&d) {
                failed.push(format!("{}: {e}", d.display()));
            }
        }
    }
    failed
}

/// Leaf cgroups left below `path` whose name satisfies `is_container` (the runtime's own
/// cgroups, which `delete` must remove).
fn container_cgroups_left(path: &str, is_container: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    cgroup_dirs(path)
        .iter()
        .flat_map(|top| dirs_deepest_first(top))
        .filter(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(&is_container)
        })
        .collect()
}

/// Containers the runtime still has state for under `root`.
fn runtime_containers(root: &Path) -> Vec<String> {
    let out = Command::new(RUNTIME)
        .arg("--root")
        .arg(root)
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slipway-runtime list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// A host directory an engine may create outside the test's temp dir: removed at the end
/// (when empty) only if it did not exist at the start.
struct HostDirIfCreated {
    path: PathBuf,
    existed: bool,
}

impl HostDirIfCreated {
    fn note(path: &str) -> HostDirIfCreated {
        HostDirIfCreated {
            path: PathBuf::from(path),
            existed: Path::new(path).exists(),
        }
    }

    fn tidy(&self) {
        if !self.existed {
            // rmdir only: another engine user's files keep it (and us from touching them).
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------------

/// One isolated podman: its own storage, run and temp dirs, config files, cgroup parent,
/// busybox rootfs and logged runtime.
struct Podman {
    dir: tempfile::TempDir,
    podman: PathBuf,
    rootfs: PathBuf,
    runtime: LoggedRuntime,
    cgroup_parent: String,
    finished: bool,
}

impl Podman {
    fn new() -> Podman {
        let podman = require("podman", "podman");
        require("conmon", "conmon");
        become_subreaper();
        let dir = tempfile::Builder::new()
            .prefix("slipway-engines-podman")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // podman writes /etc/hosts, /etc/hostname and /run/.containerenv into a --rootfs
        // tree: give each test its own.
        let rootfs = d.join("rootfs");
        make_busybox_rootfs(&rootfs);
        for sub in ["root", "runroot", "tmp", "networks"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // The defaults would touch host-wide state: a SHM lock segment (/dev/shm/libpod_lock)
        // shared by every podman, and netavark's run dir /run/containers/networks. File locks
        // live in tmpdir; the CNI backend keeps its lock in network_config_dir. No events
        // are recorded. This file replaces every other containers.conf, so the default
        // PATH for containers without an image config is restated.
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\n\
                 env = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]\n\
                 [engine]\n\
                 events_logger = \"none\"\n\
                 lock_type = \"file\"\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 network_config_dir = \"{}\"\n",
                d.join("networks").display()
            ),
        )
        .unwrap();
        // No registry is ever searched or contacted.
        std::fs::write(
            d.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("root").display(),
                d.join("runroot").display()
            ),
        )
        .unwrap();
        let runtime = LoggedRuntime::new(d);
        Podman {
            podman,
            rootfs,
            runtime,
            cgroup_parent: format!("/{}", unique("slipway-engines")),
            finished: false,
            dir,
        }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// `podman` with the global flags this host needs and the isolated state.
    fn podman(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(&self.podman);
        cmd.env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .arg("--runtime")
            .arg(&self.runtime.wrapper)
            // On a systemd host podman would pick the systemd manager and pass
            // `slice:prefix:name` cgroup paths, which slipway-runtime refuses.
            .arg("--cgroup-manager=cgroupfs")
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(args);
        run_bounded(cmd, self.dir.path())
    }

    /// `podman run` flags before the rootfs. They must precede `--rootfs DIR`: podman stops
    /// parsing flags at the first positional argument, so anything after the rootfs becomes
    /// part of the container's command.
    fn run_flags(&self) -> Vec<String> {
        vec![
            // As root, podman asks for nofile and nproc of 1048576 by default, above the
            // hard limits a CI host may have; without CAP_SYS_RESOURCE in the bounding set
            // the runtime cannot raise a hard limit, so the container would not start.
            "--ulimit".into(),
            "nofile=1024:1024".into(),
            "--ulimit".into(),
            "nproc=1024:1024".into(),
            "--network".into(),
            "none".into(),
            // The container's cgroup and conmon's go under a parent of this test alone.
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
            "--rootfs".into(),
            self.rootfs.to_str().unwrap().into(),
        ]
    }

    /// Remove every container, wait for conmon and cleanup processes to exit, and assert
    /// that neither podman nor the runtime left a container, mount, cgroup or process.
    fn finish(mut self) {
        self.finished = true;
        self.runtime.show("podman");
        let left = self.podman(&["ps", "--all", "--quiet"]);
        assert_eq!(left.code, Some(0), "podman ps: {left}");
        assert_eq!(left.stdout.trim(), "", "podman still has containers");
        let procs = wait_processes_gone(self.dir.path());
        assert!(procs.is_empty(), "podman processes left: {procs:?}");
        assert_eq!(
            runtime_containers(&self.runtime.default_root),
            Vec::<String>::new(),
            "slipway-runtime still has container state"
        );
        let mounts = mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let leaked = container_cgroups_left(&self.cgroup_parent, |n| n.starts_with("libpod-"));
        assert!(
            leaked.is_empty(),
            "slipway-runtime delete left container cgroups: {leaked:?}"
        );
        // podman leaves its conmon cgroup and the parent: ours to remove. A cgroup that
        // still holds a process cannot be removed.
        let failed = remove_cgroup_tree(&self.cgroup_parent);
        assert!(failed.is_empty(), "cgroups not removable: {failed:?}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.finished && !std::thread::panicking() {
            return;
        }
        if !self.finished {
            self.runtime.show("podman");
        }
        // After a failure: clear whatever is left, best effort.
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        for (pid, _) in wait_processes_gone(self.dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for id in runtime_containers(&self.runtime.default_root) {
            let _ = Command::new(RUNTIME)
                .arg("--root")
                .arg(&self.runtime.default_root)
                .args(["delete", "--force", &id])
                .output();
        }
        unmount_all_under(self.dir.path());
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

#[test]
fn podman_run_returns_the_output_and_exit_code() {
    let p = Podman::new();
    let mut args = vec!["run".to_string(), "--rm".into()];
    args.extend(p.run_flags());
    args.extend(["sh", "-c", "echo hi; ulimit -n; exit 3"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = p.podman(&args);
    assert_eq!(out.code, Some(3), "podman run: {out}");
    // The rlimit podman asked for is the one the container got.
    assert_eq!(out.stdout, "hi\n1024\n", "podman run: {out}");
    p.runtime
        .assert_called("podman", &["create", "start", "delete"]);
    p.finish();
}

#[test]
fn podman_detached_container_exec_stop_rm() {
    let p = Podman::new();
    let name = unique("slipway-engines");
    let mut args = vec![
        "run".to_string(),
        "--detach".into(),
        "--name".into(),
        name.clone(),
    ];
    args.extend(p.run_flags());
    args.extend(["sh", "-c", TERM_AWARE_LOOP].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = p.podman(&args);
    assert_eq!(out.code, Some(0), "podman run -d: {out}");
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "podman run -d prints the container id: {out}");

    let out = p.podman(&["inspect", "--format", "{{.State.Status}}", &name]);
    assert_eq!(out.stdout.trim(), "running", "{out}");

    // exec runs in the same container: it sees the loop as PID 1.
    let out = p.podman(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo from-exec; tr '\\0' ' ' < /proc/1/cmdline; echo; exit 4",
    ]);
    assert_eq!(out.code, Some(4), "podman exec: {out}");
    assert_eq!(
        out.stdout,
        format!("from-exec\nsh -c {TERM_AWARE_LOOP} \n"),
        "podman exec: {out}"
    );

    // SIGTERM reaches PID 1's trap: exit 0 well within the grace period (SIGKILL would
    // give 137).
    let out = p.podman(&["stop", "--time", "60", &name]);
    assert_eq!(out.code, Some(0), "podman stop: {out}");
    let out = p.podman(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &name,
    ]);
    assert_eq!(out.stdout.trim(), "exited 0", "{out}");

    let out = p.podman(&["rm", &name]);
    assert_eq!(out.code, Some(0), "podman rm: {out}");
    p.runtime
        .assert_called("podman", &["create", "start", "exec", "kill", "delete"]);
    p.finish();
}

// ---------------------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------------------

/// The OCI architecture name of this machine.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, path, data).unwrap();
}

/// An OCI image layout archive (`ctr images import` input) holding one uncompressed layer
/// made of `rootfs`, named `name`.
fn oci_image_archive(rootfs: &Path, name: &str) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.append_dir_all(".", rootfs).unwrap();
    let layer = layer.into_inner().unwrap();
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));

    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = format!("sha256:{}", sha256_hex(&config));

    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .unwrap();
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));

    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap(),
            },
        }],
    }))
    .unwrap();

    let mut archive = tar::Builder::new(Vec::new());
    append_file(
        &mut archive,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    append_file(&mut archive, "index.json", &index);
    for (digest, blob) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        let hex = digest.trim_start_matches("sha256:");
        append_file(&mut archive, &format!("blobs/sha256/{hex}"), blob);
    }
    archive.into_inner().unwrap()
}

/// A private containerd daemon (no CRI), with a namespace, a logged runtime and the busybox
/// image imported.
struct Containerd {
    dir: tempfile::TempDir,
    ctr: PathBuf,
    daemon: Option<Child>,
    socket: PathBuf,
    namespace: String,
    runtime: LoggedRuntime,
    image: String,
    host_dirs: Vec<HostDirIfCreated>,
    finished: bool,
}

impl Containerd {
    fn start() -> Containerd {
        let containerd = require("containerd", "containerd");
        let ctr = require("ctr", "containerd");
        require("containerd-shim-runc-v2", "containerd");
        become_subreaper();
        // The v2 shims put their sockets in /run/containerd/s whatever the daemon's state
        // dir (containerd 1.6); everything else below is redirected into our temp dir.
        let host_dirs = vec![
            HostDirIfCreated::note("/run/containerd/s"),
            HostDirIfCreated::note("/run/containerd"),
        ];
        let dir = tempfile::Builder::new()
            .prefix("slipway-engines-containerd")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        // Plugins that would reach outside: CRI (a Kubernetes API, networks), `opt`
        // (/opt/containerd), and snapshotters for filesystems this host does not use.
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\", \
             \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
             \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n  level = \"info\"\n\
             [metrics]\n  address = \"\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let daemon = Command::new(&containerd)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let runtime = LoggedRuntime::new(d);
        let mut c = Containerd {
            ctr,
            daemon: Some(daemon),
            socket,
            namespace: unique("slipway-engines"),
            runtime,
            image: String::new(),
            host_dirs,
            finished: false,
            dir,
        };
        c.wait_ready();
        c.image = format!("slipway.test/{}:latest", unique("busybox"));
        let rootfs = c.dir.path().join("rootfs");
        make_busybox_rootfs(&rootfs);
        let archive = c.dir.path().join("image.tar");
        std::fs::File::create(&archive)
            .unwrap()
            .write_all(&oci_image_archive(&rootfs, &c.image))
            .unwrap();
        let out = c.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert_eq!(out.code, Some(0), "ctr images import: {out}");
        c
    }

    /// Wait (bounded) until the daemon answers on its socket.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "containerd exited at start ({status}):\n{}",
                    self.daemon_log()
                );
            }
            if self.socket.exists() && self.ctr(&["version"]).code == Some(0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {COMMAND_TIMEOUT:?}:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Finished {
        let mut cmd = Command::new(&self.ctr);
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        run_bounded(cmd, self.dir.path())
    }

    /// Where the shim tells the runtime to keep state (`--runc-root`).
    fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("runtime-root")
    }

    /// Client-side FIFOs for the container's stdio (ctr's default is /run/containerd/fifo).
    fn fifo_dir(&self) -> String {
        self.dir.path().join("fifo").to_str().unwrap().into()
    }

    /// `ctr run` with slipway-runtime as the runtime binary.
    fn run(&self, flags: &[&str], id: &str, command: &[&str]) -> Finished {
        let wrapper = self.runtime.wrapper.to_str().unwrap().to_string();
        let root = self.runtime_root().to_str().unwrap().to_string();
        let fifo = self.fifo_dir();
        let mut args = vec!["run"];
        args.extend(flags);
        args.extend([
            "--runc-binary",
            &wrapper,
            "--runc-root",
            &root,
            "--fifo-dir",
            &fifo,
            &self.image,
            id,
        ]);
        args.extend(command);
        self.ctr(&args)
    }

    /// Wait (bounded) until `ctr task ls` shows `id` as `status`.
    fn wait_task_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let out = self.ctr(&["task", "ls"]);
            let found = out.stdout.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&id) && f.get(2) == Some(&status)
            });
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never became {status}: {out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the daemon (bounded; SIGKILL if SIGTERM is not enough).
    fn stop_daemon(&mut self) -> Option<std::process::ExitStatus> {
        let mut daemon = self.daemon.take()?;
        let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = daemon.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = daemon.kill();
                let _ = daemon.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Remove the image, stop the daemon, and assert that neither containerd nor the runtime
    /// left a container, mount, cgroup, state or process.
    fn finish(mut self) {
        self.finished = true;
        self.runtime.show("containerd");
        let out = self.ctr(&["containers", "list", "--quiet"]);
        assert_eq!(
            out.stdout.trim(),
            "",
            "containerd still has containers: {out}"
        );
        let out = self.ctr(&["images", "remove", &self.image]);
        assert_eq!(out.code, Some(0), "ctr images remove: {out}");
        let status = self.stop_daemon();
        assert!(
            status.is_some(),
            "containerd did not stop on SIGTERM within {EXIT_TIMEOUT:?}"
        );
        let procs = wait_processes_gone(self.dir.path());
        assert!(procs.is_empty(), "containerd processes left: {procs:?}");
        let state = self.runtime_root().join(&self.namespace);
        assert_eq!(
            runtime_containers(&state),
            Vec::<String>::new(),
            "slipway-runtime still has container state"
        );
        let mounts = mounts_under(self.dir.path());
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        // ctr's default cgroup is /NAMESPACE/ID: the runtime must remove ID's; the
        // namespace level is made on the way and left, as runc leaves it.
        let cgroup = format!("/{}", self.namespace);
        let leaked = container_cgroups_left(&cgroup, |n| n != self.namespace);
        assert!(
            leaked.is_empty(),
            "slipway-runtime delete left container cgroups: {leaked:?}"
        );
        let failed = remove_cgroup_tree(&cgroup);
        assert!(failed.is_empty(), "cgroups not removable: {failed:?}");
        for d in &self.host_dirs {
            d.tidy();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.finished && !std::thread::panicking() {
            return;
        }
        if !self.finished {
            self.runtime.show("containerd");
        }
        eprintln!("--- containerd log:\n{}", self.daemon_log());
        // After a failure: clear whatever is left, best effort.
        if self.daemon.is_some() {
            let out = self.ctr(&["tasks", "list", "--quiet"]);
            for id in out.stdout.lines() {
                let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
                let _ = self.ctr(&["tasks", "delete", "--force", id]);
            }
            let out = self.ctr(&["containers", "list", "--quiet"]);
            for id in out.stdout.lines() {
                let _ = self.ctr(&["containers", "delete", id]);
            }
            let _ = self.ctr(&["images", "remove", &self.image]);
        }
        self.stop_daemon();
        for (pid, _) in processes_mentioning(self.dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let state = self.runtime_root().join(&self.namespace);
        for id in runtime_containers(&state) {
            let _ = Command::new(RUNTIME)
                .arg("--root")
                .arg(&state)
                .args(["delete", "--force", &id])
                .output();
        }
        unmount_all_under(self.dir.path());
        remove_cgroup_tree(&format!("/{}", self.namespace));
        for d in &self.host_dirs {
            d.tidy();
        }
    }
}

#[test]
fn containerd_run_returns_the_output_and_exit_code() {
    let c = Containerd::start();
    let id = unique("run");
    let out = c.run(
        &["--rm"],
        &id,
        &["sh", "-c", "echo hi; echo oops >&2; exit 3"],
    );
    assert_eq!(out.code, Some(3), "ctr run: {out}");
    assert_eq!(out.stdout, "hi\n", "ctr run: {out}");
    assert_eq!(out.stderr, "oops\n", "ctr run: {out}");
    c.runtime
        .assert_called("containerd", &["create", "start", "delete"]);
    c.finish();
}

#[test]
fn containerd_detached_task_exec_kill_rm() {
    let c = Containerd::start();
    let id = unique("task");
    let out = c.run(&["--detach"], &id, &["sh", "-c", TERM_AWARE_LOOP]);
    assert_eq!(out.code, Some(0), "ctr run -d: {out}");
    c.wait_task_status(&id, "RUNNING");

    // exec runs in the same container: it sees the loop as PID 1.
    let fifo = c.fifo_dir();
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "probe",
        "--fifo-dir",
        &fifo,
        &id,
        "sh",
        "-c",
        "echo from-exec; tr '\\0' ' ' < /proc/1/cmdline; echo; exit 4",
    ]);
    assert_eq!(out.code, Some(4), "ctr task exec: {out}");
    assert_eq!(
        out.stdout,
        format!("from-exec\nsh -c {TERM_AWARE_LOOP} \n"),
        "ctr task exec: {out}"
    );

    // SIGTERM (ctr's default) reaches PID 1's trap, which exits 0.
    let out = c.ctr(&["task", "kill", &id]);
    assert_eq!(out.code, Some(0), "ctr task kill: {out}");
    c.wait_task_status(&id, "STOPPED");
    // `task rm` exits with the task's status when it is not 0.
    let out = c.ctr(&["task", "rm", &id]);
    assert_eq!(out.code, Some(0), "ctr task rm: {out}");
    let out = c.ctr(&["containers", "rm", &id]);
    assert_eq!(out.code, Some(0), "ctr c rm: {out}");
    c.runtime
        .assert_called("containerd", &["create", "start", "exec", "kill", "delete"]);
    c.finish();
}
