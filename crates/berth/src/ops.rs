//! `stats`, `update`, and the create flags for resource limits and
//! healthchecks.
//!
//! `stats` shows memory as the working set: the cgroup's usage minus its
//! inactive file cache (`total_inactive_file` on cgroup v1,
//! `inactive_file` on v2), which is also what docker's MEM USAGE column
//! is; the column says so, and the raw usage (page cache included) is a
//! column of its own. `--format` fields: `.Container .Name .ID .CPUPerc
//! .MemUsage .MemPerc .MemRaw .MemInactiveFile .NetIO .BlockIO .PIDs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use berth_format::{self as format, bytes_size, human_size_with_precision, ram_in_bytes};
use clap::Args;
use futures_util::StreamExt;
use hyper::Method;
use serde_json::{Map, Value, json};

use crate::client::{Client, DaemonError, empty, enc, json_lines};
use crate::containers::{FlagError, go_duration, parse_cpus, restart_policy};

// ---------------------------------------------------------------- create flags

// Resource and healthcheck flags of `create` and `run`.
#[derive(Args, Default)]
pub struct LimitOpts {
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long = "cpu-period")]
    cpu_period: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// Command to run to check health
    #[arg(long = "health-cmd")]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 0s)
    #[arg(long = "health-interval")]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 0s)
    #[arg(long = "health-timeout")]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries")]
    health_retries: Option<i64>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-period")]
    health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-interval")]
    health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// What berthd does when the container turns unhealthy: none, restart, stop or kill (berth only)
    #[arg(long = "health-on-unhealthy")]
    health_on_unhealthy: Option<String>,
}

fn mem_flag(v: &str, flag: &str) -> Result<i64> {
    if v == "-1" {
        return Ok(-1);
    }
    ram_in_bytes(v)
        .map_err(|e| FlagError(format!("invalid argument {v:?} for \"{flag}\" flag: {e}")).into())
}

/// A Go duration flag in nanoseconds; docker refuses negative ones.
fn duration_flag(v: &Option<String>, flag: &str) -> Result<i64> {
    let Some(v) = v else { return Ok(0) };
    let secs = go_duration(v).ok_or_else(|| {
        FlagError(format!(
            "invalid argument {v:?} for \"{flag}\" flag: time: invalid duration {}",
            crate::containers::go_quote(v)
        ))
    })?;
    Ok((secs * 1e9).round() as i64)
}

impl LimitOpts {
    /// Add these flags to a create request's Config and HostConfig, as
    /// docker's `parse` does.
    pub fn apply(&self, cfg: &mut Value, hc: &mut Value) -> Result<()> {
        if let Some(v) = &self.memory_swap {
            hc["MemorySwap"] = json!(mem_flag(v, "--memory-swap")?);
        }
        if let Some(v) = &self.memory_reservation {
            hc["MemoryReservation"] = json!(mem_flag(v, "--memory-reservation")?);
        }
        for (k, v) in [("CpuPeriod", self.cpu_period), ("CpuQuota", self.cpu_quota)] {
            if let Some(v) = v {
                hc[k] = json!(v);
            }
        }
        for (k, v) in [
            ("CpusetCpus", &self.cpuset_cpus),
            ("CpusetMems", &self.cpuset_mems),
        ] {
            if let Some(v) = v {
                hc[k] = json!(v);
            }
        }
        if let Some(w) = self.blkio_weight {
            hc["BlkioWeight"] = json!(w);
        }
        if let Some(a) = &self.health_on_unhealthy {
            if !["none", "restart", "stop", "kill"].contains(&a.as_str()) {
                return Err(FlagError(format!(
                    "invalid argument {a:?} for \"--health-on-unhealthy\" flag: use one of none, restart, stop, kill"
                ))
                .into());
            }
            hc["BerthHealthOnUnhealthy"] = json!(a);
        }
        // docker's healthcheck flags (cli/command/container/opts.go).
        let interval = duration_flag(&self.health_interval, "--health-interval")?;
        let timeout = duration_flag(&self.health_timeout, "--health-timeout")?;
        let start_period = duration_flag(&self.health_start_period, "--health-start-period")?;
        let start_interval = duration_flag(&self.health_start_interval, "--health-start-interval")?;
        let retries = self.health_retries.unwrap_or(0);
        let have_options = self.health_cmd.as_deref().is_some_and(|c| !c.is_empty())
            || interval != 0
            || timeout != 0
            || start_period != 0
            || start_interval != 0
            || retries != 0;
        if self.no_healthcheck {
            if have_options {
                bail!("--no-healthcheck conflicts with --health-* options");
            }
            cfg["Healthcheck"] = json!({"Test": ["NONE"]});
        } else if have_options {
            let test = match self.health_cmd.as_deref().filter(|c| !c.is_empty()) {
                Some(c) => json!(["CMD-SHELL", c]),
                None => Value::Null,
            };
            if interval < 0 {
                bail!("--health-interval cannot be negative");
            }
            if timeout < 0 {
                bail!("--health-timeout cannot be negative");
            }
            if retries < 0 {
                bail!("--health-retries cannot be negative");
            }
            if start_period < 0 {
                bail!("--health-start-period cannot be negative");
            }
            if start_interval < 0 {
                bail!("--health-start-interval cannot be negative");
            }
            let mut h = Map::new();
            if !test.is_null() {
                h.insert("Test".into(), test);
            }
            for (k, v) in [
                ("Interval", interval),
                ("Timeout", timeout),
                ("StartPeriod", start_period),
                ("StartInterval", start_interval),
                ("Retries", retries),
            ] {
                if v != 0 {
                    h.insert(k.into(), json!(v));
                }
            }
            cfg["Healthcheck"] = Value::Object(h);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- update

#[derive(Args)]
#[command(override_usage = "berth update [OPTIONS] CONTAINER [CONTAINER...]")]
pub struct UpdateArgs {
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable (default 0)
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long = "cpu-period")]
    cpu_period: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<i64>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<String>,
    /// Memory limit
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    restart: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    names: Vec<String>,
}

impl UpdateArgs {
    fn any_flag(&self) -> bool {
        self.blkio_weight.is_some()
            || self.cpu_period.is_some()
            || self.cpu_quota.is_some()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some()
            || self.cpu_shares.is_some()
            || self.cpus.is_some()
            || self.memory.is_some()
            || self.memory_reservation.is_some()
            || self.memory_swap.is_some()
            || self.pids_limit.is_some()
            || self.restart.is_some()
    }

    /// The request body docker's `update` sends.
    fn body(&self) -> Result<Value> {
        let mem = |v: &Option<String>, flag: &str| -> Result<i64> {
            v.as_deref().map_or(Ok(0), |v| mem_flag(v, flag))
        };
        let cpus = match &self.cpus {
            Some(n) => parse_cpus(n).map_err(|e| {
                FlagError(format!("invalid argument {n:?} for \"--cpus\" flag: {e}"))
            })?,
            None => 0,
        };
        let restart = match self.restart.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => restart_policy(r)?,
            None => json!({"Name": "", "MaximumRetryCount": 0}),
        };
        Ok(json!({
            "BlkioWeight": self.blkio_weight.unwrap_or(0),
            "CpusetCpus": self.cpuset_cpus.clone().unwrap_or_default(),
            "CpusetMems": self.cpuset_mems.clone().unwrap_or_default(),
            "CpuShares": self.cpu_shares.unwrap_or(0),
            "Memory": mem(&self.memory, "-m, --memory")?,
            "MemoryReservation": mem(&self.memory_reservation, "--memory-reservation")?,
            "MemorySwap": mem(&self.memory_swap, "--memory-swap")?,
            "CpuPeriod": self.cpu_period.unwrap_or(0),
            "CpuQuota": self.cpu_quota.unwrap_or(0),
            "NanoCpus": cpus,
            "PidsLimit": self.pids_limit.filter(|p| *p != 0),
            "RestartPolicy": restart,
        }))
    }
}

pub async fn update(c: &Client, a: UpdateArgs) -> Result<()> {
    if !a.any_flag() {
        bail!("you must provide one or more flags when using this command");
    }
    let body = a.body()?;
    let mut errs = Vec::new();
    let mut warnings = Vec::new();
    for name in &a.names {
        match c
            .post_json::<Value>(&format!("/containers/{}/update", enc(name)), &body)
            .await
        {
            Ok(r) => {
                println!("{name}");
                for w in r["Warnings"].as_array().into_iter().flatten() {
                    warnings.push(w.as_str().unwrap_or("").to_string());
                }
            }
            Err(e) => errs.push(match e.downcast_ref::<DaemonError>() {
                Some(d) => d.to_string(),
                None => format!("{e:#}"),
            }),
        }
    }
    if !warnings.is_empty() {
        println!("{}", warnings.join("\n"));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(errs.join("\n")))
    }
}

// ---------------------------------------------------------------- stats

#[derive(Args)]
#[command(override_usage = "berth stats [OPTIONS] [CONTAINER...]")]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', 'TEMPLATE')
    #[arg(long)]
    format: Option<String>,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    names: Vec<String>,
}

const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.MemRaw}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

fn stats_header() -> Value {
    json!({
        "Container": "CONTAINER", "Name": "NAME", "ID": "CONTAINER ID", "CPUPerc": "CPU %",
        "MemUsage": "MEM WORKING SET / LIMIT", "MemPerc": "MEM %",
        "MemRaw": "MEM RAW (WITH CACHE)", "MemInactiveFile": "INACTIVE FILE",
        "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
    })
}

/// The figures of one stats sample, computed as the docker CLI does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub cpu_percent: f64,
    /// Working set: usage minus inactive file pages.
    pub memory: f64,
    pub memory_raw: f64,
    pub inactive_file: f64,
    pub limit: f64,
    pub mem_percent: f64,
    pub net_rx: f64,
    pub net_tx: f64,
    pub blk_read: f64,
    pub blk_write: f64,
    pub pids: u64,
}

pub fn figures(v: &Value) -> Figures {
    let u = |p: &Value| p.as_u64().unwrap_or(0) as f64;
    let cpu = &v["cpu_stats"];
    let pre = &v["precpu_stats"];
    let cpu_delta = u(&cpu["cpu_usage"]["total_usage"]) - u(&pre["cpu_usage"]["total_usage"]);
    let sys_delta = u(&cpu["system_cpu_usage"]) - u(&pre["system_cpu_usage"]);
    let mut online = u(&cpu["online_cpus"]);
    if online == 0.0 {
        online = cpu["cpu_usage"]["percpu_usage"]
            .as_array()
            .map_or(0, |a| a.len()) as f64;
    }
    let cpu_percent = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    let mem = &v["memory_stats"];
    let usage = u(&mem["usage"]);
    let inactive = match mem["stats"].get("total_inactive_file") {
        Some(x) => u(x),
        None => u(&mem["stats"]["inactive_file"]),
    };
    let memory = if inactive < usage {
        usage - inactive
    } else {
        usage
    };
    let limit = u(&mem["limit"]);
    let (mut rx, mut tx) = (0.0, 0.0);
    for n in v["networks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        rx += u(&n["rx_bytes"]);
        tx += u(&n["tx_bytes"]);
    }
    let (mut r, mut w) = (0.0, 0.0);
    for e in v["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match e["op"].as_str().and_then(|o| o.chars().next()) {
            Some('r' | 'R') => r += u(&e["value"]),
            Some('w' | 'W') => w += u(&e["value"]),
            _ => {}
        }
    }
    Figures {
        cpu_percent,
        memory,
        memory_raw: usage,
        inactive_file: if inactive < usage { inactive } else { 0.0 },
        limit,
        mem_percent: if limit != 0.0 {
            memory / limit * 100.0
        } else {
            0.0
        },
        net_rx: rx,
        net_tx: tx,
        blk_read: r,
        blk_write: w,
        pids: v["pids_stats"]["current"].as_u64().unwrap_or(0),
    }
}

fn pct(v: f64) -> String {
    format!("{v:.2}%")
}

fn stats_row(container: &str, v: Option<&Value>, trunc: bool) -> Value {
    let Some(v) = v else {
        return json!({
            "Container": container, "Name": "--", "ID": container, "CPUPerc": "--",
            "MemUsage": "-- / --", "MemPerc": "--", "MemRaw": "--", "MemInactiveFile": "--",
            "NetIO": "--", "BlockIO": "--", "PIDs": "--",
        });
    };
    let f = figures(v);
    let id = v["id"].as_str().unwrap_or("");
    let name = v["name"].as_str().unwrap_or("").trim_start_matches('/');
    json!({
        "Container": container,
        "Name": if name.is_empty() { "--" } else { name },
        "ID": if trunc { id.get(..12).unwrap_or(id) } else { id },
        "CPUPerc": pct(f.cpu_percent),
        "MemUsage": format!("{} / {}", bytes_size(f.memory), bytes_size(f.limit)),
        "MemPerc": pct(f.mem_percent),
        "MemRaw": bytes_size(f.memory_raw),
        "MemInactiveFile": bytes_size(f.inactive_file),
        "NetIO": format!("{} / {}", human_size_with_precision(f.net_rx, 3), human_size_with_precision(f.net_tx, 3)),
        "BlockIO": format!("{} / {}", human_size_with_precision(f.blk_read, 3), human_size_with_precision(f.blk_write, 3)),
        "PIDs": f.pids.to_string(),
    })
}

fn stats_format(a: &StatsArgs) -> String {
    match a.format.as_deref() {
        Some(f) if !f.is_empty() && f != "table" => f.to_string(),
        _ => STATS_TABLE.into(),
    }
}

fn render(fmt: &str, rows: &[Value]) -> Result<String> {
    if fmt == "json" {
        return Ok(rows
            .iter()
            .map(|r| format::to_go_json(r, true) + "\n")
            .collect());
    }
    format::render_list(fmt, &stats_header(), rows)
        .map_err(|e| anyhow!("failed to execute template: {e}"))
}

/// The containers to show: the names given, or the running (all with -a).
async fn targets(c: &Client, a: &StatsArgs) -> Result<Vec<String>> {
    if !a.names.is_empty() {
        return Ok(a.names.clone());
    }
    let list: Vec<Value> = c
        .get_json(&format!("/containers/json?all={}", a.all as u8))
        .await?;
    Ok(list
        .iter()
        .filter_map(|x| x["Id"].as_str().map(String::from))
        .collect())
}

pub async fn stats(c: &Client, a: StatsArgs) -> Result<()> {
    let fmt = stats_format(&a);
    if fmt != "json"
        && let Err(e) = format::Template::parse(&format::table::prepare_format(&fmt))
    {
        bail!("failed to parse template: {e}");
    }
    let trunc = !a.no_trunc;
    if a.no_stream {
        let names = targets(c, &a).await?;
        let samples = futures_util::future::join_all(names.iter().map(|n| async move {
            c.get_json::<Value>(&format!("/containers/{}/stats?stream=false", enc(n)))
                .await
        }))
        .await;
        let mut rows = Vec::new();
        let mut errs = Vec::new();
        for (n, s) in names.iter().zip(samples) {
            match s {
                Ok(v) => rows.push(stats_row(n, Some(&v), trunc)),
                Err(e) => errs.push(match e.downcast_ref::<DaemonError>() {
                    Some(d) => d.to_string(),
                    None => format!("{e:#}"),
                }),
            }
        }
        if !errs.is_empty() && !a.names.is_empty() {
            bail!(errs.join("\n"));
        }
        print!("{}", render(&fmt, &rows)?);
        return Ok(());
    }
    let latest: Arc<Mutex<HashMap<String, Option<Value>>>> = Arc::default();
    let mut watched: Vec<String> = Vec::new();
    let terminal = crate::tty::stdout_is_terminal();
    loop {
        // Containers come and go unless named: look again every round.
        let names = if a.names.is_empty() || watched.is_empty() {
            targets(c, &a).await?
        } else {
            watched.clone()
        };
        for n in &names {
            if watched.contains(n) {
                continue;
            }
            watched.push(n.clone());
            latest.lock().unwrap().insert(n.clone(), None);
            let (c, n, latest) = (c.clone(), n.clone(), latest.clone());
            tokio::spawn(async move {
                let path = format!("/containers/{}/stats?stream=true", enc(&n));
                let Ok(resp) = c.request(Method::GET, &path, empty(), None).await else {
                    latest.lock().unwrap().remove(&n);
                    return;
                };
                let mut lines = Box::pin(json_lines(resp));
                while let Some(Ok(v)) = lines.next().await {
                    latest.lock().unwrap().insert(n.clone(), Some(v));
                }
                latest.lock().unwrap().remove(&n);
            });
        }
        if a.names.is_empty() {
            // Gone from the list: stop showing it.
            watched.retain(|w| names.contains(w));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rows: Vec<Value> = {
            let l = latest.lock().unwrap();
            watched
                .iter()
                .filter(|w| l.contains_key(*w))
                .map(|w| stats_row(w, l.get(w).and_then(|v| v.as_ref()), trunc))
                .collect()
        };
        let out = render(&fmt, &rows)?;
        if terminal {
            print!("\x1b[2J\x1b[H{out}");
        } else {
            print!("{out}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if !a.names.is_empty() && latest.lock().unwrap().is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_as_docker_computes_them() {
        let v = json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 4_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000u64}, "system_cpu_usage": 2_000_000_000u64},
            "memory_stats": {"usage": 100u64 << 20, "limit": 200u64 << 20, "stats": {"total_inactive_file": 40u64 << 20}},
            "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 10}, {"op": "Write", "value": 5}, {"op": "Total", "value": 15}]},
            "networks": {"eth0": {"rx_bytes": 7, "tx_bytes": 3}},
            "pids_stats": {"current": 4},
        });
        let f = figures(&v);
        assert!((f.cpu_percent - 100.0).abs() < 1e-9);
        assert_eq!(f.memory, (60u64 << 20) as f64);
        assert_eq!(f.memory_raw, (100u64 << 20) as f64);
        assert!((f.mem_percent - 30.0).abs() < 1e-9);
        assert_eq!((f.blk_read, f.blk_write), (10.0, 5.0));
        assert_eq!((f.net_rx, f.net_tx, f.pids), (7.0, 3.0, 4));
        let row = stats_row("c", Some(&v), true);
        assert_eq!(row["MemUsage"], "60MiB / 200MiB");
        assert_eq!(row["MemRaw"], "100MiB");
        assert_eq!(row["CPUPerc"], "100.00%");
    }

    #[test]
    fn health_flags() {
        let mut o = LimitOpts {
            health_cmd: Some("test -f /ok".into()),
            health_interval: Some("1s".into()),
            health_retries: Some(2),
            ..Default::default()
        };
        let (mut cfg, mut hc) = (json!({}), json!({}));
        o.apply(&mut cfg, &mut hc).unwrap();
        assert_eq!(
            cfg["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 1_000_000_000i64, "Retries": 2})
        );
        o.no_healthcheck = true;
        assert!(o.apply(&mut cfg, &mut hc).is_err());
        let o = LimitOpts {
            no_healthcheck: true,
            health_on_unhealthy: Some("restart".into()),
            ..Default::default()
        };
        o.apply(&mut cfg, &mut hc).unwrap();
        assert_eq!(cfg["Healthcheck"], json!({"Test": ["NONE"]}));
        assert_eq!(hc["BerthHealthOnUnhealthy"], "restart");
    }
}
