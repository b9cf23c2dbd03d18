//! A Docker create request (Config + HostConfig) and an image's config
//! become the OCI runtime spec (`config.json`) the shim hands to
//! berth-runtime.

use std::path::Path;

use serde_json::{Value, json};

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's default seccomp profile, as OCI JSON (computed once).
fn default_seccomp() -> Value {
    static PROFILE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    PROFILE
        .get_or_init(|| {
            serde_json::to_value(berth_runtime::default_seccomp_profile())
                .expect("profile serializes")
        })
        .clone()
}

/// The user a process runs as, resolved against the container's own
/// `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// Resolve Docker's `--user` (`name`, `uid`, `name:group`, `uid:gid`).
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<User, String> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == u || f[2] == u));
    let (uid, mut gid, home, uname) = match (&entry, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| format!("invalid uid in /etc/passwd for {u}"))?,
            f[3].parse().unwrap_or(0),
            f[5].to_string(),
            f[0].to_string(),
        ),
        (None, Ok(n)) => (n, n, "/".to_string(), String::new()),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ));
        }
    };
    if let Some(g) = g {
        gid = match group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && (f[0] == g || f[2] == g))
        {
            Some(f) => f[2]
                .parse()
                .map_err(|_| format!("invalid gid for group {g}"))?,
            None => g.parse().map_err(|_| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    let additional_gids = if uname.is_empty() {
        vec![]
    } else {
        group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == uname))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect()
    };
    Ok(User {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// The network namespace a container runs in.
#[derive(Clone, Copy, Debug)]
pub enum Netns<'a> {
    /// The daemon's (no namespace in the spec).
    Host,
    /// A new one, made by the runtime.
    New,
    /// An existing one, joined by path.
    Join(&'a Path),
}

/// Everything the spec needs that is not in Config/HostConfig.
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub rootfs: &'a Path,
    pub dir: &'a Path,
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub user: &'a User,
    pub hostname: &'a str,
    pub tty: bool,
    pub host_config: &'a Value,
    pub netns: Netns<'a>,
    pub cgroup_parent: &'a str,
    /// `--init`: the static init binary, mounted at `/sbin/docker-init`.
    pub init: Option<&'a Path>,
}

/// Where `--init` puts the init binary in the container, as Docker does.
pub const INIT_PATH: &str = "/sbin/docker-init";

fn has_key(env: &[String], key: &str) -> bool {
    env.iter()
        .any(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
}

pub fn process(args: &[String], env: &[String], cwd: &str, user: &User, tty: bool) -> Value {
    let mut env = env.to_vec();
    if !has_key(&env, "PATH") {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    if !has_key(&env, "HOME") {
        env.push(format!(
            "HOME={}",
            if user.home.is_empty() {
                "/"
            } else {
                &user.home
            }
        ));
    }
    if tty && !has_key(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    json!({
        "terminal": tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": env,
        "cwd": if cwd.is_empty() { "/" } else { cwd },
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64}],
        "noNewPrivileges": false
    })
}

/// The OCI `linux.resources` for Docker's resource fields (`HostConfig` at
/// create, or the body of `POST /containers/{id}/update`): only the fields
/// that are set (non-zero) appear, as dockerd's `toContainerdResources`.
/// `NanoCpus` becomes a 100 ms period and its quota; `MemorySwap` -1 means
/// unlimited swap. With `update`, a `PidsLimit` of 0 or -1 lifts the limit
/// (a new cgroup has none to lift).
pub fn resources(hc: &Value, update: bool) -> Value {
    let int = |k: &str| hc[k].as_i64().unwrap_or(0);
    let mut out = serde_json::Map::new();
    let mut memory = serde_json::Map::new();
    if int("Memory") > 0 {
        memory.insert("limit".into(), json!(int("Memory")));
    }
    if int("MemoryReservation") > 0 {
        memory.insert("reservation".into(), json!(int("MemoryReservation")));
    }
    if int("MemorySwap") > 0 || int("MemorySwap") == -1 {
        memory.insert("swap".into(), json!(int("MemorySwap")));
    }
    if let Some(s) = hc["MemorySwappiness"].as_i64().filter(|s| *s >= 0) {
        memory.insert("swappiness".into(), json!(s));
    }
    if !memory.is_empty() {
        out.insert("memory".into(), Value::Object(memory));
    }
    let mut cpu = serde_json::Map::new();
    let (mut period, mut quota) = (0, 0);
    if int("NanoCpus") > 0 {
        period = 100_000;
        quota = int("NanoCpus") * period / 1_000_000_000;
    }
    if quota == 0 && int("CpuQuota") != 0 {
        quota = int("CpuQuota");
    }
    if period == 0 && int("CpuPeriod") != 0 {
        period = int("CpuPeriod");
    }
    if period != 0 {
        cpu.insert("period".into(), json!(period));
    }
    if quota != 0 {
        cpu.insert("quota".into(), json!(quota));
    }
    if int("CpuShares") > 0 {
        cpu.insert("shares".into(), json!(int("CpuShares")));
    }
    for (k, o) in [("CpusetCpus", "cpus"), ("CpusetMems", "mems")] {
        if let Some(v) = hc[k].as_str().filter(|v| !v.is_empty()) {
            cpu.insert(o.into(), json!(v));
        }
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    // PidsLimit: 0 or -1 is unlimited, which is what a new cgroup has; an
    // update to it writes "max".
    match hc["PidsLimit"].as_i64() {
        Some(p) if p > 0 => {
            out.insert("pids".into(), json!({"limit": p}));
        }
        Some(_) if update => {
            out.insert("pids".into(), json!({"limit": 0}));
        }
        _ => {}
    }
    if int("BlkioWeight") > 0 {
        out.insert("blockIO".into(), json!({"weight": int("BlkioWeight")}));
    }
    Value::Object(out)
}

/// The OCI runtime spec for a container.
pub fn runtime_spec(i: &SpecInput) -> Value {
    let hc = i.host_config;
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match i.netns {
        Netns::Host => {}
        Netns::New => namespaces.push(json!({"type": "network"})),
        Netns::Join(p) => {
            namespaces.push(json!({"type": "network", "path": p.display().to_string()}))
        }
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    for f in ["resolv.conf", "hostname", "hosts"] {
        mounts.push(json!({"destination": format!("/etc/{f}"), "type": "bind", "source": i.dir.join(f).display().to_string(), "options": ["rbind", "rprivate"]}));
    }
    let resources = resources(hc, false);
    let privileged = hc["Privileged"].as_bool() == Some(true);
    let mut process = process(i.args, i.env, i.cwd, i.user, i.tty);
    if let Some(init) = i.init {
        mounts.push(json!({"destination": INIT_PATH, "type": "bind", "source": init.display().to_string(), "options": ["bind", "ro"]}));
        let mut args = vec![INIT_PATH.to_string(), "--".to_string()];
        args.extend(i.args.iter().cloned());
        process["args"] = json!(args);
    }
    if privileged {
        process["capabilities"] = json!(null);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": i.rootfs.display().to_string(), "readonly": hc["ReadonlyRootfs"].as_bool().unwrap_or(false)},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": format!("{}/{}", i.cgroup_parent, i.id),
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "seccomp": if privileged { Value::Null } else { default_seccomp() },
            "readonlyPaths": READONLY_PATHS,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_container_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nbob:x:1000:\nwheel:x:10:bob\n",
        )
        .unwrap();
        assert_eq!(
            resolve_user(d.path(), "bob").unwrap(),
            User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
                home: "/home/bob".into()
            }
        );
        assert_eq!(resolve_user(d.path(), "1000:wheel").unwrap().gid, 10);
        assert_eq!(resolve_user(d.path(), "4242").unwrap().uid, 4242);
        assert_eq!(resolve_user(d.path(), "").unwrap().uid, 0);
        assert!(
            resolve_user(d.path(), "nobody")
                .unwrap_err()
                .contains("unable to find user nobody")
        );
    }
}
