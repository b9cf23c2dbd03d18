//! berth-content: the content store. Maps a digest to bytes, and nothing
//! more: it knows no images, manifests or references.
//!
//! Owns: `<root>/content/sha256/<hex>` and ingest files under `<root>/tmp/`.
//! Must not: decide what is garbage (the metadata layer does), or ever make
//! a blob visible under its digest before the bytes were verified.
//!
//! ```text
//! <data-root>/
//!   content/sha256/<hex>    committed blobs, read-only, named by their sha256
//!   tmp/ingest-<random>     an ingest in progress; garbage after a crash
//! ```
#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use berth_types::{Digest, Error, Result, Sha256Writer};

/// The content store rooted at a data root.
#[derive(Clone, Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl ContentStore {
    /// Open (creating directories as needed) the store under `data_root`.
    pub fn open(data_root: &Path) -> Result<Self> {
        let blobs = data_root.join("content/sha256");
        let tmp = data_root.join("tmp");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&tmp)?;
        Ok(ContentStore { blobs, tmp })
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// The staging directory shared with other stores on the same filesystem.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Size of a committed blob, if present.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    pub fn exists(&self, d: &Digest) -> bool {
        self.path(d).exists()
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::not_found(format!("content {d}: not found")),
            _ => Error::from(e).context(format!("open content {d}")),
        })
    }

    /// Read a whole (small) blob, refusing anything over `limit` bytes.
    pub fn read(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let f = self.open_blob(d)?;
        let mut buf = Vec::new();
        f.take(limit + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > limit {
            return Err(Error::invalid(format!(
                "content {d}: larger than {limit} bytes"
            )));
        }
        Ok(buf)
    }

    /// Start an ingest. Write the bytes, then `commit`; dropping it aborts.
    pub fn ingest(&self) -> Result<Ingest> {
        let path = self
            .tmp
            .join(format!("ingest-{:016x}", rand::random::<u64>()));
        let file = File::create(&path)?;
        Ok(Ingest {
            w: Some(Sha256Writer::new(BufWriter::with_capacity(1 << 20, file))),
            path,
            blobs: self.blobs.clone(),
        })
    }

    /// Store a small blob held in memory.
    pub fn put(
        &self,
        data: &[u8],
        expected: Option<&Digest>,
        hold: impl FnOnce(&Digest),
    ) -> Result<Digest> {
        let d = Digest::of(data);
        if let Some(e) = expected
            && *e != d
        {
            return Err(digest_mismatch(e, &d));
        }
        if self.exists(&d) {
            hold(&d);
            return Ok(d);
        }
        let mut ing = self.ingest()?;
        ing.write_all(data)?;
        ing.commit_with(Some(&d), hold).map(|(d, _)| d)
    }

    /// Remove a blob; a missing blob is not an error.
    pub fn delete(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.path(d)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Every committed blob (a directory walk: for garbage collection only).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.blobs)? {
            let name = e?.file_name();
            match name.to_str().map(Digest::from_hex) {
                Some(Ok(d)) => out.push(d),
                _ => tracing::warn!(?name, "stray file in content store"),
            }
        }
        Ok(out)
    }
}

fn digest_mismatch(expected: &Digest, got: &Digest) -> Error {
    Error::invalid(format!("digest mismatch: expected {expected}, got {got}"))
}

/// An ingest in progress: a writer that hashes and counts.
pub struct Ingest {
    w: Option<Sha256Writer<BufWriter<File>>>,
    path: PathBuf,
    blobs: PathBuf,
}

impl Ingest {
    pub fn written(&self) -> u64 {
        self.w.as_ref().map_or(0, |w| w.count())
    }

    /// Verify against `expected` (if given) and move the blob into place.
    /// Returns the digest and size. An existing blob with that digest wins.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        self.commit_with(expected, |_| {})
    }

    /// As `commit`, calling `hold` with the verified digest before the blob
    /// becomes visible, so a lease can hold it before garbage collection
    /// could see it.
    pub fn commit_with(
        mut self,
        expected: Option<&Digest>,
        hold: impl FnOnce(&Digest),
    ) -> Result<(Digest, u64)> {
        let w = self.w.take().expect("ingest committed twice");
        let (buf, digest, size) = w.finish();
        let file = buf.into_inner().map_err(|e| Error::from(e.into_error()))?;
        drop(file);
        if let Some(e) = expected
            && *e != digest
        {
            let _ = fs::remove_file(&self.path);
            return Err(digest_mismatch(e, &digest));
        }
        hold(&digest);
        let dst = self.blobs.join(digest.hex());
        fs::rename(&self.path, &dst)?;
        Ok((digest, size))
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.as_mut().expect("ingest finished").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.as_mut().expect("ingest finished").flush()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.w.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_commit_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = cs.put(b"hello", None, |_| {}).unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(cs.read(&d, 100).unwrap(), b"hello");
        assert_eq!(cs.list().unwrap(), vec![d]);

        let mut ing = cs.ingest().unwrap();
        ing.write_all(b"other").unwrap();
        let err = ing.commit(Some(&d)).unwrap_err();
        assert!(err.message.contains("digest mismatch"), "{err}");
        assert_eq!(cs.list().unwrap(), vec![d]);
        assert_eq!(
            fs::read_dir(cs.tmp_dir()).unwrap().count(),
            0,
            "ingest file left behind"
        );
    }

    #[test]
    fn dropped_ingest_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let mut ing = cs.ingest().unwrap();
        ing.write_all(b"partial").unwrap();
        drop(ing);
        assert_eq!(fs::read_dir(cs.tmp_dir()).unwrap().count(), 0);
        assert!(cs.list().unwrap().is_empty());
        assert!(
            cs.read(&Digest::of(b"x"), 10).unwrap_err().kind == berth_types::ErrorKind::NotFound
        );
    }
}
