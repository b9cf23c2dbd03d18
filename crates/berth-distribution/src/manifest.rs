//! Manifests and indexes: Docker v2 schema 2 and OCI, their media types,
//! and picking one platform's manifest out of an index.

use berth_types::{Digest, Error, Result};
use serde::{Deserialize, Serialize};

pub mod media {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_ND_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

    /// What berth asks a registry for, best first.
    pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

    /// Layer media types berth can unpack.
    pub fn is_layer(t: &str) -> bool {
        matches!(
            t,
            DOCKER_LAYER
                | OCI_LAYER
                | OCI_LAYER_GZIP
                | OCI_LAYER_ZSTD
                | "application/vnd.docker.image.rootfs.diff.tar"
                | "application/vnd.docker.image.rootfs.diff.tar.zstd"
        )
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// The platform this process runs on, as Go names it.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "arm" => "arm",
            other => other,
        };
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: match arch {
                "arm64" => Some("v8".into()),
                "arm" => Some("v7".into()),
                _ => None,
            },
            os_version: None,
        }
    }

    /// Parse `os[/arch[/variant]]` as Docker's `--platform`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::invalid(format!(
                "\"{s}\": unknown operating system or architecture: invalid argument"
            ))
        };
        if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let os = parts[0].to_ascii_lowercase();
        if os != "linux" {
            return Err(bad());
        }
        let host = Platform::host();
        let arch = parts
            .get(1)
            .map(|a| a.to_ascii_lowercase())
            .unwrap_or(host.architecture.clone());
        let (arch, default_variant) = match arch.as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), None),
            "aarch64" | "arm64" => ("arm64".to_string(), Some("v8")),
            "armhf" => ("arm".to_string(), Some("v7")),
            "armel" => ("arm".to_string(), Some("v6")),
            "arm" => ("arm".to_string(), Some("v7")),
            "i386" | "386" => ("386".to_string(), None),
            other => (other.to_string(), None),
        };
        let variant = parts
            .get(2)
            .map(|v| v.to_ascii_lowercase())
            .or(default_variant.map(String::from));
        Ok(Platform {
            architecture: arch,
            os,
            variant,
            os_version: None,
        })
    }

    /// Whether an image of this platform serves `want` (containerd's matcher:
    /// os and architecture equal, the variant equal when asked for).
    pub fn matches(&self, want: &Platform) -> bool {
        if self.os != want.os || self.architecture != want.architecture {
            return false;
        }
        match (&want.variant, &self.variant) {
            (None, _) => true,
            // arm64 images often carry no variant; v8 is implied
            (Some(w), None) => want.architecture == "arm64" && w == "v8",
            (Some(w), Some(v)) => w == v,
        }
    }

    pub fn display(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An image manifest (schema 2 or OCI).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    media_type: String,
    manifests: Vec<Descriptor>,
}

/// A document fetched by manifest URL.
#[derive(Clone, Debug)]
pub enum ManifestKind {
    Image(Box<Manifest>),
    /// A manifest list or OCI index.
    Index(Vec<Descriptor>),
}

/// Parse a manifest or index; `content_type` is the registry's header.
pub fn parse_manifest(content_type: &str, body: &[u8]) -> Result<ManifestKind> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("invalid manifest: {e}")))?;
    let declared = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    let t = if declared.is_empty() {
        ct.to_string()
    } else {
        declared
    };
    let schema = v.get("schemaVersion").and_then(|s| s.as_u64());
    if schema == Some(1)
        || t == media::DOCKER_SCHEMA1
        || t == media::DOCKER_SCHEMA1_SIGNED
        || ct == media::DOCKER_SCHEMA1_SIGNED
    {
        return Err(Error::invalid(
            "unsupported manifest format: Docker Image manifest version 2, schema 1 is no longer supported",
        ));
    }
    let is_index = t == media::DOCKER_LIST
        || t == media::OCI_INDEX
        || (t.is_empty() || t == "application/json") && v.get("manifests").is_some();
    let is_manifest = t == media::DOCKER_MANIFEST
        || t == media::OCI_MANIFEST
        || (t.is_empty() || t == "application/json") && v.get("config").is_some();
    if is_index {
        let ix: Index = serde_json::from_value(v)
            .map_err(|e| Error::invalid(format!("invalid manifest list: {e}")))?;
        let _ = ix.media_type;
        Ok(ManifestKind::Index(ix.manifests))
    } else if is_manifest {
        let m: Manifest = serde_json::from_value(v)
            .map_err(|e| Error::invalid(format!("invalid manifest: {e}")))?;
        for l in &m.layers {
            if !media::is_layer(&l.media_type) {
                return Err(Error::invalid(format!(
                    "unsupported media type {} of layer {}",
                    l.media_type, l.digest
                )));
            }
        }
        Ok(ManifestKind::Image(Box::new(m)))
    } else {
        Err(Error::invalid(format!(
            "unsupported manifest media type {}",
            if t.is_empty() { "(none)" } else { &t }
        )))
    }
}

/// The manifest of `want` in an index, as containerd's matcher picks it:
/// the first entry whose os, architecture and variant match.
pub fn select_platform<'a>(list: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    list.iter()
        .filter(|d| d.media_type != "application/vnd.in-toto+json")
        .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(want)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_kinds() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{D}","size":1}},"layers":[{{"mediaType":"{}","digest":"{D}","size":2}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER
        );
        assert!(matches!(
            parse_manifest("", m.as_bytes()).unwrap(),
            ManifestKind::Image(_)
        ));
        let ix = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D}","size":3,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
            media::OCI_MANIFEST
        );
        match parse_manifest(media::OCI_INDEX, ix.as_bytes()).unwrap() {
            ManifestKind::Index(l) => {
                assert_eq!(l.len(), 1);
                assert!(select_platform(&l, &Platform::parse("linux/arm64").unwrap()).is_some());
                assert!(select_platform(&l, &Platform::parse("linux/arm64/v8").unwrap()).is_some());
                assert!(select_platform(&l, &Platform::parse("linux/amd64").unwrap()).is_none());
            }
            _ => panic!("not an index"),
        }
        let bad_layer = m.replace(media::DOCKER_LAYER, "application/x-foo");
        let e = parse_manifest("", bad_layer.as_bytes()).unwrap_err();
        assert!(
            e.message
                .contains("unsupported media type application/x-foo")
        );
        let e = parse_manifest("application/x-other", b"{\"schemaVersion\":2}").unwrap_err();
        assert!(e.message.contains("unsupported manifest media type"), "{e}");
        assert!(parse_manifest("", br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
    }

    #[test]
    fn platforms() {
        assert_eq!(
            Platform::parse("linux/arm/v6").unwrap().display(),
            "linux/arm/v6"
        );
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().display(),
            "linux/amd64"
        );
        assert!(Platform::parse("windows/amd64").is_err());
        assert!(Platform::parse("linux//").is_err());
    }
}
