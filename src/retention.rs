//! Retention: which snapshots a policy keeps and which it deletes, with a reason for each.
//! Shared by the CLI `prune` and the operator. Pure functions of (snapshots, policy, now), no
//! I/O; the caller chooses the candidates (one schedule, one cluster, one node or scope).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use std::fmt;

/// Why a retention setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// A count or `keep*` rule of 0 (which would keep nothing; leave the rule out instead).
    #[error("retention {field} must be at least 1")]
    Zero {
        /// The field, as spelled in the spec (`count`, `keepDaily`, ...).
        field: &'static str,
    },
    /// A duration that [`parse_duration`] does not accept.
    #[error("invalid duration {value:?}: {reason}")]
    InvalidDuration {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A parsed, validated retention policy. A ready snapshot is kept if any rule keeps it, except
/// that `max_age` deletes what is older whatever the other rules say; the newest ready snapshot
/// is always kept. A rule set to `None` does not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N ready snapshots.
    pub count: Option<u32>,
    /// Delete ready snapshots older than `now - max_age`.
    pub max_age: Option<Duration>,
    /// Keep the newest snapshot of each of the last N UTC hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N UTC days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks (UTC) that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N UTC months that have one.
    pub keep_monthly: Option<u32>,
}

impl Policy {
    /// A policy that only keeps the newest `count` ready snapshots (k3s's retention).
    pub fn count_only(count: u32) -> Policy {
        Policy {
            count: Some(count),
            ..Policy::default()
        }
    }

    /// Validate a spec's retention. `count` defaults to `default_count` (5 locally; for S3 the
    /// local count); 0 in any count is refused; `maxAge` is read with [`parse_duration`].
    pub fn from_spec(
        spec: &crate::api::Retention,
        default_count: u32,
    ) -> Result<Policy, RetentionError> {
        let at_least_one = |field: &'static str, v: Option<u32>| match v {
            Some(0) => Err(RetentionError::Zero { field }),
            v => Ok(v),
        };
        Ok(Policy {
            count: at_least_one("count", Some(spec.count.unwrap_or(default_count)))?,
            max_age: spec.max_age.as_deref().map(parse_duration).transpose()?,
            keep_hourly: at_least_one("keepHourly", spec.keep_hourly)?,
            keep_daily: at_least_one("keepDaily", spec.keep_daily)?,
            keep_weekly: at_least_one("keepWeekly", spec.keep_weekly)?,
            keep_monthly: at_least_one("keepMonthly", spec.keep_monthly)?,
        })
    }
}

/// Parse a retention duration (`maxAge`): see [`crate::duration::parse_human`].
pub fn parse_duration(s: &str) -> Result<Duration, RetentionError> {
    crate::duration::parse_human(s).map_err(|e| RetentionError::InvalidDuration {
        value: e.value,
        reason: e.reason,
    })
}

/// One snapshot retention may decide about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<K> {
    /// Whatever identifies the snapshot to the caller (ESF name, file name, S3 key).
    pub key: K,
    /// When the snapshot was taken.
    pub time: DateTime<Utc>,
    /// Whether the snapshot is Ready; others are never deleted by retention.
    pub ready: bool,
}

/// A grandfather-father-son time bucket (UTC; weeks are ISO weeks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// One hour of one day.
    Hour {
        /// The day.
        date: NaiveDate,
        /// The hour, 0-23.
        hour: u32,
    },
    /// One day.
    Day(NaiveDate),
    /// One ISO week.
    Week {
        /// ISO week-numbering year (may differ from the calendar year around New Year).
        year: i32,
        /// ISO week, 1-53.
        week: u32,
    },
    /// One calendar month.
    Month {
        /// Year.
        year: i32,
        /// Month, 1-12.
        month: u32,
    },
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bucket::Hour { date, hour } => {
                write!(f, "hourly {}T{hour:02}", date.format("%Y-%m-%d"))
            }
            Bucket::Day(date) => write!(f, "daily {}", date.format("%Y-%m-%d")),
            Bucket::Week { year, week } => write!(f, "weekly {year:04}-W{week:02}"),
            Bucket::Month { year, month } => write!(f, "monthly {year:04}-{month:02}"),
        }
    }
}

/// Why a snapshot is kept or deleted. `Display` gives a short human reason for events and CLI
/// output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Kept: not Ready (Pending, Running, Failed); retention never deletes those.
    NotReady,
    /// Kept: the newest Ready snapshot, which no rule may delete.
    NewestReady,
    /// Kept: among the newest `count` Ready snapshots.
    Newest {
        /// The policy's count.
        count: u32,
    },
    /// Kept: the newest snapshot of a time bucket a `keep*` rule keeps.
    Gfs(Bucket),
    /// Deleted: older than the newest `count` and kept by no other rule.
    BeyondCount {
        /// The policy's count.
        count: u32,
    },
    /// Deleted: the policy has no count and no other rule keeps it.
    NoRule,
    /// Deleted: older than `now - max_age`.
    TooOld {
        /// The policy's maximum age.
        max_age: Duration,
    },
}

impl Reason {
    /// Whether a snapshot with this reason is kept.
    pub fn keeps(&self) -> bool {
        !matches!(
            self,
            Reason::BeyondCount { .. } | Reason::NoRule | Reason::TooOld { .. }
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("not ready (never pruned by retention)"),
            Reason::NewestReady => f.write_str("newest ready snapshot (always kept)"),
            Reason::Newest { count } => write!(f, "newest {count}"),
            Reason::Gfs(bucket) => bucket.fmt(f),
            Reason::BeyondCount { count } => write!(f, "beyond the newest {count}"),
            Reason::NoRule => f.write_str("kept by no retention rule"),
            Reason::TooOld { max_age } => {
                write!(
                    f,
                    "older than max age {}",
                    crate::duration::format_human(*max_age)
                )
            }
        }
    }
}

/// The verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<K> {
    /// The candidate's key.
    pub key: K,
    /// Keep (`true`) or delete.
    pub keep: bool,
    /// Why.
    pub reason: Reason,
}

/// One `keep*` rule walking the snapshots newest first: it keeps the first (newest) snapshot of
/// each new bucket until it has kept `limit`.
struct GfsRule {
    bucket_of: fn(DateTime<Utc>) -> Bucket,
    limit: u32,
    kept: u32,
    last: Option<Bucket>,
}

impl GfsRule {
    fn new(limit: Option<u32>, bucket_of: fn(DateTime<Utc>) -> Bucket) -> Option<GfsRule> {
        limit.map(|limit| GfsRule {
            bucket_of,
            limit,
            kept: 0,
            last: None,
        })
    }

    /// Offer the next (older) snapshot; `Some(bucket)` if this rule keeps it.
    fn offer(&mut self, time: DateTime<Utc>) -> Option<Bucket> {
        let bucket = (self.bucket_of)(time);
        if self.last == Some(bucket) {
            return None;
        }
        self.last = Some(bucket);
        (self.kept < self.limit).then(|| {
            self.kept += 1;
            bucket
        })
    }
}

fn hour_of(t: DateTime<Utc>) -> Bucket {
    Bucket::Hour {
        date: t.date_naive(),
        hour: t.hour(),
    }
}

fn day_of(t: DateTime<Utc>) -> Bucket {
    Bucket::Day(t.date_naive())
}

fn week_of(t: DateTime<Utc>) -> Bucket {
    let w = t.iso_week();
    Bucket::Week {
        year: w.year(),
        week: w.week(),
    }
}

fn month_of(t: DateTime<Utc>) -> Bucket {
    Bucket::Month {
        year: t.year(),
        month: t.month(),
    }
}

/// Decide, for every candidate, keep or delete and why. The result is ordered newest first
/// (equal times by ascending key, then Ready first), one decision per candidate, and does not
/// depend on the input order.
///
/// Not-ready candidates are always kept and do not count. Among Ready ones: the newest `count`
/// are kept; each `keep*` rule keeps the newest snapshot of each of its last N buckets that have
/// one (as restic's and borg's `keep-daily`); then `max_age` deletes anything taken before
/// `now - max_age`, even if another rule kept it; finally the newest Ready snapshot is kept
/// whatever the rules say.
pub fn decide<K: Clone + Ord>(
    candidates: &[Candidate<K>],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Vec<Decision<K>> {
    let mut sorted: Vec<&Candidate<K>> = candidates.iter().collect();
    sorted.sort_by(|a, b| {
        b.time
            .cmp(&a.time)
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| b.ready.cmp(&a.ready))
    });
    let cutoff = policy.max_age.and_then(|age| now.checked_sub_signed(age));
    let mut rules: Vec<GfsRule> = [
        GfsRule::new(policy.keep_hourly, hour_of),
        GfsRule::new(policy.keep_daily, day_of),
        GfsRule::new(policy.keep_weekly, week_of),
        GfsRule::new(policy.keep_monthly, month_of),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut ready_seen: u32 = 0;
    sorted
        .into_iter()
        .map(|c| {
            let reason = if c.ready {
                let rank = ready_seen;
                ready_seen = ready_seen.saturating_add(1);
                // Every rule sees every Ready snapshot, so each counts its own buckets.
                let gfs = rules
                    .iter_mut()
                    .filter_map(|r| r.offer(c.time))
                    .collect::<Vec<_>>();
                let reason = match (cutoff, policy.count) {
                    (Some(cut), _) if c.time < cut => Reason::TooOld {
                        max_age: policy.max_age.unwrap_or_default(),
                    },
                    (_, Some(count)) if rank < count => Reason::Newest { count },
                    _ if !gfs.is_empty() => Reason::Gfs(gfs[0]),
                    (_, Some(count)) => Reason::BeyondCount { count },
                    (_, None) => Reason::NoRule,
                };
                if rank == 0 && !reason.keeps() {
                    Reason::NewestReady
                } else {
                    reason
                }
            } else {
                Reason::NotReady
            };
            Decision {
                key: c.key.clone(),
                keep: reason.keeps(),
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid test time")
    }

    fn snap(key: &str, time: DateTime<Utc>, ready: bool) -> Candidate<String> {
        Candidate {
            key: key.to_string(),
            time,
            ready,
        }
    }

    /// `n` ready snapshots `step` apart, newest at `newest`, keys `s0` (newest) upwards.
    fn series(newest: DateTime<Utc>, step: Duration, n: usize) -> Vec<Candidate<String>> {
        (0..n)
            .map(|i| snap(&format!("s{i:03}"), newest - step * i as i32, true))
            .collect()
    }

    fn kept(ds: &[Decision<String>]) -> Vec<&str> {
        ds.iter()
            .filter(|d| d.keep)
            .map(|d| d.key.as_str())
            .collect()
    }

    #[test]
    fn spec_count_defaults_and_zero_is_refused() {
        let spec = crate::api::Retention::default();
        assert_eq!(Policy::from_spec(&spec, 5), Ok(Policy::count_only(5)));
        let spec = crate::api::Retention {
            count: Some(0),
            ..Default::default()
        };
        let err = Policy::from_spec(&spec, 5).expect_err("count 0");
        assert_eq!(err.to_string(), "retention count must be at least 1");
        let spec = crate::api::Retention {
            keep_weekly: Some(0),
            ..Default::default()
        };
        let err = Policy::from_spec(&spec, 5).expect_err("keepWeekly 0");
        assert_eq!(err.to_string(), "retention keepWeekly must be at least 1");
    }

    #[test]
    fn spec_with_every_rule_parses() {
        let spec = crate::api::Retention {
            count: Some(3),
            max_age: Some("2w".to_string()),
            keep_hourly: Some(24),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
        };
        let p = Policy::from_spec(&spec, 5).expect("valid");
        assert_eq!(p.count, Some(3));
        assert_eq!(p.max_age, Some(Duration::weeks(2)));
        assert_eq!(
            (p.keep_hourly, p.keep_daily, p.keep_weekly, p.keep_monthly),
            (Some(24), Some(7), Some(4), Some(12))
        );
        let spec = crate::api::Retention {
            max_age: Some("7 days".to_string()),
            ..Default::default()
        };
        let msg = Policy::from_spec(&spec, 5).expect_err("bad").to_string();
        assert!(msg.contains("\"7 days\""), "{msg}");
    }

    #[test]
    fn count_keeps_the_newest_n_and_says_why() {
        let now = t(2026, 11, 24, 12, 0);
        let ds = decide(
            &series(now, Duration::hours(12), 8),
            &Policy::count_only(5),
            now,
        );
        assert_eq!(kept(&ds), ["s000", "s001", "s002", "s003", "s004"]);
        assert_eq!(ds[0].reason.to_string(), "newest 5");
        assert_eq!(ds[7].reason.to_string(), "beyond the newest 5");
        assert!(!ds[7].keep);
    }

    #[test]
    fn not_ready_snapshots_are_kept_and_not_counted() {
        let now = t(2026, 11, 24, 12, 0);
        let mut cs = series(now, Duration::hours(1), 3);
        cs.push(snap("pending", now + Duration::minutes(1), false));
        cs.push(snap("failed-old", now - Duration::days(400), false));
        let p = Policy {
            count: Some(2),
            max_age: Some(Duration::days(1)),
            ..Policy::default()
        };
        let ds = decide(&cs, &p, now);
        let keys: Vec<&str> = ds.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["pending", "s000", "s001", "s002", "failed-old"]);
        assert_eq!(kept(&ds), ["pending", "s000", "s001", "failed-old"]);
        assert_eq!(
            ds[0].reason.to_string(),
            "not ready (never pruned by retention)"
        );
    }

    #[test]
    fn max_age_overrides_count_but_not_the_newest_ready() {
        let now = t(2026, 11, 24, 12, 0);
        let cs = series(now - Duration::days(10), Duration::days(1), 4);
        let p = Policy {
            count: Some(3),
            max_age: Some(Duration::days(7)),
            ..Policy::default()
        };
        let ds = decide(&cs, &p, now);
        assert_eq!(kept(&ds), ["s000"]);
        assert_eq!(
            ds[0].reason.to_string(),
            "newest ready snapshot (always kept)"
        );
        assert_eq!(ds[1].reason.to_string(), "older than max age 7d");
    }

    #[test]
    fn max_age_keeps_a_snapshot_exactly_at_the_cutoff() {
        let now = t(2026, 11, 24, 12, 0);
        let cs = series(now, Duration::days(7), 2);
        let p = Policy {
            max_age: Some(Duration::days(7)),
            ..Policy::count_only(1)
        };
        let ds = decide(&cs, &p, now);
        assert_eq!(ds[1].reason, Reason::BeyondCount { count: 1 });
    }

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_last_n_days_with_snapshots() {
        let now = t(2026, 11, 24, 20, 0);
        // Every 6 hours for 10 days, newest 18:00 on the 24th; nothing on the 22nd.
        let cs: Vec<_> = series(t(2026, 11, 24, 18, 0), Duration::hours(6), 40)
            .into_iter()
            .filter(|c| c.time.day() != 22)
            .collect();
        let p = Policy {
            keep_daily: Some(3),
            ..Policy::count_only(1)
        };
        let ds = decide(&cs, &p, now);
        let reasons: Vec<String> = ds
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.reason.to_string())
            .collect();
        assert_eq!(
            reasons,
            ["newest 1", "daily 2026-11-23", "daily 2026-11-21"]
        );
        // The 24th's bucket went to the snapshot already kept by count.
        assert_eq!(kept(&ds).len(), 3);
    }

    #[test]
    fn hourly_weekly_and_monthly_buckets_are_utc_and_iso() {
        let now = t(2027, 1, 2, 0, 0);
        let cs = vec![
            snap("a", t(2027, 1, 1, 13, 5), true), // 2026-W53 (ISO), month 2027-01
            snap("b", t(2026, 12, 28, 9, 0), true), // 2026-W53
            snap("c", t(2026, 12, 27, 9, 0), true), // 2026-W52
            snap("d", t(2026, 9, 1, 0, 0), true),  // 2026-09 (no Oct/Nov snapshots)
        ];
        let weekly = Policy {
            keep_weekly: Some(2),
            ..Policy::default()
        };
        let r: Vec<String> = decide(&cs, &weekly, now)
            .iter()
            .map(|d| d.reason.to_string())
            .collect();
        assert_eq!(
            r,
            [
                "weekly 2026-W53",
                "kept by no retention rule",
                "weekly 2026-W52",
                "kept by no retention rule"
            ]
        );
        let monthly = Policy {
            keep_monthly: Some(3),
            ..Policy::default()
        };
        let r: Vec<String> = decide(&cs, &monthly, now)
            .iter()
            .map(|d| d.reason.to_string())
            .collect();
        assert_eq!(r[0], "monthly 2027-01");
        assert_eq!(r[1], "monthly 2026-12");
        assert_eq!(r[3], "monthly 2026-09");
        let hourly = Policy {
            keep_hourly: Some(1),
            ..Policy::default()
        };
        assert_eq!(
            decide(&cs, &hourly, now)[0].reason.to_string(),
            "hourly 2027-01-01T13"
        );
    }

    #[test]
    fn equal_times_are_ordered_by_key() {
        let now = t(2026, 11, 24, 12, 0);
        let cs = vec![
            snap("n2", now, true),
            snap("n1", now, true),
            snap("n3", now, true),
        ];
        let ds = decide(&cs, &Policy::count_only(2), now);
        let keys: Vec<&str> = ds.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["n1", "n2", "n3"]);
        assert_eq!(kept(&ds), ["n1", "n2"]);
    }

    fn arb_candidates() -> impl Strategy<Value = Vec<Candidate<u32>>> {
        // Unique keys; times within ~3 years; some equal times on purpose.
        prop::collection::vec((0i64..100_000_000, any::<bool>(), 0u8..4), 0..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (secs, ready, dup))| Candidate {
                    key: i as u32,
                    time: DateTime::from_timestamp(
                        1_700_000_000 + if dup == 0 { 0 } else { secs },
                        0,
                    )
                    .unwrap_or_default(),
                    ready,
                })
                .collect()
        })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        let rule = || prop::option::of(1u32..6);
        (
            rule(),
            prop::option::of(1i64..100_000_000),
            rule(),
            rule(),
            rule(),
            rule(),
        )
            .prop_map(|(count, age, h, d, w, m)| Policy {
                count,
                max_age: age.map(Duration::seconds),
                keep_hourly: h,
                keep_daily: d,
                keep_weekly: w,
                keep_monthly: m,
            })
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    proptest! {
    #[test]
    fn newest_ready_is_never_deleted(cs in arb_candidates(), p in arb_policy()) {
        let ds = decide(&cs, &p, now());
        if let Some(first) = ds.iter().find(|d| cs.iter().any(|c| c.key == d.key && c.ready)) {
            prop_assert!(first.keep, "{:?}", first);
        }
    }

    #[test]
    fn count_alone_keeps_exactly_the_newest_n_ready(cs in arb_candidates(), n in 1u32..10) {
        let ds = decide(&cs, &Policy::count_only(n), now());
        let ready = |k: &u32| cs.iter().any(|c| c.key == *k && c.ready);
        let kept_ready: Vec<u32> = ds.iter().filter(|d| d.keep && ready(&d.key)).map(|d| d.key).collect();
        let mut newest: Vec<&Candidate<u32>> = cs.iter().filter(|c| c.ready).collect();
        newest.sort_by(|a, b| b.time.cmp(&a.time).then(a.key.cmp(&b.key)));
        let expect: Vec<u32> = newest.iter().take(n as usize).map(|c| c.key).collect();
        prop_assert_eq!(kept_ready, expect);
    }

    #[test]
    fn not_ready_is_never_deleted(cs in arb_candidates(), p in arb_policy()) {
        for d in decide(&cs, &p, now()) {
            if cs.iter().any(|c| c.key == d.key && !c.ready) {
                prop_assert!(d.keep && d.reason == Reason::NotReady);
            }
        }
    }

    #[test]
    fn decide_ignores_input_order(
        (cs, shuffled) in arb_candidates().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        p in arb_policy(),
    ) {
        prop_assert_eq!(decide(&cs, &p, now()), decide(&shuffled, &p, now()));
    }

    #[test]
    fn every_key_appears_once_newest_first(cs in arb_candidates(), p in arb_policy()) {
        let ds = decide(&cs, &p, now());
        let mut keys: Vec<u32> = ds.iter().map(|d| d.key).collect();
        let time = |k: u32| cs.iter().find(|c| c.key == k).map(|c| c.time);
        prop_assert!(keys.windows(2).all(|w| time(w[0]) >= time(w[1])));
        keys.sort_unstable();
        let mut want: Vec<u32> = cs.iter().map(|c| c.key).collect();
        want.sort_unstable();
        prop_assert_eq!(keys, want);
        prop_assert!(ds.iter().all(|d| d.keep == d.reason.keeps()));
    }

    #[test]
    fn gfs_rules_never_delete_more_than_count_alone(cs in arb_candidates(), p in arb_policy()) {
        let base = Policy { keep_hourly: None, keep_daily: None, keep_weekly: None, keep_monthly: None, ..p.clone() };
        let with = decide(&cs, &p, now());
        let without = decide(&cs, &base, now());
        for (a, b) in with.iter().zip(&without) {
            prop_assert_eq!(a.key, b.key);
            prop_assert!(a.keep || !b.keep, "{:?} deleted with GFS, kept without: {:?}", a, b);
        }
    }    }
}
