//! Retries without storms: a capped exponential backoff with jitter, and a bound on log lines.
//!
//! A failure that repeats (S3 down, a refused DeleteObject, an API error) is retried after
//! [`delay`] (doubling from a base up to a cap, with the upper half jittered so many objects
//! failing at once do not retry in lockstep), and logged only at attempts 1, 2, 4, 8, ... ([`log_due`]):
//! a ten-minute outage gives a handful of log lines per object, not one per retry. Events repeat
//! as one series (see [`crate::events`]).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub const CAP: Duration = Duration::from_secs(120);
/// Keys remembered at most (a forgotten key just starts again from attempt 1).
const KEPT: usize = 10_000;

/// The delay before retry number `attempt` (1 for the first retry): `base * 2^(attempt-1)`,
/// capped at `cap`, of which the upper half is scaled by `jitter` (in `[0, 1]`). So the delay is
/// between half and all of the exponential value.
pub fn delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(cap);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    full / 2 + (full / 2).mul_f64(jitter)
}

/// Whether failure number `attempt` (1-based) is logged: 1, 2, 4, 8, 16, ...
pub fn log_due(attempt: u32) -> bool {
    attempt.is_power_of_two()
}

/// A jitter in `[0, 1)` from the process's random hasher keys (no random-number crate needed:
/// it only has to differ between objects and attempts).
fn jitter(key: &str, attempt: u32) -> f64 {
    let h = std::collections::hash_map::RandomState::new().hash_one((key, attempt));
    // 53 bits of the hash as a fraction.
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Consecutive failures per key (an object, a storage), shared by a reconciler's error policy
/// and its successful reconciles.
#[derive(Debug, Default)]
pub struct Failures {
    attempts: Mutex<HashMap<String, u32>>,
}

/// What to do about one more failure of a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Consecutive failures so far, this one included.
    pub attempt: u32,
    /// Wait this long before the retry.
    pub after: Duration,
    /// Log this failure (see [`log_due`]).
    pub log: bool,
}

impl Failures {
    /// Count a failure of `key` and say when to retry.
    pub fn failed(&self, key: &str) -> Retry {
        let attempt = self
            .attempts
            .lock()
            .map(|mut all| {
                if all.len() >= KEPT && !all.contains_key(key) {
                    all.clear();
                }
                let n = all.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        Retry {
            attempt,
            after: delay(attempt, BASE, CAP, jitter(key, attempt)),
            log: log_due(attempt),
        }
    }

    /// `key` succeeded: the next failure starts again from the first attempt. Returns how many
    /// failures it had (0 when none), e.g. to log the recovery once.
    pub fn succeeded(&self, key: &str) -> u32 {
        self.attempts
            .lock()
            .ok()
            .and_then(|mut all| all.remove(key))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_within_the_jitter_band() {
        let b = Duration::from_secs(2);
        let cap = Duration::from_secs(300);
        assert_eq!(delay(1, b, cap, 0.0), Duration::from_secs(1));
        assert_eq!(delay(1, b, cap, 1.0), Duration::from_secs(2));
        assert_eq!(delay(4, b, cap, 1.0), Duration::from_secs(16));
        assert_eq!(delay(100, b, cap, 1.0), cap);
        assert_eq!(delay(100, b, cap, 0.0), cap / 2);
        // Attempt 0 is treated as the first; bad jitter values are clamped.
        assert_eq!(delay(0, b, cap, 0.5), delay(1, b, cap, 0.5));
        assert_eq!(delay(3, b, cap, f64::NAN), Duration::from_secs(4));
        assert_eq!(delay(3, b, cap, 7.0), Duration::from_secs(8));
        for attempt in 1..40 {
            for j in [0.0, 0.3, 0.99] {
                let d = delay(attempt, b, cap, j);
                assert!(
                    d >= delay(attempt, b, cap, 0.0) && d <= cap,
                    "{attempt} {j}"
                );
            }
        }
    }

    #[test]
    fn log_lines_are_logarithmic_in_the_failures() {
        let logged = (1..=1000).filter(|a| log_due(*a)).count();
        assert_eq!(logged, 10);
        assert!(log_due(1) && log_due(2) && !log_due(3) && log_due(4));
    }

    #[test]
    fn a_success_resets_the_attempts_and_jitter_spreads_retries() {
        let f = Failures::default();
        assert_eq!(f.failed("a").attempt, 1);
        assert_eq!(f.failed("a").attempt, 2);
        let third = f.failed("a");
        assert_eq!((third.attempt, third.log), (3, false));
        assert_eq!(f.failed("b").attempt, 1);
        assert_eq!(f.succeeded("a"), 3);
        assert_eq!(f.succeeded("a"), 0);
        assert_eq!(f.failed("a").attempt, 1);
        let spread: std::collections::BTreeSet<u128> = (0..20)
            .map(|i| delay(8, BASE, CAP, jitter("x", i)).as_millis())
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
    }
}
