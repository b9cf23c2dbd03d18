//! The test images of berth-fixtures, built once per test process, and the
//! facts tests check about them, computed here (not taken from berthd).

use std::sync::OnceLock;

use berth_fixtures::{self as fx, BuiltImage};
use sha2::{Digest as _, Sha256};

use crate::Daemon;

/// busybox:latest (one layer from the host's busybox-static).
pub fn busybox() -> &'static BuiltImage {
    static IMG: OnceLock<BuiltImage> = OnceLock::new();
    IMG.get_or_init(fx::busybox_image)
}

/// The four-layer image of merge edge cases (label `berth.fixture=multilayer`),
/// whose base layer is busybox's.
pub fn multilayer() -> &'static BuiltImage {
    static IMG: OnceLock<BuiltImage> = OnceLock::new();
    IMG.get_or_init(fx::multilayer_image)
}

/// A small one-layer image (`many/0`) with no tag: loads as a dangling image.
pub fn small() -> &'static BuiltImage {
    static IMG: OnceLock<BuiltImage> = OnceLock::new();
    IMG.get_or_init(|| fx::many_images(1).remove(0).0)
}

/// The image ID docker gives `img`: `sha256:` + sha256 of its config bytes.
pub fn id_of(img: &BuiltImage) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(&img.config_json)))
}

/// The first 12 hex digits of an ID, as `docker images` shows it.
pub fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..12]
}

/// Diff IDs (`sha256:…`) of `img`: the sha256 of each uncompressed layer.
pub fn diff_ids(img: &BuiltImage) -> Vec<String> {
    img.layers
        .iter()
        .map(|l| format!("sha256:{}", hex::encode(Sha256::digest(&l.uncompressed))))
        .collect()
}

/// A docker-save archive (docker 25+ layout) of `images`, each with its tags.
pub fn save_archive(images: &[(&BuiltImage, &[&str])]) -> Vec<u8> {
    fx::docker_save_archive(&owned(images))
}

/// A docker-save archive in the layout of docker < 25.
pub fn legacy_archive(images: &[(&BuiltImage, &[&str])]) -> Vec<u8> {
    fx::legacy_docker_save_archive(&owned(images))
}

/// A pure OCI image layout archive (no `manifest.json`).
pub fn oci_archive(images: &[(&BuiltImage, &[&str])]) -> Vec<u8> {
    fx::oci_layout_archive(&owned(images))
}

fn owned(images: &[(&BuiltImage, &[&str])]) -> Vec<(BuiltImage, Vec<String>)> {
    images
        .iter()
        .map(|(img, tags)| ((*img).clone(), tags.iter().map(|t| t.to_string()).collect()))
        .collect()
}

impl Daemon {
    /// Writes `bytes` as `dir()/name` and runs `docker load -i` on it.
    pub fn docker_load(&self, name: &str, bytes: &[u8]) -> crate::Run {
        let path = self.write(name, bytes);
        self.docker(["load", "-i", crate::arg(&path)])
    }

    /// Loads busybox:latest with the docker CLI, checks the CLI's answer and
    /// returns the image ID.
    #[track_caller]
    pub fn load_busybox(&self) -> String {
        let out = self.docker_load(
            "busybox.tar",
            &save_archive(&[(busybox(), &["busybox:latest"])]),
        );
        assert_eq!(out.ok().trim(), "Loaded image: busybox:latest", "{out}");
        id_of(busybox())
    }

    /// Loads the multilayer image as `multilayer:latest`; returns its ID.
    #[track_caller]
    pub fn load_multilayer(&self) -> String {
        let out = self.docker_load(
            "multilayer.tar",
            &save_archive(&[(multilayer(), &["multilayer:latest"])]),
        );
        assert_eq!(out.ok().trim(), "Loaded image: multilayer:latest", "{out}");
        id_of(multilayer())
    }

    /// Loads [`small`] untagged (a dangling image); returns its ID.
    #[track_caller]
    pub fn load_dangling(&self) -> String {
        let id = id_of(small());
        let out = self.docker_load("dangling.tar", &save_archive(&[(small(), &[])]));
        assert_eq!(out.ok().trim(), format!("Loaded image ID: {id}"), "{out}");
        id
    }
}
