//! Hostile layers: a load must fail with a clear error or succeed with
//! everything confined to the layer's directory; nothing may be created,
//! changed or linked outside the data root, and a failed load lists no image
//! and leaves no blob or layer.
//!
//! Two sets: berth-fixtures' malicious layers, which aim at fixed host
//! paths (`/tmp/berth-evil`, `/etc/passwd`, …), and "canary" layers built
//! here that aim at a directory unique to the test, so every escape is seen
//! whatever the extraction root and however tests run in parallel.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_e2e::store::walk_files;
use berth_e2e::{Daemon, Run, require_root, text};
use berth_fixtures::tarw::{Entry, Kind, TarWriter};
use berth_fixtures::{
    Compression, EVIL, ImageSpec, Layer, MALICIOUS_HOST_PATHS, build_image, docker_save_archive,
    malicious_archive, tiny_base_layer,
};
use serde_json::json;

/// Host files a hard-link attack aims at: their identity, link count and
/// times must not change.
const HOST_FILES: &[&str] = &["/etc/passwd", "/etc/shadow"];
/// Host paths the fixtures (or a naive extractor) could create.
const EXTRA_HOST_PATHS: &[&str] = &["/evil", "/tmp/evil", "/dev/evil"];

#[derive(Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    nlink: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: u64,
}

fn file_id(p: &Path) -> Option<FileId> {
    let m = std::fs::symlink_metadata(p).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        size: m.size(),
    })
}

/// What must hold on the host, recorded before the load.
struct HostGuard {
    files: Vec<(PathBuf, Option<FileId>)>,
    victims: Vec<PathBuf>,
}

impl HostGuard {
    /// Records the host files and plants victim files next to the data
    /// root (where a `../` escape from it would land).
    #[track_caller]
    fn new(d: &Daemon) -> HostGuard {
        for p in MALICIOUS_HOST_PATHS.iter().chain(EXTRA_HOST_PATHS) {
            assert!(
                std::fs::symlink_metadata(p).is_err(),
                "{p} exists before the test: remove it (left by an earlier, broken run?)"
            );
        }
        let files = HOST_FILES
            .iter()
            .map(|p| (PathBuf::from(p), file_id(Path::new(p))))
            .collect();
        let victims = vec![d.path("berth-victim"), d.root.join("berth-victim")];
        for v in &victims {
            std::fs::write(v, b"victim\n").expect("plant a victim file");
        }
        HostGuard { files, victims }
    }

    /// Asserts nothing escaped: host paths absent, host files untouched,
    /// victims intact, no hostile content outside a layer directory, and no
    /// file in the test's directory sharing an inode with a host file.
    #[track_caller]
    fn check(&self, d: &Daemon, what: &str) {
        for p in MALICIOUS_HOST_PATHS.iter().chain(EXTRA_HOST_PATHS) {
            assert!(
                std::fs::symlink_metadata(p).is_err(),
                "{what}: {p} was created on the host"
            );
        }
        for (p, id) in &self.files {
            assert_eq!(&file_id(p), id, "{what}: {} changed", p.display());
        }
        for v in &self.victims {
            assert_eq!(
                std::fs::read(v).ok().as_deref(),
                Some(&b"victim\n"[..]),
                "{what}: {} was deleted or changed",
                v.display()
            );
        }
        assert_confined(d, what);
        let host: Vec<(u64, u64)> = self
            .files
            .iter()
            .filter_map(|(_, id)| id.as_ref().map(|i| (i.dev, i.ino)))
            .collect();
        for f in walk_files(d.dir()) {
            let m = std::fs::symlink_metadata(&f).expect("stat");
            assert!(
                !host.contains(&(m.dev(), m.ino())),
                "{what}: {} is a hard link to a host file",
                f.display()
            );
        }
    }
}

/// Every file holding the hostile content is inside `root/layers/*/diff/`.
#[track_caller]
fn assert_confined(d: &Daemon, what: &str) {
    let layers = d.root.join("layers");
    for f in walk_files(d.dir()) {
        let Ok(m) = std::fs::symlink_metadata(&f) else {
            continue;
        };
        if m.len() != EVIL.len() as u64 || std::fs::read(&f).ok().as_deref() != Some(EVIL) {
            continue;
        }
        let inside = f
            .strip_prefix(&layers)
            .ok()
            .and_then(|rel| rel.components().nth(1))
            .is_some_and(|c| c.as_os_str() == "diff");
        assert!(
            inside,
            "{what}: hostile file written outside a layer directory: {}",
            f.display()
        );
    }
}

/// Loads `archive` (tagged `tag`). Either it fails — readable message, no
/// image, an empty data root — or it succeeds and the data root holds
/// exactly the image. Returns whether it loaded.
#[track_caller]
fn load_hostile(d: &Daemon, file: &str, archive: &[u8], tag: &str, must_fail: bool) -> bool {
    let out: Run = d.docker_load(file, archive);
    eprintln!(
        "{file}: {}",
        if out.success() {
            out.stdout.trim()
        } else {
            out.stderr.trim()
        }
    );
    if out.success() {
        assert!(!must_fail, "this archive must not load:\n{out}");
        assert_eq!(out.stdout.trim(), format!("Loaded image: {tag}"), "{out}");
        d.assert_no_garbage();
        true
    } else {
        let err = out.fails_with(1);
        assert!(err.contains("Error response from daemon: "), "{out}");
        assert!(
            text::is_readable(err),
            "the message must be readable:\n{out}"
        );
        d.assert_empty();
        false
    }
}

/// Loads berth-fixtures' malicious image `name` and checks confinement,
/// then removes it and checks again (removing a layer must not follow its
/// symlinks either).
#[track_caller]
fn check_fixture(name: &str, must_fail: bool) {
    let d = Daemon::start();
    let guard = HostGuard::new(&d);
    let tag = format!("malicious-{name}:latest");
    let loaded = load_hostile(
        &d,
        &format!("malicious-{name}.tar"),
        &malicious_archive(name),
        &tag,
        must_fail,
    );
    guard.check(&d, name);
    if loaded {
        d.docker(["rmi", &tag]).ok();
        d.assert_empty();
        guard.check(&d, &format!("{name} after rmi"));
    }
}

#[test]
fn malicious_dotdot() {
    require_root!();
    check_fixture("dotdot", false);
}

#[test]
fn malicious_absolute() {
    require_root!();
    check_fixture("absolute", false);
}

#[test]
fn malicious_deep_dotdot() {
    require_root!();
    check_fixture("deep-dotdot", false);
}

#[test]
fn malicious_symlink_abs_dir() {
    require_root!();
    check_fixture("symlink-abs-dir", false);
}

#[test]
fn malicious_symlink_rel_dir() {
    require_root!();
    check_fixture("symlink-rel-dir", false);
}

#[test]
fn malicious_hardlink_abs() {
    require_root!();
    check_fixture("hardlink-abs", false);
}

#[test]
fn malicious_hardlink_dotdot() {
    require_root!();
    check_fixture("hardlink-dotdot", false);
}

#[test]
fn malicious_chardev() {
    require_root!();
    check_fixture("chardev", false);
}

#[test]
fn malicious_whiteout_dotdot() {
    require_root!();
    check_fixture("whiteout-dotdot", false);
}

#[test]
fn malicious_truncated_layer() {
    require_root!();
    check_fixture("truncated", true);
}

#[test]
fn every_malicious_fixture_has_a_test() {
    // The list above must follow berth-fixtures; a new fixture needs a test.
    assert_eq!(
        berth_fixtures::MALICIOUS_NAMES,
        [
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
        ]
    );
}

// ---- canary layers: aimed at a directory unique to the test -------------

/// A canary directory `dir()/canary` holding only `victim` ("victim\n").
struct Canary {
    dir: PathBuf,
}

impl Canary {
    fn new(d: &Daemon) -> Canary {
        let dir = d.path("canary");
        std::fs::create_dir(&dir).expect("create canary dir");
        std::fs::write(dir.join("victim"), b"victim\n").expect("write victim");
        Canary { dir }
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("UTF-8")
    }

    #[track_caller]
    fn check(&self, what: &str) {
        let names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("canary dir still exists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["victim"],
            "{what}: something was created in the canary directory"
        );
        let victim = self.dir.join("victim");
        assert_eq!(
            std::fs::read(&victim).expect("victim"),
            b"victim\n",
            "{what}: victim changed"
        );
        assert_eq!(
            std::fs::metadata(&victim).expect("victim").nlink(),
            1,
            "{what}: victim was hard-linked"
        );
    }
}

/// An uncompressed layer tar from raw entries.
fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut t = TarWriter::new(Vec::new());
    for e in entries {
        t.entry(e).expect("tar into memory");
    }
    t.finish().expect("tar into memory")
}

fn file<'a>(path: &'a str) -> Entry<'a> {
    Entry::raw(path.as_bytes(), Kind::File(EVIL), 0o644)
}

/// Loads an image of the tiny base layer plus `layers`, tagged
/// `canary:latest`, and checks the canary, the host and the data root;
/// then removes the image and checks again.
#[track_caller]
fn check_canary(d: &Daemon, canary: &Canary, what: &str, layers: Vec<Vec<u8>>) {
    let guard = HostGuard::new(d);
    let mut all = vec![Layer::new(
        tiny_base_layer(),
        Compression::None,
        "ADD base / ",
    )];
    for (i, l) in layers.into_iter().enumerate() {
        all.push(Layer::new(
            l,
            Compression::None,
            format!("ADD canary-{i} / "),
        ));
    }
    let img = build_image(&ImageSpec::new(all, json!({"Cmd": ["/bin/sh"]})));
    let archive = docker_save_archive(&[(img, vec!["canary:latest".to_string()])]);
    let loaded = load_hostile(d, "canary.tar", &archive, "canary:latest", false);
    canary.check(what);
    guard.check(d, what);
    if loaded {
        d.docker(["rmi", "canary:latest"]).ok();
        d.assert_empty();
        canary.check(&format!("{what} after rmi"));
        guard.check(d, &format!("{what} after rmi"));
    }
}

#[test]
fn canary_absolute_symlink_to_a_directory() {
    require_root!();
    let d = Daemon::start();
    let c = Canary::new(&d);
    let l = layer(&[Entry::symlink("esc", c.path()), file("esc/planted")]);
    check_canary(&d, &c, "symlink esc -> canary, then esc/planted", vec![l]);
}

#[test]
fn canary_relative_symlink_out_of_the_root() {
    require_root!();
    let d = Daemon::start();
    let c = Canary::new(&d);
    // From <root>/layers/<id>/diff or <root>/tmp/<x>/diff, four levels up
    // is the test's directory, which holds canary/.
    let l = layer(&[
        Entry::symlink("esc", "../../../../canary"),
        file("esc/planted"),
    ]);
    check_canary(
        &d,
        &c,
        "symlink esc -> ../../../../canary, then esc/planted",
        vec![l],
    );
    // Up to the host's / and down again by the canary's absolute path.
    let planted = format!("up{}/planted", c.path());
    let l = layer(&[
        Entry::symlink("up", "../../../../../../../../../../.."),
        file(&planted),
    ]);
    check_canary(
        &d,
        &c,
        "symlink up -> ../../.., then up/<canary>/planted",
        vec![l],
    );
}

#[test]
fn canary_symlink_chain() {
    require_root!();
    let d = Daemon::start();
    let c = Canary::new(&d);
    let l = layer(&[
        Entry::symlink("b", c.path()),
        Entry::symlink("a", "b"),
        file("a/planted"),
    ]);
    check_canary(&d, &c, "a -> b -> canary, then a/planted", vec![l]);
}

#[test]
fn canary_symlink_in_a_lower_layer() {
    require_root!();
    let d = Daemon::start();
    let c = Canary::new(&d);
    let lower = layer(&[Entry::symlink("esc", c.path())]);
    let upper = layer(&[file("esc/planted")]);
    check_canary(
        &d,
        &c,
        "esc -> canary in layer 1, esc/planted in layer 2",
        vec![lower, upper],
    );
}

#[test]
fn canary_absolute_path() {
    require_root!();
    let d = Daemon::start();
    let c = Canary::new(&d);
    let planted = format!("{}/planted", c.path());
    check_canary(
        &d,
        &c,
        "absolute path into the canary",
        vec![layer(&[file(&planted)])],
    );
}

#[test]
fn canary_dotdot_path() {
    require_root!();
    let d = Daemon::start();
    let c = Canary::new(&d);
    let l = layer(&[file("../../../../canary/planted")]);
    check_canary(&d, &c, "../../../../canary/planted", vec![l]);
}

#[test]
fn canary_hardlink_to_a_host_file() {
    require_root!();
    let d = Daemon::start();
    let c = Canary::new(&d);
    let victim = format!("{}/victim", c.path());
    check_canary(
        &d,
        &c,
        "hard link to the absolute victim",
        vec![layer(&[Entry::hardlink("hl", &victim)])],
    );
    let l = layer(&[Entry::hardlink("hl", "../../../../canary/victim")]);
    check_canary(&d, &c, "hard link to ../../../../canary/victim", vec![l]);
    // A link, then a file of the same name: writing must not go through the link.
    let l = layer(&[Entry::hardlink("hl", &victim), file("hl")]);
    check_canary(
        &d,
        &c,
        "hard link to the victim, then a file over it",
        vec![l],
    );
}

#[test]
fn canary_file_over_a_symlink() {
    require_root!();
    let d = Daemon::start();
    let c = Canary::new(&d);
    let victim = format!("{}/victim", c.path());
    let l = layer(&[Entry::symlink("f", &victim), file("f")]);
    check_canary(&d, &c, "symlink f -> victim, then file f", vec![l]);
    // The same across layers: the symlink below, the file above.
    let lower = layer(&[Entry::symlink("f", &victim)]);
    let upper = layer(&[file("f")]);
    check_canary(
        &d,
        &c,
        "symlink f -> victim in layer 1, file f in layer 2",
        vec![lower, upper],
    );
    // A hard link to the symlink, then a file over the hard link.
    let l = layer(&[
        Entry::symlink("s", &victim),
        Entry::hardlink("h", "s"),
        file("h"),
    ]);
    check_canary(&d, &c, "s -> victim, hard link h to s, file h", vec![l]);
}
