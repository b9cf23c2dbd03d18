//! berth-dockerfile: the Dockerfile front end — the parser, variable
//! expansion and `.dockerignore` rules, modelled on BuildKit's
//! `frontend/dockerfile` (which dockerd's legacy builder uses too).
//!
//! Owns: turning Dockerfile text into stages and typed instructions, and the
//! word rules the builder applies while it runs them. Must not: do I/O, know
//! about images or containers, or depend on any other berth crate.
//!
//! Words stay unexpanded in the parse tree: ARG and ENV are evaluated in order
//! by the builder, which calls [`Instruction::expanded`] before running each
//! instruction (or [`expand`] / [`expand_words`] on single words; FROM's base
//! and platform with the meta args), as Docker's dispatcher does. [`expand`]
//! also removes quotes, so ENV/LABEL/ARG values such as `"a b"` must go
//! through it even when no variables are set. RUN, CMD and ENTRYPOINT are
//! never expanded; COPY/ADD heredoc bodies use [`expand_heredoc`].
//!
//! ```
//! let df = berth_dockerfile::parse(b"FROM busybox AS base\nENV A=1\nRUN echo $A\n").unwrap();
//! assert_eq!(df.stages[0].name.as_deref(), Some("base"));
//! assert_eq!(df.stages[0].instructions[1].original, "RUN echo $A");
//! ```
#![forbid(unsafe_code)]

pub mod dockerignore;
mod duration;
mod instructions;
mod lines;
mod shell;

use std::fmt;
use std::time::Duration;

pub use instructions::{parse, parse_triggers};
pub use shell::{ExpandError, expand, expand_heredoc, expand_words};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character: `\` or the one set by `# escape=`.
    pub escape: char,
    /// `# syntax=` if given (ignored; a warning says so).
    pub syntax: Option<String>,
    /// `# check=` if given (kept for the caller; berth runs no checks).
    pub check: Option<String>,
    /// ARGs before the first FROM, in order; usable in FROM lines.
    pub meta_args: Vec<Arg>,
    pub stages: Vec<Stage>,
    /// Lines Docker prints as `[WARNING]: ...` before the build.
    pub warnings: Vec<String>,
}

/// One `FROM` and the instructions after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// `AS name`, lower-cased as Docker does.
    pub name: Option<String>,
    /// The image (or earlier stage) name, unexpanded (meta args apply).
    pub base: String,
    /// `--platform=`, unexpanded.
    pub platform: Option<String>,
    /// 1-based line of the FROM.
    pub line: usize,
    /// The FROM line as Docker prints it in `Step N/M : ...`.
    pub original: String,
    pub instructions: Vec<Step>,
}

/// One instruction of a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// 1-based line where it ends (continuations and heredocs included).
    pub end_line: usize,
    /// The instruction as Docker prints it in `Step N/M : ...`: the joined
    /// line, trimmed, heredoc bodies not included.
    pub original: String,
    pub instruction: Instruction,
}

/// An ARG name with its optional default (a raw word: [`expand`] it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub default: Option<String>,
}

/// A key and a value of ENV or LABEL, both raw words (quotes kept):
/// [`expand`] each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// The command of RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Shell form: run with the SHELL (default `/bin/sh -c`). The text is as
    /// written; it may be empty (`CMD` alone).
    Shell(String),
    /// Exec (JSON) form.
    Exec(Vec<String>),
}

/// A heredoc body (`<<EOF` ... `EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, unquoted; for COPY/ADD also the file name.
    pub name: String,
    /// `3<<EOF` gives 3; 0 when no number was written.
    pub fd: u32,
    /// Whether variables in the body are expanded (the delimiter was not
    /// quoted): for COPY/ADD with [`expand_heredoc`] (quotes kept); a RUN
    /// heredoc is left to the shell that runs it.
    pub expand: bool,
    /// `<<-EOF`: leading tabs are stripped from body lines.
    pub chomp: bool,
    /// The body lines as written, each with its newline, without the delimiter line.
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs removed from each line when `chomp` is set.
    pub fn text(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: CommandLine,
    /// Heredocs the line opens; `RUN <<EOF` runs the first one as a script.
    pub heredocs: Vec<Heredoc>,
    /// `--mount=` values, raw, in order.
    pub mounts: Vec<String>,
    /// `--network=` (`default`, `none`, `host`).
    pub network: Option<String>,
    /// `--security=` (`sandbox`, `insecure`).
    pub security: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Source paths as written (raw words), heredoc sources not included.
    pub sources: Vec<String>,
    /// Inline sources (`COPY <<EOF /dst`): the file name is the heredoc's name.
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    /// The arguments were a JSON array.
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub sources: Vec<String>,
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub link: bool,
    /// `--unpack` / `--unpack=false`; `None` when not given (unpack local archives).
    pub unpack: Option<bool>,
    pub excludes: Vec<String>,
    pub json: bool,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    Cmd {
        command: CommandLine,
        /// `None` when not given or 0 (inherit / default).
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        /// `None` when not given or 0.
        retries: Option<u32>,
    },
}

impl Healthcheck {
    /// The image config's `Healthcheck.Test`: `["NONE"]`, `["CMD", ...]` or
    /// `["CMD-SHELL", "..."]`.
    pub fn test(&self) -> Vec<String> {
        match self {
            Healthcheck::None => vec!["NONE".into()],
            Healthcheck::Cmd { command, .. } => match command {
                CommandLine::Exec(v) => std::iter::once("CMD".to_string())
                    .chain(v.iter().cloned())
                    .collect(),
                CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            },
        }
    }
}

/// A Dockerfile instruction other than FROM (which starts a [`Stage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Label(Vec<KeyValue>),
    /// Ports as written (`80`, `53/udp`, `${PORT}`), sorted as Docker sorts them.
    Expose(Vec<String>),
    Env(Vec<KeyValue>),
    Add(Add),
    Copy(Copy),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<Arg>),
    /// The trigger expression stored in the image's `OnBuild` list (the line
    /// without `ONBUILD`). Docker parses it only when a child image is built:
    /// use [`parse_triggers`].
    Onbuild(String),
    Stopsignal(String),
    Healthcheck(Healthcheck),
    /// SHELL (JSON form only).
    Shell(Vec<String>),
    /// MAINTAINER (deprecated; sets the image's `Author`).
    Maintainer(String),
}

impl Instruction {
    /// This instruction with its words expanded the way Docker's dispatcher
    /// expands them before running it, all against the same `lookup` (the
    /// ENV and ARG values in effect *before* this instruction: in
    /// `ENV A=2 B=$A`, B gets the old A, as in Docker):
    ///
    /// - ENV, LABEL: keys and values; ARG: names and defaults;
    /// - ADD, COPY: sources, destination and `--chown`; heredoc bodies whose
    ///   delimiter was not quoted with [`expand_heredoc`] (after chomping;
    ///   the result has `expand` and `chomp` cleared). `--from` and
    ///   `--chmod` stay as written, as in dockerd's legacy builder;
    /// - EXPOSE: each word may expand to several ports (`ProcessWords`);
    /// - VOLUME, USER, WORKDIR, STOPSIGNAL: each word;
    /// - RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER: unchanged.
    ///
    /// Quotes are removed along the way, so `ENV A="a b"` gives `a b`.
    pub fn expanded(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
        escape: char,
    ) -> Result<Instruction, ExpandError> {
        let x = |w: &str| expand(w, lookup, escape);
        let kvs = |v: &[KeyValue]| -> Result<Vec<KeyValue>, ExpandError> {
            v.iter()
                .map(|p| {
                    Ok(KeyValue {
                        key: x(&p.key)?,
                        value: x(&p.value)?,
                    })
                })
                .collect()
        };
        let list = |v: &[String]| v.iter().map(|w| x(w)).collect::<Result<Vec<_>, _>>();
        let docs = |v: &[Heredoc]| -> Result<Vec<Heredoc>, ExpandError> {
            v.iter()
                .map(|h| {
                    if !h.expand {
                        return Ok(h.clone());
                    }
                    Ok(Heredoc {
                        content: expand_heredoc(&h.text(), lookup)?,
                        expand: false,
                        chomp: false,
                        ..h.clone()
                    })
                })
                .collect()
        };
        Ok(match self {
            Instruction::Env(v) => Instruction::Env(kvs(v)?),
            Instruction::Label(v) => Instruction::Label(kvs(v)?),
            Instruction::Arg(v) => Instruction::Arg(
                v.iter()
                    .map(|a| {
                        Ok(Arg {
                            name: x(&a.name)?,
                            default: a.default.as_deref().map(x).transpose()?,
                        })
                    })
                    .collect::<Result<_, ExpandError>>()?,
            ),
            Instruction::Copy(c) => Instruction::Copy(Copy {
                sources: list(&c.sources)?,
                heredocs: docs(&c.heredocs)?,
                dest: x(&c.dest)?,
                chown: c.chown.as_deref().map(x).transpose()?,
                ..c.clone()
            }),
            Instruction::Add(a) => Instruction::Add(Add {
                sources: list(&a.sources)?,
                heredocs: docs(&a.heredocs)?,
                dest: x(&a.dest)?,
                chown: a.chown.as_deref().map(x).transpose()?,
                ..a.clone()
            }),
            Instruction::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    out.extend(expand_words(p, lookup, escape)?);
                }
                Instruction::Expose(out)
            }
            Instruction::Volume(v) => Instruction::Volume(list(v)?),
            Instruction::User(u) => Instruction::User(x(u)?),
            Instruction::Workdir(w) => Instruction::Workdir(x(w)?),
            Instruction::Stopsignal(s) => Instruction::Stopsignal(x(s)?),
            other => other.clone(),
        })
    }

    /// The keyword in upper case (`RUN`, `COPY`, ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Env(_) => "ENV",
            Instruction::Add(_) => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Arg(_) => "ARG",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Which pass found a [`ParseError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Line structure: directives, JSON arrays of non-strings, `k=v`
    /// syntax, unterminated heredocs.
    Syntax,
    /// An instruction's arguments or flags, or an unknown instruction.
    Instruction,
    /// Nothing but comments and blank lines.
    NoInstructions,
    /// An instruction other than ARG before the first FROM, or no FROM.
    NoStage,
}

/// A Dockerfile that cannot be parsed. Displays in Docker's wording:
/// `dockerfile parse error line 5: unknown instruction: FOO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the offending instruction (0 for an empty file).
    pub line: usize,
    pub kind: ParseErrorKind,
    /// The message without the line prefix.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ParseErrorKind::Syntax | ParseErrorKind::Instruction => write!(
                f,
                "dockerfile parse error line {}: {}",
                self.line, self.message
            ),
            ParseErrorKind::NoInstructions | ParseErrorKind::NoStage => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}
