//! `list` and `ps`.
use slipway::runtime::container;
use slipway::runtime::state::{OciState, StateRoot};
use slipway::sys::procfs;

use crate::{ListFormat, R};

pub fn list(root: &StateRoot, format: ListFormat, quiet: bool) -> R<u8> {
    let entries = container::list(root);
    if quiet {
        for e in &entries {
            println!("{}", e.state.id);
        }
        return Ok(0);
    }
    let states: Vec<OciState> = entries
        .iter()
        .map(|e| OciState {
            owner: Some("root"),
            ..OciState::of(&e.state, e.status)
        })
        .collect();
    if format == ListFormat::Json {
        println!(
            "{}",
            serde_json::to_string(&states).expect("states serialize")
        );
        return Ok(0);
    }
    println!(
        "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for s in &states {
        println!(
            "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
            s.id,
            s.pid,
            s.status,
            s.bundle.display(),
            s.created.unwrap_or(""),
            s.owner.unwrap_or("")
        );
    }
    Ok(0)
}

pub fn ps(root: &StateRoot, id: &str, format: ListFormat) -> R<u8> {
    let pids = container::pids(root, id)?;
    if format == ListFormat::Json {
        println!("{}", serde_json::to_string(&pids).expect("pids serialize"));
        return Ok(0);
    }
    println!("{:>8} {:>8}  CMD", "PID", "PPID");
    for pid in pids {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let ppid = procfs::stat(pid).map_or(0, |s| s.ppid);
        println!("{pid:>8} {ppid:>8}  {cmd}");
    }
    Ok(0)
}
