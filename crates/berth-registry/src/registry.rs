//! The distribution API: one handler per endpoint, on top of the metadata
//! store, the blob store and the auth layer. `Registry::handle` is the
//! whole HTTP surface; `server.rs` only moves connections.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use berth_types::Digest;
use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    HeaderName, HeaderValue, LINK, LOCATION, RANGE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::auth::{Actions, Auth, ChallengeOrigin, Identity};
use crate::body::{self, Body};
use crate::config::{AuthMode, Config};
use crate::error::{Code, RegError, RegResult};
use crate::manifest;
use crate::meta::{ManifestRow, Meta, PutRefused, UploadRow, now};
use crate::metrics::Metrics;
use crate::names::{self, ManifestRef, Route, parse_digest, query_escape, query_pairs};
use crate::proxy::Proxy;
use crate::storage::{BlobStore, Ingest, Locks, ingest_body, random_id, verify};

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
pub const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");

/// Most tags or repositories one listing returns when the client sets no `n`
/// for the catalog (tags lists are complete unless `n` is given).
const CATALOG_PAGE: usize = 1000;
/// Largest `n` honoured.
const MAX_PAGE: usize = 10_000;
/// How much of an over-long bounded body is read (and dropped) before the 413.
const DRAIN_LIMIT: usize = 16 << 20;
/// Limit of token-endpoint request bodies.
const MAX_FORM: usize = 64 << 10;

/// An upload session's in-memory state: the open file and its running hash
/// (`None` until first used after a restart: then rebuilt from the file).
#[derive(Default)]
pub struct Session {
    pub ingest: Option<Ingest>,
}

pub type SessionMap = Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>;

pub struct Registry {
    pub cfg: Config,
    pub meta: Arc<Meta>,
    pub store: BlobStore,
    pub locks: Locks,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub sessions: SessionMap,
    pub proxy: Option<Proxy>,
}

/// Where a request came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub remote: std::net::SocketAddr,
    /// Scheme and host to name in auth challenges.
    pub auth: ChallengeOrigin,
}

/// What the access log records of a request, filled in as it is handled.
#[derive(Default)]
pub struct Ctx {
    pub route: &'static str,
    pub user: Option<String>,
}

fn response(status: StatusCode) -> http::response::Builder {
    Response::builder().status(status)
}

fn finish(b: http::response::Builder, body: Body) -> Response<Body> {
    b.body(body).expect("response headers are valid")
}

/// The error as a response (no body for HEAD).
pub fn error_response(e: &RegError, head: bool) -> Response<Body> {
    let bytes = serde_json::to_vec(&e.body()).expect("json");
    let mut b = response(e.status())
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, bytes.len());
    for (k, v) in &e.headers {
        b = b.header(k, v);
    }
    finish(
        b,
        if head {
            body::empty()
        } else {
            body::full(bytes)
        },
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task does not panic")
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// True if the request carries a body (a length > 0, or chunked).
fn has_body(req: &Request<Incoming>) -> bool {
    match content_length(req) {
        Some(n) => n > 0,
        None => req.headers().contains_key(http::header::TRANSFER_ENCODING),
    }
}

/// Reads a body of at most `limit` bytes; 413 beyond. An over-long body is
/// read and dropped up to [`DRAIN_LIMIT`] so that the client sees the 413
/// rather than a reset connection; beyond that the connection is closed.
async fn read_limited(req: Request<Incoming>, limit: usize, what: &str) -> RegResult<Bytes> {
    let declared = content_length(&req);
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    let over = |n: usize| n > limit;
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(too_large(what, limit));
    }
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| RegError::new(Code::BadRequest, format!("reading {what}: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > DRAIN_LIMIT {
            break;
        }
        if !over(total) {
            buf.extend_from_slice(&data);
        }
    }
    if over(total) {
        return Err(too_large(what, limit));
    }
    Ok(buf.freeze())
}

fn too_large(what: &str, limit: usize) -> RegError {
    RegError::new(
        Code::TooLarge,
        format!("{what} exceeds the limit of {limit} bytes"),
    )
}

/// `Range: 0-<last byte>` as the spec (and the reference registry) report it.
fn upload_range(written: u64) -> String {
    format!("0-{}", written.saturating_sub(1))
}

/// Parses a chunk's `Content-Range` (`start-end`, inclusive; a `bytes `
/// prefix is tolerated).
fn parse_content_range(s: &str) -> Option<(u64, u64)> {
    let s = s.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s);
    let (a, b) = s.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

/// Parses a `Range: bytes=...` request header against a blob of `size`
/// bytes: Ok(None) for no/ignored range, Err for an unsatisfiable one.
fn parse_range(h: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = h.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None); // other units are ignored, as RFC 9110 allows
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: serve the whole blob
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end: u64 = if b.is_empty() {
            size.checked_sub(1).ok_or(())?
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn method_not_allowed(allow: &str) -> RegError {
    RegError::new(
        Code::Unsupported,
        format!("method not allowed here; allowed: {allow}"),
    )
    .header(ALLOW, allow)
}

fn upload_id_valid(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Registry {
    /// Handles one request; never fails (errors become responses).
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        origin: Origin,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let head = method == Method::HEAD;
        let mut ctx = Ctx {
            route: "unknown",
            user: None,
        };
        let mut resp = match self.dispatch(req, &origin, &mut ctx).await {
            Ok(r) => r,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::error!(target: "berth_registry::error", %method, %path, error = %e, "request failed");
                }
                error_response(&e, head)
            }
        };
        resp.headers_mut()
            .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        let status = resp.status().as_u16();
        let took = started.elapsed();
        self.metrics
            .request(method.as_str(), ctx.route, status, took);
        tracing::info!(
            target: "berth_registry::access",
            method = %method,
            path = %path,
            route = ctx.route,
            status,
            us = took.as_micros() as u64,
            user = ctx.user.as_deref().unwrap_or("-"),
            remote = %origin.remote,
            "request"
        );
        resp
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        origin: &Origin,
        ctx: &mut Ctx,
    ) -> RegResult<Response<Body>> {
        let route = names::route(req.uri().path())?;
        ctx.route = route.label();
        let m = req.method().clone();
        match route {
            Route::Health => {
                return match m {
                    Method::GET | Method::HEAD => self.health().await,
                    _ => Err(method_not_allowed("GET, HEAD")),
                };
            }
            Route::Token => {
                if self.auth.mode() != AuthMode::Token {
                    return Err(RegError::new(
                        Code::NotFound,
                        "token authentication is not enabled",
                    ));
                }
                return match m {
                    Method::GET | Method::POST => self.token(req, origin).await,
                    _ => Err(method_not_allowed("GET, POST")),
                };
            }
            _ => {}
        }
        let id = self.auth.identify(req.headers(), &origin.auth).await?;
        ctx.user = id.name().map(String::from);
        let auth = &origin.auth;
        let need = |repo: &str, a: Actions| self.auth.require(&id, repo, a, auth);
        match route {
            Route::Base => match m {
                Method::GET | Method::HEAD => {
                    self.auth.require_login(&id, auth)?;
                    Ok(finish(
                        response(StatusCode::OK)
                            .header(CONTENT_TYPE, "application/json")
                            .header(CONTENT_LENGTH, 2),
                        if m == Method::HEAD {
                            body::empty()
                        } else {
                            body::full("{}")
                        },
                    ))
                }
                _ => Err(method_not_allowed("GET, HEAD")),
            },
            Route::Metrics => match m {
                Method::GET => {
                    self.auth.require_login(&id, auth)?;
                    Ok(finish(
                        response(StatusCode::OK).header(CONTENT_TYPE, "text/plain; version=0.0.4"),
                        body::full(self.metrics.render()),
                    ))
                }
                _ => Err(method_not_allowed("GET")),
            },
            Route::Catalog => match m {
                Method::GET => self.catalog(&req, &id, auth),
                _ => Err(method_not_allowed("GET")),
            },
            Route::Tags(name) => match m {
                Method::GET => {
                    need(&name, Actions::PULL)?;
                    self.tags(&name, &req).await
                }
                _ => Err(method_not_allowed("GET")),
            },
            Route::Manifest(name, reference) => match m {
                Method::GET | Method::HEAD => {
                    need(&name, Actions::PULL)?;
                    self.get_manifest(&name, &reference, m == Method::HEAD)
                        .await
                }
                Method::PUT => {
                    need(&name, Actions::PUSH)?;
                    self.put_manifest(&name, &reference, req).await
                }
                Method::DELETE => {
                    need(&name, Actions::DELETE)?;
                    self.delete_manifest(&name, &reference).await
                }
                _ => Err(method_not_allowed("GET, HEAD, PUT, DELETE")),
            },
            Route::Blob(name, digest) => match m {
                Method::GET | Method::HEAD => {
                    need(&name, Actions::PULL)?;
                    self.get_blob(&name, &digest, &req).await
                }
                Method::DELETE => {
                    need(&name, Actions::DELETE)?;
                    self.delete_blob(&name, &digest).await
                }
                _ => Err(method_not_allowed("GET, HEAD, DELETE")),
            },
            Route::UploadStart(name) => match m {
                Method::POST => {
                    need(&name, Actions::PUSH)?;
                    self.start_upload(&name, req, &id).await
                }
                _ => Err(method_not_allowed("POST")),
            },
            Route::Upload(name, uid) => {
                let allow = "GET, PATCH, PUT, DELETE";
                if !matches!(
                    m,
                    Method::GET | Method::PATCH | Method::PUT | Method::DELETE
                ) {
                    return Err(method_not_allowed(allow));
                }
                need(&name, Actions::PUSH)?;
                let sess = self.session(&name, &uid, &id)?;
                match m {
                    Method::GET => self.upload_status(&name, &uid, sess).await,
                    Method::PATCH => self.patch_upload(&name, &uid, sess, req).await,
                    Method::PUT => self.finish_upload(&name, &uid, sess, req).await,
                    _ => self.cancel_upload(&uid).await,
                }
            }
            Route::Referrers(name, digest) => match m {
                Method::GET => {
                    let d = parse_digest(&digest)?;
                    need(&name, Actions::PULL)?;
                    self.referrers(&name, &d, &req)
                }
                _ => Err(method_not_allowed("GET")),
            },
            Route::Health | Route::Token => unreachable!("handled above"),
        }
    }

    fn refuse_in_proxy(&self) -> RegResult<()> {
        match &self.proxy {
            Some(p) => Err(RegError::new(
                Code::Unsupported,
                format!(
                    "this registry is a pull-through cache of {}; it takes no pushes or deletes",
                    p.url()
                ),
            )),
            None => Ok(()),
        }
    }

    fn refuse_delete(&self) -> RegResult<()> {
        self.refuse_in_proxy()?;
        if !self.cfg.delete_enabled {
            return Err(RegError::new(
                Code::Unsupported,
                "deletes are disabled on this registry",
            ));
        }
        Ok(())
    }

    fn require_repo(&self, name: &str) -> RegResult<()> {
        if self.meta.repo_exists(name).map_err(RegError::internal)? {
            Ok(())
        } else {
            Err(RegError::new(
                Code::NameUnknown,
                format!("repository {name} not known to registry"),
            )
            .detail(json!({ "name": name })))
        }
    }

    async fn health(&self) -> RegResult<Response<Body>> {
        let meta = self.meta.clone();
        let ok = blocking(move || meta.repo_exists("")).await;
        match ok {
            Ok(_) => Ok(finish(
                response(StatusCode::OK).header(CONTENT_TYPE, "application/json"),
                body::json(&json!({"status": "ok"})),
            )),
            Err(e) => Ok(finish(
                response(StatusCode::SERVICE_UNAVAILABLE).header(CONTENT_TYPE, "application/json"),
                body::json(&json!({"status": "unavailable", "error": e.to_string()})),
            )),
        }
    }

    // ---- listings ------------------------------------------------------

    fn page_params(req: &Request<Incoming>) -> RegResult<(Option<usize>, Option<String>)> {
        let mut n = None;
        let mut last = None;
        for (k, v) in query_pairs(req.uri().query()) {
            match k.as_str() {
                "n" => {
                    n = Some(v.parse::<usize>().map_err(|_| {
                        RegError::new(
                            Code::BadRequest,
                            format!("invalid n={v:?}: want a non-negative integer"),
                        )
                    })?)
                }
                "last" => last = Some(v),
                _ => {}
            }
        }
        Ok((n.map(|n| n.min(MAX_PAGE)), last))
    }

    fn catalog(
        &self,
        req: &Request<Incoming>,
        id: &Identity,
        origin: &ChallengeOrigin,
    ) -> RegResult<Response<Body>> {
        self.auth.require_login(id, origin)?;
        if let Identity::Token { grants, .. } = id
            && !grants
                .iter()
                .any(|g| g.kind == "registry" && g.name == "catalog")
        {
            return Err(self.auth.unauthorized(
                origin,
                Some("registry:catalog:*"),
                Some("insufficient_scope"),
                "token does not grant registry:catalog:*",
            ));
        }
        let (n, last) = Self::page_params(req)?;
        let want = n.unwrap_or(CATALOG_PAGE);
        // only repositories the caller may pull are listed
        let user = id.name();
        let visible = |r: &str| match id {
            Identity::Token { .. } => self.auth.allowed(user, r).contains(Actions::PULL),
            _ => self.auth.permitted(id, r).contains(Actions::PULL),
        };
        let mut out = Vec::new();
        let mut cursor = last.clone();
        let mut more = false;
        while out.len() < want {
            let (page, has_more) = self
                .meta
                .repos(cursor.as_deref(), 500)
                .map_err(RegError::internal)?;
            cursor = page.last().cloned();
            for r in page {
                if visible(&r) {
                    if out.len() == want {
                        more = true;
                        break;
                    }
                    out.push(r);
                }
            }
            if !has_more || more {
                break;
            }
        }
        if out.len() == want && !more && want > 0 {
            // peek whether anything visible follows
            let mut c = out.last().cloned();
            'peek: loop {
                let (page, has_more) = self
                    .meta
                    .repos(c.as_deref(), 500)
                    .map_err(RegError::internal)?;
                c = page.last().cloned();
                for r in page {
                    if visible(&r) {
                        more = true;
                        break 'peek;
                    }
                }
                if !has_more {
                    break;
                }
            }
        }
        let mut b = response(StatusCode::OK).header(CONTENT_TYPE, "application/json");
        if more && let Some(l) = out.last() {
            b = b.header(
                LINK,
                format!(
                    "</v2/_catalog?n={want}&last={}>; rel=\"next\"",
                    query_escape(l)
                ),
            );
        }
        Ok(finish(b, body::json(&json!({ "repositories": out }))))
    }

    async fn tags(&self, name: &str, req: &Request<Incoming>) -> RegResult<Response<Body>> {
        if let Some(p) = &self.proxy {
            match p.tags(name, req.uri().query()).await {
                Ok(r) => {
                    Metrics::add(&self.metrics.proxy_misses, 1);
                    return Ok(r);
                }
                Err(e) => {
                    Metrics::add(&self.metrics.proxy_errors, 1);
                    tracing::warn!(repo = name, error = %e, "upstream tags list failed; answering from the cache");
                }
            }
        }
        self.require_repo(name)?;
        let (n, last) = Self::page_params(req)?;
        let (tags, more) = match n {
            Some(0) => (Vec::new(), false),
            Some(n) => self
                .meta
                .tags(name, last.as_deref(), n)
                .map_err(RegError::internal)?,
            None => self
                .meta
                .tags(name, last.as_deref(), usize::MAX)
                .map_err(RegError::internal)?,
        };
        let mut b = response(StatusCode::OK).header(CONTENT_TYPE, "application/json");
        if more && let (Some(n), Some(l)) = (n, tags.last()) {
            b = b.header(
                LINK,
                format!(
                    "</v2/{name}/tags/list?n={n}&last={}>; rel=\"next\"",
                    query_escape(l)
                ),
            );
        }
        Ok(finish(
            b,
            body::json(&json!({ "name": name, "tags": tags })),
        ))
    }

    fn referrers(
        &self,
        name: &str,
        subject: &Digest,
        req: &Request<Incoming>,
    ) -> RegResult<Response<Body>> {
        self.require_repo(name)?;
        let filter = query_pairs(req.uri().query())
            .into_iter()
            .find(|(k, _)| k == "artifactType")
            .map(|(_, v)| v);
        let mut list = self
            .meta
            .referrers(name, subject)
            .map_err(RegError::internal)?;
        let mut b = response(StatusCode::OK).header(CONTENT_TYPE, manifest::MT_OCI_INDEX);
        if let Some(f) = &filter {
            list.retain(|d| d.get("artifactType").and_then(Value::as_str) == Some(f.as_str()));
            b = b.header(OCI_FILTERS_APPLIED, "artifactType");
        }
        Ok(finish(
            b,
            body::json(&json!({
                "schemaVersion": 2,
                "mediaType": manifest::MT_OCI_INDEX,
                "manifests": list,
            })),
        ))
    }

    // ---- manifests -----------------------------------------------------

    pub(crate) fn manifest_response(
        &self,
        d: &Digest,
        media_type: &str,
        bytes: Option<Bytes>,
        size: u64,
    ) -> Response<Body> {
        if let Some(b) = &bytes {
            Metrics::add(&self.metrics.bytes_sent, b.len() as u64);
        }
        finish(
            response(StatusCode::OK)
                .header(CONTENT_TYPE, media_type)
                .header(CONTENT_LENGTH, size)
                .header(DOCKER_CONTENT_DIGEST, d.to_string())
                .header(ETAG, format!("\"{d}\"")),
            match bytes {
                Some(b) => body::full(b),
                None => body::empty(),
            },
        )
    }

    /// Reads a stored manifest's bytes.
    pub(crate) async fn manifest_bytes(&self, d: &Digest) -> RegResult<Bytes> {
        let p = self.store.path(d);
        match tokio::fs::read(&p).await {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegError::new(
                Code::ManifestUnknown,
                format!("manifest {d} has no content (collected?)"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_manifest(
        self: &Arc<Self>,
        name: &str,
        reference: &str,
        head: bool,
    ) -> RegResult<Response<Body>> {
        let r = ManifestRef::parse(reference)?;
        if self.proxy.is_some() {
            return self.proxy_manifest(name, r, head).await;
        }
        let unknown = || {
            RegError::new(
                Code::ManifestUnknown,
                format!("manifest {name}:{reference} not known to registry"),
            )
            .detail(json!({ "name": name, "reference": reference }))
        };
        let d = match &r {
            ManifestRef::Tag(t) => self.meta.tag(name, t).map_err(RegError::internal)?,
            ManifestRef::Digest(d) => Some(*d),
        };
        let row = match d {
            Some(d) => self
                .meta
                .manifest(name, &d)
                .map_err(RegError::internal)?
                .map(|row| (d, row)),
            None => None,
        };
        let Some((d, row)) = row else {
            self.require_repo(name)?;
            return Err(unknown());
        };
        let bytes = if head {
            None
        } else {
            Some(self.manifest_bytes(&d).await?)
        };
        Ok(self.manifest_response(&d, &row.media_type, bytes, row.size))
    }

    /// Stores a verified manifest: bytes into the blob store, row and tags
    /// into the metadata store (with its references checked there unless
    /// `check` is false, as for manifests a cache takes from upstream).
    pub async fn store_manifest(
        &self,
        name: &str,
        d: Digest,
        bytes: Bytes,
        parsed: manifest::Parsed,
        tags: Vec<String>,
        check: bool,
    ) -> RegResult<()> {
        let row = ManifestRow {
            v: 1,
            media_type: parsed.media_type,
            size: bytes.len() as u64,
            created: now(),
            refs: parsed.refs,
            subject: parsed.subject,
            artifact_type: parsed.artifact_type,
            annotations: parsed.annotations,
        };
        let checks = if check { parsed.checks } else { Vec::new() };
        let _guard = self.locks.lock(&d).await;
        let store = self.store.clone();
        let meta = self.meta.clone();
        let name = name.to_string();
        let refused = blocking(move || -> RegResult<Option<PutRefused>> {
            store.put_bytes(&d, &bytes)?;
            Ok(meta
                .put_manifest(&name, &d, &row, &checks, &tags)
                .map_err(RegError::internal)?
                .err())
        })
        .await?;
        match refused {
            None => Ok(()),
            Some(PutRefused::Missing(x)) => Err(RegError::new(
                Code::ManifestBlobUnknown,
                format!("manifest references {x}, which is not in the repository"),
            )
            .detail(json!({ "digest": x.to_string() }))),
            Some(PutRefused::SizeMismatch {
                digest,
                declared,
                stored,
            }) => Err(RegError::new(
                Code::ManifestInvalid,
                format!("descriptor of {digest} says {declared} bytes; the blob has {stored}"),
            )),
        }
    }

    async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        req: Request<Incoming>,
    ) -> RegResult<Response<Body>> {
        self.refuse_in_proxy()?;
        let r = ManifestRef::parse(reference)?;
        let mut tags: Vec<String> = Vec::new();
        for (k, v) in query_pairs(req.uri().query()) {
            if k == "tag" {
                if !names::valid_tag(&v) {
                    return Err(RegError::new(
                        Code::ManifestInvalid,
                        format!("invalid tag {v:?}"),
                    ));
                }
                tags.push(v);
            }
        }
        let extra_tags = tags.clone();
        if let ManifestRef::Tag(t) = &r {
            tags.push(t.clone());
        }
        let ct = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = read_limited(req, self.cfg.max_manifest_bytes, "manifest").await?;
        Metrics::add(&self.metrics.bytes_received, bytes.len() as u64);
        let d = Digest::of(&bytes);
        if let ManifestRef::Digest(want) = &r
            && *want != d
        {
            return Err(RegError::new(
                Code::DigestInvalid,
                format!("manifest pushed as {want} has digest {d}"),
            )
            .detail(json!({ "digest": want.to_string() })));
        }
        let parsed = manifest::parse(&bytes, ct.as_deref())?;
        let subject = parsed.subject;
        self.store_manifest(name, d, bytes, parsed, tags, true)
            .await?;
        let mut b = response(StatusCode::CREATED)
            .header(LOCATION, format!("/v2/{name}/manifests/{d}"))
            .header(DOCKER_CONTENT_DIGEST, d.to_string())
            .header(CONTENT_LENGTH, 0);
        if let Some(s) = subject {
            b = b.header(OCI_SUBJECT, s.to_string());
        }
        for t in extra_tags {
            b = b.header(OCI_TAG, t);
        }
        Ok(finish(b, body::empty()))
    }

    async fn delete_manifest(&self, name: &str, reference: &str) -> RegResult<Response<Body>> {
        self.refuse_delete()?;
        let r = ManifestRef::parse(reference)?;
        self.require_repo(name)?;
        let (meta, n) = (self.meta.clone(), name.to_string());
        let found = match r.clone() {
            ManifestRef::Tag(t) => blocking(move || meta.delete_tag(&n, &t)).await,
            ManifestRef::Digest(d) => blocking(move || meta.delete_manifest(&n, &d)).await,
        }
        .map_err(RegError::internal)?;
        if !found {
            return Err(RegError::new(
                Code::ManifestUnknown,
                format!("manifest {name}:{r} not known to registry"),
            ));
        }
        Ok(finish(
            response(StatusCode::ACCEPTED).header(CONTENT_LENGTH, 0),
            body::empty(),
        ))
    }

    // ---- blobs -----------------------------------------------------------

    fn blob_unknown(name: &str, d: &Digest) -> RegError {
        RegError::new(Code::BlobUnknown, format!("blob {d} not known to {name}"))
            .detail(json!({ "digest": d.to_string() }))
    }

    async fn get_blob(
        self: &Arc<Self>,
        name: &str,
        digest: &str,
        req: &Request<Incoming>,
    ) -> RegResult<Response<Body>> {
        let d = parse_digest(digest)?;
        let head = req.method() == Method::HEAD;
        let linked = self
            .meta
            .link(name, &d)
            .map_err(RegError::internal)?
            .is_some();
        if !linked {
            if self.proxy.is_some() {
                return self.proxy_blob(name, d, head).await;
            }
            return Err(Self::blob_unknown(name, &d));
        }
        if self.proxy.is_some() {
            Metrics::add(&self.metrics.proxy_hits, 1);
        }
        self.serve_blob(name, &d, req.headers().get(RANGE), head)
            .await
    }

    /// Serves a committed blob's bytes (or a range of them).
    pub async fn serve_blob(
        &self,
        name: &str,
        d: &Digest,
        range: Option<&HeaderValue>,
        head: bool,
    ) -> RegResult<Response<Body>> {
        let path = self.store.path(d);
        let file = match blocking(move || std::fs::File::open(path)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Self::blob_unknown(name, d));
            }
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata()?.len();
        let base = |status| {
            response(status)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(DOCKER_CONTENT_DIGEST, d.to_string())
                .header(ETAG, format!("\"{d}\""))
                .header(ACCEPT_RANGES, "bytes")
                .header(CACHE_CONTROL, "max-age=31536000")
        };
        let (status, start, len, b) = match parse_range(range, size) {
            Ok(None) => (StatusCode::OK, 0, size, base(StatusCode::OK)),
            Ok(Some((s, e))) => (
                StatusCode::PARTIAL_CONTENT,
                s,
                e - s + 1,
                base(StatusCode::PARTIAL_CONTENT)
                    .header(CONTENT_RANGE, format!("bytes {s}-{e}/{size}")),
            ),
            Err(()) => {
                return Err(RegError::new(
                    Code::RangeNotSatisfiable,
                    format!("range not satisfiable for blob {d} of {size} bytes"),
                )
                .header(CONTENT_RANGE, format!("bytes */{size}")));
            }
        };
        let _ = status;
        let b = b.header(CONTENT_LENGTH, len);
        if head {
            return Ok(finish(b, body::empty()));
        }
        Ok(finish(
            b,
            body::file(file, start, len, self.metrics.clone()),
        ))
    }

    async fn delete_blob(&self, name: &str, digest: &str) -> RegResult<Response<Body>> {
        let d = parse_digest(digest)?;
        self.refuse_delete()?;
        let (meta, n) = (self.meta.clone(), name.to_string());
        let found = blocking(move || meta.unlink_blob(&n, &d))
            .await
            .map_err(RegError::internal)?;
        if !found {
            return Err(Self::blob_unknown(name, &d));
        }
        Ok(finish(
            response(StatusCode::ACCEPTED).header(CONTENT_LENGTH, 0),
            body::empty(),
        ))
    }

    // ---- uploads ---------------------------------------------------------

    fn upload_location(name: &str, id: &str) -> String {
        format!("/v2/{name}/blobs/uploads/{id}")
    }

    fn created_blob(name: &str, d: &Digest) -> Response<Body> {
        finish(
            response(StatusCode::CREATED)
                .header(LOCATION, format!("/v2/{name}/blobs/{d}"))
                .header(DOCKER_CONTENT_DIGEST, d.to_string())
                .header(CONTENT_LENGTH, 0),
            body::empty(),
        )
    }

    /// Verifies, syncs and installs a finished upload file, and links the
    /// blob into `name` (ending upload `upload` in the same transaction).
    pub(crate) async fn commit_upload(
        &self,
        name: &str,
        d: Digest,
        ingest: Ingest,
        path: std::path::PathBuf,
        upload: Option<String>,
    ) -> RegResult<()> {
        let size = ingest.written;
        let _guard = self.locks.lock(&d).await;
        let (store, meta, n) = (self.store.clone(), self.meta.clone(), name.to_string());
        blocking(move || -> RegResult<()> {
            ingest.file.sync_data()?;
            drop(ingest);
            store.install(&path, &d)?;
            meta.commit_blob(&n, &d, size, upload.as_deref())
                .map_err(RegError::internal)
        })
        .await?;
        Metrics::add(&self.metrics.uploads_completed, 1);
        Ok(())
    }

    async fn start_upload(
        &self,
        name: &str,
        req: Request<Incoming>,
        id: &Identity,
    ) -> RegResult<Response<Body>> {
        self.refuse_in_proxy()?;
        let q = query_pairs(req.uri().query());
        let get = |k: &str| q.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        if let Some(alg) = get("digest-algorithm")
            && alg != "sha256"
        {
            return Err(RegError::new(
                Code::DigestInvalid,
                format!("unsupported digest algorithm {alg}"),
            ));
        }
        if let Some(m) = get("mount") {
            let d = parse_digest(&m)?;
            if let Some(from) = get("from")
                && names::valid_repo_name(&from)
                && self.auth.permitted(id, &from).contains(Actions::PULL)
                && self.store.size(&d).is_some()
            {
                let (meta, f, n) = (self.meta.clone(), from.clone(), name.to_string());
                let _guard = self.locks.lock(&d).await;
                let mounted = blocking(move || meta.mount(&f, &n, &d))
                    .await
                    .map_err(RegError::internal)?;
                if mounted.is_some() {
                    return Ok(Self::created_blob(name, &d));
                }
            }
            // not mountable (unknown, or not readable by this user): a normal upload
        }
        if let Some(ds) = get("digest") {
            // monolithic upload in the POST itself
            let d = parse_digest(&ds)?;
            let (path, file) = self.store.staging()?;
            let out = self.ingest(Ingest::new(file), req.into_body()).await;
            let r = match out.error {
                Some(e) => Err(e),
                None => verify(&out.ingest.digest(), &d),
            };
            if let Err(e) = r {
                drop(out.ingest);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            self.commit_upload(name, d, out.ingest, path, None).await?;
            return Ok(Self::created_blob(name, &d));
        }
        let uid = random_id();
        let path = self.store.upload_path(&uid);
        std::fs::File::create(&path)?;
        let row = UploadRow {
            v: 1,
            repo: name.to_string(),
            owner: id.name().map(String::from),
            started: now(),
        };
        let (meta, u) = (self.meta.clone(), uid.clone());
        if let Err(e) = blocking(move || meta.create_upload(&u, &row)).await {
            let _ = std::fs::remove_file(&path);
            return Err(RegError::internal(e));
        }
        Ok(finish(
            response(StatusCode::ACCEPTED)
                .header(LOCATION, Self::upload_location(name, &uid))
                .header(RANGE, "0-0")
                .header(DOCKER_UPLOAD_UUID, uid.as_str())
                .header(CONTENT_LENGTH, 0),
            body::empty(),
        ))
    }

    async fn ingest(&self, ing: Ingest, b: Incoming) -> crate::storage::IngestOutcome {
        Metrics::add(&self.metrics.uploads_in_progress, 1);
        let out = ingest_body(ing, b, self.cfg.max_blob_bytes).await;
        self.metrics.uploads_in_progress.fetch_sub(1, Relaxed);
        Metrics::add(&self.metrics.bytes_received, out.received);
        out
    }

    /// Finds upload `uid` of repository `name` started by `id`. Any mismatch
    /// is answered as an unknown upload, so sessions cannot be probed.
    fn session(
        &self,
        name: &str,
        uid: &str,
        id: &Identity,
    ) -> RegResult<Arc<tokio::sync::Mutex<Session>>> {
        let unknown = || {
            RegError::new(
                Code::BlobUploadUnknown,
                format!("upload {uid} not known to registry"),
            )
        };
        if !upload_id_valid(uid) {
            return Err(unknown());
        }
        let row = self
            .meta
            .upload(uid)
            .map_err(RegError::internal)?
            .ok_or_else(unknown)?;
        if row.repo != name {
            return Err(unknown());
        }
        if self.auth.mode() != AuthMode::None && row.owner.as_deref() != id.name() {
            tracing::warn!(upload = uid, owner = ?row.owner, user = ?id.name(), "upload touched by another user");
            return Err(unknown());
        }
        let mut s = self.sessions.lock().unwrap();
        Ok(s.entry(uid.to_string()).or_default().clone())
    }

    /// Loads a session's ingest (rehashing the file after a restart).
    async fn load_ingest(&self, uid: &str, sess: &mut Session) -> RegResult<()> {
        if sess.ingest.is_some() {
            return Ok(());
        }
        let path = self.store.upload_path(uid);
        match blocking(move || Ingest::resume(&path)).await {
            Ok(i) => {
                sess.ingest = Some(i);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // its bytes are gone (committed before a crash, or expired)
                let _ = self.forget_upload(uid).await;
                Err(RegError::new(
                    Code::BlobUploadUnknown,
                    format!("upload {uid} not known to registry"),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn forget_upload(&self, uid: &str) -> RegResult<()> {
        self.sessions.lock().unwrap().remove(uid);
        let (meta, u) = (self.meta.clone(), uid.to_string());
        blocking(move || meta.delete_upload(&u))
            .await
            .map_err(RegError::internal)?;
        match std::fs::remove_file(self.store.upload_path(uid)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn range_error(name: &str, uid: &str, written: u64, msg: String) -> RegError {
        RegError::new(Code::RangeNotSatisfiable, msg)
            .header(LOCATION, Self::upload_location(name, uid))
            .header(RANGE, upload_range(written))
            .header(DOCKER_UPLOAD_UUID, uid)
    }

    /// Checks a chunk's `Content-Range` against the session's offset.
    fn check_chunk(req: &Request<Incoming>, name: &str, uid: &str, written: u64) -> RegResult<()> {
        let Some(cr) = req.headers().get(CONTENT_RANGE) else {
            return Ok(());
        };
        let s = cr.to_str().unwrap_or("");
        let Some((start, end)) = parse_content_range(s) else {
            return Err(Self::range_error(
                name,
                uid,
                written,
                format!("invalid Content-Range {s:?}"),
            ));
        };
        if start != written {
            return Err(Self::range_error(
                name,
                uid,
                written,
                format!("chunk starts at {start}, but the upload has {written} bytes"),
            ));
        }
        if let Some(len) = content_length(req)
            && len != end - start + 1
        {
            return Err(Self::range_error(
                name,
                uid,
                written,
                format!("Content-Range {s} does not match Content-Length {len}"),
            ));
        }
        Ok(())
    }

    async fn upload_status(
        &self,
        name: &str,
        uid: &str,
        sess: Arc<tokio::sync::Mutex<Session>>,
    ) -> RegResult<Response<Body>> {
        let mut s = sess.lock().await;
        self.load_ingest(uid, &mut s).await?;
        let written = s.ingest.as_ref().map(|i| i.written).unwrap_or(0);
        Ok(finish(
            response(StatusCode::NO_CONTENT)
                .header(LOCATION, Self::upload_location(name, uid))
                .header(RANGE, upload_range(written))
                .header(DOCKER_UPLOAD_UUID, uid)
                .header(CONTENT_LENGTH, 0),
            body::empty(),
        ))
    }

    async fn patch_upload(
        &self,
        name: &str,
        uid: &str,
        sess: Arc<tokio::sync::Mutex<Session>>,
        req: Request<Incoming>,
    ) -> RegResult<Response<Body>> {
        let mut s = sess.lock().await;
        self.load_ingest(uid, &mut s).await?;
        let written = s.ingest.as_ref().map(|i| i.written).unwrap_or(0);
        Self::check_chunk(&req, name, uid, written)?;
        let ing = s.ingest.take().expect("loaded above");
        let out = self.ingest(ing, req.into_body()).await;
        let written = out.ingest.written;
        s.ingest = Some(out.ingest);
        if let Some(e) = out.error {
            return Err(e);
        }
        Ok(finish(
            response(StatusCode::ACCEPTED)
                .header(LOCATION, Self::upload_location(name, uid))
                .header(RANGE, upload_range(written))
                .header(DOCKER_UPLOAD_UUID, uid)
                .header(CONTENT_LENGTH, 0),
            body::empty(),
        ))
    }

    async fn finish_upload(
        &self,
        name: &str,
        uid: &str,
        sess: Arc<tokio::sync::Mutex<Session>>,
        req: Request<Incoming>,
    ) -> RegResult<Response<Body>> {
        let ds = query_pairs(req.uri().query())
            .into_iter()
            .find(|(k, _)| k == "digest")
            .map(|(_, v)| v)
            .ok_or_else(|| RegError::new(Code::DigestInvalid, "digest parameter missing"))?;
        let d = parse_digest(&ds)?;
        let mut s = sess.lock().await;
        self.load_ingest(uid, &mut s).await?;
        if has_body(&req) {
            let written = s.ingest.as_ref().map(|i| i.written).unwrap_or(0);
            Self::check_chunk(&req, name, uid, written)?;
            let ing = s.ingest.take().expect("loaded above");
            let out = self.ingest(ing, req.into_body()).await;
            s.ingest = Some(out.ingest);
            if let Some(e) = out.error {
                return Err(e);
            }
        }
        let ing = s.ingest.take().expect("loaded above");
        if let Err(e) = verify(&ing.digest(), &d) {
            drop(ing);
            drop(s);
            self.forget_upload(uid).await?;
            return Err(e);
        }
        let path = self.store.upload_path(uid);
        let r = self
            .commit_upload(name, d, ing, path, Some(uid.to_string()))
            .await;
        drop(s);
        self.sessions.lock().unwrap().remove(uid);
        r?;
        Ok(Self::created_blob(name, &d))
    }

    async fn cancel_upload(&self, uid: &str) -> RegResult<Response<Body>> {
        self.forget_upload(uid).await?;
        Ok(finish(
            response(StatusCode::NO_CONTENT).header(CONTENT_LENGTH, 0),
            body::empty(),
        ))
    }

    // ---- token endpoint -----------------------------------------------------

    async fn token(&self, req: Request<Incoming>, origin: &Origin) -> RegResult<Response<Body>> {
        let auth = &origin.auth;
        let basic = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Basic ")
                    .or_else(|| h.strip_prefix("basic "))
            })
            .map(|s| s.trim().to_string());
        let is_post = req.method() == Method::POST;
        let mut scopes = Vec::new();
        let mut service = None;
        let mut user = None;
        let mut form_password = None;
        let q = query_pairs(req.uri().query());
        let form = if is_post {
            let b = read_limited(req, MAX_FORM, "token request").await?;
            query_pairs(Some(std::str::from_utf8(&b).map_err(|_| {
                RegError::new(Code::BadRequest, "token request body is not UTF-8")
            })?))
        } else {
            Vec::new()
        };
        for (k, v) in q.into_iter().chain(form) {
            match k.as_str() {
                "scope" => scopes.push(v),
                "service" => service = Some(v),
                "username" => user = Some(v),
                "password" => form_password = Some(v),
                _ => {}
            }
        }
        if let Some(s) = &service
            && s != self.auth.service()
        {
            return Err(RegError::new(
                Code::BadRequest,
                format!("unknown service {s:?}"),
            ));
        }
        let who = if let Some(b) = basic {
            match self.auth.check_basic(&b).await {
                Some(u) => Some(u),
                None => {
                    return Err(self
                        .auth
                        .unauthorized_basic(auth, "invalid username or password"));
                }
            }
        } else if let (Some(u), Some(p)) = (user, form_password) {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            match self.auth.check_basic(&b).await {
                Some(u) => Some(u),
                None => {
                    return Err(self
                        .auth
                        .unauthorized_basic(auth, "invalid username or password"));
                }
            }
        } else {
            None
        };
        let t = self.auth.issue(who.as_deref(), &scopes);
        Ok(finish(
            response(StatusCode::OK)
                .header(CONTENT_TYPE, "application/json")
                .header(CACHE_CONTROL, "no-store"),
            body::json(&t),
        ))
    }
}
