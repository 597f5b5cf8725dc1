//! Mount destinations that lead out of the root: symlink chains past the kernel's 40-link
//! limit, symlinks into /proc or to host paths, `..` in destinations, and the
//! CVE-2021-30465 race (a directory swapped for a symlink while the runtime mounts into it).
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

fn tmpfs(dest: &str) -> serde_json::Value {
    json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"]})
}

/// Run a control copy of the bundle first (no hostile mount): the runtime must run it.
fn control(h: &Harness) -> Result<(), String> {
    let b = h.bundle("control", &["/bin/busybox", "true"]);
    let r = h.run(&b);
    if !r.ok() {
        return Err(format!("control run: {}", r.brief()));
    }
    Ok(())
}

#[test]
fn symlink_chain_past_40_links_is_eloop() {
    case("mount-dest-41-symlinks", Kind::Escape, |h| {
        let canary = h.canary_dir("canary", &[]);
        control(h)?;
        let b = h.bundle("chain", &["/bin/busybox", "true"]);
        // /link01 -> /link02 -> ... -> /link41 -> <host canary>: the 41st link leaves.
        for i in 1..=40 {
            b.symlink(&format!("/link{i:02}"), format!("/link{:02}", i + 1));
        }
        b.symlink("/link41", &canary);
        b.add_mount(tmpfs("/link01/made-by-runtime"));
        let (_, r) = h.create(&b, &[]);
        if r.ok() {
            return Ok(Finding::Failed(
                "create succeeded through 41 symlinks (expected ELOOP)".into(),
            ));
        }
        Ok(Finding::Held(format!("create refused: {}", r.brief())))
    });
}

#[test]
fn mount_destination_symlink_into_proc() {
    case("mount-dest-symlink-into-proc", Kind::Escape, |h| {
        let source = h.canary_dir("source", &["marker"]);
        let script = "[ -e /proc/sys/kernel/marker ] && echo MOUNTED-OVER-PROC; \
                      grep -c ' /proc/sys/kernel ' /proc/self/mountinfo; echo END";
        let b = h.bundle("proc", &["/bin/busybox", "sh", "-c", script]);
        let r = h.run(&b);
        if !r.stdout.contains("END") {
            return Err(format!("control run: {}", r.brief()));
        }
        b.symlink("/evil", "/proc/sys/kernel");
        b.add_mount(
            json!({"destination": "/evil", "type": "bind", "source": source,
                           "options": ["rbind", "ro"]}),
        );
        let r = h.run(&b);
        if r.stdout.contains("MOUNTED-OVER-PROC") {
            return Ok(Finding::Escaped(format!(
                "a bind mount whose destination is a symlink to /proc/sys/kernel covered the \
                 container's procfs: {}",
                one_line(&r.stdout)
            )));
        }
        Ok(Finding::Held(if r.ok() {
            "mount did not land in /proc".to_string()
        } else {
            format!("refused: {}", r.brief())
        }))
    });
}

#[test]
fn mount_destination_symlink_to_host_paths() {
    case("mount-dest-symlink-to-host", Kind::Escape, |h| {
        let canary = h.canary_dir("canary", &[]);
        control(h)?;
        let rel = format!(
            "{}{}",
            "../".repeat(20),
            canary.to_str().unwrap().trim_start_matches('/')
        );
        let mut notes = Vec::new();
        for (label, target) in [("abs", canary.display().to_string()), ("rel", rel)] {
            for typ in ["tmpfs", "bind"] {
                let b = h.bundle(
                    &format!("{label}-{typ}"),
                    &["/bin/busybox", "sh", "-c", "echo x > /evil/sub/w; echo END"],
                );
                b.symlink("/evil", &target);
                let m = if typ == "tmpfs" {
                    tmpfs("/evil/sub")
                } else {
                    let src = h.path(&format!("src-{label}"));
                    std::fs::create_dir_all(&src).unwrap();
                    json!({"destination": "/evil/sub", "type": "bind", "source": src,
                           "options": ["rbind"]})
                };
                b.add_mount(m);
                let r = h.run(&b);
                notes.push(format!("{label} {typ}: {}", r.brief()));
            }
        }
        Ok(Finding::Held(notes.join("; ")))
    });
}

#[test]
fn mount_destination_with_dotdot() {
    case("mount-dest-dotdot", Kind::Escape, |h| {
        let canary = h.canary_dir("canary", &[]);
        control(h)?;
        let path = canary.to_str().unwrap().trim_start_matches('/');
        let mut notes = Vec::new();
        for (i, dest) in [
            format!("/{}{path}/sub", "../".repeat(20)),
            format!("/tmp/{}{path}/sub", "../".repeat(20)),
            format!("{}{path}/sub", "../".repeat(20)),
        ]
        .iter()
        .enumerate()
        {
            let b = h.bundle(&format!("dotdot{i}"), &["/bin/busybox", "true"]);
            b.add_mount(tmpfs(dest));
            let r = h.run(&b);
            notes.push(format!("{dest}: {}", r.brief()));
        }
        Ok(Finding::Held(notes.join("; ")))
    });
}

/// renameat2(RENAME_EXCHANGE): swap two names atomically.
fn exchange(a: &Path, b: &Path) {
    let a = std::ffi::CString::new(a.to_str().unwrap()).unwrap();
    let b = std::ffi::CString::new(b.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated paths.
    unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
}

#[test]
fn cve_2021_30465_swapped_mount_source_race() {
    case("cve-2021-30465-mount-race", Kind::Escape, |h| {
        let canary = h.canary_dir("canary", &[]);
        control(h)?;
        // The volume both bundles mount; inside it `sub` keeps flipping between a directory
        // and a symlink to the host canary.
        let shared = h.path("shared");
        std::fs::create_dir_all(shared.join("sub")).unwrap();
        std::os::unix::fs::symlink(&canary, shared.join("flip")).unwrap();
        let bundles: Vec<Bundle> = ["a", "b"]
            .iter()
            .map(|n| {
                let b = h.bundle(n, &["/bin/busybox", "true"]);
                b.add_mount(
                    json!({"destination": "/vol", "type": "bind", "source": shared,
                                   "options": ["rbind"]}),
                );
                for i in 0..8 {
                    b.add_mount(tmpfs(&format!("/vol/sub/m{i}")));
                }
                b
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let (a, b) = (shared.join("sub"), shared.join("flip"));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    exchange(&a, &b);
                    n += 1;
                }
                // Leave `sub` a directory.
                if std::fs::symlink_metadata(&a).is_ok_and(|m| m.file_type().is_symlink()) {
                    exchange(&a, &b);
                }
                n
            })
        };
        let deadline = Instant::now() + Duration::from_secs(8);
        let (mut created, mut refused, mut tries) = (0, 0, 0);
        while tries < 60 && Instant::now() < deadline {
            let b = &bundles[tries % 2];
            tries += 1;
            let (id, r) = h.create(b, &[]);
            if r.ok() {
                created += 1;
            } else {
                refused += 1;
            }
            let _ = h.delete(&id);
            if std::fs::read_dir(&canary).map(|d| d.count()).unwrap_or(0) != 1 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        Ok(Finding::Held(format!(
            "{tries} creates ({created} made, {refused} refused) during {swaps} swaps: canary \
             untouched"
        )))
    });
}
