//! Go's `fmt` (`%v`, `Sprint`, `Sprintf`, `%g`) and `encoding/json` output for JSON values.

use serde_json::{Number, Value};

/// The Go type name a JSON value has once decoded into `interface{}` (integers are `int`).
pub(crate) fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Map entries in Go's order (sorted keys), whatever the map's own order.
pub(crate) fn sorted(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Go's `%v` of a number: integers as integers, floats as `%g` (shortest).
pub(crate) fn number_v(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => fmt_g(f, None, false),
        _ => n.to_string(),
    }
}

/// Appends Go's `%v` rendering of `v` (as `fmt.Print` does for `interface{}` values).
pub(crate) fn write_v(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_v(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_v(out, e);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, (k, e)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_v(out, e);
            }
            out.push(']');
        }
    }
}

pub(crate) fn to_v(v: &Value) -> String {
    let mut s = String::new();
    write_v(&mut s, v);
    s
}

/// `fmt.Sprint`: spaces between operands when neither side is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !a.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        write_v(&mut out, a);
    }
    out
}

/// `fmt.Sprintln`: always spaces between operands, and a final newline.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let mut out = args.iter().map(to_v).collect::<Vec<_>>().join(" ");
    out.push('\n');
    out
}

/// Go's `strconv.Quote`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if c == ' ' || !(c.is_control() || c.is_whitespace()) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------- floats --

/// Decimal digits of |f| (no trailing zeros) and the decimal point position,
/// shortest round-trip when `sig` is None, else rounded to `sig` significant digits.
fn digits(f: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    if f == 0.0 {
        return (Vec::new(), 0);
    }
    let s = match sig {
        None => format!("{:e}", f.abs()),
        Some(n) => format!("{:.*e}", n.max(1) - 1, f.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let mut d: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while d.last() == Some(&b'0') {
        d.pop();
    }
    (d, exp.parse::<i32>().unwrap_or(0) + 1)
}

fn exp_suffix(out: &mut String, exp: i32, upper: bool) {
    out.push(if upper { 'E' } else { 'e' });
    out.push(if exp < 0 { '-' } else { '+' });
    let e = exp.unsigned_abs();
    if e < 10 {
        out.push('0');
    }
    out.push_str(&e.to_string());
}

/// strconv's %e given digits: `prec` digits after the point.
fn fmt_e(d: &[u8], dp: i32, prec: i32, upper: bool) -> String {
    let mut out = String::new();
    out.push(d.first().map_or('0', |&c| c as char));
    if prec > 0 {
        out.push('.');
        for i in 1..=prec as usize {
            out.push(d.get(i).map_or('0', |&c| c as char));
        }
    }
    exp_suffix(&mut out, if d.is_empty() { 0 } else { dp - 1 }, upper);
    out
}

/// strconv's %f given digits: `prec` digits after the point.
fn fmt_f(d: &[u8], dp: i32, prec: i32) -> String {
    let digit = |i: i32| {
        if i >= 0 && (i as usize) < d.len() {
            d[i as usize] as char
        } else {
            '0'
        }
    };
    let mut out = String::new();
    if dp > 0 {
        (0..dp).for_each(|i| out.push(digit(i)));
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        (0..prec).for_each(|i| out.push(digit(dp + i)));
    }
    out
}

/// Go's `%g` / `%.Ng` (`strconv.FormatFloat(f, 'g', prec, 64)`); `None` is the shortest form.
pub(crate) fn fmt_g(f: f64, prec: Option<usize>, upper: bool) -> String {
    let shortest = prec.is_none();
    let (d, dp) = digits(f, prec.map(|p| p.max(1)));
    let nd = d.len() as i32;
    let prec = prec.map_or(nd, |p| p.max(1) as i32);
    let mut eprec = prec;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    let body = if exp < -4 || exp >= eprec {
        fmt_e(&d, dp, prec.min(nd) - 1, upper)
    } else {
        fmt_f(&d, dp, (if prec > dp { nd } else { prec } - dp).max(0))
    };
    if f.is_sign_negative() {
        format!("-{body}")
    } else {
        body
    }
}

/// Go's `%e` with a precision (default 6).
fn fmt_e_prec(f: f64, prec: usize, upper: bool) -> String {
    let (d, dp) = digits(f, Some(prec + 1));
    let body = fmt_e(&d, dp, prec as i32, upper);
    if f.is_sign_negative() {
        format!("-{body}")
    } else {
        body
    }
}

// ------------------------------------------------------------------ json --

/// Go's `encoding/json` output for a value: compact, integers as integers, floats as Go
/// formats them; `escape_html` selects `json.Marshal` (true) or docker's template `json`
/// function, an Encoder with `SetEscapeHTML(false)` (false). Keys come out in the map's
/// order: berth builds with serde_json's `preserve_order`, so the daemon's objects keep the
/// field order of Docker's structs (as Go prints structs) and CLI rows are built sorted (as
/// Go prints maps).
pub fn to_go_json(v: &Value, escape_html: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, v, escape_html, None, 0);
    out
}

/// Like [`to_go_json`], indented as `json.MarshalIndent(v, "", indent)` / `json.Indent` do.
pub fn to_go_json_indent(v: &Value, escape_html: bool, indent: &str) -> String {
    let mut out = String::new();
    write_json(&mut out, v, escape_html, Some(indent), 0);
    out
}

fn newline(out: &mut String, indent: Option<&str>, level: usize) {
    if let Some(ind) = indent {
        out.push('\n');
        (0..level).for_each(|_| out.push_str(ind));
    }
}

fn write_json(out: &mut String, v: &Value, html: bool, indent: Option<&str>, level: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.push_str(&json_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => json_str(out, s, html),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write_json(out, e, html, indent, level + 1);
            }
            newline(out, indent, level);
            out.push(']');
        }
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Object(m) => {
            out.push('{');
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                json_str(out, k, html);
                out.push_str(if indent.is_some() { ": " } else { ":" });
                write_json(out, e, html, indent, level + 1);
            }
            newline(out, indent, level);
            out.push('}');
        }
    }
}

fn json_float(f: f64) -> String {
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        // Go writes at least two exponent digits, then strips the 0 from e-0X.
        let e = exp.unsigned_abs();
        if e < 10 && exp > 0 {
            format!("{mant}e{sign}0{e}")
        } else {
            format!("{mant}e{sign}{e}")
        }
    } else {
        format!("{f}")
    }
}

fn json_str(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '<' | '>' | '&' if html => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------- printf --

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

impl Spec {
    /// Pads `s` to the width, with zeros after any sign when `numeric` and the 0 flag is set.
    fn pad(&self, s: String, numeric: bool) -> String {
        let n = s.chars().count();
        let Some(w) = self.width.filter(|&w| w > n) else {
            return s;
        };
        let fill = w - n;
        if self.minus {
            s + &" ".repeat(fill)
        } else if self.zero && numeric {
            let sign = s.starts_with(['-', '+', ' ']) as usize;
            format!("{}{}{}", &s[..sign], "0".repeat(fill), &s[sign..])
        } else {
            " ".repeat(fill) + &s
        }
    }

    fn sign(&self, s: String, neg: bool) -> String {
        if neg {
            s
        } else if self.plus {
            format!("+{s}")
        } else if self.space {
            format!(" {s}")
        } else {
            s
        }
    }
}

fn bad_verb(verb: char, v: &Value) -> String {
    match v {
        Value::Null => format!("%!{verb}(<nil>)"),
        _ => format!("%!{verb}({}={})", go_type(v), to_v(v)),
    }
}

fn fmt_int(spec: &Spec, verb: char, n: &Number) -> String {
    let (neg, mag) = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => (i < 0, i.unsigned_abs()),
        (None, Some(u)) => (false, u),
        _ => return bad_verb(verb, &Value::Number(n.clone())),
    };
    let mut digits = match verb {
        'd' | 'v' => mag.to_string(),
        'x' => format!("{mag:x}"),
        'X' => format!("{mag:X}"),
        'o' | 'O' => format!("{mag:o}"),
        'b' => format!("{mag:b}"),
        'c' => {
            return spec.pad(
                char::from_u32(mag as u32).unwrap_or('\u{fffd}').to_string(),
                false,
            );
        }
        'q' => {
            let c = char::from_u32(mag as u32).unwrap_or('\u{fffd}');
            let q = quote(&c.to_string());
            let inner = q[1..q.len() - 1].replace("\\\"", "\"").replace('\'', "\\'");
            return spec.pad(format!("'{inner}'"), false);
        }
        'U' => return spec.pad(format!("U+{mag:04X}"), false),
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' | 's' | 't' => {
            return bad_verb(verb, &Value::Number(n.clone()));
        }
        _ => return bad_verb(verb, &Value::Number(n.clone())),
    };
    if let Some(p) = spec.prec.filter(|&p| digits.len() < p) {
        digits = "0".repeat(p - digits.len()) + &digits;
    }
    if spec.sharp {
        match verb {
            'x' => digits = format!("0x{digits}"),
            'X' => digits = format!("0X{digits}"),
            'o' => digits = format!("0{digits}"),
            'b' => digits = format!("0b{digits}"),
            _ => {}
        }
    }
    if verb == 'O' {
        digits = format!("0o{digits}");
    }
    let s = spec.sign(if neg { format!("-{digits}") } else { digits }, neg);
    spec.pad(s, spec.prec.is_none())
}

fn fmt_float(spec: &Spec, verb: char, f: f64) -> String {
    let s = match verb {
        'v' | 'g' | 'G' => fmt_g(f, spec.prec, verb == 'G'),
        'e' | 'E' => fmt_e_prec(f, spec.prec.unwrap_or(6), verb == 'E'),
        'f' | 'F' => format!("{:.*}", spec.prec.unwrap_or(6), f),
        _ => return bad_verb(verb, &Value::from(f)),
    };
    let neg = s.starts_with('-');
    spec.pad(spec.sign(s, neg), true)
}

fn fmt_str(spec: &Spec, verb: char, s: &str) -> String {
    let s = match spec.prec {
        Some(p) if verb != 'x' && verb != 'X' => s.chars().take(p).collect(),
        _ => s.to_string(),
    };
    match verb {
        'v' | 's' => spec.pad(s, false),
        'q' => spec.pad(quote(&s), false),
        'x' | 'X' => {
            let mut h: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            if let Some(p) = spec.prec {
                h.truncate(2 * p);
            }
            if verb == 'X' {
                h = h.to_uppercase();
            }
            spec.pad(h, false)
        }
        _ => bad_verb(verb, &Value::String(s)),
    }
}

fn fmt_value(out: &mut String, spec: &Spec, verb: char, v: &Value) {
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_value(out, spec, verb, e);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, (k, e)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_value(out, spec, verb, &Value::String(k.clone()));
                out.push(':');
                fmt_value(out, spec, verb, e);
            }
            out.push(']');
        }
        Value::Null if verb == 'v' => out.push_str(&spec.pad("<nil>".into(), false)),
        Value::Bool(b) if verb == 'v' || verb == 't' => {
            out.push_str(&spec.pad(b.to_string(), false))
        }
        Value::Number(n) if n.is_f64() => {
            out.push_str(&fmt_float(spec, verb, n.as_f64().unwrap_or(0.0)))
        }
        Value::Number(n) => out.push_str(&fmt_int(spec, verb, n)),
        Value::String(s) => out.push_str(&fmt_str(spec, verb, s)),
        _ => out.push_str(&bad_verb(verb, v)),
    }
}

/// `fmt.Sprintf` over JSON values (verbs v s q d t x X o O b c U e E f F g G and %%).
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut argi = 0;
    let mut chars = format.chars().peekable();
    let take_num = |chars: &mut std::iter::Peekable<std::str::Chars>, argi: &mut usize| {
        if chars.peek() == Some(&'*') {
            chars.next();
            let n = args.get(*argi).and_then(Value::as_u64).map(|n| n as usize);
            *argi += 1;
            return n;
        }
        let mut n = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            n = Some(n.unwrap_or(0) * 10 + d as usize);
            chars.next();
        }
        n
    };
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = take_num(&mut chars, &mut argi);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(take_num(&mut chars, &mut argi).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(argi) {
            None => out.push_str(&format!("%!{verb}(MISSING)")),
            Some(v) if verb == 'T' => out.push_str(&spec.pad(go_type(v).into(), false)),
            Some(v) => fmt_value(&mut out, &spec, verb, v),
        }
        argi += 1;
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[argi..]
            .iter()
            .map(|v| match v {
                Value::Null => "<nil>".into(),
                _ => format!("{}={}", go_type(v), to_v(v)),
            })
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_g_formatting() {
        let shortest: &[(f64, &str)] = &[
            (0.0, "0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (4261550.0, "4.26155e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e21, "1e+21"),
            (1.5e-300, "1.5e-300"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (f, want) in shortest {
            assert_eq!(fmt_g(*f, None, false), *want, "{f}");
        }
        let prec: &[(f64, usize, &str)] = &[
            (4.26155, 3, "4.26"),
            (999.0, 3, "999"),
            (100.0, 3, "100"),
            (999.9, 3, "1e+03"),
            (1.0, 3, "1"),
            (0.0, 3, "0"),
            (1.0486, 4, "1.049"),
            (0.000123456, 2, "0.00012"),
            (123456.0, 0, "1e+05"),
            (2.5, 1, "2"),
        ];
        for (f, p, want) in prec {
            assert_eq!(fmt_g(*f, Some(*p), false), *want, "%.{p}g of {f}");
        }
        assert_eq!(fmt_e_prec(1234.5678, 2, false), "1.23e+03");
        assert_eq!(fmt_e_prec(0.0, 1, true), "0.0E+00");
    }

    #[test]
    fn go_value_printing() {
        assert_eq!(
            to_v(&json!({"b": [1, null], "a": {"x": ""}})),
            "map[a:map[x:] b:[1 <nil>]]"
        );
        assert_eq!(to_v(&json!([true, 1.5, "s"])), "[true 1.5 s]");
        assert_eq!(
            sprint(&[
                json!(1),
                json!(2),
                json!("a"),
                json!(3),
                json!("b"),
                json!("c")
            ]),
            "1 2a3bc"
        );
        assert_eq!(sprintln(&[json!("a"), json!(1)]), "a 1\n");
        assert_eq!(
            quote("a\"b\\c\n\u{1}\u{7f}é\u{a0}"),
            r#""a\"b\\c\n\x01\x7fé\u00a0""#
        );
    }

    #[test]
    fn go_json_encoding() {
        let v = json!({"a": "<tag> & \u{2029}", "b": [1, 2.5, -0.0, 1e-7, 1e22], "c": {}, "d": []});
        assert_eq!(
            to_go_json(&v, false),
            r#"{"a":"<tag> & \u2029","b":[1,2.5,-0,1e-7,1e+22],"c":{},"d":[]}"#
        );
        assert_eq!(
            to_go_json(&v, true),
            r#"{"a":"\u003ctag\u003e \u0026 \u2029","b":[1,2.5,-0,1e-7,1e+22],"c":{},"d":[]}"#
        );
        assert_eq!(
            to_go_json_indent(&json!({"a": [1], "b": {}}), false, "  "),
            "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}"
        );
    }

    #[test]
    fn printf_formatting() {
        let p = |f: &str, args: &[Value]| sprintf(f, args);
        assert_eq!(
            p(
                "%5.1f|%-6d|%+.2e|%08.3f",
                &[json!(1.23456), json!(42), json!(12345.678), json!(-1.23456)]
            ),
            "  1.2|42    |+1.23e+04|-001.235"
        );
        assert_eq!(
            p(
                "%x %X %o %b %#x %c %U %q",
                &[
                    json!(255),
                    json!(255),
                    json!(8),
                    json!(5),
                    json!(255),
                    json!(0x4e16),
                    json!(0x41),
                    json!(65)
                ]
            ),
            "ff FF 10 101 0xff 世 U+0041 'A'"
        );
        assert_eq!(
            p(
                "%T %T %T %T",
                &[json!(1), json!(1.5), json!("s"), json!(null)]
            ),
            "int float64 string <nil>"
        );
        assert_eq!(p("%t %t", &[json!(true), json!(1)]), "true %!t(int=1)");
        assert_eq!(p("%", &[]), "%!(NOVERB)");
        assert_eq!(p("%s", &[json!(null)]), "%!s(<nil>)");
        assert_eq!(
            p("%v|%6v|%-4v|", &[json!(null), json!("ab"), json!(true)]),
            "<nil>|    ab|true|"
        );
    }
}
