//! HTTP-level conformance: every endpoint of the distribution spec, with
//! success and error cases, against a real berth-registry process.

mod common;

use berth_types::Digest;
use common::{Registry, client, error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

struct T {
    reg: Registry,
    c: reqwest::Client,
}

impl T {
    fn new() -> T {
        T::with(&[])
    }
    fn with(args: &[&str]) -> T {
        T {
            reg: Registry::start(args),
            c: client(),
        }
    }
    fn u(&self, path: &str) -> String {
        format!("{}{path}", self.reg.url)
    }
    async fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.c.request(m, self.u(path))
    }
    /// Monolithic upload (POST ?digest=).
    async fn blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::of(data);
        let r = self
            .c
            .post(self.u(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        d
    }
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        ct: &str,
        body: &[u8],
    ) -> reqwest::Response {
        self.c
            .put(self.u(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", ct)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }
    /// Pushes config + one layer and an image manifest; returns (manifest bytes, digest).
    async fn image(&self, repo: &str, tag: &str, seed: &str, extra: Value) -> (Vec<u8>, Digest) {
        let cfg = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
        let layer = format!("layer {seed}").into_bytes();
        let cd = self.blob(repo, &cfg).await;
        let ld = self.blob(repo, &layer).await;
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cfg.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": layer.len()}],
        });
        if let Value::Object(e) = extra {
            for (k, v) in e {
                m[k] = v;
            }
        }
        let body = serde_json::to_vec(&m).unwrap();
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let d = Digest::of(&body);
        (body, d)
    }
}

fn header(r: &reqwest::Response, h: &str) -> String {
    r.headers()
        .get(h)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn base_endpoint() {
    let t = T::new();
    let r = t
        .req(reqwest::Method::GET, "/v2/")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let r = t
        .req(reqwest::Method::HEAD, "/v2/")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t
        .req(reqwest::Method::POST, "/v2/")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = t
        .req(reqwest::Method::GET, "/v2/x/nothing/here")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn monolithic_blobs_head_get_range() {
    let t = T::new();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let d = t.blob("lib/a", &data).await;
    let r = t
        .req(reqwest::Method::HEAD, &format!("/v2/lib/a/blobs/{d}"))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    let r = t
        .req(reqwest::Method::GET, &format!("/v2/lib/a/blobs/{d}"))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), data);
    // ranges
    let r = t
        .req(reqwest::Method::GET, &format!("/v2/lib/a/blobs/{d}"))
        .await
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 10-19/{}", data.len())
    );
    assert_eq!(r.bytes().await.unwrap(), &data[10..20]);
    let r = t
        .req(reqwest::Method::GET, &format!("/v2/lib/a/blobs/{d}"))
        .await
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), &data[data.len() - 5..]);
    let r = t
        .req(reqwest::Method::GET, &format!("/v2/lib/a/blobs/{d}"))
        .await
        .header("range", "bytes=99990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &data[99990..]);
    let r = t
        .req(reqwest::Method::GET, &format!("/v2/lib/a/blobs/{d}"))
        .await
        .header("range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes */{}", data.len())
    );
    // the blob is in lib/a only
    let r = t
        .req(reqwest::Method::GET, &format!("/v2/lib/b/blobs/{d}"))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = t
        .req(reqwest::Method::HEAD, &format!("/v2/lib/b/blobs/{d}"))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // bad digests
    for bad in ["sha256:abc", "sha512:abcd", "md5:00", "nodigest"] {
        let r = t
            .req(reqwest::Method::GET, &format!("/v2/lib/a/blobs/{bad}"))
            .await
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(error_code(r).await, "DIGEST_INVALID");
    }
    // a monolithic POST with the wrong digest stores nothing
    let wrong = Digest::of(b"other");
    let r =
        t.c.post(t.u(&format!("/v2/lib/a/blobs/uploads/?digest={wrong}")))
            .body(b"not other".to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = t
        .req(reqwest::Method::HEAD, &format!("/v2/lib/a/blobs/{wrong}"))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(t.reg.verify_blobs().len(), 1);
}

#[tokio::test]
async fn post_then_put_and_status_and_cancel() {
    let t = T::new();
    let r = t.c.post(t.u("/v2/a/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    let uuid = header(&r, "docker-upload-uuid");
    assert!(loc.ends_with(&uuid), "{loc} {uuid}");
    assert_eq!(header(&r, "range"), "0-0");
    let r = t.c.get(t.u(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "docker-upload-uuid"), uuid);
    // PUT without digest
    let r = t.c.put(t.u(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let d = Digest::of(b"hello world");
    let r =
        t.c.put(t.u(&format!("{loc}?digest={d}")))
            .body(b"hello world".to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/a/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    // the session is over
    let r = t.c.get(t.u(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // cancel
    let r = t.c.post(t.u("/v2/a/blobs/uploads/")).send().await.unwrap();
    let loc = header(&r, "location");
    let r = t.c.delete(t.u(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = t.c.get(t.u(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = t.c.delete(t.u(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // unknown and malformed session IDs, and another repository's session
    for p in [
        "/v2/a/blobs/uploads/0123456789abcdef0123456789abcdef",
        "/v2/a/blobs/uploads/..",
        "/v2/a/blobs/uploads/x%2F..%2F..%2Fregistry.redb",
    ] {
        let r = t.c.get(t.u(p)).send().await.unwrap();
        assert!(
            r.status() == 404 || r.status() == 400,
            "{p}: {}",
            r.status()
        );
    }
    let r = t.c.post(t.u("/v2/a/blobs/uploads/")).send().await.unwrap();
    let uuid = header(&r, "docker-upload-uuid");
    let r =
        t.c.get(t.u(&format!("/v2/b/blobs/uploads/{uuid}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn chunked_uploads_check_order() {
    let t = T::new();
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
    let d = Digest::of(&data);
    let r =
        t.c.post(t.u("/v2/c/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
    let mut loc = header(&r, "location");
    let patch = |loc: String, range: Option<String>, body: Vec<u8>| {
        let mut rq =
            t.c.patch(t.u(&loc))
                .header("content-type", "application/octet-stream");
        if let Some(r) = range {
            rq = rq.header("content-range", r);
        }
        rq.body(body).send()
    };
    let r = patch(loc.clone(), Some("0-999".into()), data[..1000].to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-999");
    loc = header(&r, "location");
    // out of order: a gap, then an overlap
    let r = patch(loc.clone(), Some("2000-2999".into()), data[2000..].to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range"), "0-999");
    let r = patch(loc.clone(), Some("0-999".into()), data[..1000].to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    // a range that disagrees with the body length
    let r = patch(
        loc.clone(),
        Some("1000-1009".into()),
        data[1000..1005].to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 416);
    let r = patch(
        loc.clone(),
        Some("garbage".into()),
        data[1000..1005].to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 416);
    // status tells where to resume
    let r = t.c.get(t.u(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), "0-999");
    let r = patch(
        loc.clone(),
        Some("1000-1999".into()),
        data[1000..2000].to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-1999");
    // final chunk in the PUT, out of order first
    let r =
        t.c.put(t.u(&format!("{loc}?digest={d}")))
            .header("content-range", "2500-2999")
            .body(data[2500..].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 416);
    let r =
        t.c.put(t.u(&format!("{loc}?digest={d}")))
            .header("content-range", "2000-2999")
            .body(data[2000..].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r =
        t.c.get(t.u(&format!("/v2/c/blobs/{d}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);

    // streamed PATCHes without Content-Range append
    let r = t.c.post(t.u("/v2/c/blobs/uploads/")).send().await.unwrap();
    let loc = header(&r, "location");
    for part in data.chunks(1200) {
        let r = patch(loc.clone(), None, part.to_vec()).await.unwrap();
        assert_eq!(r.status(), 202);
    }
    let r =
        t.c.put(t.u(&format!("{loc}?digest={d}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn wrong_digest_on_put_discards_the_upload() {
    let t = T::new();
    let r = t.c.post(t.u("/v2/w/blobs/uploads/")).send().await.unwrap();
    let loc = header(&r, "location");
    let r =
        t.c.patch(t.u(&loc))
            .body(b"some bytes".to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    let claimed = Digest::of(b"other bytes");
    let r =
        t.c.put(t.u(&format!("{loc}?digest={claimed}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r =
        t.c.head(t.u(&format!("/v2/w/blobs/{claimed}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    let r =
        t.c.head(t.u(&format!("/v2/w/blobs/{}", Digest::of(b"some bytes"))))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    let r = t.c.get(t.u(&loc)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(t.reg.verify_blobs().is_empty());
    assert_eq!(
        std::fs::read_dir(t.reg.root.join("uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn manifests_put_get_head_and_errors() {
    let t = T::new();
    // unknown repository, unknown tag
    let r =
        t.c.get(t.u("/v2/nothing/manifests/latest"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    let (body, d) = t.image("m", "v1", "one", json!({})).await;
    let r = t.c.get(t.u("/v2/m/manifests/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    for reference in ["v1".to_string(), d.to_string()] {
        let r =
            t.c.get(t.u(&format!("/v2/m/manifests/{reference}")))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d.to_string());
        assert_eq!(r.bytes().await.unwrap(), body, "stored byte for byte");
        let r =
            t.c.head(t.u(&format!("/v2/m/manifests/{reference}")))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-length"), body.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    }
    // pushed by digest, with extra tags
    let r = t
        .put_manifest("m", &format!("{d}?tag=a&tag=b"), OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/m/manifests/{d}"));
    let tags: Vec<_> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(tags, vec!["a", "b"]);
    // digest mismatch
    let r = t
        .put_manifest("m", &Digest::of(b"x").to_string(), OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // invalid manifests
    for (ct, b) in [
        (OCI_MANIFEST, b"not json".to_vec()),
        (OCI_MANIFEST, br#"{"schemaVersion":1,"name":"m","tag":"x","fsLayers":[]}"#.to_vec()),
        (OCI_INDEX, body.clone()),
        (OCI_MANIFEST, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#.to_vec()),
    ] {
        let r = t.put_manifest("m", "bad", ct, &b).await;
        assert_eq!(r.status(), 400, "{}", String::from_utf8_lossy(&b));
        assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    }
    // invalid tag
    let r = t.put_manifest("m", "-bad", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 400);
    // references a blob the repository lacks (it is in another one)
    let cfg = b"{}".to_vec();
    let cd = t.blob("other", &cfg).await;
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": 2},
        "layers": []});
    let r = t
        .put_manifest(
            "m",
            "missing",
            OCI_MANIFEST,
            &serde_json::to_vec(&m).unwrap(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(v["errors"][0]["detail"]["digest"], cd.to_string());
    // a descriptor whose size lies
    let cd2 = t.blob("m", &cfg).await;
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd2.to_string(), "size": 3},
        "layers": []});
    let r = t
        .put_manifest("m", "liar", OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // over the 4 MiB limit: 413 without reading it all
    let mut big = serde_json::to_vec(&m).unwrap();
    big.resize(5 << 20, b' ');
    let r = t.put_manifest("m", "big", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), 413);
    // an index needs its children in the repository
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": body.len()}]}))
    .unwrap();
    let r = t.put_manifest("n", "multi", OCI_INDEX, &idx).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let r = t.put_manifest("m", "multi", OCI_INDEX, &idx).await;
    assert_eq!(r.status(), 201);
    let r = t.c.get(t.u("/v2/m/manifests/multi")).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    // wrong method
    let r = t.c.post(t.u("/v2/m/manifests/v1")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn tags_and_catalog_paginate() {
    let t = T::new();
    let (body, _) = t.image("p/one", "t0", "p", json!({})).await;
    for tag in ["t1", "t2", "t3", "t4"] {
        assert_eq!(
            t.put_manifest("p/one", tag, OCI_MANIFEST, &body)
                .await
                .status(),
            201
        );
    }
    let r = t.c.get(t.u("/v2/p/one/tags/list")).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"name": "p/one", "tags": ["t0", "t1", "t2", "t3", "t4"]})
    );
    let mut got = Vec::new();
    let mut next = Some("/v2/p/one/tags/list?n=2".to_string());
    while let Some(p) = next.take() {
        let r = t.c.get(t.u(&p)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let link = header(&r, "link");
        let v: Value = r.json().await.unwrap();
        let tags: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
        assert!(tags.len() <= 2);
        got.extend(tags);
        if !link.is_empty() {
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            next = Some(link[1..link.find('>').unwrap()].to_string());
        }
    }
    assert_eq!(got, vec!["t0", "t1", "t2", "t3", "t4"]);
    let r =
        t.c.get(t.u("/v2/p/one/tags/list?n=0"))
            .send()
            .await
            .unwrap();
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r =
        t.c.get(t.u("/v2/p/one/tags/list?last=t2"))
            .send()
            .await
            .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!(["t3", "t4"])
    );
    let r =
        t.c.get(t.u("/v2/p/one/tags/list?n=x"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    let r = t.c.get(t.u("/v2/p/none/tags/list")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    t.image("p/two", "x", "q", json!({})).await;
    t.image("a/zero", "x", "r", json!({})).await;
    let r = t.c.get(t.u("/v2/_catalog")).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"repositories": ["a/zero", "p/one", "p/two"]})
    );
    let r = t.c.get(t.u("/v2/_catalog?n=2")).send().await.unwrap();
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=2&last=p%2Fone>; rel=\"next\""
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["a/zero", "p/one"])
    );
    let r =
        t.c.get(t.u("/v2/_catalog?n=2&last=p%2Fone"))
            .send()
            .await
            .unwrap();
    assert!(r.headers().get("link").is_none());
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["p/two"])
    );
}

#[tokio::test]
async fn referrers_api() {
    let t = T::new();
    let (sbody, sd) = t.image("r", "subject", "s", json!({})).await;
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": sd.to_string(), "size": sbody.len()});
    // a referrer pushed with a subject gets OCI-Subject back
    let cfg = b"{}".to_vec();
    let cd = t.blob("r", &cfg).await;
    let mut ds = Vec::new();
    for (i, at) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd.to_string(), "size": 2},
            "layers": [], "subject": subject, "annotations": {"n": i.to_string()}});
        let b = serde_json::to_vec(&m).unwrap();
        let d = Digest::of(&b);
        let r = t.put_manifest("r", &d.to_string(), OCI_MANIFEST, &b).await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject"), sd.to_string());
        ds.push(d);
    }
    let r =
        t.c.get(t.u(&format!("/v2/r/referrers/{sd}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["mediaType"], OCI_INDEX);
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let r =
        t.c.get(t.u(&format!(
            "/v2/r/referrers/{sd}?artifactType=application%2Fvnd.example.sig"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], ds[1].to_string());
    assert_eq!(v["manifests"][0]["annotations"]["n"], "1");
    // nothing refers to the config: an empty list, not a 404
    let r =
        t.c.get(t.u(&format!("/v2/r/referrers/{cd}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
    let r =
        t.c.get(t.u("/v2/r/referrers/sha256:xyz"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    // deleting a referrer removes it from the list
    let r =
        t.c.delete(t.u(&format!("/v2/r/manifests/{}", ds[0])))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    let r =
        t.c.get(t.u(&format!("/v2/r/referrers/{sd}")))
            .send()
            .await
            .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn deletes() {
    let t = T::new();
    let (_, d) = t.image("del", "v1", "d", json!({})).await;
    let r =
        t.c.delete(t.u("/v2/del/manifests/v1"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    let r = t.c.get(t.u("/v2/del/manifests/v1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r =
        t.c.get(t.u(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200, "untagging keeps the manifest");
    let r =
        t.c.delete(t.u("/v2/del/manifests/v1"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    // deleting by digest removes every tag on it
    assert_eq!(
        t.put_manifest(
            "del",
            "v2",
            OCI_MANIFEST,
            &t.c.get(t.u(&format!("/v2/del/manifests/{d}")))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        )
        .await
        .status(),
        201
    );
    let r =
        t.c.delete(t.u(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    for p in [
        format!("/v2/del/manifests/{d}"),
        "/v2/del/manifests/v2".to_string(),
    ] {
        assert_eq!(t.c.get(t.u(&p)).send().await.unwrap().status(), 404);
    }
    let r =
        t.c.delete(t.u(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r =
        t.c.delete(t.u("/v2/nosuch/manifests/x"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    // blobs
    let b = t.blob("del", b"bye").await;
    let r =
        t.c.delete(t.u(&format!("/v2/del/blobs/{b}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    let r =
        t.c.get(t.u(&format!("/v2/del/blobs/{b}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    let r =
        t.c.delete(t.u(&format!("/v2/del/blobs/{b}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deletes_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    common::write_file(&cfg, "delete_enabled = false\n");
    let t = T::with(&["--config", cfg.to_str().unwrap()]);
    let (_, d) = t.image("nd", "v1", "x", json!({})).await;
    let r =
        t.c.delete(t.u(&format!("/v2/nd/manifests/{d}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    assert_eq!(
        t.c.get(t.u("/v2/nd/manifests/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn cross_repository_mount() {
    let t = T::new();
    let d = t.blob("src", b"shared layer").await;
    let r =
        t.c.post(t.u(&format!("/v2/dst/blobs/uploads/?mount={d}&from=src")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/dst/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    let r =
        t.c.get(t.u(&format!("/v2/dst/blobs/{d}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"shared layer"[..]);
    // from a repository without the blob: an ordinary upload session instead
    let r =
        t.c.post(t.u(&format!("/v2/dst2/blobs/uploads/?mount={d}&from=elsewhere")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    let r =
        t.c.head(t.u(&format!("/v2/dst2/blobs/{d}")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    // one copy on disk
    assert_eq!(t.reg.verify_blobs().len(), 1);
}

#[tokio::test]
async fn names_are_checked() {
    let t = T::new();
    // sent raw: HTTP clients would normalise the dot segments away
    for p in [
        "/v2/UPPER/tags/list",
        "/v2/a/../b/tags/list",
        "/v2/../../etc/tags/list",
        "/v2/a/%2e%2e/b/tags/list",
        "/v2/a%2F..%2Fb/tags/list",
        "/v2/-a/tags/list",
        "/v2/a//b/tags/list",
        "/v2/a/../../registry.redb/blobs/uploads/",
    ] {
        let (status, body) = raw_get(&t.reg.addr, p);
        assert_eq!(status, 400, "{p}");
        assert!(body.contains("NAME_INVALID"), "{p}: {body}");
    }
    let long = "a/".repeat(128) + "a";
    let r =
        t.c.get(t.u(&format!("/v2/{long}/tags/list")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    let r =
        t.c.post(t.u(&format!("/v2/{long}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    // nothing was created outside the root's layout
    let entries: Vec<String> = std::fs::read_dir(&t.reg.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for e in &entries {
        assert!(
            ["blobs", "uploads", "tmp", "registry.redb"].contains(&e.as_str()),
            "{e}"
        );
    }
}

/// A GET with the path exactly as given; returns (status, body).
fn raw_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}
