//! Crashes and exclusivity: berthd killed with SIGKILL in the middle of a
//! load recovers on restart with nothing half-made left, and a second
//! berthd on the same data root is refused.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use berth_e2e::{Daemon, arg, require_root, wait_for};

/// Bytes of regular files under `dir`.
fn du(dir: &Path) -> u64 {
    berth_e2e::store::walk_files(dir)
        .iter()
        .filter_map(|f| std::fs::symlink_metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// Writes the big image (≥ 120 MiB of content in 4 layers) as a
/// docker-save archive; returns its image ID.
fn write_big_archive(path: &Path) -> String {
    let file = std::fs::File::create(path).expect("create big.tar");
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let summary = berth_fixtures::write_big_image_docker_save(&mut w, 120, 4, 1, "big:latest")
        .expect("write big.tar");
    w.flush().expect("flush big.tar");
    assert!(
        summary.archive_bytes >= 100 << 20,
        "big.tar is only {} bytes",
        summary.archive_bytes
    );
    summary.config_digest.to_string()
}

/// Starts `docker load -i big.tar`, SIGKILLs berthd once `mid_way` says the
/// data root shows the load in progress, restarts berthd and checks that
/// nothing of the load is left; then loads the archive for real.
#[track_caller]
fn kill9_during_load(what: &str, mid_way: impl Fn(&Path) -> bool) {
    let mut d = Daemon::start();
    let big = d.path("big.tar");
    let id = write_big_archive(&big);

    let mut client: Child = d
        .docker_command(["load", "-i", arg(&big)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker load");
    let reached = wait_for(Duration::from_secs(120), || mid_way(&d.root).then_some(()));
    let finished = client.try_wait().expect("poll docker load").is_some();
    let state = d.store();
    d.kill9();
    let out = client.wait_with_output().expect("wait for docker load");
    assert!(
        reached.is_some(),
        "the load never reached {what}; log:\n{}",
        d.log_text()
    );
    assert!(
        !finished,
        "the load finished before berthd was killed at {what}; nothing was tested"
    );
    assert!(
        !out.status.success(),
        "docker load succeeded although berthd was killed at {what}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "killed berthd at {what} ({} staged, {} blobs, {} layers); the client said: {}",
        state.tmp.len(),
        state.blobs.len(),
        state.layers.len(),
        String::from_utf8_lossy(&out.stderr).trim()
    );

    d.start_again();
    d.assert_empty();

    let out = d.docker(["load", "-i", arg(&big)]);
    assert_eq!(out.ok().trim(), "Loaded image: big:latest");
    assert_eq!(d.inspect("big:latest")["Id"], id);
    assert_eq!(
        d.inspect("big:latest")["RootFS"]["Layers"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    d.assert_no_garbage();

    // After a clean restart the image is still there, whole.
    d.restart();
    assert_eq!(d.image_ids(), [id]);
    d.assert_no_garbage();
}

#[test]
fn kill9_while_the_load_is_staging_leaves_no_garbage() {
    require_root!();
    kill9_during_load("16 MiB staged", |root| {
        du(&root.join("tmp")) + du(&root.join("content")) + du(&root.join("layers")) >= 16 << 20
    });
}

/// Blobs committed to the content store but no image yet: unreferenced
/// content that the restart must collect.
#[test]
fn kill9_after_blobs_were_committed_leaves_no_garbage() {
    require_root!();
    kill9_during_load("two committed blobs", |root| {
        std::fs::read_dir(root.join("content/sha256")).is_ok_and(|rd| rd.count() >= 2)
    });
}

#[test]
fn second_daemon_on_the_same_root_is_refused() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let sock2 = d.path("s2.sock");
    let mut second = d
        .berthd_command(&sock2, &d.path("berthd2.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a second berthd");
    let exited = wait_for(Duration::from_secs(10), || {
        second.try_wait().expect("poll second berthd")
    });
    if exited.is_none() {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second berthd on {} kept running", d.root.display());
    }
    let out = second.wait_with_output().expect("second berthd output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second berthd must fail; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("already running") && stderr.contains(&*d.root.to_string_lossy()),
        "the refusal must say another berthd runs on this data root; stderr:\n{stderr}"
    );
    assert!(!sock2.exists(), "the refused daemon must not listen");
    // The first one is unaffected.
    assert_eq!(
        d.docker(["images", "--format", "{{.Repository}}"])
            .ok()
            .trim(),
        "busybox"
    );
    d.assert_no_garbage();
}

#[test]
fn restart_after_sigterm_keeps_images() {
    require_root!();
    let mut d = Daemon::start();
    let bb = d.load_busybox();
    let ml = d.load_multilayer();
    let before = d.store();
    let status = d.stop().expect("berthd was running");
    assert!(
        status.success(),
        "berthd must exit 0 on SIGTERM, got {status}"
    );
    d.start_again();
    let mut want = vec![bb, ml];
    want.sort();
    assert_eq!(d.image_ids(), want);
    assert_eq!(d.store(), before);
    d.assert_no_garbage();
}
