//! Lexer and parser for Go's text/template syntax, producing a small AST.

use std::fmt;

use super::FormatError;
use super::gofmt::quote;

// ---------------------------------------------------------------- lexer --

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text,
    LeftDelim,
    RightDelim,
    Space,
    Field,
    Dot,
    Variable,
    Ident,
    Keyword,
    Bool,
    Nil,
    Str,
    RawStr,
    Number,
    CharConst,
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Char,
    Error,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
    /// Source text of the token (the message, for `Tok::Error`).
    val: String,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tok {
            Tok::Eof => f.write_str("EOF"),
            Tok::Error => f.write_str(&self.val),
            Tok::Keyword => write!(f, "<{}>", self.val),
            _ if self.val.chars().count() > 10 => {
                let head: String = self.val.chars().take(10).collect();
                write!(f, "{}...", quote(&head))
            }
            _ => f.write_str(&quote(&self.val)),
        }
    }
}

const KEYWORDS: &[&str] = &[
    "if", "else", "end", "range", "with", "break", "continue", "define", "template", "block",
];

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    toks: Vec<Token>,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn emit(&mut self, tok: Tok, start: usize) {
        let val = self.src[start..self.pos].to_string();
        self.toks.push(Token {
            tok,
            pos: start,
            val,
        });
    }

    fn error(&mut self, msg: impl Into<String>) {
        self.toks.push(Token {
            tok: Tok::Error,
            pos: self.pos,
            val: msg.into(),
        });
    }

    /// Is the input at `at` a right delimiter, and does it carry a trim marker?
    fn right_delim(&self, at: usize) -> Option<bool> {
        let s = &self.src[at..];
        let b = s.as_bytes();
        if b.len() >= 4 && is_space(b[0] as char) && b[1] == b'-' && s[2..].starts_with("}}") {
            Some(true)
        } else if s.starts_with("}}") {
            Some(false)
        } else {
            None
        }
    }

    fn at_terminator(&self) -> bool {
        match self.peek() {
            None => true,
            Some(c) => is_space(c) || ".,|:()".contains(c) || self.rest().starts_with("}}"),
        }
    }

    fn run(mut self) -> Vec<Token> {
        loop {
            let Some(i) = self.rest().find("{{") else {
                if self.pos < self.src.len() {
                    let start = self.pos;
                    self.pos = self.src.len();
                    self.emit(Tok::Text, start);
                }
                let pos = self.pos;
                self.toks.push(Token {
                    tok: Tok::Eof,
                    pos,
                    val: String::new(),
                });
                return self.toks;
            };
            let delim = self.pos + i;
            let mut after = delim + 2;
            let trim = self.src[after..].len() >= 2
                && self.src[after..].starts_with('-')
                && is_space(self.src.as_bytes()[after + 1] as char);
            let text = &self.src[self.pos..delim];
            let text = if trim {
                text.trim_end_matches(is_space)
            } else {
                text
            };
            if !text.is_empty() {
                let start = self.pos;
                self.toks.push(Token {
                    tok: Tok::Text,
                    pos: start,
                    val: text.to_string(),
                });
            }
            if trim {
                after += 2;
            }
            if self.src[after..].starts_with("/*") {
                let Some(end) = self.src[after + 2..].find("*/") else {
                    self.pos = delim;
                    self.error("unclosed comment");
                    return self.toks;
                };
                let end = after + 2 + end + 2;
                match self.right_delim(end) {
                    Some(trim) => self.pos = self.after_right_delim(end, trim),
                    None => {
                        self.pos = end;
                        self.error("comment ends before closing delimiter");
                        return self.toks;
                    }
                }
                continue;
            }
            self.toks.push(Token {
                tok: Tok::LeftDelim,
                pos: delim,
                val: "{{".into(),
            });
            self.pos = after;
            if !self.inside_action() {
                return self.toks;
            }
        }
    }

    fn after_right_delim(&self, at: usize, trim: bool) -> usize {
        if trim {
            let end = at + 4;
            end + (self.src[end..].len() - self.src[end..].trim_start_matches(is_space).len())
        } else {
            at + 2
        }
    }

    /// Lexes one action up to and including its right delimiter. Returns false on error.
    fn inside_action(&mut self) -> bool {
        let mut parens = 0usize;
        loop {
            if let Some(trim) = self.right_delim(self.pos) {
                if parens > 0 {
                    self.error("unclosed left paren");
                    return false;
                }
                let start = self.pos + if trim { 2 } else { 0 };
                self.toks.push(Token {
                    tok: Tok::RightDelim,
                    pos: start,
                    val: "}}".into(),
                });
                self.pos = self.after_right_delim(self.pos, trim);
                return true;
            }
            let start = self.pos;
            let Some(c) = self.peek() else {
                self.error("unclosed action");
                return false;
            };
            self.pos += c.len_utf8();
            let ok = match c {
                c if is_space(c) => {
                    while self.peek().is_some_and(is_space) && self.right_delim(self.pos).is_none()
                    {
                        self.pos += 1;
                    }
                    self.emit(Tok::Space, start);
                    true
                }
                '=' => {
                    self.emit(Tok::Assign, start);
                    true
                }
                ':' => {
                    if self.peek() != Some('=') {
                        self.error("expected :=");
                        return false;
                    }
                    self.pos += 1;
                    self.emit(Tok::Declare, start);
                    true
                }
                '|' => {
                    self.emit(Tok::Pipe, start);
                    true
                }
                '"' => self.quoted(start, '"', Tok::Str, "unterminated quoted string"),
                '\'' => self.quoted(
                    start,
                    '\'',
                    Tok::CharConst,
                    "unterminated character constant",
                ),
                '`' => match self.rest().find('`') {
                    Some(n) => {
                        self.pos += n + 1;
                        self.emit(Tok::RawStr, start);
                        true
                    }
                    None => {
                        self.error("unterminated raw quoted string");
                        false
                    }
                },
                '$' => self.field_or_var(start, Tok::Variable),
                '.' if !self.peek().is_some_and(|c| c.is_ascii_digit()) => {
                    self.field_or_var(start, Tok::Field)
                }
                '.' | '+' | '-' | '0'..='9' => self.number(start),
                '(' => {
                    parens += 1;
                    self.emit(Tok::LParen, start);
                    true
                }
                ')' => {
                    if parens == 0 {
                        self.error("unexpected right paren");
                        return false;
                    }
                    parens -= 1;
                    self.emit(Tok::RParen, start);
                    true
                }
                c if is_alnum(c) => {
                    while self.peek().is_some_and(is_alnum) {
                        self.pos += self.peek().map_or(0, char::len_utf8);
                    }
                    if !self.at_terminator() {
                        return self.bad_char();
                    }
                    let word = &self.src[start..self.pos];
                    let tok = match word {
                        "true" | "false" => Tok::Bool,
                        "nil" => Tok::Nil,
                        w if KEYWORDS.contains(&w) => Tok::Keyword,
                        _ => Tok::Ident,
                    };
                    self.emit(tok, start);
                    true
                }
                c if c.is_ascii() && !c.is_ascii_control() => {
                    self.emit(Tok::Char, start);
                    true
                }
                c => {
                    self.error(format!(
                        "unrecognized character in action: {}",
                        unicode_name(c)
                    ));
                    false
                }
            };
            if !ok {
                return false;
            }
        }
    }

    fn bad_char(&mut self) -> bool {
        let c = self.peek().unwrap_or('\0');
        self.error(format!("bad character {}", unicode_name(c)));
        false
    }

    fn quoted(&mut self, start: usize, close: char, tok: Tok, msg: &str) -> bool {
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\n')) | None => break,
                    _ => {}
                },
                '\n' => break,
                c if c == close => {
                    self.pos += i + 1;
                    self.emit(tok, start);
                    return true;
                }
                _ => {}
            }
        }
        self.error(msg);
        false
    }

    fn field_or_var(&mut self, start: usize, tok: Tok) -> bool {
        if self.at_terminator() {
            self.emit(
                if tok == Tok::Variable {
                    Tok::Variable
                } else {
                    Tok::Dot
                },
                start,
            );
            return true;
        }
        while self.peek().is_some_and(is_alnum) {
            self.pos += self.peek().map_or(0, char::len_utf8);
        }
        if !self.at_terminator() {
            return self.bad_char();
        }
        self.emit(tok, start);
        true
    }

    fn number(&mut self, start: usize) -> bool {
        while self.peek().is_some_and(|c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '+' || c == '-'
        }) {
            // Signs are only valid right after an exponent marker (or at the start).
            let c = self.peek().unwrap_or(' ');
            if (c == '+' || c == '-') && !self.src[..self.pos].ends_with(['e', 'E', 'p', 'P']) {
                break;
            }
            self.pos += 1;
        }
        let text = &self.src[start..self.pos];
        if parse_number(text).is_none() || !self.at_terminator() {
            self.error(format!("bad number syntax: {}", quote(text)));
            return false;
        }
        self.emit(Tok::Number, start);
        true
    }
}

fn unicode_name(c: char) -> String {
    format!("U+{:04X} '{}'", c as u32, c)
}

/// Parses a Go number literal into an integer or float JSON number.
fn parse_number(text: &str) -> Option<serde_json::Number> {
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let clean = body.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let radix = |p: &str, r| {
        lower
            .strip_prefix(p)
            .and_then(|d| i128::from_str_radix(d, r).ok())
    };
    let int = radix("0x", 16)
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
        .or_else(|| {
            if lower.len() > 1
                && lower.starts_with('0')
                && lower.bytes().all(|b| b.is_ascii_digit())
            {
                i128::from_str_radix(&lower[1..], 8).ok()
            } else if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
                lower.parse().ok()
            } else {
                None
            }
        });
    if let Some(i) = int {
        let i = if neg { -i } else { i };
        return i64::try_from(i)
            .map(Into::into)
            .ok()
            .or_else(|| u64::try_from(i).ok().map(Into::into));
    }
    if lower.starts_with("0x") || !lower.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let f: f64 = lower.parse().ok()?;
    serde_json::Number::from_f64(if neg { -f } else { f })
}

/// Go's strconv.Unquote for "..." and '...' literals (raw strings are handled by the caller).
fn unquote(lit: &str) -> Option<String> {
    let inner = &lit[1..lit.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next()?;
        let hex = |chars: &mut std::str::Chars, n| -> Option<u32> {
            let s: String = chars.take(n).collect();
            if s.len() == n {
                u32::from_str_radix(&s, 16).ok()
            } else {
                None
            }
        };
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\\' | '"' | '\'' => out.push(e),
            'x' => out.push(char::from_u32(hex(&mut chars, 2)?)?),
            'u' => out.push(char::from_u32(hex(&mut chars, 4)?)?),
            'U' => out.push(char::from_u32(hex(&mut chars, 8)?)?),
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let v = u32::from_str_radix(&format!("{e}{rest}"), 8).ok()?;
                out.push(char::from_u32(v).filter(|_| v < 256 && rest.len() == 2)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

// ------------------------------------------------------------------ AST --

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    Action(Pipe),
    If(Control),
    Range(Control),
    With(Control),
    Break,
    Continue,
}

#[derive(Debug, Clone)]
pub(crate) struct Control {
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Vec<Node>,
}

#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    pub decl: Vec<String>,
    pub is_assign: bool,
    pub cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    pub args: Vec<Term>,
}

#[derive(Debug, Clone)]
pub(crate) struct Term {
    pub pos: usize,
    pub kind: TermKind,
}

#[derive(Debug, Clone)]
pub(crate) enum TermKind {
    Dot,
    Nil,
    /// `.A.B`
    Field(Vec<String>),
    /// `$x.A.B` (`$` alone is the root data).
    Var(String, Vec<String>),
    /// A function name.
    Ident(String),
    /// `(pipeline).A.B`
    Chain(Box<Pipe>, Vec<String>),
    /// A literal: string, number or bool, with its source text.
    Lit(serde_json::Value, String),
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            write!(
                f,
                "{} {}= ",
                self.decl.join(", "),
                if self.is_assign { "" } else { ":" }
            )?;
        }
        for (i, cmd) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            for (j, arg) in cmd.args.iter().enumerate() {
                if j > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{arg}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = |f: &mut fmt::Formatter<'_>, names: &[String]| {
            names.iter().try_for_each(|n| write!(f, ".{n}"))
        };
        match &self.kind {
            TermKind::Dot => f.write_str("."),
            TermKind::Nil => f.write_str("nil"),
            TermKind::Field(names) => fields(f, names),
            TermKind::Var(name, names) => {
                f.write_str(name)?;
                fields(f, names)
            }
            TermKind::Ident(name) => f.write_str(name),
            TermKind::Chain(pipe, names) => {
                write!(f, "({pipe})")?;
                fields(f, names)
            }
            TermKind::Lit(_, src) => f.write_str(src),
        }
    }
}

// --------------------------------------------------------------- parser --

/// Names of the functions a template may call (Go builtins plus docker's).
pub(crate) const FUNCS: &[&str] = &[
    "and", "or", "not", "len", "index", "slice", "eq", "ne", "lt", "le", "gt", "ge", "print",
    "printf", "println", "html", "urlquery", "json", "split", "join", "title", "lower", "upper",
    "pad", "truncate",
];

const MAX_DEPTH: usize = 100;

enum Stop {
    Eof,
    End,
    /// `{{else}}`; `Some(keyword)` for `{{else if ...` / `{{else with ...`.
    Else(Option<String>),
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
}

type PResult<T> = Result<T, FormatError>;

pub(crate) fn parse(src: &str) -> PResult<Vec<Node>> {
    let toks = Lexer {
        src,
        pos: 0,
        toks: Vec::new(),
    }
    .run();
    let mut p = Parser {
        src,
        toks,
        i: 0,
        vars: vec!["$".into()],
        range_depth: 0,
        depth: 0,
    };
    let (list, end) = p.list()?;
    match end {
        Stop::Eof => Ok(list),
        Stop::End => Err(p.error_at(p.prev_pos(), "unexpected {{end}}")),
        Stop::Else(_) => Err(p.error_at(p.prev_pos(), "unexpected {{else}}")),
    }
}

impl Parser<'_> {
    fn error_at(&self, pos: usize, msg: impl fmt::Display) -> FormatError {
        let line = 1 + self.src[..pos.min(self.src.len())].matches('\n').count();
        FormatError::Parse(format!("template: :{line}: {msg}"))
    }

    fn prev_pos(&self) -> usize {
        self.toks[self.i.saturating_sub(1)].pos
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.i.min(self.toks.len() - 1)].clone();
        self.i += 1;
        t
    }

    fn peek(&self) -> &Token {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn skip_space(&mut self) {
        while self.peek().tok == Tok::Space {
            self.i += 1;
        }
    }

    fn next_non_space(&mut self) -> Token {
        self.skip_space();
        self.next()
    }

    fn peek_non_space(&mut self) -> &Token {
        self.skip_space();
        self.peek()
    }

    fn unexpected(&self, t: &Token, context: &str) -> FormatError {
        if t.tok == Tok::Error {
            self.error_at(t.pos, t)
        } else {
            self.error_at(t.pos, format!("unexpected {t} in {context}"))
        }
    }

    fn expect_right(&mut self, context: &str) -> PResult<()> {
        let t = self.next_non_space();
        if t.tok == Tok::RightDelim {
            Ok(())
        } else {
            Err(self.unexpected(&t, context))
        }
    }

    fn list(&mut self) -> PResult<(Vec<Node>, Stop)> {
        let mut nodes = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Eof => return Ok((nodes, Stop::Eof)),
                Tok::Text => nodes.push(Node::Text(t.val)),
                Tok::LeftDelim => {
                    if let Some(end) = self.action(&mut nodes)? {
                        return Ok((nodes, end));
                    }
                }
                _ => return Err(self.unexpected(&t, "input")),
            }
        }
    }

    /// Parses the inside of `{{ ... }}`; returns a `Stop` for end/else.
    fn action(&mut self, nodes: &mut Vec<Node>) -> PResult<Option<Stop>> {
        let t = self.peek_non_space().clone();
        if t.tok != Tok::Keyword {
            let pipe = self.pipeline("command", Tok::RightDelim)?;
            nodes.push(Node::Action(pipe));
            return Ok(None);
        }
        self.i += 1;
        match t.val.as_str() {
            "end" => {
                self.expect_right("end")?;
                Ok(Some(Stop::End))
            }
            "else" => {
                let p = self.peek_non_space();
                if p.tok == Tok::Keyword && (p.val == "if" || p.val == "with") {
                    let kw = p.val.clone();
                    self.i += 1;
                    return Ok(Some(Stop::Else(Some(kw))));
                }
                self.expect_right("else")?;
                Ok(Some(Stop::Else(None)))
            }
            "if" | "range" | "with" => {
                nodes.push(self.control(&t.val)?);
                Ok(None)
            }
            "break" | "continue" => {
                self.expect_right(&format!("{{{{{}}}}}", t.val))?;
                if self.range_depth == 0 {
                    return Err(
                        self.error_at(t.pos, format!("{{{{{}}}}} outside {{{{range}}}}", t.val))
                    );
                }
                nodes.push(if t.val == "break" {
                    Node::Break
                } else {
                    Node::Continue
                });
                Ok(None)
            }
            kw => Err(self.error_at(t.pos, format!("{{{{{kw}}}}} is not supported"))),
        }
    }

    fn control(&mut self, context: &str) -> PResult<Node> {
        let nvars = self.vars.len();
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, end) = self.list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let else_list = match end {
            Stop::Eof => return Err(self.error_at(self.src.len(), "unexpected EOF")),
            Stop::End => Vec::new(),
            Stop::Else(Some(kw)) if kw == context => vec![self.control(context)?],
            Stop::Else(Some(kw)) => {
                return Err(self.error_at(self.prev_pos(), format!("unexpected <{kw}> in else")));
            }
            Stop::Else(None) => match self.list()? {
                (list, Stop::End) => list,
                (_, Stop::Eof) => return Err(self.error_at(self.src.len(), "unexpected EOF")),
                (_, Stop::Else(_)) => {
                    return Err(self.error_at(self.prev_pos(), "expected end; found {{else}}"));
                }
            },
        };
        self.vars.truncate(nvars);
        let c = Control {
            pipe,
            list,
            else_list,
        };
        Ok(match context {
            "if" => Node::If(c),
            "range" => Node::Range(c),
            _ => Node::With(c),
        })
    }

    fn pipeline(&mut self, context: &str, end: Tok) -> PResult<Pipe> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(self.peek().pos, "max expression depth exceeded"));
        }
        let mut pipe = Pipe {
            decl: Vec::new(),
            is_assign: false,
            cmds: Vec::new(),
        };
        // Declarations: `$x :=`, `$x =`, or `$k, $v :=` in range.
        let save = self.i;
        loop {
            let v = self.peek_non_space().clone();
            if v.tok != Tok::Variable {
                break;
            }
            self.i += 1;
            let next = self.peek_non_space().clone();
            match next.tok {
                Tok::Declare | Tok::Assign => {
                    self.i += 1;
                    pipe.is_assign = next.tok == Tok::Assign;
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                    break;
                }
                Tok::Char if next.val == "," => {
                    self.i += 1;
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                    if context == "range" && pipe.decl.len() < 2 {
                        if self.peek_non_space().tok == Tok::Variable {
                            continue;
                        }
                        return Err(self.error_at(next.pos, "range can only initialize variables"));
                    }
                    return Err(
                        self.error_at(next.pos, format!("too many declarations in {context}"))
                    );
                }
                _ => {
                    if !pipe.decl.is_empty() {
                        return Err(self.unexpected(&next, context));
                    }
                    self.i = save;
                    break;
                }
            }
        }
        loop {
            let t = self.peek_non_space().clone();
            match t.tok {
                _ if t.tok == end => {
                    self.i += 1;
                    break;
                }
                Tok::Bool
                | Tok::CharConst
                | Tok::Dot
                | Tok::Field
                | Tok::Ident
                | Tok::Number
                | Tok::Nil
                | Tok::RawStr
                | Tok::Str
                | Tok::Variable
                | Tok::LParen => pipe.cmds.push(self.command()?),
                _ => {
                    self.i += 1;
                    return Err(self.unexpected(&t, context));
                }
            }
        }
        if pipe.cmds.is_empty() {
            return Err(self.error_at(self.prev_pos(), "missing command"));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args[0].kind,
                TermKind::Lit(..) | TermKind::Dot | TermKind::Nil
            ) {
                let msg = format!("non executable command in pipeline stage {}", i + 1);
                return Err(self.error_at(c.args[0].pos, msg));
            }
        }
        self.depth -= 1;
        Ok(pipe)
    }

    fn command(&mut self) -> PResult<Cmd> {
        let mut args = Vec::new();
        loop {
            self.skip_space();
            if let Some(term) = self.operand()? {
                args.push(term);
            }
            let t = self.next();
            match t.tok {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RParen => self.i -= 1,
                Tok::Pipe => {}
                _ => return Err(self.unexpected(&t, "operand")),
            }
            break;
        }
        if args.is_empty() {
            return Err(self.error_at(self.prev_pos(), "empty command"));
        }
        Ok(Cmd { args })
    }

    fn operand(&mut self) -> PResult<Option<Term>> {
        let Some(mut term) = self.term()? else {
            return Ok(None);
        };
        if self.peek().tok == Tok::Field {
            let mut chain = Vec::new();
            while self.peek().tok == Tok::Field {
                chain.push(self.next().val[1..].to_string());
            }
            term.kind = match std::mem::replace(&mut term.kind, TermKind::Nil) {
                TermKind::Field(mut names) => {
                    names.extend(chain);
                    TermKind::Field(names)
                }
                TermKind::Var(name, mut names) => {
                    names.extend(chain);
                    TermKind::Var(name, names)
                }
                TermKind::Chain(pipe, mut names) => {
                    names.extend(chain);
                    TermKind::Chain(pipe, names)
                }
                TermKind::Ident(name) => {
                    let call = Term {
                        pos: term.pos,
                        kind: TermKind::Ident(name),
                    };
                    let pipe = Pipe {
                        decl: Vec::new(),
                        is_assign: false,
                        cmds: vec![Cmd { args: vec![call] }],
                    };
                    TermKind::Chain(Box::new(pipe), chain)
                }
                kind => {
                    let text = Term {
                        pos: term.pos,
                        kind,
                    }
                    .to_string();
                    let msg = format!("unexpected . after term {}", quote(&text));
                    return Err(self.error_at(term.pos, msg));
                }
            };
        }
        Ok(Some(term))
    }

    fn term(&mut self) -> PResult<Option<Term>> {
        let t = self.next_non_space();
        let kind =
            match t.tok {
                Tok::Ident => {
                    if !FUNCS.contains(&t.val.as_str()) {
                        return Err(
                            self.error_at(t.pos, format!("function {} not defined", quote(&t.val)))
                        );
                    }
                    TermKind::Ident(t.val.clone())
                }
                Tok::Dot => TermKind::Dot,
                Tok::Nil => TermKind::Nil,
                Tok::Variable => {
                    if !self.vars.contains(&t.val) {
                        return Err(
                            self.error_at(t.pos, format!("undefined variable {}", quote(&t.val)))
                        );
                    }
                    TermKind::Var(t.val.clone(), Vec::new())
                }
                Tok::Field => TermKind::Field(vec![t.val[1..].to_string()]),
                Tok::Bool => TermKind::Lit((t.val == "true").into(), t.val.clone()),
                Tok::Number => match parse_number(&t.val) {
                    Some(n) => TermKind::Lit(n.into(), t.val.clone()),
                    None => {
                        return Err(self
                            .error_at(t.pos, format!("illegal number syntax: {}", quote(&t.val))));
                    }
                },
                Tok::CharConst => match unquote(&t.val).filter(|s| s.chars().count() == 1) {
                    Some(s) => TermKind::Lit(
                        (s.chars().next().unwrap_or('\0') as i64).into(),
                        t.val.clone(),
                    ),
                    None => {
                        return Err(self
                            .error_at(t.pos, format!("malformed character constant: {}", t.val)));
                    }
                },
                Tok::Str => match unquote(&t.val) {
                    Some(s) => TermKind::Lit(s.into(), t.val.clone()),
                    None => return Err(self.error_at(t.pos, "invalid syntax")),
                },
                Tok::RawStr => {
                    let s = t.val[1..t.val.len() - 1].replace('\r', "");
                    TermKind::Lit(s.into(), t.val.clone())
                }
                Tok::LParen => TermKind::Chain(
                    Box::new(self.pipeline("parenthesized pipeline", Tok::RParen)?),
                    Vec::new(),
                ),
                _ => {
                    self.i -= 1;
                    return Ok(None);
                }
            };
        Ok(Some(Term { pos: t.pos, kind }))
    }
}
