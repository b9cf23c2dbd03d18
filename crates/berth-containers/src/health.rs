//! Healthchecks: the container's `Config.Healthcheck` (from the image's
//! `HEALTHCHECK` or the create request), probed by berthd through an exec
//! in the container, as dockerd does (`CMD` runs the command, `CMD-SHELL`
//! runs it with `/bin/sh -c`, `NONE` disables the image's check).
//!
//! Lifecycle of one container's monitor: `health_started` at every start
//! (status `starting`, failing streak 0, the log kept) spawns a task that
//! probes every `Interval` (`StartInterval` while starting inside
//! `StartPeriod`); each probe is an exec whose output (first 4 KiB) and
//! exit code go into `State.Health.Log` (last 5); `Retries` failures in a
//! row make the container `unhealthy`, a success `healthy`, and a change of
//! status emits `health_status: <status>`. A probe that outlives `Timeout`
//! is killed and counts as a failure (exit code -1). The task ends when the
//! container stops (`health_stopped`: status `unhealthy`, as dockerd) or is
//! started again. A re-adopted container (daemon restart) resumes its
//! monitor with its recorded health.
//!
//! State: the current health lives in memory (`ContainerService::health`)
//! and is laid over the record in `inspect` and the listing; the record's
//! `State.Health` is written when the status changes, so it survives a
//! daemon restart without a metadata write per probe.
//!
//! berth's extension, `HostConfig.BerthHealthOnUnhealthy` (`none`,
//! `restart`, `stop`, `kill`; the label `berth.health-on-unhealthy` is read
//! when the field is absent, for clients that cannot send it): what berthd
//! does when the container turns unhealthy. Actions back off: the n-th
//! action within ten minutes of the previous one waits 2^n seconds (at most
//! five minutes) and is dropped if the container recovers meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_types::{Error, Result};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::{ContainerService, shim};

/// dockerd's defaults and limits.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u64 = 3;
const MAX_LOG: usize = 5;
const MAX_OUTPUT: usize = 4096;
/// The label read when `HostConfig.BerthHealthOnUnhealthy` is absent.
pub const ON_UNHEALTHY_LABEL: &str = "berth.health-on-unhealthy";
/// Actions more than this far apart start the backoff again.
const ACTION_WINDOW: Duration = Duration::from_secs(600);
const MAX_ACTION_DELAY: Duration = Duration::from_secs(300);

/// A container's health as the monitor keeps it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    status: String,
    failing: u64,
    log: VecDeque<Value>,
    /// Bumped at every start and stop: a monitor whose run is stale ends.
    run: u64,
}

impl Health {
    fn to_json(&self) -> Value {
        json!({
            "Status": self.status,
            "FailingStreak": self.failing,
            "Log": self.log.iter().cloned().collect::<Vec<_>>(),
        })
    }

    fn from_json(v: &Value) -> Health {
        Health {
            status: v["Status"].as_str().unwrap_or("").to_string(),
            failing: v["FailingStreak"].as_u64().unwrap_or(0),
            log: v["Log"].as_array().cloned().unwrap_or_default().into(),
            run: 0,
        }
    }
}

/// Per-container memory of unhealthy actions, for the backoff.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Actions {
    count: u32,
    last: Instant,
}

/// The command a healthcheck runs, or None (no check, `NONE`, unknown type).
pub fn probe_command(healthcheck: &Value) -> Option<Vec<String>> {
    let test: Vec<String> = healthcheck["Test"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let (kind, rest) = test.split_first()?;
    match kind.as_str() {
        "CMD" if !rest.is_empty() => Some(rest.to_vec()),
        "CMD-SHELL" if !rest.is_empty() => {
            let mut cmd = vec!["/bin/sh".to_string(), "-c".to_string()];
            cmd.extend(rest.iter().cloned());
            Some(cmd)
        }
        _ => None,
    }
}

fn nanos(v: &Value, default: Duration) -> Duration {
    match v.as_i64() {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

/// Go's `time.Duration.String()` for the durations a healthcheck has.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_float(ns as f64 / div as f64));
    }
    let secs = ns as f64 / 1e9;
    let h = (ns / 3_600_000_000_000) as u64;
    let m = ((ns / 60_000_000_000) % 60) as u64;
    let s = secs - (h * 3600 + m * 60) as f64;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_float(s)));
    out
}

fn trim_float(f: f64) -> String {
    let s = format!("{f:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// dockerd's `validateHealthCheck`.
pub fn validate(hc: &Value) -> Result<()> {
    if !hc.is_object() {
        return Ok(());
    }
    const MIN: i64 = 1_000_000; // 1ms
    for (k, name) in [
        ("Interval", "Interval"),
        ("Timeout", "Timeout"),
        ("StartPeriod", "StartPeriod"),
        ("StartInterval", "StartInterval"),
    ] {
        let v = hc[k].as_i64().unwrap_or(0);
        if v != 0 && v < MIN {
            return Err(Error::invalid(format!(
                "{name} in Healthcheck cannot be less than 1ms"
            )));
        }
    }
    if hc["Retries"].as_i64().unwrap_or(0) < 0 {
        return Err(Error::invalid("Retries in Healthcheck cannot be negative"));
    }
    Ok(())
}

/// The container's healthcheck: the request's over the image's, field by
/// field as dockerd merges them (zero fields take the image's).
pub fn merge(requested: &Value, image: &Value) -> Value {
    if !image.is_object() {
        return requested.clone();
    }
    if !requested.is_object() {
        return image.clone();
    }
    let mut out = requested.clone();
    let empty_test = requested["Test"].as_array().is_none_or(|t| t.is_empty());
    if empty_test {
        out["Test"] = image["Test"].clone();
    }
    for k in [
        "Interval",
        "Timeout",
        "StartPeriod",
        "StartInterval",
        "Retries",
    ] {
        if requested[k].as_i64().unwrap_or(0) == 0 && !image[k].is_null() {
            out[k] = image[k].clone();
        }
    }
    out
}

/// What to do when a container turns unhealthy.
pub fn on_unhealthy(rec: &Value) -> String {
    rec["HostConfig"]["BerthHealthOnUnhealthy"]
        .as_str()
        .or_else(|| rec["Config"]["Labels"][ON_UNHEALTHY_LABEL].as_str())
        .unwrap_or("none")
        .to_string()
}

/// Refuse an unknown `--health-on-unhealthy` value at create.
pub fn validate_action(rec_host_config: &Value, labels: &Value) -> Result<()> {
    let v = rec_host_config["BerthHealthOnUnhealthy"]
        .as_str()
        .or_else(|| labels[ON_UNHEALTHY_LABEL].as_str());
    match v {
        None | Some("none" | "restart" | "stop" | "kill") => Ok(()),
        Some(other) => Err(Error::invalid(format!(
            "invalid health-on-unhealthy action '{other}': use one of none, restart, stop, kill"
        ))),
    }
}

/// Split a multiplexed exec stream into its payload (stdout and stderr
/// together, as dockerd gathers a probe's output).
fn demux(buf: &mut Vec<u8>, out: &mut Vec<u8>, truncated: &mut bool) {
    loop {
        if buf.len() < 8 {
            return;
        }
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            return;
        }
        let room = MAX_OUTPUT.saturating_sub(out.len());
        let keep = room.min(len);
        out.extend_from_slice(&buf[8..8 + keep]);
        if keep < len {
            *truncated = true;
        }
        buf.drain(..8 + len);
    }
}

impl ContainerService {
    /// The current health of a container (for inspect and the listing).
    pub(crate) fn health_overlay(&self, rec: &mut Value) {
        let id = rec["Id"].as_str().unwrap_or("");
        if let Some(h) = self.health.lock().unwrap().get(id)
            && !h.status.is_empty()
        {
            rec["State"]["Health"] = h.to_json();
        }
    }

    fn health_current(&self, id: &str, run: u64) -> bool {
        self.health
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|h| h.run == run)
    }

    /// At start: health `starting`, and a monitor. Returns the record's new
    /// `State.Health` (None without a healthcheck).
    pub(crate) fn health_started(self: &Arc<Self>, id: &str, rec: &Value) -> Option<Value> {
        probe_command(&rec["Config"]["Healthcheck"])?;
        let (run, v) = {
            let mut all = self.health.lock().unwrap();
            let h = all
                .entry(id.to_string())
                .or_insert_with(|| Health::from_json(&rec["State"]["Health"]));
            h.run += 1;
            h.status = "starting".into();
            h.failing = 0;
            (h.run, h.to_json())
        };
        self.clone().health_monitor(id.to_string(), run);
        Some(v)
    }

    /// A re-adopted running container: its monitor again, with the health
    /// it had.
    pub(crate) fn health_resume(self: &Arc<Self>, id: &str, rec: &Value) {
        if probe_command(&rec["Config"]["Healthcheck"]).is_none() {
            return;
        }
        let run = {
            let mut all = self.health.lock().unwrap();
            let h = all
                .entry(id.to_string())
                .or_insert_with(|| Health::from_json(&rec["State"]["Health"]));
            if h.status.is_empty() {
                h.status = "starting".into();
            }
            h.run += 1;
            h.run
        };
        self.clone().health_monitor(id.to_string(), run);
    }

    /// At exit: the monitor ends and the status is `unhealthy` (dockerd's
    /// rule). Returns the record's new `State.Health`.
    pub(crate) fn health_stopped(&self, id: &str) -> Option<Value> {
        let mut all = self.health.lock().unwrap();
        let h = all.get_mut(id)?;
        h.run += 1;
        h.status = "unhealthy".into();
        Some(h.to_json())
    }

    pub(crate) fn health_forget(&self, id: &str) {
        self.health.lock().unwrap().remove(id);
        self.health_actions.lock().unwrap().remove(id);
    }

    fn health_monitor(self: Arc<Self>, id: String, run: u64) {
        tokio::spawn(async move {
            loop {
                let Ok(row) = self.find(&id) else { return };
                let rec = row.record;
                let hc = &rec["Config"]["Healthcheck"];
                let Some(cmd) = probe_command(hc) else { return };
                let interval = nanos(&hc["Interval"], DEFAULT_INTERVAL);
                let start_period = nanos(&hc["StartPeriod"], Duration::ZERO);
                let start_interval = nanos(&hc["StartInterval"], DEFAULT_START_INTERVAL);
                let started = rec["State"]["StartedAt"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or_else(chrono::Utc::now);
                let since_start = (chrono::Utc::now() - started).to_std().unwrap_or_default();
                let starting = self
                    .health
                    .lock()
                    .unwrap()
                    .get(&id)
                    .is_some_and(|h| h.status == "starting");
                let wait = if since_start < start_period && starting {
                    start_interval
                } else {
                    interval
                };
                tokio::time::sleep(wait).await;
                if !self.health_current(&id, run) {
                    return;
                }
                let Ok(row) = self.find(&id) else { return };
                let st = &row.record["State"];
                if st["Running"].as_bool() != Some(true) {
                    return;
                }
                if st["Paused"].as_bool() == Some(true) {
                    continue;
                }
                let timeout = nanos(&hc["Timeout"], DEFAULT_TIMEOUT);
                let start = chrono::Utc::now();
                let (code, output) = match self.probe(&id, &cmd, timeout).await {
                    Ok(r) => r,
                    Err(e) => (-1, e.message),
                };
                let end = chrono::Utc::now();
                if !self.health_current(&id, run) {
                    return;
                }
                self.health_result(&id, run, &row.record, start, end, code, output);
            }
        });
    }

    /// Record one probe's result; on a change of status emit the event,
    /// persist it, and act on `unhealthy`.
    #[allow(clippy::too_many_arguments)]
    fn health_result(
        self: &Arc<Self>,
        id: &str,
        run: u64,
        rec: &Value,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
        code: i64,
        output: String,
    ) {
        let hc = &rec["Config"]["Healthcheck"];
        let retries = match hc["Retries"].as_u64() {
            Some(r) if r > 0 => r,
            _ => DEFAULT_RETRIES,
        };
        let start_period = nanos(&hc["StartPeriod"], Duration::ZERO);
        let started = rec["State"]["StartedAt"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or(start);
        let fmt = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        };
        let (old, new, snapshot) = {
            let mut all = self.health.lock().unwrap();
            let Some(h) = all.get_mut(id).filter(|h| h.run == run) else {
                return;
            };
            let old = h.status.clone();
            if h.log.len() >= MAX_LOG {
                h.log.pop_front();
            }
            h.log.push_back(json!({
                "Start": fmt(start), "End": fmt(end), "ExitCode": code, "Output": output
            }));
            if code == 0 {
                h.failing = 0;
                h.status = "healthy".into();
            } else {
                let in_grace = h.status == "starting"
                    && (start - started).to_std().unwrap_or_default() < start_period;
                if !in_grace {
                    h.failing += 1;
                    if h.failing >= retries {
                        h.status = "unhealthy".into();
                    }
                }
            }
            (old, h.status.clone(), h.to_json())
        };
        if old == new {
            return;
        }
        if let Ok(rec) = self.update(id, |r| r["State"]["Health"] = snapshot) {
            self.event(&format!("health_status: {new}"), &rec);
        }
        // A recovery between actions does not reset the backoff, only time
        // does (ACTION_WINDOW): a flapping container is not restarted in a
        // tight loop.
        if new == "unhealthy" {
            self.clone().health_act(id.to_string(), run);
        }
    }

    /// berth's `--health-on-unhealthy` action, after the backoff.
    fn health_act(self: Arc<Self>, id: String, run: u64) {
        let Ok(row) = self.find(&id) else { return };
        let action = on_unhealthy(&row.record);
        if action == "none" {
            return;
        }
        let delay = {
            let mut acts = self.health_actions.lock().unwrap();
            let now = Instant::now();
            let a = acts.entry(id.clone()).or_insert(Actions {
                count: 0,
                last: now,
            });
            if a.count > 0 && now.duration_since(a.last) > ACTION_WINDOW {
                a.count = 0;
            }
            let n = a.count;
            a.count += 1;
            if n == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs(1u64 << n.min(16)).min(MAX_ACTION_DELAY)
            }
        };
        tokio::spawn(async move {
            if !delay.is_zero() {
                tracing::info!(container = %id, action = %action, delay = ?delay, "unhealthy: backing off before acting");
                tokio::time::sleep(delay).await;
            }
            let still = self
                .health
                .lock()
                .unwrap()
                .get(&id)
                .is_some_and(|h| h.run == run && h.status == "unhealthy");
            if !still {
                return;
            }
            if let Some(a) = self.health_actions.lock().unwrap().get_mut(&id) {
                a.last = Instant::now();
            }
            tracing::warn!(container = %id, action = %action, "container is unhealthy");
            let r = match action.as_str() {
                "restart" => self.restart(&id, None, None).await,
                "stop" => self.stop(&id, None, None).await.map(|_| ()),
                "kill" => {
                    // Unlike `docker kill`, the restart policy still applies.
                    let r = shim::kill(&self.socket(&id), libc::SIGKILL).await;
                    if r.is_ok()
                        && let Ok(row) = self.find(&id)
                    {
                        let mut attrs = std::collections::BTreeMap::new();
                        attrs.insert("signal".to_string(), libc::SIGKILL.to_string());
                        attrs.insert("name".to_string(), row.name.clone());
                        self.events.container_event("kill", &id, attrs);
                    }
                    r
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::warn!(container = %id, action = %action, error = %e, "unhealthy action failed");
            }
        });
    }

    /// Run the healthcheck once through an exec: (exit code, output).
    async fn probe(
        self: &Arc<Self>,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<(i64, String)> {
        let exec_id = self.exec_create(
            id,
            &json!({"Cmd": cmd, "AttachStdout": true, "AttachStderr": true, "Tty": false}),
        )?;
        let r = self.probe_exec(id, &exec_id, timeout).await;
        self.execs.lock().unwrap().remove(&exec_id);
        r
    }

    async fn probe_exec(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> Result<(i64, String)> {
        let Some((_, buffered, mut stream)) = self.exec_start(exec_id, false).await? else {
            return Err(Error::internal("health check exec gave no stream"));
        };
        let mut raw = buffered;
        let mut out = Vec::new();
        let mut truncated = false;
        let read_all = async {
            let mut buf = vec![0u8; 8192];
            loop {
                demux(&mut raw, &mut out, &mut truncated);
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            demux(&mut raw, &mut out, &mut truncated);
        };
        if tokio::time::timeout(timeout, read_all).await.is_err() {
            let pid = self.exec_get(exec_id).map(|e| e.pid).unwrap_or(0);
            if let Some(p) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            self.exec_reap(id, exec_id).await;
            let mut text = String::from_utf8_lossy(&out).into_owned();
            if truncated {
                text.push_str("...");
            }
            let d = go_duration(timeout);
            let msg = if text.is_empty() {
                format!("Health check exceeded timeout ({d})")
            } else {
                format!("Health check exceeded timeout ({d}): {text}")
            };
            return Ok((-1, msg));
        }
        self.exec_reap(id, exec_id).await;
        let code = self
            .exec_get(exec_id)
            .ok()
            .and_then(|e| e.exit_code)
            .ok_or_else(|| {
                Error::internal(format!("healthcheck for container {id} has no exit code"))
            })?;
        let mut text = String::from_utf8_lossy(&out).into_owned();
        if truncated {
            text.push_str("...");
        }
        Ok((code, text))
    }
}

/// The in-memory maps `ContainerService` holds for healthchecks.
pub(crate) type HealthMap = std::sync::Mutex<HashMap<String, Health>>;
pub(crate) type ActionMap = std::sync::Mutex<HashMap<String, Actions>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_commands() {
        assert_eq!(
            probe_command(&json!({"Test": ["CMD-SHELL", "test -f /ok"]})).unwrap(),
            ["/bin/sh", "-c", "test -f /ok"]
        );
        assert_eq!(
            probe_command(&json!({"Test": ["CMD", "true"]})).unwrap(),
            ["true"]
        );
        assert!(probe_command(&json!({"Test": ["NONE"]})).is_none());
        assert!(probe_command(&json!({"Test": []})).is_none());
        assert!(probe_command(&Value::Null).is_none());
    }

    #[test]
    fn merges_image_healthcheck() {
        let image = json!({"Test": ["CMD", "true"], "Interval": 5_000_000_000i64, "Retries": 2});
        let m = merge(&json!({"Interval": 1_000_000_000}), &image);
        assert_eq!(m["Test"], json!(["CMD", "true"]));
        assert_eq!(m["Interval"], 1_000_000_000);
        assert_eq!(m["Retries"], 2);
        assert_eq!(merge(&Value::Null, &image), image);
        let none = json!({"Test": ["NONE"]});
        assert_eq!(merge(&none, &image)["Test"], json!(["NONE"]));
    }

    #[test]
    fn durations_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn validates() {
        assert!(validate(&json!({"Interval": 10})).is_err());
        assert!(validate(&json!({"Retries": -1})).is_err());
        assert!(validate(&json!({"Interval": 1_000_000_000})).is_ok());
        assert!(validate_action(&json!({"BerthHealthOnUnhealthy": "reboot"}), &json!({})).is_err());
        assert!(
            validate_action(&json!({}), &json!({"berth.health-on-unhealthy": "restart"})).is_ok()
        );
    }

    #[test]
    fn demuxes_and_truncates() {
        let mut raw = vec![1, 0, 0, 0, 0, 0, 0, 2, b'h', b'i', 2, 0, 0, 0, 0, 0, 0, 1];
        let (mut out, mut t) = (Vec::new(), false);
        demux(&mut raw, &mut out, &mut t);
        assert_eq!(out, b"hi");
        assert_eq!(raw.len(), 8, "an incomplete frame waits");
        raw.push(b'!');
        demux(&mut raw, &mut out, &mut t);
        assert_eq!(out, b"hi!");
        let mut big = vec![1, 0, 0, 0];
        big.extend_from_slice(&(5000u32).to_be_bytes());
        big.extend(std::iter::repeat_n(b'x', 5000));
        demux(&mut big, &mut out, &mut t);
        assert_eq!(out.len(), MAX_OUTPUT);
        assert!(t);
    }
}
