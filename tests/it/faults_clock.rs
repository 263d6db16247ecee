//! Faults: clock skew and daylight saving time (pure tests of the public schedule API).
//!
//! A controller is simulated minute by minute across each DST change of 2026 in
//! America/New_York and Europe/Berlin, calling `Schedule::due` like the schedule reconcile does
//! (recording each tick it runs as the last tick). What must hold: every intended local time
//! fires exactly once (a time in the spring-forward gap at the end of the gap, a repeated
//! fall-back time at its first occurrence), a second `due` call at the same instant never fires
//! again, and a clock that jumps backwards never re-fires a tick already handled.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use etcd_snapshot::schedule::{Due, Schedule};
use std::collections::BTreeMap;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
        .with_timezone(&Utc)
}

/// Run a simulated controller from `from` to `to`, looking every `step`, and with the clock
/// stepped back by `jump_back` once at `jump_at`. Returns the ticks it ran, in order.
fn simulate(
    s: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
    jump: Option<(DateTime<Utc>, Duration)>,
    deadline: Option<Duration>,
) -> Vec<DateTime<Utc>> {
    let created = from - Duration::hours(1);
    let mut last: Option<DateTime<Utc>> = None;
    let mut fired = Vec::new();
    let mut now = from;
    let mut jumped = false;
    while now <= to {
        let mut observed = now;
        if let Some((at, back)) = jump
            && !jumped
            && now >= at
        {
            // The node's clock is corrected backwards: the controller sees an earlier time.
            observed = now - back;
            jumped = true;
        }
        let due = s.due(last, created, observed, deadline);
        if let Due::Missed { latest, .. } = due {
            // Recorded as handled, as the schedule reconcile does.
            last = Some(latest);
        }
        if let Due::Run { tick } = due {
            fired.push(tick);
            last = Some(tick);
            // A second reconcile right away (a watch event, a resync) must not fire again.
            let again = s.due(last, created, observed, deadline);
            assert!(
                !matches!(again, Due::Run { .. }),
                "{} fired {tick} twice at {observed}: {again:?}",
                s.expression()
            );
        }
        now += step;
    }
    fired
}

/// Ticks per local date.
fn per_local_day(ticks: &[DateTime<Utc>], tz: Tz) -> BTreeMap<NaiveDate, Vec<DateTime<Utc>>> {
    let mut days: BTreeMap<NaiveDate, Vec<DateTime<Utc>>> = BTreeMap::new();
    for t in ticks {
        days.entry(tz.from_utc_datetime(&t.naive_utc()).date_naive())
            .or_default()
            .push(*t);
    }
    days
}

/// One daily schedule across one DST change: exactly one tick per local day, ticks strictly
/// increasing, and on the change day exactly `expected_utc`.
fn daily_fires_once(cron: &str, zone: &str, change_day: &str, expected_utc: &str) {
    let tz: Tz = zone.parse().expect("zone");
    let s = Schedule::parse(cron, zone).expect("schedule");
    let day = NaiveDate::parse_from_str(change_day, "%Y-%m-%d").expect("date");
    let from = utc(&format!("{}T00:00:00Z", day - Duration::days(2)));
    let to = utc(&format!("{}T23:59:00Z", day + Duration::days(2)));
    for jump in [
        None,
        // The clock goes back 45 minutes right after the change day's tick.
        Some((
            utc(expected_utc) + Duration::minutes(1),
            Duration::minutes(45),
        )),
    ] {
        let fired = simulate(&s, from, to, Duration::minutes(1), jump, None);
        assert!(
            fired.windows(2).all(|w| w[0] < w[1]),
            "{cron} in {zone}: ticks not strictly increasing: {fired:?}"
        );
        let days = per_local_day(&fired, tz);
        let first = tz.from_utc_datetime(&from.naive_utc()).date_naive();
        let last = tz.from_utc_datetime(&to.naive_utc()).date_naive();
        for (date, ticks) in &days {
            assert_eq!(
                ticks.len(),
                1,
                "{cron} in {zone} (clock jump {jump:?}): {date} fired {ticks:?}"
            );
        }
        // Every whole local day in the window fired (the edges may be partial days).
        let mut d = first.succ_opt().expect("date");
        while d < last {
            assert!(
                days.contains_key(&d),
                "{cron} in {zone}: nothing fired on {d}: {fired:?}"
            );
            d = d.succ_opt().expect("date");
        }
        assert_eq!(
            days.get(&day).map(Vec::as_slice),
            Some([utc(expected_utc)].as_slice()),
            "{cron} in {zone} on the change day {day}"
        );
    }
}

#[test]
fn new_york_spring_forward_two_am_fires_once_at_the_end_of_the_gap() {
    // 2026-03-08 02:00 EST -> 03:00 EDT: 02:00 does not exist, it fires at 03:00 EDT.
    daily_fires_once(
        "0 2 * * *",
        "America/New_York",
        "2026-03-08",
        "2026-03-08T07:00:00Z",
    );
}

#[test]
fn new_york_spring_forward_one_thirty_is_unaffected() {
    daily_fires_once(
        "30 1 * * *",
        "America/New_York",
        "2026-03-08",
        "2026-03-08T06:30:00Z",
    );
}

#[test]
fn new_york_fall_back_one_thirty_fires_at_its_first_occurrence_only() {
    // 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens at 05:30 and 06:30 UTC.
    daily_fires_once(
        "30 1 * * *",
        "America/New_York",
        "2026-11-01",
        "2026-11-01T05:30:00Z",
    );
}

#[test]
fn new_york_fall_back_two_am_fires_once() {
    // 02:00 exists once (EST) on the fall-back day.
    daily_fires_once(
        "0 2 * * *",
        "America/New_York",
        "2026-11-01",
        "2026-11-01T07:00:00Z",
    );
}

#[test]
fn berlin_spring_forward_two_am_fires_once_at_the_end_of_the_gap() {
    // 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC).
    daily_fires_once(
        "0 2 * * *",
        "Europe/Berlin",
        "2026-03-29",
        "2026-03-29T01:00:00Z",
    );
}

#[test]
fn berlin_spring_forward_one_thirty_is_unaffected() {
    daily_fires_once(
        "30 1 * * *",
        "Europe/Berlin",
        "2026-03-29",
        "2026-03-29T00:30:00Z",
    );
}

#[test]
fn berlin_fall_back_two_am_fires_at_its_first_occurrence_only() {
    // 2026-10-25 03:00 CEST -> 02:00 CET: 02:00 happens at 00:00 and 01:00 UTC.
    daily_fires_once(
        "0 2 * * *",
        "Europe/Berlin",
        "2026-10-25",
        "2026-10-25T00:00:00Z",
    );
}

#[test]
fn berlin_fall_back_one_thirty_is_unaffected() {
    daily_fires_once(
        "30 1 * * *",
        "Europe/Berlin",
        "2026-10-25",
        "2026-10-24T23:30:00Z",
    );
}

#[test]
fn a_controller_looking_late_runs_a_tick_at_most_once_and_never_one_from_before_a_backward_jump() {
    // A controller that looks only every 7 minutes (requeue latency; the schedule allows 10
    // minutes late) with a 20-minute backward clock correction, across the Berlin fall-back
    // night with an every-15-minutes schedule: each tick runs at most once, in order, none runs
    // twice because the clock went back, and the repeated 02:xx hour fires only once.
    let s = Schedule::parse("*/15 * * * *", "Europe/Berlin").expect("schedule");
    let from = utc("2026-10-24T22:00:00Z");
    let to = utc("2026-10-25T04:00:00Z");
    let fired = simulate(
        &s,
        from,
        to,
        Duration::minutes(7),
        Some((utc("2026-10-25T00:50:00Z"), Duration::minutes(20))),
        Some(Duration::minutes(10)),
    );
    assert!(
        fired.windows(2).all(|w| w[0] < w[1]),
        "ticks ran twice or out of order: {fired:?}"
    );
    // 22:00..04:00 UTC is 6 h = 24 quarter hours (+1), minus the four repeated 02:xx CET
    // quarters (01:00..01:45 UTC), which never fire.
    for t in [utc("2026-10-25T01:00:00Z"), utc("2026-10-25T01:30:00Z")] {
        assert!(!fired.contains(&t), "the repeated local time {t} fired");
    }
    assert!(
        fired.len() >= 18,
        "a look every 7 minutes within a 10-minute deadline should run most ticks: {fired:?}"
    );
    for t in &fired {
        assert!(
            s.ticks_between(*t - Duration::seconds(1), *t, 2)
                .contains(t),
            "{t} is not a tick of the schedule"
        );
    }
}
