//! Measurements for scripts/bench/scale (root, ignored by default): the time from `scale
//! web=N` to N containers accepting TCP, and the memory each idle container costs the host
//! beyond its app (its monitor, the runtime's `run` process that waits for it, the container's
//! init). Prints a Markdown table; asserts nothing but that the containers come up.
mod supervisor_support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use slipway::supervisor::{Formation, Scale, Size};
use supervisor_support::*;

/// (Rss, Pss, Private) of a process, in KiB, from /proc/PID/smaps_rollup.
fn memory(pid: i32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("Rss:"),
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    )
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
#[ignore = "a benchmark: run by scripts/bench/scale"]
fn scale_to_n_and_memory_per_container() {
    let n: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let fixture_name = std::env::var("BENCH_APP").unwrap_or("go".into());
    let env = Env::new();
    let built = env.build_json(&fixture_name, "bench");
    let slug = std::path::PathBuf::from(built["unpacked"].as_str().unwrap());
    let web = built["process_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .map(|p| p["command"].as_str().unwrap().to_string())
        .expect("the fixture has a web process");
    let mut o = env.options();
    o.boot_timeout = Duration::from_secs(120);
    let sup = env.start_with(o);
    let r = release("bench", 1, &slug, &[("web", &web)], &[]);
    sup.rollout(&r, &Formation::web(0), &mut |_| {}).unwrap();
    let scale = |count: u32| {
        let mut f = Formation::default();
        f.set("web", Scale::new(count, Size::M));
        sup.scale("bench", &f).unwrap();
    };
    println!("| run | containers | scale to all accepting TCP | to all routed |");
    println!("|---|---|---|---|");
    for run in 1..=runs {
        let t0 = Instant::now();
        scale(n as u32);
        let mut accepting = std::collections::BTreeSet::new();
        let mut tcp_done = None;
        loop {
            for c in sup.ps("bench") {
                if let Some(a) = c.address {
                    if !accepting.contains(&a)
                        && TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok()
                    {
                        accepting.insert(a);
                    }
                }
            }
            if accepting.len() >= n && tcp_done.is_none() {
                tcp_done = Some(t0.elapsed());
            }
            if tcp_done.is_some() && env.events.backends("bench").len() >= n {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "not up after 3 minutes"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let routed = t0.elapsed();
        println!(
            "| {run} | {n} | {:.2} s | {:.2} s |",
            tcp_done.unwrap().as_secs_f64(),
            routed.as_secs_f64()
        );
        if run < runs {
            scale(0);
            wait_for("all stopped", Duration::from_secs(120), || {
                sup.ps("bench").is_empty().then_some(())
            });
        }
    }
    // Idle now: what each container costs besides its app.
    std::thread::sleep(Duration::from_secs(2));
    let mut per = std::collections::BTreeMap::<&str, (u64, u64, u64, usize)>::new();
    let mut add = |what: &'static str, pid: i32| {
        let (rss, pss, private) = memory(pid);
        let e = per.entry(what).or_default();
        e.0 += rss;
        e.1 += pss;
        e.2 += private;
        e.3 += 1;
    };
    let mut apps = (0u64, 0u64);
    let state_dir = env.run_dir().join("supervisor/bench");
    for e in std::fs::read_dir(&state_dir).unwrap().flatten() {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        let monitor = v["monitor_pid"].as_i64().unwrap() as i32;
        add("monitor (slipway monitor)", monitor);
        // monitor -> the container's init (its child: the monitor is a subreaper) -> the app.
        let mut level = children(monitor);
        while let Some(pid) = level.pop() {
            if comm(pid) == "slipway-init" {
                add("container init (slipway-init)", pid);
                for app in children(pid) {
                    let (_, pss, _) = memory(app);
                    apps.0 += pss;
                    apps.1 += 1;
                }
            } else {
                add("other", pid);
                level.extend(children(pid));
            }
        }
    }
    println!();
    println!("| process, per container | RSS | PSS | private (USS) |");
    println!("|---|---|---|---|");
    let mut total = (0u64, 0u64, 0u64);
    for (what, (rss, pss, private, count)) in &per {
        let c = *count as u64;
        println!(
            "| {what} ({count}) | {:.0} KiB | {:.0} KiB | {:.0} KiB |",
            *rss as f64 / c as f64,
            *pss as f64 / c as f64,
            *private as f64 / c as f64
        );
        total.0 += rss / c;
        total.1 += pss / c;
        total.2 += private / c;
    }
    println!(
        "| **overhead per container** | {} KiB | **{} KiB** | {} KiB |",
        total.0, total.1, total.2
    );
    println!(
        "| (not counted, the app: its first process, the `bash -c` that runs the command, {} of them, PSS {} KiB each) | | | |",
        apps.1,
        apps.0 / apps.1.max(1)
    );
    if let Some(secs) = std::env::var("BENCH_PAUSE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // Time to look at the processes by hand.
        std::thread::sleep(Duration::from_secs(secs));
    }
    sup.stop_app("bench").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}
