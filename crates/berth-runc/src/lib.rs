//! berth-runc: berth's runtime (`berth-runtime`) behind runc's command line,
//! so that podman, containerd and dockerd can run containers with it.
//!
//! Owns: argument parsing as runc's (global flags, then a command and its
//! flags), the per-container state directory under `--root`
//! (`state.json`, the resolved `config.json`, `exec.fifo` between `create`
//! and `start`), the console socket protocol (the pty master sent over
//! SCM_RIGHTS), OCI hooks run in the runtime's namespaces, and runc's
//! state JSON, status words, error log lines and exit codes.
//!
//! Must not: hold container logic of its own (namespaces, mounts, cgroups,
//! capabilities and exec are berth-runtime's), start threads (it forks),
//! or keep running after a command: the container's init is left to the
//! engine's subreaper, as with runc.
//!
//! Lifecycle (OCI runtime spec): `create` leaves the init blocked just
//! before its execve on `exec.fifo` (status `created`); `start` opens the
//! fifo, the init execs (`running`); `kill` signals it; once it is gone the
//! status is `stopped` and `delete` removes its cgroup and state.
#![deny(unsafe_code)]

/// Print to stdout, ignoring a closed pipe (`berth-runc --version | head -1`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

mod args;
mod console;
mod hooks;
mod state;

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};

use args::Parsed;
use state::{State, Status};

/// What a command failed with: the message, logged as runc logs it.
pub struct Fail(pub String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(e.to_string())
    }
}

type Res<T> = Result<T, Fail>;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const SPEC_VERSION: &str = "1.0.2";

/// The program; returns the exit code.
pub fn main_entry() -> i32 {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let p = match args::parse(&argv) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "berth-runc: {e}");
            return 1;
        }
    };
    let log = Log::new(&p);
    match run(&p) {
        Ok(code) => code,
        Err(Fail(msg)) => {
            log.error(&msg);
            1
        }
    }
}

/// runc's `--log FILE --log-format json|text`: errors go there (containerd
/// reads the last one) and to stderr.
struct Log {
    file: Option<PathBuf>,
    json: bool,
}

impl Log {
    fn new(p: &Parsed) -> Log {
        Log {
            file: p.global("log").map(PathBuf::from),
            json: p.global("log-format") == Some("json"),
        }
    }

    fn error(&self, msg: &str) {
        let _ = writeln!(std::io::stderr(), "berth-runc: {msg}");
        let Some(f) = &self.file else { return };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let line = if self.json {
            serde_json::json!({"level": "error", "msg": msg, "time": now}).to_string()
        } else {
            format!("time=\"{now}\" level=error msg=\"{msg}\"")
        };
        if let Ok(mut out) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
        {
            let _ = writeln!(out, "{line}");
        }
    }
}

fn run(p: &Parsed) -> Res<i32> {
    if p.global_flag("version") || p.command.as_deref() == Some("--version") {
        say!("berth-runc version {VERSION}\nspec: {SPEC_VERSION}");
        return Ok(0);
    }
    if p.global_flag("systemd-cgroup") {
        return Err(Fail(
            "--systemd-cgroup is not supported by berth-runc: use cgroupfs paths".into(),
        ));
    }
    let root = PathBuf::from(p.global("root").unwrap_or("/run/berth-runc"));
    let cmd = p.command.as_deref().unwrap_or("");
    match cmd {
        "create" => create(p, &root).map(|_| 0),
        "start" => start(&root, p.id()?).map(|_| 0),
        "run" => run_container(p, &root),
        "state" => {
            let st = State::load(&root, p.id()?)?;
            say!("{}", serde_json::to_string_pretty(&st.to_oci())?);
            Ok(0)
        }
        "kill" => kill(p, &root).map(|_| 0),
        "delete" => delete(&root, p.id()?, p.flag("force")).map(|_| 0),
        "exec" => exec(p, &root),
        "list" => list(p, &root).map(|_| 0),
        "ps" => ps(p, &root).map(|_| 0),
        "pause" | "resume" => {
            let st = State::load(&root, p.id()?)?;
            match (cmd, st.status()) {
                ("pause", Status::Running) | ("resume", Status::Paused) => {}
                (_, s) => {
                    return Err(Fail(format!(
                        "container {} is {}, not {}",
                        st.id,
                        s.word(),
                        if cmd == "pause" { "running" } else { "paused" }
                    )));
                }
            }
            berth_runtime::freeze(&st.spec()?, cmd == "pause")?;
            Ok(0)
        }
        "update" => update(p, &root).map(|_| 0),
        "events" => {
            if !p.flag("stats") {
                return Err(Fail(
                    "events without --stats (a stream of OOM notifications) is not supported"
                        .into(),
                ));
            }
            let st = State::load(&root, p.id()?)?;
            let s = berth_runtime::cgroup_stats(&st.spec()?)?;
            say!("{}", serde_json::to_string(&stats_event(&st.id, &s))?);
            Ok(0)
        }
        "features" => {
            say!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
        "" => Err(Fail(format!("no command given\n{}", args::USAGE))),
        other => Err(Fail(format!(
            "command {other:?} is not supported by berth-runc\n{}",
            args::USAGE
        ))),
    }
}

/// The bundle's config.json, with `root.path` made absolute.
fn load_bundle(bundle: &Path) -> Res<Spec> {
    let config = bundle.join("config.json");
    let mut spec =
        Spec::load(&config).map_err(|e| Fail(format!("load {}: {e}", config.display())))?;
    if let Some(root) = spec.root().clone() {
        let path = root.path();
        if path.is_relative() {
            let mut r = root.clone();
            r.set_path(bundle.join(path));
            spec.set_root(Some(r));
        }
    }
    Ok(spec)
}

fn absolute(p: &str) -> Res<PathBuf> {
    let p = PathBuf::from(p);
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// The bundle directory, absolute and without `.` or `..`.
fn bundle_dir(p: &str) -> Res<PathBuf> {
    std::fs::canonicalize(p).map_err(|e| Fail(format!("bundle {p}: {e}")))
}

/// `create`: everything up to the execve, then the init waits on the fifo.
/// Returns the init's pid.
fn create(p: &Parsed, root: &Path) -> Res<i32> {
    let id = p.id()?;
    state::check_id(id)?;
    let bundle = bundle_dir(p.value("bundle").unwrap_or("."))?;
    let mut spec = load_bundle(&bundle)?;
    // Without a cgroupsPath the container gets /berth-runc/<id>, written
    // into the saved spec so that later commands find it.
    let mut linux = spec.linux().clone().unwrap_or_default();
    if linux.cgroups_path().is_none() {
        linux.set_cgroups_path(Some(PathBuf::from(format!("/berth-runc/{id}"))));
        spec.set_linux(Some(linux));
    }
    let dir = root.join(id);
    std::fs::create_dir_all(root)?;
    if let Err(e) = std::fs::create_dir(&dir) {
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            Fail(format!("container with id exists: {id}"))
        } else {
            Fail(format!("create {}: {e}", dir.display()))
        });
    }
    let r = (|| {
        let fifo = dir.join("exec.fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o622),
        )
        .map_err(|e| Fail(format!("mkfifo {}: {e}", fifo.display())))?;
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec)?)?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|pr| pr.terminal())
            .unwrap_or(false);
        let stdio = console::stdio(terminal, p.value("console-socket"), None)?;
        let preserve_fds = p
            .value("preserve-fds")
            .map(|n| n.parse::<u32>())
            .transpose()
            .map_err(|_| Fail("--preserve-fds must be a number".into()))?
            .unwrap_or(0);
        let started = berth_runtime::start_with(
            id,
            &spec,
            stdio,
            &berth_runtime::StartOptions {
                exec_fifo: Some(&fifo),
                preserve_fds,
            },
        )
        .map_err(|e| Fail(e.message))?;
        let st = State::new(root, id, started.pid, &bundle, &spec)?;
        st.save(root)?;
        if let Some(pf) = p.value("pid-file") {
            state::write_atomic(&absolute(pf)?, started.pid.to_string().as_bytes())?;
        }
        // The runtime namespace's hooks, once the container exists.
        for kind in ["prestart", "createRuntime"] {
            if let Err(e) = hooks::run(&spec, kind, &st.to_oci()) {
                berth_runtime_kill(started.pid, libc::SIGKILL);
                let _ = rustix::process::waitpid(
                    rustix::process::Pid::from_raw(started.pid),
                    rustix::process::WaitOptions::empty(),
                );
                let _ = berth_runtime::delete(&spec);
                return Err(e);
            }
        }
        Ok(started.pid)
    })();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r
}

fn berth_runtime_kill(pid: i32, sig: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid)
        && let Some(s) = rustix::process::Signal::from_named_raw(sig)
    {
        let _ = rustix::process::kill_process(p, s);
    }
}

/// `start`: let a created container's init exec.
fn start(root: &Path, id: &str) -> Res<()> {
    let st = State::load(root, id)?;
    match st.status() {
        Status::Created => {}
        Status::Stopped => return Err(Fail("cannot start a container that has stopped".into())),
        s => {
            return Err(Fail(format!(
                "cannot start an already running container (status {})",
                s.word()
            )));
        }
    }
    let fifo = root.join(id).join("exec.fifo");
    let fd = rustix::fs::open(
        &fifo,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Fail(format!("open {}: {e}", fifo.display())))?;
    // The init has the fifo open for writing as soon as it sees a reader;
    // wait for its byte, or for it to die.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut b = [0u8; 1];
    loop {
        match rustix::io::read(&fd, &mut b) {
            Ok(1) => break,
            Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(Fail(format!("read exec fifo: {e}"))),
        }
        if !st.alive() {
            return Err(Fail("cannot start a container that has stopped".into()));
        }
        if std::time::Instant::now() > deadline {
            return Err(Fail("container init did not take the exec fifo".into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = std::fs::remove_file(&fifo);
    let spec = st.spec()?;
    hooks::run(&spec, "poststart", &st.to_oci()).map_err(|Fail(m)| Fail(format!("poststart: {m}")))
}

/// `run`: create and start; in the foreground, wait for the init and
/// delete, exiting with its code.
fn run_container(p: &Parsed, root: &Path) -> Res<i32> {
    let id = p.id()?.to_string();
    let pid = create(p, root)?;
    if let Err(e) = start(root, &id) {
        let _ = delete(root, &id, true);
        return Err(e);
    }
    if p.flag("detach") {
        return Ok(0);
    }
    let code = wait_child(pid);
    delete(root, &id, true)?;
    Ok(code)
}

/// Wait for a child; its exit code, 128 + signal if killed.
fn wait_child(pid: i32) -> i32 {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return 1;
    };
    loop {
        match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => {
                return st
                    .exit_status()
                    .or_else(|| st.terminating_signal().map(|s| 128 + s))
                    .unwrap_or(1);
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return 1,
        }
    }
}

fn kill(p: &Parsed, root: &Path) -> Res<()> {
    let id = p.id()?;
    let st = State::load(root, id)?;
    let sig = state::parse_signal(p.positional.get(1).map(String::as_str).unwrap_or("SIGTERM"))?;
    if p.flag("all") {
        for pid in berth_runtime::cgroup_pids(&st.spec()?)? {
            berth_runtime_kill(pid, sig);
        }
        return Ok(());
    }
    if st.status() == Status::Stopped {
        return Err(Fail("container not running".into()));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(st.pid).ok_or_else(|| Fail("bad pid".into()))?,
        rustix::process::Signal::from_named_raw(sig)
            .ok_or_else(|| Fail(format!("invalid signal {sig}")))?,
    )
    .map_err(|e| Fail(format!("kill {}: {e}", st.pid)))
}

fn delete(root: &Path, id: &str, force: bool) -> Res<()> {
    // As runc: --force of a container that does not exist is no error.
    if force && !root.join(id).exists() {
        return Ok(());
    }
    let st = State::load(root, id)?;
    let status = st.status();
    if !force && status != Status::Stopped && status != Status::Created {
        return Err(Fail(format!(
            "cannot delete container {id} that is not stopped: {}",
            status.word()
        )));
    }
    let spec = st.spec()?;
    if status != Status::Stopped {
        // A frozen cgroup holds SIGKILL until it thaws.
        if status == Status::Paused {
            let _ = berth_runtime::freeze(&spec, false);
        }
        for pid in berth_runtime::cgroup_pids(&spec).unwrap_or_default() {
            berth_runtime_kill(pid, libc::SIGKILL);
        }
        berth_runtime_kill(st.pid, libc::SIGKILL);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while st.alive() && std::time::Instant::now() < deadline {
            // Our own child (run) is reaped here; anyone else's by its parent.
            let _ = rustix::process::waitpid(
                rustix::process::Pid::from_raw(st.pid),
                rustix::process::WaitOptions::NOHANG,
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    berth_runtime::delete(&spec).map_err(|e| Fail(e.message))?;
    let r = hooks::run(&spec, "poststop", &st.to_oci());
    std::fs::remove_dir_all(root.join(id))?;
    r
}

/// `exec`: a new process in a running container; in the foreground its
/// exit code, with `-d` the pid (in `--pid-file`).
fn exec(p: &Parsed, root: &Path) -> Res<i32> {
    let id = p.id()?;
    let st = State::load(root, id)?;
    match st.status() {
        Status::Running => {}
        Status::Paused => return Err(Fail("cannot exec in a paused container".into())),
        s => return Err(Fail(format!("cannot exec in a {} container", s.word()))),
    }
    let spec = st.spec()?;
    let process = exec_process(p, &spec)?;
    let terminal = process.terminal().unwrap_or(false);
    let stdio = console::stdio(terminal, p.value("console-socket"), Some(st.pid))?;
    let started =
        berth_runtime::exec(id, &spec, st.pid, &process, stdio).map_err(|e| Fail(e.message))?;
    if let Some(pf) = p.value("pid-file") {
        state::write_atomic(&absolute(pf)?, started.pid.to_string().as_bytes())?;
    }
    if p.flag("detach") {
        return Ok(0);
    }
    Ok(wait_child(started.pid))
}

/// The process to exec: `--process FILE` (an OCI process JSON), or the
/// container's process with the arguments and flags given.
fn exec_process(p: &Parsed, spec: &Spec) -> Res<Process> {
    if let Some(f) = p.value("process") {
        let text = std::fs::read(f).map_err(|e| Fail(format!("read {f}: {e}")))?;
        return serde_json::from_slice(&text).map_err(|e| Fail(format!("parse {f}: {e}")));
    }
    let mut proc = spec.process().clone().unwrap_or_default();
    let args: Vec<String> = p.positional.iter().skip(1).cloned().collect();
    if args.is_empty() {
        return Err(Fail("exec needs a command (or --process FILE)".into()));
    }
    proc.set_args(Some(args));
    proc.set_terminal(Some(p.flag("tty")));
    if let Some(cwd) = p.value("cwd") {
        proc.set_cwd(PathBuf::from(cwd));
    }
    let extra = p.values("env");
    if !extra.is_empty() {
        let mut env = proc.env().clone().unwrap_or_default();
        for e in extra {
            let key = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.to_string());
        }
        proc.set_env(Some(env));
    }
    if let Some(u) = p.value("user") {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let mut user = proc.user().clone();
        user.set_uid(
            uid.parse()
                .map_err(|_| Fail(format!("invalid --user {u}: uid:gid numbers")))?,
        );
        user.set_gid(
            gid.parse()
                .map_err(|_| Fail(format!("invalid --user {u}: uid:gid numbers")))?,
        );
        proc.set_user(user);
    }
    Ok(proc)
}

fn list(p: &Parsed, root: &Path) -> Res<()> {
    let mut all = Vec::new();
    if let Ok(dir) = std::fs::read_dir(root) {
        for e in dir.flatten() {
            if let Ok(st) = State::load(root, &e.file_name().to_string_lossy()) {
                all.push(st);
            }
        }
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    if p.flag("quiet") {
        for st in &all {
            say!("{}", st.id);
        }
        return Ok(());
    }
    if p.value("format") == Some("json") {
        let v: Vec<_> = all.iter().map(|s| s.to_list_json()).collect();
        say!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let mut out = String::from("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n");
    for st in &all {
        let status = st.status();
        let pid = if status == Status::Stopped { 0 } else { st.pid };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\troot\n",
            st.id,
            pid,
            status.word(),
            st.bundle.display(),
            st.created
        ));
    }
    say_raw!("{}", args::tabulate(&out));
    Ok(())
}

fn ps(p: &Parsed, root: &Path) -> Res<()> {
    let st = State::load(root, p.id()?)?;
    let pids = berth_runtime::cgroup_pids(&st.spec()?)?;
    if p.value("format") == Some("json") {
        say!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    // As runc: the host's `ps -ef` (or given ps options), rows of these pids.
    let ps_args: Vec<String> = p.positional.iter().skip(1).cloned().collect();
    let ps_args = if ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        ps_args
    };
    let out = std::process::Command::new("ps").args(&ps_args).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Fail("ps output has no PID column".into()))?;
    say!("{header}");
    for l in lines {
        if let Some(pid) = l
            .split_whitespace()
            .nth(col)
            .and_then(|s| s.parse::<i32>().ok())
            && pids.contains(&pid)
        {
            say!("{l}");
        }
    }
    Ok(())
}

fn update(p: &Parsed, root: &Path) -> Res<()> {
    let st = State::load(root, p.id()?)?;
    let resources: oci_spec::runtime::LinuxResources = match p.value("resources") {
        Some(f) => {
            let text = if f == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(f)?
            };
            serde_json::from_str(&text)?
        }
        None => {
            let mut r = serde_json::json!({});
            if let Some(m) = p.value("memory") {
                r["memory"] = serde_json::json!({"limit": m.parse::<i64>()?});
            }
            if let Some(q) = p.value("cpu-quota") {
                r["cpu"]["quota"] = serde_json::json!(q.parse::<i64>()?);
            }
            if let Some(q) = p.value("cpu-period") {
                r["cpu"]["period"] = serde_json::json!(q.parse::<u64>()?);
            }
            if let Some(s) = p.value("cpu-share") {
                r["cpu"]["shares"] = serde_json::json!(s.parse::<u64>()?);
            }
            if let Some(n) = p.value("pids-limit") {
                r["pids"] = serde_json::json!({"limit": n.parse::<i64>()?});
            }
            serde_json::from_value(r)?
        }
    };
    berth_runtime::update_resources(&st.spec()?, &resources).map_err(|e| Fail(e.message))
}

/// runc's `events --stats` record.
fn stats_event(id: &str, s: &berth_runtime::CgroupStats) -> serde_json::Value {
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {"usage": {
                "total": s.cpu_usage_ns.unwrap_or(0),
                "user": s.cpu_user_ns.unwrap_or(0),
                "kernel": s.cpu_kernel_ns.unwrap_or(0),
            }},
            "memory": {"usage": {
                "usage": s.memory_usage.unwrap_or(0),
                "max": s.memory_max_usage.unwrap_or(0),
                "limit": s.memory_limit.unwrap_or(0),
                "failcnt": s.memory_failcnt.unwrap_or(0),
            }},
            "pids": {"current": s.pids_current.unwrap_or(0), "limit": s.pids_limit.unwrap_or(0)},
        }
    })
}

/// `features`: what this runtime supports, in the OCI features format.
fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "bind", "rbind", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
            "private", "rprivate", "shared", "rshared", "slave", "rslave", "relatime", "noatime", "strictatime"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": berth_runtime::default_capabilities().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": true, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRAP", "SCMP_ACT_TRACE"],
                "archs": ["SCMP_ARCH_X86_64"]},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {"org.opencontainers.runtime-spec.features.runtime": "berth-runc"}
    })
}
