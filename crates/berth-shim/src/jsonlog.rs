//! Docker's `json-file` log driver, byte for byte.
//!
//! ```text
//! <bundle>/
//!   <id>-json.log      current file, one JSON object per line:
//!                      {"log":"hello\n","stream":"stdout","time":"2026-11-27T22:14:26.219565508Z"}
//!   <id>-json.log.1    previous file (after a rotation) … up to .<max_file - 1>
//! ```
//!
//! Output is split at newlines the way Docker's log copier does it: a line
//! is logged with its `\n`; a line longer than [`PARTIAL_SIZE`] is logged in
//! pieces of that size without `\n` (all pieces carry the timestamp of the
//! first), and what is left when a stream ends is logged without `\n`.
//! Strings are escaped as Docker escapes them (`<`, `>`, `&` as `\u00XX`,
//! invalid UTF-8 as `\ufffd`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::timefmt::rfc3339_nano;

/// Docker's copier buffer: a line that fills it without a newline is logged
/// as a partial entry.
pub const PARTIAL_SIZE: usize = 16 * 1024;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Bytes of one stream not yet logged, and the time of the first partial
/// piece of the current line (Docker gives every piece that timestamp).
#[derive(Default)]
struct Pending {
    data: Vec<u8>,
    partial_since: Option<SystemTime>,
}

/// Rotation settings: `max_size` bytes per file (None: never rotate) and
/// how many files to keep in all (1: truncate instead of renaming).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: Option<u64>,
    pub max_file: u32,
}

/// The writer for one container's log.
pub struct JsonLog {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    pending: [Pending; 2],
    line: Vec<u8>,
}

impl JsonLog {
    /// Open (append to) the log at `path`, creating it with mode 0640.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<JsonLog> {
        let file = open_log(path, false)?;
        let size = file.metadata()?.len();
        Ok(JsonLog {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            pending: Default::default(),
            line: Vec::new(),
        })
    }

    /// Log a chunk of output read at `now`.
    pub fn write(&mut self, stream: Stream, mut data: &[u8], now: SystemTime) -> io::Result<()> {
        let mut result = Ok(());
        while !data.is_empty() {
            let p = &mut self.pending[stream.index()];
            let room = PARTIAL_SIZE - p.data.len();
            let take = data.len().min(room);
            p.data.extend_from_slice(&data[..take]);
            data = &data[take..];
            if let Err(e) = self.emit_lines(stream, now) {
                result = Err(e);
            }
        }
        result
    }

    /// The stream has ended: log what is left of its last line, without `\n`.
    pub fn finish(&mut self, stream: Stream, now: SystemTime) -> io::Result<()> {
        let p = &mut self.pending[stream.index()];
        if p.data.is_empty() {
            return Ok(());
        }
        let ts = p.partial_since.take().unwrap_or(now);
        let mut data = std::mem::take(&mut p.data);
        let r = self.entry(stream, &data, false, ts);
        data.clear();
        self.pending[stream.index()].data = data;
        r
    }

    /// Log every complete line in the pending buffer; if it is full without
    /// a newline, log it as a partial piece.
    fn emit_lines(&mut self, stream: Stream, now: SystemTime) -> io::Result<()> {
        let mut data = std::mem::take(&mut self.pending[stream.index()].data);
        let mut start = 0;
        let mut result = Ok(());
        while let Some(nl) = data[start..].iter().position(|&b| b == b'\n') {
            let ts = self.pending[stream.index()]
                .partial_since
                .take()
                .unwrap_or(now);
            if let Err(e) = self.entry(stream, &data[start..start + nl], true, ts) {
                result = Err(e);
            }
            start += nl + 1;
        }
        if start == 0 && data.len() == PARTIAL_SIZE {
            let ts = *self.pending[stream.index()]
                .partial_since
                .get_or_insert(now);
            if let Err(e) = self.entry(stream, &data, false, ts) {
                result = Err(e);
            }
            start = data.len();
        }
        data.drain(..start);
        self.pending[stream.index()].data = data;
        result
    }

    fn entry(
        &mut self,
        stream: Stream,
        text: &[u8],
        newline: bool,
        ts: SystemTime,
    ) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        encode_entry(&mut line, text, newline, stream.name(), &rfc3339_nano(ts));
        let r = self.append(&line);
        if line.capacity() > 2 * PARTIAL_SIZE + 256 {
            line = Vec::new();
        }
        self.line = line;
        r
    }

    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if let Some(max) = self.rotation.max_size
            && self.size > 0
            && self.size + line.len() as u64 > max
        {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `X` → `X.1`, `X.1` → `X.2` … (dropping `X.<max_file-1>`), then a new
    /// empty `X`; with `max_file` 1 the file is only truncated.
    fn rotate(&mut self) -> io::Result<()> {
        let name = self.path.as_os_str().to_owned();
        let numbered = |i: u32| {
            let mut n = name.clone();
            n.push(format!(".{i}"));
            PathBuf::from(n)
        };
        if self.rotation.max_file >= 2 {
            let last = numbered(self.rotation.max_file - 1);
            ignore_missing(std::fs::remove_file(&last))?;
            for i in (2..self.rotation.max_file).rev() {
                ignore_missing(std::fs::rename(numbered(i - 1), numbered(i)))?;
            }
            ignore_missing(std::fs::rename(&self.path, numbered(1)))?;
        }
        self.file = open_log(&self.path, true)?;
        self.size = 0;
        Ok(())
    }
}

fn open_log(path: &Path, truncate: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).mode(0o640);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    o.open(path)
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// One log line: `{"log":…,"stream":…,"time":…}\n`.
pub fn encode_entry(out: &mut Vec<u8>, text: &[u8], newline: bool, stream: &str, time: &str) {
    out.extend_from_slice(b"{\"log\":\"");
    escape_into(out, text);
    if newline {
        out.extend_from_slice(b"\\n");
    }
    out.extend_from_slice(b"\",\"stream\":\"");
    escape_into(out, stream.as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// Escape bytes into a JSON string body exactly as Docker's jsonlog does.
pub fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = s;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                escape_str(out, valid, HEX);
                return;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                escape_str(out, std::str::from_utf8(good).unwrap_or_default(), HEX);
                // Go's DecodeRune consumes one byte per invalid sequence start;
                // `error_len` covers a maximal invalid prefix, so emit one
                // replacement per byte of it to match.
                let n = e.error_len().unwrap_or(bad.len());
                for _ in 0..n {
                    out.extend_from_slice(b"\\ufffd");
                }
                rest = &bad[n..];
            }
        }
    }
}

fn escape_str(out: &mut Vec<u8>, s: &str, hex: &[u8; 16]) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&[u8]> = match c {
            '\\' => Some(b"\\\\"),
            '"' => Some(b"\\\""),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\u{2028}' => Some(b"\\u2028"),
            '\u{2029}' => Some(b"\\u2029"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(hex[(b >> 4) as usize]);
                out.push(hex[(b & 0xf) as usize]);
            }
        }
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(1_795_817_666_000_000_000 + nanos)
    }

    fn esc(s: &[u8]) -> String {
        let mut v = Vec::new();
        escape_into(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_like_docker() {
        assert_eq!(esc(b"plain text"), "plain text");
        assert_eq!(esc(b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(esc(b"\n\r\t\x01\x1f"), "\\n\\r\\u0009\\u0001\\u001f");
        assert_eq!(esc(b"<a>&"), "\\u003ca\\u003e\\u0026");
        assert_eq!(esc("h\u{e9}llo \u{2603}".as_bytes()), "h\u{e9}llo \u{2603}");
        assert_eq!(esc("x\u{2028}y\u{2029}".as_bytes()), "x\\u2028y\\u2029");
        assert_eq!(esc(b"a\xffb"), "a\\ufffdb");
        assert_eq!(esc(b"\xe2\x82"), "\\ufffd\\ufffd");
        assert_eq!(esc(b"\x7f"), "\x7f");
    }

    #[test]
    fn entry_format() {
        let mut v = Vec::new();
        encode_entry(
            &mut v,
            b"hello",
            true,
            "stdout",
            "2026-11-27T22:14:26.219565508Z",
        );
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-27T22:14:26.219565508Z\"}\n"
        );
    }

    fn read_entries(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn unlimited() -> Rotation {
        Rotation {
            max_size: None,
            max_file: 1,
        }
    }

    #[test]
    fn splits_lines_and_keeps_partial_until_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = JsonLog::open(&path, unlimited()).unwrap();
        log.write(Stream::Stdout, b"hello\nwor", t(1)).unwrap();
        log.write(Stream::Stderr, b"oops\n", t(2)).unwrap();
        log.write(Stream::Stdout, b"ld\n\nlast", t(3)).unwrap();
        log.finish(Stream::Stdout, t(4)).unwrap();
        log.finish(Stream::Stderr, t(5)).unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            raw,
            "{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-27T22:14:26.000000001Z\"}\n\
             {\"log\":\"oops\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-27T22:14:26.000000002Z\"}\n\
             {\"log\":\"world\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-27T22:14:26.000000003Z\"}\n\
             {\"log\":\"\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-27T22:14:26.000000003Z\"}\n\
             {\"log\":\"last\",\"stream\":\"stdout\",\"time\":\"2026-11-27T22:14:26.000000004Z\"}\n"
        );
    }

    #[test]
    fn long_line_is_logged_in_16k_pieces_with_first_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = JsonLog::open(&path, unlimited()).unwrap();
        let long = vec![b'x'; PARTIAL_SIZE * 2 + 10];
        log.write(Stream::Stdout, &long[..1000], t(1)).unwrap();
        log.write(Stream::Stdout, &long[1000..], t(2)).unwrap();
        log.write(Stream::Stdout, b"\nnext\n", t(3)).unwrap();
        let e = read_entries(&path);
        assert_eq!(e.len(), 4);
        assert_eq!(e[0]["log"].as_str().unwrap().len(), PARTIAL_SIZE);
        assert_eq!(e[1]["log"].as_str().unwrap().len(), PARTIAL_SIZE);
        assert_eq!(e[2]["log"].as_str().unwrap(), "x".repeat(10) + "\n");
        assert_eq!(e[3]["log"], "next\n");
        // All pieces of the long line carry the first piece's timestamp.
        for piece in &e[..3] {
            assert_eq!(piece["time"], "2026-11-27T22:14:26.000000002Z");
        }
        assert_eq!(e[3]["time"], "2026-11-27T22:14:26.000000003Z");
    }

    #[test]
    fn rotates_by_size_and_keeps_max_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let rot = Rotation {
            max_size: Some(150),
            max_file: 3,
        };
        let mut log = JsonLog::open(&path, rot).unwrap();
        // Each entry is 66 bytes: two fit in 150, the third rotates.
        for i in 0..7 {
            log.write(Stream::Stdout, format!("line{i}\n").as_bytes(), t(0))
                .unwrap();
        }
        let names = |p: &Path| -> Vec<String> {
            read_entries(p)
                .iter()
                .map(|e| e["log"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&path), ["line6\n"]);
        assert_eq!(
            names(&dir.path().join("c-json.log.1")),
            ["line4\n", "line5\n"]
        );
        assert_eq!(
            names(&dir.path().join("c-json.log.2")),
            ["line2\n", "line3\n"]
        );
        assert!(!dir.path().join("c-json.log.3").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 150);
    }

    #[test]
    fn max_file_one_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let rot = Rotation {
            max_size: Some(100),
            max_file: 1,
        };
        let mut log = JsonLog::open(&path, rot).unwrap();
        for i in 0..3 {
            log.write(Stream::Stdout, format!("line{i}\n").as_bytes(), t(0))
                .unwrap();
        }
        assert_eq!(read_entries(&path).len(), 1);
        assert!(!dir.path().join("c-json.log.1").exists());
    }

    #[test]
    fn appends_to_existing_log_and_counts_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let rot = Rotation {
            max_size: Some(100),
            max_file: 2,
        };
        JsonLog::open(&path, rot)
            .unwrap()
            .write(Stream::Stdout, b"first\n", t(0))
            .unwrap();
        let mut log = JsonLog::open(&path, rot).unwrap();
        log.write(Stream::Stdout, b"second\n", t(0)).unwrap();
        assert_eq!(read_entries(&path)[0]["log"], "second\n");
        assert_eq!(
            read_entries(&dir.path().join("c-json.log.1"))[0]["log"],
            "first\n"
        );
    }
}
