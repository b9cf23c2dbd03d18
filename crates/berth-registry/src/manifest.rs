//! Manifest validation: which media types are accepted, what a manifest must
//! contain, and what it references (which the metadata store then checks
//! inside the transaction that stores it).

use berth_types::Digest;
use serde_json::{Map, Value};

use crate::error::{Code, RegError, RegResult};
use crate::meta::RefCheck;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const MT_DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Default limit of a manifest body (the spec asks registries to accept at least 4 MB).
pub const DEFAULT_MAX_MANIFEST: usize = 4 << 20;

/// The manifest media types this registry stores, for `Accept` headers.
pub const ACCEPTED: [&str; 4] = [
    MT_OCI_MANIFEST,
    MT_OCI_INDEX,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_LIST,
];

/// What the store needs to know about a valid manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub media_type: String,
    /// What must exist in the repository for the manifest to be accepted.
    pub checks: Vec<RefCheck>,
    /// Every digest the manifest keeps alive (config, layers, children).
    pub refs: Vec<Digest>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

fn invalid(msg: impl Into<String>) -> RegError {
    RegError::new(Code::ManifestInvalid, msg)
}

/// A descriptor's digest, size and media type.
struct Desc {
    media_type: String,
    digest: Digest,
    size: u64,
    foreign: bool,
}

fn descriptor(v: &Value, what: &str) -> RegResult<Desc> {
    let o = v
        .as_object()
        .ok_or_else(|| invalid(format!("{what}: a descriptor must be an object")))?;
    let media_type = o
        .get("mediaType")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(format!("{what}: descriptor without mediaType")))?
        .to_string();
    let ds = o
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what}: descriptor without digest")))?;
    let digest: Digest = ds
        .parse()
        .map_err(|e| RegError::new(Code::ManifestInvalid, format!("{what}: digest {ds:?}: {e}")))?;
    let size = o
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("{what}: descriptor without a valid size")))?;
    let foreign = o
        .get("urls")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty());
    Ok(Desc {
        media_type,
        digest,
        size,
        foreign,
    })
}

fn content_type_base(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Validates a manifest body pushed with `content_type`.
pub fn parse(body: &[u8], content_type: Option<&str>) -> RegResult<Parsed> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| invalid("manifest is not a JSON object"))?;
    let body_mt = match o.get("mediaType") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid("mediaType must be a string")),
    };
    let ct = content_type
        .map(content_type_base)
        .filter(|c| !c.is_empty());
    if matches!(body_mt, Some(MT_DOCKER_SCHEMA1 | MT_DOCKER_SCHEMA1_SIGNED))
        || matches!(ct, Some(MT_DOCKER_SCHEMA1 | MT_DOCKER_SCHEMA1_SIGNED))
        || o.get("schemaVersion").and_then(Value::as_u64) == Some(1)
    {
        return Err(invalid("docker schema1 manifests are not supported"));
    }
    if o.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    if let (Some(b), Some(c)) = (body_mt, ct)
        && ACCEPTED.contains(&c)
        && b != c
    {
        return Err(invalid(format!(
            "mediaType {b} does not match Content-Type {c}"
        )));
    }
    let media_type = match (body_mt, ct) {
        (Some(b), _) => b,
        (None, Some(c)) if ACCEPTED.contains(&c) => c,
        _ if o.contains_key("manifests") => MT_OCI_INDEX,
        _ if o.contains_key("config") => MT_OCI_MANIFEST,
        _ => return Err(invalid("cannot tell the manifest type: no mediaType")),
    };
    let mut p = Parsed {
        media_type: media_type.to_string(),
        checks: Vec::new(),
        refs: Vec::new(),
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    match media_type {
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => {
            let cfg = descriptor(
                o.get("config")
                    .ok_or_else(|| invalid("image manifest without config"))?,
                "config",
            )?;
            let layers = o
                .get("layers")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("image manifest without a layers array"))?;
            if media_type == MT_DOCKER_MANIFEST && layers.is_empty() {
                return Err(invalid("docker image manifest without layers"));
            }
            p.checks.push(RefCheck::Blob {
                digest: cfg.digest,
                size: cfg.size,
            });
            p.refs.push(cfg.digest);
            for (i, l) in layers.iter().enumerate() {
                let l = descriptor(l, &format!("layers[{i}]"))?;
                if l.foreign {
                    continue; // non-distributable: its bytes live elsewhere
                }
                p.checks.push(RefCheck::Blob {
                    digest: l.digest,
                    size: l.size,
                });
                p.refs.push(l.digest);
            }
            p.artifact_type = match o.get("artifactType") {
                Some(Value::String(a)) if !a.is_empty() => Some(a.clone()),
                Some(Value::String(_)) | None => Some(cfg.media_type),
                Some(_) => return Err(invalid("artifactType must be a string")),
            };
        }
        MT_OCI_INDEX | MT_DOCKER_LIST => {
            let ms = o
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("index without a manifests array"))?;
            for (i, m) in ms.iter().enumerate() {
                let m = descriptor(m, &format!("manifests[{i}]"))?;
                p.checks.push(RefCheck::Manifest { digest: m.digest });
                p.refs.push(m.digest);
            }
            p.artifact_type = match o.get("artifactType") {
                Some(Value::String(a)) if !a.is_empty() => Some(a.clone()),
                Some(Value::String(_)) | None => None,
                Some(_) => return Err(invalid("artifactType must be a string")),
            };
        }
        other => {
            return Err(invalid(format!("unsupported manifest media type {other}")));
        }
    }
    if let Some(s) = o.get("subject") {
        p.subject = Some(descriptor(s, "subject")?.digest);
    }
    match o.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(a)) => {
            if a.values().any(|v| !v.is_string()) {
                return Err(invalid("annotation values must be strings"));
            }
            p.annotations = Some(a.clone());
        }
        Some(_) => return Err(invalid("annotations must be an object")),
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> String {
        Digest::of(s.as_bytes()).to_string()
    }

    fn image(extra: Value) -> Vec<u8> {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d("c"), "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d("l"), "size": 3},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "digest": d("f"), "size": 4, "urls": ["https://example.invalid/f"]}
            ]
        });
        if let Value::Object(e) = extra {
            for (k, v) in e {
                m[k] = v;
            }
        }
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn image_manifest_refs_and_artifact_type() {
        let p = parse(&image(json!({})), Some(MT_OCI_MANIFEST)).unwrap();
        assert_eq!(p.media_type, MT_OCI_MANIFEST);
        assert_eq!(p.refs.len(), 2, "foreign layers are not required");
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let p = parse(
            &image(json!({"artifactType": "application/x.sig", "subject": {"mediaType": MT_OCI_MANIFEST, "digest": d("s"), "size": 1}, "annotations": {"a": "b"}})),
            None,
        )
        .unwrap();
        assert_eq!(p.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(p.subject.unwrap().to_string(), d("s"));
        assert_eq!(p.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn index_refs_children() {
        let b = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MT_OCI_INDEX,
            "manifests": [{"mediaType": MT_OCI_MANIFEST, "digest": d("a"), "size": 9, "platform": {"os": "linux", "architecture": "arm64"}}]
        }))
        .unwrap();
        let p = parse(&b, Some(MT_OCI_INDEX)).unwrap();
        assert!(matches!(p.checks[0], RefCheck::Manifest { .. }));
        assert_eq!(p.artifact_type, None);
    }

    #[test]
    fn refuses_invalid_manifests() {
        let bad: Vec<(Vec<u8>, Option<&str>)> = vec![
            (b"not json".to_vec(), None),
            (b"[]".to_vec(), None),
            (image(json!({"schemaVersion": 1})), None),
            (image(json!({})), Some(MT_OCI_INDEX)),
            (image(json!({"mediaType": "application/x.other"})), None),
            (
                image(json!({"config": {"mediaType": "x", "digest": "sha256:abc", "size": 1}})),
                None,
            ),
            (
                image(json!({"config": {"mediaType": "x", "digest": d("c"), "size": -1}})),
                None,
            ),
            (image(json!({"layers": null})), None),
            (image(json!({"annotations": {"a": 1}})), None),
            (br#"{"schemaVersion":2}"#.to_vec(), None),
            (
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#
                    .to_vec(),
                None,
            ),
        ];
        for (b, ct) in bad {
            let e = parse(&b, ct).unwrap_err();
            assert_eq!(
                e.code,
                Code::ManifestInvalid,
                "{}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    #[test]
    fn content_type_fills_in_a_missing_media_type() {
        let mut v: Value = serde_json::from_slice(&image(json!({}))).unwrap();
        v.as_object_mut().unwrap().remove("mediaType");
        v["config"]["mediaType"] = json!("application/vnd.docker.container.image.v1+json");
        let b = serde_json::to_vec(&v).unwrap();
        let p = parse(&b, Some(&format!("{MT_DOCKER_MANIFEST}; charset=utf-8"))).unwrap();
        assert_eq!(p.media_type, MT_DOCKER_MANIFEST);
        let p = parse(&b, Some("application/octet-stream")).unwrap();
        assert_eq!(p.media_type, MT_OCI_MANIFEST);
    }
}
