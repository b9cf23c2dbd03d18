//! Garbage collection: online (while pushes go on) and offline with
//! `berth-registry gc [--dry-run]`; the grace window protects fresh blobs
//! and idle uploads expire.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_types::Digest;
use common::{BIN, Registry, client, random_image, skopeo_ok};

fn push(reg: &Registry, dir: &Path, img: &berth_fixtures::BuiltImage, dst: &str) {
    let archive = dir.join(format!("{}.tar", img.manifest_digest.hex()));
    if !archive.exists() {
        std::fs::write(
            &archive,
            berth_fixtures::oci_layout_archive(&[(img.clone(), vec!["x:1".into()])]),
        )
        .unwrap();
    }
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{}/{dst}", reg.addr),
    ]);
}

fn on_disk(root: &Path, d: &Digest) -> bool {
    root.join("blobs/sha256")
        .join(&d.hex()[..2])
        .join(d.hex())
        .exists()
}

/// Config and layers (skopeo may rewrite the manifest, so not its digest).
fn blob_digests(img: &berth_fixtures::BuiltImage) -> Vec<Digest> {
    img.blobs.iter().map(|b| b.0).collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_gc_collects_while_pushes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    common::write_file(&cfg, "[gc]\ninterval_secs = 1\ngrace_secs = 2\n");
    let reg = Registry::start(&["--config", cfg.to_str().unwrap()]);
    let (a, b) = (
        random_image(50_000, 1, "amd64"),
        random_image(50_000, 2, "amd64"),
    );
    push(&reg, dir.path(), &a, "a/img:1");
    push(&reg, dir.path(), &b, "b/img:1");
    // an orphan blob: uploaded, never referenced
    let c = client();
    let orphan = b"orphan".to_vec();
    let od = Digest::of(&orphan);
    let r = c
        .post(format!("{}/v2/c/blobs/uploads/?digest={od}", reg.url))
        .body(orphan)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // the grace window: a fresh orphan survives the next run
    std::thread::sleep(Duration::from_millis(1200));
    assert!(on_disk(&reg.root, &od), "younger than the grace window");
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}/a/img:1", reg.addr),
    ]);

    // keep pushing and pulling while collections run
    let root = reg.root.clone();
    for i in 0..6 {
        let img = random_image(30_000, 100 + i, "amd64");
        push(&reg, dir.path(), &img, &format!("busy/img:{i}"));
        skopeo_ok(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/b/img:1", reg.addr),
        ]);
        std::thread::sleep(Duration::from_millis(400));
    }
    wait_for(
        "a's blobs and the orphan to be collected",
        Duration::from_secs(15),
        || blob_digests(&a).iter().all(|d| !on_disk(&root, d)) && !on_disk(&root, &od),
    );
    for d in blob_digests(&b) {
        assert!(on_disk(&root, &d), "b is still referenced");
    }
    for i in 0..6 {
        let img = random_image(30_000, 100 + i, "amd64");
        for d in blob_digests(&img) {
            assert!(
                on_disk(&root, &d),
                "pushed during collection and tagged: kept"
            );
        }
        let tmp = dir.path().join(format!("pull{i}"));
        skopeo_ok(&[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{}/busy/img:{i}", reg.addr),
            &format!("dir:{}", tmp.display()),
        ]);
    }
    reg.verify_blobs();
    let m = c
        .get(format!("{}/metrics", reg.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = m
        .lines()
        .find(|l| l.starts_with("berth_registry_gc_blobs_deleted_total "))
        .unwrap();
    let n: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(n >= 4, "{line}");
    // the emptied repositories leave the catalog
    wait_for(
        "empty repositories to be dropped",
        Duration::from_secs(10),
        || {
            let cat = std::process::Command::new("curl")
                .args(["-s", &format!("{}/v2/_catalog", reg.url)])
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&cat.stdout).unwrap();
            !v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "a/img" || r == "c")
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_uploads_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    common::write_file(
        &cfg,
        "[gc]\ninterval_secs = 1\ngrace_secs = 1\nupload_expiry_secs = 1\n",
    );
    let reg = Registry::start(&["--config", cfg.to_str().unwrap()]);
    let c = client();
    let r = c
        .post(format!("{}/v2/u/blobs/uploads/", reg.url))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = c
        .patch(format!("{}{loc}", reg.url))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let root = reg.root.clone();
    wait_for("the idle upload to expire", Duration::from_secs(10), || {
        std::fs::read_dir(root.join("uploads")).unwrap().count() == 0
    });
    let r = c.get(format!("{}{loc}", reg.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn offline_gc_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut reg = Registry::start_in(&root, dir.path(), &[]);
    let (a, b) = (
        random_image(40_000, 3, "amd64"),
        random_image(40_000, 4, "amd64"),
    );
    push(&reg, dir.path(), &a, "a/img:1");
    push(&reg, dir.path(), &b, "b/img:1");
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}/a/img:1", reg.addr),
    ]);
    // the store is locked while the server runs
    let out = Command::new(BIN)
        .args(["gc", "--root", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reg.stop().success());

    // default grace: everything is fresh, nothing goes
    let out = Command::new(BIN)
        .args(["gc", "--root", root.to_str().unwrap(), "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would delete 0 blobs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // link times have one-second resolution
    std::thread::sleep(Duration::from_millis(1100));
    let out = Command::new(BIN)
        .args([
            "gc",
            "--root",
            root.to_str().unwrap(),
            "--dry-run",
            "--grace",
            "0",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success());
    for d in blob_digests(&a) {
        assert!(
            stdout.contains(&format!("would delete blob {d}")),
            "{stdout}"
        );
        assert!(on_disk(&root, &d), "dry run deletes nothing");
    }
    let out = Command::new(BIN)
        .args(["gc", "--root", root.to_str().unwrap(), "--grace", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in blob_digests(&a) {
        assert!(!on_disk(&root, &d));
    }
    for d in blob_digests(&b) {
        assert!(on_disk(&root, &d));
    }
    let reg = Registry::start_in(&root, dir.path(), &[]);
    skopeo_ok(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{}/b/img:1", reg.addr),
        &format!("dir:{}/b", dir.path().display()),
    ]);
    reg.verify_blobs();
}
