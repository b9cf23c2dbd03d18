//! Docker's multiplexed stream framing for non-tty attach and exec streams:
//! each frame is an 8-byte header — byte 0 the stream (0 stdin, 1 stdout,
//! 2 stderr), bytes 1..4 zero, bytes 4..8 the payload length as a big-endian
//! u32 — followed by the payload.

/// Stream byte of a frame.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// Length of a frame header.
pub const HEADER_LEN: usize = 8;

/// The header of a frame carrying `len` bytes of `stream`.
pub fn header(stream: u8, len: u32) -> [u8; HEADER_LEN] {
    let l = len.to_be_bytes();
    [stream, 0, 0, 0, l[0], l[1], l[2], l[3]]
}

/// Append `payload` to `out` as frames of `stream` (split if it is longer
/// than a u32 can say, which a read never is).
pub fn encode(out: &mut Vec<u8>, stream: u8, payload: &[u8]) {
    for chunk in payload.chunks(u32::MAX as usize) {
        out.extend_from_slice(&header(stream, chunk.len() as u32));
        out.extend_from_slice(chunk);
    }
}

/// Split one complete frame off the front of `buf`: `(stream, payload,
/// bytes consumed)`, or None if `buf` does not yet hold a whole frame.
pub fn decode(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let end = HEADER_LEN.checked_add(len)?;
    if buf.len() < end {
        return None;
    }
    Some((buf[0], &buf[HEADER_LEN..end], end))
}

/// Decode a whole buffer of frames into (stdout, stderr) bytes; a trailing
/// incomplete frame is ignored. For tests and simple clients.
pub fn demux_all(mut buf: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some((stream, payload, used)) = decode(buf) {
        match stream {
            STDERR => err.extend_from_slice(payload),
            _ => out.extend_from_slice(payload),
        }
        buf = &buf[used..];
    }
    (out, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        assert_eq!(header(STDOUT, 5), [1, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(header(STDERR, 0x0102_0304), [2, 0, 0, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn encode_decode_roundtrip() {
        let mut v = Vec::new();
        encode(&mut v, STDOUT, b"hello\n");
        encode(&mut v, STDERR, b"oops");
        assert_eq!(&v[..8], &[1, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(&v[8..14], b"hello\n");
        let (s, p, n) = decode(&v).unwrap();
        assert_eq!((s, p, n), (STDOUT, &b"hello\n"[..], 14));
        let (s, p, n) = decode(&v[14..]).unwrap();
        assert_eq!((s, p, n), (STDERR, &b"oops"[..], 12));
        assert_eq!(demux_all(&v), (b"hello\n".to_vec(), b"oops".to_vec()));
    }

    #[test]
    fn incomplete_frames_wait() {
        let mut v = Vec::new();
        encode(&mut v, STDOUT, b"abc");
        assert!(decode(&v[..7]).is_none());
        assert!(decode(&v[..10]).is_none());
        assert!(decode(&v).is_some());
        let empty = header(STDOUT, 0);
        assert_eq!(decode(&empty), Some((STDOUT, &b""[..], 8)));
    }
}
