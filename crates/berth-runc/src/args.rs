//! runc's command line: `berth-runc [global flags] COMMAND [flags] [ID] [ARGS]`.
//! Flags are `--name value`, `--name=value` or a short alias; boolean flags
//! take no value. Parsing stops taking flags after `--` or, for `exec`, at
//! the first argument after the container ID.

use std::collections::HashMap;

pub const USAGE: &str = "usage: berth-runc [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND [FLAGS] ID [ARGS]
commands: create, start, run, state, kill, delete, exec, list, ps, pause, resume, update, events --stats, features; --version";

/// Global flags: (name, takes a value).
const GLOBAL: &[(&str, bool)] = &[
    ("root", true),
    ("log", true),
    ("log-format", true),
    ("criu", true),
    ("rootless", true),
    ("debug", false),
    ("systemd-cgroup", false),
    ("version", false),
    ("help", false),
];

/// Command flags: (long, short, takes a value).
const FLAGS: &[(&str, &str, bool)] = &[
    ("bundle", "b", true),
    ("pid-file", "", true),
    ("console-socket", "", true),
    ("preserve-fds", "", true),
    ("no-pivot", "", false),
    ("no-new-keyring", "", false),
    ("detach", "d", false),
    ("keep", "", false),
    ("all", "a", false),
    ("force", "f", false),
    ("process", "p", true),
    ("tty", "t", false),
    ("cwd", "", true),
    ("env", "e", true),
    ("user", "u", true),
    ("additional-gids", "g", true),
    ("cap", "c", true),
    ("no-new-privs", "", false),
    ("process-label", "", true),
    ("apparmor", "", true),
    ("format", "f", true),
    ("quiet", "q", false),
    ("resources", "r", true),
    ("memory", "m", true),
    ("memory-swap", "", true),
    ("cpu-quota", "", true),
    ("cpu-period", "", true),
    ("cpu-share", "", true),
    ("pids-limit", "", true),
    ("stats", "", false),
    ("interval", "", true),
    ("ignore-paused", "", false),
];

#[derive(Debug, Default)]
pub struct Parsed {
    globals: HashMap<String, Option<String>>,
    pub command: Option<String>,
    flags: Vec<(String, Option<String>)>,
    /// The container ID, then the rest (kill's signal, exec's command).
    pub positional: Vec<String>,
}

impl Parsed {
    pub fn global(&self, name: &str) -> Option<&str> {
        self.globals.get(name).and_then(|v| v.as_deref())
    }
    pub fn global_flag(&self, name: &str) -> bool {
        self.globals.contains_key(name)
    }
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
    pub fn flag(&self, name: &str) -> bool {
        self.flags
            .iter()
            .any(|(n, v)| n == name && v.as_deref() != Some("false"))
    }
    pub fn id(&self) -> Result<&str, crate::Fail> {
        self.positional
            .first()
            .map(String::as_str)
            .ok_or_else(|| crate::Fail("a container ID is required".into()))
    }
}

fn command_flag<'a>(name: &str, command: &str) -> Option<(&'a str, bool)> {
    // `-f` is --force for delete and --format for list/ps.
    let format_cmd = matches!(command, "list" | "ps" | "state");
    FLAGS
        .iter()
        .find(|(l, s, _)| {
            (*l == name || (!s.is_empty() && *s == name))
                && !(name == "f" && ((*l == "force") == format_cmd))
        })
        .map(|(l, _, v)| (*l, *v))
}

pub fn parse(argv: &[String]) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut i = 0;
    // Global flags.
    while i < argv.len() && argv[i].starts_with('-') && argv[i] != "-" {
        let a = argv[i].trim_start_matches('-');
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a, None),
        };
        let name = if name == "v" { "version" } else { name };
        let Some((_, takes)) = GLOBAL.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown global flag {}\n{USAGE}", argv[i]));
        };
        let value = if *takes && inline.is_none() {
            i += 1;
            Some(
                argv.get(i)
                    .cloned()
                    .ok_or_else(|| format!("flag --{name} needs a value"))?,
            )
        } else {
            inline
        };
        p.globals.insert(name.to_string(), value);
        i += 1;
    }
    let Some(cmd) = argv.get(i) else {
        return Ok(p);
    };
    p.command = Some(cmd.clone());
    i += 1;
    let mut flags_done = false;
    while i < argv.len() {
        let a = &argv[i];
        if !flags_done && a == "--" {
            flags_done = true;
            i += 1;
            continue;
        }
        if !flags_done && a.starts_with('-') && a.len() > 1 {
            let s = a.trim_start_matches('-');
            let (name, inline) = match s.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (s, None),
            };
            let Some((long, takes)) = command_flag(name, cmd) else {
                return Err(format!("unknown flag {a} for {cmd}"));
            };
            let value = if takes && inline.is_none() {
                i += 1;
                Some(
                    argv.get(i)
                        .cloned()
                        .ok_or_else(|| format!("flag --{long} needs a value"))?,
                )
            } else {
                inline
            };
            p.flags.push((long.to_string(), value));
            i += 1;
            continue;
        }
        p.positional.push(a.clone());
        // exec's command line (after the ID) is the container's.
        if cmd == "exec" && p.positional.len() == 1 {
            flags_done = true;
            // runc allows flags before the ID only; what follows is argv.
        }
        i += 1;
    }
    Ok(p)
}

/// Columns aligned as Go's tabwriter (min width 12, padding 3) does for runc list.
pub fn tabulate(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0; cols];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}", width = w[i].max(9) + 3));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parsed {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn engines_command_lines() {
        let x =
            p("--root /run/x --log /l.json --log-format json create --bundle /b --pid-file /p c1");
        assert_eq!(x.global("root"), Some("/run/x"));
        assert_eq!(x.global("log-format"), Some("json"));
        assert_eq!(x.command.as_deref(), Some("create"));
        assert_eq!(x.value("bundle"), Some("/b"));
        assert_eq!(x.positional, ["c1"]);
        let x = p("kill c1 KILL");
        assert_eq!(x.positional, ["c1", "KILL"]);
        let x = p("delete -f c1");
        assert!(x.flag("force"));
        let x = p("list -f json");
        assert_eq!(x.value("format"), Some("json"));
        let x = p("exec -t --env A=1 -e B=2 c1 sh -c true");
        assert!(x.flag("tty"));
        assert_eq!(x.values("env"), ["A=1", "B=2"]);
        assert_eq!(x.positional, ["c1", "sh", "-c", "true"]);
        let x = p("exec --process=/p.json --detach --pid-file /x c1");
        assert_eq!(x.value("process"), Some("/p.json"));
        assert!(x.flag("detach"));
        assert!(parse(&["--nope".into()]).is_err());
    }
}
