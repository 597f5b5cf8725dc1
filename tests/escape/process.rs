//! The container's process: loopback up in its own network namespace, and no inheritable
//! capabilities unless the spec asks (CVE-2022-29162).
use crate::harness::*;

#[test]
fn loopback_is_up_in_a_new_network_namespace() {
    case("netns-loopback-up", Kind::Behaviour, |h| {
        let script = "ip link show lo; ping -c 1 -W 2 127.0.0.1 >/dev/null 2>&1 && echo PING-OK; \
                      echo END";
        let b = h.bundle("lo", &["/bin/busybox", "sh", "-c", script]);
        let r = h.run(&b);
        if !r.stdout.contains("END") {
            return Err(format!("run: {}", r.brief()));
        }
        let flags = r
            .stdout
            .lines()
            .find(|l| l.contains(": lo:"))
            .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_string()))
            .unwrap_or_default();
        if !flags.split(',').any(|f| f == "UP") || !r.stdout.contains("PING-OK") {
            return Ok(Finding::Failed(format!(
                "lo is not up in the container's network namespace: {}",
                one_line(&r.stdout)
            )));
        }
        Ok(Finding::Held(format!("lo <{flags}>, 127.0.0.1 answers")))
    });
}

fn cap_line(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("missing")
        .to_string()
}

#[test]
fn inheritable_capabilities_empty_unless_asked() {
    case("cve-2022-29162-cap-inheritable", Kind::Escape, |h| {
        let b = h.bundle(
            "caps",
            &[
                "/bin/busybox",
                "sh",
                "-c",
                "grep Cap /proc/self/status; sleep 600",
            ],
        );
        b.edit(|c| {
            c["process"]["capabilities"]
                .as_object_mut()
                .unwrap()
                .remove("inheritable");
        });
        let (id, _) = h.start_container(&b)?;
        let mut init = String::new();
        for _ in 0..200 {
            init = h.container_output(&id);
            if init.contains("CapAmb") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let r = h.rt(&[
            "exec",
            &id,
            "/bin/busybox",
            "grep",
            "Cap",
            "/proc/self/status",
        ]);
        if !r.ok() {
            return Err(format!("exec: {}", r.brief()));
        }
        for (who, out) in [("init", &init), ("exec", &r.stdout)] {
            let inh = cap_line(out, "CapInh:");
            if inh != "0000000000000000" {
                return Ok(Finding::Escaped(format!(
                    "{who} has CapInh {inh} though the spec asks for none"
                )));
            }
        }
        // Asked for, it is there: CAP_KILL is bit 5.
        let b = h.bundle(
            "caps-asked",
            &["/bin/busybox", "grep", "CapInh", "/proc/self/status"],
        );
        b.edit(|c| c["process"]["capabilities"]["inheritable"] = serde_json::json!(["CAP_KILL"]));
        let r = h.run(&b);
        let inh = cap_line(&r.stdout, "CapInh:");
        if inh != "0000000000000020" {
            return Ok(Finding::Failed(format!(
                "inheritable [CAP_KILL] asked, CapInh {inh} ({})",
                r.brief()
            )));
        }
        Ok(Finding::Held(
            "CapInh 0 for init and exec; [CAP_KILL] when asked".into(),
        ))
    });
}
