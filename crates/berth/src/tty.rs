//! The local terminal during interactive sessions: raw mode (restored on
//! every way out: return, error, panic, a terminating signal), the window
//! size, and docker's detach keys (parsing and detection in the input).

use std::io::IsTerminal;
use std::sync::{Mutex, Once};

use anyhow::{Result, bail};
use rustix::termios::{self, OptionalActions, Termios};

/// The terminal state to put back, set while raw mode is on.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static HOOK: Once = Once::new();

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Raw mode on our stdin (cfmakeraw) for as long as the guard lives.
pub struct RawMode(());

impl RawMode {
    pub fn enable() -> std::io::Result<RawMode> {
        let stdin = std::io::stdin();
        let orig = termios::tcgetattr(&stdin)?;
        let mut raw = orig.clone();
        raw.make_raw();
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(orig);
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                prev(info);
            }));
        });
        // A terminating signal must not leave the terminal raw.
        tokio::spawn(async {
            use tokio::signal::unix::{SignalKind, signal};
            let kinds = [
                SignalKind::terminate(),
                SignalKind::hangup(),
                SignalKind::interrupt(),
                SignalKind::quit(),
            ];
            let mut sigs = Vec::new();
            for k in kinds {
                if let Ok(s) = signal(k) {
                    sigs.push((k.as_raw_value(), s));
                }
            }
            let futs = sigs.iter_mut().map(|(n, s)| {
                let n = *n;
                Box::pin(async move {
                    s.recv().await;
                    n
                })
            });
            let (n, _, _) = futures_util::future::select_all(futs).await;
            restore();
            std::process::exit(128 + n);
        });
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Put the terminal back as it was before raw mode (idempotent).
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = saved {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &t);
    }
}

/// The size of the terminal on our stdout as (height, width).
pub fn size() -> Option<(u16, u16)> {
    let ws = termios::tcgetwinsize(std::io::stdout()).ok()?;
    (ws.ws_row > 0 || ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// docker's `term.ToBytes`: comma-separated keys, each a single character or
/// `ctrl-<a-z@[\]^_>`.
pub fn parse_detach_keys(keys: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for k in keys.split(',') {
        let lower = k.to_ascii_lowercase();
        if let Some(c) = lower.strip_prefix("ctrl-") {
            let b = match c.as_bytes() {
                [b @ b'a'..=b'z'] => b - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => bail!("Invalid escape sequence: {k}"),
            };
            out.push(b);
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            bail!("Unknown character: '{k}'");
        }
    }
    if out.is_empty() {
        bail!("Invalid detach keys ({keys}) provided");
    }
    Ok(out)
}

/// Finds the detach sequence in the input, across reads. Bytes that begin
/// the sequence are held back until it either completes (detach: they are
/// never sent) or breaks off (they are sent, as typed).
pub struct DetachMatcher {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachMatcher {
    pub fn new(keys: Vec<u8>) -> DetachMatcher {
        DetachMatcher { keys, matched: 0 }
    }

    /// The bytes to forward, and whether the sequence completed (the bytes
    /// returned are then those typed before it).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            if self.matched > 0 {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                    if self.keys.len() == 1 {
                        self.matched = 0;
                        return (out, true);
                    }
                    continue;
                }
            }
            out.push(b);
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_").unwrap(),
            vec![0, 27, 28, 29, 30, 31]
        );
        assert_eq!(
            parse_detach_keys("a,b,ctrl-A").unwrap(),
            vec![b'a', b'b', 1]
        );
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("ab").is_err());
        assert!(parse_detach_keys("").is_err());
    }

    #[test]
    fn detach_sequence_in_one_read() {
        let mut m = DetachMatcher::new(vec![16, 17]);
        assert_eq!(m.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(m.feed(&[b'x', 16, 17, b'y']), (b"x".to_vec(), true));
    }

    #[test]
    fn detach_sequence_split_across_reads() {
        let mut m = DetachMatcher::new(vec![16, 17]);
        assert_eq!(m.feed(&[b'a', 16]), (b"a".to_vec(), false));
        assert_eq!(m.feed(&[17]), (vec![], true));
        // Three keys, one byte at a time.
        let mut m = DetachMatcher::new(vec![1, 2, 3]);
        assert_eq!(m.feed(&[1]), (vec![], false));
        assert_eq!(m.feed(&[2]), (vec![], false));
        assert_eq!(m.feed(&[3]), (vec![], true));
    }

    #[test]
    fn broken_sequence_is_forwarded() {
        let mut m = DetachMatcher::new(vec![16, 17]);
        assert_eq!(m.feed(&[16]), (vec![], false));
        assert_eq!(m.feed(b"a"), (vec![16, b'a'], false));
        // A repeated first key: the first is sent, the second may still start the sequence.
        assert_eq!(m.feed(&[16, 16]), (vec![16], false));
        assert_eq!(m.feed(&[17]), (vec![], true));
        // A lone ctrl-q is just input.
        assert_eq!(m.feed(&[17]), (vec![17], false));
    }
}
