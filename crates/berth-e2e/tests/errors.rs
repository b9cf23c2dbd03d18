//! Errors: raw HTTP status codes and bodies, and archives that must not
//! load — with a clear message, and leaving nothing behind.

use berth_e2e::{Daemon, arg, require_root, text};
use berth_fixtures::corrupt_archive;

/// Asserts `r` is a Docker-style JSON error with status `status`; returns its message.
#[track_caller]
fn error_body(r: &berth_e2e::Response, status: u16) -> String {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "an error body is JSON: {:?}",
        r.headers
    );
    let m = r.message();
    assert!(!m.is_empty(), "empty error message");
    m
}

#[test]
fn malformed_filters_are_400() {
    require_root!();
    let d = Daemon::start();
    let r = d.get("/images/json?filters=%7Bbad").expect("request");
    let m = error_body(&r, 400);
    assert!(m.contains("filter"), "{m}");
    let r = d
        .get("/images/json?filters=%7B%22foo%22%3A%5B%22x%22%5D%7D")
        .expect("request");
    assert_eq!(error_body(&r, 400), "invalid filter 'foo'");
    let r = d
        .get("/images/json?filters=%7B%22dangling%22%3A%5B%22maybe%22%5D%7D")
        .expect("request");
    assert_eq!(error_body(&r, 400), "invalid filter 'dangling=maybe'");
    let out = d.docker(["images", "--filter", "foo=bar"]);
    assert!(out.fails_with(1).contains("invalid filter 'foo'"), "{out}");
}

#[test]
fn unknown_image_is_404() {
    require_root!();
    let d = Daemon::start();
    let r = d.get("/images/nonexist/json").expect("request");
    assert_eq!(error_body(&r, 404), "No such image: nonexist:latest");
    let r = d.get("/v1.47/images/nonexist:v2/history").expect("request");
    assert_eq!(error_body(&r, 404), "No such image: nonexist:v2");
    let r = d
        .request("DELETE", "/images/nonexist", None)
        .expect("request");
    assert_eq!(error_body(&r, 404), "No such image: nonexist:latest");
    let r = d
        .request("POST", "/images/nonexist/tag?repo=x&tag=1", None)
        .expect("request");
    assert_eq!(error_body(&r, 404), "No such image: nonexist:latest");
    let out = d.docker(["image", "inspect", "nonexist"]);
    assert!(
        out.fails_with(1).contains("No such image: nonexist"),
        "{out}"
    );
    let out = d.docker(["rmi", "nonexist"]);
    assert!(
        out.fails_with(1).contains("No such image: nonexist:latest"),
        "{out}"
    );
}

#[test]
fn unknown_path_is_404() {
    require_root!();
    let d = Daemon::start();
    for path in ["/nope", "/v1.47/nope", "/images/json/extra/parts"] {
        let r = d.get(path).expect("request");
        assert_eq!(error_body(&r, 404), "page not found", "{path}");
    }
}

#[test]
fn api_versions_outside_the_range_are_refused() {
    require_root!();
    let d = Daemon::start();
    let r = d.get("/v9.99/version").expect("request");
    let m = error_body(&r, 400);
    assert!(
        m.contains("9.99") && m.contains("too new") && m.contains("1.47"),
        "{m}"
    );
    let r = d.get("/v1.12/version").expect("request");
    let m = error_body(&r, 400);
    assert!(
        m.contains("1.12") && m.contains("too old") && m.contains("1.24"),
        "{m}"
    );
    let r = d.get("/v1.24/_ping").expect("request");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    let r = d.get("/v1.47/version").expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ApiVersion"], "1.47");
    assert_eq!(r.header("api-version"), Some("1.47"));
}

#[test]
fn invalid_tag_names_are_rejected() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    let out = d.docker(["tag", "busybox", "Bad:Name"]);
    assert!(
        out.fails_with(1).contains("invalid reference format"),
        "{out}"
    );
    // The CLI may catch that itself; the daemon must too.
    let r = d
        .request("POST", "/images/busybox/tag?repo=Bad&tag=Name", None)
        .expect("request");
    let m = error_body(&r, 400);
    assert!(m.contains("invalid reference format"), "{m}");
    let r = d
        .request("POST", "/images/busybox/tag?repo=ok&tag=bad%20tag", None)
        .expect("request");
    error_body(&r, 400);
    let out = d.docker(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert_eq!(
        out.ok().trim(),
        format!("busybox:latest {}", berth_e2e::fixtures::short(&id))
    );
}

/// Loads the named corrupt archive: it must fail with a readable message
/// from the daemon and leave no image, blob, layer or staging file.
#[track_caller]
fn corrupt_load_fails_cleanly(name: &str, expect_in_message: &[&str]) {
    let d = Daemon::start();
    let bytes = corrupt_archive(name).expect("known corrupt fixture");
    let out = d.docker_load(&format!("corrupt-{name}.tar"), &bytes);
    let err = out.fails_with(1);
    assert!(
        err.contains("Error response from daemon: "),
        "the daemon's own message must reach the client (not a transport error):\n{out}"
    );
    assert!(
        text::is_readable(err),
        "the message must be readable text:\n{out}"
    );
    for want in expect_in_message {
        assert!(
            err.contains(want),
            "the message should mention {want:?}:\n{out}"
        );
    }
    d.assert_empty();
}

#[test]
fn load_of_garbage_fails_cleanly() {
    require_root!();
    corrupt_load_fails_cleanly("garbage", &[]);
}

#[test]
fn load_of_truncated_archive_fails_cleanly() {
    require_root!();
    corrupt_load_fails_cleanly("truncated", &[]);
}

#[test]
fn load_with_invalid_manifest_json_fails_cleanly() {
    require_root!();
    corrupt_load_fails_cleanly("invalid-manifest-json", &["manifest.json"]);
}

#[test]
fn load_with_layer_digest_mismatch_fails_cleanly() {
    require_root!();
    corrupt_load_fails_cleanly("layer-digest-mismatch", &["digest"]);
}

#[test]
fn load_with_missing_blob_fails_cleanly() {
    require_root!();
    let layer = berth_fixtures::corrupt_base_image().diff_ids[0].0.hex();
    // A small archive: the daemon may answer before the client finished
    // sending; run it a few times so a race shows up.
    for _ in 0..5 {
        corrupt_load_fails_cleanly("missing-blob", &[&layer]);
    }
}

/// Trailing bytes after the end of the tar (block padding, or junk) must
/// not turn a daemon error into a client-side "broken pipe". dockerd reads
/// the archive to its end, and Go's HTTP server then drains up to 256 KiB of
/// unread body before it answers and closes; a server that closes without
/// draining makes Go clients (the docker CLI) fail their write and report
/// `write: broken pipe` instead of the daemon's message.
#[test]
fn load_error_reaches_the_client_despite_trailing_bytes() {
    require_root!();
    let d = Daemon::start();
    let mut bytes = corrupt_archive("missing-blob").expect("fixture");
    bytes.extend(std::iter::repeat_n(0u8, 200 << 10));
    let path = d.write("missing-blob-padded.tar", &bytes);
    for _ in 0..5 {
        let out = d.docker(["load", "-i", arg(&path)]);
        assert!(
            out.fails_with(1).contains("Error response from daemon: "),
            "{out}"
        );
    }
    d.assert_empty();

    let mut good =
        berth_e2e::fixtures::save_archive(&[(berth_e2e::fixtures::busybox(), &["busybox:latest"])]);
    good.extend(std::iter::repeat_n(0u8, 200 << 10));
    let out = d.docker_load("busybox-padded.tar", &good);
    assert_eq!(out.ok().trim(), "Loaded image: busybox:latest");
    d.assert_no_garbage();
}

/// The same at the HTTP level, deterministically: the archive, a pause in
/// which the daemon finds the error and answers, then 200 KiB of padding.
/// The padding must still be accepted (read and discarded) and the error
/// response must be readable afterwards.
#[test]
fn load_error_response_waits_for_the_rest_of_the_body() {
    require_root!();
    let d = Daemon::start();
    let archive = corrupt_archive("missing-blob").expect("fixture");
    let padding = vec![0u8; 200 << 10];
    let r = berth_e2e::http::send(
        &d.sock,
        "POST",
        "/v1.47/images/load?quiet=1",
        Some("application/x-tar"),
        &[&archive, &padding],
        std::time::Duration::from_millis(500),
    )
    .unwrap_or_else(|e| {
        panic!(
            "sending the rest of the body failed ({e}): berthd answered and closed the connection without \
             reading the request body to its end"
        )
    });
    assert!(
        r.status >= 400 || r.text().contains("errorDetail"),
        "{} {}",
        r.status,
        r.text()
    );
    let layer = berth_fixtures::corrupt_base_image().diff_ids[0].0.hex();
    assert!(
        r.text().contains(&layer),
        "the message names the missing blob: {}",
        r.text()
    );
    d.assert_empty();
}

/// A failed load must leave existing images, their blobs and layers alone
/// (garbage collection after the failure must not take them).
#[test]
fn failed_loads_keep_existing_images() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_busybox();
    let ml = d.load_multilayer();
    let before = d.store();
    for name in berth_fixtures::CORRUPT_NAMES {
        let out = d.docker_load(
            &format!("corrupt-{name}.tar"),
            &corrupt_archive(name).expect("fixture"),
        );
        out.fails();
        assert_eq!(d.store(), before, "after loading corrupt archive {name}");
    }
    for name in ["truncated", "dotdot", "hardlink-dotdot"] {
        let out = d.docker_load(
            &format!("malicious-{name}.tar"),
            &berth_fixtures::malicious_archive(name),
        );
        out.fails();
        assert_eq!(d.store(), before, "after loading malicious archive {name}");
    }
    assert_eq!(d.image_ids(), {
        let mut v = vec![id, ml];
        v.sort();
        v
    });
    d.assert_no_garbage();
    let saved = d.path("after.tar");
    d.docker(["save", "-o", arg(&saved), "busybox", "multilayer"])
        .ok();
}
