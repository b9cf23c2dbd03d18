//! libFuzzer target: the Dockerfile parser and expansion must never panic,
//! and a parse must keep its line numbers inside the input.
#![no_main]

use berth_dockerfile::{CommandLine, Instruction, expand, expand_words, parse, parse_triggers};
use libfuzzer_sys::fuzz_target;

fn lookup(name: &str) -> Option<String> {
    match name {
        "A" => Some("a value".into()),
        "EMPTY" => Some(String::new()),
        "P" => Some("/usr/local/bin".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|b| *b == b'\n').count();
    match parse(data) {
        Ok(df) => {
            for st in &df.stages {
                assert!(st.line >= 1 && st.line <= lines);
                for s in &st.instructions {
                    assert!(s.line >= 1 && s.line <= s.end_line && s.end_line <= lines);
                    let _ = s.instruction.expanded(&lookup, df.escape);
                    let words: Vec<String> = match &s.instruction {
                        Instruction::Env(kv) | Instruction::Label(kv) => kv
                            .iter()
                            .flat_map(|p| [p.key.clone(), p.value.clone()])
                            .collect(),
                        Instruction::Copy(c) => c.sources.clone(),
                        Instruction::Add(a) => a.sources.clone(),
                        Instruction::Workdir(w) | Instruction::User(w) => vec![w.clone()],
                        Instruction::Onbuild(e) => {
                            let _ = parse_triggers(std::slice::from_ref(e), df.escape);
                            vec![]
                        }
                        Instruction::Run(r) => match &r.command {
                            CommandLine::Shell(s) => vec![s.clone()],
                            CommandLine::Exec(v) => v.clone(),
                        },
                        _ => vec![],
                    };
                    for w in words {
                        let _ = expand(&w, &lookup, df.escape);
                        let _ = expand_words(&w, &lookup, df.escape);
                    }
                }
            }
        }
        Err(e) => {
            assert!(e.line <= lines);
            let _ = e.to_string();
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = expand(s, &lookup, '\\');
        let _ = expand_words(s, &lookup, '`');
    }
});
