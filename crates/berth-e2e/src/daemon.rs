//! One `berthd` per test, on its own data root and socket.
//!
//! ```text
//! /tmp/berth-e2e-XXXXXX/     the test's directory (removed on drop)
//!   root/                    --data-root
//!   s.sock                   -H unix://…
//!   berthd.pid               --pidfile
//!   run/                     --exec-root (shim sockets, netns/ of containers)
//!   daemon.json              --config-file ({}), so /etc/berth is never read
//!   berthd.log               the daemon's stderr, across restarts
//!   docker-config/           DOCKER_CONFIG of the docker CLI (empty)
//!   …                        fixtures and outputs the test writes
//! ```
//!
//! berthd runs in its own network namespace (`/run/netns/berth-e2e-…`),
//! deleted when the `Daemon` is dropped: that namespace is "the host" for
//! everything the daemon does with the network.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::{self, Response};
use crate::netns::Netns;
use crate::run::Run;
use crate::store::{StoreState, chain_ids, hex_of};

/// How long berthd may take to answer `/_ping` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long berthd may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running berthd and the directory it lives in. Dropping it stops the
/// daemon (SIGTERM, then SIGKILL) and removes the directory.
pub struct Daemon {
    dir: Option<TempDir>,
    /// The data root.
    pub root: PathBuf,
    /// The API socket.
    pub sock: PathBuf,
    pidfile: PathBuf,
    config: PathBuf,
    log: PathBuf,
    docker_config: PathBuf,
    child: Option<Child>,
    /// The network namespace berthd runs in (dropped after the daemon).
    pub netns: Netns,
    /// berthd runs in the host's namespace (see [`Daemon::start_host_network`]).
    host_net: bool,
}

impl Daemon {
    /// Starts berthd on a fresh data root and waits until it answers.
    #[track_caller]
    pub fn start() -> Daemon {
        let mut d = Daemon::new();
        d.spawn_and_wait();
        d
    }

    /// Starts berthd in the host's network namespace with networking off
    /// (`"bridge": "none"`, `"iptables": false`, `"ip-forward": false`: no
    /// bridge, no firewall, no sysctl), for tests whose daemon must reach
    /// servers on the host's loopback (registries, proxies, token servers).
    #[track_caller]
    pub fn start_host_network() -> Daemon {
        let mut d = Daemon::new();
        d.host_net = true;
        std::fs::write(
            &d.config,
            r#"{"bridge": "none", "iptables": false, "ip-forward": false}"#,
        )
        .expect("write daemon.json");
        d.spawn_and_wait();
        d
    }

    /// [`Daemon::start_host_network`] with `daemon_json` as its config
    /// (which should turn networking off as that one does).
    #[track_caller]
    pub fn with_config_host_network(daemon_json: &str) -> Daemon {
        let mut d = Daemon::new();
        d.host_net = true;
        std::fs::write(&d.config, daemon_json).expect("write daemon.json");
        d.spawn_and_wait();
        d
    }

    /// Starts berthd with `daemon_json` as its config file.
    #[track_caller]
    pub fn with_config(daemon_json: &str) -> Daemon {
        let mut d = Daemon::new();
        std::fs::write(&d.config, daemon_json).expect("write daemon.json");
        d.spawn_and_wait();
        d
    }

    /// The daemon's files, without starting it.
    pub fn new() -> Daemon {
        let dir = crate::short_tempdir("berth-e2e-");
        let base = dir.path().to_path_buf();
        let config = base.join("daemon.json");
        std::fs::write(&config, "{}\n").expect("write daemon.json");
        let docker_config = base.join("docker-config");
        std::fs::create_dir(&docker_config).expect("create DOCKER_CONFIG");
        Daemon {
            root: base.join("root"),
            sock: base.join("s.sock"),
            pidfile: base.join("berthd.pid"),
            log: base.join("berthd.log"),
            config,
            docker_config,
            dir: Some(dir),
            child: None,
            netns: Netns::new("berth-e2e"),
            host_net: false,
        }
    }

    /// The test's scratch directory (parent of the data root).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("directory kept until drop").path()
    }

    /// `dir()/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Writes `bytes` to `dir()/name` and returns the path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// PID of the running daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("berthd is running").id()
    }

    /// Whether the daemon process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A berthd command line for this data root; `sock` and `pidfile` may
    /// differ from this daemon's (for a second daemon on the same root).
    pub fn berthd_command(&self, sock: &Path, pidfile: &Path) -> Command {
        let mut cmd = if self.host_net {
            Command::new(crate::bin("berthd"))
        } else {
            self.netns.command(crate::bin("berthd"))
        };
        cmd.arg("--data-root")
            .arg(&self.root)
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--pidfile")
            .arg(pidfile)
            .arg("--exec-root")
            .arg(self.root.with_file_name("run"))
            .arg("--config-file")
            .arg(&self.config)
            .env_remove("BERTH_LOG")
            .env("RUST_BACKTRACE", "0");
        cmd
    }

    #[track_caller]
    fn spawn_and_wait(&mut self) {
        assert!(self.child.is_none(), "berthd already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open berthd.log");
        let mut cmd = self.berthd_command(&self.sock, &self.pidfile);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn berthd: {e}"));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "berthd exited during startup ({status}); log:\n{}",
                    self.log_text()
                );
            }
            if self.sock.exists() && self.get("/_ping").is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "berthd did not answer /_ping within {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon with SIGTERM (SIGKILL after a timeout) and returns
    /// how it exited (`None` if it was not running).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let pid = rustix::process::Pid::from_child(&c);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let exited = crate::wait_for(STOP_TIMEOUT, || c.try_wait().ok().flatten());
        Some(exited.unwrap_or_else(|| {
            eprintln!(
                "berthd {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                c.id()
            );
            let _ = c.kill();
            c.wait().expect("reap berthd")
        }))
    }

    /// Stops the daemon if it runs (SIGTERM) and starts it again on the
    /// same data root and socket.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait();
    }

    /// Starts the daemon again after [`Daemon::kill9`] or [`Daemon::stop`].
    #[track_caller]
    pub fn start_again(&mut self) {
        self.spawn_and_wait();
    }

    /// Everything berthd wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    // ---- clients ----------------------------------------------------------

    /// A docker CLI command aimed at this daemon (not yet run).
    pub fn docker_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        docker_command(&self.sock, &self.docker_config, args)
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::exec(self.docker_command(args), None)
    }

    /// Runs the docker CLI against this daemon with `input` on stdin.
    pub fn docker_stdin<I, S>(&self, args: I, input: &[u8]) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::exec(self.docker_command(args), Some(input))
    }

    /// The environment and program that make a shell command line talk to
    /// this daemon: `(env, program)` for the docker CLI or the berth CLI.
    pub fn cli_for_shell(&self, docker: bool) -> (Vec<(&'static str, String)>, String) {
        let mut env = vec![
            ("DOCKER_CONFIG", self.docker_config.display().to_string()),
            ("DOCKER_CLI_HINTS", "false".to_string()),
        ];
        if docker {
            env.push(("DOCKER_HOST", format!("unix://{}", self.sock.display())));
            (env, crate::docker_cli().display().to_string())
        } else {
            env.push(("BERTH_HOST", format!("unix://{}", self.sock.display())));
            (env, crate::bin("berth").display().to_string())
        }
    }

    /// A berth CLI command aimed at this daemon (not yet run).
    #[track_caller]
    pub fn berth_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(crate::bin("berth"));
        cmd.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .env_remove("BERTH_HOST")
            .env_remove("DOCKER_HOST")
            .env("DOCKER_CONFIG", &self.docker_config);
        cmd
    }

    /// Runs the berth CLI against this daemon.
    #[track_caller]
    pub fn berth<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::exec(self.berth_command(args), None)
    }

    /// Runs the berth CLI against this daemon with `input` on stdin.
    #[track_caller]
    pub fn berth_stdin<I, S>(&self, args: I, input: &[u8]) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::exec(self.berth_command(args), Some(input))
    }

    /// One raw HTTP request to the API.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        body: Option<(&str, &[u8])>,
    ) -> std::io::Result<Response> {
        http::request(&self.sock, method, target, body)
    }

    /// `GET target`.
    pub fn get(&self, target: &str) -> std::io::Result<Response> {
        self.request("GET", target, None)
    }

    /// `GET target`, which must answer 200 with JSON.
    #[track_caller]
    pub fn get_json(&self, target: &str) -> Value {
        let r = self
            .get(target)
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(r.status, 200, "GET {target}: {}", r.text());
        r.json()
    }

    /// Loads an archive through the API (quicker than a CLI; for setup).
    #[track_caller]
    pub fn api_load(&self, archive: &[u8]) {
        let r = self
            .request(
                "POST",
                "/images/load?quiet=1",
                Some(("application/x-tar", archive)),
            )
            .unwrap_or_else(|e| panic!("POST /images/load: {e}"));
        assert!(
            r.status == 200 && !r.text().contains("errorDetail"),
            "POST /images/load: {} {}",
            r.status,
            r.text()
        );
    }

    /// Removes every image through the API (quicker than a CLI; for setup).
    #[track_caller]
    pub fn api_remove_all(&self) {
        for id in self.image_ids() {
            let r = self
                .request("DELETE", &format!("/images/{id}?force=1"), None)
                .unwrap_or_else(|e| panic!("DELETE /images/{id}: {e}"));
            assert!(
                r.status == 200 || r.status == 404,
                "DELETE /images/{id}: {} {}",
                r.status,
                r.text()
            );
        }
    }

    // ---- state ------------------------------------------------------------

    /// Full IDs of every image (`GET /images/json?all=1`).
    #[track_caller]
    pub fn image_ids(&self) -> Vec<String> {
        let list = self.get_json("/images/json?all=1");
        let mut ids: Vec<String> = list
            .as_array()
            .expect("image list is an array")
            .iter()
            .map(|i| i["Id"].as_str().expect("image has an Id").to_string())
            .collect();
        ids.sort();
        ids
    }

    /// `GET /images/{name}/json`.
    #[track_caller]
    pub fn inspect(&self, name: &str) -> Value {
        self.get_json(&format!("/images/{name}/json"))
    }

    /// What the data root holds now.
    pub fn store(&self) -> StoreState {
        StoreState::read(&self.root)
    }

    /// Asserts the data root holds exactly what the images need: `tmp/` is
    /// empty, `layers/` has one directory per chain ID of the listed
    /// images and nothing else, every image's config blob exists, and with
    /// no images there are no blobs at all. Call it when no request is in
    /// flight.
    #[track_caller]
    pub fn assert_no_garbage(&self) {
        let ids = self.image_ids();
        let state = self.store();
        let mut want_layers = std::collections::BTreeSet::new();
        for id in &ids {
            let img = self.inspect(id);
            let diff_ids: Vec<String> = img["RootFS"]["Layers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for c in chain_ids(&diff_ids) {
                want_layers.insert(hex_of(&c).to_string());
            }
            assert!(
                state.blobs.contains(hex_of(id)),
                "image {id} has no config blob in {}/content/sha256",
                self.root.display()
            );
        }
        assert!(
            state.tmp.is_empty(),
            "{}/tmp is not empty: {:?}",
            self.root.display(),
            state.tmp
        );
        assert_eq!(
            state.layers,
            want_layers,
            "{}/layers does not match the chain IDs of the images {ids:?}",
            self.root.display()
        );
        if ids.is_empty() {
            assert!(
                state.blobs.is_empty(),
                "no images, yet {}/content/sha256 holds {:?}",
                self.root.display(),
                state.blobs
            );
        }
    }

    /// Asserts there are no images and the data root holds no blobs, layers
    /// or staging files.
    #[track_caller]
    pub fn assert_empty(&self) {
        assert_eq!(self.image_ids(), Vec::<String>::new(), "images are left");
        assert_eq!(
            self.docker(["images", "-q"]).ok(),
            "",
            "`docker images -q` is not empty"
        );
        let state = self.store();
        assert!(
            state.is_empty(),
            "the data root {} is not empty: {state:?}",
            self.root.display()
        );
    }
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon::new()
    }
}

impl Daemon {
    /// Ends what the daemon's containers left running (shims outlive berthd
    /// by design): each container's processes and shim by the PIDs its
    /// bundle records, its rootfs mount and its cgroups.
    fn teardown_containers(&self) {
        // Containers' network namespaces are bind mounts under the exec root.
        for ns in std::fs::read_dir(self.root.with_file_name("run").join("netns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new("umount").arg("-l").arg(ns.path()).status();
        }
        let Ok(dirs) = std::fs::read_dir(self.root.join("containers")) else {
            return;
        };
        for d in dirs.flatten() {
            let dir = d.path();
            let id = d.file_name().to_string_lossy().into_owned();
            for f in ["init.pid", "shim.pid"] {
                if let Some(pid) = std::fs::read_to_string(dir.join(f))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            let _ = Command::new("umount")
                .arg("-l")
                .arg(dir.join("rootfs"))
                .status();
            for ctl in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_dir(ctl.path().join("berth").join(&id));
            }
            let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup/berth").join(&id));
        }
        // Volumes with driver options (a tmpfs) mounted for containers
        // that a failed test left behind.
        crate::dockerd::unmount_under(&self.root.join("volumes"));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Some(status) = self.stop()
            && !status.success()
            && !panicking
        {
            eprintln!("berthd exited with {status} on SIGTERM");
        }
        self.teardown_containers();
        if panicking {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "---- berthd log ({}), last {} lines ----",
                self.log.display(),
                tail.len()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(dir) = self.dir.take()
            && crate::keep_tempdirs()
        {
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

/// A docker CLI command against the daemon at `sock`, with its own empty
/// config directory and no inherited daemon selection.
pub(crate) fn docker_command<I, S>(sock: &Path, config: &Path, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(crate::docker_cli());
    cmd.args(args)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CONFIG", config)
        .env("DOCKER_CLI_HINTS", "false")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    cmd
}
