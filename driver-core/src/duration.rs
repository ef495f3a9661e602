//! Durations people write, and deadlines that cannot overflow.
//!
//! Contract:
//!
//! * [`parse_duration`] reads `500ms`, `14s`, `2m`, `1h` or a bare number of seconds
//!   (`7`, `0.5`), as consul and go-zero targets write durations, and checks the value
//!   against the range the caller allows. Anything else (another unit, a sign, a value
//!   out of range however large) is an error naming the parameter, the value and the
//!   range; nothing panics. Target parameters go through
//!   [`Target::query_duration`](crate::Target::query_duration), the CLI's flags through
//!   this function too: one grammar everywhere.
//! * [`cap`] bounds a duration given in code (`Duration::MAX` included) to
//!   [`FAR_FUTURE`], about 100 years, and [`deadline_after`] adds a duration to an
//!   instant the same way: a timeout meaning "forever" never overflows `Instant`
//!   arithmetic (which panics).
//!
//! ```
//! use std::time::Duration;
//! use dtmdriver_core::duration::parse_duration;
//! let range = Duration::from_millis(1)..=Duration::from_secs(600);
//! assert_eq!(parse_duration("wait", "14s", &range), Ok(Duration::from_secs(14)));
//! assert_eq!(parse_duration("wait", "1.5", &range), Ok(Duration::from_millis(1500)));
//! let err = parse_duration("wait", "99999999999999999999s", &range).unwrap_err();
//! assert!(err.contains("wait") && err.contains("from 1ms to 10m"), "{err}");
//! ```

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::error::shorten;

/// The longest duration a timeout or deadline is taken to mean: 100 years of 365 days.
/// Longer ones, up to `Duration::MAX`, mean the same ("never"), and stay clear of the
/// platform limits of `Instant`.
pub const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d`, at most [`FAR_FUTURE`].
pub fn cap(d: Duration) -> Duration {
    d.min(FAR_FUTURE)
}

/// `start + d`, with `d` [capped](cap); never panics.
pub fn deadline_after(start: Instant, d: Duration) -> Instant {
    // With the cap the sum fits on every platform tokio runs on; the fallback keeps
    // this total anyway.
    start.checked_add(cap(d)).unwrap_or(start)
}

/// Parses `text` as a duration within `range`; see the [module docs](self). The error
/// names `name` (a parameter or flag), the value and the range, and says how to write
/// one.
pub fn parse_duration(
    name: &str,
    text: &str,
    range: &RangeInclusive<Duration>,
) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{name} `{}` is not a duration from {} to {}; write e.g. 500ms, 14s, 2m or 1h \
             (a bare number is seconds)",
            shorten(text),
            show(*range.start()),
            show(*range.end())
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(bad()),
    };
    // Compared as seconds before converting: a value beyond `Duration`'s range (or
    // infinite) is out of range, not a panic.
    if !(seconds >= range.start().as_secs_f64() && seconds <= range.end().as_secs_f64()) {
        return Err(bad());
    }
    let d = Duration::try_from_secs_f64(seconds).map_err(|_| bad())?;
    // Rounding at the edges of the range.
    Ok(d.clamp(*range.start(), *range.end()))
}

/// `d` in the largest unit that writes it exactly: `10m`, `1500ms`, `24h`.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{d:?}")
    } else if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(3600);

    #[test]
    fn units_and_bare_seconds() {
        for (text, want) in [
            ("14s", Duration::from_secs(14)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("7", Duration::from_secs(7)),
            ("0.25", Duration::from_millis(250)),
            ("1ms", Duration::from_millis(1)),
        ] {
            assert_eq!(parse_duration("t", text, &RANGE), Ok(want), "{text}");
        }
    }

    /// Issue #11 item 2: values past `Duration`'s range panicked in
    /// `Duration::from_secs_f64`.
    #[test]
    fn out_of_range_and_garbage_are_errors_naming_parameter_and_range() {
        for text in [
            "99999999999999999999s",
            "99999999999999999999",
            "1e400",
            "18446744073709551616",
            "2h",
            "0",
            "0s",
            "0.0001",
            "-1s",
            "soon",
            "1d",
            "",
            ".",
            "1.2.3s",
            "NaN",
            "inf",
            "1.8e19",
        ] {
            let err = parse_duration("wait", text, &RANGE).expect_err(text);
            assert!(
                err.starts_with("wait `") && err.contains("from 1ms to 1h"),
                "{text}: {err}"
            );
        }
        let long = "9".repeat(100_000);
        assert!(parse_duration("wait", &long, &RANGE).unwrap_err().len() < 300);
    }

    #[test]
    fn far_deadlines_saturate() {
        let now = Instant::now();
        assert_eq!(cap(Duration::MAX), FAR_FUTURE);
        assert_eq!(deadline_after(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            deadline_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn ranges_print_in_their_unit() {
        assert_eq!(show(Duration::from_secs(600)), "10m");
        assert_eq!(show(Duration::from_secs(86400)), "24h");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show(Duration::from_secs(5)), "5s");
        assert_eq!(show(Duration::ZERO), "0s");
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(s in "\\PC{0,30}", digits in "[0-9.]{0,40}[a-z]{0,2}") {
            for text in [&s, &digits] {
                if let Ok(d) = parse_duration("p", text, &RANGE) {
                    proptest::prop_assert!(RANGE.contains(&d));
                }
            }
        }
    }
}
