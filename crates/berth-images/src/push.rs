//! `docker push`: publish a local image's layers, config and manifest.
//!
//! Per layer (`max_concurrent_uploads` at a time): a compressed blob the
//! content store already has is offered by digest (`HEAD`: skipped when the
//! registry has it; else mounted from another repository of the same
//! registry this image came from; else uploaded as a stream). A layer
//! stored uncompressed (loaded from a `docker save` archive, imported) is
//! gzip-compressed while it uploads; the compressed blob is kept in the
//! content store and the image's record points at it from then on, so the
//! next push offers it by digest. The manifest is Docker's schema 2 unless
//! a layer is zstd (then OCI).

use std::io::{BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_distribution::{
    AuthConfig, Client, Descriptor, ManifestKind, Platform, PushSource, Repository, UploadOutcome,
    media, parse_manifest,
};
use berth_metadata::{ImageRecord, IndexChild, IndexRecord, LayerBlob, MetaRead};
use berth_snapshots::{Compression, decompress, detect_compression};
use berth_types::{Digest, Error, Reference, Result};
use bytes::Bytes;
use serde_json::json;

use crate::pull::{ProgressFn, layer_media_type};
use crate::{ImageService, LeaseHandle, MAX_JSON, familiar};

#[derive(Clone, Default)]
pub struct PushOptions {
    pub auth: Option<AuthConfig>,
    /// The tag to push; every tag of the repository when `None`.
    pub tag: Option<String>,
    /// Push only this platform's manifest of a multi-platform image (or
    /// check that a single image is of it), as `docker push --platform`.
    pub platform: Option<Platform>,
    /// Where Docker's push notes go (berthd sends them as `aux` messages).
    pub notes: Option<Arc<dyn Fn(PushNote) + Send + Sync>>,
}

/// Docker's `auxprogress` notes of a push.
#[derive(Clone, Debug, PartialEq)]
pub enum PushNote {
    /// Not every platform of the index is here: the one that is was
    /// pushed instead of the index.
    ManifestPushedInsteadOfIndex {
        original: Box<Descriptor>,
        selected: Box<Descriptor>,
    },
    /// The push failed because content the index names is not here.
    ContentMissing { desc: Box<Descriptor> },
}

#[derive(Clone, Debug)]
pub struct PushResult {
    pub tag: String,
    pub digest: Digest,
    pub size: usize,
}

fn say(p: &ProgressFn, id: Option<&str>, status: &str, bytes: Option<(u64, u64)>) {
    p(crate::Progress {
        id: id.map(String::from),
        status: status.to_string(),
        bytes,
    });
}

/// Bytes per chunk read from a stored blob for upload.
const READ_CHUNK: usize = 1 << 20;

impl ImageService {
    pub async fn push(
        self: Arc<Self>,
        registry: &Arc<Client>,
        name: &str,
        opts: &PushOptions,
        progress: ProgressFn,
    ) -> Result<Vec<PushResult>> {
        let rf = Reference::parse(name)?;
        let tag = opts
            .tag
            .clone()
            .filter(|t| !t.is_empty())
            .or(rf.tag.clone());
        let targets: Vec<(String, ImageRecord)> = self.meta.read(|r| {
            let mut out = Vec::new();
            for (full, id) in r.tags()? {
                let Ok(t) = Reference::parse(&full) else {
                    continue;
                };
                if t.name != rf.name || t.digest.is_some() {
                    continue;
                }
                let Some(tg) = t.tag else { continue };
                if tag.as_ref().is_some_and(|want| *want != tg) {
                    continue;
                }
                if let Some(rec) = r.image(&id)? {
                    out.push((tg, rec));
                }
            }
            Ok(out)
        })?;
        if targets.is_empty() {
            return Err(Error::not_found(format!(
                "An image does not exist locally with the tag: {}",
                match &tag {
                    Some(t) => format!("{}:{t}", rf.familiar_name()),
                    None => rf.familiar_name(),
                }
            )));
        }
        say(
            &progress,
            None,
            &format!("The push refers to repository [{}]", rf.name),
            None,
        );
        let repo = registry.repository(&rf.name, opts.auth.clone(), true)?;
        repo.ping().await?;
        let lease = self.leases.create(Duration::from_secs(3600));
        let mut results = Vec::new();
        for (tg, rec) in targets {
            let full = format!("{}:{tg}", rf.name);
            let index = self.meta.read(|r| match r.tag_index(&full)? {
                Some(d) => r.index(&d),
                None => Ok(None),
            })?;
            let r = match index {
                Some(ix) => {
                    self.clone()
                        .push_index(&repo, &full, &tg, ix, opts, &progress, lease.handle())
                        .await?
                }
                None => {
                    if let Some(want) = &opts.platform {
                        let cfg =
                            crate::ImageConfig::parse(&self.content.read(&rec.id, MAX_JSON)?)?;
                        let have = Platform {
                            architecture: cfg.architecture.clone(),
                            os: cfg.os.clone(),
                            variant: cfg.variant.clone().filter(|v| !v.is_empty()),
                            os_version: None,
                        };
                        if !have.matches(want) {
                            return Err(platform_not_found(&full, want));
                        }
                    }
                    self.clone()
                        .push_one(registry, &repo, &tg, rec, &progress, lease.handle())
                        .await?
                }
            };
            say(
                &progress,
                None,
                &format!("{tg}: digest: {} size: {}", r.digest, r.size),
                None,
            );
            results.push(r);
        }
        Ok(results)
    }

    async fn push_one(
        self: Arc<Self>,
        registry: &Arc<Client>,
        repo: &Repository,
        tag: &str,
        rec: ImageRecord,
        progress: &ProgressFn,
        hold: LeaseHandle,
    ) -> Result<PushResult> {
        let ids: Vec<String> = rec.layers.iter().map(|l| l.diff_id.0.short()).collect();
        for id in ids.iter().rev() {
            say(progress, Some(id), "Preparing", None);
        }
        let limit = registry.config().max_concurrent_uploads.max(1);
        for id in ids.iter().rev().skip(limit) {
            say(progress, Some(id), "Waiting", None);
        }
        // Repositories of the same registry this image is known in: mount sources.
        let mounts: Vec<String> = rec
            .repo_digests
            .iter()
            .filter_map(|rd| Reference::parse(rd.split('@').next()?).ok())
            .filter(|r| r.domain() == repo.domain() && r.path() != repo.path())
            .map(|r| r.path().to_string())
            .collect();
        let sem = Arc::new(tokio::sync::Semaphore::new(limit));
        let mut set = tokio::task::JoinSet::new();
        for (i, l) in rec.layers.iter().enumerate().rev() {
            let svc = self.clone();
            let repo = repo.clone();
            let sem = sem.clone();
            let progress = progress.clone();
            let l = l.clone();
            let id = ids[i].clone();
            let mounts = mounts.clone();
            let hold = hold.clone();
            set.spawn(async move {
                let _p = sem.acquire_owned().await.expect("semaphore open");
                let r = svc
                    .push_layer(&repo, &l, &id, &mounts, &progress, &hold)
                    .await;
                r.map(|b| (i, b))
            });
        }
        let mut layers = rec.layers.clone();
        crate::join_all(&mut set, "push task", |(i, b)| layers[i] = b).await?;
        // The config.
        let config = self.content.read(&rec.id, MAX_JSON)?;
        if repo.blob_exists(&rec.id).await?.is_none() {
            let loc = repo.start_upload().await?;
            repo.upload(
                loc,
                PushSource::Bytes(Bytes::from(config.clone())),
                Some(rec.id),
                Arc::new(|_| {}),
            )
            .await?;
        }
        let oci = layers.iter().any(|l| l.media_type.contains("zstd"));
        let layer_type = |t: &str| -> &'static str {
            match (oci, t) {
                (_, t) if t.contains("zstd") => media::OCI_LAYER_ZSTD,
                (true, t) if t.contains("gzip") => media::OCI_LAYER_GZIP,
                (false, t) if t.contains("gzip") => media::DOCKER_LAYER,
                (true, _) => media::OCI_LAYER,
                (false, _) => "application/vnd.docker.image.rootfs.diff.tar",
            }
        };
        let (mt, ct) = if oci {
            (media::OCI_MANIFEST, media::OCI_CONFIG)
        } else {
            (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": ct, "size": config.len(), "digest": rec.id.to_string()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": layer_type(&l.media_type),
                "size": l.size,
                "digest": l.digest.to_string(),
            })).collect::<Vec<_>>(),
        });
        let body = serde_json::to_vec_pretty(&manifest).expect("json");
        let size = body.len();
        let digest = repo.put_manifest(tag, mt, Bytes::from(body)).await?;
        let rd = format!(
            "{}@{digest}",
            familiar(&format!("{}/{}", repo.domain(), repo.path()))
        );
        let svc = self.clone();
        let id = rec.id;
        tokio::task::spawn_blocking(move || {
            svc.meta.write(|w| {
                if let Some(mut r) = w.image(&id)? {
                    crate::load::add_repo_digest(&mut r.repo_digests, &rd);
                    // Keep the compressed blobs this push made.
                    for (old, new) in r.layers.iter_mut().zip(&layers) {
                        if old.diff_id == new.diff_id {
                            *old = new.clone();
                        }
                    }
                    w.put_image(&r)?;
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| Error::internal(format!("push task failed: {e}")))??;
        drop(hold);
        Ok(PushResult {
            tag: tag.to_string(),
            digest,
            size,
        })
    }

    /// Push the tag `full`, pulled as the index `ix`: the whole index with
    /// every child manifest as pulled (the registry gets the same digests)
    /// when every child is here; otherwise, as the containerd image store
    /// does, the one platform's manifest that can stand for it, or an error
    /// naming what is missing. Never an index whose children are not all
    /// pushed first.
    #[allow(clippy::too_many_arguments)]
    async fn push_index(
        self: Arc<Self>,
        repo: &Repository,
        full: &str,
        tag: &str,
        ix: IndexRecord,
        opts: &PushOptions,
        progress: &ProgressFn,
        hold: LeaseHandle,
    ) -> Result<PushResult> {
        // Hold what the push reads before checking it is here.
        hold.hold_blob(&ix.digest);
        for c in &ix.children {
            hold.hold_blob(&c.digest);
            c.blobs.iter().for_each(|b| hold.hold_blob(b));
        }
        let index_desc = Descriptor {
            media_type: ix.media_type.clone(),
            digest: ix.digest,
            size: ix.size,
            urls: vec![],
            annotations: None,
            platform: None,
        };
        let here = |c: &IndexChild| {
            c.image.is_some()
                && self.content.exists(&c.digest)
                && !c.blobs.is_empty()
                && c.blobs.iter().all(|b| self.content.exists(b))
        };
        let platform_of = |c: &IndexChild| -> Option<Platform> {
            serde_json::from_value(c.platform.clone()?).ok()
        };
        let present: Vec<&IndexChild> = ix
            .children
            .iter()
            .filter(|c| here(c) && platform_of(c).is_some_and(|p| p.os != "unknown"))
            .collect();
        let all_here = ix.children.iter().all(here) && self.content.exists(&ix.digest);
        let selected: Option<&IndexChild> = match &opts.platform {
            Some(want) => {
                let m: Vec<&IndexChild> = present
                    .iter()
                    .copied()
                    .filter(|c| platform_of(c).is_some_and(|p| p.matches(want)))
                    .collect();
                match m.as_slice() {
                    [] => return Err(platform_not_found(full, want)),
                    [one] => Some(*one),
                    _ => {
                        return Err(Error::conflict(format!(
                            "multiple manifests found for platform {}",
                            want.display()
                        )));
                    }
                }
            }
            None if all_here => None,
            None => match present.as_slice() {
                [] => {
                    if let Some(n) = &opts.notes {
                        n(PushNote::ContentMissing {
                            desc: Box::new(index_desc.clone()),
                        });
                    }
                    let missing = ix
                        .children
                        .iter()
                        .find(|c| !here(c))
                        .map(|c| c.digest)
                        .unwrap_or(ix.digest);
                    return Err(Error::not_found(format!(
                        "missing content: content digest {missing}: not found\n\
                         Note: You're trying to push a manifest list/index which references multiple platform specific manifests, but not all of them are available locally or available to the remote repository.\n\
                         Make sure you have all the referenced content and try again."
                    )));
                }
                [one] => Some(*one),
                many => {
                    let host = Platform::host();
                    match many
                        .iter()
                        .find(|c| platform_of(c).is_some_and(|p| p.matches(&host)))
                    {
                        Some(c) => Some(*c),
                        None => {
                            return Err(Error::conflict(
                                "multiple matching manifests found but no specific platform requested",
                            ));
                        }
                    }
                }
            },
        };
        let children: Vec<&IndexChild> = match selected {
            Some(c) => vec![c],
            None => ix.children.iter().collect(),
        };
        // Mount sources: repositories of this registry the images came from.
        let mut mounts: Vec<String> = Vec::new();
        for c in &children {
            if let Some(img) = self.meta.read(|r| r.image(&c.image.expect("here")))? {
                for rd in img.repo_digests {
                    if let Some(r) = rd.split('@').next().and_then(|n| Reference::parse(n).ok())
                        && r.domain() == repo.domain()
                        && r.path() != repo.path()
                        && !mounts.contains(&r.path().to_string())
                    {
                        mounts.push(r.path().to_string());
                    }
                }
            }
        }
        for c in &children {
            self.clone()
                .push_manifest_as_is(repo, c, &mounts, progress, &hold)
                .await?;
        }
        let (reference_digest, size) = match selected {
            None => {
                let body = self.content.read(&ix.digest, MAX_JSON)?;
                let size = body.len();
                let d = repo
                    .put_manifest(tag, &ix.media_type, Bytes::from(body))
                    .await?;
                if d != ix.digest {
                    return Err(Error::internal(format!(
                        "pushed index {d}, expected {}",
                        ix.digest
                    )));
                }
                (d, size)
            }
            Some(c) => {
                let body = self.content.read(&c.digest, MAX_JSON)?;
                let size = body.len();
                let d = repo
                    .put_manifest(tag, &c.media_type, Bytes::from(body))
                    .await?;
                if opts.platform.is_none()
                    && let Some(n) = &opts.notes
                {
                    n(PushNote::ManifestPushedInsteadOfIndex {
                        original: Box::new(index_desc.clone()),
                        selected: Box::new(Descriptor {
                            media_type: c.media_type.clone(),
                            digest: c.digest,
                            size: c.size,
                            urls: vec![],
                            annotations: None,
                            platform: platform_of(c),
                        }),
                    });
                }
                (d, size)
            }
        };
        // Each pushed image is now known in this repository too.
        let rd = format!(
            "{}@{reference_digest}",
            familiar(&format!("{}/{}", repo.domain(), repo.path()))
        );
        let ids: Vec<Digest> = children.iter().filter_map(|c| c.image).collect();
        let svc = self.clone();
        tokio::task::spawn_blocking(move || {
            svc.meta.write(|w| {
                for id in &ids {
                    if let Some(mut r) = w.image(id)? {
                        crate::load::add_repo_digest(&mut r.repo_digests, &rd);
                        w.put_image(&r)?;
                    }
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| Error::internal(format!("push task failed: {e}")))??;
        drop(hold);
        Ok(PushResult {
            tag: tag.to_string(),
            digest: reference_digest,
            size,
        })
    }

    /// Push one child manifest of an index by its digest, exactly as it
    /// was pulled, after its config and layers.
    async fn push_manifest_as_is(
        self: Arc<Self>,
        repo: &Repository,
        c: &IndexChild,
        mounts: &[String],
        progress: &ProgressFn,
        hold: &LeaseHandle,
    ) -> Result<()> {
        let body = self.content.read(&c.digest, MAX_JSON)?;
        let m = match parse_manifest(&c.media_type, &body)? {
            ManifestKind::Image(m) => *m,
            ManifestKind::Index(_) => {
                return Err(Error::invalid(format!(
                    "manifest list entry {} is itself a manifest list",
                    c.digest
                )));
            }
        };
        let layers: Vec<(String, Digest, u64)> = m
            .layers
            .iter()
            .map(|l| (l.digest.short(), l.digest, l.size))
            .collect();
        for (id, _, _) in layers.iter().rev() {
            say(progress, Some(id), "Preparing", None);
        }
        let limit = repo.client().config().max_concurrent_uploads.max(1);
        for (id, _, _) in layers.iter().rev().skip(limit) {
            say(progress, Some(id), "Waiting", None);
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(limit));
        let mut set = tokio::task::JoinSet::new();
        for (id, digest, size) in layers.into_iter().rev() {
            let svc = self.clone();
            let repo = repo.clone();
            let sem = sem.clone();
            let progress = progress.clone();
            let mounts = mounts.to_vec();
            let hold = hold.clone();
            set.spawn(async move {
                let _p = sem.acquire_owned().await.expect("semaphore open");
                svc.push_blob(&repo, &digest, size, &id, &mounts, &progress, &hold)
                    .await
            });
        }
        crate::join_all(&mut set, "push task", |()| {}).await?;
        let config = self.content.read(&m.config.digest, MAX_JSON)?;
        if repo.blob_exists(&m.config.digest).await?.is_none() {
            let loc = repo.start_upload().await?;
            repo.upload(
                loc,
                PushSource::Bytes(Bytes::from(config)),
                Some(m.config.digest),
                Arc::new(|_| {}),
            )
            .await?;
        }
        let d = repo
            .put_manifest(&c.digest.to_string(), &c.media_type, Bytes::from(body))
            .await?;
        if d != c.digest {
            return Err(Error::internal(format!(
                "pushed manifest {d}, expected {}",
                c.digest
            )));
        }
        Ok(())
    }

    /// Push a stored blob by its digest: skipped when the registry has it,
    /// mounted from another repository of it when one has it, otherwise
    /// uploaded as a stream.
    #[allow(clippy::too_many_arguments)]
    async fn push_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        total: u64,
        id: &str,
        mounts: &[String],
        progress: &ProgressFn,
        hold: &LeaseHandle,
    ) -> Result<()> {
        hold.hold_blob(digest);
        if repo.blob_exists(digest).await?.is_some() {
            say(progress, Some(id), "Layer already exists", None);
            return Ok(());
        }
        let mut location = None;
        // Each refused mount opens an upload session: try a few sources
        // and upload into the last session.
        for from in mounts.iter().take(3) {
            match repo.mount_blob(digest, from).await? {
                UploadOutcome::Mounted => {
                    say(progress, Some(id), &format!("Mounted from {from}"), None);
                    return Ok(());
                }
                UploadOutcome::Started(loc) => location = Some(loc),
            }
        }
        let location = match location {
            Some(l) => l,
            None => repo.start_upload().await?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let file = self.content.open_blob(digest)?;
        let reader = tokio::task::spawn_blocking(move || send_file(file, tx));
        let p = progress.clone();
        let pid = id.to_string();
        let last = AtomicU64::new(0);
        let cb: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| {
            if n == total || n - last.load(Ordering::Relaxed) >= 1 << 20 {
                last.store(n, Ordering::Relaxed);
                say(&p, Some(&pid), "Pushing", Some((n, total)));
            }
        });
        let up = repo
            .upload(location, PushSource::Stream(rx), Some(*digest), cb)
            .await;
        let _ = reader.await;
        up?;
        say(progress, Some(id), "Pushed", None);
        Ok(())
    }

    /// A compressed blob of this diff ID that the content store has.
    fn compressed_blob_for(&self, l: &LayerBlob) -> Result<Option<LayerBlob>> {
        if is_compressed(&l.media_type) && self.content.exists(&l.digest) {
            return Ok(Some(l.clone()));
        }
        let cands: Vec<LayerBlob> = self.meta.read(|r| {
            Ok(r.images()?
                .into_iter()
                .flat_map(|i| i.layers)
                .filter(|x| x.diff_id == l.diff_id && is_compressed(&x.media_type))
                .collect())
        })?;
        Ok(cands.into_iter().find(|c| self.content.exists(&c.digest)))
    }

    /// Any stored blob (compressed or not) holding this layer's tar.
    fn any_blob_for(&self, l: &LayerBlob) -> Result<Digest> {
        if self.content.exists(&l.digest) {
            return Ok(l.digest);
        }
        let cands: Vec<Digest> = self.meta.read(|r| {
            Ok(r.images()?
                .into_iter()
                .flat_map(|i| i.layers)
                .filter(|x| x.diff_id == l.diff_id)
                .map(|x| x.digest)
                .collect())
        })?;
        cands
            .into_iter()
            .find(|d| self.content.exists(d))
            .ok_or_else(|| Error::not_found(format!("no stored blob for layer {}", l.diff_id)))
    }

    async fn push_layer(
        self: Arc<Self>,
        repo: &Repository,
        l: &LayerBlob,
        id: &str,
        mounts: &[String],
        progress: &ProgressFn,
        hold: &LeaseHandle,
    ) -> Result<LayerBlob> {
        if let Some(c) = self.compressed_blob_for(l)? {
            self.push_blob(repo, &c.digest, c.size, id, mounts, progress, hold)
                .await?;
            return Ok(c);
        }
        // Stored uncompressed: compress it on the way (gzip, or zstd when
        // configured), keeping the result.
        let src = self.any_blob_for(l)?;
        hold.hold_blob(&src);
        let location = repo.start_upload().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let read = Arc::new(AtomicU64::new(0));
        let zstd = registry_zstd(repo);
        let svc = self.clone();
        let read2 = read.clone();
        let hold2 = hold.clone();
        let compressor = tokio::task::spawn_blocking(move || -> Result<(Digest, u64)> {
            let f = svc.content.open_blob(&src)?;
            let mut r = BufReader::with_capacity(READ_CHUNK, f);
            let c = detect_compression(&mut r)?;
            let tar = decompress(r, c)?;
            let mut counted = Counted {
                inner: tar,
                n: read2,
            };
            let ingest = svc.content.ingest()?;
            let out = Tee {
                ingest,
                tx,
                buf: Vec::with_capacity(READ_CHUNK),
            };
            let mut out = if zstd {
                let mut z = zstd::stream::write::Encoder::new(out, 3)?;
                std::io::copy(&mut counted, &mut z)?;
                z.finish()?
            } else {
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                std::io::copy(&mut counted, &mut gz)?;
                gz.finish()?
            };
            out.flush()?;
            let Tee { ingest, .. } = out;
            ingest.commit_with(None, |d| hold2.hold_blob(d))
        });
        let total = l.tar_size;
        let p = progress.clone();
        let pid = id.to_string();
        let read3 = read.clone();
        let last = Arc::new(AtomicU64::new(0));
        let cb: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |_| {
            let n = read3.load(Ordering::Relaxed);
            if n - last.load(Ordering::Relaxed) >= 1 << 20 {
                last.store(n, Ordering::Relaxed);
                say(&p, Some(&pid), "Pushing", Some((n, total)));
            }
        });
        let up = repo
            .upload(location, PushSource::Stream(rx), None, cb)
            .await;
        let made = compressor
            .await
            .map_err(|e| Error::internal(format!("compress task failed: {e}")))?;
        let (digest, size) = up?;
        let (stored, _) = made?;
        if stored != digest {
            return Err(Error::internal(format!(
                "layer {id}: pushed {digest} but stored {stored}"
            )));
        }
        say(progress, Some(id), "Pushed", None);
        Ok(LayerBlob {
            digest,
            media_type: layer_media_type(if zstd {
                Compression::Zstd
            } else {
                Compression::Gzip
            })
            .to_string(),
            size,
            diff_id: l.diff_id,
            tar_size: l.tar_size,
        })
    }
}

/// dockerd's error for a platform an image does not have.
fn platform_not_found(full: &str, want: &Platform) -> Error {
    Error::not_found(format!(
        "image with reference {} was found but does not provide the specified platform ({})",
        familiar(full),
        want.display()
    ))
}

fn registry_zstd(repo: &Repository) -> bool {
    repo.client().config().push_compression == "zstd"
}

fn is_compressed(t: &str) -> bool {
    t.contains("gzip") || t.contains("zstd")
}

fn send_file(
    mut f: std::fs::File,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<()> {
    loop {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
                    return Err(e.into());
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Ok(());
        }
    }
}

struct Counted<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}

/// Writes to the content store and, in 1 MiB chunks, to the upload.
struct Tee {
    ingest: berth_content::Ingest,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for Tee {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.ingest.write_all(data)?;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= READ_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let b = Bytes::from(std::mem::replace(
                &mut self.buf,
                Vec::with_capacity(READ_CHUNK),
            ));
            self.tx.blocking_send(Ok(b)).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped")
            })?;
        }
        self.ingest.flush()
    }
}
