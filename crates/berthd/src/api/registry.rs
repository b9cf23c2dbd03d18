//! Registry endpoints: pull (`POST /images/create?fromImage=`, routed from
//! images.rs), push (`POST /images/{name}/push`), `POST /auth`,
//! `GET /distribution/{name}/json`. Credentials come in `X-Registry-Auth`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_api::{JsonMessage, ProgressDetail};
use berth_images::distribution::{
    AuthConfig, ManifestKind, Platform, media, parse_manifest, registry_host, select_platform,
};
use berth_images::{Progress, ProgressFn, PullOptions, PushNote, PushOptions};
use berth_types::{Error, Reference};
use serde_json::json;

use super::{ApiError, ApiResult, AppState, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth", post(auth))
        .route("/distribution/{*name}", get(distribution))
}

/// The credentials of `X-Registry-Auth`, if any.
pub fn registry_auth(headers: &HeaderMap) -> ApiResult<Option<AuthConfig>> {
    match headers.get("X-Registry-Auth").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(v)) => Ok(AuthConfig::from_header(v)?),
        Some(Err(_)) => Err(ApiError(Error::invalid(
            "invalid X-Registry-Auth header: not ASCII",
        ))),
    }
}

pub(crate) fn message(p: &Progress) -> JsonMessage {
    let detail = match p.bytes {
        Some((c, t)) => ProgressDetail {
            current: Some(c as i64),
            total: Some(t as i64),
        },
        None => ProgressDetail::default(),
    };
    JsonMessage {
        status: Some(p.status.clone()),
        // dockerd sends an empty progressDetail with every per-id status
        progress_detail: p.id.as_ref().map(|_| detail),
        progress: p.bytes.map(|(c, t)| berth_api::progress_bar(c, t)),
        id: p.id.clone(),
        ..Default::default()
    }
}

fn json_line(m: &JsonMessage) -> bytes::Bytes {
    let mut v = serde_json::to_vec(m).expect("json");
    v.push(b'\n');
    bytes::Bytes::from(v)
}

/// Run an async operation that reports progress, as a JSON message stream.
/// An error before the first message is the response's status (as
/// dockerd, which has flushed nothing then); after it, an error message.
async fn progress_stream<F, Fut>(work: F) -> ApiResult<Response>
where
    F: FnOnce(ProgressFn, Arc<dyn Fn(JsonMessage) + Send + Sync>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<JsonMessage>();
    let tx2 = tx.clone();
    let progress: ProgressFn = Arc::new(move |p: Progress| {
        let _ = tx.send(message(&p));
    });
    let raw: Arc<dyn Fn(JsonMessage) + Send + Sync> = Arc::new(move |m| {
        let _ = tx2.send(m);
    });
    let fut = work(progress, raw);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
    tokio::spawn(async move {
        let _ = done_tx.send(fut.await);
    });
    // Wait for the first message or the end.
    let first = tokio::select! {
        m = rx.recv() => m,
        r = &mut done_rx => {
            let r = r.unwrap_or_else(|_| Err(Error::internal("operation ended unexpectedly")));
            match rx.try_recv() {
                Ok(m) => {
                    let mut msgs = vec![m];
                    while let Ok(m) = rx.try_recv() { msgs.push(m); }
                    if let Err(e) = r { msgs.push(JsonMessage::error(e.message)); }
                    let body: Vec<u8> = msgs.iter().flat_map(|m| json_line(m).to_vec()).collect();
                    return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
                }
                Err(_) => {
                    r?;
                    return Ok(([(header::CONTENT_TYPE, "application/json")], Vec::<u8>::new()).into_response());
                }
            }
        }
    };
    let Some(first) = first else {
        // Every sender is gone without a message: the operation ended.
        let r = done_rx
            .await
            .unwrap_or_else(|_| Err(Error::internal("operation ended unexpectedly")));
        r?;
        return Ok((
            [(header::CONTENT_TYPE, "application/json")],
            Vec::<u8>::new(),
        )
            .into_response());
    };
    let first = Some(first);
    let stream = futures_util::stream::unfold(
        (first, rx, Some(done_rx)),
        |(first, mut rx, done)| async move {
            if let Some(m) = first {
                return Some((Ok::<_, std::io::Error>(json_line(&m)), (None, rx, done)));
            }
            if let Some(m) = rx.recv().await {
                return Some((Ok(json_line(&m)), (None, rx, done)));
            }
            // Every sender is gone: the operation ended.
            let done = done?;
            match done.await {
                Ok(Err(e)) => Some((
                    Ok(json_line(&JsonMessage::error(e.message))),
                    (None, rx, None),
                )),
                _ => None,
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// dockerd's image event attributes: `name` is the familiar repository
/// name of the reference (`busybox` for `busybox:latest`).
fn attrs(reference: &str) -> BTreeMap<String, String> {
    let name = Reference::parse(reference)
        .map(|r| r.familiar_name())
        .unwrap_or_else(|_| reference.to_string());
    BTreeMap::from([("name".to_string(), name)])
}

/// `POST /images/create?fromImage=…&tag=…&platform=…`.
pub async fn pull(st: AppState, q: Query, headers: HeaderMap) -> ApiResult<Response> {
    let from = q.get("fromImage").unwrap_or("").to_string();
    let tag = q.get("tag").unwrap_or("").to_string();
    let platform = q
        .get("platform")
        .map(str::to_string)
        .filter(|p| !p.is_empty());
    if let Some(p) = &platform {
        Platform::parse(p)?;
    }
    let auth = registry_auth(&headers)?;
    let mut rf = Reference::parse(&from)?;
    if !tag.is_empty() {
        if let Ok(d) = tag.parse() {
            rf.digest = Some(d);
            rf.tag = None;
        } else {
            rf = Reference::parse(&format!("{}:{tag}", rf.name))?;
        }
    }
    let opts = PullOptions { platform, auth };
    let images = st.images.clone();
    let registry = st.registry.clone();
    let events = st.events.clone();
    progress_stream(move |progress, raw| async move {
        let refs = if rf.tag.is_none() && rf.digest.is_none() {
            // No tag: every tag of the repository, as the API says.
            let mut tags = images
                .remote_tags(&registry, &rf.name, opts.auth.clone())
                .await?;
            tags.sort();
            tags.into_iter()
                .map(|t| Reference::parse(&format!("{}:{t}", rf.name)))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![rf.clone()]
        };
        let all = refs.len() > 1 || rf.tag.is_none() && rf.digest.is_none();
        let mut any_new = false;
        for r in &refs {
            let res = images
                .clone()
                .pull(&registry, r, &opts, progress.clone())
                .await?;
            any_new |= res.updated;
            events.publish("image", "pull", &res.reference, attrs(&res.reference));
            if !all {
                raw(JsonMessage::status(if res.updated {
                    format!("Status: Downloaded newer image for {}", res.reference)
                } else {
                    format!("Status: Image is up to date for {}", res.reference)
                }));
            }
        }
        if all {
            let name = rf.familiar_name();
            raw(JsonMessage::status(if any_new {
                format!("Status: Downloaded newer image for {name}")
            } else {
                format!("Status: Image is up to date for {name}")
            }));
        }
        Ok(())
    })
    .await
}

/// `POST /images/{name}/push?tag=…&platform=…`.
pub async fn push(st: AppState, name: String, q: Query, headers: HeaderMap) -> ApiResult<Response> {
    let auth = registry_auth(&headers)?;
    let tag = q.get("tag").map(str::to_string).filter(|t| !t.is_empty());
    Reference::parse(&name)?;
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Some(push_platform(p)?),
        None => None,
    };
    let images = st.images.clone();
    let registry = st.registry.clone();
    let events = st.events.clone();
    progress_stream(move |progress, raw| async move {
        let aux = raw.clone();
        let notes: Arc<dyn Fn(PushNote) + Send + Sync> = Arc::new(move |n| {
            aux(JsonMessage {
                aux: Some(push_note(&n)),
                ..Default::default()
            })
        });
        let opts = PushOptions {
            auth,
            tag,
            platform,
            notes: Some(notes),
        };
        let results = images
            .push(&registry, &name, &opts, progress.clone())
            .await?;
        for r in results {
            raw(JsonMessage {
                progress_detail: Some(ProgressDetail::default()),
                aux: Some(json!({"Tag": r.tag, "Digest": r.digest.to_string(), "Size": r.size})),
                ..Default::default()
            });
            let full = Reference::parse(&name)
                .map(|n| format!("{}:{}", n.familiar_name(), r.tag))
                .unwrap_or_else(|_| name.clone());
            events.publish("image", "push", &full, attrs(&full));
        }
        Ok(())
    })
    .await
}

/// The `platform` of a push (API 1.46): a JSON-encoded OCI platform, as
/// the docker CLI sends it (`os/arch[/variant]` is taken too).
fn push_platform(p: &str) -> ApiResult<Platform> {
    let text = if p.trim_start().starts_with('{') {
        let v: Platform = serde_json::from_str(p)
            .map_err(|e| Error::invalid(format!("invalid platform: {e}")))?;
        let mut s = v.os.clone();
        if !v.architecture.is_empty() {
            s.push('/');
            s.push_str(&v.architecture);
        }
        if let Some(var) = v
            .variant
            .filter(|x| !x.is_empty() && !v.architecture.is_empty())
        {
            s.push('/');
            s.push_str(&var);
        }
        s
    } else {
        p.to_string()
    };
    Ok(Platform::parse(&text)?)
}

/// Docker's `auxprogress` JSON for a push note.
fn push_note(n: &PushNote) -> serde_json::Value {
    match n {
        PushNote::ManifestPushedInsteadOfIndex { original, selected } => json!({
            "manifestPushedInsteadOfIndex": true,
            "originalIndex": original,
            "selectedManifest": selected,
        }),
        PushNote::ContentMissing { desc } => json!({
            "contentMissing": true,
            "desc": desc,
        }),
    }
}

/// `POST /auth`: check credentials against the registry.
async fn auth(State(st): State<AppState>, body: axum::body::Bytes) -> ApiResult<Response> {
    let a: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("invalid auth configuration: {e}")))?;
    let a = a.normalized()?;
    let host = registry_host(&a.serveraddress);
    let token = st.registry.login(&host, &a).await?;
    Ok(axum::Json(json!({
        "Status": "Login Succeeded",
        "IdentityToken": token.unwrap_or_default(),
    }))
    .into_response())
}

/// `GET /distribution/{name}/json`: what a reference resolves to on its
/// registry, and the platforms it has.
async fn distribution(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let name = rest
        .strip_suffix("/json")
        .ok_or_else(|| ApiError(Error::not_found("page not found")))?;
    let rf = Reference::parse(name)?.with_default_tag();
    let auth = registry_auth(&headers)?;
    let repo = st.registry.repository(&rf.name, auth, false)?;
    let target = match (&rf.digest, &rf.tag) {
        (Some(d), _) => d.to_string(),
        (_, Some(t)) => t.clone(),
        _ => "latest".into(),
    };
    let m = repo.get_manifest(&target).await?;
    let platforms = match parse_manifest(&m.media_type, &m.bytes)? {
        ManifestKind::Index(list) => list
            .iter()
            .filter_map(|d| d.platform.clone())
            .filter(|p| p.os != "unknown")
            .collect::<Vec<_>>(),
        ManifestKind::Image(man) => {
            let cfg = repo
                .get_blob_bytes(&man.config.digest, berth_images::MAX_JSON)
                .await?;
            let p: Platform = serde_json::from_slice(&cfg).unwrap_or_default();
            vec![p]
        }
    };
    let _ = select_platform;
    let mt = if m.media_type.is_empty() {
        media::OCI_MANIFEST.to_string()
    } else {
        m.media_type.clone()
    };
    Ok(axum::Json(json!({
        "Descriptor": {"mediaType": mt, "digest": m.digest.to_string(), "size": m.bytes.len()},
        "Platforms": platforms,
    }))
    .into_response())
}
