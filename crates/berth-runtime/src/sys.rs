//! Thin wrappers over the few syscalls that rustix does not cover the way we
//! need them (fork, execve, mount with raw flags, seccomp, signal reset).
//! Most `unsafe` blocks of the crate live here; the others are one-line
//! rustix calls in launch.rs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use berth_types::{Error, ErrorKind};

/// The text Go (and so docker) prints for an errno: glibc's message with a
/// lower-case first letter and without Rust's " (os error N)" suffix.
pub(crate) fn errmsg(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return e.to_string();
    };
    // SAFETY: strerror returns a pointer to a static (or thread-local) NUL
    // terminated string that stays valid until the next strerror call on
    // this thread; we copy it out immediately.
    let raw = unsafe { CStr::from_ptr(libc::strerror(code)) };
    let s = raw.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    if let Some(c) = chars.next() {
        out.extend(c.to_lowercase());
    }
    out.push_str(chars.as_str());
    out
}

/// Map an OS error to one of berth's error kinds.
pub(crate) fn kind_of(e: &io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => ErrorKind::NotFound,
        Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
        Some(libc::EINVAL) | Some(libc::ENOTDIR) | Some(libc::EISDIR) => ErrorKind::InvalidArgument,
        Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => ErrorKind::NotImplemented,
        Some(libc::EBUSY) => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    }
}

/// An error for a failed OS operation: `"{what}: {errno text}"`.
pub(crate) fn os_err(what: impl std::fmt::Display, e: impl Into<io::Error>) -> Error {
    let e = e.into();
    Error::new(kind_of(&e), format!("{what}: {}", errmsg(&e)))
}

pub(crate) fn cstring(s: impl AsRef<[u8]>, what: &str) -> Result<CString, Error> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| Error::invalid(format!("{what} contains a NUL byte")))
}

pub(crate) fn path_cstring(p: &Path) -> Result<CString, Error> {
    use std::os::unix::ffi::OsStrExt;
    cstring(p.as_os_str().as_bytes(), &format!("path {}", p.display()))
}

/// `mount(2)` with raw `MS_*` flags. `None` arguments are passed as NULL.
pub(crate) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is either NULL or points at a NUL-terminated
    // string that outlives the call; the kernel copies them.
    let rc = unsafe {
        libc::mount(
            p(source),
            target.as_ptr(),
            p(fstype),
            flags,
            p(data).cast::<libc::c_void>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `/proc/self/fd/N` path for an fd: mounting onto it mounts onto the
/// file the fd refers to, without walking a path the container could have
/// raced (runc does the same).
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in fd path")
}

/// Result of [`fork`].
pub(crate) enum Forked {
    Parent(i32),
    Child,
}

/// `fork(2)` through glibc, so that glibc's own at-fork handling (malloc
/// arena locks) runs: the child may allocate even if the caller had other
/// threads (the test harness does; the shim does not).
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own. The child
    // only runs code of this crate that avoids locks other threads could
    // hold (no std::env, no stdout/stderr), and always ends in execve or
    // _exit, never returning into the caller.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// linux/sched.h (libc's constant is an i32 and overflows).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Whether this process has one thread only (`/proc/self/task`).
pub(crate) fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.take(2).count() == 1)
}

/// A fork straight into a cgroup v2 directory: `clone3` with
/// `CLONE_INTO_CGROUP`, so the child never passes through the caller's
/// cgroup and nobody writes `cgroup.procs`.
///
/// `None` when the kernel will not, whatever the reason: no clone3, or a
/// cgroup that refuses a new process (gone, threaded, not a leaf, no
/// permission, or its `pids.max` reached: a fork is charged there, a
/// migration is not). The caller then falls back to [`fork`] and a
/// `cgroup.procs` write, as before clone3, which reports its own error if
/// that fails too (and lets an exec into a container at its pids limit
/// succeed, as with runc).
///
/// Only for a single-threaded caller: a raw clone3 skips glibc's fork
/// bookkeeping, which matters only when other threads may hold glibc's
/// locks. The child also keeps the caller's cached TID in glibc's thread
/// descriptor; what it runs (rustix's raw syscalls, std's file calls,
/// malloc) never reads it (glibc 2.25+ caches no PID, raise() asks the
/// kernel), and it ends in execve or _exit.
pub(crate) fn fork_into_cgroup(cgroup: BorrowedFd<'_>) -> Option<Forked> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: with no CLONE_VM and no stack, clone3 behaves as fork: the
    // child runs on a copy of this address space. The caller is single
    // threaded (checked by the callers), so no lock is held by a thread
    // the child lacks; the child ends in execve or _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        -1 => None,
        0 => Some(Forked::Child),
        pid => Some(Forked::Parent(pid as i32)),
    }
}

/// `_exit(2)`: leave the child without running the caller's atexit handlers
/// or flushing buffers that belong to the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// `execve(2)`; only returns on failure.
pub(crate) fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut args: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    args.push(std::ptr::null());
    let mut env: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    env.push(std::ptr::null());
    // SAFETY: path, every argv and envp entry are NUL-terminated strings
    // that live until the call returns; both arrays are NULL-terminated.
    unsafe { libc::execve(path.as_ptr(), args.as_ptr(), env.as_ptr()) };
    io::Error::last_os_error()
}

/// Mark every fd from `from` up as close-on-exec, so nothing the caller had
/// open leaks into the container. Uses close_range(CLOSE_RANGE_CLOEXEC)
/// (Linux 5.11) and falls back to walking /proc/self/fd.
pub(crate) fn cloexec_from(from: RawFd) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            from as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= from)
            .collect();
        for fd in fds {
            // SAFETY: F_SETFD on a possibly stale fd number only fails with
            // EBADF; it cannot affect memory.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Empty the signal mask and put every signal back to its default action.
/// Ignored signals survive execve, and the caller (a Rust binary ignores
/// SIGPIPE) must not pass its dispositions on to the container.
pub(crate) fn reset_signals() {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it, and
    // sigprocmask/signal only change this process's signal state.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Install a compiled seccomp filter with `seccomp(SECCOMP_SET_MODE_FILTER)`.
/// Unlike `seccompiler::apply_filter` this does not force no_new_privs: the
/// spec decides that, and without it the caller must hold CAP_SYS_ADMIN.
pub(crate) fn install_seccomp(prog: &[seccompiler::sock_filter], flags: u32) -> io::Result<()> {
    let len = u16::try_from(prog.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    let fprog = libc::sock_fprog {
        len,
        // seccompiler's sock_filter is repr(C) with the kernel's layout
        // (u16 code, u8 jt, u8 jf, u32 k), the same as libc's.
        filter: prog.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: fprog points at `len` valid instructions for the duration of
    // the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Send a signal to a process we started.
/// Set IFF_UP on `lo` in the current network namespace (SIOCSIFFLAGS).
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket(2) call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(crate) fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Reap a child we started; returns its wait status, or None if it could
/// not be waited for (already reaped, or SIGCHLD is ignored).
pub(crate) fn waitpid(pid: i32) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid, writable int.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if rc == pid {
            return Some(status);
        }
        if rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errmsg_is_go_style() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(errmsg(&e), "no such file or directory");
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(errmsg(&e), "permission denied");
        let e = io::Error::from_raw_os_error(libc::ENOEXEC);
        assert_eq!(errmsg(&e), "exec format error");
    }

    /// A directory that is no cgroup v2 (here a plain one) is declined,
    /// with no process made, so the caller falls back to a plain fork.
    #[test]
    fn fork_into_a_non_cgroup_is_declined() {
        let d = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(
            d.path(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        match fork_into_cgroup(std::os::fd::AsFd::as_fd(&fd)) {
            None => {}
            Some(Forked::Child) => exit_now(0),
            Some(Forked::Parent(pid)) => {
                waitpid(pid);
                panic!("clone3 into {} made process {pid}", d.path().display());
            }
        }
    }
}
