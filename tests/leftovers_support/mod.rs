//! What an interrupted or finished command could leave of a test's world on the host,
//! described (empty when nothing): workspaces, network namespace files, address leases and
//! the runtime's containers. Shared by the build and supervisor test supports.
use std::path::Path;
use std::process::Command;

/// Leftovers under `data` and `run_dir`, the runtime's state asked of `runtime`.
pub fn leftovers(data: &Path, run_dir: &Path, runtime: &str) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["builds", "containers"] {
        for e in std::fs::read_dir(data.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push(format!("workspace {}", e.path().display()));
        }
    }
    for e in std::fs::read_dir(run_dir.join("netns"))
        .into_iter()
        .flatten()
        .flatten()
    {
        found.push(format!("netns file {}", e.path().display()));
    }
    for e in walkdir::WalkDir::new(data.join("network"))
        .into_iter()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_file() && name.parse::<std::net::Ipv4Addr>().is_ok() {
            found.push(format!("lease {}", e.path().display()));
        }
    }
    let list = Command::new(runtime)
        .arg("--root")
        .arg(run_dir.join("runtime"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&list.stdout).lines() {
        found.push(format!("container {id}"));
    }
    found
}
