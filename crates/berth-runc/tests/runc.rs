//! berth-runc driven directly with OCI bundles, as an engine drives it:
//! the create/start/state/kill/delete lifecycle, run, exec with and without
//! a terminal (console socket), hooks, pause/resume, errors.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: berth-runc tests need root");
            return;
        }
    };
}

/// A temporary directory with a busybox bundle and a state root.
struct Env {
    dir: tempfile::TempDir,
    /// cgroup parent of this test's containers (removed on drop).
    cgroup: String,
}

impl Env {
    fn new(args: Value) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-runc-")
            .tempdir()
            .unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let tar = berth_fixtures::rootfs::busybox_rootfs_tar().unwrap();
        tar::Archive::new(&tar[..])
            .unpack(bundle.join("rootfs"))
            .unwrap();
        let cgroup = format!("/berth-runc-test-{}", std::process::id());
        let env = Env { dir, cgroup };
        env.write_spec(args, |_| {});
        env
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A config.json as `runc spec` makes it, with `args`, then `edit`.
    fn write_spec(&self, args: Value, edit: impl FnOnce(&mut Value)) {
        let out = Command::new(env!("CARGO_BIN_EXE_berth-runc"))
            .args(["features"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "runc",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        });
        spec["linux"]["cgroupsPath"] = json!(format!("{}/{}", self.cgroup, rand_id()));
        edit(&mut spec);
        std::fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
    }

    fn runc(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth-runc"));
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .current_dir(self.bundle())
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.runc(args);
        assert!(
            out.status.success(),
            "berth-runc {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command that leaves a container running: the container inherits
    /// berth-runc's stdio (as from an engine), so it gets files, not the
    /// pipes `output()` would wait on.
    fn ok_detached(&self, args: &[&str]) {
        let out = std::fs::File::create(self.dir.path().join("detached.out")).unwrap();
        let err_path = self.dir.path().join("detached.err");
        let err = std::fs::File::create(&err_path).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_berth-runc"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .current_dir(self.bundle())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "berth-runc {args:?}: {status}\n{}",
            std::fs::read_to_string(err_path).unwrap_or_default()
        );
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever a failed test left: kill and delete every container.
        if let Ok(dir) = std::fs::read_dir(self.root()) {
            for e in dir.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.runc(&["delete", "--force", &id]);
            }
        }
        // The parent cgroup the runtime made on the way, in every
        // hierarchy the host has (whatever their names) and on pure v2.
        let root = Path::new("/sys/fs/cgroup");
        let hierarchies = std::fs::read_dir(root).into_iter().flatten().flatten();
        for h in hierarchies.map(|e| e.path()).chain([root.to_path_buf()]) {
            let _ = std::fs::remove_dir(h.join(self.cgroup.trim_start_matches('/')));
        }
    }
}

fn rand_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "c{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn create_start_state_kill_delete() {
    require_root!();
    let env = Env::new(json!(["sleep", "100"]));
    let pidfile = env.dir.path().join("pid");
    env.ok_detached(&[
        "create",
        "--bundle",
        ".",
        "--pid-file",
        pidfile.to_str().unwrap(),
        "c1",
    ]);
    let st = env.state("c1");
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(
        st["bundle"],
        env.bundle().canonicalize().unwrap().to_str().unwrap()
    );
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), pid.to_string());
    // Created: the init exists but has not exec'd `sleep` yet.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");
    // A second create with the same ID is refused.
    let out = env.runc(&["create", "c1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("container with id exists: c1"));

    env.ok(&["start", "c1"]);
    assert_eq!(env.state("c1")["status"], "running");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    let list = env.ok(&["list"]);
    assert!(
        list.starts_with("ID") && list.contains("c1") && list.contains("running"),
        "{list}"
    );
    let listed: Value = serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(listed[0]["id"], "c1");
    let pids: Vec<i64> = serde_json::from_str(&env.ok(&["ps", "--format", "json", "c1"])).unwrap();
    assert_eq!(pids, vec![pid]);

    let ev: Value = serde_json::from_str(&env.ok(&["events", "--stats", "c1"])).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["data"]["pids"]["current"], 1, "{ev}");
    assert!(
        ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{ev}"
    );

    // A running container cannot be deleted without --force.
    let out = env.runc(&["delete", "c1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("that is not stopped: running"));
    env.ok(&["pause", "c1"]);
    assert_eq!(env.state("c1")["status"], "paused");
    env.ok(&["resume", "c1"]);
    assert_eq!(env.state("c1")["status"], "running");

    env.ok(&["kill", "c1", "KILL"]);
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(env.state("c1")["status"], "stopped");
    env.ok(&["delete", "c1"]);
    let out = env.runc(&["state", "c1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("container c1 does not exist"));
    // delete --force of what does not exist is no error, as runc.
    env.ok(&["delete", "--force", "c1"]);
}

#[test]
fn run_exits_with_the_container_code_and_missing_executables_fail_create() {
    require_root!();
    let env = Env::new(json!([
        "sh",
        "-c",
        "echo out; echo err >&2; hostname; exit 3"
    ]));
    let out = env.runc(&["run", "r1"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\nrunc\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert!(!env.root().join("r1").exists(), "run deletes its container");

    env.write_spec(json!(["nosuchcmd"]), |_| {});
    let log = env.dir.path().join("log.json");
    let out = env.runc(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "r2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "{err}"
    );
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"]
            .as_str()
            .unwrap()
            .contains("executable file not found")
    );
    assert!(
        !env.root().join("r2").exists(),
        "a failed create leaves nothing"
    );
}

/// Accept one console-socket connection and return the pty master it got.
fn receive_master(listener: &UnixListener) -> OwnedFd {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let (conn, _) = listener.accept().unwrap();
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut body = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut body)];
    recvmsg(&conn, &mut iov, &mut anc, RecvFlags::empty()).unwrap();
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            return fds.next().unwrap();
        }
    }
    panic!("no fd on the console socket");
}

fn read_all(master: OwnedFd) -> String {
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // EIO once the last slave is closed.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn exec_with_and_without_a_terminal() {
    require_root!();
    let env = Env::new(json!(["sleep", "100"]));
    env.ok_detached(&["run", "-d", "e1"]);
    let out = env.runc(&["exec", "e1", "sh", "-c", "echo $$; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    // A terminal: the pty master arrives over the console socket, and the
    // process sees a tty of the container's own devpts.
    let sock = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let root = env.root();
    let sock_s = sock.to_str().unwrap().to_string();
    let child = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_berth-runc"))
            .arg("--root")
            .arg(root)
            .args([
                "exec",
                "-t",
                "--console-socket",
                &sock_s,
                "e1",
                "sh",
                "-c",
                "tty; exit 7",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    let master = receive_master(&listener);
    let out = child.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read_all(master);
    assert!(text.contains("/dev/pts/0"), "{text:?}");

    // -d with a process JSON and a pid file.
    let process = env.dir.path().join("process.json");
    std::fs::write(
        &process,
        json!({"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["sleep", "50"], "cwd": "/", "env": ["PATH=/bin"]}).to_string(),
    )
    .unwrap();
    let pidfile = env.dir.path().join("exec.pid");
    env.ok_detached(&[
        "exec",
        "--process",
        process.to_str().unwrap(),
        "-d",
        "--pid-file",
        pidfile.to_str().unwrap(),
        "e1",
    ]);
    let pid: i64 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert!(alive(pid));
    let pids: Vec<i64> = serde_json::from_str(&env.ok(&["ps", "--format", "json", "e1"])).unwrap();
    assert!(pids.contains(&pid), "{pids:?}");
    env.ok(&["kill", "--all", "e1", "KILL"]);
    env.ok(&["delete", "--force", "e1"]);
}

#[test]
fn terminal_init_through_the_console_socket() {
    require_root!();
    let env = Env::new(json!(["sh", "-c", "tty; echo hi"]));
    env.write_spec(json!(["sh", "-c", "tty; echo hi"]), |s| {
        s["process"]["terminal"] = json!(true)
    });
    let out = env.runc(&["create", "t1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("console socket"),
        "a terminal needs a console socket"
    );
    let sock = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let root = env.root();
    let bundle = env.bundle();
    let sock_s = sock.to_str().unwrap().to_string();
    let child = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_berth-runc"))
            .arg("--root")
            .arg(root)
            .args(["create", "--console-socket", &sock_s, "--bundle"])
            .arg(bundle)
            .arg("t1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    let master = receive_master(&listener);
    let out = child.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["start", "t1"]);
    let text = read_all(master);
    assert!(
        text.contains("/dev/console") && text.contains("hi"),
        "{text:?}"
    );
    env.ok(&["delete", "--force", "t1"]);
}

#[test]
fn hooks_get_the_state_and_a_failing_prestart_fails_create() {
    require_root!();
    let env = Env::new(json!(["true"]));
    let out_dir = env.dir.path().to_path_buf();
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json", out_dir.display())]});
    env.write_spec(json!(["sleep", "100"]), |s| {
        s["hooks"] = json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
    });
    env.ok_detached(&["create", "h1"]);
    let pre: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("prestart.json")).unwrap())
            .unwrap();
    assert_eq!(pre["id"], "h1");
    assert_eq!(pre["status"], "created");
    assert!(pre["pid"].as_i64().unwrap() > 0);
    assert!(out_dir.join("createRuntime.json").exists());
    env.ok(&["start", "h1"]);
    let post: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("poststart.json")).unwrap())
            .unwrap();
    assert_eq!(post["status"], "running");
    env.ok(&["delete", "--force", "h1"]);
    assert!(out_dir.join("poststop.json").exists());

    env.write_spec(json!(["sleep", "100"]), |s| {
        s["hooks"] = json!({"prestart": [{"path": "/bin/false"}]});
    });
    let out = env.runc(&["create", "h2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prestart hook /bin/false failed"));
    assert!(!env.root().join("h2").exists());
}
