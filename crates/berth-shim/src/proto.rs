//! The shim's wire protocol on its unix socket (berthd is the only client).
//!
//! Every connection starts with one request: a JSON object on one line,
//! ending in `\n`. The shim answers with one JSON line ([`Response`]); after
//! an `attach` or a non-detached `exec` the connection then carries the
//! process's stdio (raw bytes with a tty, else [`crate::mux`] frames towards
//! the client; raw stdin bytes from the client, whose read-EOF closes stdin).
//!
//! The schema is append-only (STYLE 15): fields and ops are added, never
//! renumbered, renamed or repurposed; unknown request fields are ignored.
//! [`PROTOCOL_VERSION`] counts additions and is reported by `version`.
//!
//! | request | answer |
//! |---|---|
//! | `{"op":"version"}` | `{"protocol":1,"version":"0.1.0"}` |
//! | `{"op":"state"}` | `{"pid":N,"running":true,"paused":false}` or `{"pid":N,"running":false,"exit_code":C,"finished_at":T,"oom_killed":B,"paused":false}` |
//! | `{"op":"attach","stdin":B,"stdout":B,"stderr":B}` | `{"ok":true}`, then the stream |
//! | `{"op":"resize","height":H,"width":W}` | `{"ok":true}` |
//! | `{"op":"kill","signal":N}` | `{"ok":true}` |
//! | `{"op":"wait"}` | once exited: `{"exit_code":C,"finished_at":T,"oom_killed":B}` |
//! | `{"op":"exec","exec_id":S,"process":P,"tty":B,"stdin":B,"stdout":B,"stderr":B,"detach":B}` | `{"pid":N}` (then the stream unless detach) or `{"error":M,"exit_code":126\|127}` |
//! | `{"op":"exec_state","exec_id":S}` | `{"pid":N,"running":true}` or `{"pid":N,"running":false,"exit_code":C}` |
//! | `{"op":"exec_resize","exec_id":S,"height":H,"width":W}` | `{"ok":true}` |
//! | `{"op":"pause"}`, `{"op":"resume"}` | `{"ok":true}` |
//! | `{"op":"shutdown"}` | `{"ok":true}`, then the shim exits |
//!
//! Any request may instead be answered `{"error":"message"}`.

use serde::{Deserialize, Serialize};

/// Version of this protocol: 1 is the first.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line accepted (an exec's process with its environment).
pub const MAX_REQUEST: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Version,
    State,
    Attach(Attach),
    Resize(Resize),
    Kill(Kill),
    Wait,
    Exec(Box<Exec>),
    ExecState(ExecRef),
    ExecResize(ExecResize),
    Pause,
    Resume,
    Shutdown,
}

/// Which streams to connect; all default to false.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attach {
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resize {
    pub height: u16,
    pub width: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    pub signal: i32,
}

/// Start a process in the running container. `process` is an OCI runtime
/// spec `Process` object; its `terminal` is overridden by `tty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exec {
    pub exec_id: String,
    pub process: serde_json::Value,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
    #[serde(default)]
    pub detach: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRef {
    pub exec_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResize {
    pub exec_id: String,
    pub height: u16,
    pub width: u16,
}

/// Every answer: the fields that apply are present, the others omitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Response {
    pub fn ok() -> Response {
        Response {
            ok: Some(true),
            ..Default::default()
        }
    }
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            error: Some(message.into()),
            ..Default::default()
        }
    }
    /// The answer as one line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        v.push(b'\n');
        v
    }
}

/// How the container's init ended: the content of `exit.json` and the
/// answer to `wait`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub exit_code: i32,
    pub finished_at: String,
    pub oom_killed: bool,
}

impl From<&ExitStatus> for Response {
    fn from(e: &ExitStatus) -> Response {
        Response {
            exit_code: Some(e.exit_code),
            finished_at: Some(e.finished_at.clone()),
            oom_killed: Some(e.oom_killed),
            ..Default::default()
        }
    }
}

/// Parse one request line (without or with its `\n`).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| format!("invalid request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Request {
        parse_request(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_every_op() {
        assert_eq!(p(r#"{"op":"state"}"#), Request::State);
        assert_eq!(p("{\"op\":\"wait\"}\n"), Request::Wait);
        assert_eq!(p(r#"{"op":"version"}"#), Request::Version);
        assert_eq!(p(r#"{"op":"pause"}"#), Request::Pause);
        assert_eq!(p(r#"{"op":"resume"}"#), Request::Resume);
        assert_eq!(p(r#"{"op":"shutdown"}"#), Request::Shutdown);
        assert_eq!(
            p(r#"{"op":"attach","stdin":true,"stdout":true}"#),
            Request::Attach(Attach {
                stdin: true,
                stdout: true,
                stderr: false
            })
        );
        assert_eq!(
            p(r#"{"op":"resize","height":40,"width":120}"#),
            Request::Resize(Resize {
                height: 40,
                width: 120
            })
        );
        assert_eq!(
            p(r#"{"op":"kill","signal":9}"#),
            Request::Kill(Kill { signal: 9 })
        );
        assert_eq!(
            p(r#"{"op":"exec_state","exec_id":"e1"}"#),
            Request::ExecState(ExecRef {
                exec_id: "e1".into()
            })
        );
        assert_eq!(
            p(r#"{"op":"exec_resize","exec_id":"e1","height":1,"width":2}"#),
            Request::ExecResize(ExecResize {
                exec_id: "e1".into(),
                height: 1,
                width: 2
            })
        );
        let Request::Exec(e) = p(
            r#"{"op":"exec","exec_id":"e1","process":{"args":["echo","hi"],"cwd":"/"},"stdout":true,"detach":false}"#,
        ) else {
            panic!("not an exec")
        };
        assert_eq!(e.exec_id, "e1");
        assert_eq!(e.process["args"][1], "hi");
        assert!(e.stdout && !e.stdin && !e.tty && !e.detach);
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        assert_eq!(p(r#"{"op":"state","v":2,"extra":[1]}"#), Request::State);
    }

    #[test]
    fn rejects_garbage() {
        assert!(
            parse_request(b"{\"op\":\"fly\"}")
                .unwrap_err()
                .contains("unknown variant")
        );
        assert!(parse_request(b"{\"signal\":9}").is_err());
        assert!(parse_request(b"{\"op\":\"kill\"}").is_err());
        assert!(parse_request(b"{\"op\":\"resize\",\"height\":-1,\"width\":2}").is_err());
        assert!(parse_request(b"not json").is_err());
    }

    #[test]
    fn responses_serialize_only_present_fields() {
        let r = Response {
            pid: Some(42),
            running: Some(true),
            ..Default::default()
        };
        assert_eq!(r.to_line(), b"{\"pid\":42,\"running\":true}\n");
        assert_eq!(Response::ok().to_line(), b"{\"ok\":true}\n");
        let e = Response {
            exit_code: Some(127),
            ..Response::error("not found")
        };
        assert_eq!(
            e.to_line(),
            b"{\"error\":\"not found\",\"exit_code\":127}\n"
        );
        let x = ExitStatus {
            exit_code: 137,
            finished_at: "2026-11-27T22:14:26Z".into(),
            oom_killed: false,
        };
        assert_eq!(
            serde_json::to_string(&x).unwrap(),
            r#"{"exit_code":137,"finished_at":"2026-11-27T22:14:26Z","oom_killed":false}"#
        );
        assert_eq!(
            Response::from(&x).to_line(),
            b"{\"exit_code\":137,\"finished_at\":\"2026-11-27T22:14:26Z\",\"oom_killed\":false}\n"
        );
    }
}
