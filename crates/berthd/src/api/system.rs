//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_api::{
    API_VERSION, DiskUsage, MIN_API_VERSION, Version, VersionComponent, VersionPlatform,
};
use berth_types::Error;
use serde_json::json;

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

async fn info(State(st): State<AppState>) -> ApiResult<axum::Json<serde_json::Value>> {
    let images = st.images.clone();
    let n_images = blocking(move || images.count()).await?;
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let d = &st.daemon;
    Ok(axum::Json(json!({
        "ID": d.id,
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
        "Images": n_images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"], ["Using metacopy", "false"], ["Native Overlay Diff", "true"], ["userxattr", "false"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": true, "SwapLimit": false, "CpuCfsPeriod": true, "CpuCfsQuota": true,
        "CPUShares": true, "CPUSet": true, "PidsLimit": true, "IPv4Forwarding": true,
        "Debug": tracing::enabled!(tracing::Level::DEBUG),
        "NFd": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version(),
        "NEventsListener": st.events.listeners(),
        "KernelVersion": kernel_version(),
        "OperatingSystem": os_release(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": null, "AllowNondistributableArtifactsHostnames": null,
            "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8"],
            "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": true, "Official": true}},
            "Mirrors": null
        },
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
        "Runtimes": {"berth": {"path": "berth-runtime"}},
        "DefaultRuntime": "berth",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": null
    })))
}

/// A `since`/`until` value: unix seconds with optional fraction, RFC 3339, or a Go duration ago.
fn parse_time_nanos(s: &str) -> Result<i64, Error> {
    if let Ok(f) = s.parse::<f64>() {
        return Ok((f * 1e9) as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_nanos_opt().unwrap_or(0));
    }
    let d = humantime_like(s).ok_or_else(|| Error::invalid(format!("invalid time value: {s}")))?;
    Ok(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - d.as_nanos() as i64)
}

fn humantime_like(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
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
    let (past, mut rx) = st.events.subscribe(since);
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

async fn df(State(st): State<AppState>) -> ApiResult<axum::Json<DiskUsage>> {
    let volumes = super::volumes::disk_usage(&st).await?;
    let build_cache = super::build::disk_usage(&st).await?;
    let images = st.images.clone();
    let du = blocking(move || images.disk_usage()).await?;
    Ok(axum::Json(DiskUsage {
        layers_size: du.layers_size as i64,
        images: du
            .images
            .iter()
            .map(|s| {
                let mut j = summary_json(s);
                j.containers = 0;
                j.shared_size = s.shared_size as i64;
                j
            })
            .collect(),
        containers: vec![],
        volumes,
        build_cache,
    }))
}
