//! Unpacked layer directories, one per chain ID, shared by every image
//! that has the layer. Extraction happens in a staging directory under
//! `tmp/`; a finished layer is moved into place with one rename.
//!
//! ```text
//! <data-root>/layers/<chain id hex>/diff/   an overlay lower dir (whiteouts in overlay form)
//! <data-root>/tmp/unpack-<random>/diff/     an extraction in progress
//! ```

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use berth_snapshots::{
    ApplyOptions, Compression, RecentlyFreed, apply_tar_buffered, decompress, detect_compression,
};
use berth_types::{ChainId, DiffId, Error, Result};
use bytes::{Buf, Bytes};
use sha2::{Digest as _, Sha256};

#[derive(Clone, Debug)]
pub struct LayerStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Where layers were deleted lately; staging avoids those places.
    freed: Arc<RecentlyFreed>,
    /// The filesystem is slow to reuse deleted inodes (ext4 without a
    /// journal): staging directories are placed with care.
    careful: bool,
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
    freed: Arc<RecentlyFreed>,
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
        if !self.dir.as_os_str().is_empty() {
            let _ = self.freed.remove_tree(&self.dir);
        }
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
        let careful = berth_snapshots::delays_inode_reuse(&tmp);
        Ok(LayerStore {
            root,
            tmp,
            freed: Arc::default(),
            careful,
        })
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
    pub fn stage<R: Read + Send>(&self, blob: R) -> Result<Staged> {
        self.stage_buffered(BufReader::with_capacity(CHUNK, blob))
    }

    /// [`LayerStore::stage`] for a buffered stream. A compressed layer is
    /// decompressed (and its diff ID hashed) on a thread of its own while
    /// this one extracts, so a big layer keeps two cores busy.
    pub fn stage_buffered<B: BufRead + Send>(&self, mut blob: B) -> Result<Staged> {
        let mut staged = Staged {
            dir: self.staging_dir()?,
            diff_id: None,
            tar_size: 0,
            size: 0,
            compression: Compression::None,
            freed: self.freed.clone(),
        };
        let diff = staged.dir.join("diff");
        fs::create_dir(&diff)?;
        staged.compression = detect_compression(&mut blob)?;
        let opts = ApplyOptions::default();
        if staged.compression == Compression::None {
            // The diff ID is the blob digest, which the caller has.
            let mut counted = CountingReader {
                inner: blob,
                count: 0,
            };
            let stats = apply_tar_buffered(&mut counted, &diff, &opts)?;
            staged.tar_size = counted.count;
            staged.size = stats.size;
            return Ok(staged);
        }
        let compression = staged.compression;
        let (stats, decoded) = std::thread::scope(|s| {
            let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(4);
            let (back, spare) = sync_channel::<Vec<u8>>(8);
            let decoder = s.spawn(move || decode(blob, compression, &tx, &spare));
            let mut reader = Decoded {
                rx,
                back,
                cur: Vec::new(),
                pos: 0,
            };
            // apply_tar reads the stream to its end, so the decoder has
            // always finished (or failed, which the reader reported) here.
            let stats = apply_tar_buffered(&mut reader, &diff, &opts);
            drop(reader);
            let decoded = decoder
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("layer decompression panicked")));
            (stats, decoded)
        });
        let stats = stats?;
        let (diff_id, tar_size) = decoded.map_err(|e| Error::from(e).context("read layer"))?;
        staged.diff_id = Some(diff_id);
        staged.tar_size = tar_size;
        staged.size = stats.size;
        Ok(staged)
    }

    /// Read `data` to its end, writing every byte to `sink` (the content
    /// store ingest, which hashes it) while other threads extract it (see
    /// [`LayerStore::stage_tee_chunks`]).
    pub fn stage_tee<R: Read, W: io::Write>(
        &self,
        mut data: R,
        sink: &mut W,
    ) -> Result<Result<Staged>> {
        // Whole 1 MiB chunks: readers that return a few KiB at a time (an
        // HTTP body) must not cost a 1 MiB buffer per read.
        let chunks = std::iter::from_fn(|| {
            let mut chunk = vec![0u8; CHUNK];
            let mut n = 0;
            while n < chunk.len() {
                match data.read(&mut chunk[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            chunk.truncate(n);
            (n > 0).then(|| Ok(Bytes::from(chunk)))
        });
        self.stage_tee_chunks(chunks, 8, sink)
    }

    /// Take `chunks` to their end, writing each to `sink` (the content store
    /// ingest, which hashes it) and handing it, uncopied, to a thread that
    /// extracts the layer, at most `depth` chunks ahead of it. The blob's
    /// write and hash run on this thread. The outer result is the read of
    /// `chunks`; the inner one the extraction, which an image may not even
    /// need (the caller decides).
    pub fn stage_tee_chunks<I, W>(
        &self,
        chunks: I,
        depth: usize,
        sink: &mut W,
    ) -> Result<Result<Staged>>
    where
        I: IntoIterator<Item = io::Result<Bytes>>,
        W: io::Write,
    {
        let (tx, rx) = sync_channel::<Bytes>(depth);
        std::thread::scope(|s| {
            let worker = s.spawn(move || self.stage_buffered(BytesReader::new(rx)));
            let mut tx = Some(tx);
            for chunk in chunks {
                let chunk = chunk.map_err(Error::from)?;
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

    /// A new, empty staging directory. The filesystem picks where it goes
    /// (see [`berth_snapshots::spread_subdirectories`]). On one that is slow
    /// to reuse deleted inodes, a directory that lands where this process
    /// just deleted layers is made again elsewhere, a few times at most.
    fn staging_dir(&self) -> Result<PathBuf> {
        const TRIES: u32 = 8;
        let mut tries = 0;
        loop {
            let dir = self
                .tmp
                .join(format!("unpack-{:016x}", rand::random::<u64>()));
            fs::create_dir(&dir)?;
            tries += 1;
            if !self.careful || tries == TRIES {
                return Ok(dir);
            }
            if !fs::symlink_metadata(&dir).is_ok_and(|m| self.freed.is_recent(m.ino())) {
                return Ok(dir);
            }
            tracing::debug!(
                tries,
                "staging directory where layers were just deleted: again"
            );
            let _ = fs::remove_dir(&dir);
        }
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
        Ok(self.freed.remove_tree(&self.dir(chain))?)
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

/// Bytes moved between a layer's threads at a time.
const CHUNK: usize = 1 << 20;

/// Counts what is read through it.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.count += n as u64;
        self.inner.consume(n);
    }
}

/// The decompression thread of [`LayerStore::stage_buffered`]: decode
/// `blob` to its end in chunks (buffers come back from the reader through
/// `spare`), hashing what comes out. Returns the diff ID and the tar size;
/// a decoding error is also sent on, where the extraction reads it.
fn decode<B: BufRead>(
    blob: B,
    compression: Compression,
    tx: &SyncSender<io::Result<Vec<u8>>>,
    spare: &Receiver<Vec<u8>>,
) -> io::Result<(DiffId, u64)> {
    let stopped = || io::Error::other("layer extraction stopped");
    let mut dec = match decompress(blob, compression) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.to_string();
            let _ = tx.send(Err(e));
            return Err(io::Error::other(msg));
        }
    };
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        while n < buf.len() {
            match dec.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let (kind, msg) = (e.kind(), e.to_string());
                    // The bytes before the error first, then the error.
                    buf.truncate(n);
                    if n > 0 {
                        tx.send(Ok(buf)).map_err(|_| stopped())?;
                    }
                    let _ = tx.send(Err(e));
                    return Err(io::Error::new(kind, msg));
                }
            }
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        count += n as u64;
        tx.send(Ok(buf)).map_err(|_| stopped())?;
    }
    Ok((
        DiffId(berth_types::Digest::from_bytes(hasher.finalize().into())),
        count,
    ))
}

/// The decompressed stream, as the decoder thread sends it.
struct Decoded {
    rx: Receiver<io::Result<Vec<u8>>>,
    /// Spent buffers go back to the decoder.
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl BufRead for Decoded {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let spent = std::mem::replace(&mut self.cur, next);
                    self.pos = 0;
                    if spent.capacity() > 0 {
                        let _ = self.back.try_send(spent);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.cur[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.cur.len());
    }
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The receiving end of a channel of chunks as a buffered reader: the
/// chunks are read where they are, not copied into a buffer of its own.
pub(crate) struct BytesReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
}

impl BytesReader {
    pub(crate) fn new(rx: Receiver<Bytes>) -> Self {
        BytesReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl BufRead for BytesReader {
    /// What is left of the current chunk; at least 4 bytes unless the
    /// stream ends sooner, so that the compression magic is seen whole.
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.cur.len() < 4 {
            match self.rx.recv() {
                Ok(c) if self.cur.is_empty() => self.cur = c,
                Ok(c) => {
                    let mut joined = Vec::with_capacity(self.cur.len() + c.len());
                    joined.extend_from_slice(&self.cur);
                    joined.extend_from_slice(&c);
                    self.cur = Bytes::from(joined);
                }
                Err(_) => break,
            }
        }
        Ok(&self.cur)
    }
    fn consume(&mut self, n: usize) {
        self.cur.advance(n.min(self.cur.len()));
    }
}

impl Read for BytesReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("small", b"small file\n");
        // Bigger than the chunks the decoder hands on.
        let big: Vec<u8> = (0..3 * CHUNK + 77).map(|i| (i * 7 % 251) as u8).collect();
        add("dir/big", &big);
        add("dir/after", b"after the big one");
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn sha(data: &[u8]) -> berth_types::Digest {
        berth_types::Digest::of(data)
    }

    fn staging_left(store: &LayerStore) -> usize {
        fs::read_dir(&store.tmp).unwrap().count()
    }

    /// Chunks as an HTTP body brings them: the first ones a few bytes long.
    fn chunked(blob: &[u8]) -> Vec<io::Result<Bytes>> {
        let mut out = vec![];
        let (head, rest) = blob.split_at(5);
        out.extend(head.iter().map(|b| Ok(Bytes::copy_from_slice(&[*b]))));
        out.extend(rest.chunks(7000).map(|c| Ok(Bytes::copy_from_slice(c))));
        out
    }

    #[test]
    fn a_gzip_layer_in_small_chunks_is_extracted_and_hashed() {
        let root = tempfile::tempdir().unwrap();
        let store = LayerStore::open(root.path()).unwrap();
        let tar = layer_tar();
        let blob = gzip(&tar);
        let mut sink = Vec::new();
        let staged = store
            .stage_tee_chunks(chunked(&blob), 4, &mut sink)
            .unwrap()
            .unwrap();
        assert_eq!(sink, blob, "every byte of the blob went to the sink");
        assert_eq!(staged.compression, Compression::Gzip);
        assert_eq!(staged.diff_id(), DiffId(sha(&tar)));
        assert_eq!(staged.tar_size, tar.len() as u64);
        assert_eq!(staged.size, (11 + 3 * CHUNK + 77 + 17) as u64);
        let diff = staged.dir.join("diff");
        assert_eq!(fs::read(diff.join("small")).unwrap(), b"small file\n");
        assert_eq!(
            fs::read(diff.join("dir/big")).unwrap().len(),
            3 * CHUNK + 77
        );
        assert_eq!(
            fs::read(diff.join("dir/after")).unwrap(),
            b"after the big one"
        );
        drop(staged);
        assert_eq!(staging_left(&store), 0, "a dropped staging is removed");
    }

    #[test]
    fn plain_and_zstd_layers_stage_too() {
        let root = tempfile::tempdir().unwrap();
        let store = LayerStore::open(root.path()).unwrap();
        let tar = layer_tar();
        let mut plain = store.stage(&tar[..]).unwrap();
        assert_eq!(plain.compression, Compression::None);
        assert_eq!(plain.diff_id, None, "the blob digest is the diff ID");
        plain.set_blob_digest(sha(&tar));
        assert_eq!(plain.diff_id(), DiffId(sha(&tar)));
        assert_eq!(plain.tar_size, tar.len() as u64);
        let z = zstd::encode_all(&tar[..], 3).unwrap();
        let staged = store.stage(&z[..]).unwrap();
        assert_eq!(staged.compression, Compression::Zstd);
        assert_eq!(staged.diff_id(), DiffId(sha(&tar)));
        let big = staged.dir.join("diff/dir/big");
        assert_eq!(fs::metadata(big).unwrap().len(), (3 * CHUNK + 77) as u64);
    }

    #[test]
    fn a_corrupt_gzip_layer_fails_and_leaves_nothing_staged() {
        let root = tempfile::tempdir().unwrap();
        let store = LayerStore::open(root.path()).unwrap();
        let tar = layer_tar();
        let mut blob = gzip(&tar);
        // Damage the middle of the deflate stream, then its end.
        let mid = blob.len() / 2;
        for b in &mut blob[mid..mid + 64] {
            *b ^= 0x5a;
        }
        let mut sink = Vec::new();
        let staged = store
            .stage_tee_chunks(chunked(&blob), 4, &mut sink)
            .unwrap();
        let err = staged.unwrap_err();
        assert!(err.message.contains("invalid layer"), "{err}");
        assert_eq!(sink, blob, "the whole blob is still read and hashed");
        assert_eq!(staging_left(&store), 0);

        let mut cut = gzip(&tar);
        cut.truncate(cut.len() - 100);
        assert!(store.stage(&cut[..]).is_err());
        assert_eq!(staging_left(&store), 0);
        // A failed read of the blob itself is the outer error.
        let chunks = vec![
            Ok(Bytes::from_static(&[0x1f, 0x8b])),
            Err(io::Error::other("connection reset")),
        ];
        let err = store
            .stage_tee_chunks(chunks, 4, &mut Vec::new())
            .unwrap_err();
        assert!(err.message.contains("connection reset"), "{err}");
        assert_eq!(staging_left(&store), 0);
    }

    #[test]
    fn staging_after_a_removal_still_gives_one_empty_directory() {
        let root = tempfile::tempdir().unwrap();
        let store = LayerStore::open(root.path()).unwrap();
        // A layer of many files, then removed: its region is avoided.
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..300 {
            let mut h = tar::Header::new_ustar();
            h.set_size(1);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("f{i}"), &b"x"[..]).unwrap();
        }
        let staged = store.stage(&b.into_inner().unwrap()[..]).unwrap();
        let chain = ChainId(sha(b"chain"));
        store.commit(staged, &chain).unwrap();
        store.remove(&chain).unwrap();
        assert!(!store.exists(&chain));
        store.remove(&chain).unwrap();
        // However often the new directory lands there, one comes back and
        // the rejected ones are gone.
        let dirs: Vec<PathBuf> = (0..20).map(|_| store.staging_dir().unwrap()).collect();
        assert_eq!(staging_left(&store), 20);
        for d in dirs {
            assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
            fs::remove_dir(d).unwrap();
        }
    }
}
