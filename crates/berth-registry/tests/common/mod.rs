//! Test harness: a real `berth-registry` process on an ephemeral loopback
//! port with a temporary root, real clients (reqwest, skopeo), and images
//! made by berth-fixtures.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_types::Digest;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth-registry");

/// A running registry; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Registry {
    pub child: Option<Child>,
    /// host:port
    pub addr: String,
    /// http(s)://host:port
    pub url: String,
    pub root: PathBuf,
    pub log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Registry {
    /// Starts on a fresh temporary root.
    pub fn start(args: &[&str]) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut r = Registry::start_in(&root, dir.path(), args);
        r._dir = Some(dir);
        r
    }

    /// Starts on `root`, logging into `logdir`.
    pub fn start_in(root: &Path, logdir: &Path, args: &[&str]) -> Registry {
        let log = logdir.join(format!("registry-{}.log", rand_suffix()));
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--root")
            .arg(root)
            .args(args)
            .env("BERTH_REGISTRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logf);
        let mut child = cmd.spawn().expect("start berth-registry");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut r = BufReader::new(stdout);
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // keep draining so the child never blocks on a full pipe
            let mut sink = String::new();
            while r.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if !l.is_empty() => l,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "berth-registry did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let url = line
            .trim()
            .strip_prefix("berth-registry listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let addr = url.split("://").nth(1).unwrap().to_string();
        Registry {
            child: Some(child),
            addr,
            url,
            root: root.to_path_buf(),
            log,
            _dir: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(c) = &self.child {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        let mut c = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM without waiting.
    pub fn term(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every blob file under the root: digest → bytes, after checking that
    /// each one hashes to its name.
    pub fn verify_blobs(&self) -> Vec<Digest> {
        verify_blobs(&self.root)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

pub fn verify_blobs(root: &Path) -> Vec<Digest> {
    let mut out = Vec::new();
    let base = root.join("blobs/sha256");
    for d in std::fs::read_dir(&base).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            let bytes = std::fs::read(f.path()).unwrap();
            let d = Digest::of(&bytes);
            assert_eq!(d.hex(), name, "blob file {name} does not hash to its name");
            out.push(d);
        }
    }
    out
}

pub fn rand_suffix() -> String {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!("{:x}-{}", n, std::process::id())
}

/// An HTTP client for tests (no proxy, no redirects followed silently).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs skopeo and returns what it did.
pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed (scripts/install-deps)")
}

pub fn skopeo_ok(args: &[&str]) -> Output {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A docker-save archive of busybox (from the host's busybox-static).
pub fn busybox_docker_archive(dir: &Path) -> PathBuf {
    let p = dir.join("busybox-docker.tar");
    std::fs::write(&p, berth_fixtures::busybox_archive("busybox:latest")).unwrap();
    p
}

/// An OCI layout archive of busybox.
pub fn busybox_oci_archive(dir: &Path) -> PathBuf {
    let p = dir.join("busybox-oci.tar");
    let img = berth_fixtures::busybox_image();
    std::fs::write(
        &p,
        berth_fixtures::oci_layout_archive(&[(img, vec!["busybox:latest".into()])]),
    )
    .unwrap();
    p
}

/// A small image with one layer of `n` pseudo-random bytes (seeded).
pub fn random_image(n: usize, seed: u64, arch: &str) -> berth_fixtures::BuiltImage {
    let mut rng = berth_fixtures::XorShift::new(seed);
    let data = rng.bytes(n);
    let mut tw = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_704_067_200);
    h.set_cksum();
    tw.append_data(&mut h, format!("data-{seed}.bin"), &data[..])
        .unwrap();
    let layer = tw.into_inner().unwrap();
    let mut spec = berth_fixtures::ImageSpec::new(
        vec![berth_fixtures::Layer::new(
            layer,
            berth_fixtures::Compression::Gzip,
            "ADD data /",
        )],
        json!({"Cmd": ["sh"]}),
    );
    spec.architecture = arch.to_string();
    berth_fixtures::build_image(&spec)
}

/// Writes an OCI layout directory whose `index.json` tags (as `tag`) a
/// multi-platform image index over `images` (each with its architecture).
pub fn multiarch_layout(
    dir: &Path,
    images: &[(&berth_fixtures::BuiltImage, &str)],
    tag: &str,
) -> (Digest, Vec<u8>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let mut manifests = Vec::new();
    for (img, arch) in images {
        for (_, bytes, _) in &img.blobs {
            put(bytes);
        }
        let d = put(&img.manifest_json);
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d.to_string(),
            "size": img.manifest_json.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let id = put(&index);
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": id.to_string(),
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    std::fs::write(
        dir.join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    (id, index)
}

/// The JSON error code of a response body.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("error body is JSON");
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

pub fn write_file(p: &Path, s: &str) {
    std::fs::File::create(p)
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
}
