//! Evaluation of a parsed template against a `serde_json::Value`, with Go's builtin
//! functions and docker's template functions.

use serde_json::{Number, Value};

use super::FormatError;
use super::gofmt::{go_type, quote, sorted, sprint, sprintf, sprintln, to_go_json, to_v, write_v};
use super::parse::{Cmd, Control, Node, Pipe, Term, TermKind};

/// An evaluated value; `None` is Go's invalid `reflect.Value` (a missing map key), printed
/// as `<no value>`.
type Val = Option<Value>;

/// Go's truthiness: false, 0, "", nil and empty collections are false.
pub(crate) fn truth(v: &Val) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
    }
}

/// A failure during execution: the message and the node it happened at.
struct ExecError {
    pos: usize,
    at: String,
    msg: String,
}

type EResult<T> = Result<T, ExecError>;

enum Flow {
    Normal,
    Break,
    Continue,
}

pub(crate) struct State<'a> {
    pub src: &'a str,
    pub root: &'a Value,
    pub missing_key_error: bool,
    /// Docker's `HeaderFunctions`: json, split, join, title, lower, upper and truncate
    /// return their first argument unchanged.
    pub header: bool,
    /// `{{json .}}` on a list row marshals it as docker's row contexts do: `json.Marshal`
    /// (HTML-escaped) of the argument-less fields, so object-valued fields are left out.
    pub row_json: bool,
    pub out: String,
    vars: Vec<(String, Val)>,
}

impl<'a> State<'a> {
    pub fn new(src: &'a str, root: &'a Value, missing_key_error: bool, header: bool) -> Self {
        State {
            src,
            root,
            missing_key_error,
            header,
            row_json: false,
            out: String::new(),
            vars: Vec::new(),
        }
    }

    /// Runs the template; on error the output so far stays in `self.out`.
    pub fn run(&mut self, nodes: &[Node]) -> Result<(), FormatError> {
        let root = self.root;
        self.walk(root, nodes).map(|_| ()).map_err(|e| {
            let before = &self.src[..e.pos.min(self.src.len())];
            let line = 1 + before.matches('\n').count();
            let col = e.pos - before.rfind('\n').map_or(0, |i| i + 1);
            FormatError::Exec(format!(
                "template: :{line}:{col}: executing \"\" at <{}>: {}",
                e.at, e.msg
            ))
        })
    }

    fn walk(&mut self, dot: &Value, nodes: &[Node]) -> EResult<Flow> {
        for node in nodes {
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        match &v {
                            None => self.out.push_str("<no value>"),
                            Some(v) => write_v(&mut self.out, v),
                        }
                    }
                }
                Node::If(c) | Node::With(c) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(dot, &c.pipe)?;
                    let flow = if !truth(&v) {
                        self.walk(dot, &c.else_list)?
                    } else if let (Node::With(_), Some(v)) = (node, v) {
                        self.walk(&v, &c.list)?
                    } else {
                        self.walk(dot, &c.list)?
                    };
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range(c) => self.range(dot, c)?,
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn range(&mut self, dot: &Value, c: &Control) -> EResult<()> {
        let mark = self.vars.len();
        let v = self.eval_pipe(dot, &c.pipe)?;
        let items: Vec<(Value, Value)> = match &v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, e)| (i.into(), e))
                .collect(),
            Some(Value::Object(m)) => sorted(m)
                .into_iter()
                .map(|(k, e)| (k.clone().into(), e.clone()))
                .collect(),
            Some(Value::Number(n)) if n.as_i64().is_some() => (0..n.as_i64().unwrap_or(0))
                .map(|i| (i.into(), i.into()))
                .collect(),
            Some(v) => {
                let at = c.pipe.to_string();
                return Err(ExecError {
                    pos: pipe_pos(&c.pipe),
                    at,
                    msg: format!("range can't iterate over {}", to_v(v)),
                });
            }
        };
        if items.is_empty() {
            self.walk(dot, &c.else_list)?;
        }
        for (key, elem) in items {
            self.vars.truncate(mark);
            match c.pipe.decl.as_slice() {
                [] => {}
                [v] => self.declare(&c.pipe, v, Some(elem.clone()))?,
                [k, v, ..] => {
                    self.declare(&c.pipe, k, Some(key))?;
                    self.declare(&c.pipe, v, Some(elem.clone()))?;
                }
            }
            if let Flow::Break = self.walk(&elem, &c.list)? {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn declare(&mut self, pipe: &Pipe, name: &str, v: Val) -> EResult<()> {
        if !pipe.is_assign {
            self.vars.push((name.to_string(), v));
            return Ok(());
        }
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => {
                let msg = format!("undefined variable: {name}");
                return Err(ExecError {
                    pos: pipe_pos(pipe),
                    at: pipe.to_string(),
                    msg,
                });
            }
        }
        Ok(())
    }

    /// Evaluates a pipeline and binds its declared variables.
    fn pipeline(&mut self, dot: &Value, pipe: &Pipe) -> EResult<Val> {
        let v = self.eval_pipe(dot, pipe)?;
        for name in &pipe.decl {
            self.declare(pipe, name, v.clone())?;
        }
        Ok(v)
    }

    fn eval_pipe(&mut self, dot: &Value, pipe: &Pipe) -> EResult<Val> {
        let mut v: Option<Val> = None;
        for cmd in &pipe.cmds {
            v = Some(self.command(dot, cmd, v)?);
        }
        Ok(v.flatten())
    }

    fn command(&mut self, dot: &Value, cmd: &Cmd, fin: Option<Val>) -> EResult<Val> {
        let first = &cmd.args[0];
        let rest = &cmd.args[1..];
        match &first.kind {
            TermKind::Ident(name) => self.call(dot, first, name, rest, fin),
            TermKind::Field(names) | TermKind::Var(_, names) | TermKind::Chain(_, names)
                if !names.is_empty() =>
            {
                let v = self.operand(dot, first)?;
                self.method(dot, first, v, rest, fin)
            }
            _ if !rest.is_empty() || fin.is_some() => Err(err(
                first,
                format!("can't give argument to non-function {first}"),
            )),
            TermKind::Nil => Err(err(first, "nil is not a command")),
            _ => self.operand(dot, first),
        }
    }

    /// Evaluates one operand.
    fn operand(&mut self, dot: &Value, term: &Term) -> EResult<Val> {
        match &term.kind {
            TermKind::Dot => Ok(Some(dot.clone())),
            TermKind::Nil => Ok(Some(Value::Null)),
            TermKind::Lit(v, _) => Ok(Some(v.clone())),
            TermKind::Ident(name) => self.call(dot, term, name, &[], None),
            TermKind::Field(names) => Ok(self.fields(term, Some(dot), names)?.cloned()),
            TermKind::Var(name, names) => {
                let recv = if name == "$" {
                    Some(self.root)
                } else {
                    match self.vars.iter().rev().find(|(n, _)| n == name) {
                        Some((_, v)) => v.as_ref(),
                        None => return Err(err(term, format!("undefined variable: {name}"))),
                    }
                };
                Ok(self.fields(term, recv, names)?.cloned())
            }
            TermKind::Chain(pipe, names) => {
                let recv = self.eval_pipe(dot, pipe)?;
                Ok(self.fields(term, recv.as_ref(), names)?.cloned())
            }
        }
    }

    /// Walks `.A.B.C` from `cur` as Go does on maps.
    fn fields<'v>(
        &self,
        term: &Term,
        mut cur: Option<&'v Value>,
        names: &[String],
    ) -> EResult<Option<&'v Value>> {
        for name in names {
            cur = match cur {
                None if self.missing_key_error => {
                    return Err(err(
                        term,
                        format!("nil data; no entry for key {}", quote(name)),
                    ));
                }
                None => None,
                Some(Value::Object(m)) => match m.get(name) {
                    None if self.missing_key_error => {
                        return Err(err(
                            term,
                            format!("map has no entry for key {}", quote(name)),
                        ));
                    }
                    v => v,
                },
                Some(Value::Null) if self.missing_key_error => {
                    return Err(err(
                        term,
                        format!("nil pointer evaluating interface {{}}.{name}"),
                    ));
                }
                Some(Value::Null) => None,
                Some(v) => {
                    let msg = format!("can't evaluate field {name} in type {}", go_type(v));
                    return Err(err(term, msg));
                }
            };
        }
        Ok(cur)
    }

    /// A field given arguments acts like a method: an object value is indexed by them
    /// (docker's `{{.Label "key"}}`), a missing key giving "".
    fn method(
        &mut self,
        dot: &Value,
        term: &Term,
        cur: Val,
        args: &[Term],
        fin: Option<Val>,
    ) -> EResult<Val> {
        if args.is_empty() && fin.is_none() {
            return Ok(cur);
        }
        let Some(Value::Object(m)) = cur else {
            let name = term.to_string();
            let name = name.rsplit('.').next().unwrap_or_default();
            return Err(err(
                term,
                format!("{name} is not a method but has arguments"),
            ));
        };
        let mut keys = Vec::new();
        for a in args {
            keys.push(self.operand(dot, a)?);
        }
        keys.extend(fin);
        let mut v = Value::Object(m);
        for k in keys {
            v = match (v, k) {
                (Value::Object(mut m), Some(Value::String(k))) => {
                    m.remove(&k).unwrap_or_else(|| "".into())
                }
                _ => "".into(),
            };
        }
        Ok(Some(v))
    }

    fn call(
        &mut self,
        dot: &Value,
        at: &Term,
        name: &str,
        args: &[Term],
        fin: Option<Val>,
    ) -> EResult<Val> {
        if name == "and" || name == "or" {
            let total = args.len() + fin.is_some() as usize;
            if total == 0 {
                return Err(err(
                    at,
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                ));
            }
            let mut last = None;
            for a in args {
                let v = self.operand(dot, a)?;
                if truth(&v) == (name == "or") {
                    return Ok(v);
                }
                last = v;
            }
            return Ok(fin.unwrap_or(last));
        }
        let mut vals = Vec::with_capacity(args.len() + 1);
        for a in args {
            vals.push(self.operand(dot, a)?);
        }
        vals.extend(fin);
        if let (true, false, "json", [Some(v @ Value::Object(m))]) =
            (self.row_json, self.header, name, vals.as_slice())
            && v == self.root
        {
            let fields = m.iter().filter(|(_, v)| !v.is_object());
            let row = Value::Object(fields.map(|(k, v)| (k.clone(), v.clone())).collect());
            return Ok(Some(to_go_json(&row, true).into()));
        }
        builtin(name, vals, self.header).map_err(|msg| {
            let mut e = err(at, msg);
            if e.msg.starts_with("error calling") {
                // Go reports failures inside a call at the whole command.
                e.at = std::iter::once(&e.at)
                    .chain(&args.iter().map(ToString::to_string).collect::<Vec<_>>())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            e
        })
    }
}

fn err(term: &Term, msg: impl Into<String>) -> ExecError {
    ExecError {
        pos: term.pos,
        at: term.to_string(),
        msg: msg.into(),
    }
}

fn pipe_pos(pipe: &Pipe) -> usize {
    pipe.cmds.first().map_or(0, |c| c.args[0].pos)
}

fn arity(name: &str, args: &[Val], want: usize) -> Result<(), String> {
    if args.len() == want {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ))
    }
}

fn want_str(v: &Val) -> Result<String, String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err("invalid value; expected string".into()),
        Some(v) => Err(format!(
            "wrong type for value; expected string; got {}",
            go_type(v)
        )),
    }
}

fn want_int(v: &Val) -> Result<i64, String> {
    match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| {
                format!(
                    "wrong type for value; expected int; got {}",
                    go_type(&Value::Number(n.clone()))
                )
            }),
        None | Some(Value::Null) => Err("invalid value; expected int".into()),
        Some(v) => Err(format!(
            "wrong type for value; expected int; got {}",
            go_type(v)
        )),
    }
}

fn index_arg(v: &Val, len: usize) -> Result<usize, String> {
    let i = match v {
        None | Some(Value::Null) => return Err("cannot index slice/array with nil".into()),
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
        Some(v) => return Err(format!("cannot index slice/array with type {}", go_type(v))),
    };
    if i < 0 || i as usize >= len {
        return Err(format!("index out of range: {i}"));
    }
    Ok(i as usize)
}

/// Go's `index`. A missing key in a map of strings (or an empty/null map) yields "" as a
/// typed `map[string]string` would; other missing keys yield no value.
fn index(item: Val, keys: &[Val]) -> Result<Val, String> {
    let mut cur = item.ok_or("index of untyped nil")?;
    for k in keys {
        cur = match cur {
            Value::Array(mut a) => {
                let i = index_arg(k, a.len())?;
                a.swap_remove(i)
            }
            Value::String(s) => {
                let i = index_arg(k, s.len())?;
                s.as_bytes()[i].into()
            }
            Value::Object(mut m) => {
                let key = match k {
                    Some(Value::String(s)) => s,
                    Some(v) => {
                        return Err(format!("value has type {}; should be string", go_type(v)));
                    }
                    None => return Err("value is nil; should be of type string".into()),
                };
                match m.remove(key) {
                    Some(v) => v,
                    None if m.values().all(Value::is_string) => "".into(),
                    None => return Ok(None),
                }
            }
            Value::Null if matches!(k, Some(Value::String(_))) => "".into(),
            Value::Null => return Err("index of nil pointer".into()),
            v => return Err(format!("can't index item of type {}", go_type(&v))),
        };
    }
    Ok(Some(cur))
}

fn slice(item: Val, idx: &[Val]) -> Result<Val, String> {
    let len = match &item {
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(a)) => a.len(),
        None | Some(Value::Null) => return Err("slice of untyped nil".into()),
        Some(v) => return Err(format!("can't slice item of type {}", go_type(v))),
    };
    if idx.len() > 2 {
        return Err("too many slice indexes: 3".into());
    }
    let mut bounds = [0, len];
    for (i, v) in idx.iter().enumerate() {
        let n = want_int(v)?;
        if n < 0 || n as usize > len {
            return Err(format!("index out of range: {n}"));
        }
        bounds[i] = n as usize;
    }
    if bounds[0] > bounds[1] {
        return Err(format!(
            "invalid slice index: {} > {}",
            bounds[0], bounds[1]
        ));
    }
    Ok(Some(match item {
        Some(Value::String(s)) => s
            .get(bounds[0]..bounds[1])
            .ok_or("slice index not on a character boundary")?
            .into(),
        Some(Value::Array(a)) => a[bounds[0]..bounds[1]].to_vec().into(),
        _ => Value::Null,
    }))
}

fn num_cmp(a: &Number, b: &Number) -> Option<std::cmp::Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => match (a.as_u64(), b.as_u64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
        },
    }
}

fn eq(a: &Val, b: &Val) -> Result<bool, String> {
    let null = |v: &Val| matches!(v, None | Some(Value::Null));
    match (a, b) {
        _ if null(a) || null(b) => Ok(null(a) && null(b)),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => Ok(x == y),
        (Some(Value::String(x)), Some(Value::String(y))) => Ok(x == y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            Ok(num_cmp(x, y) == Some(std::cmp::Ordering::Equal))
        }
        (Some(v @ (Value::Array(_) | Value::Object(_))), _)
        | (_, Some(v @ (Value::Array(_) | Value::Object(_)))) => {
            Err(format!("non-comparable type {}: {}", to_v(v), go_type(v)))
        }
        _ => Err("incompatible types for comparison".into()),
    }
}

fn lt(a: &Val, b: &Val) -> Result<bool, String> {
    match (a, b) {
        (Some(Value::String(x)), Some(Value::String(y))) => Ok(x < y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            Ok(num_cmp(x, y) == Some(std::cmp::Ordering::Less))
        }
        (Some(Value::String(_) | Value::Number(_)), Some(Value::String(_) | Value::Number(_))) => {
            Err("incompatible types for comparison".into())
        }
        _ => Err("invalid type for comparison".into()),
    }
}

/// Go's `strings.Title`: upper-cases the first letter of each word.
fn title(s: &str) -> String {
    let mut prev = ' ';
    s.chars()
        .map(|c| {
            let sep = if prev.is_ascii() {
                !(prev.is_ascii_alphanumeric() || prev == '_')
            } else {
                !prev.is_alphanumeric() && prev.is_whitespace()
            };
            prev = c;
            if sep {
                c.to_uppercase().next().unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn builtin(name: &str, mut args: Vec<Val>, header: bool) -> Result<Val, String> {
    let plain = |args: &[Val]| -> Vec<Value> {
        args.iter()
            .map(|a| a.clone().unwrap_or(Value::Null))
            .collect()
    };
    if header {
        let want = match name {
            "json" | "title" | "lower" | "upper" => 1,
            "split" | "join" | "truncate" => 2,
            _ => 0,
        };
        if want > 0 {
            arity(name, &args, want)?;
            return Ok(Some(want_str(&args[0])?.into()));
        }
    }
    let s = |v: String| Ok(Some(Value::String(v)));
    match name {
        "not" => {
            arity(name, &args, 1)?;
            Ok(Some((!truth(&args[0])).into()))
        }
        "len" => {
            arity(name, &args, 1)?;
            match &args[0] {
                Some(Value::String(x)) => Ok(Some(x.len().into())),
                Some(Value::Array(a)) => Ok(Some(a.len().into())),
                Some(Value::Object(m)) => Ok(Some(m.len().into())),
                Some(Value::Null) => Ok(Some(0.into())),
                None => Err("error calling len: len of nil pointer".into()),
                Some(v) => Err(format!("error calling len: len of type {}", go_type(v))),
            }
        }
        "index" => {
            if args.is_empty() {
                return Err("wrong number of args for index: want at least 1 got 0".into());
            }
            let item = args.remove(0);
            index(item, &args).map_err(|e| format!("error calling index: {e}"))
        }
        "slice" => {
            if args.is_empty() {
                return Err("wrong number of args for slice: want at least 1 got 0".into());
            }
            let item = args.remove(0);
            slice(item, &args).map_err(|e| format!("error calling slice: {e}"))
        }
        "eq" => {
            if args.len() < 2 {
                return Err("error calling eq: missing argument for comparison".into());
            }
            let mut any = false;
            for b in &args[1..] {
                any |= eq(&args[0], b).map_err(|e| format!("error calling eq: {e}"))?;
            }
            Ok(Some(any.into()))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(name, &args, 2)?;
            let (a, b) = (&args[0], &args[1]);
            let r = match name {
                "ne" => eq(a, b).map(|x| !x),
                "lt" => lt(a, b),
                "le" => lt(a, b).and_then(|x| Ok(x || eq(a, b)?)),
                "gt" => lt(a, b).and_then(|x| Ok(!x && !eq(a, b)?)),
                _ => lt(a, b).map(|x| !x),
            };
            Ok(Some(
                r.map_err(|e| format!("error calling {name}: {e}"))?.into(),
            ))
        }
        "print" => s(sprint(&plain(&args))),
        "println" => s(sprintln(&plain(&args))),
        "printf" => {
            if args.is_empty() {
                return Err("wrong number of args for printf: want at least 1 got 0".into());
            }
            let format = want_str(&args[0])?;
            s(sprintf(&format, &plain(&args[1..])))
        }
        "html" => s(html_escape(&sprint(&plain(&args)))),
        "urlquery" => s(query_escape(&sprint(&plain(&args)))),
        "json" => {
            arity(name, &args, 1)?;
            s(to_go_json(args[0].as_ref().unwrap_or(&Value::Null), false))
        }
        "split" => {
            arity(name, &args, 2)?;
            let (x, sep) = (want_str(&args[0])?, want_str(&args[1])?);
            let parts: Vec<Value> = if sep.is_empty() {
                x.chars().map(|c| c.to_string().into()).collect()
            } else {
                x.split(sep.as_str()).map(Into::into).collect()
            };
            Ok(Some(parts.into()))
        }
        "join" => {
            arity(name, &args, 2)?;
            let sep = want_str(&args[1])?;
            match &args[0] {
                Some(Value::Array(a)) => s(a.iter().map(to_v).collect::<Vec<_>>().join(&sep)),
                Some(Value::Null) => s(String::new()),
                Some(v) => Err(format!(
                    "wrong type for value; expected []string; got {}",
                    go_type(v)
                )),
                None => Err("invalid value; expected []string".into()),
            }
        }
        "title" | "lower" | "upper" => {
            arity(name, &args, 1)?;
            let x = want_str(&args[0])?;
            s(match name {
                "title" => title(&x),
                "lower" => x.to_lowercase(),
                _ => x.to_uppercase(),
            })
        }
        "pad" => {
            arity(name, &args, 3)?;
            let x = want_str(&args[0])?;
            let (l, r) = (want_int(&args[1])?, want_int(&args[2])?);
            if x.is_empty() {
                return s(x);
            }
            let sp = |n: i64| " ".repeat(n.max(0) as usize);
            s(format!("{}{x}{}", sp(l), sp(r)))
        }
        "truncate" => {
            arity(name, &args, 2)?;
            let x = want_str(&args[0])?;
            let n = want_int(&args[1])?.max(0) as usize;
            if x.len() < n {
                return s(x);
            }
            let mut end = n;
            while !x.is_char_boundary(end) {
                end -= 1;
            }
            s(x[..end].to_string())
        }
        _ => Err(format!("function {} not defined", quote(name))),
    }
}
