//! The Docker Engine API: routing, version negotiation, and the one mapping
//! from error kinds to HTTP status codes.

mod archive;
mod berth;
mod build;
mod commit;
mod containers;
mod images;
mod networks;
mod ops;
pub(crate) mod registry;
mod system;
mod volumes;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use berth_api::{API_VERSION, ErrorBody, MIN_API_VERSION};
use berth_images::ImageService;
use berth_types::{Error, ErrorKind};

use crate::events::EventBus;

/// What the routes share. Each group of routes uses only its part.
#[derive(Clone)]
pub struct AppState {
    pub images: Arc<ImageService>,
    pub registry: Arc<berth_images::distribution::Client>,
    pub containers: Arc<berth_containers::ContainerService>,
    pub volumes: Arc<berth_volumes::VolumeService>,
    pub networks: Arc<berth_network::NetworkService>,
    pub events: Arc<EventBus>,
    /// What `system check` looks at.
    pub stores: crate::housekeeping::Stores,
    pub daemon: Arc<DaemonInfo>,
    pub builder: Arc<crate::build::Builder>,
}

/// Static facts about this daemon, for `/info` and `/version`.
pub struct DaemonInfo {
    pub id: String,
    pub data_root: std::path::PathBuf,
    /// Containers' default log driver.
    pub log_driver: String,
    pub ip_forward: bool,
    /// Whether berth manages firewall rules (`iptables` in daemon.json).
    pub firewall: bool,
    /// `default-address-pools` as configured: (base, size).
    pub address_pools: Vec<(String, u8)>,
}

/// An API error: Docker's `{"message": ...}` body with Docker's status.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// The one place error kinds become HTTP status codes.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_for(self.0.kind);
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "request failed");
        }
        (
            status,
            axum::Json(ErrorBody {
                message: self.0.message,
            }),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Query parameters as Docker sends them (a key may repeat).
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> ApiResult<Query> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.unwrap_or(""))
            .map_err(|e| Error::invalid(format!("invalid query: {e}")))?;
        Ok(Query(pairs))
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn bool(&self, k: &str) -> bool {
        berth_api::query_bool(self.get(k))
    }
    pub fn filters(&self) -> ApiResult<HashMap<String, Vec<String>>> {
        berth_api::parse_filters(self.get("filters").unwrap_or(""))
            .map_err(|m| ApiError(Error::invalid(m)))
    }
}

/// Run blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(Error::internal(format!("task failed: {e}"))))?
        .map_err(ApiError)
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Strip a `/vX.Y` prefix, refusing versions outside what berth serves.
async fn versioned(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v")
        && let Some((ver, tail)) = rest.split_once('/')
        && let Some(v) = parse_version(ver)
    {
        let max = parse_version(API_VERSION).unwrap();
        let min = parse_version(MIN_API_VERSION).unwrap();
        if v > max {
            return ApiError(Error::invalid(format!(
                "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
            )))
            .into_response();
        }
        if v < min {
            return ApiError(Error::invalid(format!(
                "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
            )))
            .into_response();
        }
        let new_path = format!("/{tail}");
        let pq = match req.uri().query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(pq.parse().expect("valid path"));
        *req.uri_mut() = Uri::from_parts(parts).expect("valid uri");
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_str(&format!("Docker/{} (linux)", crate::VERSION)).expect("header"),
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError(Error::not_found("page not found"))
}

pub fn router(state: AppState) -> Router {
    let inner = Router::new()
        .merge(system::routes())
        .merge(images::routes())
        .merge(build::routes())
        .merge(registry::routes())
        .merge(containers::routes())
        .merge(archive::routes())
        .merge(ops::routes())
        .merge(commit::routes())
        .merge(volumes::routes())
        .merge(networks::routes())
        .merge(berth::routes())
        .fallback(not_found)
        .with_state(state);
    // Routing happens in `inner`, after `versioned` has rewritten the path.
    Router::new()
        .fallback_service(inner)
        .layer(middleware::from_fn(versioned))
}

/// A streaming response body fed from a blocking task.
pub fn body_channel() -> (ChunkSender, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (
        ChunkSender {
            tx,
            buf: Vec::new(),
        },
        Body::from_stream(stream),
    )
}

/// A `std::io::Write` that sends what is written to a response body.
pub struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    const CHUNK: usize = 256 << 10;
    pub fn send_now(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(data);
        self.flush_buf()
    }
    fn flush_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
    /// End the body with an error (the client sees a broken stream).
    pub fn abort(self, msg: String) {
        let _ = self.tx.blocking_send(Err(std::io::Error::other(msg)));
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.flush_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buf()
    }
}

/// The filters prune endpoints share (dockerd's `until`, `label`,
/// `label!`), checked against what one endpoint accepts.
pub struct PruneFilters {
    /// Objects created after this (nanoseconds since the epoch) stay.
    pub until: Option<i64>,
    pub labels: Vec<String>,
    pub not_labels: Vec<String>,
}

impl PruneFilters {
    pub fn parse(filters: &HashMap<String, Vec<String>>, accepted: &[&str]) -> ApiResult<Self> {
        if let Some(k) = filters.keys().find(|k| !accepted.contains(&k.as_str())) {
            return Err(ApiError(Error::invalid(format!("invalid filter '{k}'"))));
        }
        let until = match filters.get("until").map(Vec::as_slice) {
            None | Some([]) => None,
            Some([u]) => Some(system::parse_time_nanos(u)?),
            Some(_) => {
                return Err(ApiError(Error::invalid(
                    "more than one until filter specified",
                )));
            }
        };
        Ok(PruneFilters {
            until,
            labels: filters.get("label").cloned().unwrap_or_default(),
            not_labels: filters.get("label!").cloned().unwrap_or_default(),
        })
    }

    /// An object created at `created` (nanoseconds) is old enough.
    pub fn keeps_age(&self, created: i64) -> bool {
        self.until.is_none_or(|u| created <= u)
    }

    /// Every `label` filter matches, and not every `label!` one does
    /// (dockerd's `matchLabels`).
    pub fn labels_match(&self, labels: &serde_json::Value) -> bool {
        let has = |f: &String| match f.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => labels.get(f.as_str()).is_some(),
        };
        self.labels.iter().all(has)
            && (self.not_labels.is_empty() || !self.not_labels.iter().all(has))
    }
}
