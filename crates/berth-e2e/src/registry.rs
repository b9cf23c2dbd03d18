//! A real registry for pull/push tests: Debian's `docker-registry` (the
//! reference distribution registry) on 127.0.0.1 with an ephemeral port,
//! its own storage and a generated config, optionally with htpasswd basic
//! auth. Images get into it with skopeo (a real client).
//!
//! ```text
//! /tmp/berth-e2e-reg-XXXXXX/
//!   config.yml   storage/   htpasswd   registry.log
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::run::Run;

pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
pub const SKOPEO: &str = "/usr/bin/skopeo";

/// A running registry; dropping it kills it and removes its directory.
pub struct Registry {
    dir: Option<TempDir>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub storage: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Basic-auth credentials, when the registry wants them.
    pub creds: Option<(String, String)>,
    /// The TLS files, when it serves HTTPS.
    pub tls: Option<PathBuf>,
}

/// A free TCP port on 127.0.0.1 (bound, then released for the registry).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// One plain HTTP request to `addr`; returns the status code.
pub fn http_status(addr: &str, method: &str, path: &str, auth: Option<&str>) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

impl Registry {
    /// Starts an open registry; `None` (with a message) when
    /// docker-registry or skopeo is missing.
    pub fn start() -> Option<Registry> {
        Registry::start_with(None)
    }

    /// Starts a registry that wants basic auth with `user`/`password`.
    pub fn start_htpasswd(user: &str, password: &str) -> Option<Registry> {
        Registry::start_with(Some((user, password)))
    }

    /// Starts a registry whose auth is Docker's token protocol, tokens
    /// from `tokens`; `user`/`password` are what skopeo pushes with.
    pub fn start_token(
        tokens: &crate::token::TokenServer,
        user: &str,
        password: &str,
    ) -> Option<Registry> {
        Registry::start_config(Some(tokens.registry_auth_yaml()), Some((user, password)))
    }

    fn start_with(creds: Option<(&str, &str)>) -> Option<Registry> {
        Registry::start_config(None, creds)
    }

    /// Starts a registry serving HTTPS with a certificate for 127.0.0.1
    /// signed by a test CA, demanding a client certificate signed by it.
    /// The files are in `certs` (see [`make_tls_certs`]).
    pub fn start_tls(certs: &Path) -> Option<Registry> {
        let yaml = format!(
            "  tls:\n    certificate: {0}/server.crt\n    key: {0}/server.key\n    clientcas:\n      - {0}/ca.crt\n",
            certs.display()
        );
        let mut r = Registry::start_config(Some(format!("#tls\n{yaml}")), None)?;
        r.tls = Some(certs.to_path_buf());
        Some(r)
    }

    fn start_config(auth_yaml: Option<String>, creds: Option<(&str, &str)>) -> Option<Registry> {
        for bin in [DOCKER_REGISTRY, SKOPEO] {
            if !Path::new(bin).is_file() {
                eprintln!("SKIPPED: {bin} is not installed (scripts/install-deps)");
                return None;
            }
        }
        let dir = crate::short_tempdir("berth-e2e-reg-");
        let base = dir.path().to_path_buf();
        let storage = base.join("storage");
        std::fs::create_dir(&storage).expect("create registry storage");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (tls, auth_yaml) = match auth_yaml {
            Some(y) if y.starts_with("#tls\n") => (y["#tls\n".len()..].to_string(), None),
            other => (String::new(), other),
        };
        let mut auth = auth_yaml.clone().unwrap_or_default();
        if let Some((u, p)) = creds.filter(|_| auth_yaml.is_none()) {
            let hash = bcrypt::hash(p, 5).expect("bcrypt");
            let ht = base.join("htpasswd");
            std::fs::write(&ht, format!("{u}:{hash}\n")).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                ht.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}{auth}",
            storage.display()
        );
        let cfg = base.join("config.yml");
        std::fs::write(&cfg, config).expect("write registry config");
        let mut cmd = Command::new(DOCKER_REGISTRY);
        cmd.arg("serve").arg(&cfg);
        let mut reg = Registry::launch(dir, storage, addr, cmd);
        reg.creds = creds.map(|(u, p)| (u.to_string(), p.to_string()));
        Some(reg)
    }

    /// Runs `cmd` (a registry serving plain HTTP on `addr`) with its output
    /// in `<dir>/registry.log`, and waits until `/v2/` answers.
    #[track_caller]
    fn launch(dir: TempDir, storage: PathBuf, addr: String, mut cmd: Command) -> Registry {
        let log = dir.path().join("registry.log");
        let logf = std::fs::File::create(&log).expect("create registry log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let reg = Registry {
            dir: Some(dir),
            addr,
            storage,
            log,
            child: Some(child),
            creds: None,
            tls: None,
        };
        let up = crate::wait_for(Duration::from_secs(20), || {
            http_status(&reg.addr, "GET", "/v2/", None).map(|_| ())
        });
        assert!(
            up.is_some(),
            "the registry did not answer on {}; log:\n{}",
            reg.addr,
            reg.log_text()
        );
        reg
    }

    /// Starts berth's own registry server (`berth-registry serve`, open,
    /// on a free loopback port).
    pub fn start_berth() -> Registry {
        let dir = crate::short_tempdir("berth-e2e-breg-");
        let storage = dir.path().join("storage");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(crate::bin("berth-registry"));
        cmd.args(["serve", "--addr", &addr, "--root"]).arg(&storage);
        Registry::launch(dir, storage, addr, cmd)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `127.0.0.1:<port>/<name>`.
    pub fn name(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr)
    }

    /// The file the registry serves a blob from.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Runs skopeo with the registry's credentials and no TLS.
    pub fn skopeo<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(SKOPEO);
        cmd.arg("--insecure-policy").args(args);
        Run::exec(cmd, None)
    }

    fn creds_args(&self, flag: &str) -> Vec<String> {
        let mut v = match &self.creds {
            Some((u, p)) => vec![flag.to_string(), format!("{u}:{p}")],
            None => vec![],
        };
        if let Some(dir) = &self.tls {
            let which = if flag == "--dest-creds" {
                "--dest-cert-dir"
            } else {
                "--cert-dir"
            };
            v.push(which.to_string());
            v.push(dir.join("skopeo").display().to_string());
        }
        v
    }

    /// Pushes a docker-save archive's image as `repo:tag` with skopeo.
    #[track_caller]
    pub fn push_archive(&self, archive: &Path, repo_tag: &str) {
        let mut args = vec![
            "copy".to_string(),
            "--dest-tls-verify=false".into(),
            "--retry-times=2".into(),
        ];
        args.extend(self.creds_args("--dest-creds"));
        args.push(format!("docker-archive:{}", archive.display()));
        args.push(format!("docker://{}/{repo_tag}", self.addr));
        self.skopeo(&args).ok();
    }

    /// `skopeo inspect --raw` of `repo:tag`: the manifest bytes.
    #[track_caller]
    pub fn raw_manifest(&self, repo_tag: &str) -> Vec<u8> {
        let mut args = vec![
            "inspect".to_string(),
            "--raw".into(),
            "--tls-verify=false".into(),
        ];
        args.extend(self.creds_args("--creds"));
        args.push(format!("docker://{}/{repo_tag}", self.addr));
        self.skopeo(&args).ok().as_bytes().to_vec()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- registry log ----\n{}", self.log_text());
        }
        if let Some(dir) = self.dir.take()
            && crate::keep_tempdirs()
        {
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

/// A fault-injecting HTTP proxy in front of a registry, for one blob:
/// every request is forwarded on its own upstream connection (with
/// `Connection: close`, so one response per connection); a `GET` of the
/// target blob without `Range` is cut after `cut_after` bytes of the
/// response (`cut_after = 0`: the connection is dropped before any), while
/// the fault is armed. Requests seen are recorded.
pub struct FaultProxy {
    /// `127.0.0.1:<port>`, to use instead of the registry's address.
    pub addr: String,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    /// (path substring, new body): responses to GETs of matching paths get
    /// this body instead (headers kept, `Content-Length` fixed).
    rewrite: std::sync::Mutex<Option<(String, Vec<u8>, bool)>>,
    target: std::sync::Mutex<String>,
    cut_after: usize,
    /// Faults left to inject (`usize::MAX`: until healed).
    faults: std::sync::atomic::AtomicUsize,
    requests: std::sync::Mutex<Vec<String>>,
    stop: std::sync::atomic::AtomicBool,
}

impl FaultProxy {
    /// Cuts the first `faults` un-ranged downloads of blob `target`.
    pub fn start(upstream: &str, target: &str, cut_after: usize, faults: usize) -> FaultProxy {
        use std::sync::Arc;
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = l.local_addr().expect("proxy address").to_string();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            rewrite: std::sync::Mutex::new(None),
            target: std::sync::Mutex::new(target.to_string()),
            cut_after,
            faults: std::sync::atomic::AtomicUsize::new(faults),
            requests: std::sync::Mutex::new(Vec::new()),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let st = state.clone();
        l.set_nonblocking(true).expect("nonblocking listener");
        std::thread::spawn(move || {
            while !st.stop.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let st = st.clone();
                        let _ = c.set_nonblocking(false);
                        std::thread::spawn(move || proxy_conn(c, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { addr, state }
    }

    /// Serve `body` for every `GET` whose path contains `path`: a manifest
    /// swapped on the way. With `fix_digest` the `Docker-Content-Digest`
    /// header says the new body's digest (a registry serving a bad
    /// document), else the registry's header stays (a body changed in
    /// transit).
    pub fn rewrite(&self, path: &str, body: Vec<u8>, fix_digest: bool) {
        *self.state.rewrite.lock().unwrap() = Some((path.to_string(), body, fix_digest));
    }

    /// Stop injecting faults.
    pub fn heal(&self) {
        *self.state.rewrite.lock().unwrap() = None;
        self.state
            .faults
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Request lines (and a `Range` header, if any) seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn read_head(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
        if head == [0x16] {
            // A TLS ClientHello: answer as Go's HTTP server does.
            let _ = c.write_all(
                b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
            );
            return None;
        }
        if head.len() > 64 << 10 {
            return None;
        }
    }
    Some(head)
}

fn proxy_conn(mut client: TcpStream, st: &ProxyState) {
    use std::sync::atomic::Ordering;
    let _ = client.set_read_timeout(Some(Duration::from_secs(60)));
    while let Some(head) = read_head(&mut client) {
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let mut out = format!("{request_line}\r\n");
        let mut range = None;
        let mut body_len = 0usize;
        for h in lines.filter(|l| !l.is_empty()) {
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("connection:") {
                continue;
            }
            if lower.starts_with("range:") {
                range = Some(h.to_string());
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                body_len = v.trim().parse().unwrap_or(0);
            }
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut body = vec![0u8; body_len];
        if client.read_exact(&mut body).is_err() {
            return;
        }
        st.requests.lock().unwrap().push(match &range {
            Some(r) => format!("{request_line} [{r}]"),
            None => request_line.clone(),
        });
        let target = st.target.lock().unwrap().clone();
        let faulty = request_line.starts_with("GET ")
            && request_line.contains(&format!("/blobs/{target}"))
            && range.is_none()
            && st
                .faults
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let Ok(mut up) = TcpStream::connect(&st.upstream) else {
            return;
        };
        if up.write_all(out.as_bytes()).is_err() || up.write_all(&body).is_err() {
            return;
        }
        let rewrite = st.rewrite.lock().unwrap().clone().filter(|(p, _, _)| {
            request_line.starts_with("GET ") && request_line.contains(p.as_str())
        });
        if let Some((_, new_body, fix_digest)) = rewrite {
            let mut resp = Vec::new();
            let _ = up.read_to_end(&mut resp);
            let split = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(resp.len());
            let head = String::from_utf8_lossy(&resp[..split]).into_owned();
            let mut out = String::new();
            for l in head.split("\r\n") {
                let lower = l.to_ascii_lowercase();
                if lower.starts_with("content-length:") {
                    continue;
                }
                if fix_digest && lower.starts_with("docker-content-digest:") {
                    use sha2::Digest as _;
                    out.push_str(&format!(
                        "Docker-Content-Digest: sha256:{}\r\n",
                        hex::encode(sha2::Sha256::digest(&new_body))
                    ));
                    continue;
                }
                out.push_str(l);
                out.push_str("\r\n");
            }
            out.push_str(&format!("Content-Length: {}\r\n\r\n", new_body.len()));
            if client.write_all(out.as_bytes()).is_err() || client.write_all(&new_body).is_err() {
                return;
            }
            continue;
        }
        let mut sent = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match up.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let n = if faulty {
                n.min(st.cut_after.saturating_sub(sent))
            } else {
                n
            };
            if n > 0 && client.write_all(&buf[..n]).is_err() {
                return;
            }
            sent += n;
            if faulty && sent >= st.cut_after {
                let _ = client.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// A test CA, a server certificate for 127.0.0.1 and a client certificate,
/// made with `openssl` in `dir`: `ca.crt`, `server.{crt,key}`,
/// `client.{cert,key}`, and `skopeo/` (the same as skopeo's cert dir).
pub fn make_tls_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::create_dir_all(dir).expect("create cert dir");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=berth-test-ca",
    ]);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
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
        "server.ext",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=berth-test-client",
    ]);
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.cert",
        "-days",
        "2",
        "-extfile",
        "client.ext",
    ]);
    let sk = dir.join("skopeo");
    std::fs::create_dir_all(&sk).expect("skopeo cert dir");
    for f in ["ca.crt", "client.cert", "client.key"] {
        std::fs::copy(dir.join(f), sk.join(f)).expect("copy cert");
    }
}
