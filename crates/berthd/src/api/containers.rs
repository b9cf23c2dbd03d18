//! Container endpoints: create, start, stop, restart, kill, wait, attach
//! (hijacked), resize, logs, list, inspect, delete, rename, pause, unpause,
//! top, prune; exec create/start/inspect/resize.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_containers::ContainerService;
use berth_types::{Error, ErrorKind};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ApiError, ApiResult, AppState, Query, blocking};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/exec", post(exec_create))
        .route("/containers/{id}", axum::routing::delete(remove))
        .route("/exec/{id}/start", post(exec_start))
        .route("/exec/{id}/resize", post(exec_resize))
        .route("/exec/{id}/json", get(exec_inspect))
}

fn svc(st: &AppState) -> Arc<ContainerService> {
    st.containers.clone()
}

fn parse_json(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError(Error::invalid(format!("invalid JSON: {e}"))))
}

async fn create(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let body = parse_json(&body)?;
    let name = q.get("name").map(str::to_string);
    let c = svc(&st);
    let (id, warnings) = tokio::task::spawn_blocking(move || c.create(name.as_deref(), &body))
        .await
        .map_err(|e| ApiError(Error::internal(e.to_string())))??;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"Id": id, "Warnings": warnings})),
    )
        .into_response())
}

async fn start(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let started = svc(&st).start(&id).await?;
    Ok(if started {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }
    .into_response())
}

async fn stop(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let t = q.get("t").and_then(|t| t.parse::<i64>().ok());
    let stopped = svc(&st).stop(&id, t, q.get("signal")).await?;
    Ok(if stopped {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }
    .into_response())
}

async fn restart(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let t = q.get("t").and_then(|t| t.parse::<i64>().ok());
    let c = svc(&st);
    c.restart(&id, t, q.get("signal")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kill(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    svc(&st).kill(&id, q.get("signal")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn wait(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let condition = q.get("condition").unwrap_or("not-running").to_string();
    if !["not-running", "next-exit", "removed", ""].contains(&condition.as_str()) {
        return Err(ApiError(Error::invalid(format!(
            "invalid condition: \"{condition}\""
        ))));
    }
    let c = svc(&st);
    c.find(&id)?; // 404 before the 200 header goes out
    // Docker sends the header at once and the body when the wait ends.
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<Bytes, std::io::Error>>();
    tokio::spawn(async move {
        let body = match c.wait(&id, &condition).await {
            Ok(code) => json!({"StatusCode": code, "Error": null}),
            Err(e) => json!({"StatusCode": -1, "Error": {"Message": e.message}}),
        };
        let mut v = serde_json::to_vec(&body).expect("json");
        v.push(b'\n');
        let _ = tx.send(Ok(Bytes::from(v)));
    });
    let stream = futures_util::stream::once(async move {
        rx.await
            .unwrap_or_else(|_| Err(std::io::Error::other("wait aborted")))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn resize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let h = q.get("h").and_then(|v| v.parse().ok()).unwrap_or(0);
    let w = q.get("w").and_then(|v| v.parse().ok()).unwrap_or(0);
    let c = svc(&st);
    c.resize(&id, h, w).await?;
    c.log_event(
        &id,
        "resize",
        std::collections::BTreeMap::from([
            ("height".to_string(), h.to_string()),
            ("width".to_string(), w.to_string()),
        ]),
    );
    Ok(StatusCode::OK.into_response())
}

async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let mut rec = svc(&st).inspect(&id)?;
    if q.bool("size") {
        let (rw, root) = sizes(&st, &rec).await?;
        rec["SizeRw"] = json!(rw);
        rec["SizeRootFs"] = json!(root);
    }
    Ok(axum::Json(rec).into_response())
}

async fn remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    svc(&st)
        .remove_with_volumes(&id, q.bool("force"), q.bool("v"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rename(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let name = q.get("name").unwrap_or("").to_string();
    svc(&st).rename(&id, &name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pause(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    svc(&st).pause(&id, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unpause(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    svc(&st).pause(&id, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `Status` as docker shows it: "Created", "Up 3 seconds", "Exited (0) 2 minutes ago".
fn status_text(state: &Value) -> String {
    let since = |k: &str| {
        let t = state[k]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
        t.map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default()
        })
        .unwrap_or_default()
    };
    match state["Status"].as_str().unwrap_or("") {
        "running" => {
            let up = format!("Up {}", berth_format::human_duration(since("StartedAt")));
            match state["Health"]["Status"].as_str() {
                Some("starting") => format!("{up} (health: starting)"),
                Some(h) if !h.is_empty() => format!("{up} ({h})"),
                _ => up,
            }
        }
        "paused" => format!(
            "Up {} (Paused)",
            berth_format::human_duration(since("StartedAt"))
        ),
        "exited" => format!(
            "Exited ({}) {} ago",
            state["ExitCode"],
            berth_format::human_duration(since("FinishedAt"))
        ),
        "created" => "Created".into(),
        other => other.to_string(),
    }
}

pub fn summary(rec: &Value) -> Value {
    let mut cmd = vec![rec["Path"].as_str().unwrap_or("").to_string()];
    cmd.extend(
        rec["Args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from)),
    );
    json!({
        "Id": rec["Id"],
        "Names": [rec["Name"]],
        "Image": rec["Config"]["Image"],
        "ImageID": rec["Image"],
        "Command": cmd.join(" "),
        "Created": rec["Created"].as_str().and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()).map(|t| t.timestamp()).unwrap_or(0),
        "Ports": port_summary(&rec["NetworkSettings"]["Ports"]),
        "Labels": rec["Config"]["Labels"],
        "State": rec["State"]["Status"],
        "Status": status_text(&rec["State"]),
        "HostConfig": {"NetworkMode": rec["HostConfig"]["NetworkMode"]},
        "NetworkSettings": {"Networks": rec["NetworkSettings"]["Networks"]},
        "Mounts": rec["Mounts"].as_array().cloned().unwrap_or_default()
    })
}

/// `Ports` of a container listing, from its `NetworkSettings.Ports`.
fn port_summary(ports: &Value) -> Value {
    let mut out = Vec::new();
    for (k, binds) in ports.as_object().into_iter().flatten() {
        let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        let private: u64 = port.parse().unwrap_or(0);
        match binds.as_array() {
            Some(list) if !list.is_empty() => {
                for b in list {
                    out.push(json!({
                        "IP": b["HostIp"],
                        "PrivatePort": private,
                        "PublicPort": b["HostPort"].as_str().and_then(|p| p.parse::<u64>().ok()).unwrap_or(0),
                        "Type": proto,
                    }));
                }
            }
            _ => out.push(json!({"PrivatePort": private, "Type": proto})),
        }
    }
    Value::Array(out)
}

fn matches(
    rec: &Value,
    filters: &HashMap<String, Vec<String>>,
    by_name: &dyn Fn(&str) -> Option<String>,
) -> ApiResult<bool> {
    for (k, vals) in filters {
        if vals.is_empty() {
            continue;
        }
        let ok = vals.iter().any(|v| match k.as_str() {
            "id" => rec["Id"]
                .as_str()
                .is_some_and(|id| id.starts_with(v.as_str())),
            "name" => rec["Name"].as_str().is_some_and(|n| {
                n.trim_start_matches('/')
                    .contains(v.trim_start_matches('/'))
            }),
            "label" => match v.split_once('=') {
                Some((lk, lv)) => rec["Config"]["Labels"][lk].as_str() == Some(lv),
                None => rec["Config"]["Labels"].get(v).is_some(),
            },
            "status" => rec["State"]["Status"].as_str() == Some(v.as_str()),
            "health" => {
                let has_check =
                    berth_containers::health::probe_command(&rec["Config"]["Healthcheck"])
                        .is_some();
                let status = rec["State"]["Health"]["Status"].as_str().unwrap_or("");
                if has_check && !status.is_empty() {
                    status == v
                } else {
                    v == "none"
                }
            }
            // A volume name, bind source or destination (dockerd's list filter).
            "volume" => rec["Mounts"].as_array().into_iter().flatten().any(|m| {
                m["Destination"] == v.as_str()
                    || m["Name"] == v.as_str()
                    || (m.get("Name").is_none() && m["Source"] == v.as_str())
            }),
            "exited" => {
                rec["State"]["Status"] == "exited"
                    && v.parse::<i64>().ok() == rec["State"]["ExitCode"].as_i64()
            }
            "ancestor" => {
                rec["Config"]["Image"].as_str() == Some(v.as_str())
                    || rec["Image"].as_str().is_some_and(|i| {
                        i.trim_start_matches("sha256:")
                            .starts_with(v.trim_start_matches("sha256:"))
                    })
            }
            "network" => rec["NetworkSettings"]["Networks"]
                .as_object()
                .is_some_and(|m| {
                    m.iter().any(|(name, ep)| {
                        name == v
                            || ep["NetworkID"]
                                .as_str()
                                .is_some_and(|id| !v.is_empty() && id.starts_with(v.as_str()))
                    })
                }),
            "before" | "since" => {
                let Some(other) = by_name(v) else {
                    return false;
                };
                let mine = rec["Created"].as_str().unwrap_or("");
                if k == "before" {
                    mine < other.as_str()
                } else {
                    mine > other.as_str()
                }
            }
            _ => false,
        });
        if ![
            "id", "name", "label", "status", "exited", "ancestor", "before", "since", "volume",
            "network", "health",
        ]
        .contains(&k.as_str())
        {
            return Err(ApiError(Error::invalid(format!("invalid filter '{k}'"))));
        }
        if k == "status"
            && let Some(bad) = vals.iter().find(|v| {
                ![
                    "created",
                    "restarting",
                    "running",
                    "removing",
                    "paused",
                    "exited",
                    "dead",
                ]
                .contains(&v.as_str())
            })
        {
            return Err(ApiError(Error::invalid(format!(
                "invalid filter 'status={bad}'"
            ))));
        }
        if k == "health"
            && let Some(bad) = vals
                .iter()
                .find(|v| !["starting", "healthy", "unhealthy", "none"].contains(&v.as_str()))
        {
            return Err(ApiError(Error::invalid(format!(
                "Unrecognised filter value for health: {bad}"
            ))));
        }
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let filters = q.filters()?;
    let all = q.bool("all");
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| *l > 0);
    let mut recs = svc(&st).all()?;
    recs.sort_by(|a, b| b["Created"].as_str().cmp(&a["Created"].as_str()));
    let by_name = |n: &str| {
        svc(&st)
            .find(n)
            .ok()
            .and_then(|r| r.record["Created"].as_str().map(String::from))
    };
    let mut out = Vec::new();
    for r in &recs {
        // As dockerd: a status filter looks at every container.
        if !all
            && limit.is_none()
            && !filters.contains_key("status")
            && r["State"]["Running"].as_bool() != Some(true)
        {
            continue;
        }
        if matches(r, &filters, &by_name)? {
            out.push(summary(r));
        }
    }
    if let Some(l) = limit {
        out.truncate(l as usize);
    }
    if q.bool("size") {
        for c in &mut out {
            let (rw, root) = sizes(&st, c).await?;
            c["SizeRw"] = json!(rw);
            c["SizeRootFs"] = json!(root);
        }
    }
    Ok(axum::Json(out).into_response())
}

/// A container's `SizeRw` (its read-write layer) and `SizeRootFs` (that
/// plus its image's layers), from a record or a listing entry.
pub async fn sizes(st: &AppState, rec: &Value) -> ApiResult<(i64, i64)> {
    let id = rec["Id"].as_str().unwrap_or("").to_string();
    let image = rec["ImageID"]
        .as_str()
        .or(rec["Image"].as_str())
        .unwrap_or("")
        .to_string();
    let (c, images) = (svc(st), st.images.clone());
    blocking(move || {
        let rw = c.size_rw(&id);
        let base = images
            .inspect(&image)
            .map(|d| d.summary.record.size as i64)
            .unwrap_or(0);
        Ok((rw, rw + base))
    })
    .await
}

/// `POST /containers/prune`: every container that is not running (paused
/// ones run), filtered by `until`, `label` and `label!` as dockerd does.
async fn prune(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let filters = q.filters()?;
    let p = super::PruneFilters::parse(&filters, &["until", "label", "label!"])?;
    let c = svc(&st);
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for r in c.all()? {
        if r["State"]["Running"].as_bool() == Some(true) {
            continue;
        }
        let created = r["Created"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0);
        if !p.keeps_age(created) || !p.labels_match(&r["Config"]["Labels"]) {
            continue;
        }
        let id = r["Id"].as_str().unwrap_or("").to_string();
        let size = c.size_rw(&id);
        match c.remove(&id, false).await {
            Ok(()) => {
                reclaimed += size.max(0) as u64;
                deleted.push(id);
            }
            // Started or removed meanwhile: not this prune's business.
            Err(e) if matches!(e.kind, ErrorKind::Conflict | ErrorKind::NotFound) => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "prune: cannot remove container"),
        }
    }
    st.events.publish(
        "container",
        "prune",
        "",
        std::collections::BTreeMap::from([("reclaimed".to_string(), reclaimed.to_string())]),
    );
    Ok(axum::Json(json!({
        "ContainersDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
        "SpaceReclaimed": reclaimed,
    }))
    .into_response())
}

async fn top(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let pid = svc(&st).pid(&id)?;
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .map_err(|e| ApiError(Error::internal(e.to_string())))?;
    let mut pids = std::collections::HashSet::new();
    for e in std::fs::read_dir("/proc")
        .map_err(|e| ApiError(Error::internal(e.to_string())))?
        .flatten()
    {
        if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i64>().ok())
            && std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
        {
            pids.insert(p);
        }
    }
    let args = q
        .get("ps_args")
        .filter(|a| !a.is_empty())
        .unwrap_or("-ef")
        .to_string();
    let out = tokio::process::Command::new("ps")
        .args(args.split_whitespace())
        .output()
        .await
        .map_err(|e| ApiError(Error::internal(format!("ps: {e}"))))?;
    if !out.status.success() {
        return Err(ApiError(Error::internal(format!(
            "Error running ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let pid_col = header
        .iter()
        .position(|h| h == "PID")
        .ok_or_else(|| ApiError(Error::invalid("Couldn't find PID field in ps output")))?;
    let n = header.len();
    let mut procs = Vec::new();
    for l in lines {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.len() < n
            || !fields[pid_col]
                .parse::<i64>()
                .is_ok_and(|p| pids.contains(&p))
        {
            continue;
        }
        let mut row: Vec<String> = fields[..n - 1].iter().map(|s| s.to_string()).collect();
        row.push(fields[n - 1..].join(" "));
        procs.push(row);
    }
    Ok(axum::Json(json!({"Titles": header, "Processes": procs})).into_response())
}

/// Read a json-file log and write it in Docker's stream format.
struct LogOpts {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    tail: Option<usize>,
    since: Option<i64>,
    until: Option<i64>,
    tty: bool,
}

/// One line of a json-file log, borrowed from the file's bytes where it
/// has no escapes.
#[derive(serde::Deserialize)]
struct LogEntry<'a> {
    #[serde(borrow, default)]
    log: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    time: std::borrow::Cow<'a, str>,
}

fn frame(opts: &LogOpts, entry: &LogEntry, out: &mut Vec<u8>) {
    let stream = entry.stream.as_ref();
    if (stream == "stderr" && !opts.stderr) || (stream != "stderr" && !opts.stdout) {
        return;
    }
    let t = entry.time.as_ref();
    if opts.since.is_some() || opts.until.is_some() {
        let ns = chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.timestamp_nanos_opt().unwrap_or(0))
            .unwrap_or(0);
        if opts.since.is_some_and(|s| ns < s) || opts.until.is_some_and(|u| ns > u) {
            return;
        }
    }
    let log = entry.log.as_bytes();
    let len = log.len() + if opts.timestamps { t.len() + 1 } else { 0 };
    if !opts.tty {
        out.push(if stream == "stderr" { 2 } else { 1 });
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    if opts.timestamps {
        out.extend_from_slice(t.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(log);
}

/// The log as it is now: rotated files (oldest first), then the live one,
/// `tail` applied, framed and sent in chunks, reading through fixed-size
/// buffers (a big log never sits in memory). Returns where following goes on
/// (the live file's length and its unterminated last line); None if the
/// client went away.
fn dump_logs(
    path: &std::path::Path,
    opts: &LogOpts,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Option<(u64, Vec<u8>)> {
    use std::io::{BufRead, Read, Seek, SeekFrom};
    const CHUNK: usize = 256 << 10;
    let mut files: Vec<std::path::PathBuf> = (1..10)
        .map(|i| path.with_extension(format!("log.{i}")))
        .filter(|p| p.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    // Each file's extent: complete lines only for the live file, whose
    // unterminated tail is handed to the follower.
    let live_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut ends: Vec<u64> = files[..files.len() - 1]
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .collect();
    let live_end = last_line_end(path, live_len);
    ends.push(live_end);
    let partial = read_range(path, live_end, live_len);
    let (first, mut from) = match opts.tail {
        Some(n) => tail_start(&files, &ends, n),
        None => (0, 0),
    };
    let mut out = Vec::with_capacity(CHUNK + 4096);
    let mut line = Vec::new();
    for (i, f) in files.iter().enumerate().skip(first) {
        let Ok(mut file) = std::fs::File::open(f) else {
            continue;
        };
        if file.seek(SeekFrom::Start(from)).is_err() {
            continue;
        }
        let mut r =
            std::io::BufReader::with_capacity(64 << 10, file.take(ends[i] - from.min(ends[i])));
        from = 0;
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Ok(e) = serde_json::from_slice::<LogEntry>(&line) {
                frame(opts, &e, &mut out);
            }
            if out.len() >= CHUNK {
                let chunk = std::mem::replace(&mut out, Vec::with_capacity(CHUNK + 4096));
                tx.blocking_send(Ok(Bytes::from(chunk))).ok()?;
            }
        }
    }
    if !out.is_empty() {
        tx.blocking_send(Ok(Bytes::from(out))).ok()?;
    }
    Some((live_len, partial))
}

/// The offset just past the last newline in the first `len` bytes of `path`.
fn last_line_end(path: &std::path::Path, len: u64) -> u64 {
    let mut pos = len;
    let mut buf = vec![0u8; 64 << 10];
    while pos > 0 {
        let start = pos.saturating_sub(buf.len() as u64);
        let n = (pos - start) as usize;
        if !read_at(path, start, &mut buf[..n]) {
            return 0;
        }
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return start + i as u64 + 1;
        }
        pos = start;
    }
    0
}

fn read_at(path: &std::path::Path, at: u64, buf: &mut [u8]) -> bool {
    use std::os::unix::fs::FileExt;
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(buf, at))
        .is_ok()
}

fn read_range(path: &std::path::Path, from: u64, to: u64) -> Vec<u8> {
    let mut buf = vec![0u8; to.saturating_sub(from) as usize];
    if !read_at(path, from, &mut buf) {
        buf.clear();
    }
    buf
}

/// Where the last `n` lines begin: a file index and an offset in it. Lines
/// are counted backwards, newline by newline, through fixed-size reads.
fn tail_start(files: &[std::path::PathBuf], ends: &[u64], n: usize) -> (usize, u64) {
    if n == 0 {
        return (files.len() - 1, ends[ends.len() - 1]);
    }
    // The newline that ends the line just before the ones kept is the
    // (n+1)-th from the end.
    let mut need = n + 1;
    let mut buf = vec![0u8; 64 << 10];
    for i in (0..files.len()).rev() {
        let mut pos = ends[i];
        while pos > 0 {
            let start = pos.saturating_sub(buf.len() as u64);
            let len = (pos - start) as usize;
            if !read_at(&files[i], start, &mut buf[..len]) {
                break;
            }
            for (j, b) in buf[..len].iter().enumerate().rev() {
                if *b == b'\n' {
                    need -= 1;
                    if need == 0 {
                        return (i, start + j as u64 + 1);
                    }
                }
            }
            pos = start;
        }
    }
    (0, 0)
}

fn time_nanos(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    if let Ok(f) = s.parse::<f64>() {
        return Some((f * 1e9) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

async fn logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let c = svc(&st);
    let (path, tty, cid) = c.log_info(&id)?;
    let opts = LogOpts {
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        timestamps: q.bool("timestamps"),
        tail: q
            .get("tail")
            .filter(|t| *t != "all" && !t.is_empty())
            .and_then(|t| t.parse().ok()),
        since: q.get("since").and_then(time_nanos).filter(|s| *s > 0),
        until: q.get("until").and_then(time_nanos).filter(|s| *s > 0),
        tty,
    };
    if !opts.stdout && !opts.stderr {
        return Err(ApiError(Error::invalid(
            "Bad parameters: you must choose at least one stream",
        )));
    }
    let follow = q.bool("follow");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let dump = {
            let (path, tx) = (path.clone(), tx.clone());
            tokio::task::spawn_blocking(move || dump_logs(&path, &opts, &tx).map(|o| (o, opts)))
        };
        let Ok(Some((end, opts))) = dump.await else {
            return;
        };
        let (mut offset, mut partial) = end;
        if !follow {
            return;
        }
        loop {
            let running = c.is_running(&cid);
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                if len < offset {
                    offset = 0; // rotated
                    partial.clear();
                }
                if len > offset {
                    use tokio::io::AsyncSeekExt;
                    let _ = f.seek(std::io::SeekFrom::Start(offset)).await;
                    let mut buf = Vec::new();
                    let _ = f.read_to_end(&mut buf).await;
                    offset += buf.len() as u64;
                    partial.extend_from_slice(&buf);
                    let end = partial
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(0, |p| p + 1);
                    let mut out = Vec::new();
                    for l in partial[..end].split(|b| *b == b'\n') {
                        if let Ok(e) = serde_json::from_slice::<LogEntry>(l) {
                            frame(&opts, &e, &mut out);
                        }
                    }
                    partial.drain(..end);
                    if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                        return;
                    }
                }
            }
            if !running {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(([(header::CONTENT_TYPE, ct)], Body::from_stream(stream)).into_response())
}

/// Turn the HTTP connection into a raw stream joined to the shim's.
/// Client EOF half-closes toward the container (its stdin); the shim's EOF
/// ends the session.
fn hijack(
    mut req: Request,
    tty: bool,
    buffered: Vec<u8>,
    shim: tokio::net::UnixStream,
    after: Option<Box<dyn FnOnce() + Send>>,
) -> Response {
    let upgrade = req.headers().get(header::UPGRADE).is_some();
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    if !upgrade {
        // A client that cannot upgrade gets the output as the body.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            let mut shim = shim;
            if !buffered.is_empty() {
                let _ = tx.send(Ok(Bytes::from(buffered))).await;
            }
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = shim.read(&mut buf).await {
                if n == 0
                    || tx
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                {
                    break;
                }
            }
            if let Some(f) = after {
                f();
            }
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
            );
        return ([(header::CONTENT_TYPE, ct)], Body::from_stream(stream)).into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "hijack upgrade failed");
                return;
            }
        };
        let client = TokioIo::new(upgraded);
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = shim.into_split();
        let to_client = async {
            if !buffered.is_empty() {
                cw.write_all(&buffered).await?;
            }
            tokio::io::copy(&mut sr, &mut cw).await?;
            cw.shutdown().await
        };
        let to_shim = async {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
            let _ = sw.shutdown().await; // half-close: the container's stdin ends
            std::future::pending::<std::io::Result<()>>().await
        };
        tokio::select! {
            r = to_client => { if let Err(e) = r { tracing::debug!(error = %e, "attach stream ended"); } }
            _ = to_shim => {}
        }
        if let Some(f) = after {
            f();
        }
    });
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
    h.insert(header::UPGRADE, "tcp".parse().unwrap());
    h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
    (StatusCode::SWITCHING_PROTOCOLS, h).into_response()
}

async fn attach(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let q = Query::parse(req.uri().query())?;
    let c = svc(&st);
    if !q.bool("stream") && q.bool("logs") {
        return Err(ApiError(Error::not_implemented(
            "attach with logs=1 and stream=0 is not implemented; use /logs",
        )));
    }
    let (tty, buffered, shim) = c
        .attach(&id, q.bool("stdin"), q.bool("stdout"), q.bool("stderr"))
        .await?;
    c.log_event(&id, "attach", Default::default());
    Ok(hijack(req, tty, buffered, shim, None))
}

async fn exec_create(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = parse_json(&body)?;
    let exec_id = svc(&st).exec_create(&id, &body)?;
    Ok((StatusCode::CREATED, axum::Json(json!({"Id": exec_id}))).into_response())
}

async fn exec_start(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| ApiError(Error::invalid(e.to_string())))?;
    let opts = parse_json(&bytes)?;
    let detach = opts["Detach"].as_bool().unwrap_or(false);
    let c = svc(&st);
    let ex = c.exec_get(&id)?;
    match c.exec_start(&id, detach).await? {
        None => Ok(StatusCode::OK.into_response()),
        Some((tty, buffered, shim)) => {
            let (cid, eid) = (ex.container.clone(), id.clone());
            let c2 = c.clone();
            let after: Box<dyn FnOnce() + Send> = Box::new(move || {
                tokio::spawn(async move { c2.exec_reap(&cid, &eid).await });
            });
            Ok(hijack(
                Request::from_parts(parts, Body::empty()),
                tty,
                buffered,
                shim,
                Some(after),
            ))
        }
    }
}

async fn exec_resize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let h = q.get("h").and_then(|v| v.parse().ok()).unwrap_or(0);
    let w = q.get("w").and_then(|v| v.parse().ok()).unwrap_or(0);
    svc(&st).exec_resize(&id, h, w).await?;
    Ok(StatusCode::CREATED.into_response())
}

async fn exec_inspect(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let c = svc(&st);
    let mut e = c.exec_get(&id)?;
    if e.running {
        // The client asks right after its stream ended: ask the shim rather
        // than report a stale "running".
        c.exec_refresh(&id).await;
        e = c.exec_get(&id)?;
    }
    let c = &e.config;
    let cmd: Vec<String> = c["Cmd"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    Ok(axum::Json(json!({
        "CanRemove": false,
        "ContainerID": e.container,
        "DetachKeys": c["DetachKeys"].as_str().unwrap_or(""),
        "ExitCode": e.exit_code,
        "ID": e.id,
        "OpenStderr": c["AttachStderr"].as_bool().unwrap_or(false),
        "OpenStdin": c["AttachStdin"].as_bool().unwrap_or(false),
        "OpenStdout": c["AttachStdout"].as_bool().unwrap_or(false),
        "ProcessConfig": {
            "arguments": cmd.get(1..).unwrap_or(&[]),
            "entrypoint": cmd.first().cloned().unwrap_or_default(),
            "privileged": c["Privileged"].as_bool().unwrap_or(false),
            "tty": c["Tty"].as_bool().unwrap_or(false),
            "user": c["User"].as_str().unwrap_or("")
        },
        "Running": e.running,
        "Pid": e.pid
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, contents: &[&str]) -> (Vec<std::path::PathBuf>, Vec<u64>) {
        let mut paths = Vec::new();
        for (i, c) in contents.iter().enumerate() {
            let p = dir.join(format!("f{i}"));
            std::fs::write(&p, c).unwrap();
            paths.push(p);
        }
        let ends = contents.iter().map(|c| c.len() as u64).collect();
        (paths, ends)
    }

    #[test]
    fn tail_counts_lines_backwards_across_files() {
        let dir = std::env::temp_dir().join(format!("berthd-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (f, e) = files(&dir, &["a\nb\nc\n", "d\ne\n"]);
        assert_eq!(tail_start(&f, &e, 1), (1, 2));
        assert_eq!(tail_start(&f, &e, 2), (0, 6)); // the end of f0 is the start of f1
        assert_eq!(tail_start(&f, &e, 3), (0, 4));
        assert_eq!(tail_start(&f, &e, 5), (0, 0));
        assert_eq!(tail_start(&f, &e, 99), (0, 0));
        assert_eq!(tail_start(&f, &e, 0), (1, 4));
        assert_eq!(last_line_end(&f[1], 4), 4);
        std::fs::write(&f[1], "d\ne\npart").unwrap();
        assert_eq!(last_line_end(&f[1], 8), 4);
        assert_eq!(read_range(&f[1], 4, 8), b"part");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
