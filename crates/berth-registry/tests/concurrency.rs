//! Many clients at once: 20 skopeo processes pushing the same image, 100
//! clients pulling the same blob. All succeed, one copy is stored, and
//! every stored blob hashes to its name.

mod common;

use std::process::Command;

use berth_types::Digest;
use common::{Registry, client, random_image};
use futures_util::future::join_all;

#[test]
fn twenty_clients_push_the_same_image() {
    let reg = Registry::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let img = random_image(4 << 20, 7, "amd64");
    let archive = dir.path().join("img.tar");
    std::fs::write(
        &archive,
        berth_fixtures::oci_layout_archive(&[(img.clone(), vec!["img:latest".into()])]),
    )
    .unwrap();
    let children: Vec<_> = (0..20)
        .map(|i| {
            // half push to one shared repository and tag, half to their own
            let dst = if i % 2 == 0 {
                format!("docker://{}/same/img:latest", reg.addr)
            } else {
                format!("docker://{}/own{i}/img:v{i}", reg.addr)
            };
            Command::new("skopeo")
                .args(["copy", "-q", "--dest-tls-verify=false"])
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(dst)
                .output_async()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "push {i} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            reg.logs()
        );
    }
    let blobs = reg.verify_blobs();
    let mut want: Vec<Digest> = img.blobs.iter().map(|b| b.0).collect();
    want.push(img.manifest_digest);
    want.sort();
    let mut got = blobs.clone();
    got.sort();
    assert_eq!(
        got, want,
        "exactly one copy of each blob and of the manifest"
    );
    assert_eq!(
        std::fs::read_dir(reg.root.join("uploads")).unwrap().count(),
        0
    );
    for i in (1..20).step_by(2) {
        common::skopeo_ok(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/own{i}/img:v{i}", reg.addr),
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_clients_pull_the_same_blob() {
    let reg = Registry::start(&[]);
    let mut rng = berth_fixtures::XorShift::new(99);
    let data = rng.bytes(8 << 20);
    let d = Digest::of(&data);
    let c = client();
    let r = c
        .post(format!("{}/v2/hot/blobs/uploads/?digest={d}", reg.url))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let url = format!("{}/v2/hot/blobs/{d}", reg.url);
    // separate clients: separate connections
    let pulls = (0..100).map(|_| {
        let url = url.clone();
        async move {
            let c = client();
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let b = r.bytes().await.unwrap();
            Digest::of(&b)
        }
    });
    let got = join_all(pulls).await;
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|g| *g == d), "every pull verified");
}

/// `Command::output` that starts now and is collected later.
trait Spawn {
    fn output_async(&mut self) -> std::process::Child;
}

impl Spawn for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}
