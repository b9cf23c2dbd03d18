//! Talking to a container's `berth-shim`: spawn it, read its readiness, and
//! the request/stream protocol on its unix socket (one JSON request line,
//! one JSON answer line, then for attach/exec a byte stream).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use berth_types::{Error, ErrorKind, Result};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How to start a shim.
pub struct ShimLaunch<'a> {
    pub binary: &'a Path,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub socket: &'a Path,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub log_max_size: Option<&'a str>,
    pub log_max_file: Option<&'a str>,
    /// The `none` log driver: output goes to attached clients only.
    pub no_log: bool,
    /// An attach stream opened before the start (`docker run` attaches
    /// first), handed to the shim so no output is missed: the socket and
    /// which of stdin, stdout, stderr it carries.
    pub attach: Option<(std::os::unix::net::UnixStream, [bool; 3])>,
}

/// Shim spawns are serialised: the fds a shim inherits are made inheritable
/// only for the moment of its spawn, so no other child takes them along.
static SPAWN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn inheritable(fd: &impl std::os::fd::AsFd) -> Result<i32> {
    use std::os::fd::AsRawFd;
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
        .map_err(|e| Error::internal(format!("fcntl: {e}")))?;
    Ok(fd.as_fd().as_raw_fd())
}

/// What the shim reports once the container's init ran (or failed).
pub enum Ready {
    Started { pid: i32 },
    Failed { message: String, exit_code: i32 },
}

/// Start a shim and wait for its readiness line. The shim detaches itself
/// (own session, reparented), so it outlives berthd.
pub async fn spawn(l: ShimLaunch<'_>) -> Result<Ready> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::internal(format!("pipe: {e}")))?;
    let mut cmd = tokio::process::Command::new(l.binary);
    cmd.arg("--id")
        .arg(l.id)
        .arg("--bundle")
        .arg(l.bundle)
        .arg("--socket")
        .arg(l.socket);
    let guard = SPAWN.lock().await;
    cmd.arg("--ready-fd").arg(inheritable(&w)?.to_string());
    if let Some((sock, [i, o, e])) = &l.attach {
        cmd.arg("--attach-fd").arg(inheritable(sock)?.to_string());
        let streams: Vec<&str> = [(*i, "stdin"), (*o, "stdout"), (*e, "stderr")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        cmd.arg("--attach-streams").arg(streams.join(","));
    }
    if l.tty {
        cmd.arg("--tty");
    }
    if l.stdin {
        cmd.arg("--stdin");
    }
    if l.stdin_once {
        cmd.arg("--stdin-once");
    }
    if let Some(s) = l.log_max_size {
        cmd.arg("--log-max-size").arg(s);
    }
    if let Some(f) = l.log_max_file {
        cmd.arg("--log-max-file").arg(f);
    }
    if l.no_log {
        cmd.arg("--no-log");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let spawned = cmd.spawn();
    // Our copies close now, so only the shim holds these ends.
    drop(cmd);
    drop(w);
    drop(l.attach);
    drop(guard);
    let mut child =
        spawned.map_err(|e| Error::internal(format!("start shim {}: {e}", l.binary.display())))?;
    let file = tokio::fs::File::from_std(std::fs::File::from(r));
    let mut line = String::new();
    let read = BufReader::new(file).read_line(&mut line).await;
    // The shim's first process exits once it has daemonized.
    let _ = child.wait().await;
    read.map_err(|e| Error::internal(format!("read shim readiness: {e}")))?;
    let v: Value = serde_json::from_str(line.trim()).map_err(|_| {
        Error::internal(format!(
            "shim for {} failed to start (readiness: {:?})",
            l.id,
            line.trim()
        ))
    })?;
    if let Some(pid) = v["pid"].as_i64() {
        return Ok(Ready::Started { pid: pid as i32 });
    }
    Ok(Ready::Failed {
        message: v["error"].as_str().unwrap_or("shim failed").to_string(),
        exit_code: v["exit_code"].as_i64().unwrap_or(125) as i32,
    })
}

/// A connection to a shim socket.
pub struct ShimConn {
    pub stream: BufReader<UnixStream>,
}

fn unavailable(socket: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("shim {}: {e}", socket.display()),
    )
}

impl ShimConn {
    pub async fn connect(socket: &Path) -> Result<ShimConn> {
        let s = UnixStream::connect(socket)
            .await
            .map_err(|e| unavailable(socket, e))?;
        Ok(ShimConn {
            stream: BufReader::new(s),
        })
    }

    /// Send one request and read its one-line answer; `{"error": …}` becomes an Err.
    pub async fn call(&mut self, req: &Value) -> Result<Value> {
        let mut line = serde_json::to_vec(req).expect("json");
        line.push(b'\n');
        let s = self.stream.get_mut();
        s.write_all(&line)
            .await
            .map_err(|e| Error::internal(format!("shim request: {e}")))?;
        let mut answer = String::new();
        self.stream
            .read_line(&mut answer)
            .await
            .map_err(|e| Error::internal(format!("shim answer: {e}")))?;
        if answer.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "shim closed the connection",
            ));
        }
        let v: Value = serde_json::from_str(answer.trim())
            .map_err(|e| Error::internal(format!("shim answer {answer:?}: {e}")))?;
        if let Some(e) = v["error"].as_str() {
            return Err(Error::new(ErrorKind::InvalidArgument, e.to_string()));
        }
        Ok(v)
    }

    /// The raw stream after an attach/exec answer (any bytes already
    /// buffered are returned too).
    pub fn into_stream(self) -> (Vec<u8>, UnixStream) {
        let buffered = self.stream.buffer().to_vec();
        (buffered, self.stream.into_inner())
    }
}

/// One request on a fresh connection.
pub async fn call(socket: &Path, req: Value) -> Result<Value> {
    ShimConn::connect(socket).await?.call(&req).await
}

pub async fn kill(socket: &Path, signal: i32) -> Result<()> {
    call(socket, json!({"op": "kill", "signal": signal}))
        .await
        .map(|_| ())
}

/// The recorded exit of a container whose shim is gone.
pub fn read_exit(bundle: &Path) -> Option<Value> {
    std::fs::read(bundle.join("exit.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn socket_path(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join("shims").join(format!("{}.sock", &id[..16]))
}

/// Drain and discard (used to detect a closed stream).
pub async fn read_to_end(mut s: UnixStream) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v).await;
    v
}
