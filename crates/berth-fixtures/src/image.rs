//! The image builder: layers + config → config JSON, compressed blobs and an
//! OCI manifest, all content-addressed.

use std::io::Write;

use berth_types::{ChainId, DiffId, Digest};
use serde_json::{Value, json};

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `created` time of every ready-made image (and of `ImageSpec::new`).
pub const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";

/// The PATH docker's busybox image sets.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a layer blob is compressed in the OCI form of the image (docker-save
/// archives always carry layers uncompressed, as docker does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => MT_OCI_LAYER,
            Compression::Gzip => MT_OCI_LAYER_GZIP,
            Compression::Zstd => MT_OCI_LAYER_ZSTD,
        }
    }
    /// The docker schema2 layer media type, if docker has one.
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some(MT_DOCKER_LAYER),
            Compression::Gzip => Some(MT_DOCKER_LAYER_GZIP),
            Compression::Zstd => None,
        }
    }
    /// Compresses deterministically (gzip: no name, mtime 0, level 6; zstd level 3).
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::GzBuilder::new().mtime(0).write(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::new(6),
                );
                e.write_all(data).expect("gzip into memory");
                e.finish().expect("gzip into memory")
            }
            Compression::Zstd => zstd::encode_all(data, 3).expect("zstd into memory"),
        }
    }
}

/// One layer to build: its uncompressed tar and how to compress it.
#[derive(Clone, Debug)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub compression: Compression,
    /// The history entry's `created_by`.
    pub created_by: String,
}

impl Layer {
    pub fn new(tar: Vec<u8>, compression: Compression, created_by: impl Into<String>) -> Self {
        Layer {
            tar,
            compression,
            created_by: created_by.into(),
        }
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    /// The image config's `config` object (`Cmd`, `Env`, `WorkingDir`, `Labels`, …).
    pub config: Value,
    /// RFC 3339, used for the image and every history entry.
    pub created: String,
    /// `amd64`, `arm64`, … ([`host_architecture`] by default).
    pub architecture: String,
    pub os: String,
    /// `created_by` of history entries with `empty_layer: true`, appended
    /// after the layers' entries (e.g. `/bin/sh -c #(nop)  CMD ["sh"]`).
    pub empty_layer_history: Vec<String>,
}

impl ImageSpec {
    /// A spec with `created` = [`FIXED_CREATED`], the host's architecture and os `linux`.
    pub fn new(layers: Vec<Layer>, config: Value) -> Self {
        ImageSpec {
            layers,
            config,
            created: FIXED_CREATED.to_string(),
            architecture: host_architecture().to_string(),
            os: "linux".to_string(),
            empty_layer_history: Vec::new(),
        }
    }
}

/// One built layer.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub diff_id: DiffId,
    /// The uncompressed tar (what docker-save archives carry).
    pub uncompressed: Vec<u8>,
    pub compression: Compression,
    /// Digest and size of the compressed blob (in [`BuiltImage::blobs`]).
    pub digest: Digest,
    pub size: u64,
    /// OCI media type of the compressed blob.
    pub media_type: &'static str,
}

/// A built image. `blobs[0]` is the config; `blobs[1..]` are the compressed
/// layers in order (the manifest itself is in `manifest_json`).
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub config_json: Vec<u8>,
    /// sha256 of `config_json`: the image ID.
    pub config_digest: Digest,
    pub diff_ids: Vec<DiffId>,
    pub layers: Vec<BuiltLayer>,
    /// (digest, bytes, media type) of config and compressed layers.
    pub blobs: Vec<(Digest, Vec<u8>, &'static str)>,
    /// OCI image manifest referencing the compressed layers.
    pub manifest_json: Vec<u8>,
    pub manifest_digest: Digest,
}

impl BuiltImage {
    /// The image ID (= config digest).
    pub fn id(&self) -> Digest {
        self.config_digest
    }
    /// Chain IDs of every layer prefix.
    pub fn chain_ids(&self) -> Vec<ChainId> {
        ChainId::chain(&self.diff_ids)
    }
    /// The parsed config JSON.
    pub fn config(&self) -> Value {
        serde_json::from_slice(&self.config_json).expect("we wrote it")
    }
    /// A Docker schema2 manifest over the same blobs, for registries/clients
    /// that want one. `None` if a layer is zstd (docker has no media type for it).
    pub fn docker_manifest(&self) -> Option<(Vec<u8>, Digest)> {
        let mut layers = Vec::new();
        for l in &self.layers {
            layers.push(descriptor(
                l.compression.docker_media_type()?,
                &l.digest,
                l.size,
            ));
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": descriptor(MT_DOCKER_CONFIG, &self.config_digest, self.config_json.len() as u64),
            "layers": layers,
        });
        let bytes = to_json(&m);
        let d = Digest::of(&bytes);
        Some((bytes, d))
    }
    /// The OCI manifest docker-save archives carry: same config, layers
    /// uncompressed (`application/vnd.oci.image.layer.v1.tar`, digest = diff ID).
    pub fn uncompressed_manifest(&self) -> (Vec<u8>, Digest) {
        let sizes: Vec<u64> = self
            .layers
            .iter()
            .map(|l| l.uncompressed.len() as u64)
            .collect();
        oci_manifest(
            &self.config_digest,
            self.config_json.len() as u64,
            &self.diff_ids,
            &sizes,
        )
    }
}

/// An OCI descriptor object.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// An OCI manifest over uncompressed layers (digest = diff ID).
pub(crate) fn oci_manifest(
    config: &Digest,
    config_size: u64,
    diff_ids: &[DiffId],
    sizes: &[u64],
) -> (Vec<u8>, Digest) {
    let layers: Vec<Value> = diff_ids
        .iter()
        .zip(sizes)
        .map(|(d, s)| descriptor(MT_OCI_LAYER, &d.0, *s))
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": descriptor(MT_OCI_CONFIG, config, config_size),
        "layers": layers,
    });
    let bytes = to_json(&m);
    let d = Digest::of(&bytes);
    (bytes, d)
}

/// The image config JSON for a spec whose layers have these diff IDs.
pub(crate) fn config_json(
    spec_meta: &ImageSpec,
    created_by: &[String],
    diff_ids: &[DiffId],
) -> Vec<u8> {
    let mut history: Vec<Value> = created_by
        .iter()
        .map(|c| json!({"created": spec_meta.created, "created_by": c}))
        .collect();
    for c in &spec_meta.empty_layer_history {
        history.push(json!({"created": spec_meta.created, "created_by": c, "empty_layer": true}));
    }
    let cfg = json!({
        "architecture": spec_meta.architecture,
        "os": spec_meta.os,
        "created": spec_meta.created,
        "config": spec_meta.config,
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "history": history,
    });
    to_json(&cfg)
}

/// Builds an image: hashes, compresses, writes config and manifest.
pub fn build_image(spec: &ImageSpec) -> BuiltImage {
    let mut layers = Vec::with_capacity(spec.layers.len());
    let mut layer_blobs = Vec::with_capacity(spec.layers.len());
    for l in &spec.layers {
        let diff_id = DiffId(Digest::of(&l.tar));
        let blob = l.compression.compress(&l.tar);
        let digest = Digest::of(&blob);
        let media_type = l.compression.oci_media_type();
        layers.push(BuiltLayer {
            diff_id,
            uncompressed: l.tar.clone(),
            compression: l.compression,
            digest,
            size: blob.len() as u64,
            media_type,
        });
        layer_blobs.push((digest, blob, media_type));
    }
    let diff_ids: Vec<DiffId> = layers.iter().map(|l| l.diff_id).collect();
    let created_by: Vec<String> = spec.layers.iter().map(|l| l.created_by.clone()).collect();
    let config_json = config_json(spec, &created_by, &diff_ids);
    let config_digest = Digest::of(&config_json);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": descriptor(MT_OCI_CONFIG, &config_digest, config_json.len() as u64),
        "layers": layers.iter().map(|l| descriptor(l.media_type, &l.digest, l.size)).collect::<Vec<_>>(),
    });
    let manifest_json = to_json(&manifest);
    let manifest_digest = Digest::of(&manifest_json);

    let mut blobs = vec![(config_digest, config_json.clone(), MT_OCI_CONFIG)];
    blobs.extend(layer_blobs);
    BuiltImage {
        config_json,
        config_digest,
        diff_ids,
        layers,
        blobs,
        manifest_json,
        manifest_digest,
    }
}

/// Compact JSON with object keys sorted, independent of serde_json's
/// `preserve_order` feature (so digests do not change with the build graph).
pub fn to_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("string"));
                out.push(b':');
                write_json(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(x, out);
            }
            out.push(b']');
        }
        other => out.extend(serde_json::to_vec(other).expect("scalar")),
    }
}

/// The OCI architecture name of this machine (`amd64`, `arm64`, …).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// RFC 3339 (UTC, seconds) of a Unix time.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tiny_tar(content: &[u8]) -> Vec<u8> {
        let mut t = crate::tarw::TarWriter::new(Vec::new());
        t.entry(&crate::tarw::Entry::file("f", 0o644, content))
            .unwrap();
        t.finish().unwrap()
    }

    #[test]
    fn rfc3339_formats_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(crate::FIXED_MTIME), FIXED_CREATED);
        assert_eq!(rfc3339(951_782_400 + 3_661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn json_keys_are_sorted() {
        let v = json!({"b": 1, "a": {"z": [1, "x\"y"], "c": null}});
        assert_eq!(to_json(&v), br#"{"a":{"c":null,"z":[1,"x\"y"]},"b":1}"#);
    }

    #[test]
    fn built_image_digests_are_consistent() {
        let layers = vec![
            Layer::new(tiny_tar(b"one"), Compression::None, "ADD one"),
            Layer::new(tiny_tar(b"two"), Compression::Gzip, "ADD two"),
            Layer::new(tiny_tar(b"three"), Compression::Zstd, "ADD three"),
        ];
        let mut spec = ImageSpec::new(layers.clone(), json!({"Cmd": ["sh"]}));
        spec.empty_layer_history.push("CMD [\"sh\"]".into());
        let img = build_image(&spec);

        assert_eq!(img.config_digest, Digest::of(&img.config_json));
        assert_eq!(img.manifest_digest, Digest::of(&img.manifest_json));
        for (d, bytes, _) in &img.blobs {
            assert_eq!(*d, Digest::of(bytes));
        }
        for (i, l) in img.layers.iter().enumerate() {
            assert_eq!(l.diff_id, DiffId(Digest::of(&layers[i].tar)));
            assert_eq!(img.diff_ids[i], l.diff_id);
            let blob = &img.blobs[i + 1].1;
            assert_eq!(l.size, blob.len() as u64);
            let mut plain = Vec::new();
            match l.compression {
                Compression::None => plain = blob.clone(),
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(&blob[..])
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                Compression::Zstd => plain = zstd::decode_all(&blob[..]).unwrap(),
            }
            assert_eq!(DiffId(Digest::of(&plain)), l.diff_id);
        }

        let cfg = img.config();
        assert_eq!(cfg["rootfs"]["type"], "layers");
        let diff_ids: Vec<String> = img.diff_ids.iter().map(|d| d.to_string()).collect();
        assert_eq!(cfg["rootfs"]["diff_ids"], json!(diff_ids));
        assert_eq!(cfg["architecture"], host_architecture());
        assert_eq!(cfg["os"], "linux");
        assert_eq!(cfg["created"], FIXED_CREATED);
        assert_eq!(cfg["config"]["Cmd"], json!(["sh"]));
        let hist = cfg["history"].as_array().unwrap();
        assert_eq!(hist.len(), 4);
        assert_eq!(
            hist.iter()
                .filter(|h| h.get("empty_layer").is_none())
                .count(),
            3
        );
        assert_eq!(hist[3]["empty_layer"], true);

        let m: Value = serde_json::from_slice(&img.manifest_json).unwrap();
        assert_eq!(m["mediaType"], MT_OCI_MANIFEST);
        assert_eq!(m["config"]["digest"], img.config_digest.to_string());
        assert_eq!(m["config"]["mediaType"], MT_OCI_CONFIG);
        let mts: Vec<&str> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap())
            .collect();
        assert_eq!(mts, [MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD]);
        for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
            assert_eq!(l["digest"], img.layers[i].digest.to_string());
            assert_eq!(l["size"], img.layers[i].size);
        }
        // zstd has no docker media type.
        assert!(img.docker_manifest().is_none());
        let (um, ud) = img.uncompressed_manifest();
        assert_eq!(ud, Digest::of(&um));
        let um: Value = serde_json::from_slice(&um).unwrap();
        assert_eq!(um["layers"][2]["digest"], img.diff_ids[2].to_string());
        assert_eq!(um["layers"][2]["mediaType"], MT_OCI_LAYER);
    }

    #[test]
    fn docker_manifest_uses_docker_media_types() {
        let spec = ImageSpec::new(
            vec![Layer::new(tiny_tar(b"x"), Compression::Gzip, "ADD x")],
            json!({}),
        );
        let img = build_image(&spec);
        let (bytes, d) = img.docker_manifest().unwrap();
        assert_eq!(d, Digest::of(&bytes));
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(m["mediaType"], MT_DOCKER_MANIFEST);
        assert_eq!(m["config"]["mediaType"], MT_DOCKER_CONFIG);
        assert_eq!(m["layers"][0]["mediaType"], MT_DOCKER_LAYER_GZIP);
        assert_eq!(m["layers"][0]["digest"], img.layers[0].digest.to_string());
    }
}
