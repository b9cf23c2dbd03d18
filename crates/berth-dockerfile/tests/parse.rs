//! The parser through its public API: every instruction, the directives,
//! continuations, heredocs and Docker's error messages.

use berth_dockerfile::{
    CommandLine, Healthcheck, Instruction, KeyValue, ParseErrorKind, expand, parse, parse_triggers,
};
use std::time::Duration;

fn steps(src: &str) -> Vec<Instruction> {
    let df = parse(src.as_bytes()).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    df.stages
        .into_iter()
        .flat_map(|s| s.instructions)
        .map(|s| s.instruction)
        .collect()
}

fn one(src: &str) -> Instruction {
    let mut v = steps(&format!("FROM scratch\n{src}\n"));
    assert_eq!(v.len(), 1, "{src}");
    v.remove(0)
}

fn err(src: &str) -> String {
    parse(src.as_bytes()).unwrap_err().to_string()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn stages_and_meta_args() {
    let df = parse(
        b"ARG BASE=busybox\nARG TAG\nFROM --platform=linux/amd64 ${BASE}:${TAG} AS Build\nRUN make\nfrom build\nCOPY --from=build /out /out\n",
    )
    .unwrap();
    assert_eq!(df.meta_args.len(), 2);
    assert_eq!(df.meta_args[0].name, "BASE");
    assert_eq!(df.meta_args[0].default.as_deref(), Some("busybox"));
    assert_eq!(df.meta_args[1].default, None);
    assert_eq!(df.stages.len(), 2);
    let s0 = &df.stages[0];
    assert_eq!(
        s0.name.as_deref(),
        Some("build"),
        "stage names are lower-cased"
    );
    assert_eq!(s0.base, "${BASE}:${TAG}");
    assert_eq!(s0.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(s0.line, 3);
    assert_eq!(
        s0.original,
        "FROM --platform=linux/amd64 ${BASE}:${TAG} AS Build"
    );
    assert_eq!(s0.instructions[0].line, 4);
    assert_eq!(df.stages[1].name, None);
    assert_eq!(df.stages[1].base, "build");
    let Instruction::Copy(c) = &df.stages[1].instructions[0].instruction else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.sources, ["/out"]);
    assert_eq!(c.dest, "/out");
    assert_eq!(df.escape, '\\');
}

#[test]
fn run_forms() {
    assert_eq!(
        one("RUN echo $HOME && ls"),
        Instruction::Run(berth_dockerfile::Run {
            command: CommandLine::Shell("echo $HOME && ls".into()),
            heredocs: vec![],
            mounts: vec![],
            network: None,
            security: None,
        })
    );
    let Instruction::Run(r) = one(r#"RUN ["/bin/echo", "a b"]"#) else {
        panic!()
    };
    assert_eq!(
        r.command,
        CommandLine::Exec(vec!["/bin/echo".into(), "a b".into()])
    );
    // invalid JSON falls back to the shell form, as in Docker
    let Instruction::Run(r) = one("RUN ['single', 'quotes']") else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Shell("['single', 'quotes']".into()));
    let Instruction::Run(r) = one(
        "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=x --network=none --security=insecure make",
    ) else {
        panic!()
    };
    assert_eq!(
        r.mounts,
        ["type=cache,target=/root/.cache", "type=secret,id=x"]
    );
    assert_eq!(r.network.as_deref(), Some("none"));
    assert_eq!(r.security.as_deref(), Some("insecure"));
    assert_eq!(r.command, CommandLine::Shell("make".into()));
}

#[test]
fn cmd_entrypoint_shell() {
    assert_eq!(
        one(r#"CMD ["sh", "-c", "echo hi"]"#),
        Instruction::Cmd(CommandLine::Exec(vec![
            "sh".into(),
            "-c".into(),
            "echo hi".into()
        ]))
    );
    assert_eq!(
        one("cmd   echo   hi"),
        Instruction::Cmd(CommandLine::Shell("echo   hi".into()))
    );
    assert_eq!(
        one("ENTRYPOINT []"),
        Instruction::Entrypoint(CommandLine::Exec(vec![]))
    );
    assert_eq!(
        one(r#"SHELL ["/bin/bash", "-o", "pipefail", "-c"]"#),
        Instruction::Shell(vec![
            "/bin/bash".into(),
            "-o".into(),
            "pipefail".into(),
            "-c".into()
        ])
    );
    assert_eq!(
        err("FROM a\nSHELL /bin/bash -c\n"),
        "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        err("FROM a\nENTRYPOINT\n"),
        "dockerfile parse error line 2: ENTRYPOINT requires at least one argument"
    );
}

#[test]
fn label_env_arg() {
    assert_eq!(
        one(r#"LABEL a=1 "b c"="d e" f='g'"#),
        Instruction::Label(vec![kv("a", "1"), kv("\"b c\"", "\"d e\""), kv("f", "'g'")])
    );
    assert_eq!(one("ENV A B C"), Instruction::Env(vec![kv("A", "B C")]));
    assert_eq!(
        one(r#"ENV A=1 B="two words" C=a\ b"#),
        Instruction::Env(vec![
            kv("A", "1"),
            kv("B", "\"two words\""),
            kv("C", "a\\ b")
        ])
    );
    let Instruction::Env(e) = one(r#"ENV B="two words""#) else {
        panic!()
    };
    assert_eq!(expand(&e[0].value, &no_env, '\\').unwrap(), "two words");
    let Instruction::Arg(a) = one("ARG A B=2 C=") else {
        panic!()
    };
    assert_eq!(a.len(), 3);
    assert_eq!((a[0].name.as_str(), a[0].default.as_deref()), ("A", None));
    assert_eq!(
        (a[1].name.as_str(), a[1].default.as_deref()),
        ("B", Some("2"))
    );
    assert_eq!(a[2].default.as_deref(), Some(""));
    assert_eq!(
        err("FROM a\nENV\n"),
        "dockerfile parse error line 2: ENV requires at least one argument"
    );
    assert_eq!(
        err("FROM a\nENV A\n"),
        "dockerfile parse error line 2: ENV must have two arguments"
    );
    assert_eq!(
        err("FROM a\nENV A=1 B\n"),
        "dockerfile parse error line 2: Syntax error - can't find = in \"B\". Must be of the form: name=value"
    );
    assert_eq!(
        err("FROM a\nLABEL =x\n"),
        "dockerfile parse error line 2: LABEL names can not be blank"
    );
    assert_eq!(
        err("FROM a\nARG =x\n"),
        "dockerfile parse error line 2: ARG names can not be blank"
    );
}

#[test]
fn expose_volume_user_workdir_stopsignal_maintainer() {
    assert_eq!(
        one("EXPOSE 8080 53/udp 443"),
        Instruction::Expose(vec!["443".into(), "53/udp".into(), "8080".into()])
    );
    assert_eq!(
        one("VOLUME /a /b"),
        Instruction::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(
        one(r#"VOLUME ["/data", "/with space"]"#),
        Instruction::Volume(vec!["/data".into(), "/with space".into()])
    );
    assert_eq!(
        err("FROM a\nVOLUME [\"\"]\n"),
        "dockerfile parse error line 2: VOLUME specified can not be an empty string"
    );
    assert_eq!(one("USER app:app"), Instruction::User("app:app".into()));
    assert_eq!(
        one("WORKDIR /my dir"),
        Instruction::Workdir("/my dir".into())
    );
    assert_eq!(
        one("STOPSIGNAL SIGTERM"),
        Instruction::Stopsignal("SIGTERM".into())
    );
    assert_eq!(
        one("MAINTAINER Jane <jane@example.com>"),
        Instruction::Maintainer("Jane <jane@example.com>".into())
    );
    assert_eq!(
        err("FROM a\nUSER\n"),
        "dockerfile parse error line 2: USER requires exactly one argument"
    );
    assert_eq!(
        err("FROM a\nEXPOSE\n"),
        "dockerfile parse error line 2: EXPOSE requires at least one argument"
    );
}

#[test]
fn add_and_copy_flags() {
    let Instruction::Add(a) = one(
        "ADD --chown=1:2 --chmod=644 --checksum=sha256:abc --keep-git-dir --link https://x/y.tgz a.tar /dst/",
    ) else {
        panic!()
    };
    assert_eq!(a.sources, ["https://x/y.tgz", "a.tar"]);
    assert_eq!(a.dest, "/dst/");
    assert_eq!(a.chown.as_deref(), Some("1:2"));
    assert_eq!(a.chmod.as_deref(), Some("644"));
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert!(a.keep_git_dir && a.link);
    let Instruction::Copy(c) = one(
        "COPY --from=0 --link=false --parents --exclude=*.tmp --exclude=.git [\"a b\", \"/dst\"]",
    ) else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("0"));
    assert!(!c.link && c.parents);
    assert_eq!(c.excludes, ["*.tmp", ".git"]);
    assert_eq!(c.sources, ["a b"]);
    assert!(c.json);
    assert_eq!(
        err("FROM a\nCOPY onlyone\n"),
        "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined."
    );
    assert_eq!(
        err("FROM a\nCOPY --frm=x a b\n"),
        "dockerfile parse error line 2: Unknown flag: frm"
    );
    assert_eq!(
        err("FROM a\nCOPY --from a b\n"),
        "dockerfile parse error line 2: Missing a value on flag: from"
    );
    assert_eq!(
        err("FROM a\nCOPY --from=a --from=b a b\n"),
        "dockerfile parse error line 2: Duplicate flag specified: from"
    );
    assert_eq!(
        err("FROM a\nCOPY --link=maybe a b\n"),
        "dockerfile parse error line 2: Expecting boolean value for flag link, not: maybe"
    );
    assert_eq!(
        err("FROM a\nENV --x A=b\n"),
        "dockerfile parse error line 2: Unknown flag: x"
    );
}

#[test]
fn healthcheck() {
    assert_eq!(
        one("HEALTHCHECK NONE"),
        Instruction::Healthcheck(Healthcheck::None)
    );
    let Instruction::Healthcheck(h) = one(
        "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --start-interval=500ms --retries=3 CMD curl -f http://localhost/",
    ) else {
        panic!()
    };
    assert_eq!(
        h,
        Healthcheck::Cmd {
            command: CommandLine::Shell("curl -f http://localhost/".into()),
            interval: Some(Duration::from_secs(30)),
            timeout: Some(Duration::from_secs(90)),
            start_period: Some(Duration::from_secs(5)),
            start_interval: Some(Duration::from_millis(500)),
            retries: Some(3),
        }
    );
    assert_eq!(h.test(), ["CMD-SHELL", "curl -f http://localhost/"]);
    let Instruction::Healthcheck(h) = one(r#"HEALTHCHECK cmd ["/bin/check", "x"]"#) else {
        panic!()
    };
    assert_eq!(h.test(), ["CMD", "/bin/check", "x"]);
    assert_eq!(
        err("FROM a\nHEALTHCHECK NONE x\n"),
        "dockerfile parse error line 2: HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK CMD\n"),
        "dockerfile parse error line 2: Missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK RUN x\n"),
        "dockerfile parse error line 2: Unknown type \"RUN\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --interval=5 CMD x\n"),
        "dockerfile parse error line 2: time: missing unit in duration \"5\""
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --interval=1us CMD x\n"),
        "dockerfile parse error line 2: Interval \"interval\" cannot be less than 1ms"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --retries=-1 CMD x\n"),
        "dockerfile parse error line 2: --retries cannot be negative (-1)"
    );
    assert_eq!(
        err("FROM a\nHEALTHCHECK --retries=x CMD x\n"),
        "dockerfile parse error line 2: strconv.ParseInt: parsing \"x\": invalid syntax"
    );
}

#[test]
fn onbuild() {
    assert_eq!(
        one("ONBUILD RUN echo hi"),
        Instruction::Onbuild("RUN echo hi".into())
    );
    assert_eq!(
        one("  onbuild   COPY . /app"),
        Instruction::Onbuild("COPY . /app".into())
    );
    assert_eq!(
        err("FROM a\nONBUILD ONBUILD RUN x\n"),
        "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        err("FROM a\nONBUILD FROM b\n"),
        "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err("FROM a\nONBUILD maintainer me\n"),
        "dockerfile parse error line 2: MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err("FROM a\nONBUILD\n"),
        "dockerfile parse error line 2: ONBUILD requires at least one argument"
    );
    // the trigger's own syntax is checked by the line parser, as in Docker
    assert_eq!(
        err("FROM a\nONBUILD ENV X\n"),
        "dockerfile parse error line 2: ENV must have two arguments"
    );
    let steps = parse_triggers(&["RUN echo hi".into(), "ENV A=1".into()], '\\').unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].instruction, Instruction::Env(vec![kv("A", "1")]));
    assert_eq!(
        parse_triggers(&["FROM x".into()], '\\')
            .unwrap_err()
            .to_string(),
        "dockerfile parse error line 1: FROM isn't allowed as an ONBUILD trigger"
    );
    let steps = parse_triggers(&["RUN <<EOF\necho x\nEOF".into()], '\\').unwrap();
    let Instruction::Run(r) = &steps[0].instruction else {
        panic!()
    };
    assert_eq!(r.heredocs[0].content, "echo x\n");
    assert_eq!(steps[0].original, "RUN <<EOF");
    assert_eq!(
        parse_triggers(&["BOGUS x".into()], '\\')
            .unwrap_err()
            .to_string(),
        "dockerfile parse error line 1: unknown instruction: BOGUS"
    );
}

#[test]
fn docker_errors_cite_the_line() {
    assert_eq!(
        err("FROM busybox\nRUN true\n\n# c\nFOO bar\n"),
        "dockerfile parse error line 5: unknown instruction: FOO"
    );
    assert_eq!(
        err("FROM a b\n"),
        "dockerfile parse error line 1: FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM\n"),
        "dockerfile parse error line 1: FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a AS 1st\n"),
        "dockerfile parse error line 1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
    );
    let e = parse(b"RUN x\nFROM a\n").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::NoStage);
    assert_eq!(e.line, 1);
    assert_eq!(e.to_string(), "no build stage in current context");
    let e = parse(b"ARG A\n").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::NoStage);
    assert_eq!(
        e.to_string(),
        "No image was generated. Is your Dockerfile empty?"
    );
    let e = parse(b"# only a comment\n\n").unwrap_err();
    assert_eq!(e.to_string(), "file with no instructions");
    assert_eq!(parse(b"").unwrap_err().kind, ParseErrorKind::NoInstructions);
    assert_eq!(
        err("FROM a\nRUN [\"a\", 1]\n"),
        "dockerfile parse error line 2: when using JSON array syntax, arrays must be comprised of strings only"
    );
    // the line parser's errors come before the instruction checks, as in Docker
    assert_eq!(
        err("FROM a\nFOO\nENV A\n"),
        "dockerfile parse error line 3: ENV must have two arguments"
    );
    // a multi-line instruction is cited by its first line
    assert_eq!(
        err("FROM a\nRUN a \\\n  b\nBAR \\\n  x\n"),
        "dockerfile parse error line 4: unknown instruction: BAR"
    );
}

#[test]
fn continuations_comments_and_warnings() {
    let df = parse(
        b"FROM a\nRUN apt-get update && \\\n    # a comment inside\n    apt-get install -y \\\n\n    curl\nRUN done\n",
    )
    .unwrap();
    let s = &df.stages[0].instructions;
    assert_eq!(
        s[0].original,
        "RUN apt-get update &&     apt-get install -y     curl"
    );
    assert_eq!((s[0].line, s[0].end_line), (2, 6));
    assert_eq!(s[1].line, 7);
    assert_eq!(df.warnings.len(), 2);
    assert!(df.warnings[0].starts_with("[WARNING]: Empty continuation line found in:"));
    assert_eq!(
        df.warnings[1],
        "[WARNING]: Empty continuation lines will become errors in a future release."
    );
    // an escaped escape is not a continuation
    let s = steps("FROM a\nRUN echo \\\\\nRUN next\n");
    assert_eq!(s.len(), 2);
    // a continuation at the end of the file ends the instruction
    assert_eq!(steps("FROM a\nRUN echo \\").len(), 1);
    // CRLF line endings
    let s = steps("FROM a\r\nRUN a \\\r\n b\r\n");
    assert_eq!(
        s[0],
        Instruction::Run(berth_dockerfile::Run {
            command: CommandLine::Shell("a  b".into()),
            heredocs: vec![],
            mounts: vec![],
            network: None,
            security: None
        })
    );
}

#[test]
fn escape_and_other_directives() {
    let df = parse(b"# escape=`\n# syntax=docker/dockerfile:1\n# check=skip=all\nFROM a\nRUN dir c:\\ `\n  /s\n").unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.check.as_deref(), Some("skip=all"));
    assert!(df.warnings[0].contains("syntax parser directive"));
    assert_eq!(df.stages[0].instructions[0].original, "RUN dir c:\\   /s");
    // directives only count at the very top: after a blank line, a comment
    let df = parse(b"\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(df.escape, '\\');
    let df = parse(b"# hello\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(df.escape, '\\');
    let df = parse(b"FROM a\n# escape=`\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert_eq!(
        err("# escape=x\nFROM a\n"),
        "dockerfile parse error line 1: invalid escape token 'x' does not match ` or \\"
    );
    assert_eq!(
        err("# escape=`\n# escape=\\\nFROM a\n"),
        "dockerfile parse error line 2: only one escape parser directive can be used"
    );
    // a BOM before the first line is ignored
    let df = parse(b"\xef\xbb\xbf# escape=`\nFROM a\n").unwrap();
    assert_eq!(df.escape, '`');
}

#[test]
fn heredocs() {
    let df = parse(
        b"FROM a\nRUN <<EOF\necho one\necho $HOME\nEOF\nRUN <<-'END' cat > /x\n\tliteral $HOME\n\tEND\nCOPY <<one.txt <<\"two.txt\" /dst/\n1\none.txt\n2\ntwo.txt\nRUN done\n",
    )
    .unwrap();
    let s = &df.stages[0].instructions;
    assert_eq!(s.len(), 4);
    let Instruction::Run(r) = &s[0].instruction else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Shell("<<EOF".into()));
    assert_eq!(r.heredocs[0].name, "EOF");
    assert_eq!(r.heredocs[0].content, "echo one\necho $HOME\n");
    assert!(r.heredocs[0].expand);
    assert_eq!((s[0].line, s[0].end_line), (2, 5));
    let Instruction::Run(r) = &s[1].instruction else {
        panic!()
    };
    assert!(!r.heredocs[0].expand && r.heredocs[0].chomp);
    assert_eq!(r.heredocs[0].text(), "literal $HOME\n");
    let Instruction::Copy(c) = &s[2].instruction else {
        panic!()
    };
    assert!(c.sources.is_empty());
    assert_eq!(c.heredocs.len(), 2);
    assert_eq!(
        (c.heredocs[0].name.as_str(), c.heredocs[0].content.as_str()),
        ("one.txt", "1\n")
    );
    assert_eq!(
        (c.heredocs[1].name.as_str(), c.heredocs[1].expand),
        ("two.txt", false)
    );
    assert_eq!(c.dest, "/dst/");
    assert_eq!(s[3].line, 14);
    assert_eq!(
        err("FROM a\nRUN <<EOF\nno end\n"),
        "dockerfile parse error line 2: unterminated heredoc"
    );
    assert_eq!(
        err("FROM a\nCOPY a <<EOF\nx\nEOF\n"),
        "dockerfile parse error line 2: COPY cannot accept a heredoc as a destination"
    );
    // heredocs only for RUN, COPY and ADD
    let s = steps("FROM a\nLABEL x=<<EOF\nRUN y\n");
    assert_eq!(s.len(), 2);
    // ONBUILD keeps the bodies in its expression
    assert_eq!(
        one("ONBUILD RUN <<EOF\necho x\nEOF"),
        Instruction::Onbuild("RUN <<EOF\necho x\nEOF".into())
    );
}

#[test]
fn steps_print_like_docker() {
    let df = parse(b"FROM a\n  RUN   echo  hi   \nENV A=1 \\\n    B=2\n").unwrap();
    let s = &df.stages[0].instructions;
    assert_eq!(s[0].original, "RUN   echo  hi");
    assert_eq!(s[1].original, "ENV A=1     B=2");
    assert_eq!(s[1].instruction.keyword(), "ENV");
}

#[test]
fn expanded_follows_docker_rules() {
    let env = |k: &str| match k {
        "A" => Some("old".to_string()),
        "PORTS" => Some("80 443/tcp".to_string()),
        "U" => Some("app".to_string()),
        _ => None,
    };
    let x = |src: &str| one(src).expanded(&env, '\\').unwrap();
    assert_eq!(
        x(r#"ENV A=new B=$A C="${A} and 'q'""#),
        Instruction::Env(vec![kv("A", "new"), kv("B", "old"), kv("C", "old and 'q'")])
    );
    assert_eq!(
        x("LABEL \"k $A\"=v"),
        Instruction::Label(vec![kv("k old", "v")])
    );
    assert_eq!(
        x("EXPOSE $PORTS 8080"),
        Instruction::Expose(vec!["80".into(), "443/tcp".into(), "8080".into()])
    );
    assert_eq!(
        x("USER ${U}:${G:-staff}"),
        Instruction::User("app:staff".into())
    );
    assert_eq!(
        x("WORKDIR /home/$U"),
        Instruction::Workdir("/home/app".into())
    );
    assert_eq!(
        x("VOLUME /v/$A /w"),
        Instruction::Volume(vec!["/v/old".into(), "/w".into()])
    );
    // VOLUME's words are split at blanks before expansion, as in Docker, so
    // quotes cannot hold a blank there
    assert!(one("VOLUME \"/q w\"").expanded(&env, '\\').is_err());
    let Instruction::Arg(a) = x("ARG X=${A}1 Y") else {
        panic!()
    };
    assert_eq!(a[0].default.as_deref(), Some("old1"));
    assert_eq!(a[1].default, None);
    let Instruction::Copy(c) = x("COPY --from=$A --chown=$U:$U src/$A \"$A\" /dst/$A/") else {
        panic!()
    };
    assert_eq!(c.sources, ["src/old", "old"]);
    assert_eq!(c.dest, "/dst/old/");
    assert_eq!(c.chown.as_deref(), Some("app:app"));
    assert_eq!(c.from.as_deref(), Some("$A"), "--from is not expanded");
    let Instruction::Copy(c) = one("COPY <<-a <<'b' /d/\n\tx=\"$A\"\n\ta\n$A\nb")
        .expanded(&env, '\\')
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(c.heredocs[0].content, "x=\"old\"\n");
    assert!(!c.heredocs[0].chomp && !c.heredocs[0].expand);
    assert_eq!(c.heredocs[1].content, "$A\n");
    // RUN and CMD are left to the shell
    assert_eq!(x("RUN echo $A"), one("RUN echo $A"));
    assert_eq!(
        one("WORKDIR ${A")
            .expanded(&env, '\\')
            .unwrap_err()
            .to_string(),
        "failed to process \"${A\": syntax error: missing '}'"
    );
}
