//! End-to-end tests of the shim binary with real containers (root only;
//! they skip with a message otherwise). Each test builds a busybox bundle
//! in a temporary directory, starts `berth-shim` the way berthd does
//! (readiness pipe, own socket), talks to it over its socket, and tears
//! down every process and cgroup it made, by pid and by path.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_shim::mux;
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use serde_json::{Value, json};

const SHIM: &str = env!("CARGO_BIN_EXE_berth-shim");
const READY_FD: i32 = 100;
const ATTACH_FD: i32 = 101;
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "true", "false", "ls", "stty", "env", "id", "kill", "ps", "tty",
];

macro_rules! require_root {
    () => {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: this test needs root");
            return;
        }
    };
}

#[derive(Default)]
struct Opts {
    tty: bool,
    stdin: bool,
    stdin_once: bool,
    /// The container's end of a socketpair passed as `--attach-fd`, and
    /// the `--attach-streams` value.
    attach: Option<(OwnedFd, &'static str)>,
    extra: Vec<String>,
    /// Socket path instead of `<bundle>/shim.sock`.
    socket: Option<PathBuf>,
    /// A private cgroup namespace.
    cgroupns: bool,
}

struct Container {
    dir: tempfile::TempDir,
    id: String,
    socket: PathBuf,
    cgroup: String,
    ready: Value,
}

fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn busybox_rootfs(root: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

fn write_config(bundle: &Path, args: &[&str], tty: bool, cgroup: &str, cgroupns: bool) {
    let mut spec = Spec::default();
    let root = spec.root_mut().as_mut().unwrap();
    root.set_path(bundle.join("rootfs"));
    root.set_readonly(Some(false));
    let p = spec.process_mut().as_mut().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p.set_env(Some(vec![
        "PATH=/bin:/usr/bin:/sbin:/usr/sbin".into(),
        "TERM=xterm".into(),
    ]));
    p.set_terminal(Some(tty));
    spec.set_hostname(Some("shimtest".into()));
    let linux = spec.linux_mut().as_mut().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from(cgroup)));
    let ns = [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .chain(cgroupns.then_some(LinuxNamespaceType::Cgroup))
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build().unwrap())
    .collect();
    linux.set_namespaces(Some(ns));
    spec.save(bundle.join("config.json")).unwrap();
}

impl Container {
    fn start(args: &[&str], opts: Opts) -> Container {
        Self::start_via(args, opts, false)
    }

    /// Start a shim. With `via_sh` it is started by a `sh` that exits right
    /// after, standing in for a berthd that goes away.
    fn start_via(args: &[&str], opts: Opts, via_sh: bool) -> Container {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().to_path_buf();
        busybox_rootfs(&bundle.join("rootfs"));
        let id = format!("shimtest-{}", unique());
        let cgroup = format!("/berth-test/{id}");
        write_config(&bundle, args, opts.tty, &cgroup, opts.cgroupns);
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| bundle.join("shim.sock"));

        let mut argv: Vec<String> = vec![
            "--id".into(),
            id.clone(),
            "--bundle".into(),
            bundle.display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--ready-fd".into(),
            READY_FD.to_string(),
        ];
        for (on, flag) in [
            (opts.tty, "--tty"),
            (opts.stdin, "--stdin"),
            (opts.stdin_once, "--stdin-once"),
        ] {
            if on {
                argv.push(flag.into());
            }
        }
        if let Some((_, streams)) = &opts.attach {
            argv.extend([
                "--attach-fd".into(),
                ATTACH_FD.to_string(),
                "--attach-streams".into(),
                streams.to_string(),
            ]);
        }
        argv.extend(opts.extra.iter().cloned());

        let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let ready_raw = ready_w.as_raw_fd();
        let attach_raw = opts.attach.as_ref().map(|(fd, _)| fd.as_raw_fd());
        let mut cmd = if via_sh {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg("\"$0\" \"$@\"; exit 0")
                .arg(SHIM)
                .args(&argv);
            c
        } else {
            let mut c = Command::new(SHIM);
            c.args(&argv);
            c
        };
        cmd.stdin(Stdio::null());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec;
        // dup2 clears close-on-exec on the copies the shim inherits.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(ready_raw, READY_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(a) = attach_raw
                    && libc::dup2(a, ATTACH_FD) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(ready_w);
        drop(opts.attach);
        // The process we started returns as soon as the shim daemonized.
        let status = child.wait().unwrap();
        let mut line = String::new();
        fs::File::from(ready_r).read_to_string(&mut line).unwrap();
        assert!(
            status.success(),
            "shim launcher failed: {status:?}, ready: {line}"
        );
        let ready: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            panic!(
                "bad readiness line {line:?}: {e}; shim.log: {}",
                fs::read_to_string(bundle.join("shim.log")).unwrap_or_default()
            )
        });
        Container {
            dir,
            id,
            socket,
            cgroup,
            ready,
        }
    }

    fn bundle(&self) -> &Path {
        self.dir.path()
    }

    fn init_pid(&self) -> i32 {
        self.ready["pid"].as_i64().expect("container did not start") as i32
    }

    fn shim_pid(&self) -> Option<i32> {
        fs::read_to_string(self.bundle().join("shim.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Open a connection, send `req`, read the one answer line.
    fn connect(&self, req: Value) -> (UnixStream, Value) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        s.write_all(&line).unwrap();
        let mut resp = Vec::new();
        let mut b = [0u8; 1];
        loop {
            let n = s.read(&mut b).unwrap();
            assert_eq!(n, 1, "connection closed before an answer to {req}");
            if b[0] == b'\n' {
                break;
            }
            resp.push(b[0]);
        }
        (s, serde_json::from_slice(&resp).unwrap())
    }

    fn request(&self, req: Value) -> Value {
        self.connect(req).1
    }

    fn wait(&self) -> Value {
        self.request(json!({"op": "wait"}))
    }

    fn log(&self) -> Vec<Value> {
        let path = self.bundle().join(format!("{}-json.log", self.id));
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn log_text(&self, stream: &str) -> String {
        self.log()
            .iter()
            .filter(|e| e["stream"] == stream)
            .map(|e| e["log"].as_str().unwrap().to_string())
            .collect()
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                dirs.push(e.path().join(self.cgroup.trim_start_matches('/')));
            }
        }
        dirs.push(Path::new("/sys/fs/cgroup").join(self.cgroup.trim_start_matches('/')));
        dirs.into_iter().filter(|d| d.is_dir()).collect()
    }

    fn wait_shim_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.socket.exists() && self.shim_pid().is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

fn is_shim(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.windows(10).any(|w| w == b"berth-shim"))
        .unwrap_or(false)
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(pid) = self.ready["pid"].as_i64() {
            // The init is a child of the shim; only signal it while the
            // shim that owns it still runs (so the pid cannot be reused).
            if self.shim_pid().is_some_and(is_shim) {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
        }
        if let Some(pid) = self.shim_pid()
            && is_shim(pid)
        {
            // Give it a moment to record the exit, then make sure.
            std::thread::sleep(Duration::from_millis(300));
            if is_shim(pid) {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
        }
        for d in self.cgroup_dirs() {
            let _ = fs::remove_dir(&d);
            if let Some(parent) = d.parent() {
                let _ = fs::remove_dir(parent); // /berth-test, if now empty
            }
        }
    }
}

fn read_to_end(mut s: UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn echo_is_logged_and_wait_returns_zero() {
    require_root!();
    let c = Container::start(&["echo", "hello"], Opts::default());
    assert!(c.init_pid() > 0);
    let w = c.wait();
    assert_eq!(w["exit_code"], 0, "{w}");
    assert_eq!(w["oom_killed"], false);
    assert!(w["finished_at"].as_str().unwrap().ends_with('Z'));
    let log = c.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["log"], "hello\n");
    assert_eq!(log[0]["stream"], "stdout");
    assert!(log[0]["time"].as_str().unwrap().contains('T'));
    let exit: Value =
        serde_json::from_slice(&fs::read(c.bundle().join("exit.json")).unwrap()).unwrap();
    assert_eq!(exit, w);
    let pid: i32 = fs::read_to_string(c.bundle().join("init.pid"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pid, c.init_pid());
    // After its first waiter is answered and nobody is connected, the shim
    // leaves, and its cgroup is gone.
    assert!(
        c.wait_shim_gone(Duration::from_secs(5)),
        "shim did not exit"
    );
    assert!(
        c.cgroup_dirs().is_empty(),
        "cgroup left: {:?}",
        c.cgroup_dirs()
    );
}

#[test]
fn exit_code_and_state_are_recorded() {
    require_root!();
    let c = Container::start(&["sh", "-c", "echo oops >&2; exit 3"], Opts::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = c.request(json!({"op": "state"}));
        if st["running"] == false || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["exit_code"], 3);
    assert_eq!(st["pid"], c.init_pid());
    assert!(st["finished_at"].is_string());
    assert_eq!(c.wait()["exit_code"], 3);
    assert_eq!(c.log_text("stderr"), "oops\n");
    let exit: Value =
        serde_json::from_slice(&fs::read(c.bundle().join("exit.json")).unwrap()).unwrap();
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(c.request(json!({"op": "shutdown"}))["ok"], true);
    assert!(c.wait_shim_gone(Duration::from_secs(5)));
}

#[test]
fn shutdown_right_after_exit_still_cleans_up() {
    require_root!();
    let c = Container::start(&["true"], Opts::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.request(json!({"op": "state"}))["running"] != false {
        assert!(Instant::now() < deadline, "container did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    // No wait: berthd read the state (as on re-adoption) and lets go.
    assert_eq!(c.request(json!({"op": "shutdown"}))["ok"], true);
    assert!(
        c.wait_shim_gone(Duration::from_secs(10)),
        "shim did not exit"
    );
    assert!(
        c.cgroup_dirs().is_empty(),
        "cgroup left: {:?}",
        c.cgroup_dirs()
    );
    let exit: Value =
        serde_json::from_slice(&fs::read(c.bundle().join("exit.json")).unwrap()).unwrap();
    assert_eq!(exit["exit_code"], 0);
}

#[test]
fn attach_streams_multiplexed_output() {
    require_root!();
    let c = Container::start(
        &["sh", "-c", "sleep 1; echo out; echo err >&2; echo more"],
        Opts::default(),
    );
    let (s, r) = c.connect(json!({"op": "attach", "stdout": true, "stderr": true}));
    assert_eq!(r["ok"], true);
    let raw = read_to_end(s);
    assert_eq!(raw[0], mux::STDOUT, "not framed: {raw:?}");
    let (out, err) = mux::demux_all(&raw);
    assert_eq!(String::from_utf8_lossy(&out), "out\nmore\n");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
    assert_eq!(c.wait()["exit_code"], 0);
    // Attaching to an exited container is refused.
    let r = c.request(json!({"op": "attach", "stdout": true}));
    assert!(r["error"].as_str().unwrap().contains("not running"), "{r}");
}

#[test]
fn attach_fd_sees_output_from_the_first_byte() {
    require_root!();
    let (mine, theirs) = UnixStream::pair().unwrap();
    let c = Container::start(
        &["sh", "-c", "echo first; echo second >&2"],
        Opts {
            attach: Some((OwnedFd::from(theirs), "stdout,stderr")),
            ..Default::default()
        },
    );
    mine.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (out, err) = mux::demux_all(&read_to_end(mine));
    assert_eq!(String::from_utf8_lossy(&out), "first\n");
    assert_eq!(String::from_utf8_lossy(&err), "second\n");
    assert_eq!(c.wait()["exit_code"], 0);
}

#[test]
fn stdin_is_forwarded_and_half_close_ends_it() {
    require_root!();
    let c = Container::start(
        &["cat"],
        Opts {
            stdin: true,
            stdin_once: true,
            ..Default::default()
        },
    );
    let (mut s, r) =
        c.connect(json!({"op": "attach", "stdin": true, "stdout": true, "stderr": true}));
    assert_eq!(r["ok"], true);
    s.write_all(b"ping\n").unwrap();
    s.write_all(b"pong\n").unwrap();
    // Half-close: stdin ends (stdin-once closes the container's stdin, so
    // cat exits), output keeps flowing until the container is gone.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (out, _) = mux::demux_all(&read_to_end(s));
    assert_eq!(String::from_utf8_lossy(&out), "ping\npong\n");
    assert_eq!(c.wait()["exit_code"], 0);
    assert_eq!(c.log_text("stdout"), "ping\npong\n");
}

#[test]
fn without_stdin_once_half_close_keeps_stdin_open() {
    require_root!();
    let c = Container::start(
        &["cat"],
        Opts {
            stdin: true,
            ..Default::default()
        },
    );
    let (mut s, _) = c.connect(json!({"op": "attach", "stdin": true}));
    s.write_all(b"a\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.request(json!({"op": "state"}))["running"], true);
    let (mut s, _) = c.connect(json!({"op": "attach", "stdin": true, "stdout": true}));
    s.write_all(b"b\n").unwrap();
    let mut frame = [0u8; 10];
    s.read_exact(&mut frame).unwrap();
    assert_eq!(mux::demux_all(&frame).0, b"b\n");
    // (cat is PID 1 of its namespace: SIGTERM without a handler is ignored.)
    assert_eq!(c.request(json!({"op": "kill", "signal": 9}))["ok"], true);
    assert_eq!(read_to_end(s), b"");
    assert_eq!(c.log_text("stdout"), "a\nb\n");
    assert_eq!(c.wait()["exit_code"], 137);
}

#[test]
fn tty_with_resize() {
    require_root!();
    let c = Container::start(
        &["sh"],
        Opts {
            tty: true,
            stdin: true,
            ..Default::default()
        },
    );
    assert_eq!(
        c.request(json!({"op": "resize", "height": 41, "width": 113}))["ok"],
        true
    );
    let (mut s, r) =
        c.connect(json!({"op": "attach", "stdin": true, "stdout": true, "stderr": true}));
    assert_eq!(r["ok"], true);
    s.write_all(b"stty size; tty; echo done; exit 7\n").unwrap();
    let out = String::from_utf8_lossy(&read_to_end(s)).to_string();
    // Raw tty bytes (no framing), with the tty's \r\n.
    assert!(out.contains("41 113\r\n"), "{out:?}");
    assert!(out.contains("/dev/"), "{out:?}");
    assert!(out.contains("done\r\n"), "{out:?}");
    assert_eq!(c.wait()["exit_code"], 7);
    assert!(c.log_text("stdout").contains("41 113\r\n"));
    // No pty, no resize.
    let c2 = Container::start(&["true"], Opts::default());
    let r = c2.request(json!({"op": "resize", "height": 1, "width": 1}));
    assert!(r["error"].is_string() || r["exit_code"].is_number(), "{r}");
    c2.wait();
}

#[test]
fn kill_with_sigkill_records_137() {
    require_root!();
    let c = Container::start(&["sleep", "100"], Opts::default());
    let st = c.request(json!({"op": "state"}));
    assert_eq!(st["running"], true);
    assert_eq!(st["pid"], c.init_pid());
    // SIGTERM to the shim itself is ignored while the container runs.
    let shim = c.shim_pid().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(shim).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(is_shim(shim));
    assert_eq!(c.request(json!({"op": "state"}))["running"], true);
    assert_eq!(c.request(json!({"op": "kill", "signal": 9}))["ok"], true);
    let w = c.wait();
    assert_eq!(w["exit_code"], 137);
    let r = c.request(json!({"op": "kill", "signal": 9}));
    assert!(r["error"].as_str().unwrap().contains("not running"));
}

#[test]
fn pause_and_resume() {
    require_root!();
    let c = Container::start(&["sleep", "100"], Opts::default());
    assert_eq!(c.request(json!({"op": "pause"}))["ok"], true);
    let st = c.request(json!({"op": "state"}));
    assert_eq!(
        (st["running"].clone(), st["paused"].clone()),
        (json!(true), json!(true))
    );
    let stat = fs::read_to_string(format!("/proc/{}/stat", c.init_pid())).unwrap();
    let state = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(
        state == "D" || state == "S" || state == "T",
        "init state {state}"
    );
    let p =
        json!({"args": ["true"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    let r = c.request(json!({"op": "exec", "exec_id": "x", "process": p, "detach": true}));
    assert!(r["error"].as_str().unwrap().contains("paused"), "{r}");
    assert_eq!(c.request(json!({"op": "resume"}))["ok"], true);
    assert_eq!(c.request(json!({"op": "state"}))["paused"], false);
    c.request(json!({"op": "kill", "signal": 9}));
    assert_eq!(c.wait()["exit_code"], 137);
    let r = c.request(json!({"op": "pause"}));
    assert!(r["error"].as_str().unwrap().contains("not running"), "{r}");
}

#[test]
fn several_waiters_are_all_answered() {
    require_root!();
    let c = Container::start(&["sleep", "1"], Opts::default());
    let (s1, s2) = (
        UnixStream::connect(&c.socket).unwrap(),
        UnixStream::connect(&c.socket).unwrap(),
    );
    for mut s in [&s1, &s2] {
        s.write_all(b"{\"op\":\"wait\"}\n").unwrap();
    }
    for s in [s1, s2] {
        let v: Value = serde_json::from_slice(&read_to_end(s)).unwrap();
        assert_eq!(v["exit_code"], 0);
    }
}

#[test]
fn exec_into_a_running_container() {
    require_root!();
    let c = Container::start(&["sleep", "100"], Opts::default());
    let process = json!({"args": ["sh", "-c", "echo hi; echo ho >&2; exit 4"], "cwd": "/",
                         "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    let (s, r) = c.connect(json!({"op": "exec", "exec_id": "e1", "process": process,
                                  "stdout": true, "stderr": true}));
    assert!(r["pid"].as_i64().is_some_and(|p| p > 0), "{r}");
    let (out, err) = mux::demux_all(&read_to_end(s));
    assert_eq!(String::from_utf8_lossy(&out), "hi\n");
    assert_eq!(String::from_utf8_lossy(&err), "ho\n");
    let st = c.request(json!({"op": "exec_state", "exec_id": "e1"}));
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["exit_code"], 4);
    assert_eq!(st["pid"], r["pid"]);
    // Exec output is not the container's log.
    assert_eq!(c.log(), Vec::<Value>::new());

    // Detached exec: answered at once, state polled.
    let p2 = json!({"args": ["sh", "-c", "sleep 0.3; exit 5"], "cwd": "/", "env": ["PATH=/bin"],
                    "user": {"uid": 0, "gid": 0}});
    let r = c.request(json!({"op": "exec", "exec_id": "e2", "process": p2, "detach": true}));
    assert!(r["pid"].as_i64().is_some_and(|p| p > 0), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.request(json!({"op": "exec_state", "exec_id": "e2"}));
        if st["running"] == false {
            assert_eq!(st["exit_code"], 5);
            break;
        }
        assert!(Instant::now() < deadline, "exec e2 did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A missing binary is 127, a duplicate id an error.
    let p3 = json!({"args": ["/no/such/binary"], "cwd": "/", "user": {"uid": 0, "gid": 0}});
    let r = c.request(json!({"op": "exec", "exec_id": "e3", "process": p3, "stdout": true}));
    assert_eq!(r["exit_code"], 127, "{r}");
    let r = c.request(json!({"op": "exec", "exec_id": "e1", "process": process}));
    assert!(r["error"].as_str().unwrap().contains("exists"), "{r}");
    let r = c.request(json!({"op": "exec_state", "exec_id": "nope"}));
    assert!(r["error"].is_string());

    // Exec with a tty and stdin, resized.
    let p4 =
        json!({"args": ["sh"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    let (mut s, r) = c.connect(
        json!({"op": "exec", "exec_id": "e4", "process": p4, "tty": true,
                                      "stdin": true, "stdout": true, "stderr": true}),
    );
    assert!(r["pid"].as_i64().is_some(), "{r}");
    let rr = c.request(json!({"op": "exec_resize", "exec_id": "e4", "height": 12, "width": 34}));
    assert_eq!(rr["ok"], true, "{rr}");
    s.write_all(b"stty size; exit 0\n").unwrap();
    let out = String::from_utf8_lossy(&read_to_end(s)).to_string();
    assert!(out.contains("12 34\r\n"), "{out:?}");

    assert_eq!(c.request(json!({"op": "state"}))["running"], true);
    c.request(json!({"op": "kill", "signal": 9}));
    assert_eq!(c.wait()["exit_code"], 137);
}

/// Whether every line of /proc/<pid>/cgroup (every hierarchy, v1 and v2)
/// ends in `path`; the file's text otherwise.
fn in_cgroup_everywhere(text: &str, path: &str) -> Result<(), String> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    if text.lines().count() != own.lines().count() {
        return Err(format!("not every hierarchy of\n{own}\nis listed:\n{text}"));
    }
    if text.lines().all(|l| l.ends_with(&format!(":{path}"))) {
        Ok(())
    } else {
        Err(format!("not everywhere in {path}:\n{text}"))
    }
}

#[test]
fn init_and_exec_processes_are_in_the_container_cgroup_everywhere() {
    require_root!();
    // The shim is single-threaded, so the runtime clones these processes
    // straight into the v2 cgroup (CLONE_INTO_CGROUP) and they join each
    // v1 hierarchy themselves, before the cgroup namespace is made.
    let c = Container::start(
        &["sleep", "100"],
        Opts {
            cgroupns: true,
            ..Default::default()
        },
    );
    let p = json!({"args": ["sleep", "100"], "cwd": "/", "env": ["PATH=/bin"],
                   "user": {"uid": 0, "gid": 0}});
    let r = c.request(json!({"op": "exec", "exec_id": "s", "process": p, "detach": true}));
    let exec_pid = r["pid"].as_i64().unwrap_or_else(|| panic!("{r}"));
    for pid in [i64::from(c.init_pid()), exec_pid] {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        if let Err(e) = in_cgroup_everywhere(&text, &c.cgroup) {
            panic!("pid {pid}: {e}");
        }
    }
    // Every hierarchy's cgroup.procs lists both (what stats and top read).
    let dirs = c.cgroup_dirs();
    assert!(!dirs.is_empty());
    for d in &dirs {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap();
        for pid in [i64::from(c.init_pid()), exec_pid] {
            assert!(
                procs.lines().any(|l| l == pid.to_string()),
                "{pid} not in {}: {procs}",
                d.display()
            );
        }
    }
    // Inside, through the container's cgroup namespace, both are at its
    // root: the namespace was made (or joined) only once they were in.
    let p = json!({"args": ["cat", "/proc/self/cgroup", "/proc/1/cgroup"], "cwd": "/",
                   "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    let (s, r) = c.connect(json!({"op": "exec", "exec_id": "c", "process": p, "stdout": true}));
    assert!(r["pid"].as_i64().is_some(), "{r}");
    let (out, _) = mux::demux_all(&read_to_end(s));
    let out = String::from_utf8_lossy(&out).to_string();
    assert!(!out.is_empty());
    assert!(out.lines().all(|l| l.ends_with(":/")), "{out}");
    c.request(json!({"op": "kill", "signal": 9}));
    assert_eq!(c.wait()["exit_code"], 137);
    assert!(
        c.wait_shim_gone(Duration::from_secs(5)),
        "shim did not exit"
    );
    assert!(
        c.cgroup_dirs().is_empty(),
        "cgroup left: {:?}",
        c.cgroup_dirs()
    );
}

#[test]
fn shim_outlives_the_process_that_started_it() {
    require_root!();
    let c = Container::start_via(
        &["cat"],
        Opts {
            stdin: true,
            ..Default::default()
        },
        true,
    );
    let shim = c.shim_pid().unwrap();
    assert!(is_shim(shim));
    let stat = fs::read_to_string(format!("/proc/{shim}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let (ppid, pgrp, session): (i32, i32, i32) = (
        fields[1].parse().unwrap(),
        fields[2].parse().unwrap(),
        fields[3].parse().unwrap(),
    );
    let me = std::process::id() as i32;
    assert_ne!(ppid, me);
    let my_stat = fs::read_to_string("/proc/self/stat").unwrap();
    let my_fields: Vec<&str> = my_stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_ne!(
        pgrp.to_string(),
        my_fields[2],
        "shim shares our process group"
    );
    assert_ne!(session.to_string(), my_fields[3], "shim shares our session");
    // Its own stdio is /dev/null and shim.log, not ours.
    assert_eq!(
        fs::read_link(format!("/proc/{shim}/fd/0")).unwrap(),
        Path::new("/dev/null")
    );
    assert_eq!(
        fs::read_link(format!("/proc/{shim}/cwd")).unwrap(),
        Path::new("/")
    );
    // Still attachable.
    let (mut s, r) = c.connect(json!({"op": "attach", "stdin": true, "stdout": true}));
    assert_eq!(r["ok"], true);
    s.write_all(b"still here\n").unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 8 + 11 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(mux::demux_all(&got).0, b"still here\n");
    drop(s);
    c.request(json!({"op": "kill", "signal": 9}));
    assert_eq!(c.wait()["exit_code"], 137);
}

#[test]
fn a_lingering_shim_leaves_its_successors_socket_alone() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("c.sock");
    let old = Container::start(
        &["true"],
        Opts {
            socket: Some(socket.clone()),
            ..Default::default()
        },
    );
    assert_eq!(old.wait()["exit_code"], 0);
    let old_shim = old.shim_pid().unwrap();
    // A restart: the next shim binds the same path while the old one still
    // lingers for a moment after its wait was answered.
    let new = Container::start(
        &["sleep", "100"],
        Opts {
            socket: Some(socket.clone()),
            ..Default::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_shim(old_shim) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_shim(old_shim), "old shim did not exit");
    assert!(
        socket.exists(),
        "the old shim removed the new shim's socket"
    );
    assert_eq!(new.request(json!({"op": "state"}))["running"], true);
    new.request(json!({"op": "kill", "signal": 9}));
    assert_eq!(new.wait()["exit_code"], 137);
}

#[test]
fn start_failure_is_reported_on_the_ready_fd() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(&dir.path().join("rootfs"));
    let id = format!("shimtest-{}", unique());
    write_config(
        dir.path(),
        &["/no/such/binary"],
        false,
        &format!("/berth-test/{id}"),
        false,
    );
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let wraw = w.as_raw_fd();
    let mut cmd = Command::new(SHIM);
    cmd.args(["--id", &id, "--bundle"])
        .arg(dir.path())
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--ready-fd", &READY_FD.to_string()])
        .stdin(Stdio::null());
    // SAFETY: dup2 only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wraw, READY_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap().wait().unwrap();
    drop(w);
    let mut line = String::new();
    fs::File::from(r).read_to_string(&mut line).unwrap();
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["exit_code"], 127, "{v}");
    assert!(v["error"].is_string());
    assert!(!dir.path().join("s.sock").exists());
    // Clean up a cgroup the runtime may have left.
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let _ = fs::remove_dir(Path::new(base).join("berth-test").join(&id));
    }
}

#[test]
fn log_rotation_in_a_real_container() {
    require_root!();
    let c = Container::start(
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done",
        ],
        Opts {
            extra: vec![
                "--log-max-size".into(),
                "2k".into(),
                "--log-max-file".into(),
                "3".into(),
            ],
            ..Default::default()
        },
    );
    assert_eq!(c.wait()["exit_code"], 0);
    let base = c.bundle().join(format!("{}-json.log", c.id));
    let mut all = Vec::new();
    for suffix in [".2", ".1", ""] {
        let p = PathBuf::from(format!("{}{suffix}", base.display()));
        let meta = fs::metadata(&p).unwrap();
        assert!(
            meta.len() <= 2048,
            "{} is {} bytes",
            p.display(),
            meta.len()
        );
        for l in fs::read_to_string(&p).unwrap().lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            all.push(v["log"].as_str().unwrap().to_string());
        }
    }
    assert!(!PathBuf::from(format!("{}.3", base.display())).exists());
    // The newest lines survive, in order, up to the last one.
    assert_eq!(all.last().unwrap(), "line199\n");
    let first: usize = all[0].trim_start_matches("line").trim().parse().unwrap();
    for (k, l) in all.iter().enumerate() {
        assert_eq!(l, &format!("line{}\n", first + k));
    }
}

#[test]
fn no_log_writes_no_log() {
    require_root!();
    let c = Container::start(
        &["echo", "quiet"],
        Opts {
            extra: vec!["--no-log".into()],
            ..Default::default()
        },
    );
    assert_eq!(c.wait()["exit_code"], 0);
    assert!(!c.bundle().join(format!("{}-json.log", c.id)).exists());
}

#[test]
fn version_and_bad_requests() {
    require_root!();
    let c = Container::start(&["sleep", "100"], Opts::default());
    let v = c.request(json!({"op": "version"}));
    assert_eq!(v["protocol"], 1);
    let e = c.request(json!({"op": "fly"}));
    assert!(
        e["error"].as_str().unwrap().contains("unknown variant"),
        "{e}"
    );
    let e = c.request(json!({"op": "shutdown"}));
    assert!(e["error"].as_str().unwrap().contains("running"), "{e}");
    c.request(json!({"op": "kill", "signal": 9}));
    c.wait();
}

/// VmRSS and Pss of a shim holding a running `sleep`; printed for the
/// report (run with --nocapture), bounded loosely so regressions show.
#[test]
fn memory_of_a_shim_holding_sleep() {
    require_root!();
    let c = Container::start(&["sleep", "100"], Opts::default());
    // Let it settle into its loop, and exercise a request.
    c.request(json!({"op": "state"}));
    std::thread::sleep(Duration::from_millis(200));
    let pid = c.shim_pid().unwrap();
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb = |key: &str| -> u64 {
        rollup
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let vmrss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .to_string();
    eprintln!(
        "shim {pid}: {vmrss}; Rss {} kB, Pss {} kB, Pss_Anon {} kB, Pss_File {} kB",
        kb("Rss:"),
        kb("Pss:"),
        kb("Pss_Anon:"),
        kb("Pss_File:")
    );
    assert!(kb("Pss:") < 4096, "shim Pss {} kB", kb("Pss:"));
    c.request(json!({"op": "kill", "signal": 9}));
    c.wait();
}
