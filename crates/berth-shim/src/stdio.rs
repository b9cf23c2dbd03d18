//! The two ends of a container process's stdio: a pty pair (the process gets
//! the slave three times, the shim keeps the master) or pipes (the shim
//! keeps the read ends of stdout and stderr and the write end of stdin).
//! Every fd is close-on-exec; the shim's ends are non-blocking.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};
use rustix::pipe::{PipeFlags, pipe_with};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

use crate::rt;

/// The shim's ends.
pub struct Held {
    /// The pty master (tty mode): output is read from it, stdin written to it.
    pub master: Option<OwnedFd>,
    /// The write end of the stdin pipe (pipe mode with stdin).
    pub stdin: Option<OwnedFd>,
    /// The read ends of the stdout and stderr pipes (pipe mode).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Make stdio for a process: a pty if `tty`, else pipes, with a stdin pipe
/// only if `stdin` (else the process reads /dev/null). An exec into a
/// running container (`in_container`: its init's pid) gets its pty from the
/// container's own devpts.
pub fn make(tty: bool, stdin: bool, in_container: Option<i32>) -> io::Result<(rt::Stdio, Held)> {
    if tty {
        let (master, slave) = match in_container {
            Some(pid) => rt::container_pty(pid)?,
            None => {
                let master =
                    openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
                grantpt(&master)?;
                unlockpt(&master)?;
                let name = ptsname(&master, Vec::new())?;
                let slave = rustix::fs::open(
                    name.as_c_str(),
                    OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                (master, slave)
            }
        };
        rustix::io::ioctl_fionbio(&master, true)?;
        let container = rt::Stdio {
            stdin: slave.try_clone()?,
            stdout: slave.try_clone()?,
            stderr: slave,
        };
        let held = Held {
            master: Some(master),
            stdin: None,
            stdout: None,
            stderr: None,
        };
        return Ok((container, held));
    }
    let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC)?;
    let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC)?;
    rustix::io::ioctl_fionbio(&out_r, true)?;
    rustix::io::ioctl_fionbio(&err_r, true)?;
    let (stdin_r, stdin_w) = if stdin {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC)?;
        rustix::io::ioctl_fionbio(&w, true)?;
        (r, Some(w))
    } else {
        let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        (null, None)
    };
    let container = rt::Stdio {
        stdin: stdin_r,
        stdout: out_w,
        stderr: err_w,
    };
    let held = Held {
        master: None,
        stdin: stdin_w,
        stdout: Some(out_r),
        stderr: Some(err_r),
    };
    Ok((container, held))
}

/// Set a pty's window size (the kernel sends SIGWINCH to its foreground
/// process group).
pub fn resize(master: &OwnedFd, height: u16, width: u16) -> io::Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, ws)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_connect_both_ends() {
        let (c, h) = make(false, true, None).unwrap();
        rustix::io::write(&c.stdout, b"out").unwrap();
        rustix::io::write(&c.stderr, b"err").unwrap();
        let mut buf = [0u8; 8];
        let n = rustix::io::read(h.stdout.as_ref().unwrap(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"out");
        let n = rustix::io::read(h.stderr.as_ref().unwrap(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"err");
        rustix::io::write(h.stdin.as_ref().unwrap(), b"in").unwrap();
        let n = rustix::io::read(&c.stdin, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"in");
        // Shim ends never block.
        assert_eq!(
            rustix::io::read(h.stdout.as_ref().unwrap(), &mut buf),
            Err(rustix::io::Errno::AGAIN)
        );
    }

    #[test]
    fn no_stdin_means_dev_null() {
        let (c, h) = make(false, false, None).unwrap();
        assert!(h.stdin.is_none());
        let mut buf = [0u8; 4];
        assert_eq!(rustix::io::read(&c.stdin, &mut buf).unwrap(), 0);
    }

    #[test]
    fn pty_pair_and_resize() {
        let (c, h) = make(true, true, None).unwrap();
        let master = h.master.unwrap();
        resize(&master, 33, 101).unwrap();
        let ws = rustix::termios::tcgetwinsize(&c.stdout).unwrap();
        assert_eq!((ws.ws_row, ws.ws_col), (33, 101));
        rustix::io::write(&c.stdout, b"x").unwrap();
        let mut buf = [0u8; 8];
        let n = rustix::io::read(&master, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"x");
        drop(c);
        // With every slave fd closed the master reads EIO.
        assert_eq!(
            rustix::io::read(&master, &mut buf),
            Err(rustix::io::Errno::IO)
        );
    }
}
