//! Reading what the CLIs print: tables, relative times, messages.

/// The cells of a CLI table (header included). Columns start where the
/// header's cells start (cells like `CMD ["sh"]` or `2 years ago` hold
/// spaces, so splitting at blanks would not do); positions count chars, as
/// Go's tabwriter counts runes.
pub fn table(out: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let chars: Vec<char> = header.chars().collect();
    let mut starts = Vec::new();
    for (i, c) in chars.iter().enumerate() {
        let after_gap = i == 0 || (i >= 2 && chars[i - 1] == ' ' && chars[i - 2] == ' ');
        if *c != ' ' && after_gap {
            starts.push(i);
        }
    }
    let split = |line: &str| -> Vec<String> {
        let cs: Vec<char> = line.chars().collect();
        starts
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let e = starts.get(k + 1).copied().unwrap_or(cs.len()).min(cs.len());
                cs[s.min(cs.len())..e]
                    .iter()
                    .collect::<String>()
                    .trim()
                    .to_string()
            })
            .collect()
    };
    std::iter::once(header).chain(lines).map(split).collect()
}

/// The non-empty lines of `s`, trimmed at the end and sorted (for outputs
/// whose order is not specified).
pub fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v
}

const UNITS: &[&str] = &["second", "minute", "hour", "day", "week", "month", "year"];

/// Replaces docker's relative times (`5 seconds ago`, `About a minute ago`,
/// `Less than a second ago`, `2 years ago`) with `<time> ago`, so outputs
/// taken a moment apart compare equal.
pub fn normalize_times(s: &str) -> String {
    s.lines().map(normalize_line).collect::<Vec<_>>().join("\n")
}

fn normalize_line(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    for w in words {
        if w == "ago"
            && let Some(start) = relative_time_start(&out)
        {
            out.truncate(start);
            out.push("<time>");
        }
        out.push(w);
    }
    out.join(" ")
}

/// Where the duration before a trailing `ago` starts in `words`, if the
/// words end with one.
fn relative_time_start(words: &[&str]) -> Option<usize> {
    let n = words.len();
    let unit = words.get(n.checked_sub(1)?)?;
    if !UNITS
        .iter()
        .any(|u| unit == u || unit.strip_suffix('s') == Some(u))
    {
        return None;
    }
    let qty = *words.get(n.checked_sub(2)?)?;
    if qty.chars().all(|c| c.is_ascii_digit()) && !qty.is_empty() {
        return Some(n - 2);
    }
    if qty == "a" || qty == "an" {
        return match n.checked_sub(4).map(|i| (words[i], words[i + 1])) {
            Some(("Less", "than")) => Some(n - 4),
            _ if n >= 3 && words[n - 3] == "About" => Some(n - 3),
            _ => Some(n - 2),
        };
    }
    None
}

/// Whether a client's error message is readable: not empty, and free of
/// control characters and U+FFFD (what invalid UTF-8 turns into).
pub fn is_readable(msg: &str) -> bool {
    !msg.trim().is_empty()
        && !msg
            .chars()
            .any(|c| c == '\u{fffd}' || (c.is_control() && c != '\n' && c != '\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_split_at_wide_gaps() {
        let t = table(
            "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE\nbusybox      latest    5fd0e96ec9d4   2 years ago   1.98MB\n",
        );
        assert_eq!(
            t[1],
            ["busybox", "latest", "5fd0e96ec9d4", "2 years ago", "1.98MB"]
        );
        let t = table(
            "IMAGE          CREATED BY                  SIZE\n<missing>      /bin/sh -c #(nop)  CMD […   0B\n",
        );
        assert_eq!(t[1], ["<missing>", "/bin/sh -c #(nop)  CMD […", "0B"]);
    }

    #[test]
    fn relative_times_are_normalized() {
        assert_eq!(normalize_times("x  5 seconds ago  y"), "x  <time> ago  y");
        assert_eq!(normalize_times("About a minute ago"), "<time> ago");
        assert_eq!(normalize_times("Less than a second ago"), "<time> ago");
        assert_eq!(
            normalize_times("an hour ago\n2 years ago"),
            "<time> ago\n<time> ago"
        );
        assert_eq!(normalize_times("chicago ago"), "chicago ago");
    }

    #[test]
    fn unreadable_messages_are_caught() {
        assert!(is_readable("Error response from daemon: invalid archive"));
        assert!(!is_readable("bad \u{fffd}\u{1} bytes"));
        assert!(!is_readable("  "));
    }
}
