use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// A content digest, always `sha256:<64 lower-case hex>`. Stored as the hex
/// part only; the algorithm is implied.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Digest(b)
    }
    /// Digest of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    /// First 12 hex characters, as docker shows short IDs.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Parse the bare hex form (no `sha256:` prefix).
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::invalid(format!(
                "invalid checksum digest format: {s}"
            )));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| Error::invalid(format!("invalid checksum digest format: {s}")))?;
        Ok(Digest(out))
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.split_once(':') {
            Some(("sha256", h)) => Digest::from_hex(h),
            Some((alg, _)) => Err(Error::invalid(format!(
                "unsupported digest algorithm: {alg}"
            ))),
            None => Err(Error::invalid(format!(
                "invalid checksum digest format: {s}"
            ))),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! digest_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Digest);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Display::fmt(&self.0, f) }
        }
        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> { Ok($name(s.parse()?)) }
        }
    };
}

digest_newtype!(
    /// Digest of a layer's *uncompressed* tar (the image config's `rootfs.diff_ids`).
    DiffId
);
digest_newtype!(
    /// Identity of a layer stack: `chain(L1) = diff(L1)`,
    /// `chain(L1..n) = sha256(chain(L1..n-1) + " " + diff(Ln))`.
    ChainId
);

impl ChainId {
    pub fn next(parent: Option<ChainId>, diff: DiffId) -> ChainId {
        match parent {
            None => ChainId(diff.0),
            Some(p) => ChainId(Digest::of(format!("{} {}", p, diff).as_bytes())),
        }
    }
    /// Chain IDs of every prefix of `diffs`.
    pub fn chain(diffs: &[DiffId]) -> Vec<ChainId> {
        let mut out = Vec::with_capacity(diffs.len());
        let mut parent = None;
        for d in diffs {
            let c = ChainId::next(parent, *d);
            out.push(c);
            parent = Some(c);
        }
        out
    }
}

/// A writer that hashes what passes through it and counts bytes.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W> Sha256Writer<W> {
    pub fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest(self.hasher.finalize().into()),
            self.count,
        )
    }
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn rejects_bad_digests() {
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(
            "md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<Digest>()
                .is_err()
        );
        assert!(
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>()
                .is_err()
        );
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = DiffId(Digest::of(b"a"));
        let b = DiffId(Digest::of(b"b"));
        let chain = ChainId::chain(&[a, b]);
        assert_eq!(chain[0].0, a.0);
        assert_eq!(chain[1].0, Digest::of(format!("{} {}", a, b).as_bytes()));
    }
}
