//! Images committed on this host: a new layer over a loaded image, a
//! metadata-only image over that, the empty layer, and garbage collection
//! of all of it (root is needed to extract layers).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use berth_fixtures as fx;
use berth_images::{HistoryEntry, ImageCommit, ImageService};
use berth_metadata::MetaStore;
use serde_json::json;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn service(root: &Path) -> ImageService {
    let meta = Arc::new(MetaStore::open(&root.join("meta.redb")).unwrap());
    ImageService::open(root, meta).unwrap()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn tar_with(
    files: &[(&str, &[u8])],
) -> impl FnOnce(&mut dyn Write) -> berth_types::Result<()> + Send {
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_vec()))
        .collect();
    move |w| {
        let mut b = tar::Builder::new(w);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, &name, &data[..])?;
        }
        b.finish()?;
        Ok(())
    }
}

#[test]
fn commit_layer_then_metadata_only_then_collect() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let base = svc
        .load(&fx::busybox_archive("busybox:latest")[..], &mut |_| {})
        .unwrap()[0]
        .id;
    let base_cfg = svc.inspect("busybox").unwrap().config;

    let layer = svc
        .create_layer(tar_with(&[("hello.txt", b"hello"), ("etc/motd", b"hi")]))
        .unwrap();
    assert!(!layer.is_empty());
    assert_eq!(layer.size(), 7);
    let diff_id = layer.diff_id();
    let id = svc
        .commit_image(ImageCommit {
            parent: Some(base.to_string()),
            layer: Some(layer),
            config: json!({"Cmd": ["cat", "/hello.txt"], "Env": ["A=1"]}),
            history: HistoryEntry {
                created_by: "sh -c echo hello > /hello.txt".into(),
                comment: "first".into(),
                author: "me <me@example.com>".into(),
            },
            container: Some(("c0ffee".into(), json!({"Cmd": ["sh"]}))),
            tag: Some("committed:v1".into()),
        })
        .unwrap();
    let d = svc.inspect("committed:v1").unwrap();
    assert_eq!(d.summary.record.id, id);
    assert_eq!(d.summary.record.parent, Some(base));
    let mut want = base_cfg.rootfs.diff_ids.clone();
    want.push(diff_id);
    assert_eq!(d.config.rootfs.diff_ids, want);
    assert_eq!(
        d.config.config.as_ref().unwrap()["Cmd"],
        json!(["cat", "/hello.txt"])
    );
    assert_eq!(d.config.author.as_deref(), Some("me <me@example.com>"));
    assert_eq!(d.config.history.len(), base_cfg.history.len() + 1);
    let h = d.config.history.last().unwrap();
    assert_eq!(h.comment.as_deref(), Some("first"));
    assert!(!h.empty_layer);
    // The new layer is the top overlay lower dir, with the files in it.
    assert_eq!(d.layer_dirs.len(), want.len());
    assert_eq!(
        std::fs::read(d.layer_dirs[0].join("hello.txt")).unwrap(),
        b"hello"
    );
    let raw: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("content/sha256").join(id.hex())).unwrap(),
    )
    .unwrap();
    assert_eq!(raw["container"], "c0ffee");
    assert_eq!(raw["container_config"]["Cmd"], json!(["sh"]));
    assert_eq!(raw["architecture"], base_cfg.architecture.as_str());
    // Docker writes config keys sorted.
    let keys: Vec<&String> = raw.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(
        d.summary.record.size,
        svc.inspect("busybox").unwrap().summary.record.size + 7
    );

    // A metadata-only image over it: same layers, an empty_layer entry.
    let meta_only = svc
        .commit_image(ImageCommit {
            parent: Some(id.to_string()),
            layer: None,
            config: json!({"Cmd": ["sh"], "Labels": {"a": "b"}}),
            history: HistoryEntry {
                created_by: "/bin/sh -c #(nop)  LABEL a=b".into(),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
    let m = svc.inspect(&meta_only.to_string()).unwrap();
    assert_eq!(m.config.rootfs.diff_ids, want);
    assert!(m.config.history.last().unwrap().empty_layer);
    assert_eq!(m.summary.repo_tags, Vec::<String>::new());
    assert_eq!(
        m.summary.record.labels.get("a").map(String::as_str),
        Some("b")
    );
    // History rows carry the IDs of the image and its local parents.
    let hist = svc.history(&meta_only.to_string()).unwrap();
    assert_eq!(hist[0].id, meta_only.to_string());
    assert_eq!(hist[0].size, 0);
    assert_eq!(hist[1].id, id.to_string());
    assert_eq!(hist[1].tags, vec!["committed:v1"]);
    assert_eq!(hist[1].size, 7);
    assert_eq!(hist[1].comment, "first");
    assert_eq!(hist[2].id, base.to_string());

    // An empty tar adds no layer either.
    let empty = svc.create_layer(tar_with(&[])).unwrap();
    assert!(empty.is_empty());
    let e = svc
        .commit_image(ImageCommit {
            parent: Some("committed:v1".into()),
            layer: Some(empty),
            config: json!({}),
            ..Default::default()
        })
        .unwrap();
    let e = svc.inspect(&e.to_string()).unwrap();
    assert_eq!(e.config.rootfs.diff_ids, want);
    assert!(e.config.history.last().unwrap().empty_layer);

    // Bad input.
    assert!(
        svc.commit_image(ImageCommit {
            parent: Some("nope:latest".into()),
            ..Default::default()
        })
        .unwrap_err()
        .message
        .contains("No such image")
    );
    assert!(
        svc.commit_image(ImageCommit {
            parent: Some("busybox".into()),
            tag: Some("Bad:Name".into()),
            ..Default::default()
        })
        .is_err()
    );

    // Everything goes when the images go.
    for img in [e.summary.record.id, meta_only] {
        svc.remove(&img.to_string(), false, false).unwrap();
    }
    svc.remove("committed:v1", false, false).unwrap();
    svc.remove("busybox", false, false).unwrap();
    svc.gc().unwrap();
    assert_eq!(count(&dir.path().join("layers")), 0);
    assert_eq!(count(&dir.path().join("content/sha256")), 0);
    assert_eq!(count(&dir.path().join("tmp")), 0);
    assert!(svc.list(&HashMap::new()).unwrap().is_empty());
}

#[test]
fn layer_from_a_directory_and_from_scratch() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let upper = dir.path().join("upper-src");
    std::fs::create_dir_all(upper.join("srv")).unwrap();
    std::fs::write(upper.join("srv/app"), b"#!/bin/sh\n").unwrap();
    let layer = svc.layer_from_dir(&upper).unwrap();
    // The same directory gives the same layer.
    let again = svc.layer_from_dir(&upper).unwrap();
    assert_eq!(layer.diff_id(), again.diff_id());
    drop(again);
    let id = svc
        .commit_image(ImageCommit {
            parent: None,
            layer: Some(layer),
            config: json!({"Cmd": ["/srv/app"]}),
            tag: Some("scratchy".into()),
            ..Default::default()
        })
        .unwrap();
    let d = svc.inspect("scratchy:latest").unwrap();
    assert_eq!(d.summary.record.id, id);
    assert_eq!(d.config.rootfs.diff_ids.len(), 1);
    assert_eq!(d.config.os, "linux");
    assert_eq!(d.summary.record.parent, None);
    assert_eq!(
        std::fs::read(d.layer_dirs[0].join("srv/app")).unwrap(),
        b"#!/bin/sh\n"
    );
}
