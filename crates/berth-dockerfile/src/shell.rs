//! Variable substitution and word splitting the way Docker's Dockerfile shell
//! lexer does them (BuildKit `frontend/dockerfile/shell`), which is what both
//! the legacy builder and BuildKit apply to ENV, LABEL, ARG, ADD, COPY, EXPOSE,
//! FROM, STOPSIGNAL, USER, VOLUME, WORKDIR and ONBUILD words.
//!
//! It is not a shell: it removes quotes, honours the escape character,
//! expands `$v`, `${v}` and the `${v<op>word}` forms below, and never runs
//! anything. Single quotes keep `$` literal; inside double quotes the escape
//! character only escapes `"`, `$` and itself.
//!
//! | form | value |
//! |------|-------|
//! | `${v:-w}` / `${v-w}` | `w` if `v` is unset or empty / unset |
//! | `${v:+w}` / `${v+w}` | `w` if `v` is set and not empty / set |
//! | `${v:?w}` / `${v?w}` | error `v: w` if `v` is unset or empty / unset |
//! | `${v#p}` `${v##p}` | `v` without the shortest / longest prefix matching `p` |
//! | `${v%p}` `${v%%p}` | `v` without the shortest / longest suffix matching `p` |
//! | `${v/p/r}` `${v//p/r}` | first / every match of `p` replaced by `r` |
//!
//! The legacy builder of dockerd 20.10 knows only `:-`, `:+`, `?` and `:?`;
//! the others came with newer Dockerfile frontends and are a superset.

use std::fmt;

/// A word that could not be expanded. Displays as Docker does:
/// `failed to process "<word>": <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub word: String,
    pub reason: String,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to process {:?}: {}", self.word, self.reason)
    }
}

impl std::error::Error for ExpandError {}

/// Expands variables in `word` and removes its quotes and escapes, like
/// Docker's `ProcessWord`. `lookup` returns a variable's value, `None` when
/// it is unset.
pub fn expand(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    process(word, lookup, escape, Options::default()).map(|(w, _)| w)
}

/// Expands variables in the body of a COPY/ADD heredoc whose delimiter was
/// not quoted ([`crate::Heredoc::expand`]), as BuildKit does: `$v` and
/// `${v...}` are replaced and `\` escapes, but quotes are ordinary
/// characters. RUN heredocs are not expanded by the builder: the shell that
/// runs them does that.
pub fn expand_heredoc(
    content: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let opts = Options {
        skip_quotes: true,
        ..Options::default()
    };
    process(content, lookup, '\\', opts).map(|(w, _)| w)
}

/// Expands `word` like [`expand`] and splits the result into words at
/// unquoted white space, like Docker's `ProcessWords`: white space that came
/// from a quoted part or an escape stays inside a word, white space that came
/// from a variable's value splits. Empty words are dropped (so `""` alone
/// gives no word, as in Docker).
pub fn expand_words(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    process(word, lookup, escape, Options::default()).map(|(_, ws)| ws)
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// keep quote characters in the output
    pub raw_quotes: bool,
    /// keep escape characters in the output
    pub raw_escapes: bool,
    /// leave references to unset variables as written
    pub skip_unset: bool,
    /// quotes are ordinary characters
    pub skip_quotes: bool,
}

/// How deeply `${a:-${b:-...}}` may nest before we refuse (Docker recurses
/// without bound; we keep the stack bounded).
const MAX_NESTING: usize = 64;

pub(crate) fn process(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
    opts: Options,
) -> Result<(String, Vec<String>), ExpandError> {
    let mut lx = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        raw_quotes: opts.raw_quotes,
        raw_escapes: opts.raw_escapes,
        skip_unset: opts.skip_unset,
        skip_quotes: opts.skip_quotes,
        lookup,
        depth: 0,
    };
    let raw = lx.raw_escapes;
    lx.stop_on(None, raw).map_err(|reason| ExpandError {
        word: word.to_string(),
        reason,
    })
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    skip_quotes: bool,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    depth: usize,
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

type Res<T> = Result<T, String>;

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Res<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Res<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '\'' | '"' if !self.skip_quotes => {
                    let s = if ch == '\'' {
                        self.single_quote()?
                    } else {
                        self.double_quote()?
                    };
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    result.push_str(&s);
                    words.add_string(&s);
                }
                _ => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => {
                                words.add_raw_char(c);
                                result.push(c);
                            }
                        }
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(s) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Res<String> {
        let mut out = String::new();
        let q = self.next();
        if self.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Res<String> {
        let mut out = String::new();
        let q = self.next();
        if self.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                ch = n;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn dollar(&mut self) -> Res<String> {
        self.depth += 1;
        let r = if self.depth > MAX_NESTING {
            Err("syntax error: substitutions nested too deeply".to_string())
        } else {
            self.dollar_inner()
        };
        self.depth -= 1;
        r
    }

    fn dollar_inner(&mut self) -> Res<String> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get(&name) {
                Some(v) => v,
                None if self.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let Some(mut ch) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let mut ops = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => Ok(match self.get(&name) {
                Some(v) => v,
                None if self.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if ch == ':' {
                    null_is_unset = true;
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            ops.push(c);
                        }
                        None => return Err("syntax error: missing '}'".into()),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({ops}) in substitution"));
                }
                let word = self.word_until('}', raw)?;
                let value = self.get(&name);
                if self.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{ops}{word}}}"));
                }
                let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
                match ch {
                    '-' => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unset { String::new() } else { word }),
                    '?' => {
                        if value.is_none() {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            };
                            Err(format!("{name}: {msg}"))
                        } else if unset {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            };
                            Err(format!("{name}: {msg}"))
                        } else {
                            Ok(value.unwrap_or_default())
                        }
                    }
                    '#' | '%' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pat) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word.clone()),
                        };
                        let pattern = Pattern::compile(&pat)
                            .map_err(|e| format!("invalid pattern ({pat}) in substitution: {e}"))?;
                        Ok(if ch == '#' {
                            pattern.trim_prefix(&value, greedy)
                        } else {
                            pattern.trim_suffix(&value, greedy)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({ops}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pat = match self.stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '/' in ${}".into());
                    }
                    Err(e) => return Err(e),
                };
                let repl = self.word_until('}', true)?;
                let value = self.get(&name);
                if self.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}/{pat}/{repl}}}"));
                }
                let pattern = Pattern::compile(&pat)
                    .map_err(|e| format!("invalid pattern ({pat}) in substitution: {e}"))?;
                Ok(pattern.replace(&value.unwrap_or_default(), &repl, all))
            }
            _ => Err(format!("unsupported modifier ({ops}) in substitution")),
        }
    }

    fn word_until(&mut self, stop: char, raw_escapes: bool) -> Res<String> {
        match self.stop_on(Some(stop), raw_escapes) {
            Ok((w, _)) => Ok(w),
            Err(_) if self.peek().is_none() => Err("syntax error: missing '}'".into()),
            Err(e) => Err(e),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|c| is_digit(*c)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// A shell pattern as `${v#p}`, `${v%p}` and `${v/p/r}` use it: `*` any
/// text, `?` any one character, `\` escapes `*`, `?` or `\`; everything else,
/// `[` included, is literal (as in BuildKit).
#[derive(Debug)]
struct Pattern(Vec<Tok>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

impl Pattern {
    fn compile(p: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = p.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '\\' => match chars.get(i) {
                    Some('}' | '/') => {}
                    Some(&n @ ('*' | '?' | '\\')) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    Some(n) => return Err(format!("invalid escape '\\{n}'")),
                    None => return Err("invalid escape '\\'".into()),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern(toks))
    }

    /// Whether the whole of `s` matches (iterative, linear backtracking).
    fn matches(&self, s: &[char]) -> bool {
        let p = &self.0;
        let (mut pi, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(Tok::Star) => {
                    star = Some((pi, si));
                    pi += 1;
                }
                Some(Tok::Any) => {
                    pi += 1;
                    si += 1;
                }
                Some(Tok::Lit(c)) if *c == s[si] => {
                    pi += 1;
                    si += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        pi = sp + 1;
                        si = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|t| *t == Tok::Star)
    }

    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let lens: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=chars.len()).rev())
        } else {
            Box::new(0..=chars.len())
        };
        for n in lens {
            if self.matches(&chars[..n]) {
                return chars[n..].iter().collect();
            }
        }
        value.to_string()
    }

    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let len = chars.len();
        let starts: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new(0..=len)
        } else {
            Box::new((0..=len).rev())
        };
        for s in starts {
            if self.matches(&chars[s..]) {
                return chars[..s].iter().collect();
            }
        }
        value.to_string()
    }

    /// Leftmost, longest match starting at or after `from`.
    fn find(&self, chars: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=chars.len()).find_map(|s| {
            (s..=chars.len())
                .rev()
                .find(|&e| self.matches(&chars[s..e]))
                .map(|e| (s, e))
        })
    }

    fn replace(&self, value: &str, repl: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        let mut prev_end: Option<usize> = None;
        while i <= chars.len() {
            let Some((s, e)) = self.find(&chars, i) else {
                break;
            };
            if s == e && prev_end == Some(s) {
                // an empty match right after the previous match does not count
                if s < chars.len() {
                    out.extend(&chars[i..=s]);
                }
                i = s + 1;
                continue;
            }
            out.extend(&chars[i..s]);
            out.push_str(repl);
            prev_end = Some(e);
            if s == e {
                if s < chars.len() {
                    out.push(chars[s]);
                }
                i = s + 1;
            } else {
                i = e;
            }
            if !all {
                break;
            }
        }
        if i < chars.len() {
            out.extend(&chars[i..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |k: &str| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
    }

    fn x(word: &str) -> Result<String, String> {
        let e = env(&[
            ("A", "a"),
            ("EMPTY", ""),
            ("P", "/usr/local/bin"),
            ("S", "x y  z"),
        ]);
        expand(word, &e, '\\').map_err(|e| e.to_string())
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(x("$A").unwrap(), "a");
        assert_eq!(x("${A}").unwrap(), "a");
        assert_eq!(x("pre$A-post").unwrap(), "prea-post");
        assert_eq!(x("$UNSET").unwrap(), "");
        assert_eq!(x("$").unwrap(), "$");
        assert_eq!(x("a$ b").unwrap(), "a$ b");
        assert_eq!(x("$Ab").unwrap(), "");
        assert_eq!(x("${A}b").unwrap(), "ab");
        assert_eq!(x("$1x").unwrap(), "x");
    }

    #[test]
    fn modifiers() {
        assert_eq!(x("${A:-d}").unwrap(), "a");
        assert_eq!(x("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(x("${UNSET:-d}").unwrap(), "d");
        assert_eq!(x("${EMPTY-d}").unwrap(), "");
        assert_eq!(x("${UNSET-d}").unwrap(), "d");
        assert_eq!(x("${A:+d}").unwrap(), "d");
        assert_eq!(x("${EMPTY:+d}").unwrap(), "");
        assert_eq!(x("${EMPTY+d}").unwrap(), "d");
        assert_eq!(x("${UNSET+d}").unwrap(), "");
        assert_eq!(x("${UNSET:-${A}x}").unwrap(), "ax");
        assert_eq!(x("${UNSET:-'q'}").unwrap(), "q");
        assert_eq!(x("${A?}").unwrap(), "a");
        assert_eq!(
            x("${UNSET?}").unwrap_err(),
            r#"failed to process "${UNSET?}": UNSET: is not allowed to be unset"#
        );
        assert_eq!(
            x("${EMPTY:?must be set}").unwrap_err(),
            r#"failed to process "${EMPTY:?must be set}": EMPTY: must be set"#
        );
    }

    #[test]
    fn patterns() {
        assert_eq!(x("${P#*/}").unwrap(), "usr/local/bin");
        assert_eq!(x("${P##*/}").unwrap(), "bin");
        assert_eq!(x("${P%/*}").unwrap(), "/usr/local");
        assert_eq!(x("${P%%/l*}").unwrap(), "/usr");
        assert_eq!(x("${P/usr/opt}").unwrap(), "/opt/local/bin");
        assert_eq!(x("${P//\\//:}").unwrap(), ":usr:local:bin");
        assert_eq!(x("${A/?/b}").unwrap(), "b");
        assert_eq!(x("${P#[}").unwrap(), "/usr/local/bin");
        assert!(x("${P#\\a}").unwrap_err().contains("invalid escape"));
        assert!(
            x("${P:#x}")
                .unwrap_err()
                .contains("unsupported modifier (:#)")
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'").unwrap(), "$A");
        assert_eq!(x("\"$A\"").unwrap(), "a");
        assert_eq!(x("\\$A").unwrap(), "$A");
        assert_eq!(x("\"\\$A\"").unwrap(), "$A");
        assert_eq!(x("\"a\\b\"").unwrap(), "a\\b");
        assert_eq!(x("\"a\\\"b\"").unwrap(), "a\"b");
        assert_eq!(x("a\\ b").unwrap(), "a b");
        assert_eq!(x("trailing\\").unwrap(), "trailing");
        let e = env(&[("A", "a")]);
        assert_eq!(expand("`$A", &e, '`').unwrap(), "$A");
        assert_eq!(expand("\\$A", &e, '`').unwrap(), "\\a");
    }

    #[test]
    fn errors_name_the_word() {
        assert_eq!(
            x("${A").unwrap_err(),
            r#"failed to process "${A": syntax error: missing '}'"#
        );
        assert_eq!(
            x("${}").unwrap_err(),
            r#"failed to process "${}": syntax error: bad substitution"#
        );
        assert_eq!(
            x("'abc").unwrap_err(),
            r#"failed to process "'abc": unexpected end of statement while looking for matching single-quote"#
        );
        assert_eq!(
            x("\"abc").unwrap_err(),
            r#"failed to process "\"abc": unexpected end of statement while looking for matching double-quote"#
        );
        assert!(
            x("${A!x}")
                .unwrap_err()
                .contains("unsupported modifier (!)")
        );
        assert!(x("${A/x").unwrap_err().contains("missing '/'"));
    }

    #[test]
    fn words_split_like_process_words() {
        let e = env(&[("S", "x y  z"), ("E", "")]);
        let w = |s: &str| expand_words(s, &e, '\\').unwrap();
        assert_eq!(w("a b"), ["a", "b"]);
        assert_eq!(w("  a   b  "), ["a", "b"]);
        assert_eq!(w("\"a b\" c"), ["a b", "c"]);
        assert_eq!(w("a\\ b"), ["a b"]);
        assert_eq!(w("$S"), ["x", "y", "z"]);
        assert_eq!(w("\"$S\""), ["x y  z"]);
        assert_eq!(w("''"), Vec::<String>::new());
        assert_eq!(w("a$E b"), ["a", "b"]);
    }

    #[test]
    fn heredoc_bodies_keep_quotes() {
        let e = env(&[("A", "a b")]);
        assert_eq!(
            expand_heredoc("echo \"$A\" '${A}' \\$A ${B:-x}\n", &e).unwrap(),
            "echo \"a b\" 'a b' $A x\n"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "${A:-".repeat(10_000) + &"}".repeat(10_000);
        assert!(x(&deep).unwrap_err().contains("nested too deeply"));
    }

    #[test]
    fn raw_modes_keep_quotes_and_escapes() {
        let none = |_: &str| None;
        let opts = Options {
            raw_quotes: true,
            raw_escapes: true,
            skip_unset: true,
            skip_quotes: false,
        };
        let (_, ws) = process("RUN <<'EOF' a\\ b $X ${Y:-z}", &none, '\\', opts).unwrap();
        assert_eq!(ws, ["RUN", "<<'EOF'", "a\\ b", "$X", "${Y:-z}"]);
    }
}
