//! berth-images: the image store as users see it — load, save, import,
//! tag, untag and delete, list with filters, inspect, history, prune, disk
//! usage — on top of the content store (blobs), the layer store (unpacked
//! layers) and the metadata store (which image has which tags, blobs and
//! layers).
//!
//! Owns: the meaning of images and their references, and garbage
//! collection of blobs and layers (mark from metadata and leases, sweep
//! outside any write transaction). Must not: speak HTTP or know API JSON
//! shapes (berthd converts), run containers.
#![forbid(unsafe_code)]

mod commit;
mod config;
mod derive;
mod import;
mod layers;
mod leases;
mod load;
mod pull;
mod push;
mod save;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_content::ContentStore;
use berth_metadata::{ImageRecord, MetaRead, MetaStore};
use berth_types::{ChainId, DiffId, Digest, Error, ErrorKind, Reference, Result};

pub use berth_distribution as distribution;
pub use commit::{EMPTY_LAYER_DIFF_ID, HistoryEntry, ImageCommit, NewLayer};
pub use config::{History, ImageConfig, now_rfc3339};
pub use import::{ImportOptions, commit_config};
pub use layers::LayerStore;
pub use leases::{Lease, LeaseHandle, Leases};
pub use load::{LoadProgress, LoadedImage, host_arch};
pub use pull::{InFlight, Progress, ProgressFn, PullOptions, PullResult};
pub use push::{PushNote, PushOptions, PushResult};

/// Largest JSON document (config, manifest, index) berth reads.
pub const MAX_JSON: u64 = 4 << 20;

pub struct ImageService {
    content: ContentStore,
    layers: LayerStore,
    meta: Arc<MetaStore>,
    leases: Leases,
    gc_lock: Mutex<()>,
    in_flight: InFlight,
}

/// One image as listings show it.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    pub record: ImageRecord,
    /// Familiar `name:tag` strings, sorted.
    pub repo_tags: Vec<String>,
    /// Size of layers this image shares with other images (disk usage only).
    pub shared_size: u64,
    /// An untagged image that is a platform of a tagged multi-platform
    /// image (not dangling; listings show it only with `all`).
    pub index_child: bool,
}

/// Everything inspect shows.
#[derive(Clone, Debug)]
pub struct ImageDetails {
    pub summary: ImageSummary,
    pub config: ImageConfig,
    /// Layer directories, top first (overlay lowerdir order).
    pub layer_dirs: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DeleteItem {
    Untagged(String),
    Deleted(String),
}

#[derive(Clone, Debug)]
pub struct HistoryItem {
    pub id: String,
    pub created: i64,
    pub created_by: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub comment: String,
}

#[derive(Clone, Debug, Default)]
pub struct DiskUsage {
    pub layers_size: u64,
    pub images: Vec<ImageSummary>,
}

/// What garbage collection would remove, with paths.
#[derive(Debug, Default)]
pub struct Unreferenced {
    pub blobs: Vec<(Digest, PathBuf)>,
    pub layers: Vec<(ChainId, PathBuf)>,
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs: usize,
    pub layers: Vec<ChainId>,
    /// Bytes of layer content removed (what Docker reports as reclaimed).
    pub reclaimed: u64,
}

fn no_such_image(name: &str) -> Error {
    Error::not_found(format!("No such image: {name}"))
}

/// The familiar form of a stored full reference.
pub fn familiar(full: &str) -> String {
    Reference::parse(full)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| full.to_string())
}

impl ImageService {
    pub fn open(data_root: &Path, meta: Arc<MetaStore>) -> Result<Self> {
        Ok(ImageService {
            content: ContentStore::open(data_root)?,
            layers: LayerStore::open(data_root)?,
            meta,
            leases: Leases::default(),
            gc_lock: Mutex::new(()),
            in_flight: InFlight::default(),
        })
    }

    pub fn layer_store(&self) -> &LayerStore {
        &self.layers
    }

    pub fn resolve(&self, name: &str) -> Result<ImageRecord> {
        self.meta.read(|r| resolve_with(r, name)).map(|(i, _)| i)
    }

    fn tags_by_image(tags: Vec<(String, Digest)>) -> HashMap<Digest, Vec<String>> {
        let mut m: HashMap<Digest, Vec<String>> = HashMap::new();
        for (full, id) in tags {
            if !full.contains('@') {
                m.entry(id).or_default().push(familiar(&full));
            }
        }
        for v in m.values_mut() {
            v.sort();
        }
        m
    }

    /// All images, newest first, narrowed by Docker's `images` filters
    /// (`dangling`, `label`, `reference`, `before`, `since`, `until`).
    pub fn list(&self, filters: &HashMap<String, Vec<String>>) -> Result<Vec<ImageSummary>> {
        for k in filters.keys() {
            if !["dangling", "label", "reference", "before", "since", "until"].contains(&k.as_str())
            {
                return Err(Error::invalid(format!("invalid filter '{k}'")));
            }
        }
        let dangling = match filters.get("dangling").map(|v| v.as_slice()) {
            None | Some([]) => None,
            Some([v]) if v.eq_ignore_ascii_case("true") || v == "1" => Some(true),
            Some([v]) if v.eq_ignore_ascii_case("false") || v == "0" => Some(false),
            Some(v) => {
                return Err(Error::invalid(format!(
                    "invalid filter 'dangling={}'",
                    v.join(",")
                )));
            }
        };
        let (images, tags, before, since, held) = self.meta.read(|r| {
            let bound = |k: &str| -> Result<Option<i64>> {
                match filters.get(k).and_then(|v| v.first()) {
                    Some(n) => Ok(Some(resolve_with(r, n)?.0.created)),
                    None => Ok(None),
                }
            };
            Ok((
                r.images()?,
                r.tags()?,
                bound("before")?,
                bound("since")?,
                held_by_indexes(r)?,
            ))
        })?;
        let until = match filters.get("until").and_then(|v| v.first()) {
            Some(u) => Some(parse_until(u)?),
            None => None,
        };
        let mut by_image = Self::tags_by_image(tags);
        let mut out = Vec::new();
        for rec in images {
            let repo_tags = by_image.remove(&rec.id).unwrap_or_default();
            let index_child = repo_tags.is_empty() && held.contains(&rec.id);
            if let Some(d) = dangling
                && d != (repo_tags.is_empty() && !index_child)
            {
                continue;
            }
            if before.is_some_and(|b| rec.created >= b) || since.is_some_and(|s| rec.created <= s) {
                continue;
            }
            if until.is_some_and(|u| rec.created > u) {
                continue;
            }
            if let Some(labels) = filters.get("label")
                && !labels.iter().all(|l| label_matches(&rec.labels, l))
            {
                continue;
            }
            let repo_tags = match filters.get("reference") {
                Some(pats) if !pats.is_empty() => {
                    let kept: Vec<String> = repo_tags
                        .into_iter()
                        .filter(|t| pats.iter().any(|p| reference_matches(p, t)))
                        .collect();
                    if kept.is_empty() {
                        continue;
                    }
                    kept
                }
                _ => repo_tags,
            };
            out.push(ImageSummary {
                record: rec,
                repo_tags,
                shared_size: 0,
                index_child,
            });
        }
        out.sort_by(|a, b| {
            b.record
                .created
                .cmp(&a.record.created)
                .then(a.record.id.cmp(&b.record.id))
        });
        Ok(out)
    }

    pub fn inspect(&self, name: &str) -> Result<ImageDetails> {
        let (rec, tags) = self.meta.read(|r| {
            let (rec, _) = resolve_with(r, name)?;
            let tags = r.tags()?;
            Ok((rec, tags))
        })?;
        let repo_tags = Self::tags_by_image(tags)
            .remove(&rec.id)
            .unwrap_or_default();
        let config = ImageConfig::parse(&self.content.read(&rec.id, MAX_JSON)?)?;
        let diffs: Vec<DiffId> = rec.layers.iter().map(|l| l.diff_id).collect();
        let layer_dirs = ChainId::chain(&diffs)
            .iter()
            .rev()
            .map(|c| self.layers.diff_dir(c))
            .collect();
        Ok(ImageDetails {
            summary: ImageSummary {
                record: rec,
                repo_tags,
                shared_size: 0,
                index_child: false,
            },
            config,
            layer_dirs,
        })
    }

    pub fn history(&self, name: &str) -> Result<Vec<HistoryItem>> {
        let d = self.inspect(name)?;
        let rec = &d.summary.record;
        let mut sizes = rec
            .layers
            .iter()
            .map(|l| l.diff_id)
            .collect::<Vec<_>>()
            .into_iter();
        let chains = ChainId::chain(&rec.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>());
        let layer_sizes: HashMap<ChainId, u64> = self.meta.read(|r| {
            chains
                .iter()
                .map(|c| Ok((*c, r.layer(c)?.map_or(0, |l| l.size))))
                .collect::<Result<_>>()
        })?;
        let mut chain_iter = chains.iter();
        let mut items: Vec<HistoryItem> = Vec::new();
        let history = if d.config.history.is_empty() {
            // No history: one entry per layer, as Docker synthesises.
            rec.layers.iter().map(|_| History::default()).collect()
        } else {
            d.config.history.clone()
        };
        for h in &history {
            let size = if h.empty_layer {
                0
            } else {
                sizes.next();
                chain_iter
                    .next()
                    .and_then(|c| layer_sizes.get(c))
                    .copied()
                    .unwrap_or(0)
            };
            items.push(HistoryItem {
                id: "<missing>".into(),
                created: h.created.as_deref().map(config::parse_time).unwrap_or(0),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: vec![],
                size,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        items.reverse();
        // As Docker: the rows take the IDs of the image and then of its
        // local parents (committed or built here), one row each.
        let (parents, tags) = self.meta.read(|r| {
            let mut chain = Vec::new();
            let mut next = rec.parent;
            while let Some(p) = next {
                match r.image(&p)? {
                    Some(img) if chain.len() < items.len() => {
                        next = img.parent;
                        chain.push(img.id);
                    }
                    _ => break,
                }
            }
            Ok((chain, Self::tags_by_image(r.tags()?)))
        })?;
        let ids = std::iter::once((rec.id, d.summary.repo_tags.clone())).chain(
            parents
                .into_iter()
                .map(|p| (p, tags.get(&p).cloned().unwrap_or_default())),
        );
        for (item, (id, tags)) in items.iter_mut().zip(ids) {
            item.id = id.to_string();
            item.tags = tags;
        }
        Ok(items)
    }

    /// Point `repo[:tag]` at the image `source`. Returns the new full reference.
    pub fn tag(&self, source: &str, repo: &str, tag: Option<&str>) -> Result<(Digest, String)> {
        let target = match tag {
            Some(t) if !t.is_empty() => format!("{repo}:{t}"),
            _ => repo.to_string(),
        };
        let rf = Reference::parse(&target)?;
        if rf.digest.is_some() {
            return Err(Error::invalid(
                "refusing to create a tag with a digest reference",
            ));
        }
        let rf = rf.with_default_tag();
        let full = rf.to_string();
        self.meta.write(|w| {
            let (mut rec, by_tag) = resolve_with(w, source)?;
            let index = match &by_tag {
                Some(t) => match w.tag_index(t)? {
                    Some(d) => w.index(&d)?,
                    None => None,
                },
                None => None,
            };
            w.set_tag(&full, &rec.id)?;
            // A multi-platform tag's new name names the same index (put
            // back: setting the tag may have dropped the row it was the
            // last name of).
            if let Some(ix) = index {
                w.put_index(&ix)?;
                w.set_tag_index(&full, &ix.digest)?;
            }
            rec.last_tag_time = Some(now_rfc3339());
            w.put_image(&rec)?;
            Ok((rec.id, full.clone()))
        })
    }

    /// Docker's `rmi`: untag, and delete the image when nothing names it.
    pub fn remove(&self, name: &str, force: bool, _noprune: bool) -> Result<Vec<DeleteItem>> {
        let (items, deleted_image) = self.meta.write(|w| {
            let (rec, by_tag) = resolve_with(w, name)?;
            let all: Vec<String> =
                w.tags()?.into_iter().filter(|(_, id)| *id == rec.id).map(|(t, _)| t).collect();
            // The platforms of the multi-platform tags this may untag: they
            // go with the last tag that names their index.
            let mut children: Vec<Digest> = Vec::new();
            for t in &all {
                if let Some(d) = w.tag_index(t)?
                    && let Some(ix) = w.index(&d)?
                {
                    children.extend(ix.images().filter(|i| *i != rec.id));
                }
            }
            let mut items = Vec::new();
            let users: Vec<(String, bool)> = w
                .containers()?
                .into_iter()
                .filter(|c| c.image_id == rec.id)
                .map(|c| (c.id, c.record["State"]["Running"].as_bool().unwrap_or(false)))
                .collect();
            let remaining = match by_tag {
                Some(_) if all.len() == 1 && !users.is_empty() && !force => {
                    return Err(Error::conflict(format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                        &users[0].0[..12],
                        rec.id.short()
                    )));
                }
                Some(full) => {
                    w.remove_tag(&full)?;
                    items.push(DeleteItem::Untagged(familiar(&full)));
                    all.iter().filter(|t| **t != full).count()
                }
                None => {
                    if let Some((cid, running)) = users.first() {
                        let how = if *running { "cannot be forced" } else { "must be forced" };
                        if *running || !force {
                            let state = if *running { "running" } else { "stopped" };
                            return Err(Error::conflict(format!(
                                "conflict: unable to delete {} ({how}) - image is being used by {state} container {}",
                                rec.id.short(),
                                &cid[..12]
                            )));
                        }
                    }
                    let named: Vec<&String> = all.iter().filter(|t| !t.contains('@')).collect();
                    if named.len() > 1 && !force {
                        return Err(Error::conflict(format!(
                            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                            rec.id.short()
                        )));
                    }
                    for t in &all {
                        w.remove_tag(t)?;
                        items.push(DeleteItem::Untagged(familiar(t)));
                    }
                    0
                }
            };
            remove_orphan_children(w, &children, &mut items)?;
            // An image a container uses stays, untagged, until the container goes.
            if remaining > 0 || !users.is_empty() {
                return Ok((items, None));
            }
            w.delete_image(&rec.id)?;
            items.push(DeleteItem::Deleted(rec.id.to_string()));
            Ok((items, Some(rec)))
        })?;
        let mut items = items;
        let any_deleted = items.iter().any(|i| matches!(i, DeleteItem::Deleted(_)));
        if deleted_image.is_none() && any_deleted {
            self.gc()?;
        }
        if let Some(rec) = deleted_image {
            let report = self.gc()?;
            let diffs: Vec<DiffId> = rec.layers.iter().map(|l| l.diff_id).collect();
            for c in ChainId::chain(&diffs).iter().rev() {
                if report.layers.contains(c) {
                    items.push(DeleteItem::Deleted(c.to_string()));
                }
            }
        }
        Ok(items)
    }

    /// Remove unused images: dangling ones, or with `all` every image (no
    /// container uses images yet). Filters: `dangling`, `label`, `until`.
    pub fn prune(&self, filters: &HashMap<String, Vec<String>>) -> Result<(Vec<DeleteItem>, u64)> {
        for k in filters.keys() {
            if !["dangling", "label", "label!", "until"].contains(&k.as_str()) {
                return Err(Error::invalid(format!("invalid filter '{k}'")));
            }
        }
        let all = matches!(
            filters
                .get("dangling")
                .and_then(|v| v.first())
                .map(String::as_str),
            Some("false" | "0")
        );
        let until = match filters.get("until").and_then(|v| v.first()) {
            Some(u) => Some(parse_until(u)?),
            None => None,
        };
        let mut items = Vec::new();
        let deleted: Vec<ImageRecord> = self.meta.write(|w| {
            let by_image = Self::tags_by_image(w.tags()?);
            let all_tags = w.tags()?;
            let in_use: HashSet<Digest> = w.containers()?.into_iter().map(|c| c.image_id).collect();
            let held = held_by_indexes(w)?;
            let mut deleted = Vec::new();
            for rec in w.images()? {
                if in_use.contains(&rec.id) {
                    continue;
                }
                let tagged = by_image.contains_key(&rec.id) || held.contains(&rec.id);
                if tagged && !all {
                    continue;
                }
                if until.is_some_and(|u| rec.created > u) {
                    continue;
                }
                if let Some(ls) = filters.get("label")
                    && !ls.iter().all(|l| label_matches(&rec.labels, l))
                {
                    continue;
                }
                if let Some(ls) = filters.get("label!")
                    && ls.iter().any(|l| label_matches(&rec.labels, l))
                {
                    continue;
                }
                for (t, _) in all_tags.iter().filter(|(_, id)| *id == rec.id) {
                    w.remove_tag(t)?;
                    items.push(DeleteItem::Untagged(familiar(t)));
                }
                w.delete_image(&rec.id)?;
                items.push(DeleteItem::Deleted(rec.id.to_string()));
                deleted.push(rec);
            }
            Ok(deleted)
        })?;
        if deleted.is_empty() {
            return Ok((items, 0));
        }
        let report = self.gc()?;
        for c in &report.layers {
            items.push(DeleteItem::Deleted(c.to_string()));
        }
        Ok((items, report.reclaimed))
    }

    /// Sizes from metadata (no directory walk): every image, with the size
    /// of the layers it shares, and the total of all layers.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let (images, tags, layers) = self
            .meta
            .read(|r| Ok((r.images()?, r.tags()?, r.layers()?)))?;
        let sizes: HashMap<ChainId, u64> = layers.iter().map(|l| (l.chain_id, l.size)).collect();
        let mut users: HashMap<ChainId, usize> = HashMap::new();
        let chains: Vec<Vec<ChainId>> = images
            .iter()
            .map(|i| ChainId::chain(&i.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>()))
            .collect();
        for c in chains.iter().flat_map(|c| c.iter().collect::<HashSet<_>>()) {
            *users.entry(*c).or_default() += 1;
        }
        let mut by_image = Self::tags_by_image(tags);
        let mut out = DiskUsage {
            layers_size: sizes.values().sum(),
            images: vec![],
        };
        for (rec, chain) in images.into_iter().zip(chains) {
            let shared = chain
                .iter()
                .filter(|c| users[c] > 1)
                .map(|c| sizes.get(c).copied().unwrap_or(0))
                .sum();
            let repo_tags = by_image.remove(&rec.id).unwrap_or_default();
            out.images.push(ImageSummary {
                record: rec,
                repo_tags,
                shared_size: shared,
                index_child: false,
            });
        }
        out.images
            .sort_by_key(|i| std::cmp::Reverse(i.record.created));
        Ok(out)
    }

    pub fn count(&self) -> Result<usize> {
        self.meta.read(|r| Ok(r.images()?.len()))
    }

    /// Garbage collection. Order matters: list what is on disk first, then
    /// read leases, then metadata roots, so that anything written after the
    /// listing is not a candidate and anything committed meanwhile is seen.
    pub fn gc(&self) -> Result<GcReport> {
        let _g = self.gc_lock.lock().unwrap();
        let disk_blobs = self.content.list()?;
        let disk_layers = self.layers.list()?;
        let (held_blobs, held_layers) = self.leases.held();
        let roots = self.meta.roots()?;
        let layer_rows = self.meta.read(|r| r.layers())?;
        let sizes: HashMap<ChainId, u64> =
            layer_rows.iter().map(|l| (l.chain_id, l.size)).collect();
        let mut report = GcReport::default();
        let mut errors = Vec::new();
        for b in disk_blobs {
            if !roots.blobs.contains(&b) && !held_blobs.contains(&b) {
                match self.content.delete(&b) {
                    Ok(()) => report.blobs += 1,
                    Err(e) => errors.push(e.context(format!("remove blob {b}"))),
                }
            }
        }
        for l in disk_layers {
            if !roots.layers.contains(&l) && !held_layers.contains(&l) {
                match self.layers.remove(&l) {
                    Ok(()) => {
                        report.reclaimed += sizes.get(&l).copied().unwrap_or(0);
                        report.layers.push(l);
                    }
                    Err(e) => errors.push(e.context(format!("remove layer {l}"))),
                }
            }
        }
        let stale: Vec<ChainId> = layer_rows
            .iter()
            .map(|l| l.chain_id)
            .filter(|c| !roots.layers.contains(c) && !held_layers.contains(c))
            .collect();
        if !stale.is_empty() {
            self.meta
                .write(|w| stale.iter().try_for_each(|c| w.delete_layer(c)))?;
        }
        if !errors.is_empty() {
            let msg = errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::internal(format!("garbage collection: {msg}")));
        }
        if report.blobs > 0 || !report.layers.is_empty() {
            tracing::info!(
                blobs = report.blobs,
                layers = report.layers.len(),
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// What [`ImageService::gc`] would remove now, without removing it:
    /// blobs and layer directories that no image row references and no
    /// lease holds, with their paths (for `system check`).
    pub fn unreferenced(&self) -> Result<Unreferenced> {
        let _g = self.gc_lock.lock().unwrap();
        let disk_blobs = self.content.list()?;
        let disk_layers = self.layers.list()?;
        let (held_blobs, held_layers) = self.leases.held();
        let roots = self.meta.roots()?;
        let blobs = disk_blobs
            .into_iter()
            .filter(|b| !roots.blobs.contains(b) && !held_blobs.contains(b))
            .map(|b| (b, self.content.path(&b)))
            .collect();
        let layers = disk_layers
            .into_iter()
            .filter(|l| !roots.layers.contains(l) && !held_layers.contains(l))
            .map(|l| (l, self.layers.dir(&l)))
            .collect();
        Ok(Unreferenced { blobs, layers })
    }

    /// Startup recovery: empty the staging area (whatever is there belongs to
    /// an operation of a previous process) and collect garbage.
    pub fn recover(&self, tmp: &Path) -> Result<GcReport> {
        if tmp.exists() {
            for e in std::fs::read_dir(tmp)? {
                let p = e?.path();
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                if let Err(e) = r {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove staging garbage");
                }
            }
        }
        self.gc()
    }
}

/// Find an image by reference (`busybox`, `busybox:1`, `name@sha256:…`),
/// full ID (`sha256:…`) or ID prefix. Also returns the full reference when
/// the name matched a tag.
fn resolve_with(w: &impl MetaRead, name: &str) -> Result<(ImageRecord, Option<String>)> {
    let by_id = |prefix: &str| -> Result<Option<ImageRecord>> {
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Ok(None);
        }
        match w.image_ids_with_prefix(prefix)?.as_slice() {
            [] => Ok(None),
            [one] => w.image(one),
            _ => Err(Error::invalid(format!(
                "multiple IDs found with provided prefix: {prefix}"
            ))),
        }
    };
    if let Some(hex) = name.strip_prefix("sha256:") {
        return by_id(hex)?
            .map(|i| (i, None))
            .ok_or_else(|| no_such_image(name));
    }
    let parsed = Reference::parse(name);
    if let Ok(rf) = &parsed {
        let full = rf.clone().with_default_tag().to_string();
        if let Some(id) = w.tag(&full)? {
            let img = w.image(&id)?.ok_or_else(|| {
                Error::internal(format!("tag {full} points at missing image {id}"))
            })?;
            return Ok((img, Some(full)));
        }
    }
    if let Some(img) = by_id(name)? {
        return Ok((img, None));
    }
    match parsed {
        Ok(rf) => Err(no_such_image(&rf.with_default_tag().familiar())),
        Err(e)
            if e.kind == ErrorKind::InvalidArgument
                && e.message.starts_with("invalid reference format") =>
        {
            Err(no_such_image(name))
        }
        Err(e) => Err(e),
    }
}

/// Images that are platforms of an index some tag names.
fn held_by_indexes(r: &impl MetaRead) -> Result<HashSet<Digest>> {
    Ok(r.indexes()?.iter().flat_map(|ix| ix.images()).collect())
}

/// After tags went: delete the platforms of a multi-platform image that no
/// tag, index or container names any more.
fn remove_orphan_children(
    w: &berth_metadata::WriteTx,
    children: &[Digest],
    items: &mut Vec<DeleteItem>,
) -> Result<()> {
    if children.is_empty() {
        return Ok(());
    }
    let tagged: HashSet<Digest> = w.tags()?.into_iter().map(|(_, id)| id).collect();
    let used: HashSet<Digest> = w.containers()?.into_iter().map(|c| c.image_id).collect();
    let held = held_by_indexes(w)?;
    let mut done = HashSet::new();
    for id in children {
        if tagged.contains(id) || used.contains(id) || held.contains(id) || !done.insert(*id) {
            continue;
        }
        if w.image(id)?.is_some() {
            w.delete_image(id)?;
            items.push(DeleteItem::Deleted(id.to_string()));
        }
    }
    Ok(())
}

/// `label=key` or `label=key=value`.
fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// Docker's `reference` filter: a glob against the familiar name, or name:tag.
fn reference_matches(pattern: &str, familiar_tag: &str) -> bool {
    let name = familiar_tag
        .rsplit_once(':')
        .map_or(familiar_tag, |(n, _)| n);
    glob_match::glob_match(pattern, familiar_tag) || glob_match::glob_match(pattern, name)
}

/// `until`: a unix timestamp, an RFC 3339 time, or a duration like `10m` (ago).
fn parse_until(s: &str) -> Result<i64> {
    if let Ok(n) = s.parse::<f64>() {
        return Ok(n as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("invalid filter 'until={s}'")))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(Error::invalid(format!("invalid filter 'until={s}'"))),
    };
    Ok(chrono::Utc::now().timestamp() - secs as i64)
}

/// Drain a set of tasks, handing each one's value to `each`: the first
/// error aborts the others and is returned once all have ended (`what`
/// names a task that panicked).
pub(crate) async fn join_all<T: 'static>(
    set: &mut tokio::task::JoinSet<Result<T>>,
    what: &str,
    mut each: impl FnMut(T),
) -> Result<()> {
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(v)) => each(v),
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    set.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_err.get_or_insert(Error::internal(format!("{what} failed: {e}")));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}
