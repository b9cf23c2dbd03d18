//! berth-registry with berth and docker as its clients: berthd pushes to it
//! and pulls from it, through the berth CLI and through the real docker CLI,
//! and serves as berthd's Docker Hub mirror (what `scripts/setup` does).

use berth_e2e::registry::Registry;
use berth_e2e::{Daemon, require_root};

#[test]
fn berth_and_docker_push_to_and_pull_from_berth_registry() {
    require_root!();
    let reg = Registry::start_berth();
    let d = Daemon::start_host_network();
    d.load_busybox();
    let name = format!("{}/tools/busybox:1", reg.addr);
    d.berth(["tag", "busybox", &name]).ok();
    let out = d.berth(["push", &name]);
    assert!(out.ok().contains("1: digest: sha256:"), "{out}");
    // The docker CLI pushes another tag: every layer is already there.
    let name2 = format!("{}/tools/busybox:2", reg.addr);
    d.docker(["tag", "busybox", &name2]).ok();
    let out = d.docker(["push", &name2]);
    assert!(out.ok().contains("Layer already exists"), "{out}");

    // A fresh daemon pulls both back and runs them.
    let d2 = Daemon::start_host_network();
    let out = d2.docker(["pull", &name]);
    assert!(out.ok().contains("Pull complete"), "{out}");
    let out = d2.berth(["pull", &name2]);
    assert!(
        out.ok()
            .contains(&format!("Status: Downloaded newer image for {name2}")),
        "{out}"
    );
    let out = d2.docker(["run", "--rm", &name, "echo", "pulled from berth-registry"]);
    assert_eq!(out.ok(), "pulled from berth-registry\n");
    let a = d2
        .docker(["image", "inspect", "-f", "{{.Id}}", &name])
        .ok()
        .to_string();
    let b = d2
        .docker(["image", "inspect", "-f", "{{.Id}}", &name2])
        .ok()
        .to_string();
    assert_eq!(a, b);
}

#[test]
fn berth_registry_as_the_docker_hub_mirror() {
    require_root!();
    let reg = Registry::start_berth();
    let src = Daemon::start_host_network();
    src.load_busybox();
    let mirrored = format!("{}/library/busybox:latest", reg.addr);
    src.berth(["tag", "busybox", &mirrored]).ok();
    src.berth(["push", &mirrored]).ok();
    // `busybox` means docker.io/library/busybox: the mirror answers it, so
    // Docker Hub is never asked.
    let d = Daemon::with_config_host_network(&format!(
        r#"{{"registry-mirrors": ["http://{}"], "bridge": "none", "iptables": false, "ip-forward": false}}"#,
        reg.addr
    ));
    let out = d.docker(["run", "--rm", "busybox", "echo", "from the mirror"]);
    assert_eq!(out.stdout, "from the mirror\n", "{out}");
    assert!(
        out.stderr
            .contains("Unable to find image 'busybox:latest' locally"),
        "{out}"
    );
    let out = d.berth(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(out.ok(), "busybox:latest\n");
}
