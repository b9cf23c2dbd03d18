//! Operations: health, metrics, structured request logs, and graceful
//! shutdown that lets an upload in flight finish.

mod common;

use std::time::Duration;

use berth_types::Digest;
use bytes::Bytes;
use common::{Registry, client};
use futures_util::stream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_json_logs() {
    let reg = Registry::start(&["--log-format", "json"]);
    let c = client();
    let r = c.get(format!("{}/healthz", reg.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let d = Digest::of(b"abc");
    c.post(format!("{}/v2/m/blobs/uploads/?digest={d}", reg.url))
        .body("abc")
        .send()
        .await
        .unwrap();
    c.get(format!("{}/v2/m/blobs/{d}", reg.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get(format!("{}/v2/m/blobs/{}", reg.url, Digest::of(b"x")))
        .send()
        .await
        .unwrap();
    let text = c
        .get(format!("{}/metrics", reg.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "berth_registry_http_requests_total{method=\"GET\",route=\"blob\",code=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains(
        "berth_registry_http_requests_total{method=\"GET\",route=\"blob\",code=\"404\"} 1"
    ));
    assert!(text.contains(
        "berth_registry_http_requests_total{method=\"POST\",route=\"upload_start\",code=\"201\"} 1"
    ));
    assert!(text.contains("berth_registry_bytes_received_total 3"));
    assert!(text.contains("berth_registry_uploads_completed_total 1"));
    assert!(text.contains("process_resident_memory_bytes "));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = reg.logs();
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "berth_registry::access")
        .collect();
    assert!(access.len() >= 4, "{logs}");
    let get = access
        .iter()
        .find(|v| v["method"] == "GET" && v["route"] == "blob" && v["status"] == 200)
        .unwrap();
    assert_eq!(get["path"], format!("/v2/m/blobs/{d}"));
    assert!(get["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(get["us"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_uploads_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut reg = Registry::start_in(&root, dir.path(), &[]);
    let c = client();
    let data = berth_fixtures::XorShift::new(3).bytes(3 << 20);
    let d = Digest::of(&data);
    let r = c
        .post(format!("{}/v2/g/blobs/uploads/", reg.url))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = reqwest::Body::wrap_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    }));
    let patch = tokio::spawn(c.patch(format!("{}{loc}", reg.url)).body(body).send());
    tx.send(Bytes::copy_from_slice(&data[..1 << 20]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    reg.term();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // no new connections once shutting down
    assert!(
        client()
            .get(format!("{}/v2/", reg.url))
            .send()
            .await
            .is_err()
    );
    // the upload in flight goes on to the end
    for chunk in data[1 << 20..].chunks(256 << 10) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    let r = patch.await.unwrap().unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], format!("0-{}", data.len() - 1));
    let status = reg.stop();
    assert!(status.success(), "{status:?}");
    // and its bytes are there for the PUT after a restart
    let reg = Registry::start_in(&root, dir.path(), &[]);
    let r = c
        .put(format!("{}{loc}?digest={d}", reg.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}
