//! libFuzzer target: `.dockerignore` patterns and paths must never panic.
//! The input is split at the first NUL: patterns before, paths after.
#![no_main]

use berth_dockerfile::dockerignore::Matcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (patterns, paths) = text.split_once('\0').unwrap_or((&text, "a/b/c"));
    if let Ok(m) = Matcher::new(patterns) {
        for p in paths.split('\n') {
            let ex = m.excluded(p);
            if ex && !m.may_reinclude_under(p) {
                // a walker skips such a directory: nothing below may be included
                assert!(m.excluded(&format!("{p}/x")), "{patterns:?} {p:?}");
            }
        }
    }
});
