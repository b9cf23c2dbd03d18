//! The container process itself: everything from rlimits to execve, shared
//! by `start` (after the rootfs is ready) and `exec` (after setns). The plan
//! is built in the parent, so spec errors surface before any fork, and the
//! child mostly makes syscalls.
//!
//! Order (runc's standard_init_linux.go / setns_init_linux.go):
//! oom_score_adj, rlimits, no_new_privs, seccomp if it needs CAP_SYS_ADMIN
//! (no no_new_privs), bounding set, keepcaps + groups/gid/uid, capability
//! sets, chdir, umask, PATH lookup, signal reset, seccomp (with
//! no_new_privs, as late as possible), execve.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_types::{Error, ErrorKind};
use oci_spec::runtime::{LinuxSeccomp, PosixRlimitType, Process};
use rustix::process::{Resource, Rlimit};

use crate::capabilities::{self, CapPlan};
use crate::seccomp::{self, CompiledSeccomp};
use crate::sys::{self, cstring, errmsg, os_err};

/// The process part of a spec, resolved.
#[derive(Debug)]
pub(crate) struct ProcPlan {
    pub arg0: String,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub path_env: Option<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub umask: u32,
    pub caps: Option<CapPlan>,
    pub no_new_privs: bool,
    /// (name, resource, soft, hard); u64::MAX is unlimited
    pub rlimits: Vec<(String, Resource, u64, u64)>,
    pub seccomp: Option<CompiledSeccomp>,
    pub terminal: bool,
    pub oom_score_adj: Option<i32>,
}

fn rlimit_resource(t: PosixRlimitType) -> Resource {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => Resource::Cpu,
        T::RlimitFsize => Resource::Fsize,
        T::RlimitData => Resource::Data,
        T::RlimitStack => Resource::Stack,
        T::RlimitCore => Resource::Core,
        T::RlimitRss => Resource::Rss,
        T::RlimitNproc => Resource::Nproc,
        T::RlimitNofile => Resource::Nofile,
        T::RlimitMemlock => Resource::Memlock,
        T::RlimitAs => Resource::As,
        T::RlimitLocks => Resource::Locks,
        T::RlimitSigpending => Resource::Sigpending,
        T::RlimitMsgqueue => Resource::Msgqueue,
        T::RlimitNice => Resource::Nice,
        T::RlimitRtprio => Resource::Rtprio,
        T::RlimitRttime => Resource::Rttime,
    }
}

impl ProcPlan {
    pub(crate) fn new(p: &Process, seccomp: Option<&LinuxSeccomp>) -> Result<ProcPlan, Error> {
        let args = p.args().clone().unwrap_or_default();
        let Some(arg0) = args.first().cloned() else {
            return Err(Error::invalid("process.args must not be empty"));
        };
        let argv = args
            .iter()
            .map(|a| cstring(a, "process argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let env_list = p.env().clone().unwrap_or_default();
        let env = env_list
            .iter()
            .map(|e| cstring(e, "environment variable"))
            .collect::<Result<Vec<_>, _>>()?;
        // The PATH used to find args[0] is the container's, like runc.
        let path_env = env_list
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .map(str::to_string);
        let cwd = p.cwd().clone();
        if !cwd.is_absolute() {
            return Err(Error::invalid(format!(
                "process.cwd {} must be an absolute path",
                cwd.display()
            )));
        }
        let user = p.user();
        let rlimits = p
            .rlimits()
            .iter()
            .flatten()
            .map(|r| {
                (
                    r.typ().to_string(),
                    rlimit_resource(r.typ()),
                    r.soft(),
                    r.hard(),
                )
            })
            .collect();
        let caps = p.capabilities().as_ref().map(CapPlan::new).transpose()?;
        let seccomp = seccomp.map(seccomp::compile).transpose()?;
        Ok(ProcPlan {
            arg0,
            argv,
            env,
            path_env,
            cwd,
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask().unwrap_or(0o022),
            caps,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            rlimits,
            seccomp,
            terminal: p.terminal().unwrap_or(false),
            oom_score_adj: p.oom_score_adj(),
        })
    }
}

/// Apply rlimits. This host's bounding set lacks CAP_SYS_RESOURCE (and a
/// runtime running without it is common), so a hard limit above the current
/// one cannot be set: then the hard limit is clamped to the current hard
/// limit, and the soft limit to the hard one, instead of failing the start.
/// With CAP_SYS_RESOURCE the spec values are applied as given.
fn apply_rlimits(limits: &[(String, Resource, u64, u64)]) -> Result<(), Error> {
    // RLIM_INFINITY is all ones, in the spec and in the kernel
    let lim = |v: u64| (v != u64::MAX).then_some(v);
    let can_raise = capabilities::have_sys_resource();
    for (name, res, soft, hard) in limits {
        let (mut soft, mut hard) = (*soft, *hard);
        if !can_raise {
            let cur_hard = rustix::process::getrlimit(*res).maximum.unwrap_or(u64::MAX);
            hard = hard.min(cur_hard);
            soft = soft.min(hard);
        }
        let new = Rlimit {
            current: lim(soft),
            maximum: lim(hard),
        };
        rustix::process::setrlimit(*res, new)
            .map_err(|e| os_err(format!("setrlimit {name} to {soft}:{hard}"), e))?;
    }
    Ok(())
}

/// What a gated start (`create`) waits on before its execve: it tells the
/// parent it is ready, then blocks opening `fifo` for writing until a later
/// `start` opens it for reading.
pub(crate) struct Gate<'a> {
    pub sync: &'a crate::sync::SyncChild,
    /// An O_PATH descriptor of the fifo, opened by the parent: the fifo's
    /// own path is out of reach after pivot_root.
    pub fifo: &'a std::os::fd::OwnedFd,
}

/// Everything from rlimits to execve. Only returns on failure.
pub(crate) fn finish(p: &ProcPlan, gate: Option<Gate<'_>>) -> Result<Infallible, Error> {
    if let Some(adj) = p.oom_score_adj {
        // Lowering it needs CAP_SYS_RESOURCE; best effort, as a container
        // must not fail to start over its OOM preference.
        let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
    }
    apply_rlimits(&p.rlimits)?;
    if p.no_new_privs {
        rustix::thread::set_no_new_privs(true).map_err(|e| os_err("set no_new_privs", e))?;
    } else if let Some(s) = &p.seccomp {
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which
        // the capability drop below may take away: load it now. The
        // remaining setup syscalls must then be allowed by the profile
        // (Docker's profile allows them).
        seccomp::install(s)?;
    }
    if let Some(c) = &p.caps {
        c.apply_bounding()?;
    }
    let switching = p.uid != 0;
    if switching {
        // keep the permitted set across setuid(non-zero), to set it below
        rustix::thread::set_keep_capabilities(true).map_err(|e| os_err("set keepcaps", e))?;
    }
    let groups: Vec<rustix::process::Gid> = p
        .groups
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    // These are the raw per-thread syscalls, not glibc's all-threads
    // broadcast; the child has a single thread.
    rustix::thread::set_thread_groups(&groups)
        .map_err(|e| os_err(format!("setgroups {:?}", p.groups), e))?;
    let gid = rustix::process::Gid::from_raw(p.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)
        .map_err(|e| os_err(format!("setgid {}", p.gid), e))?;
    let uid = rustix::process::Uid::from_raw(p.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid)
        .map_err(|e| os_err(format!("setuid {}", p.uid), e))?;
    if switching {
        rustix::thread::set_keep_capabilities(false).map_err(|e| os_err("clear keepcaps", e))?;
    }
    if let Some(c) = &p.caps {
        c.apply_sets()?;
    }
    rustix::process::chdir(&p.cwd).map_err(|e| {
        os_err(
            format!(
                "chdir to cwd ({:?}) set in config.json failed",
                p.cwd.display().to_string()
            ),
            e,
        )
    })?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(p.umask & 0o777));
    let path = look_path(&p.arg0, p.path_env.as_deref())?;
    if let Some(g) = gate {
        // The creating process exits after `create`; this one waits on.
        let _ = rustix::process::set_parent_process_death_signal(None);
        g.sync.ready();
        wait_for_start(g.fifo)?;
    }
    sys::reset_signals();
    // Parent-death SIGKILL only guards the setup; the container's life is
    // not tied to the caller's.
    let _ = rustix::process::set_parent_process_death_signal(None);
    if p.no_new_privs
        && let Some(s) = &p.seccomp
    {
        seccomp::install(s)?;
    }
    let e = sys::execve(&path, &p.argv, &p.env);
    Err(Error::new(
        sys::kind_of(&e),
        format!("exec {}: {}", path.to_string_lossy(), errmsg(&e)),
    ))
}

/// Block until `start` opens the exec fifo, then write its byte.
fn wait_for_start(fifo: &std::os::fd::OwnedFd) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    let reopen = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let fd = rustix::fs::open(
        reopen.as_str(),
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| os_err("open exec fifo", e))?;
    rustix::io::write(&fd, b"0").map_err(|e| os_err("write exec fifo", e))?;
    Ok(())
}

/// Why a file cannot be executed, as Go's exec.LookPath words it (except
/// that a directory is "permission denied", as execve reports it).
fn check_executable(p: &Path) -> Result<(), (ErrorKind, String)> {
    let md = std::fs::metadata(p).map_err(|e| {
        (
            sys::kind_of(&e),
            format!("stat {}: {}", p.display(), errmsg(&e)),
        )
    })?;
    let denied = || (ErrorKind::PermissionDenied, "permission denied".to_string());
    if md.is_dir() || md.permissions().mode() & 0o111 == 0 {
        return Err(denied());
    }
    if rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_err() {
        return Err(denied());
    }
    Ok(())
}

/// Resolve args[0] the way runc does (Go's exec.LookPath with the
/// container's PATH). Errors read like docker's:
/// `exec: "nosuchcmd": executable file not found in $PATH`.
pub(crate) fn look_path(arg0: &str, path_env: Option<&str>) -> Result<CString, Error> {
    if arg0.contains('/') {
        return match check_executable(Path::new(arg0)) {
            Ok(()) => cstring(arg0, "process.args[0]"),
            Err((kind, why)) => Err(Error::new(kind, format!("exec: {arg0:?}: {why}"))),
        };
    }
    if !arg0.is_empty() {
        for dir in path_env.unwrap_or("").split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            let cand = Path::new(dir).join(arg0);
            if check_executable(&cand).is_ok() {
                return sys::path_cstring(&cand);
            }
        }
    }
    Err(Error::new(
        ErrorKind::NotFound,
        format!("exec: {arg0:?}: executable file not found in $PATH"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn look_path_messages() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = d.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = format!("/nonexistent:{}", d.path().display());

        assert_eq!(
            look_path("tool", Some(&path)).unwrap().to_str().unwrap(),
            exe.to_str().unwrap()
        );
        let e = look_path("nosuchcmd", Some(&path)).unwrap_err();
        assert_eq!(
            e.message,
            r#"exec: "nosuchcmd": executable file not found in $PATH"#
        );
        assert_eq!(crate::exit_code_for(&e), Some(127));
        // not found when the only candidate is not executable
        assert!(look_path("plain", Some(&path)).is_err());
        let e = look_path(plain.to_str().unwrap(), None).unwrap_err();
        assert!(e.message.ends_with(": permission denied"), "{}", e.message);
        assert_eq!(crate::exit_code_for(&e), Some(126));
        let e = look_path(d.path().to_str().unwrap(), None).unwrap_err();
        assert_eq!(crate::exit_code_for(&e), Some(126));
        let e = look_path("/no/such/thing", None).unwrap_err();
        assert_eq!(
            e.message,
            r#"exec: "/no/such/thing": stat /no/such/thing: no such file or directory"#
        );
        assert_eq!(crate::exit_code_for(&e), Some(127));
        // no PATH at all: only names with a slash work
        assert!(look_path("tool", None).is_err());
    }
}
