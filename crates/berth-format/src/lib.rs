//! berth-format: Docker-compatible output formatting, shared by the CLI
//! (tables, `--format`, `inspect -f`) and the daemon (the sizes and
//! durations Docker puts into API strings such as a container's `Status`).
//!
//! Owns: pure formatting. Must not: do I/O.
//!
//! - [`Template`]: a Go `text/template` engine (the subset docker formats use) evaluated on
//!   `serde_json::Value`s, with Go's builtin functions and docker's `json`, `split`, `join`,
//!   `title`, `lower`, `upper`, `pad` and `truncate`, printing values as Go's `fmt` does.
//! - [`table`]: docker's `--format` handling for list commands (`table …`, `json`, custom),
//!   `inspect -f`, and Go's `tabwriter` alignment with docker's settings.
//! - [`units`]: `github.com/docker/go-units` sizes and durations, and Go's `time.Time` string.
//!
//! ```text
//! let t = Template::parse("{{.Name}} {{json .Config.Labels}}")?;
//! let line = t.execute(&inspect_json)?;
//! ```

#![forbid(unsafe_code)]

mod exec;
mod gofmt;
mod parse;
pub mod table;
pub mod units;

use std::fmt;

use serde_json::Value;

// Re-exports for callers; a given binary may not use all of them.
pub use gofmt::{to_go_json, to_go_json_indent};
pub use table::{render_inspect, render_list, tabwrite};
pub use units::{
    bytes_size, created_at, human_duration, human_since, human_size, human_size_with_precision,
    ram_in_bytes,
};

/// A template error, its message worded as Go's (`template: :1: ...`).
///
/// Docker reports both kinds as `template parsing error: <message>`; `docker inspect`
/// exits with status 64 for a [`FormatError::Parse`] and 1 for an execution error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The template text is malformed.
    Parse(String),
    /// Executing the template against data failed.
    Exec(String),
}

impl FormatError {
    pub fn message(&self) -> &str {
        match self {
            FormatError::Parse(m) | FormatError::Exec(m) => m,
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for FormatError {}

/// What a field lookup does when a map has no such key (Go's `missingkey` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// Print `<no value>` (Go's default).
    #[default]
    Default,
    /// Fail with `map has no entry for key "X"` (what docker's list formats do for unknown
    /// fields, and `inspect -f` on fields the object lacks).
    Error,
}

/// A parsed Go text/template.
#[derive(Debug, Clone)]
pub struct Template {
    src: String,
    nodes: Vec<parse::Node>,
    missing_key: MissingKey,
    /// Set by [`render_list`]: `{{json .}}` marshals a row as docker's row contexts do.
    row_json: bool,
}

impl Template {
    /// Parses Go template text. The text is used as given: docker's list commands also turn
    /// a typed `\t` / `\n` into real tabs and newlines, which [`render_list`] does.
    pub fn parse(text: &str) -> Result<Template, FormatError> {
        let nodes = parse::parse(text)?;
        Ok(Template {
            src: text.to_string(),
            nodes,
            missing_key: MissingKey::Default,
            row_json: false,
        })
    }

    /// Sets the behaviour for missing map keys (Go's `Option("missingkey=...")`).
    pub fn missing_key(mut self, mode: MissingKey) -> Template {
        self.missing_key = mode;
        self
    }

    /// Executes the template with `data` as dot (and `$`).
    pub fn execute(&self, data: &Value) -> Result<String, FormatError> {
        match self.execute_partial(data, false) {
            (out, None) => Ok(out),
            (_, Some(e)) => Err(e),
        }
    }

    /// Executes with docker's `HeaderFunctions` (json, split, join, title, lower, upper and
    /// truncate return their first argument unchanged), as for a table's header line.
    pub fn execute_header(&self, header: &Value) -> Result<String, FormatError> {
        match self.execute_partial(header, true) {
            (out, None) => Ok(out),
            (_, Some(e)) => Err(e),
        }
    }

    /// Executes, returning whatever was written before any error as Go's writer would have.
    pub fn execute_partial(&self, data: &Value, header: bool) -> (String, Option<FormatError>) {
        let missing_error = self.missing_key == MissingKey::Error;
        let mut state = exec::State::new(&self.src, data, missing_error, header);
        state.row_json = self.row_json;
        let res = state.run(&self.nodes);
        (state.out, res.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(tmpl: &str, data: &Value) -> String {
        Template::parse(tmpl)
            .unwrap_or_else(|e| panic!("{tmpl}: {e}"))
            .execute(data)
            .unwrap_or_else(|e| panic!("{tmpl}: {e}"))
    }

    fn parse_err(tmpl: &str) -> String {
        match Template::parse(tmpl) {
            Err(FormatError::Parse(m)) => m,
            other => panic!("{tmpl}: expected a parse error, got {other:?}"),
        }
    }

    fn exec_err(tmpl: &str, data: &Value) -> String {
        match Template::parse(tmpl).unwrap().execute(data) {
            Err(FormatError::Exec(m)) => m,
            other => panic!("{tmpl}: expected an exec error, got {other:?}"),
        }
    }

    fn data() -> Value {
        json!({
            "Id": "sha256:abc",
            "Name": "/web",
            "Size": 4261550,
            "Ratio": 0.25,
            "Big": 1234567.0,
            "Running": true,
            "Empty": "",
            "Nothing": null,
            "Names": ["a", "b", "c"],
            "Labels": {"b": "2", "a": "1"},
            "Config": {"Env": ["PATH=/bin", "X=1"], "Cmd": null, "Labels": {"com.example": "x"}},
            "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
            "Html": "<a href=\"x\">&</a>",
        })
    }

    #[test]
    fn fields_and_printing() {
        let d = data();
        assert_eq!(run("{{.Name}}", &d), "/web");
        assert_eq!(
            run("id={{.Id}} size={{.Size}}", &d),
            "id=sha256:abc size=4261550"
        );
        assert_eq!(
            run("{{.Ratio}} {{.Big}} {{.Running}}", &d),
            "0.25 1.234567e+06 true"
        );
        assert_eq!(run("{{.Config.Env}}", &d), "[PATH=/bin X=1]");
        assert_eq!(run("{{.Labels}}", &d), "map[a:1 b:2]");
        assert_eq!(
            run("{{.Ports}}", &d),
            "map[80/tcp:[map[HostIp:0.0.0.0 HostPort:8080]]]"
        );
        assert_eq!(run("{{.Nothing}} {{.Config.Cmd}}", &d), "<nil> <nil>");
        assert_eq!(
            run("{{.Missing}} {{.Missing.Deeper}} {{.Nothing.X}}", &d),
            "<no value> <no value> <no value>"
        );
        assert_eq!(run("{{.Config.Labels.nope}}", &d), "<no value>");
        assert_eq!(run("{{.}}", &json!("plain")), "plain");
        assert_eq!(run("{{.}}", &json!([1, "x", null, 1.5])), "[1 x <nil> 1.5]");
        assert_eq!(run("{{$}}", &json!(7)), "7");
        assert_eq!(run("{{with .Config}}{{$.Name}}{{end}}", &d), "/web");
        assert_eq!(
            run(
                "{{18446744073709551615}} {{-3}} {{0x1F}} {{1e3}} {{'a'}} {{.5}}",
                &d
            ),
            "18446744073709551615 -3 31 1000 97 0.5"
        );
    }

    #[test]
    fn json_function_matches_go() {
        let d = json!({"a": {"b": null, "y": [1, 2.5, "s"]}, "ctl": "\u{1}\n\t\u{8}\u{c}\u{2028}\"\\/é",
                       "f": 1e21, "h": "<&>", "t": true, "z": 1});
        assert_eq!(
            run("{{json .}}", &d),
            r#"{"a":{"b":null,"y":[1,2.5,"s"]},"ctl":"\u0001\n\t\b\f\u2028\"\\/é","f":1e+21,"h":"<&>","t":true,"z":1}"#
        );
        assert_eq!(
            run("{{json .Names}}|{{.Names | json}}", &data()),
            r#"["a","b","c"]|["a","b","c"]"#
        );
        assert_eq!(
            run("{{json .Missing}} {{json .Html}}", &data()),
            r#"null "<a href=\"x\">&</a>""#
        );
        assert_eq!(
            to_go_json(&json!({"h": "<&>"}), true),
            r#"{"h":"\u003c\u0026\u003e"}"#
        );
        assert_eq!(
            to_go_json(&json!([1e-7, 0.000001, 123456789.0, -0.5]), false),
            "[1e-7,0.000001,123456789,-0.5]"
        );
    }

    #[test]
    fn control_structures() {
        let d = data();
        assert_eq!(run("{{if .Running}}up{{else}}down{{end}}", &d), "up");
        assert_eq!(
            run(
                "{{if .Empty}}a{{else if .Nothing}}b{{else if .Size}}c{{else}}d{{end}}",
                &d
            ),
            "c"
        );
        assert_eq!(run("{{if not .Names}}none{{else}}some{{end}}", &d), "some");
        assert_eq!(run("{{if .Missing}}x{{else}}y{{end}}", &d), "y");
        for falsy in [
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
            json!(null),
        ] {
            assert_eq!(run("{{if .}}t{{else}}f{{end}}", &falsy), "f", "{falsy}");
        }
        assert_eq!(run("{{range .Names}}[{{.}}]{{end}}", &d), "[a][b][c]");
        assert_eq!(
            run("{{range $i, $e := .Names}}{{$i}}={{$e}} {{end}}", &d),
            "0=a 1=b 2=c "
        );
        assert_eq!(
            run("{{range $k, $v := .Labels}}{{$k}}:{{$v}};{{end}}", &d),
            "a:1;b:2;"
        );
        assert_eq!(run("{{range $v := .Labels}}{{$v}}{{end}}", &d), "12");
        assert_eq!(
            run("{{range .Config.Cmd}}x{{else}}empty{{end}}", &d),
            "empty"
        );
        assert_eq!(run("{{range .Missing}}x{{else}}empty{{end}}", &d), "empty");
        assert_eq!(
            run(
                "{{range $p, $b := .Ports}}{{$p}}->{{(index $b 0).HostPort}}{{end}}",
                &d
            ),
            "80/tcp->8080"
        );
        assert_eq!(
            run(
                "{{range .Names}}{{if eq . \"b\"}}{{break}}{{end}}{{.}}{{end}}",
                &d
            ),
            "a"
        );
        assert_eq!(
            run(
                "{{range .Names}}{{if eq . \"b\"}}{{continue}}{{end}}{{.}}{{end}}",
                &d
            ),
            "ac"
        );
        assert_eq!(run("{{range 3}}{{.}}{{end}}", &d), "012");
        assert_eq!(
            run("{{with .Config}}{{.Env}}{{end}}", &d),
            "[PATH=/bin X=1]"
        );
        assert_eq!(run("{{with .Empty}}x{{else}}no{{end}}", &d), "no");
        assert_eq!(
            run("{{with .Empty}}x{{else with .Name}}{{.}}{{end}}", &d),
            "/web"
        );
        assert_eq!(run("{{with $x := .Size}}{{$x}}{{end}}", &d), "4261550");
    }

    #[test]
    fn variables() {
        let d = data();
        assert_eq!(run("{{$x := .Name}}{{$x}}", &d), "/web");
        assert_eq!(
            run("{{$c := .Config}}{{$c.Labels}}", &d),
            "map[com.example:x]"
        );
        assert_eq!(
            run("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", &d),
            "2"
        );
        assert_eq!(
            run("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}", &d),
            "21"
        );
        assert_eq!(
            run("{{$n := len .Names}}{{range .Names}}{{$n}}{{end}}", &d),
            "333"
        );
        assert_eq!(
            parse_err("{{$x}}"),
            "template: :1: undefined variable \"$x\""
        );
        assert_eq!(
            parse_err("{{if true}}{{$y := 1}}{{end}}{{$y}}"),
            "template: :1: undefined variable \"$y\""
        );
    }

    #[test]
    fn trim_markers_and_comments() {
        let d = data();
        assert_eq!(run("a  {{- .Name -}}  \n b", &d), "a/webb");
        assert_eq!(run("{{/* note */}}x{{- /* trimmed */ -}} y", &d), "xy");
        assert_eq!(run("{{range .Names -}}\n  {{.}}\n{{- end}}", &d), "abc");
        assert_eq!(run("{{.Name\n}}", &d), "/web");
    }

    #[test]
    fn builtin_functions() {
        let d = data();
        assert_eq!(
            run(
                "{{len .Names}} {{len .Labels}} {{len .Name}} {{len .Config.Cmd}}",
                &d
            ),
            "3 2 4 0"
        );
        assert_eq!(
            run(
                "{{index .Names 1}} {{index .Labels \"b\"}} {{index .Ports \"80/tcp\" 0 \"HostPort\"}}",
                &d
            ),
            "b 2 8080"
        );
        assert_eq!(
            run(
                "[{{index .Config.Labels \"nope\"}}] {{index .Ports \"nope\"}}",
                &d
            ),
            "[] <no value>"
        );
        assert_eq!(
            run(
                "{{slice .Names 1}} {{slice .Names 1 2}} {{slice .Name 1 3}}",
                &d
            ),
            "[b c] [b] we"
        );
        assert_eq!(
            run(
                "{{and 1 0 2}} {{and 1 2}} {{or 0 \"\" \"x\"}} {{or 0 \"\"}} {{not 0}}",
                &d
            ),
            "0 2 x  true"
        );
        assert_eq!(
            run("{{and .Missing .Missing.X}}|{{or .Name .Missing.X}}", &d),
            "<no value>|/web"
        );
        assert_eq!(
            run(
                "{{eq .Name \"/web\"}} {{eq .Size 1 2 4261550}} {{ne 1 2}} {{eq .Nothing nil}}",
                &d
            ),
            "true true true true"
        );
        assert_eq!(
            run(
                "{{lt 1 2}} {{le 2 2}} {{gt 1 2}} {{ge \"b\" \"a\"}} {{lt 1.5 2}}",
                &d
            ),
            "true true false true true"
        );
        assert_eq!(
            run("{{print 1 2 \"a\" \"b\" 3 .Names}}", &d),
            "1 2ab3 [a b c]"
        );
        assert_eq!(run("{{println \"a\" 1}}", &d), "a 1\n");
        assert_eq!(
            run("{{html .Html}} {{urlquery \"a b&c\"}}", &d),
            "&lt;a href=&#34;x&#34;&gt;&amp;&lt;/a&gt; a+b%26c"
        );
        assert_eq!(
            run(
                "{{.Name | printf \"%s!\"}} {{\"x\" | printf \"%s-%s\" \"y\"}}",
                &d
            ),
            "/web! y-x"
        );
        assert_eq!(run("{{(index .Names 2) | upper}}", &d), "C");
    }

    #[test]
    fn printf_verbs() {
        let d = data();
        let p = |f: &str| run(&format!("{{{{printf {f}}}}}"), &d);
        assert_eq!(
            p(r#""%s|%d|%v|%t" .Name .Size .Ratio .Running"#),
            "/web|4261550|0.25|true"
        );
        assert_eq!(
            p(r#""[%5s][%-10s][%.2s][%05d][%x][%X][%q]" "ab" "cd" "xyz" 42 255 "hi" "a\"b""#),
            "[   ab][cd        ][xy][00042][ff][6869][\"a\\\"b\"]"
        );
        assert_eq!(
            p(r#""%v %s %d" .Names .Names .Names"#),
            "[a b c] [a b c] [%!d(string=a) %!d(string=b) %!d(string=c)]"
        );
        assert_eq!(
            p(r#""%.2f %e %g %6.1f|%+d" 3.14159 1234.5678 0.000012 2.25 5"#),
            "3.14 1.234568e+03 1.2e-05    2.2|+5"
        );
        assert_eq!(p(r#""%d %s" "x""#), "%!d(string=x) %!s(MISSING)");
        assert_eq!(p(r#""%d" 1 2"#), "1%!(EXTRA int=2)");
        assert_eq!(
            p(r#""100%% %c %v %v" 65 .Nothing .Labels"#),
            "100% A <nil> map[a:1 b:2]"
        );
        assert_eq!(p(r#""%s %d" 1.5 2.5"#), "%!s(float64=1.5) %!d(float64=2.5)");
        assert_eq!(p(r#""%*d|%-*d|" 4 7 3 8"#), "   7|8  |");
    }

    #[test]
    fn docker_functions() {
        let d = data();
        assert_eq!(
            run(r#"{{split "a,b,c" ","}} {{len (split "a,b" ",")}}"#, &d),
            "[a b c] 2"
        );
        assert_eq!(
            run(r#"{{join .Names ", "}}|{{join .Config.Cmd " "}}"#, &d),
            "a, b, c|"
        );
        assert_eq!(
            run(
                r#"{{title "hello big-world foo_bar"}} {{lower "MiXeD"}} {{upper .Name}}"#,
                &d
            ),
            "Hello Big-World Foo_bar mixed /WEB"
        );
        assert_eq!(
            run(r#"[{{pad "ab" 2 3}}][{{pad "" 2 3}}]"#, &d),
            "[  ab   ][]"
        );
        assert_eq!(
            run(
                r#"{{truncate "abcdef" 3}} {{truncate "ab" 3}} {{truncate "abc" 3}}"#,
                &d
            ),
            "abc ab abc"
        );
        assert_eq!(
            run(
                r#"{{range split "x=1 y=2" " "}}{{index (split . "=") 0}};{{end}}"#,
                &d
            ),
            "x;y;"
        );
        let h = Template::parse(
            r#"{{json .A}} {{upper .A}} {{join .A ","}} {{truncate .A 1}} {{pad .A 1 0}}"#,
        )
        .unwrap();
        assert_eq!(
            h.execute_header(&json!({"A": "NAME"})).unwrap(),
            "NAME NAME NAME NAME  NAME"
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            parse_err("{{.Name }"),
            "template: :1: unexpected \"}\" in operand"
        );
        assert_eq!(
            parse_err("{{.Name}"),
            "template: :1: bad character U+007D '}'"
        );
        assert_eq!(parse_err("{{.Name"), "template: :1: unclosed action");
        assert_eq!(parse_err("x\n{{if .A}}"), "template: :2: unexpected EOF");
        assert_eq!(parse_err("{{end}}"), "template: :1: unexpected {{end}}");
        assert_eq!(parse_err("{{else}}"), "template: :1: unexpected {{else}}");
        assert_eq!(
            parse_err("{{nope .A}}"),
            "template: :1: function \"nope\" not defined"
        );
        assert_eq!(parse_err("{{}}"), "template: :1: missing command");
        assert_eq!(
            parse_err("{{\"abc}}"),
            "template: :1: unterminated quoted string"
        );
        assert_eq!(parse_err("{{/* x }}"), "template: :1: unclosed comment");
        assert_eq!(
            parse_err("{{break}}"),
            "template: :1: {{break}} outside {{range}}"
        );
        assert_eq!(
            parse_err("{{.A | 1}}"),
            "template: :1: non executable command in pipeline stage 2"
        );
        assert_eq!(parse_err("{{(.A}}"), "template: :1: unclosed left paren");
        assert_eq!(parse_err("{{.A)}}"), "template: :1: unexpected right paren");
        assert_eq!(
            parse_err("{{3x}}"),
            "template: :1: bad number syntax: \"3x\""
        );
        assert_eq!(
            parse_err("{{template \"x\"}}"),
            "template: :1: {{template}} is not supported"
        );
        assert_eq!(
            parse_err("{{\"a\".B}}"),
            "template: :1: unexpected . after term \"\\\"a\\\"\""
        );
        assert_eq!(
            parse_err(&format!("{{{{{}", "(".repeat(200))),
            "template: :1: max expression depth exceeded"
        );
        assert!(Template::parse(&format!("{{{{{}1{}}}}}", "(".repeat(90), ")".repeat(90))).is_ok());
    }

    #[test]
    fn exec_errors() {
        let d = data();
        assert_eq!(
            exec_err("{{.Name.X}}", &d),
            "template: :1:2: executing \"\" at <.Name.X>: can't evaluate field X in type string"
        );
        assert_eq!(
            exec_err("ab\n  {{index .Names 5}}", &d),
            "template: :2:4: executing \"\" at <index .Names 5>: error calling index: index out of range: 5"
        );
        assert_eq!(
            exec_err("{{len 3}}", &d),
            "template: :1:2: executing \"\" at <len 3>: error calling len: len of type int"
        );
        assert_eq!(
            exec_err("{{upper 3}}", &d),
            "template: :1:2: executing \"\" at <upper>: wrong type for value; expected string; got int"
        );
        assert_eq!(
            exec_err("{{1 2}}", &d),
            "template: :1:2: executing \"\" at <1>: can't give argument to non-function 1"
        );
        assert_eq!(
            exec_err("{{range .Name}}{{end}}", &d),
            "template: :1:8: executing \"\" at <.Name>: range can't iterate over /web"
        );
        assert_eq!(
            exec_err("{{eq .Name 1}}", &d),
            "template: :1:2: executing \"\" at <eq .Name 1>: error calling eq: incompatible types for comparison"
        );
        let strict = Template::parse("{{.Config.Nope}}")
            .unwrap()
            .missing_key(MissingKey::Error);
        assert_eq!(
            strict.execute(&d).unwrap_err().message(),
            "template: :1:2: executing \"\" at <.Config.Nope>: map has no entry for key \"Nope\""
        );
        let (partial, e) = Template::parse("ab{{.Name}}{{len 1}}cd")
            .unwrap()
            .execute_partial(&d, false);
        assert_eq!(partial, "ab/web");
        assert!(e.is_some());
    }
}
