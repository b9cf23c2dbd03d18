//! Day-two operations through the real docker CLI (and berth's) against
//! berthd: `stats` figures checked against the kernel's, `update` applied
//! live (and refused below usage), restart policy changes, healthchecks
//! with their events, list filters and berth's `--health-on-unhealthy`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::{Daemon, require_root, wait_for};
use serde_json::Value;

fn daemon() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

/// A v1 controller's directory for a container, or the v2 one.
fn cgroup_dir(controller: &str, id: &str) -> PathBuf {
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/{controller}/berth/{id}"));
    if v1.exists() {
        v1
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/berth/{id}"))
    }
}

fn read_num(p: PathBuf) -> u64 {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap_or(u64::MAX)
}

fn stat_key(dir: &Path, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// "50.23MiB" (go-units BytesSize) in MiB.
fn mib(s: &str) -> f64 {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("not a size: {s}"));
    n * match unit {
        "B" => 1.0 / 1048576.0,
        "KiB" => 1.0 / 1024.0,
        "MiB" => 1.0,
        "GiB" => 1024.0,
        other => panic!("unit {other} in {s}"),
    }
}

fn inspect(d: &Daemon, name: &str) -> Value {
    d.get_json(&format!("/containers/{name}/json"))
}

/// Waits until a container's /dev/shm/fill has `mb` MiB.
fn wait_filled(d: &Daemon, name: &str, mb: u64) {
    let want = (mb << 20).to_string();
    wait_for(Duration::from_secs(20), || {
        let out = d.docker(["exec", name, "stat", "-c", "%s", "/dev/shm/fill"]);
        (out.success() && out.stdout.trim() == want).then_some(())
    })
    .unwrap_or_else(|| panic!("{name} did not write {mb} MiB"));
}

#[test]
fn stats_no_stream_shows_busy_cpu_and_allocated_memory() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "-d",
        "--name",
        "busy",
        "busybox",
        "sh",
        "-c",
        "while :; do :; done",
    ])
    .ok();
    d.docker(["run", "-d", "--name", "idle", "busybox", "sleep", "1000"])
        .ok();
    d.docker([
        "run",
        "-d",
        "--name",
        "mem",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=50 2>/dev/null; sleep 1000",
    ])
    .ok();
    wait_filled(&d, "mem", 50);
    let out = d.docker([
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}",
    ]);
    let mut seen = 0;
    for l in out.ok().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let cpu: f64 = f[1].trim_end_matches('%').parse().unwrap();
        let used = mib(f[2]);
        match f[0] {
            // One thread spinning: up to one CPU, less when the machine's
            // other work takes its share.
            "busy" => assert!((20.0..=105.0).contains(&cpu), "{out}"),
            "idle" => assert!(cpu < 5.0, "{out}"),
            // 50 MiB in a tmpfs is charged to the container and is not
            // inactive file cache.
            "mem" => assert!((48.0..60.0).contains(&used), "{out}"),
            other => panic!("unexpected container {other}: {out}"),
        }
        assert_eq!(f[5], "1", "{out}");
        seen += 1;
    }
    assert_eq!(seen, 3, "{out}");

    // A stream: a sample a second, CPU % from consecutive samples.
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-s", "KILL", "4"])
        .arg(berth_e2e::docker_cli())
        .args(["stats", "--format", "{{.Name}} {{.CPUPerc}}", "busy"]);
    for (k, v) in d.docker_command(["version"]).get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let text = String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned();
    let cpus: Vec<f64> = text
        .split("busy ")
        .skip(1)
        .filter_map(|t| t.split('%').next()?.trim().parse().ok())
        .collect();
    assert!(cpus.len() >= 2, "{text:?}");
    assert!(*cpus.last().unwrap() > 10.0, "{text:?}");

    // The raw sample: Docker's shape, and the kernel's figures.
    let id = inspect(&d, "mem")["Id"].as_str().unwrap().to_string();
    let v = d.get_json("/containers/mem/stats?stream=false");
    for k in [
        "read",
        "preread",
        "pids_stats",
        "blkio_stats",
        "num_procs",
        "storage_stats",
        "cpu_stats",
        "precpu_stats",
        "memory_stats",
        "name",
        "id",
    ] {
        assert!(v.get(k).is_some(), "no {k} in {v}");
    }
    assert_eq!(v["name"], "/mem");
    assert_eq!(v["id"], id.as_str());
    assert_ne!(v["preread"], "0001-01-01T00:00:00Z", "{v}");
    assert!(v["precpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0);
    assert!(v["cpu_stats"]["online_cpus"].as_u64().unwrap() >= 1);
    assert!(v["networks"]["eth0"]["rx_bytes"].is_u64(), "{v}");
    let mem = &v["memory_stats"];
    let dir = cgroup_dir("memory", &id);
    let (usage_file, inactive_key) = if dir.join("memory.usage_in_bytes").exists() {
        ("memory.usage_in_bytes", "total_inactive_file")
    } else {
        ("memory.current", "inactive_file")
    };
    let kernel = read_num(dir.join(usage_file)) - stat_key(&dir, "memory.stat", inactive_key);
    let api = mem["usage"].as_u64().unwrap() - mem["stats"][inactive_key].as_u64().unwrap();
    assert!(
        kernel.abs_diff(api) < 2 << 20,
        "working set {api} from the API, {kernel} from the kernel"
    );
    let one = d.get_json("/containers/mem/stats?stream=false&one-shot=true");
    assert_eq!(one["preread"], "0001-01-01T00:00:00Z");

    // berth's own table: the working set, labelled, and the raw usage.
    let out = d.berth(["stats", "--no-stream", "mem"]);
    let text = out.ok();
    assert!(text.contains("MEM WORKING SET / LIMIT"), "{text}");
    assert!(text.contains("MEM RAW (WITH CACHE)"), "{text}");
    let out = d.berth([
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemRaw}}",
        "mem",
    ]);
    let raw = mib(out.ok().split_whitespace().nth(1).unwrap());
    assert!((48.0..64.0).contains(&raw), "{out}");

    // A stopped container: an empty sample, as dockerd's.
    d.docker(["stop", "-t", "0", "idle"]).ok();
    let v = d.get_json("/containers/idle/stats?stream=false");
    assert_eq!(v["read"], "0001-01-01T00:00:00Z");
    assert_eq!(v["memory_stats"], serde_json::json!({}));
    let out = d.docker([
        "stats",
        "--no-stream",
        "-a",
        "--format",
        "{{.Name}} {{.CPUPerc}}",
    ]);
    assert!(out.ok().lines().any(|l| l == "idle 0.00%"), "{out}");
    d.docker(["rm", "-f", "busy", "idle", "mem"]).ok();
}

#[test]
fn update_memory_applies_live_persists_and_refuses_a_limit_below_usage() {
    require_root!();
    let mut d = daemon();
    d.docker(["run", "-d", "--name", "upd", "busybox", "sleep", "1000"])
        .ok();
    let id = inspect(&d, "upd")["Id"].as_str().unwrap().to_string();
    // Docker's rule: without --memory-swap, a limit above the (unset) swap
    // limit is refused.
    let err = d.docker(["update", "-m", "32m", "upd"]).fails().to_string();
    assert!(
        err.contains("Memory limit should be smaller than already set memoryswap limit"),
        "{err}"
    );
    // Before: 48 MiB fit.
    d.docker([
        "exec",
        "upd",
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/fill",
        "bs=1M",
        "count=48",
    ])
    .ok();
    d.docker(["exec", "upd", "rm", "/dev/shm/fill"]).ok();
    let out = d.docker(["update", "-m", "32m", "--memory-swap", "32m", "upd"]);
    assert_eq!(out.ok(), "upd\n");
    let dir = cgroup_dir("memory", &id);
    let limit_file = if dir.join("memory.limit_in_bytes").exists() {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    assert_eq!(read_num(dir.join(limit_file)), 32 << 20);
    let hc = &inspect(&d, "upd")["HostConfig"];
    assert_eq!(hc["Memory"], 32 << 20);
    assert_eq!(hc["MemorySwap"], 32 << 20);
    // After, without a restart: the same write runs into the limit and the
    // kernel's OOM killer.
    let out = d.docker([
        "exec",
        "upd",
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/fill",
        "bs=1M",
        "count=48",
    ]);
    assert!(!out.success(), "{out}");
    let ooms = if dir.join("memory.oom_control").exists() {
        stat_key(&dir, "memory.oom_control", "oom_kill")
    } else {
        stat_key(&dir, "memory.events", "oom_kill")
    };
    assert!(ooms >= 1, "no OOM kill recorded");

    // A limit below what the container holds (tmpfs pages cannot be
    // reclaimed without swap): Docker's error, nothing changed.
    d.docker([
        "run",
        "-d",
        "--name",
        "full",
        "-m",
        "100m",
        "--memory-swap",
        "100m",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null; sleep 1000",
    ])
    .ok();
    wait_filled(&d, "full", 40);
    let full = inspect(&d, "full")["Id"].as_str().unwrap().to_string();
    let err = d
        .docker(["update", "-m", "10m", "--memory-swap", "10m", "full"])
        .fails()
        .to_string();
    assert!(
        err.contains(&format!(
            "Error response from daemon: Cannot update container {full}: unable to set memory limit to 10485760 (current usage: "
        )),
        "{err}"
    );
    assert_eq!(inspect(&d, "full")["HostConfig"]["Memory"], 100 << 20);
    assert_eq!(inspect(&d, "full")["State"]["Running"], true);

    // Other limits, live, and all of it kept across a daemon restart.
    d.docker([
        "update",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "--cpu-shares",
        "512",
        "upd",
    ])
    .ok();
    let cpu = cgroup_dir("cpu", &id);
    if cpu.join("cpu.cfs_quota_us").exists() {
        assert_eq!(read_num(cpu.join("cpu.cfs_quota_us")), 50000);
        assert_eq!(read_num(cpu.join("cpu.shares")), 512);
    }
    assert_eq!(read_num(cgroup_dir("pids", &id).join("pids.max")), 50);
    d.restart();
    let hc = &inspect(&d, "upd")["HostConfig"];
    assert_eq!(hc["Memory"], 32 << 20);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["PidsLimit"], 50);
    assert_eq!(hc["CpuShares"], 512);
    // A stopped container: kept, and applied at its next start.
    d.docker(["stop", "-t", "0", "upd"]).ok();
    d.docker(["update", "--cpu-shares", "256", "--pids-limit", "40", "upd"])
        .ok();
    d.docker(["start", "upd"]).ok();
    assert_eq!(read_num(cgroup_dir("pids", &id).join("pids.max")), 40);
    let cpu = cgroup_dir("cpu", &id);
    if cpu.join("cpu.shares").exists() {
        assert_eq!(read_num(cpu.join("cpu.shares")), 256);
        assert_eq!(read_num(cpu.join("cpu.cfs_quota_us")), 50000);
    }
    let err = d
        .docker(["update", "-m", "32m", "nosuch"])
        .fails()
        .to_string();
    assert!(err.contains("No such container: nosuch"), "{err}");
    d.docker(["rm", "-f", "upd", "full"]).ok();
}

#[test]
fn update_restart_policy_is_honoured() {
    require_root!();
    let d = daemon();
    d.docker(["run", "-d", "--name", "rp", "busybox", "sleep", "1000"])
        .ok();
    d.docker(["update", "--restart", "always", "rp"]).ok();
    assert_eq!(
        inspect(&d, "rp")["HostConfig"]["RestartPolicy"]["Name"],
        "always"
    );
    // The process dies on its own (not by docker stop or kill): the new
    // policy brings it back.
    let pid = inspect(&d, "rp")["State"]["Pid"].as_i64().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for(Duration::from_secs(15), || {
        let s = inspect(&d, "rp");
        (s["RestartCount"].as_u64() >= Some(1) && s["State"]["Running"] == true).then_some(())
    })
    .expect("the container was not restarted");
    // --rm containers take no restart policy.
    d.docker([
        "run", "-d", "--rm", "--name", "gone", "busybox", "sleep", "1000",
    ])
    .ok();
    let err = d
        .docker(["update", "--restart", "always", "gone"])
        .fails()
        .to_string();
    assert!(
        err.contains(
            "Restart policy cannot be updated because AutoRemove is enabled for the container"
        ),
        "{err}"
    );
    d.docker(["rm", "-f", "rp", "gone"]).ok();
}

fn health(d: &Daemon, name: &str) -> Value {
    inspect(d, name)["State"]["Health"].clone()
}

fn wait_health(d: &Daemon, name: &str, status: &str, within: Duration) -> Value {
    wait_for(within, || {
        let h = health(d, name);
        (h["Status"] == status).then_some(h)
    })
    .unwrap_or_else(|| panic!("{name} never became {status}: {}", health(d, name)))
}

#[test]
fn a_failing_healthcheck_turns_unhealthy_with_events_and_filters() {
    require_root!();
    let mut d = daemon();
    let since = berth_e2e::unix_now().to_string();
    d.docker([
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "test -f /ok && echo fine",
        "--health-interval",
        "300ms",
        "--health-retries",
        "2",
        "busybox",
        "sh",
        "-c",
        "touch /ok; sleep 1000",
    ])
    .ok();
    d.docker(["run", "-d", "--name", "plain", "busybox", "sleep", "1000"])
        .ok();
    let out = d.docker([
        "ps",
        "--format",
        "{{.Names}} {{.Status}}",
        "--filter",
        "name=hc",
    ]);
    assert!(
        out.ok().contains("(health: starting)") || out.stdout.contains("(healthy)"),
        "{out}"
    );
    let h = wait_health(&d, "hc", "healthy", Duration::from_secs(10));
    assert_eq!(h["FailingStreak"], 0);
    assert_eq!(h["Log"][0]["ExitCode"], 0);
    assert_eq!(h["Log"][0]["Output"], "fine\n");
    let out = d.docker([
        "ps",
        "--format",
        "{{.Names}} {{.Status}}",
        "--filter",
        "health=healthy",
    ]);
    assert!(
        out.ok().starts_with("hc Up ") && out.stdout.trim_end().ends_with("(healthy)"),
        "{out}"
    );
    let out = d.docker(["ps", "--format", "{{.Names}}", "--filter", "health=none"]);
    assert_eq!(out.ok(), "plain\n");
    let err = d
        .docker(["ps", "--filter", "health=bogus"])
        .fails()
        .to_string();
    assert!(
        err.contains("Unrecognised filter value for health: bogus"),
        "{err}"
    );

    d.docker(["exec", "hc", "rm", "/ok"]).ok();
    let h = wait_health(&d, "hc", "unhealthy", Duration::from_secs(10));
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    let log = h["Log"].as_array().unwrap();
    assert!(log.len() <= 5, "{h}");
    assert_eq!(log.last().unwrap()["ExitCode"], 1, "{h}");
    let out = d.docker([
        "ps",
        "--format",
        "{{.Names}}",
        "--filter",
        "health=unhealthy",
    ]);
    assert_eq!(out.ok(), "hc\n");
    let until = (berth_e2e::unix_now() + 1).to_string();
    let out = d.docker([
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=hc",
        "--filter",
        "event=health_status",
        "--format",
        "{{.Action}}",
    ]);
    assert_eq!(
        out.ok(),
        "health_status: healthy\nhealth_status: unhealthy\n",
        "{out}"
    );

    // The monitor resumes after a daemon restart.
    d.restart();
    d.docker(["exec", "hc", "touch", "/ok"]).ok();
    wait_health(&d, "hc", "healthy", Duration::from_secs(10));
    // A restart starts over.
    d.docker(["restart", "-t", "0", "hc"]).ok();
    let h = health(&d, "hc");
    assert!(h["Status"] == "starting" || h["Status"] == "healthy", "{h}");
    assert_eq!(h["FailingStreak"], 0);
    d.docker(["rm", "-f", "hc", "plain"]).ok();
}

#[test]
fn a_probe_over_its_timeout_is_killed_and_fails() {
    require_root!();
    let d = daemon();
    d.docker([
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 30",
        "--health-timeout",
        "500ms",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let h = wait_health(&d, "slow", "unhealthy", Duration::from_secs(15));
    let entry = &h["Log"][0];
    assert_eq!(entry["ExitCode"], -1, "{h}");
    assert_eq!(
        entry["Output"], "Health check exceeded timeout (500ms)",
        "{h}"
    );
    let t = |k: &str| chrono_like_secs(entry[k].as_str().unwrap());
    assert!(t("End") - t("Start") < 3.0, "{h}");
    // The probe's process is gone.
    let out = d.docker(["exec", "slow", "ps"]);
    assert!(!out.ok().contains("sleep 30"), "{out}");
    // --no-healthcheck and NONE: no health at all.
    d.docker([
        "run",
        "-d",
        "--name",
        "none",
        "--no-healthcheck",
        "busybox",
        "sleep",
        "100",
    ])
    .ok();
    assert!(health(&d, "none").is_null());
    assert_eq!(
        inspect(&d, "none")["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    d.docker(["rm", "-f", "slow", "none"]).ok();
}

/// Seconds of the time of day in an RFC 3339 timestamp (enough to compare
/// two close ones).
fn chrono_like_secs(s: &str) -> f64 {
    let t = s.split('T').nth(1).unwrap().trim_end_matches('Z');
    let f: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
    f[0] * 3600.0 + f[1] * 60.0 + f[2]
}

#[test]
fn health_on_unhealthy_restart_restarts_with_backoff() {
    require_root!();
    let d = daemon();
    // Never healthy: without a backoff it would restart every ~0.3 s.
    d.berth([
        "run",
        "-d",
        "--name",
        "flap",
        "--health-cmd",
        "test -f /ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "--health-on-unhealthy",
        "restart",
        "--stop-timeout",
        "1",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(
        inspect(&d, "flap")["HostConfig"]["BerthHealthOnUnhealthy"],
        "restart"
    );
    let first = inspect(&d, "flap")["State"]["StartedAt"].clone();
    let t0 = Instant::now();
    wait_for(Duration::from_secs(10), || {
        (inspect(&d, "flap")["State"]["StartedAt"] != first).then_some(())
    })
    .expect("the unhealthy container was not restarted");
    // Count restarts over a while through the event stream.
    let mut events = d
        .docker_command([
            "events",
            "--filter",
            "container=flap",
            "--filter",
            "event=start",
            "--filter",
            "event=restart",
            "--format",
            "{{.Action}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    let _ = events.kill();
    let mut text = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = events.wait();
    let starts = text.lines().filter(|l| *l == "start").count();
    let restarts = text.lines().filter(|l| *l == "restart").count();
    // Backoff 2 s, 4 s, 8 s…: at most a few in 7 s, at least one.
    assert!(
        (1..=4).contains(&starts),
        "{starts} restarts in 7 s after {:?}: {text}",
        t0.elapsed()
    );
    // Each is a `restart` as dockerd reports one (the last may be in flight).
    assert!(restarts >= 1 && starts.abs_diff(restarts) <= 1, "{text}");
    assert_eq!(inspect(&d, "flap")["State"]["Running"], true);
    // A bad action is refused.
    let err = d
        .berth(["create", "--health-on-unhealthy", "reboot", "busybox"])
        .fails()
        .to_string();
    assert!(err.contains("--health-on-unhealthy"), "{err}");
    d.docker(["rm", "-f", "flap"]).ok();
}

#[test]
fn the_image_healthcheck_applies_and_create_flags_override_it() {
    require_root!();
    let d = daemon();
    // An image whose config has a HEALTHCHECK (as a Dockerfile's would).
    let tar = berth_fixtures::busybox_rootfs_tar().expect("busybox rootfs");
    let img = berth_fixtures::build_image(&berth_fixtures::ImageSpec::new(
        vec![berth_fixtures::Layer::new(
            tar,
            berth_fixtures::Compression::Gzip,
            "rootfs",
        )],
        serde_json::json!({
            "Cmd": ["sleep", "1000"],
            "Env": [berth_fixtures::DEFAULT_PATH],
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 200_000_000, "Retries": 2},
        }),
    ));
    d.api_load(&berth_fixtures::docker_save_archive(&[(
        img,
        vec!["hcimg:latest".to_string()],
    )]));
    d.docker(["run", "-d", "--name", "fromimg", "hcimg"]).ok();
    let h = wait_health(&d, "fromimg", "healthy", Duration::from_secs(10));
    assert_eq!(h["FailingStreak"], 0);
    // Flags override field by field: the image's test, a new retries.
    d.docker([
        "run",
        "-d",
        "--name",
        "merged",
        "--health-retries",
        "7",
        "hcimg",
    ])
    .ok();
    let hc = &inspect(&d, "merged")["Config"]["Healthcheck"];
    assert_eq!(hc["Test"], serde_json::json!(["CMD", "true"]), "{hc}");
    assert_eq!(hc["Retries"], 7, "{hc}");
    assert_eq!(hc["Interval"], 200_000_000, "{hc}");
    // --no-healthcheck turns the image's off.
    d.docker(["run", "-d", "--name", "off", "--no-healthcheck", "hcimg"])
        .ok();
    std::thread::sleep(Duration::from_millis(600));
    assert!(health(&d, "off").is_null());
    let out = d.docker(["ps", "--format", "{{.Names}}", "--filter", "health=none"]);
    assert_eq!(out.ok(), "off\n");
    d.docker(["rm", "-f", "fromimg", "merged", "off"]).ok();
}
