//! berthd as a registry client, against the reference registry
//! (`docker-registry`) started per test on 127.0.0.1: pull with the berth
//! CLI and the docker CLI from what skopeo pushed, push from berthd and
//! pull back into a fresh berthd, basic auth and `login`, a tampered blob,
//! a crash in the middle of a pull.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use berth_e2e::fixtures::{busybox, diff_ids, id_of, legacy_archive, multilayer, short};
use berth_e2e::registry::FaultProxy;
use berth_e2e::{Daemon, Registry, require_root};
use sha2::{Digest as _, Sha256};

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A registry holding busybox as `busybox:latest`; the manifest's digest.
fn registry_with_busybox(d: &Daemon, reg: &Registry) -> String {
    let a = d.write(
        "bb.tar",
        &legacy_archive(&[(busybox(), &["busybox:latest"])]),
    );
    reg.push_archive(&a, "busybox:latest");
    sha256(&reg.raw_manifest("busybox:latest"))
}

#[test]
fn berth_pull_shows_docker_progress_and_then_is_up_to_date() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let digest = registry_with_busybox(&d, &reg);
    let name = reg.name("busybox");
    let out = d.berth(["pull", &name]);
    let lines = out.lines();
    let manifest: serde_json::Value =
        serde_json::from_slice(&reg.raw_manifest("busybox:latest")).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let l = short(&layer);
    assert_eq!(
        lines,
        vec![
            "Using default tag: latest".to_string(),
            "latest: Pulling from busybox".into(),
            format!("{l}: Pulling fs layer"),
            format!("{l}: Verifying Checksum"),
            format!("{l}: Download complete"),
            format!("{l}: Pull complete"),
            format!("Digest: {digest}"),
            format!("Status: Downloaded newer image for {name}:latest"),
            format!("{name}:latest"),
        ],
        "{out}"
    );
    let img = d.inspect(&name);
    assert_eq!(img["Id"], id_of(busybox()));
    assert_eq!(img["RepoDigests"][0], format!("{name}@{digest}"));
    assert_eq!(
        img["RootFS"]["Layers"],
        serde_json::json!(diff_ids(busybox()))
    );
    d.assert_no_garbage();

    let again = d.berth(["pull", "-q", &name]);
    assert_eq!(again.ok().trim(), format!("{name}:latest"));
    let again = d.berth(["pull", &name]);
    assert!(
        again
            .ok()
            .contains(&format!("Status: Image is up to date for {name}:latest")),
        "{again}"
    );
    // by digest, through the API: the same image, recorded under the digest
    let by_digest = d.berth(["pull", &format!("{name}@{digest}")]);
    assert!(
        by_digest.ok().contains(&format!("Digest: {digest}")),
        "{by_digest}"
    );
    assert_eq!(d.image_ids(), vec![id_of(busybox())]);
    // --all-tags: every tag of the repository
    let a = d.path("bb.tar");
    reg.push_archive(&a, "busybox:second");
    let all = d.berth(["pull", "-a", &name]);
    let text = all.ok();
    assert!(text.contains("second: Pulling from busybox"), "{all}");
    assert!(text.ends_with(&format!("{name}\n")), "{all}");
    let tags = d.berth(["images", "--format", "{{.Tag}}", &name]);
    assert_eq!(tags.lines(), vec!["latest", "second"], "{tags}");
    d.assert_no_garbage();
}

#[test]
fn docker_cli_pulls_and_runs_from_a_registry() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let digest = registry_with_busybox(&d, &reg);
    let name = reg.name("busybox:latest");
    let out = d.docker(["pull", &name]);
    let text = out.ok();
    assert!(text.contains("latest: Pulling from busybox"), "{out}");
    assert!(text.contains(&format!("Digest: {digest}")), "{out}");
    assert!(
        text.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(
        d.docker(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
            .ok()
            .trim(),
        format!("{name} {}", short(&id_of(busybox())))
    );
    let until = (berth_e2e::unix_now() + 1).to_string();
    let ev = d.docker([
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "type=image",
        "--format",
        "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
    ]);
    assert!(
        ev.ok()
            .contains(&format!("pull {name} {}", reg.name("busybox"))),
        "{ev}"
    );
    let run = d.docker(["run", "--rm", &name, "echo", "pulled-and-ran"]);
    assert_eq!(run.ok().trim(), "pulled-and-ran");
    let again = d.docker(["pull", &name]);
    assert!(
        again
            .ok()
            .contains(&format!("Status: Image is up to date for {name}")),
        "{again}"
    );
    // docker run of a missing image pulls it through berthd first
    d.api_remove_all();
    let run = d.docker(["run", "--rm", &name, "echo", "pulled-by-run"]);
    assert_eq!(run.ok().trim(), "pulled-by-run");
    assert!(
        run.stderr
            .contains(&format!("Unable to find image '{name}' locally")),
        "{run}"
    );
    // an unknown tag: the registry's error, as an HTTP error
    let missing = d.docker(["pull", &reg.name("busybox:nope")]);
    assert!(missing.fails().contains("manifest unknown"), "{missing}");
    d.assert_no_garbage();
}

#[test]
fn push_from_berthd_then_pull_into_a_fresh_berthd() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d1 = Daemon::start_host_network();
    let id = d1.load_multilayer();
    let name = reg.name("team/multilayer:v1");
    d1.berth(["tag", "multilayer:latest", &name]).ok();
    let out = d1.berth(["push", &name]);
    let text = out.ok();
    assert!(
        text.starts_with(&format!(
            "The push refers to repository [{}]",
            reg.name("team/multilayer")
        )),
        "{out}"
    );
    let n_layers = multilayer().layers.len();
    assert_eq!(text.matches(": Pushed").count(), n_layers, "{out}");
    // the digest printed is what the registry serves
    let manifest = reg.raw_manifest("team/multilayer:v1");
    let digest = sha256(&manifest);
    assert!(
        text.contains(&format!("v1: digest: {digest} size: {}", manifest.len())),
        "{out}"
    );
    // a second push finds every layer there
    let again = d1.berth(["push", &name]);
    assert_eq!(
        again.ok().matches(": Layer already exists").count(),
        n_layers,
        "{again}"
    );
    // docker push of the same image to another repository mounts the blobs
    let other = reg.name("other/ml:v2");
    d1.berth(["tag", "multilayer:latest", &other]).ok();
    let mounted = d1.docker(["push", &other]);
    assert_eq!(
        mounted
            .ok()
            .matches(": Mounted from team/multilayer")
            .count(),
        n_layers,
        "{mounted}"
    );

    let d2 = Daemon::start_host_network();
    let pulled = d2.docker(["pull", &name]);
    assert!(
        pulled.ok().contains(&format!("Digest: {digest}")),
        "{pulled}"
    );
    let img = d2.inspect(&name);
    assert_eq!(img["Id"], id);
    assert_eq!(
        img["RootFS"]["Layers"],
        serde_json::json!(diff_ids(multilayer()))
    );
    d2.assert_no_garbage();
    d1.assert_no_garbage();
}

#[test]
fn basic_auth_login_and_logout() {
    require_root!();
    let Some(reg) = Registry::start_htpasswd("alice", "s3cret") else {
        return;
    };
    let d = Daemon::start_host_network();
    registry_with_busybox(&d, &reg);
    let name = reg.name("busybox:latest");
    // no credentials: the registry says 401
    let anon = d.berth(["pull", &name]);
    assert!(anon.fails().contains("no basic auth credentials"), "{anon}");
    // wrong password
    let bad = d.berth_stdin(
        ["login", "-u", "alice", "--password-stdin", &reg.addr],
        b"wrong\n",
    );
    assert!(bad.fails().contains("401 Unauthorized"), "{bad}");
    // POST /auth refuses with dockerd's status, 401
    let body = format!(
        r#"{{"username":"alice","password":"wrong","serveraddress":"{}"}}"#,
        reg.addr
    );
    let r = d
        .request("POST", "/auth", Some(("application/json", body.as_bytes())))
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.message().contains("login attempt to"), "{}", r.text());
    let config = d.path("docker-config/config.json");
    assert!(!config.exists(), "a failed login stored something");
    // right password: stored docker's way, mode 0600
    let good = d.berth_stdin(
        ["login", "-u", "alice", "--password-stdin", &reg.addr],
        b"s3cret\n",
    );
    assert_eq!(good.ok().trim(), "Login Succeeded", "{good}");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(cfg["auths"][&reg.addr]["auth"], "YWxpY2U6czNjcmV0");
    d.berth(["pull", "-q", &name]).ok();
    assert_eq!(d.image_ids(), vec![id_of(busybox())]);
    // the docker CLI logs in through POST /auth and sends X-Registry-Auth
    d.api_remove_all();
    let dl = d.docker_stdin(
        ["login", "-u", "alice", "--password-stdin", &reg.addr],
        b"s3cret\n",
    );
    assert!(dl.ok().contains("Login Succeeded"), "{dl}");
    d.docker(["pull", "-q", &name]).ok();
    let bad = d.docker_stdin(
        ["login", "-u", "alice", "--password-stdin", &reg.addr],
        b"nope\n",
    );
    assert!(bad.fails().contains("401 Unauthorized"), "{bad}");
    // push needs the credentials too
    d.berth(["tag", &name, &reg.name("pushed:1")]).ok();
    d.berth(["push", &reg.name("pushed:1")]).ok();
    let out = d.berth(["logout", &reg.addr]);
    assert_eq!(
        out.ok().trim(),
        format!("Removing login credentials for {}", reg.addr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(cfg["auths"].get(&reg.addr).is_none(), "{cfg}");
    assert!(
        d.berth(["push", &reg.name("pushed:1")])
            .fails()
            .contains("no basic auth credentials")
    );
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_stored() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    registry_with_busybox(&d, &reg);
    let manifest: serde_json::Value =
        serde_json::from_slice(&reg.raw_manifest("busybox:latest")).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let out = d.berth(["pull", &reg.name("busybox")]);
    let err = out.fails();
    assert!(
        err.contains(&format!(
            "filesystem layer verification failed for digest {layer}"
        )),
        "{out}"
    );
    assert!(d.image_ids().is_empty());
    let st = d.store();
    assert!(st.layers.is_empty(), "{st:?}");
    assert!(st.tmp.is_empty(), "{st:?}");
    assert!(
        !st.blobs.contains(layer.strip_prefix("sha256:").unwrap()),
        "the tampered blob was stored: {st:?}"
    );
    // the docker CLI shows the same error
    let out = d.docker(["pull", &reg.name("busybox")]);
    assert!(out.fails().contains("verification failed"), "{out}");
}

#[test]
fn a_crash_mid_pull_leaves_a_store_berthd_starts_on() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let mut d = Daemon::start_host_network();
    let archive = d.path("big.tar");
    {
        let mut f = std::fs::File::create(&archive).unwrap();
        berth_fixtures::write_big_image_docker_save(&mut f, 48, 3, 7, "big:latest").unwrap();
    }
    reg.push_archive(&archive, "big:latest");
    let name = reg.name("big:latest");
    let mut child = d
        .docker_command(["pull", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = d.root.join("tmp");
    let busy = berth_e2e::wait_for(Duration::from_secs(60), || {
        std::fs::read_dir(&tmp).ok().and_then(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("unpack-"))
                .then_some(())
        })
    });
    assert!(busy.is_some(), "the pull never started unpacking");
    d.kill9();
    let _ = child.wait();
    d.start_again();
    assert!(d.image_ids().is_empty());
    let st = d.store();
    assert!(st.tmp.is_empty(), "{st:?}");
    let out = d.docker(["pull", &name]);
    assert!(
        out.ok()
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    d.assert_no_garbage();
}

fn layer_digests(reg: &Registry, repo_tag: &str) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(&reg.raw_manifest(repo_tag)).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_interrupted_blob_download_resumes_with_range() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    registry_with_busybox(&d, &reg);
    let layer = layer_digests(&reg, "busybox:latest").remove(0);
    let proxy = FaultProxy::start(&reg.addr, &layer, 100_000, 1);
    let name = format!("{}/busybox:latest", proxy.addr);
    let out = d.berth(["pull", &name]);
    assert!(
        out.ok()
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    let gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && r.contains(&layer))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(!gets[0].contains("Range"), "{gets:?}");
    let start: u64 = gets[1]
        .split("bytes=")
        .nth(1)
        .and_then(|r| r.trim_end_matches(['-', ']']).parse().ok())
        .unwrap_or_else(|| panic!("second request is not a resume: {gets:?}"));
    assert!(start > 0 && start < 100_000, "{gets:?}");
    assert_eq!(d.inspect(&name)["Id"], id_of(busybox()));
    d.assert_no_garbage();
}

#[test]
fn a_registry_failing_mid_pull_fails_cleanly_and_the_retry_reuses_what_was_verified() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let a = d.write(
        "ml.tar",
        &legacy_archive(&[(multilayer(), &["multilayer:latest"])]),
    );
    reg.push_archive(&a, "multilayer:latest");
    let layers = layer_digests(&reg, "multilayer:latest");
    let target = layers.last().unwrap().clone();
    let proxy = FaultProxy::start(&reg.addr, &target, 0, usize::MAX);
    let name = format!("{}/multilayer:latest", proxy.addr);
    let out = d.berth(["pull", &name]);
    let err = out.fails();
    assert!(err.contains(&format!("download blob {target}")), "{out}");
    assert!(d.image_ids().is_empty());
    assert!(d.store().tmp.is_empty());
    proxy.heal();
    let out = d.berth(["pull", &name]);
    let text = out.ok();
    let others = layers.len() - 1;
    assert_eq!(text.matches(": Already exists").count(), others, "{out}");
    for l in &layers[..others] {
        let n = proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET ") && r.contains(l.as_str()))
            .count();
        assert_eq!(n, 1, "layer {l} was downloaded {n} times");
    }
    assert_eq!(d.inspect(&name)["Id"], id_of(multilayer()));
    d.assert_no_garbage();
}

#[test]
fn bearer_token_flow_with_a_token_server() {
    require_root!();
    let d = Daemon::start_host_network();
    let tokens = berth_e2e::token::TokenServer::start(d.dir(), "bob", "hunter2");
    let Some(reg) = Registry::start_token(&tokens, "bob", "hunter2") else {
        return;
    };
    registry_with_busybox(&d, &reg);
    let name = reg.name("busybox:latest");
    // anonymous: the token server refuses
    let anon = d.berth(["pull", &name]);
    assert!(anon.fails().contains("authentication required"), "{anon}");
    let bad = d.berth_stdin(
        ["login", "-u", "bob", "--password-stdin", &reg.addr],
        b"wrong\n",
    );
    assert!(
        bad.fails().contains("incorrect username or password"),
        "{bad}"
    );
    let good = d.berth_stdin(
        ["login", "-u", "bob", "--password-stdin", &reg.addr],
        b"hunter2\n",
    );
    assert_eq!(good.ok().trim(), "Login Succeeded", "{good}");
    let before = tokens.issued();
    let out = d.berth(["pull", &name]);
    assert!(
        out.ok()
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    // one token for the pull scope, cached across the manifest, config and layer requests
    assert_eq!(tokens.issued() - before, 1);
    assert!(
        tokens
            .scopes()
            .contains(&"repository:busybox:pull".to_string()),
        "{:?}",
        tokens.scopes()
    );
    // push asks for pull,push
    d.berth(["tag", &name, &reg.name("mine/bb:1")]).ok();
    let pushed = d.berth(["push", &reg.name("mine/bb:1")]);
    assert!(pushed.ok().contains("1: digest: sha256:"), "{pushed}");
    assert!(
        tokens
            .scopes()
            .contains(&"repository:mine/bb:pull,push".to_string()),
        "{:?}",
        tokens.scopes()
    );
    d.assert_no_garbage();
}

/// An OCI layout directory whose `index.json` names (`multi`) an index of
/// busybox for the host's platform and a small image for linux/arm64/v8.
fn write_multi_platform_layout(dir: &std::path::Path) -> (String, String) {
    use berth_e2e::fixtures::small;
    let host = berth_fixtures::host_architecture();
    let (ix, _) = write_index_layout(
        dir,
        &[(busybox(), host, None), (small(), "arm64", Some("v8"))],
    );
    (ix, id_of(small()))
}

/// An OCI layout directory whose `index.json` names (`multi`) an OCI index
/// of `entries` (image, architecture, variant), all linux. Returns the
/// index's digest and each entry's manifest digest.
fn write_index_layout(
    dir: &std::path::Path,
    entries: &[(&berth_fixtures::BuiltImage, &str, Option<&str>)],
) -> (String, Vec<String>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let d = sha256(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for (img, arch, variant) in entries {
        for (_, bytes, _) in &img.blobs {
            put(bytes);
        }
        let md = put(&img.manifest_json);
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = serde_json::json!(v);
        }
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": img.manifest_json.len(), "platform": platform,
        }));
        digests.push(md);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descs,
    }))
    .unwrap();
    let ix = put(&index);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": ix, "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    (ix, digests)
}

/// skopeo copies the layout's index (`--all`) to `repo_tag` of `reg`.
#[track_caller]
fn skopeo_push_layout(reg: &Registry, layout: &std::path::Path, repo_tag: &str) {
    reg.skopeo([
        "copy".to_string(),
        "--all".into(),
        "--dest-tls-verify=false".into(),
        format!("oci:{}:multi", layout.display()),
        format!("docker://{}/{repo_tag}", reg.addr),
    ])
    .ok();
}

/// Whether the registry serves `repo_ref` (`repo:tag` or `repo@digest`).
fn registry_has(reg: &Registry, repo_ref: &str) -> bool {
    reg.skopeo([
        "inspect".to_string(),
        "--raw".into(),
        "--tls-verify=false".into(),
        format!("docker://{}/{repo_ref}", reg.addr),
    ])
    .status
    .success()
}

#[test]
fn a_multi_platform_index_resolves_to_the_host_or_the_asked_platform() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let layout = d.path("multi-layout");
    let (index_digest, arm_id) = write_multi_platform_layout(&layout);
    reg.skopeo([
        "copy".to_string(),
        "--all".into(),
        "--dest-tls-verify=false".into(),
        format!("oci:{}:multi", layout.display()),
        format!("docker://{}/multi:1", reg.addr),
    ])
    .ok();
    assert_eq!(sha256(&reg.raw_manifest("multi:1")), index_digest);
    let name = reg.name("multi:1");
    let out = d.berth(["pull", &name]);
    assert!(
        out.ok().contains(&format!("Digest: {index_digest}")),
        "{out}"
    );
    assert_eq!(d.inspect(&name)["Id"], id_of(busybox()));
    let out = d.docker(["pull", "--platform", "linux/arm64", &name]);
    assert!(
        out.ok()
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    // As with the containerd image store: the tag names the index, whose
    // host platform is here, so it still resolves to the host's image; the
    // arm64 image is stored with it.
    assert_eq!(d.inspect(&name)["Id"], id_of(busybox()));
    assert!(d.image_ids().contains(&arm_id), "{:?}", d.image_ids());
    let none = d.berth(["pull", "--platform", "linux/s390x", &name]);
    assert!(
        none.fails()
            .contains("no matching manifest for linux/s390x in the manifest list entries"),
        "{none}"
    );
    let dist = d.get_json(&format!("/distribution/{name}/json"));
    assert_eq!(dist["Descriptor"]["digest"], index_digest);
    assert_eq!(dist["Platforms"].as_array().unwrap().len(), 2, "{dist}");
    d.assert_no_garbage();
}

#[test]
fn credential_helpers_store_and_supply_credentials() {
    require_root!();
    let Some(reg) = Registry::start_htpasswd("carol", "pa55") else {
        return;
    };
    let d = Daemon::start_host_network();
    registry_with_busybox(&d, &reg);
    // docker-credential-berthtest: a helper keeping secrets in files
    let bin = d.path("helper-bin");
    let store = d.path("helper-store");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    let helper = bin.join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!(
            r#"#!/bin/sh
s={store}
case "$1" in
  store) j=$(cat); k=$(printf %s "$j" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/' | tr '/:' '__'); printf %s "$j" > "$s/$k" ;;
  get) k=$(cat | tr '/:' '__'); [ -f "$s/$k" ] || {{ echo "credentials not found in native keychain"; exit 1; }}; cat "$s/$k" ;;
  erase) k=$(cat | tr '/:' '__'); rm -f "$s/$k" ;;
esac
"#,
            store = store.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = d.path("docker-config/config.json");
    std::fs::write(
        &config,
        format!(r#"{{"credHelpers": {{"{}": "berthtest"}}}}"#, reg.addr),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let berth = |args: &[&str], input: Option<&[u8]>| {
        let mut cmd = d.berth_command(args);
        cmd.env("PATH", &path);
        berth_e2e::Run::exec(cmd, input)
    };
    let login = berth(
        &["login", "-u", "carol", "--password-stdin", &reg.addr],
        Some(b"pa55\n"),
    );
    assert_eq!(login.ok().trim(), "Login Succeeded", "{login}");
    let kept = std::fs::read_to_string(store.join(reg.addr.replace(':', "_"))).unwrap();
    assert!(kept.contains(r#""Secret":"pa55""#), "{kept}");
    let cfg = std::fs::read_to_string(&config).unwrap();
    assert!(
        !cfg.contains("pa55"),
        "the secret went to config.json: {cfg}"
    );
    let pulled = berth(&["pull", "-q", &reg.name("busybox:latest")], None);
    assert_eq!(pulled.ok().trim(), reg.name("busybox:latest"));
    berth(&["logout", &reg.addr], None).ok();
    assert!(!store.join(reg.addr.replace(':', "_")).exists());
    d.api_remove_all();
    let anon = berth(&["pull", "-q", &reg.name("busybox:latest")], None);
    assert!(anon.fails().contains("no basic auth credentials"), "{anon}");
}

#[test]
fn bad_manifests_are_refused_and_leave_nothing() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let digest = registry_with_busybox(&d, &reg);
    let original = reg.raw_manifest("busybox:latest");
    let layer = layer_digests(&reg, "busybox:latest").remove(0);
    // no fault armed: the blob target is one the pulls never reach
    let proxy = FaultProxy::start(&reg.addr, "sha256:none", 0, 0);
    let name = format!("{}/busybox", proxy.addr);
    let check = |what: &str, body: Vec<u8>, fix_digest: bool, pull: &str, want: &str| {
        proxy.rewrite("/manifests/", body, fix_digest);
        let out = d.berth(["pull", pull]);
        assert!(out.fails().contains(want), "{what}: {out}");
        assert!(d.image_ids().is_empty(), "{what}");
        let st = d.store();
        assert!(st.layers.is_empty() && st.tmp.is_empty(), "{what}: {st:?}");
    };
    let text = String::from_utf8(original.clone()).unwrap();
    // an unknown layer media type
    let unknown = text.replacen(
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/x-berth-unknown",
        1,
    );
    assert_ne!(unknown, text, "the manifest has a gzip layer");
    check(
        "unknown media type",
        unknown.clone().into_bytes(),
        true,
        &format!("{name}:latest"),
        "unsupported media type application/x-berth-unknown",
    );
    // the body changed under the registry's Docker-Content-Digest
    let swapped = text.replacen("\"schemaVersion\": 2", "\"schemaVersion\":2", 1);
    let swapped = if swapped == text {
        text.replacen("\"schemaVersion\":2", "\"schemaVersion\": 2", 1)
    } else {
        swapped
    };
    check(
        "digest header",
        swapped.clone().into_bytes(),
        false,
        &format!("{name}:latest"),
        "manifest verification failed",
    );
    // fetched by digest: the content must have that digest
    check(
        "digest reference",
        swapped.into_bytes(),
        true,
        &format!("{name}@{digest}"),
        &format!("manifest verification failed for digest {digest}"),
    );
    // over 4 MiB
    let mut big = text.trim_end().trim_end_matches('}').to_string();
    big.push_str(&format!(
        ",\"annotations\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(5 << 20)
    ));
    check(
        "over 4 MiB",
        big.into_bytes(),
        true,
        &format!("{name}:latest"),
        "over the limit of 4194304 bytes",
    );
    // healed: the same pull works, through the proxy
    proxy.heal();
    let ok = d.berth(["pull", "-q", &format!("{name}:latest")]);
    assert_eq!(ok.ok().trim(), format!("{name}:latest"));
    assert!(proxy.requests().iter().any(|r| r.contains(&layer)));
    d.assert_no_garbage();
}

#[test]
fn push_compression_zstd_makes_an_oci_manifest_that_pulls_back() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let mut d1 = Daemon::start_host_network();
    d1.write("daemon.json", br#"{"push-compression": "zstd"}"#);
    d1.restart();
    let id = d1.load_multilayer();
    let name = reg.name("zstd/ml:1");
    d1.berth(["tag", "multilayer:latest", &name]).ok();
    d1.berth(["push", &name]).ok();
    let m: serde_json::Value = serde_json::from_slice(&reg.raw_manifest("zstd/ml:1")).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{m}"
        );
    }
    let d2 = Daemon::start_host_network();
    d2.docker(["pull", "-q", &name]).ok();
    assert_eq!(d2.inspect(&name)["Id"], id);
    d2.assert_no_garbage();
    d1.assert_no_garbage();
}

#[test]
fn chunked_uploads_with_content_range() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let mut d = Daemon::start_host_network();
    d.write("daemon.json", br#"{"upload-chunk-size": 65536}"#);
    d.restart();
    let id = d.load_busybox();
    let name = reg.name("chunked:1");
    d.berth(["tag", "busybox:latest", &name]).ok();
    let out = d.berth(["push", &name]);
    assert!(out.ok().contains(": Pushed"), "{out}");
    // the registry saw several PATCHes for the layer
    let patches = reg
        .log_text()
        .matches("\"PATCH /v2/chunked/blobs/uploads/")
        .count();
    assert!(patches > 4, "{patches} PATCH requests:\n{}", reg.log_text());
    let d2 = Daemon::start_host_network();
    d2.berth(["pull", "-q", &name]).ok();
    assert_eq!(d2.inspect(&name)["Id"], id);
    d2.assert_no_garbage();
}

#[test]
fn https_registry_with_a_client_certificate_from_certs_d() {
    require_root!();
    let mut d = Daemon::start_host_network();
    let tls = d.path("tls");
    berth_e2e::registry::make_tls_certs(&tls);
    let Some(reg) = Registry::start_tls(&tls) else {
        return;
    };
    let host_dir = d.path("certs.d").join(&reg.addr);
    std::fs::create_dir_all(&host_dir).unwrap();
    for f in ["ca.crt", "client.cert", "client.key"] {
        std::fs::copy(tls.join(f), host_dir.join(f)).unwrap();
    }
    d.write(
        "daemon.json",
        format!(
            r#"{{"registry-certs-dir": "{}"}}"#,
            d.path("certs.d").display()
        )
        .as_bytes(),
    );
    d.restart();
    registry_with_busybox(&d, &reg);
    let name = reg.name("busybox:latest");
    let out = d.berth(["pull", &name]);
    assert!(
        out.ok()
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    d.berth(["tag", &name, &reg.name("back:1")]).ok();
    d.berth(["push", &reg.name("back:1")]).ok();
    // without the client certificate the registry refuses the handshake
    std::fs::remove_file(host_dir.join("client.cert")).unwrap();
    std::fs::remove_file(host_dir.join("client.key")).unwrap();
    d.restart();
    d.api_remove_all();
    let refused = d.berth(["pull", &name]);
    refused.fails();
    assert!(d.image_ids().is_empty());
    d.assert_no_garbage();
}

#[test]
fn hosts_toml_mirrors_for_any_registry() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let mut d = Daemon::start_host_network();
    registry_with_busybox(&d, &reg);
    let certs = d.path("certs.d");
    d.write(
        "daemon.json",
        format!(r#"{{"registry-certs-dir": "{}"}}"#, certs.display()).as_bytes(),
    );
    d.restart();
    // A registry name whose server is down, mirrored by the running registry.
    let dead = format!("127.0.0.1:{}", berth_e2e::registry::free_port());
    std::fs::create_dir_all(certs.join(&dead)).unwrap();
    std::fs::write(
        certs.join(&dead).join("hosts.toml"),
        format!(
            "server = \"http://{dead}\"\n[host.\"http://{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            reg.addr
        ),
    )
    .unwrap();
    let name = format!("{dead}/busybox:latest");
    let out = d.berth(["pull", &name]);
    assert!(
        out.ok()
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    assert_eq!(d.inspect(&name)["Id"], id_of(busybox()));
    // a mirror only pulls: a push goes to the server, which is down
    assert!(d.berth(["push", &name]).fails().contains(&dead));
    // the other way round: a dead mirror falls through to the server
    d.api_remove_all();
    let alive = reg.addr.clone();
    std::fs::create_dir_all(certs.join(&alive)).unwrap();
    std::fs::write(
        certs.join(&alive).join("hosts.toml"),
        format!("[host.\"http://{dead}\"]\ncapabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    let name = reg.name("busybox:latest");
    d.berth(["pull", "-q", &name]).ok();
    assert_eq!(d.inspect(&name)["Id"], id_of(busybox()));
    d.assert_no_garbage();
}

#[test]
fn concurrent_pulls_of_one_layer_download_it_once() {
    require_root!();
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let a = d.write(
        "ml.tar",
        &legacy_archive(&[(multilayer(), &["multilayer:latest"])]),
    );
    reg.push_archive(&a, "ml:1");
    reg.push_archive(&a, "ml:2");
    let layers = layer_digests(&reg, "ml:1");
    let before = reg.log_text();
    let pulls: Vec<std::process::Child> = ["ml:1", "ml:2"]
        .iter()
        .map(|t| {
            d.docker_command(["pull", "-q", &reg.name(t)])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in pulls {
        assert!(p.wait().unwrap().success());
    }
    let log = reg.log_text();
    let new = &log[before.len()..];
    for l in &layers {
        let gets = new
            .lines()
            .filter(|x| x.contains(&format!("\"GET /v2/ml/blobs/{l} ")))
            .count();
        assert_eq!(gets, 1, "layer {l} was downloaded {gets} times");
    }
    assert_eq!(d.inspect(&reg.name("ml:2"))["Id"], id_of(multilayer()));
    d.assert_no_garbage();
}

/// The issue's round trip: skopeo pushes a multi-platform index, berth
/// pulls both platforms of it and pushes it to other repositories (whole,
/// with the same index digest, and one platform with `--platform`), skopeo
/// reads and copies what berth pushed, and the host's platform runs.
#[test]
fn a_multi_platform_index_round_trips_between_skopeo_and_berth() {
    require_root!();
    use berth_e2e::fixtures::small;
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let layout = d.path("multi-layout");
    let host = berth_fixtures::host_architecture();
    let (ix, manifests) = write_index_layout(
        &layout,
        &[(busybox(), host, None), (small(), "arm64", Some("v8"))],
    );
    skopeo_push_layout(&reg, &layout, "src/multi:1");
    let src = reg.name("src/multi:1");
    let out = d.berth(["pull", &src]);
    assert!(out.ok().contains(&format!("Digest: {ix}")), "{out}");
    // the other platform of the same tag
    let out = d.berth(["pull", "--platform", "linux/arm64", &src]);
    assert!(
        out.ok()
            .contains(&format!("Status: Downloaded newer image for {src}")),
        "{out}"
    );
    let again = d.berth(["pull", "--platform", "linux/arm64", &src]);
    assert!(
        again
            .ok()
            .contains(&format!("Status: Image is up to date for {src}")),
        "{again}"
    );
    // one tag, one row; it names the host's image
    assert_eq!(d.inspect(&src)["Id"], id_of(busybox()));
    let rows = d.berth(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert_eq!(
        rows.ok().trim(),
        format!("{} {}", reg.name("src/multi:1"), short(&id_of(busybox()))),
        "{rows}"
    );
    assert!(d.image_ids().contains(&id_of(small())));
    // the arm64 image is part of the tag, not dangling
    d.berth(["image", "prune", "-f"]).ok();
    assert!(d.image_ids().contains(&id_of(small())));

    // berth pushes the index to another repository: same digests
    let dst = reg.name("dst/multi:2");
    d.berth(["tag", &src, &dst]).ok();
    let out = d.berth(["push", &dst]);
    let text = out.ok();
    let index_bytes = reg.raw_manifest("dst/multi:2");
    assert_eq!(sha256(&index_bytes), ix);
    assert!(
        text.contains(&format!("2: digest: {ix} size: {}", index_bytes.len())),
        "{out}"
    );
    for m in &manifests {
        assert_eq!(&sha256(&reg.raw_manifest(&format!("dst/multi@{m}"))), m);
    }
    // skopeo reads and copies all of it
    let copy = d.path("copy-layout");
    reg.skopeo([
        "copy".to_string(),
        "--all".into(),
        "--src-tls-verify=false".into(),
        format!("docker://{dst}"),
        format!("oci:{}:copy", copy.display()),
    ])
    .ok();
    let copied: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).unwrap()).unwrap();
    assert_eq!(copied["manifests"][0]["digest"], ix, "{copied}");

    // the docker CLI pushes it too (blobs mounted from the other repository)
    let third = reg.name("third/multi:3");
    d.berth(["tag", &src, &third]).ok();
    let out = d.docker(["push", &third]);
    let text = out.ok();
    assert!(text.contains("Mounted from"), "{out}");
    assert!(text.contains(&format!("3: digest: {ix}")), "{out}");
    assert_eq!(sha256(&reg.raw_manifest("third/multi:3")), ix);

    // --platform pushes that platform's manifest alone, as pulled
    let one = reg.name("one/multi:arm");
    d.berth(["tag", &src, &one]).ok();
    let out = d.berth(["push", "--platform", "linux/arm64", &one]);
    assert!(
        out.ok()
            .contains(&format!("arm: digest: {} size:", manifests[1])),
        "{out}"
    );
    assert_eq!(sha256(&reg.raw_manifest("one/multi:arm")), manifests[1]);
    // …through the API as the docker CLI sends it (JSON OCI platform)
    let host_platform = format!(r#"{{"os":"linux","architecture":"{host}"}}"#);
    let r = d
        .request(
            "POST",
            &format!(
                "/v1.46/images/{}/push?tag=arm&platform={}",
                reg.name("one/multi"),
                query_escape(&host_platform)
            ),
            None,
        )
        .unwrap();
    assert!(r.text().contains(&manifests[0]), "{}", r.text());
    assert_eq!(sha256(&reg.raw_manifest("one/multi:arm")), manifests[0]);
    let none = d.berth(["push", "--platform", "linux/s390x", &one]);
    assert!(
        none.fails().contains(&format!(
            "image with reference {one} was found but does not provide the specified platform (linux/s390x)"
        )),
        "{none}"
    );

    // the host's platform runs
    let run = d.berth(["run", "--rm", &dst, "echo", "multi-ran"]);
    assert_eq!(run.ok().trim(), "multi-ran");
    // (`--rm` removes the container's directory just after it exits)
    berth_e2e::wait_for(Duration::from_secs(10), || {
        d.store().tmp.is_empty().then_some(())
    });
    d.assert_no_garbage();
    // removing every tag removes both platforms and all their blobs
    for t in [&src, &dst, &third, &one] {
        d.berth(["rmi", t]).ok();
    }
    d.assert_empty();
}

/// An index some of whose platforms are not here: berth does what the
/// containerd image store does — the one platform that is here is pushed
/// instead of the index (with docker's note), several without the host's
/// are refused — and never pushes an index whose children are not all
/// there.
#[test]
fn pushing_a_multi_platform_image_with_platforms_missing() {
    require_root!();
    use berth_e2e::fixtures::small;
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let layout = d.path("multi-layout");
    let host = berth_fixtures::host_architecture();
    let (ix, manifests) = write_index_layout(
        &layout,
        &[
            (busybox(), host, None),
            (small(), "arm64", Some("v8")),
            (multilayer(), "s390x", None),
        ],
    );
    skopeo_push_layout(&reg, &layout, "src/multi:1");
    let src = reg.name("src/multi:1");
    d.berth(["pull", "--platform", "linux/arm64", &src]).ok();
    // only arm64 is here: the tag names it
    assert_eq!(d.inspect(&src)["Id"], id_of(small()));

    // one platform here: its manifest is pushed instead of the index
    let dst = reg.name("dst/multi:1");
    d.berth(["tag", &src, &dst]).ok();
    let out = d.berth(["push", &dst]);
    let text = out.ok();
    assert!(
        text.contains(
            "Not all multiplatform-content is present and only the available single-platform image was pushed"
        ) && text.contains(&format!("{ix} -> {}", manifests[1])),
        "{out}"
    );
    assert_eq!(sha256(&reg.raw_manifest("dst/multi:1")), manifests[1]);
    assert!(!registry_has(&reg, &format!("dst/multi@{ix}")));

    // two platforms here, neither the host's: refused, nothing pushed
    d.berth(["pull", "--platform", "linux/s390x", &src]).ok();
    let two = reg.name("two/multi:1");
    d.berth(["tag", &src, &two]).ok();
    let out = d.berth(["push", &two]);
    assert!(
        out.fails()
            .contains("multiple matching manifests found but no specific platform requested"),
        "{out}"
    );
    let out = d.docker(["push", &two]);
    assert!(
        out.fails()
            .contains("multiple matching manifests found but no specific platform requested"),
        "{out}"
    );
    assert!(!registry_has(&reg, "two/multi:1"));
    assert!(!registry_has(&reg, &format!("two/multi@{ix}")));
    // …until a platform is chosen
    let out = d.berth(["push", "--platform", "linux/s390x", &two]);
    assert!(
        out.ok()
            .contains(&format!("1: digest: {} size:", manifests[2])),
        "{out}"
    );
    assert!(!registry_has(&reg, &format!("two/multi@{ix}")));
    // a pull of the host's platform completes the index: now it goes whole
    d.berth(["pull", &src]).ok();
    assert_eq!(d.inspect(&src)["Id"], id_of(busybox()));
    let out = d.berth(["push", &two]);
    assert!(out.ok().contains(&format!("1: digest: {ix}")), "{out}");
    assert_eq!(sha256(&reg.raw_manifest("two/multi:1")), ix);
    d.assert_no_garbage();
}

/// Percent-encodes a query parameter value.
fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `berth load` of an OCI archive holding a named multi-platform index
/// (what `skopeo copy --all … oci-archive:` writes) keeps the index: every
/// platform loads, the tag names the host's, and a push sends the index
/// with its digest.
#[test]
fn a_loaded_multi_platform_oci_archive_pushes_back_whole() {
    require_root!();
    use berth_e2e::fixtures::small;
    let Some(reg) = Registry::start() else { return };
    let d = Daemon::start_host_network();
    let layout = d.path("multi-layout");
    let host = berth_fixtures::host_architecture();
    let (ix, manifests) = write_index_layout(
        &layout,
        &[(busybox(), host, None), (small(), "arm64", Some("v8"))],
    );
    let archive = d.path("multi.tar");
    reg.skopeo([
        "copy".to_string(),
        "--all".into(),
        format!("oci:{}:multi", layout.display()),
        format!("oci-archive:{}:multi/loaded:2", archive.display()),
    ])
    .ok();
    let out = d.berth(["load", "-i", berth_e2e::arg(&archive)]);
    assert_eq!(out.ok().trim(), "Loaded image: multi/loaded:2", "{out}");
    assert_eq!(d.inspect("multi/loaded:2")["Id"], id_of(busybox()));
    assert!(d.image_ids().contains(&id_of(small())));
    let dst = reg.name("loaded/multi:2");
    d.berth(["tag", "multi/loaded:2", &dst]).ok();
    let out = d.berth(["push", &dst]);
    assert!(out.ok().contains(&format!("2: digest: {ix}")), "{out}");
    assert_eq!(sha256(&reg.raw_manifest("loaded/multi:2")), ix);
    for m in &manifests {
        assert_eq!(&sha256(&reg.raw_manifest(&format!("loaded/multi@{m}"))), m);
    }
    // loading it again changes nothing
    let again = d.berth(["load", "-i", berth_e2e::arg(&archive)]);
    assert_eq!(again.ok().trim(), "Loaded image: multi/loaded:2", "{again}");
    d.assert_no_garbage();
    d.berth(["rmi", "multi/loaded:2", &dst]).ok();
    d.assert_empty();
}
