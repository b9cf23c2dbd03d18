//! `docker pull`: resolve a reference on a registry, pick the platform's
//! manifest, and bring in the config and every layer not already here.
//!
//! ```text
//! manifest (index → platform manifest) ─▶ config (verified, stored)
//!   └▶ per missing layer, `max_concurrent_downloads` at a time:
//!        registry ──BlobStream (retry, Range resume)──▶ channel ──▶ stage_tee_chunks
//!          thread 1: content ingest (write + sha256) ─────────────────────────┐
//!          thread 2: decompress + sha256 (diff ID) ─▶ thread 3: extract ──────┤
//!        verify blob digest (commit) and diff ID ─▶ layers/<chain>/ (leased) ─┘
//!   └▶ one metadata transaction: image record, tag, repo digest
//! ```
//!
//! Layers are independent overlay lower dirs, so each is unpacked into its
//! own staging directory while it downloads, concurrently with the others;
//! the chain IDs come from the config, so a verified layer moves into place
//! at once. Only one pull at a time downloads a given blob: a second pull
//! waits and then finds the layer present. Nothing is visible before the
//! final transaction; a failed pull leaves what it verified under a lease
//! that expires, so a retry does not download it again.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_distribution::{
    AuthConfig, Client, ManifestKind, Platform, Repository, media, parse_manifest, select_platform,
};
use berth_metadata::{IndexChild, IndexRecord, LayerBlob, LayerRecord, MetaRead};
use berth_types::{ChainId, DiffId, Digest, Error, ErrorKind, Reference, Result};
use bytes::Bytes;

use crate::{ImageConfig, ImageService, Lease, LeaseHandle, MAX_JSON, familiar};

/// How long what a failed pull verified stays for a retry.
const KEEP_AFTER_FAILURE: Duration = Duration::from_secs(600);

/// A progress report, in Docker's vocabulary (`Pulling fs layer`,
/// `Downloading`, `Pull complete`, …); berthd turns them into JSON messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The short layer digest, the tag, or `None` for a line of its own.
    pub id: Option<String>,
    pub status: String,
    /// (current, total) bytes, for a progress bar.
    pub bytes: Option<(u64, u64)>,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

fn say(p: &ProgressFn, id: Option<&str>, status: &str, bytes: Option<(u64, u64)>) {
    p(Progress {
        id: id.map(String::from),
        status: status.to_string(),
        bytes,
    });
}

#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// `os/arch[/variant]`; the host's platform when `None`.
    pub platform: Option<String>,
    pub auth: Option<AuthConfig>,
}

#[derive(Clone, Debug)]
pub struct PullResult {
    pub id: Digest,
    /// Digest of what the reference resolved to (index or manifest).
    pub digest: Digest,
    /// False when the image and tag were already here.
    pub updated: bool,
    /// The familiar reference that was pulled (`busybox:latest`).
    pub reference: String,
}

/// Serialises downloads of one blob across concurrent pulls.
#[derive(Default)]
pub struct InFlight {
    locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl InFlight {
    fn lock_for(&self, d: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap().entry(*d).or_default().clone()
    }
    fn forget(&self, d: &Digest) {
        let mut m = self.locks.lock().unwrap();
        if m.get(d).is_some_and(|l| Arc::strong_count(l) == 1) {
            m.remove(d);
        }
    }
}

/// The layer of a pull that must be downloaded.
struct Job {
    index: usize,
    desc: berth_distribution::Descriptor,
    want: DiffId,
    chain: ChainId,
    parent: Option<ChainId>,
}

struct Done {
    index: usize,
    blob: LayerBlob,
}

impl ImageService {
    /// Every tag of a repository (for `pull --all-tags`).
    pub async fn remote_tags(
        &self,
        registry: &Arc<Client>,
        name: &str,
        auth: Option<AuthConfig>,
    ) -> Result<Vec<String>> {
        registry.repository(name, auth, false)?.tags().await
    }

    /// Pull `reference` (a tag or digest must be set). Progress goes to
    /// `progress` as it happens.
    pub async fn pull(
        self: Arc<Self>,
        registry: &Arc<Client>,
        reference: &Reference,
        opts: &PullOptions,
        progress: ProgressFn,
    ) -> Result<PullResult> {
        let lease = self.leases.create(Duration::from_secs(3600));
        let res = self
            .clone()
            .pull_leased(registry, reference, opts, &progress, &lease)
            .await;
        if res.is_err() {
            lease.release_after(KEEP_AFTER_FAILURE);
        }
        res
    }

    async fn pull_leased(
        self: Arc<Self>,
        registry: &Arc<Client>,
        reference: &Reference,
        opts: &PullOptions,
        progress: &ProgressFn,
        lease: &Lease,
    ) -> Result<PullResult> {
        let want_platform = match &opts.platform {
            Some(p) if !p.is_empty() => Platform::parse(p)?,
            _ => Platform::host(),
        };
        let repo = registry.repository(&reference.name, opts.auth.clone(), false)?;
        let target = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let top = repo.get_manifest(&target).await?;
        // For an index: the index and the child manifest pulled, kept as
        // they are so that a push sends the same bytes.
        let mut index: Option<PulledIndex> = None;
        let manifest = match parse_manifest(&top.media_type, &top.bytes)? {
            ManifestKind::Image(m) => *m,
            ManifestKind::Index(list) => {
                let d = select_platform(&list, &want_platform)
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "no matching manifest for {} in the manifest list entries",
                            want_platform.display()
                        ))
                    })?
                    .clone();
                let m = repo.get_manifest(&d.digest.to_string()).await?;
                match parse_manifest(&m.media_type, &m.bytes)? {
                    ManifestKind::Image(man) => {
                        index = Some(PulledIndex {
                            list,
                            child: d,
                            child_bytes: m.bytes,
                        });
                        *man
                    }
                    ManifestKind::Index(_) => {
                        return Err(Error::invalid(format!(
                            "manifest list entry {} is itself a manifest list",
                            d.digest
                        )));
                    }
                }
            }
        };
        let id = manifest.config.digest;
        // dockerd says this once the reference resolved (errors before it
        // are the request's status).
        say(
            progress,
            Some(&target),
            &format!("Pulling from {}", repo.path()),
            None,
        );
        let full_ref = match (&reference.digest, &reference.tag) {
            (Some(d), _) => format!("{}@{d}", reference.name),
            _ => format!("{}:{target}", reference.name),
        };
        let repo_digest = format!("{}@{}", familiar_name(&reference.name), top.digest);
        // Already here, under this reference? (For an index: this child of
        // this index, whichever image the tag names.)
        let up_to_date = self.meta.read(|r| {
            if r.image(&id)?.is_none() {
                return Ok(false);
            }
            let tag_index = r.tag_index(&full_ref)?;
            Ok(match &index {
                None => tag_index.is_none() && r.tag(&full_ref)? == Some(id),
                Some(ix) => {
                    tag_index == Some(top.digest)
                        && r.index(&top.digest)?.is_some_and(|rec| {
                            rec.children
                                .iter()
                                .any(|c| c.digest == ix.child.digest && c.image == Some(id))
                        })
                }
            })
        })?;
        if up_to_date {
            self.meta.write(|w| {
                if let Some(mut rec) = w.image(&id)? {
                    crate::load::add_repo_digest(&mut rec.repo_digests, &repo_digest);
                    w.put_image(&rec)?;
                }
                Ok(())
            })?;
            say(progress, None, &format!("Digest: {}", top.digest), None);
            return Ok(PullResult {
                id,
                digest: top.digest,
                updated: false,
                reference: familiar(&full_ref),
            });
        }
        // The config: small, fetched whole and verified.
        let config_bytes = if self.content.exists(&id) {
            self.content.read(&id, MAX_JSON)?
        } else {
            repo.get_blob_bytes(&id, MAX_JSON).await?.to_vec()
        };
        let config = ImageConfig::parse(&config_bytes)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::invalid(format!(
                "image config has {} layers but the manifest lists {}",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        self.content
            .put(&config_bytes, Some(&id), |d| lease.hold_blob(d))?;
        if let Some(ix) = &index {
            self.content
                .put(&top.bytes, Some(&top.digest), |d| lease.hold_blob(d))?;
            self.content
                .put(&ix.child_bytes, Some(&ix.child.digest), |d| {
                    lease.hold_blob(d)
                })?;
        }
        let diffs = config.rootfs.diff_ids.clone();
        let chains = ChainId::chain(&diffs);

        // Which layers are here already?
        let (known, tar_sizes) = self.meta.read(|r| {
            let mut known = HashSet::new();
            for c in &chains {
                if r.layer(c)?.is_some() {
                    known.insert(*c);
                }
            }
            let mut sizes: HashMap<DiffId, u64> = HashMap::new();
            for img in r.images()? {
                for l in img.layers {
                    sizes.insert(l.diff_id, l.tar_size);
                }
            }
            Ok((known, sizes))
        })?;
        let mut done: Vec<Option<LayerBlob>> = vec![None; manifest.layers.len()];
        let mut jobs = Vec::new();
        let mut seen: HashMap<Digest, usize> = HashMap::new();
        let mut dups = Vec::new();
        let mut fetch_only = Vec::new();
        for (i, desc) in manifest.layers.iter().enumerate() {
            let short = desc.digest.short();
            lease.hold_layer(&chains[i]);
            lease.hold_blob(&desc.digest);
            if known.contains(&chains[i]) && self.layers.exists(&chains[i]) {
                say(progress, Some(&short), "Already exists", None);
                if !self.content.exists(&desc.digest) {
                    // The layer came with another blob (another compression,
                    // or one since collected): fetch this image's own blob
                    // so that save and push have it, without unpacking.
                    fetch_only.push(desc.clone());
                }
                done[i] = Some(LayerBlob {
                    digest: desc.digest,
                    media_type: desc.media_type.clone(),
                    size: desc.size,
                    diff_id: diffs[i],
                    tar_size: tar_sizes.get(&diffs[i]).copied().unwrap_or(0),
                });
                continue;
            }
            if let Some(first) = seen.get(&desc.digest) {
                dups.push((i, *first));
                continue;
            }
            seen.insert(desc.digest, i);
            say(progress, Some(&short), "Pulling fs layer", None);
            jobs.push(Job {
                index: i,
                desc: desc.clone(),
                want: diffs[i],
                chain: chains[i],
                parent: i.checked_sub(1).map(|p| chains[p]),
            });
        }
        let limit = registry.config().max_concurrent_downloads.max(1);
        for j in jobs.iter().skip(limit) {
            say(progress, Some(&j.desc.digest.short()), "Waiting", None);
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(limit));
        let mut set = tokio::task::JoinSet::new();
        for job in jobs {
            let svc = self.clone();
            let repo = repo.clone();
            let sem = sem.clone();
            let progress = progress.clone();
            let lease_blobs = lease.handle();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                svc.pull_layer(repo, job, progress, lease_blobs).await
            });
        }
        for desc in fetch_only {
            let svc = self.clone();
            let repo = repo.clone();
            let hold = lease.handle();
            set.spawn(async move {
                svc.fetch_blob(&repo, &desc, &hold).await?;
                Ok(Done {
                    index: usize::MAX,
                    blob: LayerBlob {
                        digest: desc.digest,
                        media_type: desc.media_type,
                        size: desc.size,
                        diff_id: DiffId(desc.digest),
                        tar_size: 0,
                    },
                })
            });
        }
        crate::join_all(&mut set, "layer task", |d| {
            if d.index != usize::MAX {
                done[d.index] = Some(d.blob);
            }
        })
        .await?;
        // A blob listed twice: unpack it again from the stored copy.
        for (i, first) in dups {
            let blob = done[first].clone().expect("first copy pulled");
            let svc = self.clone();
            let (chain, want) = (chains[i], diffs[i]);
            let parent = i.checked_sub(1).map(|p| chains[p]);
            let rec = tokio::task::spawn_blocking(move || {
                let staged = svc.layers.stage(svc.content.open_blob(&blob.digest)?)?;
                svc.commit_layer(staged, blob.digest, want, chain, parent)
            })
            .await
            .map_err(|e| Error::internal(format!("layer task failed: {e}")))??;
            done[i] = Some(LayerBlob {
                diff_id: want,
                tar_size: rec.1,
                ..done[first].clone().expect("first copy pulled")
            });
        }
        say(progress, None, &format!("Digest: {}", top.digest), None);
        let layers: Vec<LayerBlob> = done.into_iter().map(|d| d.expect("every layer")).collect();
        // Every layer has its row by now (committed above or already here).
        let records: Vec<LayerRecord> = (0..chains.len())
            .map(|i| LayerRecord {
                v: 1,
                chain_id: chains[i],
                diff_id: diffs[i],
                parent: i.checked_sub(1).map(|p| chains[p]),
                size: 0,
            })
            .collect();
        let svc = self.clone();
        let rd = repo_digest.clone();
        let cfg = config.clone();
        let tag = full_ref.clone();
        let top_digest = top.digest;
        let top_type = top.media_type.clone();
        let top_size = top.bytes.len() as u64;
        let blobs: Vec<Digest> = std::iter::once(manifest.config.digest)
            .chain(manifest.layers.iter().map(|l| l.digest))
            .collect();
        tokio::task::spawn_blocking(move || match index {
            None => svc
                .record_image(id, &cfg, layers, records, &[tag], Some(&rd), None)
                .map(|_| ()),
            Some(ix) => svc
                .record_image_with(id, &cfg, layers, records, &[], Some(&rd), None, |w| {
                    record_index(
                        w,
                        &tag,
                        IndexPulled {
                            digest: top_digest,
                            media_type: &top_type,
                            size: top_size,
                            list: &ix.list,
                            here: vec![(ix.child.digest, id, blobs)],
                            fallback: id,
                        },
                    )
                    .map(|_| ())
                })
                .map(|_| ()),
        })
        .await
        .map_err(|e| Error::internal(format!("commit task failed: {e}")))??;
        Ok(PullResult {
            id,
            digest: top.digest,
            updated: true,
            reference: familiar(&full_ref),
        })
    }

    /// Download a blob into the content store only, verified.
    async fn fetch_blob(
        &self,
        repo: &Repository,
        desc: &berth_distribution::Descriptor,
        hold: &LeaseHandle,
    ) -> Result<()> {
        let digest = desc.digest;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let content = self.content.clone();
        let hold2 = hold.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut rx = rx;
            let mut ingest = content.ingest()?;
            while let Some(b) = rx.blocking_recv() {
                ingest.write_all(&b)?;
            }
            ingest.commit_with(Some(&digest), |d| hold2.hold_blob(d))?;
            Ok(())
        });
        let mut stream = repo.blob(&digest, Some(desc.size));
        let mut err = None;
        loop {
            match stream.chunk().await {
                Ok(Some(b)) => {
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let w = writer
            .await
            .map_err(|e| Error::internal(format!("blob task failed: {e}")))?;
        if let Some(e) = err {
            return Err(e);
        }
        w
    }

    /// Verify a staged layer against its blob digest and diff ID, move it
    /// into place and record it. Returns the record and the tar size.
    fn commit_layer(
        &self,
        mut staged: crate::layers::Staged,
        blob: Digest,
        want: DiffId,
        chain: ChainId,
        parent: Option<ChainId>,
    ) -> Result<(LayerRecord, u64)> {
        staged.set_blob_digest(blob);
        if staged.diff_id() != want {
            return Err(Error::invalid(format!(
                "layer {blob}: content has diff ID {}, the image config says {want}",
                staged.diff_id()
            )));
        }
        let tar_size = staged.tar_size;
        let rec = LayerRecord {
            v: 1,
            chain_id: chain,
            diff_id: want,
            parent,
            size: staged.size,
        };
        self.layers.commit(staged, &chain)?;
        self.meta.write(|w| {
            if w.layer(&chain)?.is_none() {
                w.put_layer(&rec)?;
            }
            Ok(())
        })?;
        Ok((rec, tar_size))
    }

    async fn pull_layer(
        self: Arc<Self>,
        repo: Repository,
        job: Job,
        progress: ProgressFn,
        hold: LeaseHandle,
    ) -> Result<Done> {
        let digest = job.desc.digest;
        let short = digest.short();
        let lock = self.in_flight.lock_for(&digest);
        let guard = lock.lock().await;
        let res = self
            .clone()
            .pull_layer_locked(repo, &job, &progress, &hold)
            .await;
        drop(guard);
        drop(lock);
        self.in_flight.forget(&digest);
        let (tar_size, existed) = res.map_err(|e| match e.kind {
            ErrorKind::Unavailable | ErrorKind::NotFound | ErrorKind::PermissionDenied => e,
            _ => e.context(format!("layer {short}")),
        })?;
        if !existed {
            say(
                &progress,
                Some(&short),
                "Extracting",
                Some((job.desc.size, job.desc.size)),
            );
        }
        say(&progress, Some(&short), "Pull complete", None);
        Ok(Done {
            index: job.index,
            blob: LayerBlob {
                digest,
                media_type: job.desc.media_type.clone(),
                size: job.desc.size,
                diff_id: job.want,
                tar_size,
            },
        })
    }

    /// Returns the tar size and whether another pull had just brought the layer.
    async fn pull_layer_locked(
        self: Arc<Self>,
        repo: Repository,
        job: &Job,
        progress: &ProgressFn,
        hold: &LeaseHandle,
    ) -> Result<(u64, bool)> {
        let digest = job.desc.digest;
        let short = digest.short();
        // Another pull may have brought it while this one waited.
        let existing = {
            let chain = job.chain;
            self.meta.read(|r| r.layer(&chain))?
        };
        if existing.is_some() && self.layers.exists(&job.chain) && self.content.exists(&digest) {
            let tar = self
                .meta
                .read(|r| {
                    Ok(r.images()?
                        .into_iter()
                        .flat_map(|i| i.layers)
                        .find(|l| l.diff_id == job.want)
                        .map(|l| l.tar_size))
                })?
                .unwrap_or(0);
            return Ok((tar, true));
        }
        let total = job.desc.size;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let svc = self.clone();
        let (want, chain, parent) = (job.want, job.chain, job.parent);
        let hold2 = hold.clone();
        let unpack = tokio::task::spawn_blocking(move || -> Result<u64> {
            let mut rx = rx;
            let chunks = std::iter::from_fn(|| rx.blocking_recv().map(Ok));
            let mut ingest = svc.content.ingest()?;
            // HTTP chunks are 8 to 400 KiB: a few MiB ahead at most, the
            // download channel holds more.
            let staged = svc.layers.stage_tee_chunks(chunks, 16, &mut ingest)?;
            let (got, _) = ingest
                .commit_with(Some(&digest), |d| hold2.hold_blob(d))
                .map_err(|e| {
                    Error::invalid(format!(
                        "filesystem layer verification failed for digest {digest}: {}",
                        e.message
                    ))
                })?;
            let staged = staged?;
            hold2.hold_layer(&chain);
            let (_, tar) = svc.commit_layer(staged, got, want, chain, parent)?;
            Ok(tar)
        });
        let mut stream = repo.blob(&digest, Some(total));
        let mut last = 0u64;
        let mut download_err = None;
        loop {
            match stream.chunk().await {
                Ok(Some(b)) => {
                    let n = stream.offset();
                    if n - last >= 512 << 10 || n == total {
                        last = n;
                        say(progress, Some(&short), "Downloading", Some((n, total)));
                    }
                    if tx.send(b).await.is_err() {
                        break; // the unpacker stopped: its error says why
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    download_err = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        if let Some(e) = download_err {
            let _ = unpack.await;
            return Err(e);
        }
        say(progress, Some(&short), "Verifying Checksum", None);
        let tar = unpack
            .await
            .map_err(|e| Error::internal(format!("unpack task failed: {e}")))??;
        say(progress, Some(&short), "Download complete", None);
        Ok((tar, false))
    }
}

/// An index a pull resolved, the entry it took and that entry's manifest.
struct PulledIndex {
    list: Vec<berth_distribution::Descriptor>,
    child: berth_distribution::Descriptor,
    child_bytes: Bytes,
}

/// What [`record_index`] records: an index (its bytes already in the
/// content store) and the children of it now here.
pub(crate) struct IndexPulled<'a> {
    pub digest: Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub list: &'a [berth_distribution::Descriptor],
    /// (child manifest digest, image ID, blobs the manifest names).
    pub here: Vec<(Digest, Digest, Vec<Digest>)>,
    /// The image the tag names when the host's platform is not here.
    pub fallback: Digest,
}

/// In the pull's (or load's) transaction: the tag names the index, which
/// now has these children; the tag points at the host platform's image when
/// it is here (as the containerd image store resolves a multi-platform
/// tag), else at `fallback`. Returns the image the tag names and the one
/// it named before.
pub(crate) fn record_index(
    w: &berth_metadata::WriteTx,
    tag: &str,
    p: IndexPulled,
) -> Result<(Digest, Option<Digest>)> {
    let mut rec = match w.index(&p.digest)? {
        Some(r) => r,
        None => IndexRecord {
            v: 1,
            digest: p.digest,
            media_type: if p.media_type.is_empty() {
                media::OCI_INDEX.to_string()
            } else {
                p.media_type.to_string()
            },
            size: p.size,
            children: p
                .list
                .iter()
                .map(|d| IndexChild {
                    digest: d.digest,
                    media_type: d.media_type.clone(),
                    size: d.size,
                    platform: d
                        .platform
                        .as_ref()
                        .and_then(|p| serde_json::to_value(p).ok()),
                    image: None,
                    blobs: vec![],
                })
                .collect(),
        },
    };
    for (child, image, blobs) in &p.here {
        for c in rec.children.iter_mut().filter(|c| c.digest == *child) {
            c.image = Some(*image);
            c.blobs = blobs.clone();
        }
    }
    // Children whose image went meanwhile are no longer here.
    for c in rec.children.iter_mut() {
        if let Some(i) = c.image
            && w.image(&i)?.is_none()
        {
            c.image = None;
            c.blobs.clear();
        }
    }
    let host = Platform::host();
    let target = rec
        .children
        .iter()
        .filter(|c| {
            c.platform
                .as_ref()
                .and_then(|v| serde_json::from_value::<Platform>(v.clone()).ok())
                .is_some_and(|pl| pl.matches(&host))
        })
        .find_map(|c| c.image)
        .unwrap_or(p.fallback);
    // Setting the tag drops its old association (and an index row no
    // other tag names): write the row after it.
    let before = w.set_tag(tag, &target)?;
    w.put_index(&rec)?;
    w.set_tag_index(tag, &p.digest)?;
    if let Some(mut img) = w.image(&target)? {
        img.last_tag_time = Some(crate::now_rfc3339());
        w.put_image(&img)?;
    }
    Ok((target, before))
}

/// `docker.io/library/busybox` → `busybox`.
fn familiar_name(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.familiar_name())
        .unwrap_or_else(|_| name.to_string())
}

/// Media type of a stored layer blob, from its compression.
pub(crate) fn layer_media_type(c: berth_snapshots::Compression) -> &'static str {
    match c {
        berth_snapshots::Compression::None => media::OCI_LAYER,
        berth_snapshots::Compression::Gzip => media::OCI_LAYER_GZIP,
        berth_snapshots::Compression::Zstd => media::OCI_LAYER_ZSTD,
    }
}
