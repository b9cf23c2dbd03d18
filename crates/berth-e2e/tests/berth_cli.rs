//! The berth CLI against berthd: the image flows of docker_cli.rs, and, for
//! commands whose output does not depend on the client's version, the
//! berth CLI's stdout and exit code compared with the docker CLI's against
//! the same daemon (relative times like `5 seconds ago` normalized).

use std::collections::BTreeSet;
use std::process::Command;

use berth_e2e::fixtures::{self as fx, busybox, diff_ids, id_of, multilayer, short};
use berth_e2e::text::{normalize_times, sorted_lines, table};
use berth_e2e::{Daemon, Run, arg, require_root, unix_now};
use serde_json::{Value, json};

/// Equal header line and equal multiset of the other lines.
fn same_rows(a: &str, b: &str) -> bool {
    fn rows(s: &str) -> (Option<&str>, Vec<&str>) {
        let mut lines = s.lines();
        let head = lines.next();
        let mut rest: Vec<&str> = lines.collect();
        rest.sort_unstable();
        (head, rest)
    }
    rows(a) == rows(b)
}

/// Compares a docker run and a berth run of `args`: equal exit codes and
/// equal stdout with relative times normalized. `docker images` prints the
/// repositories of one image in Go map order (random), so for image
/// listings the rows below the header may come in any order.
fn compare(args: &[&str], docker: &Run, berth: &Run) -> Result<(), String> {
    let mut problems = Vec::new();
    if berth.code() != docker.code() {
        problems.push(format!(
            "exit code: berth {} vs docker {}",
            berth.code(),
            docker.code()
        ));
    }
    let (b, k) = (
        normalize_times(&berth.stdout),
        normalize_times(&docker.stdout),
    );
    let listing = matches!(
        args,
        ["images", ..] | ["image", "ls", ..] | ["image", "list", ..]
    );
    if b != k && !(listing && same_rows(&b, &k)) {
        problems.push(format!(
            "stdout differs:\n-- berth --\n{b}\n-- docker --\n{k}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}\n-- berth stderr --\n{}\n-- docker stderr --\n{}",
            problems.join("; "),
            berth.stderr.trim_end(),
            docker.stderr.trim_end()
        ))
    }
}

/// Panics listing every mismatch, if any.
#[track_caller]
fn assert_no_mismatch(mismatches: &[String]) {
    assert!(
        mismatches.is_empty(),
        "the berth CLI differs from the docker CLI in {} case(s):\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}

/// Runs each command with the docker CLI and then the berth CLI and
/// compares them; only for commands that do not change the daemon's state.
#[track_caller]
fn same_all(d: &Daemon, cases: &[&[&str]]) {
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|args| compare(args, &d.docker(*args), &d.berth(*args)).err())
        .collect();
    assert_no_mismatch(&mismatches);
}

/// For state-changing commands: runs each with docker after `reset`, then
/// with berth after `reset` again, and compares them.
#[track_caller]
fn same_effect_all(d: &Daemon, cases: &[&[&str]], reset: impl Fn(&Daemon)) {
    let mut mismatches = Vec::new();
    for args in cases {
        reset(d);
        let docker = d.docker(*args);
        reset(d);
        let berth = d.berth(*args);
        if let Err(e) = compare(args, &docker, &berth) {
            mismatches.push(e);
        }
    }
    assert_no_mismatch(&mismatches);
}

// ---- flows with the berth CLI alone ---------------------------------------

#[test]
fn berth_version_and_info() {
    require_root!();
    let d = Daemon::start();
    let out = d.berth([
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
    ]);
    assert_eq!(out.ok().trim(), "1.47 1.24");
    let out = d.berth(["version"]);
    assert!(out.ok().contains("Server:"), "{out}");
    assert!(out.stdout.contains("1.47"), "{out}");
    assert_eq!(
        d.berth(["info", "--format", "{{.Images}}"]).ok().trim(),
        "0"
    );
    d.load_busybox();
    assert_eq!(
        d.berth(["info", "--format", "{{.Images}}"]).ok().trim(),
        "1"
    );
    let out = d.berth(["info"]);
    assert!(out.ok().contains(" Images: 1\n"), "{out}");
}

#[test]
fn berth_host_from_the_environment() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let mut cmd = Command::new(berth_e2e::bin("berth"));
    cmd.args(["images", "-q"])
        .env("BERTH_HOST", format!("unix://{}", d.sock.display()));
    let out = Run::exec(cmd, None);
    assert_eq!(out.ok().trim(), short(&id_of(busybox())));
}

#[test]
fn berth_loads_all_archive_formats() {
    require_root!();
    let d = Daemon::start();
    let id = id_of(busybox());
    let cases: [(&str, Vec<u8>, String); 3] = [
        (
            "save.tar",
            fx::save_archive(&[(busybox(), &["busybox:latest"])]),
            "Loaded image: busybox:latest".into(),
        ),
        (
            "legacy.tar",
            fx::legacy_archive(&[(busybox(), &["busybox:latest"])]),
            "Loaded image: busybox:latest".into(),
        ),
        (
            "oci.tar",
            fx::oci_archive(&[(busybox(), &["busybox:latest"])]),
            format!("Loaded image ID: {id}"),
        ),
    ];
    for (name, bytes, said) in cases {
        let path = d.write(name, &bytes);
        let out = d.berth(["load", "-i", arg(&path)]);
        assert_eq!(out.ok().trim(), said, "{name}");
        assert_eq!(d.image_ids(), std::slice::from_ref(&id), "{name}");
        assert_eq!(
            d.inspect(&id)["RootFS"]["Layers"],
            json!(diff_ids(busybox()))
        );
        d.assert_no_garbage();
        d.berth(["rmi", "-f", &id]).ok();
        d.assert_empty();
    }
    // From stdin.
    let out = d.berth_stdin(
        ["load"],
        &fx::save_archive(&[(busybox(), &["busybox:latest"])]),
    );
    assert_eq!(out.ok().trim(), "Loaded image: busybox:latest");
    let out = d.berth_stdin(
        ["image", "load", "-q"],
        &fx::save_archive(&[(multilayer(), &["ml:1"])]),
    );
    assert_eq!(out.ok().trim(), "Loaded image: ml:1");
}

#[test]
fn berth_lists_and_inspects_images() {
    require_root!();
    let d = Daemon::start();
    let bb = d.load_busybox();
    let ml = d.load_multilayer();
    let dangling = d.load_dangling();
    let rows = table(d.berth(["images"]).ok());
    assert_eq!(
        rows[0],
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    );
    assert!(
        rows.iter()
            .any(|r| r[..3] == ["busybox", "latest", short(&bb)]),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
    let q = sorted_lines(d.berth(["image", "ls", "-q"]).ok());
    let mut want: Vec<String> = [&bb, &ml, &dangling]
        .iter()
        .map(|i| short(i).to_string())
        .collect();
    want.sort();
    assert_eq!(q, want);
    let f = |args: &[&str]| {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        sorted_lines(d.berth(&a).ok())
    };
    assert_eq!(
        f(&[]),
        ["<none>:<none>", "busybox:latest", "multilayer:latest"]
    );
    assert_eq!(f(&["--filter", "dangling=true"]), ["<none>:<none>"]);
    assert_eq!(f(&["--filter", "reference=busy*"]), ["busybox:latest"]);
    assert_eq!(
        f(&["--filter", "label=berth.fixture=multilayer"]),
        ["multilayer:latest"]
    );
    let out = d.berth(["images", "--no-trunc", "--format", "{{.ID}}", "busybox"]);
    assert_eq!(out.ok().trim(), bb);

    let out = d.berth(["image", "inspect", "busybox"]);
    let v: Value =
        serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!(v[0]["Id"], bb);
    assert_eq!(v[0]["RootFS"]["Layers"], json!(diff_ids(busybox())));
    assert_eq!(v[0]["Config"]["Cmd"], json!(["sh"]));
    assert_eq!(
        d.berth(["image", "inspect", "-f", "{{.Os}}", "busybox"])
            .ok(),
        "linux\n"
    );
    assert_eq!(
        d.berth(["inspect", "-f", "{{.Id}}", "multilayer"])
            .ok()
            .trim(),
        ml
    );
    let out = d.berth(["image", "inspect", "nonexist"]);
    assert!(
        out.fails_with(1).contains("No such image: nonexist"),
        "{out}"
    );

    let h = d.berth(["history", "-q", "busybox"]);
    assert_eq!(h.lines(), [short(&bb), "<missing>"]);
    let h = d.berth([
        "image",
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "busybox",
    ]);
    assert_eq!(h.lines()[0], r#"/bin/sh -c #(nop)  CMD ["sh"]"#);
}

#[test]
fn berth_tags_and_removes_images() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    assert_eq!(d.berth(["tag", "busybox", "foo/bar:1"]).ok(), "");
    assert_eq!(d.berth(["image", "tag", "busybox", "foo/bar:2"]).ok(), "");
    let out = d.berth(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(
        sorted_lines(out.ok()),
        ["busybox:latest", "foo/bar:1", "foo/bar:2"]
    );
    assert_eq!(d.berth(["rmi", "foo/bar:1"]).ok(), "Untagged: foo/bar:1\n");
    assert_eq!(
        d.berth(["image", "rm", "foo/bar:2"]).ok(),
        "Untagged: foo/bar:2\n"
    );
    d.berth(["tag", "busybox", "foo/bar:3"]).ok();
    let out = d.berth(["rmi", short(&id)]);
    assert!(out.fails_with(1).contains("must be forced"), "{out}");
    let out = d.berth(["rmi", "-f", short(&id)]);
    let lines: BTreeSet<&str> = out.lines().into_iter().collect();
    assert!(
        lines.contains("Untagged: busybox:latest") && lines.contains("Untagged: foo/bar:3"),
        "{out}"
    );
    assert!(lines.contains(format!("Deleted: {id}").as_str()), "{out}");
    d.assert_empty();
    let out = d.berth(["tag", "busybox", "Bad:Name"]);
    out.fails_with(1);
    let out = d.berth(["rmi", "nonexist"]);
    assert!(
        out.fails_with(1).contains("No such image: nonexist:latest"),
        "{out}"
    );
}

#[test]
fn berth_save_and_load_round_trip() {
    require_root!();
    let d = Daemon::start();
    let bb = d.load_busybox();
    let ml = d.load_multilayer();
    let saved = d.path("saved.tar");
    assert_eq!(
        d.berth(["save", "-o", arg(&saved), "busybox", "multilayer"])
            .ok(),
        ""
    );
    let one = d.path("one.tar");
    d.berth(["image", "save", "--output", arg(&one), "busybox"])
        .ok();
    d.api_remove_all();
    d.assert_empty();
    let out = d.berth(["load", "-i", arg(&saved)]);
    assert_eq!(
        sorted_lines(out.ok()),
        [
            "Loaded image: busybox:latest",
            "Loaded image: multilayer:latest"
        ]
    );
    let mut want = vec![bb.clone(), ml];
    want.sort();
    assert_eq!(d.image_ids(), want);
    d.assert_no_garbage();
    d.api_remove_all();
    let out = d.berth(["image", "load", "--input", arg(&one)]);
    assert_eq!(out.ok().trim(), "Loaded image: busybox:latest");
    assert_eq!(d.image_ids(), [bb]);
    // save to stdout
    let mut cmd = d.berth_command(["save", "busybox"]);
    let raw = cmd.output().expect("run berth save");
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        raw.stdout,
        std::fs::read(&one).expect("read one.tar"),
        "save to stdout = save -o"
    );
}

#[test]
fn berth_imports_a_rootfs() {
    require_root!();
    let d = Daemon::start();
    let rootfs = berth_fixtures::busybox_rootfs_tar().expect("busybox rootfs");
    let path = d.write("rootfs.tar", &rootfs);
    let out = d.berth([
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        "-c",
        "ENV A=1",
        "-m",
        "via berth",
        arg(&path),
        "imp:1",
    ]);
    let id = out.ok().trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    let img = d.inspect("imp:1");
    assert_eq!(img["Id"], id);
    assert_eq!(img["Config"]["Cmd"], json!(["sh"]));
    assert!(
        img["Config"]["Env"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("A=1"))),
        "{img}"
    );
    assert_eq!(img["Comment"], "via berth");
    let out = d.berth_stdin(["image", "import", "-", "imp:2"], &rootfs);
    assert!(out.ok().starts_with("sha256:"), "{out}");
    assert_eq!(
        d.inspect("imp:2")["RootFS"]["Layers"],
        json!(diff_ids(busybox()))
    );
    d.assert_no_garbage();
}

#[test]
fn berth_prunes_images() {
    require_root!();
    let d = Daemon::start();
    let bb = d.load_busybox();
    let dangling = d.load_dangling();
    let out = d.berth(["image", "prune", "-f"]);
    assert!(out.ok().contains(&format!("deleted: {dangling}")), "{out}");
    assert_eq!(d.image_ids(), std::slice::from_ref(&bb));
    d.assert_no_garbage();
    let out = d.berth(["image", "prune", "-a", "-f"]);
    assert!(out.ok().contains(&format!("deleted: {bb}")), "{out}");
    d.assert_empty();
}

#[test]
fn berth_system_df_and_events() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    d.load_multilayer();
    let out = d.berth(["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert_eq!(out.lines()[0], "Images 2", "{out}");
    let rows = table(d.berth(["system", "df"]).ok());
    assert_eq!(rows[1][..3], ["Images", "2", "0"]);
    d.berth(["tag", "busybox", "ev:1"]).ok();
    d.berth(["rmi", "ev:1"]).ok();
    let until = (unix_now() + 2).to_string();
    let out = d.berth([
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
        ["image load", "image load", "image tag", "image untag"],
        "{out}"
    );
    let until = (unix_now() + 1).to_string();
    let out = d.berth([
        "system",
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "event=tag",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    assert_eq!(out.lines(), ["ev:1"], "{out}");
}

#[test]
fn berth_reports_load_errors() {
    require_root!();
    let d = Daemon::start();
    let path = d.write(
        "garbage.tar",
        &berth_fixtures::corrupt_archive("layer-digest-mismatch").expect("fixture"),
    );
    let out = d.berth(["load", "-i", arg(&path)]);
    let err = out.fails_with(1);
    assert!(
        err.contains("Error response from daemon: ") && err.contains("digest"),
        "{out}"
    );
    d.assert_empty();
    let out = d.berth(["load", "-i", arg(&d.path("does-not-exist.tar"))]);
    out.fails_with(1);
}

// ---- the berth CLI prints what the docker CLI prints --------------------

#[test]
fn same_output_for_listings_inspect_and_history() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    d.load_multilayer();
    d.load_dangling();
    d.docker(["tag", "busybox", "localhost:5000/team/busybox:1.36"])
        .ok();
    let bb = id_of(busybox());
    same_all(
        &d,
        &[
            &["images"][..],
            &["images", "-a"],
            &["images", "-q"],
            &["images", "--no-trunc"],
            &["images", "busybox"],
            &["images", "--digests"],
            &[
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}",
            ],
            &[
                "images",
                "--format",
                "table {{.Repository}}\t{{.Tag}}\t{{.Size}}",
            ],
            &["images", "--format", "{{json .}}"],
            &["images", "--filter", "dangling=true"],
            &["images", "--filter", "reference=busy*"],
            &["images", "--filter", "label=berth.fixture=multilayer"],
            &["image", "ls", "--filter", "before=multilayer"],
            &["image", "inspect", "busybox"],
            &["image", "inspect", "busybox", "multilayer"],
            &[
                "image",
                "inspect",
                "-f",
                "{{.Id}} {{.Os}} {{json .Config.Cmd}} {{.RootFS.Layers}}",
                "busybox",
            ],
            &[
                "image",
                "inspect",
                "--format",
                "{{json .Config}}",
                short(&bb),
            ],
            &["inspect", "multilayer"],
            &["inspect", "--type", "image", "-f", "{{.Size}}", "busybox"],
            &["history", "busybox"],
            &["history", "multilayer"],
            &["history", "--no-trunc", "multilayer"],
            &["history", "-q", "busybox"],
            &["history", "--human=false", "busybox"],
            &[
                "history",
                "--format",
                "{{.ID}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}",
                "multilayer",
            ],
            &[
                "image",
                "history",
                "--format",
                "table {{.ID}}\t{{.Size}}",
                "busybox",
            ],
            &["system", "df"],
            &["system", "df", "--format", "{{.Type}} {{.TotalCount}}"],
            &["system", "df", "--format", "{{json .}}"],
            &[
                "info",
                "--format",
                "{{.Images}} {{.Driver}} {{.DockerRootDir}}",
            ],
            &[
                "version",
                "--format",
                "{{.Server.Version}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
            ],
        ],
    );
}

#[test]
fn same_output_for_errors() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    d.docker(["tag", "busybox", "two:tags"]).ok();
    same_all(
        &d,
        &[
            &["rmi", "nonexist"][..],
            &["image", "inspect", "nonexist"],
            &["inspect", "nonexist"],
            &["history", "nonexist"],
            &["tag", "nonexist", "x:1"],
            &["tag", "busybox", "Bad:Name"],
            &["images", "--filter", "foo=bar"],
            &["images", "--filter", "dangling=maybe"],
            &["rmi", short(&id_of(busybox()))],
            &["save", "-o", "/nonexistent-dir/x.tar", "busybox"],
            &["load", "-i", "/nonexistent-file.tar"],
        ],
    );
}

/// The three-image archive the state-changing comparisons start from.
fn base_archive() -> Vec<u8> {
    fx::save_archive(&[
        (busybox(), &["busybox:latest"]),
        (multilayer(), &["ml:1", "ml:2"]),
    ])
}

#[test]
fn same_output_for_load() {
    require_root!();
    let d = Daemon::start();
    let save = d.write("save.tar", &base_archive());
    let legacy = d.write(
        "legacy.tar",
        &fx::legacy_archive(&[(busybox(), &["busybox:latest"])]),
    );
    let oci = d.write(
        "oci.tar",
        &fx::oci_archive(&[(busybox(), &["busybox:latest"])]),
    );
    let untagged = d.write("untagged.tar", &fx::save_archive(&[(fx::small(), &[])]));
    same_effect_all(
        &d,
        &[
            &["load", "-i", arg(&save)],
            &["load", "-q", "-i", arg(&save)],
            &["image", "load", "--input", arg(&legacy)],
            &["load", "-i", arg(&oci)],
            &["load", "-i", arg(&untagged)],
            &["load", "-i", "/nonexistent.tar"],
        ],
        Daemon::api_remove_all,
    );
    // Loading what is already there.
    same_effect_all(&d, &[&["load", "-i", arg(&save)]], |_| {});
}

#[test]
fn same_output_for_tag_and_rmi() {
    require_root!();
    let d = Daemon::start();
    let base = base_archive();
    let reload = |d: &Daemon| {
        d.api_remove_all();
        d.api_load(&base);
    };
    let ml_id = id_of(multilayer());
    let ml = short(&ml_id);
    same_effect_all(
        &d,
        &[
            &["tag", "busybox", "x/y:z"],
            &["image", "tag", "ml:1", "ml:2"],
            &["rmi", "ml:1"],
            &["rmi", "ml:1", "ml:2"],
            &["rmi", "busybox"],
            &["rmi", "-f", ml],
            &["rmi", ml],
            &["image", "rm", "busybox", "nonexist"],
        ],
        reload,
    );
}

#[test]
fn same_output_for_prune() {
    require_root!();
    let d = Daemon::start();
    let base = base_archive();
    let dangling = fx::save_archive(&[(fx::small(), &[])]);
    let reset = |d: &Daemon| {
        d.api_remove_all();
        d.api_load(&base);
        d.api_load(&dangling);
    };
    same_effect_all(
        &d,
        &[
            &["image", "prune", "-f"],
            &["image", "prune", "-a", "-f"],
            &[
                "image",
                "prune",
                "-a",
                "-f",
                "--filter",
                "label=berth.fixture=multilayer",
            ],
        ],
        reset,
    );
}

#[test]
fn same_output_for_events() {
    require_root!();
    let d = Daemon::start();
    let since = unix_now().saturating_sub(1).to_string();
    d.load_busybox();
    d.docker(["tag", "busybox", "ev:1"]).ok();
    d.docker(["rmi", "ev:1"]).ok();
    let saved = d.path("s.tar");
    d.docker(["save", "-o", arg(&saved), "busybox"]).ok();
    d.docker(["rmi", "busybox"]).ok();
    // An `until` in the past: both clients get the same, finished stream.
    let until = (unix_now() + 1).to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    while unix_now() <= until.parse::<u64>().expect("number") {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (since, until) = (since.as_str(), until.as_str());
    let cases: [&[&str]; 5] = [
        &[
            "events",
            "--since",
            since,
            "--until",
            until,
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
        ],
        &[
            "events",
            "--since",
            since,
            "--until",
            until,
            "--format",
            "{{json .Actor}}",
        ],
        &[
            "events",
            "--since",
            since,
            "--until",
            until,
            "--filter",
            "event=untag",
            "--format",
            "{{.Action}}",
        ],
        &[
            "events",
            "--since",
            since,
            "--until",
            until,
            "--filter",
            "type=image",
            "--filter",
            "event=delete",
            "--format",
            "{{.ID}}",
        ],
        &[
            "system",
            "events",
            "--since",
            since,
            "--until",
            until,
            "--format",
            "{{.Scope}} {{.Type}}",
        ],
    ];
    for args in cases {
        assert!(
            !d.docker(args).ok().is_empty(),
            "docker shows no events for {args:?}"
        );
    }
    same_all(&d, &cases);
}

#[test]
fn same_bytes_from_save() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    d.load_multilayer();
    let a = d.path("docker.tar");
    let b = d.path("berth.tar");
    d.docker(["save", "-o", arg(&a), "busybox", "multilayer"])
        .ok();
    d.berth(["save", "-o", arg(&b), "busybox", "multilayer"])
        .ok();
    assert!(
        std::fs::read(&a).expect("docker.tar") == std::fs::read(&b).expect("berth.tar"),
        "save -o archives differ"
    );
}
