//! `docker import`: a rootfs tarball (plain, gzip or zstd) becomes a
//! one-layer image, with Dockerfile-style `changes` applied to its config.

use std::io::Read;
use std::time::Duration;

use berth_metadata::{LayerBlob, LayerRecord};
use berth_snapshots::Compression;
use berth_types::{ChainId, Error, Reference, Result};
use serde_json::{Map, Value, json};

use crate::config::{History, RootFs};
use crate::load::LoadedImage;
use crate::{ImageConfig, ImageService, now_rfc3339};

#[derive(Debug, Default, Clone)]
pub struct ImportOptions {
    /// `repo[:tag]` to tag the new image with.
    pub reference: Option<String>,
    /// Dockerfile instructions: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR.
    pub changes: Vec<String>,
    pub message: String,
    /// `os[/arch[/variant]]` the image is for; the host's when `None`.
    pub platform: Option<String>,
}

impl ImageService {
    pub fn import<R: Read>(&self, tarball: R, opts: &ImportOptions) -> Result<LoadedImage> {
        let tag = match &opts.reference {
            Some(r) if !r.is_empty() => {
                let rf = Reference::parse(r)?;
                if rf.digest.is_some() {
                    return Err(Error::invalid("cannot import digest reference"));
                }
                Some(rf.with_default_tag().to_string())
            }
            _ => None,
        };
        let platform = match opts.platform.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => berth_distribution::Platform::parse(p)?,
            None => berth_distribution::Platform::host(),
        };
        let mut cfg = Map::new();
        for c in &opts.changes {
            apply_change(&mut cfg, c)?;
        }
        let lease = self.leases.create(Duration::from_secs(3600));
        let mut ingest = self.content.ingest()?;
        let mut staged = self
            .layers
            .stage_tee(tarball, &mut ingest)?
            .map_err(|e| e.context("import"))?;
        let (blob, size) = ingest.commit_with(None, |d| lease.hold_blob(d))?;
        staged.set_blob_digest(blob);
        let diff_id = staged.diff_id();
        let now = now_rfc3339();
        let comment = if opts.message.is_empty() {
            "Imported from -".to_string()
        } else {
            opts.message.clone()
        };
        let config = ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            created: Some(now.clone()),
            comment: Some(comment.clone()),
            config: Some(Value::Object(cfg)),
            rootfs: RootFs {
                typ: "layers".into(),
                diff_ids: vec![diff_id],
            },
            history: vec![History {
                created: Some(now),
                comment: Some(comment),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = serde_json::to_vec(&config).expect("json");
        let id = self.content.put(&bytes, None, |d| lease.hold_blob(d))?;
        let chain = ChainId(diff_id.0);
        let media_type = match staged.compression {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        let layer = LayerBlob {
            digest: blob,
            media_type: media_type.into(),
            size,
            diff_id,
            tar_size: staged.tar_size,
        };
        let record = LayerRecord {
            v: 1,
            chain_id: chain,
            diff_id,
            parent: None,
            size: staged.size,
        };
        lease.hold_layer(&chain);
        self.layers.commit(staged, &chain)?;
        let tags: Vec<String> = tag.into_iter().collect();
        self.commit_image(id, &config, vec![layer], vec![record], &tags, None)
    }
}

/// Apply one Dockerfile instruction to an image config's `config` object.
fn apply_change(cfg: &mut Map<String, Value>, change: &str) -> Result<()> {
    let change = change.trim();
    let (instr, rest) = change
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let rest = rest.trim();
    let list = |rest: &str, shell: bool| -> Value {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => json!(v),
            Err(_) if shell => json!(["/bin/sh", "-c", rest]),
            Err(_) => json!(rest.split_whitespace().collect::<Vec<_>>()),
        }
    };
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => {
            cfg.insert("Cmd".into(), list(rest, true));
        }
        "ENTRYPOINT" => {
            cfg.insert("Entrypoint".into(), list(rest, true));
        }
        "ENV" => {
            let env = cfg
                .entry("Env")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("Env is a list");
            for (k, v) in key_values(rest)? {
                env.retain(|e| {
                    e.as_str().and_then(|e| e.split_once('=')).map(|(ek, _)| ek) != Some(k.as_str())
                });
                env.push(json!(format!("{k}={v}")));
            }
        }
        "LABEL" => {
            let labels = cfg
                .entry("Labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("Labels is a map");
            for (k, v) in key_values(rest)? {
                labels.insert(k, json!(v));
            }
        }
        "EXPOSE" => {
            let ports = cfg
                .entry("ExposedPorts")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("map");
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                ports.insert(p, json!({}));
            }
        }
        "VOLUME" => {
            let vols = cfg
                .entry("Volumes")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("map");
            let paths: Vec<String> = serde_json::from_str(rest)
                .unwrap_or_else(|_| rest.split_whitespace().map(String::from).collect());
            for p in paths {
                vols.insert(p, json!({}));
            }
        }
        "USER" => {
            cfg.insert("User".into(), json!(rest));
        }
        "WORKDIR" => {
            cfg.insert("WorkingDir".into(), json!(rest));
        }
        "ONBUILD" => {
            cfg.entry("OnBuild")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("list")
                .push(json!(rest));
        }
        "STOPSIGNAL" => {
            cfg.insert("StopSignal".into(), json!(rest));
        }
        "" => {}
        other => {
            return Err(Error::invalid(format!(
                "{} is not a valid change command",
                other.to_lowercase()
            )));
        }
    }
    Ok(())
}

/// `K=V K2="V 2"` or the legacy `K V` form.
fn key_values(s: &str) -> Result<Vec<(String, String)>> {
    if !s.contains('=') {
        let (k, v) = s
            .split_once(char::is_whitespace)
            .ok_or_else(|| Error::invalid(format!("missing value in {s:?}")))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(Error::invalid(format!(
                "syntax error - can't find = in {key:?}. Must be of the form: name=value"
            )));
        }
        let mut val = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, '\\') => {
                    chars.next();
                    if let Some(n) = chars.peek() {
                        val.push(*n);
                    }
                }
                (_, c) => val.push(c),
            }
            chars.next();
        }
        out.push((key, val));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_docker() {
        let mut c = Map::new();
        apply_change(&mut c, r#"CMD ["sh"]"#).unwrap();
        apply_change(&mut c, "ENTRYPOINT echo hi").unwrap();
        apply_change(&mut c, "ENV A=1 B=\"two words\"").unwrap();
        apply_change(&mut c, "ENV A 3").unwrap();
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        apply_change(&mut c, "LABEL x=y").unwrap();
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        let v = Value::Object(c);
        assert_eq!(v["Cmd"], json!(["sh"]));
        assert_eq!(v["Entrypoint"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(v["Env"], json!(["B=two words", "A=3"]));
        assert_eq!(v["WorkingDir"], json!("/srv"));
        assert_eq!(v["Labels"], json!({"x": "y"}));
        assert_eq!(v["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert!(apply_change(&mut Map::new(), "RUN true").is_err());
    }
}
