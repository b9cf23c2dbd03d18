//! Containers through the real docker CLI against berthd: the lifecycle,
//! what a process sees inside, exec, logs, signals, errors, and a daemon
//! killed under running containers.

use std::time::Duration;

use berth_e2e::{Daemon, require_root, wait_for};

/// A daemon with busybox loaded.
fn daemon() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

#[test]
fn run_prints_output_and_exits_with_the_container_code() {
    require_root!();
    let d = daemon();
    let out = d.docker(["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(out.ok(), "hello\n");
    let out = d.docker([
        "run",
        "--name",
        "three",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.code(), 3, "{out}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    let out = d.docker(["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(out.ok().starts_with("three Exited (3)"), "{out}");
    // --rm removed the first container.
    assert_eq!(d.docker(["ps", "-aq"]).ok().lines().count(), 1);
}

#[test]
fn the_container_sees_its_own_pid_1_hostname_and_rootfs() {
    require_root!();
    let d = daemon();
    let out = d.docker([
        "run",
        "--rm",
        "--hostname",
        "boxy",
        "busybox",
        "sh",
        "-c",
        "echo $$; hostname; ls /; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines[0], "1", "{out}");
    assert_eq!(lines[1], "boxy", "{out}");
    assert!(
        lines.contains(&"bin") && lines.contains(&"proc") && !lines.contains(&"work"),
        "{out}"
    );
    assert!(out.stdout.contains("sh -c"), "{out}");
}

#[test]
fn files_persist_across_stop_and_start_and_go_with_rm() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "--name",
        "keep",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data.txt",
    ])
    .ok();
    let out = d.docker(["start", "-a", "keep"]);
    assert_eq!(out.code(), 0, "{out}");
    let id = d
        .docker(["inspect", "-f", "{{.Id}}", "keep"])
        .ok()
        .trim()
        .to_string();
    let upper = d.root.join("containers").join(&id).join("upper/data.txt");
    assert_eq!(std::fs::read_to_string(&upper).unwrap(), "kept\n");
    d.docker(["rm", "keep"]).ok();
    assert!(
        !d.root.join("containers").join(&id).exists(),
        "the read-write layer must go with rm"
    );
}

#[test]
fn detached_containers_log_exec_stop_and_remove() {
    require_root!();
    let d = daemon();
    let id = d
        .docker([
            "run",
            "-d",
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
        ])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let ps = d.docker(["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps.ok().trim(), "web running");
    assert!(
        wait_for(Duration::from_secs(5), || d
            .docker(["logs", "web"])
            .stdout
            .contains("started")
            .then_some(()))
        .is_some()
    );
    let out = d.docker(["exec", "web", "sh", "-c", "echo in-exec; exit 9"]);
    assert_eq!(out.code(), 9, "{out}");
    assert_eq!(out.stdout, "in-exec\n");
    let out = d.docker(["exec", "web", "hostname"]);
    assert_eq!(out.ok().trim(), &id[..12]);
    let top = d.docker(["top", "web"]);
    assert!(
        top.ok().contains("sleep") || top.stdout.contains("sh -c"),
        "{top}"
    );
    // rm of a running container needs force.
    let out = d.docker(["rm", "web"]);
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("container is running"), "{out}");
    d.docker(["stop", "web"]).ok();
    let logs = d.docker(["logs", "web"]);
    assert!(
        logs.ok().contains("bye"),
        "the stop signal reached the trap: {logs}"
    );
    assert_eq!(
        d.docker(["inspect", "-f", "{{.State.ExitCode}}", "web"])
            .ok()
            .trim(),
        "0"
    );
    d.docker(["rm", "web"]).ok();
}

#[test]
fn stop_kills_a_process_that_ignores_sigterm() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "-d",
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ])
    .ok();
    let t = std::time::Instant::now();
    d.docker(["stop", "-t", "1", "stubborn"]).ok();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "stop returned before the timeout"
    );
    assert_eq!(
        d.docker(["inspect", "-f", "{{.State.ExitCode}}", "stubborn"])
            .ok()
            .trim(),
        "137"
    );
}

#[test]
fn kill_pause_and_unpause() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "-d",
        "--name",
        "pz",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /n; sleep 0.05; done",
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(300));
    d.docker(["pause", "pz"]).ok();
    assert_eq!(
        d.docker(["inspect", "-f", "{{.State.Status}}", "pz"])
            .ok()
            .trim(),
        "paused"
    );
    let a = d
        .docker(["inspect", "-f", "{{.GraphDriver.Data.MergedDir}}", "pz"])
        .ok()
        .trim()
        .to_string();
    let n1 = std::fs::read_to_string(format!("{a}/n")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let n2 = std::fs::read_to_string(format!("{a}/n")).unwrap();
    assert_eq!(n1, n2, "a paused container kept running");
    d.docker(["unpause", "pz"]).ok();
    std::thread::sleep(Duration::from_millis(300));
    let n3 = std::fs::read_to_string(format!("{a}/n")).unwrap();
    assert_ne!(n2, n3, "unpause did not resume");
    let out = d.docker(["kill", "-s", "BOGUS", "pz"]);
    assert!(out.stderr.contains("Invalid signal: BOGUS"), "{out}");
    d.docker(["kill", "pz"]).ok();
    let code = d.docker(["wait", "pz"]).ok().trim().to_string();
    assert_eq!(code, "137");
}

#[test]
fn bad_input_gets_dockers_errors() {
    require_root!();
    let d = daemon();
    let out = d.docker(["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(out.code(), 127, "{out}");
    assert!(out.stderr.contains("executable file not found"), "{out}");
    let out = d.docker(["run", "--rm", "busybox", "/etc"]);
    assert_eq!(out.code(), 126, "{out}");
    // A missing image is pulled; from a registry that is not there (a
    // closed loopback port: tests never reach outside) that fails with 125.
    let out = d.docker(["run", "--rm", "127.0.0.1:1/nosuchimage:1", "true"]);
    assert_eq!(out.code(), 125, "{out}");
    assert!(
        out.stderr
            .contains("Unable to find image '127.0.0.1:1/nosuchimage:1' locally"),
        "{out}"
    );
    d.docker(["create", "--name", "dup", "busybox"]).ok();
    let out = d.docker(["create", "--name", "dup", "busybox"]);
    assert!(out.stderr.contains("is already in use"), "{out}");
    let out = d.docker(["create", "--name", "bad name", "busybox"]);
    assert!(out.stderr.contains("Invalid container name"), "{out}");
    let out = d.docker(["run", "--rm", "-u", "nosuchuser", "busybox", "true"]);
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("nosuchuser"), "{out}");
    let out = d.docker(["rm", "nonexistent"]);
    assert!(
        out.stderr.contains("No such container: nonexistent"),
        "{out}"
    );
    // An image a container uses cannot be removed.
    let out = d.docker(["rmi", "busybox"]);
    assert!(out.stderr.contains("container") && out.code() != 0, "{out}");
}

#[test]
fn user_and_memory_limit() {
    require_root!();
    let d = daemon();
    let out = d.docker(["run", "--rm", "-u", "1000:1000", "busybox", "id"]);
    assert!(out.ok().starts_with("uid=1000 gid=1000"), "{out}");
    let out = d.docker(["run", "--rm", "-m", "64m", "busybox", "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"]);
    assert_eq!(out.ok().trim(), "67108864", "{out}");
    // Docker's default capability set and seccomp profile apply.
    let out = d.docker([
        "run",
        "--rm",
        "busybox",
        "grep",
        "-E",
        "^(CapEff|Seccomp):",
        "/proc/self/status",
    ]);
    assert_eq!(
        out.ok(),
        "CapEff:\t00000000a80425fb\nSeccomp:\t2\n",
        "{out}"
    );
}

#[test]
fn containers_survive_a_killed_daemon() {
    require_root!();
    let mut d = daemon();
    d.docker([
        "run",
        "-d",
        "--name",
        "long",
        "busybox",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.2; done",
    ])
    .ok();
    d.docker([
        "run",
        "-d",
        "--name",
        "short",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 7",
    ])
    .ok();
    let pid = d
        .docker(["inspect", "-f", "{{.State.Pid}}", "long"])
        .ok()
        .trim()
        .parse::<i32>()
        .unwrap();
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with berthd"
    );
    d.start_again();
    assert_eq!(
        d.docker(["inspect", "-f", "{{.State.Status}}", "long"])
            .ok()
            .trim(),
        "running"
    );
    assert_eq!(
        d.docker([
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "short"
        ])
        .ok()
        .trim(),
        "exited 7"
    );
    let out = d.docker(["exec", "long", "echo", "still here"]);
    assert_eq!(out.ok().trim(), "still here");
    assert!(d.docker(["logs", "long"]).ok().contains("tick"));
    d.docker(["stop", "-t", "1", "long"]).ok();
    assert_eq!(
        d.docker(["inspect", "-f", "{{.State.Running}}", "long"])
            .ok()
            .trim(),
        "false"
    );
}

#[test]
fn restart_policies_restart_until_stopped() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "-d",
        "--restart",
        "on-failure:2",
        "--name",
        "flaky",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ])
    .ok();
    let done = wait_for(Duration::from_secs(10), || {
        let s = d
            .docker([
                "inspect",
                "-f",
                "{{.RestartCount}} {{.State.Status}}",
                "flaky",
            ])
            .stdout;
        (s.trim() == "2 exited").then_some(())
    });
    assert!(done.is_some(), "on-failure:2 must restart twice then stop");
    d.docker([
        "run",
        "-d",
        "--restart",
        "always",
        "--name",
        "loop",
        "busybox",
        "sh",
        "-c",
        "sleep 0.1",
    ])
    .ok();
    let restarted = wait_for(Duration::from_secs(10), || {
        let n: u64 = d
            .docker(["inspect", "-f", "{{.RestartCount}}", "loop"])
            .stdout
            .trim()
            .parse()
            .unwrap_or(0);
        (n >= 2).then_some(())
    });
    assert!(
        restarted.is_some(),
        "always must restart a container that exits"
    );
    d.docker(["stop", "-t", "1", "loop"]).ok();
    std::thread::sleep(Duration::from_millis(1500));
    let s = d
        .docker(["inspect", "-f", "{{.State.Status}}", "loop"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(s, "exited", "a stopped container must stay stopped");
    let out = d.docker(["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_ne!(out.code(), 0, "{out}");
}

#[test]
fn run_rm_returns_the_exit_code_with_both_clients() {
    require_root!();
    let d = daemon();
    // `run --rm` waits for "removed"; the code must survive the removal.
    for _ in 0..3 {
        let out = d.docker(["run", "--rm", "busybox", "sh", "-c", "exit 3"]);
        assert_eq!(out.code(), 3, "{out}");
        let out = d.berth(["run", "--rm", "busybox", "sh", "-c", "exit 4"]);
        assert_eq!(out.code(), 4, "{out}");
    }
    assert_eq!(d.docker(["ps", "-aq"]).ok(), "");
}

#[test]
fn init_is_pid_1_reaps_orphans_and_forwards_signals() {
    require_root!();
    let d = daemon();
    let out = d.docker([
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        // The inner sh exits at once: its sleep is orphaned to PID 1,
        // which must reap it when it ends (no zombie left).
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; sh -c 'sleep 0.2 &'; sleep 1; ps -o stat,comm | grep -c '^Z' || true",
    ]);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(
        lines[0],
        "/sbin/docker-init -- sh -c cat /proc/1/cmdline | tr '\\0' ' '; echo; sh -c 'sleep 0.2 &'; sleep 1; ps -o stat,comm | grep -c '^Z' || true ",
        "{out}"
    );
    assert_eq!(lines[1], "0", "no zombie: {out}");
    // The child's exit code is the container's.
    let out = d.berth(["run", "--rm", "--init", "busybox", "sh", "-c", "exit 5"]);
    assert_eq!(out.code(), 5, "{out}");
    let out = d.docker(["run", "--rm", "--init", "busybox", "nosuchcmd"]);
    assert_eq!(out.code(), 127, "{out}");
    // `stop` sends SIGTERM to PID 1, which passes it on: a plain `sleep`
    // (which as PID 1 would ignore it) ends at once, with 128 + 15.
    d.docker([
        "run", "-d", "--name", "sleeper", "--init", "busybox", "sleep", "100",
    ])
    .ok();
    let t = std::time::Instant::now();
    d.docker(["stop", "sleeper"]).ok();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let st = d.get_json("/containers/sleeper/json");
    assert_eq!(st["State"]["ExitCode"], 143, "{st}");
    assert_eq!(st["HostConfig"]["Init"], true);
    assert_eq!(st["Path"], "sleep");
}

#[test]
fn memory_limit_oom_kill_is_reported() {
    require_root!();
    let d = daemon();
    // busybox tail keeps all of an endless line in memory.
    let out = d.docker([
        "run",
        "--name",
        "hog",
        "-m",
        "16m",
        "busybox",
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(out.code(), 137, "{out}");
    let st = d.get_json("/containers/hog/json");
    assert_eq!(st["State"]["OOMKilled"], true, "{st}");
    assert_eq!(st["State"]["ExitCode"], 137, "{st}");
    let out = d.docker(["ps", "-a", "--format", "{{.Status}}"]);
    assert!(out.ok().starts_with("Exited (137)"), "{out}");
}

#[test]
fn exec_processes_are_held_to_the_containers_limits_and_listed() {
    require_root!();
    let d = daemon();
    let id = d
        .docker([
            "run",
            "-d",
            "--name",
            "lim",
            "-m",
            "32m",
            "--pids-limit",
            "6",
            "busybox",
            "sleep",
            "1000",
        ])
        .ok()
        .trim()
        .to_string();
    // A detached exec: `top` lists it, and from the host it is in the
    // container's cgroup in every hierarchy (v1 and v2 alike).
    d.docker(["exec", "-d", "lim", "sleep", "999"]).ok();
    let top = wait_for(Duration::from_secs(5), || {
        let t = d.docker(["top", "lim"]);
        t.stdout.contains("sleep 999").then(|| t.stdout.clone())
    })
    .expect("top lists the exec'd process");
    let pid = top
        .lines()
        .find(|l| l.contains("sleep 999"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no PID column: {top}"));
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(cg.lines().count(), own.lines().count(), "{cg}");
    for l in cg.lines() {
        assert!(l.ends_with(&format!("/berth/{id}")), "{l} in\n{cg}");
    }
    // An exec'd process over the memory limit is OOM-killed, not the init.
    let out = d.docker(["exec", "lim", "tail", "/dev/zero"]);
    assert_eq!(out.code(), 137, "{out}");
    assert_eq!(
        d.docker(["inspect", "-f", "{{.State.Running}}", "lim"])
            .ok()
            .trim(),
        "true"
    );
    // Its forks count against the pids limit (two sleeps and the shell
    // already hold three of six).
    let out = d.docker([
        "exec",
        "lim",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do sleep 60 & done; echo done",
    ]);
    assert!(out.stderr.contains("can't fork"), "{out}");
    d.docker(["rm", "-f", "lim"]).ok();
    let root = std::path::Path::new("/sys/fs/cgroup");
    let hierarchies = std::fs::read_dir(root).unwrap().flatten().map(|e| e.path());
    for h in hierarchies.chain([root.to_path_buf()]) {
        let dir = h.join("berth").join(&id);
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
}

#[test]
fn log_driver_and_rotation_from_daemon_json_and_flags() {
    require_root!();
    let d = Daemon::with_config(
        r#"{"log-driver": "json-file", "log-opts": {"max-size": "2k", "max-file": "2"}}"#,
    );
    d.load_busybox();
    // 200 lines of ~100 bytes of JSON each: rotated at 2 KiB, two files kept.
    let out = d.docker([
        "run",
        "--name",
        "chatty",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done",
    ]);
    assert_eq!(out.code(), 0, "{out}");
    let st = d.get_json("/containers/chatty/json");
    assert_eq!(
        st["HostConfig"]["LogConfig"],
        serde_json::json!({"Type": "json-file", "Config": {"max-size": "2k", "max-file": "2"}})
    );
    let log = std::path::PathBuf::from(st["LogPath"].as_str().unwrap());
    let rotated = log.with_extension("log.1");
    assert!(rotated.exists(), "rotated file {}", rotated.display());
    assert!(!log.with_extension("log.2").exists());
    assert!(std::fs::metadata(&log).unwrap().len() <= 2048 + 200);
    let out = d.docker(["logs", "chatty"]);
    assert!(out.ok().ends_with("line199\n"), "{out}");
    assert!(
        !out.stdout.contains("line0\n"),
        "the oldest lines rotated away"
    );

    // A container's own options win; `none` keeps no log.
    let out = d.docker(["run", "--rm", "--log-opt", "max-size=1m", "busybox", "true"]);
    assert_eq!(out.code(), 0, "{out}");
    d.docker([
        "run",
        "--name",
        "quiet",
        "--log-driver",
        "none",
        "busybox",
        "echo",
        "hi",
    ])
    .ok();
    let out = d.docker(["logs", "quiet"]);
    assert!(
        out.stderr
            .contains("configured logging driver does not support reading"),
        "{out}"
    );
    let out = d.docker(["run", "--rm", "--log-driver", "syslog", "busybox", "true"]);
    assert!(
        out.stderr
            .contains("logger: no log driver named 'syslog' is registered"),
        "{out}"
    );
    let out = d.docker(["run", "--rm", "--log-opt", "max-sise=1m", "busybox", "true"]);
    assert!(
        out.stderr
            .contains("unknown log opt 'max-sise' for json-file log driver"),
        "{out}"
    );
}

#[test]
fn logs_tail_timestamps_since_streams_and_follow() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "--name",
        "talk",
        "busybox",
        "sh",
        "-c",
        "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo 'three \"quoted\" tab\there'; printf 'no newline'",
    ])
    .ok();
    for cli in ["docker", "berth"] {
        let run = |args: &[&str]| {
            if cli == "docker" {
                d.docker(args)
            } else {
                d.berth(args)
            }
        };
        let out = run(&["logs", "talk"]);
        assert_eq!(
            out.stdout, "one\nthree \"quoted\" tab\there\nno newline",
            "{cli}: {out}"
        );
        assert_eq!(out.stderr, "two\n", "{cli}: {out}");
        let out = run(&["logs", "--tail", "2", "talk"]);
        assert_eq!(
            out.stdout, "three \"quoted\" tab\there\nno newline",
            "{cli}: {out}"
        );
        assert_eq!(out.stderr, "", "{cli}: {out}");
        let out = run(&["logs", "-t", "--tail", "1", "talk"]);
        let (ts, rest) = out.stdout.split_once(' ').unwrap();
        assert_eq!(rest, "no newline", "{cli}: {out}");
        assert!(
            ts.ends_with('Z') && ts.contains('T') && ts.len() >= 20,
            "{cli}: {out}"
        );
        let out = run(&["logs", "--since", "2100-01-01T00:00:00Z", "talk"]);
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("", ""),
            "{cli}: {out}"
        );
    }
    // -f follows a running container until it exits.
    d.docker([
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick$i; sleep 0.3; done",
    ])
    .ok();
    let out = d.docker(["logs", "-f", "ticker"]);
    assert_eq!(out.ok(), "tick1\ntick2\ntick3\n");
    let out = d.berth(["logs", "-f", "--tail", "1", "ticker"]);
    assert_eq!(out.ok(), "tick3\n");
}
