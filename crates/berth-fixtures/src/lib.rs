//! berth-fixtures: the test images and archives berth's tests and benchmarks
//! use, built from what the machine has — never pulled from the internet.
//!
//! Owns: a deterministic tar writer ([`tarw`]); the busybox rootfs from the
//! host's busybox-static ([`busybox_rootfs_tar`]); an image builder
//! ([`build_image`]: config, diff IDs, compressed blobs, OCI manifest);
//! archive writers for `docker save` (docker 25+ and pre-25) and OCI image
//! layouts; ready-made images (busybox, a multi-layer image of merge edge
//! cases with its expected merged view, many small images, a big streamed
//! image); malicious layers and corrupt archives; and the `berth-fixtures`
//! binary that writes any of them to a file. Must not: depend on other berth
//! crates than berth-types, touch the network, or need root.
//!
//! Everything is deterministic: fixed mtimes (2024-01-01T00:00:00Z), uid/gid
//! 0 unless a fixture says otherwise, sorted JSON keys, fixed compression
//! settings — the same call gives the same bytes (on the same machine, since
//! busybox comes from it).
#![forbid(unsafe_code)]

pub mod archive;
pub mod big;
pub mod image;
pub mod images;
pub mod malicious;
pub mod rootfs;
pub mod tarw;

pub use archive::{
    ArchiveFormat, OCI_LAYOUT, docker_save_archive, legacy_docker_save_archive, oci_layout_archive,
    write_archive, write_docker_save_archive, write_legacy_docker_save_archive,
    write_oci_layout_archive,
};
pub use big::{BigImage, BigImageSummary, XorShift, big_image, write_big_image_docker_save};
pub use image::{
    BuiltImage, BuiltLayer, Compression, DEFAULT_PATH, FIXED_CREATED, ImageSpec, Layer,
    build_image, host_architecture,
};
pub use images::{
    Expect, LONG_GNU_PATH, LONG_PAX_PATH, MULTILAYER_GROUP, busybox_image, check_tree, many_images,
    many_images_archive, multilayer_expectations, multilayer_image,
};
pub use malicious::{
    CORRUPT_NAMES, EVIL, MALICIOUS_HOST_PATHS, MALICIOUS_NAMES, corrupt_archive, corrupt_archives,
    corrupt_base_image, malicious_archive, malicious_description, malicious_image, malicious_layer,
    malicious_layers, tiny_base_layer,
};
pub use rootfs::{REQUIRED_APPLETS, busybox_applets, busybox_binary, busybox_rootfs_tar};
pub use tarw::FIXED_MTIME;

/// A docker-save archive of [`busybox_image`] tagged `tag` (e.g. `busybox:latest`).
pub fn busybox_archive(tag: &str) -> Vec<u8> {
    docker_save_archive(&[(busybox_image(), vec![tag.to_string()])])
}

#[cfg(test)]
pub(crate) mod tests_util {
    use std::collections::BTreeMap;
    use std::io::Read;

    /// Regular files of a tar, name → content.
    pub fn entries(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut ar = tar::Archive::new(tar);
        let mut out = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type().is_file() {
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                out.insert(name, v);
            }
        }
        out
    }

    /// Every entry of a tar in order: (name, type, link target, mode, mtime).
    pub fn listing(tar: &[u8]) -> Vec<(String, tar::EntryType, Option<String>, u32, u64)> {
        let mut ar = tar::Archive::new(tar);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_util::{entries, listing};
    use super::*;
    use berth_types::{DiffId, Digest, Sha256Writer};
    use serde_json::Value;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn json(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    fn blob<'a>(e: &'a BTreeMap<String, Vec<u8>>, d: &str) -> &'a [u8] {
        let hex = d.strip_prefix("sha256:").unwrap();
        &e[&format!("blobs/sha256/{hex}")]
    }

    fn two_images() -> Vec<(BuiltImage, Vec<String>)> {
        vec![
            (
                busybox_image(),
                vec!["busybox:latest".into(), "busybox:1".into()],
            ),
            (multilayer_image(), vec!["localhost:5000/ml:v2".into()]),
        ]
    }

    #[test]
    fn docker_save_archive_is_laid_out_like_docker_25() {
        let images = two_images();
        let ar = docker_save_archive(&images);
        let list = listing(&ar);
        let names: Vec<&str> = list.iter().map(|l| l.0.as_str()).collect();
        // Docker's order: blobs (sorted) first, then the top-level files.
        assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
        assert_eq!(
            &names[names.len() - 4..],
            ["index.json", "manifest.json", "oci-layout", "repositories"]
        );
        let blob_names: Vec<&str> = names[2..names.len() - 4].to_vec();
        let mut sorted = blob_names.clone();
        sorted.sort();
        assert_eq!(blob_names, sorted);
        for (name, ty, _, mode, mtime) in &list {
            assert_eq!(*mtime, FIXED_MTIME, "{name}");
            assert_eq!(*mode, if ty.is_dir() { 0o755 } else { 0o644 }, "{name}");
        }

        let e = entries(&ar);
        for (name, content) in &e {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(Digest::of(content).hex(), hex, "{name}");
            }
        }
        assert_eq!(e["oci-layout"], OCI_LAYOUT);
        assert_eq!(json(&e["oci-layout"])["imageLayoutVersion"], "1.0.0");

        // manifest.json
        let manifest = json(&e["manifest.json"]);
        let manifest = manifest.as_array().unwrap();
        assert_eq!(manifest.len(), 2);
        for (item, (img, _)) in manifest.iter().zip(&images) {
            assert_eq!(
                item["Config"],
                format!("blobs/sha256/{}", img.config_digest.hex())
            );
            assert_eq!(e[item["Config"].as_str().unwrap()], img.config_json);
            let layers: Vec<&str> = item["Layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            assert_eq!(layers.len(), img.diff_ids.len());
            for (path, d) in layers.iter().zip(&img.diff_ids) {
                assert_eq!(*path, format!("blobs/sha256/{}", d.0.hex()));
                assert_eq!(DiffId(Digest::of(&e[*path])), *d);
                let src = &item["LayerSources"][d.to_string()];
                assert_eq!(src["mediaType"], image::MT_OCI_LAYER);
                assert_eq!(src["size"], e[*path].len() as u64);
            }
        }
        assert_eq!(
            manifest[0]["RepoTags"],
            serde_json::json!(["busybox:latest", "busybox:1"])
        );
        assert_eq!(
            manifest[1]["RepoTags"],
            serde_json::json!(["localhost:5000/ml:v2"])
        );
        // The shared busybox layer is stored once.
        let busybox_layer = format!("blobs/sha256/{}", images[0].0.diff_ids[0].0.hex());
        assert_eq!(names.iter().filter(|n| **n == busybox_layer).count(), 1);

        // index.json and the OCI manifests.
        let index = json(&e["index.json"]);
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], image::MT_OCI_INDEX);
        let descs = index["manifests"].as_array().unwrap();
        assert_eq!(descs.len(), 3);
        let ann: Vec<(String, String)> = descs
            .iter()
            .map(|d| {
                (
                    d["annotations"]["io.containerd.image.name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    d["annotations"]["org.opencontainers.image.ref.name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            ann,
            [
                (
                    "docker.io/library/busybox:latest".to_string(),
                    "latest".to_string()
                ),
                ("docker.io/library/busybox:1".to_string(), "1".to_string()),
                ("localhost:5000/ml:v2".to_string(), "v2".to_string()),
            ]
        );
        for (d, img) in descs.iter().zip([&images[0].0, &images[0].0, &images[1].0]) {
            assert_eq!(d["mediaType"], image::MT_OCI_MANIFEST);
            let mbytes = blob(&e, d["digest"].as_str().unwrap());
            assert_eq!(d["size"], mbytes.len() as u64);
            assert_eq!(mbytes, img.uncompressed_manifest().0);
            let m = json(mbytes);
            assert_eq!(m["mediaType"], image::MT_OCI_MANIFEST);
            assert_eq!(m["config"]["mediaType"], image::MT_OCI_CONFIG);
            assert_eq!(m["config"]["digest"], img.config_digest.to_string());
            for (l, d) in m["layers"].as_array().unwrap().iter().zip(&img.diff_ids) {
                assert_eq!(l["mediaType"], image::MT_OCI_LAYER);
                assert_eq!(l["digest"], d.to_string());
            }
        }

        // repositories: docker records the top layer's diff ID.
        let repos = json(&e["repositories"]);
        let top = images[0].0.diff_ids.last().unwrap().0.hex();
        assert_eq!(repos["busybox"]["latest"], top);
        assert_eq!(repos["busybox"]["1"], top);
        assert_eq!(
            repos["localhost:5000/ml"]["v2"],
            images[1].0.diff_ids[3].0.hex()
        );
    }

    #[test]
    fn legacy_archive_is_laid_out_like_docker_24() {
        let images = two_images();
        let ar = legacy_docker_save_archive(&images);
        let list = listing(&ar);
        let e = entries(&ar);
        let manifest = json(&e["manifest.json"]);
        let repos = json(&e["repositories"]);
        assert!(!e.contains_key("index.json") && !e.contains_key("oci-layout"));
        let mut symlinks = 0;
        for (item, (img, _)) in manifest.as_array().unwrap().iter().zip(&images) {
            let cfg = format!("{}.json", img.config_digest.hex());
            assert_eq!(item["Config"], cfg);
            assert_eq!(e[&cfg], img.config_json);
            let layers = item["Layers"].as_array().unwrap();
            assert_eq!(layers.len(), img.diff_ids.len());
            let mut parent: Option<String> = None;
            for (l, d) in layers.iter().zip(&img.diff_ids) {
                let l = l.as_str().unwrap();
                let id = l.strip_suffix("/layer.tar").unwrap();
                assert_eq!(e[&format!("{id}/VERSION")], b"1.0");
                let v1 = json(&e[&format!("{id}/json")]);
                assert_eq!(v1["id"], id);
                assert_eq!(v1.get("parent").and_then(Value::as_str), parent.as_deref());
                parent = Some(id.to_string());
                let entry = list.iter().find(|x| x.0 == l).unwrap();
                let content = if entry.1.is_symlink() {
                    symlinks += 1;
                    let target = entry.2.as_deref().unwrap();
                    let resolved = Path::new(id).join(target);
                    let resolved = resolved.to_string_lossy().replace(&format!("{id}/../"), "");
                    &e[&resolved]
                } else {
                    &e[l]
                };
                assert_eq!(DiffId(Digest::of(content)), *d);
            }
            assert_eq!(
                repos[if img.layers.len() == 1 {
                    "busybox"
                } else {
                    "localhost:5000/ml"
                }][if img.layers.len() == 1 {
                    "latest"
                } else {
                    "v2"
                }],
                parent.unwrap()
            );
        }
        // busybox's only layer is the multilayer base under another v1 ID.
        assert_eq!(symlinks, 1);
    }

    #[test]
    fn oci_layout_archive_keeps_compressed_layers() {
        let mut spec_layers = Vec::new();
        for (i, c) in [Compression::None, Compression::Gzip, Compression::Zstd]
            .into_iter()
            .enumerate()
        {
            let mut t = tarw::TarWriter::new(Vec::new());
            t.entry(&tarw::Entry::file(&format!("f{i}"), 0o644, b"data"))
                .unwrap();
            spec_layers.push(Layer::new(t.finish().unwrap(), c, format!("ADD f{i}")));
        }
        let img = build_image(&ImageSpec::new(spec_layers, serde_json::json!({})));
        let ar = oci_layout_archive(&[(img.clone(), vec!["x/y:tag1".into()])]);
        let e = entries(&ar);
        assert!(!e.contains_key("manifest.json") && !e.contains_key("repositories"));
        assert_eq!(e["oci-layout"], OCI_LAYOUT);
        let index = json(&e["index.json"]);
        let d = &index["manifests"][0];
        assert_eq!(
            d["annotations"]["org.opencontainers.image.ref.name"],
            "tag1"
        );
        assert!(d["annotations"].get("io.containerd.image.name").is_none());
        assert_eq!(d["digest"], img.manifest_digest.to_string());
        assert_eq!(blob(&e, d["digest"].as_str().unwrap()), img.manifest_json);
        for (dg, bytes, _) in &img.blobs {
            assert_eq!(blob(&e, &dg.to_string()), &bytes[..]);
        }
        let names: Vec<String> = listing(&ar).into_iter().map(|l| l.0).collect();
        assert_eq!(&names[names.len() - 2..], ["index.json", "oci-layout"]);
    }

    #[test]
    fn invalid_tags_are_refused() {
        let img = corrupt_base_image();
        let mut out = Vec::new();
        assert!(
            write_docker_save_archive(&mut out, &[(img.clone(), vec!["UPPER:x".into()])]).is_err()
        );
        assert!(
            write_docker_save_archive(
                &mut out,
                &[(img, vec![format!("a@sha256:{}", "0".repeat(64))])]
            )
            .is_err()
        );
    }

    #[test]
    fn busybox_archives_are_deterministic() {
        let a = busybox_archive("busybox:latest");
        assert_eq!(a, busybox_archive("busybox:latest"));
        let b = docker_save_archive(&[(multilayer_image(), vec!["ml:latest".into()])]);
        assert_eq!(
            b,
            docker_save_archive(&[(multilayer_image(), vec!["ml:latest".into()])])
        );
        // And across processes (no hash-map order or address leaks).
        let out = child("tests::child_print_busybox_digest", &[]);
        assert_eq!(child_value(&out, "DIGEST"), Digest::of(&a).to_string());
    }

    #[test]
    #[ignore = "run by busybox_archives_are_deterministic in a child process"]
    fn child_print_busybox_digest() {
        if std::env::var_os("BERTH_FIXTURES_CHILD").is_none() {
            return;
        }
        println!("DIGEST={}", Digest::of(&busybox_archive("busybox:latest")));
    }

    /// The `KEY=value` a child printed (the harness may put text before it on the line).
    fn child_value(out: &std::process::Output, key: &str) -> String {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pat = format!("{key}=");
        let at = stdout
            .find(&pat)
            .unwrap_or_else(|| panic!("child printed no {key}: {stdout}"));
        stdout[at + pat.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// Runs one ignored test of this binary in a child process.
    fn child(test: &str, env: &[(&str, &str)]) -> std::process::Output {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BERTH_FIXTURES_CHILD", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child {test}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p =
                std::env::temp_dir().join(format!("berth-fixtures-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn write(&self, name: &str, bytes: &[u8]) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).unwrap();
            p.to_string_lossy().into_owned()
        }
        fn path(&self, name: &str) -> String {
            self.0.join(name).to_string_lossy().into_owned()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const SKOPEO: &str = "/usr/bin/skopeo";

    fn have_skopeo() -> bool {
        let ok = Path::new(SKOPEO).exists();
        if !ok {
            eprintln!("skipping: {SKOPEO} is not installed (apt-get install skopeo)");
        }
        ok
    }

    fn skopeo(args: &[&str]) -> std::process::Output {
        Command::new(SKOPEO)
            .arg("--insecure-policy")
            .args(args)
            .output()
            .unwrap()
    }

    fn skopeo_ok(args: &[&str]) -> Vec<u8> {
        let out = skopeo(args);
        assert!(
            out.status.success(),
            "skopeo {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn skopeo_accepts_our_archives() {
        if !have_skopeo() {
            return;
        }
        let dir = TempDir::new("skopeo-ok");
        let images = two_images();
        let (bb, ml) = (&images[0].0, &images[1].0);

        // docker 25+ save: a docker-archive, and an OCI layout as well.
        let f = dir.write("save.tar", &docker_save_archive(&images));
        let info = json(&skopeo_ok(&[
            "inspect",
            &format!("docker-archive:{f}:busybox:latest"),
        ]));
        assert_eq!(
            info["Layers"],
            serde_json::json!([bb.diff_ids[0].to_string()])
        );
        assert_eq!(info["Architecture"], host_architecture());
        let raw = skopeo_ok(&["inspect", "--raw", &format!("oci-archive:{f}:v2")]);
        assert_eq!(raw, ml.uncompressed_manifest().0);
        let cfg = skopeo_ok(&[
            "inspect",
            "--config",
            "--raw",
            &format!("oci-archive:{f}:1"),
        ]);
        assert_eq!(cfg, bb.config_json);
        // Copying verifies every blob against its digest.
        skopeo_ok(&[
            "copy",
            &format!("docker-archive:{f}:localhost:5000/ml:v2"),
            &format!("oci:{}:ml", dir.path("out1")),
        ]);
        skopeo_ok(&[
            "copy",
            &format!("oci-archive:{f}:latest"),
            &format!("oci:{}:bb", dir.path("out2")),
        ]);

        // pre-25 save.
        let f = dir.write("legacy.tar", &legacy_docker_save_archive(&images));
        let info = json(&skopeo_ok(&[
            "inspect",
            &format!("docker-archive:{f}:busybox:latest"),
        ]));
        assert_eq!(
            info["Layers"],
            serde_json::json!([bb.diff_ids[0].to_string()])
        );
        skopeo_ok(&[
            "copy",
            &format!("docker-archive:{f}:localhost:5000/ml:v2"),
            &format!("oci:{}:ml", dir.path("out3")),
        ]);

        // Pure OCI layout with compressed layers.
        let f = dir.write(
            "oci.tar",
            &oci_layout_archive(&[(ml.clone(), vec!["ml:latest".into()])]),
        );
        let raw = skopeo_ok(&["inspect", "--raw", &format!("oci-archive:{f}")]);
        assert_eq!(raw, ml.manifest_json);
        skopeo_ok(&[
            "copy",
            &format!("oci-archive:{f}:latest"),
            &format!("oci:{}:ml", dir.path("out4")),
        ]);

        // Many images, and a malicious one (the format is valid).
        let f = dir.write("many.tar", &many_images_archive(5));
        let info = json(&skopeo_ok(&[
            "inspect",
            &format!("docker-archive:{f}:many-3:latest"),
        ]));
        assert_eq!(info["Labels"]["berth.fixture.index"], "3");
        let f = dir.write("mal.tar", &malicious_archive("dotdot"));
        skopeo_ok(&[
            "copy",
            &format!("docker-archive:{f}"),
            &format!("oci:{}:m", dir.path("out5")),
        ]);
    }

    #[test]
    fn skopeo_rejects_corrupt_archives() {
        if !have_skopeo() {
            return;
        }
        let dir = TempDir::new("skopeo-bad");
        for (name, bytes) in corrupt_archives() {
            let f = dir.write(&format!("{name}.tar"), &bytes);
            let out = skopeo(&[
                "copy",
                &format!("docker-archive:{f}"),
                &format!("oci:{}:x", dir.path(name)),
            ]);
            assert!(
                !out.status.success(),
                "skopeo accepted corrupt archive {name}"
            );
            if name == "layer-digest-mismatch" {
                let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
                assert!(err.contains("digest"), "{name}: {err}");
            }
        }
    }

    const BIG_MB: usize = 128;

    #[test]
    #[ignore = "run by big_image_streams_with_bounded_memory in a child process"]
    fn child_write_big_image() {
        let Some(path) = std::env::var_os("BERTH_FIXTURES_BIG_OUT") else {
            return;
        };
        let f = std::fs::File::create(path).unwrap();
        let mut w = std::io::BufWriter::new(f);
        let s = big_image(BIG_MB, 2, 9)
            .write_docker_save(&mut w, "big:latest")
            .unwrap();
        drop(w);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kb: u64 = hwm.split_whitespace().nth(1).unwrap().parse().unwrap();
        println!("HWM_KB={kb}");
        println!("CONFIG={}", s.config_digest);
        println!("CONTENT={}", s.content_bytes);
        println!("ARCHIVE={}", s.archive_bytes);
    }

    #[test]
    fn big_image_streams_with_bounded_memory() {
        let dir = TempDir::new("big");
        let path = PathBuf::from(dir.path("big.tar"));
        let out = child(
            "tests::child_write_big_image",
            &[("BERTH_FIXTURES_BIG_OUT", path.to_str().unwrap())],
        );
        let get = |k: &str| child_value(&out, k);
        let hwm_kb: u64 = get("HWM_KB").parse().unwrap();
        let content: u64 = get("CONTENT").parse().unwrap();
        let archive: u64 = get("ARCHIVE").parse().unwrap();
        assert!(content >= (BIG_MB as u64) << 20);
        assert_eq!(archive, std::fs::metadata(&path).unwrap().len());
        // Each layer is 64 MiB: holding even one would exceed this.
        assert!(
            hwm_kb < 40 * 1024,
            "peak RSS {hwm_kb} kB writing a {BIG_MB} MiB image"
        );

        // Verify the archive while streaming it: every blob hashes to its name.
        let (files, manifest, config_bytes) = verify_streaming(&path);
        assert_eq!(
            format!("sha256:{}", Digest::of(&config_bytes).hex()),
            get("CONFIG")
        );
        let cfg = json(&config_bytes);
        let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), 2);
        let layers = manifest[0]["Layers"].as_array().unwrap();
        for (l, d) in layers.iter().zip(diff_ids) {
            let hex = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
            assert_eq!(l.as_str().unwrap(), format!("blobs/sha256/{hex}"));
            assert!(files.contains(l.as_str().unwrap()));
        }
    }

    /// Streams a docker-save archive from disk, checking blob digests;
    /// returns the set of names, manifest.json and the config.
    fn verify_streaming(path: &PathBuf) -> (BTreeSet<String>, Value, Vec<u8>) {
        use std::io::Read;
        let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut ar = tar::Archive::new(f);
        let mut names = BTreeSet::new();
        let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if e.header().entry_type().is_file() {
                // Hash everything, keep only small files (the JSON ones).
                let mut h = Sha256Writer::new(std::io::sink());
                let mut kept = Vec::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = e.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    std::io::Write::write_all(&mut h, &buf[..n]).unwrap();
                    if kept.len() < 1 << 20 {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
                let (_, d, count) = h.finish();
                if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                    assert_eq!(d.hex(), hex, "{name}");
                }
                if count == kept.len() as u64 {
                    small.insert(name.clone(), kept);
                }
            }
            names.insert(name);
        }
        let manifest = json(&small["manifest.json"]);
        let config = small[manifest[0]["Config"].as_str().unwrap()].clone();
        (names, manifest, config)
    }
}
