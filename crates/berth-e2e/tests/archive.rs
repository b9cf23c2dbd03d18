//! `cp`, `export` and `import` through the real docker CLI and berth's CLI
//! against berthd: files and directories in and out of running and
//! stopped containers, into volumes, `-a`, `-L`, tar streams on
//! stdin/stdout, the archive API's stat header and errors; symlink and
//! `../` tricks that must not reach the host; export → import round trips.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use berth_e2e::{Daemon, arg, require_root};
use berth_fixtures::tarw::{Entry, TarWriter};
use serde_json::Value;

fn daemon() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut t = TarWriter::new(Vec::new());
    for e in entries {
        t.entry(e).expect("tar into memory");
    }
    t.finish().expect("tar into memory")
}

/// Names in a tar stream, in order.
fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut off = 0;
    let mut long: Option<String> = None;
    while off + 512 <= bytes.len() {
        let h = &bytes[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let field = |a: usize, n: usize| {
            let f = &h[a..a + n];
            let end = f.iter().position(|b| *b == 0).unwrap_or(n);
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let size = u64::from_str_radix(field(124, 12).trim(), 8).unwrap_or(0) as usize;
        let typ = h[156];
        let data = &bytes[off + 512..(off + 512 + size).min(bytes.len())];
        if typ == b'x' {
            let text = String::from_utf8_lossy(data);
            for rec in text.split('\n') {
                if let Some(p) = rec.split_once(" path=") {
                    long = Some(p.1.to_string());
                }
            }
        } else {
            let prefix = field(345, 155);
            let name = field(0, 100);
            let full = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            names.push(long.take().unwrap_or(full));
        }
        off += 512 + size.div_ceil(512) * 512;
    }
    names
}

fn stat_header(d: &Daemon, ctr: &str, path: &str) -> (u16, Option<Value>, String) {
    let r = d
        .request(
            "HEAD",
            &format!("/containers/{ctr}/archive?path={path}"),
            None,
        )
        .unwrap();
    let v = r.header("x-docker-container-path-stat").map(|h| {
        let json = base64::engine::general_purpose::STANDARD.decode(h).unwrap();
        serde_json::from_slice(&json).unwrap()
    });
    (r.status, v, r.text())
}

fn put(d: &Daemon, ctr: &str, path: &str, tar: &[u8]) -> (u16, String) {
    let r = d
        .request(
            "PUT",
            &format!("/containers/{ctr}/archive?path={path}&noOverwriteDirNonDir=true"),
            Some(("application/x-tar", tar)),
        )
        .unwrap();
    let msg = if r.status >= 400 {
        r.message()
    } else {
        String::new()
    };
    (r.status, msg)
}

/// `assert_no_garbage` once removed containers' directories, deleted in
/// the background, are gone.
fn no_garbage(d: &Daemon) {
    let tmp = d.root.join("tmp");
    berth_e2e::wait_for(std::time::Duration::from_secs(10), || {
        (std::fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0) == 0).then_some(())
    });
    d.assert_no_garbage();
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// A local tree: `src/a` ("A"), `src/sub/b` ("B"), and `f` ("F"), `f`
/// owned by 1234:5678.
fn local_tree(d: &Daemon) -> std::path::PathBuf {
    let base = d.dir().join("local");
    std::fs::create_dir_all(base.join("src/sub")).unwrap();
    std::fs::write(base.join("src/a"), "A").unwrap();
    std::fs::write(base.join("src/sub/b"), "B").unwrap();
    std::fs::write(base.join("f"), "F").unwrap();
    std::fs::set_permissions(base.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::lchown(base.join("f"), Some(1234), Some(5678)).unwrap();
    base
}

#[test]
fn cp_in_and_out_of_running_and_stopped_containers() {
    require_root!();
    let d = daemon();
    let local = local_tree(&d);
    d.docker(["run", "-d", "--name", "c1", "busybox", "sleep", "1000"])
        .ok();
    d.docker([
        "create",
        "--name",
        "s1",
        "busybox",
        "cat",
        "/f",
        "/d-docker/sub/b",
    ])
    .ok();
    for (cli, tag) in [("docker", "docker"), ("berth", "berth")] {
        let run = |args: &[&str]| {
            if cli == "docker" {
                d.docker(args)
            } else {
                d.berth(args)
            }
        };
        // A directory into a running container, to a path that does not exist.
        let src = local.join("src");
        run(&["cp", arg(&src), &format!("c1:/tmp/d-{tag}")]).ok();
        let out = d.docker([
            "exec",
            "c1",
            "cat",
            &format!("/tmp/d-{tag}/a"),
            &format!("/tmp/d-{tag}/sub/b"),
        ]);
        assert_eq!(out.ok(), "AB", "{cli}");
        // Into an existing directory: it lands inside.
        run(&["cp", arg(&src), "c1:/tmp/"]).ok();
        assert_eq!(d.docker(["exec", "c1", "cat", "/tmp/src/a"]).ok(), "A");
        // A single file, renamed, keeping its mode and its owner.
        run(&["cp", arg(&local.join("f")), &format!("c1:/tmp/f-{tag}")]).ok();
        let out = d.docker([
            "exec",
            "c1",
            "stat",
            "-c",
            "%a %u:%g %s",
            &format!("/tmp/f-{tag}"),
        ]);
        assert_eq!(out.ok().trim(), "640 1234:5678 1", "{cli}");
        // Out again: a directory, and a file.
        let back = local.join(format!("back-{tag}"));
        run(&["cp", &format!("c1:/tmp/d-{tag}"), arg(&back)]).ok();
        assert_eq!(std::fs::read_to_string(back.join("sub/b")).unwrap(), "B");
        let fback = local.join(format!("fback-{tag}"));
        run(&["cp", &format!("c1:/tmp/f-{tag}"), arg(&fback)]).ok();
        assert_eq!(std::fs::read_to_string(&fback).unwrap(), "F");
        // A file into an existing local directory keeps its name.
        run(&["cp", &format!("c1:/tmp/f-{tag}"), arg(&local)]).ok();
        assert_eq!(
            std::fs::read_to_string(local.join(format!("f-{tag}"))).unwrap(),
            "F"
        );

        // A created (never started) container.
        run(&["cp", arg(&local.join("f")), "s1:/f"]).ok();
        run(&["cp", arg(&src), &format!("s1:/d-{tag}")]).ok();
        let sback = local.join(format!("sback-{tag}"));
        run(&["cp", &format!("s1:/d-{tag}/sub"), arg(&sback)]).ok();
        assert_eq!(std::fs::read_to_string(sback.join("b")).unwrap(), "B");

        // Missing paths: Docker's 404 text.
        let err = run(&["cp", "c1:/nope", arg(&local.join("x"))]);
        assert_eq!(
            err.fails().trim(),
            "Error response from daemon: Could not find the file /nope in container c1",
            "{cli}"
        );
        let err = run(&["cp", "nosuch:/etc", arg(&local.join("x"))]);
        assert!(err.fails().contains("No such container: nosuch"), "{err}");
    }
    let out = d.docker(["start", "-a", "s1"]);
    assert_eq!(out.ok(), "FB");

    // Local errors: berth's CLI says what docker's says, with its exit code.
    let missing = local.join("missing");
    let cases: Vec<Vec<String>> = vec![
        vec![
            "cp".into(),
            missing.display().to_string(),
            "c1:/tmp/".into(),
        ],
        vec![
            "cp".into(),
            "c1:/tmp/d-docker".into(),
            local.join("no/such/dir").display().to_string(),
        ],
        vec!["cp".into(), "c1:/tmp/a".into(), "s1:/tmp/b".into()],
        vec![
            "cp".into(),
            "/etc/hostname".into(),
            local.join("x").display().to_string(),
        ],
        vec![
            "cp".into(),
            local.join("src").display().to_string(),
            "c1:/tmp/f-docker".into(),
        ],
        vec![
            "cp".into(),
            local.join("f").display().to_string(),
            "c1:/tmp/nope/".into(),
        ],
    ];
    for args in &cases {
        let theirs = d.docker(args);
        let ours = d.berth(args);
        let last = |r: &berth_e2e::Run| r.stderr.trim().lines().last().unwrap_or("").to_string();
        assert_eq!(
            (ours.code(), last(&ours)),
            (theirs.code(), last(&theirs)),
            "{args:?}\n{ours}\n{theirs}"
        );
    }

    // The same on a stopped container, and nothing stays mounted.
    d.docker(["stop", "-t", "0", "c1"]).ok();
    let before = mounts_under(&d.root);
    d.docker(["cp", arg(&local.join("f")), "c1:/tmp/after-stop"])
        .ok();
    d.berth(["cp", "c1:/tmp/after-stop", arg(&local.join("after-stop"))])
        .ok();
    assert_eq!(
        std::fs::read_to_string(local.join("after-stop")).unwrap(),
        "F"
    );
    assert_eq!(mounts_under(&d.root), before, "cp leaves no mount behind");
    // A stopped container's view has its network files, as dockerd's.
    let hostname = d.docker(["inspect", "-f", "{{.Config.Hostname}}", "c1"]);
    let out = d.docker(["cp", "c1:/etc/hostname", "-"]);
    assert_eq!(tar_names(out.stdout.as_bytes()), ["hostname"]);
    assert!(
        out.ok().contains(&format!("{}\n", hostname.ok().trim())),
        "{out}"
    );

    // The stat header.
    let (status, stat, _) = stat_header(&d, "c1", "/tmp/after-stop");
    assert_eq!(status, 200);
    let stat = stat.unwrap();
    assert_eq!(stat["name"], "after-stop");
    assert_eq!(stat["size"], 1);
    assert_eq!(stat["mode"], 0o640);
    assert_eq!(stat["linkTarget"], "");
    let (_, dir_stat, _) = stat_header(&d, "c1", "/tmp");
    assert_eq!(
        dir_stat.unwrap()["mode"].as_u64().unwrap() & (1 << 31),
        1 << 31
    );
    let (status, _, _) = stat_header(&d, "c1", "/nope");
    assert_eq!(status, 404);
    let r = d.request("HEAD", "/containers/c/archive", None).unwrap();
    assert_eq!(r.status, 400);
    // Extracting to a file is a bad parameter.
    let (status, msg) = put(
        &d,
        "c1",
        "/tmp/after-stop",
        &tar_of(&[Entry::file("x", 0o644, b"x")]),
    );
    assert_eq!(
        (status, msg.as_str()),
        (400, "extraction point is not a directory")
    );
    let (status, msg) = put(&d, "c1", "/nope", &tar_of(&[Entry::file("x", 0o644, b"x")]));
    assert_eq!(
        (status, msg.as_str()),
        (404, "Could not find the file /nope in container c1")
    );
    no_garbage(&d);
}

#[test]
fn cp_streams_archive_mode_follow_links_and_volumes() {
    require_root!();
    let d = daemon();
    let local = local_tree(&d);
    d.docker([
        "run",
        "-d",
        "--name",
        "c1",
        "--user",
        "4321:8765",
        "-v",
        "vol:/data",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker([
        "exec",
        "-u",
        "0",
        "c1",
        "sh",
        "-c",
        "echo T > /tmp/target; ln -s /tmp/target /tmp/ln; chmod 777 /tmp",
    ])
    .ok();

    // -a: the container's user owns what is copied.
    for (cli, name) in [("docker", "own-d"), ("berth", "own-b")] {
        let dst = format!("c1:/tmp/{name}");
        let out = if cli == "docker" {
            d.docker(["cp", "-a", arg(&local.join("f")), &dst])
        } else {
            d.berth(["cp", "-a", arg(&local.join("f")), &dst])
        };
        out.ok();
        let st = d.docker(["exec", "c1", "stat", "-c", "%u:%g", &format!("/tmp/{name}")]);
        assert_eq!(st.ok().trim(), "4321:8765", "{cli}");
    }

    // -L: the link's target instead of the link.
    for (cli, tag) in [("docker", "d"), ("berth", "b")] {
        let run = |args: &[&str]| {
            if cli == "docker" {
                d.docker(args)
            } else {
                d.berth(args)
            }
        };
        let l = local.join(format!("ln-{tag}"));
        run(&["cp", "c1:/tmp/ln", arg(&l)]).ok();
        assert!(
            std::fs::symlink_metadata(&l)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{cli}"
        );
        let t = local.join(format!("lt-{tag}"));
        run(&["cp", "-L", "c1:/tmp/ln", arg(&t)]).ok();
        let m = std::fs::symlink_metadata(&t).unwrap();
        assert!(m.is_file(), "{cli}");
        assert_eq!(std::fs::read_to_string(&t).unwrap(), "T\n");
    }

    // Tars on stdout and stdin.
    for cli in ["docker", "berth"] {
        let cmd = if cli == "docker" {
            d.docker_command(["cp", "c1:/tmp/ln", "-"])
        } else {
            d.berth_command(["cp", "c1:/tmp/ln", "-"])
        };
        let mut cmd = cmd;
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cli}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(tar_names(&out.stdout), ["ln"], "{cli}");
        let tar = tar_of(&[
            Entry::dir("in/", 0o755),
            Entry::file(
                if cli == "docker" { "in/d" } else { "in/b" },
                0o600,
                b"stdin",
            ),
        ]);
        let out = if cli == "docker" {
            d.docker_stdin(["cp", "-", "c1:/tmp"], &tar)
        } else {
            d.berth_stdin(["cp", "-", "c1:/tmp"], &tar)
        };
        out.ok();
        let err = if cli == "docker" {
            d.docker_stdin(["cp", "-", "c1:/tmp/ln"], &tar)
        } else {
            d.berth_stdin(["cp", "-", "c1:/tmp/ln"], &tar)
        };
        assert!(err.fails().contains("must be a directory"), "{err}");
    }
    assert_eq!(
        d.docker(["exec", "-u", "0", "c1", "cat", "/tmp/in/d", "/tmp/in/b"])
            .ok(),
        "stdinstdin"
    );
    let mut cmd = d.docker_command(["cp", "c1:/tmp/in", "-"]);
    let out = cmd.output().unwrap();
    assert_eq!(tar_names(&out.stdout), ["in/", "in/b", "in/d"]);

    // A container with --init: its root is the same.
    d.docker([
        "run", "-d", "--init", "--name", "withinit", "busybox", "sleep", "1000",
    ])
    .ok();
    d.berth(["cp", arg(&local.join("f")), "withinit:/f"]).ok();
    assert_eq!(d.docker(["exec", "withinit", "cat", "/f"]).ok(), "F");
    d.docker(["rm", "-f", "withinit"]).ok();

    // Into a named volume, running and stopped: the volume's data.
    d.docker(["cp", arg(&local.join("f")), "c1:/data/run"]).ok();
    d.docker(["stop", "-t", "0", "c1"]).ok();
    d.berth(["cp", arg(&local.join("src")), "c1:/data/"]).ok();
    let data = d.root.join("volumes/vol/_data");
    assert_eq!(std::fs::read_to_string(data.join("run")).unwrap(), "F");
    assert_eq!(
        std::fs::read_to_string(data.join("src/sub/b")).unwrap(),
        "B"
    );
    // A read-only volume refuses, as Docker.
    d.docker(["create", "--name", "ro", "-v", "vol:/data:ro", "busybox"])
        .ok();
    let err = d.docker(["cp", arg(&local.join("f")), "ro:/data/"]);
    assert!(
        err.fails().contains("mounted volume is marked read-only"),
        "{err}"
    );
    let vol = d.root.join("volumes/vol/_data/f");
    assert!(!vol.exists());
    no_garbage(&d);
}

#[test]
fn cp_cannot_escape_the_container_root() {
    require_root!();
    let d = daemon();
    // Host canaries: a directory outside the data root with a file in it.
    let host = tempfile::Builder::new()
        .prefix("berth-canary")
        .tempdir_in("/tmp")
        .unwrap();
    let hostdir = host.path().to_path_buf();
    std::fs::write(hostdir.join("canary"), "host secret").unwrap();
    let unique = format!("berth-cp-escape-{}", std::process::id());
    let local = d.dir().join("payload");
    std::fs::write(&local, "payload").unwrap();
    let hostp = hostdir.display().to_string();
    d.docker(["run", "-d", "--name", "c1", "busybox", "sleep", "1000"])
        .ok();
    d.docker([
        "exec", "c1", "sh", "-c",
        &format!("ln -s / /evil; ln -s ../../../../etc /evil2; ln -s {hostp} /hostlink; ln -s {hostp}/canary /hostfile; mkdir /dest"),
    ])
    .ok();
    let check_host = || {
        assert_eq!(
            std::fs::read_to_string(hostdir.join("canary")).unwrap(),
            "host secret"
        );
        assert_eq!(
            std::fs::read_dir(&hostdir).unwrap().count(),
            1,
            "nothing new in the host dir"
        );
        assert!(!Path::new("/").join(&unique).exists());
        assert!(!Path::new("/etc").join(&unique).exists());
        assert!(!d.root.join("containers").join(&unique).exists());
    };

    for running in [true, false] {
        for cli in ["docker", "berth"] {
            let run = |args: &[&str]| {
                if cli == "docker" {
                    d.docker(args)
                } else {
                    d.berth(args)
                }
            };
            // Symlinks as destinations: resolved inside the container.
            run(&["cp", arg(&local), &format!("c1:/evil/{unique}")]).ok();
            run(&["cp", arg(&local), &format!("c1:/evil2/{unique}")]).ok();
            // A link to a host path names a path the container does not have.
            // (Once a tar below has made that path in the container, the
            // copy goes there.)
            let r = run(&["cp", arg(&local), &format!("c1:/hostlink/{unique}")]);
            if running {
                assert!(r.fails().contains("Could not find the file"), "{r}");
            } else {
                r.ok();
            }
            let r = run(&["cp", arg(&local), "c1:/hostfile"]);
            if running {
                assert!(
                    r.fails()
                        .contains(&format!("Could not find the file {hostp} in container c1")),
                    "{r}"
                );
            } else {
                r.ok();
            }
            check_host();
            // As sources: the container's files, never the host's.
            let out = local.with_extension(format!("out-{cli}-{running}"));
            let err = run(&[
                "cp",
                "-L",
                "c1:/evil2/../../../../../tmp/nothing-here",
                arg(&out),
            ]);
            assert!(err.fails().contains("Could not find the file"), "{err}");
            for src in ["c1:/hostlink/canary", "c1:/hostfile"] {
                let r = run(&["cp", "-L", src, arg(&out)]);
                if running {
                    assert!(r.fails().contains("Could not find the file"), "{r}");
                    assert!(!out.exists());
                } else {
                    // Now the container has that path: its own file.
                    r.ok();
                    assert_eq!(std::fs::read_to_string(&out).unwrap(), "payload");
                    std::fs::remove_file(&out).unwrap();
                }
            }
            let mut cmd = if cli == "docker" {
                d.docker_command([
                    "cp",
                    &format!("c1:/evil/{}", hostp.trim_start_matches('/')),
                    "-",
                ])
            } else {
                d.berth_command([
                    "cp",
                    &format!("c1:/evil/{}", hostp.trim_start_matches('/')),
                    "-",
                ])
            };
            let o = cmd.output().unwrap();
            assert_eq!(
                o.status.success(),
                !running,
                "only once the container has that path"
            );
            assert!(!String::from_utf8_lossy(&o.stdout).contains("host secret"));
        }
        // In the container: /<unique> (through /evil), /etc/<unique> (through /evil2).
        let mut cmd = d.docker_command(["cp", &format!("c1:/{unique}"), "-"]);
        assert!(
            cmd.output().unwrap().status.success(),
            "landed at the container's /"
        );
        let mut cmd = d.docker_command(["cp", &format!("c1:/etc/{unique}"), "-"]);
        assert!(
            cmd.output().unwrap().status.success(),
            "landed at the container's /etc"
        );

        // Hostile tars through the API.
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "dotdot",
                tar_of(&[Entry::file(&format!("../../../../{unique}"), 0o644, b"x")]),
            ),
            (
                "abs-dotdot",
                tar_of(&[Entry::file(&format!("/../../{unique}"), 0o644, b"x")]),
            ),
            (
                "symlink-then-file",
                tar_of(&[
                    Entry::symlink("lnk", &hostp),
                    Entry::file(&format!("lnk/{unique}"), 0o644, b"x"),
                ]),
            ),
            (
                "relative-symlink-then-file",
                tar_of(&[
                    Entry::symlink("up", "../../../../../../.."),
                    Entry::file(&format!("up/tmp/{unique}"), 0o644, b"x"),
                ]),
            ),
            (
                "hardlink-out",
                tar_of(&[Entry::hardlink("h", "../../../../etc/passwd")]),
            ),
            ("device", tar_of(&[Entry::file("ok", 0o644, b"ok")])),
        ];
        for (what, tar) in &cases {
            let (status, msg) = put(&d, "c1", "/dest", tar);
            match *what {
                "device" => assert_eq!(status, 200, "{what}: {msg}"),
                // As go-archive: the leading `/` goes, then `..` may not climb.
                "dotdot" | "abs-dotdot" => {
                    assert_eq!(status, 500, "{what}");
                    assert!(msg.contains("invalid entry name"), "{what}: {msg}");
                }
                "hardlink-out" => {
                    assert_eq!(status, 500, "{what}");
                    assert!(msg.contains("invalid hardlink target"), "{what}: {msg}");
                }
                _ => {
                    assert_eq!(status, 500, "{what}");
                    assert!(msg.contains("escapes root"), "{what}: {msg}");
                }
            }
            check_host();
            // To the container's root the symlink resolves inside it.
            let _ = put(&d, "c1", "/", tar);
            check_host();
        }
        // The CLI sees the same refusal.
        let err = d.docker_stdin(["cp", "-", "c1:/dest"], &cases[2].1);
        assert!(err.fails().contains("escapes root"), "{err}");
        let err = d.berth_stdin(["cp", "-", "c1:/tmp"], &cases[0].1);
        assert!(err.fails().contains("invalid entry name"), "{err}");
        check_host();
        if running {
            d.docker(["stop", "-t", "0", "c1"]).ok();
        }
    }
    no_garbage(&d);
}

#[test]
fn export_then_import_round_trips() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "--name",
        "c1",
        "busybox",
        "sh",
        "-c",
        "echo hi > /marker; mkdir -p /deep/er; echo x > /deep/er/f",
    ])
    .ok();
    let f1 = d.dir().join("c-docker.tar");
    let f2 = d.dir().join("c-berth.tar");
    d.docker(["export", "-o", arg(&f1), "c1"]).ok();
    d.berth(["export", "-o", arg(&f2), "c1"]).ok();
    let t1 = std::fs::read(&f1).unwrap();
    assert_eq!(
        t1,
        std::fs::read(&f2).unwrap(),
        "both CLIs get the same stream"
    );
    let names = tar_names(&t1);
    for n in ["marker", "deep/", "deep/er/f", "bin/"] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|x| x.starts_with('/') || x.starts_with("./"))
    );
    // Export to stdout; and a running container exports too.
    let mut cmd = d.docker_command(["export", "c1"]);
    assert_eq!(cmd.output().unwrap().stdout, t1);
    d.docker(["run", "-d", "--name", "r1", "busybox", "sleep", "1000"])
        .ok();
    let mut cmd = d.berth_command(["export", "r1"]);
    let o = cmd.output().unwrap();
    assert!(o.status.success());
    assert!(tar_names(&o.stdout).iter().any(|x| x == "bin/"));
    // The container stops while an export of it is still being read: the
    // stop unmounts its rootfs all the same, and the export completes.
    d.docker([
        "exec",
        "r1",
        "dd",
        "if=/dev/zero",
        "of=/big",
        "bs=1M",
        "count=64",
    ])
    .ok();
    let mut cmd = d.docker_command(["export", "r1"]);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut stop = d.docker_command(["stop", "-t", "0", "r1"]).spawn().unwrap();
    let stopped = berth_e2e::wait_for(std::time::Duration::from_secs(30), || {
        stop.try_wait().unwrap()
    });
    if stopped.is_none() {
        // Unblock the daemon before failing, so the test ends.
        let _ = child.kill();
        let _ = stop.wait();
        panic!("docker stop waited for an export being read");
    }
    assert!(stopped.unwrap().success());
    assert_eq!(
        mounts_under(&d.root),
        Vec::<String>::new(),
        "the stop unmounted the rootfs"
    );
    let mut exported = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut exported).unwrap();
    assert!(child.wait().unwrap().success());
    let names = tar_names(&exported);
    assert!(names.iter().any(|x| x == "big") && names.iter().any(|x| x == "bin/"));
    d.docker(["rm", "-f", "r1"]).ok();
    let err = d.berth(["export", "nosuch"]);
    assert_eq!(
        err.fails().trim(),
        "Error response from daemon: No such container: nosuch"
    );

    // Import with the docker CLI (changes and message), and with berth's.
    let out = d.docker([
        "import",
        "-c",
        "CMD [\"cat\", \"/marker\"]",
        "-c",
        "ENV A=b",
        "-m",
        "round trip",
        arg(&f1),
        "imp:docker",
    ]);
    assert!(out.ok().trim().starts_with("sha256:"), "{out}");
    assert_eq!(d.docker(["run", "--rm", "imp:docker"]).ok(), "hi\n");
    assert_eq!(
        d.docker([
            "run",
            "--rm",
            "imp:docker",
            "sh",
            "-c",
            "cat /deep/er/f; echo $A"
        ])
        .ok(),
        "x\nb\n"
    );
    let hist = d.docker(["history", "--format", "{{.Comment}}", "imp:docker"]);
    assert_eq!(hist.ok().trim(), "round trip");
    let out = d.berth([
        "import",
        "-c",
        "CMD [\"cat\", \"/marker\"]",
        arg(&f2),
        "imp:berth",
    ]);
    assert!(out.ok().trim().starts_with("sha256:"), "{out}");
    assert_eq!(d.berth(["run", "--rm", "imp:berth"]).ok(), "hi\n");
    // From stdin, gzip-compressed.
    let mut gz = Vec::new();
    {
        let mut c = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = c.stdin.take().unwrap();
        let t = t1.clone();
        let w = std::thread::spawn(move || stdin.write_all(&t));
        let o = c.wait_with_output().unwrap();
        w.join().unwrap().unwrap();
        gz.extend_from_slice(&o.stdout);
    }
    let out = d.docker_stdin(["import", "-", "imp:gz"], &gz);
    assert!(out.ok().trim().starts_with("sha256:"), "{out}");
    assert_eq!(
        d.docker(["run", "--rm", "imp:gz", "cat", "/marker"]).ok(),
        "hi\n"
    );
    let img = d.inspect("imp:gz");
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    no_garbage(&d);
}

/// The same steps against a real dockerd give the same tar entries and
/// the same errors.
#[test]
fn cp_matches_dockerd() {
    require_root!();
    let Some(dd) = berth_e2e::Dockerd::start() else {
        return;
    };
    let d = daemon();
    let saved = d.path("busybox.tar");
    d.docker(["save", "-o", arg(&saved), "busybox:latest"]).ok();
    dd.docker(["load", "-i", arg(&saved)]).ok();
    let local = local_tree(&d);
    std::os::unix::fs::symlink("d", local.join("src/ln")).unwrap();
    std::fs::create_dir_all(local.join("src/d/e")).unwrap();
    std::fs::write(local.join("src/d/e/g"), "G").unwrap();
    let names = |run: &dyn Fn(&[&str]) -> berth_e2e::Run, p: &str| -> (bool, Vec<String>, String) {
        // Entry names are ASCII here, so the text stdout keeps them.
        let r = run(&["cp", &format!("c1:{p}"), "-"]);
        // Older dockerds name their overlay mount in errors; berth names
        // the path in the container only.
        let err = r.stderr.trim().to_string();
        let err = match (err.find("/tmp/berth-e2e-dockerd-"), err.find("/merged")) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &err[..a], &err[b + "/merged".len()..]),
            _ => err,
        };
        (r.success(), tar_names(r.stdout.as_bytes()), err)
    };
    let berth_run = |a: &[&str]| d.docker(a);
    let dockerd_run = |a: &[&str]| dd.docker(a);
    for run in [
        &berth_run as &dyn Fn(&[&str]) -> berth_e2e::Run,
        &dockerd_run,
    ] {
        run(&["create", "--name", "c1", "busybox"]).ok();
        run(&[
            "cp",
            &format!("{}/.", local.join("src").display()),
            "c1:/tmp/",
        ])
        .ok();
    }
    for p in [
        "/tmp/d",
        "/tmp/d/",
        "/tmp/d/.",
        "/tmp/ln",
        "/tmp/ln/",
        "/tmp/a",
        "/tmp/d/e/g",
        "/tmp/../tmp/d/e",
        "/nope",
        "/tmp/a/",
        "/tmp/nope/x",
    ] {
        let ours = names(&berth_run, p);
        let theirs = names(&dockerd_run, p);
        assert_eq!(ours, theirs, "cp c1:{p} -");
    }
    // The whole root: dockerd's view also has its init layer's files, so
    // only the naming of the top entries is compared.
    let (ok1, ours, _) = names(&berth_run, "/");
    let (ok2, theirs, _) = names(&dockerd_run, "/");
    assert!(ok1 && ok2);
    assert_eq!(ours[0], theirs[0], "cp c1:/ -");
    assert!(ours.iter().any(|n| n == "/bin/") && theirs.iter().any(|n| n == "/bin/"));
    // Errors of copies in.
    for (src, dst) in [
        (
            local.join("src").display().to_string(),
            "c1:/tmp/a".to_string(),
        ),
        (
            local.join("f").display().to_string(),
            "c1:/nope/dir/".to_string(),
        ),
        (
            local.join("f").display().to_string(),
            "c1:/tmp/newdir/".to_string(),
        ),
    ] {
        let ours = d.docker(["cp", &src, &dst]);
        let theirs = dd.docker(["cp", &src, &dst]);
        // The CLI may also log its own tar goroutine's broken pipe: compare
        // the error it ends with.
        let last = |r: &berth_e2e::Run| r.stderr.trim().lines().last().unwrap_or("").to_string();
        assert_eq!(
            (ours.success(), last(&ours)),
            (theirs.success(), last(&theirs)),
            "cp {src} {dst}"
        );
    }
}

/// A tiny HTTP server on loopback: `/rootfs.tar` is `body`, anything else
/// 404 "nope". Serves `n` requests, then ends.
fn serve_on_loopback(body: Vec<u8>, n: usize) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((s, _)) = l.accept() else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let mut s = s;
            if line.split(' ').nth(1) == Some("/rootfs.tar") {
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .unwrap();
                s.write_all(&body).unwrap();
            } else {
                s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope\n").unwrap();
            }
        }
    });
    (addr, h)
}

#[test]
fn import_from_a_url_on_loopback() {
    require_root!();
    // berthd in the host's network namespace reaches the test's loopback.
    let d = Daemon::start_host_network();
    let rootfs = berth_fixtures::busybox_rootfs_tar().expect("busybox rootfs");
    let (addr, server) = serve_on_loopback(rootfs, 4);
    let out = d.docker([
        "import",
        "-c",
        "CMD [\"echo\", \"from url\"]",
        &format!("http://{addr}/rootfs.tar"),
        "url:docker",
    ]);
    let text = out.ok();
    assert!(
        text.trim().lines().last().unwrap().starts_with("sha256:"),
        "{out}"
    );
    assert_eq!(
        d.docker(["run", "--rm", "--network", "none", "url:docker"])
            .ok(),
        "from url\n"
    );
    let hist = d.docker(["history", "--format", "{{.Comment}}", "url:docker"]);
    assert_eq!(
        hist.ok().trim(),
        format!("Imported from http://{addr}/rootfs.tar")
    );
    // The raw stream: dockerd's messages.
    let r = d
        .request(
            "POST",
            &format!("/images/create?fromSrc=http://{addr}/rootfs.tar&repo=url&tag=api"),
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["status"],
        format!("Downloading from http://{addr}/rootfs.tar")
    );
    assert!(
        lines.iter().any(|l| l["status"] == "Importing"),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap()["status"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // berth's CLI, and a missing file: Docker's error.
    let out = d.berth(["import", &format!("http://{addr}/rootfs.tar"), "url:berth"]);
    let lines = out.lines();
    assert_eq!(
        lines[0],
        format!("Downloading from http://{addr}/rootfs.tar"),
        "{out}"
    );
    assert!(lines.last().unwrap().starts_with("sha256:"), "{out}");
    let err = d.docker(["import", &format!("http://{addr}/missing.tar")]);
    assert_eq!(
        err.fails().trim(),
        format!(
            "Error response from daemon: failed to GET http://{addr}/missing.tar with status 404 Not Found: nope"
        )
    );
    server.join().unwrap();
    let err = d.docker(["import", "--platform", "linux/s390x/bogus/x", "-"]);
    assert!(
        err.fails()
            .contains("unknown operating system or architecture"),
        "{err}"
    );
}
