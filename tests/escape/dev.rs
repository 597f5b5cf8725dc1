//! /dev of a hostile image: /dev itself a symlink to a host directory, /dev/null a symlink
//! (the source of every masked-path bind, CVE-2025-31133) and /dev/console a symlink (the
//! target of the pty bind, CVE-2025-52565).
use std::time::Duration;

use crate::harness::*;

/// What a runtime may create in a fresh /dev: the canary holds a file of each name.
const DEV_NAMES: &[&str] = &[
    "ptmx", "fd", "stdin", "stdout", "stderr", "core", "null", "zero", "full", "random", "urandom",
    "tty", "console", "shm", "pts", "mqueue",
];

#[test]
fn dev_symlink_to_a_host_directory() {
    case("dev-symlink-to-host-dir", Kind::Escape, |h| {
        let canary = h.canary_dir("canary-dev", DEV_NAMES);
        let b = h.bundle("dev", &["/bin/busybox", "ls", "/dev"]);
        let r = h.run(&b);
        if !r.ok() {
            return Err(format!("control run: {}", r.brief()));
        }
        // Absolute: resolved on the host, it is the canary; in the root, it is nothing.
        b.symlink("/dev", &canary);
        let r = h.run(&b);
        Ok(Finding::Held(format!(
            "canary untouched ({})",
            if r.ok() {
                "container ran".to_string()
            } else {
                format!("refused: {}", r.brief())
            }
        )))
    });
}

/// A bundle that uses the image's /dev (no fresh /dev tmpfs) with the devices a busybox
/// shell needs made by hand: the image decides what /dev/null and /dev/console are.
fn image_dev_bundle(h: &Harness, name: &str, args: &[&str]) -> Bundle {
    let b = h.bundle(name, args);
    b.remove_mount("/dev");
    std::os::unix::fs::symlink("pts/ptmx", b.path("/dev/ptmx")).unwrap();
    std::fs::create_dir_all(b.path("/dev/pts")).unwrap();
    std::fs::create_dir_all(b.path("/dev/shm")).unwrap();
    std::fs::create_dir_all(b.path("/dev/mqueue")).unwrap();
    // A real /dev/null, as an image built with its devices has: the control runs with it.
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(
        &b.path("/dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(b.path("/dev/null"), std::fs::Permissions::from_mode(0o666)).unwrap();
    b
}

#[test]
fn masked_paths_with_dev_null_a_symlink() {
    case("cve-2025-31133-masked-dev-null", Kind::Escape, |h| {
        let canary = h.canary_dir("canary", &[]);
        let script = "cat /proc/timer_list /proc/kcore 2>&1 | head -c 300; echo; \
                      echo OVERWRITTEN > /proc/timer_list; echo END";
        let mut notes = Vec::new();
        // In the root: /dev/null -> /victim, a file the host can watch.
        let b = image_dev_bundle(h, "in-root", &["/bin/busybox", "sh", "-c", script]);
        b.write("/victim", "VICTIM-ORIGINAL\n", 0o644);
        let r = h.run(&b);
        if !r.stdout.contains("END") {
            return Err(format!("control run with the image's /dev: {}", r.brief()));
        }
        b.symlink("/dev/null", "/victim");
        let r = h.run(&b);
        let victim = std::fs::read_to_string(b.path("/victim")).unwrap_or_default();
        if r.stdout.contains("VICTIM-ORIGINAL") || victim != "VICTIM-ORIGINAL\n" {
            return Ok(Finding::Escaped(format!(
                "/dev/null -> /victim: masked paths were bound from the symlink's target \
                 (container read {:?}, victim now {:?}; {})",
                one_line(&r.stdout),
                victim,
                r.brief()
            )));
        }
        notes.push(format!("in root: {}", r.brief()));
        // A host-looking absolute path: the canary's secret.
        let b = image_dev_bundle(h, "host", &["/bin/busybox", "sh", "-c", script]);
        b.symlink("/dev/null", canary.join("secret"));
        let r = h.run(&b);
        if r.stdout.contains(&h.secret_token()) {
            return Ok(Finding::Escaped(format!(
                "/dev/null -> host file: a masked path showed the host file: {}",
                one_line(&r.stdout)
            )));
        }
        notes.push(format!("host path: {}", r.brief()));
        Ok(Finding::Held(notes.join("; ")))
    });
}

#[test]
fn dev_console_a_symlink_with_a_terminal() {
    case("cve-2025-52565-dev-console", Kind::Escape, |h| {
        let canary = h.canary_dir("canary", &[]);
        let script = "[ -c /victim ] && echo VICTIM-IS-A-TTY; \
                      grep -q ' /victim ' /proc/self/mountinfo && echo VICTIM-MOUNTED; \
                      echo END";
        let run_with_console = |b: &Bundle| -> Result<String, String> {
            let (sock, wait) = h.console_socket();
            let (id, r) = h.create(b, &["--console-socket", sock.to_str().unwrap()]);
            if !r.ok() {
                return Err(format!("create: {}", r.brief()));
            }
            let master = wait
                .master(Duration::from_secs(10))
                .ok_or("no pty master arrived on the console socket")?;
            let r = h.start(&id);
            if !r.ok() {
                return Err(format!("start: {}", r.brief()));
            }
            Ok(read_until(&master, "END", Duration::from_secs(10)))
        };
        let mut notes = Vec::new();
        let b = image_dev_bundle(h, "in-root", &["/bin/busybox", "sh", "-c", script]);
        b.edit(|c| c["process"]["terminal"] = true.into());
        b.write("/victim", "VICTIM-ORIGINAL\n", 0o644);
        let out = run_with_console(&b).map_err(|e| format!("control (no symlink): {e}"))?;
        if !out.contains("END") {
            return Err(format!("control (no symlink): no output: {out:?}"));
        }
        b.symlink("/dev/console", "/victim");
        match run_with_console(&b) {
            Ok(out) if out.contains("VICTIM-IS-A-TTY") || out.contains("VICTIM-MOUNTED") => {
                return Ok(Finding::Escaped(format!(
                    "/dev/console -> /victim: the pty was bound over the symlink's target: {}",
                    one_line(&out)
                )))
            }
            Ok(out) => notes.push(format!("in root: ran ({})", one_line(&out))),
            Err(e) => notes.push(format!("in root: refused ({e})")),
        }
        // A host-looking absolute path that does not exist: nothing may be created there.
        let b = image_dev_bundle(h, "host", &["/bin/busybox", "sh", "-c", script]);
        b.edit(|c| c["process"]["terminal"] = true.into());
        b.symlink("/dev/console", canary.join("console"));
        match run_with_console(&b) {
            Ok(out) => notes.push(format!("host path: ran ({})", one_line(&out))),
            Err(e) => notes.push(format!("host path: refused ({e})")),
        }
        Ok(Finding::Held(notes.join("; ")))
    });
}
