//! Compression of layer blobs: sniffing and decoding.

use std::io::{self, BufRead, Read};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Sniff the magic bytes (gzip `1f 8b`, zstd `28 b5 2f fd`, else plain tar)
/// without consuming them.
///
/// Looks only at what one `fill_buf` returns. If that holds fewer than four
/// bytes that are a prefix of the zstd magic, the stream is taken to be zstd
/// (a tar header cannot start with byte 0x28 0xb5, so nothing valid is lost;
/// the zstd decoder rejects it if it is not).
pub fn detect_compression<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    let buf = loop {
        match r.fill_buf() {
            Ok(b) => break b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if buf.starts_with(&GZIP_MAGIC) {
        return Ok(Compression::Gzip);
    }
    if buf.starts_with(&ZSTD_MAGIC) || (!buf.is_empty() && ZSTD_MAGIC.starts_with(buf)) {
        return Ok(Compression::Zstd);
    }
    Ok(Compression::None)
}

/// Wrap a reader in the decoder for `c`. Gzip streams may have several
/// members (all are decoded); zstd streams may have several frames.
pub fn decompress<'a, R: BufRead + 'a>(r: R, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor, Write};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn roundtrip(blob: &[u8]) -> (Compression, Vec<u8>) {
        let mut r = BufReader::new(Cursor::new(blob.to_vec()));
        let c = detect_compression(&mut r).unwrap();
        let mut out = Vec::new();
        decompress(r, c).unwrap().read_to_end(&mut out).unwrap();
        (c, out)
    }

    #[test]
    fn plain_is_passed_through() {
        let data = b"hello plain tar-ish data".repeat(100);
        assert_eq!(roundtrip(&data), (Compression::None, data));
    }

    #[test]
    fn empty_stream_is_plain() {
        assert_eq!(roundtrip(b""), (Compression::None, Vec::new()));
    }

    #[test]
    fn gzip_single_member() {
        let data = b"some gzip data ".repeat(1000);
        assert_eq!(roundtrip(&gzip(&data)), (Compression::Gzip, data));
    }

    #[test]
    fn gzip_multi_member_is_read_to_the_end() {
        let mut blob = gzip(b"first member, ");
        blob.extend(gzip(b"second member, "));
        blob.extend(gzip(b"third"));
        let (c, out) = roundtrip(&blob);
        assert_eq!(c, Compression::Gzip);
        assert_eq!(out, b"first member, second member, third");
    }

    #[test]
    fn zstd_single_and_multi_frame() {
        let data = b"zstd data ".repeat(1000);
        let mut blob = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(roundtrip(&blob), (Compression::Zstd, data.clone()));
        blob.extend(zstd::encode_all(&b"tail"[..], 1).unwrap());
        let mut want = data;
        want.extend(b"tail");
        assert_eq!(roundtrip(&blob), (Compression::Zstd, want));
    }

    #[test]
    fn detection_does_not_consume() {
        let blob = gzip(b"x");
        let mut r = BufReader::new(Cursor::new(blob.clone()));
        detect_compression(&mut r).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, blob);
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut blob = gzip(&b"abc".repeat(1000));
        let n = blob.len();
        blob.truncate(n - 10);
        let mut r = BufReader::new(Cursor::new(blob));
        let c = detect_compression(&mut r).unwrap();
        let mut out = Vec::new();
        assert!(decompress(r, c).unwrap().read_to_end(&mut out).is_err());
    }
}
