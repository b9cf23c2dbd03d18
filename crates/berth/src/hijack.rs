//! Hijacked attach and exec streams: the container's output to our stdout and
//! stderr (raw for a tty, otherwise docker's multiplexed frames), our stdin to
//! the container (with detach keys for a tty), and the stream-format
//! demultiplexer that `logs` shares.

use std::io::{Read, Write};

use anyhow::{Result, bail};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::tty::{DetachMatcher, RawMode};

/// Splits docker's multiplexed stream (8-byte header: stream type, three
/// zero bytes, big-endian payload length; then the payload) into writes to
/// stdout and stderr. Headers and payloads may be split across reads;
/// payload bytes are passed on as they arrive, not held until complete.
#[derive(Default)]
pub struct Demux {
    header: [u8; 8],
    have: usize,
    stream: u8,
    remaining: usize,
    /// A system error frame (stream 3) collects its whole message.
    syserr: Vec<u8>,
}

/// Where demultiplexed output goes.
pub trait Sink {
    fn out(&mut self, data: &[u8]) -> std::io::Result<()>;
    fn err(&mut self, data: &[u8]) -> std::io::Result<()>;
}

/// Our own stdout and stderr, flushed after every write.
pub struct StdSink;

impl Sink for StdSink {
    fn out(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut o = std::io::stdout().lock();
        o.write_all(data)?;
        o.flush()
    }
    fn err(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut e = std::io::stderr().lock();
        e.write_all(data)?;
        e.flush()
    }
}

impl Demux {
    pub fn new() -> Demux {
        Demux::default()
    }

    pub fn feed(&mut self, mut data: &[u8], sink: &mut impl Sink) -> Result<()> {
        while !data.is_empty() {
            if self.remaining == 0 {
                let n = (8 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < 8 {
                    break;
                }
                self.have = 0;
                self.stream = self.header[0];
                self.remaining = u32::from_be_bytes([
                    self.header[4],
                    self.header[5],
                    self.header[6],
                    self.header[7],
                ]) as usize;
                if self.stream > 3 {
                    bail!("Unrecognized input header: {}", self.stream);
                }
                continue;
            }
            let n = self.remaining.min(data.len());
            let chunk = &data[..n];
            match self.stream {
                0 | 1 => sink.out(chunk)?,
                2 => sink.err(chunk)?,
                _ => self.syserr.extend_from_slice(chunk),
            }
            self.remaining -= n;
            data = &data[n..];
            if self.remaining == 0 && self.stream == 3 {
                bail!(
                    "error from daemon in stream: {}",
                    String::from_utf8_lossy(&std::mem::take(&mut self.syserr))
                );
            }
        }
        Ok(())
    }
}

/// Our stdout closed under us (`berth run ... | head -1`): end quietly with
/// the status a Go program killed by SIGPIPE has, as docker does.
pub fn closed_output(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::BrokenPipe => crate::Exit(141).into(),
        _ => e,
    }
}

/// How a hijacked session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The daemon closed the output.
    Eof,
    /// The user typed the detach keys.
    Detached,
}

pub struct StreamOpts {
    /// The container has a tty: output is raw.
    pub tty: bool,
    /// Forward our stdin.
    pub stdin: bool,
    /// Put our terminal in raw mode (tty, stdin attached and a terminal).
    pub raw: bool,
    /// Detach keys, honoured with a tty (as docker does).
    pub detach_keys: Option<Vec<u8>>,
}

/// Our stdin in chunks, read on a thread of its own (a blocking read of a
/// terminal must not hold up the runtime, or its shutdown). The channel
/// closes at EOF.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    rx
}

/// Run a hijacked session until the daemon closes the output or the user
/// detaches. Our stdin's EOF half-closes the connection (the container's
/// stdin ends) and output keeps coming until the daemon ends it.
pub async fn stream(io: TokioIo<Upgraded>, opts: StreamOpts) -> Result<End> {
    let _raw = if opts.raw {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let (mut rd, mut wr) = tokio::io::split(io);
    // Our stdin goes to the container on a task of its own, so that a
    // container not reading its stdin never holds up its output.
    let (detach_tx, mut detach_rx) = tokio::sync::oneshot::channel::<()>();
    let mut detach = opts
        .detach_keys
        .filter(|_| opts.tty)
        .map(DetachMatcher::new);
    let writer = opts.stdin.then(|| {
        let mut input = stdin_chunks();
        tokio::spawn(async move {
            while let Some(data) = input.recv().await {
                let (data, detached) = match detach.as_mut() {
                    Some(m) => m.feed(&data),
                    None => (data, false),
                };
                // The container may be gone while its output still drains.
                if !data.is_empty() && wr.write_all(&data).await.is_err() {
                    return;
                }
                if detached {
                    let _ = detach_tx.send(());
                    return;
                }
            }
            // EOF: half-close, so the container's stdin ends.
            let _ = wr.shutdown().await;
            std::future::pending::<()>().await
        })
    });
    let mut watch_detach = writer.is_some();
    let mut demux = Demux::new();
    let mut sink = StdSink;
    let mut buf = vec![0u8; 32 << 10];
    let end = loop {
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    break End::Eof;
                }
                if opts.tty {
                    sink.out(&buf[..n]).map_err(|e| closed_output(e.into()))?;
                } else {
                    demux.feed(&buf[..n], &mut sink).map_err(closed_output)?;
                }
            }
            r = &mut detach_rx, if watch_detach => match r {
                Ok(()) => break End::Detached,
                Err(_) => watch_detach = false,
            },
        }
    };
    if let Some(w) = writer {
        w.abort();
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        out: Vec<u8>,
        err: Vec<u8>,
    }
    impl Sink for Collect {
        fn out(&mut self, d: &[u8]) -> std::io::Result<()> {
            self.out.extend_from_slice(d);
            Ok(())
        }
        fn err(&mut self, d: &[u8]) -> std::io::Result<()> {
            self.err.extend_from_slice(d);
            Ok(())
        }
    }

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn demux_whole_frames() {
        let mut data = frame(1, b"hello\n");
        data.extend(frame(2, b"oops\n"));
        data.extend(frame(1, b""));
        data.extend(frame(1, b"bye\n"));
        let mut c = Collect::default();
        Demux::new().feed(&data, &mut c).unwrap();
        assert_eq!(c.out, b"hello\nbye\n");
        assert_eq!(c.err, b"oops\n");
    }

    #[test]
    fn demux_split_at_every_byte() {
        let mut data = frame(1, b"out one\n");
        data.extend(frame(2, b"err\n"));
        data.extend(frame(1, &[b'x'; 300]));
        for size in 1..=data.len() {
            let mut c = Collect::default();
            let mut d = Demux::new();
            for chunk in data.chunks(size) {
                d.feed(chunk, &mut c).unwrap();
            }
            let mut want = b"out one\n".to_vec();
            want.extend_from_slice(&[b'x'; 300]);
            assert_eq!(c.out, want, "chunk size {size}");
            assert_eq!(c.err, b"err\n", "chunk size {size}");
        }
    }

    #[test]
    fn demux_header_split_in_the_length() {
        let data = frame(2, &[b'e'; 70000]);
        let mut c = Collect::default();
        let mut d = Demux::new();
        d.feed(&data[..5], &mut c).unwrap();
        d.feed(&data[5..7], &mut c).unwrap();
        d.feed(&data[7..10], &mut c).unwrap();
        d.feed(&data[10..], &mut c).unwrap();
        assert_eq!(c.err.len(), 70000);
        assert!(c.out.is_empty());
    }

    #[test]
    fn demux_system_error_and_bad_header() {
        let mut c = Collect::default();
        let e = Demux::new().feed(&frame(3, b"boom"), &mut c).unwrap_err();
        assert_eq!(e.to_string(), "error from daemon in stream: boom");
        let e = Demux::new().feed(&frame(9, b"x"), &mut c).unwrap_err();
        assert!(e.to_string().contains("Unrecognized input header: 9"));
    }
}
