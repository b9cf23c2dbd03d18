//! First pass: text → instruction lines ("nodes"), as BuildKit's
//! `frontend/dockerfile/parser` does it. Handles the parser directives at the
//! top, comments, line continuations with the escape character, empty
//! continuation lines (a warning), heredoc bodies, and splits each line into
//! its keyword, its `--flags` and its arguments with the argument rules of
//! that keyword (JSON or shell form, words, `k=v` pairs, ...).
//!
//! Errors found here are reported before any error of the second pass, as
//! Docker runs its parser over the whole file before it looks at instructions.

use crate::shell::{self, Options};
use crate::{Heredoc, ParseError, ParseErrorKind};

/// One instruction line with its arguments split by its keyword's rules.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// keyword, lower-cased
    pub cmd: String,
    pub flags: Vec<String>,
    pub args: Args,
    /// the arguments came from a JSON array
    pub json: bool,
    /// the joined line as written (continuations removed), untrimmed
    pub original: String,
    pub start: usize,
    pub end: usize,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone)]
pub(crate) enum Args {
    /// a list of values (words, JSON strings, or one whole-rest string)
    List(Vec<String>),
    /// `k=v` pairs of ENV and LABEL, raw (quotes kept)
    Pairs(Vec<(String, String)>),
    /// ONBUILD's trigger
    Sub(Box<Node>),
}

impl Args {
    pub fn list(&self) -> &[String] {
        match self {
            Args::List(v) => v,
            _ => &[],
        }
    }
}

pub(crate) struct Lines {
    pub nodes: Vec<Node>,
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
    pub warnings: Vec<String>,
}

struct Directives {
    escape: char,
    done: bool,
    seen: Vec<String>,
    syntax: Option<String>,
    check: Option<String>,
}

impl Directives {
    /// `# name=value` at the very top (before any instruction, comment or
    /// blank line); a line that is not one ends the directives.
    fn possible(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => match value {
                "`" | "\\" => self.escape = value.chars().next().unwrap_or('\\'),
                _ => {
                    return Err(format!(
                        "invalid escape token '{value}' does not match ` or \\"
                    ));
                }
            },
            "syntax" => self.syntax = Some(value.to_string()),
            _ => self.check = Some(value.to_string()),
        }
        Ok(())
    }
}

/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`
fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start_matches(is_re_space);
    let name_len = rest
        .char_indices()
        .take_while(|(i, c)| {
            if *i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    let value = rest.trim_matches(is_re_space);
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

/// `\s` of Go's regexp (RE2): ASCII white space only.
fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r' | '\x0b')
}

/// `[\t\v\f\r ]`, the separator of Docker's `reWhitespace`.
pub(crate) fn is_word_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// A trailing escape character (optionally followed by blanks) continues the
/// line, unless it is itself escaped.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before, false);
    }
    (line, true)
}

pub(crate) fn parse_lines(src: &[u8]) -> Result<Lines, ParseError> {
    parse_lines_with(src, '\\', true)
}

/// `escape` is the escape character to start with; `directives` says whether
/// parser directives at the top count (not for ONBUILD triggers).
pub(crate) fn parse_lines_with(
    src: &[u8],
    escape: char,
    directives: bool,
) -> Result<Lines, ParseError> {
    let text = String::from_utf8_lossy(src);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut d = Directives {
        escape,
        done: !directives,
        seen: Vec::new(),
        syntax: None,
        check: None,
    };
    let mut lines = text.split_inclusive('\n');
    let mut current = 0usize;
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let syntax_err = |line: usize, message: String| ParseError {
        line,
        message,
        kind: ParseErrorKind::Syntax,
    };

    while let Some(raw) = lines.next() {
        let token = trim_newline(raw).trim_start();
        d.possible(token).map_err(|m| syntax_err(current + 1, m))?;
        current += 1;
        let start = current;
        let first = if is_comment(token) { "" } else { token };
        let (first, mut eol) = trim_continuation(first, d.escape);
        if eol && first.is_empty() {
            continue;
        }
        let mut buf = first.to_string();
        let mut empty_continuation = false;
        while !eol {
            let Some(raw) = lines.next() else { break };
            let t = trim_newline(raw);
            d.possible(t).map_err(|m| syntax_err(current + 1, m))?;
            current += 1;
            if is_comment(t) {
                continue;
            }
            if t.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, e) = trim_continuation(t, d.escape);
            buf.push_str(part);
            eol = e;
        }
        if empty_continuation {
            warnings.push(format!(
                "[WARNING]: Empty continuation line found in:\n    {buf}"
            ));
        }
        let mut node = node_from_line(&buf, d.escape).map_err(|m| syntax_err(start, m))?;
        if can_contain_heredoc(&node) && buf.contains("<<") {
            let docs = heredocs_from_line(&buf).map_err(|m| syntax_err(start, m))?;
            for mut doc in docs {
                let mut terminated = false;
                for raw in lines.by_ref() {
                    current += 1;
                    let mut candidate = trim_newline(raw);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(raw);
                }
                if !terminated {
                    return Err(syntax_err(start, "unterminated heredoc".into()));
                }
                node.heredocs.push(doc);
            }
        }
        node.start = start;
        node.end = current;
        nodes.push(node);
    }
    if !warnings.is_empty() {
        warnings.push(
            "[WARNING]: Empty continuation lines will become errors in a future release.".into(),
        );
    }
    if let Some(s) = &d.syntax {
        warnings.insert(
            0,
            format!(
                "[WARNING]: the syntax parser directive ({s}) is ignored: berth always uses its built-in Dockerfile frontend"
            ),
        );
    }
    Ok(Lines {
        nodes,
        escape: d.escape,
        syntax: d.syntax,
        check: d.check,
        warnings,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    match (&node.cmd[..], &node.args) {
        ("add" | "copy" | "run", _) => true,
        ("onbuild", Args::Sub(sub)) => matches!(&sub.cmd[..], "add" | "copy" | "run"),
        _ => false,
    }
}

/// The heredocs a line opens, in order (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`).
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let none = |_: &str| None;
    let raw = Options {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        skip_quotes: false,
    };
    let words = match shell::process(line, &none, '\\', raw) {
        Ok((_, w)) => w,
        Err(_) => return Ok(Vec::new()),
    };
    let mut docs = Vec::new();
    for w in words {
        if let Some(doc) = parse_heredoc(&w)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// `^(\d*)<<(-?)\s*([^<]*)$` and the rest one word; quoting any part of the
/// word turns expansion of the body off.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.chars().take_while(|c| c.is_ascii_digit()).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(is_re_space);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse::<u32>().unwrap_or(0)
    };
    let none = |_: &str| None;
    let cooked = Options {
        raw_quotes: false,
        raw_escapes: false,
        skip_unset: true,
        skip_quotes: false,
    };
    let words = shell::process(rest, &none, '\\', cooked)
        .map_err(|e| e.to_string())?
        .1;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw_words = shell::process(
        rest,
        &none,
        '\\',
        Options {
            raw_quotes: true,
            ..cooked
        },
    )
    .map_err(|e| e.to_string())?
    .1;
    if raw_words.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let name = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&name) == quotes(&raw_words[0]);
    Ok(Some(Heredoc {
        name,
        fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

/// Splits an instruction line into keyword, flags and arguments.
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(is_word_space) {
        Some(i) => (
            &trimmed[..i],
            Some(trimmed[i..].trim_start_matches(is_word_space)),
        ),
        None => (trimmed, None),
    };
    let cmd = cmd.to_lowercase();
    let (rest, flags) = match rest {
        Some(r) => {
            let (rest, flags) = extract_flags(r, escape);
            (rest.trim().to_string(), flags)
        }
        None => (String::new(), Vec::new()),
    };
    let mut json = false;
    let args = match cmd.as_str() {
        "add" | "copy" | "volume" => match parse_json(&rest)? {
            Some(v) => {
                json = true;
                Args::List(v)
            }
            None => Args::List(split_whitespace(&rest)),
        },
        "cmd" | "entrypoint" | "run" | "shell" => match parse_json(&rest)? {
            Some(v) => {
                json = true;
                Args::List(v)
            }
            None if rest.is_empty() => Args::List(Vec::new()),
            None => Args::List(vec![rest.clone()]),
        },
        "arg" => Args::List(parse_words(&rest, escape)),
        "env" => Args::Pairs(parse_name_val(&rest, "ENV", escape)?),
        "label" => Args::Pairs(parse_name_val(&rest, "LABEL", escape)?),
        "expose" | "from" => Args::List(split_whitespace(&rest)),
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                Args::List(Vec::new())
            } else {
                Args::List(vec![rest.clone()])
            }
        }
        "healthcheck" => {
            let typ_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if typ_end == 0 {
                Args::List(Vec::new())
            } else {
                let typ = rest[..typ_end].to_string();
                let after = rest[typ_end..].trim_start();
                let mut v = vec![typ];
                match parse_json(after)? {
                    Some(cmd) => {
                        json = true;
                        v.extend(cmd);
                    }
                    None if after.is_empty() => {}
                    None => v.push(after.to_string()),
                }
                Args::List(v)
            }
        }
        "onbuild" => {
            if rest.is_empty() {
                Args::List(Vec::new())
            } else {
                Args::Sub(Box::new(node_from_line(&rest, escape)?))
            }
        }
        _ => Args::List(Vec::new()),
    };
    Ok(Node {
        cmd,
        flags,
        args,
        json,
        original: line.to_string(),
        start: 0,
        end: 0,
        heredocs: Vec::new(),
    })
}

/// Leading `--name[=value]` words; the rest of the line is returned as is.
/// Quotes and the escape character work inside flag words.
fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(pos, _)) = chars.peek() else {
            return ("", flags);
        };
        if !line[pos..].starts_with("--") {
            return (&line[pos..], flags);
        }
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        loop {
            let Some((i, ch)) = chars.next() else {
                if word != "--" && (blank_ok || !word.is_empty()) {
                    flags.push(word);
                }
                return ("", flags);
            };
            match quote {
                None => {
                    if ch.is_whitespace() {
                        if word == "--" {
                            return (&line[i..], flags);
                        }
                        if blank_ok || !word.is_empty() {
                            flags.push(std::mem::take(&mut word));
                        }
                        break;
                    }
                    if ch == '\'' || ch == '"' {
                        quote = Some(ch);
                        blank_ok = true;
                        continue;
                    }
                    if ch == escape {
                        match chars.next() {
                            None => continue,
                            Some((_, n)) => word.push(n),
                        }
                        continue;
                    }
                    word.push(ch);
                }
                Some(q) => {
                    if ch == q {
                        quote = None;
                        continue;
                    }
                    if ch == escape {
                        match chars.next() {
                            None => {
                                quote = None;
                                continue;
                            }
                            Some((_, n)) => word.push(n),
                        }
                        continue;
                    }
                    word.push(ch);
                }
            }
        }
    }
}

fn split_whitespace(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_word_space)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// JSON form: the arguments start with `[` and are a JSON array. An array
/// holding anything but strings is an error; anything else that is not valid
/// JSON is shell form (`Ok(None)`), as in Docker.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Ok(values) => values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(NOT_STRINGS.to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        // Go's decoder nests far deeper than serde_json's limit; such input is
        // valid JSON holding arrays, so it gets Docker's error too.
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            Err(NOT_STRINGS.to_string())
        }
        Err(e) if e.is_data() => Err(NOT_STRINGS.to_string()),
        Err(_) => Ok(None),
    }
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// Words separated by white space, quotes kept (they are removed later by
/// expansion); the escape character is kept with the character it escapes.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                let Some(n) = chars.next() else { continue };
                word.push(ch);
                word.push(n);
                continue;
            }
            word.push(ch);
            continue;
        }
        // in quotes
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            let Some(n) = chars.next() else {
                phase = Phase::Word;
                continue;
            };
            word.push(ch);
            word.push(n);
            continue;
        }
        word.push(ch);
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// ENV and LABEL arguments: `k=v ...` pairs, or the legacy `k v` form where
/// everything after the first blank is the value.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_word_space) else {
            return Err(format!("{key} must have two arguments"));
        };
        let value = rest[i..].trim_start_matches(is_word_space);
        return Ok(vec![(rest[..i].to_string(), value.to_string())]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\  \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }

    #[test]
    fn directives() {
        assert_eq!(match_directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(match_directive("#escape = ` "), Some(("escape", "`")));
        assert_eq!(
            match_directive("# syntax=docker/dockerfile:1"),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("# a comment"), None);
        assert_eq!(match_directive("# 1x=y"), None);
        assert_eq!(match_directive("# x="), None);
    }

    #[test]
    fn flags() {
        assert_eq!(
            extract_flags("--from=a --chown=\"1 2\" src dst", '\\'),
            (
                "src dst",
                vec!["--from=a".to_string(), "--chown=1 2".to_string()]
            )
        );
        assert_eq!(extract_flags("-- --x", '\\'), (" --x", vec![]));
        assert_eq!(extract_flags("--a", '\\'), ("", vec!["--a".to_string()]));
        assert_eq!(extract_flags("a --b", '\\'), ("a --b", vec![]));
    }

    #[test]
    fn words() {
        assert_eq!(
            parse_words(r#"a "b c" d\ e 'f\'"#, '\\'),
            ["a", "\"b c\"", "d\\ e", "'f\\'"]
        );
        assert_eq!(parse_words("x=\"\"", '\\'), ["x=\"\""]);
    }

    #[test]
    fn json_detection() {
        assert_eq!(
            parse_json("[\"a\", \"b\"]").unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_json("[\"a\" \"b\"]").unwrap(), None);
        assert_eq!(parse_json("['a']").unwrap(), None);
        assert_eq!(parse_json("echo [1]").unwrap(), None);
        assert_eq!(parse_json("[]").unwrap(), Some(vec![]));
        assert_eq!(parse_json("[1]").unwrap_err(), NOT_STRINGS);
        assert_eq!(parse_json("[\"a\", null]").unwrap_err(), NOT_STRINGS);
        let deep = "[".repeat(500) + &"]".repeat(500);
        assert_eq!(parse_json(&deep).unwrap_err(), NOT_STRINGS);
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("<<EOF").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.expand, h.chomp, h.fd),
            ("EOF", true, false, 0)
        );
        let h = parse_heredoc("<<-'EOT'").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOT", false, true));
        let h = parse_heredoc("3<<\"E\"").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.fd), ("E", false, 3));
        assert!(parse_heredoc("<<").unwrap().is_none());
        assert!(parse_heredoc("a<<EOF").unwrap().is_none());
        assert!(parse_heredoc("<<<EOF").unwrap().is_none());
    }
}
