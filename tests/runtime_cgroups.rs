//! cgroup limits through slipway-runtime, asserted by their effect. Layout-agnostic: the same
//! binary runs on this v1 hybrid host and in the pure cgroup v2 guest (scripts/vm/run).
mod common;

use common::*;
use serde_json::json;
use slipway::runtime::cgroups::Cgroup;

fn cgroup_of(f: &Fixture, id: &str) -> Cgroup {
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.root.join(id).join("state.json")).unwrap())
            .unwrap();
    serde_json::from_value(st["cgroup"].clone()).unwrap()
}

#[test]
fn memory_limit_kills_a_process_that_allocates_past_it() {
    // tail must hold a newline-free stream in memory: 256 MiB against a 32 MiB limit.
    let f = Fixture::new(&[
        "sh",
        "-c",
        "head -c 268435456 /dev/zero | tail > /dev/null; echo status=$?",
    ]);
    f.edit(|c| c["linux"]["resources"] = json!({"memory": {"limit": 33554432, "swap": 33554432}}));
    let id = f.create();
    let cg = cgroup_of(&f, &id);
    f.ok(&["start", &id]);
    f.wait_status(&id, "stopped");
    let out = f.output_of(&id);
    assert!(
        out.contains("status=137"),
        "tail should die of SIGKILL: output {out:?}, OOM kills in the cgroup: {:?}, state: {}",
        cg.oom_kills(),
        f.state(&id)
    );
    assert!(
        cg.oom_kills().unwrap() >= 1,
        "the OOM killer acted in the container's cgroup"
    );
    f.ok(&["delete", &id]);
    assert!(!cgroup_exists(&id));
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let f = Fixture::new(&["sleep", "100"]);
    f.edit(|c| c["linux"]["resources"] = json!({"pids": {"limit": 10}}));
    let id = f.create();
    f.ok(&["start", &id]);
    let out = f.rt(&[
        "exec",
        &id,
        "sh",
        "-c",
        "for i in $(seq 1 40); do sleep 30 >/dev/null 2>&1 & done; echo all forked",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("all forked"), "{text}");
    assert!(
        text.contains("fork"),
        "the shell reports the failed fork: {text}"
    );
    let pids: Vec<i32> = serde_json::from_str(&f.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(
        !pids.is_empty() && pids.len() <= 10,
        "{} processes: {pids:?}",
        pids.len()
    );
    f.ok(&["delete", "--force", &id]);
}

#[test]
fn cpu_and_memory_limits_are_visible_and_updatable() {
    let f = Fixture::new(&["sleep", "100"]);
    f.edit(|c| {
        c["linux"]["resources"] =
            json!({"memory": {"limit": 67108864}, "cpu": {"quota": 50000, "period": 100000}});
    });
    let id = f.create();
    f.ok(&["start", &id]);
    let read = |what: &str| {
        let script = match what {
            "mem" => "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
            _ => "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max",
        };
        f.ok(&["exec", &id, "sh", "-c", script]).trim().to_string()
    };
    assert_eq!(read("mem"), "67108864");
    assert_eq!(read("cpu"), "50000");
    f.ok(&[
        "update",
        "--memory",
        "134217728",
        "--cpu-quota",
        "20000",
        &id,
    ]);
    assert_eq!(read("mem"), "134217728");
    assert_eq!(read("cpu"), "20000");
    f.ok(&["delete", "--force", &id]);
    assert!(!cgroup_exists(&id));
}

#[test]
fn container_sees_only_its_own_cgroup() {
    let f = Fixture::new(&["cat", "/proc/self/cgroup"]);
    let (code, out, err) = f.run();
    assert_eq!(code, 0, "{err}");
    // With a cgroup namespace, every hierarchy's path is the namespace root.
    for line in out.lines() {
        assert!(line.ends_with(":/"), "{out}");
    }
}

#[test]
fn device_cgroup_refuses_devices_outside_the_allowed_list() {
    // CAP_MKNOD lets root make the node; the device cgroup still refuses to open it.
    let f = Fixture::new(&[
        "sh",
        "-c",
        "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem; echo rc=$?; head -c 1 /dev/zero | wc -c",
    ]);
    f.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}));
    });
    let (_, out, err) = f.run();
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(
        out.trim_end().ends_with('1'),
        "/dev/zero stays usable: {out}"
    );
}
