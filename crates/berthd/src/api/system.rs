//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_api::{API_VERSION, MIN_API_VERSION, Version, VersionComponent, VersionPlatform};
use berth_types::Error;
use serde_json::{Value, json};

use super::images::summary_json;
use super::{ApiError, ApiResult, AppState, Query, blocking};
use crate::events::{EVENT_FILTERS, matches};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/events", get(events))
        .route("/system/df", get(df))
}

async fn ping() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "OK",
    )
        .into_response()
}

fn kernel_version() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

fn arch() -> &'static str {
    berth_images::host_arch()
}

async fn version() -> axum::Json<Version> {
    let details = BTreeMap::from([
        ("ApiVersion".to_string(), API_VERSION.to_string()),
        ("Arch".to_string(), arch().to_string()),
        ("KernelVersion".to_string(), kernel_version()),
        ("MinAPIVersion".to_string(), MIN_API_VERSION.to_string()),
        ("Os".to_string(), "linux".to_string()),
        (
            "GitCommit".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("GoVersion".to_string(), "rust".to_string()),
        ("BuildTime".to_string(), String::new()),
        ("Experimental".to_string(), "false".to_string()),
    ]);
    axum::Json(Version {
        platform: VersionPlatform {
            name: "berth".into(),
        },
        components: vec![VersionComponent {
            name: "Engine".into(),
            version: crate::VERSION.into(),
            details,
        }],
        version: crate::VERSION.into(),
        api_version: API_VERSION.into(),
        min_api_version: MIN_API_VERSION.into(),
        git_commit: env!("CARGO_PKG_VERSION").into(),
        go_version: "rust".into(),
        os: "linux".into(),
        arch: arch().into(),
        kernel_version: kernel_version(),
        build_time: String::new(),
    })
}

fn os_release() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

/// What the data root's filesystem is, in dockerd's words.
fn backing_filesystem(root: &std::path::Path) -> &'static str {
    match rustix::fs::statfs(root).map(|s| s.f_type as u64) {
        Ok(0xEF53) => "extfs",
        Ok(0x5846_5342) => "xfs",
        Ok(0x9123_683E) => "btrfs",
        Ok(0x0102_1994) => "tmpfs",
        Ok(0x794C_7630) => "overlayfs",
        Ok(0x2FC1_2FC1) => "zfs",
        Ok(0x6969) => "nfs",
        Ok(0xF2F5_2010) => "f2fs",
        _ => "<unknown>",
    }
}

/// `RegistryConfig` of `/info`: loopback is always insecure (as dockerd),
/// plus the `insecure-registries` CIDRs; named insecure registries and the
/// Hub mirrors appear in `IndexConfigs`.
fn registry_info(cfg: &berth_images::distribution::RegistryConfig) -> Value {
    let mut cidrs = vec!["::1/128".to_string(), "127.0.0.0/8".to_string()];
    let mut index = serde_json::Map::new();
    let mirrors: Vec<String> = cfg
        .mirrors
        .iter()
        .map(|m| format!("{}/", m.trim_end_matches('/')))
        .collect();
    for r in &cfg.insecure {
        if r.parse::<ipnet::IpNet>().is_ok() {
            if !cidrs.contains(r) {
                cidrs.push(r.clone());
            }
        } else {
            index.insert(
                r.clone(),
                json!({"Name": r, "Mirrors": [], "Secure": false, "Official": false}),
            );
        }
    }
    index.insert(
        "docker.io".into(),
        json!({"Name": "docker.io", "Mirrors": mirrors, "Secure": true, "Official": true}),
    );
    json!({
        "AllowNondistributableArtifactsCIDRs": null,
        "AllowNondistributableArtifactsHostnames": null,
        "InsecureRegistryCIDRs": cidrs,
        "IndexConfigs": index,
        "Mirrors": mirrors,
    })
}

/// Counts of containers by state, as `/info` reports them: (all, running,
/// paused, stopped); a paused container is not counted as running.
fn container_counts(records: &[Value]) -> (usize, usize, usize, usize) {
    let (mut running, mut paused) = (0, 0);
    for r in records {
        if r["State"]["Paused"].as_bool() == Some(true) {
            paused += 1;
        } else if r["State"]["Running"].as_bool() == Some(true) {
            running += 1;
        }
    }
    let n = records.len();
    (n, running, paused, n - running - paused)
}

async fn info(State(st): State<AppState>) -> ApiResult<axum::Json<serde_json::Value>> {
    let images = st.images.clone();
    let n_images = blocking(move || images.count()).await?;
    let (n, running, paused, stopped) = container_counts(&st.containers.all()?);
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let d = &st.daemon;
    let cgv = cgroup_version();
    let mut security = vec!["name=seccomp,profile=builtin".to_string()];
    if cgv == "2" {
        security.push("name=cgroupns".into());
    }
    Ok(axum::Json(json!({
        "ID": d.id,
        "Containers": n, "ContainersRunning": running, "ContainersPaused": paused, "ContainersStopped": stopped,
        "Images": n_images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", backing_filesystem(&d.data_root)], ["Supports d_type", "true"], ["Using metacopy", "false"], ["Native Overlay Diff", "true"], ["userxattr", "false"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"], "Authorization": null, "Log": ["json-file", "none"]},
        "MemoryLimit": true, "SwapLimit": false, "KernelMemoryTCP": false, "CpuCfsPeriod": true, "CpuCfsQuota": true,
        "BridgeNfIptables": sysctl_on("net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": sysctl_on("net/bridge/bridge-nf-call-ip6tables"),
        "CPUShares": true, "CPUSet": true, "PidsLimit": true, "IPv4Forwarding": d.ip_forward,
        "Debug": tracing::enabled!(tracing::Level::DEBUG),
        "NFd": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "OomKillDisable": false,
        "NGoroutines": std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0),
        "SystemTime": chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
        "LoggingDriver": d.log_driver,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgv,
        "NEventsListener": st.events.listeners(),
        "KernelVersion": kernel_version(),
        "OperatingSystem": os_release(),
        "OSVersion": os_version(),
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": registry_info(st.registry.config()),
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": mem_total(),
        "GenericResources": null,
        "DockerRootDir": d.data_root.display().to_string(),
        "HttpProxy": std::env::var("HTTP_PROXY").unwrap_or_default(),
        "HttpsProxy": std::env::var("HTTPS_PROXY").unwrap_or_default(),
        "NoProxy": std::env::var("NO_PROXY").unwrap_or_default(),
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": crate::VERSION,
        "Runtimes": {"berth": {"path": "berth-shim"}},
        "DefaultRuntime": "berth",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": security,
        "DefaultAddressPools": d.address_pools.iter().map(|(b, n)| json!({"Base": b, "Size": n})).collect::<Vec<_>>(),
        "FirewallBackend": if d.firewall { json!({"Driver": "nftables"}) } else { Value::Null },
        "CDISpecDirs": [],
        "Warnings": null
    })))
}

/// A boolean sysctl of the daemon's network namespace (false when absent).
fn sysctl_on(key: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/{key}")).is_ok_and(|v| v.trim() == "1")
}

fn os_version() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VERSION_ID=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_default()
}

/// A `since`/`until` value (unix seconds as the CLI sends them, RFC 3339,
/// or a duration ago) in nanoseconds.
pub fn parse_time_nanos(s: &str) -> Result<i64, Error> {
    berth_api::parse_timestamp(s, chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0))
        .map_err(Error::invalid)
}

async fn events(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let filters = q.filters()?;
    if let Some(k) = filters
        .keys()
        .find(|k| !EVENT_FILTERS.contains(&k.as_str()))
    {
        return Err(ApiError(Error::invalid(format!("invalid filter '{k}'"))));
    }
    let since = q
        .get("since")
        .filter(|s| !s.is_empty())
        .map(parse_time_nanos)
        .transpose()?;
    let until = q
        .get("until")
        .filter(|s| !s.is_empty())
        .map(parse_time_nanos)
        .transpose()?;
    let (past, mut rx) = st.events.subscribe(since, until);
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |e: &berth_api::Event| {
            let mut v = serde_json::to_vec(e).expect("json");
            v.push(b'\n');
            Ok(bytes::Bytes::from(v))
        };
        for e in past
            .iter()
            .filter(|e| matches(e, &filters) && until.is_none_or(|u| e.time_nano <= u))
        {
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let deadline = until
            .map(|u| tokio::time::Instant::now() + Duration::from_nanos((u - now).max(0) as u64));
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            tokio::select! {
                r = next => match r {
                    None => return,
                    Some(Ok(e)) => {
                        if matches(&e, &filters) && tx.send(line(&e)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                    Some(Err(_)) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    let stream =
        futures_util::stream::unfold(
            body_rx,
            |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
        );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /system/df` (`type=` narrows it to `container`, `image`,
/// `volume` or `build-cache`, as API 1.42 does).
async fn df(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let types = q.all("type");
    for t in &types {
        if !["container", "image", "volume", "build-cache"].contains(&t.as_str()) {
            return Err(ApiError(Error::invalid(format!(
                "unknown object type: {t}"
            ))));
        }
    }
    let want = |t: &str| types.is_empty() || types.iter().any(|x| x == t);
    let records = st.containers.all()?;
    let mut per_image: HashMap<String, i64> = HashMap::new();
    for r in &records {
        if let Some(i) = r["Image"].as_str() {
            *per_image.entry(i.to_string()).or_default() += 1;
        }
    }
    let mut out = serde_json::Map::new();
    if want("image") {
        let images = st.images.clone();
        let du = blocking(move || images.disk_usage()).await?;
        let list: Vec<_> = du
            .images
            .iter()
            .map(|s| {
                let mut j = summary_json(s);
                j.containers = per_image
                    .get(&s.record.id.to_string())
                    .copied()
                    .unwrap_or(0);
                j.shared_size = s.shared_size as i64;
                j
            })
            .collect();
        out.insert("LayersSize".into(), json!(du.layers_size));
        out.insert("Images".into(), json!(list));
    }
    if want("container") {
        let mut list = Vec::new();
        let mut recs = records;
        recs.sort_by(|a, b| b["Created"].as_str().cmp(&a["Created"].as_str()));
        for r in &recs {
            let mut c = super::containers::summary(r);
            let (rw, root) = super::containers::sizes(&st, r).await?;
            c["SizeRw"] = json!(rw);
            c["SizeRootFs"] = json!(root);
            list.push(c);
        }
        out.insert("Containers".into(), json!(list));
    }
    if want("volume") {
        out.insert(
            "Volumes".into(),
            json!(super::volumes::disk_usage(&st).await?),
        );
    }
    if want("build-cache") {
        // No builder keeps a cache yet.
        out.insert("BuildCache".into(), json!([]));
    }
    Ok(axum::Json(Value::Object(out)).into_response())
}
