//! A real `dockerd` (Debian's docker.io) for interop tests, on its own data
//! root, exec root and socket, with no bridge and no iptables rules. It
//! starts its own containerd under the exec root.
//!
//! ```text
//! /tmp/berth-e2e-dockerd-XXXXXX/
//!   root/  exec/  d.sock  dockerd.pid  daemon.json  dockerd.log  docker-config/
//! ```

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::run::Run;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running dockerd. Dropping it stops it (SIGTERM, then SIGKILL to it
/// and its containerd), unmounts whatever it left mounted under its
/// directory and removes the directory.
pub struct Dockerd {
    dir: Option<TempDir>,
    pub root: PathBuf,
    pub sock: PathBuf,
    exec_root: PathBuf,
    log: PathBuf,
    docker_config: PathBuf,
    child: Option<Child>,
}

/// Where dockerd is installed, if it is.
pub fn dockerd_binary() -> Option<PathBuf> {
    [
        "/usr/sbin/dockerd",
        "/usr/bin/dockerd",
        "/usr/local/bin/dockerd",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

impl Dockerd {
    /// Starts a dockerd and waits for `/_ping`; `None` (with a message on
    /// stderr) when dockerd is not installed or the tests do not run as root.
    #[track_caller]
    pub fn start() -> Option<Dockerd> {
        Dockerd::start_with_config("{}\n")
    }

    /// [`Dockerd::start`] with `daemon_json` as its config file (e.g.
    /// `{"runtimes": {...}}`).
    #[track_caller]
    pub fn start_with_config(daemon_json: &str) -> Option<Dockerd> {
        let Some(binary) = dockerd_binary() else {
            eprintln!("SKIPPED: dockerd is not installed (apt-get install docker.io)");
            return None;
        };
        if !crate::is_root() {
            eprintln!("SKIPPED: a dockerd needs root");
            return None;
        }
        let dir = crate::short_tempdir("berth-e2e-dockerd-");
        let base = dir.path().to_path_buf();
        let config = base.join("daemon.json");
        std::fs::write(&config, daemon_json).expect("write daemon.json");
        let docker_config = base.join("docker-config");
        std::fs::create_dir(&docker_config).expect("create DOCKER_CONFIG");
        let mut d = Dockerd {
            root: base.join("root"),
            sock: base.join("d.sock"),
            exec_root: base.join("exec"),
            log: base.join("dockerd.log"),
            docker_config,
            dir: Some(dir),
            child: None,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&d.log)
            .expect("open dockerd.log");
        let mut cmd = Command::new(binary);
        cmd.arg("--data-root")
            .arg(&d.root)
            .arg("-H")
            .arg(format!("unix://{}", d.sock.display()))
            .arg("--pidfile")
            .arg(base.join("dockerd.pid"))
            .arg("--exec-root")
            .arg(&d.exec_root)
            .arg("--config-file")
            .arg(&config)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip6tables=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        d.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot spawn dockerd: {e}")),
        );
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                d.child = None;
                panic!(
                    "dockerd exited during startup ({status}); log:\n{}",
                    d.log_text()
                );
            }
            if crate::http::request(&d.sock, "GET", "/_ping", None).is_ok_and(|r| r.status == 200) {
                return Some(d);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd did not answer /_ping within {START_TIMEOUT:?}; log:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The scratch directory (parent of the data root).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("directory kept until drop").path()
    }

    /// `dir()/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Runs the docker CLI against this dockerd.
    pub fn docker<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::exec(
            crate::daemon::docker_command(&self.sock, &self.docker_config, args),
            None,
        )
    }

    /// `(env, program)` that make a shell command line talk to this dockerd
    /// with the docker CLI (for [`crate::Term`]).
    pub fn cli_for_shell(&self) -> (Vec<(&'static str, String)>, String) {
        (
            vec![
                ("DOCKER_HOST", format!("unix://{}", self.sock.display())),
                ("DOCKER_CONFIG", self.docker_config.display().to_string()),
                ("DOCKER_CLI_HINTS", "false".to_string()),
            ],
            crate::docker_cli().display().to_string(),
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&c);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if crate::wait_for(STOP_TIMEOUT, || c.try_wait().ok().flatten()).is_none() {
            eprintln!(
                "dockerd {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                c.id()
            );
            let _ = c.kill();
            let _ = c.wait();
        }
        // The containerd it started exits with it; if dockerd was killed,
        // kill that containerd too (by the PID it recorded, nothing broader).
        let pidfile = self.exec_root.join("containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.as_raw_nonzero()))
                .unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*self.exec_root.to_string_lossy()) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- dockerd log, last {} lines ----", tail.len());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(dir) = self.dir.take() {
            unmount_under(dir.path());
            if crate::keep_tempdirs() {
                eprintln!("kept {}", dir.keep().display());
            }
        }
    }
}

/// Lazily unmounts every mount point at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        if let Err(e) = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH) {
            eprintln!("cannot unmount {}: {e}", p.display());
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(o)) = (b[i], octal) {
            out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            super::unescape_mountinfo(r"/tmp/a\040b"),
            std::path::Path::new("/tmp/a b")
        );
        assert_eq!(
            super::unescape_mountinfo("/plain"),
            std::path::Path::new("/plain")
        );
    }
}
