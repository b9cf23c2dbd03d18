//! `docker load`: docker-save archives (both the Docker ≥25 layout, which is
//! an OCI layout plus `manifest.json`, and the older `<id>/layer.tar` form)
//! and plain OCI image layout archives, where a named multi-platform index
//! is kept as a pull keeps one (every platform the archive holds).
//!
//! One pass over the archive: every file that looks like a layer is written
//! to the content store and extracted into staging in the same read, other
//! files (JSON) are kept in memory. Nothing becomes visible until the last
//! step, one metadata transaction that adds the images and their tags.

use std::collections::HashMap;
use std::io::{self, Read};
use std::time::Duration;

use berth_metadata::{ImageRecord, LayerBlob, LayerRecord, MetaRead};
use berth_snapshots::Compression;
use berth_types::{ChainId, DiffId, Digest, Error, Reference, Result};
use serde::Deserialize;

use crate::layers::{Staged, looks_like_layer};
use crate::{ImageConfig, ImageService, Lease, MAX_JSON, familiar, now_rfc3339};

/// Progress of a load, for Docker's JSON message stream.
#[derive(Debug, Clone)]
pub enum LoadProgress {
    /// A layer was read: short diff ID and its size.
    Layer { id: String, size: u64 },
}

#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub id: Digest,
    /// Familiar references tagged by this load.
    pub tags: Vec<String>,
    /// Tags that moved here from another image (now untagged).
    pub replaced: Vec<(String, Digest)>,
}

struct Blob {
    digest: Digest,
    size: u64,
    staged: Option<Result<Staged>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: Digest,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// What one image in the archive is made of, by archive path.
struct Plan {
    config: String,
    layers: Vec<String>,
    /// Full references to tag.
    tags: Vec<String>,
    /// A platform of a named multi-platform index: (index in the load's
    /// list of them, this child's manifest digest, the blobs it names).
    child_of: Option<(usize, Digest, Vec<Digest>)>,
}

/// A named multi-platform index of an OCI archive, kept as it is.
struct IndexPlan {
    /// Full reference.
    tag: String,
    digest: Digest,
    media_type: String,
    body: Vec<u8>,
    list: Vec<berth_distribution::Descriptor>,
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("invalid archive: {msg}"))
}

/// A tar error as a readable message: the tar reader quotes raw header
/// bytes, which are binary garbage when the input is not a tar at all.
fn tar_error(e: std::io::Error) -> Error {
    let msg = e.to_string();
    if msg.contains("cksum") || msg.contains("numeric field") {
        return bad("archive/tar: invalid tar header");
    }
    let clean: String = msg
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{fffd}' {
                '?'
            } else {
                c
            }
        })
        .collect();
    bad(format!("read: {clean}"))
}

/// Follow symlinks between archive members (relative to the link's
/// directory, never above the archive root), up to a few hops.
fn resolve_link(links: &HashMap<String, String>, path: &str) -> String {
    let mut cur = path.to_string();
    for _ in 0..8 {
        let Some(target) = links.get(&cur) else { break };
        let base: Vec<&str> = if target.starts_with('/') {
            vec![]
        } else {
            cur.rsplit_once('/')
                .map(|(d, _)| d.split('/').collect())
                .unwrap_or_default()
        };
        let mut parts: Vec<&str> = base;
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        cur = parts.join("/");
    }
    cur
}

fn clean_path(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.to_string()
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    }
}

impl ImageService {
    /// Load every image of an archive. On any error nothing is added.
    pub fn load<R: Read>(
        &self,
        archive: R,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Vec<LoadedImage>> {
        let lease = self.leases.create(Duration::from_secs(3600));
        let res = self.load_inner(archive, &lease, progress);
        drop(lease);
        if res.is_err()
            && let Err(e) = self.gc()
        {
            tracing::warn!(error = %e, "garbage collection after a failed load");
        }
        res
    }

    fn load_inner<R: Read>(
        &self,
        archive: R,
        lease: &Lease,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Vec<LoadedImage>> {
        let mut small: HashMap<String, Vec<u8>> = HashMap::new();
        let mut blobs: HashMap<String, Blob> = HashMap::new();
        let mut ar = tar::Archive::new(archive);
        let mut links: HashMap<String, String> = HashMap::new();
        let entries = ar.entries().map_err(tar_error)?;
        for entry in entries {
            let mut entry = entry.map_err(tar_error)?;
            let typ = entry.header().entry_type();
            if typ.is_symlink() {
                // docker save writes a layer shared by two images once and
                // links the second `<id>/layer.tar` to it.
                let path = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                links.insert(path, target);
                continue;
            }
            if !typ.is_file() {
                continue;
            }
            let path = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
            let size = entry.size();
            let expected = path
                .strip_prefix("blobs/sha256/")
                .map(Digest::from_hex)
                .transpose()
                .map_err(bad)?;
            let mut head = Vec::with_capacity(1024);
            (&mut entry)
                .take(1024)
                .read_to_end(&mut head)
                .map_err(|e| bad(format!("read {path}: {e}")))?;
            if size <= MAX_JSON && !looks_like_layer(&head, size) {
                let mut data = head;
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| bad(format!("read {path}: {e}")))?;
                if let Some(exp) = expected {
                    let got = Digest::of(&data);
                    if got != exp {
                        return Err(bad(format!("{path}: digest mismatch: content is {got}")));
                    }
                }
                small.insert(path, data);
                continue;
            }
            let blob =
                self.ingest_blob(io::Cursor::new(head).chain(entry), &path, expected, lease)?;
            blobs.insert(path, blob);
        }
        let mut indexes: Vec<IndexPlan> = Vec::new();
        let mut plans = if let Some(m) = small.get("manifest.json") {
            let ms: Vec<SaveManifest> =
                serde_json::from_slice(m).map_err(|e| bad(format!("manifest.json: {e}")))?;
            ms.into_iter()
                .map(|m| {
                    let tags = m.repo_tags.unwrap_or_default();
                    Ok(Plan {
                        config: clean_path(&m.config),
                        layers: m.layers.iter().map(|l| clean_path(l)).collect(),
                        tags: tags
                            .iter()
                            .map(|t| Ok(Reference::parse(t)?.with_default_tag().to_string()))
                            .collect::<Result<_>>()?,
                        child_of: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        } else if let Some(ix) = small.get("index.json") {
            let has = |p: &str| small.contains_key(p) || blobs.contains_key(p);
            let (plans, ixs) = self.oci_plans(ix, &small, &has)?;
            indexes = ixs;
            plans
        } else {
            return Err(bad("no manifest.json or index.json found"));
        };
        if plans.is_empty() {
            return Err(bad("no images found"));
        }
        for plan in &mut plans {
            plan.config = resolve_link(&links, &plan.config);
            for l in &mut plan.layers {
                *l = resolve_link(&links, l);
            }
        }
        let mut loaded = Vec::new();
        let mut here: Vec<Vec<(Digest, Digest, Vec<Digest>)>> = vec![vec![]; indexes.len()];
        for plan in plans {
            let child_of = plan.child_of.clone();
            let img = self.commit_plan(plan, &small, &mut blobs, lease, progress)?;
            match child_of {
                Some((g, child, bl)) => here[g].push((child, img.id, bl)),
                None => loaded.push(img),
            }
        }
        // Each named index: its bytes and its children's manifests, as
        // they are (a push sends them unchanged), and its tag.
        for (ix, here) in indexes.into_iter().zip(here) {
            let Some(fallback) = here.first().map(|h| h.1) else {
                continue;
            };
            self.content
                .put(&ix.body, Some(&ix.digest), |d| lease.hold_blob(d))?;
            for (child, _, _) in &here {
                let body = small
                    .get(&blob_path(child))
                    .ok_or_else(|| bad(format!("missing blob {child}")))?;
                self.content
                    .put(body, Some(child), |d| lease.hold_blob(d))?;
            }
            let (id, before) = self.meta.write(|w| {
                crate::pull::record_index(
                    w,
                    &ix.tag,
                    crate::pull::IndexPulled {
                        digest: ix.digest,
                        media_type: &ix.media_type,
                        size: ix.body.len() as u64,
                        list: &ix.list,
                        here,
                        fallback,
                    },
                )
            })?;
            loaded.push(LoadedImage {
                id,
                tags: vec![familiar(&ix.tag)],
                replaced: before
                    .filter(|b| *b != id)
                    .map(|b| (familiar(&ix.tag), b))
                    .into_iter()
                    .collect(),
            });
        }
        Ok(loaded)
    }

    fn ingest_blob<R: Read>(
        &self,
        data: R,
        path: &str,
        expected: Option<Digest>,
        lease: &Lease,
    ) -> Result<Blob> {
        let mut ingest = self.content.ingest()?;
        let mut staged = self
            .layers
            .stage_tee(data, &mut ingest)
            .map_err(|e| bad(format!("read {path}: {}", e.message)))?;
        let (digest, size) = ingest
            .commit_with(expected.as_ref(), |d| lease.hold_blob(d))
            .map_err(|e| bad(format!("{path}: {}", e.message)))?;
        if let Ok(s) = &mut staged {
            s.set_blob_digest(digest);
        }
        Ok(Blob {
            digest,
            size,
            staged: Some(staged),
        })
    }

    /// The images of an OCI layout's `index.json`. A nested index takes
    /// its host platform's image; one that is named (a tag) is kept whole:
    /// every platform whose blobs the archive holds is loaded, and the tag
    /// names the index (see [`IndexPlan`]).
    fn oci_plans(
        &self,
        index: &[u8],
        small: &HashMap<String, Vec<u8>>,
        has: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<Plan>, Vec<IndexPlan>)> {
        let ix: Index =
            serde_json::from_slice(index).map_err(|e| bad(format!("index.json: {e}")))?;
        let mut plans = Vec::new();
        let mut indexes = Vec::new();
        // (descriptor, name inherited from an index, (named index, child digest))
        type Queued = (Descriptor, Option<String>, Option<(usize, Digest)>);
        let mut queue: Vec<Queued> = ix.manifests.into_iter().map(|d| (d, None, None)).collect();
        while let Some((desc, inherited, child_of)) = queue.pop() {
            let name = desc
                .annotations
                .get("io.containerd.image.name")
                .cloned()
                .or_else(|| {
                    desc.annotations
                        .get("org.opencontainers.image.ref.name")
                        .filter(|n| n.contains(':') || n.contains('/'))
                        .cloned()
                })
                .or(inherited);
            let body = small
                .get(&blob_path(&desc.digest))
                .ok_or_else(|| bad(format!("missing blob {}", desc.digest)))?;
            let is_index =
                desc.media_type.contains("index") || desc.media_type.contains("manifest.list");
            if is_index {
                let sub: Index = serde_json::from_slice(body)
                    .map_err(|e| bad(format!("index {}: {e}", desc.digest)))?;
                let complete = |m: &Descriptor| -> bool {
                    let Some(b) = small.get(&blob_path(&m.digest)) else {
                        return false;
                    };
                    serde_json::from_slice::<Manifest>(b).is_ok_and(|man| {
                        has(&blob_path(&man.config.digest))
                            && man.layers.iter().all(|l| has(&blob_path(&l.digest)))
                    })
                };
                let is_host = |m: &Descriptor| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
                };
                if let Some(n) = name.as_ref().filter(|_| child_of.is_none()) {
                    let list = match berth_distribution::parse_manifest(&desc.media_type, body)
                        .map_err(|e| bad(format!("index {}: {}", desc.digest, e.message)))?
                    {
                        berth_distribution::ManifestKind::Index(l) => l,
                        berth_distribution::ManifestKind::Image(_) => {
                            return Err(bad(format!("index {} is a manifest", desc.digest)));
                        }
                    };
                    let kept: Vec<Descriptor> = sub
                        .manifests
                        .into_iter()
                        .filter(|m| {
                            !m.media_type.contains("index")
                                && !m.media_type.contains("manifest.list")
                                && m.platform.as_ref().is_some_and(|p| p.os != "unknown")
                                && complete(m)
                        })
                        .collect();
                    if kept.is_empty() {
                        return Err(bad(format!(
                            "index {} has no image whose blobs are in the archive",
                            desc.digest
                        )));
                    }
                    let g = indexes.len();
                    indexes.push(IndexPlan {
                        tag: Reference::parse(n)?.with_default_tag().to_string(),
                        digest: desc.digest,
                        media_type: desc.media_type.clone(),
                        body: body.clone(),
                        list,
                    });
                    for m in kept {
                        let d = m.digest;
                        queue.push((m, None, Some((g, d))));
                    }
                    continue;
                }
                let pick = sub.manifests.into_iter().find(is_host);
                match pick {
                    Some(m) => queue.push((m, name, None)),
                    None => {
                        return Err(bad(format!(
                            "index {} has no linux/{} image",
                            desc.digest,
                            host_arch()
                        )));
                    }
                }
                continue;
            }
            let m: Manifest = serde_json::from_slice(body)
                .map_err(|e| bad(format!("manifest {}: {e}", desc.digest)))?;
            if !m.media_type.is_empty() && !m.media_type.contains("manifest") {
                return Err(bad(format!("unsupported media type {}", m.media_type)));
            }
            let tags = match (&name, child_of) {
                (Some(n), None) => vec![Reference::parse(n)?.with_default_tag().to_string()],
                _ => vec![],
            };
            plans.push(Plan {
                config: blob_path(&m.config.digest),
                layers: m.layers.iter().map(|l| blob_path(&l.digest)).collect(),
                tags,
                child_of: child_of.map(|(g, d)| {
                    let blobs = std::iter::once(m.config.digest)
                        .chain(m.layers.iter().map(|l| l.digest))
                        .collect();
                    (g, d, blobs)
                }),
            });
        }
        plans.reverse();
        Ok((plans, indexes))
    }

    fn commit_plan(
        &self,
        plan: Plan,
        small: &HashMap<String, Vec<u8>>,
        blobs: &mut HashMap<String, Blob>,
        lease: &Lease,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<LoadedImage> {
        let config_bytes = match small.get(&plan.config) {
            Some(b) => b.clone(),
            None => match blobs.get(&plan.config) {
                Some(b) => self.content.read(&b.digest, MAX_JSON)?,
                None => return Err(bad(format!("missing config {}", plan.config))),
            },
        };
        let config = ImageConfig::parse(&config_bytes)?;
        if config.rootfs.diff_ids.len() != plan.layers.len() {
            return Err(bad(format!(
                "config has {} layers but the manifest lists {}",
                config.rootfs.diff_ids.len(),
                plan.layers.len()
            )));
        }
        let id = self
            .content
            .put(&config_bytes, None, |d| lease.hold_blob(d))?;
        let chains = ChainId::chain(&config.rootfs.diff_ids);
        let mut layers = Vec::new();
        let mut records = Vec::new();
        for (i, path) in plan.layers.iter().enumerate() {
            let want: DiffId = config.rootfs.diff_ids[i];
            let chain = chains[i];
            let blob = match blobs.get_mut(path) {
                Some(b) => b,
                None if small.contains_key(path) => {
                    // A tiny layer (an empty tar is 1 KiB) that was kept in memory.
                    let data = &small[path];
                    let b = self.ingest_blob(io::Cursor::new(data), path, None, lease)?;
                    blobs.insert(path.clone(), b);
                    blobs.get_mut(path).unwrap()
                }
                None => return Err(bad(format!("missing layer {path}"))),
            };
            let mut staged = match blob.staged.take() {
                Some(s) => s,
                // Used twice, or never staged: extract again from the stored blob.
                None => self.layers.stage(self.content.open_blob(&blob.digest)?),
            }
            .map_err(|e| e.context(format!("layer {path}")))?;
            staged.set_blob_digest(blob.digest);
            if staged.diff_id() != want {
                return Err(bad(format!(
                    "layer {path}: content has diff ID {}, config says {want}",
                    staged.diff_id()
                )));
            }
            progress(LoadProgress::Layer {
                id: want.0.short(),
                size: staged.tar_size,
            });
            let media_type = match staged.compression {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            layers.push(LayerBlob {
                digest: blob.digest,
                media_type: media_type.into(),
                size: blob.size,
                diff_id: want,
                tar_size: staged.tar_size,
            });
            records.push(LayerRecord {
                v: 1,
                chain_id: chain,
                diff_id: want,
                parent: i.checked_sub(1).map(|p| chains[p]),
                size: staged.size,
            });
            lease.hold_layer(&chain);
            self.layers.commit(staged, &chain)?;
        }
        self.record_image(id, &config, layers, records, &plan.tags, None, None)
    }

    /// The one metadata transaction that makes an image visible.
    /// Record an image whose blobs and layers are in place (held by the
    /// caller's lease) in one transaction: its layers' rows, the image row
    /// and its tags. `parent` is the local image it was made from
    /// (commit, build), kept from an earlier row otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_image(
        &self,
        id: Digest,
        config: &ImageConfig,
        layers: Vec<LayerBlob>,
        records: Vec<LayerRecord>,
        tags: &[String],
        repo_digest: Option<&str>,
        parent: Option<Digest>,
    ) -> Result<LoadedImage> {
        self.record_image_with(
            id,
            config,
            layers,
            records,
            tags,
            repo_digest,
            parent,
            |_| Ok(()),
        )
    }

    /// [`ImageService::record_image`], running `then` in the same
    /// transaction after the image and its tags are written.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_image_with(
        &self,
        id: Digest,
        config: &ImageConfig,
        layers: Vec<LayerBlob>,
        records: Vec<LayerRecord>,
        tags: &[String],
        repo_digest: Option<&str>,
        parent: Option<Digest>,
        then: impl FnOnce(&berth_metadata::WriteTx) -> Result<()>,
    ) -> Result<LoadedImage> {
        let now = now_rfc3339();
        self.meta.write(|w| {
            let mut size = 0;
            for r in &records {
                match w.layer(&r.chain_id)? {
                    Some(existing) => size += existing.size,
                    None => {
                        size += r.size;
                        w.put_layer(r)?;
                    }
                }
            }
            let prev = w.image(&id)?;
            let rec = ImageRecord {
                v: 1,
                id,
                top_layer: records.last().map(|r| r.chain_id),
                layers,
                size,
                created: config.created_unix(),
                labels: config.labels(),
                repo_digests: {
                    let mut rd = prev
                        .as_ref()
                        .map(|p| p.repo_digests.clone())
                        .unwrap_or_default();
                    if let Some(d) = repo_digest {
                        add_repo_digest(&mut rd, d);
                    }
                    rd
                },
                parent: parent.or(prev.as_ref().and_then(|p| p.parent)),
                last_tag_time: if tags.is_empty() {
                    prev.and_then(|p| p.last_tag_time)
                } else {
                    Some(now.clone())
                },
            };
            w.put_image(&rec)?;
            let mut replaced = Vec::new();
            for t in tags {
                if let Some(old) = w.set_tag(t, &id)?
                    && old != id
                {
                    replaced.push((familiar(t), old));
                }
            }
            then(w)?;
            Ok(LoadedImage {
                id,
                tags: tags.iter().map(|t| familiar(t)).collect(),
                replaced,
            })
        })
    }
}

/// Record `name@digest` among an image's repo digests: one per repository,
/// the newest replacing an older one, as Docker keeps them.
pub(crate) fn add_repo_digest(list: &mut Vec<String>, rd: &str) {
    let repo = rd.split('@').next().unwrap_or(rd);
    list.retain(|x| x.split('@').next() != Some(repo));
    list.push(rd.to_string());
    list.sort();
}
