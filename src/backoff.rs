//! Retries without storms: a capped exponential backoff with jitter, and a bound on log lines.
//!
//! A failure that repeats (S3 down, a refused DeleteObject, an API error) is retried after
//! [`delay`] (doubling from a base up to a cap, with the upper half jittered so many objects
//! failing at once do not retry in lockstep), and logged only at attempts 1, 2, 4, 8, ... ([`log_due`]):
//! a ten-minute outage gives a handful of log lines per object, not one per retry. Events repeat
//! as one series (see [`crate::events`]).
//!
//! A reconciler's error policy asks [`Failures::failed_as`] with the error's [`RetryKind`] (a
//! setting a user must fix waits long, a throttled or overloaded API server is retried soon,
//! anything else backs off to [`CAP`]), and [`Failures::report`] for whether the error is a new
//! problem of that object, worth one Warning Event ([`report_due`]). [`tracked`] wraps a
//! reconcile so that its success resets both.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub const CAP: Duration = Duration::from_secs(120);
/// Longest retry delay of a throttled or overloaded server (429, 5xx): it answers, so it is
/// asked again soon, but never in a tight loop.
pub const THROTTLED_CAP: Duration = Duration::from_secs(10);
/// Retry delay of an error a user must fix (a missing or invalid Secret): the objects it depends
/// on are watched, so this is only a fallback; jittered down to half.
pub const CONFIG_WAIT: Duration = Duration::from_secs(60);
/// Keys remembered at most (a forgotten key just starts again from attempt 1).
const KEPT: usize = 10_000;

/// How an error is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// A setting a user must fix: wait for a change (the objects it depends on are watched), or
    /// [`CONFIG_WAIT`].
    Config,
    /// The server answered that it is throttling or overloaded (HTTP 429, 5xx): back off up to
    /// [`THROTTLED_CAP`] only.
    Throttled,
    /// Anything else (unreachable, refused, ...): back off up to [`CAP`].
    Other,
}

impl RetryKind {
    /// The kind of a failed API request: 429 and 5xx answers are [`RetryKind::Throttled`].
    pub fn of_kube(error: &kube::Error) -> RetryKind {
        match error {
            kube::Error::Api(e) if e.code == 429 || e.code >= 500 => RetryKind::Throttled,
            _ => RetryKind::Other,
        }
    }
}

/// The delay before retry number `attempt` of an error of `kind` (see [`delay`] for `jitter`).
pub fn retry_delay(kind: RetryKind, attempt: u32, jitter: f64) -> Duration {
    match kind {
        RetryKind::Config => delay(1, CONFIG_WAIT, CONFIG_WAIT, jitter),
        RetryKind::Throttled => delay(attempt, BASE, THROTTLED_CAP, jitter),
        RetryKind::Other => delay(attempt, BASE, CAP, jitter),
    }
}

/// Whether an error `message` about an object deserves a Warning Event, given the message of
/// the last one reported since the object's last success: only a new problem does, so a
/// reconcile failing the same way at every retry gives one Event, not one per retry.
pub fn report_due(last: Option<&str>, message: &str) -> bool {
    last != Some(message)
}

/// Run one reconcile of `key`; when it succeeds, `key`'s failures and reported error are
/// forgotten (its error policy counts them with [`Failures::failed_as`]).
pub async fn tracked<T, E>(
    failures: &Failures,
    key: &str,
    reconcile: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let result = reconcile.await;
    if result.is_ok() {
        failures.succeeded(key);
    }
    result
}

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
    keys: Mutex<HashMap<String, Failing>>,
}

/// What is remembered of a failing key.
#[derive(Debug, Default)]
struct Failing {
    /// Consecutive failures.
    attempts: u32,
    /// The error last reported as an Event, if any.
    reported: Option<String>,
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
    /// Count a failure of `key` and say when to retry (as [`RetryKind::Other`]).
    pub fn failed(&self, key: &str) -> Retry {
        self.failed_as(key, RetryKind::Other)
    }

    /// Count a failure of `key` of `kind` and say when to retry.
    pub fn failed_as(&self, key: &str, kind: RetryKind) -> Retry {
        let attempt = self
            .with(key, |f| {
                f.attempts = f.attempts.saturating_add(1);
                f.attempts
            })
            .unwrap_or(1);
        Retry {
            attempt,
            after: retry_delay(kind, attempt, jitter(key, attempt)),
            log: log_due(attempt),
        }
    }

    /// Whether the error `message` of the failing `key` is a new problem to report (see
    /// [`report_due`]); if so it is remembered as reported. Call [`Failures::unreport`] when
    /// the report could not be made.
    pub fn report(&self, key: &str, message: &str) -> bool {
        self.with(key, |f| {
            let due = report_due(f.reported.as_deref(), message);
            if due {
                f.reported = Some(message.to_string());
            }
            due
        })
        .unwrap_or(false)
    }

    /// The report of `message` about `key` failed: the next failure with it tries again.
    pub fn unreport(&self, key: &str, message: &str) {
        self.with(key, |f| {
            if f.reported.as_deref() == Some(message) {
                f.reported = None;
            }
        });
    }

    /// `key` succeeded: the next failure starts again from the first attempt, and its error is
    /// reported again. Returns how many failures it had (0 when none), e.g. to log the recovery
    /// once.
    pub fn succeeded(&self, key: &str) -> u32 {
        self.keys
            .lock()
            .ok()
            .and_then(|mut all| all.remove(key))
            .map(|f| f.attempts)
            .unwrap_or(0)
    }

    /// Change what is remembered of `key` (bounded: past [`KEPT`] keys, all are forgotten).
    fn with<T>(&self, key: &str, change: impl FnOnce(&mut Failing) -> T) -> Option<T> {
        let mut all = self.keys.lock().ok()?;
        if all.len() >= KEPT && !all.contains_key(key) {
            all.clear();
        }
        Some(change(all.entry(key.to_string()).or_default()))
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

    #[test]
    fn each_kind_backs_off_within_its_own_band() {
        for attempt in 1..40 {
            for j in [0.0, 0.5, 1.0] {
                let config = retry_delay(RetryKind::Config, attempt, j);
                assert!(
                    config >= CONFIG_WAIT / 2 && config <= CONFIG_WAIT,
                    "{config:?}"
                );
                let throttled = retry_delay(RetryKind::Throttled, attempt, j);
                assert!(throttled >= BASE / 2 && throttled <= THROTTLED_CAP);
                let other = retry_delay(RetryKind::Other, attempt, j);
                assert!(other >= throttled && other <= CAP);
            }
        }
        // The first retries are as quick for every kind but a configuration error; later, a
        // server that answers is asked again sooner than one that does not.
        assert_eq!(
            retry_delay(RetryKind::Throttled, 1, 1.0),
            retry_delay(RetryKind::Other, 1, 1.0)
        );
        assert_eq!(retry_delay(RetryKind::Throttled, 20, 1.0), THROTTLED_CAP);
        assert_eq!(retry_delay(RetryKind::Other, 20, 1.0), CAP);
        // Many objects failing at once do not all come back at the same second.
        let spread: std::collections::BTreeSet<u128> = (0..20)
            .map(|i| {
                retry_delay(RetryKind::Config, 1, jitter(&format!("o{i}"), 1)).as_secs() as u128
            })
            .collect();
        assert!(spread.len() > 5, "{spread:?}");
    }

    #[test]
    fn api_answers_of_429_and_5xx_are_throttling() {
        let answer = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("m", "r")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(RetryKind::of_kube(&answer(429)), RetryKind::Throttled);
        assert_eq!(RetryKind::of_kube(&answer(500)), RetryKind::Throttled);
        assert_eq!(RetryKind::of_kube(&answer(503)), RetryKind::Throttled);
        assert_eq!(RetryKind::of_kube(&answer(403)), RetryKind::Other);
        assert_eq!(RetryKind::of_kube(&answer(409)), RetryKind::Other);
    }

    #[test]
    fn an_error_is_reported_once_per_distinct_message_until_the_object_succeeds() {
        assert!(report_due(None, "a"));
        assert!(!report_due(Some("a"), "a"));
        assert!(report_due(Some("a"), "b"));

        let f = Failures::default();
        f.failed("o");
        assert!(f.report("o", "refused"));
        f.failed("o");
        assert!(!f.report("o", "refused"), "the same problem again");
        assert!(f.report("p", "refused"), "another object");
        assert!(f.report("o", "timed out"), "another problem");
        assert!(f.report("o", "refused"), "the first problem came back");
        // A report that could not be made is tried again.
        f.unreport("o", "refused");
        assert!(f.report("o", "refused"));
        // A success forgets the problem: the same error later is news again.
        assert_eq!(f.succeeded("o"), 2);
        assert!(f.report("o", "refused"));
    }

    #[tokio::test]
    async fn a_tracked_success_resets_the_failures_and_a_failure_keeps_them() {
        let f = Failures::default();
        f.failed("o");
        let failed: Result<(), &str> = tracked(&f, "o", async { Err("no") }).await;
        assert!(failed.is_err());
        assert_eq!(f.failed("o").attempt, 2);
        let ok: Result<u8, &str> = tracked(&f, "o", async { Ok(1) }).await;
        assert_eq!(ok, Ok(1));
        assert_eq!(f.failed("o").attempt, 1);
    }
}
