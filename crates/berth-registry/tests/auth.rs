//! Auth and security: every endpoint refuses without credentials when auth
//! is on; basic (htpasswd, bcrypt) and bearer tokens issued by the registry
//! with per-repository rules; a token for repo A cannot read repo B; a mount
//! from a repository the user cannot read does not happen; an upload cannot
//! be continued by another user's session; TLS with a real client.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use berth_types::Digest;
use common::{BIN, Registry, client, error_code, skopeo, skopeo_ok};
use reqwest::StatusCode;
use serde_json::Value;

/// Writes an htpasswd file made by `berth-registry htpasswd`.
fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let mut lines = String::new();
    for (u, p) in users {
        let mut child = Command::new(BIN)
            .args(["htpasswd", u, "--cost", "4"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{p}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(line.starts_with(&format!("{u}:$2y$04$")), "{line}");
        lines.push_str(&line);
    }
    let p = dir.join("htpasswd");
    std::fs::write(&p, lines).unwrap();
    p
}

fn basic(u: &str, p: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

/// (method, path) of every endpoint, for repository `repo`.
fn endpoints(repo: &str) -> Vec<(reqwest::Method, String)> {
    use reqwest::Method as M;
    let d = Digest::of(b"x");
    let u = "0123456789abcdef0123456789abcdef";
    vec![
        (M::GET, "/v2/".into()),
        (M::GET, "/v2/_catalog".into()),
        (M::GET, format!("/v2/{repo}/tags/list")),
        (M::GET, format!("/v2/{repo}/manifests/latest")),
        (M::HEAD, format!("/v2/{repo}/manifests/latest")),
        (M::PUT, format!("/v2/{repo}/manifests/latest")),
        (M::DELETE, format!("/v2/{repo}/manifests/{d}")),
        (M::GET, format!("/v2/{repo}/blobs/{d}")),
        (M::HEAD, format!("/v2/{repo}/blobs/{d}")),
        (M::DELETE, format!("/v2/{repo}/blobs/{d}")),
        (M::POST, format!("/v2/{repo}/blobs/uploads/")),
        (M::POST, format!("/v2/{repo}/blobs/uploads/?digest={d}")),
        (
            M::POST,
            format!("/v2/{repo}/blobs/uploads/?mount={d}&from=other"),
        ),
        (M::GET, format!("/v2/{repo}/blobs/uploads/{u}")),
        (M::PATCH, format!("/v2/{repo}/blobs/uploads/{u}")),
        (M::PUT, format!("/v2/{repo}/blobs/uploads/{u}?digest={d}")),
        (M::DELETE, format!("/v2/{repo}/blobs/uploads/{u}")),
        (M::GET, format!("/v2/{repo}/referrers/{d}")),
        (M::GET, "/metrics".into()),
    ]
}

async fn all_refused(reg: &Registry, auth: Option<&str>, scheme: &str) {
    let c = client();
    for (m, p) in endpoints("team/app") {
        let mut rq = c.request(m.clone(), format!("{}{p}", reg.url));
        if let Some(a) = auth {
            rq = rq.header("authorization", a);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{m} {p}");
        let ch = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ch.starts_with(scheme), "{m} {p}: {ch}");
        if m != reqwest::Method::HEAD {
            assert_eq!(error_code(r).await, "UNAUTHORIZED", "{m} {p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_refuses_everything_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let ht = htpasswd(dir.path(), &[("alice", "wonderland")]);
    let reg = Registry::start(&["--htpasswd", ht.to_str().unwrap()]);
    all_refused(&reg, None, "Basic realm=").await;
    all_refused(&reg, Some(&basic("alice", "wrong")), "Basic").await;
    all_refused(&reg, Some(&basic("mallory", "wonderland")), "Basic").await;
    let c = client();
    let r = c
        .get(format!("{}/v2/", reg.url))
        .header("authorization", basic("alice", "wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // the health endpoint says nothing private and stays open
    assert_eq!(
        c.get(format!("{}/healthz", reg.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // a real client with credentials
    let archive = common::busybox_oci_archive(dir.path());
    let a = &reg.addr;
    let out = skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{a}/team/app:1"),
    ]);
    assert!(!out.status.success());
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:wonderland",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{a}/team/app:1"),
    ]);
    skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:wonderland",
        &format!("docker://{a}/team/app:1"),
    ]);
}

const TOKEN_CONFIG: &str = r#"
[auth]
mode = "token"
htpasswd = "HTPASSWD"
[[access]]
users = ["*"]
repos = ["{user}/*"]
actions = ["pull", "push", "delete"]
[[access]]
users = ["alice", "bob"]
repos = ["shared"]
actions = ["pull", "push"]
[[access]]
users = ["anonymous", "*"]
repos = ["public/*"]
actions = ["pull"]
"#;

struct TokenSetup {
    reg: Registry,
    c: reqwest::Client,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

fn token_setup(extra_args: &[&str]) -> TokenSetup {
    let dir = tempfile::tempdir().unwrap();
    let ht = htpasswd(dir.path(), &[("alice", "a-pass"), ("bob", "b-pass")]);
    let cfg = dir.path().join("registry.toml");
    common::write_file(
        &cfg,
        &TOKEN_CONFIG.replace("HTPASSWD", ht.to_str().unwrap()),
    );
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra_args);
    let reg = Registry::start(&args);
    TokenSetup {
        reg,
        c: client(),
        dir: dir.path().to_path_buf(),
        _dir: dir,
    }
}

impl TokenSetup {
    async fn token(&self, user: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let mut url = format!("{}/token?service=berth-registry", self.reg.url);
        for s in scopes {
            url.push_str(&format!("&scope={}", s.replace('/', "%2F")));
        }
        let mut rq = self.c.get(url);
        if let Some((u, p)) = user {
            rq = rq.header("authorization", basic(u, p));
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert!(v["expires_in"].as_u64().unwrap() > 0);
        v["token"].as_str().unwrap().to_string()
    }
    fn bearer(&self, m: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.c
            .request(m, format!("{}{path}", self.reg.url))
            .header("authorization", format!("Bearer {token}"))
    }
    async fn push_blob(&self, repo: &str, data: &[u8], token: &str) -> Digest {
        let d = Digest::of(data);
        let r = self
            .bearer(
                reqwest::Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                token,
            )
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{repo}");
        d
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_scopes_are_per_repository() {
    let t = token_setup(&[]);
    all_refused(&t.reg, None, "Bearer realm=").await;
    // the challenge names this registry's token endpoint and the scope
    let r =
        t.c.get(format!("{}/v2/team/app/tags/list", t.reg.url))
            .send()
            .await
            .unwrap();
    let ch = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ch,
        format!(
            "Bearer realm=\"{}/token\",service=\"berth-registry\",scope=\"repository:team/app:pull\"",
            t.reg.url
        )
    );
    // bad credentials at the token endpoint
    let r =
        t.c.get(format!("{}/token?service=berth-registry", t.reg.url))
            .header("authorization", basic("alice", "nope"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    let r =
        t.c.get(format!("{}/token?service=other", t.reg.url))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);

    let alice = t
        .token(
            Some(("alice", "a-pass")),
            &["repository:alice/app:pull,push", "repository:bob/app:pull"],
        )
        .await;
    let bob = t
        .token(Some(("bob", "b-pass")), &["repository:bob/app:pull,push"])
        .await;
    let d = t.push_blob("alice/app", b"alice's layer", &alice).await;
    let bd = t.push_blob("bob/app", b"bob's layer", &bob).await;
    // a token for alice/app cannot read bob/app (the grant was not given)
    for (m, p) in [
        (reqwest::Method::GET, format!("/v2/bob/app/blobs/{bd}")),
        (reqwest::Method::HEAD, format!("/v2/bob/app/blobs/{bd}")),
        (reqwest::Method::GET, "/v2/bob/app/tags/list".to_string()),
        (
            reqwest::Method::POST,
            "/v2/bob/app/blobs/uploads/".to_string(),
        ),
    ] {
        let r = t.bearer(m.clone(), &p, &alice).send().await.unwrap();
        assert_eq!(r.status(), 401, "{m} {p}");
        let ch = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(ch.contains("error=\"insufficient_scope\""), "{ch}");
    }
    // and bob's token cannot read alice's
    let r = t
        .bearer(
            reqwest::Method::GET,
            &format!("/v2/alice/app/blobs/{d}"),
            &bob,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // alice's own works
    let r = t
        .bearer(
            reqwest::Method::GET,
            &format!("/v2/alice/app/blobs/{d}"),
            &alice,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // no delete without the delete grant
    let r = t
        .bearer(
            reqwest::Method::DELETE,
            &format!("/v2/alice/app/blobs/{d}"),
            &alice,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // a tampered or foreign token is refused
    let mut forged = alice.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let r = t
        .bearer(reqwest::Method::GET, "/v2/", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let other = token_setup(&[]);
    let foreign = other
        .token(Some(("alice", "a-pass")), &["repository:alice/app:pull"])
        .await;
    let r = t
        .bearer(
            reqwest::Method::GET,
            &format!("/v2/alice/app/blobs/{d}"),
            &foreign,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // mount from a repository alice cannot read: not mounted, an upload starts instead
    let alice2 = t
        .token(
            Some(("alice", "a-pass")),
            &["repository:alice/app:pull,push", "repository:bob/app:pull"],
        )
        .await;
    let r = t
        .bearer(
            reqwest::Method::POST,
            &format!("/v2/alice/app/blobs/uploads/?mount={bd}&from=bob/app"),
            &alice2,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = t
        .bearer(
            reqwest::Method::HEAD,
            &format!("/v2/alice/app/blobs/{bd}"),
            &alice2,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // while bob, who can read bob/app, may mount into shared
    let bob2 = t
        .token(
            Some(("bob", "b-pass")),
            &["repository:bob/app:pull", "repository:shared:pull,push"],
        )
        .await;
    let r = t
        .bearer(
            reqwest::Method::POST,
            &format!("/v2/shared/blobs/uploads/?mount={bd}&from=bob/app"),
            &bob2,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // anonymous: only public/*
    let anon = t
        .token(
            None,
            &["repository:public/x:pull", "repository:alice/app:pull"],
        )
        .await;
    let r = t
        .bearer(reqwest::Method::GET, "/v2/alice/app/tags/list", &anon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = t
        .bearer(reqwest::Method::GET, "/v2/public/x/tags/list", &anon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "allowed, but nothing there");

    // the catalog lists only what the caller may pull
    let cat = t
        .token(Some(("alice", "a-pass")), &["registry:catalog:*"])
        .await;
    let r = t
        .bearer(reqwest::Method::GET, "/v2/_catalog", &cat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["alice/app", "shared"])
    );
    let r = t
        .bearer(reqwest::Method::GET, "/v2/_catalog", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no catalog grant");

    // over-long token request bodies are refused
    let r =
        t.c.post(format!("{}/token", t.reg.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'a'; 100 << 10])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 413);
    // the OAuth2 password grant works too
    let r = t
        .c
        .post(format!("{}/token", t.reg.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=alice&password=a-pass&service=berth-registry&scope=repository%3Aalice%2Fapp%3Apull")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let tok = v["access_token"].as_str().unwrap();
    let r = t
        .bearer(
            reqwest::Method::GET,
            &format!("/v2/alice/app/blobs/{d}"),
            tok,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_belongs_to_who_started_it() {
    let t = token_setup(&[]);
    let alice = t
        .token(Some(("alice", "a-pass")), &["repository:shared:pull,push"])
        .await;
    let bob = t
        .token(Some(("bob", "b-pass")), &["repository:shared:pull,push"])
        .await;
    let data = b"half of it, then the rest".to_vec();
    let d = Digest::of(&data);
    let r = t
        .bearer(reqwest::Method::POST, "/v2/shared/blobs/uploads/", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = t
        .bearer(reqwest::Method::PATCH, &loc, &alice)
        .body(data[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // alice "crashes"; bob, who may push to the same repository, finds the session URL
    for (m, path) in [
        (reqwest::Method::GET, loc.clone()),
        (reqwest::Method::PATCH, loc.clone()),
        (reqwest::Method::PUT, format!("{loc}?digest={d}")),
        (reqwest::Method::DELETE, loc.clone()),
    ] {
        let r = t
            .bearer(m.clone(), &path, &bob)
            .body(data[10..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{m}");
        assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    }
    // alice resumes and finishes
    let r = t
        .bearer(reqwest::Method::GET, &loc, &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["range"], "0-9");
    let r = t
        .bearer(reqwest::Method::PUT, &format!("{loc}?digest={d}"), &alice)
        .header("content-range", format!("10-{}", data.len() - 1))
        .body(data[10..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[test]
fn skopeo_with_token_auth() {
    let t = token_setup(&[]);
    let archive = common::busybox_oci_archive(&t.dir);
    let a = &t.reg.addr;
    let src = format!("oci-archive:{}", archive.display());
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:a-pass",
        &src,
        &format!("docker://{a}/alice/busybox:1"),
    ]);
    skopeo_ok(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--src-creds",
        "alice:a-pass",
        &format!("docker://{a}/alice/busybox:1"),
        &format!("dir:{}/out", t.dir.display()),
    ]);
    // alice cannot push into bob's namespace, nor read it
    let out = skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:a-pass",
        &src,
        &format!("docker://{a}/bob/busybox:1"),
    ]);
    assert!(!out.status.success());
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        "bob:b-pass",
        &src,
        &format!("docker://{a}/bob/busybox:1"),
    ]);
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:a-pass",
        &format!("docker://{a}/bob/busybox:1"),
    ]);
    assert!(!out.status.success());
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{a}/alice/busybox:1"),
    ]);
    assert!(!out.status.success(), "anonymous");
    skopeo_ok(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        "alice:a-pass",
        &format!("docker://{a}/alice/busybox:1"),
    ]);
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let certdir = dir.join("certs.d");
    std::fs::create_dir_all(&certdir).unwrap();
    std::fs::copy(dir.join("ca.crt"), certdir.join("ca.crt")).unwrap();
    (dir.join("server.crt"), dir.join("server.key"), certdir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_token_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, certdir) = certificates(dir.path());
    let t = token_setup(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(t.reg.url.starts_with("https://"), "{}", t.reg.url);
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.crt")).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let r = c.get(format!("{}/v2/", t.reg.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(&format!("realm=\"https://{}/token\"", t.reg.addr))
    );
    // plain HTTP to the TLS port gets nowhere
    assert!(
        client()
            .get(format!("http://{}/v2/", t.reg.addr))
            .send()
            .await
            .is_err()
    );
    // an untrusting client refuses the certificate
    assert!(
        client()
            .get(format!("{}/v2/", t.reg.url))
            .send()
            .await
            .is_err()
    );
    // skopeo with the CA in a cert dir, and credentials traded for a token over TLS
    let archive = common::busybox_oci_archive(dir.path());
    let cd = certdir.to_str().unwrap();
    let a = &t.reg.addr;
    skopeo_ok(&[
        "copy",
        "-q",
        "--dest-cert-dir",
        cd,
        "--dest-creds",
        "alice:a-pass",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{a}/alice/tls:1"),
    ]);
    skopeo_ok(&[
        "inspect",
        "--cert-dir",
        cd,
        "--creds",
        "alice:a-pass",
        &format!("docker://{a}/alice/tls:1"),
    ]);
    let out = skopeo(&[
        "inspect",
        "--creds",
        "alice:a-pass",
        &format!("docker://{a}/alice/tls:1"),
    ]);
    assert!(
        !out.status.success(),
        "without the CA skopeo must refuse the certificate"
    );
}
