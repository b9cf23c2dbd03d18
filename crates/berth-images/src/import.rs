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
        self.record_image(id, &config, vec![layer], vec![record], &tags, None, None)
    }
}

/// The instructions `docker commit --change` takes.
const COMMIT_CHANGES: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The config of an image committed from a container, as Docker's commit
/// makes it: `changes` (Dockerfile instructions) applied to `base` (the
/// config the client sent, or else the container's), then what is still
/// unset taken from the container's `Config`.
pub fn commit_config(base: &Value, changes: &[String], container: &Value) -> Result<Value> {
    let mut cfg = base.as_object().cloned().unwrap_or_default();
    let mut cmd_set = false;
    for c in changes {
        let instr = c
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if instr.is_empty() {
            continue;
        }
        if !COMMIT_CHANGES.contains(&instr.as_str()) {
            return Err(Error::invalid(format!(
                "{} is not a valid change command",
                instr.to_lowercase()
            )));
        }
        apply_change(&mut cfg, c)?;
        match instr.as_str() {
            "CMD" => cmd_set = true,
            // As Docker's ENTRYPOINT: a CMD not set in the same build is cleared.
            "ENTRYPOINT" if !cmd_set => {
                cfg.insert("Cmd".into(), Value::Null);
            }
            _ => {}
        }
    }
    merge_config(&mut cfg, container);
    Ok(Value::Object(cfg))
}

fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

/// Docker's `merge(userConf, imageConf)`: fills what `cfg` leaves unset
/// from `from`.
fn merge_config(cfg: &mut Map<String, Value>, from: &Value) {
    for k in ["User", "WorkingDir", "StopSignal"] {
        if empty(cfg.get(k)) && !empty(from.get(k)) {
            cfg.insert(k.into(), from[k].clone());
        }
    }
    for k in ["ExposedPorts", "Volumes", "Labels"] {
        if let Some(src) = from[k].as_object() {
            let dst = cfg.entry(k).or_insert_with(|| json!({}));
            if !dst.is_object() {
                *dst = json!({});
            }
            let dst = dst.as_object_mut().expect("object");
            for (p, v) in src {
                if k != "Volumes" && dst.contains_key(p) {
                    continue;
                }
                dst.insert(p.clone(), v.clone());
            }
        }
    }
    if let Some(src) = from["Env"].as_array() {
        let dst = cfg.entry("Env").or_insert_with(|| json!([]));
        if !dst.is_array() {
            *dst = json!([]);
        }
        let dst = dst.as_array_mut().expect("array");
        let key = |e: &Value| {
            e.as_str()
                .map(|s| s.split_once('=').map_or(s, |(k, _)| k).to_string())
        };
        for e in src {
            if !dst.iter().any(|d| key(d) == key(e)) {
                dst.push(e.clone());
            }
        }
    }
    if empty(cfg.get("Entrypoint")) {
        if empty(cfg.get("Cmd")) {
            cfg.insert("Cmd".into(), from["Cmd"].clone());
        }
        if cfg.get("Entrypoint").is_none_or(Value::is_null) {
            cfg.insert("Entrypoint".into(), from["Entrypoint"].clone());
        }
    }
    if !empty(from.get("Healthcheck")) {
        match cfg.get_mut("Healthcheck").and_then(Value::as_object_mut) {
            None => {
                cfg.insert("Healthcheck".into(), from["Healthcheck"].clone());
            }
            Some(h) => {
                for k in [
                    "Test",
                    "Interval",
                    "Timeout",
                    "StartPeriod",
                    "StartInterval",
                    "Retries",
                ] {
                    if (empty(h.get(k)) || h.get(k) == Some(&json!(0)))
                        && let Some(v) = from["Healthcheck"].get(k)
                    {
                        h.insert(k.into(), v.clone());
                    }
                }
            }
        }
    }
}

/// `HEALTHCHECK [--interval=D] [--timeout=D] [--start-period=D]
/// [--start-interval=D] [--retries=N] CMD ...` or `HEALTHCHECK NONE`.
fn healthcheck(rest: &str) -> Result<Value> {
    let mut h = Map::new();
    let mut rest = rest.trim();
    while let Some(opt) = rest.strip_prefix("--") {
        let (flag, tail) = opt.split_once(char::is_whitespace).unwrap_or((opt, ""));
        let (name, val) = flag
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("missing a value on flag: --{flag}")))?;
        let key = match name {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => "Retries",
            _ => return Err(Error::invalid(format!("unknown flag: --{name}"))),
        };
        let v = if key == "Retries" {
            json!(
                val.parse::<i64>()
                    .map_err(|_| Error::invalid(format!("invalid value for --retries: {val}")))?
            )
        } else {
            json!(
                go_duration_ns(val)
                    .ok_or_else(|| Error::invalid(format!("time: invalid duration {val:?}")))?
            )
        };
        h.insert(key.into(), v);
        rest = tail.trim_start();
    }
    let (kind, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    match kind.to_ascii_uppercase().as_str() {
        "NONE" if cmd.trim().is_empty() => return Ok(json!({"Test": ["NONE"]})),
        "CMD" => {}
        _ => {
            return Err(Error::invalid(format!(
                "Unknown type {kind:?} in HEALTHCHECK (try CMD)"
            )));
        }
    }
    let cmd = cmd.trim();
    let test = match serde_json::from_str::<Vec<String>>(cmd) {
        Ok(v) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v);
            t
        }
        Err(_) => vec!["CMD-SHELL".to_string(), cmd.to_string()],
    };
    let mut out = Map::new();
    out.insert("Test".into(), json!(test));
    out.extend(h);
    Ok(Value::Object(out))
}

/// A Go duration (`30s`, `1m30s`, `1.5h`, `500ms`) in nanoseconds.
fn go_duration_ns(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
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
            // As Docker's ENV: a variable already set is replaced in place.
            for (k, v) in key_values(rest)? {
                let entry = json!(format!("{k}={v}"));
                let key_of = |e: &Value| {
                    e.as_str()
                        .map(|e| e.split_once('=').map_or(e, |(ek, _)| ek).to_string())
                };
                match env
                    .iter()
                    .position(|e| key_of(e).as_deref() == Some(k.as_str()))
                {
                    Some(i) => env[i] = entry,
                    None => env.push(entry),
                }
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
        "HEALTHCHECK" => {
            cfg.insert("Healthcheck".into(), healthcheck(rest)?);
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
        assert_eq!(v["Env"], json!(["A=3", "B=two words"]));
        assert_eq!(v["WorkingDir"], json!("/srv"));
        assert_eq!(v["Labels"], json!({"x": "y"}));
        assert_eq!(v["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert!(apply_change(&mut Map::new(), "RUN true").is_err());
    }
}

#[cfg(test)]
mod commit_tests {
    use super::*;

    fn container() -> Value {
        json!({
            "Hostname": "abc", "User": "", "Env": ["PATH=/bin", "A=1"],
            "Cmd": ["sh"], "Entrypoint": null, "WorkingDir": "/w",
            "Labels": {"from": "container"}, "ExposedPorts": {"80/tcp": {}},
            "Image": "busybox"
        })
    }

    #[test]
    fn commit_config_like_docker() {
        let c = container();
        let changes = vec![
            "CMD [\"echo\", \"hi\"]".to_string(),
            "ENV A=2 B=3".to_string(),
            "LABEL x=y".to_string(),
            "EXPOSE 53/udp".to_string(),
            "USER nobody".to_string(),
            "HEALTHCHECK --interval=5s --retries=2 CMD true".to_string(),
        ];
        let cfg = commit_config(&c, &changes, &c).unwrap();
        assert_eq!(cfg["Cmd"], json!(["echo", "hi"]));
        assert_eq!(cfg["Env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(cfg["Labels"], json!({"from": "container", "x": "y"}));
        assert_eq!(cfg["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(cfg["User"], "nobody");
        assert_eq!(cfg["WorkingDir"], "/w");
        assert_eq!(cfg["Hostname"], "abc");
        assert_eq!(
            cfg["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000i64, "Retries": 2})
        );

        // ENTRYPOINT without CMD clears the command, as Docker's does.
        let cfg = commit_config(&c, &["ENTRYPOINT [\"/bin/top\"]".into()], &c).unwrap();
        assert_eq!(cfg["Entrypoint"], json!(["/bin/top"]));
        assert_eq!(cfg["Cmd"], Value::Null);

        // A config sent by the client is completed from the container's.
        let cfg = commit_config(&json!({"Env": ["Z=9"]}), &[], &c).unwrap();
        assert_eq!(cfg["Env"], json!(["Z=9", "PATH=/bin", "A=1"]));
        assert_eq!(cfg["Cmd"], json!(["sh"]));
        assert_eq!(cfg["WorkingDir"], "/w");

        for bad in ["RUN true", "FROM busybox", "STOPSIGNAL 9", "COPY a b"] {
            let e = commit_config(&c, &[bad.into()], &c).unwrap_err();
            let word = bad.split(' ').next().unwrap().to_lowercase();
            assert_eq!(e.message, format!("{word} is not a valid change command"));
        }
        assert!(commit_config(&c, &["HEALTHCHECK --bogus=1 CMD x".into()], &c).is_err());
        assert_eq!(
            commit_config(&c, &["HEALTHCHECK NONE".into()], &c).unwrap()["Healthcheck"],
            json!({"Test": ["NONE"]})
        );
        assert_eq!(go_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration_ns("10x"), None);
    }
}
