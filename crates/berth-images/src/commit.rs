//! Images made on this host rather than pulled or loaded: a container's
//! changes committed as a new layer over its image (`docker commit`, a
//! build step that ran), or a new config over the same layers (a build
//! step that only changes metadata, Docker's `empty_layer` history entry).
//!
//! ```text
//! create_layer(tar writer) ──▶ NewLayer   blob in the content store (uncompressed tar,
//!                                         as Docker stores a committed layer) and the
//!                                         layer extracted in tmp/, both held by a lease
//! commit_image(ImageCommit) ──▶ image ID  layer moved to layers/<chain id>/, config blob
//!                                         written, image row (and tag) in one transaction
//! ```
//!
//! The config is Docker's `NewChildImage`: the parent's architecture,
//! variant and OS, its rootfs plus the new diff ID, its history plus one
//! entry, the new `config`, and `container` / `container_config` when a
//! container was committed. A layer whose tar is empty (1024 zero bytes: a
//! container that changed nothing) is not added, and its history entry says
//! `empty_layer`, as Docker does.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use berth_metadata::{LayerBlob, LayerRecord, MetaRead};
use berth_types::{ChainId, DiffId, Digest, Error, Reference, Result};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::layers::Staged;
use crate::load::host_arch;
use crate::{ImageService, Lease, MAX_JSON, now_rfc3339, resolve_with};

/// Media type of a layer stored as a plain tar.
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The diff ID of the empty tar (two zero blocks), which Docker treats as
/// no layer at all.
pub const EMPTY_LAYER_DIFF_ID: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// A layer written to the content store and extracted into staging, not
/// yet part of any image. Dropping it discards the staging copy; the blob
/// is then garbage for the next collection.
pub struct NewLayer {
    staged: Staged,
    blob: LayerBlob,
    lease: Lease,
}

impl std::fmt::Debug for NewLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewLayer")
            .field("blob", &self.blob)
            .finish()
    }
}

impl NewLayer {
    pub fn diff_id(&self) -> DiffId {
        self.blob.diff_id
    }
    /// Bytes the layer holds (regular file sizes and link targets).
    pub fn size(&self) -> u64 {
        self.staged.size
    }
    /// Bytes of the layer tar.
    pub fn tar_size(&self) -> u64 {
        self.blob.tar_size
    }
    /// True for the empty tar: nothing changed.
    pub fn is_empty(&self) -> bool {
        self.blob.diff_id.to_string() == EMPTY_LAYER_DIFF_ID
    }
}

/// The history entry a commit adds (`docker history` shows it).
#[derive(Clone, Debug, Default)]
pub struct HistoryEntry {
    /// `CREATED BY`: Docker writes the committed container's command, or a
    /// build step's `/bin/sh -c #(nop) ...`.
    pub created_by: String,
    pub comment: String,
    /// Also the image's top-level `author`.
    pub author: String,
}

/// What [`ImageService::commit_image`] makes.
#[derive(Debug, Default)]
pub struct ImageCommit {
    /// The image the new one extends (ID or any name `resolve` takes);
    /// `None` for an image from scratch.
    pub parent: Option<String>,
    /// The new layer; `None` (or an empty one) for a metadata-only image.
    pub layer: Option<NewLayer>,
    /// The image config's `config` object (Cmd, Env, Labels, …), complete:
    /// nothing is merged from the parent here.
    pub config: Value,
    pub history: HistoryEntry,
    /// The committed container's ID and its `Config`, recorded as Docker's
    /// `container` and `container_config`.
    pub container: Option<(String, Value)>,
    /// `repo[:tag]` to point at the new image (`latest` when no tag).
    pub tag: Option<String>,
}

/// A writer that sends what is written as chunks to the staging thread.
struct ChannelWriter {
    tx: SyncSender<Bytes>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer staging stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ImageService {
    /// Make a layer from the uncompressed tar that `write_tar` writes:
    /// stored as a blob and extracted, in one pass, like a loaded layer.
    pub fn create_layer<F>(&self, write_tar: F) -> Result<NewLayer>
    where
        F: FnOnce(&mut dyn Write) -> Result<()> + Send,
    {
        let lease = self.leases.create(Duration::from_secs(3600));
        let mut ingest = self.content.ingest()?;
        let (tx, rx) = sync_channel::<Bytes>(8);
        let (written, staged) = std::thread::scope(|s| {
            let producer = s.spawn(move || -> Result<()> {
                let mut w = BufWriter::with_capacity(1 << 20, ChannelWriter { tx });
                write_tar(&mut w)?;
                w.flush().map_err(Error::from)
            });
            let staged = self
                .layers
                .stage_tee_chunks(rx.into_iter().map(Ok), 8, &mut ingest);
            let written = producer
                .join()
                .unwrap_or_else(|_| Err(Error::internal("layer tar writer panicked")));
            (written, staged)
        });
        written?;
        let mut staged = staged??;
        let (digest, size) = ingest.commit_with(None, |d| lease.hold_blob(d))?;
        staged.set_blob_digest(digest);
        let blob = LayerBlob {
            digest,
            media_type: LAYER_TAR.into(),
            size,
            diff_id: staged.diff_id(),
            tar_size: staged.tar_size,
        };
        Ok(NewLayer {
            staged,
            blob,
            lease,
        })
    }

    /// A container's read-write layer (an overlay upper dir) as a layer.
    pub fn layer_from_dir(&self, upper: &Path) -> Result<NewLayer> {
        let upper = upper.to_path_buf();
        self.create_layer(move |w| berth_snapshots::write_layer_tar(&upper, w).map(|_| ()))
    }

    /// Make an image: the parent's layers plus `c.layer`, with a config
    /// built as Docker's commit builds it (see the module doc). Returns the
    /// new image ID.
    pub fn commit_image(&self, c: ImageCommit) -> Result<Digest> {
        let tag = match c.tag.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => {
                let rf = Reference::parse(t)?;
                if rf.digest.is_some() {
                    return Err(Error::invalid(
                        "refusing to create a tag with a digest reference",
                    ));
                }
                Some(rf.with_default_tag().to_string())
            }
            None => None,
        };
        let (parent, parent_records) = match &c.parent {
            Some(name) => {
                let (rec, _) = self.meta.read(|r| resolve_with(r, name))?;
                let diffs: Vec<DiffId> = rec.layers.iter().map(|l| l.diff_id).collect();
                let records = self.meta.read(|r| {
                    ChainId::chain(&diffs)
                        .iter()
                        .map(|ch| {
                            r.layer(ch)?.ok_or_else(|| {
                                Error::internal(format!("image {} has no layer {ch}", rec.id))
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })?;
                let cfg: Value = serde_json::from_slice(&self.content.read(&rec.id, MAX_JSON)?)
                    .map_err(|e| Error::internal(format!("image config {}: {e}", rec.id)))?;
                (Some((rec, cfg)), records)
            }
            None => (None, Vec::new()),
        };
        let layer = c.layer.filter(|l| !l.is_empty());
        let empty = layer.is_none();

        let mut diff_ids: Vec<DiffId> = parent_records.iter().map(|r| r.diff_id).collect();
        let mut blobs: Vec<LayerBlob> = parent
            .as_ref()
            .map(|(rec, _)| rec.layers.clone())
            .unwrap_or_default();
        let mut records = parent_records;
        if let Some(l) = &layer {
            diff_ids.push(l.blob.diff_id);
            let chain = *ChainId::chain(&diff_ids)
                .last()
                .expect("one layer at least");
            records.push(LayerRecord {
                v: 1,
                chain_id: chain,
                diff_id: l.blob.diff_id,
                parent: records.last().map(|r| r.chain_id),
                size: l.staged.size,
            });
            blobs.push(l.blob.clone());
        }

        let now = now_rfc3339();
        let pcfg = parent.as_ref().map(|(_, v)| v);
        let mut history: Vec<Value> = pcfg
            .and_then(|p| p["history"].as_array().cloned())
            .unwrap_or_default();
        if history.is_empty() {
            // A parent without history: one entry per layer, so that
            // `history` lines stay matched with layers.
            history = (0..diff_ids.len() - usize::from(!empty))
                .map(|_| json!({}))
                .collect();
        }
        let mut h = Map::new();
        h.insert("created".into(), json!(now));
        if !c.history.author.is_empty() {
            h.insert("author".into(), json!(c.history.author));
        }
        h.insert("created_by".into(), json!(c.history.created_by));
        if !c.history.comment.is_empty() {
            h.insert("comment".into(), json!(c.history.comment));
        }
        if empty {
            h.insert("empty_layer".into(), json!(true));
        }
        history.push(Value::Object(h));

        // Sorted keys, as Docker writes image configs.
        let mut doc: BTreeMap<String, Value> = BTreeMap::new();
        let inherit = |k: &str| pcfg.map(|p| p[k].clone()).filter(|v| !v.is_null());
        doc.insert(
            "architecture".into(),
            inherit("architecture").unwrap_or_else(|| json!(host_arch())),
        );
        doc.insert("os".into(), inherit("os").unwrap_or_else(|| json!("linux")));
        for k in ["variant", "os.version", "os.features"] {
            if let Some(v) = inherit(k) {
                doc.insert(k.into(), v);
            }
        }
        if !c.history.author.is_empty() {
            doc.insert("author".into(), json!(c.history.author));
        }
        doc.insert("config".into(), c.config);
        if let Some((id, cc)) = c.container {
            doc.insert("container".into(), json!(id));
            doc.insert("container_config".into(), cc);
        }
        doc.insert("created".into(), json!(now));
        doc.insert("history".into(), Value::Array(history));
        doc.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
        let bytes = serde_json::to_vec(&doc).expect("json");
        let config = crate::ImageConfig::parse(&bytes)?;

        let lease = self.leases.create(Duration::from_secs(600));
        let id = self.content.put(&bytes, None, |d| lease.hold_blob(d))?;
        if let (Some(l), Some(r)) = (layer, records.last()) {
            let NewLayer {
                staged,
                lease: layer_lease,
                ..
            } = l;
            layer_lease.hold_layer(&r.chain_id);
            self.layers.commit(staged, &r.chain_id)?;
            let tags: Vec<String> = tag.into_iter().collect();
            let parent_id = parent.map(|(rec, _)| rec.id);
            let out = self.record_image(id, &config, blobs, records, &tags, None, parent_id)?;
            drop(layer_lease);
            return Ok(out.id);
        }
        let tags: Vec<String> = tag.into_iter().collect();
        let parent_id = parent.map(|(rec, _)| rec.id);
        Ok(self
            .record_image(id, &config, blobs, records, &tags, None, parent_id)?
            .id)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_tar_digest() {
        let d = berth_types::Digest::of(&[0u8; 1024]);
        assert_eq!(d.to_string(), super::EMPTY_LAYER_DIFF_ID);
    }
}
