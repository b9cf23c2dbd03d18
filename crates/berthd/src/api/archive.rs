//! A container's files: `HEAD/GET/PUT /containers/{id}/archive` (docker
//! cp) and `GET /containers/{id}/export`.

use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use berth_containers::archive::PathStat;
use berth_types::Error;
use futures_util::TryStreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{ApiError, ApiResult, AppState, ChunkSender, Query, body_channel};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/containers/{id}/archive",
            get(get_archive).head(head_archive).put(put_archive),
        )
        .route("/containers/{id}/export", get(export))
}

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

fn stat_header(stat: &PathStat) -> HeaderValue {
    let json = serde_json::to_vec(&stat.to_json()).expect("json");
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json))
        .expect("base64 is a valid header value")
}

fn path_param(q: &Query) -> ApiResult<String> {
    match q.get("path") {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(ApiError(Error::invalid(
            "bad parameter: path cannot be empty",
        ))),
    }
}

async fn head_archive(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let path = path_param(&q)?;
    let stat = st.containers.archive_stat(&id, &path).await?;
    Ok(([(STAT_HEADER, stat_header(&stat))], StatusCode::OK).into_response())
}

/// The stat comes first (it goes in a header), then the tar streams.
async fn get_archive(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let path = path_param(&q)?;
    let (sender, body) = body_channel();
    let (stat_tx, stat_rx) = tokio::sync::oneshot::channel::<Result<PathStat, Error>>();
    let stat_tx = Arc::new(Mutex::new(Some(stat_tx)));
    let tx2 = stat_tx.clone();
    let svc = st.containers.clone();
    tokio::spawn(async move {
        let res = svc
            .archive_read(&id, &path, move |stat: &PathStat| {
                let tx = tx2.lock().unwrap().take()?;
                tx.send(Ok(stat.clone())).ok()?;
                Some(Finishing(Some(sender)))
            })
            .await;
        if let Err(e) = res {
            match stat_tx.lock().unwrap().take() {
                Some(tx) => {
                    let _ = tx.send(Err(e));
                }
                None => tracing::warn!(error = %e, "archive failed mid-stream"),
            }
        }
    });
    match stat_rx.await {
        Ok(Ok(stat)) => Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-tar"),
                ),
                (
                    header::HeaderName::from_static("x-docker-container-path-stat"),
                    stat_header(&stat),
                ),
            ],
            body,
        )
            .into_response()),
        Ok(Err(e)) => Err(ApiError(e)),
        Err(_) => Err(ApiError(Error::internal("archive task ended unexpectedly"))),
    }
}

/// A `ChunkSender` that flushes when the tar is complete; a write error
/// (the client went away) ends the walk.
struct Finishing(Option<ChunkSender>);

impl std::io::Write for Finishing {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.as_mut().expect("sender").write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.as_mut().expect("sender").flush()
    }
}

/// The request body, readable from a blocking thread and drainable after
/// an error by the handler that still holds it.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Box<dyn Read + Send>>>);

impl Read for SharedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().read(buf)
    }
}

fn body_reader(body: Body) -> SharedBody {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    SharedBody(Arc::new(Mutex::new(Box::new(SyncIoBridge::new(
        StreamReader::new(stream),
    )))))
}

async fn put_archive(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let path = path_param(&q)?;
    // As dockerd: overwriting a directory with a file (and back) is
    // allowed unless noOverwriteDirNonDir is given and true.
    let no_overwrite = q.get("noOverwriteDirNonDir").is_some() && q.bool("noOverwriteDirNonDir");
    let copy_uid_gid = q.bool("copyUIDGID");
    let reader = body_reader(body);
    let res = st
        .containers
        .archive_extract(&id, &path, copy_uid_gid, no_overwrite, reader.clone())
        .await;
    // Read what the client is still sending (the tar's trailing blocks,
    // or the rest after an error), so it sees our answer rather than a
    // broken pipe (Go's server drains bodies too).
    let mut r = reader;
    let _ = tokio::task::spawn_blocking(move || {
        std::io::copy(&mut (&mut r).take(1 << 30), &mut std::io::sink())
    })
    .await;
    res?;
    Ok(StatusCode::OK.into_response())
}

async fn export(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (sender, body) = body_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
    let ready_tx = Arc::new(Mutex::new(Some(ready_tx)));
    let tx2 = ready_tx.clone();
    let svc = st.containers.clone();
    tokio::spawn(async move {
        let res = svc
            .export(&id, move || {
                let tx = tx2.lock().unwrap().take()?;
                tx.send(Ok(())).ok()?;
                Some(Finishing(Some(sender)))
            })
            .await;
        if let Err(e) = res {
            match ready_tx.lock().unwrap().take() {
                Some(tx) => {
                    let _ = tx.send(Err(e));
                }
                None => tracing::warn!(error = %e, "export failed mid-stream"),
            }
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response()),
        Ok(Err(e)) => Err(ApiError(e)),
        Err(_) => Err(ApiError(Error::internal("export task ended unexpectedly"))),
    }
}
