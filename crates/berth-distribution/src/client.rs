//! The HTTP side: one [`Client`] per daemon (connection pools, TLS set-ups
//! and cached tokens, shared by every pull and push), one [`Repository`]
//! per operation (a repository on a registry, with the caller's
//! credentials and the endpoint that answered).
//!
//! Every request goes to the repository's current endpoint; a request
//! answered `401` with a challenge is authorised (a bearer token from the
//! realm, or basic auth) and sent once more, and the authorisation is
//! cached per host, scope and user until it expires. Idempotent requests
//! are retried with exponential backoff on connection errors, `429` and
//! `5xx`; blob downloads resume where they stopped with `Range`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_types::{Digest, Error, ErrorKind, Reference, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use sha2::{Digest as _, Sha256};

use crate::auth::{AuthConfig, Challenge, TokenResponse, parse_challenges};
use crate::config::{Endpoint, RegistryConfig};
use crate::manifest::media;
use crate::tls;

const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));

/// How often and how patiently idempotent requests are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubles each time, capped at 10 s.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        (self.backoff * 2u32.saturating_pow(attempt.saturating_sub(1))).min(Duration::from_secs(10))
    }
}

/// Docker's token spec: a token without `expires_in` lives 60 s, and no
/// token is issued for less.
const TOKEN_MIN_LIFETIME: Duration = Duration::from_secs(60);
/// How long basic credentials are reused before asking again.
const BASIC_LIFETIME: Duration = Duration::from_secs(3600);

/// The lifetime of a token from its `expires_in` (at least 60 s).
fn token_lifetime(expires_in: Option<u64>) -> Duration {
    Duration::from_secs(expires_in.unwrap_or(60)).max(TOKEN_MIN_LIFETIME)
}

/// When an authorisation obtained at `now` should be replaced: with a
/// sixth of its lifetime left, so it never reaches the registry expired.
fn refresh_at(now: Instant, lifetime: Duration) -> Instant {
    now + lifetime - lifetime / 6
}

struct CachedAuth {
    header: String,
    expires: Instant,
}

/// The registry client of a daemon.
pub struct Client {
    cfg: RegistryConfig,
    http: Mutex<HashMap<String, reqwest::Client>>,
    auth: Mutex<HashMap<String, CachedAuth>>,
    pub retry: RetryPolicy,
}

/// A manifest as fetched: the bytes, their digest and media type.
#[derive(Clone, Debug)]
pub struct ManifestResponse {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

/// What the registry did with a mount request.
#[derive(Debug)]
pub enum UploadOutcome {
    Mounted,
    /// Not mounted; an upload was started at this location instead.
    Started(String),
}

/// The bytes of a blob to push.
pub enum PushSource {
    /// Small and known: one `PUT` (a monolithic upload).
    Bytes(Bytes),
    /// Streamed as produced; the digest is computed on the way. Sent as one
    /// `PATCH`, or in `chunk` sized `PATCH`es with `Content-Range` when the
    /// client is configured with a chunk size.
    Stream(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

fn transport(e: reqwest::Error, what: &str) -> Error {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::new(ErrorKind::Unavailable, format!("{what}: {msg}"))
}

/// A registry's JSON error body as Docker prints it: `code: message`.
async fn registry_error(resp: Response, what: &str) -> Error {
    let status = resp.status();
    let url = resp.url().to_string();
    let body = resp.bytes().await.unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let errs = v.get("errors")?.as_array()?.clone();
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    let code = e
                        .get("code")
                        .and_then(|c| c.as_str())
                        .unwrap_or("")
                        .to_ascii_lowercase()
                        .replace('_', " ");
                    let m = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    if m.is_empty() {
                        code
                    } else {
                        format!("{code}: {m}")
                    }
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        })
        .or_else(|| {
            // token servers (Docker Hub's) answer {"details": "..."}
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            v.get("details")?.as_str().map(String::from)
        });
    let kind = match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
        StatusCode::BAD_REQUEST => ErrorKind::InvalidArgument,
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    let text = detail.unwrap_or_else(|| {
        let t = String::from_utf8_lossy(&body).trim().to_string();
        if t.is_empty() || t.len() > 200 {
            format!(
                "unexpected status from {what} request to {url}: {}",
                status_text(status)
            )
        } else {
            format!(
                "unexpected status from {what} request to {url}: {} ({t})",
                status_text(status)
            )
        }
    });
    Error::new(kind, text)
}

/// A TLS handshake that failed on the protocol level (a plain HTTP server,
/// a bad certificate): retrying cannot help, the next endpoint might.
fn tls_failure(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            return true;
        }
        src = s.source();
    }
    false
}

fn status_text(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

/// Join a `Location` header to the endpoint it came from.
fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let origin = match base.find("://") {
        Some(i) => match base[i + 3..].find('/') {
            Some(j) => &base[..i + 3 + j],
            None => base,
        },
        None => base,
    };
    if loc.starts_with('/') {
        format!("{origin}{loc}")
    } else {
        format!("{}/{loc}", base.trim_end_matches('/'))
    }
}

fn with_query(url: &str, kv: &str) -> String {
    if url.contains('?') {
        format!("{url}&{kv}")
    } else {
        format!("{url}?{kv}")
    }
}

fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

impl Client {
    pub fn new(cfg: RegistryConfig) -> Client {
        tls::install_crypto_provider();
        Client {
            cfg,
            http: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
            retry: RetryPolicy::default(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// The HTTP client for an endpoint: its own TLS set-up (certs.d CAs and
    /// client certificate, or no verification when insecure).
    fn http_for(&self, ep: &Endpoint) -> Result<reqwest::Client> {
        let key = format!("{}|{}", ep.url, ep.skip_verify);
        if let Some(c) = self.http.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .no_proxy()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .http2_adaptive_window(true)
            .redirect(reqwest::redirect::Policy::limited(10));
        if !ep.plain_http() {
            let mut certs = tls::read_host_certs(&self.cfg.certs_dir.join(&ep.host))?;
            for ca in &ep.ca {
                use rustls_pki_types::pem::PemObject;
                for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)
                    .map_err(|e| Error::invalid(format!("{}: {e}", ca.display())))?
                {
                    certs
                        .cas
                        .push(c.map_err(|e| Error::invalid(format!("{}: {e}", ca.display())))?);
                }
            }
            b = b.tls_backend_preconfigured(tls::client_config(certs, ep.skip_verify)?);
        }
        let c = b
            .build()
            .map_err(|e| Error::internal(format!("http client: {e}")))?;
        self.http.lock().unwrap().insert(key, c.clone());
        Ok(c)
    }

    /// A repository (`docker.io/library/busybox`) for pulling or pushing.
    pub fn repository(
        self: &Arc<Self>,
        name: &str,
        auth: Option<AuthConfig>,
        push: bool,
    ) -> Result<Repository> {
        let rf = Reference::parse(name)?;
        let eps: Vec<Endpoint> = self
            .cfg
            .endpoints(rf.domain())?
            .into_iter()
            .filter(|e| if push { e.push } else { e.pull })
            .collect();
        if eps.is_empty() {
            return Err(Error::invalid(format!(
                "no endpoint of {} can {}",
                rf.domain(),
                if push { "push" } else { "pull" }
            )));
        }
        Ok(Repository {
            inner: Arc::new(RepoInner {
                client: self.clone(),
                path: rf.path().to_string(),
                domain: rf.domain().to_string(),
                endpoints: eps,
                active: AtomicUsize::new(0),
                auth: auth.unwrap_or_default(),
            }),
        })
    }

    /// `docker login`: check credentials against a registry's `/v2/`.
    /// Returns an identity token when the token server hands one out.
    pub async fn login(
        self: &Arc<Self>,
        domain: &str,
        auth: &AuthConfig,
    ) -> Result<Option<String>> {
        let eps: Vec<Endpoint> = self
            .cfg
            .endpoints(domain)?
            .into_iter()
            .filter(|e| !e.mirror)
            .collect();
        let mut last = Error::invalid(format!("no endpoint for {domain}"));
        for ep in eps {
            match self.login_endpoint(&ep, auth).await {
                Ok(t) => return Ok(t),
                Err(e) if e.kind == ErrorKind::Unavailable => last = e,
                // dockerd answers a refused login with 401, not 403.
                Err(e) if e.kind == ErrorKind::PermissionDenied => {
                    return Err(Error::new(ErrorKind::Unauthorized, e.message));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn login_endpoint(&self, ep: &Endpoint, auth: &AuthConfig) -> Result<Option<String>> {
        let http = self.http_for(ep)?;
        let url = format!("{}/v2/", ep.url);
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| transport(e, &format!("Get \"{url}\"")))?;
        if resp.status().is_success() {
            return Ok(None);
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "login attempt to {url} failed with status: {}",
                    status_text(resp.status())
                ),
            ));
        }
        let challenges = challenges_of(&resp);
        let (header, refresh, _) = self
            .authorize(&http, &challenges, &[], auth, &url, true)
            .await?;
        let resp = http
            .get(&url)
            .header(header::AUTHORIZATION, header)
            .send()
            .await
            .map_err(|e| transport(e, &format!("Get \"{url}\"")))?;
        if resp.status().is_success() {
            return Ok(refresh);
        }
        Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "login attempt to {url} failed with status: {}",
                status_text(resp.status())
            ),
        ))
    }

    /// Answer challenges: a bearer token for `scopes` from the realm, or
    /// basic auth. Returns the `Authorization` value and, on a login that
    /// asked for one, the refresh token (Docker's identity token).
    async fn authorize(
        &self,
        http: &reqwest::Client,
        challenges: &[Challenge],
        scopes: &[String],
        auth: &AuthConfig,
        url: &str,
        login: bool,
    ) -> Result<(String, Option<String>, Duration)> {
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            if !auth.registrytoken.is_empty() {
                return Ok((
                    format!("Bearer {}", auth.registrytoken),
                    None,
                    TOKEN_MIN_LIFETIME,
                ));
            }
            let realm = c.param("realm").ok_or_else(|| {
                Error::new(
                    ErrorKind::PermissionDenied,
                    format!("{url}: bearer challenge without realm"),
                )
            })?;
            let service = c.param("service").unwrap_or("");
            let (tok, refresh, lifetime) = self
                .fetch_token(http, realm, service, scopes, auth, login)
                .await?;
            return Ok((format!("Bearer {tok}"), refresh, lifetime));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match auth.basic() {
                // Basic credentials do not expire; a 401 drops them.
                Some(b) => Ok((b, None, BASIC_LIFETIME)),
                None => Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("Head \"{url}\": no basic auth credentials"),
                )),
            };
        }
        Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("{url}: unauthorized and no supported authentication challenge"),
        ))
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: &str,
        scopes: &[String],
        auth: &AuthConfig,
        login: bool,
    ) -> Result<(String, Option<String>, Duration)> {
        let resp = if !auth.identitytoken.is_empty() {
            // OAuth refresh-token grant, as Docker does with identity tokens
            let mut form = vec![
                ("grant_type".to_string(), "refresh_token".to_string()),
                ("refresh_token".to_string(), auth.identitytoken.clone()),
                ("service".to_string(), service.to_string()),
                ("client_id".to_string(), "berth".to_string()),
            ];
            if !scopes.is_empty() {
                form.push(("scope".to_string(), scopes.join(" ")));
            }
            let body: String = form
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect::<Vec<_>>()
                .join("&");
            http.post(realm)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
        } else {
            let mut url = with_query(realm, &format!("service={}", enc(service)));
            for s in scopes {
                url = with_query(&url, &format!("scope={}", enc(s)));
            }
            if login && !auth.username.is_empty() {
                url = with_query(&url, &format!("account={}", enc(&auth.username)));
                url = with_query(&url, "offline_token=true");
            }
            let mut rb = http.get(&url);
            if let Some(b) = auth.basic() {
                rb = rb.header(header::AUTHORIZATION, b);
            }
            rb.send().await
        }
        .map_err(|e| transport(e, &format!("Get \"{realm}\"")))?;
        if !resp.status().is_success() {
            let st = resp.status();
            let e = registry_error(resp, "token").await;
            return Err(
                if st == StatusCode::UNAUTHORIZED || st == StatusCode::FORBIDDEN {
                    Error::new(
                        ErrorKind::PermissionDenied,
                        format!(
                            "{}: {}",
                            "unauthorized",
                            e.message.trim_start_matches("unauthorized: ")
                        ),
                    )
                } else {
                    e
                },
            );
        }
        let body = resp.bytes().await.map_err(|e| transport(e, "read token"))?;
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorKind::PermissionDenied,
                format!("invalid token response from {realm}: {e}"),
            )
        })?;
        let tok = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if tok.is_empty() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("token server {realm} returned no token"),
            ));
        }
        Ok((tok, t.refresh_token, token_lifetime(t.expires_in)))
    }

    fn cached_auth(&self, key: &str) -> Option<String> {
        let mut m = self.auth.lock().unwrap();
        match m.get(key) {
            Some(c) if c.expires > Instant::now() => Some(c.header.clone()),
            Some(_) => {
                m.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keep an authorisation for `lifetime` less a sixth of it, so a token
    /// is replaced before the registry starts refusing it.
    fn cache_auth(&self, key: String, header: String, lifetime: Duration) {
        self.auth.lock().unwrap().insert(
            key,
            CachedAuth {
                header,
                expires: refresh_at(Instant::now(), lifetime),
            },
        );
    }

    /// Forget cached authorisations for a host (after a 401 despite one).
    fn drop_auth(&self, key: &str) {
        self.auth.lock().unwrap().remove(key);
    }
}

fn challenges_of(resp: &Response) -> Vec<Challenge> {
    resp.headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

struct RepoInner {
    client: Arc<Client>,
    domain: String,
    path: String,
    endpoints: Vec<Endpoint>,
    active: AtomicUsize,
    auth: AuthConfig,
}

/// A repository on a registry, for one operation.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<RepoInner>,
}

/// What a request body is: rebuilt for every attempt, so only small bodies.
#[derive(Clone)]
enum ReqBody {
    None,
    Bytes(Bytes, &'static str),
}

impl Repository {
    pub fn client(&self) -> &Arc<Client> {
        &self.inner.client
    }

    /// `library/busybox`.
    pub fn path(&self) -> &str {
        &self.inner.path
    }
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoints[self.inner.active.load(Ordering::Relaxed)]
    }

    fn scope(&self, push: bool) -> String {
        format!(
            "repository:{}:{}",
            self.inner.path,
            if push { "pull,push" } else { "pull" }
        )
    }

    fn auth_key(&self, ep: &Endpoint, scopes: &[String]) -> String {
        format!(
            "{}|{}|{}",
            ep.host,
            scopes.join(" "),
            self.inner.auth.username
        )
    }

    /// Send one request to the active endpoint, authorising on a 401 and
    /// (when `idempotent`) retrying transient failures with backoff.
    async fn send(
        &self,
        method: Method,
        url_or_path: &str,
        headers: &[(&str, String)],
        body: ReqBody,
        scopes: &[String],
        idempotent: bool,
    ) -> Result<Response> {
        let ep = self.endpoint().clone();
        let client = &self.inner.client;
        let http = client.http_for(&ep)?;
        let url = if url_or_path.starts_with("http") {
            url_or_path.to_string()
        } else {
            format!("{}{url_or_path}", ep.url)
        };
        let key = self.auth_key(&ep, scopes);
        let what = format!(
            "{} \"{url}\"",
            match method.as_str() {
                "GET" => "Get",
                "HEAD" => "Head",
                "PUT" => "Put",
                "POST" => "Post",
                "PATCH" => "Patch",
                m => m,
            }
        );
        // A connection that cannot be made falls through to the next
        // endpoint at once (an insecure registry's HTTPS attempt before
        // HTTP, a mirror that is down) instead of being retried here.
        let can_fall = self.inner.active.load(Ordering::Relaxed) + 1 < self.inner.endpoints.len();
        let mut authorized_once = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rb: RequestBuilder = http.request(method.clone(), &url);
            for (k, v) in headers {
                rb = rb.header(*k, v);
            }
            if let Some(h) = client.cached_auth(&key) {
                rb = rb.header(header::AUTHORIZATION, h);
            }
            rb = match &body {
                ReqBody::None => rb,
                ReqBody::Bytes(b, ct) => rb.header(header::CONTENT_TYPE, *ct).body(b.clone()),
            };
            let res = rb.send().await;
            let max = if idempotent { client.retry.attempts } else { 1 };
            match res {
                Err(e)
                    if attempt < max
                        && !tls_failure(&e)
                        && !(can_fall && e.is_connect())
                        && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    tracing::debug!(error = %e, attempt, "{what}: retrying");
                    tokio::time::sleep(client.retry.delay(attempt)).await;
                }
                Err(e) => return Err(transport(e, &what)),
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !authorized_once => {
                    authorized_once = true;
                    attempt -= 1;
                    client.drop_auth(&key);
                    let ch = challenges_of(&r);
                    let (h, _, lifetime) = client
                        .authorize(&http, &ch, scopes, &self.inner.auth, &url, false)
                        .await?;
                    client.cache_auth(key.clone(), h, lifetime);
                }
                Ok(r) if retryable_status(r.status()) && attempt < max => {
                    tracing::debug!(status = %r.status(), attempt, "{what}: retrying");
                    tokio::time::sleep(client.retry.delay(attempt)).await;
                }
                Ok(r) => return Ok(r),
            }
        }
    }

    /// Try `f` on each endpoint from the active one on, keeping the first
    /// that works. A mirror's failure falls through to the next endpoint;
    /// the origin's only on transport errors (an insecure registry's
    /// HTTPS attempt falling back to HTTP).
    async fn with_fallback<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Repository) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = self.inner.active.load(Ordering::Relaxed);
        let mut last = None;
        for i in start..self.inner.endpoints.len() {
            self.inner.active.store(i, Ordering::Relaxed);
            let ep = &self.inner.endpoints[i];
            match f(self.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let more = i + 1 < self.inner.endpoints.len();
                    let fall = more && (ep.mirror || e.kind == ErrorKind::Unavailable);
                    tracing::debug!(endpoint = %ep.url, error = %e, fall, "registry endpoint failed");
                    if !fall {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::internal("no registry endpoint")))
    }

    /// Find the first endpoint that answers HTTP at all (`GET /v2/`, any
    /// status): an insecure registry's HTTPS attempt falls back to HTTP
    /// here, once, before a push starts.
    pub async fn ping(&self) -> Result<()> {
        self.with_fallback(|repo| async move {
            let ep = repo.endpoint().clone();
            let http = repo.inner.client.http_for(&ep)?;
            let url = format!("{}/v2/", ep.url);
            http.get(&url)
                .send()
                .await
                .map_err(|e| transport(e, &format!("Get \"{url}\"")))?;
            Ok(())
        })
        .await
    }

    /// Fetch a manifest or index by tag or digest, refusing documents
    /// over [`crate::MAX_MANIFEST`] and verifying a digest reference.
    pub async fn get_manifest(&self, reference: &str) -> Result<ManifestResponse> {
        let reference = reference.to_string();
        self.with_fallback(move |repo| {
            let reference = reference.clone();
            async move { repo.get_manifest_here(&reference).await }
        })
        .await
    }

    async fn get_manifest_here(&self, reference: &str) -> Result<ManifestResponse> {
        let path = format!("/v2/{}/manifests/{reference}", self.inner.path);
        let mut resp = self
            .send(
                Method::GET,
                &path,
                &[("Accept", media::ACCEPT.to_string())],
                ReqBody::None,
                &[self.scope(false)],
                true,
            )
            .await?;
        if !resp.status().is_success() {
            let st = resp.status();
            let e = registry_error(resp, "manifest").await;
            let name = format!("{}/{}", self.inner.domain, self.inner.path);
            let shown = berth_types::Reference::parse(&name)
                .map(|r| r.familiar_name())
                .unwrap_or(name);
            let sep = if reference.contains(':') { "@" } else { ":" };
            return Err(match st {
                StatusCode::NOT_FOUND => Error::not_found(format!(
                    "manifest for {shown}{sep}{reference} not found: {}",
                    e.message
                )),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "pull access denied for {shown}, repository does not exist or may require 'docker login': {}",
                        e.message
                    ),
                ),
                _ => e,
            });
        }
        if let Some(n) = resp.content_length()
            && n > crate::MAX_MANIFEST
        {
            return Err(Error::invalid(format!(
                "manifest {reference} is {n} bytes, over the limit of {} bytes",
                crate::MAX_MANIFEST
            )));
        }
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let header_digest = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut buf = Vec::new();
        while let Some(c) = resp
            .chunk()
            .await
            .map_err(|e| transport(e, "read manifest"))?
        {
            buf.extend_from_slice(&c);
            if buf.len() as u64 > crate::MAX_MANIFEST {
                return Err(Error::invalid(format!(
                    "manifest {reference} is over the limit of {} bytes",
                    crate::MAX_MANIFEST
                )));
            }
        }
        let digest = Digest::of(&buf);
        if let Ok(want) = reference.parse::<Digest>()
            && want != digest
        {
            return Err(Error::invalid(format!(
                "manifest verification failed for digest {want}: content has digest {digest}"
            )));
        }
        if let Some(h) = header_digest
            && let Ok(d) = h.parse::<Digest>()
            && d != digest
        {
            return Err(Error::invalid(format!(
                "manifest verification failed: registry says {d}, content has digest {digest}"
            )));
        }
        Ok(ManifestResponse {
            bytes: Bytes::from(buf),
            digest,
            media_type,
        })
    }

    /// Fetch a small blob (an image config) whole, verifying its digest.
    pub async fn get_blob_bytes(&self, digest: &Digest, limit: u64) -> Result<Bytes> {
        let mut s = self.blob(digest, None);
        let mut buf = Vec::new();
        while let Some(c) = s.chunk().await? {
            buf.extend_from_slice(&c);
            if buf.len() as u64 > limit {
                return Err(Error::invalid(format!(
                    "blob {digest} is over the limit of {limit} bytes"
                )));
            }
        }
        let got = Digest::of(&buf);
        if got != *digest {
            return Err(Error::invalid(format!(
                "digest mismatch for blob {digest}: content has digest {got}"
            )));
        }
        Ok(Bytes::from(buf))
    }

    /// A blob download that retries and resumes by itself. `size`, when
    /// known (from the manifest), bounds the download and detects
    /// truncation.
    pub fn blob(&self, digest: &Digest, size: Option<u64>) -> BlobStream {
        BlobStream {
            repo: self.clone(),
            digest: *digest,
            size,
            offset: 0,
            skip: 0,
            resp: None,
            failures: 0,
        }
    }

    /// `HEAD` a blob: its size when the registry has it.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = format!("/v2/{}/blobs/{digest}", self.inner.path);
        let r = self
            .send(
                Method::HEAD,
                &path,
                &[],
                ReqBody::None,
                &[self.scope(true)],
                true,
            )
            .await?;
        match r.status() {
            s if s.is_success() => Ok(Some(r.content_length().unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(registry_error(r, "blob").await),
        }
    }

    /// Ask the registry to mount `digest` from another repository of the
    /// same registry; otherwise an upload is started.
    pub async fn mount_blob(&self, digest: &Digest, from: &str) -> Result<UploadOutcome> {
        let path = format!(
            "/v2/{}/blobs/uploads/?mount={}&from={}",
            self.inner.path,
            enc(&digest.to_string()),
            enc(from)
        );
        let scopes = [self.scope(true), format!("repository:{from}:pull")];
        let r = self
            .send(Method::POST, &path, &[], ReqBody::None, &scopes, false)
            .await?;
        match r.status() {
            StatusCode::CREATED => Ok(UploadOutcome::Mounted),
            StatusCode::ACCEPTED => Ok(UploadOutcome::Started(self.location(&r)?)),
            _ => Err(registry_error(r, "blob mount").await),
        }
    }

    fn location(&self, r: &Response) -> Result<String> {
        let loc = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::internal("registry answered an upload without a Location"))?;
        Ok(absolute(r.url().as_str(), loc))
    }

    /// Start an upload session; returns its location.
    pub async fn start_upload(&self) -> Result<String> {
        let path = format!("/v2/{}/blobs/uploads/", self.inner.path);
        let r = self
            .send(
                Method::POST,
                &path,
                &[],
                ReqBody::None,
                &[self.scope(true)],
                false,
            )
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(registry_error(r, "blob upload").await);
        }
        self.location(&r)
    }

    /// Upload a blob to a started session and complete it. `progress` is
    /// called with the bytes sent so far. Returns the digest and size.
    pub async fn upload(
        &self,
        location: String,
        source: PushSource,
        expected: Option<Digest>,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<(Digest, u64)> {
        let scopes = [self.scope(true)];
        match source {
            PushSource::Bytes(b) => {
                let d = Digest::of(&b);
                if let Some(e) = expected
                    && e != d
                {
                    return Err(Error::invalid(format!(
                        "digest mismatch for blob {e}: content has digest {d}"
                    )));
                }
                let n = b.len() as u64;
                let url = with_query(&location, &format!("digest={}", enc(&d.to_string())));
                let r = self
                    .send(
                        Method::PUT,
                        &url,
                        &[],
                        ReqBody::Bytes(b, "application/octet-stream"),
                        &scopes,
                        false,
                    )
                    .await?;
                if r.status() != StatusCode::CREATED {
                    return Err(registry_error(r, "blob upload").await);
                }
                progress(n);
                Ok((d, n))
            }
            PushSource::Stream(rx) => {
                let (loc, d, n) = self.patch_stream(location, rx, progress).await?;
                if let Some(e) = expected
                    && e != d
                {
                    return Err(Error::invalid(format!(
                        "digest mismatch for blob {e}: content has digest {d}"
                    )));
                }
                let url = with_query(&loc, &format!("digest={}", enc(&d.to_string())));
                let r = self
                    .send(Method::PUT, &url, &[], ReqBody::None, &scopes, false)
                    .await?;
                if r.status() != StatusCode::CREATED {
                    return Err(registry_error(r, "blob upload").await);
                }
                Ok((d, n))
            }
        }
    }

    /// Send a stream as one `PATCH`, or as chunks with `Content-Range`.
    async fn patch_stream(
        &self,
        mut location: String,
        mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<(String, Digest, u64)> {
        let ep = self.endpoint().clone();
        let client = &self.inner.client;
        let http = client.http_for(&ep)?;
        let key = self.auth_key(&ep, &[self.scope(true)]);
        let chunk = client.cfg.upload_chunk_size;
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed: Arc<Mutex<Option<std::io::Error>>> = Arc::new(Mutex::new(None));
        let mut done = false;
        let mut carry: Option<Bytes> = None;
        while !done {
            // One PATCH: everything (chunk == 0) or up to `chunk` bytes.
            let start = sent.load(Ordering::Relaxed);
            let body_bytes: Option<Vec<Bytes>> = if chunk > 0 {
                let mut parts = Vec::new();
                let mut n = 0u64;
                while n < chunk {
                    let next = match carry.take() {
                        Some(c) => Some(Ok(c)),
                        None => rx.recv().await,
                    };
                    match next {
                        Some(Ok(mut b)) => {
                            let room = (chunk - n) as usize;
                            if b.len() > room {
                                carry = Some(b.split_off(room));
                            }
                            n += b.len() as u64;
                            parts.push(b);
                        }
                        Some(Err(e)) => return Err(Error::from(e).context("read blob to push")),
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
                if n == 0 {
                    break;
                }
                Some(parts)
            } else {
                done = true;
                None
            };
            let mut rb = http
                .patch(&location)
                .header(header::CONTENT_TYPE, "application/octet-stream");
            if let Some(h) = client.cached_auth(&key) {
                rb = rb.header(header::AUTHORIZATION, h);
            }
            let (h2, s2, p2, f2) = (
                hasher.clone(),
                sent.clone(),
                progress.clone(),
                failed.clone(),
            );
            let count = move |b: &Bytes| {
                h2.lock().unwrap().update(b);
                let n = s2.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
                p2(n);
            };
            rb = match body_bytes {
                Some(parts) => {
                    let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
                    for p in &parts {
                        count(p);
                    }
                    let mut all = Vec::with_capacity(len as usize);
                    for p in parts {
                        all.extend_from_slice(&p);
                    }
                    rb.header("Content-Range", format!("{start}-{}", start + len - 1))
                        .header(header::CONTENT_LENGTH, len)
                        .body(all)
                }
                None => {
                    let rx_stream = futures_util::stream::unfold(
                        std::mem::replace(&mut rx, tokio::sync::mpsc::channel(1).1),
                        |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
                    );
                    let s = rx_stream.map(move |r| match r {
                        Ok(b) => {
                            count(&b);
                            Ok(b)
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            *f2.lock().unwrap() = Some(e);
                            Err(std::io::Error::other(msg))
                        }
                    });
                    rb.body(reqwest::Body::wrap_stream(s))
                }
            };
            let r = rb.send().await;
            if let Some(e) = failed.lock().unwrap().take() {
                return Err(Error::from(e).context("read blob to push"));
            }
            let r = r.map_err(|e| transport(e, &format!("Patch \"{location}\"")))?;
            if r.status() != StatusCode::ACCEPTED && r.status() != StatusCode::NO_CONTENT {
                return Err(registry_error(r, "blob upload").await);
            }
            location = self.location(&r)?;
        }
        let d = Digest::from_bytes(
            std::mem::take(&mut *hasher.lock().unwrap())
                .finalize()
                .into(),
        );
        Ok((location, d, sent.load(Ordering::Relaxed)))
    }

    /// `PUT` a manifest under a tag or digest; returns its digest.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<Digest> {
        let d = Digest::of(&body);
        let path = format!("/v2/{}/manifests/{reference}", self.inner.path);
        let ct: &'static str = match media_type {
            media::OCI_MANIFEST => media::OCI_MANIFEST,
            media::OCI_INDEX => media::OCI_INDEX,
            media::DOCKER_LIST => media::DOCKER_LIST,
            _ => media::DOCKER_MANIFEST,
        };
        let r = self
            .send(
                Method::PUT,
                &path,
                &[],
                ReqBody::Bytes(body, ct),
                &[self.scope(true)],
                true,
            )
            .await?;
        if r.status() != StatusCode::CREATED {
            return Err(registry_error(r, "manifest upload").await);
        }
        Ok(d)
    }

    /// Every tag of the repository (`GET /v2/<name>/tags/list`, following
    /// `Link` pages).
    pub async fn tags(&self) -> Result<Vec<String>> {
        self.with_fallback(|repo| async move { repo.tags_here().await })
            .await
    }

    async fn tags_here(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(format!("/v2/{}/tags/list", self.inner.path));
        while let Some(p) = next.take() {
            let r = self
                .send(
                    Method::GET,
                    &p,
                    &[],
                    ReqBody::None,
                    &[self.scope(false)],
                    true,
                )
                .await?;
            if !r.status().is_success() {
                return Err(registry_error(r, "tags").await);
            }
            if let Some(link) = r.headers().get(header::LINK).and_then(|v| v.to_str().ok())
                && let Some(s) = link.split('<').nth(1).and_then(|s| s.split('>').next())
            {
                next = Some(absolute(r.url().as_str(), s));
            }
            let v: serde_json::Value = r
                .json_bytes()
                .await
                .map_err(|e| transport(e, "read tags"))?;
            for t in v
                .get("tags")
                .and_then(|t| t.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(t) = t.as_str() {
                    out.push(t.to_string());
                }
            }
        }
        Ok(out)
    }
}

trait JsonBytes {
    async fn json_bytes(self) -> reqwest::Result<serde_json::Value>;
}
impl JsonBytes for Response {
    async fn json_bytes(self) -> reqwest::Result<serde_json::Value> {
        let b = self.bytes().await?;
        Ok(serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null))
    }
}

/// A blob being downloaded. [`BlobStream::chunk`] yields its bytes in
/// order; a connection that fails or ends early is reopened with
/// `Range: bytes=<offset>-` after a backoff, so the caller sees one
/// uninterrupted stream. The caller hashes what it gets (the content store
/// does) and must verify the digest at the end.
pub struct BlobStream {
    repo: Repository,
    digest: Digest,
    size: Option<u64>,
    offset: u64,
    /// Bytes still to drop from a `200` answer to a ranged request.
    skip: u64,
    resp: Option<Response>,
    failures: u32,
}

impl BlobStream {
    /// Bytes delivered so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    async fn open(&mut self) -> Result<()> {
        let path = format!("/v2/{}/blobs/{}", self.repo.inner.path, self.digest);
        let mut headers = vec![];
        if self.offset > 0 {
            headers.push(("Range", format!("bytes={}-", self.offset)));
        }
        // One attempt: this stream's own retry loop resumes from `offset`.
        let r = self
            .repo
            .send(
                Method::GET,
                &path,
                &headers,
                ReqBody::None,
                &[self.repo.scope(false)],
                false,
            )
            .await?;
        match r.status() {
            StatusCode::PARTIAL_CONTENT if self.offset > 0 => self.skip = 0,
            StatusCode::OK => self.skip = self.offset,
            StatusCode::NOT_FOUND => {
                let e = registry_error(r, "blob").await;
                return Err(Error::not_found(format!(
                    "blob {} not found: {}",
                    self.digest, e.message
                )));
            }
            _ => return Err(registry_error(r, "blob").await),
        }
        if let (Some(want), Some(len)) = (self.size, r.content_length())
            && r.status() == StatusCode::OK
            && len != want
        {
            return Err(Error::invalid(format!(
                "blob {}: registry sends {len} bytes, the manifest says {want}",
                self.digest
            )));
        }
        self.resp = Some(r);
        Ok(())
    }

    async fn fail(&mut self, e: Error) -> Result<()> {
        self.resp = None;
        self.failures += 1;
        let policy = self.repo.inner.client.retry;
        if e.kind != ErrorKind::Unavailable || self.failures >= policy.attempts {
            return Err(e.context(format!("download blob {}", self.digest)));
        }
        tracing::debug!(digest = %self.digest, offset = self.offset, error = %e, "blob download interrupted; resuming");
        tokio::time::sleep(policy.delay(self.failures)).await;
        Ok(())
    }

    /// The next bytes of the blob, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.resp.is_none()
                && let Err(e) = self.open().await
            {
                self.fail(e).await?;
                continue;
            }
            let r = self.resp.as_mut().expect("opened");
            match r.chunk().await {
                Ok(Some(mut b)) => {
                    if self.skip > 0 {
                        let k = self.skip.min(b.len() as u64) as usize;
                        self.skip -= k as u64;
                        b = b.slice(k..);
                        if b.is_empty() {
                            continue;
                        }
                    }
                    self.offset += b.len() as u64;
                    if let Some(want) = self.size
                        && self.offset > want
                    {
                        return Err(Error::invalid(format!(
                            "blob {}: more than the {want} bytes the manifest says",
                            self.digest
                        )));
                    }
                    return Ok(Some(b));
                }
                Ok(None) => {
                    if let Some(want) = self.size
                        && self.offset < want
                    {
                        let e = Error::new(
                            ErrorKind::Unavailable,
                            format!(
                                "blob {} ended after {} of {want} bytes",
                                self.digest, self.offset
                            ),
                        );
                        self.fail(e).await?;
                        continue;
                    }
                    self.resp = None;
                    return Ok(None);
                }
                Err(e) => {
                    let e = transport(e, "read blob");
                    self.fail(e).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_follow_expires_in() {
        // absent: the spec's 60 s; shorter than 60: raised to 60
        assert_eq!(token_lifetime(None), Duration::from_secs(60));
        assert_eq!(token_lifetime(Some(5)), Duration::from_secs(60));
        assert_eq!(token_lifetime(Some(300)), Duration::from_secs(300));
        // reused until a sixth of the lifetime is left
        let now = Instant::now();
        assert_eq!(
            refresh_at(now, Duration::from_secs(300)),
            now + Duration::from_secs(250)
        );
        assert_eq!(
            refresh_at(now, Duration::from_secs(60)),
            now + Duration::from_secs(50)
        );
    }

    #[test]
    fn locations() {
        assert_eq!(
            absolute(
                "http://h:5000/v2/a/blobs/uploads/",
                "/v2/a/blobs/uploads/x?s=1"
            ),
            "http://h:5000/v2/a/blobs/uploads/x?s=1"
        );
        assert_eq!(absolute("http://h/x", "https://o/y"), "https://o/y");
        assert_eq!(
            with_query("http://h/u?a=1", "digest=x"),
            "http://h/u?a=1&digest=x"
        );
        assert_eq!(enc("sha256:ab/c d"), "sha256%3Aab%2Fc%20d");
    }

    #[test]
    fn backoff() {
        let p = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(100),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(3), Duration::from_millis(400));
        assert_eq!(p.delay(30), Duration::from_secs(10));
    }
}
