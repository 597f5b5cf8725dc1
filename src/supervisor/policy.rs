//! The restart policy: a container that ends on its own is restarted at once the first time,
//! then after a delay that doubles with each further crash, up to a cap; a container that
//! stayed up long enough before crashing starts over at "at once". Never a tight loop.
use std::time::Duration;

/// Restart delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the second restart; later ones double it.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Up at least this long before a crash: the crash counts as the first again.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// After a crash of a container that was at `step` (0 for one that had not crashed
    /// recently) and stayed up `up_for`: the delay before its restart and its next step.
    pub fn after_crash(&self, step: u32, up_for: Duration) -> (Duration, u32) {
        let step = if up_for >= self.reset_after { 0 } else { step };
        let delay = match step {
            0 => Duration::ZERO,
            n => {
                let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
                self.first_delay
                    .checked_mul(factor)
                    .unwrap_or(self.max_delay)
                    .min(self.max_delay)
            }
        };
        (delay, step.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_once_then_doubling_to_the_cap_and_reset_after_a_long_run() {
        let b = Backoff::default();
        let short = Duration::from_secs(2);
        let mut step = 0;
        let mut delays = Vec::new();
        for _ in 0..12 {
            let (d, next) = b.after_crash(step, short);
            delays.push(d.as_secs());
            step = next;
        }
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // A container up for ten minutes crashes as if for the first time.
        assert_eq!(
            b.after_crash(9, Duration::from_secs(600)),
            (Duration::ZERO, 1)
        );
        // Far steps neither overflow nor exceed the cap.
        assert_eq!(b.after_crash(200, short).0, b.max_delay);
    }
}
