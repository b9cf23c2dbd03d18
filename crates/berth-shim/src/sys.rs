//! The few syscalls rustix does not offer safely: fork, signal handlers,
//! kill with any signal number, `_exit`, adopting an inherited fd. This is
//! the crate's only unsafe code; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// Which side of a fork we are on.
pub enum Fork {
    Parent(i32),
    Child,
}

/// fork(2). The shim never starts a thread, so the child gets a consistent
/// copy of the allocator and every lock.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the process is single-threaded (the shim spawns no threads), so
    // no lock or allocator state can be held by another thread at the fork.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        p => Ok(Fork::Parent(p)),
    }
}

/// Leave the process at once, running no destructors or atexit handlers
/// (for the intermediate processes of the daemonizing double fork).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// kill(2) with any signal number, including real-time signals that
/// rustix's `Signal` does not name.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Take ownership of an fd number the parent passed down (`--ready-fd`),
/// after checking that it is open. It is marked close-on-exec so that it
/// never leaks into the container.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd <= 2 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open (checked above), was handed to this process for
    // it alone to use, and no other owner of it exists in this process: it is
    // adopted once, at startup.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)?;
    Ok(owned)
}

/// Close every fd above 2 except `keep`. Whatever berthd (or a test
/// harness, or cargo's jobserver) leaked into the shim must not stay open
/// for the container's whole life. Call first thing, before anything in
/// this process owns an fd.
pub fn close_inherited_fds(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: nothing in this process owns an fd above 2 yet (std
            // holds none, and main calls this before opening any), so no
            // owner sees its fd closed under it. The directory iterator's
            // own fd, also listed, is already closed: EBADF, ignored.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// Give freed heap memory back to the kernel.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own structures and is
    // safe to call at any time from the (single) thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Below the stack pointer, this much stack is left alone when trimming
/// (the frames of the calls made while trimming, and of a signal handler).
const STACK_MARGIN: usize = 16 * 1024;

/// Give back resident memory that startup left behind; returns the bytes
/// of address space dropped.
///
/// - Pages of read-only private file mappings that hold no private copy
///   (code and constants of the binary and libc touched once: config
///   parsing, container start) are dropped from this process's page
///   tables. They stay in the page cache and fault back in when used —
///   exactly what memory reclaim may do at any time. `/proc/self/pagemap`
///   tells file pages from copied-on-write ones (the GOT), which are kept.
/// - The main stack below the current stack pointer (minus a margin) is
///   dead in a single-threaded process; its pages are returned.
#[inline(never)]
pub fn trim_resident() -> usize {
    let marker = 0u8;
    let sp = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    let (Ok(maps), Ok(pagemap)) = (
        std::fs::read_to_string("/proc/self/maps"),
        std::fs::File::open("/proc/self/pagemap"),
    ) else {
        return 0;
    };
    let page = rustix::param::page_size();
    // Ranges are collected first and dropped together at the end: code run
    // after a drop faults its pages (and their neighbours) back in.
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(64);
    let mut entries: Vec<u8> = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let Some((a, b)) = parts.next().and_then(|r| r.split_once('-')) else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        let perms = parts.next().unwrap_or("").as_bytes();
        let inode = parts.nth(2).unwrap_or("0");
        let path = parts.next().unwrap_or("");
        if path == "[stack]" && (start..end).contains(&sp) {
            // Main-stack pages more than STACK_MARGIN below the stack pointer
            // hold no live frame in a single-threaded process (the calls
            // made from here, and a signal handler's frame, fit in the
            // margin); no reference points there.
            ranges.push((start, sp.saturating_sub(STACK_MARGIN) & !(page - 1)));
            continue;
        }
        let file_ro = perms.get(1) == Some(&b'-')
            && perms.get(3) == Some(&b'p')
            && inode != "0"
            && path.starts_with('/');
        if !file_ro {
            continue;
        }
        let pages = (end - start) / page;
        entries.resize(pages * 8, 0);
        if pagemap
            .read_exact_at(&mut entries, (start / page * 8) as u64)
            .is_err()
        {
            continue;
        }
        // A page may go if it is an unmodified file page, or not there.
        let safe = |i: usize| {
            let e = u64::from_le_bytes(entries[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let (present, swapped, file) = (e >> 63 & 1 == 1, e >> 62 & 1 == 1, e >> 61 & 1 == 1);
            if present { file } else { !swapped }
        };
        let mut i = 0;
        while i < pages {
            if !safe(i) {
                i += 1;
                continue;
            }
            let run = i;
            while i < pages && safe(i) {
                i += 1;
            }
            // The range lies in a read-only private file mapping and every
            // page in it is either absent or the unmodified page-cache page
            // (pagemap "file-page" bit), so dropping it only makes a later
            // access fault the same bytes back in. A copied-on-write page
            // would lose its contents; those are never in the range.
            ranges.push((start + run * page, start + i * page));
        }
    }
    let mut dropped = 0;
    for (start, end) in ranges {
        // SAFETY: every range is one of the two kinds above.
        dropped += unsafe { dont_need(start, end) };
    }
    dropped
}

/// madvise(MADV_DONTNEED) on [start, end); the bytes dropped.
///
/// # Safety
/// The range must hold nothing whose loss matters: see the callers.
unsafe fn dont_need(start: usize, end: usize) -> usize {
    if end <= start {
        return 0;
    }
    // SAFETY: forwarded from the caller.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    if r == 0 { end - start } else { 0 }
}

/// The write end of the self-pipe; -1 until [`catch_signals`] ran.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let byte = sig as u8;
    // SAFETY: errno is thread-local and __errno_location always returns a
    // valid pointer; write(2) is async-signal-safe; `byte` outlives the call.
    // errno is restored so the interrupted code sees its own value.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *errno = saved;
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Route `signals` to the self-pipe `pipe_w` (one byte, the signal number,
/// per delivery) and turn SIGPIPE into a no-op. Handlers rather than
/// `SIG_IGN` or a blocked mask are used on purpose: execve resets handlers
/// to the default but keeps ignored dispositions and the signal mask, and
/// the container must not inherit either.
pub fn catch_signals(pipe_w: OwnedFd, signals: &[i32]) -> io::Result<()> {
    SIGNAL_PIPE.store(pipe_w.into_raw_fd(), Ordering::Relaxed);
    for &sig in signals {
        set_handler(sig, on_signal as *const () as libc::sighandler_t)?;
    }
    set_handler(
        libc::SIGPIPE,
        ignore_signal as *const () as libc::sighandler_t,
    )
}

fn set_handler(sig: i32, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: sigaction is a plain C struct for which all-zeroes is valid;
    // sigemptyset initialises its mask; the handlers above only touch an
    // atomic and call async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Unblock every signal: whatever mask berthd (or tokio) left us with must
/// not reach the container.
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: the set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A saved signal mask.
pub struct SigMask(libc::sigset_t);

/// Block every signal; returns the mask that was in force.
pub fn block_all_signals() -> io::Result<SigMask> {
    // SAFETY: both sets are initialised (sigfillset / written by
    // sigprocmask) before they are read.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        if libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old) == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(SigMask(old))
    }
}

/// Fork and exec `cmd` (looked up in `PATH`) with the signal mask `mask`;
/// the child's pid. If the exec fails the child says why on stderr and
/// exits 127 (not found) or 126 (not executable), as a shell would.
pub fn spawn_with_mask(cmd: &[std::ffi::OsString], mask: &SigMask) -> Result<i32, String> {
    use std::os::unix::ffi::OsStrExt;
    let c: Vec<std::ffi::CString> = cmd
        .iter()
        .map(|a| std::ffi::CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "an argument contains a NUL byte".to_string())?;
    let mut argv: Vec<*const libc::c_char> = c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    match fork().map_err(|e| format!("fork: {e}"))? {
        Fork::Parent(pid) => Ok(pid),
        Fork::Child => {
            // SAFETY: the mask was filled by sigprocmask; argv is a
            // NUL-terminated array of pointers into `c`, alive until exec.
            let err = unsafe {
                libc::sigprocmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut());
                libc::execvp(argv[0], argv.as_ptr());
                io::Error::last_os_error()
            };
            let code = if err.raw_os_error() == Some(libc::ENOENT) {
                127
            } else {
                126
            };
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("docker-init: exec {:?} failed: {err}\n", cmd[0]).as_bytes(),
            );
            exit_now(code)
        }
    }
}

/// Wait for a (blocked) signal; None when interrupted without one.
pub fn wait_signal() -> Option<i32> {
    // SAFETY: the set is initialised by sigfillset; a null siginfo is allowed.
    let sig = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigwaitinfo(&all, std::ptr::null_mut())
    };
    (sig > 0).then_some(sig)
}

/// Reap one exited child, if any: its pid and exit code (128 + signal if
/// it was killed).
pub fn reap_any() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    };
    Some((pid, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_rejects_non_positive_pids() {
        // Never signal a process group or every process by accident.
        assert!(kill(0, 0).is_err());
        assert!(kill(-1, 0).is_err());
        assert!(kill(std::process::id() as i32, 0).is_ok());
    }

    #[test]
    fn adopt_rejects_stdio_and_closed_fds() {
        assert!(adopt_fd(1).is_err());
        assert!(adopt_fd(999_999).is_err());
    }
}
