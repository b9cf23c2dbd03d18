//! Interop with other engines and tools: archives berth saves load into a
//! real dockerd and skopeo reads them; archives dockerd and skopeo write
//! load into berth — with the same image IDs.

use std::process::Command;

use berth_e2e::fixtures::{busybox, diff_ids, id_of, multilayer};
use berth_e2e::{Daemon, Dockerd, Run, arg, require_root};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const SKOPEO: &str = "/usr/bin/skopeo";

fn skopeo<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(SKOPEO);
    cmd.arg("--insecure-policy").args(args);
    Run::exec(cmd, None)
}

#[test]
fn berth_save_loads_into_dockerd_with_the_same_ids() {
    require_root!();
    let Some(dd) = Dockerd::start() else { return };
    let d = Daemon::start();
    let bb = d.load_busybox();
    let ml = d.load_multilayer();
    let saved = d.path("from-berth.tar");
    d.docker([
        "save",
        "-o",
        arg(&saved),
        "busybox:latest",
        "multilayer:latest",
    ])
    .ok();

    let out = dd.docker(["load", "-i", arg(&saved)]);
    let mut lines = out.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "Loaded image: busybox:latest",
            "Loaded image: multilayer:latest"
        ],
        "{out}"
    );
    let got = dd.docker([
        "image",
        "inspect",
        "-f",
        "{{.Id}} {{json .RootFS.Layers}}",
        "busybox",
        "multilayer",
    ]);
    assert_eq!(
        got.lines(),
        [
            format!("{bb} {}", json!(diff_ids(busybox()))),
            format!("{ml} {}", json!(diff_ids(multilayer()))),
        ],
        "{got}"
    );
    // Layer sizes as dockerd computes them from the same layers (regular
    // files and symlinks, hard links once) match berth's.
    let fmt = [
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}|{{.Size}}",
        "multilayer",
    ];
    assert_eq!(
        d.docker(fmt).ok(),
        dd.docker(fmt).ok(),
        "history sizes: berth (left) vs dockerd (right)"
    );
    let fmt = [
        "images",
        "--format",
        "{{.Repository}} {{.Size}}",
        "multilayer",
    ];
    assert_eq!(
        d.docker(fmt).ok(),
        dd.docker(fmt).ok(),
        "image size: berth (left) vs dockerd (right)"
    );
}

/// Imports the busybox rootfs into dockerd as `imported:dockerd` (with a
/// CMD and an ENV) and returns the new image's ID.
fn import_into_dockerd(dd: &Dockerd) -> String {
    let rootfs = dd.path("rootfs.tar");
    std::fs::write(
        &rootfs,
        berth_fixtures::busybox_rootfs_tar().expect("busybox rootfs"),
    )
    .expect("write rootfs");
    let imported = dd.docker([
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV A=1",
        arg(&rootfs),
        "imported:dockerd",
    ]);
    imported.ok().trim().to_string()
}

#[test]
fn dockerd_save_loads_into_berth_with_the_same_ids() {
    require_root!();
    let Some(dd) = Dockerd::start() else { return };
    let d = Daemon::start();
    let imported_id = import_into_dockerd(&dd);
    dd.docker(["tag", "imported:dockerd", "also/imported:v2"])
        .ok();
    let saved = dd.path("from-dockerd.tar");
    dd.docker([
        "save",
        "-o",
        arg(&saved),
        "imported:dockerd",
        "also/imported:v2",
    ])
    .ok();

    let out = d.docker(["load", "-i", arg(&saved)]);
    let mut lines = out.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "Loaded image: also/imported:v2",
            "Loaded image: imported:dockerd"
        ],
        "{out}"
    );
    let img = d.inspect("imported:dockerd");
    assert_eq!(img["Id"], imported_id);
    assert_eq!(img["RepoTags"].as_array().map(Vec::len), Some(2), "{img}");
    assert_eq!(img["Config"]["Cmd"], json!(["sh"]));
    assert!(
        img["Config"]["Env"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("A=1"))),
        "{img}"
    );
    assert_eq!(img["RootFS"]["Layers"], json!(diff_ids(busybox())));
    d.assert_no_garbage();

    // What berth saves of the dockerd image goes back into dockerd unchanged.
    let round = d.path("round.tar");
    d.docker(["save", "-o", arg(&round), "imported:dockerd"])
        .ok();
    dd.docker(["rmi", "imported:dockerd", "also/imported:v2"])
        .ok();
    dd.docker(["load", "-i", arg(&round)]).ok();
    assert_eq!(
        dd.docker(["image", "inspect", "-f", "{{.Id}}", "imported:dockerd"])
            .ok()
            .trim(),
        imported_id
    );
}

/// docker < 25 writes a layer shared by two saved images once, and for the
/// second image a symlink `<v1 id>/layer.tar -> ../<other v1 id>/layer.tar`.
#[test]
fn dockerd_save_with_a_shared_layer_loads_into_berth() {
    require_root!();
    let Some(dd) = Dockerd::start() else { return };
    let d = Daemon::start();
    let imported_id = import_into_dockerd(&dd);
    let ml_tar = dd.path("multilayer.tar");
    std::fs::write(
        &ml_tar,
        berth_e2e::fixtures::save_archive(&[(multilayer(), &["multilayer:latest"])]),
    )
    .expect("write");
    dd.docker(["load", "-i", arg(&ml_tar)]).ok();
    let saved = dd.path("from-dockerd.tar");
    dd.docker(["save", "-o", arg(&saved), "imported:dockerd", "multilayer"])
        .ok();

    let out = d.docker(["load", "-i", arg(&saved)]);
    let mut lines = out.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "Loaded image: imported:dockerd",
            "Loaded image: multilayer:latest"
        ],
        "{out}"
    );
    assert_eq!(d.inspect("imported:dockerd")["Id"], imported_id);
    assert_eq!(d.inspect("multilayer")["Id"], id_of(multilayer()));
    assert_eq!(
        d.inspect("multilayer")["RootFS"]["Layers"],
        json!(diff_ids(multilayer()))
    );
    d.assert_no_garbage();
}

#[test]
fn skopeo_reads_and_writes_archives_berth_understands() {
    require_root!();
    if !std::path::Path::new(SKOPEO).is_file() {
        eprintln!("SKIPPED: skopeo is not installed");
        return;
    }
    let d = Daemon::start();
    let bb = d.load_busybox();
    d.load_multilayer();
    let saved = d.path("berth.tar");
    d.docker(["save", "-o", arg(&saved), "busybox"]).ok();
    let src = format!("docker-archive:{}", saved.display());

    let out = skopeo(["inspect", &src]);
    let v: Value =
        serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("skopeo inspect: {e}\n{out}"));
    assert_eq!(v["Os"], "linux", "{v}");
    assert_eq!(
        v["Architecture"],
        berth_fixtures::host_architecture(),
        "{v}"
    );
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{v}");
    let out = skopeo(["inspect", "--config", "--raw", &src]);
    let config_id = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(out.ok().as_bytes()))
    );
    assert_eq!(
        config_id, bb,
        "the config skopeo reads is the image's config, byte for byte"
    );

    // A full copy reads and verifies every blob.
    let oci = d.path("oci");
    let oci_ref = format!("oci:{}:bb", oci.display());
    skopeo(["copy", "-q", &src, &oci_ref]).ok();

    // Two images in one archive: skopeo picks one by tag.
    let two = d.path("two.tar");
    d.docker(["save", "-o", arg(&two), "busybox", "multilayer"])
        .ok();
    let out = skopeo([
        "inspect",
        "--config",
        "--raw",
        &format!("docker-archive:{}:multilayer:latest", two.display()),
    ]);
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(out.ok().as_bytes()))
        ),
        id_of(multilayer())
    );

    // And back: skopeo's docker-archive (legacy layout, re-serialized
    // config) loads into berth with the ID of the config skopeo wrote.
    let back = d.path("from-skopeo.tar");
    let back_ref = format!("docker-archive:{}:busybox:skopeo", back.display());
    skopeo(["copy", "-q", &oci_ref, &back_ref]).ok();
    let out = skopeo([
        "inspect",
        "--config",
        "--raw",
        &format!("docker-archive:{}", back.display()),
    ]);
    let skopeo_id = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(out.ok().as_bytes()))
    );
    let out = d.docker(["load", "-i", arg(&back)]);
    assert_eq!(out.ok().trim(), "Loaded image: busybox:skopeo");
    let img = d.inspect("busybox:skopeo");
    assert_eq!(img["Id"], skopeo_id);
    assert_eq!(img["RootFS"]["Layers"], json!(diff_ids(busybox())));
    d.assert_no_garbage();
}
