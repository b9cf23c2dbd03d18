//! A container's state directory, `<root>/<id>/`: `state.json` (pid, the
//! pid's start time so a reused pid is not mistaken for the container,
//! bundle, created), `config.json` (the spec as created, root made
//! absolute) and `exec.fifo` while the container is created but not
//! started.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::Fail;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat when the container was created.
    pub start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    #[serde(skip)]
    dir: PathBuf,
}

/// A process's state letter and start time, from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl State {
    pub fn new(root: &Path, id: &str, pid: i32, bundle: &Path, spec: &Spec) -> Result<State, Fail> {
        let (_, start_time) =
            proc_stat(pid).ok_or_else(|| Fail(format!("container init {pid} is gone")))?;
        Ok(State {
            id: id.to_string(),
            pid,
            start_time,
            bundle: bundle.to_path_buf(),
            rootfs: spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_default(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            annotations: spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            dir: root.join(id),
        })
    }

    pub fn save(&self, root: &Path) -> Result<(), Fail> {
        write_atomic(
            &root.join(&self.id).join("state.json"),
            &serde_json::to_vec(self)?,
        )
    }

    pub fn load(root: &Path, id: &str) -> Result<State, Fail> {
        check_id(id)?;
        let dir = root.join(id);
        let text = match std::fs::read(dir.join("state.json")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Fail(format!("container {id} does not exist")));
            }
            Err(e) => return Err(Fail(format!("read state of {id}: {e}"))),
        };
        let mut st: State = serde_json::from_slice(&text)?;
        st.dir = dir;
        Ok(st)
    }

    pub fn spec(&self) -> Result<Spec, Fail> {
        let p = self.dir.join("config.json");
        Spec::load(&p).map_err(|e| Fail(format!("load {}: {e}", p.display())))
    }

    /// Whether the container's init still runs (not a zombie, not a new
    /// process that got the same pid).
    pub fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((s, t)) if s != 'Z' && s != 'X' && t == self.start_time)
    }

    pub fn status(&self) -> Status {
        if !self.alive() {
            Status::Stopped
        } else if self.dir.join("exec.fifo").exists() {
            Status::Created
        } else if self.spec().is_ok_and(|s| berth_runtime::is_frozen(&s)) {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// runc's `state` output (the OCI state plus rootfs, created, owner).
    pub fn to_oci(&self) -> serde_json::Value {
        let status = self.status();
        let mut v = serde_json::json!({
            "ociVersion": crate::SPEC_VERSION,
            "id": self.id,
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "status": status.word(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
        });
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::json!(self.annotations);
        }
        v
    }

    pub fn to_list_json(&self) -> serde_json::Value {
        self.to_oci()
    }
}

/// runc's container ID rule.
pub fn check_id(id: &str) -> Result<(), Fail> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Fail(format!("invalid id format: {id}")))
    }
}

/// A signal by name (`KILL`, `SIGKILL`) or number.
pub fn parse_signal(s: &str) -> Result<i32, Fail> {
    berth_runtime::signal_number(s).ok_or_else(|| Fail(format!("unknown signal {s:?}")))
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Fail> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| Fail(format!("write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Fail(format!("rename to {}: {e}", path.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_signals() {
        assert!(check_id("abc_1.2-x+y").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("..").is_err());
        assert_eq!(parse_signal("KILL").ok(), Some(9));
        assert_eq!(parse_signal("sigterm").ok(), Some(15));
        assert_eq!(parse_signal("10").ok(), Some(10));
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }
}
