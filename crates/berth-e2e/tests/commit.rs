//! `docker diff` and `docker commit` through the real docker CLI against
//! berthd: what a container added, changed and deleted (a file of the
//! image, a whole directory, a replaced directory), an image committed from
//! it whose containers see exactly that, `--change`/`-m`/`-a`/`--pause`,
//! errors, and the committed image pushed to a registry and pulled into a
//! fresh berthd, and saved from berthd and run by a real dockerd.

use std::time::Duration;

use berth_e2e::{Daemon, Dockerd, Registry, arg, require_root, wait_for};
use serde_json::json;

/// What the container does to busybox's filesystem: adds a file, appends
/// to a file of the image, deletes a file of the image and a whole
/// directory, replaces a directory with a new one, adds a directory.
const CHANGES: &str = "echo new > /new.txt; echo more >> /etc/passwd; rm /etc/group; \
     rm -rf /home; rm -rf /usr; mkdir /usr; echo x > /usr/f; \
     mkdir /var/lib; echo d > /var/lib/data";

/// `docker diff` of it, in Docker's order and wording.
const DIFF: &[&str] = &[
    "C /etc",
    "C /etc/passwd",
    "D /etc/group",
    "A /new.txt",
    "C /usr",
    "A /usr/f",
    "D /usr/bin",
    "C /var",
    "A /var/lib",
    "A /var/lib/data",
    "D /home",
];

/// Run in a container of the committed image: prints what it sees.
const LOOK: &str = "tail -n1 /etc/passwd; cat /new.txt; ls /usr; cat /usr/f /var/lib/data; \
     for p in /etc/group /home /usr/bin; do test -e $p && echo \"$p is back\"; done; echo \"FOO=$FOO\"";

/// What [`LOOK`] prints in a container of the committed image.
const SEEN: &str = "more\nnew\nf\nx\nd\nFOO=\n";

/// [`Daemon::assert_no_garbage`] once removed containers' directories,
/// deleted in the background, are gone from `tmp/`.
fn assert_clean(d: &Daemon) {
    wait_for(Duration::from_secs(10), || {
        d.store().tmp.is_empty().then_some(())
    });
    d.assert_no_garbage();
}

fn daemon() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

/// A stopped container named `name` that made [`CHANGES`].
fn changed_container(d: &Daemon, name: &str) {
    d.docker(["run", "--name", name, "busybox", "sh", "-c", CHANGES])
        .ok();
}

#[test]
fn diff_lists_what_a_container_added_changed_and_deleted() {
    require_root!();
    let d = daemon();
    changed_container(&d, "changed");
    let out = d.docker(["diff", "changed"]);
    assert_eq!(out.lines(), DIFF, "{out}");
    let out = d.berth(["diff", "changed"]);
    assert_eq!(out.lines(), DIFF, "{out}");
    let out = d.docker(["container", "diff", "changed"]);
    assert_eq!(out.lines(), DIFF, "{out}");
    // The API's shape: Kind 0 modified, 1 added, 2 deleted.
    let v = d.get_json("/containers/changed/changes");
    assert_eq!(v[0], json!({"Path": "/etc", "Kind": 0}));
    assert_eq!(v[2], json!({"Path": "/etc/group", "Kind": 2}));
    assert_eq!(v[3], json!({"Path": "/new.txt", "Kind": 1}));

    // A container that changed nothing has no changes: what berth itself
    // puts in a container (hosts, hostname, resolv.conf, mount points of
    // /proc, /sys, /dev) is not part of its diff, as in Docker.
    d.docker(["run", "--name", "quiet", "busybox", "true"]).ok();
    let out = d.docker(["diff", "quiet"]);
    assert_eq!(out.ok(), "", "{out}");
    assert_eq!(
        d.get_json("/containers/quiet/changes"),
        serde_json::Value::Null
    );
    d.docker(["create", "--name", "fresh", "busybox"]).ok();
    assert_eq!(d.docker(["diff", "fresh"]).ok(), "");

    // A running container: changes show up while it runs.
    d.docker([
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "touch /tmp/one; while sleep 0.05; do test -e /go && touch /tmp/two && exec sleep 1000; done",
    ])
    .ok();
    let first = wait_for(Duration::from_secs(10), || {
        let out = d.docker(["diff", "live"]);
        out.ok()
            .contains("A /tmp/one")
            .then(|| out.lines().join(","))
    });
    assert_eq!(first.as_deref(), Some("C /tmp,A /tmp/one"));
    d.docker(["exec", "live", "touch", "/go"]).ok();
    let second = wait_for(Duration::from_secs(10), || {
        let out = d.docker(["diff", "live"]);
        out.ok()
            .contains("A /tmp/two")
            .then(|| out.lines().join(","))
    });
    assert_eq!(
        second.as_deref(),
        Some("A /go,C /tmp,A /tmp/one,A /tmp/two")
    );
    d.docker(["rm", "-f", "live"]).ok();

    let out = d.docker(["diff", "nosuch"]);
    assert_eq!(out.code(), 1, "{out}");
    assert_eq!(
        out.stderr.trim(),
        "Error response from daemon: No such container: nosuch"
    );
    d.docker(["rm", "-f", "changed", "quiet", "fresh"]).ok();
    assert_clean(&d);
}

#[test]
fn commit_makes_an_image_whose_containers_see_exactly_the_changes() {
    require_root!();
    let d = daemon();
    changed_container(&d, "changed");
    let out = d.docker([
        "commit",
        "-m",
        "made by hand",
        "-a",
        "Ann <ann@example.com>",
        "--change",
        "CMD [\"cat\", \"/new.txt\"]",
        "--change",
        "ENV FOO=bar",
        "--change",
        "LABEL made=commit",
        "changed",
        "committed:v1",
    ]);
    let id = out.ok().trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    let img = d.inspect("committed:v1");
    assert_eq!(img["Id"], id);
    assert_eq!(img["Author"], "Ann <ann@example.com>");
    assert_eq!(img["Config"]["Cmd"], json!(["cat", "/new.txt"]));
    assert_eq!(img["Config"]["Labels"]["made"], "commit");
    let env = img["Config"]["Env"].as_array().unwrap();
    assert!(env.contains(&json!("FOO=bar")), "{env:?}");
    assert!(
        env.iter().any(|e| e.as_str().unwrap().starts_with("PATH=")),
        "{env:?}"
    );
    assert_eq!(
        img["Parent"],
        berth_e2e::fixtures::id_of(berth_e2e::fixtures::busybox())
    );
    let layers = img["RootFS"]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{img}");

    // The image's command and what its containers see.
    assert_eq!(d.docker(["run", "--rm", "committed:v1"]).ok(), "new\n");
    let out = d.docker([
        "run",
        "--rm",
        "-e",
        "FOO=",
        "committed:v1",
        "sh",
        "-c",
        LOOK,
    ]);
    assert_eq!(out.ok(), SEEN, "{out}");
    let out = d.docker(["run", "--rm", "committed:v1", "sh", "-c", "echo $FOO"]);
    assert_eq!(out.ok(), "bar\n");
    // A container of the committed image starts with no changes.
    d.docker(["create", "--name", "child", "committed:v1"]).ok();
    assert_eq!(d.docker(["diff", "child"]).ok(), "");

    // History: the commit's entry on top, with the container's command
    // and the message; the rest is busybox's.
    let out = d.docker([
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.CreatedBy}}|{{.Comment}}",
        "committed:v1",
    ]);
    let lines = out.lines();
    assert_eq!(
        lines[0],
        format!("{id}|sh -c {CHANGES}|made by hand"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with(&berth_e2e::fixtures::id_of(berth_e2e::fixtures::busybox())),
        "{out}"
    );

    // berth's CLI: WORKDIR and ENTRYPOINT, no repository (untagged).
    let out = d.berth([
        "commit",
        "-c",
        "WORKDIR /usr",
        "-c",
        "ENTRYPOINT [\"ls\"]",
        "changed",
    ]);
    let id2 = out.ok().trim().to_string();
    let img2 = d.inspect(&id2);
    assert_eq!(img2["RepoTags"], json!([]));
    assert_eq!(img2["Config"]["WorkingDir"], "/usr");
    assert_eq!(img2["Config"]["Entrypoint"], json!(["ls"]));
    // As Docker's: an ENTRYPOINT change without a CMD change clears the command.
    assert_eq!(img2["Config"]["Cmd"], serde_json::Value::Null);
    assert_eq!(d.docker(["run", "--rm", &id2]).ok(), "f\n");

    // Committing a container with no changes adds no layer.
    d.docker(["run", "--name", "quiet", "busybox", "true"]).ok();
    let out = d.docker(["commit", "quiet", "same:layers"]);
    out.ok();
    let same = d.inspect("same:layers");
    assert_eq!(same["RootFS"]["Layers"].as_array().unwrap().len(), 1);

    // The same changes committed twice share the layer.
    let again = d.docker(["commit", "changed", "committed:again"]);
    again.ok();
    assert_eq!(d.inspect("committed:again")["RootFS"], img["RootFS"]);

    d.docker(["rm", "-f", "changed", "child", "quiet"]).ok();
    for i in ["committed:v1", "committed:again", "same:layers", &id2] {
        d.docker(["rmi", i]).ok();
    }
    assert_clean(&d);
}

#[test]
fn commit_pauses_a_running_container_unless_told_not_to() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "-d",
        "--name",
        "runner",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=200 2>/dev/null; echo hi > /running; exec sleep 1000",
    ])
    .ok();
    wait_for(Duration::from_secs(30), || {
        d.docker(["diff", "runner"])
            .ok()
            .contains("A /running")
            .then_some(())
    })
    .expect("the container wrote its file");
    let since = (berth_e2e::unix_now() - 1).to_string();
    // While its 200 MB layer is read, the container is seen paused.
    let done = std::sync::atomic::AtomicBool::new(false);
    let seen_paused = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = false;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let v = d.get_json("/containers/runner/json");
                seen |= v["State"]["Paused"] == true && v["State"]["Status"] == "paused";
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        d.docker(["commit", "runner", "running:v1"]).ok();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    });
    assert!(
        seen_paused,
        "the container was never seen paused during the commit"
    );
    let state = d.docker(["inspect", "-f", "{{.State.Status}}", "runner"]);
    assert_eq!(state.ok().trim(), "running");
    d.docker(["commit", "--pause=false", "runner", "running:v2"])
        .ok();
    let until = (berth_e2e::unix_now() + 1).to_string();
    let ev = d.docker([
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=runner",
        "--format",
        "{{.Action}}",
    ]);
    // Frozen for the first commit only, the commit while frozen.
    let actions: Vec<&str> = ev
        .lines()
        .into_iter()
        .filter(|a| !["create", "start"].contains(a))
        .collect();
    assert_eq!(actions, ["pause", "commit", "unpause", "commit"], "{ev}");
    let ev = d.docker([
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "event=commit",
        "--format",
        "{{.Actor.Attributes.imageRef}} {{.Actor.Attributes.name}}",
    ]);
    assert_eq!(
        ev.lines(),
        ["running:v1 runner", "running:v2 runner"],
        "{ev}"
    );
    for tag in ["running:v1", "running:v2"] {
        assert_eq!(
            d.docker(["run", "--rm", tag, "cat", "/running"]).ok(),
            "hi\n"
        );
    }
    // Still running, never left paused.
    let state = d.docker([
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.Paused}}",
        "runner",
    ]);
    assert_eq!(state.ok().trim(), "running false");
    d.docker(["rm", "-f", "runner"]).ok();
}

#[test]
fn commit_errors_are_dockers() {
    require_root!();
    let d = daemon();
    let out = d.docker(["commit", "nosuch"]);
    assert_eq!(out.code(), 1, "{out}");
    assert_eq!(
        out.stderr.trim(),
        "Error response from daemon: No such container: nosuch"
    );
    // A removed container is gone too.
    d.docker(["run", "--name", "gone", "busybox", "true"]).ok();
    d.docker(["rm", "gone"]).ok();
    let out = d.docker(["commit", "gone", "x:y"]);
    assert_eq!(
        out.stderr.trim(),
        "Error response from daemon: No such container: gone"
    );
    let r = d.request("POST", "/commit?container=gone", None).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), "No such container: gone");

    d.docker(["run", "--name", "victim", "busybox", "true"])
        .ok();
    let out = d.docker(["commit", "--change", "RUN rm -rf /", "victim"]);
    assert_eq!(
        out.stderr.trim(),
        "Error response from daemon: run is not a valid change command"
    );
    let r = d
        .request("POST", "/commit?container=victim&repo=Bad", None)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = d
        .request(
            "POST",
            "/commit?container=victim",
            Some(("application/json", b"[1]")),
        )
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    // Nothing was made.
    assert_eq!(d.image_ids().len(), 1);
    d.docker(["rm", "victim"]).ok();
    assert_clean(&d);
}

#[test]
fn a_committed_image_pushes_and_pulls_into_a_fresh_berthd() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d1 = Daemon::start_host_network();
    d1.load_busybox();
    changed_container(&d1, "changed");
    let name = reg.name("team/committed:v1");
    d1.docker(["commit", "--change", "ENV FOO=", "changed", &name])
        .ok();
    let id = d1.inspect(&name)["Id"].clone();
    let out = d1.docker(["push", &name]);
    assert_eq!(out.ok().matches(": Pushed").count(), 2, "{out}");

    let d2 = Daemon::start_host_network();
    d2.docker(["pull", &name]).ok();
    let img = d2.inspect(&name);
    assert_eq!(img["Id"], id);
    let out = d2.docker(["run", "--rm", &name, "sh", "-c", LOOK]);
    assert_eq!(out.ok(), SEEN, "{out}");
    assert_clean(&d2);
}

#[test]
fn a_committed_image_saved_from_berthd_runs_on_dockerd() {
    require_root!();
    let Some(dd) = Dockerd::start() else {
        eprintln!("SKIPPED a_committed_image_saved_from_berthd_runs_on_dockerd: no dockerd here");
        return;
    };
    let d = daemon();
    changed_container(&d, "changed");
    d.docker([
        "commit",
        "-m",
        "for dockerd",
        "--change",
        "ENV FOO=",
        "changed",
        "committed:v1",
    ])
    .ok();
    let id = d.inspect("committed:v1")["Id"].clone();
    let saved = d.path("committed.tar");
    d.docker(["save", "-o", arg(&saved), "committed:v1"]).ok();
    let out = dd.docker(["load", "-i", arg(&saved)]);
    assert_eq!(out.ok().trim(), "Loaded image: committed:v1", "{out}");
    let got = dd.docker(["image", "inspect", "-f", "{{.Id}}", "committed:v1"]);
    assert_eq!(got.ok().trim(), id.as_str().unwrap());
    let out = dd.docker(["run", "--rm", "committed:v1", "sh", "-c", LOOK]);
    assert_eq!(out.ok(), SEEN, "{out}");
    let hist = dd.docker(["history", "--format", "{{.Comment}}", "committed:v1"]);
    assert_eq!(hist.lines()[0], "for dockerd", "{hist}");
}

#[test]
fn diff_and_commit_match_dockerd_for_the_same_steps() {
    require_root!();
    let Some(dd) = Dockerd::start() else {
        eprintln!("SKIPPED diff_and_commit_match_dockerd_for_the_same_steps: no dockerd here");
        return;
    };
    let driver = dd.docker(["info", "-f", "{{.Driver}}"]);
    if driver.ok().trim() != "overlay2" {
        eprintln!(
            "SKIPPED diff_and_commit_match_dockerd_for_the_same_steps: dockerd uses {}, not overlay2",
            driver.stdout.trim()
        );
        return;
    }
    let d = daemon();
    let bb = d.path("busybox.tar");
    std::fs::write(
        &bb,
        berth_e2e::fixtures::save_archive(&[(berth_e2e::fixtures::busybox(), &["busybox:latest"])]),
    )
    .unwrap();
    dd.docker(["load", "-i", arg(&bb)]).ok();
    let steps = [
        CHANGES,
        "true",
        "mkdir -p /a/b/c && echo 1 > /a/b/c/f && ln -s /etc/passwd /a/link && ln /bin/busybox /bin/hard",
        "rm -rf /root /var && mkdir -m 700 /var && echo x > /var/only && chown 1:1 /var/only",
        "chmod 700 /tmp && touch /tmp/x && rm /tmp/x",
    ];
    for (i, step) in steps.iter().enumerate() {
        let name = format!("step{i}");
        d.docker(["run", "--name", &name, "busybox", "sh", "-c", step])
            .ok();
        dd.docker(["run", "--name", &name, "busybox", "sh", "-c", step])
            .ok();
        // dockerd lists a directory's entries in a Go map's (random)
        // order: compare the lines as sets.
        let sorted = |r: berth_e2e::Run| {
            let mut l: Vec<String> = r.lines().iter().map(|s| s.to_string()).collect();
            l.sort();
            l
        };
        let ours = sorted(d.docker(["diff", &name]));
        let theirs = sorted(dd.docker(["diff", &name]));
        assert_eq!(ours, theirs, "docker diff after {step:?}");
        if ours.is_empty() {
            // Nothing changed: both answer the API with `null`.
            let raw = std::process::Command::new("curl")
                .args(["-s", "--unix-socket"])
                .arg(&dd.sock)
                .arg(format!("http://docker/containers/{name}/changes"))
                .output()
                .expect("curl");
            assert_eq!(String::from_utf8_lossy(&raw.stdout).trim(), "null");
            assert_eq!(
                d.get_json(&format!("/containers/{name}/changes")),
                serde_json::Value::Null
            );
        }
        // The committed images hold the same files.
        d.docker(["commit", &name, "img:x"]).ok();
        dd.docker(["commit", &name, "img:x"]).ok();
        // Everything but what each engine mounts into every container.
        let list = "find / -xdev ! -path '/proc*' ! -path '/sys*' ! -path '/dev*' \
            ! -path /.dockerenv ! -path /etc/mtab ! -path /etc/hosts ! -path /etc/hostname \
            ! -path /etc/resolv.conf | sort | xargs ls -ld --full-time 2>/dev/null \
            | awk '{print $1, $3, $4, $5, $9, $10, $11}'";
        let a = d.docker(["run", "--rm", "img:x", "sh", "-c", list]);
        let b = dd.docker(["run", "--rm", "img:x", "sh", "-c", list]);
        let (a, b) = (a.lines(), b.lines());
        let only_ours: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
        let only_theirs: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty() && a.len() > 100,
            "the image committed after {step:?}: only berth's has {only_ours:?}, only dockerd's has {only_theirs:?}"
        );
        let layers = |r: &berth_e2e::Run| r.ok().trim().to_string();
        assert_eq!(
            layers(&d.docker(["image", "inspect", "-f", "{{len .RootFS.Layers}}", "img:x"])),
            layers(&dd.docker(["image", "inspect", "-f", "{{len .RootFS.Layers}}", "img:x"])),
            "layers after {step:?}"
        );
    }
}
