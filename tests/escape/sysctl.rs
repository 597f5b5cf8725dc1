//! `linux.sysctl`: only namespaced sysctls may be set, and only when the container has the
//! namespace they belong to. Anything else would be written to the host's kernel.
//!
//! The values written are harmless (a flag for core file names, the overcommit ratio that
//! only matters in overcommit mode 2, a core file name, the first unprivileged port moved by
//! one) and a guard puts the host's values back whatever happens.
use serde_json::json;

use crate::harness::*;

/// A value different from the host's for each key.
fn other_value(key: &str, host: &str) -> String {
    match key {
        "kernel.core_uses_pid" => if host == "0" { "1" } else { "0" }.into(),
        "kernel.core_pattern" => if host == "core-slipway-escape" {
            "core"
        } else {
            "core-slipway-escape"
        }
        .into(),
        _ => {
            let n: u64 = host.trim().parse().expect("numeric sysctl");
            if n > 0 { n - 1 } else { n + 1 }.to_string()
        }
    }
}

/// Ask for `key` on a bundle and judge: refused with an error naming the key, host unchanged.
fn refused(h: &Harness, label: &str, key: &str, edit: impl Fn(&Bundle)) -> Option<Finding> {
    let host = read_sysctl(key);
    let want = other_value(key, &host);
    let b = h.bundle(label, &["/bin/busybox", "true"]);
    edit(&b);
    b.edit(|c| c["linux"]["sysctl"] = json!({ key: want }));
    let (_, r) = h.create(&b, &[]);
    let now = read_sysctl(key);
    if now != host {
        return Some(Finding::Escaped(format!(
            "{label}: {key}={want} reached the host ({host} => {now}; create {})",
            r.brief()
        )));
    }
    if r.ok() {
        return Some(Finding::Failed(format!(
            "{label}: create accepted {key} (host unchanged)"
        )));
    }
    if !r.stderr.contains(key) {
        return Some(Finding::Failed(format!(
            "{label}: refused, but the error does not name {key}: {}",
            r.brief()
        )));
    }
    None
}

/// The control: the same bundle without the sysctl runs.
fn control(h: &Harness) -> Result<(), String> {
    let b = h.bundle("control", &["/bin/busybox", "true"]);
    let r = h.run(&b);
    if !r.ok() {
        return Err(format!("control run: {}", r.brief()));
    }
    Ok(())
}

fn judge(findings: Vec<Finding>, held: &str) -> CaseResult {
    let text = |f: &Finding| match f {
        Finding::Held(d) | Finding::Escaped(d) | Finding::Failed(d) => d.clone(),
    };
    let all = findings.iter().map(text).collect::<Vec<_>>().join("; ");
    Ok(
        if findings.iter().any(|f| matches!(f, Finding::Escaped(_))) {
            Finding::Escaped(all)
        } else if findings.is_empty() {
            Finding::Held(held.into())
        } else {
            Finding::Failed(all)
        },
    )
}

#[test]
fn non_namespaced_sysctls_are_refused() {
    case_alone("sysctl-not-namespaced", Kind::Escape, |h| {
        let keys = [
            "kernel.core_uses_pid",
            "vm.overcommit_ratio",
            "kernel.core_pattern",
        ];
        let _guard = SysctlGuard::new(&keys);
        control(h)?;
        let findings = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| refused(h, &format!("b{i}"), k, |_| {}))
            .collect();
        judge(
            findings,
            "kernel.core_uses_pid, vm.overcommit_ratio, kernel.core_pattern refused by name, \
             host unchanged",
        )
    });
}

#[test]
fn namespaced_sysctls_need_their_namespace() {
    case_alone("sysctl-without-its-namespace", Kind::Escape, |h| {
        let keys = ["net.ipv4.ip_unprivileged_port_start", "kernel.shmmax"];
        let _guard = SysctlGuard::new(&keys);
        control(h)?;
        let mut findings = Vec::new();
        findings.extend(refused(h, "no-netns", keys[0], |b| {
            b.remove_namespace("network")
        }));
        findings.extend(refused(h, "no-ipcns", keys[1], |b| {
            b.remove_namespace("ipc")
        }));
        judge(
            findings,
            "net.* without a network namespace and kernel.shmmax without an ipc namespace refused",
        )
    });
}

#[test]
fn namespaced_sysctls_still_work() {
    case_alone("sysctl-namespaced-allowed", Kind::Behaviour, |h| {
        let keys = ["kernel.shmmax", "net.ipv4.ip_unprivileged_port_start"];
        let _guard = SysctlGuard::new(&keys);
        let b = h.bundle(
            "ns",
            &[
                "/bin/busybox",
                "cat",
                "/proc/sys/kernel/shmmax",
                "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            ],
        );
        b.edit(|c| {
            c["linux"]["sysctl"] = json!({
                "kernel.shmmax": "123456789",
                "net.ipv4.ip_unprivileged_port_start": "0",
            })
        });
        let r = h.run(&b);
        if r.stdout != "123456789\n0\n" {
            return Ok(Finding::Failed(format!(
                "kernel.shmmax (ipc ns) and net.ipv4.ip_unprivileged_port_start (net ns) not \
                 applied: stdout {:?}, {}",
                r.stdout,
                r.brief()
            )));
        }
        Ok(Finding::Held(
            "kernel.shmmax and net.ipv4.ip_unprivileged_port_start set in the container's \
             namespaces"
                .into(),
        ))
    });
}
