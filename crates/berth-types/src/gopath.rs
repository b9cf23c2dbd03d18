//! Go's `path`/`filepath` string functions for `/`-separated paths, as
//! Docker's code applies them to paths inside containers and archives.

/// Go's `path.Clean`: `.` and `..` resolved lexically, repeated and
/// trailing slashes dropped; "" is ".", `..` at a rooted start is dropped.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            x => out.push(x),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `path.Base`: the last element ("." for "", "/" for slashes only).
pub fn base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// Go's `path.Dir`: all but the last element, cleaned.
pub fn dir(p: &str) -> String {
    let c = clean(p);
    match c.rfind('/') {
        Some(0) => "/".into(),
        Some(i) => c[..i].to_string(),
        None => ".".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_go() {
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/a/b/../c/"), "/a/c");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean("../a/.."), "..");
        assert_eq!(clean("a//b/./"), "a/b");
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base("///"), "/");
        assert_eq!(base(""), ".");
        assert_eq!(dir("/a/b"), "/a");
        assert_eq!(dir("/a"), "/");
        assert_eq!(dir("a"), ".");
    }
}
