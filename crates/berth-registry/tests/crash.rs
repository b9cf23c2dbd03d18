//! Crash safety: kill -9 the server in the middle of uploads (resumable,
//! monolithic, and a whole skopeo push), restart it on the same root, and
//! check that no blob or tag is corrupt and that the interrupted resumable
//! upload can be finished from where the server says it stands.

mod common;

use std::time::Duration;

use berth_types::Digest;
use bytes::Bytes;
use common::{Registry, client};
use futures_util::stream;

/// A request body fed by the returned sender.
fn streaming_body() -> (tokio::sync::mpsc::Sender<Bytes>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let s = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (tx, reqwest::Body::wrap_stream(s))
}

fn header(r: &reqwest::Response, h: &str) -> String {
    r.headers()
        .get(h)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_upload_leaves_nothing_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut reg = Registry::start_in(&root, dir.path(), &[]);
    let c = client();
    let mut rng = berth_fixtures::XorShift::new(5);
    let data = rng.bytes(4 << 20);
    let d = Digest::of(&data);

    // an image that is complete before the crash
    let img = common::random_image(64 << 10, 11, "amd64");
    let archive = dir.path().join("img.tar");
    std::fs::write(
        &archive,
        berth_fixtures::oci_layout_archive(&[(img.clone(), vec!["x:1".into()])]),
    )
    .unwrap();
    common::skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{}/safe/img:1", reg.addr),
    ]);

    // a resumable upload: one chunk acknowledged, a second one half sent
    let r = c
        .post(format!("{}/v2/up/blobs/uploads/", reg.url))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = c
        .patch(format!("{}{loc}", reg.url))
        .header("content-range", format!("0-{}", (1 << 20) - 1))
        .body(data[..1 << 20].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (tx, body) = streaming_body();
    let patch = tokio::spawn(c.patch(format!("{}{loc}", reg.url)).body(body).send());
    for chunk in data[1 << 20..(3 << 19)].chunks(64 << 10) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // a monolithic upload, half sent
    let other = rng.bytes(2 << 20);
    let od = Digest::of(&other);
    let (otx, obody) = streaming_body();
    let mono = tokio::spawn(
        c.post(format!("{}/v2/up/blobs/uploads/?digest={od}", reg.url))
            .body(obody)
            .send(),
    );
    otx.send(Bytes::copy_from_slice(&other[..1 << 20]))
        .await
        .unwrap();
    // and a whole image push in flight
    let big = common::random_image(24 << 20, 12, "amd64");
    let big_archive = dir.path().join("big.tar");
    std::fs::write(
        &big_archive,
        berth_fixtures::oci_layout_archive(&[(big.clone(), vec!["b:1".into()])]),
    )
    .unwrap();
    let mut push = std::process::Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", big_archive.display()))
        .arg(format!("docker://{}/big/img:1", reg.addr))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    reg.kill9();
    let _ = push.wait();
    drop(tx);
    drop(otx);
    let _ = patch.await;
    let _ = mono.await;

    // restart on the same root
    let reg = Registry::start_in(&root, dir.path(), &[]);
    let blobs = reg.verify_blobs();
    assert!(
        !blobs.contains(&od),
        "a half-sent monolithic blob never appears"
    );
    assert_eq!(
        std::fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "staging is emptied"
    );
    let r = c
        .head(format!("{}/v2/up/blobs/{od}", reg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // the complete image is intact, every tag resolves to a manifest whose blobs verify
    for (repo, tag) in [("safe/img", "1"), ("big/img", "1")] {
        let r = c
            .get(format!("{}/v2/{repo}/manifests/{tag}", reg.url))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        if repo == "big/img" && r.status() == 404 {
            continue; // the push died before its manifest: no tag, as it should be
        }
        assert_eq!(r.status(), 200, "{repo}:{tag}");
        let want = header(&r, "docker-content-digest");
        let body = r.bytes().await.unwrap();
        assert_eq!(Digest::of(&body).to_string(), want);
        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut descs = vec![m["config"].clone()];
        descs.extend(m["layers"].as_array().unwrap().iter().cloned());
        for desc in descs {
            let bd = desc["digest"].as_str().unwrap();
            let b = c
                .get(format!("{}/v2/{repo}/blobs/{bd}", reg.url))
                .send()
                .await
                .unwrap();
            assert_eq!(b.status(), 200);
            assert_eq!(Digest::of(&b.bytes().await.unwrap()).to_string(), bd);
        }
    }
    // the resumable upload resumes where the server says it stands
    let r = c.get(format!("{}{loc}", reg.url)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let range = header(&r, "range");
    let end: usize = range.strip_prefix("0-").unwrap().parse().unwrap();
    assert!(
        end + 1 >= 1 << 20,
        "the acknowledged chunk survived: {range}"
    );
    assert!(end < 3 << 19);
    let r = c
        .patch(format!("{}{loc}", reg.url))
        .header("content-range", format!("{}-{}", end + 1, data.len() - 1))
        .body(data[end + 1..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", reg.logs());
    let r = c
        .put(format!("{}{loc}?digest={d}", reg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(format!("{}/v2/up/blobs/{d}", reg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(Digest::of(&r.bytes().await.unwrap()), d);
    // and the interrupted image can be pushed again
    common::skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", big_archive.display()),
        &format!("docker://{}/big/img:1", reg.addr),
    ]);
    reg.verify_blobs();
}
