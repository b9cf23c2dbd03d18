//! `POST /build` (the legacy builder protocol: a tar context in, Docker's
//! JSON message stream out), `POST /build/prune`, and the build cache as
//! `system df` lists it.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use berth_api::{ErrorDetail, JsonMessage};
use berth_images::distribution::{AuthConfig, registry_host};
use berth_metadata::BuildCacheRead;
use berth_types::Error;
use futures_util::TryStreamExt;
use serde_json::{Map, Value, json};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{ApiError, ApiResult, AppState, Query, blocking};
use crate::build::{BuildOptions, context};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/build", post(build))
        .route("/build/prune", post(prune))
}

fn json_param<T: serde::de::DeserializeOwned + Default>(q: &Query, k: &str) -> ApiResult<T> {
    match q.get(k).filter(|s| !s.is_empty()) {
        None => Ok(T::default()),
        Some(s) => serde_json::from_str(s)
            .map_err(|e| ApiError(Error::invalid(format!("invalid {k} parameter: {e}")))),
    }
}

fn int_param(q: &Query, k: &str) -> ApiResult<Option<i64>> {
    match q.get(k).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError(Error::invalid(format!("invalid {k} parameter: {s:?}")))),
    }
}

/// `X-Registry-Config`: base64 JSON of `{registry: AuthConfig}`.
fn registry_config(headers: &HeaderMap) -> ApiResult<HashMap<String, AuthConfig>> {
    let Some(v) = headers.get("X-Registry-Config") else {
        return Ok(HashMap::new());
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError(Error::invalid("invalid X-Registry-Config header")))?
        .trim();
    if v.is_empty() {
        return Ok(HashMap::new());
    }
    let engines = [
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(v).ok())
        .ok_or_else(|| {
            ApiError(Error::invalid(
                "invalid X-Registry-Config header: not base64",
            ))
        })?;
    let map: HashMap<String, AuthConfig> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(Error::invalid(format!(
            "invalid X-Registry-Config header: {e}"
        )))
    })?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (registry_host(&k), v))
        .collect())
}

pub fn options(q: &Query, headers: &HeaderMap) -> ApiResult<BuildOptions> {
    let mut host = Map::new();
    for (param, field) in [
        ("shmsize", "ShmSize"),
        ("memory", "Memory"),
        ("memswap", "MemorySwap"),
        ("cpushares", "CpuShares"),
        ("cpuperiod", "CpuPeriod"),
        ("cpuquota", "CpuQuota"),
    ] {
        if let Some(n) = int_param(q, param)?.filter(|n| *n != 0) {
            host.insert(field.into(), json!(n));
        }
    }
    if let Some(c) = q.get("cpusetcpus").filter(|s| !s.is_empty()) {
        host.insert("CpusetCpus".into(), json!(c));
    }
    let extra_hosts: Vec<String> = match q.get("extrahosts").filter(|s| !s.is_empty()) {
        // The CLI sends a comma-separated list; older clients repeat it.
        Some(_) => q
            .all("extrahosts")
            .iter()
            .flat_map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect(),
        None => vec![],
    };
    let cache_from: Vec<String> = json_param(q, "cachefrom")?;
    let labels: BTreeMap<String, String> = json_param(q, "labels")?;
    let build_args: BTreeMap<String, Option<String>> = json_param(q, "buildargs")?;
    // `rm` defaults to true; the CLI sends rm=1, `--rm=false` rm=0.
    let rm = q.get("rm").is_none_or(|v| berth_api::query_bool(Some(v)));
    let pull = q
        .get("pull")
        .is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
    Ok(BuildOptions {
        tags: q.all("t").into_iter().filter(|t| !t.is_empty()).collect(),
        dockerfile: q
            .get("dockerfile")
            .filter(|s| !s.is_empty())
            .unwrap_or("Dockerfile")
            .to_string(),
        build_args,
        no_cache: q.bool("nocache"),
        pull,
        rm,
        force_rm: q.bool("forcerm"),
        labels,
        target: q
            .get("target")
            .map(str::to_string)
            .filter(|s| !s.is_empty()),
        platform: q
            .get("platform")
            .map(str::to_string)
            .filter(|s| !s.is_empty()),
        quiet: q.bool("q"),
        network_mode: q.get("networkmode").unwrap_or("").to_string(),
        extra_hosts,
        host_config: host,
        cache_from,
        auth: registry_config(headers)?,
        cancel: Default::default(),
    })
}

async fn build(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    if q.get("version") == Some("2") {
        return Err(ApiError(Error::not_implemented(
            "BuildKit is not supported by berthd; use the legacy builder (DOCKER_BUILDKIT=0)",
        )));
    }
    let opts = options(&q, &headers)?;
    if let Some(p) = &opts.platform {
        berth_images::distribution::Platform::parse(p).map_err(|e| {
            ApiError(Error::invalid(format!(
                "invalid platform {p:?}: {}",
                e.message
            )))
        })?;
    }
    let builder = st.builder.clone();
    let tmp = st.daemon.data_root.join("tmp");
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = SyncIoBridge::new(StreamReader::new(stream));
    let (staging, ctx) = blocking(move || {
        let staging = context::Staging::new(&tmp)?;
        let r = context::receive(&staging, &mut reader);
        if r.is_err() {
            // Read what the client still sends, so it sees the error.
            let _ = std::io::copy(
                &mut std::io::Read::take(&mut reader, 1 << 30),
                &mut std::io::sink(),
            );
        }
        Ok((staging, r?))
    })
    .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<JsonMessage>();
    let events = st.events.clone();
    let tags = opts.tags.clone();
    let cancel = opts.cancel.clone();
    let done = opts.cancel.clone();
    let handle = tokio::spawn(async move {
        let r = builder.build(opts, staging, ctx, tx).await;
        if let Ok(id) = &r {
            for t in &tags {
                let name = berth_types::Reference::parse(t)
                    .map(|r| r.with_default_tag().familiar())
                    .unwrap_or_else(|_| t.clone());
                events.publish(
                    "image",
                    "tag",
                    &id.to_string(),
                    BTreeMap::from([("name".to_string(), name)]),
                );
            }
        }
        r
    });
    // An error before the first message is the response's status, as
    // dockerd answers a Dockerfile it cannot parse; later ones travel in
    // the stream as `errorDetail`.
    let first = rx.recv().await;
    let Some(first) = first else {
        return match handle.await {
            Ok(Ok(_)) => Ok((
                [(header::CONTENT_TYPE, "application/json")],
                Vec::<u8>::new(),
            )
                .into_response()),
            Ok(Err(e)) => Err(ApiError(e.error)),
            Err(e) => Err(ApiError(Error::internal(format!("build task: {e}")))),
        };
    };
    let (btx, brx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    {
        // The response body is dropped when the client disconnects.
        let btx = btx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = btx.closed() => cancel.cancel(),
                _ = cancel.cancelled() => {}
            }
        });
    }
    tokio::spawn(async move {
        let mut next = Some(first);
        loop {
            let m = match next.take() {
                Some(m) => m,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => break,
                },
            };
            if is_marker(&m) {
                continue;
            }
            if btx.send(Ok(line(&m))).await.is_err() {
                // The client went away; the build finishes on its own.
                while rx.recv().await.is_some() {}
                break;
            }
        }
        let r = handle.await;
        // The build is over: the disconnect watcher can go.
        done.cancel();
        let end = match r {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(JsonMessage {
                error_detail: Some(ErrorDetail {
                    code: e.code,
                    message: e.error.message.clone(),
                }),
                error: Some(e.error.message),
                ..Default::default()
            }),
            Err(e) => Some(JsonMessage::error(format!("build task: {e}"))),
        };
        if let Some(m) = end {
            let _ = btx.send(Ok(line(&m))).await;
        }
    });
    let stream =
        futures_util::stream::unfold(
            brx,
            |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
        );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The builder's "started" signal: a message with nothing in it.
fn is_marker(m: &JsonMessage) -> bool {
    m.stream.is_none()
        && m.status.is_none()
        && m.aux.is_none()
        && m.error.is_none()
        && m.error_detail.is_none()
        && m.id.is_none()
}

fn line(m: &JsonMessage) -> bytes::Bytes {
    let mut v = serde_json::to_vec(m).expect("json");
    v.push(b'\n');
    bytes::Bytes::from(v)
}

/// Docker's byte sizes for `keep-storage` (`10GB`, `512MB`, `1024`).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        _ => return None,
    };
    Some((n * mult) as u64)
}

async fn prune(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let filters = q.filters()?;
    let mut until = None;
    for (k, v) in &filters {
        match k.as_str() {
            "until" => {
                let u = v.first().map(String::as_str).unwrap_or("");
                until = Some(parse_until(u)?);
            }
            "unused-for" => {
                let u = v.first().map(String::as_str).unwrap_or("");
                until = Some(parse_until(u)?);
            }
            _ => return Err(ApiError(Error::invalid(format!("invalid filter '{k}'")))),
        }
    }
    let keep = match q.get("keep-storage").filter(|s| !s.is_empty()) {
        Some(s) => parse_size(s)
            .ok_or_else(|| ApiError(Error::invalid(format!("invalid keep-storage value {s:?}"))))?,
        None => 0,
    };
    let all = q.bool("all");
    let images = st.images.clone();
    let meta = st.builder.meta.clone();
    let (deleted, reclaimed) =
        blocking(move || crate::build::prune(&images, &meta, all, until, keep)).await?;
    Ok(axum::Json(json!({
        "CachesDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
        "SpaceReclaimed": reclaimed,
    }))
    .into_response())
}

fn parse_until(s: &str) -> ApiResult<i64> {
    if let Ok(n) = s.parse::<f64>() {
        return Ok(n as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    let secs = humantime_secs(s)
        .ok_or_else(|| ApiError(Error::invalid(format!("invalid filter 'until={s}'"))))?;
    Ok(chrono::Utc::now().timestamp() - secs)
}

/// Go durations as filters use them: `10m`, `24h`, `1h30m`, `90s`.
fn humantime_secs(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut any = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next().unwrap());
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        any = true;
    }
    if !num.is_empty() {
        return None;
    }
    any.then_some(total as i64)
}

/// The build cache as `GET /system/df` lists it.
pub async fn disk_usage(st: &AppState) -> ApiResult<Vec<Value>> {
    let meta = st.builder.meta.clone();
    let images = st.images.clone();
    blocking(move || {
        let rows = meta.read(|r| r.build_caches())?;
        let list = images.list(&HashMap::new())?;
        let tagged: std::collections::HashSet<_> = list
            .iter()
            .filter(|s| !s.repo_tags.is_empty())
            .map(|s| s.record.id)
            .collect();
        Ok(rows
            .into_iter()
            .map(|r| {
                json!({
                    "ID": r.key[..25.min(r.key.len())],
                    "Parent": r.parent.map(|p| p.to_string()).unwrap_or_default(),
                    "Type": "regular",
                    "Description": r.description,
                    "InUse": tagged.contains(&r.image),
                    "Shared": false,
                    "Size": r.size,
                    "CreatedAt": r.created,
                    "LastUsedAt": r.last_used,
                    "UsageCount": r.usage_count,
                })
            })
            .collect())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(humantime_secs("1h30m"), Some(5400));
        assert_eq!(humantime_secs("10m"), Some(600));
        assert_eq!(humantime_secs("5"), None);
    }

    #[test]
    fn options_parse_docker_query() {
        let q = Query::parse(Some(
            "t=a%3A1&t=b&buildargs=%7B%22X%22%3A%221%22%2C%22Y%22%3Anull%7D&rm=0&forcerm=1&memory=100&extrahosts=a%3A1.2.3.4%2Cb%3A5.6.7.8&labels=%7B%22k%22%3A%22v%22%7D",
        ))
        .unwrap();
        let o = options(&q, &HeaderMap::new()).unwrap();
        assert_eq!(o.tags, ["a:1", "b"]);
        assert_eq!(o.build_args.get("X"), Some(&Some("1".to_string())));
        assert_eq!(o.build_args.get("Y"), Some(&None));
        assert!(!o.rm && o.force_rm);
        assert_eq!(o.host_config["Memory"], json!(100));
        assert_eq!(o.extra_hosts, ["a:1.2.3.4", "b:5.6.7.8"]);
        assert_eq!(o.labels["k"], "v");
        assert_eq!(o.dockerfile, "Dockerfile");
        let o = options(&Query::parse(None).unwrap(), &HeaderMap::new()).unwrap();
        assert!(o.rm);
    }
}
