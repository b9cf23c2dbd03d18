//! Root tests of berth-runtime against a real busybox rootfs: real
//! namespaces, mounts, cgroups, capabilities and seccomp. Each test skips
//! with a message when not run as root. Every container a test starts is
//! killed (by the PID `start` returned) and its cgroup removed, even when
//! the test fails.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::{Spec, Started, Stdio};
use rustix::process::{Pid, Signal, WaitOptions};
use serde_json::{Value, json};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: this test needs root (namespaces, mounts, cgroups)");
            return;
        }
    };
}

/// A busybox rootfs in a temporary directory (the directory itself is used
/// as root.path; the runtime bind-mounts it in the container's namespace,
/// so nothing is mounted on the host).
struct Rootfs {
    dir: tempfile::TempDir,
}

impl Rootfs {
    fn new() -> Rootfs {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .unwrap();
        let r = dir.path();
        for d in [
            "bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr/bin", "var",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        let out = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8(out.stdout).unwrap().lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", r.join("bin").join(applet));
            }
        }
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        std::fs::write(r.join("etc/hello"), "hello from the rootfs\n").unwrap();
        Rootfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn docker_caps() -> Vec<Value> {
    berth_runtime::default_capabilities()
        .iter()
        .map(|c| json!(format!("CAP_{c}")))
        .collect()
}

/// A spec shaped like the one dockerd generates for `docker run busybox`.
fn base_spec(id: &str, rootfs: &Path, args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOSTNAME=testhost"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": docker_caps(),
                "effective": docker_caps(),
                "permitted": docker_caps()
            },
            "noNewPrivileges": false
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": "testhost",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}
        ],
        "linux": {
            "cgroupsPath": format!("/berth-rt-test-{id}"),
            "namespaces": [
                {"type": "mount"}, {"type": "network"}, {"type": "uts"},
                {"type": "pid"}, {"type": "ipc"}
            ],
            "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0"},
            "maskedPaths": berth_runtime::default_masked_paths(),
            "readonlyPaths": berth_runtime::default_readonly_paths(),
            "resources": {
                "devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 136, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
                    {"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"}
                ]
            },
            "seccomp": serde_json::to_value(berth_runtime::default_seccomp_profile()).unwrap()
        }
    })
}

fn to_spec(v: Value) -> Spec {
    serde_json::from_value(v).expect("valid spec")
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

/// A pipe whose write end is the container's stdout and stderr.
fn capture() -> (std::fs::File, Stdio) {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let w2 = w.try_clone().unwrap();
    (
        r.into(),
        Stdio {
            stdin: devnull(),
            stdout: w,
            stderr: w2,
        },
    )
}

/// A started container: killed, reaped and its cgroup removed on drop.
struct Running {
    pid: i32,
    /// The container's spec, for removing its cgroup; None for an exec'd
    /// process.
    spec: Option<Spec>,
    reaped: bool,
}

impl Running {
    fn new(started: Started, spec: &Spec) -> Running {
        Running {
            pid: started.pid,
            spec: Some(spec.clone()),
            reaped: false,
        }
    }

    fn exec(started: Started) -> Running {
        Running {
            pid: started.pid,
            spec: None,
            reaped: false,
        }
    }

    /// Wait for it to exit; its exit code (128+signal when killed).
    fn wait(&mut self) -> i32 {
        let (_, st) =
            rustix::process::waitpid(Some(Pid::from_raw(self.pid).unwrap()), WaitOptions::empty())
                .unwrap()
                .unwrap();
        self.reaped = true;
        if let Some(c) = st.exit_status() {
            c
        } else {
            128 + st.terminating_signal().unwrap_or(0)
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = rustix::process::kill_process(Pid::from_raw(self.pid).unwrap(), Signal::KILL);
            let _ = rustix::process::waitpid(
                Some(Pid::from_raw(self.pid).unwrap()),
                WaitOptions::empty(),
            );
        }
        if let Some(spec) = &self.spec
            && let Err(e) = berth_runtime::delete(spec)
        {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Start a container, collect its output until it exits, return (exit
/// code, output).
fn run(id: &str, spec: &Spec) -> (i32, String) {
    let (mut out, stdio) = capture();
    let started = berth_runtime::start(id, spec, stdio).expect("start");
    let mut c = Running::new(started, spec);
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    let code = c.wait();
    (code, s)
}

#[allow(clippy::useless_conversion)] // f_type's type differs between architectures
fn cgroup_v1(controller: &str) -> Option<PathBuf> {
    let p = Path::new("/sys/fs/cgroup").join(controller);
    let is_v2 = rustix::fs::statfs("/sys/fs/cgroup")
        .map(|s| i64::from(s.f_type) == 0x6367_7270)
        .unwrap_or(false);
    (!is_v2 && p.join("cgroup.procs").exists()).then_some(p)
}

fn cgroup_file(id: &str, controller: &str, v1: &str, v2: &str) -> PathBuf {
    match cgroup_v1(controller) {
        Some(p) => p.join(format!("berth-rt-test-{id}")).join(v1),
        None => Path::new("/sys/fs/cgroup")
            .join(format!("berth-rt-test-{id}"))
            .join(v2),
    }
}

#[test]
fn init_is_pid1_with_hostname_and_only_the_rootfs() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("pid1");
    let spec = to_spec(base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "echo pid=$$; hostname; ls /; cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
        ],
    ));
    let (code, out) = run(&id, &spec);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    assert_eq!(lines[1], "testhost", "{out}");
    let listing: Vec<&str> = lines[2..lines.len() - 1].to_vec();
    assert_eq!(
        listing,
        vec![
            "bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr", "var"
        ],
        "{out}"
    );
    assert_eq!(lines.last().unwrap(), &"0", "sysctl: {out}");
    // the cgroup is gone after delete (done by Running's drop in run())
    assert!(!cgroup_file(&id, "memory", "", "").exists());
}

#[test]
fn a_new_network_namespace_has_loopback_up() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("lo");
    // `ip` from busybox reads the link state; `lo` is the only interface.
    let spec = to_spec(base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags; ls /sys/class/net",
        ],
    ));
    let (code, out) = run(&id, &spec);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    // operstate of lo is "unknown" when up; bit 0 of flags is IFF_UP.
    let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down: {out}");
    assert_eq!(lines[2..], ["lo"], "{out}");
}

#[test]
fn capabilities_no_new_privs_and_seccomp_show_in_status() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("status");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &[
            "grep",
            "-E",
            "^(CapEff|CapBnd|NoNewPrivs|Seccomp):",
            "/proc/self/status",
        ],
    );
    v["process"]["noNewPrivileges"] = json!(true);
    let (code, out) = run(&id, &to_spec(v.clone()));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");

    // without no_new_privs the filter is loaded while CAP_SYS_ADMIN is held
    let id = unique("status-nonnp");
    v["process"]["noNewPrivileges"] = json!(false);
    v["linux"]["cgroupsPath"] = json!(format!("/berth-rt-test-{id}"));
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
}

#[test]
fn seccomp_rules_take_effect() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("seccomp");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &["sh", "-c", "mkdir /tmp/blocked; echo rc=$?; ls -d /tmp"],
    );
    v["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
    });
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(!rootfs.path().join("tmp/blocked").exists());

    // argument conditions and a kill action
    let id = unique("seccomp-args");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "linux32 true; echo a=$?; linux64 true; echo b=$?; nproc; echo k=$?",
        ],
    );
    v["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["sched_getaffinity"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    });
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("a=1"),
        "personality(PER_LINUX32) not refused: {out}"
    );
    assert!(out.contains("b=0"), "personality(PER_LINUX) refused: {out}");
    assert!(out.contains("k=159"), "nproc not killed by SIGSYS: {out}");

    // Docker's profile: clone3 gives ENOSYS (busybox's libc falls back to
    // clone), plain fork still works, and personality(0xffff) is refused.
    let id = unique("seccomp-default");
    let v = base_spec(
        &id,
        rootfs.path(),
        &["sh", "-c", "(echo child); linux32 true; echo rc=$?"],
    );
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("child"), "{out}");
    // linux32 = personality(PER_LINUX32 = 8), allowed by the profile
    assert!(out.contains("rc=0"), "{out}");
}

#[test]
fn memory_pids_cpu_limits_are_written() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("limits");
    let mut v = base_spec(&id, rootfs.path(), &["sleep", "30"]);
    v["linux"]["resources"]["memory"] = json!({"limit": 67108864, "swap": 134217728});
    v["linux"]["resources"]["pids"] = json!({"limit": 100});
    v["linux"]["resources"]["cpu"] = json!({"shares": 512, "quota": 50000, "period": 100000});
    let spec = to_spec(v);
    let started = berth_runtime::start(&id, &spec, capture().1).expect("start");
    let c = Running::new(started, &spec);
    let mem = cgroup_file(&id, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(std::fs::read_to_string(&mem).unwrap().trim(), "67108864");
    let pids = cgroup_file(&id, "pids", "pids.max", "pids.max");
    assert_eq!(std::fs::read_to_string(&pids).unwrap().trim(), "100");
    if cgroup_v1("cpu").is_some() {
        let q = cgroup_file(&id, "cpu", "cpu.cfs_quota_us", "");
        assert_eq!(std::fs::read_to_string(&q).unwrap().trim(), "50000");
        let s = cgroup_file(&id, "cpu", "cpu.shares", "");
        assert_eq!(std::fs::read_to_string(&s).unwrap().trim(), "512");
    } else {
        let m = cgroup_file(&id, "cpu", "", "cpu.max");
        assert_eq!(std::fs::read_to_string(&m).unwrap().trim(), "50000 100000");
    }
    // the init is in the cgroup
    let procs = mem.with_file_name("cgroup.procs");
    assert!(
        std::fs::read_to_string(&procs)
            .unwrap()
            .lines()
            .any(|l| l == c.pid.to_string()),
        "init {} not in {}",
        c.pid,
        procs.display()
    );

    // inside: the container sees its own limit under /sys/fs/cgroup
    let mut p = berth_runtime::Process::default();
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; ls /sys/fs/cgroup".into(),
    ]));
    p.set_capabilities(spec.process().as_ref().unwrap().capabilities().clone());
    let (mut out, stdio) = capture();
    let e = berth_runtime::exec(&id, &spec, c.pid, &p, stdio).expect("exec");
    let mut ec = Running::exec(e);
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    assert_eq!(ec.wait(), 0, "{s}");
    assert_eq!(s.lines().next(), Some("67108864"), "{s}");

    // docker update
    let res: berth_runtime::LinuxResources =
        serde_json::from_value(json!({"pids": {"limit": 42}})).unwrap();
    berth_runtime::update_resources(&spec, &res).unwrap();
    assert_eq!(std::fs::read_to_string(&pids).unwrap().trim(), "42");
    drop(c);
    assert!(!mem.exists(), "cgroup {} left behind", mem.display());
}

fn read_counter(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

#[test]
fn freeze_stops_and_thaw_resumes() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("freeze");
    let spec = to_spec(base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; usleep 5000; done",
        ],
    ));
    let started = berth_runtime::start(&id, &spec, capture().1).expect("start");
    let _c = Running::new(started, &spec);
    let counter = rootfs.path().join("tmp/counter");
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_counter(&counter).unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "counter never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    berth_runtime::freeze(&spec, true).unwrap();
    let a = read_counter(&counter).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let b = read_counter(&counter).unwrap();
    assert_eq!(a, b, "counter moved while frozen");
    berth_runtime::freeze(&spec, false).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let c = read_counter(&counter).unwrap();
    assert!(c > b, "counter did not resume: {b} -> {c}");
}

#[test]
fn exec_joins_the_running_container() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("exec");
    let spec = to_spec(base_spec(&id, rootfs.path(), &["sleep", "30"]));
    let started = berth_runtime::start(&id, &spec, capture().1).expect("start");
    let c = Running::new(started, &spec);

    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "hostname; echo me=$$; ps -o pid,args; cat /etc/hello; grep CapEff /proc/self/status; pwd"
            .into(),
    ]));
    p.set_cwd("/etc".into());
    let (mut out, stdio) = capture();
    let e = berth_runtime::exec(&id, &spec, c.pid, &p, stdio).expect("exec");
    assert_ne!(e.pid, c.pid);
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    let mut ec = Running::exec(e);
    assert_eq!(ec.wait(), 0, "{s}");
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "testhost", "{s}");
    let me: i32 = lines[1].trim_start_matches("me=").parse().unwrap();
    assert!(me > 1, "exec'd process should not be pid 1: {s}");
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sleep", "30"]),
        "ps should list the init as pid 1: {s}"
    );
    assert!(s.contains("hello from the rootfs"), "{s}");
    assert!(s.contains("CapEff:\t00000000a80425fb"), "{s}");
    assert_eq!(lines.last(), Some(&"/etc"), "{s}");

    // a missing executable in exec: 127, and nothing left behind
    let mut p2 = p.clone();
    p2.set_args(Some(vec!["nosuchcmd".into()]));
    let err = berth_runtime::exec(&id, &spec, c.pid, &p2, capture().1).unwrap_err();
    assert_eq!(berth_runtime::exit_code_for(&err), Some(127), "{err}");
    drop(c);
}

#[test]
fn missing_executable_is_127_and_leaves_nothing() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("enoent");
    let spec = to_spec(base_spec(&id, rootfs.path(), &["nosuchcmd", "arg"]));
    let err = berth_runtime::start(&id, &spec, capture().1).unwrap_err();
    assert_eq!(
        err.message,
        r#"exec: "nosuchcmd": executable file not found in $PATH"#
    );
    assert_eq!(berth_runtime::exit_code_for(&err), Some(127));
    assert!(!cgroup_file(&id, "memory", "", "").exists());

    let spec = to_spec(base_spec(&id, rootfs.path(), &["/no/such/binary"]));
    let err = berth_runtime::start(&id, &spec, capture().1).unwrap_err();
    assert_eq!(berth_runtime::exit_code_for(&err), Some(127), "{err}");
}

#[test]
fn non_executable_is_126() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("eacces");
    for arg in ["/etc", "/etc/passwd"] {
        let spec = to_spec(base_spec(&id, rootfs.path(), &[arg]));
        let err = berth_runtime::start(&id, &spec, capture().1).unwrap_err();
        assert_eq!(err.message, format!("exec: {arg:?}: permission denied"));
        assert_eq!(berth_runtime::exit_code_for(&err), Some(126));
    }
}

#[test]
fn user_and_groups_switch() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("user");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; grep CapEff /proc/self/status; touch /root/x; echo rc=$?",
        ],
    );
    v["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]});
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_eq!(lines[1], "1000", "{out}");
    assert_eq!(lines[2], "1000 10 20", "{out}");
    // a non-root user keeps no effective capabilities after execve
    assert_eq!(lines[3], "CapEff:\t0000000000000000", "{out}");
    assert!(out.contains("rc=1"), "uid 1000 could write /root: {out}");
}

#[test]
fn rlimits_apply_and_clamp() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("rlimit");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c"],
    );
    v["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 1234, "hard": 2048},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
    ]);
    let (code, out) = run(&id, &to_spec(v.clone()));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1234", "2048", "0"],
        "{out}"
    );

    // a hard limit above ours is clamped (no CAP_SYS_RESOURCE), not an error
    let (_, our_hard) = {
        let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        (l.current, l.maximum)
    };
    let have_sys_resource = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .map(|l| u64::from_str_radix(l[7..].trim(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    if !have_sys_resource && let Some(h) = our_hard {
        let id = unique("rlimit-clamp");
        v["linux"]["cgroupsPath"] = json!(format!("/berth-rt-test-{id}"));
        v["process"]["rlimits"] =
            json!([{"type": "RLIMIT_NOFILE", "soft": h + 10, "hard": h + 1000}]);
        let (code, out) = run(&id, &to_spec(v));
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            out.lines().take(2).collect::<Vec<_>>(),
            [h.to_string(), h.to_string()]
        );
    }
}

#[test]
fn masked_readonly_paths_devices_and_readonly_root() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("paths");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "wc -c < $MASKED_FILE; ls $MASKED_DIR | wc -l; \
             echo x > /proc/sys/kernel/domainname || echo ro-sys; \
             touch /newfile || echo ro-root; \
             head -c 3 /dev/zero | wc -c; echo ok > /dev/null && echo null-ok; \
             ls /dev; readlink /dev/ptmx; readlink /dev/fd; \
             touch /dev/shm/x && echo shm-ok",
        ],
    );
    // masked paths that exist on this kernel
    let file = [
        "/proc/kcore",
        "/proc/interrupts",
        "/proc/timer_list",
        "/proc/keys",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("some masked /proc file exists");
    let dir = ["/sys/firmware", "/proc/acpi", "/proc/scsi"]
        .into_iter()
        .find(|p| Path::new(p).is_dir())
        .unwrap_or("/nonexistent");
    v["process"]["env"].as_array_mut().unwrap().extend([
        json!(format!("MASKED_FILE={file}")),
        json!(format!("MASKED_DIR={dir}")),
    ]);
    v["root"]["readonly"] = json!(true);
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{file} must be masked: {out}");
    if dir != "/nonexistent" {
        assert_eq!(lines[1], "0", "{dir} must be masked: {out}");
    }
    assert!(out.contains("ro-sys"), "{out}");
    assert!(out.contains("ro-root"), "{out}");
    assert!(!rootfs.path().join("newfile").exists());
    assert!(out.contains("\n3\n"), "{out}");
    assert!(out.contains("null-ok"), "{out}");
    for dev in [
        "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
        "tty", "urandom", "zero",
    ] {
        assert!(lines.contains(&dev), "/dev/{dev} missing: {out}");
    }
    assert!(out.contains("pts/ptmx"), "{out}");
    assert!(out.contains("/proc/self/fd"), "{out}");
    assert!(out.contains("shm-ok"), "{out}");
}

#[test]
fn bind_mounts_with_readonly_option() {
    require_root!();
    let rootfs = Rootfs::new();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("file"), "bound\n").unwrap();
    let single = data.path().join("single");
    std::fs::write(&single, "single file\n").unwrap();
    let id = unique("bind");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "cat /data/file; touch /data/new || echo ro-bind; cat /etc/single; echo rw > /rw/w",
        ],
    );
    let rw = tempfile::tempdir().unwrap();
    v["mounts"].as_array_mut().unwrap().extend([
        json!({"destination": "/data", "type": "bind", "source": data.path(),
               "options": ["rbind", "ro", "rprivate"]}),
        json!({"destination": "/etc/single", "type": "bind", "source": single,
               "options": ["rbind", "rprivate"]}),
        json!({"destination": "/rw", "type": "bind", "source": rw.path(),
               "options": ["rbind", "rprivate"]}),
    ]);
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("bound\n"), "{out}");
    assert!(out.contains("ro-bind"), "{out}");
    assert!(out.contains("single file"), "{out}");
    assert!(!data.path().join("new").exists());
    assert_eq!(
        std::fs::read_to_string(rw.path().join("w")).unwrap(),
        "rw\n"
    );
    // the mount destinations were created inside the rootfs, not elsewhere
    assert!(rootfs.path().join("data").is_dir());
    assert!(rootfs.path().join("etc/single").is_file());
}

#[test]
fn symlinked_mount_destination_stays_inside_rootfs() {
    require_root!();
    let rootfs = Rootfs::new();
    let outside = tempfile::tempdir().unwrap();
    // an image with /evil -> <a host directory>: mounting on /evil/sub must
    // land in <rootfs>/<host dir>/sub, never in the host directory
    std::os::unix::fs::symlink(outside.path(), rootfs.path().join("evil")).unwrap();
    let id = unique("symlink");
    let mut v = base_spec(&id, rootfs.path(), &["true"]);
    v["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"}));
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    assert!(
        !outside.path().join("sub").exists(),
        "mount escaped the rootfs"
    );
    let inside = rootfs
        .path()
        .join(outside.path().strip_prefix("/").unwrap())
        .join("sub");
    assert!(inside.is_dir(), "{} not created", inside.display());
}

#[test]
fn terminal_gets_a_controlling_tty() {
    require_root!();
    let master = rustix::pty::openpt(
        rustix::pty::OpenptFlags::RDWR
            | rustix::pty::OpenptFlags::NOCTTY
            | rustix::pty::OpenptFlags::CLOEXEC,
    )
    .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap()
        .into();
    let rootfs = Rootfs::new();
    let id = unique("tty");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "test -t 0 && echo isatty; ls -l /dev/console | wc -l; echo done",
        ],
    );
    v["process"]["terminal"] = json!(true);
    let spec = to_spec(v);
    let stdio = Stdio {
        stdin: slave.try_clone().unwrap(),
        stdout: slave.try_clone().unwrap(),
        stderr: slave,
    };
    let started = berth_runtime::start(&id, &spec, stdio).expect("start");
    let mut c = Running::new(started, &spec);
    let mut m = std::fs::File::from(master);
    let mut s = String::new();
    let mut buf = [0u8; 1024];
    // the master reads EIO once every slave fd is closed
    while let Ok(n) = m.read(&mut buf) {
        if n == 0 {
            break;
        }
        s.push_str(&String::from_utf8_lossy(&buf[..n]));
        if s.contains("done") {
            break;
        }
    }
    assert_eq!(c.wait(), 0, "{s}");
    assert!(s.contains("isatty"), "{s}");
    assert!(s.contains("1\r\n"), "/dev/console missing: {s}");
}

#[test]
fn oom_kill_is_reported() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("oom");
    // tail buffers a "line" of /dev/zero forever: it grows until killed
    let mut v = base_spec(&id, rootfs.path(), &["tail", "/dev/zero"]);
    v["linux"]["resources"]["memory"] = json!({"limit": 16777216, "swap": 16777216});
    let spec = to_spec(v);
    let (code, out) = {
        let (mut out, stdio) = capture();
        let started = berth_runtime::start(&id, &spec, stdio).expect("start");
        let mut c = Running::new(started, &spec);
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        let code = c.wait();
        assert!(
            berth_runtime::cgroup_oom_killed(&spec),
            "oom kill not reported (exit {code})"
        );
        (code, s)
    };
    assert_eq!(code, 128 + 9, "{out}");
}

#[test]
fn spec_errors_come_back_before_forking() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("bad");
    let mut v = base_spec(&id, rootfs.path(), &["true"]);
    v["root"]["path"] = json!("relative/rootfs");
    let e = berth_runtime::start(&id, &to_spec(v), capture().1).unwrap_err();
    assert_eq!(e.kind, berth_runtime::ErrorKind::InvalidArgument, "{e}");

    let mut v = base_spec(&id, rootfs.path(), &["true"]);
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    let e = berth_runtime::start(&id, &to_spec(v), capture().1).unwrap_err();
    assert_eq!(e.kind, berth_runtime::ErrorKind::NotImplemented, "{e}");

    // a failing mount inside the child comes back over the sync socket
    let mut v = base_spec(&id, rootfs.path(), &["true"]);
    v["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/x", "type": "bind", "source": "/no/such/source", "options": ["rbind"]}),
    );
    let e = berth_runtime::start(&id, &to_spec(v), capture().1).unwrap_err();
    assert!(e.message.contains("/no/such/source"), "{e}");
    assert!(!cgroup_file(&id, "memory", "", "").exists());
}

#[test]
fn cgroup_namespace_hides_the_host_cgroup_paths() {
    require_root!();
    let rootfs = Rootfs::new();
    let id = unique("cgns");
    let mut v = base_spec(
        &id,
        rootfs.path(),
        &[
            "sh",
            "-c",
            "cat /proc/self/cgroup; echo ---; ls /sys/fs/cgroup; echo ---; touch /sys/fs/cgroup/x || echo ro",
        ],
    );
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "cgroup"}));
    let (code, out) = run(&id, &to_spec(v));
    assert_eq!(code, 0, "{out}");
    let mut parts = out.split("---\n");
    let cgroups = parts.next().unwrap();
    for l in cgroups.lines() {
        assert!(l.ends_with(":/"), "cgroup path not hidden: {l}\n{out}");
    }
    let listing = parts.next().unwrap();
    if cgroup_v1("memory").is_some() {
        assert!(listing.lines().any(|l| l == "memory"), "{out}");
    } else {
        assert!(listing.lines().any(|l| l == "cgroup.procs"), "{out}");
    }
    assert!(parts.next().unwrap().contains("ro"), "{out}");
}

/// Check that every line of /proc/<pid>/cgroup (every hierarchy, v1 and
/// v2) ends in `path`.
fn assert_in_cgroup_everywhere(pid: i32, path: &str) {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        text.lines().count(),
        own.lines().count(),
        "pid {pid}: not every hierarchy of\n{own}\nis listed:\n{text}"
    );
    for l in text.lines() {
        assert!(
            l.ends_with(&format!(":{path}")),
            "pid {pid}: {l} is not in {path}:\n{text}"
        );
    }
}

#[test]
fn started_and_exec_processes_are_in_the_container_cgroup_everywhere() {
    require_root!();
    // The harness runs this test on a thread of its own, so the runtime
    // cannot clone straight into the v2 cgroup: the parent writes its
    // cgroup.procs while the child joins each v1 hierarchy itself (the
    // single-threaded shim's path is tested in berth-shim).
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
    assert!(threads > 1, "expected a multi-threaded test harness");
    let rootfs = Rootfs::new();
    let id = unique("cgjoin");
    let mut v = base_spec(&id, rootfs.path(), &["sleep", "30"]);
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "cgroup"}));
    let spec = to_spec(v);
    let started = berth_runtime::start(&id, &spec, capture().1).expect("start");
    let c = Running::new(started, &spec);
    let caps = spec.process().as_ref().unwrap().capabilities().clone();
    let mut p = berth_runtime::Process::default();
    p.set_args(Some(vec!["sleep".into(), "30".into()]));
    p.set_capabilities(caps.clone());
    let ec = Running::exec(berth_runtime::exec(&id, &spec, c.pid, &p, capture().1).expect("exec"));
    let path = format!("/berth-rt-test-{id}");
    assert_in_cgroup_everywhere(c.pid, &path);
    assert_in_cgroup_everywhere(ec.pid, &path);

    // Inside, through the container's cgroup namespace, both are at its
    // root: the namespace was made (or joined) only once they were in.
    let mut p = berth_runtime::Process::default();
    p.set_args(Some(vec![
        "cat".into(),
        "/proc/self/cgroup".into(),
        "/proc/1/cgroup".into(),
    ]));
    p.set_capabilities(caps);
    let (mut out, stdio) = capture();
    let mut cat = Running::exec(berth_runtime::exec(&id, &spec, c.pid, &p, stdio).expect("exec"));
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    assert_eq!(cat.wait(), 0, "{s}");
    assert!(!s.is_empty());
    assert!(s.lines().all(|l| l.ends_with(":/")), "{s}");

    drop(ec);
    drop(c);
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten();
    for h in hierarchies
        .map(|h| h.path())
        .chain([PathBuf::from("/sys/fs/cgroup")])
    {
        let d = h.join(path.trim_start_matches('/'));
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
}

/// Sets the calling thread's scheduling policy (a new process inherits
/// it) and puts SCHED_OTHER back on drop.
struct Policy;

impl Policy {
    fn set(policy: i32, prio: i32) -> std::io::Result<Policy> {
        let p = libc::sched_param {
            sched_priority: prio,
        };
        // SAFETY: p is a valid sched_param; pid 0 is the calling thread.
        if unsafe { libc::sched_setscheduler(0, policy, &p) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Policy)
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let p = libc::sched_param { sched_priority: 0 };
        // SAFETY: as in set.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &p) };
    }
}

#[test]
fn a_failed_cgroup_join_is_reported_and_leaves_nothing() {
    require_root!();
    // A real-time task may not join a v1 cpu cgroup that has no real-time
    // runtime (a new one's is 0): the container process's own write to
    // `tasks` fails. Only where the kernel schedules real-time groups.
    let Some(cpu) = cgroup_v1("cpu").filter(|c| c.join("cpu.rt_runtime_us").exists()) else {
        eprintln!("skipping: no v1 cpu hierarchy with real-time group scheduling");
        return;
    };
    let rootfs = Rootfs::new();
    let id = unique("rtjoin");
    let spec = to_spec(base_spec(&id, rootfs.path(), &["true"]));
    let r = {
        let _rt = match Policy::set(libc::SCHED_FIFO, 1) {
            Ok(p) => p,
            Err(e) => {
                // Our own cgroup may grant no real-time runtime either.
                eprintln!("skipping: cannot become a real-time task: {e}");
                return;
            }
        };
        berth_runtime::start(&id, &spec, capture().1)
    };
    let e = match r {
        Ok(started) => {
            drop(Running::new(started, &spec));
            panic!("a real-time process joined {}", cpu.display());
        }
        Err(e) => e,
    };
    let tasks = cpu.join(format!("berth-rt-test-{id}/tasks"));
    assert_eq!(
        e.message,
        format!("write \"0\" to {}: invalid argument", tasks.display())
    );
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten();
    for h in hierarchies.map(|h| h.path()) {
        let d = h.join(format!("berth-rt-test-{id}"));
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
}

/// An overlay mount on the host, unmounted on drop.
struct Overlay {
    merged: PathBuf,
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn overlay_rootfs_as_berthd_mounts_it() {
    require_root!();
    let lower = Rootfs::new();
    let work = tempfile::tempdir().unwrap();
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir(work.path().join(d)).unwrap();
    }
    let merged = work.path().join("merged");
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.path().display(),
        work.path().join("upper").display(),
        work.path().join("work").display()
    );
    rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(std::ffi::CString::new(data).unwrap().as_c_str()),
    )
    .expect("mount overlay");
    let _ov = Overlay {
        merged: merged.clone(),
    };
    let id = unique("overlay");
    let spec = to_spec(base_spec(
        &id,
        &merged,
        &["sh", "-c", "echo written > /root/file; cat /etc/hello"],
    ));
    let (code, out) = run(&id, &spec);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello from the rootfs"), "{out}");
    // the write went to the upper layer, the lower layer is untouched
    assert_eq!(
        std::fs::read_to_string(work.path().join("upper/root/file")).unwrap(),
        "written\n"
    );
    assert!(!lower.path().join("root/file").exists());
}
