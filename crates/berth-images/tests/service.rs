//! The image service against real archives from berth-fixtures, on a
//! temporary data root (root is needed for extraction: owners, whiteouts).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use berth_fixtures as fx;
use berth_images::{DeleteItem, ImageService};
use berth_metadata::MetaStore;

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

fn none() -> HashMap<String, Vec<String>> {
    HashMap::new()
}

#[test]
fn load_list_tag_remove_and_collect() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let archive = fx::busybox_archive("busybox:latest");
    let loaded = svc.load(&archive[..], &mut |_| {}).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].tags, vec!["busybox:latest"]);
    let id = loaded[0].id;
    assert_eq!(id, fx::busybox_image().config_digest);
    let list = svc.list(&none()).unwrap();
    assert_eq!(list.len(), 1);
    assert!(
        dir.path()
            .join("layers")
            .read_dir()
            .unwrap()
            .next()
            .is_some()
    );

    // Loading again changes nothing and unpacks nothing twice.
    svc.load(&archive[..], &mut |_| {}).unwrap();
    assert_eq!(svc.list(&none()).unwrap().len(), 1);
    assert_eq!(count(&dir.path().join("layers")), 1);

    svc.tag("busybox", "other/name", Some("v1")).unwrap();
    assert_eq!(
        svc.list(&none()).unwrap()[0].repo_tags,
        vec!["busybox:latest", "other/name:v1"]
    );
    // By ID with two tags: must be forced.
    let err = svc.remove(&id.hex()[..12], false, false).unwrap_err();
    assert!(err.message.contains("must be forced"), "{err}");
    assert_eq!(
        svc.remove("other/name:v1", false, false).unwrap(),
        vec![DeleteItem::Untagged("other/name:v1".into())]
    );
    let items = svc.remove("busybox", false, false).unwrap();
    assert_eq!(items[0], DeleteItem::Untagged("busybox:latest".into()));
    assert_eq!(items[1], DeleteItem::Deleted(id.to_string()));
    assert!(svc.list(&none()).unwrap().is_empty());
    assert_eq!(
        count(&dir.path().join("layers")),
        0,
        "layer dirs left after delete"
    );
    assert_eq!(
        count(&dir.path().join("content/sha256")),
        0,
        "blobs left after delete"
    );
}

#[test]
fn every_archive_format_loads_to_the_same_image() {
    if !is_root() {
        return;
    }
    let img = fx::busybox_image();
    let set = [(img.clone(), vec!["busybox:latest".to_string()])];
    for (name, archive) in [
        ("docker-save", fx::docker_save_archive(&set)),
        ("legacy", fx::legacy_docker_save_archive(&set)),
        ("oci", fx::oci_layout_archive(&set)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let loaded = svc
            .load(&archive[..], &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded[0].id, img.config_digest, "{name}");
        // An OCI layout whose ref.name is only a tag names no repository:
        // the image loads untagged, as with Docker's containerd store.
        let by = if name == "oci" {
            img.config_digest.to_string()
        } else {
            "busybox".to_string()
        };
        assert_eq!(svc.resolve(&by).unwrap().id, img.config_digest, "{name}");
    }
}

#[test]
fn save_then_load_round_trips() {
    if !is_root() {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let svc = service(a.path());
    let ml = fx::multilayer_image();
    svc.load(
        &fx::docker_save_archive(&[(ml.clone(), vec!["ml:1".into()])])[..],
        &mut |_| {},
    )
    .unwrap();
    let mut out = Vec::new();
    svc.save(&["ml:1".to_string()], &mut out).unwrap();
    let b = tempfile::tempdir().unwrap();
    let svc2 = service(b.path());
    let loaded = svc2.load(&out[..], &mut |_| {}).unwrap();
    assert_eq!(loaded[0].id, ml.config_digest);
    assert_eq!(loaded[0].tags, vec!["ml:1"]);
    assert_eq!(
        svc2.history("ml:1").unwrap().len(),
        svc.history("ml:1").unwrap().len()
    );
}

#[test]
fn malicious_and_corrupt_archives_leave_nothing() {
    if !is_root() {
        return;
    }
    for name in fx::MALICIOUS_NAMES {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let res = svc.load(&fx::malicious_archive(name)[..], &mut |_| {});
        for p in fx::MALICIOUS_HOST_PATHS {
            assert!(
                !Path::new(p).exists(),
                "{name}: {p} was created on the host"
            );
        }
        if res.is_err() {
            assert!(
                svc.list(&none()).unwrap().is_empty(),
                "{name}: partial image listed"
            );
            assert_eq!(
                count(&dir.path().join("layers")),
                0,
                "{name}: layer dirs left"
            );
            assert_eq!(
                count(&dir.path().join("content/sha256")),
                0,
                "{name}: blobs left"
            );
            assert_eq!(count(&dir.path().join("tmp")), 0, "{name}: staging left");
        }
    }
    for (name, archive) in fx::corrupt_archives() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let err = svc.load(&archive[..], &mut |_| {}).expect_err(name);
        assert!(err.message.starts_with("invalid archive"), "{name}: {err}");
        assert!(svc.list(&none()).unwrap().is_empty(), "{name}");
        assert_eq!(
            count(&dir.path().join("content/sha256")),
            0,
            "{name}: blobs left"
        );
        assert_eq!(count(&dir.path().join("tmp")), 0, "{name}: staging left");
    }
}

#[test]
fn import_applies_changes_and_prune_reclaims() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let rootfs = fx::busybox_rootfs_tar().unwrap();
    let opts = berth_images::ImportOptions {
        reference: Some("imp:1".into()),
        changes: vec![r#"CMD ["sh"]"#.into(), "ENV A=1".into()],
        message: String::new(),
        platform: None,
    };
    let img = svc.import(&rootfs[..], &opts).unwrap();
    let d = svc.inspect("imp:1").unwrap();
    assert_eq!(d.summary.record.id, img.id);
    let cfg = d.config.config.unwrap();
    assert_eq!(cfg["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(cfg["Env"], serde_json::json!(["A=1"]));
    // Re-importing under the same tag leaves the first image dangling.
    let opts2 = berth_images::ImportOptions {
        changes: vec!["ENV A=2".into()],
        ..opts
    };
    svc.import(&rootfs[..], &opts2).unwrap();
    let dangling = HashMap::from([("dangling".to_string(), vec!["true".to_string()])]);
    assert_eq!(svc.list(&dangling).unwrap().len(), 1);
    let (items, _) = svc.prune(&none()).unwrap();
    assert!(items.contains(&DeleteItem::Deleted(img.id.to_string())));
    assert_eq!(svc.list(&none()).unwrap().len(), 1);
    // The layer is shared with the surviving image, so it stays.
    assert_eq!(count(&dir.path().join("layers")), 1);
}

#[test]
fn multilayer_merges_as_docker_would() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path());
    let ml = fx::multilayer_image();
    svc.load(
        &fx::docker_save_archive(&[(ml, vec!["ml:1".into()])])[..],
        &mut |_| {},
    )
    .unwrap();
    let d = svc.inspect("ml:1").unwrap();
    let lower: Vec<String> = d
        .layer_dirs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let merged = dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("lowerdir={}", lower.join(":")),
        ])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(st.success(), "overlay mount failed");
    let res = fx::check_tree(&merged, &fx::multilayer_expectations());
    let _ = std::process::Command::new("umount").arg(&merged).status();
    if let Err(problems) = res {
        panic!("merged view differs:\n{}", problems.join("\n"));
    }
}
