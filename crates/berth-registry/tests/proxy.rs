//! Pull-through cache mode against an upstream berth-registry that uses
//! token auth: pulls fill the cache, tags follow the upstream, the cache
//! serves on its own when the upstream is gone, pushes are refused.

mod common;

use std::process::Command;

use common::{BIN, Registry, client, random_image, skopeo, skopeo_ok};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_through_cache() {
    let dir = tempfile::tempdir().unwrap();
    // upstream: token auth, alice may push and pull alice/*
    let mut child = Command::new(BIN)
        .args(["htpasswd", "alice", "--cost", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "a-pass").unwrap();
    }
    let ht = dir.path().join("htpasswd");
    std::fs::write(&ht, child.wait_with_output().unwrap().stdout).unwrap();
    let mut upstream = Registry::start(&["--htpasswd", ht.to_str().unwrap(), "--auth", "token"]);
    let one = random_image(300_000, 21, "amd64");
    let two = random_image(300_000, 22, "amd64");
    let archive = |img: &berth_fixtures::BuiltImage, name: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            berth_fixtures::oci_layout_archive(&[(img.clone(), vec!["x:1".into()])]),
        )
        .unwrap();
        format!("oci-archive:{}", p.display())
    };
    let (a1, a2) = (archive(&one, "one.tar"), archive(&two, "two.tar"));
    let up = upstream.addr.clone();
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:a-pass",
        &a1,
        &format!("docker://{up}/alice/app:latest"),
    ]);

    // the cache, with the upstream credentials in its config
    let cfg = dir.path().join("cache.toml");
    common::write_file(
        &cfg,
        &format!(
            "[proxy]\nurl = \"{}\"\nusername = \"alice\"\npassword = \"a-pass\"\n",
            upstream.url
        ),
    );
    let cache = Registry::start(&["--config", cfg.to_str().unwrap()]);
    let ca = cache.addr.clone();
    let pull = |tag: &str, out: &str| {
        skopeo_ok(&[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{ca}/alice/app:{tag}"),
            &format!("dir:{}/{out}", dir.path().display()),
        ]);
        std::fs::read(dir.path().join(out).join("manifest.json")).unwrap()
    };
    let first = pull("latest", "p1");
    let m: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(m["layers"][0]["digest"], one.layers[0].digest.to_string());
    let c = client();
    let text = c
        .get(format!("{}/metrics", cache.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&text, "berth_registry_proxy_misses_total") >= 3,
        "{text}"
    );
    // the cache filled (blob writes finish just after the response)
    let root = cache.root.clone();
    let want: Vec<_> = one.blobs.iter().map(|b| b.0).collect();
    for _ in 0..50 {
        if want.iter().all(|d| {
            root.join("blobs/sha256")
                .join(&d.hex()[..2])
                .join(d.hex())
                .exists()
        }) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cache.verify_blobs();
    for d in &want {
        assert!(
            root.join("blobs/sha256")
                .join(&d.hex()[..2])
                .join(d.hex())
                .exists(),
            "{d} cached"
        );
    }

    // the upstream moves the tag: the cache follows
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:a-pass",
        &a2,
        &format!("docker://{up}/alice/app:latest"),
    ]);
    let second = pull("latest", "p2");
    let m: serde_json::Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(m["layers"][0]["digest"], two.layers[0].digest.to_string());
    let text = c
        .get(format!("{}/metrics", cache.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hits_before = metric(&text, "berth_registry_proxy_hits_total");

    // a cache takes no pushes
    let out = skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &a1,
        &format!("docker://{ca}/alice/app:pushed"),
    ]);
    assert!(!out.status.success());
    // unknown upstream content is unknown here
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{ca}/alice/app:nope"),
    ]);
    assert!(!out.status.success());

    // the upstream goes away: the cache answers alone
    upstream.stop();
    let third = pull("latest", "p3");
    assert_eq!(third, second);
    let text = c
        .get(format!("{}/metrics", cache.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&text, "berth_registry_proxy_hits_total") > hits_before);
    assert!(metric(&text, "berth_registry_proxy_errors_total") >= 1);
    // tags listed from the cache when the upstream is down
    let r = c
        .get(format!("{}/v2/alice/app/tags/list", cache.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["latest"]));
}
