//! End-to-end tests of the container commands: each test starts its own
//! berthd (next to the berth binary in the target directory) on a temporary
//! data root, loads the busybox fixture, and drives the `berth` binary.
//! They skip (with a message) unless run as root with berthd and berth-shim
//! built (`cargo build -p berthd -p berth-shim`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    for b in ["berthd", "berth-shim"] {
        if !bin_dir().join(b).exists() {
            return Some(format!(
                "{} does not exist (cargo build -p {b})",
                bin_dir().join(b).display()
            ));
        }
    }
    None
}

macro_rules! daemon_or_skip {
    () => {
        match skip_reason() {
            Some(why) => {
                eprintln!("skipping: {why}");
                return;
            }
            None => Daemon::start(),
        }
    };
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-cli-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let log = std::fs::File::create(d.join("berthd.log")).expect("log");
        std::fs::write(d.join("daemon.json"), "{}\n").expect("daemon.json");
        // berthd and its containers get a network namespace of their own
        // (it goes when they do): the default bridge must not touch the
        // host's network.
        let child = Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(bin_dir().join("berthd"))
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("s.sock").display()))
            .arg("--exec-root")
            .arg(d.join("run"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        let mut daemon = Daemon { dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon.berth(&["version"]).code != 0 {
            assert!(Instant::now() < deadline, "berthd did not come up");
            assert!(
                matches!(daemon.child.try_wait(), Ok(None)),
                "berthd exited: {}",
                std::fs::read_to_string(daemon.dir.path().join("berthd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let tar = daemon.dir.path().join("busybox.tar");
        std::fs::write(
            &tar,
            berth_fixtures::docker_save_archive(&[(
                berth_fixtures::busybox_image(),
                vec!["busybox:latest".to_string()],
            )]),
        )
        .expect("write busybox.tar");
        let out = daemon.berth(&["load", "-i", tar.to_str().unwrap()]);
        assert_eq!(out.code, 0, "load: {out:?}");
        daemon
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("s.sock").display())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("-H").arg(self.host()).args(args);
        cmd
    }

    fn berth(&self, args: &[&str]) -> Out {
        self.berth_stdin(args, None)
    }

    /// Runs berth (stdin from `input`, else /dev/null), killed after 60 s.
    fn berth_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Out {
        let mut cmd = self.command(args);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn berth");
        if let Some(data) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(data).expect("write stdin");
        }
        let pid = child.id();
        let waiter = std::thread::spawn(move || child.wait_with_output());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !waiter.is_finished() {
            if Instant::now() > deadline {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).expect("pid"),
                    rustix::process::Signal::KILL,
                );
                panic!("berth {args:?} did not finish in 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = waiter.join().expect("join").expect("wait");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert_eq!(out.code, 0, "berth {args:?}: {out:?}");
        out.stdout
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Containers first (their shims outlive berthd), then berthd.
        let ids = self.berth(&["ps", "-aq"]).stdout;
        for id in ids.split_whitespace() {
            let _ = self.berth(&["rm", "-f", id]);
        }
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Shims of this daemon that did not go (their bundles are under our
        // directory): they are ours to end.
        let here = self.dir.path().to_string_lossy().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("berth-shim") && cmdline.contains(&here) {
                eprintln!("killing leftover shim {pid}");
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
        // Never delete through a mount left behind.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        if mounts.lines().any(|l| l.contains(&here)) {
            eprintln!("leaving {here}: mounts remain under it");
            let _ = std::mem::replace(
                &mut self.dir,
                tempfile::Builder::new().tempdir().expect("tempdir"),
            )
            .keep();
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_rm_prints_output_and_exits_zero() {
    let d = daemon_or_skip!();
    let out = d.berth(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:?}");
    wait_until("the container to be removed", || {
        d.ok(&["ps", "-aq"]).trim().is_empty()
    });
}

#[test]
fn run_exits_with_the_container_exit_code() {
    let d = daemon_or_skip!();
    let out = d.berth(&[
        "run",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
}

#[test]
fn run_missing_command_exits_127() {
    let d = daemon_or_skip!();
    let out = d.berth(&["run", "busybox", "nosuchcmd"]);
    assert_eq!(out.code, 127, "{out:?}");
    assert!(out.stderr.contains("Run 'berth run --help'"), "{out:?}");
}

#[test]
fn run_missing_image_exits_125() {
    let d = daemon_or_skip!();
    let out = d.berth(&["run", "nosuchimage"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert!(
        out.stderr
            .starts_with("Unable to find image 'nosuchimage:latest' locally\n"),
        "{out:?}"
    );
}

#[test]
fn run_interactive_with_piped_stdin() {
    let d = daemon_or_skip!();
    let out = d.berth_stdin(
        &["run", "-i", "--rm", "busybox", "cat"],
        Some(b"abc\ndef\n"),
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "abc\ndef\n"),
        "{out:?}"
    );
}

#[test]
fn detached_container_lifecycle() {
    let d = daemon_or_skip!();
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "role=test",
        "busybox",
        "sh",
        "-c",
        "echo started; echo to-stderr >&2; while true; do sleep 1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let ps = d.ok(&["ps"]);
    check_ps_header(&ps);
    let row = ps.lines().nth(1).expect("a row");
    assert!(row.starts_with(&id[..12]), "{ps}");
    assert!(row.contains("\"sh -c echo started;…\""), "{ps}");
    assert!(row.contains("Up "), "{ps}");
    assert!(row.ends_with("web"), "{ps}");
    assert_eq!(
        d.ok(&["ps", "-q", "--filter", "label=role=test"]).trim(),
        &id[..12]
    );
    assert_eq!(
        d.ok(&[
            "ps",
            "--format",
            "{{.Names}} {{.State}} {{.Label \"role\"}}"
        ]),
        "web running test\n"
    );

    wait_until("the log", || d.ok(&["logs", "web"]).contains("started"));
    let logs = d.berth(&["logs", "web"]);
    assert_eq!(logs.stdout, "started\n", "{logs:?}");
    assert_eq!(logs.stderr, "to-stderr\n", "{logs:?}");

    let ex = d.berth(&["exec", "web", "sh", "-c", "echo out; echo err >&2; exit 4"]);
    assert_eq!(ex.code, 4, "{ex:?}");
    assert_eq!(ex.stdout, "out\n");
    assert_eq!(ex.stderr, "err\n");
    let ex = d.berth_stdin(&["exec", "-i", "web", "cat"], Some(b"piped\n"));
    assert_eq!((ex.code, ex.stdout.as_str()), (0, "piped\n"), "{ex:?}");

    let inspect = d.ok(&["inspect", "--format", "{{.State.Status}} {{.Name}}", "web"]);
    assert_eq!(inspect, "running /web\n");

    assert_eq!(d.ok(&["stop", "-t", "1", "web"]), "web\n");
    assert_eq!(
        d.ok(&["inspect", "--format", "{{.State.Status}}", "web"]),
        "exited\n"
    );
    assert!(d.ok(&["ps"]).lines().count() == 1);
    assert!(d.ok(&["ps", "-a"]).contains("Exited ("));
    assert_eq!(d.ok(&["rm", "web"]), "web\n");
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty());
}

/// The header's columns are as wide as the rows beneath them; its words are docker's.
fn check_ps_header(ps: &str) {
    let h = ps.lines().next().unwrap_or("");
    let words: Vec<&str> = h.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "CONTAINER",
            "ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ]
    );
    assert!(h.starts_with("CONTAINER ID   IMAGE     COMMAND "), "{h}");
}

#[test]
fn wait_prints_exit_codes() {
    let d = daemon_or_skip!();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "waiter",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 7",
    ]);
    assert_eq!(d.ok(&["wait", "waiter"]), "7\n");
    let out = d.berth(&["start", "-a", "waiter"]);
    assert_eq!(out.code, 7, "{out:?}");
}

// ---------------------------------------------------------------- tmux

/// A tmux session on a tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
    name: String,
}

impl Tmux {
    fn new(name: &str, command: &str) -> Tmux {
        let t = Tmux {
            socket: format!("berth-cli-test-{}", std::process::id()),
            name: name.to_string(),
        };
        let st = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "120",
                "-y",
                "40",
                command,
            ])
            .status()
            .expect("tmux");
        assert!(st.success(), "tmux new-session");
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status().expect("tmux").success());
    }

    fn capture(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.capture();
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} not on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd(&["kill-session", "-t", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether containers run in their own PID namespace (not the host
/// stand-in runtime), so that writing files in them is safe.
fn isolated(d: &Daemon) -> bool {
    let out = d.berth(&["run", "--rm", "busybox", "sh", "-c", "echo $$"]);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.trim() == "1"
}

/// Reads `path` once berth wrote its exit status there.
fn wait_status(path: &Path, t: &Tmux) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "berth did not exit:\n{}",
            t.capture()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn interactive_tty_session_with_tmux() {
    let d = daemon_or_skip!();
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipping: tmux is not installed");
        return;
    }
    if !isolated(&d) {
        eprintln!("skipping: containers share the host's PID namespace (stand-in runtime)");
        return;
    }
    let berth = format!("{} -H {}", env!("CARGO_BIN_EXE_berth"), d.host());
    let status = d.dir.path().join("status");
    let stty = d.dir.path().join("stty");
    // berth's exit status and the terminal's settings after it, in files.
    let wrap = |cmd: &str| {
        format!(
            "bash -c '{cmd}; echo $? > {}; stty -a > {}; sleep 60'",
            status.display(),
            stty.display()
        )
    };
    let running = |name: &str| {
        wait_until("the container to run", || {
            d.berth(&["inspect", "--format", "{{.State.Running}}", name])
                .stdout
                == "true\n"
        });
        // Let berth attach and put the terminal in raw mode.
        std::thread::sleep(Duration::from_millis(500));
    };
    {
        let t = Tmux::new(
            "run-it",
            &wrap(&format!("{berth} run -it --name itest busybox sh")),
        );
        running("itest");
        t.send(&["echo hel''lo; touch /f; stty size", "Enter"]);
        t.wait_for("hello");
        // The container's tty has our window's size.
        t.wait_for("40 120");
        t.send(&["exit 5", "Enter"]);
        assert_eq!(wait_status(&status, &t), "5");
        // The terminal is back in cooked mode.
        let modes = std::fs::read_to_string(&stty).unwrap_or_default();
        for m in ["icanon", "echo", "isig", "opost", "icrnl"] {
            assert!(
                modes.split_whitespace().any(|w| w == m),
                "{m} not restored: {modes}"
            );
        }
    }
    std::fs::remove_file(&status).expect("rm status");
    assert_eq!(
        d.ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            "itest"
        ]),
        "exited 5\n"
    );
    {
        let t = Tmux::new("start-ai", &wrap(&format!("{berth} start -ai itest")));
        running("itest");
        t.send(&["test -e /f && echo fi''le-exists", "Enter"]);
        t.wait_for("file-exists");
        t.send(&["exit", "Enter"]);
        assert_eq!(wait_status(&status, &t), "0");
    }
    std::fs::remove_file(&status).expect("rm status");
    d.ok(&["rm", "itest"]);

    // Detach keys, then attach again.
    d.ok(&["run", "-dit", "--name", "bg", "busybox", "sh"]);
    {
        let t = Tmux::new("attach", &wrap(&format!("{berth} attach bg")));
        running("bg");
        t.send(&["echo at''tached", "Enter"]);
        t.wait_for("attached");
        // ctrl-p ctrl-q: berth exits 0, the container keeps running.
        t.send(&["C-p", "C-q"]);
        assert_eq!(wait_status(&status, &t), "0");
    }
    std::fs::remove_file(&status).expect("rm status");
    assert_eq!(
        d.ok(&["inspect", "--format", "{{.State.Status}}", "bg"]),
        "running\n"
    );
    {
        let t = Tmux::new(
            "detach-keys",
            &wrap(&format!("{berth} attach --detach-keys ctrl-x,y bg")),
        );
        running("bg");
        t.send(&["echo ag''ain", "Enter"]);
        t.wait_for("again");
        t.send(&["C-x", "y"]);
        assert_eq!(wait_status(&status, &t), "0");
    }
    d.ok(&["rm", "-f", "bg"]);
}

// ---------------------------------------------------------------- fake daemon

/// Reads one HTTP request (head and Content-Length body) from `s`.
fn read_request(s: &mut std::os::unix::net::UnixStream) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).expect("read request") == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read body");
    (head, body)
}

fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![stream, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// `exec -i` against a stand-in daemon: the exec is created, its start is
/// hijacked (101), our stdin reaches it and its EOF half-closes the
/// connection, the multiplexed answer is split to stdout and stderr, and
/// berth exits with the exec's exit code. Needs neither root nor a runtime.
#[test]
fn exec_hijack_half_close_and_exit_code_against_a_stand_in_daemon() {
    use std::io::{Read, Write};
    let dir = tempfile::Builder::new()
        .prefix("berth-cli-fake-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let sock = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for conn in listener.incoming().take(3) {
            let mut s = conn.expect("accept");
            let (head, body) = read_request(&mut s);
            let line = head.lines().next().unwrap_or("").to_string();
            seen.push(line.clone());
            if line.starts_with("POST /v1.47/containers/box/exec ") {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                assert_eq!(v["Cmd"], serde_json::json!(["cat"]));
                assert_eq!(v["AttachStdin"], true);
                let answer = br#"{"Id":"e1"}"#;
                write!(
                    s,
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    answer.len()
                )
                .unwrap();
                s.write_all(answer).unwrap();
            } else if line.starts_with("POST /v1.47/exec/e1/start ") {
                assert!(head.to_lowercase().contains("upgrade: tcp"), "{head}");
                s.write_all(
                    b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n\r\n",
                )
                .unwrap();
                // Everything until the client's half-close.
                let mut input = Vec::new();
                s.read_to_end(&mut input).expect("read stdin");
                let mut out = frame(1, b"got:");
                out.extend(frame(1, &input));
                out.extend(frame(2, b"to stderr\n"));
                // Split a header across writes.
                s.write_all(&out[..3]).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(50));
                s.write_all(&out[3..]).unwrap();
            } else if line.starts_with("GET /v1.47/exec/e1/json ") {
                let answer = br#"{"ExitCode":3,"Running":false,"Pid":0}"#;
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    answer.len()
                )
                .unwrap();
                s.write_all(answer).unwrap();
            } else {
                panic!("unexpected request {line}");
            }
        }
        seen
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(["exec", "-i", "box", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(3), "got:hello\n", "to stderr\n")
    );
    let seen = server.join().expect("server");
    assert_eq!(seen.len(), 3, "{seen:?}");
}

/// `start -ai` of a tty container against a stand-in daemon: attach (101)
/// before start, the wait asked for before start, raw output, and the detach
/// keys (ctrl-p ctrl-q) ending berth with status 0 without reaching the
/// container, the bytes before them delivered.
#[test]
fn start_attach_detach_keys_against_a_stand_in_daemon() {
    use std::io::{Read, Write};
    let dir = tempfile::Builder::new()
        .prefix("berth-cli-fake-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let sock = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let (tx, rx) = std::sync::mpsc::channel::<(String, Vec<u8>)>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let (head, _) = read_request(&mut s);
                let line = head.lines().next().unwrap_or("").to_string();
                let json = |s: &mut std::os::unix::net::UnixStream, code: &str, body: &str| {
                    write!(
                        s,
                        "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                };
                if line.starts_with("GET /v1.47/containers/box/json ") {
                    json(
                        &mut s,
                        "200 OK",
                        r#"{"Id":"boxid","Config":{"Tty":true,"OpenStdin":true},"HostConfig":{"AutoRemove":false},"State":{"Running":false}}"#,
                    );
                } else if line.starts_with("POST /v1.47/containers/boxid/attach?") {
                    assert!(line.contains("stdin=1"), "{line}");
                    s.write_all(
                        b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
                    )
                    .unwrap();
                    s.write_all(b"prompt$ ").unwrap();
                    let mut input = Vec::new();
                    let _ = s.read_to_end(&mut input);
                    tx.send((line, input)).unwrap();
                    return;
                } else if line.starts_with("POST /v1.47/containers/boxid/wait?condition=next-exit ")
                {
                    // The header now, the body never: the container runs on.
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .unwrap();
                    let _ = s.read_to_end(&mut Vec::new());
                } else if line.starts_with("POST /v1.47/containers/boxid/start ") {
                    s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
                } else {
                    json(&mut s, "404 Not Found", r#"{"message":"unexpected"}"#);
                }
                tx.send((line, Vec::new())).unwrap();
            });
        }
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(["start", "-ai", "box"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ls\n\x10").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stdin.write_all(b"\x11").unwrap();
    let out = child.wait_with_output().expect("wait");
    drop(stdin);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(0), "prompt$ ", "")
    );
    let mut requests = Vec::new();
    let mut input = Vec::new();
    while let Ok((line, data)) = rx.recv_timeout(Duration::from_secs(5)) {
        if line.contains("/attach?") {
            input = data;
        }
        requests.push(line.split(' ').nth(1).unwrap_or("").to_string());
        if requests.len() == 4 {
            break;
        }
    }
    assert_eq!(String::from_utf8_lossy(&input), "ls\n");
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/wait?condition=next-exit")),
        "{requests:?}"
    );
}
