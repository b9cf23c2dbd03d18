//! Docker's timestamps in query parameters and filters (`since`, `until`):
//! a Go duration before a reference time (`10m`, `1h30m`), unix seconds
//! with an optional fraction (`1700000000.5`), or an RFC 3339 date or time,
//! local when it names no zone (`2026-11-28`, `2026-11-28T10:00`,
//! `2026-11-28T10:00:00.5Z`).

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};

/// Nanoseconds since the epoch that `value` names, durations counting back
/// from `now` (nanoseconds since the epoch). Errors use dockerd's wording.
pub fn parse_timestamp(value: &str, now: i64) -> Result<i64, String> {
    let fail = || format!("failed to parse value as time or duration: \"{value}\"");
    if value != "0"
        && let Some(d) = parse_go_duration(value)
    {
        return Ok(now - d);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return t.timestamp_nanos_opt().ok_or_else(fail);
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(value, f) {
            return local_nanos(t).ok_or_else(fail);
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return local_nanos(d.and_hms_opt(0, 0, 0).ok_or_else(fail)?).ok_or_else(fail);
    }
    if value.contains('-') {
        return Err(fail());
    }
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return Err(fail());
    }
    let s: i64 = secs.parse().map_err(|_| fail())?;
    let n: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| fail())?
    };
    s.checked_mul(1_000_000_000)
        .and_then(|x| x.checked_add(n))
        .ok_or_else(fail)
}

fn local_nanos(t: NaiveDateTime) -> Option<i64> {
    Local
        .from_local_datetime(&t)
        .earliest()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// A Go duration (`300ms`, `-1.5h`, `2h45m`) in nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * unit;
    }
    let t = total as i64;
    Some(if neg { -t } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_timestamp("10m", NOW), Ok(NOW - 600_000_000_000));
        assert_eq!(parse_timestamp("1h30m", NOW), Ok(NOW - 5_400_000_000_000));
        assert_eq!(parse_timestamp("1.5s", NOW), Ok(NOW - 1_500_000_000));
    }

    #[test]
    fn unix_seconds_and_rfc3339() {
        assert_eq!(parse_timestamp("0", NOW), Ok(0));
        assert_eq!(
            parse_timestamp("1700000000.25", NOW),
            Ok(1_700_000_000_250_000_000)
        );
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20Z", NOW),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20.5+00:00", NOW),
            Ok(1_700_000_000_500_000_000)
        );
        assert!(parse_timestamp("2023-11-14", NOW).is_ok());
    }

    #[test]
    fn garbage_is_refused_with_dockerds_words() {
        assert_eq!(
            parse_timestamp("yesterday", NOW),
            Err("failed to parse value as time or duration: \"yesterday\"".into())
        );
        assert!(parse_timestamp("2023-13-45", NOW).is_err());
        assert!(parse_timestamp("10x", NOW).is_err());
    }
}
