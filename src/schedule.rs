//! Cron schedules of ETCDSnapshotSchedule: parsing (five fields in an IANA time zone), the
//! next tick, the ticks in a range, whether a tick is due now, and the period used by freshness
//! alerts. Pure functions, no I/O. Field syntax is croner's (ranges, lists, steps, names, `L`,
//! `W`, `#`, `?`); when both day-of-month and day-of-week are restricted, either may match, as
//! in Vixie cron.
//!
//! # Daylight saving time
//!
//! The expression names local wall-clock times, and each one fires exactly once:
//! - a local time that happens twice (clocks go back) fires at its first occurrence only;
//! - a local time that does not exist (clocks go forward) fires at the first instant after the
//!   gap, as Vixie/ISC cron runs fixed-time jobs; `30 2 * * *` in Europe/Berlin fires at 03:00
//!   CEST that day. Several times in one gap fire together, once.
//!
//! So `30 2 * * *` fires once on both change days and `0 */12 * * *` twice every day; an hourly
//! `0 * * * *` fires 23 times on the spring-forward day and 24 times (with one two-hour gap) on
//! the 25-hour fall-back day.

use chrono::{DateTime, Duration, MappedLocalTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// How late a tick may be noticed and still run when the schedule sets no starting deadline
/// (requeue latency, a controller restart). A later tick is reported as [`Due::Missed`].
pub const DEFAULT_TOLERANCE: Duration = Duration::seconds(60);

/// The longest gap between two ticks of any expression [`Schedule::parse`] accepts (29 February
/// across a non-leap century, 2096 to 2104). [`Schedule::period_estimate`] falls back to it.
pub const MAX_PERIOD: Duration = Duration::days(8 * 366);

/// The `@` shorthands accepted instead of five fields.
const SHORTHANDS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Bound on the candidate wall-clock times skipped in one search (they are skipped only inside
/// a repeated, clocks-back range).
const MAX_STEPS: usize = 10_000;

/// Bound on the length of a clocks-forward gap, in minutes (the longest real one is a day).
const MAX_GAP_MINUTES: i64 = 3 * 24 * 60;

/// The five fields' names and what each accepts, for messages.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
];

fn parse_fields(fields: &str) -> Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(fields)
}

/// Which field is wrong, in the user's own spelling (the parser upper-cases what it quotes:
/// `illegal character 'B' in part 'BANANA'` for `banana`), and what it accepts.
fn field_problem(fields: &str, err: &croner::errors::CronError) -> String {
    let parts: Vec<&str> = fields.split_whitespace().collect();
    for (i, part) in parts.iter().enumerate() {
        let mut probe = ["*"; 5];
        probe[i] = part;
        if parse_fields(&probe.join(" ")).is_err() {
            let (name, values) = FIELDS[i];
            return format!(
                "the {name} field {part:?} is not valid: use {values}, a range (1-5), a step \
                 (*/15) or a list (1,30)"
            );
        }
    }
    // Each field is fine alone: the parser's own words, which quote nothing of the input here.
    tracing::debug!(error = ?err, "cron expression refused");
    crate::net_error::one_line(&err.to_string())
}

/// Why a schedule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// No expression at all.
    #[error("cron expression is empty")]
    Empty,
    /// Not five fields (six or seven would mean seconds or years).
    #[error(
        "cron expression {expression:?}: expected 5 fields (minute hour day-of-month month day-of-week), got {got}"
    )]
    FieldCount {
        /// The expression as given.
        expression: String,
        /// How many fields it has.
        got: usize,
    },
    /// Five fields the parser refuses, or an unknown `@` shorthand.
    #[error("cron expression {expression:?} is invalid: {reason}")]
    Invalid {
        /// The expression as given.
        expression: String,
        /// The parser's reason.
        reason: String,
    },
    /// Valid fields that no date matches (e.g. 30 February).
    #[error("cron expression {expression:?} never fires: no date matches it")]
    NeverFires {
        /// The expression as given.
        expression: String,
    },
    /// A time zone that is not in the IANA database.
    #[error(
        "unknown time zone {name:?}: it must be an IANA name like \"Europe/Berlin\" or \"UTC\""
    )]
    UnknownTimeZone {
        /// The name as given.
        name: String,
    },
}

/// What a schedule wants done now; see [`Schedule::due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Run once now for `tick`, the latest tick not yet handled; record it as the last tick.
    Run {
        /// The tick being run.
        tick: DateTime<Utc>,
    },
    /// The latest unhandled tick is too late to run; record it as the last tick (so it is
    /// reported once) and wait for `next`.
    Missed {
        /// The latest tick that was missed.
        latest: DateTime<Utc>,
        /// The next tick after now.
        next: Option<DateTime<Utc>>,
    },
    /// Nothing to do until `next` (`None` only if the expression never fires again).
    Wait {
        /// The next tick after now.
        next: Option<DateTime<Utc>>,
    },
}

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parse a five-field expression (minute hour day-of-month month day-of-week, or one of
    /// `@yearly @annually @monthly @weekly @daily @midnight @hourly`) read in the IANA
    /// `time_zone` (empty means UTC).
    pub fn parse(cron: &str, time_zone: &str) -> Result<Schedule, ScheduleError> {
        let expression = cron.trim().to_string();
        let invalid = |reason: String| ScheduleError::Invalid {
            expression: expression.clone(),
            reason,
        };
        let fields = if expression.starts_with('@') {
            let lower = expression.to_ascii_lowercase();
            SHORTHANDS
                .iter()
                .find(|(name, _)| *name == lower)
                .map(|(_, fields)| *fields)
                .ok_or_else(|| {
                    invalid(
                        "unknown shorthand; use 5 fields or one of @yearly, @annually, \
                         @monthly, @weekly, @daily, @midnight, @hourly"
                            .to_string(),
                    )
                })?
        } else {
            expression.as_str()
        };
        match fields.split_whitespace().count() {
            0 => return Err(ScheduleError::Empty),
            5 => {}
            got => return Err(ScheduleError::FieldCount { expression, got }),
        }
        let cron = parse_fields(fields).map_err(|e| invalid(field_problem(fields, &e)))?;
        let reference = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
        if reference.is_none_or(|r| cron.find_next_occurrence(&r, false).is_err()) {
            return Err(ScheduleError::NeverFires { expression });
        }
        let tz = match time_zone.trim() {
            "" => Tz::UTC,
            name => name
                .parse::<Tz>()
                .map_err(|_| ScheduleError::UnknownTimeZone {
                    name: time_zone.to_string(),
                })?,
        };
        Ok(Schedule {
            expression,
            cron,
            tz,
        })
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is read in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The instant a matching local wall-clock time fires at (see the module docs on DST).
    /// Non-decreasing in `local`, which the searches below rely on.
    fn instant_of(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let mut wall = local;
        for _ in 0..=MAX_GAP_MINUTES {
            match self.tz.from_local_datetime(&wall) {
                MappedLocalTime::Single(t) | MappedLocalTime::Ambiguous(t, _) => {
                    return Some(t.with_timezone(&Utc));
                }
                // In a gap: the first minute that exists again is the end of the gap.
                MappedLocalTime::None => wall = wall.checked_add_signed(Duration::minutes(1))?,
            }
        }
        None
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Wall-clock times up to `after`'s own fire at or before `after`, so start there.
        let mut wall = after.with_timezone(&self.tz).naive_local();
        for _ in 0..MAX_STEPS {
            wall = self.cron.find_next_occurrence(&wall, false).ok()?;
            // Inside a repeated range a later wall-clock time can still be an earlier instant.
            if let Some(t) = self.instant_of(wall).filter(|t| *t > after) {
                return Some(t);
            }
        }
        None
    }

    /// The latest tick at or before `at`.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = at.with_timezone(&self.tz).naive_local();
        wall = self.cron.find_previous_occurrence(&wall, true).ok()?;
        let mut latest = self.instant_of(wall)?;
        // Inside a repeated range, later wall-clock times may have fired before `at` too.
        for _ in 0..MAX_STEPS {
            let Ok(next) = self.cron.find_next_occurrence(&wall, false) else {
                break;
            };
            match self.instant_of(next) {
                Some(t) if t <= at => (latest, wall) = (t, next),
                _ => break,
            }
        }
        Some(latest)
    }

    /// The ticks after `from` (exclusive) up to `to` (inclusive), oldest first, at most `limit`.
    pub fn ticks_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::new();
        let mut cursor = from;
        while ticks.len() < limit {
            match self.next_after(cursor) {
                Some(t) if t <= to => {
                    ticks.push(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        ticks
    }

    /// What to do at `now`. `last_tick` is the last tick handled (run or missed); `created` is
    /// the schedule's creation time, and ticks at or before it never fire (also when
    /// `last_tick` is `None`).
    ///
    /// Only the latest unhandled tick counts, so ticks missed while the controller was down
    /// cause at most one run. It runs if it is at most the tolerance late: `starting_deadline`
    /// when that is longer than [`DEFAULT_TOLERANCE`], else [`DEFAULT_TOLERANCE`] (a short
    /// deadline never makes an ordinary, slightly late tick count as missed).
    pub fn due(
        &self,
        last_tick: Option<DateTime<Utc>>,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
        starting_deadline: Option<Duration>,
    ) -> Due {
        let since = last_tick.map_or(created, |last| last.max(created));
        let next = self.next_after(now);
        match self.latest_at_or_before(now) {
            Some(tick) if tick > since => {
                let tolerance =
                    starting_deadline.map_or(DEFAULT_TOLERANCE, |d| d.max(DEFAULT_TOLERANCE));
                if now - tick <= tolerance {
                    Due::Run { tick }
                } else {
                    Due::Missed { latest: tick, next }
                }
            }
            _ => Due::Wait { next },
        }
    }

    /// The gap between the first two ticks after `around`: the period, for freshness alerts.
    /// [`MAX_PERIOD`] if they cannot be found (only near the year 5000).
    pub fn period_estimate(&self, around: DateTime<Utc>) -> Duration {
        self.next_after(around)
            .and_then(|first| Some(self.next_after(first)? - first))
            .unwrap_or(MAX_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid test time")
    }

    fn sched(cron: &str, tz: &str) -> Schedule {
        Schedule::parse(cron, tz).expect("valid test schedule")
    }

    fn err(cron: &str, tz: &str) -> String {
        Schedule::parse(cron, tz).expect_err(cron).to_string()
    }

    /// The ticks whose local date is `date`, as UTC instants.
    fn ticks_on(s: &Schedule, date: NaiveDate) -> Vec<DateTime<Utc>> {
        let from = utc(date.year(), date.month(), date.day(), 0, 0) - Duration::days(1);
        s.ticks_between(from, from + Duration::days(3), 1000)
            .into_iter()
            .filter(|t| t.with_timezone(&s.time_zone()).date_naive() == date)
            .collect()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn seconds_or_years_fields_are_refused_with_the_count() {
        assert_eq!(
            err("0 0 */12 * * *", "UTC"),
            "cron expression \"0 0 */12 * * *\": expected 5 fields (minute hour day-of-month month day-of-week), got 6"
        );
        assert!(err("0 0 0 1 1 * 2030", "UTC").ends_with("got 7"));
        assert!(err("0 0 * *", "UTC").ends_with("got 4"));
        assert_eq!(err("  ", "UTC"), "cron expression is empty");
    }

    #[test]
    fn invalid_fields_give_the_parsers_reason() {
        for bad in [
            "61 * * * *",
            "* 24 * * *",
            "* * * * 8",
            "0/10 * * * *",
            "x * * * *",
        ] {
            let msg = err(bad, "UTC");
            assert!(
                msg.starts_with(&format!("cron expression {bad:?} is invalid: ")),
                "{msg}"
            );
        }
        assert!(err("@reboot", "UTC").contains("unknown shorthand"));
        // The input as written, and which field it is.
        assert_eq!(
            err("banana * * * *", "UTC"),
            "cron expression \"banana * * * *\" is invalid: the minute field \"banana\" is not valid: \
             use 0-59, a range (1-5), a step (*/15) or a list (1,30)"
        );
        let msg = err("0 0 * foo *", "UTC");
        assert!(msg.contains("the month field \"foo\""), "{msg}");
        assert!(!msg.contains("FOO"), "{msg}");
        assert!(err("* 24 * * *", "UTC").contains("the hour field \"24\""));
        assert_eq!(
            err("0 0 30 2 *", "UTC"),
            "cron expression \"0 0 30 2 *\" never fires: no date matches it"
        );
    }

    #[test]
    fn unknown_time_zones_are_named() {
        assert_eq!(
            err("0 0 * * *", "Mars/Olympus"),
            "unknown time zone \"Mars/Olympus\": it must be an IANA name like \"Europe/Berlin\" or \"UTC\""
        );
        assert!(err("0 0 * * *", "CEST").contains("\"CEST\""));
        assert_eq!(sched("0 0 * * *", "").time_zone(), Tz::UTC);
        assert_eq!(sched(" @Daily ", "UTC").expression(), "@Daily");
    }

    #[test]
    fn next_tick_is_strictly_after() {
        let s = sched(crate::consts::DEFAULT_SCHEDULE, "UTC");
        assert_eq!(
            s.next_after(utc(2026, 11, 24, 13, 0)),
            Some(utc(2026, 11, 25, 0, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 11, 25, 0, 0)),
            Some(utc(2026, 11, 25, 12, 0))
        );
        let s = sched("@hourly", "UTC");
        let t = utc(2026, 11, 24, 13, 0) - Duration::seconds(1);
        assert_eq!(s.next_after(t), Some(utc(2026, 11, 24, 13, 0)));
    }

    #[test]
    fn day_of_month_or_day_of_week_and_sunday_as_7() {
        // Vixie cron: the 13th and every Friday.
        let s = sched("0 0 13 * 5", "UTC");
        let ticks = s.ticks_between(utc(2026, 2, 1, 0, 0), utc(2026, 3, 1, 0, 0), 100);
        let days: Vec<u32> = ticks.iter().map(|t| t.day()).collect();
        assert_eq!(days, [6, 13, 20, 27]);
        let s = sched("0 0 * * 7", "UTC");
        assert_eq!(
            s.next_after(utc(2026, 11, 24, 0, 0)),
            Some(utc(2026, 11, 29, 0, 0))
        );
    }

    #[test]
    fn wall_clock_times_follow_the_time_zone() {
        let s = sched("0 9 * * *", "Europe/Berlin");
        assert_eq!(ticks_on(&s, day(2026, 1, 15)), [utc(2026, 1, 15, 8, 0)]);
        assert_eq!(ticks_on(&s, day(2026, 7, 15)), [utc(2026, 7, 15, 7, 0)]);
    }

    #[test]
    fn a_time_in_the_spring_gap_fires_once_at_the_end_of_the_gap() {
        // Berlin 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC).
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(ticks_on(&s, day(2026, 3, 28)), [utc(2026, 3, 28, 1, 30)]);
        assert_eq!(ticks_on(&s, day(2026, 3, 29)), [utc(2026, 3, 29, 1, 0)]);
        assert_eq!(ticks_on(&s, day(2026, 3, 30)), [utc(2026, 3, 30, 0, 30)]);
        // New York 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC).
        let s = sched("30 2 * * *", "America/New_York");
        assert_eq!(ticks_on(&s, day(2026, 3, 8)), [utc(2026, 3, 8, 7, 0)]);
        // Several times in one gap fire together, once; 03:00 itself is the same instant.
        let s = sched("0,20,40 2,3 * * *", "Europe/Berlin");
        let ticks = ticks_on(&s, day(2026, 3, 29));
        assert_eq!(
            ticks,
            [
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 29, 1, 20),
                utc(2026, 3, 29, 1, 40)
            ]
        );
        // Samoa skipped 2011-12-30 entirely: its noon fires at the end of the gap, 00:00 on
        // the 31st (+14:00), and the 31st's noon fires as usual.
        let s = sched("0 12 * * *", "Pacific/Apia");
        let ticks = s.ticks_between(utc(2011, 12, 29, 0, 0), utc(2011, 12, 31, 0, 0), 9);
        assert_eq!(
            ticks,
            [
                utc(2011, 12, 29, 22, 0),
                utc(2011, 12, 30, 10, 0),
                utc(2011, 12, 30, 22, 0)
            ]
        );
    }

    #[test]
    fn a_repeated_time_in_autumn_fires_once_at_its_first_occurrence() {
        // Berlin 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(ticks_on(&s, day(2026, 10, 25)), [utc(2026, 10, 25, 0, 30)]);
        assert_eq!(
            s.next_after(utc(2026, 10, 25, 0, 30)),
            Some(utc(2026, 10, 26, 1, 30))
        );
        // New York 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 happens at 05:30 and 06:30 UTC.
        let s = sched("30 1 * * *", "America/New_York");
        assert_eq!(ticks_on(&s, day(2026, 11, 1)), [utc(2026, 11, 1, 5, 30)]);
        // Searching from inside the second pass does not go back to the first.
        assert_eq!(
            s.next_after(utc(2026, 11, 1, 6, 0)),
            Some(utc(2026, 11, 2, 6, 30))
        );
        assert_eq!(
            s.latest_at_or_before(utc(2026, 11, 1, 6, 45)),
            Some(utc(2026, 11, 1, 5, 30))
        );
    }

    #[test]
    fn hourly_fires_once_per_local_hour_on_change_days() {
        let s = sched("0 * * * *", "Europe/Berlin");
        assert_eq!(ticks_on(&s, day(2026, 3, 29)).len(), 23);
        let autumn = ticks_on(&s, day(2026, 10, 25));
        assert_eq!(autumn.len(), 24);
        assert!(autumn.windows(2).any(|w| w[1] - w[0] == Duration::hours(2)));
        assert_eq!(
            s.period_estimate(utc(2026, 10, 24, 23, 30)),
            Duration::hours(2)
        );
    }

    /// Every local wall-clock time of `year` the expression names fires exactly once: existing
    /// times at their (first) instant, times in a gap at the end of the gap; checked minute by
    /// minute against the ticks the schedule produces.
    fn assert_once_per_local_time(cron: &str, tz: &str, year: i32) {
        let s = sched(cron, tz);
        let local_midnight = |y| {
            s.time_zone()
                .with_ymd_and_hms(y, 1, 1, 0, 0, 0)
                .single()
                .expect("midnight exists")
                .with_timezone(&Utc)
        };
        let ticks = s.ticks_between(
            local_midnight(year) - Duration::seconds(1),
            local_midnight(year + 1) - Duration::seconds(1),
            usize::MAX,
        );
        assert!(
            ticks.windows(2).all(|w| w[0] < w[1]),
            "{cron} in {tz}: ticks repeat"
        );
        let mut want = Vec::new();
        let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        let mut date = day(year, 1, 1);
        while date.year() == year {
            for minute in 0..24 * 60 {
                let wall = date
                    .and_hms_opt(minute / 60, minute % 60, 0)
                    .expect("valid");
                if !s.cron.is_time_matching(&wall).expect("matches") {
                    continue;
                }
                *per_day.entry(date).or_default() += 1;
                let mut end = wall;
                let instant = loop {
                    match s.time_zone().from_local_datetime(&end) {
                        MappedLocalTime::Single(t) | MappedLocalTime::Ambiguous(t, _) => break t,
                        MappedLocalTime::None => end += Duration::minutes(1),
                    }
                };
                want.push(instant.with_timezone(&Utc));
            }
            date = date.succ_opt().expect("next day");
        }
        want.dedup();
        assert_eq!(ticks, want, "{cron} in {tz}");
        // With no two named times in one gap, every local date has one tick per named time.
        if !cron.contains(',') && !cron.starts_with('*') {
            let mut got: BTreeMap<NaiveDate, usize> = BTreeMap::new();
            for t in &ticks {
                *got.entry(t.with_timezone(&s.time_zone()).date_naive())
                    .or_default() += 1;
            }
            assert_eq!(got, per_day, "{cron} in {tz}");
        }
    }

    #[test]
    fn every_named_local_time_fires_exactly_once_over_a_year() {
        for tz in ["Europe/Berlin", "America/New_York"] {
            for cron in [
                "30 2 * * *",
                "0 */12 * * *",
                "30 1 * * *",
                "15 * * * *",
                "0 2,3 * * 0",
                "*/20 * * * *",
            ] {
                assert_once_per_local_time(cron, tz, 2026);
            }
        }
        assert_once_per_local_time("0 0 * * *", "UTC", 2026);
    }

    #[test]
    fn fixed_times_fire_once_and_twelve_hourly_twice_every_day() {
        for tz in ["Europe/Berlin", "America/New_York", "UTC"] {
            for (cron, per_day) in [("30 2 * * *", 1), ("0 */12 * * *", 2), ("0 0 * * *", 1)] {
                let s = sched(cron, tz);
                let mut date = day(2026, 1, 1);
                while date.year() == 2026 {
                    assert_eq!(
                        ticks_on(&s, date).len(),
                        per_day,
                        "{cron} in {tz} on {date}"
                    );
                    date = date.succ_opt().expect("next day");
                }
            }
        }
        let s = sched("0 0 * * *", "UTC");
        let ticks = s.ticks_between(utc(2025, 12, 31, 12, 0), utc(2026, 12, 31, 12, 0), 1000);
        assert_eq!(ticks.len(), 365);
        assert!(ticks.iter().all(|t| t.hour() == 0 && t.minute() == 0));
    }

    #[test]
    fn ticks_between_is_exclusive_inclusive_and_limited() {
        let s = sched("0 */6 * * *", "UTC");
        let ticks = s.ticks_between(utc(2026, 1, 1, 0, 0), utc(2026, 1, 2, 0, 0), 10);
        assert_eq!(ticks.first(), Some(&utc(2026, 1, 1, 6, 0)));
        assert_eq!(ticks.last(), Some(&utc(2026, 1, 2, 0, 0)));
        assert_eq!(ticks.len(), 4);
        assert_eq!(
            s.ticks_between(utc(2026, 1, 1, 0, 0), utc(2026, 1, 9, 0, 0), 2)
                .len(),
            2
        );
        assert!(
            s.ticks_between(utc(2026, 1, 2, 0, 0), utc(2026, 1, 1, 0, 0), 9)
                .is_empty()
        );
    }

    #[test]
    fn due_runs_on_time_and_slightly_late_ticks() {
        let s = sched("0 */12 * * *", "UTC");
        let created = utc(2026, 1, 1, 0, 0) - Duration::days(3);
        let tick = utc(2026, 1, 1, 12, 0);
        let last = Some(utc(2026, 1, 1, 0, 0));
        assert_eq!(s.due(last, created, tick, None), Due::Run { tick });
        assert_eq!(
            s.due(last, created, tick + Duration::seconds(60), None),
            Due::Run { tick }
        );
        assert_eq!(
            s.due(last, created, tick + Duration::seconds(61), None),
            Due::Missed {
                latest: tick,
                next: Some(utc(2026, 1, 2, 0, 0))
            }
        );
        // A short deadline does not narrow the default tolerance.
        let zero = Some(Duration::zero());
        assert_eq!(
            s.due(last, created, tick + Duration::seconds(30), zero),
            Due::Run { tick }
        );
        // Once handled, wait for the next tick.
        assert_eq!(
            s.due(Some(tick), created, tick + Duration::seconds(5), None),
            Due::Wait {
                next: Some(utc(2026, 1, 2, 0, 0))
            }
        );
    }

    #[test]
    fn due_runs_only_the_latest_missed_tick_within_the_deadline() {
        let s = sched("0 * * * *", "UTC");
        let created = utc(2026, 1, 1, 0, 0);
        let last = Some(utc(2026, 1, 1, 1, 0));
        let now = utc(2026, 1, 1, 5, 40); // ticks 02:00..05:00 missed
        let hour = Some(Duration::hours(1));
        assert_eq!(
            s.due(last, created, now, hour),
            Due::Run {
                tick: utc(2026, 1, 1, 5, 0)
            }
        );
        let ten_min = Some(Duration::minutes(10));
        assert_eq!(
            s.due(last, created, now, ten_min),
            Due::Missed {
                latest: utc(2026, 1, 1, 5, 0),
                next: Some(utc(2026, 1, 1, 6, 0))
            }
        );
    }

    #[test]
    fn a_new_schedule_never_fires_ticks_from_before_its_creation() {
        let s = sched("0 * * * *", "UTC");
        let created = utc(2026, 1, 1, 5, 0) + Duration::seconds(10);
        let next = Some(utc(2026, 1, 1, 6, 0));
        assert_eq!(
            s.due(None, created, created, Some(Duration::hours(5))),
            Due::Wait { next }
        );
        // A stale last tick from before creation does not bring old ticks back.
        let old = Some(utc(2025, 1, 1, 0, 0));
        assert_eq!(
            s.due(old, created, created, Some(Duration::hours(5))),
            Due::Wait { next }
        );
        let created = utc(2026, 1, 1, 4, 59);
        let at = utc(2026, 1, 1, 5, 0) + Duration::seconds(3);
        assert_eq!(
            s.due(None, created, at, None),
            Due::Run {
                tick: utc(2026, 1, 1, 5, 0)
            }
        );
    }

    #[test]
    fn period_is_the_gap_between_ticks() {
        let at = utc(2026, 11, 24, 13, 7);
        assert_eq!(
            sched("0 */12 * * *", "UTC").period_estimate(at),
            Duration::hours(12)
        );
        assert_eq!(
            sched("*/15 * * * *", "Asia/Kolkata").period_estimate(at),
            Duration::minutes(15)
        );
        let leap = sched("0 0 29 2 *", "UTC").period_estimate(utc(2095, 1, 1, 0, 0));
        assert_eq!(leap, utc(2104, 2, 29, 0, 0) - utc(2096, 2, 29, 0, 0));
        assert!(leap <= MAX_PERIOD);
    }

    fn arb_schedule() -> impl Strategy<Value = Schedule> {
        let crons = prop::sample::select(vec![
            "0 */12 * * *",
            "30 2 * * *",
            "30 1 * * *",
            "*/7 * * * *",
            "0 0 13 * 5",
            "15 3 * * 0",
            "0 2,3 * * *",
            "@hourly",
            "0 0 1 * *",
        ]);
        let zones = prop::sample::select(vec![
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Pacific/Apia",
            "America/Santiago",
        ]);
        (crons, zones).prop_map(|(c, z)| sched(c, z))
    }

    fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
        (946_684_800i64..2_900_000_000)
            .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
    }

    proptest! {
        #[test]
        fn next_after_is_the_first_tick_after(s in arb_schedule(), t in arb_time()) {
            let next = s.next_after(t).expect("fires again");
            prop_assert!(next > t);
            let before = s.latest_at_or_before(next - Duration::seconds(1));
            prop_assert!(before.is_none_or(|b| b <= t), "{:?} between {} and {}", before, t, next);
        }

        #[test]
        fn latest_at_or_before_is_the_last_tick_up_to(s in arb_schedule(), t in arb_time()) {
            let latest = s.latest_at_or_before(t).expect("fired before");
            prop_assert!(latest <= t);
            prop_assert!(s.next_after(latest).is_some_and(|n| n > t));
        }

        #[test]
        fn ticks_between_walks_next_after(s in arb_schedule(), t in arb_time(), hours in 0i64..200) {
            let to = t + Duration::hours(hours);
            let ticks = s.ticks_between(t, to, 100_000);
            prop_assert!(ticks.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(ticks.iter().all(|x| *x > t && *x <= to));
            let after_last = s.next_after(ticks.last().copied().unwrap_or(t));
            prop_assert!(after_last.is_some_and(|n| n > to));
        }

        #[test]
        fn due_is_consistent(
            s in arb_schedule(), now in arb_time(), back in 0i64..100_000, gap in 0i64..100_000,
            deadline in prop::option::of(0i64..10_000),
        ) {
            let last = now - Duration::seconds(back);
            let created = last - Duration::seconds(gap);
            let deadline = deadline.map(Duration::seconds);
            let allowed = deadline.map_or(DEFAULT_TOLERANCE, |d| d.max(DEFAULT_TOLERANCE));
            match s.due(Some(last), created, now, deadline) {
                Due::Run { tick } => {
                    prop_assert!(tick > last && tick <= now && now - tick <= allowed);
                    prop_assert!(s.next_after(tick).is_some_and(|n| n > now));
                }
                Due::Missed { latest, next } => {
                    prop_assert!(latest > last && now - latest > allowed);
                    prop_assert_eq!(s.latest_at_or_before(now), Some(latest));
                    prop_assert_eq!(next, s.next_after(now));
                }
                Due::Wait { next } => {
                    prop_assert!(s.latest_at_or_before(now).is_none_or(|l| l <= last));
                    prop_assert_eq!(next, s.next_after(now));
                }
            }
        }
    }
}
