//! Human-readable sizes, durations and times exactly as `github.com/docker/go-units` and Go's
//! `time` package print them.

use std::time::Duration;

use super::gofmt::fmt_g;

const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

fn size_and_unit(mut size: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    (size, units[i])
}

/// go-units `HumanSizeWithPrecision(size, precision)`: 1000-based units, `%.*g`.
pub fn human_size_with_precision(bytes: f64, precision: usize) -> String {
    let (size, unit) = size_and_unit(bytes, 1000.0, &DECIMAL);
    format!("{}{unit}", fmt_g(size, Some(precision), false))
}

/// Docker's image and container sizes: `HumanSizeWithPrecision(size, 3)`, e.g. "4.26MB".
/// (go-units' own `HumanSize` uses precision 4: `human_size_with_precision(b, 4)`.)
pub fn human_size(bytes: f64) -> String {
    human_size_with_precision(bytes, 3)
}

/// go-units `BytesSize`: 1024-based units with `%.4g`, e.g. "3.42GiB".
pub fn bytes_size(bytes: f64) -> String {
    let (size, unit) = size_and_unit(bytes, 1024.0, &BINARY);
    format!("{}{unit}", fmt_g(size, Some(4), false))
}

/// go-units `HumanDuration`, e.g. "About a minute", "3 hours", "2 weeks".
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 1 {
        return "Less than a second".into();
    } else if seconds == 1 {
        return "1 second".into();
    } else if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    } else if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// Docker's `CreatedSince` / `RunningFor`: `HumanDuration(now - t) + " ago"`.
pub fn human_since(unix_seconds: i64) -> String {
    human_since_at(unix_seconds, chrono::Utc::now().timestamp())
}

fn human_since_at(unix_seconds: i64, now: i64) -> String {
    let secs = now.saturating_sub(unix_seconds).max(0) as u64;
    format!("{} ago", human_duration(Duration::from_secs(secs)))
}

/// Go's `time.Unix(t, 0).String()` in the local zone, as docker's `CreatedAt` columns print
/// it: "2024-01-02 15:04:05 +0000 UTC". The zone name is "UTC" at offset zero, otherwise the
/// numeric offset (Go's form for a zone without an abbreviation).
pub fn created_at(unix_seconds: i64) -> String {
    use chrono::{Local, TimeZone};
    match Local.timestamp_opt(unix_seconds, 0).single() {
        Some(t) => {
            let offset = t.format("%z").to_string();
            let name = if t.offset().local_minus_utc() == 0 {
                "UTC".to_string()
            } else {
                offset.clone()
            };
            format!("{} {offset} {name}", t.format("%Y-%m-%d %H:%M:%S"))
        }
        None => unix_seconds.to_string(),
    }
}

/// go-units `RAMInBytes`: "64m", "1.5g", "512MiB", "100" (bytes).
pub fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid size: '{s}'");
    let sep = s
        .rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
        .ok_or_else(invalid)?;
    let (num, sfx) = if s.as_bytes()[sep] != b' ' {
        (&s[..=sep], &s[sep + 1..])
    } else {
        (&s[..sep], &s[sep + 1..])
    };
    let size: f64 = num
        .parse()
        .map_err(|_| format!("strconv.ParseFloat: parsing \"{num}\": invalid syntax"))?;
    if size < 0.0 {
        return Err(invalid());
    }
    if sfx.is_empty() {
        return Ok(size as i64);
    }
    let bad = || format!("invalid suffix: '{sfx}'");
    if sfx.len() > 3 {
        return Err(bad());
    }
    let lower = sfx.to_ascii_lowercase();
    let b = lower.as_bytes();
    if b[0] == b'b' {
        return if b.len() > 1 {
            Err(bad())
        } else {
            Ok(size as i64)
        };
    }
    let mul: f64 = match b[0] {
        b'k' => 1024.0,
        b'm' => 1024.0 * 1024.0,
        b'g' => 1024f64.powi(3),
        b't' => 1024f64.powi(4),
        b'p' => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    if (b.len() == 2 && b[1] != b'b') || (b.len() == 3 && &lower[1..] != "ib") {
        return Err(bad());
    }
    Ok((size * mul) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_size_matches_go_units() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0B"),
            (1.0, "1B"),
            (999.0, "999B"),
            (1000.0, "1kB"),
            (1024.0, "1.02kB"),
            (4261550.0, "4.26MB"),
            (123456789.0, "123MB"),
            (1_000_000.0, "1MB"),
            (7_800_000.0, "7.8MB"),
            (999_999.0, "1e+03kB"),
            (77_800_000.0, "77.8MB"),
            (1e30, "1e+06YB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_size(*n), *want, "{n}");
        }
        // go-units HumanSize (precision 4) test vectors.
        let four: &[(f64, &str)] = &[
            (1000.0, "1kB"),
            (1024.0, "1.024kB"),
            (1_000_000.0, "1MB"),
            (1_048_576.0, "1.049MB"),
            (2e6, "2MB"),
            (3.42e9, "3.42GB"),
            (5.372e12, "5.372TB"),
            (2.22e15, "2.22PB"),
            (1e28, "1e+04YB"),
        ];
        for (n, want) in four {
            assert_eq!(human_size_with_precision(*n, 4), *want, "{n}");
        }
    }

    #[test]
    fn bytes_size_matches_go_units() {
        let kib = 1024.0_f64;
        let pib = kib.powi(5);
        let cases: &[(f64, &str)] = &[
            (1024.0, "1KiB"),
            (1024.0 * 1024.0, "1MiB"),
            (2.0 * 1024.0 * 1024.0, "2MiB"),
            (3.42 * kib.powi(3), "3.42GiB"),
            (5.372 * kib.powi(4), "5.372TiB"),
            (2.22 * pib, "2.22PiB"),
            (kib.powi(5) * pib, "1.049e+06YiB"),
            (500.0, "500B"),
        ];
        for (n, want) in cases {
            assert_eq!(bytes_size(*n), *want, "{n}");
        }
    }

    #[test]
    fn human_duration_matches_go_units() {
        let s = Duration::from_secs;
        let m = |n: u64| s(n * 60);
        let h = |n: u64| s(n * 3600);
        let day = |n: u64| h(n * 24);
        let cases: &[(Duration, &str)] = &[
            (Duration::from_millis(450), "Less than a second"),
            (s(1), "1 second"),
            (s(45), "45 seconds"),
            (s(59), "59 seconds"),
            (s(60), "About a minute"),
            (m(3), "3 minutes"),
            (m(35) + s(40), "35 minutes"),
            (m(59), "59 minutes"),
            (h(1), "About an hour"),
            (h(1) + m(29), "About an hour"),
            (h(1) + m(31), "2 hours"),
            (h(3) + m(29), "3 hours"),
            (h(3) + m(31), "4 hours"),
            (h(24), "24 hours"),
            (day(1) + h(12), "36 hours"),
            (day(2), "2 days"),
            (day(7), "7 days"),
            (day(13) + h(5), "13 days"),
            (day(14), "2 weeks"),
            (day(18), "2 weeks"),
            (day(30), "4 weeks"),
            (day(30 + 14), "6 weeks"),
            (day(60), "2 months"),
            (day(90 + 7), "3 months"),
            (day(30 * 13), "13 months"),
            (day(30 * 24), "24 months"),
            (day(30 * 24 + 14), "2 years"),
            (day(3 * 365 + 60), "3 years"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(*d), *want, "{d:?}");
        }
    }

    #[test]
    fn since_and_created_at() {
        assert_eq!(human_since_at(1000, 1000 + 3 * 3600), "3 hours ago");
        assert_eq!(human_since_at(2000, 1000), "Less than a second ago");
        assert!(human_since(0).ends_with(" years ago"));
        let s = created_at(1_704_207_845);
        if chrono::Local::now().offset().local_minus_utc() == 0 {
            assert_eq!(s, "2024-01-02 15:04:05 +0000 UTC");
        } else {
            assert_eq!(s.len(), "2024-01-02 15:04:05 +0000 +0000".len());
        }
    }
}
