//! A real client: skopeo copies images in and out (docker-archive,
//! oci-archive, OCI layouts, a multi-arch index), lists tags and deletes.

mod common;

use berth_types::Digest;
use common::{
    Registry, busybox_docker_archive, busybox_oci_archive, random_image, skopeo, skopeo_ok,
};
use serde_json::Value;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn copy_in_and_out_of_archives() {
    let reg = Registry::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let docker = busybox_docker_archive(dir.path());
    let oci = busybox_oci_archive(dir.path());
    let a = reg.addr.clone();
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", s(&oci)),
        &format!("docker://{a}/library/busybox:oci"),
    ]);
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("docker-archive:{}", s(&docker)),
        &format!("docker://{a}/library/busybox:docker"),
    ]);
    // the raw manifest skopeo pushed is what comes back
    let raw = skopeo_ok(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{a}/library/busybox:oci"),
    ])
    .stdout;
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let img = berth_fixtures::busybox_image();
    assert_eq!(m["config"]["digest"], img.config_digest.to_string());
    assert_eq!(m["layers"][0]["digest"], img.layers[0].digest.to_string());
    // what the registry serves hashes to the digest it reports
    let digest = skopeo_ok(&[
        "inspect",
        "--format",
        "{{.Digest}}",
        "--tls-verify=false",
        &format!("docker://{a}/library/busybox:oci"),
    ])
    .stdout;
    assert_eq!(
        String::from_utf8_lossy(&digest).trim(),
        Digest::of(&raw).to_string()
    );

    // out again, to every kind of destination
    for (dst, name) in [
        (
            format!("oci-archive:{}/out-oci.tar", s(dir.path())),
            "out-oci.tar",
        ),
        (
            format!("docker-archive:{}/out-docker.tar:busybox:x", s(dir.path())),
            "out-docker.tar",
        ),
        (format!("dir:{}/out-dir", s(dir.path())), "out-dir"),
    ] {
        skopeo_ok(&[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{a}/library/busybox:docker"),
            &dst,
        ]);
        assert!(dir.path().join(name).exists());
    }
    // the layer that came back is byte-identical to the one pushed
    let layer = &img.blobs[1];
    let back = std::fs::read(dir.path().join("out-dir").join(layer.0.hex()));
    if let Ok(back) = back {
        assert_eq!(Digest::of(&back), layer.0);
    }

    let tags = skopeo_ok(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{a}/library/busybox"),
    ])
    .stdout;
    let v: Value = serde_json::from_slice(&tags).unwrap();
    assert_eq!(v["Tags"], serde_json::json!(["docker", "oci"]));

    // both pushes share the busybox layer: one copy on disk, all verified
    let blobs = reg.verify_blobs();
    let mut uniq = blobs.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), blobs.len());

    // delete, then the tag is gone but the other stays
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{a}/library/busybox:docker"),
    ]);
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{a}/library/busybox:docker"),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("manifest unknown"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{a}/library/busybox:oci"),
    ]);
}

#[test]
fn copy_between_repositories_mounts() {
    let reg = Registry::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let oci = busybox_oci_archive(dir.path());
    let a = reg.addr.clone();
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", s(&oci)),
        &format!("docker://{a}/one/busybox:1"),
    ]);
    // registry to registry: skopeo mounts or re-uploads; either way one copy stored
    skopeo_ok(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{a}/one/busybox:1"),
        &format!("docker://{a}/two/busybox:2"),
    ]);
    skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{a}/two/busybox:2"),
    ]);
    assert_eq!(reg.verify_blobs().len(), 3, "config, layer, manifest");
}

#[test]
fn multi_arch_index() {
    let reg = Registry::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let amd = random_image(20_000, 1, "amd64");
    let arm = random_image(20_000, 2, "arm64");
    let layout = dir.path().join("layout");
    let (index_digest, index) =
        common::multiarch_layout(&layout, &[(&amd, "amd64"), (&arm, "arm64")], "multi");
    let a = reg.addr.clone();
    skopeo_ok(&[
        "copy",
        "-q",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", s(&layout)),
        &format!("docker://{a}/multi/app:v1"),
    ]);
    let raw = skopeo_ok(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{a}/multi/app:v1"),
    ])
    .stdout;
    assert_eq!(raw, index, "the index is stored byte for byte");
    assert_eq!(Digest::of(&raw), index_digest);
    // per platform
    for (arch, img) in [("arm64", &arm), ("amd64", &amd)] {
        let out = skopeo_ok(&[
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            arch,
            "--override-os",
            "linux",
            &format!("docker://{a}/multi/app:v1"),
        ])
        .stdout;
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Architecture"], arch);
        assert_eq!(v["Layers"][0], img.layers[0].digest.to_string());
    }
    // and all of it back out
    let back = dir.path().join("back");
    skopeo_ok(&[
        "copy",
        "-q",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{a}/multi/app:v1"),
        &format!("oci:{}:multi", s(&back)),
    ]);
    for img in [&amd, &arm] {
        for (d, bytes, _) in &img.blobs {
            assert_eq!(
                &std::fs::read(back.join("blobs/sha256").join(d.hex())).unwrap(),
                bytes
            );
        }
    }
    // skopeo delete removes the index (and its tag)
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{a}/multi/app:v1"),
    ]);
    assert!(
        !skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{a}/multi/app:v1")
        ])
        .status
        .success()
    );
}
