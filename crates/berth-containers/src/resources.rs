//! Resource limits: dockerd's checks of the resource fields of a create or
//! update request, and `POST /containers/{id}/update`, which merges new
//! limits into a container's `HostConfig` (persisted, so they survive a
//! daemon restart and apply at every start) and writes them into the
//! running container's cgroup.

use std::path::Path;

use berth_types::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use crate::ContainerService;

/// dockerd's smallest memory limit and reservation (6 MiB).
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The resource fields `update` takes (besides `RestartPolicy`).
const UPDATE_FIELDS: &[&str] = &[
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "NanoCpus",
    "CpuShares",
    "CpuPeriod",
    "CpuQuota",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "BlkioWeight",
];

fn int(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or(0)
}

/// The CPUs (or memory nodes) a cpuset list names: "0-2,4".
fn parse_cpuset(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// What the host offers for a cpuset list (`/sys/devices/system/...`).
fn host_list(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn check_cpuset(requested: &str, available: &str, what: &str, label: &str) -> Result<()> {
    if requested.is_empty() {
        return Ok(());
    }
    let Some(req) = parse_cpuset(requested) else {
        return Err(Error::invalid(format!(
            "Invalid value {requested} for cpuset {what}: invalid format: {requested}"
        )));
    };
    if let Some(avail) = parse_cpuset(available)
        && req.iter().any(|c| !avail.contains(c))
    {
        return Err(Error::invalid(format!(
            "Requested {label} are not available - requested {requested}, available: {available}"
        )));
    }
    Ok(())
}

/// dockerd's `verifyPlatformContainerResources` for the fields berth
/// applies, with its messages.
pub fn validate(r: &Value, update: bool) -> Result<()> {
    let bad = |m: &str| Err(Error::invalid(m));
    let (mem, swap, resv) = (
        int(r, "Memory"),
        int(r, "MemorySwap"),
        int(r, "MemoryReservation"),
    );
    if mem != 0 && mem < MIN_MEMORY {
        return bad("Minimum memory limit allowed is 6MB");
    }
    if mem > 0 && swap > 0 && swap < mem {
        return bad("Minimum memoryswap limit should be larger than memory limit, see usage");
    }
    if mem == 0 && swap > 0 && !update {
        return bad(
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        );
    }
    if let Some(s) = r["MemorySwappiness"].as_i64()
        && s != -1
        && !(0..=100).contains(&s)
    {
        return Err(Error::invalid(format!(
            "Invalid value: {s}, valid memory swappiness range is 0-100"
        )));
    }
    if resv > 0 && resv < MIN_MEMORY {
        return bad("Minimum memory reservation allowed is 6MB");
    }
    if mem > 0 && resv > 0 && mem < resv {
        return bad(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        );
    }
    let (nano, period, quota) = (int(r, "NanoCpus"), int(r, "CpuPeriod"), int(r, "CpuQuota"));
    if nano > 0 && period > 0 {
        return bad("Conflicting options: Nano CPUs and CPU Period cannot both be set");
    }
    if nano > 0 && quota > 0 {
        return bad("Conflicting options: Nano CPUs and CPU Quota cannot both be set");
    }
    if nano != 0 {
        let n = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        if nano < 0 || nano > n * 1_000_000_000 {
            return Err(Error::invalid(format!(
                "range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"
            )));
        }
    }
    if period != 0 && !(1000..=1_000_000).contains(&period) {
        return bad(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        );
    }
    if quota > 0 && quota < 1000 {
        return bad("CPU cfs quota can not be less than 1ms (i.e. 1000)");
    }
    check_cpuset(
        r["CpusetCpus"].as_str().unwrap_or(""),
        &host_list("/sys/devices/system/cpu/online"),
        "cpus",
        "CPUs",
    )?;
    check_cpuset(
        r["CpusetMems"].as_str().unwrap_or(""),
        &host_list("/sys/devices/system/node/online"),
        "mems",
        "memory nodes",
    )?;
    let w = int(r, "BlkioWeight");
    if w > 0 && !(10..=1000).contains(&w) {
        return bad("Range of blkio weight is from 10 to 1000");
    }
    Ok(())
}

/// dockerd's `adaptContainerSettings` for memory: swap defaults to twice
/// the memory limit.
pub fn adapt_create(hc: &mut Value) {
    let mem = int(hc, "Memory");
    if mem > 0 && int(hc, "MemorySwap") == 0 {
        hc["MemorySwap"] = json!(mem * 2);
    }
}

fn conflict(msg: &str) -> Error {
    Error::invalid(msg)
}

/// Merge an update into a `HostConfig`, as dockerd's `UpdateContainer`:
/// zero fields leave the current value alone.
pub fn merge(hc: &mut Value, req: &Value) -> Result<()> {
    let cur = hc.clone();
    if int(req, "NanoCpus") > 0 && int(&cur, "CpuPeriod") > 0 {
        return Err(conflict(
            "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set",
        ));
    }
    if int(req, "NanoCpus") > 0 && int(&cur, "CpuQuota") > 0 {
        return Err(conflict(
            "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
        ));
    }
    if int(req, "CpuPeriod") > 0 && int(&cur, "NanoCpus") > 0 {
        return Err(conflict(
            "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set",
        ));
    }
    if int(req, "CpuQuota") > 0 && int(&cur, "NanoCpus") > 0 {
        return Err(conflict(
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
        ));
    }
    if int(req, "Memory") != 0
        && int(req, "Memory") > int(&cur, "MemorySwap")
        && int(req, "MemorySwap") == 0
    {
        return Err(conflict(
            "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
        ));
    }
    for k in UPDATE_FIELDS {
        let set = match &req[*k] {
            Value::Number(n) => n.as_i64() != Some(0) || *k == "PidsLimit",
            Value::String(s) => !s.is_empty(),
            _ => false,
        };
        if set {
            hc[*k] = req[*k].clone();
        }
    }
    let policy = req["RestartPolicy"]["Name"].as_str().unwrap_or("");
    if !policy.is_empty() {
        if !["no", "always", "unless-stopped", "on-failure"].contains(&policy) {
            return Err(Error::invalid(format!("invalid restart policy '{policy}'")));
        }
        let count = req["RestartPolicy"]["MaximumRetryCount"]
            .as_i64()
            .unwrap_or(0);
        if policy != "on-failure" && count != 0 {
            return Err(Error::invalid(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'",
            ));
        }
        if count < 0 {
            return Err(Error::invalid(
                "invalid restart policy: maximum retry count cannot be negative",
            ));
        }
        if cur["AutoRemove"].as_bool() == Some(true) && policy != "no" {
            return Err(conflict(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            ));
        }
        hc["RestartPolicy"] = json!({"Name": policy, "MaximumRetryCount": count});
    }
    Ok(())
}

impl ContainerService {
    /// `POST /containers/{id}/update`: returns dockerd's warnings (none).
    pub async fn update_container(&self, name: &str, req: &Value) -> Result<Vec<String>> {
        validate(req, true)?;
        let row = self.find(name)?;
        let lock = self.lock(&row.id);
        let _g = lock.lock().await;
        let row = self.find(&row.id)?;
        let cannot = |e: Error| {
            Error::new(
                e.kind,
                format!("Cannot update container {}: {}", row.id, e.message),
            )
        };
        let mut hc = row.record["HostConfig"].clone();
        merge(&mut hc, req).map_err(cannot)?;
        let st = &row.record["State"];
        if st["Running"].as_bool() == Some(true) && st["Restarting"].as_bool() != Some(true) {
            let resources = crate::spec::resources(req, true);
            let bundle = self.dir(&row.id).join("config.json");
            tokio::task::spawn_blocking(move || apply_live(&bundle, &resources))
                .await
                .map_err(|e| Error::internal(e.to_string()))?
                .map_err(cannot)?;
        }
        let rec = self.update(&row.id, |r| r["HostConfig"] = hc)?;
        self.event("update", &rec);
        Ok(vec![])
    }
}

/// Write new limits into a running container's cgroup (found through its
/// bundle's `linux.cgroupsPath`).
fn apply_live(bundle: &Path, resources: &Value) -> Result<()> {
    if resources.as_object().is_none_or(|o| o.is_empty()) {
        return Ok(());
    }
    let text = std::fs::read(bundle)
        .map_err(|e| Error::internal(format!("read {}: {e}", bundle.display())))?;
    let spec: berth_runtime::Spec = serde_json::from_slice(&text)
        .map_err(|e| Error::internal(format!("parse {}: {e}", bundle.display())))?;
    let res: berth_runtime::LinuxResources = serde_json::from_value(resources.clone())
        .map_err(|e| Error::invalid(format!("resources: {e}")))?;
    berth_runtime::update_resources(&spec, &res).map_err(|e| match e.kind {
        ErrorKind::InvalidArgument | ErrorKind::Conflict => e,
        _ => Error::new(ErrorKind::Internal, e.message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_as_dockerd() {
        let mut hc =
            json!({"Memory": 0, "MemorySwap": 0, "CpuShares": 0, "RestartPolicy": {"Name": "no"}});
        let e = merge(&mut hc, &json!({"Memory": 50 << 20})).unwrap_err();
        assert!(
            e.message
                .starts_with("Memory limit should be smaller than already set memoryswap limit")
        );
        merge(
            &mut hc,
            &json!({"Memory": 50 << 20, "MemorySwap": -1, "CpuShares": 512}),
        )
        .unwrap();
        assert_eq!(hc["Memory"], 50 << 20);
        assert_eq!(hc["MemorySwap"], -1);
        assert_eq!(hc["CpuShares"], 512);
        merge(&mut hc, &json!({"RestartPolicy": {"Name": "always"}})).unwrap();
        assert_eq!(hc["RestartPolicy"]["Name"], "always");
        assert_eq!(hc["Memory"], 50 << 20, "zero fields leave values alone");
        let mut auto = json!({"AutoRemove": true});
        assert!(merge(&mut auto, &json!({"RestartPolicy": {"Name": "always"}})).is_err());
        let mut nano = json!({"NanoCpus": 1_000_000_000});
        assert!(
            merge(&mut nano, &json!({"CpuQuota": 50000}))
                .unwrap_err()
                .message
                .contains("NanoCPUs has already been set")
        );
    }

    #[test]
    fn validates_as_dockerd() {
        assert!(validate(&json!({"Memory": 1 << 20}), true).is_err());
        assert!(validate(&json!({"Memory": 64 << 20, "MemorySwap": 32 << 20}), true).is_err());
        assert!(validate(&json!({"MemorySwap": 64 << 20}), false).is_err());
        assert!(validate(&json!({"MemorySwap": 64 << 20}), true).is_ok());
        assert!(validate(&json!({"CpuPeriod": 10}), true).is_err());
        assert!(validate(&json!({"BlkioWeight": 5}), true).is_err());
        assert!(validate(&json!({"CpusetCpus": "0-"}), true).is_err());
        assert!(validate(&json!({"CpusetCpus": "9999"}), true).is_err());
        assert!(validate(&json!({"CpusetCpus": "0"}), true).is_ok());
        assert_eq!(parse_cpuset("0-2,4"), Some(vec![0, 1, 2, 4]));
    }
}
