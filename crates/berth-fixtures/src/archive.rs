//! Archive writers: `docker save` (25+ and pre-25) and OCI image layouts.
//!
//! Each archive is first laid out as a [`Plan`] (name → entry, in Go's
//! directory-walk order, which is what docker's tars have) and then written.
//! Entry bodies may be streamed, so a plan can describe archives far larger
//! than memory.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};

use anyhow::{Context, bail};
use berth_types::{ChainId, DiffId, Digest, Reference};
use serde_json::{Value, json};

use crate::image::{
    BuiltImage, MT_OCI_INDEX, MT_OCI_LAYER, MT_OCI_MANIFEST, descriptor, oci_manifest, to_json,
};
use crate::tarw::{Entry, TarWriter};

/// The `oci-layout` file, byte for byte as docker writes it.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion": "1.0.0"}"#;

/// Which archive format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save` of docker 25+: an OCI layout plus `manifest.json` and `repositories`.
    DockerSave,
    /// `docker save` before docker 25: `<layerid>/layer.tar`, `<config>.json`, `manifest.json`.
    Legacy,
    /// A pure OCI image layout (no `manifest.json`), layers compressed as built.
    Oci,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "docker-save" | "docker" => ArchiveFormat::DockerSave,
            "legacy" | "docker-legacy" => ArchiveFormat::Legacy,
            "oci" => ArchiveFormat::Oci,
            _ => bail!("unknown format {s:?} (docker-save, legacy, oci)"),
        })
    }
}

/// Writes `images` in `format`.
pub fn write_archive<W: Write + ?Sized>(
    format: ArchiveFormat,
    w: &mut W,
    images: &[(BuiltImage, Vec<String>)],
) -> anyhow::Result<()> {
    match format {
        ArchiveFormat::DockerSave => write_docker_save_archive(w, images),
        ArchiveFormat::Legacy => write_legacy_docker_save_archive(w, images),
        ArchiveFormat::Oci => write_oci_layout_archive(w, images),
    }
}

/// Writes a docker 25+ `docker save` archive: `blobs/sha256/<hex>` for every
/// config, OCI manifest, per-layer legacy v1 JSON and uncompressed layer
/// (layer blob name = diff ID), then `index.json` (one descriptor per tag,
/// annotated with `io.containerd.image.name` and
/// `org.opencontainers.image.ref.name`), `manifest.json`, `oci-layout` and
/// `repositories` (`{"busybox":{"latest":"<top layer diff ID hex>"}}`, as
/// docker writes it). Tags are references such as `busybox:latest`.
pub fn write_docker_save_archive<W: Write + ?Sized>(
    w: &mut W,
    images: &[(BuiltImage, Vec<String>)],
) -> anyhow::Result<()> {
    docker_save_plan(save_images(images)?)?.write(w)?;
    Ok(())
}

/// [`write_docker_save_archive`] into memory. Panics on an invalid tag.
pub fn docker_save_archive(images: &[(BuiltImage, Vec<String>)]) -> Vec<u8> {
    let mut out = Vec::new();
    write_docker_save_archive(&mut out, images).expect("docker save archive");
    out
}

/// Writes a pre-25 `docker save` archive: `<v1 id>/{VERSION,json,layer.tar}`
/// per layer (a layer already written under another v1 ID becomes a symlink
/// `../<id>/layer.tar`, as docker does), `<config hex>.json`, `manifest.json`
/// and `repositories` (`{"busybox":{"latest":"<top v1 id>"}}`).
pub fn write_legacy_docker_save_archive<W: Write + ?Sized>(
    w: &mut W,
    images: &[(BuiltImage, Vec<String>)],
) -> anyhow::Result<()> {
    legacy_plan(save_images(images)?)?.write(w)?;
    Ok(())
}

/// [`write_legacy_docker_save_archive`] into memory. Panics on an invalid tag.
pub fn legacy_docker_save_archive(images: &[(BuiltImage, Vec<String>)]) -> Vec<u8> {
    let mut out = Vec::new();
    write_legacy_docker_save_archive(&mut out, images).expect("legacy docker save archive");
    out
}

/// Writes a pure OCI image layout: `blobs/sha256/*` (config, compressed
/// layers as built, manifest), `index.json` with one descriptor per tag
/// annotated only with `org.opencontainers.image.ref.name` = the tag part
/// (`latest`), and `oci-layout`.
pub fn write_oci_layout_archive<W: Write + ?Sized>(
    w: &mut W,
    images: &[(BuiltImage, Vec<String>)],
) -> anyhow::Result<()> {
    let mut plan = Plan::default();
    plan.dir("blobs");
    plan.dir("blobs/sha256");
    let mut index = Vec::new();
    for (img, tags) in images {
        for (d, bytes, _) in &img.blobs {
            plan.file(&blob_path(d), Body::Bytes(Cow::Borrowed(bytes)));
        }
        plan.file(
            &blob_path(&img.manifest_digest),
            Body::Bytes(Cow::Borrowed(&img.manifest_json)),
        );
        let desc = descriptor(
            MT_OCI_MANIFEST,
            &img.manifest_digest,
            img.manifest_json.len() as u64,
        );
        if tags.is_empty() {
            index.push(desc.clone());
        }
        for t in tags {
            let r = parse_tag(t)?;
            let mut d = desc.clone();
            d["annotations"] = json!({"org.opencontainers.image.ref.name": r.tag});
            index.push(d);
        }
    }
    plan.file("index.json", Body::owned(oci_index(index)));
    plan.file("oci-layout", Body::Bytes(Cow::Borrowed(OCI_LAYOUT)));
    plan.write(w)?;
    Ok(())
}

/// [`write_oci_layout_archive`] into memory. Panics on an invalid tag.
pub fn oci_layout_archive(images: &[(BuiltImage, Vec<String>)]) -> Vec<u8> {
    let mut out = Vec::new();
    write_oci_layout_archive(&mut out, images).expect("oci layout archive");
    out
}

// ---------------------------------------------------------------------------
// Plans

pub(crate) type StreamFn<'a> = Box<dyn Fn(&mut dyn Write) -> io::Result<()> + 'a>;

/// A file's content: bytes, or a generator of exactly `size` bytes.
pub(crate) enum Body<'a> {
    Bytes(Cow<'a, [u8]>),
    Stream { size: u64, write: StreamFn<'a> },
}

impl<'a> Body<'a> {
    pub(crate) fn owned(v: Vec<u8>) -> Body<'a> {
        Body::Bytes(Cow::Owned(v))
    }
    fn size(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Stream { size, .. } => *size,
        }
    }
}

pub(crate) enum Node<'a> {
    Dir,
    File(Body<'a>),
    Symlink(String),
}

/// Archive entries keyed by path components, so iteration is Go's
/// `filepath.Walk` order (a directory's children right after it).
#[derive(Default)]
pub(crate) struct Plan<'a> {
    entries: BTreeMap<Vec<String>, (String, Node<'a>)>,
}

fn key(name: &str) -> Vec<String> {
    name.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

impl<'a> Plan<'a> {
    pub(crate) fn dir(&mut self, name: &str) {
        self.entries
            .entry(key(name))
            .or_insert_with(|| (format!("{name}/"), Node::Dir));
    }
    /// Adds a file unless one of that name is already planned.
    pub(crate) fn file(&mut self, name: &str, body: Body<'a>) {
        self.entries
            .entry(key(name))
            .or_insert_with(|| (name.to_string(), Node::File(body)));
    }
    pub(crate) fn symlink(&mut self, name: &str, target: &str) {
        self.entries
            .entry(key(name))
            .or_insert_with(|| (name.to_string(), Node::Symlink(target.to_string())));
    }
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        self.entries.remove(&key(name)).is_some()
    }
    /// Replaces (or adds) a file's bytes.
    pub(crate) fn replace(&mut self, name: &str, bytes: Vec<u8>) {
        self.entries.insert(
            key(name),
            (name.to_string(), Node::File(Body::owned(bytes))),
        );
    }
    pub(crate) fn bytes(&self, name: &str) -> Option<&[u8]> {
        match self.entries.get(&key(name)) {
            Some((_, Node::File(Body::Bytes(b)))) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn write<W: Write + ?Sized>(self, w: &mut W) -> io::Result<()> {
        let mut t = TarWriter::new(w);
        for (_, (name, node)) in self.entries {
            match node {
                Node::Dir => t.entry(&Entry::dir(&name, 0o755))?,
                Node::Symlink(target) => t.entry(&Entry::symlink(&name, &target))?,
                Node::File(Body::Bytes(b)) => t.entry(&Entry::file(&name, 0o644, &b))?,
                Node::File(Body::Stream { size, write }) => {
                    t.file_stream(&Entry::file(&name, 0o644, &[]), size, |w| write(w))?
                }
            }
        }
        t.finish()?.flush()
    }
}

pub(crate) fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn oci_index(manifests: Vec<Value>) -> Vec<u8> {
    to_json(&json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests}))
}

/// `busybox` → `docker.io/library/busybox:latest`; digests are refused.
pub(crate) fn parse_tag(t: &str) -> anyhow::Result<Reference> {
    let r = Reference::parse(t)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("tag {t:?}"))?
        .with_default_tag();
    if r.digest.is_some() {
        bail!("tag {t:?}: a saved image is named by tag, not digest");
    }
    Ok(r)
}

// ---------------------------------------------------------------------------
// docker save

pub(crate) struct SaveLayer<'a> {
    pub diff_id: DiffId,
    pub body: Body<'a>,
}

pub(crate) struct SaveImage<'a> {
    pub config_json: Cow<'a, [u8]>,
    pub layers: Vec<SaveLayer<'a>>,
    pub tags: Vec<Reference>,
}

fn save_images(images: &[(BuiltImage, Vec<String>)]) -> anyhow::Result<Vec<SaveImage<'_>>> {
    images
        .iter()
        .map(|(img, tags)| {
            Ok(SaveImage {
                config_json: Cow::Borrowed(&img.config_json),
                layers: img
                    .layers
                    .iter()
                    .map(|l| SaveLayer {
                        diff_id: l.diff_id,
                        body: Body::Bytes(Cow::Borrowed(&l.uncompressed)),
                    })
                    .collect(),
                tags: tags
                    .iter()
                    .map(|t| parse_tag(t))
                    .collect::<anyhow::Result<_>>()?,
            })
        })
        .collect()
}

fn empty_container_config() -> Value {
    json!({
        "Hostname": "", "Domainname": "", "User": "",
        "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
        "Tty": false, "OpenStdin": false, "StdinOnce": false,
        "Env": null, "Cmd": null, "Image": "", "Volumes": null,
        "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null,
    })
}

/// Docker's legacy per-layer v1 image JSON and IDs (`v1.CreateID`): the
/// top layer carries the image's config, the others only a zero `created`.
fn v1_layers(cfg: &Value, diff_ids: &[DiffId]) -> Vec<(String, Vec<u8>)> {
    let chain = ChainId::chain(diff_ids);
    let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(diff_ids.len());
    for (i, chain_id) in chain.iter().enumerate() {
        let mut v1 = if i + 1 == diff_ids.len() {
            let mut v = json!({
                "created": cfg["created"],
                "container_config": empty_container_config(),
                "config": cfg["config"],
                "architecture": cfg["architecture"],
            });
            if v["config"].is_null() {
                v.as_object_mut().unwrap().remove("config");
            }
            v
        } else {
            json!({"created": "1970-01-01T00:00:00Z", "container_config": empty_container_config()})
        };
        let parent = out.last().map(|(id, _)| id.clone());
        let mut for_id = v1.clone();
        for_id["layer_id"] = json!(chain_id.to_string());
        if let Some(p) = &parent {
            for_id["parent"] = json!(format!("sha256:{p}"));
        }
        let id = Digest::of(&to_json(&for_id)).hex();
        v1["id"] = json!(id);
        if let Some(p) = &parent {
            v1["parent"] = json!(p);
        }
        v1["os"] = cfg["os"].clone();
        out.push((id, to_json(&v1)));
    }
    out
}

fn json_line(v: &Value) -> Vec<u8> {
    let mut b = to_json(v);
    b.push(b'\n');
    b
}

pub(crate) fn docker_save_plan(images: Vec<SaveImage<'_>>) -> anyhow::Result<Plan<'_>> {
    let mut plan = Plan::default();
    plan.dir("blobs");
    plan.dir("blobs/sha256");
    let mut index = Vec::new();
    let mut manifest = Vec::new();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for img in images {
        let cfg: Value = serde_json::from_slice(&img.config_json).context("image config")?;
        let cfg_digest = Digest::of(&img.config_json);
        let diff_ids: Vec<DiffId> = img.layers.iter().map(|l| l.diff_id).collect();
        let Some(top) = diff_ids.last().copied() else {
            bail!("empty export - not implemented (image has no layers)");
        };
        let sizes: Vec<u64> = img.layers.iter().map(|l| l.body.size()).collect();
        let mut layer_sources = serde_json::Map::new();
        let mut layer_paths = Vec::new();
        for ((d, s), (_, v1)) in diff_ids.iter().zip(&sizes).zip(v1_layers(&cfg, &diff_ids)) {
            plan.file(&blob_path(&Digest::of(&v1)), Body::owned(v1));
            layer_sources.insert(d.to_string(), descriptor(MT_OCI_LAYER, &d.0, *s));
            layer_paths.push(blob_path(&d.0));
        }
        for l in img.layers {
            plan.file(&blob_path(&l.diff_id.0), l.body);
        }
        let (m, md) = oci_manifest(&cfg_digest, img.config_json.len() as u64, &diff_ids, &sizes);
        let desc = descriptor(MT_OCI_MANIFEST, &md, m.len() as u64);
        plan.file(&blob_path(&md), Body::owned(m));
        plan.file(&blob_path(&cfg_digest), Body::Bytes(img.config_json));

        let mut repo_tags = Vec::new();
        for r in &img.tags {
            let tag = r.tag.clone().unwrap_or_default();
            repos
                .entry(r.familiar_name())
                .or_default()
                .insert(tag.clone(), top.0.hex());
            repo_tags.push(r.familiar());
            let mut d = desc.clone();
            d["annotations"] = json!({
                "io.containerd.image.name": r.to_string(),
                "org.opencontainers.image.ref.name": tag,
            });
            index.push(d);
        }
        if img.tags.is_empty() {
            index.push(desc);
        }
        manifest.push(json!({
            "Config": blob_path(&cfg_digest),
            "RepoTags": if repo_tags.is_empty() { Value::Null } else { json!(repo_tags) },
            "Layers": layer_paths,
            "LayerSources": layer_sources,
        }));
    }
    plan.file("index.json", Body::owned(oci_index(index)));
    plan.file("manifest.json", Body::owned(json_line(&json!(manifest))));
    plan.file("oci-layout", Body::Bytes(Cow::Borrowed(OCI_LAYOUT)));
    if !repos.is_empty() {
        plan.file("repositories", Body::owned(json_line(&json!(repos))));
    }
    Ok(plan)
}

fn legacy_plan(images: Vec<SaveImage<'_>>) -> anyhow::Result<Plan<'_>> {
    let mut plan = Plan::default();
    let mut manifest = Vec::new();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // diff ID → the v1 ID under which its layer.tar was written.
    let mut written: BTreeMap<DiffId, String> = BTreeMap::new();
    for img in images {
        let cfg: Value = serde_json::from_slice(&img.config_json).context("image config")?;
        let cfg_digest = Digest::of(&img.config_json);
        let diff_ids: Vec<DiffId> = img.layers.iter().map(|l| l.diff_id).collect();
        if diff_ids.is_empty() {
            bail!("empty export - not implemented (image has no layers)");
        }
        let v1 = v1_layers(&cfg, &diff_ids);
        let mut layer_paths = Vec::new();
        for (l, (id, json)) in img.layers.into_iter().zip(v1.iter()) {
            plan.dir(id);
            plan.file(&format!("{id}/VERSION"), Body::Bytes(Cow::Borrowed(b"1.0")));
            plan.file(&format!("{id}/json"), Body::owned(json.clone()));
            let tar = format!("{id}/layer.tar");
            match written.get(&l.diff_id) {
                Some(first) if first != id => plan.symlink(&tar, &format!("../{first}/layer.tar")),
                Some(_) => {}
                None => {
                    plan.file(&tar, l.body);
                    written.insert(l.diff_id, id.clone());
                }
            }
            layer_paths.push(tar);
        }
        plan.file(
            &format!("{}.json", cfg_digest.hex()),
            Body::Bytes(img.config_json),
        );
        let top = &v1.last().expect("non-empty").0;
        let mut repo_tags = Vec::new();
        for r in &img.tags {
            let tag = r.tag.clone().unwrap_or_default();
            repos
                .entry(r.familiar_name())
                .or_default()
                .insert(tag, top.clone());
            repo_tags.push(r.familiar());
        }
        manifest.push(json!({
            "Config": format!("{}.json", cfg_digest.hex()),
            "RepoTags": if repo_tags.is_empty() { Value::Null } else { json!(repo_tags) },
            "Layers": layer_paths,
        }));
    }
    plan.file("manifest.json", Body::owned(json_line(&json!(manifest))));
    if !repos.is_empty() {
        plan.file("repositories", Body::owned(json_line(&json!(repos))));
    }
    Ok(plan)
}

/// A docker-save plan of in-memory images, for the corrupt fixtures to edit.
pub(crate) fn docker_save_plan_of(images: &[(BuiltImage, Vec<String>)]) -> Plan<'_> {
    docker_save_plan(save_images(images).expect("valid tags")).expect("docker save plan")
}
