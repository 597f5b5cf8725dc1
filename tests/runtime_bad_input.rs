//! Bad input: a clear error, a non-zero exit, and nothing left behind (no state dir, no
//! cgroup, no mount).
mod common;

use common::*;
use serde_json::json;

/// Run `create` and check it failed cleanly with a message containing `needle`.
fn fails_cleanly(f: &Fixture, id: &str, needle: &str) {
    let out = f.rt(&["create", "--bundle", f.bundle.to_str().unwrap(), id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "create {id} should fail");
    assert!(
        err.contains(needle),
        "error should mention {needle:?}: {err}"
    );
    if state_id_is_safe(id) {
        assert!(!f.root.join(id).exists(), "state dir left for {id}");
        assert!(!cgroup_exists(id), "cgroup left for {id}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(f.dir.path().to_str().unwrap()),
        "mount left behind"
    );
}

fn state_id_is_safe(id: &str) -> bool {
    !id.contains('/') && !id.starts_with('.')
}

#[test]
fn malformed_config() {
    let f = Fixture::new(&["true"]);
    std::fs::write(f.bundle.join("config.json"), "{ not json").unwrap();
    fails_cleanly(&f, &f.id(), "not a valid OCI runtime spec");
}

#[test]
fn missing_config() {
    let f = Fixture::new(&["true"]);
    std::fs::remove_file(f.bundle.join("config.json")).unwrap();
    fails_cleanly(&f, &f.id(), "config.json: not found");
}

#[test]
fn missing_rootfs() {
    let f = Fixture::new(&["true"]);
    f.edit(|c| c["root"]["path"] = "/nonexistent/rootfs".into());
    fails_cleanly(&f, &f.id(), "rootfs must exist");
}

#[test]
fn ids_with_slash_or_dotdot() {
    let f = Fixture::new(&["true"]);
    for id in ["a/b", "..", "../escape", ".hidden"] {
        fails_cleanly(&f, id, "invalid container id");
    }
    assert!(!f.root.join("escape").exists() && !f.dir.path().join("escape").exists());
}

#[test]
fn duplicate_id_leaves_the_first_container_alone() {
    let f = Fixture::new(&["sleep", "100"]);
    let id = f.create();
    let out = f.rt(&["create", "--bundle", f.bundle.to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(f.state(&id)["status"], "created");
    assert!(cgroup_exists(&id));
}

#[test]
fn unknown_namespace() {
    let f = Fixture::new(&["true"]);
    f.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "bogusns"}))
    });
    fails_cleanly(&f, &f.id(), "bogusns");
}

#[test]
fn unknown_capability() {
    let f = Fixture::new(&["true"]);
    f.edit(|c| {
        c["process"]["capabilities"]["bounding"]
            .as_array_mut()
            .unwrap()
            .push("CAP_NOPE".into())
    });
    fails_cleanly(&f, &f.id(), "CAP_NOPE");
}

#[test]
fn seccomp_syscall_that_does_not_exist() {
    let f = Fixture::new(&["true"]);
    f.edit(|c| {
        c["linux"]["seccomp"]["syscalls"]
            .as_array_mut()
            .unwrap()
            .push(json!({"names": ["no_such_syscall"], "action": "SCMP_ACT_ALLOW"}))
    });
    fails_cleanly(&f, &f.id(), "no_such_syscall");
}

#[test]
fn program_that_does_not_exist() {
    let f = Fixture::new(&["/bin/does-not-exist"]);
    let id = f.create();
    let out = f.rt(&["start", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does-not-exist") && err.contains("No such file"),
        "{err}"
    );
    f.wait_status(&id, "stopped");
    f.ok(&["delete", &id]);
    assert!(!cgroup_exists(&id));
}

#[test]
fn bind_mount_source_missing() {
    let f = Fixture::new(&["true"]);
    f.edit(|c| c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "bind", "source": "/nonexistent-src", "options": ["rbind"]})));
    fails_cleanly(&f, &f.id(), "/nonexistent-src");
}

#[test]
fn unknown_container_commands() {
    let f = Fixture::new(&["true"]);
    for cmd in [
        ["state", "nope"],
        ["start", "nope"],
        ["kill", "nope"],
        ["delete", "nope"],
    ] {
        let out = f.rt(&cmd);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not exist"),
            "{cmd:?}"
        );
    }
}

#[test]
fn host_sysctl_is_refused_before_anything_is_written() {
    let f = Fixture::new(&["true"]);
    let before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    f.edit(|c| c["linux"]["sysctl"] = json!({"kernel.core_pattern": "|/tmp/slipway-pwned %p"}));
    fails_cleanly(&f, &f.id(), "sysctl kernel.core_pattern is not namespaced");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        before
    );
}

#[test]
fn net_sysctl_without_a_network_namespace_of_its_own() {
    let f = Fixture::new(&["true"]);
    f.edit(|c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_default_ttl": "42"});
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
    });
    fails_cleanly(&f, &f.id(), "belongs to the net namespace");
    f.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "network", "path": "/proc/self/ns/net"}))
    });
    fails_cleanly(&f, &f.id(), "shares the host's");
}

#[test]
fn sysctl_key_with_a_path_in_it() {
    let f = Fixture::new(&["true"]);
    f.edit(|c| c["linux"]["sysctl"] = json!({"net.ipv4/../../kernel/core_pattern": "x"}));
    fails_cleanly(&f, &f.id(), "is not a sysctl name");
}
