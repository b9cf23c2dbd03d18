//! `docker save`: the archive Docker ≥25 writes — an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…` with uncompressed layers)
//! plus Docker's `manifest.json` and `repositories`, so both `docker load`
//! of any version and OCI tools read it.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read, Write};

use berth_metadata::{ImageRecord, MetaRead};
use berth_snapshots::{Compression, decompress, detect_compression};
use berth_types::{Digest, Error, Reference, Result};
use serde_json::json;

use crate::{ImageService, MAX_JSON, familiar, resolve_with};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

impl ImageService {
    /// Resolve `names` to (image, full references to record). A bare
    /// repository name means every tag of that repository, as Docker does.
    pub fn save_set(&self, names: &[String]) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        self.meta.read(|r| {
            let tags = r.tags()?;
            let mut out: Vec<(ImageRecord, Vec<String>)> = Vec::new();
            let mut add = |rec: ImageRecord, tag: Option<String>| match out
                .iter_mut()
                .find(|(i, _)| i.id == rec.id)
            {
                Some((_, ts)) => ts.extend(tag),
                None => out.push((rec, tag.into_iter().collect())),
            };
            for name in names {
                if let Ok(rf) = Reference::parse(name)
                    && rf.tag.is_none()
                    && rf.digest.is_none()
                    && !name.contains(':')
                {
                    let prefix = format!("{}:", rf.name);
                    let repo_tags: Vec<&(String, Digest)> = tags
                        .iter()
                        .filter(|(t, _)| t.starts_with(&prefix))
                        .collect();
                    if !repo_tags.is_empty() {
                        for (t, id) in repo_tags {
                            let rec = r
                                .image(id)?
                                .ok_or_else(|| Error::internal(format!("tag {t} has no image")))?;
                            add(rec, Some(t.clone()));
                        }
                        continue;
                    }
                }
                let (rec, tag) = resolve_with(r, name)?;
                add(rec, tag);
            }
            Ok(out)
        })
    }

    /// Write a docker-save archive of `names` to `out`. Everything is resolved
    /// before the first byte is written, so a bad name fails cleanly.
    pub fn save<W: Write>(&self, names: &[String], out: W) -> Result<()> {
        self.save_resolved(&self.save_set(names)?, out)
    }

    /// Write the archive of images already resolved by [`ImageService::save_set`].
    pub fn save_resolved<W: Write>(
        &self,
        set: &[(ImageRecord, Vec<String>)],
        out: W,
    ) -> Result<()> {
        let mut tb = tar::Builder::new(out);
        let mut written: HashSet<Digest> = HashSet::new();
        let mut index = Vec::new();
        let mut manifest_json = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        dir(&mut tb, "blobs/")?;
        dir(&mut tb, "blobs/sha256/")?;
        for (rec, tags) in set {
            let mut layer_descs = Vec::new();
            let mut layer_paths = Vec::new();
            for l in &rec.layers {
                let d = l.diff_id.0;
                if written.insert(d) {
                    let f = self.content.open_blob(&l.digest)?;
                    let mut r = BufReader::with_capacity(1 << 20, f);
                    let c = detect_compression(&mut r)?;
                    let reader: Box<dyn Read> = match c {
                        Compression::None => Box::new(r),
                        _ => decompress(r, c)?,
                    };
                    file(
                        &mut tb,
                        &format!("blobs/sha256/{}", d.hex()),
                        l.tar_size,
                        reader,
                    )?;
                }
                layer_descs.push(
                    json!({"mediaType": LAYER_TYPE, "digest": d.to_string(), "size": l.tar_size}),
                );
                layer_paths.push(format!("blobs/sha256/{}", d.hex()));
            }
            let config = self.content.read(&rec.id, MAX_JSON)?;
            if written.insert(rec.id) {
                file(
                    &mut tb,
                    &format!("blobs/sha256/{}", rec.id.hex()),
                    config.len() as u64,
                    &config[..],
                )?;
            }
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": rec.id.to_string(), "size": config.len()},
                "layers": layer_descs,
            }))
            .expect("json");
            let md = Digest::of(&manifest);
            if written.insert(md) {
                file(
                    &mut tb,
                    &format!("blobs/sha256/{}", md.hex()),
                    manifest.len() as u64,
                    &manifest[..],
                )?;
            }
            let familiar_tags: Vec<String> = tags.iter().map(|t| familiar(t)).collect();
            if tags.is_empty() {
                index.push(json!({"mediaType": MANIFEST_TYPE, "digest": md.to_string(), "size": manifest.len()}));
            }
            for t in tags {
                let rf = Reference::parse(t)?;
                index.push(json!({
                    "mediaType": MANIFEST_TYPE, "digest": md.to_string(), "size": manifest.len(),
                    "annotations": {
                        "io.containerd.image.name": t,
                        "org.opencontainers.image.ref.name": rf.tag.clone().unwrap_or_default(),
                    },
                }));
                repositories
                    .entry(rf.familiar_name())
                    .or_default()
                    .insert(rf.tag.clone().unwrap_or_default(), rec.id.hex());
            }
            manifest_json.push(json!({
                "Config": format!("blobs/sha256/{}", rec.id.hex()),
                "RepoTags": if familiar_tags.is_empty() { serde_json::Value::Null } else { json!(familiar_tags) },
                "Layers": layer_paths,
            }));
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index,
        }))
        .expect("json");
        file(&mut tb, "index.json", index.len() as u64, &index[..])?;
        let mj = serde_json::to_vec(&manifest_json).expect("json");
        file(&mut tb, "manifest.json", mj.len() as u64, &mj[..])?;
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        file(&mut tb, "oci-layout", layout.len() as u64, &layout[..])?;
        if !repositories.is_empty() {
            let repos = serde_json::to_vec(&repositories).expect("json");
            file(&mut tb, "repositories", repos.len() as u64, &repos[..])?;
        }
        tb.into_inner()?.flush()?;
        Ok(())
    }
}

fn header(size: u64, mode: u32, typ: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(typ);
    h.set_mtime(0);
    h
}

fn dir<W: Write>(tb: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut h = header(0, 0o755, tar::EntryType::Directory);
    tb.append_data(&mut h, path, std::io::empty())
        .map_err(Error::from)
}

fn file<W: Write, R: Read>(tb: &mut tar::Builder<W>, path: &str, size: u64, data: R) -> Result<()> {
    let mut h = header(size, 0o644, tar::EntryType::Regular);
    tb.append_data(&mut h, path, data)
        .map_err(|e| Error::from(e).context(format!("write {path}")))
}
