//! Day-two container endpoints: `stats` (a sample per second, or one) and
//! `update` (new resource limits and restart policy, applied live).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_containers::stats::Sample;
use berth_types::Error;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/update", post(update))
}

/// How often a stream samples (dockerd's collector interval).
const INTERVAL: Duration = Duration::from_secs(1);

async fn sample(st: &AppState, id: &str) -> ApiResult<Sample> {
    let (c, id) = (st.containers.clone(), id.to_string());
    tokio::task::spawn_blocking(move || c.stats_sample(&id))
        .await
        .map_err(|e| ApiError(Error::internal(e.to_string())))?
        .map_err(ApiError)
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("json");
    b.push(b'\n');
    Bytes::from(b)
}

/// `GET /containers/{id}/stats`: `stream` (default true) sends a sample
/// every second, each with the previous one's CPU figures in
/// `precpu_stats`; `stream=false` sends one sample taken a second after a
/// first (so CPU % can be computed), `one-shot=true` with it a single
/// sample at once. A stopped container gives empty samples; the stream
/// ends when the container is removed or the client goes away.
async fn stats(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let stream = q
        .get("stream")
        .is_none_or(|v| berth_api::query_bool(Some(v)));
    let one_shot = q.bool("one-shot");
    let first = sample(&st, &id).await?;
    let ct = [(header::CONTENT_TYPE, "application/json")];
    if !stream {
        if one_shot || first.cgroup.is_none() {
            return Ok((ct, Body::from(line(&first.to_json(None)))).into_response());
        }
        tokio::time::sleep(INTERVAL).await;
        let second = sample(&st, &id).await?;
        let pre = second.cgroup.is_some().then_some(&first);
        return Ok((ct, Body::from(line(&second.to_json(pre)))).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut prev: Option<Sample> = None;
        let mut cur = first;
        loop {
            let pre = prev.as_ref().filter(|p| p.cgroup.is_some());
            if tx.send(Ok(line(&cur.to_json(pre)))).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = tx.closed() => return,
            }
            let Ok(next) = sample(&st, &id).await else {
                return; // removed
            };
            prev = Some(std::mem::replace(&mut cur, next));
        }
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Ok((ct, Body::from_stream(body)).into_response())
}

/// `POST /containers/{id}/update`.
async fn update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(Error::invalid(format!("invalid JSON: {e}"))))?
    };
    let warnings = st.containers.update_container(&id, &req).await?;
    Ok(axum::Json(json!({"Warnings": warnings})).into_response())
}
