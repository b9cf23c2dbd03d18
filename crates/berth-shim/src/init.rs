//! `docker run --init`: the shim binary, bind-mounted into the container
//! at `/sbin/docker-init` (it is linked statically, so it runs on any
//! rootfs), becomes the container's PID 1 as `docker-init -- CMD ARGS...`.
//!
//! It starts CMD as its only child, forwards every signal it receives to
//! that child, reaps every process that is reparented to it (orphans of the
//! container), and exits when the child does: with its exit code, or 128 +
//! the signal that killed it, as Docker's tini does.
//!
//! Signals are blocked and taken with `sigtimedwait`, so none is lost
//! between checks and none is handled asynchronously. A signal sent to a
//! namespace's PID 1 from inside it is dropped by the kernel unless PID 1
//! handles it; a blocked signal counts as handled, so `kill 1` in the
//! container reaches CMD as well.

use std::ffi::OsString;
use std::io::Write;

use crate::sys;

/// Whether this process was started as the container's init.
pub fn invoked_as_init(argv0: &OsString) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "docker-init")
}

/// `docker-init [--] CMD [ARGS...]`; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let cmd: Vec<OsString> = match args.first() {
        Some(a) if a == "--" => args[1..].to_vec(),
        _ => args,
    };
    if cmd.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "docker-init: usage: docker-init -- CMD [ARGS...]"
        );
        return 1;
    }
    let old_mask = match sys::block_all_signals() {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "docker-init: block signals: {e}");
            return 1;
        }
    };
    let child = match sys::spawn_with_mask(&cmd, &old_mask) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "docker-init: {e}");
            return 1;
        }
    };
    loop {
        match sys::wait_signal() {
            Some(libc::SIGCHLD) | None => {}
            Some(sig) => {
                // The child may already be gone; then there is nobody to tell.
                let _ = sys::kill(child, sig);
            }
        }
        // Reap everything that has exited; stop once the child has.
        while let Some((pid, code)) = sys::reap_any() {
            if pid == child {
                while sys::reap_any().is_some() {}
                return code;
            }
        }
    }
}
