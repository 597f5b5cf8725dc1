//! The wording of platform events, as Heroku's users know it (`web.1: State changed from up to
//! crashed`): every line starts with the container's process label.
use std::time::Duration;

use super::engine::Ending;
use super::monitor::log_names;
use super::size::Size;
use super::state::Exit;

pub fn label(name: &str) -> String {
    log_names(name).1
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

pub fn starting(name: &str, command: &str, size: Size, release: u32) -> String {
    format!(
        "{}: Starting process with command `{command}` (release v{release}, size {size})",
        label(name)
    )
}

pub fn state_changed(name: &str, from: &str, to: &str) -> String {
    format!("{}: State changed from {from} to {to}", label(name))
}

/// How a container ended: its status, with the signal or the OOM kill that explains it.
pub fn exited(name: &str, exit: &Exit, size: Size) -> Vec<String> {
    let l = label(name);
    let mut lines = Vec::new();
    if exit.oom {
        lines.push(format!(
            "{l}: Error R15 (Memory quota exceeded): the kernel's OOM killer killed a process at the {} MiB limit of size {size}; use a larger size or less memory",
            size.memory_bytes() >> 20
        ));
    }
    if exit.killed {
        lines.push(format!(
            "{l}: Error R12 (Exit timeout): the process did not exit within the grace period after SIGTERM, killing it with SIGKILL"
        ));
    }
    match exit.signal() {
        Some(sig) => lines.push(format!(
            "{l}: Process exited with status {} (killed by {})",
            exit.code,
            signal_name(sig)
        )),
        None => lines.push(format!("{l}: Process exited with status {}", exit.code)),
    }
    lines
}

/// How an instance's monitor ended, as events.
pub fn ended(name: &str, ending: &Ending, size: Size) -> Vec<String> {
    match ending {
        Ending::Exit(x) => exited(name, x, size),
        Ending::Failed(why) => vec![could_not_start(name, why)],
        Ending::Lost => vec![lost(name)],
    }
}

pub fn could_not_start(name: &str, why: &str) -> String {
    format!("{}: Could not start: {why}", label(name))
}

pub fn lost(name: &str) -> String {
    format!(
        "{}: The container's monitor ended without a word (killed?); what it left is cleaned up",
        label(name)
    )
}

pub fn restarting(name: &str, delay: Duration, restart: u32) -> String {
    if delay.is_zero() {
        format!("{}: Restarting (restart {restart})", label(name))
    } else {
        format!(
            "{}: Restarting in {} s (restart {restart}; crashing repeatedly, backing off)",
            label(name),
            delay.as_secs()
        )
    }
}

pub fn stopping(name: &str) -> String {
    format!("{}: Stopping all processes with SIGTERM", label(name))
}

pub fn boot_timeout(name: &str, secs: u64) -> String {
    format!(
        "{}: Error R10 (Boot timeout): the web process did not bind to $PORT within {secs} seconds of launch, stopping it",
        label(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_say_status_signal_and_oom() {
        let e = Exit {
            code: 137,
            oom: true,
            stopped: false,
            killed: false,
            at: String::new(),
        };
        let lines = exited("web-1", &e, Size::S);
        assert!(lines[0].starts_with("web.1: Error R15"), "{lines:?}");
        assert!(lines[0].contains("256 MiB"), "{lines:?}");
        assert_eq!(
            lines[1],
            "web.1: Process exited with status 137 (killed by SIGKILL)"
        );
        let e = Exit {
            code: 3,
            oom: false,
            ..e
        };
        assert_eq!(
            exited("worker-2", &e, Size::M),
            ["worker.2: Process exited with status 3"]
        );
        assert!(restarting("web-1", Duration::from_secs(4), 3).contains("in 4 s"));
    }
}
