//! Unpacked layer directories, one per chain ID, shared by every image
//! that has the layer. Extraction happens in a staging directory under
//! `tmp/`; a finished layer is moved into place with one rename.
//!
//! ```text
//! <data-root>/layers/<chain id hex>/diff/   an overlay lower dir (whiteouts in overlay form)
//! <data-root>/tmp/unpack-<random>/diff/     an extraction in progress
//! ```

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use berth_snapshots::{ApplyOptions, Compression, apply_tar, decompress, detect_compression};
use berth_types::{ChainId, DiffId, Error, Result};
use sha2::{Digest as _, Sha256};

#[derive(Clone, Debug)]
pub struct LayerStore {
    root: PathBuf,
    tmp: PathBuf,
}

/// A layer extracted into staging, not yet in place.
#[derive(Debug)]
pub struct Staged {
    pub dir: PathBuf,
    /// Digest of the uncompressed tar; `None` when the blob was not
    /// compressed, in which case it is the blob's own digest (see
    /// [`Staged::set_blob_digest`]) and hashing it twice is skipped.
    pub diff_id: Option<DiffId>,
    /// Bytes of the uncompressed tar stream.
    pub tar_size: u64,
    /// Sum of regular file sizes.
    pub size: u64,
    pub compression: Compression,
}

impl Staged {
    /// Record the digest of the blob this layer came from; an uncompressed
    /// blob's digest is the layer's diff ID.
    pub fn set_blob_digest(&mut self, blob: berth_types::Digest) {
        if self.diff_id.is_none() {
            self.diff_id = Some(DiffId(blob));
        }
    }

    pub fn diff_id(&self) -> DiffId {
        self.diff_id
            .expect("diff ID known once the blob digest is set")
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A reader that hashes and counts what is read through it.
struct HashReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

impl LayerStore {
    pub fn open(data_root: &Path) -> Result<Self> {
        let root = data_root.join("layers");
        let tmp = data_root.join("tmp");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&tmp)?;
        // Staged layers (and so layers/) go where inodes are free, not
        // where the last deleted layers were (see the function).
        for d in [&root, &tmp] {
            berth_snapshots::spread_subdirectories(d);
        }
        Ok(LayerStore { root, tmp })
    }

    pub fn dir(&self, chain: &ChainId) -> PathBuf {
        self.root.join(chain.0.hex())
    }

    /// The overlay lower dir of a layer.
    pub fn diff_dir(&self, chain: &ChainId) -> PathBuf {
        self.dir(chain).join("diff")
    }

    pub fn exists(&self, chain: &ChainId) -> bool {
        self.dir(chain).exists()
    }

    /// Extract a (possibly compressed) layer stream into staging. Reads the
    /// stream to its end.
    pub fn stage<R: Read>(&self, blob: R) -> Result<Staged> {
        let dir = self
            .tmp
            .join(format!("unpack-{:016x}", rand::random::<u64>()));
        let diff = dir.join("diff");
        fs::create_dir_all(&diff)?;
        let mut staged = Staged {
            dir,
            diff_id: None,
            tar_size: 0,
            size: 0,
            compression: Compression::None,
        };
        let mut buffered = BufReader::with_capacity(1 << 20, blob);
        staged.compression = detect_compression(&mut buffered)?;
        let hasher = (staged.compression != Compression::None).then(Sha256::new);
        let mut hr = HashReader {
            inner: decompress(buffered, staged.compression)?,
            hasher,
            count: 0,
        };
        let stats = apply_tar(&mut hr, &diff, &ApplyOptions::default())?;
        // The tar reader stops at the end-of-archive marker; the digest covers
        // every byte of the stream, padding included.
        io::copy(&mut hr, &mut io::sink()).map_err(|e| Error::from(e).context("read layer"))?;
        staged.diff_id = hr
            .hasher
            .map(|h| DiffId(berth_types::Digest::from_bytes(h.finalize().into())));
        staged.tar_size = hr.count;
        staged.size = stats.size;
        Ok(staged)
    }

    /// Read `data` to its end, writing every byte to `sink` (the content
    /// store ingest, which hashes it) while another thread extracts it: the
    /// archive read, the blob write and its hash run on this thread,
    /// decompression and extraction on the other. The outer result is the
    /// read of `data`; the inner one the extraction, which an image may not
    /// even need (the caller decides).
    pub fn stage_tee<R: Read, W: io::Write>(
        &self,
        mut data: R,
        sink: &mut W,
    ) -> Result<Result<Staged>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        std::thread::scope(|s| {
            let worker = s.spawn(move || self.stage(ChannelReader::new(rx)));
            let mut tx = Some(tx);
            loop {
                // Fill whole 1 MiB chunks: readers that return a few KiB at a
                // time (an HTTP body) must not cost a 1 MiB buffer per read.
                let mut chunk = vec![0u8; 1 << 20];
                let mut n = 0;
                while n < chunk.len() {
                    match data.read(&mut chunk[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(Error::from(e)),
                    }
                }
                if n == 0 {
                    break;
                }
                chunk.truncate(n);
                sink.write_all(&chunk)?;
                // A failed extraction stops reading: keep hashing the blob.
                if let Some(t) = &tx
                    && t.send(chunk).is_err()
                {
                    tx = None;
                }
            }
            drop(tx);
            Ok(worker
                .join()
                .unwrap_or_else(|_| Err(Error::internal("layer extraction panicked"))))
        })
    }

    /// Move a staged layer into place as `chain`. If the layer already
    /// exists (another image has it), the staged copy is discarded.
    pub fn commit(&self, mut staged: Staged, chain: &ChainId) -> Result<()> {
        let dst = self.dir(chain);
        if dst.exists() {
            return Ok(()); // `staged` is removed on drop
        }
        match fs::rename(&staged.dir, &dst) {
            Ok(()) => {
                staged.dir = PathBuf::new();
                Ok(())
            }
            Err(_) if dst.exists() => Ok(()),
            Err(e) => Err(Error::from(e).context(format!("commit layer {chain}"))),
        }
    }

    pub fn remove(&self, chain: &ChainId) -> Result<()> {
        match fs::remove_dir_all(self.dir(chain)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Every layer directory on disk (garbage collection only).
    pub fn list(&self) -> Result<Vec<ChainId>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root)? {
            let name = e?.file_name();
            if let Some(Ok(d)) = name.to_str().map(berth_types::Digest::from_hex) {
                out.push(ChainId(d));
            } else {
                tracing::warn!(?name, "stray entry in layer store");
            }
        }
        Ok(out)
    }
}

/// The receiving end of a channel of chunks as a reader.
pub(crate) struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub(crate) fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Does this look like the start of a layer (a tar, gzip or zstd stream)?
pub fn looks_like_layer(head: &[u8], size: u64) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 512 && &head[257..262] == b"ustar")
        || (size >= 1024 && head.len() >= 512 && head[..512].iter().all(|&b| b == 0))
}
