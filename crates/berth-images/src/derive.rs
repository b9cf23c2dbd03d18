//! An image made from a prefix of another one: the first layers and
//! history entries of `source` with a new config (Docker's
//! `restoreCachedImage`, how the legacy builder reuses the steps of a
//! `--cache-from` image that has no parent chain on this host, e.g. one
//! that was pulled). Every layer is already here; only a config blob and
//! an image row are written.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_metadata::MetaRead;
use berth_types::{ChainId, DiffId, Digest, Error, Result};
use serde_json::{Value, json};

use crate::{ImageConfig, ImageService, MAX_JSON};

impl ImageService {
    /// A new image with `source`'s first `layers` layers and `history`
    /// history entries, `config` as its `config`, and `parent` as its
    /// parent. Returns its ID.
    pub fn derive_image(
        &self,
        parent: Option<&Digest>,
        source: &Digest,
        layers: usize,
        history: usize,
        config: Value,
    ) -> Result<Digest> {
        let src = self
            .meta
            .read(|r| r.image(source))?
            .ok_or_else(|| Error::not_found(format!("No such image: {source}")))?;
        let src_cfg: Value = serde_json::from_slice(&self.content.read(source, MAX_JSON)?)
            .map_err(|e| Error::internal(format!("image config {source}: {e}")))?;
        let hist = src_cfg["history"].as_array().cloned().unwrap_or_default();
        if layers > src.layers.len() || history > hist.len() {
            return Err(Error::invalid(format!(
                "image {source} has {} layers and {} history entries, not {layers} and {history}",
                src.layers.len(),
                hist.len()
            )));
        }
        let blobs = src.layers[..layers].to_vec();
        let diffs: Vec<DiffId> = blobs.iter().map(|l| l.diff_id).collect();
        let records = self.meta.read(|r| {
            ChainId::chain(&diffs)
                .iter()
                .map(|c| {
                    r.layer(c)?
                        .ok_or_else(|| Error::internal(format!("image {source} has no layer {c}")))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut doc: BTreeMap<String, Value> = BTreeMap::new();
        for k in [
            "architecture",
            "os",
            "variant",
            "os.version",
            "os.features",
            "author",
        ] {
            if !src_cfg[k].is_null() {
                doc.insert(k.into(), src_cfg[k].clone());
            }
        }
        let created = hist
            .get(history.wrapping_sub(1))
            .and_then(|h| h["created"].as_str())
            .map(String::from)
            .unwrap_or_else(crate::now_rfc3339);
        doc.insert("config".into(), config);
        doc.insert("created".into(), json!(created));
        doc.insert("history".into(), Value::Array(hist[..history].to_vec()));
        doc.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diffs}),
        );
        let bytes = serde_json::to_vec(&doc).expect("json");
        let cfg = ImageConfig::parse(&bytes)?;
        let lease = self.leases.create(Duration::from_secs(600));
        let id = self.content.put(&bytes, None, |d| lease.hold_blob(d))?;
        let out = self.record_image(id, &cfg, blobs, records, &[], None, parent.copied())?;
        Ok(out.id)
    }
}
