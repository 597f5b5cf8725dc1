//! Deployments: one at a time per app, in the order they came, each through the same steps.
//!
//! 1. `building`: the source archive (uploaded, or downloaded with a size bound) is unpacked
//!    into the deployment's own directory ([`crate::platform::source_archive`]: hostile
//!    entries refused by name), then built by a child process, `slipway build --json`, with
//!    the app's config vars: the daemon is multi-threaded and never forks containers itself.
//!    The child dies with the daemon (parent-death signal, and a closed output pipe stops it
//!    through the build's own cleanup).
//! 2. A release `vN` is made (pending): the slug, the app's config vars now, the process
//!    types.
//! 3. `starting` (`running-postdeploy` while the postdeploy command runs): the supervisor
//!    rolls the release out; the release becomes `succeeded`, or `failed` with the previous
//!    one still serving.
//!
//! Every line goes to `DATA_DIR/deployments/ID.log` and to those following the deployment.
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};

use super::daemon::Daemon;
use super::runner::RolloutError;
use super::wire::{DeploymentEnd, StreamEvent};
use crate::build::slug::is_slug_id;
use crate::config::Config;
use crate::platform::git;
use crate::platform::model::{
    Deployment, DeploymentStatus, Release, ReleaseStatus, SourceKind, POSTDEPLOY,
};
use crate::platform::process_types::ProcessType;
use crate::platform::source_archive;

/// The process name of deployment lines in the app's log (`slipway[deploy]: …`).
pub const DEPLOY_PROCESS: &str = "deploy";

/// Longest download of a source URL.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest JSON result a build prints.
const MAX_BUILD_RESULT: usize = 16 << 20;

/// A running worker of one app.
#[derive(Default)]
struct Worker {
    /// Its build child, while one runs.
    build_pid: Option<u32>,
    /// The app is being destroyed (or the daemon stops): no more deployments.
    cancelled: Option<&'static str>,
}

/// The deployment queues of every app.
pub struct Deployer {
    workers: Mutex<HashMap<String, Worker>>,
    /// Followers of a running deployment wait on its sender; gone once it ended.
    live: Mutex<HashMap<i64, watch::Sender<u64>>>,
    build_slots: Arc<Semaphore>,
}

/// A deployment's log: its file, and a counter followers wait on.
#[derive(Clone)]
pub struct DeployLog {
    inner: Arc<Mutex<std::fs::File>>,
    notify: watch::Sender<u64>,
}

impl DeployLog {
    /// Appends one line (or several, split at line breaks).
    pub fn line(&self, text: &str) {
        {
            let mut f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            for l in text.trim_end_matches('\n').split('\n') {
                let _ = writeln!(f, "{}", l.trim_end_matches('\r'));
            }
        }
        self.notify.send_modify(|n| *n += 1);
    }
}

/// The final result of the build child, as much as the platform needs.
#[derive(Debug, Deserialize)]
struct BuildOutput {
    slug: String,
    stack: String,
    process_types: Vec<ProcessType>,
    #[serde(default)]
    config_vars: Vec<(String, String)>,
}

/// Why a deployment failed: its final status and the reason.
type Failure = (DeploymentStatus, String);

impl Deployer {
    pub fn new(parallel_builds: usize) -> Deployer {
        Deployer {
            workers: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            build_slots: Arc::new(Semaphore::new(parallel_builds.max(1))),
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Worker>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure `app`'s queued deployments run (starts its worker when it has none).
    pub fn enqueue(&self, d: &Arc<Daemon>, app: &str) {
        let mut workers = self.workers();
        if workers.contains_key(app) {
            return;
        }
        workers.insert(app.to_string(), Worker::default());
        let (d, app) = (d.clone(), app.to_string());
        tokio::spawn(async move { work(d, app).await });
    }

    /// A receiver that changes as deployment `id` writes lines; `None` once it ended (or
    /// before it started).
    pub fn subscribe(&self, id: i64) -> Option<watch::Receiver<u64>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|s| s.subscribe())
    }

    /// Stops `app`'s deployments: queued ones become `aborted`, a running build is stopped,
    /// and this returns once its worker is gone (a rollout in progress finishes first).
    pub async fn cancel_app(&self, d: &Daemon, app: &str, reason: &'static str) {
        let pid = {
            let mut workers = self.workers();
            match workers.get_mut(app) {
                Some(w) => {
                    w.cancelled = Some(reason);
                    w.build_pid
                }
                None => None,
            }
        };
        if let Ok(queued) = d.store.deployments_in(&[DeploymentStatus::Queued]) {
            for q in queued.iter().filter(|q| q.app == app) {
                let _ =
                    d.store
                        .set_deployment_status(q.id, DeploymentStatus::Aborted, Some(reason));
            }
        }
        if let Some(pid) = pid {
            terminate(pid);
        }
        while self.workers().contains_key(app) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// At shutdown: stop every running build; their deployments become `aborted`.
    pub async fn stop_all(&self, d: &Daemon) {
        let apps: Vec<String> = self.workers().keys().cloned().collect();
        for app in apps {
            let pid = {
                let mut workers = self.workers();
                workers.get_mut(&app).and_then(|w| {
                    w.cancelled = Some("the daemon was stopped; deploy again");
                    w.build_pid
                })
            };
            if let Some(pid) = pid {
                terminate(pid);
            }
        }
        // Builds stop within their grace period; rollouts in progress are left to finish or
        // to be aborted at the next start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !self.workers().values().all(|w| w.build_pid.is_none())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = d;
    }
}

/// SIGTERM to a build child: it stops its container and cleans up.
fn terminate(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// One app's worker: its queued deployments, oldest first, until none is left.
async fn work(d: Arc<Daemon>, app: String) {
    loop {
        let next = {
            let mut workers = d.deployer.workers();
            let cancelled = workers.get(&app).and_then(|w| w.cancelled).is_some();
            let next = if cancelled {
                None
            } else {
                d.store.next_queued(&app).unwrap_or_else(|e| {
                    eprintln!("slipway daemon: {e}");
                    None
                })
            };
            if next.is_none() {
                workers.remove(&app);
                return;
            }
            next
        };
        if let Some(dep) = next {
            run_one(&d, dep).await;
        }
    }
}

/// Creates the log of deployment `id` and makes it followable.
fn open_log(d: &Daemon, id: i64) -> std::io::Result<DeployLog> {
    let dir = d.deployments_dir();
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(format!("{id}.log")))?;
    let (tx, _) = watch::channel(0);
    d.deployer
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, tx.clone());
    Ok(DeployLog {
        inner: Arc::new(Mutex::new(file)),
        notify: tx,
    })
}

async fn run_one(d: &Arc<Daemon>, dep: Deployment) {
    let log = match open_log(d, dep.id) {
        Ok(log) => log,
        Err(e) => {
            let reason = format!("its log could not be written: {e}; check the data directory");
            let _ = d
                .store
                .set_deployment_status(dep.id, DeploymentStatus::Aborted, Some(&reason));
            return;
        }
    };
    let _ = d
        .store
        .set_deployment_status(dep.id, DeploymentStatus::Building, None);
    log.line(&format!(
        "-----> Deployment {} of {} from {}",
        dep.id, dep.app, dep.source
    ));
    d.log(
        &dep.app,
        DEPLOY_PROCESS,
        &format!("deployment {} started ({})", dep.id, dep.source),
    );
    let work_dir = d.deployments_dir().join(dep.id.to_string());
    let built = build(d, &dep, &work_dir, &log).await;
    let _ = tokio::task::spawn_blocking({
        let work_dir = work_dir.clone();
        move || crate::build::archive::remove_tree(&work_dir)
    })
    .await;
    let result = match built {
        Ok(output) => release_and_roll_out(d, &dep, output, &log).await,
        Err(failure) => Err(failure),
    };
    let cancelled = d.deployer.workers().get(&dep.app).and_then(|w| w.cancelled);
    let (status, reason) = match result {
        Ok(()) => (DeploymentStatus::Success, None),
        Err(_) if cancelled.is_some() => (DeploymentStatus::Aborted, cancelled.map(String::from)),
        Err((status, reason)) => (status, Some(reason)),
    };
    let _ = d
        .store
        .set_deployment_status(dep.id, status, reason.as_deref());
    let release = d
        .store
        .deployment(dep.id)
        .ok()
        .flatten()
        .and_then(|x| x.release);
    match (&reason, status) {
        (None, _) => {
            let url = d.url(&dep.app);
            log.line(&format!(
                "-----> Released v{} — {url} deployed",
                release.unwrap_or(0)
            ));
            d.log(
                &dep.app,
                DEPLOY_PROCESS,
                &format!(
                    "deployment {} succeeded: release v{} serves {url}",
                    dep.id,
                    release.unwrap_or(0)
                ),
            );
        }
        (Some(reason), status) => {
            log.line(&format!(" !     Deployment failed ({status}): {reason}"));
            d.log(
                &dep.app,
                DEPLOY_PROCESS,
                &format!("deployment {} failed ({status}): {reason}", dep.id),
            );
        }
    }
    // Followers see the end once the sender is gone.
    d.deployer
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&dep.id);
}

/// Fetches (when a URL), unpacks and builds the source: the build child's result.
async fn build(
    d: &Arc<Daemon>,
    dep: &Deployment,
    work_dir: &Path,
    log: &DeployLog,
) -> Result<BuildOutput, Failure> {
    let fail = |reason: String| (DeploymentStatus::BuildError, reason);
    tokio::fs::create_dir_all(work_dir)
        .await
        .map_err(|e| fail(format!("creating {}: {e}", work_dir.display())))?;
    let (root, source_version) = match dep.source_kind {
        SourceKind::Git => check_out(d, dep, work_dir, log).await.map_err(fail)?,
        SourceKind::Archive | SourceKind::Url => (
            unpack(d, dep, work_dir, log).await.map_err(fail)?,
            dep.source_version.clone(),
        ),
    };

    let _slot = d
        .build_slots_acquire(log)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let app = d.store.get_app(&dep.app).map_err(|e| fail(e.to_string()))?;
    let mut cmd = tokio::process::Command::new(&d.opts.slipway_exe);
    cmd.arg("build")
        .arg("--json")
        .arg("-a")
        .arg(&dep.app)
        .arg("--timeout")
        .arg(d.opts.build_timeout.as_secs().to_string());
    if d.config().allow_local_buildpacks {
        cmd.arg("--allow-local-buildpacks");
    }
    if let Some(commit) = &source_version {
        cmd.arg("--source-version").arg(commit);
    }
    // Config vars go through a file only root can read: on the command line any local user
    // would see them in /proc/PID/cmdline.
    let env_file = work_dir.join("env.json");
    let vars: std::collections::BTreeMap<&String, &String> = app.config.iter().collect();
    write_private(
        &env_file,
        &serde_json::to_vec(&vars).expect("config vars serialize"),
    )
    .map_err(|e| fail(format!("writing {}: {e}", env_file.display())))?;
    cmd.arg("--env-file").arg(&env_file);
    cmd.arg(&root)
        .envs(config_env(d.config()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The build goes when the daemon goes (SIGTERM: it cleans up its container).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        fail(format!(
            "the build could not start ({}): {e}",
            d.opts.slipway_exe.display()
        ))
    })?;
    if let Some(w) = d.deployer.workers().get_mut(&dep.app) {
        w.build_pid = child.id();
        if w.cancelled.is_some() {
            if let Some(pid) = child.id() {
                terminate(pid);
            }
        }
    }
    let stderr = child.stderr.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let lines = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut last = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                log.line(&line);
                last = line;
            }
            last
        })
    };
    let mut result = Vec::new();
    let read = (&mut stdout)
        .take(MAX_BUILD_RESULT as u64)
        .read_to_end(&mut result)
        .await;
    let status = child.wait().await;
    let last_line = lines.await.unwrap_or_default();
    if let Some(w) = d.deployer.workers().get_mut(&dep.app) {
        w.build_pid = None;
    }
    let status = status.map_err(|e| fail(format!("waiting for the build: {e}")))?;
    if !status.success() {
        let reason = last_line
            .strip_prefix("error: ")
            .unwrap_or(&last_line)
            .to_string();
        return Err(fail(if reason.is_empty() {
            format!("the build failed ({status})")
        } else {
            reason
        }));
    }
    read.map_err(|e| fail(format!("reading the build's result: {e}")))?;
    let output: BuildOutput = serde_json::from_slice(&result)
        .map_err(|e| fail(format!("the build's result is not the JSON expected: {e}")))?;
    if !is_slug_id(&output.slug) {
        return Err(fail(format!(
            "the build returned no slug id ({:?})",
            output.slug
        )));
    }
    if output.process_types.iter().all(|p| p.name == POSTDEPLOY) {
        return Err(fail(
            "the app has no process types: add a Procfile (web: <command>) so that it can run"
                .into(),
        ));
    }
    Ok(output)
}

/// Downloads (when a URL) and unpacks the archive of `dep`: the source's root.
async fn unpack(
    d: &Daemon,
    dep: &Deployment,
    work_dir: &Path,
    log: &DeployLog,
) -> Result<PathBuf, String> {
    let archive = work_dir.join("archive");
    if let (SourceKind::Url, Some(url)) = (dep.source_kind, &dep.source_url) {
        log.line(&format!("-----> Downloading {url}"));
        download(url, &archive, d.opts.archive_limits.max_archive_bytes).await?;
    }
    log.line("-----> Unpacking the source");
    let src = work_dir.join("src");
    let limits = d.opts.archive_limits;
    let root = tokio::task::spawn_blocking({
        let (archive, src) = (archive.clone(), src.clone());
        move || {
            std::fs::create_dir_all(&src)
                .map_err(|e| format!("creating {}: {e}", src.display()))?;
            source_archive::unpack(&archive, &src, &limits).map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| format!("unpacking stopped: {e}"))??;
    let _ = tokio::fs::remove_file(&archive).await;
    Ok(root)
}

/// Fetches the branch of a `git` deployment into the app's repository and checks the commit
/// out, submodules included: the source's root and the commit.
async fn check_out(
    d: &Daemon,
    dep: &Deployment,
    work_dir: &Path,
    log: &DeployLog,
) -> Result<(PathBuf, Option<String>), String> {
    let (Some(url), Some(branch)) = (dep.source_url.clone(), dep.git_branch.clone()) else {
        return Err("the deployment names no repository and branch".into());
    };
    log.line(&format!(
        "-----> Fetching {branch} from {}",
        git::without_credentials(&url)
    ));
    let repo = git::repo_dir(&d.config().data_dir, &dep.app);
    let src = work_dir.join("src");
    let limits = d.opts.archive_limits;
    let wanted = dep.source_version.clone();
    let (commit, submodules) = tokio::task::spawn_blocking(move || {
        git::ensure_repo(&repo)?;
        let head = git::fetch_branch(&repo, &url, &branch)?;
        let commit = match wanted {
            Some(c) => git::resolve_commit(&repo, &c).map_err(|_| {
                git::GitError::Refused(format!(
                    "commit {c} is not on branch {branch} of {} (was it force-pushed away?); push again",
                    git::without_credentials(&url)
                ))
            })?,
            None => head,
        };
        git::checkout(&repo, &commit, &src, &limits, &[], Some(&url)).map(|n| (commit, n))
    })
    .await
    .map_err(|e| format!("the checkout stopped: {e}"))?
    .map_err(|e| e.to_string())?;
    log.line(&format!(
        "-----> Checked out {commit}{}",
        match submodules {
            0 => String::new(),
            1 => " with 1 submodule".into(),
            n => format!(" with {n} submodules"),
        }
    ));
    Ok((work_dir.join("src"), Some(commit)))
}

impl Daemon {
    /// A build slot; says so in the log when the build waits for one.
    async fn build_slots_acquire(
        &self,
        log: &DeployLog,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError> {
        let slots = self.deployer.build_slots.clone();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(_) => {
                log.line("-----> Waiting for a build slot (other apps are building)");
                slots.acquire_owned().await
            }
        }
    }
}

/// The environment that hands the daemon's Config to `slipway build`.
pub fn config_env(c: &Config) -> Vec<(&'static str, String)> {
    let path = |p: &Path| p.display().to_string();
    vec![
        ("SLIPWAY_DATA_DIR", path(&c.data_dir)),
        ("SLIPWAY_RUN_DIR", path(&c.run_dir)),
        ("SLIPWAY_STACKS_DIR", path(&c.stacks_dir)),
        ("SLIPWAY_BUILDPACKS_DIR", path(&c.buildpacks_dir)),
        ("SLIPWAY_RUNTIME", path(&c.runtime)),
        ("SLIPWAY_BUILD_BRIDGE", c.build_network.bridge.clone()),
        ("SLIPWAY_BUILD_SUBNET", c.build_network.subnet.clone()),
        ("SLIPWAY_APP_BRIDGE", c.app_network.bridge.clone()),
        ("SLIPWAY_APP_SUBNET", c.app_network.subnet.clone()),
    ]
}

/// Downloads `url` to `dest` with curl (http and https only, redirects followed), at most
/// `limit` bytes whatever the server announces.
async fn download(url: &str, dest: &Path, limit: u64) -> Result<(), String> {
    let mut child = tokio::process::Command::new("curl")
        .args([
            "--fail",
            "--silent",
            "--show-error",
            "--location",
            "--max-redirs",
            "5",
            "--proto",
            "=http,https",
            "--proto-redir",
            "=http,https",
            "--max-time",
            &DOWNLOAD_TIMEOUT.as_secs().to_string(),
            "--max-filesize",
            &limit.to_string(),
            "--output",
            "-",
            "--",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("curl could not start: {e}; install curl"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = out
            .read(&mut buf)
            .await
            .map_err(|e| format!("downloading {url}: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            let _ = child.kill().await;
            return Err(format!(
                "{url} is larger than {limit} bytes; deploy a smaller archive"
            ));
        }
        file.write_all(&buf[..n])
            .await
            .map_err(|e| format!("writing {}: {e}", dest.display()))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("writing {}: {e}", dest.display()))?;
    let mut message = String::new();
    let _ = err.read_to_string(&mut message).await;
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for curl: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{url} could not be downloaded: {}; check the URL (http or https) and that the archive is there",
            message.trim()
        ));
    }
    Ok(())
}

/// Makes the release of a built deployment and rolls it out, holding the app's lock.
async fn release_and_roll_out(
    d: &Arc<Daemon>,
    dep: &Deployment,
    output: BuildOutput,
    log: &DeployLog,
) -> Result<(), Failure> {
    let lock = d.app_lock(&dep.app);
    let _guard = lock.lock().await;
    let internal = |e: String| (DeploymentStatus::CrashedError, e);
    let app = d
        .store
        .get_app(&dep.app)
        .map_err(|e| (DeploymentStatus::Aborted, e.to_string()))?;
    if d.deployer
        .workers()
        .get(&dep.app)
        .and_then(|w| w.cancelled)
        .is_some()
    {
        return Err((DeploymentStatus::Aborted, "cancelled".into()));
    }
    // The app's config vars now; a buildpack's config_vars only fill in what the app lacks.
    let mut config = app.config.clone();
    for (k, v) in output.config_vars {
        config.entry(k).or_insert(v);
    }
    let release = d
        .store
        .create_release(
            &dep.app,
            &output.slug,
            &output.stack,
            &config,
            &output.process_types,
            &format!("deploy {}", dep.id),
        )
        .map_err(|e| internal(e.to_string()))?;
    let _ = d.store.set_deployment_release(dep.id, release.version);
    let _ = d
        .store
        .set_deployment_status(dep.id, DeploymentStatus::Starting, None);
    log.line(&format!(
        "-----> Starting {} ({})",
        release.label(),
        release
            .process_types
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let has_postdeploy = release.command(POSTDEPLOY).is_some();
    let store = d.store.clone();
    let id = dep.id;
    let log2 = log.clone();
    let postdeploy_seen = std::sync::atomic::AtomicBool::new(false);
    let sink = Arc::new(move |line: &str| {
        if has_postdeploy
            && line.starts_with("----->")
            && line.contains(POSTDEPLOY)
            && !postdeploy_seen.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = store.set_deployment_status(id, DeploymentStatus::RunningPostdeploy, None);
        }
        // The supervisor's steps read as the build's do; its details are indented.
        if line.starts_with("----->") || line.starts_with(" !") {
            log2.line(line);
        } else {
            log2.line(&format!("       {line}"));
        }
    });
    roll_out(d, &release, sink).await.map_err(|e| {
        let status = match &e {
            RollOutFailure::Rollout(RolloutError::BootTimeout { .. }) => {
                DeploymentStatus::TimeoutError
            }
            RollOutFailure::Rollout(
                RolloutError::HookFailed { .. } | RolloutError::HookTimeout,
            ) => DeploymentStatus::HookError,
            _ => DeploymentStatus::CrashedError,
        };
        (
            status,
            format!("{e}; {}", previous_note(d, &dep.app, release.version)),
        )
    })
}

/// What serves now that release `failed` did not go live.
fn previous_note(d: &Daemon, app: &str, failed: u32) -> String {
    match d.store.current_release(app) {
        Ok(Some(r)) if r.version != failed => format!("{} keeps serving", r.label()),
        _ => "the app has no release serving yet".into(),
    }
}

/// Why a rollout failed.
#[derive(Debug, thiserror::Error)]
pub enum RollOutFailure {
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error("{0}")]
    Prepare(String),
}

/// Rolls `release` out through the supervisor (blocking, on a blocking thread) and records
/// whether it went live. The caller holds the app's lock.
pub async fn roll_out(
    d: &Arc<Daemon>,
    release: &Release,
    log: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<(), RollOutFailure> {
    let d2 = d.clone();
    let r = release.clone();
    let result = tokio::task::spawn_blocking(move || {
        let runner_release = d2
            .runner_release(&r)
            .map_err(|e| RollOutFailure::Prepare(e.message))?;
        let formation = d2
            .formation_for(&r)
            .map_err(|e| RollOutFailure::Prepare(e.to_string()))?;
        d2.runner
            .rollout(&runner_release, &formation, &mut |line| log(line))
            .map_err(RollOutFailure::from)
    })
    .await
    .unwrap_or_else(|e| Err(RollOutFailure::Prepare(format!("the rollout stopped: {e}"))));
    let status = if result.is_ok() {
        ReleaseStatus::Succeeded
    } else {
        ReleaseStatus::Failed
    };
    let _ = d
        .store
        .set_release_status(&release.app, release.version, status);
    match &result {
        Ok(()) => d.log(
            &release.app,
            DEPLOY_PROCESS,
            &format!("release {} ({}) is live", release.label(), release.cause),
        ),
        Err(e) => d.log(
            &release.app,
            DEPLOY_PROCESS,
            &format!(
                "release {} ({}) failed: {e}",
                release.label(),
                release.cause
            ),
        ),
    }
    result
}

/// Streams deployment `id` as JSON lines ([`StreamEvent`]): its log so far, what it writes
/// next, and how it ended.
pub fn follow(d: Arc<Daemon>, id: i64, tx: mpsc::Sender<Bytes>) {
    tokio::spawn(async move {
        let path = d.deployments_dir().join(format!("{id}.log"));
        let mut offset = 0u64;
        let mut partial = String::new();
        loop {
            // Subscribe before reading, so that a line written after the read wakes us.
            let mut rx = d.deployer.subscribe(id);
            let state = d.store.deployment(id).ok().flatten();
            let Some(dep) = state else { return };
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                use tokio::io::AsyncSeekExt;
                if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                    let mut buf = Vec::new();
                    if let Ok(n) = f.read_to_end(&mut buf).await {
                        offset += n as u64;
                        partial.push_str(&String::from_utf8_lossy(&buf));
                    }
                }
            }
            while let Some(pos) = partial.find('\n') {
                let line: String = partial.drain(..=pos).collect();
                let event = StreamEvent::Line {
                    line: line.trim_end_matches('\n').to_string(),
                };
                if tx.send(json_line(&event)).await.is_err() {
                    return;
                }
            }
            if dep.status.is_final() && rx.is_none() {
                let end = StreamEvent::End(DeploymentEnd {
                    status: dep.status,
                    release: dep.release,
                    url: (dep.status == DeploymentStatus::Success).then(|| d.url(&dep.app)),
                    reason: dep.reason.clone(),
                });
                let _ = tx.send(json_line(&end)).await;
                return;
            }
            match rx.as_mut() {
                Some(rx) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(250)).await,
            }
            if tx.is_closed() {
                return;
            }
        }
    });
}

fn json_line(event: &StreamEvent) -> Bytes {
    let mut v = serde_json::to_vec(event).expect("serializes");
    v.push(b'\n');
    Bytes::from(v)
}

/// The path the uploaded archive of deployment `id` is moved to before it is queued.
pub fn archive_path(d: &Daemon, id: i64) -> PathBuf {
    d.deployments_dir().join(id.to_string()).join("archive")
}

/// A file of the daemon's own, mode 0600 from its creation.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}
