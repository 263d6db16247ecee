//! Durations as people and k3s write them, in one place: the human form of retention's `maxAge`
//! (`90s`, `1h30m`, `7d`, `2w`) and Go's `time.Duration` form of k3s flags and timeouts (`5m`,
//! `1.5h`, `300ms`). Pure parsing and formatting.

/// A duration that [`parse_human`] does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {value:?}: {reason}")]
pub struct DurationError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Seconds per unit accepted by [`parse_human`].
const UNITS: [(&str, i64); 5] = [
    ("w", 7 * 86_400),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

/// Parse a duration such as `90s`, `5m`, `36h`, `1h30m`, `7d`, `2w` or `5m0s` (Go's form plus
/// days and weeks): one or more `<whole number><unit>` parts, units `s m h d w`. Surrounding
/// whitespace is ignored. Empty, negative, zero, fractional, unit-less and overflowing values
/// are refused with a message naming the value.
pub fn parse_human(s: &str) -> Result<chrono::Duration, DurationError> {
    let bad = |reason: String| DurationError {
        value: s.to_string(),
        reason,
    };
    let too_large = || bad("it is too large".to_string());
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad("it is empty".to_string()));
    }
    if rest.starts_with('-') {
        return Err(bad("it must not be negative".to_string()));
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad(format!(
                "expected a number at {rest:?} (e.g. 90s, 1h30m, 7d)"
            )));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let per = match UNITS.iter().find(|(u, _)| *u == unit) {
            Some((_, per)) => *per,
            None if unit.is_empty() => {
                return Err(bad(format!(
                    "missing unit after {number} (use s, m, h, d or w)"
                )));
            }
            None if unit.starts_with('.') => {
                return Err(bad(
                    "fractions are not supported (write 90m, not 1.5h)".to_string()
                ));
            }
            None => return Err(bad(format!("unknown unit {unit:?} (use s, m, h, d or w)"))),
        };
        let n: i64 = number.parse().map_err(|_| too_large())?;
        total = n
            .checked_mul(per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_large)?;
        rest = next;
    }
    if total == 0 {
        return Err(bad("it must be greater than zero".to_string()));
    }
    chrono::Duration::try_seconds(total).ok_or_else(too_large)
}

/// Format a duration as [`parse_human`] reads it, in days, hours, minutes and seconds
/// (`7d`, `1d12h`, `1h30m`); sub-second parts are dropped and anything below a second is `0s`.
pub fn format_human(d: chrono::Duration) -> String {
    let mut secs = d.num_seconds();
    if secs <= 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, per) in UNITS.iter().skip(1) {
        if secs >= *per {
            out.push_str(&format!("{}{unit}", secs / per));
            secs %= per;
        }
    }
    out
}

/// A Go `time.Duration` string (`5m`, `90s`, `1m30s`, `1.5h`, `300ms`, `0`); `None` if
/// malformed, negative or too large.
pub fn parse_go(s: &str) -> Option<std::time::Duration> {
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (int, frac) = rest[..n].split_once('.').unwrap_or((&rest[..n], ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() > 20 {
            return None;
        }
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..u] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[u..];
        let frac = &frac[..frac.len().min(18)];
        let int_v: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_v: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let part = int_v * unit + frac_v * unit / 10u128.pow(frac.len() as u32);
        nanos = nanos.checked_add(part)?;
    }
    let nanos = u64::try_from(nanos).ok()?;
    Some(std::time::Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_in_go_and_human_forms_parse() {
        for (s, secs) in [
            ("90s", 90),
            ("5m", 300),
            ("36h", 36 * 3600),
            ("1h30m", 5400),
            ("7d", 7 * 86_400),
            ("2w", 14 * 86_400),
            ("5m0s", 300),
            (" 1d12h ", 36 * 3600),
            ("+10m", 600),
        ] {
            assert_eq!(parse_human(s), Ok(chrono::Duration::seconds(secs)), "{s}");
        }
    }

    #[test]
    fn bad_durations_are_refused_with_the_value_named() {
        for (s, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("-5m", "negative"),
            ("0s", "greater than zero"),
            ("0h0m", "greater than zero"),
            ("30", "missing unit"),
            ("7y", "unknown unit \"y\""),
            ("5ms", "unknown unit \"ms\""),
            ("1.5h", "fractions"),
            ("h", "expected a number"),
            ("1h 30m", "unknown unit \"h \""),
            ("99999999999999999999s", "too large"),
            ("9999999999999999w", "too large"),
            ("9223372036854776s", "too large"),
        ] {
            let msg = parse_human(s).expect_err(s).to_string();
            assert!(msg.contains(&format!("{s:?}")), "{msg}");
            assert!(msg.contains(why), "{s}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn durations_format_in_days_hours_minutes_seconds() {
        assert_eq!(format_human(chrono::Duration::days(7)), "7d");
        assert_eq!(format_human(chrono::Duration::hours(36)), "1d12h");
        assert_eq!(format_human(chrono::Duration::seconds(5400)), "1h30m");
        assert_eq!(format_human(chrono::Duration::seconds(61)), "1m1s");
        assert_eq!(format_human(chrono::Duration::zero()), "0s");
    }

    #[test]
    fn go_durations_take_fractions_and_small_units() {
        assert_eq!(
            parse_go("1µs2ns"),
            Some(std::time::Duration::from_nanos(1002))
        );
        assert_eq!(parse_go("1.5h"), Some(std::time::Duration::from_secs(5400)));
        assert_eq!(parse_go("0"), Some(std::time::Duration::ZERO));
        for bad in ["", "5", "m", "-5m", "1..5s", "5 m", "99999999999999999999h"] {
            assert_eq!(parse_go(bad), None, "{bad}");
        }
    }

    proptest! {

        #[test]
        fn formatted_durations_parse_back(secs in 1i64..10_000_000_000) {
            let d = chrono::Duration::seconds(secs);
            prop_assert_eq!(parse_human(&format_human(d)), Ok(d));
        }

    }
}
