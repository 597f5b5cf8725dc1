//! Running a child process under a deadline: in a process group of its own, so that a kill at
//! the deadline reaches everything it started (git's helpers, a hook's subshells, a runtime's
//! container), with its output passed through, captured, or streamed line by line.
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the child's stdout and stderr go.
pub enum Output<'a> {
    /// Ours.
    Inherit,
    /// Captured separately, returned in `Finished`.
    Capture,
    /// Both through one pipe (so their order is kept), one line at a time.
    Lines(&'a mut dyn FnMut(&str)),
}

pub struct Supervised<'a> {
    /// Written to the child's stdin, which is then closed (no stdin at all when None).
    pub stdin: Option<&'a [u8]>,
    pub output: Output<'a>,
    /// None: no deadline.
    pub timeout: Option<Duration>,
    /// At the deadline: what to do first (by default, SIGKILL to the child's group). After
    /// `grace` more, the group is killed in any case and its output no longer awaited.
    pub on_timeout: Option<&'a dyn Fn()>,
    pub grace: Duration,
}

impl Default for Supervised<'_> {
    fn default() -> Self {
        Supervised {
            stdin: None,
            output: Output::Inherit,
            timeout: None,
            on_timeout: None,
            grace: Duration::from_secs(5),
        }
    }
}

/// How the child ended.
#[derive(Debug)]
pub struct Finished {
    /// None when it could not be waited for (it was given up on after the grace period).
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }
}

/// SIGKILL to the process group `child` leads.
pub fn kill_group(child: &Child) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Spawn `cmd` in a process group of its own and wait for it as `o` says.
pub fn run(cmd: &mut Command, o: Supervised) -> std::io::Result<Finished> {
    let Supervised {
        stdin,
        mut output,
        timeout,
        on_timeout,
        grace,
    } = o;
    cmd.process_group(0);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut line_pipe: Option<OwnedFd> = None;
    match &output {
        Output::Inherit => {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
        Output::Capture => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        Output::Lines(_) => {
            let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let write_err = write_end.try_clone()?;
            cmd.stdout(Stdio::from(write_end))
                .stderr(Stdio::from(write_err));
            line_pipe = Some(read_end);
        }
    }
    let mut child = cmd.spawn()?;
    // The spawned child holds its own copies of the pipe's write end now.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child may not read its stdin: a broken pipe is not an error.
        let _ = pipe.write_all(data);
    }
    let collect = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let (out_thread, err_thread) = match output {
        Output::Capture => (
            Some(collect(child.stdout.take().map(|s| Box::new(s) as _))),
            Some(collect(child.stderr.take().map(|s| Box::new(s) as _))),
        ),
        _ => (None, None),
    };
    let lines = line_pipe.map(|read_end| {
        let (tx, rx) = mpsc::channel::<String>();
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(read_end)).split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        (rx, thread)
    });

    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let mut give_up_at = None;
    let mut output_done = lines.is_none();
    let mut status = None;
    let mut poll = Duration::from_millis(1);
    loop {
        if status.is_none() {
            status = child.try_wait()?;
        }
        if status.is_some() && output_done {
            break;
        }
        let now = Instant::now();
        if !timed_out && deadline.is_some_and(|d| now >= d) {
            timed_out = true;
            match on_timeout {
                Some(f) => f(),
                None => kill_group(&child),
            }
            give_up_at = Some(now + grace);
        }
        if give_up_at.is_some_and(|g| now >= g) {
            // Something still holds the output pipe or ignores the kill: stop waiting.
            kill_group(&child);
            if status.is_none() {
                status = child.wait().ok();
            }
            break;
        }
        let until_deadline = deadline
            .filter(|_| !timed_out)
            .map(|d| d.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(100));
        let wait = poll.min(until_deadline).max(Duration::from_millis(1));
        match (&lines, &mut output) {
            (Some((rx, _)), Output::Lines(on_line)) if !output_done => {
                match rx.recv_timeout(wait) {
                    Ok(line) => on_line(&line),
                    Err(mpsc::RecvTimeoutError::Disconnected) => output_done = true,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
            _ => std::thread::sleep(wait),
        }
        poll = (poll * 2).min(Duration::from_millis(20));
    }
    if output_done {
        if let Some((_, thread)) = lines {
            let _ = thread.join();
        }
    }
    Ok(Finished {
        status,
        timed_out,
        stdout: out_thread
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default(),
        stderr: err_thread
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_streams() {
        let f = run(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            Supervised {
                stdin: Some(b"in\n"),
                output: Output::Capture,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(f.stdout, b"in\n");
        assert_eq!(f.stderr, b"err\n");
        assert_eq!(f.status.unwrap().code(), Some(3));
        let mut seen = Vec::new();
        let f = run(
            Command::new("sh").args(["-c", "echo a; echo b >&2; echo c"]),
            Supervised {
                output: Output::Lines(&mut |l| seen.push(l.to_string())),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(f.success());
        assert_eq!(seen, ["a", "b", "c"]);
    }

    #[test]
    fn the_deadline_kills_the_whole_group() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("survivor");
        // The grandchild would write the marker after the deadline if it survived.
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let f = run(
            Command::new("sh").args(["-c", &script]),
            Supervised {
                timeout: Some(Duration::from_millis(100)),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(f.timed_out && !f.success());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !marker.exists(),
            "a process of the group outlived the deadline"
        );
    }
}
