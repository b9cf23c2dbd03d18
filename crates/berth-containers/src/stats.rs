//! `GET /containers/{id}/stats`: one sample of a container's resource use in
//! Docker's `StatsResponse` shape, from its cgroup (v1 or v2, through
//! berth-runtime), the host's /proc/stat (system CPU time, online CPUs) and
//! the container's network namespace (/proc/<init pid>/net/dev).
//!
//! Field order and omissions follow dockerd's JSON (Go's encoder: structs
//! always present, `omitempty` numbers and maps left out when zero, map
//! keys sorted). The memory keys are the ones dockerd picks: cgroup v1's
//! (`cache`, `rss`, …, `total_inactive_file`) or v2's (`anon`, `file`, …,
//! `inactive_file`); the docker CLI subtracts `total_inactive_file` (v1)
//! or `inactive_file` (v2) from `usage` for its memory column.

use std::collections::BTreeMap;

use berth_runtime::{BlkioEntry, ResourceStats};
use berth_types::Result;
use serde_json::{Map, Value, json};

use crate::{ContainerService, ZERO_TIME};

/// dockerd's v1 `memory_stats.stats` keys.
const V1_KEYS: &[&str] = &[
    "cache",
    "rss",
    "rss_huge",
    "mapped_file",
    "dirty",
    "writeback",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "hierarchical_memory_limit",
    "hierarchical_memsw_limit",
    "total_cache",
    "total_rss",
    "total_rss_huge",
    "total_mapped_file",
    "total_dirty",
    "total_writeback",
    "total_pgpgin",
    "total_pgpgout",
    "total_pgfault",
    "total_pgmajfault",
    "total_inactive_anon",
    "total_active_anon",
    "total_inactive_file",
    "total_active_file",
    "total_unevictable",
];

/// dockerd's v2 `memory_stats.stats` keys.
const V2_KEYS: &[&str] = &[
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
];

/// One interface's counters from /proc/<pid>/net/dev.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetDev {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// /proc/net/dev: two header lines, then `name: 16 counters` (rx bytes,
/// packets, errs, drop, fifo, frame, compressed, multicast, then tx bytes,
/// packets, errs, drop, …). The loopback is left out, as docker reports
/// only the container's endpoints.
pub fn parse_net_dev(text: &str) -> Vec<(String, NetDev)> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let n: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            if n.len() < 12 {
                return None;
            }
            Some((
                name.to_string(),
                NetDev {
                    rx_bytes: n[0],
                    rx_packets: n[1],
                    rx_errors: n[2],
                    rx_dropped: n[3],
                    tx_bytes: n[8],
                    tx_packets: n[9],
                    tx_errors: n[10],
                    tx_dropped: n[11],
                },
            ))
        })
        .collect()
}

/// The host's CPU time in nanoseconds (the first seven fields of the `cpu`
/// line of /proc/stat, in USER_HZ=100 ticks) and its online CPUs (the
/// `cpuN` lines), as dockerd reads them.
pub fn parse_proc_stat(text: &str) -> (u64, u32) {
    let mut total = 0;
    let mut cpus = 0;
    for l in text.lines() {
        if !l.starts_with("cpu") {
            break;
        }
        let mut f = l.split_whitespace();
        let name = f.next().unwrap_or("");
        if name == "cpu" {
            let ticks: u64 = f.take(7).filter_map(|v| v.parse::<u64>().ok()).sum();
            total = ticks * 1_000_000_000 / 100;
        } else if name[3..].bytes().all(|b| b.is_ascii_digit()) {
            cpus += 1;
        }
    }
    (total, cpus)
}

/// Total RAM of the host, for a limit that is "unlimited".
fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let rest = l.strip_prefix("MemTotal:")?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn blkio_list(entries: &[BlkioEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}))
            .collect(),
    )
}

/// `cpu_stats` (or `precpu_stats`): all zero for a container that is not running.
pub fn cpu_json(s: Option<&ResourceStats>, system: u64, cpus: u32) -> Value {
    let mut usage = Map::new();
    usage.insert("total_usage".into(), json!(s.map_or(0, |s| s.cpu_total_ns)));
    if let Some(s) = s.filter(|s| !s.percpu_ns.is_empty()) {
        usage.insert("percpu_usage".into(), json!(s.percpu_ns));
    }
    usage.insert(
        "usage_in_kernelmode".into(),
        json!(s.map_or(0, |s| s.cpu_kernel_ns)),
    );
    usage.insert(
        "usage_in_usermode".into(),
        json!(s.map_or(0, |s| s.cpu_user_ns)),
    );
    let mut out = Map::new();
    out.insert("cpu_usage".into(), Value::Object(usage));
    if system != 0 {
        out.insert("system_cpu_usage".into(), json!(system));
    }
    if cpus != 0 {
        out.insert("online_cpus".into(), json!(cpus));
    }
    out.insert(
        "throttling_data".into(),
        json!({
            "periods": s.map_or(0, |s| s.periods),
            "throttled_periods": s.map_or(0, |s| s.throttled_periods),
            "throttled_time": s.map_or(0, |s| s.throttled_ns),
        }),
    );
    Value::Object(out)
}

fn memory_json(s: &ResourceStats, machine: u64) -> Value {
    let keys = if s.v2 { V2_KEYS } else { V1_KEYS };
    let stat: BTreeMap<&str, u64> = keys
        .iter()
        .map(|k| {
            let v = s
                .memory_stat
                .iter()
                .find(|(n, _)| n == k)
                .map_or(0, |(_, v)| *v);
            (*k, v)
        })
        .collect();
    let mut limit = s.memory_limit.unwrap_or(u64::MAX);
    if machine > 0 && limit > machine {
        limit = machine;
    }
    let mut out = Map::new();
    if s.memory_usage != 0 {
        out.insert("usage".into(), json!(s.memory_usage));
    }
    if s.memory_max_usage != 0 {
        out.insert("max_usage".into(), json!(s.memory_max_usage));
    }
    out.insert("stats".into(), json!(stat));
    if s.memory_failcnt != 0 {
        out.insert("failcnt".into(), json!(s.memory_failcnt));
    }
    if limit != 0 {
        out.insert("limit".into(), json!(limit));
    }
    Value::Object(out)
}

fn blkio_json(s: Option<&ResourceStats>) -> Value {
    let mut out = Map::new();
    for name in [
        "io_service_bytes_recursive",
        "io_serviced_recursive",
        "io_queue_recursive",
        "io_service_time_recursive",
        "io_wait_time_recursive",
        "io_merged_recursive",
        "io_time_recursive",
        "sectors_recursive",
    ] {
        // The runtime's name for the queue list is the file's (`queued`).
        let file = if name == "io_queue_recursive" {
            "io_queued_recursive"
        } else {
            name
        };
        let v = match s.and_then(|s| s.blkio.iter().find(|(n, _)| n == file)) {
            Some((_, e)) if !(e.is_empty() && s.is_some_and(|s| s.v2)) => blkio_list(e),
            // v1 lists are always arrays; v2 fills only the first.
            _ if s.is_some_and(|s| !s.v2) => json!([]),
            _ => Value::Null,
        };
        out.insert(name.into(), v);
    }
    Value::Object(out)
}

/// A sample: what a stats stream sends, minus `preread`/`precpu_stats`
/// (filled by the caller from the previous sample).
pub struct Sample {
    pub read: String,
    pub id: String,
    pub name: String,
    /// None when the container is not running.
    pub cgroup: Option<ResourceStats>,
    pub system_cpu: u64,
    pub online_cpus: u32,
    pub networks: Option<Vec<(String, NetDev)>>,
}

impl Sample {
    /// Docker's JSON with the previous sample's time and CPU figures.
    pub fn to_json(&self, pre: Option<&Sample>) -> Value {
        let s = self.cgroup.as_ref();
        let mut out = Map::new();
        out.insert("read".into(), json!(self.read));
        out.insert(
            "preread".into(),
            json!(pre.map_or(ZERO_TIME, |p| p.read.as_str())),
        );
        let mut pids = Map::new();
        if let Some(s) = s {
            if s.pids_current != 0 {
                pids.insert("current".into(), json!(s.pids_current));
            }
            if let Some(l) = s.pids_limit.filter(|l| *l != 0) {
                pids.insert("limit".into(), json!(l));
            }
        }
        out.insert("pids_stats".into(), Value::Object(pids));
        out.insert("blkio_stats".into(), blkio_json(s));
        out.insert("num_procs".into(), json!(0));
        out.insert("storage_stats".into(), json!({}));
        out.insert(
            "cpu_stats".into(),
            cpu_json(s, self.system_cpu, self.online_cpus),
        );
        out.insert(
            "precpu_stats".into(),
            match pre {
                Some(p) => cpu_json(p.cgroup.as_ref(), p.system_cpu, p.online_cpus),
                None => cpu_json(None, 0, 0),
            },
        );
        out.insert(
            "memory_stats".into(),
            match s {
                Some(s) => memory_json(s, machine_memory()),
                None => json!({}),
            },
        );
        out.insert("name".into(), json!(self.name));
        out.insert("id".into(), json!(self.id));
        if let Some(nets) = self.networks.as_ref().filter(|n| !n.is_empty()) {
            let m: BTreeMap<&str, Value> = nets
                .iter()
                .map(|(n, d)| {
                    (
                        n.as_str(),
                        json!({
                            "rx_bytes": d.rx_bytes, "rx_packets": d.rx_packets,
                            "rx_errors": d.rx_errors, "rx_dropped": d.rx_dropped,
                            "tx_bytes": d.tx_bytes, "tx_packets": d.tx_packets,
                            "tx_errors": d.tx_errors, "tx_dropped": d.tx_dropped,
                        }),
                    )
                })
                .collect();
            out.insert("networks".into(), json!(m));
        }
        Value::Object(out)
    }
}

impl ContainerService {
    /// One stats sample of a container (blocking: reads cgroup and /proc
    /// files). A container that is not running gives an empty sample, as
    /// dockerd's.
    pub fn stats_sample(&self, name: &str) -> Result<Sample> {
        let row = self.find(name)?;
        let rec = &row.record;
        let mut sample = Sample {
            read: ZERO_TIME.to_string(),
            id: row.id.clone(),
            name: rec["Name"].as_str().unwrap_or("").to_string(),
            cgroup: None,
            system_cpu: 0,
            online_cpus: 0,
            networks: None,
        };
        let st = &rec["State"];
        if st["Running"].as_bool() != Some(true) || st["Restarting"].as_bool() == Some(true) {
            return Ok(sample);
        }
        let bundle = self.dir(&row.id).join("config.json");
        let spec: Option<berth_runtime::Spec> = std::fs::read(&bundle)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(spec) = spec else {
            return Ok(sample);
        };
        let cg = match berth_runtime::resource_stats(&spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(container = %row.id, error = %e, "stats");
                return Ok(sample);
            }
        };
        sample.read = crate::now();
        sample.cgroup = Some(cg);
        let (system, cpus) =
            parse_proc_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
        sample.system_cpu = system;
        sample.online_cpus = cpus;
        // A container on the host's network has no interfaces of its own.
        let mode = rec["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
        let pid = st["Pid"].as_i64().unwrap_or(0);
        if mode != "host" && pid > 0 {
            sample.networks = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .ok()
                .map(|t| parse_net_dev(&t));
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat() {
        let t = "cpu  100 0 50 1000 0 0 0 0 0 0\ncpu0 50 0 25 500 0 0 0 0 0 0\ncpu1 50 0 25 500 0 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(t), (1150 * 10_000_000, 2));
    }

    #[test]
    fn net_dev_skips_loopback() {
        let t = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 2000 20 1 2 0 0 0 0 3000 30 3 4 0 0 0 0\n";
        let n = parse_net_dev(t);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].0, "eth0");
        assert_eq!(
            n[0].1,
            NetDev {
                rx_bytes: 2000,
                rx_packets: 20,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 3000,
                tx_packets: 30,
                tx_errors: 3,
                tx_dropped: 4
            }
        );
    }

    #[test]
    fn json_shape_v1_and_v2() {
        let mut cg = ResourceStats {
            cpu_total_ns: 5,
            percpu_ns: vec![2, 3],
            memory_usage: 100,
            memory_limit: None,
            memory_stat: vec![("total_inactive_file".into(), 40), ("swap".into(), 1)],
            pids_current: 1,
            ..Default::default()
        };
        let s = Sample {
            read: "2026-01-01T00:00:01Z".into(),
            id: "abc".into(),
            name: "/c".into(),
            cgroup: Some(cg.clone()),
            system_cpu: 10,
            online_cpus: 2,
            networks: None,
        };
        let v = s.to_json(None);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
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
                "id"
            ]
        );
        assert_eq!(v["preread"], ZERO_TIME);
        assert_eq!(v["memory_stats"]["stats"]["total_inactive_file"], 40);
        assert!(v["memory_stats"]["stats"].get("swap").is_none());
        assert!(v["memory_stats"]["limit"].as_u64().unwrap() > 0);
        assert_eq!(v["cpu_stats"]["cpu_usage"]["percpu_usage"], json!([2, 3]));
        assert_eq!(v["blkio_stats"]["io_queue_recursive"], json!([]));
        assert!(v["pids_stats"].get("limit").is_none());
        cg.v2 = true;
        cg.percpu_ns.clear();
        cg.memory_stat = vec![("inactive_file".into(), 7)];
        let s2 = Sample {
            cgroup: Some(cg),
            ..s
        };
        let v = s2.to_json(Some(&s2));
        assert_eq!(v["memory_stats"]["stats"]["inactive_file"], 7);
        assert!(
            v["memory_stats"]["stats"]
                .get("total_inactive_file")
                .is_none()
        );
        assert!(v["cpu_stats"]["cpu_usage"].get("percpu_usage").is_none());
        assert_eq!(v["blkio_stats"]["io_queue_recursive"], Value::Null);
        assert_eq!(v["preread"], "2026-01-01T00:00:01Z");
    }
}
