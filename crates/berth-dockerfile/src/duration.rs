//! Go's `time.ParseDuration`, which HEALTHCHECK's `--interval` and friends
//! use: a sequence of decimal numbers with units `ns us µs μs ms s m h`,
//! optionally signed (`1m30s`, `1.5h`, `300ms`). Errors read as Go's.

use std::time::Duration;

/// Parses a Go duration. Negative durations are reported as `Err` with
/// Go-like wording only when they cannot be represented; callers check the
/// minimum themselves. Returns nanoseconds as a signed value.
pub(crate) fn parse_go_duration(s: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(s));
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..n];
            rest = &r[n..];
            if int_len == 0 && n == 0 {
                return Err(invalid());
            }
        } else if int_len == 0 {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(s)));
        }
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(s)
                ));
            }
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .get(..int_part.len().min(30))
                .and_then(|p| p.parse().ok())
                .filter(|_| int_part.len() <= 30)
                .ok_or_else(invalid)?
        };
        let mut v = int.checked_mul(scale).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            // digits past nanosecond precision of an hour cannot matter
            let mut f: i128 = 0;
            let mut div: i128 = 1;
            for d in frac_part.bytes().take(18) {
                f = f * 10 + i128::from(d - b'0');
                div *= 10;
            }
            v = v.checked_add(f * scale / div).ok_or_else(invalid)?;
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
    }
    Ok(if neg { -total } else { total })
}

/// A duration of at least zero from Go nanoseconds.
pub(crate) fn to_duration(nanos: i128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// Go's `%q`/`strconv.Quote` for the ASCII cases that matter in messages.
pub(crate) fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_go_duration("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_go_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_go_duration(".5s").unwrap(), 500_000_000);
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        assert_eq!(parse_go_duration("-1s").unwrap(), -1_000_000_000);
        assert_eq!(
            parse_go_duration("5").unwrap_err(),
            r#"time: missing unit in duration "5""#
        );
        assert_eq!(
            parse_go_duration("5q").unwrap_err(),
            r#"time: unknown unit "q" in duration "5q""#
        );
        assert_eq!(
            parse_go_duration("abc").unwrap_err(),
            r#"time: invalid duration "abc""#
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("99999999999999999999999h").is_err());
        let nearly_2h = parse_go_duration("1.99999999999999999999999999999999h").unwrap();
        assert!((7_199_999_999_990..=7_200_000_000_000).contains(&nearly_2h));
        assert!(parse_go_duration("9999999999999999999999999999999999999999.9h").is_err());
    }
}
