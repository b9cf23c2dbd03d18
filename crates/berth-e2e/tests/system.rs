//! System-wide operations through the real docker CLI and the berth CLI
//! against berthd: container/network/volume/image prune with Docker's
//! filters and reports, `system prune`, `/system/df` and `system df -v`
//! against what a test made, `/events` for every object type with
//! since/until/filters, `/info` figures, the daemon's housekeeping at start
//! (crash garbage planted in a stopped daemon's data root), `system check
//! [--repair]`, and `berthd --validate`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_e2e::{Daemon, Run, arg, require_root, unix_now, wait_for};
use serde_json::Value;

const KIB100: &str = "dd if=/dev/zero of=/blob bs=1024 count=100 2>/dev/null";

fn json_of(r: &Run) -> Value {
    serde_json::from_str(r.ok()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{r}"))
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// `tmp/` is emptied in the background after a remove: wait for it.
fn wait_tmp_empty(d: &Daemon) {
    let tmp = d.root.join("tmp");
    wait_for(Duration::from_secs(10), || {
        names_in(&tmp).is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("{} stays non-empty: {:?}", tmp.display(), names_in(&tmp)));
}

/// The data root holds no blob, layer, container or volume directory that
/// nothing references: blobs and layers only of the images listed,
/// container directories only of listed containers, volume directories
/// only of listed volumes, and nothing staged.
#[track_caller]
fn assert_data_root_owned(d: &Daemon) {
    wait_tmp_empty(d);
    d.assert_no_garbage();
    let containers: BTreeSet<String> = d
        .docker(["ps", "-aq", "--no-trunc"])
        .ok()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        names_in(&d.root.join("containers")),
        containers,
        "containers/ holds directories of no container"
    );
    let volumes: BTreeSet<String> = d
        .docker(["volume", "ls", "-q"])
        .ok()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        names_in(&d.root.join("volumes")),
        volumes,
        "volumes/ holds directories of no volume"
    );
    let report = json_of(&d.berth(["system", "check", "--format", "json"]));
    assert_eq!(report["Items"], Value::Array(vec![]), "{report}");
}

/// Everything a full prune could remove: a stopped container with 100 KiB
/// in its read-write layer, a created one, an anonymous and a named
/// volume, a user network, a dangling and a tagged image.
fn make_some_of_everything(d: &Daemon) {
    d.load_busybox();
    d.load_multilayer();
    d.docker(["tag", "multilayer", "extra:1"]).ok();
    d.docker(["rmi", "multilayer"]).ok();
    d.docker(["network", "create", "spare"]).ok();
    d.docker(["volume", "create", "named"]).ok();
    d.docker([
        "run",
        "--name",
        "writer",
        "-v",
        "/anon",
        "-v",
        "named:/named",
        "busybox",
        "sh",
        "-c",
        KIB100,
    ])
    .ok();
    d.docker(["create", "--name", "idle", "busybox"]).ok();
}

#[test]
fn container_prune_filters_reports_and_events() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    let since = unix_now().to_string();
    d.docker([
        "run", "--name", "kept", "--label", "keep=1", "busybox", "sh", "-c", KIB100,
    ])
    .ok();
    d.docker(["create", "--name", "plain", "busybox"]).ok();
    d.docker(["run", "-d", "--name", "runs", "busybox", "sleep", "600"])
        .ok();
    let plain = d
        .docker(["inspect", "-f", "{{.Id}}", "plain"])
        .ok()
        .trim()
        .to_string();

    // Bad filters get dockerd's errors.
    let bad = d.docker(["container", "prune", "-f", "--filter", "dangling=true"]);
    assert!(bad.fails().contains("invalid filter 'dangling'"), "{bad}");
    let bad = d.docker(["container", "prune", "-f", "--filter", "until=yesterday"]);
    assert!(
        bad.fails()
            .contains("failed to parse value as time or duration: \"yesterday\""),
        "{bad}"
    );
    // Nothing is older than an hour.
    let out = d.docker(["container", "prune", "-f", "--filter", "until=1h"]);
    assert_eq!(out.ok(), "Total reclaimed space: 0B\n");
    // label!: the labelled one stays.
    let out = d.docker(["container", "prune", "-f", "--filter", "label!=keep"]);
    assert_eq!(
        out.ok(),
        format!("Deleted Containers:\n{plain}\n\nTotal reclaimed space: 0B\n")
    );
    // The rest: what its read-write layer held is reclaimed.
    let out = d.docker(["container", "prune", "-f"]);
    assert!(out.ok().contains("Total reclaimed space: 102.4kB"), "{out}");
    let left = d.docker(["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(left.ok(), "runs\n", "a running container is never pruned");

    let until = (unix_now() + 1).to_string();
    let ev = d.docker([
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--filter",
        "event=prune",
        "--format",
        "{{.Actor.Attributes.reclaimed}}",
    ]);
    // One per prune that ran (the refused ones did not).
    assert_eq!(ev.ok(), "0\n0\n102400\n");
    d.docker(["rm", "-f", "runs"]).ok();
}

#[test]
fn prunes_then_the_data_root_holds_nothing_unreferenced() {
    require_root!();
    let d = Daemon::start();
    make_some_of_everything(&d);
    let out = d.docker(["container", "prune", "-f"]);
    assert!(out.ok().contains("Deleted Containers:"), "{out}");
    assert!(out.ok().contains("Total reclaimed space: 102.4kB"), "{out}");
    let out = d.docker(["network", "prune", "-f"]);
    assert_eq!(out.ok(), "Deleted Networks:\nspare\n\n");
    // API 1.42+: only anonymous volumes without --all.
    let out = d.docker(["volume", "prune", "-f"]);
    assert!(out.ok().starts_with("Deleted Volumes:\n"), "{out}");
    assert_eq!(d.docker(["volume", "ls", "-q"]).ok(), "named\n");
    let out = d.docker(["image", "prune", "-af"]);
    assert!(out.ok().contains("untagged: extra:1"), "{out}");
    assert!(out.ok().contains("untagged: busybox:latest"), "{out}");
    assert_eq!(d.docker(["images", "-q"]).ok(), "");
    assert_data_root_owned(&d);
    assert!(names_in(&d.root.join("content/sha256")).is_empty());
    assert!(names_in(&d.root.join("layers")).is_empty());
}

#[test]
fn docker_system_prune_af_volumes_leaves_nothing_unreferenced() {
    require_root!();
    let d = Daemon::start();
    make_some_of_everything(&d);
    let out = d.docker(["system", "prune", "-af", "--volumes"]);
    let text = out.ok();
    for want in [
        "Deleted Containers:",
        "Deleted Networks:\nspare\n",
        "Deleted Volumes:",
        "Deleted Images:",
        "untagged: extra:1",
        "Total reclaimed space:",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{out}");
    }
    assert_eq!(d.docker(["volume", "ls", "-q"]).ok(), "named\n");
    assert_data_root_owned(&d);
}

#[test]
fn berth_system_prune_prints_what_docker_prints() {
    require_root!();
    let mut outs = Vec::new();
    for docker in [true, false] {
        let d = Daemon::start();
        make_some_of_everything(&d);
        let args = ["system", "prune", "-af", "--volumes"];
        let out = if docker {
            d.docker(args)
        } else {
            d.berth(args)
        };
        // IDs differ between daemons: compare the shape.
        let shape: Vec<String> = out
            .ok()
            .lines()
            .map(|l| {
                if l.len() == 64 || l.starts_with("deleted: sha256:") {
                    "<id>".into()
                } else {
                    l.to_string()
                }
            })
            .collect();
        outs.push(shape);
        assert_data_root_owned(&d);
    }
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn berth_system_prune_asks_and_rejects_until_with_volumes() {
    require_root!();
    let d = Daemon::start();
    let out = d.berth(["system", "prune", "--volumes", "--filter", "until=1h", "-f"]);
    assert!(
        out.fails()
            .contains("The \"until\" filter is not supported with \"--volumes\""),
        "{out}"
    );
    let out = d.berth_stdin(["system", "prune", "-a", "--filter", "label=x"], b"n\n");
    assert_eq!(
        out.ok(),
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all images without at least one container associated to them\n  - all build cache\n\n  Items to be pruned will be filtered with:\n  - label=x\n\nAre you sure you want to continue? [y/N] "
    );
}

#[test]
fn df_reports_what_was_made() {
    require_root!();
    let d = Daemon::start();
    let image = d.load_busybox();
    d.docker(["volume", "create", "vol"]).ok();
    d.docker([
        "run", "--name", "filled", "-v", "vol:/v", "busybox", "sh", "-c",
        "dd if=/dev/zero of=/v/data bs=1024 count=50 2>/dev/null && dd if=/dev/zero of=/blob bs=1024 count=100 2>/dev/null",
    ])
    .ok();
    d.docker(["run", "-d", "--name", "runner", "busybox", "sleep", "600"])
        .ok();
    let df = d.get_json("/system/df");
    let img_size = d.inspect("busybox")["Size"].as_i64().unwrap();
    let containers = df["Containers"].as_array().expect("Containers");
    assert_eq!(containers.len(), 2, "{df}");
    let filled = containers
        .iter()
        .find(|c| c["Names"][0] == "/filled")
        .expect("filled is listed");
    assert_eq!(filled["SizeRw"], 102400, "{filled}");
    assert_eq!(filled["SizeRootFs"].as_i64(), Some(102400 + img_size));
    let runner = containers
        .iter()
        .find(|c| c["Names"][0] == "/runner")
        .unwrap();
    assert_eq!(runner["SizeRw"], 0, "{runner}");
    assert_eq!(df["Images"][0]["Id"], image.as_str());
    assert_eq!(df["Images"][0]["Containers"], 2, "{df}");
    assert_eq!(df["LayersSize"].as_i64(), Some(img_size));
    let vol = &df["Volumes"][0];
    assert_eq!(vol["Name"], "vol");
    assert_eq!(vol["UsageData"]["Size"], 51200, "{vol}");
    assert_eq!(vol["UsageData"]["RefCount"], 1, "{vol}");
    assert_eq!(df["BuildCache"], Value::Array(vec![]));
    // `type=` narrows the answer.
    let only = d.get_json("/system/df?type=volume");
    assert!(
        only.get("Images").is_none() && only["Volumes"].is_array(),
        "{only}"
    );
    // inspect --size and ps --size agree.
    let insp = d.get_json("/containers/filled/json?size=1");
    assert_eq!(insp["SizeRw"], 102400);

    let out = d.docker([
        "system",
        "df",
        "--format",
        "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}|{{.Reclaimable}}",
    ]);
    let lines = out.lines();
    assert_eq!(lines[1], "Containers|2|1|102.4kB|102.4kB (100%)", "{out}");
    assert_eq!(lines[2], "Local Volumes|1|1|51.2kB|0B (0%)", "{out}");
    assert_eq!(lines[3], "Build Cache|0|0|0B|0B", "{out}");
    // The berth CLI prints the same tables.
    for args in [&["system", "df"][..], &["system", "df", "-v"][..]] {
        let docker = d.docker(args);
        let berth = d.berth(args);
        assert_eq!(
            berth.ok(),
            docker.ok(),
            "berth {args:?} differs from docker"
        );
    }
    let v = d.docker(["system", "df", "-v"]);
    assert!(v.ok().contains("Containers space usage:"), "{v}");
    assert!(v.ok().contains("102kB"), "{v}");
    d.docker(["rm", "-f", "runner"]).ok();
}

fn events_text(d: &Daemon, since: &str, until: &str, filters: &[&str], fmt: &str) -> String {
    let mut args = vec!["events", "--since", since, "--until", until];
    for f in filters {
        args.push("--filter");
        args.push(f);
    }
    args.push("--format");
    args.push(fmt);
    d.docker(args).ok().to_string()
}

#[test]
fn events_cover_every_object_type_with_filters() {
    require_root!();
    let d = Daemon::start();
    let since = unix_now().to_string();
    d.load_busybox();
    // container
    d.docker([
        "create", "-t", "--name", "c1", "--label", "team=a", "busybox", "sh",
    ])
    .ok();
    d.docker(["start", "c1"]).ok();
    d.docker(["pause", "c1"]).ok();
    d.docker(["unpause", "c1"]).ok();
    d.docker(["rename", "c1", "c2"]).ok();
    d.docker(["exec", "c2", "true"]).ok();
    d.request("POST", "/containers/c2/resize?h=30&w=100", None)
        .unwrap();
    d.docker(["restart", "-t", "1", "c2"]).ok();
    d.docker(["kill", "c2"]).ok();
    d.docker(["rm", "c2"]).ok();
    // busybox tail keeps all of an endless line in memory.
    let oom = d.docker(["run", "--rm", "-m", "16m", "busybox", "tail", "/dev/zero"]);
    assert_eq!(oom.code(), 137, "{oom}");
    // image
    d.docker(["tag", "busybox", "tagged:1"]).ok();
    d.docker(["rmi", "tagged:1"]).ok();
    let saved = d.path("saved.tar");
    d.docker(["save", "-o", arg(&saved), "busybox"]).ok();
    // volume
    d.docker(["volume", "create", "v1"]).ok();
    d.docker(["run", "--rm", "-v", "v1:/v", "busybox", "true"])
        .ok();
    d.docker(["volume", "rm", "v1"]).ok();
    d.docker(["volume", "prune", "-f"]).ok();
    // network
    d.docker(["network", "create", "n1"]).ok();
    d.docker(["run", "-d", "--name", "nc", "busybox", "sleep", "600"])
        .ok();
    d.docker(["network", "connect", "n1", "nc"]).ok();
    d.docker(["network", "disconnect", "n1", "nc"]).ok();
    d.docker(["network", "rm", "n1"]).ok();
    d.docker(["network", "prune", "-f"]).ok();
    d.docker(["rm", "-f", "nc"]).ok();
    // daemon
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(d.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let id = d.get_json("/info")["ID"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(5), || {
        d.log_text()
            .contains("Reloaded configuration")
            .then_some(())
    })
    .expect("SIGHUP reloads the configuration");
    std::thread::sleep(Duration::from_millis(50));
    let until = (unix_now() + 1).to_string();

    let all = events_text(&d, &since, &until, &[], "{{.Type}} {{.Action}}");
    let got: BTreeSet<&str> = all.lines().collect();
    for want in [
        "container create",
        "container start",
        "container pause",
        "container unpause",
        "container rename",
        "container exec_create: true",
        "container exec_start: true",
        "container exec_die",
        "container resize",
        "container restart",
        "container kill",
        "container die",
        "container stop",
        "container destroy",
        "container attach",
        "image load",
        "image tag",
        "image untag",
        "image save",
        "volume create",
        "volume mount",
        "volume unmount",
        "volume destroy",
        "volume prune",
        "network create",
        "network connect",
        "network disconnect",
        "network destroy",
        "network prune",
        "daemon reload",
    ] {
        assert!(got.contains(want), "no {want:?} event in:\n{all}");
    }

    // Docker's JSON shape, legacy fields for containers.
    let js = events_text(
        &d,
        &since,
        &until,
        &["event=create", "type=container"],
        "{{json .}}",
    );
    let first: Value = serde_json::from_str(js.lines().next().unwrap()).unwrap();
    for k in [
        "status", "id", "from", "Type", "Action", "Actor", "scope", "time", "timeNano",
    ] {
        assert!(first.get(k).is_some(), "{k} missing in {first}");
    }
    assert_eq!(first["from"], "busybox");
    assert_eq!(first["scope"], "local");
    assert_eq!(first["Actor"]["Attributes"]["team"], "a");
    let js = events_text(
        &d,
        &since,
        &until,
        &["type=network", "event=create"],
        "{{json .}}",
    );
    let net: Value = serde_json::from_str(js.lines().next().unwrap()).unwrap();
    assert!(
        net.get("status").is_none(),
        "no legacy fields for networks: {net}"
    );

    // Filters: type, event, container (name or ID prefix), image (also
    // container events of that image), label, volume, network, daemon.
    let f = |filters: &[&str]| events_text(&d, &since, &until, filters, "{{.Type}} {{.Action}}");
    let vol = f(&["type=volume"]);
    assert!(vol.lines().all(|l| l.starts_with("volume ")), "{vol}");
    assert_eq!(f(&["volume=v1", "event=mount"]), "volume mount\n");
    let c2 = f(&["container=c2", "event=destroy"]);
    assert_eq!(c2, "container destroy\n");
    let img = f(&["image=busybox", "event=create"]);
    // c1, the memory hog, the `run --rm` of the volume steps and nc.
    assert_eq!(img, "container create\n".repeat(4), "{img}");
    let lab = f(&["label=team=a", "event=start"]);
    assert_eq!(
        lab, "container start\ncontainer start\n",
        "start and restart's start"
    );
    assert_eq!(f(&["network=n1", "event=connect"]), "network connect\n");
    assert_eq!(f(&[format!("daemon={id}").as_str()]), "daemon reload\n");
    let exec = f(&["event=exec_start"]);
    assert_eq!(
        exec, "container exec_start: true\n",
        "exec_start matches by prefix"
    );
    // until in the past ends the stream at once; a bad since is an error.
    let bad = d.docker(["events", "--since", "soon", "--until", &until]);
    assert!(bad.code() != 0, "{bad}");
}

#[test]
fn info_reports_real_figures() {
    require_root!();
    let d = Daemon::with_config(
        r#"{"insecure-registries": ["myreg.test:5000", "10.9.0.0/16"], "registry-mirrors": ["https://mirror.test"],
            "default-address-pools": [{"base": "10.123.0.0/16", "size": 24}]}"#,
    );
    d.load_busybox();
    let info = |d: &Daemon| json_of(&d.docker(["info", "--format", "{{json .}}"]));
    let i = info(&d);
    assert_eq!(i["Containers"], 0);
    assert_eq!(i["Images"], 1);
    assert_eq!(i["Driver"], "overlay2");
    assert_eq!(i["DockerRootDir"], d.root.display().to_string());
    assert_eq!(
        i["NCPU"].as_u64(),
        Some(std::thread::available_parallelism().unwrap().get() as u64)
    );
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(i["MemTotal"].as_u64(), Some(mem_kb * 1024));
    let uname = Command::new("uname").arg("-r").output().unwrap();
    assert_eq!(
        i["KernelVersion"].as_str().unwrap(),
        String::from_utf8_lossy(&uname.stdout).trim()
    );
    let cgv = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    assert_eq!(i["CgroupVersion"], cgv);
    assert_eq!(i["CgroupDriver"], "cgroupfs");
    assert_eq!(i["LoggingDriver"], "json-file");
    assert_eq!(i["DefaultRuntime"], "berth");
    assert!(i["Runtimes"]["berth"].is_object(), "{}", i["Runtimes"]);
    let reg = &i["RegistryConfig"];
    assert!(
        reg["InsecureRegistryCIDRs"]
            .as_array()
            .unwrap()
            .contains(&"10.9.0.0/16".into()),
        "{reg}"
    );
    assert_eq!(
        reg["IndexConfigs"]["myreg.test:5000"]["Secure"], false,
        "{reg}"
    );
    assert_eq!(reg["Mirrors"][0], "https://mirror.test/", "{reg}");
    assert_eq!(i["DefaultAddressPools"][0]["Base"], "10.123.0.0/16", "{i}");
    assert_eq!(i["DefaultAddressPools"][0]["Size"], 24);
    assert_eq!(i["FirewallBackend"]["Driver"], "nftables");
    assert_eq!(
        reg["IndexConfigs"]["docker.io"]["Mirrors"][0],
        "https://mirror.test/"
    );

    // Counts follow containers through their states.
    d.docker(["create", "--name", "made", "busybox"]).ok();
    d.docker(["run", "-d", "--name", "up", "busybox", "sleep", "600"])
        .ok();
    let counts = |i: &Value| {
        [
            "Containers",
            "ContainersRunning",
            "ContainersPaused",
            "ContainersStopped",
        ]
        .map(|k| i[k].as_u64().unwrap())
    };
    assert_eq!(counts(&info(&d)), [2, 1, 0, 1]);
    d.docker(["pause", "up"]).ok();
    assert_eq!(counts(&info(&d)), [2, 0, 1, 1]);
    d.docker(["unpause", "up"]).ok();
    d.docker(["stop", "-t", "0", "up"]).ok();
    assert_eq!(counts(&info(&d)), [2, 0, 0, 2]);

    let text = d.docker(["info"]);
    for want in [
        " Containers: 2\n",
        "  Running: 0\n",
        "  Stopped: 2\n",
        " Images: 1\n",
        " Storage Driver: overlay2\n",
        " Insecure Registries:\n",
        "  myreg.test:5000\n",
        " Registry Mirrors:\n",
        "  https://mirror.test/\n",
        "   Base: 10.123.0.0/16, Size: 24\n",
        &format!(" Docker Root Dir: {}\n", d.root.display()),
    ] {
        assert!(text.ok().contains(want), "{want:?} missing:\n{text}");
    }
    assert!(!text.ok().contains("WARNING"), "{text}");
}

/// Makes `p`'s modification time two hours old.
fn age(p: &Path) {
    let st = Command::new("touch")
        .args(["-h", "-d", "2 hours ago"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn mount_tmpfs(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on {}", p.display());
}

fn is_mounted(p: &Path) -> bool {
    let want = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// Unmounts `p` if a failed test left it mounted.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

const FAKE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const FAKE2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

#[test]
fn crash_garbage_is_reconciled_at_start_and_reported() {
    require_root!();
    let mut d = Daemon::start();
    d.load_busybox();
    d.docker(["create", "--name", "lost", "busybox"]).ok();
    d.docker(["volume", "create", "keep"]).ok();
    let lost = d
        .docker(["inspect", "-f", "{{.Id}}", "lost"])
        .ok()
        .trim()
        .to_string();
    d.stop();

    let root = d.root.clone();
    std::fs::write(root.join("tmp/ingest-1"), b"half a blob").unwrap();
    std::fs::create_dir_all(root.join("tmp/layer-stage/etc")).unwrap();
    std::fs::write(root.join(format!("content/sha256/{FAKE}")), b"orphan blob").unwrap();
    std::fs::create_dir_all(root.join(format!("layers/{FAKE}/diff"))).unwrap();
    std::fs::create_dir_all(root.join(format!("containers/{FAKE}/upper"))).unwrap();
    let dangling = root.join(format!("containers/{FAKE}/rootfs"));
    let _u1 = Unmount(dangling.clone());
    mount_tmpfs(&dangling);
    let staged_mount = root.join("tmp/mnt");
    let _u2 = Unmount(staged_mount.clone());
    mount_tmpfs(&staged_mount);
    std::fs::remove_dir_all(root.join(format!("containers/{lost}"))).unwrap();
    let log_before = d.log_text().len();

    d.start_again();
    let log = d.log_text()[log_before..].to_string();
    for want in [
        "housekeeping: emptied tmp/",
        "entries=3",
        "housekeeping: removed blobs and layer directories no image references",
        "blobs=1 layers=1",
        "removed a container directory no container owns",
        "removed a container whose directory is gone",
        "housekeeping: removed container directories without rows and rows without directories",
        "directories=1 rows=1",
        "unmounted a dangling mount",
    ] {
        assert!(log.contains(want), "{want:?} not in the log:\n{log}");
    }
    assert!(!is_mounted(&dangling) && !is_mounted(&staged_mount));
    assert!(!root.join(format!("containers/{FAKE}")).exists());
    assert!(!root.join(format!("content/sha256/{FAKE}")).exists());
    assert!(!root.join(format!("layers/{FAKE}")).exists());
    assert_eq!(
        d.docker(["ps", "-aq"]).ok(),
        "",
        "the row without a directory is gone"
    );
    assert_eq!(d.docker(["volume", "ls", "-q"]).ok(), "keep\n");
    d.docker(["run", "--rm", "busybox", "true"]).ok();
    assert_data_root_owned(&d);
}

#[test]
fn system_check_lists_and_repairs_planted_garbage() {
    require_root!();
    let d = Daemon::start();
    d.load_busybox();
    d.docker(["volume", "create", "keep"]).ok();
    let clean = d.berth(["system", "check"]);
    assert_eq!(
        clean.ok(),
        "Nothing to repair: every file under the data root is owned.\n"
    );

    let root = d.root.clone();
    let blob = root.join(format!("content/sha256/{FAKE}"));
    std::fs::write(&blob, vec![0u8; 1000]).unwrap();
    let layer = root.join(format!("layers/{FAKE}"));
    std::fs::create_dir_all(layer.join("diff")).unwrap();
    std::fs::write(layer.join("diff/f"), vec![0u8; 2000]).unwrap();
    let stray = root.join("content/sha256/not-a-digest");
    std::fs::write(&stray, b"x").unwrap();
    let cdir = root.join(format!("containers/{FAKE2}"));
    let mnt = cdir.join("rootfs");
    let _u = Unmount(mnt.clone());
    mount_tmpfs(&mnt);
    age(&cdir);
    let vdir = root.join("volumes/handmade");
    std::fs::create_dir_all(vdir.join("_data")).unwrap();
    age(&vdir);
    let old_tmp = root.join("tmp/old-ingest");
    std::fs::write(&old_tmp, vec![0u8; 300]).unwrap();
    age(&old_tmp);
    let fresh_tmp = root.join("tmp/fresh-ingest");
    std::fs::write(&fresh_tmp, b"in flight").unwrap();

    let report = json_of(&d.berth(["system", "check", "--format", "json"]));
    let items = report["Items"].as_array().unwrap();
    let listed: BTreeSet<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["Kind"].as_str().unwrap().into(),
                i["Path"].as_str().unwrap().into(),
            )
        })
        .collect();
    let p = |x: &Path| x.display().to_string();
    for want in [
        ("blob", p(&blob)),
        ("layer", p(&layer)),
        ("stray", p(&stray)),
        ("container", p(&cdir)),
        ("mount", p(&mnt)),
        ("volume", p(&vdir)),
        ("staging", p(&old_tmp)),
    ] {
        assert!(
            listed.contains(&(want.0.to_string(), want.1.clone())),
            "{want:?} not listed: {listed:?}"
        );
    }
    assert_eq!(items.len(), 7, "{report}");
    assert!(!listed.iter().any(|(_, path)| path.contains("fresh-ingest")));
    // The same over the API, and the table view.
    let api = d.get_json("/berth/system/check");
    assert_eq!(api["Items"].as_array().unwrap().len(), 7);
    let table = d.berth(["system", "check"]);
    assert!(table.ok().starts_with("KIND "), "{table}");
    assert!(table.ok().contains("run with --repair"), "{table}");

    let fixed = d.berth(["system", "check", "--repair"]);
    assert!(fixed.ok().contains("reclaimed"), "{fixed}");
    assert_eq!(fixed.ok().matches("removed").count(), 7, "{fixed}");
    for gone in [&blob, &layer, &stray, &cdir, &vdir, &old_tmp] {
        assert!(!gone.exists(), "{} is still there", gone.display());
    }
    assert!(!is_mounted(&mnt));
    assert!(fresh_tmp.exists(), "a fresh staging file is left alone");
    std::fs::remove_file(&fresh_tmp).unwrap();
    assert_eq!(
        d.berth(["system", "check"]).ok(),
        "Nothing to repair: every file under the data root is owned.\n"
    );
    d.docker(["run", "--rm", "-v", "keep:/k", "busybox", "true"])
        .ok();
    assert_data_root_owned(&d);
}

fn validate(config: &str) -> Run {
    let dir = berth_e2e::short_tempdir("berth-validate-");
    let f = dir.path().join("daemon.json");
    std::fs::write(&f, config).unwrap();
    let mut cmd = Command::new(berth_e2e::bin("berthd"));
    cmd.arg("--validate").arg("--config-file").arg(&f);
    let out = Run::exec(cmd, None);
    // The file's path appears in errors: make it predictable.
    Run {
        stderr: out.stderr.replace(&f.display().to_string(), "F"),
        ..out
    }
}

#[test]
fn validate_checks_a_daemon_json() {
    let ok = validate(
        r#"{"debug": true, "live-restore": true, "insecure-registries": ["r:5000"], "log-opts": {"max-size": "10m"}}"#,
    );
    assert_eq!(ok.ok(), "configuration OK\n");
    let bad = validate(r#"{"debug": true, "bogus-key": 1, "another": 2}"#);
    assert_eq!(
        bad.fails_with(1),
        "unable to configure the Docker daemon with file F: the following directives don't match any configuration option: another, bogus-key\n"
    );
    let bad = validate(r#"{"debug": "yes"}"#);
    assert_eq!(
        bad.fails_with(1),
        "unable to configure the Docker daemon with file F: json: cannot unmarshal string into Go struct field Config.debug of type bool\n"
    );
    let bad = validate(r#"{"log-level": "loud"}"#);
    assert_eq!(
        bad.fails_with(1),
        "unable to configure the Docker daemon with file F: invalid logging level: loud\n"
    );
    let bad = validate(r#"{"bip": "not-an-address"}"#);
    assert!(bad.fails_with(1).contains("invalid bip"), "{bad}");
    let bad = validate(r#"{"log-driver": "journald"}"#);
    assert!(bad.fails_with(1).contains("journald"), "{bad}");
    let bad = validate("{not json");
    assert!(
        bad.fails_with(1)
            .starts_with("unable to configure the Docker daemon with file F: "),
        "{bad}"
    );
}

#[test]
fn a_daemon_with_an_invalid_config_does_not_start() {
    require_root!();
    let d = Daemon::new();
    std::fs::write(d.path("daemon.json"), r#"{"no-such-option": true}"#).unwrap();
    let mut cmd = d.berthd_command(&d.path("x.sock"), &d.path("x.pid"));
    let out = Run::exec(
        {
            cmd.env("BERTH_LOG", "off");
            cmd
        },
        None,
    );
    assert!(
        out.fails().contains(
            "the following directives don't match any configuration option: no-such-option"
        ),
        "{out}"
    );
}
