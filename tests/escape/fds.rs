//! CVE-2024-21626: a host directory descriptor leaks into the container's process, and
//! `process.cwd` / `exec --cwd` of /proc/self/fd/N walks out of the root through it.
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::harness::*;

/// What the container runs from its (possibly host) working directory: read the canary's
/// secret and create a file next to it through a relative path. From a directory inside
/// the root every `..` stops at the root, and neither path exists there.
fn walk_out_script(canary: &Path) -> String {
    let up = "../".repeat(40);
    let rel = canary.to_str().unwrap().trim_start_matches('/');
    format!(
        "cat {up}{rel}/secret; touch {up}{rel}/written-from-container; \
         echo cwd-listing:; ls -a . | head -n 20; echo END"
    )
}

fn cwd_leak(h: &Harness, out: &str) -> bool {
    out.contains(&h.secret_token())
}

#[test]
fn cve_2024_21626_process_cwd_fd() {
    case("cve-2024-21626-process-cwd", Kind::Escape, |h| {
        let canary = h.canary_dir("canary", &[]);
        let script = walk_out_script(&canary);
        let b = h.bundle("cwd", &["/bin/busybox", "sh", "-c", &script]);
        // Control: the same container with an ordinary cwd runs, and reads nothing.
        let r = h.run(&b);
        if !r.stdout.contains("END") {
            return Err(format!("control run (cwd /): {}", r.brief()));
        }
        if cwd_leak(h, &r.stdout) {
            return Ok(Finding::Escaped(format!(
                "cwd / already reaches the host: {}",
                one_line(&r.stdout)
            )));
        }
        let mut refused = 0;
        for n in 3..=12 {
            let cwd = format!("/proc/self/fd/{n}");
            b.edit(|c| c["process"]["cwd"] = cwd.clone().into());
            let r = h.run(&b);
            if cwd_leak(h, &r.stdout) {
                return Ok(Finding::Escaped(format!(
                    "run with process.cwd {cwd}: the container read the host canary: {}",
                    one_line(&r.stdout)
                )));
            }
            refused += usize::from(!r.ok());
            // create + start: the init's descriptors at the time of `start`.
            let (id, c) = h.create(&b, &[]);
            if c.ok() {
                let _ = h.start(&id);
                for _ in 0..100 {
                    if h.container_output(&id).contains("END") {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let out = h.container_output(&id);
                if cwd_leak(h, &out) {
                    return Ok(Finding::Escaped(format!(
                        "create/start with process.cwd {cwd}: the container read the host \
                         canary: {}",
                        one_line(&out)
                    )));
                }
                let _ = h.delete(&id);
            }
        }
        Ok(Finding::Held(format!(
            "process.cwd /proc/self/fd/3..12: no host access ({refused} of 10 runs refused)"
        )))
    });
}

#[test]
fn cve_2024_21626_exec_cwd_fd() {
    case("cve-2024-21626-exec-cwd", Kind::Escape, |h| {
        let canary = h.canary_dir("canary", &[]);
        let script = walk_out_script(&canary);
        let b = h.bundle("exec-cwd", &["/bin/busybox", "sleep", "600"]);
        let (id, _) = h.start_container(&b)?;
        let r = h.rt(&["exec", &id, "/bin/busybox", "sh", "-c", &script]);
        if !r.stdout.contains("END") {
            return Err(format!("control exec (no --cwd): {}", r.brief()));
        }
        let mut refused = 0;
        for n in 3..=12 {
            let cwd = format!("/proc/self/fd/{n}");
            let r = h.rt(&[
                "exec",
                "--cwd",
                &cwd,
                &id,
                "/bin/busybox",
                "sh",
                "-c",
                &script,
            ]);
            if cwd_leak(h, &r.stdout) {
                return Ok(Finding::Escaped(format!(
                    "exec --cwd {cwd}: the process read the host canary: {}",
                    one_line(&r.stdout)
                )));
            }
            refused += usize::from(!r.ok());
        }
        Ok(Finding::Held(format!(
            "exec --cwd /proc/self/fd/3..12: no host access ({refused} of 10 refused)"
        )))
    });
}

/// The init's descriptors as the host sees them: number -> what it points to.
fn fds_of(pid: i32) -> BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    Some((n, target))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn container_init_holds_only_its_stdio() {
    case("init-fds-only-stdio", Kind::Escape, |h| {
        let b = h.bundle("fds", &["/bin/busybox", "sleep", "600"]);
        let (_, pid) = h.start_container(&b)?;
        let fds = fds_of(pid);
        let extra: Vec<String> = fds
            .iter()
            .filter(|(n, _)| **n > 2)
            .map(|(n, t)| format!("{n} -> {t}"))
            .collect();
        if !extra.is_empty() {
            return Ok(Finding::Escaped(format!(
                "the running init holds descriptors beyond 0-2: {}",
                extra.join(", ")
            )));
        }
        // --preserve-fds 1: exactly one more, the one we passed.
        let passed_path = h.path("preserved");
        std::fs::write(&passed_path, "preserved\n").unwrap();
        let passed = std::fs::File::open(&passed_path).unwrap();
        let (id, r) = h.create_with_fds(&b, &[passed.as_raw_fd()]);
        if !r.ok() {
            return Err(format!("create --preserve-fds 1: {}", r.brief()));
        }
        let r = h.start(&id);
        if !r.ok() {
            return Err(format!("start: {}", r.brief()));
        }
        let pid = h.pid(&id).ok_or("no pid")?;
        if !h.wait_exec_busybox(&b, pid) {
            return Err("the --preserve-fds container never ran its program".into());
        }
        let fds = fds_of(pid);
        let numbers: Vec<i32> = fds.keys().copied().collect();
        if numbers.iter().any(|n| *n > 3) {
            return Ok(Finding::Escaped(format!(
                "with --preserve-fds 1 the init holds {fds:?}"
            )));
        }
        if fds.get(&3).map(String::as_str) != Some(passed_path.to_str().unwrap()) {
            return Ok(Finding::Failed(format!(
                "--preserve-fds 1 did not pass descriptor 3: {fds:?}"
            )));
        }
        Ok(Finding::Held(
            "init holds 0,1,2 (and 3 with --preserve-fds 1)".into(),
        ))
    });
}
