//! The real docker CLI (28) against berthd: every image command the CLI has
//! that berthd serves, checked against what docker itself prints.

use std::collections::BTreeSet;

use berth_e2e::fixtures::{self as fx, busybox, diff_ids, id_of, multilayer, short};
use berth_e2e::text::sorted_lines;
use berth_e2e::{Daemon, arg, require_root, text, unix_now};
use berth_fixtures::{BuiltImage, Compression, DEFAULT_PATH, ImageSpec, Layer, build_image};
use serde_json::{Value, json};

/// `docker image inspect NAME`, parsed; exactly one image.
#[track_caller]
fn inspect(d: &Daemon, name: &str) -> Value {
    let out = d.docker(["image", "inspect", name]);
    let v: Value = serde_json::from_str(out.ok())
        .unwrap_or_else(|e| panic!("inspect is not JSON ({e}):\n{out}"));
    let arr = v.as_array().expect("inspect prints an array");
    assert_eq!(arr.len(), 1, "{out}");
    arr[0].clone()
}

#[test]
fn version_reports_api_1_47() {
    require_root!();
    let d = Daemon::start();
    let out = d.docker([
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.MinAPIVersion}} {{.Server.Os}}",
    ]);
    assert_eq!(out.ok().trim(), "1.47 1.24 linux");
    let out = d.docker(["version"]);
    assert!(out.ok().contains("1.47 (minimum version 1.24)"), "{out}");
    assert!(
        out.stdout.contains("1.47 (downgraded from"),
        "the CLI must negotiate down to 1.47:\n{out}"
    );
}

#[test]
fn info_counts_images() {
    require_root!();
    let d = Daemon::start();
    assert_eq!(
        d.docker(["info", "--format", "{{.Images}} {{.Containers}}"])
            .ok()
            .trim(),
        "0 0"
    );
    d.load_busybox();
    d.load_multilayer();
    assert_eq!(
        d.docker(["info", "--format", "{{.Images}}"]).ok().trim(),
        "2"
    );
    let out = d.docker(["info"]);
    assert!(out.ok().contains(" Images: 2\n"), "{out}");
    assert!(
        out.stdout
            .contains(&format!(" Docker Root Dir: {}\n", d.root.display())),
        "{out}"
    );
}

#[test]
fn load_docker_save_archive() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    let rows = text::table(d.docker(["images"]).ok());
    assert_eq!(
        rows[0],
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1][..3], ["busybox", "latest", short(&id)]);
    assert!(
        rows[1][4].ends_with("MB"),
        "busybox is about 2 MB: {rows:?}"
    );
    assert_eq!(d.docker(["images", "-q"]).ok(), format!("{}\n", short(&id)));
    let out = d.docker(["images", "--no-trunc"]);
    assert_eq!(
        text::table(out.ok())[1][..3],
        ["busybox", "latest", id.as_str()]
    );
    assert_eq!(
        inspect(&d, "busybox")["RootFS"]["Layers"],
        json!(diff_ids(busybox()))
    );
    d.assert_no_garbage();
}

#[test]
fn load_legacy_archive() {
    require_root!();
    let d = Daemon::start();
    let out = d.docker_load(
        "legacy.tar",
        &fx::legacy_archive(&[(busybox(), &["busybox:legacy"])]),
    );
    assert_eq!(out.ok().trim(), "Loaded image: busybox:legacy");
    let img = inspect(&d, "busybox:legacy");
    assert_eq!(img["Id"], id_of(busybox()));
    assert_eq!(img["RootFS"]["Layers"], json!(diff_ids(busybox())));
    d.assert_no_garbage();
}

/// busybox with its layer compressed as `c` in the OCI form.
fn busybox_compressed(c: Compression) -> BuiltImage {
    let tar = busybox().layers[0].uncompressed.clone();
    let mut spec = ImageSpec::new(
        vec![Layer::new(tar, c, "ADD rootfs / ")],
        json!({"Cmd": ["sh"], "Env": [DEFAULT_PATH]}),
    );
    spec.empty_layer_history
        .push(r#"/bin/sh -c #(nop)  CMD ["sh"]"#.to_string());
    build_image(&spec)
}

#[test]
fn load_oci_layout_archive_with_gzip_and_zstd_layers() {
    require_root!();
    let d = Daemon::start();
    for c in [Compression::Gzip, Compression::Zstd] {
        let img = busybox_compressed(c);
        assert_eq!(img.layers[0].media_type, c.oci_media_type());
        let id = id_of(&img);
        let out = d.docker_load("oci.tar", &fx::oci_archive(&[(&img, &["busybox:latest"])]));
        let said = out.ok().trim();
        // An OCI layout names images only with a full reference annotation
        // (this one has just the tag `latest`), so docker prints the ID.
        assert!(
            said == format!("Loaded image ID: {id}") || said.starts_with("Loaded image: "),
            "{c:?}: {out}"
        );
        let got = inspect(&d, &id);
        assert_eq!(got["Id"], id, "{c:?}");
        assert_eq!(got["RootFS"]["Layers"], json!(diff_ids(&img)), "{c:?}");
        assert_eq!(got["Config"]["Cmd"], json!(["sh"]), "{c:?}");
        d.assert_no_garbage();
        d.docker(["rmi", "-f", &id]).ok();
        d.assert_empty();
    }
}

#[test]
fn images_lists_and_filters() {
    require_root!();
    let d = Daemon::start();
    let bb = d.load_busybox();
    let ml = d.load_multilayer();
    let dangling = d.load_dangling();
    let fmt = |args: &[&str]| {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        sorted_lines(d.docker(&a).ok())
    };
    assert_eq!(
        fmt(&[]),
        ["<none>:<none>", "busybox:latest", "multilayer:latest"]
    );
    assert_eq!(fmt(&["--filter", "dangling=true"]), ["<none>:<none>"]);
    assert_eq!(
        fmt(&["--filter", "dangling=false"]),
        ["busybox:latest", "multilayer:latest"]
    );
    assert_eq!(fmt(&["--filter", "reference=busy*"]), ["busybox:latest"]);
    assert_eq!(
        fmt(&["--filter", "label=berth.fixture=multilayer"]),
        ["multilayer:latest"]
    );
    assert_eq!(
        fmt(&["--filter", "label=berth.fixture"]),
        ["multilayer:latest"]
    );
    assert_eq!(
        fmt(&["--filter", "label=berth.fixture=nope"]),
        Vec::<String>::new()
    );
    assert_eq!(fmt(&["busybox"]), ["busybox:latest"]);

    let q = sorted_lines(d.docker(["images", "-q"]).ok());
    let mut want: Vec<String> = [&bb, &ml, &dangling]
        .iter()
        .map(|i| short(i).to_string())
        .collect();
    want.sort();
    assert_eq!(q, want);
    let q = d.docker(["images", "-q", "--no-trunc", "--filter", "dangling=true"]);
    assert_eq!(q.ok().trim(), dangling);
    let out = d.docker([
        "images",
        "--format",
        "{{.ID}} {{.Repository}}",
        "--no-trunc",
        "multilayer",
    ]);
    assert_eq!(out.ok().trim(), format!("{ml} multilayer"));
    let out = d.docker(["images", "--format", "{{json .}}", "busybox"]);
    let row: Value = serde_json::from_str(out.ok().trim()).expect("{{json .}} is JSON");
    assert_eq!(row["Repository"], "busybox");
    assert_eq!(row["ID"], short(&bb));
}

#[test]
fn image_inspect_shows_config_and_layers() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    let img = inspect(&d, "busybox");
    assert_eq!(img["Id"], id);
    assert_eq!(img["RepoTags"], json!(["busybox:latest"]));
    assert_eq!(img["RootFS"]["Type"], "layers");
    assert_eq!(img["RootFS"]["Layers"], json!(diff_ids(busybox())));
    assert_eq!(img["Config"]["Cmd"], json!(["sh"]));
    assert_eq!(img["Config"]["Env"], json!([DEFAULT_PATH]));
    assert_eq!(img["Os"], "linux");
    assert_eq!(img["Architecture"], berth_fixtures::host_architecture());
    assert_eq!(img["Created"], "2024-01-01T00:00:00Z");
    assert!(img["Size"].as_u64().is_some_and(|s| s > 1_000_000), "{img}");
    assert_eq!(
        d.docker(["image", "inspect", "-f", "{{.Os}}", "busybox"])
            .ok(),
        "linux\n"
    );
    let by_short = d.docker(["image", "inspect", "-f", "{{.Id}}", short(&id)]);
    assert_eq!(by_short.ok().trim(), id);
    let generic = d.docker([
        "inspect",
        "--type",
        "image",
        "-f",
        "{{.Id}} {{json .Config.Cmd}}",
        "busybox:latest",
    ]);
    assert_eq!(generic.ok().trim(), format!("{id} [\"sh\"]"));
    let ml = d.load_multilayer();
    let img = inspect(&d, "multilayer");
    assert_eq!(img["Id"], ml);
    assert_eq!(img["RootFS"]["Layers"], json!(diff_ids(multilayer())));
    assert_eq!(img["Config"]["WorkingDir"], "/data");
    assert_eq!(
        img["Config"]["Labels"],
        json!({"berth.fixture": "multilayer"})
    );
}

#[test]
fn history_lists_layers_and_empty_layers() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    let rows = text::table(d.docker(["history", "busybox"]).ok());
    assert_eq!(
        rows[0],
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[1][0], short(&id));
    assert_eq!(rows[1][3], "0B");
    assert_eq!(rows[2][0], "<missing>");
    let q = d.docker(["history", "-q", "busybox"]);
    assert_eq!(q.lines(), [short(&id), "<missing>"]);
    let out = d.docker([
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.CreatedBy}}|{{.Size}}",
        "busybox",
    ]);
    let layer_hex = diff_ids(busybox())[0]
        .trim_start_matches("sha256:")
        .to_string();
    let lines = out.lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], format!("{id}|/bin/sh -c #(nop)  CMD [\"sh\"]|0B"));
    let add = format!("<missing>|/bin/sh -c #(nop) ADD file:{layer_hex} in / |");
    assert!(
        lines[1].starts_with(&add) && lines[1].ends_with("MB"),
        "{out}"
    );
    let missing = d.docker(["image", "history", "nonexist"]);
    assert!(
        missing
            .fails_with(1)
            .contains("No such image: nonexist:latest"),
        "{missing}"
    );
}

#[test]
fn tag_then_rmi_untags_and_deletes() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    assert_eq!(d.docker(["tag", "busybox", "foo/bar:1"]).ok(), "");
    let out = d.docker(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert_eq!(
        sorted_lines(out.ok()),
        [
            format!("busybox:latest {}", short(&id)),
            format!("foo/bar:1 {}", short(&id))
        ]
    );
    assert_eq!(d.docker(["rmi", "foo/bar:1"]).ok(), "Untagged: foo/bar:1\n");
    assert_eq!(d.docker(["images", "-q"]).lines(), [short(&id)]);

    d.docker(["tag", &id, "foo/bar:2"]).ok();
    let err = d.docker(["rmi", short(&id)]);
    assert!(err.fails_with(1).contains("must be forced"), "{err}");
    assert!(err.stderr.contains(short(&id)), "{err}");
    assert_eq!(
        d.docker(["images", "-q"]).lines().len(),
        2,
        "a refused rmi must not remove tags"
    );

    let out = d.docker(["rmi", "-f", short(&id)]);
    let lines = out.lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("Untagged: "))
            .copied()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["Untagged: busybox:latest", "Untagged: foo/bar:2"]),
        "{out}"
    );
    assert!(lines.contains(&format!("Deleted: {id}").as_str()), "{out}");
    d.assert_empty();
}

#[test]
fn rmi_of_the_last_tag_deletes_the_image() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    let chain = berth_e2e::chain_ids(&diff_ids(busybox()));
    let out = d.docker(["rmi", "busybox"]);
    let lines = out.lines();
    assert_eq!(
        lines[..2],
        [
            "Untagged: busybox:latest".to_string(),
            format!("Deleted: {id}")
        ],
        "{out}"
    );
    // Docker may go on listing the layers it deleted.
    for l in &lines[2..] {
        let layer = l
            .strip_prefix("Deleted: ")
            .unwrap_or_else(|| panic!("unexpected line {l:?}:\n{out}"));
        assert!(
            chain.iter().any(|c| c == layer),
            "{l:?} is not a layer of busybox:\n{out}"
        );
    }
    d.assert_empty();
    let out = d.docker(["rmi", "busybox"]);
    assert!(
        out.fails_with(1).contains("No such image: busybox:latest"),
        "{out}"
    );
}

#[test]
fn save_rmi_load_round_trip_keeps_the_id() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    let ml = d.load_multilayer();
    let saved = d.path("saved.tar");
    assert_eq!(
        d.docker(["save", "-o", arg(&saved), "busybox", "multilayer:latest"])
            .ok(),
        ""
    );
    let by_id = d.path("by-id.tar");
    d.docker(["save", "-o", arg(&by_id), &id]).ok();
    d.docker(["rmi", "busybox", "multilayer"]).ok();
    d.assert_empty();

    let out = d.docker(["load", "-i", arg(&saved)]);
    assert_eq!(
        sorted_lines(out.ok()),
        [
            "Loaded image: busybox:latest",
            "Loaded image: multilayer:latest"
        ]
    );
    assert_eq!(inspect(&d, "busybox")["Id"], id);
    assert_eq!(inspect(&d, "multilayer")["Id"], ml);
    assert_eq!(
        inspect(&d, "multilayer")["RootFS"]["Layers"],
        json!(diff_ids(multilayer()))
    );
    d.assert_no_garbage();

    d.docker(["rmi", "busybox", "multilayer"]).ok();
    let out = d.docker(["load", "-i", arg(&by_id)]);
    assert_eq!(
        out.ok().trim(),
        format!("Loaded image ID: {id}"),
        "an image saved by ID loads untagged"
    );
    assert_eq!(
        d.docker(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .ok()
            .trim(),
        "<none>:<none>"
    );

    // `docker load` without -i reads stdin.
    let bytes = std::fs::read(&saved).expect("read saved.tar");
    let out = d.docker_stdin(["load"], &bytes);
    assert_eq!(
        sorted_lines(out.ok()),
        [
            "Loaded image: busybox:latest",
            "Loaded image: multilayer:latest"
        ]
    );
    d.assert_no_garbage();
}

#[test]
fn import_rootfs_with_changes() {
    require_root!();
    let d = Daemon::start();
    let rootfs = berth_fixtures::busybox_rootfs_tar().expect("busybox rootfs");
    let path = d.write("rootfs.tar", &rootfs);
    let out = d.docker([
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV A=1",
        "-m",
        "from e2e",
        arg(&path),
        "imported:v1",
    ]);
    let id = out.ok().trim().to_string();
    assert!(
        id.len() == 71
            && id.starts_with("sha256:")
            && id[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "import prints the new ID: {out}"
    );
    let img = inspect(&d, "imported:v1");
    assert_eq!(img["Id"], id);
    assert_eq!(img["Config"]["Cmd"], json!(["sh"]));
    assert!(
        img["Config"]["Env"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("A=1"))),
        "{img}"
    );
    assert_eq!(
        img["RootFS"]["Layers"],
        json!(diff_ids(busybox())),
        "the layer is the tar as given"
    );
    assert_eq!(img["Comment"], "from e2e");
    let comment = d.docker(["history", "--format", "{{.Comment}}", "imported:v1"]);
    assert_eq!(comment.lines(), ["from e2e"]);

    let out = d.docker_stdin(["import", "-", "imported:stdin"], &rootfs);
    assert!(out.ok().starts_with("sha256:"), "{out}");
    assert_eq!(
        inspect(&d, "imported:stdin")["RootFS"]["Layers"],
        json!(diff_ids(busybox()))
    );
    d.assert_no_garbage();
}

#[test]
fn prune_removes_dangling_then_all_images() {
    require_root!();
    let d = Daemon::start();
    let bb = d.load_busybox();
    let dangling = d.load_dangling();
    let dangling_layer = berth_e2e::store::hex_of(&diff_ids(fx::small())[0]).to_string();
    assert!(d.store().layers.contains(&dangling_layer));

    let out = d.docker(["image", "prune", "-f"]);
    assert!(out.ok().contains(&format!("deleted: {dangling}")), "{out}");
    assert!(
        !out.stdout.contains(&bb),
        "prune without -a keeps tagged images:\n{out}"
    );
    let reclaimed = out.lines().last().copied().unwrap_or_default();
    assert!(
        reclaimed.starts_with("Total reclaimed space: ")
            && reclaimed != "Total reclaimed space: 0B",
        "{out}"
    );
    assert_eq!(d.image_ids(), std::slice::from_ref(&bb));
    assert!(
        !d.store().layers.contains(&dangling_layer),
        "the dangling image's layer dir is gone"
    );
    d.assert_no_garbage();

    let out = d.docker(["image", "prune", "-f"]);
    assert_eq!(out.ok().trim(), "Total reclaimed space: 0B");

    let out = d.docker(["image", "prune", "-a", "-f"]);
    assert!(out.ok().contains("untagged: busybox:latest"), "{out}");
    assert!(out.stdout.contains(&format!("deleted: {bb}")), "{out}");
    assert!(!out.stdout.contains("Total reclaimed space: 0B"), "{out}");
    d.assert_empty();
}

#[test]
fn system_df_counts_images_and_shared_layers_once() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    d.load_multilayer();
    let out = d.docker([
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Active}}",
    ]);
    assert_eq!(out.lines()[0], "Images 2 0", "{out}");
    let rows = text::table(d.docker(["system", "df"]).ok());
    assert_eq!(rows[1][..3], ["Images", "2", "0"]);
    assert!(rows[1][4].ends_with("(100%)"), "{rows:?}");

    let df = d.get_json("/system/df");
    let list = d.get_json("/images/json");
    let ml_size = list
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|i| i["RepoTags"] == json!(["multilayer:latest"]))
        })
        .map(|i| i["Size"].as_u64().expect("Size"))
        .expect("multilayer is listed");
    // multilayer's base layer is busybox's only layer: counted once.
    assert_eq!(df["LayersSize"].as_u64(), Some(ml_size), "{df}");
    assert_eq!(df["Images"].as_array().map(Vec::len), Some(2));
}

#[test]
fn events_report_image_actions() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    d.docker(["tag", "busybox", "ev:1"]).ok();
    d.docker(["rmi", "ev:1"]).ok();
    d.docker(["rmi", "busybox"]).ok();
    let until = (unix_now() + 2).to_string();
    let out = d.docker([
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--format",
        "{{.Type}} {{.Action}}",
    ]);
    assert_eq!(
        out.lines(),
        [
            "image load",
            "image tag",
            "image untag",
            "image untag",
            "image delete"
        ],
        "{out}"
    );
    let until = (unix_now() + 1).to_string();
    let out = d.docker([
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "event=tag",
        "--format",
        "{{.Actor.ID}} {{.Actor.Attributes.name}}",
    ]);
    assert_eq!(out.lines(), [format!("{id} ev:1")], "{out}");
}
