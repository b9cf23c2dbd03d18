//! Volumes and mounts through the real docker CLI (and the berth CLI)
//! against berthd: named and anonymous volumes that outlive their
//! containers, a restart and a `kill -9` of the daemon; copy-up of the
//! image's files; bind mounts, tmpfs, read-only mounts and rootfs,
//! `--volumes-from`; `volume create/ls/inspect/rm/prune`, `/system/df` and
//! volume events; Docker's errors for bad input; and no mount left behind.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use berth_e2e::fixtures::{busybox, save_archive};
use berth_e2e::{Daemon, Run, arg, require_root, wait_for};
use berth_fixtures::image::{BuiltImage, Compression, ImageSpec, Layer, build_image};
use berth_fixtures::tarw::{Entry, TarWriter};
use berth_fixtures::{FIXED_MTIME, busybox_rootfs_tar};
use serde_json::{Value, json};

/// busybox plus `/data` (0750, 1000:2000) holding `f` ("hello", 0600,
/// 1000:1000), `link -> f`, `sub/s`, all with the fixed mtime, and
/// `VOLUME /data` in its config.
fn volume_image() -> &'static BuiltImage {
    static IMG: OnceLock<BuiltImage> = OnceLock::new();
    IMG.get_or_init(|| {
        let base = busybox_rootfs_tar().expect("busybox rootfs (is busybox-static installed?)");
        let mut t = TarWriter::new(Vec::new());
        for e in [
            Entry::dir("data/", 0o750).owner(1000, 2000),
            Entry::file("data/f", 0o600, b"hello\n").owner(1000, 1000),
            Entry::symlink("data/link", "f"),
            Entry::dir("data/sub/", 0o755),
            Entry::file("data/sub/s", 0o644, b"s\n"),
        ] {
            t.entry(&e).expect("tar into memory");
        }
        let data = t.finish().expect("tar into memory");
        build_image(&ImageSpec::new(
            vec![
                Layer::new(base, Compression::Gzip, "ADD rootfs /"),
                Layer::new(data, Compression::Gzip, "COPY data /data"),
            ],
            json!({
                "Cmd": ["sh"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Volumes": {"/data": {}},
            }),
        ))
    })
}

/// A daemon with busybox and `volimg` (see [`volume_image`]) loaded.
fn daemon() -> Daemon {
    let d = Daemon::start();
    let out = d.docker_load(
        "images.tar",
        &save_archive(&[
            (busybox(), &["busybox:latest"]),
            (volume_image(), &["volimg:latest"]),
        ]),
    );
    assert!(out.ok().contains("Loaded image: volimg:latest"), "{out}");
    d
}

/// Mount points under `dir` (field 5 of /proc/self/mountinfo).
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

fn json_of(r: &Run) -> Value {
    serde_json::from_str(r.ok()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{r}"))
}

/// `POST /containers/create` with `body`: (status, message or Id).
fn api_create(d: &Daemon, body: Value) -> (u16, String) {
    let r = d
        .request(
            "POST",
            "/containers/create",
            Some(("application/json", body.to_string().as_bytes())),
        )
        .unwrap();
    let v = r.json();
    let text = v["message"]
        .as_str()
        .or(v["Id"].as_str())
        .unwrap_or("")
        .to_string();
    (r.status, text)
}

fn volume_names(d: &Daemon) -> Vec<String> {
    d.docker(["volume", "ls", "-q"])
        .ok()
        .lines()
        .map(String::from)
        .collect()
}

fn is_anonymous_name(n: &str) -> bool {
    n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn named_volume_data_survives_rm_restart_and_kill9() {
    require_root!();
    let mut d = daemon();
    assert_eq!(d.docker(["volume", "create", "data"]).ok(), "data\n");
    d.docker([
        "run",
        "--name",
        "writer",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo one > /data/f",
    ])
    .ok();
    d.docker(["rm", "writer"]).ok();
    assert_eq!(volume_names(&d), ["data"], "rm keeps a named volume");
    assert_eq!(
        std::fs::read_to_string(d.root.join("volumes/data/_data/f")).unwrap(),
        "one\n"
    );

    d.restart();
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "cat",
        "/data/f",
    ]);
    assert_eq!(out.ok(), "one\n");
    d.docker([
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo two >> /data/f",
    ])
    .ok();

    d.kill9();
    d.start_again();
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "cat",
        "/data/f",
    ]);
    assert_eq!(out.ok(), "one\ntwo\n");
    // `run --rm` never removes a named volume.
    assert_eq!(volume_names(&d), ["data"]);
    let v = json_of(&d.docker(["volume", "inspect", "data"]));
    assert_eq!(v[0]["Mountpoint"], arg(&d.root.join("volumes/data/_data")));
}

#[test]
fn two_running_containers_share_a_volume_which_cannot_be_removed_meanwhile() {
    require_root!();
    let d = daemon();
    for c in ["ca", "cb"] {
        d.docker([
            "run",
            "-d",
            "--name",
            c,
            "-v",
            "shared:/s",
            "busybox",
            "sleep",
            "300",
        ])
        .ok();
    }
    d.docker(["exec", "ca", "sh", "-c", "echo from-a > /s/x"])
        .ok();
    assert_eq!(d.docker(["exec", "cb", "cat", "/s/x"]).ok(), "from-a\n");
    d.docker(["exec", "cb", "sh", "-c", "echo from-b > /s/y"])
        .ok();
    assert_eq!(d.docker(["exec", "ca", "cat", "/s/y"]).ok(), "from-b\n");

    let ids: Vec<String> = ["ca", "cb"]
        .iter()
        .map(|c| {
            d.docker(["inspect", "-f", "{{.Id}}", c])
                .ok()
                .trim()
                .to_string()
        })
        .collect();
    for force in [false, true] {
        let mut args = vec!["volume", "rm"];
        if force {
            args.push("-f");
        }
        args.push("shared");
        let err = d.docker(&args).fails_with(1).to_string();
        assert!(
            err.starts_with("Error response from daemon: remove shared: volume is in use - ["),
            "{err}"
        );
        assert!(ids.iter().all(|id| err.contains(id.as_str())), "{err}");
    }
    let r = d
        .request("DELETE", "/volumes/shared?force=1", None)
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        d.root.join("volumes/shared/_data/x").exists(),
        "nothing was removed"
    );

    // A stopped container still uses its volume.
    d.docker(["rm", "-f", "ca"]).ok();
    d.docker(["stop", "-t", "0", "cb"]).ok();
    assert!(!d.docker(["volume", "rm", "shared"]).success());
    assert_eq!(
        d.docker(["volume", "ls", "-q", "--filter", "dangling=true"])
            .ok(),
        ""
    );
    d.docker(["rm", "cb"]).ok();
    assert_eq!(d.docker(["volume", "rm", "shared"]).ok(), "shared\n");
    assert!(!d.root.join("volumes/shared").exists());
}

#[test]
fn an_empty_volume_gets_the_images_files_with_owners_modes_and_times() {
    require_root!();
    let d = daemon();
    let stat = "stat -c '%u:%g %a %n' /data /data/f /data/sub /data/sub/s; readlink /data/link; cat /data/f";
    let want = "1000:2000 750 /data\n1000:1000 600 /data/f\n0:0 755 /data/sub\n0:0 644 /data/sub/s\nf\nhello\n";
    // The image's VOLUME: an anonymous volume, filled from the image.
    let out = d.docker(["run", "--name", "anon", "volimg", "sh", "-c", stat]);
    assert_eq!(out.ok(), want);
    let mounts = json_of(&d.docker(["inspect", "-f", "{{json .Mounts}}", "anon"]));
    let name = mounts[0]["Name"].as_str().unwrap().to_string();
    assert!(is_anonymous_name(&name), "{mounts}");
    let source = d.root.join("volumes").join(&name).join("_data");
    assert_eq!(
        mounts,
        json!([{"Type": "volume", "Name": name, "Source": arg(&source), "Destination": "/data",
                "Driver": "local", "Mode": "", "RW": true, "Propagation": ""}])
    );
    let md = std::fs::metadata(&source).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1000, 2000, 0o750)
    );
    let f = std::fs::metadata(source.join("f")).unwrap();
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1000, 0o600));
    assert_eq!(f.mtime() as u64, FIXED_MTIME, "times are kept");
    let vol = json_of(&d.docker(["volume", "inspect", &name]));
    assert_eq!(vol[0]["Labels"], json!({"com.docker.volume.anonymous": ""}));

    // A named volume is filled the same way; nocopy leaves it empty.
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        "named:/data",
        "volimg",
        "sh",
        "-c",
        stat,
    ]);
    assert_eq!(out.ok(), want);
    let ls = "ls -A /data | wc -l";
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        "bare:/data:nocopy",
        "volimg",
        "sh",
        "-c",
        ls,
    ]);
    assert_eq!(out.ok().trim(), "0");
    let out = d.docker([
        "run",
        "--rm",
        "--mount",
        "type=volume,src=bare2,dst=/data,volume-nocopy",
        "volimg",
        "sh",
        "-c",
        ls,
    ]);
    assert_eq!(out.ok().trim(), "0");

    // A volume with content is never overwritten.
    d.docker([
        "run",
        "--rm",
        "-v",
        "mine:/data",
        "busybox",
        "sh",
        "-c",
        "echo mine > /data/mine",
    ])
    .ok();
    let out = d.docker(["run", "--rm", "-v", "mine:/data", "volimg", "ls", "/data"]);
    assert_eq!(out.ok(), "mine\n");

    // Copy-up happens at the first start only.
    d.docker([
        "run",
        "--name",
        "once",
        "volimg",
        "sh",
        "-c",
        "rm -rf /data/*",
    ])
    .ok();
    let out = d.docker(["start", "-a", "once"]);
    assert_eq!(out.code(), 0, "{out}");
    let out = d.docker([
        "run",
        "--rm",
        "--volumes-from",
        "once",
        "busybox",
        "ls",
        "-A",
        "/data",
    ]);
    assert_eq!(out.ok(), "");

    // rm -v removes the anonymous volume, never the named ones; run --rm too.
    d.docker(["rm", "-v", "anon"]).ok();
    assert!(!volume_names(&d).contains(&name));
    assert!(!source.exists());
    let before = volume_names(&d);
    d.docker(["run", "--rm", "volimg", "true"]).ok();
    assert_eq!(
        volume_names(&d),
        before,
        "run --rm removed its anonymous volume"
    );
    let names = volume_names(&d);
    for n in ["named", "bare", "bare2", "mine"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
}

#[test]
fn read_only_mounts_and_rootfs_refuse_writes_but_volumes_and_tmpfs_take_them() {
    require_root!();
    let d = daemon();
    let host = d.path("host");
    std::fs::create_dir(&host).unwrap();
    let erofs = |args: &[&str], path: &str| {
        let mut a: Vec<&str> = vec!["run", "--rm"];
        a.extend_from_slice(args);
        let cmd = format!("touch {path}");
        a.extend_from_slice(&["busybox", "sh", "-c", &cmd]);
        let out = d.docker(&a);
        assert_eq!(out.code(), 1, "{out}");
        assert!(out.stderr.contains("Read-only file system"), "{out}");
    };
    erofs(&["-v", "rov:/v:ro"], "/v/x");
    let bind = format!("type=bind,src={},dst=/b,readonly", host.display());
    erofs(&["--mount", &bind], "/b/x");
    let bind = format!("{}:/b:ro", host.display());
    erofs(&["-v", &bind], "/b/x");
    erofs(&["--read-only"], "/x");
    erofs(&["--read-only"], "/etc/hostname");
    assert!(std::fs::read_dir(&host).unwrap().next().is_none());

    let out = d.docker([
        "run",
        "--rm",
        "--read-only",
        "-v",
        "rwv:/v",
        "--tmpfs",
        "/t",
        "--mount",
        "type=tmpfs,dst=/t2",
        "-v",
        &format!("{}:/b", host.display()),
        "busybox",
        "sh",
        "-c",
        "touch /v/a /t/a /t2/a /b/a && echo written",
    ]);
    assert_eq!(out.ok(), "written\n");
    assert!(host.join("a").exists());
    d.docker(["run", "--name", "ro", "-v", "rov:/v:ro", "busybox", "true"])
        .ok();
    let m = json_of(&d.docker(["inspect", "-f", "{{json .Mounts}}", "ro"]));
    assert_eq!(
        (m[0]["Mode"].as_str(), m[0]["RW"].as_bool()),
        (Some("ro"), Some(false))
    );
}

#[test]
fn tmpfs_contents_vanish_on_stop() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "-d",
        "--name",
        "tt",
        "--tmpfs",
        "/t:size=2m,exec",
        "--mount",
        "type=tmpfs,dst=/m,tmpfs-size=1m,tmpfs-mode=1770",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    let mounts = d.docker(["exec", "tt", "cat", "/proc/mounts"]);
    let line = |dest: &str| {
        mounts
            .ok()
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(dest))
            .unwrap_or_else(|| panic!("no {dest} in\n{mounts}"))
            .to_string()
    };
    let t = line("/t");
    assert!(
        t.starts_with("tmpfs /t tmpfs rw,nosuid,nodev,") && t.contains("size=2048k"),
        "{t}"
    );
    assert!(
        !t.contains("noexec"),
        "exec overrides the default noexec: {t}"
    );
    let m = line("/m");
    assert!(
        m.contains("size=1024k") && m.contains("mode=1770") && m.contains("noexec"),
        "{m}"
    );
    d.docker(["exec", "tt", "sh", "-c", "echo x > /t/f; echo y > /m/f"])
        .ok();
    assert_eq!(
        d.docker(["exec", "tt", "cat", "/t/f", "/m/f"]).ok(),
        "x\ny\n"
    );
    d.docker(["stop", "-t", "0", "tt"]).ok();
    d.docker(["start", "tt"]).ok();
    assert_eq!(
        d.docker(["exec", "tt", "ls", "-A", "/t", "/m"]).ok(),
        "/m:\n\n/t:\n"
    );
    let inspect = json_of(&d.docker(["inspect", "tt"]));
    assert_eq!(
        inspect[0]["HostConfig"]["Tmpfs"],
        json!({"/t": "size=2m,exec"})
    );
    assert_eq!(
        inspect[0]["Mounts"],
        json!([{"Type": "tmpfs", "Source": "", "Destination": "/m", "Mode": "", "RW": true, "Propagation": ""}])
    );

    // A local volume with tmpfs driver options: mounted while a container
    // uses it, its contents gone when the last one stops.
    d.docker([
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=1m",
        "tv",
    ])
    .ok();
    let data = d.root.join("volumes/tv/_data");
    d.docker([
        "run", "-d", "--name", "uu", "-v", "tv:/tv", "busybox", "sleep", "300",
    ])
    .ok();
    d.docker(["exec", "uu", "sh", "-c", "echo z > /tv/f"]).ok();
    assert!(mounts_under(&data).contains(&arg(&data).to_string()));
    assert_eq!(std::fs::read_to_string(data.join("f")).unwrap(), "z\n");
    d.docker(["stop", "-t", "0", "uu"]).ok();
    assert!(
        mounts_under(&data).is_empty(),
        "unmounted after the last user stopped"
    );
    assert!(!data.join("f").exists());
    let v = json_of(&d.docker(["volume", "inspect", "tv"]));
    assert_eq!(
        v[0]["Options"],
        json!({"device": "tmpfs", "o": "size=1m", "type": "tmpfs"})
    );
}

#[test]
fn bind_mounts_create_a_missing_v_source_but_not_a_mount_source() {
    require_root!();
    let d = daemon();
    let dir = d.path("binds");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("from-host"), b"host\n").unwrap();
    let out = d.docker([
        "run",
        "--name",
        "bb",
        "-v",
        &format!("{}:/h", dir.display()),
        "busybox",
        "sh",
        "-c",
        "cat /h/from-host; echo ctr > /h/from-ctr",
    ]);
    assert_eq!(out.ok(), "host\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("from-ctr")).unwrap(),
        "ctr\n"
    );
    let m = json_of(&d.docker(["inspect", "-f", "{{json .Mounts}}", "bb"]));
    assert_eq!(
        m,
        json!([{"Type": "bind", "Source": arg(&dir), "Destination": "/h", "Mode": "", "RW": true, "Propagation": "rprivate"}])
    );

    // -v makes a missing source directory, as dockerd does.
    let missing = dir.join("missing/sub");
    d.docker([
        "run",
        "--rm",
        "-v",
        &format!("{}:/m", missing.display()),
        "busybox",
        "true",
    ])
    .ok();
    assert!(missing.is_dir());
    // A relative `./` source is made absolute by the CLI.
    let mut cmd = d.docker_command(["run", "--rm", "-v", "./rel:/r", "busybox", "true"]);
    cmd.current_dir(&dir);
    Run::exec(cmd, None).ok();
    assert!(dir.join("rel").is_dir());

    // --mount does not: a missing source is an error, and nothing is made.
    let gone = dir.join("gone");
    let out = d.docker([
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,src={},dst=/g", gone.display()),
        "busybox",
        "true",
    ]);
    assert_eq!(
        out.fails_with(125).lines().next().unwrap(),
        format!(
            "docker: Error response from daemon: invalid mount config for type \"bind\": bind source path does not exist: {}",
            gone.display()
        )
    );
    assert!(!gone.exists());
    let (status, msg) = api_create(
        &d,
        json!({"Image": "busybox", "HostConfig": {"Mounts": [{"Type": "bind", "Source": arg(&gone), "Target": "/g"}]}}),
    );
    assert_eq!(
        (status, msg.contains("bind source path does not exist")),
        (400, true)
    );

    // A local volume over a host directory (`o=bind`): mounted while in
    // use; removing the volume leaves the host's files alone.
    let device = dir.join("device");
    std::fs::create_dir(&device).unwrap();
    std::fs::write(device.join("keep"), b"keep\n").unwrap();
    let dev_opt = format!("device={}", device.display());
    d.docker([
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &dev_opt,
        "bv",
    ])
    .ok();
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        "bv:/bv",
        "busybox",
        "sh",
        "-c",
        "cat /bv/keep; echo new > /bv/new",
    ]);
    assert_eq!(out.ok(), "keep\n");
    assert_eq!(
        std::fs::read_to_string(device.join("new")).unwrap(),
        "new\n"
    );
    assert!(mounts_under(&d.root.join("volumes")).is_empty());
    assert_eq!(d.docker(["volume", "rm", "bv"]).ok(), "bv\n");
    assert!(device.join("keep").exists() && device.join("new").exists());

    // A volume's subpath; one that leaves the volume through a symlink is refused.
    d.docker([
        "run",
        "--rm",
        "-v",
        "sv:/sv",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /sv/sub/in && ln -s /etc /sv/esc",
    ])
    .ok();
    let out = d.docker([
        "run",
        "--rm",
        "--mount",
        "type=volume,src=sv,dst=/s,volume-subpath=sub",
        "busybox",
        "ls",
        "/s",
    ]);
    assert_eq!(out.ok(), "in\n");
    let out = d.docker([
        "run",
        "--rm",
        "--mount",
        "type=volume,src=sv,dst=/s,volume-subpath=esc",
        "busybox",
        "ls",
        "/s",
    ]);
    assert!(out.fails_with(125).contains("cannot access path"), "{out}");

    // --volumes-from takes binds and volumes, read-only with :ro.
    d.docker([
        "create",
        "--name",
        "src",
        "-v",
        "vf:/vf",
        "-v",
        &format!("{}:/h", dir.display()),
        "busybox",
    ])
    .ok();
    let out = d.docker([
        "run",
        "--rm",
        "--volumes-from",
        "src",
        "busybox",
        "sh",
        "-c",
        "echo x > /vf/x && cat /h/from-host",
    ]);
    assert_eq!(out.ok(), "host\n");
    let out = d.docker([
        "run",
        "--rm",
        "--volumes-from",
        "src:ro",
        "busybox",
        "sh",
        "-c",
        "touch /vf/y",
    ]);
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    d.docker([
        "create",
        "--name",
        "vfc",
        "--volumes-from",
        "src:ro",
        "busybox",
    ])
    .ok();
    let m = json_of(&d.docker(["inspect", "-f", "{{json .Mounts}}", "vfc"]));
    assert_eq!(
        m,
        json!([
            {"Type": "bind", "Source": arg(&dir), "Destination": "/h", "Mode": "", "RW": false, "Propagation": "rprivate"},
            {"Type": "volume", "Name": "vf", "Source": arg(&d.root.join("volumes/vf/_data")), "Destination": "/vf",
             "Driver": "local", "Mode": "", "RW": false, "Propagation": ""},
        ])
    );
}

#[test]
fn bad_input_gets_dockers_status_and_message() {
    require_root!();
    let d = daemon();
    let daemon_err = |args: &[&str]| -> String {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "true"]);
        let out = d.docker(&a);
        out.fails_with(125).lines().next().unwrap_or("").to_string()
    };
    assert_eq!(
        daemon_err(&["-v", "rel/dir:/x"]),
        r#"docker: Error response from daemon: create rel/dir: "rel/dir" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path"#
    );
    assert_eq!(
        daemon_err(&["--mount", "type=bind,src=rel,dst=/x"]),
        r#"docker: Error response from daemon: invalid mount config for type "bind": invalid mount path: 'rel' mount path must be absolute"#
    );
    assert_eq!(
        daemon_err(&["--mount", "type=foo,dst=/x"]),
        r#"docker: Error response from daemon: invalid mount config for type "foo": mount type unknown"#
    );
    assert_eq!(
        daemon_err(&["--tmpfs", "/x:foo"]),
        r#"docker: Error response from daemon: invalid tmpfs option ["foo"]"#
    );
    assert_eq!(
        daemon_err(&["--volumes-from", "nope"]),
        "docker: Error response from daemon: No such container: nope"
    );
    let out = d.docker([
        "run",
        "--rm",
        "--mount",
        "type=volume,foo=bar,dst=/x",
        "busybox",
        "true",
    ]);
    assert_eq!(
        out.fails_with(125).lines().next().unwrap(),
        r#"invalid argument "type=volume,foo=bar,dst=/x" for "--mount" flag: unexpected key 'foo' in 'foo=bar'"#
    );

    // A host file over an image directory (and the reverse).
    let file = d.write("a-file", b"x");
    let out = d.docker([
        "run",
        "--name",
        "mismatch",
        "-v",
        &format!("{}:/etc", file.display()),
        "busybox",
        "true",
    ]);
    let err = out.fails_with(125);
    assert!(
        err.contains("not a directory") && err.contains("Are you trying to mount a directory onto a file (or vice-versa)? Check if the specified host path exists and is the expected type"),
        "{out}"
    );
    let st = json_of(&d.docker(["inspect", "-f", "{{json .State}}", "mismatch"]));
    assert_eq!(st["ExitCode"], 127, "{st}");
    let out = d.docker([
        "run",
        "--rm",
        "-v",
        &format!("{}:/etc/passwd", d.dir().display()),
        "busybox",
        "true",
    ]);
    assert!(out.fails_with(125).contains("not a directory"), "{out}");

    // Straight to the API: dockerd's status codes.
    let cases: &[(Value, u16, &str)] = &[
        (json!({"Binds": ["/tmp:/x:bad"]}), 500, "invalid mode: bad"),
        (
            json!({"Binds": ["/tmp:/"]}),
            500,
            "invalid volume specification: '/tmp:/': invalid mount config for type \"bind\": invalid specification: destination can't be '/'",
        ),
        (
            json!({"Binds": ["a:b:c:d:e"]}),
            500,
            "invalid volume specification: 'a:b:c:d:e'",
        ),
        (
            json!({"Binds": ["dup1:/x", "/tmp:/x"]}),
            400,
            "Duplicate mount point: /x",
        ),
        (
            json!({"Binds": ["dup2:/x"], "Tmpfs": {"/x": ""}}),
            400,
            "Duplicate mount point: /x",
        ),
        (
            json!({"Tmpfs": {"rel": ""}}),
            400,
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            json!({"Mounts": [{"Type": "volume", "Target": "/x", "ReadOnly": true}]}),
            400,
            "invalid mount config for type \"volume\": must not set ReadOnly mode when using anonymous volumes",
        ),
        (
            json!({"Mounts": [{"Type": "tmpfs", "Target": "/x", "Source": "s"}]}),
            400,
            "invalid mount config for type \"tmpfs\": field Source must not be specified",
        ),
        (
            json!({"Binds": ["x:/x"]}),
            400,
            "create x: volume name is too short, names should be at least two alphanumeric characters",
        ),
        (
            json!({"VolumesFrom": ["mismatch:bad"]}),
            400,
            "invalid mode: bad",
        ),
    ];
    for (hc, status, msg) in cases {
        let got = api_create(&d, json!({"Image": "busybox", "HostConfig": hc}));
        assert_eq!(got, (*status, msg.to_string()), "HostConfig {hc}");
    }
    let (status, msg) = api_create(
        &d,
        json!({"Image": "busybox", "Volumes": {"/etc/passwd": {}}}),
    );
    assert_eq!(status, 500);
    assert!(
        msg.starts_with("cannot mount volume over existing file, file exists "),
        "{msg}"
    );
    // Named volumes made before an error stay (as with dockerd); a failed
    // create leaves none of the anonymous volumes it made for itself.
    assert_eq!(volume_names(&d), ["dup1"]);
    let (status, _) = api_create(
        &d,
        json!({"Image": "busybox", "Volumes": {"/a": {}}, "HostConfig": {"Binds": ["/b", "/tmp:/c:bad"]}}),
    );
    assert_eq!(status, 500);
    assert_eq!(volume_names(&d), ["dup1"]);

    // Volume names, options, drivers; a missing volume.
    let vol_err = |args: &[&str]| {
        let mut a = vec!["volume", "create"];
        a.extend_from_slice(args);
        d.docker(&a).fails_with(1).trim_end().to_string()
    };
    assert_eq!(
        vol_err(&["a"]),
        "Error response from daemon: create a: volume name is too short, names should be at least two alphanumeric characters"
    );
    assert_eq!(
        vol_err(&["a/b"]),
        r#"Error response from daemon: create a/b: "a/b" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path"#
    );
    assert_eq!(
        vol_err(&["-o", "foo=bar", "vv"]),
        r#"Error response from daemon: create vv: invalid option: "foo""#
    );
    assert_eq!(
        vol_err(&["-o", "type=tmpfs", "vv"]),
        r#"Error response from daemon: create vv: missing required option: "device""#
    );
    assert_eq!(
        vol_err(&["-d", "nope", "vv"]),
        r#"Error response from daemon: create vv: error looking up volume plugin nope: plugin "nope" not found"#
    );
    let r = d
        .request(
            "POST",
            "/volumes/create",
            Some(("application/json", br#"{"Name":"a"}"#)),
        )
        .unwrap();
    assert_eq!(r.status, 400);
    let out = d.docker(["volume", "inspect", "nope"]);
    assert_eq!(
        out.fails_with(1).trim_end(),
        "Error response from daemon: get nope: no such volume"
    );
    assert_eq!(d.get("/volumes/nope").unwrap().status, 404);
    assert_eq!(
        d.request("DELETE", "/volumes/nope", None).unwrap().status,
        404
    );
    assert_eq!(
        d.request("DELETE", "/volumes/nope?force=1", None)
            .unwrap()
            .status,
        204
    );
    assert_eq!(volume_names(&d), ["dup1"]);
}

#[test]
fn volume_commands_and_api_shapes_match_docker() {
    require_root!();
    let d = daemon();
    let events_since = berth_e2e::unix_now();
    assert_eq!(
        d.docker(["volume", "create", "--label", "tier=db", "v10"])
            .ok(),
        "v10\n"
    );
    d.docker(["volume", "create", "v2"]).ok();
    let anon = d.docker(["volume", "create"]).ok().trim().to_string();
    assert!(is_anonymous_name(&anon), "{anon}");

    // The API's shapes, field for field.
    let r = d.get_json("/volumes/v10");
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "CreatedAt",
            "Driver",
            "Labels",
            "Mountpoint",
            "Name",
            "Options",
            "Scope"
        ]
    );
    assert_eq!(r["Labels"], json!({"tier": "db"}));
    assert_eq!(r["Options"], Value::Null, "the CLI sends no empty maps");
    assert!(chrono_like(r["CreatedAt"].as_str().unwrap()), "{r}");
    let list = d.get_json("/volumes");
    assert_eq!(list["Warnings"], Value::Null);
    assert_eq!(list["Volumes"].as_array().unwrap().len(), 3);

    // ls: docker's table, natural order, filters.
    let out = d.docker(["volume", "ls"]);
    assert_eq!(
        out.ok(),
        format!("DRIVER    VOLUME NAME\nlocal     {anon}\nlocal     v2\nlocal     v10\n")
    );
    d.docker(["run", "--name", "user", "-v", "v2:/v", "busybox", "true"])
        .ok();
    let q = |f: &[&str]| {
        let mut a = vec!["volume", "ls", "-q"];
        for x in f {
            a.extend_from_slice(&["--filter", x]);
        }
        d.docker(&a).ok().to_string()
    };
    assert_eq!(q(&["dangling=true"]), format!("{anon}\nv10\n"));
    assert_eq!(q(&["dangling=false"]), "v2\n");
    assert_eq!(q(&["name=v1"]), "v10\n");
    assert_eq!(q(&["label=tier=db"]), "v10\n");
    assert_eq!(q(&["label=tier"]), "v10\n");
    assert_eq!(q(&["driver=local", "label=tier=web"]), "");
    let out = d.docker([
        "volume",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels}}",
        "--filter",
        "name=v10",
    ]);
    assert_eq!(out.ok(), "v10 local local tier=db\n");
    let out = d.docker(["volume", "ls", "--filter", "foo=bar"]);
    assert_eq!(
        out.fails_with(1).trim_end(),
        "Error response from daemon: invalid filter 'foo'"
    );

    // /system/df: sizes and how many containers use each volume.
    d.docker([
        "run",
        "--rm",
        "-v",
        "v10:/v",
        "busybox",
        "sh",
        "-c",
        "head -c 3000 /dev/zero > /v/z",
    ])
    .ok();
    let df = d.get_json("/system/df");
    let v10 = df["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Name"] == "v10")
        .unwrap()
        .clone();
    assert_eq!(v10["UsageData"], json!({"RefCount": 0, "Size": 3000}));
    let v2 = df["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Name"] == "v2")
        .unwrap()
        .clone();
    assert_eq!(v2["UsageData"]["RefCount"], 1);
    let out = d.docker(["system", "df"]);
    assert!(
        out.ok().lines().any(|l| l.starts_with("Local Volumes")
            && l.split_whitespace().collect::<Vec<_>>()[2..4] == ["3", "1"]),
        "{out}"
    );

    // prune: anonymous ones by default, all unused with --all.
    let out = d.docker(["volume", "prune", "-f"]);
    assert_eq!(
        out.ok(),
        format!("Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 0B\n")
    );
    let out = d.docker(["volume", "prune", "-f", "--all", "--filter", "label!=tier"]);
    assert_eq!(
        out.ok(),
        "Total reclaimed space: 0B\n",
        "v2 is used, v10 is labelled"
    );
    let out = d.docker(["volume", "prune", "-af"]);
    assert_eq!(
        out.ok(),
        "Deleted Volumes:\nv10\n\nTotal reclaimed space: 3kB\n"
    );
    assert_eq!(volume_names(&d), ["v2"]);
    let r = d
        .request(
            "POST",
            "/volumes/prune?filters=%7B%22all%22%3A%5B%22maybe%22%5D%7D",
            None,
        )
        .unwrap();
    assert_eq!(
        (r.status, r.message()),
        (
            400,
            "invalid filter 'all': strconv.ParseBool: parsing \"maybe\": invalid syntax"
                .to_string()
        )
    );

    // rm prints each name; errors come after, exit status 1.
    d.docker(["rm", "user"]).ok();
    let out = d.docker(["volume", "rm", "v2", "nope"]);
    assert_eq!(out.stdout, "v2\n");
    assert_eq!(
        out.fails_with(1).trim_end(),
        "Error response from daemon: get nope: no such volume"
    );

    // Volume events.
    let until = berth_e2e::unix_now() + 1;
    let out = d.docker([
        "events",
        "--since",
        &events_since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "type=volume",
        "--format",
        "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.driver}}",
    ]);
    let ev = out.ok();
    for want in [
        "create v10 local",
        "create v2 local",
        "mount v2 local",
        "destroy v10 local",
        "destroy v2 local",
    ] {
        assert!(ev.lines().any(|l| l == want), "no {want:?} in\n{ev}");
    }
    assert!(ev.lines().any(|l| l.starts_with("prune ")), "{ev}");
    let mount = d.docker([
        "events",
        "--since",
        &events_since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "event=mount",
        "--format",
        "{{json .Actor.Attributes}}",
    ]);
    let attrs: Value = serde_json::from_str(mount.ok().lines().next().unwrap()).unwrap();
    assert_eq!(attrs["destination"], "/v");
    assert_eq!(attrs["read/write"], "true");
    assert!(
        attrs["container"].as_str().is_some_and(|c| c.len() == 64),
        "{attrs}"
    );
}

/// `2026-01-02T03:04:05Z` or with an offset.
fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && !s.contains('.')
}

#[test]
fn the_berth_cli_does_what_the_docker_cli_does() {
    require_root!();
    let d = daemon();
    for cli in ["docker", "berth"] {
        let run = |args: &[&str]| {
            if cli == "docker" {
                d.docker(args)
            } else {
                d.berth(args)
            }
        };
        let name = format!("{cli}-vol");
        assert_eq!(
            run(&["volume", "create", "--label", "a=b", &name]).ok(),
            format!("{name}\n")
        );
        let out = run(&[
            "run",
            "--rm",
            "-v",
            &format!("{name}:/v"),
            "--tmpfs",
            "/t",
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "echo hi > /v/f; touch /t/x; cat /v/f",
        ]);
        assert_eq!(out.ok(), "hi\n");
        let out = run(&[
            "run",
            "--rm",
            "--mount",
            &format!("type=volume,src={name},dst=/v,readonly"),
            "busybox",
            "touch",
            "/v/g",
        ]);
        assert_eq!(out.code(), 1, "{out}");
        let out = run(&["run", "--rm", "-v", ":/x", "busybox", "true"]);
        assert_eq!(out.code(), 125, "{out}");
        assert!(
            out.stderr
                .contains("invalid spec: :/x: empty section between colons"),
            "{out}"
        );
    }
    let docker_ls = d.docker(["volume", "ls"]).ok().to_string();
    assert_eq!(d.berth(["volume", "ls"]).ok(), docker_ls);
    let docker_inspect = d
        .docker(["volume", "inspect", "docker-vol", "berth-vol"])
        .ok()
        .to_string();
    assert_eq!(
        d.berth(["volume", "inspect", "docker-vol", "berth-vol"])
            .ok(),
        docker_inspect
    );
    assert_eq!(
        d.berth(["inspect", "docker-vol", "berth-vol"]).ok(),
        docker_inspect
    );
    d.docker([
        "run",
        "--name",
        "user",
        "-v",
        "docker-vol:/v",
        "busybox",
        "true",
    ])
    .ok();
    let out = d.docker(["system", "df"]);
    assert!(
        out.ok()
            .contains("Local Volumes   2         1         6B        3B (50%)"),
        "{out}"
    );
    assert_eq!(d.berth(["system", "df"]).ok(), out.stdout);
    let volumes_part = |s: &str| s[s.find("Local Volumes space usage").unwrap()..].to_string();
    let docker_v = volumes_part(d.docker(["system", "df", "-v"]).ok());
    assert_eq!(volumes_part(d.berth(["system", "df", "-v"]).ok()), docker_v);
    let row = |name: &str| {
        docker_v
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        row("berth-vol").as_deref(),
        Some("berth-vol 0 3B"),
        "{docker_v}"
    );
    assert_eq!(
        row("docker-vol").as_deref(),
        Some("docker-vol 1 3B"),
        "{docker_v}"
    );
    let out = d.docker([
        "ps",
        "-a",
        "--filter",
        "volume=docker-vol",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(out.ok(), "user\n");
    let out = d.docker([
        "ps",
        "-a",
        "--filter",
        "volume=/v",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(out.ok(), "user\n");
    assert_eq!(
        d.docker(["ps", "-aq", "--filter", "volume=berth-vol"]).ok(),
        ""
    );
    d.docker(["rm", "user"]).ok();
    let v: Value = serde_json::from_str(&docker_inspect).unwrap();
    assert_eq!(
        v[0]["Labels"], v[1]["Labels"],
        "both CLIs send the same create request"
    );
    let out = d.berth(["volume", "rm", "berth-vol", "docker-vol"]);
    assert_eq!(out.ok(), "berth-vol\ndocker-vol\n");
    let out = d.berth(["volume", "prune", "-f"]);
    assert_eq!(out.ok(), "Total reclaimed space: 0B\n");
}

#[test]
fn no_mount_is_left_after_containers_are_removed_and_berthd_stops() {
    require_root!();
    let mut d = daemon();
    let host = d.path("hostdir");
    std::fs::create_dir(&host).unwrap();
    d.docker([
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=1m",
        "tv",
    ])
    .ok();
    for (name, extra) in [
        ("one", vec!["-v", "named:/n", "--tmpfs", "/t"]),
        ("two", vec!["-v", "tv:/tv", "--mount", "type=tmpfs,dst=/m"]),
    ] {
        let bind = format!("{}:/h", host.display());
        let mut a = vec!["run", "-d", "--name", name, "-v", bind.as_str()];
        a.extend(extra);
        a.extend(["volimg", "sleep", "300"]);
        d.docker(&a).ok();
    }
    assert!(
        !mounts_under(d.dir()).is_empty(),
        "rootfs and the tmpfs volume are mounted"
    );

    // A crash under running containers: they are re-adopted with their
    // volumes, and their volume mounts are neither lost nor doubled.
    d.kill9();
    d.start_again();
    assert_eq!(
        d.docker(["exec", "two", "sh", "-c", "echo k > /tv/k; cat /tv/k"])
            .ok(),
        "k\n"
    );
    let tv = d.root.join("volumes/tv/_data");
    assert_eq!(mounts_under(&tv).len(), 1, "{:?}", mounts_under(&tv));
    d.docker(["rm", "-f", "-v", "one", "two"]).ok();
    let left = mounts_under(d.dir());
    assert!(left.is_empty(), "mounted after rm -f: {left:?}");
    d.docker([
        "run", "--rm", "-v", "tv:/tv", "-v", "named:/n", "volimg", "true",
    ])
    .ok();
    assert!(
        wait_for(Duration::from_secs(10), || mounts_under(d.dir())
            .is_empty()
            .then_some(()))
        .is_some(),
        "mounted after run --rm: {:?}",
        mounts_under(d.dir())
    );
    d.stop();
    assert_eq!(mounts_under(d.dir()), Vec::<String>::new());
    let names: Vec<String> = std::fs::read_dir(d.root.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"named".into()) && names.contains(&"tv".into()),
        "{names:?}"
    );
    assert!(
        std::fs::read_dir(d.root.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp/ holds nothing after removes"
    );
}
