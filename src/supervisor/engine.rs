//! The supervisor's memory of every app (desired state, instances, pending restarts, scheduled
//! jobs) and the reconcile loop that keeps the host as the desired state says.
//!
//! One lock (`Shared::apps`) guards everything; nothing slow happens under it: monitors are
//! started after it is released (an instance is reserved first, so that no two threads start
//! the same container), and events are delivered after it is released (an `Events`
//! implementation may call back into the supervisor). Operations that change an app's
//! containers (rollout, scale, restart, stop) take the app's operation lock, one at a time.
//!
//! The reconcile thread, every tick:
//! * reads the state files that changed (starting → up), notices monitors that ended, and
//!   turns their end into events and, for the formation's containers, a restart after the
//!   policy's delay;
//! * stops web containers that never bound their port (boot timeout), containers beyond the
//!   formation, duplicates;
//! * starts what the formation lacks and what is due to restart, and scheduled jobs;
//! * reports the web backends when they changed.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::cron::{self, CronJobInfo, Job};
use super::events as ev;
use super::spawn::{self, MonitorRef};
use super::state::{self, rfc3339, Exit, Mode, MonitorSpec, MonitorState, Phase, PlaceSpec};
use super::{ContainerInfo, Events, Formation, Options, Release, Size, SupervisorError, WEB_PORT};
use crate::api::routes::Backend;
use crate::config::{Config, NetworkSettings};
use crate::sandbox::{Place, Sandbox};
use crate::stacks::StackStore;
use crate::sys::io::at;

/// What the supervisor keeps of an app across restarts of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub release: Release,
    pub formation: Formation,
    /// The run stack the release runs on (kept: a changed recipe does not move it).
    pub stack_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Part of the formation of the current release: restarted when it ends.
    Current,
    /// Started by a rollout or a replacement, not yet routed or restarted.
    Candidate,
    /// Of a previous release, or replaced: stopping.
    Retiring,
    /// A one-off or a scheduled job: never restarted.
    OneOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Asked for: its end is not a crash.
    Requested,
    /// A web container that never bound its port: its end is a crash.
    BootTimeout,
}

/// How an instance's monitor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exit(Exit),
    /// The container could not be started.
    Failed(String),
    /// The monitor vanished without recording an end (killed).
    Lost,
}

impl Ending {
    pub fn code(&self) -> i32 {
        match self {
            Ending::Exit(e) => e.code,
            Ending::Failed(_) => super::monitor::SETUP_FAILED,
            Ending::Lost => 128 + libc::SIGKILL,
        }
    }
}

/// One run of one container.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub index: u32,
    pub release: u32,
    pub size: Size,
    pub port: u16,
    pub role: Role,
    pub state_file: PathBuf,
    /// None while its monitor is being started.
    pub monitor: Option<MonitorRef>,
    pub phase: Phase,
    pub pid: Option<i32>,
    pub ip: Option<Ipv4Addr>,
    pub started_at: String,
    pub started_ms: u64,
    pub spawned: Instant,
    pub restarts: u32,
    pub backoff_step: u32,
    pub probe: bool,
    pub stop: Option<StopReason>,
    pub signalled: bool,
    /// Set when the monitor has ended.
    pub gone: Option<Ending>,
    /// Its end was told (events), for instances kept after it (candidates).
    announced: bool,
    mtime: Option<SystemTime>,
}

impl Instance {
    pub fn live(&self) -> bool {
        self.gone.is_none() && self.stop.is_none()
    }

    pub fn ready(&self) -> bool {
        self.phase == Phase::Up
    }

    fn info_state(&self) -> &'static str {
        if self.stop.is_some() || self.phase == Phase::Stopping {
            "stopping"
        } else if self.gone.is_some() {
            "crashed"
        } else if self.phase == Phase::Up {
            "up"
        } else {
            "starting"
        }
    }

    /// Send SIGTERM to the monitor (now, or as soon as it exists).
    pub fn request_stop(&mut self, reason: StopReason) {
        if self.stop.is_none() {
            self.stop = Some(reason);
        }
        self.signal_stop();
    }

    fn signal_stop(&mut self) {
        if self.stop.is_some() && !self.signalled {
            if let Some(m) = self.monitor {
                m.signal(Signal::SIGTERM);
                self.signalled = true;
            }
        }
    }
}

/// A crashed container waiting for its restart.
#[derive(Debug, Clone)]
pub struct Pending {
    pub name: String,
    pub kind: String,
    pub index: u32,
    pub due: Instant,
    pub restarts: u32,
    pub backoff_step: u32,
    pub crashed_at: String,
    pub size: Size,
}

#[derive(Debug, Clone)]
pub struct CronSlot {
    pub job: Job,
    pub last: Option<SystemTime>,
    pub next: Option<SystemTime>,
}

/// Everything the supervisor knows of one app.
#[derive(Debug, Default)]
pub struct AppRt {
    pub desired: Option<Desired>,
    pub instances: Vec<Instance>,
    pub pending: Vec<Pending>,
    pub backends: Option<Vec<Backend>>,
    pub removing: bool,
    pub cron: Vec<CronSlot>,
    /// Exit statuses of recent one-offs, by instance id.
    pub exits: VecDeque<(String, i32)>,
}

impl AppRt {
    pub fn find(&mut self, id: &str) -> Option<&mut Instance> {
        self.instances.iter_mut().find(|i| i.id == id)
    }

    /// The web containers the router should use now.
    fn backends_now(&self) -> Vec<Backend> {
        let mut b: Vec<Backend> = self
            .instances
            .iter()
            .filter(|i| i.role == Role::Current && i.kind == "web" && i.live() && i.ready())
            .filter_map(|i| {
                i.ip.map(|ip| Backend {
                    container: i.name.clone(),
                    address: SocketAddr::from((ip, i.port)),
                })
            })
            .collect();
        b.sort_by(|a, b| (&a.container, a.address).cmp(&(&b.container, b.address)));
        b
    }

    /// The backends, when they differ from what was last reported.
    pub fn backends_changed(&mut self) -> Option<Vec<Backend>> {
        let b = self.backends_now();
        if self.backends.as_ref() == Some(&b) {
            return None;
        }
        self.backends = Some(b.clone());
        Some(b)
    }

    fn live_one_offs(&self) -> Vec<u32> {
        self.instances
            .iter()
            .filter(|i| i.role == Role::OneOff && i.gone.is_none() && i.kind == "run")
            .map(|i| i.index)
            .collect()
    }

    fn load_cron(&mut self, now: SystemTime) -> Option<String> {
        self.cron.clear();
        let d = self.desired.as_ref()?;
        match cron::read_jobs(&d.release.slug_dir) {
            Ok(jobs) => {
                self.cron = jobs
                    .into_iter()
                    .map(|job| CronSlot {
                        next: job.schedule.next_after(now),
                        job,
                        last: None,
                    })
                    .collect();
                None
            }
            Err(e) => Some(format!("scheduler: {e}; no job is scheduled")),
        }
    }
}

/// A monitor to start once the lock is released.
pub struct SpawnJob {
    pub app: String,
    pub spec: MonitorSpec,
}

/// What a pass under the lock leaves to do after it.
#[derive(Default)]
pub struct Outbox {
    pub events: Vec<(String, String)>,
    pub backends: Vec<(String, Vec<Backend>)>,
    pub spawns: Vec<SpawnJob>,
    pub sweep: bool,
}

impl Outbox {
    pub fn event(&mut self, app: &str, line: String) {
        self.events.push((app.to_string(), line));
    }
}

/// Paths and settings, fixed for the supervisor's life.
pub struct Settings {
    pub data_dir: PathBuf,
    pub state_root: PathBuf,
    pub desired_dir: PathBuf,
    pub stacks_dir: PathBuf,
    pub place: PlaceSpec,
    pub exe: PathBuf,
    pub options: Options,
}

impl Settings {
    fn new(config: &Config, options: Options) -> Settings {
        let exe = options.monitor_exe.clone().unwrap_or_else(|| {
            let me = std::env::current_exe().unwrap_or_default();
            if me.file_name().is_some_and(|n| n == "slipway") {
                return me;
            }
            let beside = config.runtime.with_file_name("slipway");
            if beside.exists() {
                beside
            } else {
                me
            }
        });
        Settings {
            data_dir: config.data_dir.clone(),
            state_root: config.run_dir.join("supervisor"),
            desired_dir: config.data_dir.join("supervisor").join("apps"),
            stacks_dir: config.stacks_dir.clone(),
            place: PlaceSpec {
                workspaces: config.data_dir.join("containers"),
                run_dir: config.run_dir.clone(),
                bridge: config.app_network.bridge.clone(),
                subnet: config.app_network.subnet.clone(),
                network_state: config.data_dir.join("network"),
                runtime: config.runtime.clone(),
            },
            exe,
            options,
        }
    }

    pub fn sandbox_place(&self) -> Place {
        Place {
            workspaces: self.place.workspaces.clone(),
            run_dir: self.place.run_dir.clone(),
            network: NetworkSettings {
                bridge: self.place.bridge.clone(),
                subnet: self.place.subnet.clone(),
            },
            network_state: self.place.network_state.clone(),
            runtime: self.place.runtime.clone(),
        }
    }

    /// `Sandbox::sweep` of the containers' place, from a thread of its own in a private mount
    /// namespace: the sweep may prepare the network namespace directory (a bind mount), which
    /// must not land in the daemon's (the host's) mount namespace.
    pub fn sweep(&self) {
        let place = self.sandbox_place();
        let t = std::thread::Builder::new()
            .name("supervisor-sweep".into())
            .spawn(move || {
                // unshare(CLONE_NEWNS) from one thread moves only that thread.
                if crate::sandbox::mounts::enter_private_mount_ns().is_ok() {
                    Sandbox::sweep(&place);
                }
            });
        if let Ok(t) = t {
            let _ = t.join();
        }
    }

    fn desired_file(&self, app: &str) -> PathBuf {
        self.desired_dir.join(format!("{app}.json"))
    }
}

pub struct Shared {
    /// One supervisor per run dir: two would each start the formation.
    _lock: nix::fcntl::Flock<std::fs::File>,
    pub settings: Settings,
    pub events: Arc<dyn Events>,
    pub apps: Mutex<BTreeMap<String, AppRt>>,
    /// Notified after every reconcile pass and every change an operation makes.
    pub changed: Condvar,
    quit: AtomicBool,
    ops: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn create_private_dir(dir: &Path) -> Result<(), SupervisorError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(at("create", dir))?;
    Ok(())
}

/// A fresh instance id: `APP.NAME.HEX`, or `APP.HEX` when that would be too long for a
/// network namespace name.
fn new_id(app: &str, name: &str) -> (String, String) {
    let hex = format!("{:08x}", rand::random::<u32>());
    let id = format!("{app}.{name}.{hex}");
    let id = if id.len() <= 64 {
        id
    } else {
        format!("{}.{hex}", &app[..app.len().min(55)])
    };
    (id, format!("{name}.{hex}"))
}

impl Shared {
    pub fn start(
        config: &Config,
        events: Arc<dyn Events>,
        options: Options,
    ) -> Result<Arc<Shared>, SupervisorError> {
        let settings = Settings::new(config, options);
        create_private_dir(&settings.state_root)?;
        create_private_dir(&settings.desired_dir)?;
        let lock_path = settings.state_root.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(at("open", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| SupervisorError::Busy {
                lock: lock_path.clone(),
                why: e.desc().to_string(),
            })?;
        let shared = Arc::new(Shared {
            _lock: lock,
            settings,
            events,
            apps: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            quit: AtomicBool::new(false),
            ops: Mutex::new(HashMap::new()),
        });
        let mut out = Outbox::default();
        {
            let mut apps = shared.lock();
            shared.load_desired(&mut apps, &mut out);
            shared.adopt(&mut apps);
        }
        // Whatever dead monitors left (a reboot, a killed monitor) goes before anything new.
        shared.settings.sweep();
        out.sweep = false;
        shared.deliver(out);
        Ok(shared)
    }

    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, AppRt>> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn quit(&self) {
        self.quit.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// The operation lock of `app`.
    pub fn op(&self, app: &str) -> Arc<Mutex<()>> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.entry(app.to_string()).or_default().clone()
    }

    /// Wait for the next change (or `d`).
    pub fn wait_change<'a>(
        &self,
        guard: MutexGuard<'a, BTreeMap<String, AppRt>>,
        d: Duration,
    ) -> MutexGuard<'a, BTreeMap<String, AppRt>> {
        self.changed
            .wait_timeout(guard, d)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }

    fn load_desired(&self, apps: &mut BTreeMap<String, AppRt>, out: &mut Outbox) {
        let Ok(entries) = std::fs::read_dir(&self.settings.desired_dir) else {
            return;
        };
        let now = self.settings.options.clock.now();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(app) = name.strip_suffix(".json") else {
                continue;
            };
            if crate::applog::validate_app(app).is_err() {
                continue;
            }
            let d: Desired = match std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(d) => d,
                None => {
                    out.event(
                        app,
                        format!(
                            "supervisor: {} cannot be read; the app's formation is not restored (deploy it again)",
                            e.path().display()
                        ),
                    );
                    continue;
                }
            };
            let rt = apps.entry(app.to_string()).or_default();
            rt.desired = Some(d);
            if let Some(msg) = rt.load_cron(now) {
                out.event(app, msg);
            }
        }
    }

    /// Take over the monitors that still run; forget the state of those that do not.
    fn adopt(&self, apps: &mut BTreeMap<String, AppRt>) {
        let Ok(dirs) = std::fs::read_dir(&self.settings.state_root) else {
            return;
        };
        let now_ms = state::unix_ms(SystemTime::now());
        for dir in dirs.flatten() {
            let app = dir.file_name().to_string_lossy().into_owned();
            if crate::applog::validate_app(&app).is_err() {
                continue;
            }
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let fname = f.file_name().to_string_lossy().into_owned();
                if fname.ends_with(".spec.json") {
                    // A monitor that never started: nobody will read it.
                    let _ = std::fs::remove_file(f.path());
                    continue;
                }
                if state::state_file_stem(&fname).is_none() {
                    continue;
                }
                let Some(st) = MonitorState::read(&f.path()) else {
                    let _ = std::fs::remove_file(f.path());
                    continue;
                };
                if !st.monitor_alive() {
                    let _ = std::fs::remove_file(f.path());
                    continue;
                }
                let rt = apps.entry(app.clone()).or_default();
                let current = rt
                    .desired
                    .as_ref()
                    .is_some_and(|d| d.release.version == st.release);
                let role = if st.one_off {
                    Role::OneOff
                } else if current {
                    Role::Current
                } else {
                    Role::Retiring
                };
                let age = Duration::from_millis(now_ms.saturating_sub(st.started_ms));
                let mut inst = Instance {
                    id: st.id.clone(),
                    index: st
                        .name
                        .rsplit_once('-')
                        .and_then(|(_, n)| n.parse().ok())
                        .unwrap_or(1),
                    name: st.name.clone(),
                    kind: st.kind.clone(),
                    release: st.release,
                    size: st.size,
                    port: st.port,
                    role,
                    state_file: f.path(),
                    monitor: Some(MonitorRef {
                        pid: st.monitor_pid,
                        start_time: st.monitor_start_time,
                    }),
                    phase: st.phase,
                    pid: st.pid,
                    ip: st.ip,
                    started_at: st.started_at.clone(),
                    started_ms: st.started_ms,
                    spawned: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                    restarts: st.restarts,
                    backoff_step: st.backoff_step,
                    probe: st.kind == "web" && !st.one_off,
                    stop: None,
                    signalled: false,
                    gone: None,
                    announced: false,
                    mtime: None,
                };
                // A hook belongs to a rollout that died with the previous daemon; an old
                // release's container to a rollout that finished or failed.
                let hook = st.one_off && st.kind != "run";
                if role == Role::Retiring || hook || st.phase == Phase::Stopping {
                    inst.request_stop(StopReason::Requested);
                }
                rt.instances.push(inst);
            }
        }
    }

    /// One pass of the reconcile loop.
    pub fn reconcile(&self) {
        let mut out = Outbox::default();
        {
            let mut apps = self.lock();
            let now = Instant::now();
            let wall = self.settings.options.clock.now();
            for (app, rt) in apps.iter_mut() {
                self.refresh(app, rt, &mut out);
                self.plan(app, rt, now, wall, &mut out);
            }
        }
        self.deliver(out);
        self.changed.notify_all();
    }

    /// `refresh` of one app now, from the caller's thread (a one-off that just ended).
    pub fn refresh_app(&self, app: &str) {
        let mut out = Outbox::default();
        {
            let mut apps = self.lock();
            if let Some(rt) = apps.get_mut(app) {
                self.refresh(app, rt, &mut out);
            }
        }
        self.deliver(out);
        self.changed.notify_all();
    }

    /// Read changed state files and notice ended monitors.
    pub fn refresh(&self, app: &str, rt: &mut AppRt, out: &mut Outbox) {
        for inst in rt.instances.iter_mut() {
            if inst.gone.is_some() {
                continue;
            }
            let Some(m) = inst.monitor else { continue };
            let alive = m.alive();
            let mtime = std::fs::metadata(&inst.state_file)
                .and_then(|md| md.modified())
                .ok();
            if mtime.is_some() && (mtime != inst.mtime || !alive) {
                inst.mtime = mtime;
                if let Some(st) = MonitorState::read(&inst.state_file) {
                    let was = inst.phase;
                    inst.phase = st.phase;
                    inst.pid = st.pid.or(inst.pid);
                    inst.ip = st.ip.or(inst.ip);
                    // The monitor's start time, which a daemon that adopts it reads too.
                    inst.started_at.clone_from(&st.started_at);
                    inst.started_ms = st.started_ms;
                    if st.phase == Phase::Up && was != Phase::Up {
                        out.event(app, ev::state_changed(&inst.name, "starting", "up"));
                    }
                    if !alive {
                        inst.gone = Some(match (&st.exit, &st.error) {
                            (_, Some(e)) => Ending::Failed(e.clone()),
                            (Some(x), None) => Ending::Exit(x.clone()),
                            (None, None) => Ending::Lost,
                        });
                    }
                }
            }
            if !alive {
                if inst.gone.is_none() {
                    inst.gone = Some(Ending::Lost);
                }
                if inst.gone == Some(Ending::Lost) {
                    out.sweep = true;
                }
                let _ = std::fs::remove_file(&inst.state_file);
                let _ = std::fs::remove_file(inst.state_file.with_extension("spec.json"));
            }
        }
        // Ended instances: events, restarts; candidates stay for their rollout to see.
        let backoff = self.settings.options.backoff;
        let now_ms = state::unix_ms(SystemTime::now());
        let mut i = 0;
        while i < rt.instances.len() {
            let inst = &rt.instances[i];
            let Some(ending) = inst.gone.clone() else {
                i += 1;
                continue;
            };
            if inst.role == Role::Candidate {
                // Its rollout or replacement sees the end and forgets it.
                if !inst.announced {
                    for line in ev::ended(&inst.name, &ending, inst.size) {
                        out.event(app, line);
                    }
                    rt.instances[i].announced = true;
                }
                i += 1;
                continue;
            }
            let inst = rt.instances.remove(i);
            for line in ev::ended(&inst.name, &ending, inst.size) {
                out.event(app, line);
            }
            if inst.role == Role::OneOff {
                rt.exits.push_back((inst.id.clone(), ending.code()));
                while rt.exits.len() > 64 {
                    rt.exits.pop_front();
                }
                continue;
            }
            let crashed = inst.role == Role::Current
                && inst.stop != Some(StopReason::Requested)
                && !rt.removing;
            if !crashed {
                continue;
            }
            let up_for = Duration::from_millis(now_ms.saturating_sub(inst.started_ms));
            let (delay, step) = backoff.after_crash(inst.backoff_step, up_for);
            let from = if inst.phase == Phase::Up {
                "up"
            } else {
                "starting"
            };
            out.event(app, ev::state_changed(&inst.name, from, "crashed"));
            out.event(app, ev::restarting(&inst.name, delay, inst.restarts + 1));
            rt.pending.retain(|p| p.name != inst.name);
            rt.pending.push(Pending {
                name: inst.name.clone(),
                kind: inst.kind.clone(),
                index: inst.index,
                due: Instant::now() + delay,
                restarts: inst.restarts + 1,
                backoff_step: step,
                crashed_at: rfc3339(SystemTime::now()),
                size: inst.size,
            });
        }
    }

    /// Stop what should not run, start what should, report backends, run due jobs.
    fn plan(&self, app: &str, rt: &mut AppRt, now: Instant, wall: SystemTime, out: &mut Outbox) {
        if rt.removing {
            return;
        }
        let Some(d) = rt.desired.clone() else {
            return;
        };
        let boot = self.settings.options.boot_timeout;
        let scalable: Vec<&str> = d
            .release
            .scalable_types()
            .map(|p| p.name.as_str())
            .collect();
        for inst in rt.instances.iter_mut() {
            if inst.role != Role::Current || !inst.live() || inst.monitor.is_none() {
                continue;
            }
            if inst.probe && !inst.ready() && now.duration_since(inst.spawned) > boot {
                out.event(app, ev::boot_timeout(&inst.name, boot.as_secs()));
                inst.request_stop(StopReason::BootTimeout);
                continue;
            }
            let scale = d.formation.scale_of(&inst.kind);
            if !scalable.contains(&inst.kind.as_str()) || inst.index > scale.count {
                out.event(app, ev::stopping(&inst.name));
                inst.request_stop(StopReason::Requested);
            }
        }
        // Two live containers of one name (a replacement the previous daemon did not finish):
        // the better one stays.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..rt.instances.len() {
            let inst = &rt.instances[i];
            if inst.role != Role::Current || !inst.live() {
                continue;
            }
            match seen.get(&inst.name).copied() {
                None => {
                    seen.insert(inst.name.clone(), i);
                }
                Some(j) => {
                    let other = &rt.instances[j];
                    let keep_new =
                        (inst.ready(), inst.started_ms) > (other.ready(), other.started_ms);
                    let drop_i = if keep_new { j } else { i };
                    if keep_new {
                        seen.insert(inst.name.clone(), i);
                    }
                    let name = rt.instances[drop_i].name.clone();
                    out.event(app, ev::stopping(&name));
                    rt.instances[drop_i].request_stop(StopReason::Requested);
                }
            }
        }
        rt.pending.retain(|p| {
            scalable.contains(&p.kind.as_str()) && p.index <= d.formation.scale_of(&p.kind).count
        });
        let mut due: Vec<Pending> = Vec::new();
        rt.pending.retain(|p| {
            if p.due <= now {
                due.push(p.clone());
                false
            } else {
                true
            }
        });
        for p in due {
            let command = d.release.command(&p.kind).unwrap_or_default().to_string();
            let size = d.formation.scale_of(&p.kind).size;
            self.reserve(
                app,
                rt,
                Reserve {
                    name: p.name.clone(),
                    kind: p.kind.clone(),
                    index: p.index,
                    release: &d.release,
                    size,
                    command,
                    extra_env: &[],
                    stack: &d.stack_dir,
                    role: Role::Current,
                    mode: Mode::Daemon,
                    restarts: p.restarts,
                    backoff_step: p.backoff_step,
                },
                out,
            );
        }
        for pt in d.release.scalable_types() {
            let scale = d.formation.scale_of(&pt.name);
            for index in 1..=scale.count {
                let name = format!("{}-{index}", pt.name);
                let running = rt
                    .instances
                    .iter()
                    .any(|i| i.role == Role::Current && i.live() && i.name == name);
                if running || rt.pending.iter().any(|p| p.name == name) {
                    continue;
                }
                self.reserve(
                    app,
                    rt,
                    Reserve {
                        name,
                        kind: pt.name.clone(),
                        index,
                        release: &d.release,
                        size: scale.size,
                        command: pt.command.clone(),
                        extra_env: &[],
                        stack: &d.stack_dir,
                        role: Role::Current,
                        mode: Mode::Daemon,
                        restarts: 0,
                        backoff_step: 0,
                    },
                    out,
                );
            }
        }
        if let Some(b) = rt.backends_changed() {
            out.backends.push((app.to_string(), b));
        }
        self.run_due_jobs(app, rt, &d, wall, out);
    }

    fn run_due_jobs(
        &self,
        app: &str,
        rt: &mut AppRt,
        d: &Desired,
        wall: SystemTime,
        out: &mut Outbox,
    ) {
        let mut due = Vec::new();
        for slot in rt.cron.iter_mut() {
            if slot.next.is_some_and(|n| n <= wall) {
                slot.last = Some(wall);
                slot.next = slot.job.schedule.next_after(wall);
                due.push(slot.job.clone());
            }
        }
        for job in due {
            let busy = rt.live_one_offs();
            if busy.len() >= self.settings.options.max_one_offs {
                out.event(
                    app,
                    format!(
                        "scheduler: `{}` skipped: {} one-off containers already run, the most allowed",
                        job.line,
                        busy.len()
                    ),
                );
                continue;
            }
            let index = (1..).find(|n| !busy.contains(n)).unwrap_or(1);
            out.event(
                app,
                format!("scheduler: running `{}` as run.{index}", job.line),
            );
            self.reserve(
                app,
                rt,
                Reserve {
                    name: format!("run-{index}"),
                    kind: "run".into(),
                    index,
                    release: &d.release,
                    size: job.size,
                    command: job.command.clone(),
                    extra_env: &[],
                    stack: &d.stack_dir,
                    role: Role::OneOff,
                    mode: Mode::Daemon,
                    restarts: 0,
                    backoff_step: 0,
                },
                out,
            );
        }
    }

    /// Record a new instance (its monitor not yet started) and the job that starts it.
    pub fn reserve(&self, app: &str, rt: &mut AppRt, r: Reserve, out: &mut Outbox) -> String {
        let spec = self.spec(app, &r);
        if r.mode == Mode::Daemon {
            out.event(
                app,
                ev::starting(&r.name, &r.command, r.size, r.release.version),
            );
        }
        rt.instances.push(Instance {
            id: spec.id.clone(),
            name: r.name.clone(),
            kind: r.kind.clone(),
            index: r.index,
            release: r.release.version,
            size: r.size,
            port: WEB_PORT,
            role: r.role,
            state_file: spec.state_file.clone(),
            monitor: None,
            phase: Phase::Starting,
            pid: None,
            ip: None,
            started_at: rfc3339(SystemTime::now()),
            started_ms: state::unix_ms(SystemTime::now()),
            spawned: Instant::now(),
            restarts: r.restarts,
            backoff_step: r.backoff_step,
            probe: spec.probe,
            stop: None,
            signalled: false,
            gone: None,
            announced: false,
            mtime: None,
        });
        let id = spec.id.clone();
        out.spawns.push(SpawnJob {
            app: app.to_string(),
            spec,
        });
        id
    }

    /// The monitor spec of a reservation.
    pub fn spec(&self, app: &str, r: &Reserve) -> MonitorSpec {
        let (id, stem) = new_id(app, &r.name);
        let mut env = r.release.env.clone();
        for (k, v) in r.extra_env {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), v.clone()));
        }
        let one_off = r.role == Role::OneOff;
        MonitorSpec {
            id,
            app: app.to_string(),
            name: r.name.clone(),
            kind: r.kind.clone(),
            index: r.index,
            release: r.release.version,
            size: r.size,
            command: r.command.clone(),
            env,
            port: WEB_PORT,
            slug_dir: r.release.slug_dir.clone(),
            stack_dir: r.stack.to_path_buf(),
            data_dir: self.settings.data_dir.clone(),
            state_file: self
                .settings
                .state_root
                .join(app)
                .join(format!("{stem}.json")),
            place: self.settings.place.clone(),
            mode: r.mode,
            probe: r.kind == "web" && !one_off,
            one_off,
            grace_ms: self.settings.options.stop_grace.as_millis() as u64,
            console_size: None,
            restarts: r.restarts,
            backoff_step: r.backoff_step,
        }
    }

    /// Deliver events and backends, start reserved monitors, sweep.
    pub fn deliver(&self, out: Outbox) {
        let Outbox {
            events,
            backends,
            spawns,
            sweep,
        } = out;
        if sweep {
            self.settings.sweep();
        }
        for (app, line) in &events {
            self.events.event(app, line);
        }
        for (app, b) in backends {
            self.events.backends_changed(&app, b);
        }
        self.launch(spawns);
    }

    /// Start the monitors of reserved instances (in `Daemon` mode).
    pub fn launch(&self, jobs: Vec<SpawnJob>) {
        for job in jobs {
            let dir = job.spec.state_file.parent().map(Path::to_path_buf);
            let result = match dir.as_deref().map(create_private_dir) {
                Some(Err(e)) => Err(e),
                _ => spawn::spawn_daemon(&self.settings.exe, &job.spec),
            };
            let mut apps = self.lock();
            let Some(inst) = apps.get_mut(&job.app).and_then(|rt| rt.find(&job.spec.id)) else {
                continue;
            };
            match result {
                Ok(m) => {
                    inst.monitor = Some(m);
                    inst.signal_stop();
                }
                Err(e) => inst.gone = Some(Ending::Failed(e.to_string())),
            }
        }
        self.changed.notify_all();
    }

    /// Persist the desired state of `app`.
    pub fn save_desired(&self, app: &str, d: &Desired) -> Result<(), SupervisorError> {
        let path = self.settings.desired_file(app);
        let data = serde_json::to_vec_pretty(d).expect("desired state serializes");
        crate::sys::atomic::write(&path, &data)
            .map_err(at("write the app's desired state", &path))?;
        Ok(())
    }

    pub fn forget_desired(&self, app: &str) {
        let _ = std::fs::remove_file(self.settings.desired_file(app));
    }

    /// The run stack `name` (a release's), as stored now.
    pub fn run_stack(&self, name: &str) -> Result<PathBuf, SupervisorError> {
        match StackStore::new(&self.settings.stacks_dir).find(name) {
            Ok(Some(s)) => Ok(s.path),
            Ok(None) => Err(SupervisorError::Stack(format!(
                "no current {name} stack in {} (slipway stacks build {name})",
                self.settings.stacks_dir.display()
            ))),
            Err(e) => Err(SupervisorError::Stack(e.to_string())),
        }
    }

    pub fn desired(&self, app: &str) -> Option<Desired> {
        self.lock().get(app).and_then(|rt| rt.desired.clone())
    }

    pub fn ps(&self, app: &str) -> Vec<ContainerInfo> {
        let apps = self.lock();
        let Some(rt) = apps.get(app) else {
            return Vec::new();
        };
        let mut list: Vec<ContainerInfo> = rt
            .instances
            .iter()
            .filter(|i| i.gone.is_none())
            .map(|i| ContainerInfo {
                name: i.name.clone(),
                kind: i.kind.clone(),
                state: i.info_state().to_string(),
                release: i.release,
                size: i.size,
                pid: i.pid,
                address: i
                    .ip
                    .filter(|_| i.kind == "web")
                    .map(|ip| SocketAddr::from((ip, i.port))),
                restarts: i.restarts,
                started_at: i.started_at.clone(),
            })
            .collect();
        let release = rt.desired.as_ref().map_or(0, |d| d.release.version);
        list.extend(rt.pending.iter().map(|p| ContainerInfo {
            name: p.name.clone(),
            kind: p.kind.clone(),
            state: "crashed".into(),
            release,
            size: p.size,
            pid: None,
            address: None,
            restarts: p.restarts,
            started_at: p.crashed_at.clone(),
        }));
        list.sort_by(|a, b| {
            let key = |c: &ContainerInfo| {
                let n = c
                    .name
                    .rsplit_once('-')
                    .and_then(|(_, n)| n.parse::<u32>().ok())
                    .unwrap_or(0);
                (c.kind.clone(), n, c.release)
            };
            key(a).cmp(&key(b))
        });
        list
    }

    pub fn cron_info(&self, app: &str) -> Vec<CronJobInfo> {
        let apps = self.lock();
        let Some(rt) = apps.get(app) else {
            return Vec::new();
        };
        rt.cron
            .iter()
            .map(|s| CronJobInfo {
                schedule: s.job.schedule.text.clone(),
                command: s.job.command.clone(),
                size: s.job.size,
                last_run: s.last.map(rfc3339),
                next_run: s.next.map(rfc3339),
            })
            .collect()
    }

    /// Wait until the instances `ids` of `app` have ended (or `timeout`), then forget them.
    /// Returns the names of those still running.
    pub fn wait_gone(&self, app: &str, ids: &[String], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut apps = self.lock();
        loop {
            let left: Vec<String> = match apps.get(app) {
                Some(rt) => rt
                    .instances
                    .iter()
                    .filter(|i| ids.contains(&i.id) && i.gone.is_none())
                    .map(|i| i.name.clone())
                    .collect(),
                None => Vec::new(),
            };
            if left.is_empty() || Instant::now() >= deadline {
                if let Some(rt) = apps.get_mut(app) {
                    rt.instances
                        .retain(|i| !(ids.contains(&i.id) && i.gone.is_some()));
                }
                return left;
            }
            apps = self.wait_change(apps, Duration::from_millis(100));
        }
    }

    pub fn quitting(&self) -> bool {
        self.quit.load(Ordering::SeqCst)
    }

    /// Deliver events now (outside any lock).
    pub fn emit(&self, app: &str, lines: Vec<String>) {
        for l in lines {
            self.events.event(app, &l);
        }
    }

    /// Load the cron jobs of the app's (new) desired release; problems become events.
    pub fn reload_cron(&self, rt: &mut AppRt, app: &str, out: &mut Outbox) {
        if let Some(msg) = rt.load_cron(self.settings.options.clock.now()) {
            out.event(app, msg);
        }
    }
}

/// What `Shared::reserve` starts.
pub struct Reserve<'a> {
    pub name: String,
    pub kind: String,
    pub index: u32,
    pub release: &'a Release,
    pub size: Size,
    pub command: String,
    pub extra_env: &'a [(String, String)],
    pub stack: &'a Path,
    pub role: Role,
    pub mode: Mode,
    pub restarts: u32,
    pub backoff_step: u32,
}

/// The reconcile thread: a pass every tick (and after every change an operation signals).
pub fn spawn_reconciler(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || {
            let tick = shared.settings.options.tick;
            while !shared.quitting() {
                shared.reconcile();
                let guard = shared.lock();
                if shared.quitting() {
                    break;
                }
                drop(shared.wait_change(guard, tick));
            }
        })
        .expect("the supervisor thread starts")
}
