//! The shim's view of berth-runtime: the calls it makes, with pids as
//! plain integers and errors reduced to a message and Docker's exit code.

pub use berth_runtime::Stdio;
pub use oci_spec::runtime::{Process, Spec};

/// A runtime failure: its message, and the exit code Docker reports for it
/// (127 not found, 126 not executable), if it has one.
#[derive(Debug)]
pub struct RtError {
    pub message: String,
    pub exit_code: Option<i32>,
}

impl std::fmt::Display for RtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<berth_runtime::RuntimeError> for RtError {
    fn from(e: berth_runtime::RuntimeError) -> RtError {
        RtError {
            exit_code: berth_runtime::exit_code_for(&e),
            message: e.message,
        }
    }
}

/// Start the container; the host pid of its init (a child of the shim).
pub fn start(id: &str, spec: &Spec, stdio: Stdio) -> Result<i32, RtError> {
    Ok(berth_runtime::start(id, spec, stdio)?.pid)
}

/// Start `process` in the running container whose init is `init_pid`.
pub fn exec(
    id: &str,
    spec: &Spec,
    init_pid: i32,
    process: &Process,
    stdio: Stdio,
) -> Result<i32, RtError> {
    Ok(berth_runtime::exec(id, spec, init_pid, process, stdio)?.pid)
}

/// A pty pair in the running container's devpts (for an exec with a tty).
pub fn container_pty(
    init_pid: i32,
) -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    berth_runtime::container_pty(init_pid).map_err(|e| std::io::Error::other(e.message))
}

pub fn freeze(spec: &Spec, frozen: bool) -> Result<(), RtError> {
    Ok(berth_runtime::freeze(spec, frozen)?)
}

pub fn oom_killed(spec: &Spec) -> bool {
    berth_runtime::cgroup_oom_killed(spec)
}

pub fn delete(spec: &Spec) -> Result<(), RtError> {
    Ok(berth_runtime::delete(spec)?)
}
