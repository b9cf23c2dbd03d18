//! Second pass: instruction lines → stages of typed instructions, with the
//! argument counts, flags and messages of Docker's `instructions` package
//! (as vendored by dockerd 20.10's legacy builder, plus the flags newer
//! Dockerfile frontends added).

use crate::duration::{go_quote, parse_go_duration, to_duration};
use crate::lines::{self, Args, Node, parse_heredoc};
use crate::{
    Add, Arg, CommandLine, Copy, Dockerfile, Healthcheck, Heredoc, Instruction, KeyValue,
    ParseError, ParseErrorKind, Run, Stage, Step,
};

/// Parses a Dockerfile.
pub fn parse(src: &[u8]) -> Result<Dockerfile, ParseError> {
    let parsed = lines::parse_lines(src)?;
    if parsed.nodes.is_empty() {
        return Err(ParseError {
            line: 0,
            kind: ParseErrorKind::NoInstructions,
            message: "file with no instructions".into(),
        });
    }
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &parsed.nodes {
        let at = |message: String| ParseError {
            line: node.start,
            kind: ParseErrorKind::Instruction,
            message,
        };
        if node.cmd == "from" {
            stages.push(parse_from(node).map_err(at)?);
            continue;
        }
        let instruction = parse_instruction(node).map_err(at)?;
        let Some(stage) = stages.last_mut() else {
            if let Instruction::Arg(args) = instruction {
                meta_args.extend(args);
                continue;
            }
            return Err(ParseError {
                line: node.start,
                kind: ParseErrorKind::NoStage,
                message: "no build stage in current context".into(),
            });
        };
        stage.instructions.push(Step {
            line: node.start,
            end_line: node.end,
            original: node.original.trim().to_string(),
            instruction,
        });
    }
    if stages.is_empty() {
        // only ARGs: dockerd's legacy builder finds no image to produce
        return Err(ParseError {
            line: parsed.nodes.last().map_or(0, |n| n.start),
            kind: ParseErrorKind::NoStage,
            message: "No image was generated. Is your Dockerfile empty?".into(),
        });
    }
    Ok(Dockerfile {
        escape: parsed.escape,
        syntax: parsed.syntax,
        check: parsed.check,
        meta_args,
        stages,
        warnings: parsed.warnings,
    })
}

/// Parses the `OnBuild` triggers of a base image (the expressions stored by
/// ONBUILD) into steps, as Docker does when a child image is built FROM it.
/// FROM, MAINTAINER and ONBUILD are not allowed as triggers. Line numbers are
/// 1-based positions in `triggers`.
pub fn parse_triggers(triggers: &[String], escape: char) -> Result<Vec<Step>, ParseError> {
    let mut steps = Vec::new();
    for (i, trigger) in triggers.iter().enumerate() {
        let at = |kind, message: String| ParseError {
            line: i + 1,
            kind,
            message,
        };
        // a trigger may hold heredoc bodies on further lines
        let parsed = lines::parse_lines_with(trigger.as_bytes(), escape, false)
            .map_err(|e| at(ParseErrorKind::Syntax, e.message))?;
        for node in &parsed.nodes {
            match node.cmd.as_str() {
                "onbuild" => {
                    return Err(at(
                        ParseErrorKind::Instruction,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                    ));
                }
                "from" | "maintainer" => {
                    return Err(at(
                        ParseErrorKind::Instruction,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            node.cmd.to_uppercase()
                        ),
                    ));
                }
                _ => {}
            }
            let instruction =
                parse_instruction(node).map_err(|m| at(ParseErrorKind::Instruction, m))?;
            steps.push(Step {
                line: i + 1,
                end_line: i + 1,
                original: node.original.trim().to_string(),
                instruction,
            });
        }
    }
    Ok(steps)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Str,
    Strs,
}

/// Docker's BFlags: `--name=value` for strings, `--name` / `--name=true|false`
/// for booleans; strings-flags may repeat.
struct Flags {
    spec: &'static [(&'static str, Kind)],
    values: Vec<(&'static str, String)>,
}

impl Flags {
    fn parse(args: &[String], spec: &'static [(&'static str, Kind)]) -> Result<Flags, String> {
        let mut values: Vec<(&'static str, String)> = Vec::new();
        for arg in args {
            let Some(arg) = arg.strip_prefix("--") else {
                return Err(format!("Arg should start with -- : {arg}"));
            };
            if arg.is_empty() {
                break;
            }
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            let Some(&(key, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(format!("Unknown flag: {name}"));
            };
            if kind != Kind::Strs && values.iter().any(|(n, _)| *n == key) {
                return Err(format!("Duplicate flag specified: {name}"));
            }
            let v = match kind {
                Kind::Bool => match value {
                    Some("") => return Err(format!("Missing a value on flag: {name}")),
                    None => "true".to_string(),
                    Some(v) => match v.to_lowercase().as_str() {
                        l @ ("true" | "false") => l.to_string(),
                        _ => {
                            return Err(format!(
                                "Expecting boolean value for flag {name}, not: {v}"
                            ));
                        }
                    },
                },
                Kind::Str | Kind::Strs => match value {
                    None => return Err(format!("Missing a value on flag: {name}")),
                    Some(v) => v.to_string(),
                },
            };
            values.push((key, v));
        }
        Ok(Flags { spec, values })
    }

    fn string(&self, name: &str) -> Option<String> {
        debug_assert!(self.spec.iter().any(|(n, _)| *n == name));
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

const NO_FLAGS: &[(&str, Kind)] = &[];

fn at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}
fn exactly_one(cmd: &str) -> String {
    format!("{cmd} requires exactly one argument")
}
fn no_destination(cmd: &str) -> String {
    format!(
        "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined."
    )
}
fn blank_names(cmd: &str) -> String {
    format!("{cmd} names can not be blank")
}

fn parse_from(node: &Node) -> Result<Stage, String> {
    let args = node.args.list();
    let name = match args {
        [_] => None,
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !valid_stage_name(&lower) {
                return Err(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    go_quote(name)
                ));
            }
            Some(lower)
        }
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    let flags = Flags::parse(&node.flags, &[("platform", Kind::Str)])?;
    Ok(Stage {
        name,
        base: args[0].clone(),
        platform: flags.string("platform").filter(|p| !p.is_empty()),
        line: node.start,
        original: node.original.trim().to_string(),
        instructions: Vec::new(),
    })
}

/// `^[a-z][a-z0-9-_\.]*$`
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn command_line(node: &Node) -> CommandLine {
    let args = node.args.list();
    if node.json {
        CommandLine::Exec(args.to_vec())
    } else {
        CommandLine::Shell(args.join(" "))
    }
}

fn kvps(node: &Node, cmd: &str) -> Result<Vec<KeyValue>, String> {
    let pairs = match &node.args {
        Args::Pairs(p) => p.as_slice(),
        _ => &[],
    };
    if pairs.is_empty() {
        return Err(at_least_one(cmd));
    }
    pairs
        .iter()
        .map(|(k, v)| {
            if k.is_empty() {
                Err(blank_names(cmd))
            } else {
                Ok(KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
            }
        })
        .collect()
}

/// Splits COPY/ADD arguments into path sources, heredoc sources and the
/// destination.
fn sources_and_dest(node: &Node, cmd: &str) -> Result<(Vec<String>, Vec<Heredoc>, String), String> {
    let args = node.args.list();
    let (dest, srcs) = args.split_last().ok_or_else(|| no_destination(cmd))?;
    if !node.json && parse_heredoc(dest)?.is_some() {
        return Err(format!("{cmd} cannot accept a heredoc as a destination"));
    }
    let mut sources = Vec::new();
    let mut heredocs = Vec::new();
    for src in srcs {
        match (!node.json)
            .then(|| parse_heredoc(src))
            .transpose()?
            .flatten()
        {
            Some(h) => {
                let body = node.heredocs.iter().find(|d| d.name == h.name);
                heredocs.push(Heredoc {
                    content: body.map(|d| d.content.clone()).unwrap_or_default(),
                    ..h
                });
            }
            None => sources.push(src.clone()),
        }
    }
    Ok((sources, heredocs, dest.clone()))
}

fn interval(flags: &Flags, name: &str) -> Result<Option<std::time::Duration>, String> {
    let Some(v) = flags.string(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let nanos = parse_go_duration(&v)?;
    if nanos == 0 {
        return Ok(None);
    }
    if nanos < 1_000_000 {
        return Err(format!(
            "Interval {} cannot be less than 1ms",
            go_quote(name)
        ));
    }
    Ok(Some(to_duration(nanos)))
}

pub(crate) fn parse_instruction(node: &Node) -> Result<Instruction, String> {
    let args = node.args.list();
    let flags = |spec| Flags::parse(&node.flags, spec);
    Ok(match node.cmd.as_str() {
        "env" => {
            flags(NO_FLAGS)?;
            Instruction::Env(kvps(node, "ENV")?)
        }
        "label" => {
            flags(NO_FLAGS)?;
            Instruction::Label(kvps(node, "LABEL")?)
        }
        "maintainer" => {
            let [m] = args else {
                return Err(exactly_one("MAINTAINER"));
            };
            flags(NO_FLAGS)?;
            Instruction::Maintainer(m.clone())
        }
        "add" => {
            if args.len() < 2 {
                return Err(no_destination("ADD"));
            }
            let f = flags(&[
                ("chown", Kind::Str),
                ("chmod", Kind::Str),
                ("link", Kind::Bool),
                ("keep-git-dir", Kind::Bool),
                ("checksum", Kind::Str),
                ("unpack", Kind::Bool),
                ("exclude", Kind::Strs),
            ])?;
            let (sources, heredocs, dest) = sources_and_dest(node, "ADD")?;
            Instruction::Add(Add {
                sources,
                heredocs,
                dest,
                chown: f.string("chown").filter(|s| !s.is_empty()),
                chmod: f.string("chmod").filter(|s| !s.is_empty()),
                checksum: f.string("checksum").filter(|s| !s.is_empty()),
                keep_git_dir: f.bool("keep-git-dir").unwrap_or(false),
                link: f.bool("link").unwrap_or(false),
                unpack: f.bool("unpack"),
                excludes: f.strings("exclude"),
                json: node.json,
            })
        }
        "copy" => {
            if args.len() < 2 {
                return Err(no_destination("COPY"));
            }
            let f = flags(&[
                ("chown", Kind::Str),
                ("from", Kind::Str),
                ("chmod", Kind::Str),
                ("link", Kind::Bool),
                ("exclude", Kind::Strs),
                ("parents", Kind::Bool),
            ])?;
            let (sources, heredocs, dest) = sources_and_dest(node, "COPY")?;
            Instruction::Copy(Copy {
                sources,
                heredocs,
                dest,
                from: f.string("from").filter(|s| !s.is_empty()),
                chown: f.string("chown").filter(|s| !s.is_empty()),
                chmod: f.string("chmod").filter(|s| !s.is_empty()),
                link: f.bool("link").unwrap_or(false),
                parents: f.bool("parents").unwrap_or(false),
                excludes: f.strings("exclude"),
                json: node.json,
            })
        }
        "onbuild" => {
            let Args::Sub(sub) = &node.args else {
                return Err(at_least_one("ONBUILD"));
            };
            flags(NO_FLAGS)?;
            match sub.cmd.as_str() {
                "onbuild" => {
                    return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into());
                }
                "maintainer" | "from" => {
                    return Err(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        sub.cmd.to_uppercase()
                    ));
                }
                _ => {}
            }
            let mut expression = strip_onbuild(&node.original).to_string();
            for h in &node.heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            Instruction::Onbuild(expression)
        }
        "workdir" => {
            let [p] = args else {
                return Err(exactly_one("WORKDIR"));
            };
            flags(NO_FLAGS)?;
            Instruction::Workdir(p.clone())
        }
        "run" => {
            let f = flags(&[
                ("mount", Kind::Strs),
                ("network", Kind::Str),
                ("security", Kind::Str),
            ])?;
            Instruction::Run(Run {
                command: command_line(node),
                heredocs: node.heredocs.clone(),
                mounts: f.strings("mount"),
                network: f.string("network"),
                security: f.string("security"),
            })
        }
        "cmd" => {
            flags(NO_FLAGS)?;
            Instruction::Cmd(command_line(node))
        }
        "entrypoint" => {
            // `ENTRYPOINT []` clears the entrypoint (newer frontends accept
            // it; dockerd 20.10 refused it); a bare ENTRYPOINT is an error
            if args.is_empty() && !node.json {
                return Err(at_least_one("ENTRYPOINT"));
            }
            flags(NO_FLAGS)?;
            Instruction::Entrypoint(command_line(node))
        }
        "healthcheck" => parse_healthcheck(node)?,
        "expose" => {
            if args.is_empty() {
                return Err(at_least_one("EXPOSE"));
            }
            flags(NO_FLAGS)?;
            let mut ports = args.to_vec();
            ports.sort();
            Instruction::Expose(ports)
        }
        "user" => {
            let [u] = args else {
                return Err(exactly_one("USER"));
            };
            flags(NO_FLAGS)?;
            Instruction::User(u.clone())
        }
        "volume" => {
            if args.is_empty() {
                return Err(at_least_one("VOLUME"));
            }
            flags(NO_FLAGS)?;
            let mut vols = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                vols.push(v.to_string());
            }
            Instruction::Volume(vols)
        }
        "stopsignal" => {
            let [s] = args else {
                return Err(exactly_one("STOPSIGNAL"));
            };
            Instruction::Stopsignal(s.clone())
        }
        "arg" => {
            if args.is_empty() {
                return Err(at_least_one("ARG"));
            }
            let mut out = Vec::new();
            for a in args {
                out.push(match a.split_once('=') {
                    Some(("", _)) => return Err(blank_names("ARG")),
                    Some((k, v)) => Arg {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    },
                    None => Arg {
                        name: a.clone(),
                        default: None,
                    },
                });
            }
            Instruction::Arg(out)
        }
        "shell" => {
            flags(NO_FLAGS)?;
            if args.is_empty() {
                return Err(at_least_one("SHELL"));
            }
            if !node.json {
                return Err("SHELL requires the arguments to be in JSON form".into());
            }
            Instruction::Shell(args.to_vec())
        }
        "from" => return Err("FROM isn't allowed here".into()),
        other => return Err(format!("unknown instruction: {}", other.to_uppercase())),
    })
}

/// `(?i)^\s*ONBUILD\s*` removed from the line.
fn strip_onbuild(original: &str) -> &str {
    let t = original.trim_start_matches(is_re_space);
    match t.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => t[7..].trim_start_matches(is_re_space),
        _ => original,
    }
}

fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r' | '\x0b')
}

fn parse_healthcheck(node: &Node) -> Result<Instruction, String> {
    let args = node.args.list();
    let Some((typ, rest)) = args.split_first() else {
        return Err(at_least_one("HEALTHCHECK"));
    };
    let typ = typ.to_uppercase();
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(Instruction::Healthcheck(Healthcheck::None));
    }
    let f = Flags::parse(
        &node.flags,
        &[
            ("interval", Kind::Str),
            ("timeout", Kind::Str),
            ("start-period", Kind::Str),
            ("start-interval", Kind::Str),
            ("retries", Kind::Str),
        ],
    )?;
    if typ != "CMD" {
        return Err(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            go_quote(&typ)
        ));
    }
    if rest.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".into());
    }
    let command = if node.json {
        CommandLine::Exec(rest.to_vec())
    } else {
        CommandLine::Shell(rest.join(" "))
    };
    let interval_v = interval(&f, "interval")?;
    let timeout = interval(&f, "timeout")?;
    let start_period = interval(&f, "start-period")?;
    let start_interval = interval(&f, "start-interval")?;
    let retries = match f.string("retries").filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => {
            let n: i64 = r.parse().map_err(|_| {
                let why = if !r.is_empty()
                    && r.trim_start_matches(['-', '+'])
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                    && r.len() > 1
                {
                    "value out of range"
                } else {
                    "invalid syntax"
                };
                format!("strconv.ParseInt: parsing {}: {why}", go_quote(&r))
            })?;
            if n > i64::from(i32::MAX) || n < i64::from(i32::MIN) {
                return Err(format!(
                    "strconv.ParseInt: parsing {}: value out of range",
                    go_quote(&r)
                ));
            }
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            u32::try_from(n).ok().filter(|n| *n > 0)
        }
    };
    Ok(Instruction::Healthcheck(Healthcheck::Cmd {
        command,
        interval: interval_v,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}
