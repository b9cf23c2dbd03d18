//! The result of running a client command, with assertions that print
//! everything needed to understand a failure.

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

/// A finished command: what ran, how it ended, and what it printed.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to completion, feeding it `stdin` (or nothing).
    pub fn exec(mut cmd: Command, stdin: Option<&[u8]>) -> Run {
        let line = command_line(&cmd);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
        let out = std::thread::scope(|s| {
            if let Some(input) = stdin {
                let mut pipe = child.stdin.take().expect("piped stdin");
                // Fed from another thread so a client that writes output
                // before it has read all its input cannot deadlock us. A
                // client may stop reading early (and fail): its output says
                // why, so a write error here is not worth reporting.
                s.spawn(move || {
                    let _ = pipe.write_all(input);
                });
            }
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("waiting for {line}: {e}"));
        Run {
            cmd: line,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Asserts the command succeeded; returns its stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.success(), "command failed:\n{self}");
        &self.stdout
    }

    /// Asserts the command failed; returns its stderr.
    #[track_caller]
    pub fn fails(&self) -> &str {
        assert!(
            !self.success(),
            "command succeeded but should have failed:\n{self}"
        );
        &self.stderr
    }

    /// Asserts the command failed with exit code `code`; returns its stderr.
    #[track_caller]
    pub fn fails_with(&self, code: i32) -> &str {
        assert_eq!(self.code(), code, "unexpected exit code:\n{self}");
        &self.stderr
    }

    /// Non-empty lines of stdout, trimmed at the end.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmd)?;
        writeln!(f, "exit: {}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// `program arg arg …` with the environment variables the harness set.
pub fn command_line(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

fn quote(a: &OsStr) -> String {
    let a = a.to_string_lossy();
    if !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}
