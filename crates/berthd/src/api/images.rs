//! Image endpoints: list, inspect, history, tag, delete, load, save,
//! import (`/images/create?fromSrc=-`), prune; pull and push are in
//! registry.rs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_api::{
    DeleteItem, HistoryItem, ImageInspect, ImagePruneReport, JsonMessage, ProgressDetail,
};
use berth_images::{ImageService, ImportOptions, LoadProgress};
use berth_types::Error;
use futures_util::TryStreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{ApiError, ApiResult, AppState, ChunkSender, Query, blocking, body_channel};
use crate::events::EventBus;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/load", post(load))
        .route("/images/create", post(create))
        .route("/images/prune", post(prune))
        .route("/images/get", get(save_many))
        .route("/images/search", get(not_implemented))
        .route(
            "/images/{*rest}",
            get(image_get).post(image_post).delete(remove),
        )
}

async fn not_implemented() -> ApiError {
    ApiError(Error::not_implemented("not implemented"))
}

fn attrs(name: Option<&str>) -> BTreeMap<String, String> {
    name.map(|n| BTreeMap::from([("name".to_string(), n.to_string())]))
        .unwrap_or_default()
}

pub fn summary_json(s: &berth_images::ImageSummary) -> berth_api::ImageSummary {
    let r = &s.record;
    berth_api::ImageSummary {
        containers: -1,
        created: r.created,
        id: r.id.to_string(),
        labels: if r.labels.is_empty() {
            None
        } else {
            Some(r.labels.clone())
        },
        parent_id: r.parent.map(|p| p.to_string()).unwrap_or_default(),
        repo_digests: r.repo_digests.clone(),
        repo_tags: s.repo_tags.clone(),
        shared_size: -1,
        size: r.size as i64,
    }
}

async fn list(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<axum::Json<Vec<berth_api::ImageSummary>>> {
    let q = Query::parse(q.as_deref())?;
    let mut filters = q.filters()?;
    // The legacy `filter=<reference>` parameter.
    if let Some(f) = q.get("filter").filter(|f| !f.is_empty()) {
        filters
            .entry("reference".into())
            .or_default()
            .push(f.to_string());
    }
    let all = q.bool("all");
    let images = st.images.clone();
    let mut list = blocking(move || images.list(&filters)).await?;
    if !all {
        // As dockerd: intermediate build images (untagged, with a child)
        // only show with `all`.
        let parents: std::collections::HashSet<_> =
            list.iter().filter_map(|s| s.record.parent).collect();
        // The platforms of a multi-platform tag besides the one it names
        // are part of that tag's image (`docker images` shows one row).
        list.retain(|s| {
            (!s.repo_tags.is_empty() || !parents.contains(&s.record.id)) && !s.index_child
        });
    }
    Ok(axum::Json(list.iter().map(summary_json).collect()))
}

/// Split `/images/<name>/<op>` where the name may contain slashes.
fn split_op<'a>(rest: &'a str, ops: &[&str]) -> Option<(&'a str, &'a str)> {
    let (name, op) = rest.rsplit_once('/')?;
    ops.contains(&op).then_some((name, op))
}

async fn image_get(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    match split_op(&rest, &["json", "history", "get"]) {
        Some((name, "json")) => inspect(st, name.to_string()).await,
        Some((name, "history")) => history(st, name.to_string()).await,
        Some((name, "get")) => save(st, vec![name.to_string()]).await,
        _ => {
            let _ = q;
            Err(ApiError(Error::not_found("page not found")))
        }
    }
}

async fn image_post(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    match split_op(&rest, &["tag", "push"]) {
        Some((name, "tag")) => tag(st, name.to_string(), q).await,
        Some((name, "push")) => super::registry::push(st, name.to_string(), q, headers).await,
        _ => Err(ApiError(Error::not_found("page not found"))),
    }
}

async fn inspect(st: AppState, name: String) -> ApiResult<Response> {
    let images = st.images.clone();
    let d = blocking(move || images.inspect(&name)).await?;
    let r = &d.summary.record;
    let c = &d.config;
    let mut data = BTreeMap::new();
    if let Some((top, lower)) = d.layer_dirs.split_first() {
        // Docker shows the image's layers as a container would stack them.
        data.insert(
            "MergedDir".to_string(),
            top.parent().unwrap().join("merged").display().to_string(),
        );
        data.insert("UpperDir".to_string(), top.display().to_string());
        data.insert(
            "WorkDir".to_string(),
            top.parent().unwrap().join("work").display().to_string(),
        );
        if !lower.is_empty() {
            let l: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
            data.insert("LowerDir".to_string(), l.join(":"));
        }
    }
    let body = ImageInspect {
        id: r.id.to_string(),
        repo_tags: d.summary.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        parent: r.parent.map(|p| p.to_string()).unwrap_or_default(),
        comment: c.comment.clone().unwrap_or_default(),
        created: c
            .created
            .clone()
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        docker_version: c.docker_version.clone().unwrap_or_default(),
        author: c.author.clone().unwrap_or_default(),
        config: berth_api::image_container_config(c.config.as_ref()),
        architecture: c.architecture.clone(),
        variant: c.variant.clone(),
        os: c.os.clone(),
        size: r.size as i64,
        graph_driver: berth_api::GraphDriver {
            data: Some(data),
            name: "overlay2".into(),
        },
        root_fs: berth_api::RootFs {
            typ: "layers".into(),
            layers: r.layers.iter().map(|l| l.diff_id.to_string()).collect(),
        },
        metadata: berth_api::ImageMetadata {
            last_tag_time: r
                .last_tag_time
                .clone()
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        },
    };
    Ok(axum::Json(body).into_response())
}

async fn history(st: AppState, name: String) -> ApiResult<Response> {
    let images = st.images.clone();
    let items = blocking(move || images.history(&name)).await?;
    let out: Vec<HistoryItem> = items
        .into_iter()
        .map(|h| HistoryItem {
            comment: h.comment,
            created: h.created,
            created_by: h.created_by,
            id: h.id,
            size: h.size as i64,
            tags: if h.tags.is_empty() {
                None
            } else {
                Some(h.tags)
            },
        })
        .collect();
    Ok(axum::Json(out).into_response())
}

async fn tag(st: AppState, name: String, q: Query) -> ApiResult<Response> {
    let repo = q.get("repo").unwrap_or("").to_string();
    if repo.is_empty() {
        return Err(ApiError(Error::invalid(
            "repository name must have at least one component",
        )));
    }
    let tag = q.get("tag").map(str::to_string);
    let images = st.images.clone();
    let (id, full) = blocking(move || images.tag(&name, &repo, tag.as_deref())).await?;
    st.events.publish(
        "image",
        "tag",
        &id.to_string(),
        attrs(Some(&berth_images::familiar(&full))),
    );
    Ok(StatusCode::CREATED.into_response())
}

fn delete_items(items: Vec<berth_images::DeleteItem>) -> Vec<DeleteItem> {
    items
        .into_iter()
        .map(|i| match i {
            berth_images::DeleteItem::Untagged(t) => DeleteItem {
                untagged: Some(t),
                deleted: None,
            },
            berth_images::DeleteItem::Deleted(d) => DeleteItem {
                untagged: None,
                deleted: Some(d),
            },
        })
        .collect()
}

fn publish_deletes(events: &EventBus, id: &str, items: &[DeleteItem]) {
    for i in items {
        if let Some(t) = &i.untagged {
            events.publish("image", "untag", id, attrs(Some(t)));
        }
        if let Some(d) = &i.deleted
            && d == id
        {
            events.publish("image", "delete", d, attrs(Some(d)));
        }
    }
}

async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let (force, noprune) = (q.bool("force"), q.bool("noprune"));
    let images = st.images.clone();
    let n = name.clone();
    let (id, items) = blocking(move || {
        let id = images.resolve(&n)?.id;
        Ok((id, images.remove(&n, force, noprune)?))
    })
    .await?;
    let items = delete_items(items);
    publish_deletes(&st.events, &id.to_string(), &items);
    Ok(axum::Json(items).into_response())
}

async fn prune(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let mut filters = q.filters()?;
    // Every form of `until` dockerd takes, as unix seconds for the store.
    if let Some(us) = filters.get_mut("until") {
        for u in us.iter_mut() {
            let n = super::system::parse_time_nanos(u)?;
            *u = format!(
                "{}.{:09}",
                n.div_euclid(1_000_000_000),
                n.rem_euclid(1_000_000_000)
            );
        }
    }
    let images = st.images.clone();
    let (items, reclaimed) = blocking(move || images.prune(&filters)).await?;
    let items = delete_items(items);
    for i in &items {
        if let Some(d) = &i.deleted {
            st.events.publish("image", "delete", d, attrs(Some(d)));
        }
    }
    st.events.publish(
        "image",
        "prune",
        "",
        BTreeMap::from([("reclaimed".to_string(), reclaimed.to_string())]),
    );
    Ok(axum::Json(ImagePruneReport {
        images_deleted: if items.is_empty() { None } else { Some(items) },
        space_reclaimed: reclaimed as i64,
    })
    .into_response())
}

fn json_line(m: &JsonMessage) -> Vec<u8> {
    let mut v = serde_json::to_vec(m).expect("json");
    v.push(b'\n');
    v
}

/// A blocking reader over the request body.
fn body_reader(body: Body) -> SyncIoBridge<impl tokio::io::AsyncRead + Unpin> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    SyncIoBridge::new(StreamReader::new(stream))
}

/// After a failed load or import, read the rest of the request body before
/// answering: a client still sending would otherwise see a broken pipe
/// instead of the error (Go's server drains bodies the same way).
fn drain_on_error<T>(r: Result<T, Error>, body: &mut impl std::io::Read) -> Result<T, Error> {
    if r.is_err() {
        let _ = std::io::copy(
            &mut std::io::Read::take(body, 1 << 30),
            &mut std::io::sink(),
        );
    }
    r
}

/// Run `work` on a blocking thread, streaming the JSON messages it emits.
/// An error before the first message becomes an HTTP error status; after
/// it, an error message in the stream, as dockerd does.
async fn json_stream(
    work: impl FnOnce(&mut dyn FnMut(JsonMessage)) -> Result<(), Error> + Send + 'static,
) -> ApiResult<Response> {
    let (mut sender, body) = body_channel();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
    tokio::task::spawn_blocking(move || {
        let mut first = Some(first_tx);
        let mut emit = |m: JsonMessage| {
            if let Some(f) = first.take() {
                let _ = f.send(Ok(()));
            }
            let _ = sender.send_now(&json_line(&m));
        };
        let res = work(&mut emit);
        match (res, first.take()) {
            (Err(e), Some(f)) => {
                let _ = f.send(Err(e));
            }
            (Err(e), None) => {
                let _ = sender.send_now(&json_line(&JsonMessage::error(e.message)));
            }
            (Ok(()), Some(f)) => {
                let _ = f.send(Ok(()));
            }
            (Ok(()), None) => {}
        }
    });
    match first_rx.await {
        Ok(Ok(())) => Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response()),
        Ok(Err(e)) => Err(ApiError(e)),
        Err(_) => Err(ApiError(Error::internal("load task ended unexpectedly"))),
    }
}

async fn load(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let quiet = q.bool("quiet");
    let images = st.images.clone();
    let events = st.events.clone();
    let mut reader = body_reader(body);
    json_stream(move |emit| {
        let loaded = images.load(&mut reader, &mut |p| {
            if quiet {
                return;
            }
            let LoadProgress::Layer { id, size } = p;
            emit(JsonMessage {
                status: Some("Loading layer".into()),
                progress_detail: Some(ProgressDetail { current: Some(size as i64), total: Some(size as i64) }),
                progress: Some(berth_api::progress_bar(size, size)),
                id: Some(id),
                ..Default::default()
            });
        });
        let loaded = drain_on_error(loaded, &mut reader)?;
        for img in loaded {
            for (tag, old) in &img.replaced {
                emit(JsonMessage::stream(format!(
                    "The image {tag} already exists, renaming the old one with ID {old} to empty string\n"
                )));
            }
            if img.tags.is_empty() {
                emit(JsonMessage::stream(format!("Loaded image ID: {}\n", img.id)));
                events.publish("image", "load", &img.id.to_string(), attrs(None));
            }
            for t in &img.tags {
                emit(JsonMessage::stream(format!("Loaded image: {t}\n")));
                events.publish("image", "load", &img.id.to_string(), attrs(Some(t)));
            }
        }
        Ok(())
    })
    .await
}

async fn create(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    if q.get("fromImage").is_some_and(|s| !s.is_empty()) {
        return super::registry::pull(st, q, headers).await;
    }
    let src = match q.get("fromSrc") {
        Some("") | None => {
            return Err(ApiError(Error::invalid("fromImage or fromSrc must be set")));
        }
        Some(s) => s.to_string(),
    };
    let repo = q.get("repo").unwrap_or("").to_string();
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if !repo.is_empty() => Some(format!("{repo}:{t}")),
        _ => Some(repo).filter(|r| !r.is_empty()),
    };
    if let Some(p) = q.get("platform").filter(|p| !p.is_empty()) {
        berth_images::distribution::Platform::parse(p)?;
    }
    // As dockerd: a source without a scheme is an http:// URL.
    let src = if src == "-" || src.contains("://") {
        src
    } else {
        format!("http://{src}")
    };
    let mut opts = ImportOptions {
        reference,
        changes: q.all("changes"),
        message: q.get("message").unwrap_or("").to_string(),
        platform: q.get("platform").map(str::to_string),
    };
    if opts.message.is_empty() {
        opts.message = format!("Imported from {src}");
    }
    let images = st.images.clone();
    let events = st.events.clone();
    let publish = move |img: &berth_images::LoadedImage| {
        events.publish(
            "image",
            "import",
            &img.id.to_string(),
            attrs(img.tags.first().map(String::as_str)),
        );
    };
    if src == "-" {
        let mut reader = body_reader(body);
        return json_stream(move |emit| {
            let img = drain_on_error(images.import(&mut reader, &opts), &mut reader)?;
            publish(&img);
            emit(JsonMessage::status(img.id.to_string()));
            Ok(())
        })
        .await;
    }
    let (resp, total) = fetch_source(&src).await?;
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    json_stream(move |emit| {
        emit(JsonMessage::status(format!("Downloading from {src}")));
        let emit = std::cell::RefCell::new(emit);
        let progress = Progress {
            r: reader,
            current: 0,
            reported: 0,
            total,
            emit: &emit,
        };
        let img = images.import(progress, &opts)?;
        publish(&img);
        (emit.borrow_mut())(JsonMessage::status(img.id.to_string()));
        Ok(())
    })
    .await
}

/// dockerd's `GetWithStatusError`: the response, or an error whose kind
/// follows the status (404 not found, 400 bad parameter, …).
async fn fetch_source(src: &str) -> ApiResult<(reqwest::Response, Option<u64>)> {
    let url =
        reqwest::Url::parse(src).map_err(|e| Error::invalid(format!("parse \"{src}\": {e}")))?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Error::internal(format!("http client: {e}")))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| Error::internal(format!("Get \"{src}\": {e}")))?;
    let status = resp.status();
    if status.as_u16() < 400 {
        let total = resp.content_length();
        return Ok((resp, total));
    }
    let body = resp.text().await.unwrap_or_default();
    let msg = format!(
        "failed to GET {src} with status {} {}: {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.trim()
    );
    let kind = match status.as_u16() {
        404 => berth_types::ErrorKind::NotFound,
        400 => berth_types::ErrorKind::InvalidArgument,
        401 | 403 => berth_types::ErrorKind::PermissionDenied,
        _ => berth_types::ErrorKind::Internal,
    };
    Err(ApiError(Error::new(kind, msg)))
}

/// A reader that reports `Importing` progress as dockerd's progress
/// reader does (at most every MiB read, and at the end).
struct Progress<'a, R, E> {
    r: R,
    current: u64,
    reported: u64,
    total: Option<u64>,
    emit: &'a std::cell::RefCell<E>,
}

impl<R: std::io::Read, E: FnMut(JsonMessage)> std::io::Read for Progress<'_, R, E> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.current += n as u64;
        if n == 0 || self.current - self.reported >= 1 << 20 {
            if n == 0 && self.current == self.reported {
                return Ok(0);
            }
            self.reported = self.current;
            let total = self.total.unwrap_or(0);
            (self.emit.borrow_mut())(JsonMessage {
                status: Some("Importing".into()),
                progress_detail: Some(ProgressDetail {
                    current: Some(self.current as i64),
                    total: self.total.map(|t| t as i64),
                }),
                progress: Some(if total > 0 {
                    berth_api::progress_bar(self.current, total)
                } else {
                    berth_format::human_size_with_precision(self.current as f64, 4)
                }),
                ..Default::default()
            });
        }
        Ok(n)
    }
}

async fn save_many(State(st): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = Query::parse(q.as_deref())?;
    let names = q.all("names");
    if names.is_empty() {
        return Err(ApiError(Error::invalid("no image names given")));
    }
    save(st, names).await
}

async fn save(st: AppState, names: Vec<String>) -> ApiResult<Response> {
    let images: Arc<ImageService> = st.images.clone();
    let n = names.clone();
    let set = blocking(move || images.save_set(&n)).await?;
    for (rec, tags) in &set {
        st.events.publish(
            "image",
            "save",
            &rec.id.to_string(),
            attrs(tags.first().map(|t| berth_images::familiar(t)).as_deref()),
        );
    }
    let (sender, body) = body_channel();
    let images = st.images.clone();
    tokio::task::spawn_blocking(move || {
        let mut sender: ChunkSender = sender;
        if let Err(e) = images.save_resolved(&set, &mut sender) {
            tracing::warn!(error = %e, "save failed mid-stream");
            sender.abort(e.message);
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}
