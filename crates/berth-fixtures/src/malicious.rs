//! Hostile layers and broken archives, for testing that loading and
//! extraction refuse or contain them.

use serde_json::json;

use crate::archive::{blob_path, docker_save_plan_of};
use crate::big::XorShift;
use crate::image::{BuiltImage, Compression, ImageSpec, Layer, build_image};
use crate::tarw::{Entry, Kind, TarWriter};

/// The content of every file a malicious layer tries to plant.
pub const EVIL: &[u8] = b"pwned by a berth malicious fixture\n";

/// Names of [`malicious_layers`], in order.
pub const MALICIOUS_NAMES: &[&str] = &[
    "dotdot",
    "absolute",
    "deep-dotdot",
    "symlink-abs-dir",
    "symlink-rel-dir",
    "hardlink-abs",
    "hardlink-dotdot",
    "chardev",
    "whiteout-dotdot",
    "truncated",
];

/// Host paths that no malicious fixture may ever create, whatever the
/// extraction root (the relative `../evil` of `dotdot` lands next to the
/// extraction root instead: check `<root>/../evil`).
pub const MALICIOUS_HOST_PATHS: &[&str] = &["/evil-abs", "/tmp/berth-evil", "/tmp/berth-evil2"];

/// What each malicious layer does and what a safe extractor must do.
pub fn malicious_description(name: &str) -> Option<&'static str> {
    Some(match name {
        "dotdot" => {
            "file `../evil`: must not be written outside the root (reject or clamp to /evil)"
        }
        "absolute" => {
            "file `/evil-abs`: must land at <root>/evil-abs or be rejected, never at the host /evil-abs"
        }
        "deep-dotdot" => "file `../../../../../tmp/berth-evil`: must not reach the host /tmp",
        "symlink-abs-dir" => {
            "symlink `link -> /tmp`, then file `link/berth-evil`: must not follow the link to the host /tmp"
        }
        "symlink-rel-dir" => {
            "symlink `link2 -> ../../../../..`, then `link2/tmp/berth-evil2`: must not follow the link out of the root"
        }
        "hardlink-abs" => {
            "hard link `hl` to `/etc/passwd`: must resolve inside the root (there is none: fail) or be rejected, never link the host file"
        }
        "hardlink-dotdot" => "hard link `hl2` to `../../etc/shadow`: must not link a host file",
        "chardev" => {
            "char device `dev/evil` 1:3 (what /dev/null is): docker creates it when running as root; an engine without CAP_MKNOD must skip it or fail cleanly"
        }
        "whiteout-dotdot" => {
            "whiteout `../.wh.berth-victim`: must not delete `<root>/../berth-victim`"
        }
        "truncated" => {
            "a valid tar cut in the middle of a file's data: extraction must fail with an error"
        }
        _ => return None,
    })
}

fn raw_file(t: &mut TarWriter<Vec<u8>>, path: &[u8]) {
    t.entry(&Entry::raw(path, Kind::File(EVIL), 0o644))
        .expect("tar into memory");
}

/// One malicious layer (an uncompressed tar) by name; see [`MALICIOUS_NAMES`].
pub fn malicious_layer(name: &str) -> Option<Vec<u8>> {
    let mut t = TarWriter::new(Vec::new());
    match name {
        "dotdot" => raw_file(&mut t, b"../evil"),
        "absolute" => raw_file(&mut t, b"/evil-abs"),
        "deep-dotdot" => raw_file(&mut t, b"../../../../../tmp/berth-evil"),
        "symlink-abs-dir" => {
            t.entry(&Entry::raw(b"link", Kind::Symlink(b"/tmp"), 0o777))
                .expect("tar");
            raw_file(&mut t, b"link/berth-evil");
        }
        "symlink-rel-dir" => {
            t.entry(&Entry::raw(
                b"link2",
                Kind::Symlink(b"../../../../.."),
                0o777,
            ))
            .expect("tar");
            raw_file(&mut t, b"link2/tmp/berth-evil2");
        }
        "hardlink-abs" => t
            .entry(&Entry::raw(b"hl", Kind::Hardlink(b"/etc/passwd"), 0o644))
            .expect("tar"),
        "hardlink-dotdot" => t
            .entry(&Entry::raw(
                b"hl2",
                Kind::Hardlink(b"../../etc/shadow"),
                0o644,
            ))
            .expect("tar"),
        "chardev" => {
            t.entry(&Entry::dir("dev/", 0o755)).expect("tar");
            t.entry(&Entry::raw(b"dev/evil", Kind::Char(1, 3), 0o666))
                .expect("tar");
        }
        "whiteout-dotdot" => t
            .entry(&Entry::raw(b"../.wh.berth-victim", Kind::File(b""), 0o644))
            .expect("tar"),
        "truncated" => {
            t.entry(&Entry::file("ok", 0o644, b"fine\n")).expect("tar");
            let data = XorShift::new(7).bytes(64 * 1024);
            t.entry(&Entry::file("cut-short", 0o644, &data))
                .expect("tar");
            let full = t.finish().expect("tar");
            // Keep both headers and half of cut-short's data.
            let cut = 512 + 512 + 512 + 32 * 1024;
            return Some(full[..cut].to_vec());
        }
        _ => return None,
    }
    Some(t.finish().expect("tar into memory"))
}

/// Every malicious layer, `(name, uncompressed tar)`.
pub fn malicious_layers() -> Vec<(&'static str, Vec<u8>)> {
    MALICIOUS_NAMES
        .iter()
        .map(|n| (*n, malicious_layer(n).expect("known name")))
        .collect()
}

/// The busybox-free base layer of malicious images: `dev/`, `etc/`,
/// `etc/passwd` (root only), `tmp/` (1777).
pub fn tiny_base_layer() -> Vec<u8> {
    let mut t = TarWriter::new(Vec::new());
    t.entry(&Entry::dir("dev/", 0o755)).expect("tar");
    t.entry(&Entry::dir("etc/", 0o755)).expect("tar");
    t.entry(&Entry::file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    ))
    .expect("tar");
    t.entry(&Entry::dir("tmp/", 0o1777)).expect("tar");
    t.finish().expect("tar")
}

/// A two-layer image: [`tiny_base_layer`] + the named malicious layer
/// (both uncompressed), so an archive holding it loads as far as the
/// malicious layer. Tag it e.g. `malicious-<name>:latest`.
/// Panics on an unknown name (see [`MALICIOUS_NAMES`]).
pub fn malicious_image(name: &str) -> BuiltImage {
    let layer = malicious_layer(name).unwrap_or_else(|| {
        panic!(
            "unknown malicious fixture {name:?}; known: {}",
            MALICIOUS_NAMES.join(", ")
        )
    });
    let spec = ImageSpec::new(
        vec![
            Layer::new(tiny_base_layer(), Compression::None, "ADD base / "),
            Layer::new(layer, Compression::None, format!("ADD malicious-{name} / ")),
        ],
        json!({"Cmd": ["/bin/sh"], "Labels": {"berth.fixture.malicious": name}}),
    );
    build_image(&spec)
}

/// A docker-save archive of [`malicious_image`] tagged `malicious-<name>:latest`.
pub fn malicious_archive(name: &str) -> Vec<u8> {
    crate::docker_save_archive(&[(
        malicious_image(name),
        vec![format!("malicious-{name}:latest")],
    )])
}

/// Names of [`corrupt_archives`], in order.
pub const CORRUPT_NAMES: &[&str] = &[
    "layer-digest-mismatch",
    "truncated",
    "missing-blob",
    "invalid-manifest-json",
    "garbage",
];

/// The small image the corrupt archives are made from, tagged `corrupt:latest`:
/// one layer whose first entry is the file `hello.txt`.
pub fn corrupt_base_image() -> BuiltImage {
    let mut t = TarWriter::new(Vec::new());
    t.entry(&Entry::file(
        "hello.txt",
        0o644,
        b"hello from a berth fixture\n",
    ))
    .expect("tar");
    t.entry(&Entry::dir("etc/", 0o755)).expect("tar");
    let spec = ImageSpec::new(
        vec![Layer::new(
            t.finish().expect("tar"),
            Compression::None,
            "ADD hello.txt / ",
        )],
        json!({"Cmd": ["/hello.txt"]}),
    );
    build_image(&spec)
}

/// One corrupt docker-save archive by name:
/// - `layer-digest-mismatch`: a byte of `hello.txt`'s data in the layer blob
///   is flipped after digests were computed; the blob is still a valid tar
///   and keeps its name, so only hashing catches it;
/// - `truncated`: a valid archive cut at half its length;
/// - `missing-blob`: the layer blob `manifest.json` (and the OCI manifest)
///   point at is absent;
/// - `invalid-manifest-json`: `manifest.json` is not JSON (`index.json` is
///   still valid; docker reads `manifest.json` and fails);
/// - `garbage`: 10 KiB of pseudo-random bytes, not a tar.
pub fn corrupt_archive(name: &str) -> Option<Vec<u8>> {
    let img = corrupt_base_image();
    let images = [(img.clone(), vec!["corrupt:latest".to_string()])];
    let layer_path = blob_path(&img.diff_ids[0].0);
    let mut plan = docker_save_plan_of(&images);
    match name {
        "layer-digest-mismatch" => {
            let mut layer = plan.bytes(&layer_path).expect("layer blob").to_vec();
            layer[512] ^= 0x20; // first data byte of hello.txt: 'h' → 'H'
            plan.replace(&layer_path, layer);
        }
        "truncated" => {
            let mut full = Vec::new();
            plan.write(&mut full).expect("write into memory");
            full.truncate(full.len() / 2);
            return Some(full);
        }
        "missing-blob" => assert!(plan.remove(&layer_path)),
        "invalid-manifest-json" => {
            plan.replace("manifest.json", b"[{\"Config\":\"blobs/sha256/".to_vec());
        }
        "garbage" => return Some(XorShift::new(0xbad).bytes(10 * 1024)),
        _ => return None,
    }
    let mut out = Vec::new();
    plan.write(&mut out).expect("write into memory");
    Some(out)
}

/// Every corrupt archive, `(name, archive bytes)`.
pub fn corrupt_archives() -> Vec<(&'static str, Vec<u8>)> {
    CORRUPT_NAMES
        .iter()
        .map(|n| (*n, corrupt_archive(n).expect("known name")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_util::entries;
    use berth_types::Digest;
    use std::io::Read;

    #[test]
    fn every_malicious_layer_has_a_description_and_an_image() {
        for (name, tar) in malicious_layers() {
            assert!(malicious_description(name).is_some(), "{name}");
            let img = malicious_image(name);
            assert_eq!(img.layers[1].uncompressed, tar);
            assert_eq!(img.diff_ids[1].0, Digest::of(&tar));
            let ar = malicious_archive(name);
            assert!(entries(&ar).contains_key("manifest.json"));
        }
        assert!(malicious_layer("nope").is_none());
    }

    #[test]
    fn malicious_names_are_raw_in_the_headers() {
        let names = |tar: &[u8]| -> Vec<(String, Option<String>)> {
            let mut ar = tar::Archive::new(tar);
            ar.entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                        e.link_name_bytes()
                            .map(|l| String::from_utf8_lossy(&l).into_owned()),
                    )
                })
                .collect()
        };
        assert_eq!(names(&malicious_layer("dotdot").unwrap())[0].0, "../evil");
        assert_eq!(
            names(&malicious_layer("absolute").unwrap())[0].0,
            "/evil-abs"
        );
        assert_eq!(
            names(&malicious_layer("deep-dotdot").unwrap())[0].0,
            "../../../../../tmp/berth-evil"
        );
        let s = names(&malicious_layer("symlink-rel-dir").unwrap());
        assert_eq!(s[0], ("link2".into(), Some("../../../../..".into())));
        assert_eq!(s[1].0, "link2/tmp/berth-evil2");
        let s = names(&malicious_layer("symlink-abs-dir").unwrap());
        assert_eq!(s[0], ("link".into(), Some("/tmp".into())));
        assert_eq!(s[1].0, "link/berth-evil");
        assert_eq!(
            names(&malicious_layer("hardlink-abs").unwrap())[0]
                .1
                .as_deref(),
            Some("/etc/passwd")
        );
        assert_eq!(
            names(&malicious_layer("hardlink-dotdot").unwrap())[0]
                .1
                .as_deref(),
            Some("../../etc/shadow")
        );
        let tar = malicious_layer("chardev").unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let dev = ar.entries().unwrap().nth(1).unwrap().unwrap();
        assert!(dev.header().entry_type().is_character_special());
        assert_eq!(dev.header().device_major().unwrap(), Some(1));
        assert_eq!(dev.header().device_minor().unwrap(), Some(3));
    }

    #[test]
    fn the_truncated_layer_fails_to_read() {
        let tar = malicious_layer("truncated").unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut failed = false;
        for e in ar.entries().unwrap() {
            match e {
                Ok(mut e) => {
                    let mut v = Vec::new();
                    if e.read_to_end(&mut v).is_err() {
                        failed = true;
                    }
                }
                Err(_) => failed = true,
            }
        }
        assert!(failed);
    }

    #[test]
    fn corrupt_archives_are_corrupt_in_the_promised_way() {
        let img = corrupt_base_image();
        let layer = blob_path(&img.diff_ids[0].0);
        let good = crate::docker_save_archive(&[(img.clone(), vec!["corrupt:latest".into()])]);

        let e = entries(&corrupt_archive("layer-digest-mismatch").unwrap());
        let blob = &e[&layer];
        assert_eq!(blob.len(), img.layers[0].uncompressed.len());
        assert_ne!(Digest::of(blob), img.diff_ids[0].0);
        // Still a readable tar.
        let mut ar = tar::Archive::new(&blob[..]);
        let mut first = ar.entries().unwrap().next().unwrap().unwrap();
        let mut s = String::new();
        first.read_to_string(&mut s).unwrap();
        assert_eq!(s, "Hello from a berth fixture\n");

        let t = corrupt_archive("truncated").unwrap();
        assert_eq!(t.len(), good.len() / 2);
        assert_eq!(&t[..], &good[..t.len()]);

        let e = entries(&corrupt_archive("missing-blob").unwrap());
        assert!(!e.contains_key(&layer));
        assert!(String::from_utf8_lossy(&e["manifest.json"]).contains(&layer));

        let e = entries(&corrupt_archive("invalid-manifest-json").unwrap());
        assert!(serde_json::from_slice::<serde_json::Value>(&e["manifest.json"]).is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(&e["index.json"]).is_ok());

        let g = corrupt_archive("garbage").unwrap();
        let mut ar = tar::Archive::new(&g[..]);
        assert!(ar.entries().unwrap().any(|e| e.is_err()));
        assert_eq!(corrupt_archives().len(), CORRUPT_NAMES.len());
    }
}
