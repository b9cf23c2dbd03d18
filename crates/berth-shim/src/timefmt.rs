//! RFC 3339 timestamps in UTC the way Go's `time.RFC3339Nano` prints them
//! (Docker's json-file `time` and the `finished_at` of an exit): nanoseconds
//! with trailing zeros trimmed, and no fraction at all when it is zero.

use std::time::{SystemTime, UNIX_EPOCH};

/// Format `t` as `2026-11-27T22:14:26.219565508Z`.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format_unix(d.as_secs(), d.subsec_nanos())
}

/// Format seconds + nanoseconds since the epoch.
pub fn format_unix(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(format_unix(0, 0), "1970-01-01T00:00:00Z");
        // 2026-11-27T22:14:26Z
        assert_eq!(
            format_unix(1_795_817_666, 219_565_508),
            "2026-11-27T22:14:26.219565508Z"
        );
        assert_eq!(format_unix(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix(4_107_542_399, 0), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn trailing_zeros_are_trimmed() {
        assert_eq!(format_unix(0, 500_000_000), "1970-01-01T00:00:00.5Z");
        assert_eq!(format_unix(0, 1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(format_unix(0, 120_000), "1970-01-01T00:00:00.00012Z");
    }
}
