//! Bounded, deterministic fuzzing of the parser, of `expand` and of the
//! `.dockerignore` matcher: a seeded mutation loop over the corpus in
//! `corpus/` (byte flips, inserts, deletes, duplications, splices between
//! files, and Dockerfile tokens: keywords, escapes, quotes, heredoc markers,
//! JSON brackets, `${` forms). Every input must parse or fail without a
//! panic, within a time bound, and a parse must satisfy the invariants in
//! `check_dockerfile`.
//!
//! Runs with the rest of the tests (`cargo nextest run -p berth-dockerfile`).
//! Run it longer with, e.g.:
//!
//! ```text
//! BERTH_FUZZ_ITERS=2000000 BERTH_FUZZ_SECS=600 BERTH_FUZZ_SEED=$RANDOM \
//!   cargo nextest run -p berth-dockerfile --release --test fuzz
//! ```
//!
//! A failure prints the seed, the iteration and the input (escaped), so it
//! can be replayed with the same `BERTH_FUZZ_SEED` and added to `corpus/`.

use berth_dockerfile::dockerignore::Matcher;
use berth_dockerfile::{
    CommandLine, Dockerfile, Healthcheck, Instruction, ParseErrorKind, Step, expand, expand_words,
    parse, parse_triggers,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

/// Inputs grow up to this size; larger mutants are cut.
const MAX_INPUT: usize = 16 * 1024;
/// Any single input must be handled within this time (debug build, shared CI).
const MAX_PER_INPUT: Duration = Duration::from_secs(2);

const TOKENS: &[&str] = &[
    "FROM ",
    "from ",
    "RUN ",
    "CMD ",
    "LABEL ",
    "EXPOSE ",
    "ENV ",
    "ADD ",
    "COPY ",
    "ENTRYPOINT ",
    "VOLUME ",
    "USER ",
    "WORKDIR ",
    "ARG ",
    "ONBUILD ",
    "STOPSIGNAL ",
    "HEALTHCHECK ",
    "SHELL ",
    "MAINTAINER ",
    "NONE",
    "CMD",
    " AS ",
    "\n",
    "\r\n",
    " ",
    "\t",
    "\\",
    "\\\n",
    "`",
    "`\n",
    "\\\\",
    "#",
    "# escape=`\n",
    "# escape=\\\n",
    "# syntax=docker/dockerfile:1\n",
    "# check=skip=all\n",
    "'",
    "\"",
    "$",
    "${",
    "}",
    "${A:-",
    "${A:+",
    "${A-",
    "${A+",
    "${A?",
    "${A#",
    "${A##",
    "${A%",
    "${A%%",
    "${A/",
    "${A//",
    "$A",
    "[",
    "]",
    "[\"",
    "\"]",
    "\", \"",
    "[1]",
    "=",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "<<\"EOF\"",
    "3<<EOF",
    "\nEOF\n",
    "\n\tEOF\n",
    "EOF",
    "--mount=type=cache,target=/x ",
    "--network=none ",
    "--from=",
    "--chown=",
    "--chmod=",
    "--link ",
    "--link=false ",
    "--parents ",
    "--exclude=",
    "--checksum=",
    "--keep-git-dir ",
    "--platform=",
    "--interval=",
    "--retries=",
    "--start-interval=",
    "-- ",
    "--",
    "1ms",
    "1.5h",
    "\u{feff}",
    "é",
    "\u{3000}",
    "\u{85}",
    "*",
    "**",
    "?",
    "!",
    "/",
    "./",
    "../",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn corpus(ext: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    names.sort();
    let files: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!files.is_empty(), "no *.{ext} in {}", dir.display());
    files
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let j = (i + 1 + rng.below(16)).min(len);
                input.drain(i..j);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let j = (i + 1 + rng.below(64)).min(len);
                let chunk = input[i..j].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    let j = (i + 1 + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[i..j].iter().copied());
                }
            }
            5..=7 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                // prefer line starts for keywords and directives
                let at = if rng.below(2) == 0 {
                    let starts: Vec<usize> = std::iter::once(0)
                        .chain(
                            input
                                .iter()
                                .enumerate()
                                .filter(|(_, b)| **b == b'\n')
                                .map(|(i, _)| i + 1),
                        )
                        .collect();
                    starts[rng.below(starts.len())]
                } else {
                    rng.below(len + 1)
                };
                input.splice(at..at, t.iter().copied());
            }
            _ if len > 0 => {
                // replace a line with a line from another file
                let other = &corpus[rng.below(corpus.len())];
                let lines: Vec<&[u8]> = other.split(|b| *b == b'\n').collect();
                let line = lines[rng.below(lines.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, line.iter().copied().chain([b'\n']));
            }
            _ => {}
        }
    }
    input.truncate(MAX_INPUT);
}

fn env_lookup(name: &str) -> Option<String> {
    match name {
        "A" => Some("a value".into()),
        "EMPTY" => Some(String::new()),
        "P" => Some("/usr/local/bin:/usr/bin".into()),
        "HOME" => Some("/root".into()),
        "Q" => Some("it's \"quoted\" $A \\".into()),
        _ => None,
    }
}

/// Lines as Docker counts them: a final line without a newline counts too.
fn line_count(src: &[u8]) -> usize {
    let n = src.iter().filter(|b| **b == b'\n').count();
    if src.last().is_some_and(|b| *b != b'\n') {
        n + 1
    } else {
        n
    }
}

fn words_of(i: &Instruction) -> Vec<String> {
    let mut w = Vec::new();
    match i {
        Instruction::Env(kv) | Instruction::Label(kv) => {
            for p in kv {
                w.push(p.key.clone());
                w.push(p.value.clone());
            }
        }
        Instruction::Arg(args) => {
            for a in args {
                w.push(a.name.clone());
                w.extend(a.default.clone());
            }
        }
        Instruction::Copy(c) => {
            w.extend(c.sources.iter().cloned());
            w.push(c.dest.clone());
            w.extend(c.chown.clone());
            w.extend(c.from.clone());
            for h in &c.heredocs {
                w.push(h.content.clone());
            }
        }
        Instruction::Add(a) => {
            w.extend(a.sources.iter().cloned());
            w.push(a.dest.clone());
            w.extend(a.chown.clone());
        }
        Instruction::Expose(v) | Instruction::Volume(v) | Instruction::Shell(v) => {
            w.extend(v.iter().cloned())
        }
        Instruction::User(s)
        | Instruction::Workdir(s)
        | Instruction::Stopsignal(s)
        | Instruction::Maintainer(s)
        | Instruction::Onbuild(s) => w.push(s.clone()),
        Instruction::Run(r) => {
            if let CommandLine::Shell(s) = &r.command {
                w.push(s.clone());
            }
            for h in &r.heredocs {
                w.push(h.text());
            }
        }
        Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
            if let CommandLine::Shell(s) = c {
                w.push(s.clone());
            }
        }
        Instruction::Healthcheck(h) => w.extend(h.test()),
    }
    w
}

fn check_step(s: &Step, lines: usize, what: &str) {
    assert!(
        s.line >= 1 && s.line <= s.end_line && s.end_line <= lines,
        "{what}: step lines {}..{} outside 1..={lines}",
        s.line,
        s.end_line
    );
    assert_eq!(
        s.original,
        s.original.trim(),
        "{what}: original not trimmed"
    );
    if !matches!(s.instruction, Instruction::Onbuild(_)) {
        assert!(!s.original.contains('\n'), "{what}: newline in original");
    }
    let kw = s.instruction.keyword();
    assert!(
        s.original
            .get(..kw.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(kw)),
        "{what}: {:?} does not start with {kw}",
        s.original
    );
    if let Instruction::Healthcheck(Healthcheck::Cmd { retries, .. }) = &s.instruction {
        assert_ne!(*retries, Some(0));
    }
}

fn check_dockerfile(src: &[u8], df: &Dockerfile) {
    let lines = line_count(src);
    assert!(df.escape == '\\' || df.escape == '`');
    assert!(!df.stages.is_empty());
    let mut prev = 0;
    for st in &df.stages {
        assert!(st.line >= 1 && st.line <= lines && st.line > prev);
        prev = st.line;
        if let Some(n) = &st.name {
            assert!(n.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
        }
        for s in &st.instructions {
            check_step(s, lines, "step");
            assert!(s.line > prev, "steps in order");
            prev = s.end_line;
            if let Ok(Instruction::Expose(ports)) = s.instruction.expanded(&env_lookup, df.escape) {
                assert!(ports.iter().all(|p| !p.is_empty()));
            }
            for w in words_of(&s.instruction) {
                let _ = expand(&w, &env_lookup, df.escape);
                let _ = expand_words(&w, &env_lookup, df.escape);
            }
            if let Instruction::Onbuild(expr) = &s.instruction {
                let _ = parse_triggers(std::slice::from_ref(expr), df.escape);
            }
        }
    }
    for a in &df.meta_args {
        if let Some(d) = &a.default {
            let _ = expand(d, &env_lookup, df.escape);
        }
    }
}

fn one_input(src: &[u8], ignore_paths: &[&str]) {
    let lines = line_count(src);
    match parse(src) {
        Ok(df) => {
            check_dockerfile(src, &df);
            assert_eq!(parse(src).unwrap(), df, "parse is deterministic");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!e.message.is_empty());
            assert!(e.line <= lines.max(1), "error line {} > {lines}", e.line);
            match e.kind {
                ParseErrorKind::Syntax | ParseErrorKind::Instruction => {
                    assert!(e.line >= 1);
                    assert!(
                        msg.starts_with(&format!("dockerfile parse error line {}: ", e.line)),
                        "{msg}"
                    );
                }
                ParseErrorKind::NoInstructions | ParseErrorKind::NoStage => {}
            }
        }
    }
    // the same bytes as words to expand, and as a .dockerignore
    let text = String::from_utf8_lossy(src);
    for line in text.lines().take(64) {
        let _ = expand(line, &env_lookup, '\\');
        let _ = expand_words(line, &env_lookup, '`');
    }
    if let Ok(m) = Matcher::new(&text) {
        for p in ignore_paths {
            let _ = m.excluded(p);
            let _ = m.may_reinclude_under(p);
        }
        for line in text.lines().take(16) {
            let _ = m.excluded(line);
            let _ = m.may_reinclude_under(line);
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fuzz_parser_expand_and_dockerignore() {
    let mut corpus = corpus("Dockerfile");
    corpus.extend(corpus_ignore());
    let seeds = corpus.len();
    let seed = env_num("BERTH_FUZZ_SEED", 0x5eed_d0c4_e7f1_1e00);
    let iters = env_num("BERTH_FUZZ_ITERS", 6000);
    let budget = Duration::from_secs(env_num("BERTH_FUZZ_SECS", 20));
    let mut rng = Rng(seed | 1);
    let paths = [
        "a",
        "src/main.rs",
        "target/keep/x",
        "docs/README.md",
        ".git/HEAD",
        "./x.log",
        "/abs/path",
        "",
        "a/b/c/d/e/f/g.rs",
    ];
    let started = Instant::now();
    let mut done = 0u64;
    let mut slowest = Duration::ZERO;
    while done < iters && started.elapsed() < budget {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input, &corpus);
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| one_input(&input, &paths)));
        let took = t.elapsed();
        if let Err(p) = r {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "seed {seed:#x} iteration {done}: {why}\ninput: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        assert!(
            took < MAX_PER_INPUT,
            "seed {seed:#x} iteration {done}: took {took:?}\ninput: {:?}",
            String::from_utf8_lossy(&input)
        );
        slowest = slowest.max(took);
        // keep some mutants as seeds so changes accumulate
        if rng.below(8) == 0 && parse(&input).is_ok() {
            if corpus.len() >= seeds + 256 {
                let i = seeds + rng.below(corpus.len() - seeds);
                corpus.swap_remove(i);
            }
            corpus.push(input);
        }
        done += 1;
    }
    eprintln!(
        "fuzz: {done} inputs in {:?} (seed {seed:#x}, slowest {slowest:?})",
        started.elapsed()
    );
    assert!(done > 0);
}

fn corpus_ignore() -> Vec<Vec<u8>> {
    corpus("dockerignore")
}

#[test]
fn corpus_files_parse_or_fail_as_named() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|e| e != "Dockerfile") {
            continue;
        }
        let src = std::fs::read(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        match parse(&src) {
            Ok(df) => {
                assert!(!name.starts_with("errors"), "{name} parsed");
                check_dockerfile(&src, &df);
            }
            Err(e) => assert!(name.starts_with("errors"), "{name}: {e}"),
        }
    }
}

/// Inputs built to be slow for a naive parser: each must still be quick.
#[test]
fn pathological_inputs_are_bounded() {
    let mut cases: Vec<Vec<u8>> = vec![
        // 256 KiB of continuations
        b"FROM a\nRUN x \\\n"
            .iter()
            .copied()
            .chain(b"\\\n".repeat(128 * 1024))
            .collect(),
        // many unterminated heredocs on one line
        format!("FROM a\nRUN {}\n", "<<EOF ".repeat(20_000)).into_bytes(),
        // many heredocs, each terminated
        format!("FROM a\n{}", "RUN <<E\nx\nE\n".repeat(20_000)).into_bytes(),
        // deep JSON
        format!(
            "FROM a\nCMD {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .into_bytes(),
        // long quoted flag words
        format!("FROM a\nCOPY --from=\"{}\" a b\n", "x\\\"".repeat(100_000)).into_bytes(),
        // very many instructions
        "FROM a\nENV A=1 B=\"2 3\"\n".repeat(20_000).into_bytes(),
        // long ENV line of pairs
        format!("FROM a\nENV {}\n", "k=\"v v\" ".repeat(50_000)).into_bytes(),
        // comments and blank lines only inside a continuation
        format!("FROM a\nRUN a \\\n{}b\n", "# c\n\n".repeat(100_000)).into_bytes(),
    ];
    cases.push(vec![b'\n'; 256 * 1024]);
    for (i, c) in cases.iter().enumerate() {
        let t = Instant::now();
        let _ = parse(c);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(5), "case {i} took {took:?}");
    }
    let t = Instant::now();
    let deep = format!("{}x{}", "${A:-".repeat(100_000), "}".repeat(100_000));
    assert!(expand(&deep, &env_lookup, '\\').is_err());
    let _ = expand(&"${P//?/x}".repeat(200), &env_lookup, '\\');
    let _ = expand(&"'a'\"b\"\\c$A ".repeat(20_000), &env_lookup, '\\');
    let m = Matcher::new(&"**/a*b*c*d*e*/**\n!**/x*y*z\n".repeat(50)).unwrap();
    let long = "a/".repeat(500) + &"ab".repeat(500);
    let _ = m.excluded(&long);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
