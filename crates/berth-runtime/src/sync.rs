//! The parent↔child sync socket (a close-on-exec AF_UNIX socketpair).
//!
//! ```text
//! parent                                   child
//!   fork (clone3 into the v2 cgroup) ─────▶ joins its v1 cgroups (writes 0 to tasks),
//!                                          waits for GO (EOF: parent died → exit)
//!   start: writes GO ─────────────────────▶ namespaces, mounts (not cgroup-bound)
//!   joins v2 cgroup unless cloned there,
//!   writes GO  ──────────────────────────▶ cgroup namespace, cgroup2 mount, ..., execve
//!   (exec: joins v2 unless cloned there, then one GO)
//!   reads to EOF ◀──────────────────────── execve succeeded: the close-on-exec end
//!                                          closes with nothing written
//!                ◀──────────────────────── or: one error record, then _exit(1)
//! ```
//!
//! Error record: one byte of `ErrorKind`, then the UTF-8 message.

use std::os::fd::{AsFd, OwnedFd};

use berth_types::{Error, ErrorKind};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::sys::os_err;

const GO: u8 = b'G';
/// Sent by a gated child (`create`) once everything but the execve is done.
const READY: u8 = 0xff;

/// The parent's end.
pub(crate) struct SyncParent(OwnedFd);
/// The child's end.
pub(crate) struct SyncChild(OwnedFd);

pub(crate) fn pair() -> Result<(SyncParent, SyncChild), Error> {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| os_err("create sync socket", e))?;
    Ok((SyncParent(a), SyncChild(b)))
}

fn kind_code(k: ErrorKind) -> u8 {
    match k {
        ErrorKind::NotFound => 1,
        ErrorKind::InvalidArgument => 2,
        ErrorKind::Conflict => 3,
        ErrorKind::PermissionDenied => 4,
        ErrorKind::NotImplemented => 5,
        ErrorKind::Unavailable => 6,
        ErrorKind::Internal => 7,
        ErrorKind::Unauthorized => 8,
    }
}

fn code_kind(c: u8) -> ErrorKind {
    match c {
        1 => ErrorKind::NotFound,
        2 => ErrorKind::InvalidArgument,
        3 => ErrorKind::Conflict,
        4 => ErrorKind::PermissionDenied,
        5 => ErrorKind::NotImplemented,
        6 => ErrorKind::Unavailable,
        8 => ErrorKind::Unauthorized,
        _ => ErrorKind::Internal,
    }
}

fn send_all(fd: impl AsFd, mut buf: &[u8]) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        match rustix::net::send(&fd, buf, SendFlags::NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl SyncParent {
    /// Let the child go on to its next step (see the diagram above).
    pub(crate) fn go(&self) -> Result<(), Error> {
        send_all(&self.0, &[GO]).map_err(|e| os_err("signal container process", e))
    }

    /// Wait until a gated child is ready to exec (Ok), or has exec'd, or
    /// reported an error.
    pub(crate) fn wait_ready(self) -> Result<(), Error> {
        let mut b = [0u8; 1];
        loop {
            match rustix::net::recv(&self.0, &mut b, RecvFlags::PEEK) {
                Ok((1, _)) if b[0] == READY => return Ok(()),
                Ok(_) => return self.wait_result(),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(os_err("read from container process", e)),
            }
        }
    }

    /// The error a child has already reported, without waiting for one.
    pub(crate) fn child_error(&self) -> Option<Error> {
        let mut b = [0u8; 1];
        match rustix::net::recv(&self.0, &mut b, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((1, _)) if b[0] != READY => self.read_result().err(),
            _ => None,
        }
    }

    /// Wait until the child has exec'd (Ok) or reported an error.
    pub(crate) fn wait_result(self) -> Result<(), Error> {
        self.read_result()
    }

    fn read_result(&self) -> Result<(), Error> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rustix::net::recv(&self.0, &mut buf, RecvFlags::empty()) {
                // A child that failed before reading the second GO closes
                // with it unread, which resets the connection after its
                // error record: the end, as EOF.
                Ok((0, _)) | Err(rustix::io::Errno::CONNRESET) => break,
                Ok((n, _)) => out.extend_from_slice(&buf[..n]),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(os_err("read from container process", e)),
            }
        }
        match out.split_first() {
            None => Ok(()),
            Some((k, msg)) => Err(Error::new(
                code_kind(*k),
                String::from_utf8_lossy(msg).into_owned(),
            )),
        }
    }
}

impl SyncChild {
    /// Block until the parent says go; false if the parent went away.
    pub(crate) fn wait_go(&self) -> bool {
        let mut b = [0u8; 1];
        loop {
            match rustix::net::recv(&self.0, &mut b, RecvFlags::empty()) {
                Ok((1, _)) => return b[0] == GO,
                Ok(_) => return false,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return false,
            }
        }
    }

    /// Tell the parent that only the execve is left (a gated start).
    pub(crate) fn ready(&self) {
        let _ = send_all(&self.0, &[READY]);
    }

    /// Send the error that stops this child to the parent.
    pub(crate) fn report(&self, e: &Error) {
        let mut rec = Vec::with_capacity(e.message.len() + 1);
        rec.push(kind_code(e.kind));
        rec.extend_from_slice(e.message.as_bytes());
        let _ = send_all(&self.0, &rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trip() {
        let (p, c) = pair().unwrap();
        c.report(&Error::new(ErrorKind::NotFound, "exec: \"x\": not found"));
        drop(c);
        let e = p.wait_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "exec: \"x\": not found");
    }

    #[test]
    fn eof_is_success() {
        let (p, c) = pair().unwrap();
        p.go().unwrap();
        assert!(c.wait_go());
        drop(c);
        assert!(p.wait_result().is_ok());
    }
}
