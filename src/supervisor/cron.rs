//! Scheduled jobs: `cron.json` at the app's root (Scalingo's format), run as detached one-offs
//! of the current release.
//!
//! ```json
//! {"jobs": [{"command": "*/10 * * * * python3 cleanup.py", "size": "S"}]}
//! ```
//!
//! A job's `command` is a crontab line: five fields (minute, hour, day of month, month, day of
//! week; `*`, `N`, `A-B`, `*/S`, `A-B/S`, lists with `,`, month and day names) or a `@hourly`,
//! `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually` shortcut, then the
//! command. Times are UTC. As in Vixie cron, when both the day of month and the day of week
//! are restricted, a day matching either runs the job. `size` defaults to M.
//!
//! Time comes from a [`Clock`], so that tests can move it.
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::size::Size;

/// Where the time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The host's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Largest cron.json read.
const MAX_CRON_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron.json: {0}; see the scheduler section of the docs for the format ({{\"jobs\":[{{\"command\":\"*/10 * * * * CMD\",\"size\":\"M\"}}]}})")]
    File(String),
    #[error("cron.json job {job}: {problem} in {line:?}; write five fields (minute hour day month weekday) or a @daily-like shortcut, then the command")]
    Schedule {
        job: usize,
        line: String,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CronFile {
    jobs: Vec<CronFileJob>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CronFileJob {
    command: String,
    #[serde(default)]
    size: Option<String>,
}

/// One scheduled job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The crontab line as written.
    pub line: String,
    pub schedule: Schedule,
    pub command: String,
    pub size: Size,
}

/// What `Supervisor::cron` shows of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJobInfo {
    /// The five fields (or the shortcut).
    pub schedule: String,
    pub command: String,
    pub size: Size,
    /// RFC 3339.
    pub last_run: Option<String>,
    pub next_run: Option<String>,
}

/// The jobs of the app whose slug is unpacked at `slug_dir` (none without a cron.json at the
/// app's root, the slug's `app/`).
pub fn read_jobs(slug_dir: &Path) -> Result<Vec<Job>, CronError> {
    let path = slug_dir.join("app").join("cron.json");
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CronError::File(e.to_string())),
    };
    if !meta.is_file() || meta.len() > MAX_CRON_BYTES {
        return Err(CronError::File(
            "must be a regular file of at most 256 KiB (links are not followed)".into(),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| CronError::File(e.to_string()))?;
    parse_jobs(&text)
}

pub fn parse_jobs(text: &str) -> Result<Vec<Job>, CronError> {
    let file: CronFile = serde_json::from_str(text).map_err(|e| CronError::File(e.to_string()))?;
    file.jobs
        .into_iter()
        .enumerate()
        .map(|(i, j)| {
            let bad = |problem: String| CronError::Schedule {
                job: i + 1,
                line: j.command.clone(),
                problem,
            };
            let (schedule, command) = Schedule::parse_line(&j.command).map_err(bad)?;
            let size = match &j.size {
                Some(s) => Size::parse(s).map_err(|e| bad(e.to_string()))?,
                None => Size::M,
            };
            Ok(Job {
                line: j.command.trim().to_string(),
                schedule,
                command,
                size,
            })
        })
        .collect()
}

/// The times a job runs: one bit set per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month and day of week both restricted: either matches.
    either_day: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + lo);
        }
        s.parse::<u32>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("step {s:?} is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            star = part == "*";
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `N/S` means from N to the end, every S.
            (v, if step > 1 { hi } else { v })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("{part:?} is outside {lo}-{hi}"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// A crontab line: the schedule and the command after it.
    pub fn parse_line(line: &str) -> Result<(Schedule, String), String> {
        let line = line.trim();
        let (spec, command) = if line.starts_with('@') {
            let (at, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let spec = match at {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                other => return Err(format!("unknown shortcut {other}")),
            };
            (
                Schedule::parse(spec).map(|mut s| {
                    s.text = at.to_string();
                    s
                })?,
                rest,
            )
        } else {
            let mut rest = line;
            let mut fields = Vec::new();
            for _ in 0..5 {
                let (f, r) = rest
                    .split_once(char::is_whitespace)
                    .ok_or("fewer than five fields and a command")?;
                fields.push(f);
                rest = r.trim_start();
            }
            (Schedule::parse(&fields.join(" "))?, rest)
        };
        let command = command.trim();
        if command.is_empty() {
            return Err("no command after the schedule".into());
        }
        Ok((spec, command.to_string()))
    }

    /// Five fields.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let f: Vec<&str> = spec.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!("{} fields instead of five", f.len()));
        }
        let (minutes, _) = field(f[0], 0, 59, &[])?;
        let (hours, _) = field(f[1], 0, 23, &[])?;
        let (days, dom_star) = field(f[2], 1, 31, &[])?;
        let (months, _) = field(f[3], 1, 12, &MONTHS)?;
        let (mut weekdays, dow_star) = field(f[4], 0, 7, &WEEKDAYS)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Schedule {
            text: f.join(" "),
            minutes,
            hours,
            days,
            months,
            weekdays,
            either_day: !dom_star && !dow_star,
        })
    }

    fn day_matches(&self, c: &Civil) -> bool {
        let dom = self.days & (1 << c.day) != 0;
        let dow = self.weekdays & (1 << c.weekday) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first time strictly after `after` (to the minute) when the job runs; None when
    /// it never does (e.g. February 30th).
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let secs = after.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
        // The next whole minute.
        let mut t = (secs.div_euclid(60) + 1) * 60;
        // Five years cover every calendar combination that can match at all.
        let limit = t + 5 * 366 * 86_400;
        while t < limit {
            let c = Civil::of(t);
            if self.months & (1 << c.month) == 0 {
                t = Civil::start_of_next_month(&c);
                continue;
            }
            if !self.day_matches(&c) {
                t = t - t.rem_euclid(86_400) + 86_400;
                continue;
            }
            if self.hours & (1 << c.hour) == 0 {
                t = t - t.rem_euclid(3600) + 3600;
                continue;
            }
            if self.minutes & (1 << c.minute) == 0 {
                t += 60;
                continue;
            }
            return Some(UNIX_EPOCH + Duration::from_secs(t as u64));
        }
        None
    }
}

/// A UTC date and time to the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    /// 0 = Sunday.
    weekday: u32,
}

impl Civil {
    fn of(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            minute: (sod % 3600 / 60) as u32,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    fn start_of_next_month(c: &Civil) -> i64 {
        let (y, m) = if c.month == 12 {
            (c.year + 1, 1)
        } else {
            (c.year, c.month + 1)
        };
        days_from_civil(y, m, 1) * 86_400
    }
}

/// Howard Hinnant's algorithms (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of a UTC date and time, for tests and callers that set clocks.
pub fn utc(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> SystemTime {
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second);
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(spec: &str, after: SystemTime) -> SystemTime {
        Schedule::parse(spec).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn civil_round_trips() {
        for days in [-1000, 0, 59, 10_957, 20_000, 24_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // 2030-01-01 is a Tuesday.
        let c = Civil::of(days_from_civil(2030, 1, 1) * 86_400 + 3661);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.weekday),
            (2030, 1, 1, 1, 1, 2)
        );
    }

    #[test]
    fn next_runs() {
        let t = utc(2030, 1, 1, 10, 7, 30);
        assert_eq!(next("* * * * *", t), utc(2030, 1, 1, 10, 8, 0));
        assert_eq!(next("*/10 * * * *", t), utc(2030, 1, 1, 10, 10, 0));
        assert_eq!(next("0 0 * * *", t), utc(2030, 1, 2, 0, 0, 0));
        assert_eq!(next("30 9 * * mon-fri", t), utc(2030, 1, 2, 9, 30, 0));
        assert_eq!(next("0 0 1 jan *", t), utc(2031, 1, 1, 0, 0, 0));
        assert_eq!(next("0 12 29 2 *", t), utc(2032, 2, 29, 12, 0, 0));
        // Sunday as 7; 2030-01-06 is a Sunday.
        assert_eq!(next("0 0 * * 7", t), utc(2030, 1, 6, 0, 0, 0));
        // Day of month or day of week when both are set: the 15th, or the next Friday (4th).
        assert_eq!(next("0 0 15 * 5", t), utc(2030, 1, 4, 0, 0, 0));
        assert_eq!(next("5-10/5 * * * *", t), utc(2030, 1, 1, 10, 10, 0));
        assert_eq!(next("5/20 * * * *", t), utc(2030, 1, 1, 10, 25, 0));
        // Strictly after, on an exact minute.
        assert_eq!(
            next("8 10 * * *", utc(2030, 1, 1, 10, 8, 0)),
            utc(2030, 1, 2, 10, 8, 0)
        );
        assert!(Schedule::parse("0 0 30 2 *")
            .unwrap()
            .next_after(t)
            .is_none());
    }

    #[test]
    fn cron_json_is_read_and_bad_lines_are_named() {
        let jobs = parse_jobs(
            r#"{"jobs":[{"command":"*/10 * * * * python3 x.py --a 'b c'","size":"S"},{"command":"@daily ./backup"}]}"#,
        )
        .unwrap();
        assert_eq!(jobs[0].command, "python3 x.py --a 'b c'");
        assert_eq!(jobs[0].size, Size::S);
        assert_eq!(jobs[0].schedule.text, "*/10 * * * *");
        assert_eq!(jobs[1].schedule.text, "@daily");
        assert_eq!(jobs[1].size, Size::M);
        for bad in [
            r#"{"jobs":[{"command":"* * * * *"}]}"#,
            r#"{"jobs":[{"command":"61 * * * * x"}]}"#,
            r#"{"jobs":[{"command":"*/0 * * * * x"}]}"#,
            r#"{"jobs":[{"command":"@often x"}]}"#,
            r#"{"jobs":[{"command":"* * * * * x","size":"huge"}]}"#,
            r#"{"jobs":[{"cmd":"x"}]}"#,
            "not json",
        ] {
            let e = parse_jobs(bad).unwrap_err().to_string();
            assert!(e.starts_with("cron.json"), "{e}");
        }
        let d = tempfile::tempdir().unwrap();
        assert!(read_jobs(d.path()).unwrap().is_empty());
        std::fs::create_dir(d.path().join("app")).unwrap();
        assert!(read_jobs(d.path()).unwrap().is_empty());
        std::fs::write(
            d.path().join("app/cron.json"),
            r#"{"jobs":[{"command":"0 3 * * * ./job"}]}"#,
        )
        .unwrap();
        assert_eq!(read_jobs(d.path()).unwrap().len(), 1);
        std::fs::remove_file(d.path().join("app/cron.json")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("app/cron.json")).unwrap();
        assert!(read_jobs(d.path()).is_err());
    }
}
