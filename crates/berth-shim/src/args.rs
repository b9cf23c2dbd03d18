//! The command line berthd starts the shim with (hand-parsed: no clap, to
//! keep the binary small).
//!
//! ```text
//! berth-shim --id ID --bundle DIR --socket PATH [--log-max-size 10m]
//!            [--log-max-file 3] [--no-log] [--ready-fd N] [--tty] [--stdin]
//!            [--stdin-once] [--attach-fd N [--attach-streams stdin,stdout,stderr]]
//! ```
//!
//! `--attach-fd` (an addition to the brief's command line) hands the shim an
//! already connected stream socket that becomes the first attach stream
//! before the container starts, so `docker run` without `-d` sees the
//! output from the first byte; `--attach-streams` says which streams it
//! carries (default `stdout,stderr`). It speaks the attach stream directly,
//! with no request or answer line.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::jsonlog::Rotation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    pub socket: PathBuf,
    pub rotation: Rotation,
    pub no_log: bool,
    pub ready_fd: Option<i32>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub attach: Option<AttachFd>,
}

/// The attach stream passed on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachFd {
    pub fd: i32,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

pub const USAGE: &str = "usage: berth-shim --id ID --bundle DIR --socket PATH [--log-max-size SIZE] \
[--log-max-file N] [--no-log] [--ready-fd N] [--tty] [--stdin] [--stdin-once] \
[--attach-fd N [--attach-streams stdin,stdout,stderr]]";

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let mut id = None;
    let mut bundle = None;
    let mut socket = None;
    let mut out = Args {
        id: String::new(),
        bundle: PathBuf::new(),
        socket: PathBuf::new(),
        rotation: Rotation {
            max_size: None,
            max_file: 1,
        },
        no_log: false,
        ready_fd: None,
        tty: false,
        stdin: false,
        stdin_once: false,
        attach: None,
    };
    let mut attach_fd = None;
    let mut attach_streams = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("invalid argument {a:?}"))?;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(OsString::from(v))),
            _ => (arg.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = OsString>| -> Result<OsString, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--id" => {
                let v = value(&mut it)?;
                let v = v.into_string().map_err(|_| "invalid --id".to_string())?;
                if v.is_empty() || v.contains('/') || v == "." || v == ".." {
                    return Err(format!("invalid container id {v:?}"));
                }
                id = Some(v);
            }
            "--bundle" => bundle = Some(PathBuf::from(value(&mut it)?)),
            "--socket" => {
                let v = value(&mut it)?;
                // sun_path holds 108 bytes including the terminating NUL.
                if v.as_bytes().len() >= 108 {
                    return Err(format!("socket path {v:?} is too long"));
                }
                socket = Some(PathBuf::from(v))
            }
            "--log-max-size" => {
                let v = value(&mut it)?;
                let v = v.to_string_lossy();
                let n = parse_size(&v).ok_or_else(|| format!("invalid --log-max-size {v:?}"))?;
                out.rotation.max_size = (n > 0).then_some(n);
            }
            "--log-max-file" => {
                let v = value(&mut it)?;
                let v = v.to_string_lossy();
                out.rotation.max_file = v
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("invalid --log-max-file {v:?}"))?;
            }
            "--ready-fd" => {
                let v = value(&mut it)?;
                let v = v.to_string_lossy();
                out.ready_fd = Some(
                    v.parse::<i32>()
                        .ok()
                        .filter(|&n| n > 2)
                        .ok_or_else(|| format!("invalid --ready-fd {v:?}"))?,
                );
            }
            "--attach-fd" => {
                let v = value(&mut it)?;
                let v = v.to_string_lossy();
                attach_fd = Some(
                    v.parse::<i32>()
                        .ok()
                        .filter(|&n| n > 2)
                        .ok_or_else(|| format!("invalid --attach-fd {v:?}"))?,
                );
            }
            "--attach-streams" => {
                let v = value(&mut it)?;
                let v = v.to_string_lossy();
                let mut sel = (false, false, false);
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    match s {
                        "stdin" => sel.0 = true,
                        "stdout" => sel.1 = true,
                        "stderr" => sel.2 = true,
                        _ => return Err(format!("invalid --attach-streams {v:?}")),
                    }
                }
                attach_streams = Some(sel);
            }
            "--no-log" | "--tty" | "--stdin" | "--stdin-once" if inline.is_some() => {
                return Err(format!("{name} takes no value"));
            }
            "--no-log" => out.no_log = true,
            "--tty" => out.tty = true,
            "--stdin" => out.stdin = true,
            "--stdin-once" => out.stdin_once = true,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    out.id = id.ok_or("--id is required")?;
    out.bundle = bundle.ok_or("--bundle is required")?;
    out.socket = socket.ok_or("--socket is required")?;
    match (attach_fd, attach_streams) {
        (Some(fd), sel) => {
            let (stdin, stdout, stderr) = sel.unwrap_or((false, true, true));
            if Some(fd) == out.ready_fd {
                return Err("--attach-fd and --ready-fd must differ".into());
            }
            out.attach = Some(AttachFd {
                fd,
                stdin,
                stdout,
                stderr,
            });
        }
        (None, Some(_)) => return Err("--attach-streams needs --attach-fd".into()),
        (None, None) => {}
    }
    Ok(out)
}

/// A size as Docker's `--log-opt max-size` takes it (go-units
/// `RAMInBytes`): a number, optionally with a fraction, and an optional
/// binary unit `k`, `m`, `g`, `t`, `p` (any case, with optional `b`/`ib`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(num_end);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    let v = num * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(OsString::from))
    }

    #[test]
    fn full_command_line() {
        let args = a(
            "--id c1 --bundle /b --socket /run/s.sock --log-max-size 10m --log-max-file 3 \
                      --ready-fd 5 --tty --stdin --stdin-once",
        )
        .unwrap();
        assert_eq!(args.id, "c1");
        assert_eq!(args.bundle, PathBuf::from("/b"));
        assert_eq!(args.socket, PathBuf::from("/run/s.sock"));
        assert_eq!(
            args.rotation,
            Rotation {
                max_size: Some(10 << 20),
                max_file: 3
            }
        );
        assert_eq!(args.ready_fd, Some(5));
        assert!(args.tty && args.stdin && args.stdin_once && !args.no_log);
    }

    #[test]
    fn defaults_and_equals_form() {
        let args = a("--id=c1 --bundle=/b --socket=/s --no-log").unwrap();
        assert_eq!(args.id, "c1");
        assert!(args.no_log && !args.tty && !args.stdin);
        assert_eq!(args.rotation.max_size, None);
        assert_eq!(args.rotation.max_file, 1);
        assert_eq!(args.ready_fd, None);
    }

    #[test]
    fn errors() {
        assert!(a("--bundle /b --socket /s").unwrap_err().contains("--id"));
        assert!(a("--id c --bundle /b --socket /s --bogus").is_err());
        assert!(a("--id c --bundle /b --socket").is_err());
        assert!(a("--id ../x --bundle /b --socket /s").is_err());
        assert!(a("--id c --bundle /b --socket /s --ready-fd 1").is_err());
        assert!(a("--id c --bundle /b --socket /s --log-max-file 0").is_err());
        assert!(a("--id c --bundle /b --socket /s --tty=yes").is_err());
        let long = format!("--id c --bundle /b --socket /{}", "x".repeat(120));
        assert!(a(&long).unwrap_err().contains("too long"));
    }

    #[test]
    fn attach_fd() {
        let args = a("--id c --bundle /b --socket /s --attach-fd 7").unwrap();
        assert_eq!(
            args.attach,
            Some(AttachFd {
                fd: 7,
                stdin: false,
                stdout: true,
                stderr: true
            })
        );
        let args = a("--id c --bundle /b --socket /s --attach-fd 7 --attach-streams stdin,stdout")
            .unwrap();
        let at = args.attach.unwrap();
        assert!(at.stdin && at.stdout && !at.stderr);
        assert!(a("--id c --bundle /b --socket /s --attach-streams stdout").is_err());
        assert!(a("--id c --bundle /b --socket /s --attach-fd 7 --attach-streams bogus").is_err());
        assert!(a("--id c --bundle /b --socket /s --attach-fd 7 --ready-fd 7").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("10k"), Some(10 << 10));
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("2 KiB"), Some(2048));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("10q"), None);
        assert_eq!(parse_size(""), None);
    }
}
