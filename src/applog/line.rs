//! One log line: `TIMESTAMP SOURCE[PROCESS]: MESSAGE`, and its UTC timestamp.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time with microsecond precision, shown as `2026-11-26T10:00:00.000000+00:00`.
///
/// That text has a fixed width for years 0 to 9999, so its order is the time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub micros: i64,
}

/// Width of the text form of a [`Timestamp`].
pub const TIMESTAMP_LEN: usize = 32;

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// Parses the exact form [`Timestamp`]'s `Display` writes (UTC, `+00:00`).
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != TIMESTAMP_LEN
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'.'
            || &b[26..] != b"+00:00"
        {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<i64> {
            let digits = &b[from..to];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(
                digits
                    .iter()
                    .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0')),
            )
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, min, sec, micro) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + min * 60 + sec;
        Some(Timestamp {
            micros: secs * 1_000_000 + micro,
        })
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        Timestamp { micros }
    }
}

impl Timestamp {
    /// The text form as bytes, written digit by digit (log writers call this for every
    /// line). Years outside 0..=9999 are clamped to keep the width.
    pub fn to_bytes(self) -> [u8; TIMESTAMP_LEN] {
        let secs = self.micros.div_euclid(1_000_000);
        let micro = self.micros.rem_euclid(1_000_000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let mut text = *b"0000-00-00T00:00:00.000000+00:00";
        put_digits(&mut text[0..4], y.clamp(0, 9999));
        put_digits(&mut text[5..7], m);
        put_digits(&mut text[8..10], d);
        put_digits(&mut text[11..13], sod / 3600);
        put_digits(&mut text[14..16], sod % 3600 / 60);
        put_digits(&mut text[17..19], sod % 60);
        put_digits(&mut text[20..26], micro);
        text
    }
}

fn put_digits(out: &mut [u8], mut n: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_bytes();
        f.write_str(std::str::from_utf8(&text).expect("digits and punctuation"))
    }
}

// Proleptic Gregorian calendar conversions (H. Hinnant's `days_from_civil` and
// `civil_from_days`): day 0 is 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: Timestamp,
    /// Who wrote it: `app` for container output, `slipway` for the platform and router.
    pub source: String,
    /// Which process: `web-1`, `router`, `deploy`, ….
    pub process: String,
    pub message: String,
}

impl LogLine {
    /// Parses `TIMESTAMP SOURCE[PROCESS]: MESSAGE` (without the line break).
    pub fn parse(line: &str) -> Option<LogLine> {
        let time = Timestamp::parse(line.get(..TIMESTAMP_LEN)?)?;
        let rest = line[TIMESTAMP_LEN..].strip_prefix(' ')?;
        let open = rest.find('[')?;
        let close = open + rest[open..].find("]: ")?;
        Some(LogLine {
            time,
            source: rest[..open].to_string(),
            process: rest[open + 1..close].to_string(),
            message: rest[close + 3..].to_string(),
        })
    }
}

impl fmt::Display for LogLine {
    /// The stored form, without the line break.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}[{}]: {}",
            self.time, self.source, self.process, self.message
        )
    }
}

/// Appends `message` to `out` as log lines (one per line of the message, each with the
/// same prefix and a trailing `\n`); control characters other than tab are escaped as
/// `\xNN` so that nothing a process prints can forge or break a line.
pub(crate) fn push_lines(
    out: &mut Vec<u8>,
    time: Timestamp,
    source: &str,
    process: &str,
    message: &str,
) {
    let stamp = time.to_bytes();
    let message = message.strip_suffix('\n').unwrap_or(message);
    for part in message.split('\n') {
        let part = part.strip_suffix('\r').unwrap_or(part);
        out.extend_from_slice(&stamp);
        out.push(b' ');
        out.extend_from_slice(source.as_bytes());
        out.push(b'[');
        out.extend_from_slice(process.as_bytes());
        out.extend_from_slice(b"]: ");
        if part
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
        {
            out.extend_from_slice(part.as_bytes());
        } else {
            for c in part.chars() {
                if c.is_control() && c != '\t' {
                    out.extend_from_slice(format!("\\x{:02x}", c as u32).as_bytes());
                } else {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for micros in [
            0,
            1,
            951_782_400_123_456,   // 2000-02-29
            1_795_687_200_000_000, // 2026-11-26T10:00:00
            4_102_444_799_999_999, // 2099-12-31T23:59:59.999999
        ] {
            let t = Timestamp { micros };
            let text = t.to_string();
            assert_eq!(text.len(), TIMESTAMP_LEN, "{text}");
            assert_eq!(Timestamp::parse(&text), Some(t), "{text}");
        }
        assert_eq!(
            Timestamp {
                micros: 1_795_687_200_000_000
            }
            .to_string(),
            "2026-11-26T10:00:00.000000+00:00"
        );
        assert_eq!(
            Timestamp {
                micros: 951_782_400_123_456
            }
            .to_string(),
            "2000-02-29T00:00:00.123456+00:00"
        );
    }

    #[test]
    fn bad_timestamps_are_refused() {
        for bad in [
            "",
            "2026-11-26T10:00:00.000000Z",
            "2026-13-26T10:00:00.000000+00:00",
            "2026-11-26T10:00:00.00000a+00:00",
            "2026-11-26T10:00:00.000000+01:00",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn lines_round_trip_and_cannot_be_forged() {
        let t = Timestamp {
            micros: 1_795_687_200_000_000,
        };
        let mut out = Vec::new();
        push_lines(&mut out, t, "app", "web-1", "one\r\ntwo\x1b[31m\n");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "2026-11-26T10:00:00.000000+00:00 app[web-1]: one\n\
             2026-11-26T10:00:00.000000+00:00 app[web-1]: two\\x1b[31m\n"
        );
        let first = LogLine::parse(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            first,
            LogLine {
                time: t,
                source: "app".into(),
                process: "web-1".into(),
                message: "one".into()
            }
        );
        assert_eq!(first.to_string(), text.lines().next().unwrap());
        assert_eq!(LogLine::parse("garbage"), None);
    }
}
