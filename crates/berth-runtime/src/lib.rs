//! berth-runtime: the OCI runtime library — an OCI runtime spec (config.json)
//! in, a running container process out.
//!
//! Owns: namespaces (new or joined by path), the rootfs view (spec mounts,
//! /dev, pivot_root, masked and read-only paths), cgroups v1/hybrid/v2
//! (create, limit, join, freeze, delete), capabilities, seccomp, rlimits,
//! user/groups, no_new_privileges, and exec into a running container by
//! setns. Also Docker's defaults berthd puts into specs (capabilities,
//! seccomp profile, masked and read-only paths).
//!
//! Must not: spawn threads or use an async runtime (it forks from its
//! caller, the single-threaded `berth-shim`, and later `berth-runc`); mount
//! or unmount the container's rootfs itself (berthd does); touch cgroups
//! other than the container's own; reap or signal processes it did not
//! start; raise hard rlimits above the caller's (no CAP_SYS_RESOURCE here).
//!
//! Process model: `start` and `exec` plan everything in the caller (spec
//! errors come back before any fork), switch the calling thread's
//! pid_for_children to the container's PID namespace (new or joined),
//! fork, and switch it back. The child — a direct child of the caller,
//! PID 1 of a new namespace for `start` — joins the container's v1 cgroups
//! itself (it is cloned into the v2 one when the caller is single-threaded,
//! else the parent moves it there), waits on a close-on-exec socketpair
//! until it is in all of them, then builds the container and execs. An execve that succeeds closes the
//! socket with nothing written; any failure before it is sent back as one
//! error record. See `launch.rs` and `sync.rs`.
//!
//! Hooks that run in the runtime's namespaces are the caller's (berth-runc
//! runs them around `start_with`).
//!
//! Not supported yet: user and time namespaces, joining a mount namespace,
//! createContainer and startContainer hooks, cgroup v2 device rules (an eBPF program), systemd cgroup paths,
//! idmapped mounts, SCMP_ACT_NOTIFY, seccomp for a second (compat) ABI.
#![deny(unsafe_op_in_unsafe_fn)]

use std::os::fd::OwnedFd;

mod capabilities;
mod cgroups;
mod launch;
mod process;
mod rootfs;
mod seccomp;
mod sync;
mod sys;

pub use berth_types::ErrorKind;
pub use capabilities::default_capabilities;
pub use oci_spec::runtime::{Capability, LinuxResources, LinuxSeccomp, Process, Spec};
pub use seccomp::seccomp_profile_for;

/// The runtime's error: berth's error type (a kind and a message written
/// for the user). Errors from the container's side of the fork (a failed
/// mount, a missing executable, ...) arrive with their own message.
pub type RuntimeError = berth_types::Error;

/// The container process's standard streams. For a terminal all three are
/// the pty slave (the shim opens the pty and keeps the master).
#[derive(Debug)]
pub struct Stdio {
    /// Becomes fd 0 of the container process.
    pub stdin: OwnedFd,
    /// Becomes fd 1.
    pub stdout: OwnedFd,
    /// Becomes fd 2.
    pub stderr: OwnedFd,
}

/// A started container process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Its PID in the caller's PID namespace. It is a child of the caller,
    /// which must reap it (waitpid).
    pub pid: i32,
}

/// Start the container described by `spec` (`root.path` absolute and already
/// mounted): fork into new namespaces, move into the container's cgroup
/// (created under `linux.cgroupsPath`, default `/berth/<id>`, with
/// `linux.resources` applied), set up mounts, /dev, pivot_root, hostname,
/// sysctls, read-only and masked paths, then rlimits, user, capabilities,
/// no_new_privileges and seccomp, and execve `process.args` (`args[0]` looked
/// up in the container's PATH).
///
/// Returns once execve succeeded, with the host PID of the container's
/// init; or the error that stopped it, in which case nothing is left
/// running and the cgroup is removed. The caller's thread is briefly moved
/// to another pid_for_children namespace around the fork and moved back.
pub fn start(id: &str, spec: &Spec, stdio: Stdio) -> Result<Started, RuntimeError> {
    launch::start(id, spec, stdio, &StartOptions::default())
}

/// What `start_with` adds to `start`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StartOptions<'a> {
    /// Stop just before the execve (everything else done, PATH looked up)
    /// until this fifo is opened for reading, as runc's `exec.fifo`: the
    /// call returns when the container is *created*; opening and reading
    /// the fifo later *starts* it. It must exist (mkfifo) beforehand.
    pub exec_fifo: Option<&'a std::path::Path>,
    /// Keep the caller's fds 3 .. 3+N open in the container (runc's
    /// `--preserve-fds`).
    pub preserve_fds: u32,
}

/// `start` with options: a created-but-not-started container, inherited
/// fds.
pub fn start_with(
    id: &str,
    spec: &Spec,
    stdio: Stdio,
    opts: &StartOptions<'_>,
) -> Result<Started, RuntimeError> {
    launch::start(id, spec, stdio, opts)
}

/// Run `process` inside the running container whose init is `init_pid`:
/// join its namespaces (pid, ipc, uts, net, cgroup, mount — those that
/// differ from the caller's), its cgroups, its root, and apply `process`'s
/// user, capabilities, rlimits and no_new_privileges, plus the spec's
/// seccomp profile, then execve. Returns the new process's host PID (a child
/// of the caller) once execve succeeded.
///
/// Do not exec into a frozen (paused) container: the new process would
/// freeze as soon as it joins the cgroup, before it can exec, and this call
/// would wait for the thaw. Docker refuses exec on paused containers.
pub fn exec(
    id: &str,
    spec: &Spec,
    init_pid: i32,
    process: &Process,
    stdio: Stdio,
) -> Result<Started, RuntimeError> {
    launch::exec(id, spec, init_pid, process, stdio)
}

fn spec_cgroup(spec: &Spec) -> Result<cgroups::Cgroup, RuntimeError> {
    cgroups::Cgroup::resolve(&cgroups::spec_path(spec, None)?)
}

/// Freeze (pause) or thaw (unpause) every process of the container, through
/// the v1 freezer or cgroup v2's cgroup.freeze, waiting until the kernel
/// reports the new state. Needs `linux.cgroupsPath` in the spec.
pub fn freeze(spec: &Spec, frozen: bool) -> Result<(), RuntimeError> {
    spec_cgroup(spec)?.freeze(frozen)
}

/// A pty pair made in the devpts of the running container whose init is
/// `init_pid` (through `/proc/<pid>/root/dev/pts/ptmx`): `(master, slave)`,
/// both close-on-exec. An exec'd process with a terminal gets the slave, so
/// that its name (`tty`) resolves inside the container, as with runc.
pub fn container_pty(init_pid: i32) -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    use rustix::fs::{Mode, OFlags};
    let ptmx = format!("/proc/{init_pid}/root/dev/pts/ptmx");
    let master = rustix::fs::open(
        ptmx.as_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys::os_err(format!("open {ptmx}"), e))?;
    rustix::pty::unlockpt(&master).map_err(|e| sys::os_err("unlockpt", e))?;
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR
            | rustix::pty::OpenptFlags::NOCTTY
            | rustix::pty::OpenptFlags::CLOEXEC,
    )
    .map_err(|e| sys::os_err("open the pty's slave (TIOCGPTPEER)", e))?;
    Ok((master, slave))
}

/// Whether the container's cgroup is frozen (paused).
pub fn is_frozen(spec: &Spec) -> bool {
    spec_cgroup(spec).map(|c| c.is_frozen()).unwrap_or(false)
}

/// A container's resource usage from its cgroup (None where the host's
/// cgroups do not say).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_usage_ns: Option<u64>,
    pub cpu_user_ns: Option<u64>,
    pub cpu_kernel_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_max_usage: Option<u64>,
    /// None when unlimited.
    pub memory_limit: Option<u64>,
    pub memory_failcnt: Option<u64>,
    pub pids_current: Option<u64>,
    /// None when unlimited.
    pub pids_limit: Option<u64>,
}

/// The container's resource usage, read from its cgroup.
pub fn cgroup_stats(spec: &Spec) -> Result<CgroupStats, RuntimeError> {
    Ok(spec_cgroup(spec)?.stats())
}

/// One line of a blkio (v1) or io.stat (v2) file: a device and a count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    /// v1: `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total`; v2: `read`, `write`.
    pub op: String,
    pub value: u64,
}

/// Everything `docker stats` reports from a container's cgroup, in the
/// units of the files (nanoseconds for CPU, bytes for memory).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResourceStats {
    /// Memory and CPU figures came from cgroup v2 files.
    pub v2: bool,
    pub cpu_total_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_kernel_ns: u64,
    /// v1 cpuacct.usage_percpu; empty on v2.
    pub percpu_ns: Vec<u64>,
    pub throttled_periods: u64,
    pub periods: u64,
    pub throttled_ns: u64,
    pub memory_usage: u64,
    /// v1 memory.max_usage_in_bytes (v2 has no such figure here).
    pub memory_max_usage: u64,
    /// None when unlimited.
    pub memory_limit: Option<u64>,
    /// v1 memory.failcnt; v2 memory.events `oom`.
    pub memory_failcnt: u64,
    /// memory.stat as the kernel writes it (v1 or v2 keys).
    pub memory_stat: Vec<(String, u64)>,
    pub pids_current: u64,
    /// None when unlimited.
    pub pids_limit: Option<u64>,
    /// v1: the blkio files by name without the `blkio.` prefix
    /// (`io_service_bytes_recursive`, …); v2: `io_service_bytes_recursive`
    /// from io.stat.
    pub blkio: Vec<(String, Vec<BlkioEntry>)>,
}

/// The container's usage figures, read from its cgroup (v1, hybrid or v2).
pub fn resource_stats(spec: &Spec) -> Result<ResourceStats, RuntimeError> {
    Ok(spec_cgroup(spec)?.resource_stats())
}

/// The host PIDs of every process in the container's cgroup.
pub fn cgroup_pids(spec: &Spec) -> Result<Vec<i32>, RuntimeError> {
    Ok(spec_cgroup(spec)?.pids())
}

/// Whether the kernel OOM-killed a process of the container (v2
/// memory.events `oom_kill`; v1 memory.oom_control `oom_kill` or
/// `under_oom`). Best effort: false when it cannot tell.
pub fn cgroup_oom_killed(spec: &Spec) -> bool {
    spec_cgroup(spec).map(|c| c.oom_killed()).unwrap_or(false)
}

/// Remove the container's cgroup in every hierarchy (v1 controllers and v2).
/// Call it after the container's processes are gone; it waits a few seconds
/// for exiting processes to leave, then reports every directory it could
/// not remove.
pub fn delete(spec: &Spec) -> Result<(), RuntimeError> {
    spec_cgroup(spec)?.destroy()
}

/// Apply new resource limits to the running container's cgroup (docker
/// update).
pub fn update_resources(spec: &Spec, resources: &LinuxResources) -> Result<(), RuntimeError> {
    spec_cgroup(spec)?.apply(resources)
}

/// The exit status docker reports when a container's command could not be
/// run, following moby's translation of runtime errors: 127 when the
/// executable was not found, 126 when it could not be invoked (permission
/// denied, a directory). None for any other error.
pub fn exit_code_for(err: &RuntimeError) -> Option<i32> {
    let m = err.message.to_lowercase();
    if !(m.starts_with("exec ") || m.contains("exec: \"")) {
        return None;
    }
    if m.contains("executable file not found") || m.contains("no such file or directory") {
        Some(127)
    } else if m.contains("permission denied") {
        Some(126)
    } else {
        None
    }
}

/// Docker's default seccomp profile (an allowlist, default action
/// ERRNO(EPERM)) for a container with Docker's default capabilities.
pub fn default_seccomp_profile() -> LinuxSeccomp {
    seccomp_profile_for(&default_capabilities())
}

/// The paths Docker masks in every non-privileged container (a read-only
/// tmpfs over directories, /dev/null over files).
pub fn default_masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/sys/devices/virtual/powercap",
        "/sys/firmware",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The paths Docker makes read-only in every non-privileged container.
pub fn default_readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// A signal by name (`KILL`, `SIGKILL`, `kill`) or number (1–64); None if
/// it names no signal.
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let e = |m: &str| RuntimeError::new(ErrorKind::Internal, m);
        assert_eq!(
            exit_code_for(&e(
                r#"exec: "nosuchcmd": executable file not found in $PATH"#
            )),
            Some(127)
        );
        assert_eq!(
            exit_code_for(&e(r#"exec: "/etc": permission denied"#)),
            Some(126)
        );
        assert_eq!(
            exit_code_for(&e("exec /bin/x: no such file or directory")),
            Some(127)
        );
        assert_eq!(exit_code_for(&e("mount /x: permission denied")), None);
        assert_eq!(exit_code_for(&e("exec /bin/x: exec format error")), None);
    }

    #[test]
    fn defaults() {
        assert_eq!(default_capabilities().len(), 14);
        assert!(default_masked_paths().contains(&"/proc/kcore".to_string()));
        assert_eq!(default_readonly_paths().len(), 5);
        let p = default_seccomp_profile();
        assert_eq!(
            p.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
    }
}
