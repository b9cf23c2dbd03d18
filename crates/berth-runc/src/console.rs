//! The container's stdio: the caller's own fds 0-2, or, for a terminal, a
//! new pty whose master goes to the engine over `--console-socket` (runc's
//! protocol: one SCM_RIGHTS message carrying the master fd).

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

use crate::Fail;

/// `in_container`: for an exec, the init's pid, so that the pty comes from
/// the container's own devpts.
pub fn stdio(
    terminal: bool,
    console_socket: Option<&str>,
    in_container: Option<i32>,
) -> Result<berth_runtime::Stdio, Fail> {
    if !terminal {
        let dup = |fd: std::os::fd::BorrowedFd<'_>| -> Result<OwnedFd, Fail> {
            rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| Fail(format!("dup stdio: {e}")))
        };
        return Ok(berth_runtime::Stdio {
            stdin: dup(rustix::stdio::stdin())?,
            stdout: dup(rustix::stdio::stdout())?,
            stderr: dup(rustix::stdio::stderr())?,
        });
    }
    let Some(sock) = console_socket else {
        return Err(Fail(
            "cannot allocate tty if runc will detach without setting console socket".into(),
        ));
    };
    let (master, slave) = match in_container {
        Some(pid) => berth_runtime::container_pty(pid).map_err(|e| Fail(e.message))?,
        None => {
            let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .map_err(|e| Fail(format!("open pty: {e}")))?;
            grantpt(&master).map_err(|e| Fail(format!("grantpt: {e}")))?;
            unlockpt(&master).map_err(|e| Fail(format!("unlockpt: {e}")))?;
            let name = ptsname(&master, Vec::new()).map_err(|e| Fail(format!("ptsname: {e}")))?;
            let slave = rustix::fs::open(
                name.as_c_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Fail(format!("open pty slave: {e}")))?;
            (master, slave)
        }
    };
    // runc sends the pty's name as the message body.
    let name =
        std::ffi::CString::new(format!("/dev/pts/{}", pty_number(&slave))).unwrap_or_default();
    let conn = UnixStream::connect(sock)
        .map_err(|e| Fail(format!("connect to console socket {sock}: {e}")))?;
    let fds = [master.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    anc.push(SendAncillaryMessage::ScmRights(&fds));
    let body = name.to_bytes();
    sendmsg(&conn, &[IoSlice::new(body)], &mut anc, SendFlags::empty())
        .map_err(|e| Fail(format!("send pty master to console socket: {e}")))?;
    let dup = |fd: &OwnedFd| -> Result<OwnedFd, Fail> {
        rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| Fail(format!("dup pty: {e}")))
    };
    Ok(berth_runtime::Stdio {
        stdin: dup(&slave)?,
        stdout: dup(&slave)?,
        stderr: slave,
    })
}

/// The pty's number (TIOCGPTN on the slave's peer is not available; read it
/// from the slave's /proc/self/fd link, which names /dev/pts/N).
fn pty_number(slave: &OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}
