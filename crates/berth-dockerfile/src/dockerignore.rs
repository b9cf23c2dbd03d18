//! `.dockerignore` rules as Docker applies them to a build context
//! (`moby/patternmatcher` and its `ignorefile` reader):
//!
//! - one pattern a line; lines starting with `#` are comments; blank lines
//!   are skipped; surrounding white space is trimmed;
//! - patterns are cleaned like Go's `filepath.Clean`, and a leading `/` is
//!   dropped, so `/a`, `./a` and `a/` all mean `a` (relative to the context);
//! - `*` matches any run of characters but `/`, `?` one character but `/`,
//!   `[a-z]`/`[^a]` a class, `\` escapes the next character, `**` any number
//!   of directories (`**/x`, `a/**`, `a/**/b`);
//! - `!pattern` re-includes what earlier patterns excluded; the last pattern
//!   that matches a path decides;
//! - a pattern that matches a directory matches everything below it, so an
//!   excluded directory's contents are excluded unless a later `!` pattern
//!   re-includes them.
//!
//! ```
//! use berth_dockerfile::dockerignore::Matcher;
//! let m = Matcher::new("# build output\ntarget\n*.md\n!README.md\n").unwrap();
//! assert!(m.excluded("target/debug/app"));
//! assert!(m.excluded("NOTES.md"));
//! assert!(!m.excluded("README.md"));
//! assert!(!m.excluded("src/main.rs"));
//! ```

use std::fmt;

/// A `.dockerignore` pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PatternError {}

/// The compiled patterns of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// cleaned text without the leading `!`
    text: String,
    exclusion: bool,
    toks: Vec<Tok>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`: one character but `/`
    One,
    /// `*`: any run without `/`
    Star,
    /// `**/` (or `**` before more text): nothing, or anything ending in `/`
    DeepDir,
    /// `**` at the end: anything
    DeepAll,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Matcher {
    /// Reads the text of a `.dockerignore` file.
    pub fn new(text: &str) -> Result<Matcher, PatternError> {
        Matcher::from_patterns(&read_patterns(text))
    }

    /// Compiles patterns as they come from `read_patterns` (or from an API
    /// caller): `!` marks exceptions.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, PatternError> {
        let mut out = Vec::new();
        for p in patterns {
            let raw = p.as_ref();
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let (exclusion, p) = match p.strip_prefix('!') {
                Some("") => {
                    return Err(PatternError {
                        pattern: raw.to_string(),
                        message: "illegal exclusion pattern: \"!\"".into(),
                    });
                }
                Some(rest) => (true, rest.to_string()),
                None => (false, p),
            };
            let toks = compile(&p).map_err(|message| PatternError {
                pattern: raw.to_string(),
                message,
            })?;
            out.push(Pattern {
                text: p,
                exclusion,
                toks,
            });
        }
        Ok(Matcher { patterns: out })
    }

    /// No patterns at all: nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception (`!...`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// The cleaned patterns, exceptions with their `!`.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated) is
    /// left out of the context: the last pattern that matches the path or
    /// one of its parent directories decides.
    pub fn excluded(&self, rel_path: &str) -> bool {
        let file = clean_rel(rel_path);
        if file.is_empty() {
            return false;
        }
        let chars: Vec<char> = file.chars().collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            // the path itself or one of its parent directories
            let prefixes = prefix_matches(&p.toks, &chars);
            let hit = prefixes[chars.len()]
                || chars
                    .iter()
                    .enumerate()
                    .any(|(k, c)| *c == '/' && prefixes[k]);
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// For a walker that found the directory `rel_dir` excluded: whether an
    /// exception could re-include something below it, so the walker must
    /// descend and ask [`Matcher::excluded`] for each entry. `false` means the
    /// whole directory can be skipped. May answer `true` when nothing turns
    /// out to be re-included (it never answers `false` wrongly).
    pub fn may_reinclude_under(&self, rel_dir: &str) -> bool {
        let dir = clean_rel(rel_dir);
        let dcomps: Vec<&str> = if dir.is_empty() {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| could_match_below(&p.text, &dcomps))
    }
}

/// Whether pattern `text` could match a path below (or at) the directory
/// whose components are `dir`.
fn could_match_below(text: &str, dir: &[&str]) -> bool {
    let pcomps: Vec<&str> = text.split('/').collect();
    for (i, d) in dir.iter().enumerate() {
        let Some(pc) = pcomps.get(i) else {
            // the pattern names an ancestor of dir: it re-includes all of it
            return true;
        };
        if pc.contains("**") {
            return true;
        }
        match compile(pc) {
            Ok(toks) if full_match(&toks, &d.chars().collect::<Vec<_>>()) => {}
            Ok(_) => return false,
            // a component with an escaped `/` or the like: be safe
            Err(_) => return true,
        }
    }
    true
}

/// Lines of a `.dockerignore` as Docker's reader turns them into patterns.
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut p = p.to_string();
        if !p.is_empty() {
            p = clean(&p);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        if invert {
            p.insert(0, '!');
        }
        out.push(p);
    }
    out
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// A context-relative path: cleaned, without leading `/` or `./`; "" for the root.
fn clean_rel(p: &str) -> String {
    let c = clean(p);
    let c = c.trim_start_matches('/');
    if c == "." {
        String::new()
    } else {
        c.to_string()
    }
}

fn compile(p: &str) -> Result<Vec<Tok>, String> {
    let bad = || "syntax error in pattern".to_string();
    let chars: Vec<char> = p.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                toks.push(if i >= chars.len() {
                    Tok::DeepAll
                } else {
                    Tok::DeepDir
                });
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    toks.push(Tok::Lit(n));
                    i += 1;
                }
                None => return Err(bad()),
            },
            '[' => {
                let mut negated = false;
                if chars.get(i) == Some(&'^') {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(bad());
                    };
                    i += 1;
                    if c == ']' && !first {
                        break;
                    }
                    if c == ']' {
                        return Err(bad());
                    }
                    first = false;
                    let lo = if c == '\\' {
                        let &n = chars.get(i).ok_or_else(bad)?;
                        i += 1;
                        n
                    } else {
                        c
                    };
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        i += 1;
                        let c = chars[i];
                        i += 1;
                        hi = if c == '\\' {
                            let &n = chars.get(i).ok_or_else(bad)?;
                            i += 1;
                            n
                        } else {
                            c
                        };
                        if hi < lo {
                            return Err(bad());
                        }
                    }
                    ranges.push((lo, hi));
                }
                toks.push(Tok::Class { negated, ranges });
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

/// Anchored match of the whole of `s`.
fn full_match(toks: &[Tok], s: &[char]) -> bool {
    prefix_matches(toks, s)[s.len()]
}

/// `out[k]`: whether the pattern matches `s[..k]` exactly. A simulation of
/// the pattern as an automaton, so it costs `toks.len() * s.len()` for all
/// prefixes at once (the parent-directory checks need every `/` boundary).
fn prefix_matches(toks: &[Tok], s: &[char]) -> Vec<bool> {
    let t = toks.len();
    // states 0..=t: about to match toks[i] (t = done);
    // t+1+i: inside the `**/` at toks[i], before its closing '/'
    let mut cur = vec![false; 2 * t + 1];
    let mut next = vec![false; 2 * t + 1];
    let mut out = vec![false; s.len() + 1];
    cur[0] = true;
    close(toks, &mut cur);
    out[0] = cur[t];
    for (k, &c) in s.iter().enumerate() {
        next.iter_mut().for_each(|b| *b = false);
        for i in 0..t {
            if !cur[i] {
                continue;
            }
            match &toks[i] {
                Tok::Lit(x) if *x == c => next[i + 1] = true,
                Tok::One if c != '/' => next[i + 1] = true,
                Tok::Class { negated, ranges }
                    if ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated =>
                {
                    next[i + 1] = true
                }
                Tok::Star if c != '/' => next[i] = true,
                Tok::DeepAll => next[i] = true,
                Tok::DeepDir if c == '/' => next[i] = true,
                Tok::DeepDir => next[t + 1 + i] = true,
                _ => {}
            }
        }
        for i in 0..t {
            if cur[t + 1 + i] {
                if c == '/' {
                    next[i] = true;
                } else {
                    next[t + 1 + i] = true;
                }
            }
        }
        close(toks, &mut next);
        std::mem::swap(&mut cur, &mut next);
        out[k + 1] = cur[t];
    }
    out
}

/// Adds the states reachable without consuming: `*`, `**` and `**/` may
/// match nothing.
fn close(toks: &[Tok], states: &mut [bool]) {
    for i in 0..toks.len() {
        if states[i] && matches!(toks[i], Tok::Star | Tok::DeepAll | Tok::DeepDir) {
            states[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Matcher {
        Matcher::new(text).unwrap()
    }

    #[test]
    fn basic_globs() {
        let x = m("*.o\nbuild\ndocs/?.txt\n");
        assert!(x.excluded("a.o"));
        assert!(!x.excluded("src/a.o"), "* does not cross /");
        assert!(x.excluded("build"));
        assert!(
            x.excluded("build/x/y"),
            "directory contents follow the directory"
        );
        assert!(!x.excluded("builder"));
        assert!(x.excluded("docs/a.txt"));
        assert!(!x.excluded("docs/ab.txt"));
    }

    #[test]
    fn double_star() {
        let x = m("**/*.log\nvendor/**\na/**/z\n");
        assert!(x.excluded("x.log"));
        assert!(x.excluded("a/b/c.log"));
        assert!(x.excluded("vendor/x/y"));
        assert!(x.excluded("a/z"));
        assert!(x.excluded("a/b/c/z"));
        assert!(!x.excluded("b/z"));
    }

    #[test]
    fn exceptions_and_order() {
        let x = m("*.md\n!README.md\n");
        assert!(x.excluded("CHANGES.md"));
        assert!(!x.excluded("README.md"));
        let x = m("!README.md\n*.md\n");
        assert!(x.excluded("README.md"), "the later pattern wins");
        let x = m("docs\n!docs/keep\n");
        assert!(x.excluded("docs/other"));
        assert!(!x.excluded("docs/keep"));
        assert!(!x.excluded("docs/keep/deeper"));
        assert!(x.may_reinclude_under("docs"));
        assert!(!x.may_reinclude_under("other"));
    }

    #[test]
    fn reinclude_under_wildcards() {
        let x = m("*\n!*/keep\n");
        assert!(x.may_reinclude_under("anything"));
        assert!(!x.excluded("anything/keep"));
        assert!(x.excluded("anything/drop"));
        let x = m("*\n!src/**/*.rs\n");
        assert!(x.may_reinclude_under("src"));
        assert!(x.may_reinclude_under("src/a/b"));
        assert!(!x.may_reinclude_under("target"));
        assert!(!x.excluded("src/a/b/c.rs"));
        let x = m("a\n");
        assert!(!x.may_reinclude_under("a"), "no exceptions: skip");
    }

    #[test]
    fn cleaning() {
        let x = m("/abs\n./dot\ntrail/\n  spaced  \n# comment\n\n");
        assert!(x.excluded("abs"));
        assert!(x.excluded("dot/f"));
        assert!(x.excluded("trail"));
        assert!(x.excluded("spaced"));
        assert!(!x.excluded("# comment"));
        assert!(x.excluded("./abs"));
        assert!(x.excluded("/abs/x"));
        assert_eq!(x.patterns(), ["abs", "dot", "trail", "spaced"]);
        assert!(!x.excluded(""));
        assert!(!x.excluded("."));
    }

    #[test]
    fn classes_and_escapes() {
        let x = m("[a-c].txt\n[^x]y\n\\*star\n");
        assert!(x.excluded("b.txt"));
        assert!(!x.excluded("d.txt"));
        assert!(x.excluded("zy"));
        assert!(!x.excluded("xy"));
        assert!(x.excluded("*star"));
        assert!(!x.excluded("astar"));
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(
            Matcher::new("!\n").unwrap_err().message,
            "illegal exclusion pattern: \"!\""
        );
        assert_eq!(
            Matcher::new("[abc\n").unwrap_err().message,
            "syntax error in pattern"
        );
        assert!(Matcher::new("a\\").is_err());
    }

    #[test]
    fn go_clean() {
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("a//b/./c/"), "a/b/c");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/"), "/");
    }

    #[test]
    fn long_inputs_stay_fast() {
        let x = m(&format!("{}\n", "*a".repeat(50)));
        let path = "a".repeat(2000) + "b";
        assert!(!x.excluded(&path));
        let x = m("**/**/**/**/**/x\n");
        assert!(!x.excluded(&"d/".repeat(300)));
    }
}
