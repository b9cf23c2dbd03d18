//! Blob bytes on disk: content-addressed files shared by every repository,
//! upload staging files, and the streaming writer that hashes while it
//! writes. A blob file appears under its digest only by `rename` of a
//! staged file whose digest was verified, so a reader never sees a partial
//! or wrong blob, whatever moment the process dies at.
//!
//! ```text
//! <root>/
//!   registry.redb                  metadata (see meta.rs)
//!   blobs/sha256/<hex[0..2]>/<hex> committed blobs (and manifests), read-only
//!   uploads/<uuid>                 bytes of an upload session so far
//!   tmp/                           monolithic uploads, manifests and proxy
//!                                  fetches being staged; emptied at start
//!   token.key                      HMAC key of bearer tokens (token auth only)
//! ```

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_types::Digest;
use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest as _, Sha256};

use crate::error::{Code, RegError, RegResult};

/// The on-disk layout under a registry root.
#[derive(Clone, Debug)]
pub struct BlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens the store under `root`, creating directories, and empties `tmp/`.
    pub fn open(root: &Path) -> io::Result<Self> {
        let s = BlobStore {
            blobs: root.join("blobs/sha256"),
            uploads: root.join("uploads"),
            tmp: root.join("tmp"),
        };
        fs::create_dir_all(&s.blobs)?;
        fs::create_dir_all(&s.uploads)?;
        if s.tmp.exists() {
            fs::remove_dir_all(&s.tmp)?;
        }
        fs::create_dir_all(&s.tmp)?;
        Ok(s)
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        let h = d.hex();
        self.blobs.join(&h[..2]).join(h)
    }

    /// Size of a committed blob, if its file exists.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.uploads.join(id)
    }

    /// A new empty staging file under `tmp/`.
    pub fn staging(&self) -> io::Result<(PathBuf, File)> {
        let p = self.tmp.join(random_id());
        let f = File::options().write(true).create_new(true).open(&p)?;
        Ok((p, f))
    }

    /// Moves `staged` (complete, verified to hash to `d`, synced) into
    /// place. If the blob exists already the staged copy is dropped and the
    /// existing file's mtime refreshed, so garbage collection's grace window
    /// counts from now. The caller holds `d`'s lock.
    pub fn install(&self, staged: &Path, d: &Digest) -> io::Result<()> {
        let dst = self.path(d);
        if let Ok(f) = File::options().write(true).open(&dst) {
            fs::remove_file(staged)?;
            f.set_modified(SystemTime::now())?;
            return Ok(());
        }
        let dir = dst.parent().expect("blob path has a parent");
        fs::create_dir_all(dir)?;
        fs::rename(staged, &dst)?;
        // the rename is durable once the directory is
        File::open(dir)?.sync_all()
    }

    /// Writes `bytes` (whose digest is `d`) into the store. The caller holds `d`'s lock.
    pub fn put_bytes(&self, d: &Digest, bytes: &[u8]) -> io::Result<()> {
        if self.path(d).exists() {
            return self.install_existing(d);
        }
        let (p, mut f) = self.staging()?;
        let r = f.write_all(bytes).and_then(|_| f.sync_data());
        drop(f);
        match r {
            Ok(()) => self.install(&p, d),
            Err(e) => {
                let _ = fs::remove_file(&p);
                Err(e)
            }
        }
    }

    fn install_existing(&self, d: &Digest) -> io::Result<()> {
        File::options()
            .write(true)
            .open(self.path(d))?
            .set_modified(SystemTime::now())
    }

    /// Deletes blob `d`; returns the bytes freed. The caller holds `d`'s lock.
    pub fn remove(&self, d: &Digest) -> io::Result<u64> {
        let p = self.path(d);
        let n = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&p) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Every committed blob, and files whose names are not digests (by path,
    /// so the caller can remove them).
    pub fn list(&self) -> io::Result<(Vec<BlobFile>, Vec<PathBuf>)> {
        let mut blobs = Vec::new();
        let mut strays = Vec::new();
        for dir in fs::read_dir(&self.blobs)? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                strays.push(dir.path());
                continue;
            }
            for f in fs::read_dir(dir.path())? {
                let f = f?;
                let name = f.file_name();
                let m = f.metadata()?;
                match name.to_str().map(Digest::from_hex) {
                    Some(Ok(d)) if m.is_file() => {
                        blobs.push((d, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
                    }
                    _ => strays.push(f.path()),
                }
            }
        }
        Ok((blobs, strays))
    }

    /// Upload staging files: id, size, mtime.
    pub fn list_uploads(&self) -> io::Result<Vec<(String, u64, SystemTime)>> {
        let mut out = Vec::new();
        for f in fs::read_dir(&self.uploads)? {
            let f = f?;
            let m = f.metadata()?;
            out.push((
                f.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ));
        }
        Ok(out)
    }
}

/// A committed blob file: digest, size, mtime.
pub type BlobFile = (Digest, u64, SystemTime);

/// 128 random bits as 32 hex characters: upload session IDs and staging names.
pub fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    hex::encode(b)
}

/// Per-digest locks (striped), held across "file in place" + "row
/// committed" by writers and across "no row" + "file deleted" by the
/// garbage-collection sweep.
pub struct Locks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for Locks {
    fn default() -> Self {
        Locks {
            stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl Locks {
    pub async fn lock(&self, d: &Digest) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[d.as_bytes()[0] as usize].lock().await
    }
}

/// A file being written with the sha256 of everything written so far.
pub struct Ingest {
    pub file: File,
    pub hasher: Sha256,
    pub written: u64,
}

impl Ingest {
    pub fn new(file: File) -> Self {
        Ingest {
            file,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Resumes an ingest of the file at `path` (opened for appending),
    /// hashing what is already there.
    pub fn resume(path: &Path) -> io::Result<Self> {
        let mut f = File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            written += n as u64;
        }
        let file = File::options().append(true).open(path)?;
        Ok(Ingest {
            file,
            hasher,
            written,
        })
    }

    pub fn digest(&self) -> Digest {
        Digest::from_bytes(self.hasher.clone().finalize().into())
    }
}

/// How a body ended.
pub struct IngestOutcome {
    pub ingest: Ingest,
    /// Bytes taken from this body.
    pub received: u64,
    pub error: Option<RegError>,
}

/// A blocking thread that appends the chunks sent to it to `ing`, hashing
/// them; it hands the ingest back (with the first write error) when the
/// sender is dropped.
pub fn writer(
    ing: Ingest,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<(Ingest, Option<io::Error>)>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let handle = tokio::task::spawn_blocking(move || {
        let mut ing = ing;
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = ing.file.write_all(&chunk) {
                return (ing, Some(e));
            }
            ing.hasher.update(&chunk);
            ing.written += chunk.len() as u64;
        }
        (ing, None)
    });
    (tx, handle)
}

/// Streams a request body into `ing` from a blocking thread, hashing as it
/// writes (the async side only moves frames). At most `limit` bytes are
/// accepted in total (`written` included). Whatever was written before a
/// failure stays written and hashed, so a session can resume from it.
pub async fn ingest_body<B>(ing: Ingest, mut body: B, limit: Option<u64>) -> IngestOutcome
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let already = ing.written;
    let (tx, writer) = writer(ing);
    let mut received = 0u64;
    let mut error = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                error = Some(RegError::new(
                    Code::BlobUploadInvalid,
                    format!("reading request body: {e}"),
                ));
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if let Some(limit) = limit
            && already + received > limit
        {
            error = Some(RegError::new(
                Code::TooLarge,
                format!("blob exceeds the size limit of {limit} bytes"),
            ));
            break;
        }
        if tx.send(data).await.is_err() {
            break; // the writer failed; its error is reported below
        }
    }
    drop(tx);
    let (ingest, werr) = writer.await.expect("ingest writer does not panic");
    if let Some(e) = werr {
        error = Some(RegError::internal(format!("writing upload: {e}")));
    }
    IngestOutcome {
        ingest,
        received,
        error,
    }
}

/// Checks that an upload hashes to `expected`.
pub fn verify(actual: &Digest, expected: &Digest) -> RegResult<()> {
    if actual != expected {
        return Err(RegError::new(
            Code::DigestInvalid,
            format!("provided digest {expected} did not match uploaded content ({actual})"),
        )
        .detail(serde_json::json!({ "digest": expected.to_string() })));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_atomic_and_deduplicates() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        s.put_bytes(&d, b"hello").unwrap();
        assert_eq!(fs::read(s.path(&d)).unwrap(), b"hello");
        let (p, mut f) = s.staging().unwrap();
        f.write_all(b"hello").unwrap();
        s.install(&p, &d).unwrap();
        assert!(!p.exists());
        let (blobs, strays) = s.list().unwrap();
        assert_eq!(blobs.len(), 1);
        assert!(strays.is_empty());
        assert_eq!(s.remove(&d).unwrap(), 5);
        assert_eq!(s.remove(&d).unwrap(), 0);
    }

    #[tokio::test]
    async fn ingest_hashes_what_it_writes_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u");
        let ing = Ingest::new(File::create(&p).unwrap());
        let body = http_body_util::Full::new(Bytes::from_static(b"hello "));
        let out = ingest_body(ing, body, None).await;
        assert!(out.error.is_none());
        assert_eq!(out.received, 6);
        drop(out);
        let ing = Ingest::resume(&p).unwrap();
        assert_eq!(ing.written, 6);
        let out = ingest_body(
            ing,
            http_body_util::Full::new(Bytes::from_static(b"world")),
            None,
        )
        .await;
        assert_eq!(out.ingest.digest(), Digest::of(b"hello world"));
        assert_eq!(fs::read(&p).unwrap(), b"hello world");
        let ing = Ingest::new(File::create(dir.path().join("v")).unwrap());
        let out = ingest_body(
            ing,
            http_body_util::Full::new(Bytes::from_static(b"123456")),
            Some(5),
        )
        .await;
        assert_eq!(out.error.unwrap().code, Code::TooLarge);
    }
}
