//! cgroups for a container, by plain file writes, on cgroup v1, hybrid and
//! pure v2 hosts (detected at run time from /proc/self/mountinfo and the
//! filesystem type of /sys/fs/cgroup).
//!
//! Layout on disk, for `cgroupsPath: /berth/<id>`:
//!
//! ```text
//! pure v2 (cgroup2 on /sys/fs/cgroup):
//!   /sys/fs/cgroup/berth/               cgroup.subtree_control gets +cpu +memory +pids ...
//!   /sys/fs/cgroup/berth/<id>/          cgroup.procs, memory.max, cpu.max, pids.max, cgroup.freeze
//! v1 / hybrid (tmpfs on /sys/fs/cgroup, one mount per hierarchy):
//!   /sys/fs/cgroup/<hierarchy>/berth/<id>/   for every hierarchy: memory, cpu, cpuacct (or
//!                                            cpu,cpuacct), cpuset, pids, freezer, devices, blkio,
//!                                            systemd (name=systemd), ... and on hybrid hosts
//!                                            also unified/ (the cgroup2 mount)
//! ```
//!
//! A relative cgroupsPath is taken relative to the caller's own cgroup in
//! each hierarchy (runc's rule). Nothing here forks or spawns threads.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_types::Error;
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources, Spec,
};

use rustix::fs::{Mode, OFlags};

use crate::sys::{errmsg, os_err};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// One mounted cgroup hierarchy of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mountpoint: PathBuf,
    /// v1: its controllers, e.g. `["cpu", "cpuacct"]`, or `["name=systemd"]`.
    /// Empty for cgroup v2.
    pub controllers: Vec<String>,
    /// Whether this is a cgroup2 hierarchy.
    pub v2: bool,
}

/// The container's cgroup: one directory per hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Cgroup {
    pub dirs: Vec<(Hierarchy, PathBuf)>,
    /// The host is pure cgroup v2.
    pub unified: bool,
}

/// A process's way into its cgroup, prepared before the fork (see
/// [`Cgroup::self_join`]).
pub(crate) struct SelfJoin {
    /// Each v1 hierarchy's `tasks` file.
    pub tasks: Vec<PathBuf>,
    /// The v2 directory, for `CLONE_INTO_CGROUP`.
    pub v2: Option<OwnedFd>,
}

impl SelfJoin {
    /// In the new (single-threaded) process: join every v1 hierarchy.
    pub(crate) fn join_v1(&self) -> Result<(), Error> {
        for t in &self.tasks {
            write_file(t, "0")?;
        }
        Ok(())
    }
}

/// Parse /proc/self/mountinfo into the cgroup hierarchies it shows; a
/// hierarchy mounted twice is listed once (its first mount).
pub(crate) fn parse_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let mountpoint = PathBuf::from(unescape_mountinfo(pre[4]));
        let h = match post[0] {
            "cgroup2" => Hierarchy {
                mountpoint,
                controllers: Vec::new(),
                v2: true,
            },
            "cgroup" => {
                let mut controllers: Vec<String> = post[2]
                    .split(',')
                    .filter(|o| is_v1_controller(o) || o.starts_with("name="))
                    .map(str::to_string)
                    .collect();
                controllers.sort();
                if controllers.is_empty() {
                    continue;
                }
                Hierarchy {
                    mountpoint,
                    controllers,
                    v2: false,
                }
            }
            _ => continue,
        };
        // One entry per v1 hierarchy; every cgroup2 mount is kept, the
        // caller picks one (a pure v2 host may show a shadowed hybrid one).
        if h.v2 || !out.iter().any(|o| !o.v2 && o.controllers == h.controllers) {
            out.push(h);
        }
    }
    out
}

fn is_v1_controller(o: &str) -> bool {
    matches!(
        o,
        "cpuset"
            | "cpu"
            | "cpuacct"
            | "blkio"
            | "memory"
            | "devices"
            | "freezer"
            | "net_cls"
            | "net_prio"
            | "perf_event"
            | "hugetlb"
            | "pids"
            | "rdma"
            | "misc"
    )
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of /proc/<pid>/cgroup: (controllers, path). v2 has no controllers.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let mut c: Vec<String> = ctrls
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            c.sort();
            Some((c, path.to_string()))
        })
        .collect()
}

// f_type's integer type differs between architectures.
#[allow(clippy::useless_conversion)]
fn host_is_unified() -> bool {
    rustix::fs::statfs("/sys/fs/cgroup")
        .map(|s| i64::from(s.f_type) == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The host's cgroup hierarchies: on a pure v2 host the one cgroup2 mount at
/// /sys/fs/cgroup; otherwise every v1 hierarchy plus any cgroup2 mount (the
/// hybrid "unified" one).
pub(crate) fn host_hierarchies() -> Result<(Vec<Hierarchy>, bool), Error> {
    let mi = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| os_err("read /proc/self/mountinfo", e))?;
    let all = parse_hierarchies(&mi);
    let unified = host_is_unified();
    let root = Path::new("/sys/fs/cgroup");
    let hs: Vec<Hierarchy> = if unified {
        let mut v2: Vec<Hierarchy> = all.into_iter().filter(|h| h.v2).collect();
        v2.sort_by_key(|h| h.mountpoint != root);
        v2.truncate(1);
        v2
    } else {
        let mut seen_v2 = false;
        all.into_iter()
            .filter(|h| !h.v2 || !std::mem::replace(&mut seen_v2, true))
            .collect()
    };
    if hs.is_empty() {
        return Err(Error::new(
            berth_types::ErrorKind::Unavailable,
            "no cgroup hierarchy is mounted",
        ));
    }
    Ok((hs, unified))
}

/// The cgroupsPath of a spec; `default_id` gives `/berth/<id>` when unset.
pub(crate) fn spec_path(spec: &Spec, default_id: Option<&str>) -> Result<PathBuf, Error> {
    let p = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    match (p, default_id) {
        (Some(p), _) if !p.as_os_str().is_empty() => {
            if p.to_string_lossy().contains(':') {
                return Err(Error::not_implemented(format!(
                    "cgroupsPath {}: systemd cgroup paths (slice:prefix:name) are not supported",
                    p.display()
                )));
            }
            if p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(Error::invalid(format!(
                    "cgroupsPath {} must not contain ..",
                    p.display()
                )));
            }
            Ok(p)
        }
        (_, Some(id)) => Ok(PathBuf::from(format!("/berth/{id}"))),
        _ => Err(Error::invalid("spec has no linux.cgroupsPath")),
    }
}

impl Cgroup {
    /// The container's cgroup for a cgroupsPath.
    pub(crate) fn resolve(path: &Path) -> Result<Cgroup, Error> {
        let (hs, unified) = host_hierarchies()?;
        let own = if path.is_absolute() {
            Vec::new()
        } else {
            parse_proc_cgroup(
                &fs::read_to_string("/proc/self/cgroup")
                    .map_err(|e| os_err("read /proc/self/cgroup", e))?,
            )
        };
        let dirs = hs
            .into_iter()
            .map(|h| {
                let rel = if path.is_absolute() {
                    path.strip_prefix("/").unwrap_or(path).to_path_buf()
                } else {
                    let base = own
                        .iter()
                        .find(|(c, _)| *c == h.controllers)
                        .map(|(_, p)| p.trim_start_matches('/').to_string())
                        .unwrap_or_default();
                    Path::new(&base).join(path)
                };
                let dir = h.mountpoint.join(rel);
                (h, dir)
            })
            .collect();
        Ok(Cgroup { dirs, unified })
    }

    /// The cgroup a running process is in (for exec), from /proc/<pid>/cgroup.
    pub(crate) fn of_pid(pid: i32) -> Result<Cgroup, Error> {
        let (hs, unified) = host_hierarchies()?;
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| os_err(format!("read /proc/{pid}/cgroup"), e))?;
        let lines = parse_proc_cgroup(&text);
        let dirs = hs
            .into_iter()
            .filter_map(|h| {
                let (_, p) = lines.iter().find(|(c, _)| *c == h.controllers)?;
                let dir = h.mountpoint.join(p.trim_start_matches('/'));
                Some((h, dir))
            })
            .collect();
        Ok(Cgroup { dirs, unified })
    }

    /// The v1 directory of a controller, if the host has it in v1.
    fn v1(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| !h.v2 && h.controllers.iter().any(|c| c == controller))
            .map(|(_, d)| d.as_path())
    }

    /// The v2 directory, if a v2 hierarchy offers this controller there.
    fn v2_with(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .filter(|(h, _)| h.v2)
            .find(|(_, d)| {
                fs::read_to_string(d.join("cgroup.controllers"))
                    .map(|s| s.split_whitespace().any(|c| c == controller))
                    .unwrap_or(false)
            })
            .map(|(_, d)| d.as_path())
    }

    /// The v2 directory, if any (for cgroup.freeze and cgroup.events).
    fn v2_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| h.v2)
            .map(|(_, d)| d.as_path())
    }

    /// Create the directories (and, on pure v2, enable the controllers on
    /// the way down). Undoes what it made when it fails.
    pub(crate) fn create(&self) -> Result<(), Error> {
        let mut made: Vec<PathBuf> = Vec::new();
        let r = self.create_inner(&mut made);
        if r.is_err() {
            for d in made.iter().rev() {
                let _ = fs::remove_dir(d);
            }
        }
        r
    }

    fn create_inner(&self, made: &mut Vec<PathBuf>) -> Result<(), Error> {
        for (h, dir) in &self.dirs {
            let rel = dir.strip_prefix(&h.mountpoint).unwrap_or(dir);
            let mut cur = h.mountpoint.clone();
            for comp in rel.components() {
                if h.v2 && self.unified {
                    enable_subtree_controllers(&cur);
                }
                let parent = cur.clone();
                cur.push(comp);
                match fs::create_dir(&cur) {
                    Ok(()) => made.push(cur.clone()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(os_err(format!("create cgroup {}", cur.display()), e)),
                }
                if h.controllers.iter().any(|c| c == "cpuset") {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = fs::read_to_string(cur.join(f)).unwrap_or_default();
                        if v.trim().is_empty() {
                            let pv = fs::read_to_string(parent.join(f)).unwrap_or_default();
                            write_file(&cur.join(f), pv.trim())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// How a new process joins this cgroup without the kernel's global
    /// cgroup_threadgroup_rwsem, whose write side waits for an RCU grace
    /// period (7–15 ms here) on every `cgroup.procs` write:
    /// - v1: the process itself writes `0` to each hierarchy's `tasks`
    ///   file while it is single-threaded (a thread moving itself takes
    ///   no global lock, and its only thread is the whole process);
    /// - v2: it is cloned into its cgroup (`CLONE_INTO_CGROUP`), else the
    ///   parent writes `cgroup.procs` ([`Cgroup::add_pid_v2`]).
    pub(crate) fn self_join(&self) -> Result<SelfJoin, Error> {
        let mut v2 = None;
        let mut tasks = Vec::new();
        for (h, dir) in &self.dirs {
            if h.v2 {
                let fd = rustix::fs::open(
                    dir,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| os_err(format!("open cgroup {}", dir.display()), e))?;
                v2 = Some(fd);
            } else {
                tasks.push(dir.join("tasks"));
            }
        }
        Ok(SelfJoin { tasks, v2 })
    }

    /// Move a process into the cgroup of the v2 hierarchy (if any) only.
    pub(crate) fn add_pid_v2(&self, pid: i32) -> Result<(), Error> {
        for (h, dir) in &self.dirs {
            if h.v2 {
                write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
            }
        }
        Ok(())
    }

    /// Apply resource limits.
    pub(crate) fn apply(&self, r: &LinuxResources) -> Result<(), Error> {
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(c)?;
        }
        if let Some(p) = r.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".to_string()
            };
            let dir = self
                .v1("pids")
                .or_else(|| self.v2_with("pids"))
                .ok_or_else(|| missing("pids"))?;
            write_file(&dir.join("pids.max"), &v)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_blkio(b)?;
        }
        if let Some(hp) = r.hugepage_limits() {
            for l in hp {
                let ps = l.page_size();
                if ps.contains('/') {
                    return Err(Error::invalid(format!("bad hugepage size {ps}")));
                }
                if let Some(d) = self.v1("hugetlb") {
                    write_file(
                        &d.join(format!("hugetlb.{ps}.limit_in_bytes")),
                        &l.limit().to_string(),
                    )?;
                } else if let Some(d) = self.v2_with("hugetlb") {
                    write_file(&d.join(format!("hugetlb.{ps}.max")), &l.limit().to_string())?;
                } else {
                    return Err(missing("hugetlb"));
                }
            }
        }
        if let Some(devs) = r.devices() {
            self.apply_devices(devs)?;
        }
        if let Some(n) = r.network() {
            if let (Some(id), Some(d)) = (n.class_id(), self.v1("net_cls")) {
                write_file(&d.join("net_cls.classid"), &id.to_string())?;
            }
            if let (Some(prios), Some(d)) = (n.priorities(), self.v1("net_prio")) {
                for p in prios {
                    write_file(
                        &d.join("net_prio.ifpriomap"),
                        &format!("{} {}", p.name(), p.priority()),
                    )?;
                }
            }
        }
        if let Some(u) = r.unified()
            && !u.is_empty()
        {
            {
                let d = self
                    .v2_dir()
                    .ok_or_else(|| Error::invalid("unified cgroup resources need cgroup v2"))?;
                for (k, v) in u {
                    if k.contains('/') || k.starts_with('.') {
                        return Err(Error::invalid(format!("bad unified cgroup key {k}")));
                    }
                    write_file(&d.join(k), v)?;
                }
            }
        }
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<(), Error> {
        let wanted = m.limit().is_some()
            || m.reservation().is_some()
            || m.swap().is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer() == Some(true);
        if let Some(d) = self.v1("memory") {
            let memsw = d.join("memory.memsw.limit_in_bytes");
            // memory.memsw only exists with swap accounting; docker drops the
            // swap limit then, and so do we.
            let swap = m.swap().filter(|_| memsw.exists());
            match (m.limit(), swap) {
                (Some(l), Some(s)) => {
                    // The kernel insists on memsw >= limit at every step:
                    // raise memsw first, lower the limit first.
                    let cur = read_trimmed(&memsw)
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(i64::MAX);
                    if s == -1 || s >= cur {
                        write_file(&memsw, &s.to_string())?;
                        write_v1_limit(d, l)?;
                    } else {
                        write_v1_limit(d, l)?;
                        write_file(&memsw, &s.to_string())?;
                    }
                }
                (Some(l), None) => write_v1_limit(d, l)?,
                (None, Some(s)) => write_file(&memsw, &s.to_string())?,
                (None, None) => {}
            }
            if let Some(r) = m.reservation() {
                write_file(&d.join("memory.soft_limit_in_bytes"), &r.to_string())?;
            }
            if let Some(s) = m.swappiness() {
                let f = d.join("memory.swappiness");
                if s > 100 {
                    return Err(Error::invalid(format!(
                        "invalid memory swappiness {s}: must be between 0 and 100"
                    )));
                }
                if f.exists() {
                    write_file(&f, &s.to_string())?;
                }
            }
            if m.disable_oom_killer() == Some(true) {
                write_file(&d.join("memory.oom_control"), "1")?;
            }
        } else if let Some(d) = self.v2_with("memory") {
            let max = |v: i64| {
                if v < 0 {
                    "max".to_string()
                } else {
                    v.to_string()
                }
            };
            if let Some(l) = m.limit() {
                write_v2_max(d, l)?;
            }
            let swapf = d.join("memory.swap.max");
            if let Some(s) = m.swap()
                && swapf.exists()
            {
                // OCI's swap is memory+swap; v2's swap.max is swap alone.
                let v = match (s, m.limit()) {
                    (-1, _) => "max".to_string(),
                    (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                write_file(&swapf, &v)?;
            }
            if let Some(r) = m.reservation() {
                write_file(&d.join("memory.low"), &max(r))?;
            }
        } else if wanted {
            return Err(missing("memory"));
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu) -> Result<(), Error> {
        let shares = c.shares().filter(|s| *s != 0);
        let quota = c.quota().filter(|q| *q != 0);
        let period = c.period().filter(|p| *p != 0);
        if let Some(d) = self.v1("cpu") {
            if let Some(s) = shares {
                write_file(&d.join("cpu.shares"), &s.to_string())?;
            }
            if let Some(p) = period {
                let pf = d.join("cpu.cfs_period_us");
                if let Err(e) = write_file(&pf, &p.to_string()) {
                    // A new period can be invalid against the current quota;
                    // write the quota first and try again (runc does this).
                    let Some(q) = quota else { return Err(e) };
                    write_file(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
                    write_file(&pf, &p.to_string())?;
                }
            }
            if let Some(q) = quota {
                write_file(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
            if let Some(b) = c.burst() {
                let f = d.join("cpu.cfs_burst_us");
                if f.exists() {
                    write_file(&f, &b.to_string())?;
                }
            }
            if let Some(p) = c.realtime_period() {
                write_file(&d.join("cpu.rt_period_us"), &p.to_string())?;
            }
            if let Some(r) = c.realtime_runtime() {
                write_file(&d.join("cpu.rt_runtime_us"), &r.to_string())?;
            }
        } else if let Some(d) = self.v2_with("cpu") {
            if let Some(s) = shares {
                write_file(&d.join("cpu.weight"), &shares_to_weight(s).to_string())?;
            }
            if quota.is_some() || period.is_some() {
                let mut v = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_string(),
                };
                if let Some(p) = period {
                    v.push_str(&format!(" {p}"));
                }
                write_file(&d.join("cpu.max"), &v)?;
            }
            if let Some(b) = c.burst() {
                write_file(&d.join("cpu.max.burst"), &b.to_string())?;
            }
            if let Some(i) = c.idle() {
                write_file(&d.join("cpu.idle"), &i.to_string())?;
            }
        } else if shares.is_some() || quota.is_some() || period.is_some() {
            return Err(missing("cpu"));
        }
        if c.cpus().is_some() || c.mems().is_some() {
            let d = self
                .v1("cpuset")
                .or_else(|| self.v2_with("cpuset"))
                .ok_or_else(|| missing("cpuset"))?;
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                write_file(&d.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                write_file(&d.join("cpuset.mems"), mems)?;
            }
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &LinuxBlockIo) -> Result<(), Error> {
        let throttles = [
            (b.throttle_read_bps_device(), "read_bps_device", "rbps"),
            (b.throttle_write_bps_device(), "write_bps_device", "wbps"),
            (b.throttle_read_iops_device(), "read_iops_device", "riops"),
            (b.throttle_write_iops_device(), "write_iops_device", "wiops"),
        ];
        if let Some(d) = self.v1("blkio") {
            if let Some(w) = b.weight().filter(|w| *w != 0) {
                let f = d.join("blkio.weight");
                let f = if f.exists() {
                    f
                } else {
                    d.join("blkio.bfq.weight")
                };
                write_file(&f, &w.to_string())?;
            }
            if let Some(wd) = b.weight_device() {
                for w in wd {
                    if let Some(v) = w.weight() {
                        write_file(
                            &d.join("blkio.weight_device"),
                            &format!("{}:{} {v}", w.major(), w.minor()),
                        )?;
                    }
                }
            }
            for (list, name, _) in throttles {
                for t in list.iter().flatten() {
                    write_file(
                        &d.join(format!("blkio.throttle.{name}")),
                        &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                    )?;
                }
            }
        } else if let Some(d) = self.v2_with("io") {
            if let Some(w) = b.weight().filter(|w| *w != 0) {
                let f = d.join("io.weight");
                if f.exists() {
                    write_file(&f, &blkio_weight_to_io(w).to_string())?;
                } else {
                    write_file(&d.join("io.bfq.weight"), &w.to_string())?;
                }
            }
            if let Some(wd) = b.weight_device() {
                for w in wd {
                    if let Some(v) = w.weight() {
                        write_file(
                            &d.join("io.weight"),
                            &format!("{}:{} {}", w.major(), w.minor(), blkio_weight_to_io(v)),
                        )?;
                    }
                }
            }
            for (list, _, key) in throttles {
                for t in list.iter().flatten() {
                    write_file(
                        &d.join("io.max"),
                        &format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn apply_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<(), Error> {
        // cgroup v2 device control needs an eBPF program; not implemented.
        let Some(d) = self.v1("devices") else {
            return Ok(());
        };
        for r in rules {
            let file = if r.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            let access = r.access().clone().unwrap_or_else(|| "rwm".to_string());
            let line = match r.typ() {
                None | Some(oci_spec::runtime::LinuxDeviceType::A)
                    if r.major().is_none() && r.minor().is_none() =>
                {
                    // "a" alone means every device; the kernel reads no more.
                    "a".to_string()
                }
                t => {
                    let t = t.unwrap_or_default();
                    let n = |v: Option<i64>| v.map_or("*".to_string(), |v| v.to_string());
                    format!("{} {}:{} {access}", t.as_str(), n(r.major()), n(r.minor()))
                }
            };
            write_file(&d.join(file), &line)?;
        }
        Ok(())
    }

    /// Freeze or thaw every process in the cgroup, and wait until the kernel
    /// reports the new state.
    pub(crate) fn freeze(&self, frozen: bool) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Some(d) = self.v1("freezer") {
            let f = d.join("freezer.state");
            let want = if frozen { "FROZEN" } else { "THAWED" };
            loop {
                // Writing FROZEN again nudges tasks that were busy in the
                // kernel when the first write came.
                write_file(&f, want)?;
                let state = read_trimmed(&f).unwrap_or_default();
                if state == want {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    if frozen {
                        let _ = write_file(&f, "THAWED");
                    }
                    return Err(Error::new(
                        berth_types::ErrorKind::Unavailable,
                        format!(
                            "cgroup {} did not reach {want} (state {state})",
                            d.display()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let d = self.v2_dir().ok_or_else(|| missing("freezer"))?;
        write_file(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        loop {
            let events = fs::read_to_string(d.join("cgroup.events")).unwrap_or_default();
            if events.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                if frozen {
                    let _ = write_file(&d.join("cgroup.freeze"), "0");
                }
                return Err(Error::new(
                    berth_types::ErrorKind::Unavailable,
                    format!("cgroup {} did not reach {want}", d.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether the cgroup is frozen (v1 freezer.state, v2 cgroup.events).
    pub(crate) fn is_frozen(&self) -> bool {
        if let Some(d) = self.v1("freezer") {
            return read_trimmed(&d.join("freezer.state")).is_some_and(|s| s == "FROZEN");
        }
        self.v2_dir().is_some_and(|d| {
            fs::read_to_string(d.join("cgroup.events"))
                .map(|e| e.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(false)
        })
    }

    /// Usage figures from the cgroup files, v1 or v2 (what each controller
    /// offers; missing ones are None).
    pub(crate) fn stats(&self) -> crate::CgroupStats {
        let num = |p: PathBuf| read_trimmed(&p).and_then(|s| s.parse::<u64>().ok());
        let field = |p: PathBuf, key: &str| -> Option<u64> {
            fs::read_to_string(p).ok()?.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        let mut s = crate::CgroupStats::default();
        if let Some(d) = self.v1("memory") {
            s.memory_usage = num(d.join("memory.usage_in_bytes"));
            s.memory_max_usage = num(d.join("memory.max_usage_in_bytes"));
            s.memory_limit = num(d.join("memory.limit_in_bytes"));
            s.memory_failcnt = num(d.join("memory.failcnt"));
        } else if let Some(d) = self.v2_with("memory") {
            s.memory_usage = num(d.join("memory.current"));
            s.memory_max_usage = num(d.join("memory.peak"));
            s.memory_limit = num(d.join("memory.max"));
            s.memory_failcnt = field(d.join("memory.events"), "max");
        }
        if let Some(d) = self.v1("cpuacct") {
            s.cpu_usage_ns = num(d.join("cpuacct.usage"));
            s.cpu_user_ns = field(d.join("cpuacct.stat"), "user").map(|t| t * 10_000_000);
            s.cpu_kernel_ns = field(d.join("cpuacct.stat"), "system").map(|t| t * 10_000_000);
        } else if let Some(d) = self.v2_dir() {
            let stat = d.join("cpu.stat");
            s.cpu_usage_ns = field(stat.clone(), "usage_usec").map(|u| u * 1000);
            s.cpu_user_ns = field(stat.clone(), "user_usec").map(|u| u * 1000);
            s.cpu_kernel_ns = field(stat, "system_usec").map(|u| u * 1000);
        }
        if let Some(d) = self.v1("pids").or_else(|| self.v2_with("pids")) {
            s.pids_current = num(d.join("pids.current"));
            s.pids_limit = num(d.join("pids.max"));
        }
        s
    }

    /// The figures `docker stats` shows, from v1 or v2 files.
    pub(crate) fn resource_stats(&self) -> crate::ResourceStats {
        let mut s = crate::ResourceStats::default();
        if let Some(d) = self.v1("memory") {
            read_v1_memory(d, &mut s);
        } else if let Some(d) = self.v2_with("memory") {
            s.v2 = true;
            read_v2_memory(d, &mut s);
        }
        if let Some(d) = self.v1("cpuacct") {
            s.cpu_total_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
            s.percpu_ns = read_trimmed(&d.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let stat = read_kv(&d.join("cpuacct.stat"));
            // USER_HZ is 100 on Linux: ticks of 10 ms.
            s.cpu_user_ns = kv(&stat, "user") * 10_000_000;
            s.cpu_kernel_ns = kv(&stat, "system") * 10_000_000;
            if let Some(c) = self.v1("cpu") {
                let stat = read_kv(&c.join("cpu.stat"));
                s.periods = kv(&stat, "nr_periods");
                s.throttled_periods = kv(&stat, "nr_throttled");
                s.throttled_ns = kv(&stat, "throttled_time");
            }
        } else if let Some(d) = self.v2_dir() {
            s.v2 = true;
            let stat = read_kv(&d.join("cpu.stat"));
            s.cpu_total_ns = kv(&stat, "usage_usec") * 1000;
            s.cpu_user_ns = kv(&stat, "user_usec") * 1000;
            s.cpu_kernel_ns = kv(&stat, "system_usec") * 1000;
            s.periods = kv(&stat, "nr_periods");
            s.throttled_periods = kv(&stat, "nr_throttled");
            s.throttled_ns = kv(&stat, "throttled_usec") * 1000;
        }
        if let Some(d) = self.v1("pids").or_else(|| self.v2_with("pids")) {
            s.pids_current = read_u64(&d.join("pids.current")).unwrap_or(0);
            s.pids_limit = read_u64(&d.join("pids.max"));
        }
        if let Some(d) = self.v1("blkio") {
            s.blkio = read_v1_blkio(d);
        } else if let Some(d) = self.v2_with("io") {
            s.blkio = vec![(
                "io_service_bytes_recursive".into(),
                parse_io_stat(&fs::read_to_string(d.join("io.stat")).unwrap_or_default()),
            )];
        }
        s
    }

    /// The processes in the cgroup (from the first hierarchy that has it).
    pub(crate) fn pids(&self) -> Vec<i32> {
        for (_, d) in &self.dirs {
            if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
                return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
        }
        Vec::new()
    }

    /// Whether the kernel OOM-killed a process of the cgroup: v2
    /// memory.events oom_kill, v1 memory.oom_control oom_kill (Linux 4.13+)
    /// or under_oom. Best effort: false when nothing can be read.
    pub(crate) fn oom_killed(&self) -> bool {
        let field = |text: &str, key: &str| -> Option<u64> {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        if let Some(d) = self.v1("memory") {
            let Ok(t) = fs::read_to_string(d.join("memory.oom_control")) else {
                return false;
            };
            return field(&t, "oom_kill").unwrap_or(0) > 0 || field(&t, "under_oom") == Some(1);
        }
        if let Some(d) = self.v2_dir() {
            let Ok(t) = fs::read_to_string(d.join("memory.events")) else {
                return false;
            };
            return field(&t, "oom_kill").unwrap_or(0) > 0;
        }
        false
    }

    /// Remove the container's directory (and any sub-cgroups the container
    /// made) in every hierarchy. Keeps going past failures and reports them
    /// all. Retries for a while on EBUSY, since exiting processes leave
    /// their cgroup a little after they are reaped.
    pub(crate) fn destroy(&self) -> Result<(), Error> {
        let mut errs = Vec::new();
        for (_, dir) in &self.dirs {
            if let Err(e) = remove_cgroup_dir(dir) {
                errs.push(e);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            let kind = errs[0].kind;
            let msg = errs
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; ");
            Err(Error::new(kind, msg))
        }
    }
}

fn remove_cgroup_dir(dir: &Path) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match remove_tree_once(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                let extra = if e.raw_os_error() == Some(libc::EBUSY) {
                    " (processes are still in it)"
                } else {
                    ""
                };
                return Err(Error::new(
                    crate::sys::kind_of(&e),
                    format!("remove cgroup {}: {}{extra}", dir.display(), errmsg(&e)),
                ));
            }
        }
    }
}

/// rmdir a cgroup directory after its sub-cgroups (cgroupfs directories hold
/// only control files, which rmdir ignores).
fn remove_tree_once(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_tree_once(&e.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// On cgroup v2, enable in `dir`'s subtree_control every controller it
/// offers that a container can use. Best effort: some controllers cannot be
/// enabled everywhere (e.g. cpu with realtime tasks in the root).
fn enable_subtree_controllers(dir: &Path) {
    const WANTED: &[&str] = &[
        "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc",
    ];
    let avail: BTreeSet<String> = fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let enabled: BTreeSet<String> = fs::read_to_string(dir.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for c in WANTED {
        if avail.contains(*c) && !enabled.contains(*c) {
            let _ = write_file(&dir.join("cgroup.subtree_control"), &format!("+{c}"));
        }
    }
}

/// runc's conversion of cpu.shares [2, 262144] to cpu.weight [1, 10000].
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// runc's conversion of blkio.weight [10, 1000] to io.weight [1, 10000].
pub(crate) fn blkio_weight_to_io(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// runc's wording when the kernel refuses a memory limit below what the
/// cgroup uses and cannot reclaim (dockerd passes it on).
fn limit_below_usage(limit: i64, usage: u64, peak: u64) -> Error {
    Error::new(
        berth_types::ErrorKind::Internal,
        format!(
            "unable to set memory limit to {limit} (current usage: {usage}, peak usage: {peak})"
        ),
    )
}

/// v1 memory.limit_in_bytes: the kernel reclaims down to a lower limit and
/// answers EBUSY when it cannot.
fn write_v1_limit(d: &Path, l: i64) -> Result<(), Error> {
    let f = d.join("memory.limit_in_bytes");
    match fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .and_then(|mut h| h.write_all(l.to_string().as_bytes()))
    {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            let n = |f: &str| {
                read_trimmed(&d.join(f))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            };
            Err(limit_below_usage(
                l,
                n("memory.usage_in_bytes"),
                n("memory.max_usage_in_bytes"),
            ))
        }
        Err(e) => Err(os_err(format!("write {l:?} to {}", f.display()), e)),
    }
}

/// v2 memory.max. Lowered below memory.current, the kernel reclaims and,
/// when that is not enough, OOM-kills the container; instead, a lower
/// limit first goes into memory.high (reclaim without the OOM killer) and
/// is refused as on v1 when usage stays above it.
fn write_v2_max(d: &Path, l: i64) -> Result<(), Error> {
    let max = d.join("memory.max");
    if l < 0 {
        return write_file(&max, "max");
    }
    let current = |f: &str| read_trimmed(&d.join(f)).and_then(|s| s.parse::<u64>().ok());
    let high = d.join("memory.high");
    if let Some(usage) = current("memory.current")
        && usage > l as u64
        && high.exists()
    {
        let old_high = read_trimmed(&high).unwrap_or_else(|| "max".into());
        write_file(&high, &l.to_string())?;
        let after = current("memory.current").unwrap_or(0);
        if after > l as u64 {
            let _ = write_file(&high, &old_high);
            return Err(limit_below_usage(
                l,
                after,
                current("memory.peak").unwrap_or(after),
            ));
        }
        write_file(&max, &l.to_string())?;
        return write_file(&high, &old_high);
    }
    write_file(&max, &l.to_string())
}

fn read_u64(p: &Path) -> Option<u64> {
    read_trimmed(p).and_then(|s| s.parse().ok())
}

/// A flat keyed file (memory.stat, cpu.stat, memory.events): `key value` lines.
fn parse_kv(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn read_kv(p: &Path) -> Vec<(String, u64)> {
    parse_kv(&fs::read_to_string(p).unwrap_or_default())
}

fn kv(list: &[(String, u64)], key: &str) -> u64 {
    list.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

/// An unlimited v1 limit is the largest page-aligned long; anything at or
/// above 2^62 is taken as "no limit".
fn v1_limit(v: Option<u64>) -> Option<u64> {
    v.filter(|v| *v < 1 << 62)
}

pub(crate) fn read_v1_memory(d: &Path, s: &mut crate::ResourceStats) {
    s.memory_usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
    s.memory_max_usage = read_u64(&d.join("memory.max_usage_in_bytes")).unwrap_or(0);
    s.memory_limit = v1_limit(read_u64(&d.join("memory.limit_in_bytes")));
    s.memory_failcnt = read_u64(&d.join("memory.failcnt")).unwrap_or(0);
    s.memory_stat = read_kv(&d.join("memory.stat"));
}

pub(crate) fn read_v2_memory(d: &Path, s: &mut crate::ResourceStats) {
    s.memory_usage = read_u64(&d.join("memory.current")).unwrap_or(0);
    // "max" does not parse: no limit.
    s.memory_limit = read_u64(&d.join("memory.max"));
    s.memory_failcnt = kv(&read_kv(&d.join("memory.events")), "oom");
    s.memory_stat = read_kv(&d.join("memory.stat"));
}

/// v1 blkio files: `8:0 Read 4096` lines and a closing `Total N`.
pub(crate) fn parse_blkio(text: &str) -> Vec<crate::BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.next()?;
            let (major, minor) = dev.split_once(':')?;
            let (op, value) = match (f.next(), f.next()) {
                (Some(op), Some(v)) => (op.to_string(), v),
                // blkio.sectors_recursive and io_time: `8:0 N`
                (Some(v), None) => (String::new(), v),
                _ => return None,
            };
            Some(crate::BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The v1 blkio figures docker reports. Kernels without CFQ have no
/// `blkio.io_*` files (or empty ones); then the throttle files give bytes
/// and operations, as containerd reads them.
fn read_v1_blkio(d: &Path) -> Vec<(String, Vec<crate::BlkioEntry>)> {
    const NAMES: &[&str] = &[
        "io_service_bytes_recursive",
        "io_serviced_recursive",
        "io_queued_recursive",
        "io_service_time_recursive",
        "io_wait_time_recursive",
        "io_merged_recursive",
        "io_time_recursive",
        "sectors_recursive",
    ];
    let read = |f: &str| parse_blkio(&fs::read_to_string(d.join(f)).unwrap_or_default());
    let mut out: Vec<(String, Vec<crate::BlkioEntry>)> = NAMES
        .iter()
        .map(|n| (n.to_string(), read(&format!("blkio.{n}"))))
        .collect();
    if out[0].1.is_empty() {
        out[0].1 = read("blkio.throttle.io_service_bytes_recursive");
        out[1].1 = read("blkio.throttle.io_serviced_recursive");
    }
    out
}

/// v2 io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`, as
/// docker's read and write byte counts.
pub(crate) fn parse_io_stat(text: &str) -> Vec<crate::BlkioEntry> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let fields: Vec<(&str, u64)> = f
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.parse().ok()?))
            })
            .collect();
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
        for (op, key) in [("read", "rbytes"), ("write", "wbytes")] {
            out.push(crate::BlkioEntry {
                major,
                minor,
                op: op.into(),
                value: get(key),
            });
        }
    }
    out
}

fn missing(controller: &str) -> Error {
    Error::invalid(format!(
        "the {controller} cgroup controller is not available on this host"
    ))
}

fn read_trimmed(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Write one value to a cgroup control file (one write(2), as the kernel
/// parses each write separately).
pub(crate) fn write_file(p: &Path, v: &str) -> Result<(), Error> {
    let r = fs::OpenOptions::new()
        .write(true)
        .open(p)
        .and_then(|mut f| f.write_all(v.as_bytes()));
    r.map_err(|e| os_err(format!("write {v:?} to {}", p.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 31 0:32 / /mnt/mem\\040x rw,relatime - cgroup cgroup rw,memory
100 1 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_hierarchies() {
        let hs = parse_hierarchies(HYBRID);
        assert_eq!(hs.len(), 5, "{hs:?}");
        assert!(hs[4].v2);
        assert_eq!(hs[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(hs[0].mountpoint, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(hs[2].controllers, vec!["name=systemd"]);
        assert!(hs[3].v2);
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn parses_proc_cgroup() {
        let l = parse_proc_cgroup("4:memory:/a/b\n2:cpuacct,cpu:/\n0::/x\n");
        assert_eq!(l[0], (vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(l[1].0, vec!["cpu", "cpuacct"]);
        assert_eq!(l[2], (vec![], "/x".to_string()));
    }

    #[test]
    fn reads_v2_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| std::fs::write(d.path().join(f), t).unwrap();
        w("memory.current", "52428800\n");
        w("memory.max", "max\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("memory.stat", "anon 1000\nfile 2000\ninactive_file 1500\n");
        let mut s = crate::ResourceStats::default();
        read_v2_memory(d.path(), &mut s);
        assert_eq!(s.memory_usage, 52428800);
        assert_eq!(s.memory_limit, None);
        assert_eq!(s.memory_failcnt, 1);
        assert_eq!(kv(&s.memory_stat, "inactive_file"), 1500);
        w("memory.max", "104857600\n");
        read_v2_memory(d.path(), &mut s);
        assert_eq!(s.memory_limit, Some(104857600));
        let io = parse_io_stat("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(io.len(), 2);
        assert_eq!((io[0].op.as_str(), io[0].value), ("read", 4096));
        assert_eq!((io[1].op.as_str(), io[1].value), ("write", 8192));
    }

    #[test]
    fn reads_v1_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| std::fs::write(d.path().join(f), t).unwrap();
        w("memory.usage_in_bytes", "4096\n");
        w("memory.max_usage_in_bytes", "8192\n");
        w("memory.limit_in_bytes", "9223372036854771712\n");
        w("memory.failcnt", "0\n");
        w("memory.stat", "cache 10\ntotal_inactive_file 5\n");
        let mut s = crate::ResourceStats::default();
        read_v1_memory(d.path(), &mut s);
        assert_eq!(
            (s.memory_usage, s.memory_max_usage, s.memory_limit),
            (4096, 8192, None)
        );
        assert_eq!(kv(&s.memory_stat, "total_inactive_file"), 5);
        let b = parse_blkio("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].major, b[0].minor, b[0].op.as_str(), b[0].value),
            (8, 0, "Read", 4096)
        );
    }

    #[test]
    fn weight_conversions() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10000);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10000);
        assert_eq!(blkio_weight_to_io(500), 4950);
    }

    #[test]
    fn spec_paths() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "/r"},
            "linux": {"cgroupsPath": "/berth/abc"}
        }))
        .unwrap();
        assert_eq!(spec_path(&spec, None).unwrap(), Path::new("/berth/abc"));
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "/r"}, "linux": {}
        }))
        .unwrap();
        assert_eq!(spec_path(&spec, Some("x")).unwrap(), Path::new("/berth/x"));
        assert!(spec_path(&spec, None).is_err());
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "/r"},
            "linux": {"cgroupsPath": "system.slice:berth:x"}
        }))
        .unwrap();
        assert!(spec_path(&spec, None).is_err());
    }
}
