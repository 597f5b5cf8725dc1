//! Operations on an app's containers: rollout of a release, scale, rolling restart, stop.
//!
//! A rollout runs the release hook (Heroku's release phase), starts the new release's
//! containers beside the old ones, waits until every new web container accepts TCP (boot
//! timeout) and no new container has ended, runs the postdeploy hook, then switches: the new
//! containers become the formation and the router's backends, and after the drain delay the
//! old ones are stopped. Any failure stops the new containers and leaves the old release
//! serving; the desired state on disk changes only at the switch.
use std::time::{Duration, Instant};

use super::engine::{Desired, Ending, Outbox, Reserve, Role, Shared, StopReason};
use super::events as ev;
use super::state::{Mode, MonitorState};
use super::{
    Formation, Release, RolloutError, Size, SupervisorError, POSTDEPLOY_HOOK, RELEASE_HOOK,
};
use crate::sys::child::{self, Output, Supervised};

/// Extra time, past the grace period, a stopped container's monitor gets to clean up.
const CLEANUP_MARGIN: Duration = Duration::from_secs(30);

pub fn rollout(
    sh: &Shared,
    release: &Release,
    formation: &Formation,
    log: &mut dyn FnMut(&str),
) -> Result<(), RolloutError> {
    let app = release.app.as_str();
    crate::applog::validate_app(app).map_err(|e| RolloutError::Start(e.to_string()))?;
    let op = sh.op(app);
    let _op = op.lock().unwrap_or_else(|e| e.into_inner());
    let stack = sh
        .run_stack(&release.stack)
        .map_err(|e| RolloutError::Start(e.to_string()))?;
    for kind in formation.0.keys() {
        if release.scalable_types().all(|p| &p.name != kind) && formation.scale_of(kind).count > 0 {
            log(&format!(
                "       The formation has {kind} containers, but release v{} has no {kind} process type: none will run",
                release.version
            ));
        }
    }

    if let Some(command) = release.command(RELEASE_HOOK) {
        log(&format!("-----> Running the release command: {command}"));
        run_hook(sh, release, &stack, RELEASE_HOOK, command, log)?;
    }

    let mut out = Outbox::default();
    let mut ids = Vec::new();
    {
        let mut apps = sh.lock();
        let rt = apps.entry(app.to_string()).or_default();
        rt.removing = false;
        for pt in release.scalable_types() {
            let scale = formation.scale_of(&pt.name);
            for index in 1..=scale.count {
                ids.push(sh.reserve(
                    app,
                    rt,
                    Reserve {
                        name: format!("{}-{index}", pt.name),
                        kind: pt.name.clone(),
                        index,
                        release,
                        size: scale.size,
                        command: pt.command.clone(),
                        extra_env: &[],
                        stack: &stack,
                        role: Role::Candidate,
                        mode: Mode::Daemon,
                        restarts: 0,
                        backoff_step: 0,
                    },
                    &mut out,
                ));
            }
        }
    }
    log(&format!(
        "-----> Starting {} container{} of v{}",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        release.version
    ));
    sh.deliver(out);
    if let Err(e) = wait_ready(sh, app, &ids) {
        log(&format!("       {e}"));
        abort(sh, app, &ids);
        return Err(e);
    }

    if let Some(command) = release.command(POSTDEPLOY_HOOK) {
        log(&format!("-----> Running the postdeploy command: {command}"));
        if let Err(e) = run_hook(sh, release, &stack, POSTDEPLOY_HOOK, command, log) {
            abort(sh, app, &ids);
            return Err(e);
        }
    }

    // The switch: one change under the lock.
    let desired = Desired {
        release: release.clone(),
        formation: formation.clone(),
        stack_dir: stack.clone(),
    };
    if let Err(e) = sh.save_desired(app, &desired) {
        abort(sh, app, &ids);
        return Err(RolloutError::Start(e.to_string()));
    }
    let mut out = Outbox::default();
    let old: Vec<String>;
    {
        let mut apps = sh.lock();
        let rt = apps.entry(app.to_string()).or_default();
        if let Some(dead) = rt
            .instances
            .iter()
            .find(|i| ids.contains(&i.id) && i.gone.is_some())
        {
            let e = crashed(&dead.name, dead.gone.as_ref().expect("checked"));
            drop(apps);
            abort(sh, app, &ids);
            // The desired state on disk goes back to what runs.
            match sh.desired(app) {
                Some(d) => {
                    let _ = sh.save_desired(app, &d);
                }
                None => sh.forget_desired(app),
            }
            return Err(e);
        }
        old = rt
            .instances
            .iter()
            .filter(|i| i.role == Role::Current && i.gone.is_none())
            .map(|i| i.id.clone())
            .collect();
        for inst in rt.instances.iter_mut() {
            if ids.contains(&inst.id) {
                inst.role = Role::Current;
            } else if old.contains(&inst.id) {
                inst.role = Role::Retiring;
                inst.stop = Some(StopReason::Requested);
            }
        }
        rt.pending.clear();
        rt.desired = Some(desired);
        sh.reload_cron(rt, app, &mut out);
        if let Some(b) = rt.backends_changed() {
            out.backends.push((app.to_string(), b));
        }
    }
    sh.deliver(out);
    log(&format!("-----> v{} is live", release.version));
    stop_after(sh, app, &old, sh.settings.options.drain);
    Ok(())
}

/// After `delay`, stop `ids` (already unrouted and marked as stopping).
fn stop_after(sh: &Shared, app: &str, ids: &[String], delay: Duration) {
    if ids.is_empty() {
        return;
    }
    std::thread::sleep(delay);
    let mut lines = Vec::new();
    {
        let mut apps = sh.lock();
        if let Some(rt) = apps.get_mut(app) {
            for inst in rt.instances.iter_mut().filter(|i| ids.contains(&i.id)) {
                lines.push(ev::stopping(&inst.name));
                inst.request_stop(StopReason::Requested);
            }
        }
    }
    sh.emit(app, lines);
    sh.changed.notify_all();
}

fn crashed(name: &str, ending: &Ending) -> RolloutError {
    match ending {
        Ending::Failed(why) => RolloutError::Start(format!("{name}: {why}")),
        e => RolloutError::Crashed {
            container: name.to_string(),
            code: e.code(),
        },
    }
}

/// Wait until every instance of `ids` is up (web: accepts TCP), none has ended, within the
/// boot timeout.
fn wait_ready(sh: &Shared, app: &str, ids: &[String]) -> Result<(), RolloutError> {
    let boot = sh.settings.options.boot_timeout;
    let deadline = Instant::now() + boot;
    let mut apps = sh.lock();
    loop {
        let rt = apps.entry(app.to_string()).or_default();
        let mut waiting = None;
        for id in ids {
            let Some(inst) = rt.instances.iter().find(|i| &i.id == id) else {
                return Err(RolloutError::Start(format!("container {id} disappeared")));
            };
            if let Some(ending) = &inst.gone {
                return Err(crashed(&inst.name, ending));
            }
            if !inst.ready() && waiting.is_none() {
                waiting = Some(inst.name.clone());
            }
        }
        let Some(name) = waiting else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(RolloutError::BootTimeout {
                container: name,
                secs: boot.as_secs(),
            });
        }
        apps = sh.wait_change(apps, Duration::from_millis(100));
    }
}

/// Stop the instances `ids` and wait until they are gone.
fn abort(sh: &Shared, app: &str, ids: &[String]) {
    {
        let mut apps = sh.lock();
        if let Some(rt) = apps.get_mut(app) {
            for inst in rt.instances.iter_mut().filter(|i| ids.contains(&i.id)) {
                inst.request_stop(StopReason::Requested);
            }
        }
    }
    sh.wait_gone(app, ids, sh.settings.options.stop_grace + CLEANUP_MARGIN);
}

/// Run a hook of `release` as an attached one-off whose output goes to `log`.
fn run_hook(
    sh: &Shared,
    release: &Release,
    stack: &std::path::Path,
    kind: &str,
    command: &str,
    log: &mut dyn FnMut(&str),
) -> Result<(), RolloutError> {
    let app = release.app.as_str();
    let spec = sh.spec(
        app,
        &Reserve {
            name: kind.to_string(),
            kind: kind.to_string(),
            index: 1,
            release,
            size: Size::M,
            command: command.to_string(),
            extra_env: &[],
            stack,
            role: Role::OneOff,
            mode: Mode::Attached,
            restarts: 0,
            backoff_step: 0,
        },
    );
    let start = |e: String| RolloutError::Start(format!("{kind}: {e}"));
    if let Some(dir) = spec.state_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| start(format!("{}: {e}", dir.display())))?;
    }
    let mut cmd =
        super::spawn::command(&sh.settings.exe, &spec).map_err(|e| start(e.to_string()))?;
    sh.emit(
        app,
        vec![ev::starting(kind, command, Size::M, release.version)],
    );
    let mut on_line = |l: &str| log(&format!("       {l}"));
    let f = child::run(
        &mut cmd,
        Supervised {
            output: Output::Lines(&mut on_line),
            timeout: Some(sh.settings.options.hook_timeout),
            grace: sh.settings.options.stop_grace + Duration::from_secs(5),
            ..Default::default()
        },
    )
    .map_err(|e| start(format!("{}: {e}", sh.settings.exe.display())))?;
    let fin = MonitorState::read(&spec.state_file);
    let _ = std::fs::remove_file(&spec.state_file);
    let _ = std::fs::remove_file(spec.state_file.with_extension("spec.json"));
    if f.timed_out {
        // The monitor was killed with its group: clean what it left.
        sh.settings.sweep();
        sh.emit(
            app,
            vec![format!(
                "{}: Error: the hook was still running at its time limit, stopped",
                ev::label(kind)
            )],
        );
        return Err(RolloutError::HookTimeout);
    }
    if let Some(why) = fin.as_ref().and_then(|s| s.error.clone()) {
        return Err(start(why));
    }
    let code = f.status.and_then(|s| s.code()).unwrap_or(-1);
    sh.emit(
        app,
        vec![format!(
            "{}: Process exited with status {code}",
            ev::label(kind)
        )],
    );
    if code != 0 {
        return Err(RolloutError::HookFailed { code });
    }
    Ok(())
}

/// Replace the instance `old_id` of `app` by a new one of size `size`: the new one up and
/// routed before the old one is stopped.
fn replace(sh: &Shared, app: &str, old_id: &str, size: Size) -> Result<(), SupervisorError> {
    let mut out = Outbox::default();
    let (new_id, name, is_web) = {
        let mut apps = sh.lock();
        let Some(rt) = apps.get_mut(app) else {
            return Ok(());
        };
        let Some(d) = rt.desired.clone() else {
            return Ok(());
        };
        let Some(old) = rt.instances.iter().find(|i| i.id == old_id && i.live()) else {
            return Ok(());
        };
        let (name, kind, index, restarts) =
            (old.name.clone(), old.kind.clone(), old.index, old.restarts);
        let command = d.release.command(&kind).unwrap_or_default().to_string();
        let id = sh.reserve(
            app,
            rt,
            Reserve {
                name: name.clone(),
                kind: kind.clone(),
                index,
                release: &d.release,
                size,
                command,
                extra_env: &[],
                stack: &d.stack_dir,
                role: Role::Candidate,
                mode: Mode::Daemon,
                restarts,
                backoff_step: 0,
            },
            &mut out,
        );
        (id, name, kind == "web")
    };
    sh.deliver(out);
    let ids = [new_id.clone()];
    if let Err(source) = wait_ready(sh, app, &ids) {
        abort(sh, app, &ids);
        return Err(SupervisorError::Replace {
            container: name,
            source,
        });
    }
    let mut out = Outbox::default();
    {
        let mut apps = sh.lock();
        if let Some(rt) = apps.get_mut(app) {
            for inst in rt.instances.iter_mut() {
                if inst.id == new_id {
                    inst.role = Role::Current;
                } else if inst.id == old_id {
                    inst.role = Role::Retiring;
                    inst.stop = Some(StopReason::Requested);
                }
            }
            rt.pending.retain(|p| p.name != name);
            if let Some(b) = rt.backends_changed() {
                out.backends.push((app.to_string(), b));
            }
        }
    }
    sh.deliver(out);
    // Requests already on their way to a web container get the drain delay to finish.
    let drain = if is_web {
        sh.settings.options.drain
    } else {
        Duration::ZERO
    };
    stop_after(sh, app, &[old_id.to_string()], drain);
    Ok(())
}

pub fn scale(sh: &Shared, app: &str, formation: &Formation) -> Result<(), SupervisorError> {
    let op = sh.op(app);
    let _op = op.lock().unwrap_or_else(|e| e.into_inner());
    let resized = {
        let mut apps = sh.lock();
        let Some(rt) = apps.get_mut(app) else {
            return Err(SupervisorError::NoRelease { app: app.into() });
        };
        let Some(d) = rt.desired.as_mut() else {
            return Err(SupervisorError::NoRelease { app: app.into() });
        };
        for kind in formation.0.keys() {
            if crate::platform::process_types::is_phase(kind) {
                return Err(SupervisorError::NotScalable { kind: kind.clone() });
            }
            // A type the release does not have may be named with nothing to run.
            if d.release.scalable_types().all(|p| &p.name != kind)
                && formation.scale_of(kind).count > 0
            {
                return Err(SupervisorError::UnknownType {
                    app: app.into(),
                    kind: kind.clone(),
                    release: d.release.version,
                    known: d
                        .release
                        .scalable_types()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let new = d.formation.merged(formation);
        let resized: Vec<(String, Size)> = formation
            .0
            .keys()
            .filter(|k| new.scale_of(k).size != d.formation.scale_of(k).size)
            .map(|k| (k.clone(), new.scale_of(k).size))
            .collect();
        let mut next = d.clone();
        next.formation = new;
        sh.save_desired(app, &next)?;
        *d = next;
        resized
    };
    sh.changed.notify_all();
    for (kind, size) in resized {
        let olds: Vec<String> = {
            let apps = sh.lock();
            apps.get(app)
                .map(|rt| {
                    rt.instances
                        .iter()
                        .filter(|i| {
                            i.role == Role::Current && i.live() && i.kind == kind && i.size != size
                        })
                        .map(|i| i.id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        for old in olds {
            replace(sh, app, &old, size)?;
        }
    }
    Ok(())
}

pub fn restart(sh: &Shared, app: &str, target: Option<&str>) -> Result<(), SupervisorError> {
    let op = sh.op(app);
    let _op = op.lock().unwrap_or_else(|e| e.into_inner());
    let targets: Vec<(String, Size)> = {
        let mut apps = sh.lock();
        let Some(rt) = apps.get_mut(app) else {
            return Err(SupervisorError::NoRelease { app: app.into() });
        };
        let Some(d) = rt.desired.clone() else {
            return Err(SupervisorError::NoRelease { app: app.into() });
        };
        let matches = |name: &str, kind: &str| target.is_none_or(|t| t == name || t == kind);
        let mut found = false;
        // Crashed containers waiting for their restart start now.
        for p in rt.pending.iter_mut().filter(|p| matches(&p.name, &p.kind)) {
            p.due = Instant::now();
            p.backoff_step = 0;
            found = true;
        }
        let mut list: Vec<(String, String, Size)> = rt
            .instances
            .iter()
            .filter(|i| i.role == Role::Current && i.live() && matches(&i.name, &i.kind))
            .map(|i| {
                (
                    i.name.clone(),
                    i.id.clone(),
                    d.formation.scale_of(&i.kind).size,
                )
            })
            .collect();
        if list.is_empty() && !found {
            let mut known: Vec<String> = rt
                .instances
                .iter()
                .filter(|i| i.role == Role::Current && i.live())
                .map(|i| i.name.clone())
                .collect();
            known.sort();
            return Err(SupervisorError::NoSuchContainer {
                app: app.into(),
                target: target.unwrap_or("").into(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
        list.sort();
        list.into_iter().map(|(_, id, size)| (id, size)).collect()
    };
    sh.changed.notify_all();
    for (id, size) in targets {
        replace(sh, app, &id, size)?;
    }
    Ok(())
}

pub fn stop_app(sh: &Shared, app: &str) -> Result<(), SupervisorError> {
    crate::applog::validate_app(app).map_err(|e| SupervisorError::BadName(e.to_string()))?;
    let op = sh.op(app);
    let _op = op.lock().unwrap_or_else(|e| e.into_inner());
    sh.forget_desired(app);
    let mut lines = Vec::new();
    let ids: Vec<String> = {
        let mut apps = sh.lock();
        let Some(rt) = apps.get_mut(app) else {
            return Ok(());
        };
        rt.removing = true;
        rt.desired = None;
        rt.pending.clear();
        rt.cron.clear();
        for inst in rt.instances.iter_mut() {
            if inst.gone.is_none() && inst.stop.is_none() {
                lines.push(ev::stopping(&inst.name));
            }
            inst.request_stop(StopReason::Requested);
        }
        rt.instances.iter().map(|i| i.id.clone()).collect()
    };
    sh.events.backends_changed(app, Vec::new());
    sh.emit(app, lines);
    let left = sh.wait_gone(app, &ids, sh.settings.options.stop_grace + CLEANUP_MARGIN);
    {
        let mut apps = sh.lock();
        if left.is_empty() {
            apps.remove(app);
        } else if let Some(rt) = apps.get_mut(app) {
            // Still there: the reconcile loop keeps watching them, nothing restarts them.
            rt.backends = Some(Vec::new());
        }
    }
    if !left.is_empty() {
        return Err(SupervisorError::Monitor {
            container: left.join(", "),
            message: "still running after the grace period and cleanup time; check `slipway-runtime list` and the host's processes".into(),
        });
    }
    let _ = std::fs::remove_dir(sh.settings.state_root.join(app));
    Ok(())
}
