//! /proc/PID/stat, parsed once for everyone (liveness checks, `ps`, pid reuse detection).

/// The fields of /proc/PID/stat that slipway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// R, S, D, Z (zombie), X (dead), T, …
    pub state: char,
    pub ppid: i32,
    pub num_threads: u32,
    /// Clock ticks after boot: with the pid, identifies a process even after pid reuse.
    pub start_time: u64,
}

impl ProcStat {
    /// Running or sleeping: neither a zombie nor dead.
    pub fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// The stat of `pid`, or None when there is no such process.
pub fn stat(pid: i32) -> Option<ProcStat> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse(s: &str) -> Option<ProcStat> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        num_threads: fields.get(17)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is the live process that started at `start_time` (not a reused pid).
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.is_live() && s.start_time == start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let s = parse(line).unwrap();
        assert_eq!((s.state, s.ppid, s.start_time), ('S', 7, 12345));
        assert_eq!(s.num_threads, 1);
        assert!(parse("garbage").is_none());
    }

    #[test]
    fn our_own_process_is_alive() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!(is_alive(me, s.start_time));
        assert!(!is_alive(me, s.start_time + 1));
    }
}
