//! Pull-through cache: with `--proxy URL` the registry answers pulls from
//! its own store when it can and from the upstream registry when it must,
//! keeping what it fetched (verified against its digest) for next time.
//! Tags are re-resolved upstream on every pull (a HEAD), so a cache never
//! serves a stale tag while the upstream answers; when the upstream is down
//! the cached tag is served. Pushes and deletes are refused.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_types::Digest;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode};

use crate::body::{self, Body};
use crate::config::ProxyConfig;
use crate::error::{Code, RegError, RegResult};
use crate::manifest;
use crate::metrics::Metrics;
use crate::names::{ManifestRef, query_escape};
use crate::registry::{DOCKER_CONTENT_DIGEST, Registry};
use crate::storage::{Ingest, writer};

pub struct Proxy {
    url: String,
    client: reqwest::Client,
    creds: Option<(String, String)>,
    /// scope → (bearer token, until)
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

fn upstream(msg: impl std::fmt::Display) -> RegError {
    RegError::new(Code::Upstream, format!("upstream registry: {msg}"))
}

/// Parses `Bearer realm="..",service="..",scope=".."` into its parameters.
fn challenge_params(s: &str) -> (String, HashMap<String, String>) {
    let s = s.trim();
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    let mut params = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let val = if i < b.len() && b[i] == b'"' {
            i += 1;
            let vs = i;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            let v = &rest[vs..i.min(b.len())];
            i += 1;
            v.to_string()
        } else {
            let vs = i.min(b.len());
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            rest[vs..i.min(b.len())].trim().to_string()
        };
        if !key.is_empty() {
            params.insert(key, val);
        }
    }
    (scheme.to_ascii_lowercase(), params)
}

impl Proxy {
    pub fn new(cfg: &ProxyConfig) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(ca) = &cfg.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing {}", ca.display()))?
            {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().context("building the upstream client")?;
        let creds = match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        Ok(Proxy {
            url: cfg.url.clone(),
            client,
            creds,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let t = self.tokens.lock().unwrap();
        t.get(scope)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(t, _)| t.clone())
    }

    async fn fetch_token(
        &self,
        params: &HashMap<String, String>,
        scope: &str,
    ) -> RegResult<String> {
        let realm = params
            .get("realm")
            .ok_or_else(|| upstream("bearer challenge without realm"))?;
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { "&" } else { "?" },
            query_escape(scope)
        );
        if let Some(s) = params.get("service") {
            url.push_str(&format!("&service={}", query_escape(s)));
        }
        let mut req = self.client.get(url);
        if let Some((u, p)) = &self.creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(upstream)?;
        if !resp.status().is_success() {
            return Err(upstream(format!(
                "token request answered {}",
                resp.status()
            )));
        }
        let b = resp.bytes().await.map_err(upstream)?;
        let v: serde_json::Value = serde_json::from_slice(&b).map_err(upstream)?;
        let tok = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| upstream("token response without a token"))?
            .to_string();
        let ttl = v
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(60)
            .max(10);
        let mut t = self.tokens.lock().unwrap();
        if t.len() > 1000 {
            t.clear();
        }
        t.insert(
            scope.to_string(),
            (tok.clone(), Instant::now() + Duration::from_secs(ttl - 5)),
        );
        Ok(tok)
    }

    /// Sends a request for `repo`, answering the upstream's auth challenge once.
    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        repo: &str,
    ) -> RegResult<reqwest::Response> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("{}{path}", self.url);
        let build = |auth: Option<Auth>| {
            let mut r = self.client.request(method.clone(), &url);
            if let Some(a) = accept {
                r = r.header(http::header::ACCEPT, a);
            }
            match auth {
                Some(Auth::Bearer(t)) => r.bearer_auth(t),
                Some(Auth::Basic) => match &self.creds {
                    Some((u, p)) => r.basic_auth(u, Some(p)),
                    None => r,
                },
                None => r,
            }
        };
        let first = self.cached_token(&scope).map(Auth::Bearer);
        let resp = build(first).send().await.map_err(upstream)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(ch) = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
        else {
            return Ok(resp);
        };
        let (scheme, params) = challenge_params(&ch);
        let auth = match scheme.as_str() {
            "bearer" => Auth::Bearer(self.fetch_token(&params, &scope).await?),
            "basic" if self.creds.is_some() => Auth::Basic,
            _ => return Ok(resp),
        };
        build(Some(auth)).send().await.map_err(upstream)
    }

    /// Resolves a manifest reference upstream: Some((digest, media type)), None if unknown.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> RegResult<Option<Digest>> {
        let accept = manifest::ACCEPTED.join(", ");
        let r = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/manifests/{reference}"),
                Some(&accept),
                repo,
            )
            .await?;
        match r.status() {
            StatusCode::OK => Ok(r
                .headers()
                .get(DOCKER_CONTENT_DIGEST)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(upstream(format!(
                "HEAD manifest {repo}:{reference} answered {s}"
            ))),
        }
    }

    /// Fetches a manifest: Some((bytes, content type)), None if unknown.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        limit: usize,
    ) -> RegResult<Option<(Bytes, Option<String>)>> {
        let accept = manifest::ACCEPTED.join(", ");
        let r = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                Some(&accept),
                repo,
            )
            .await?;
        match r.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => {
                return Err(upstream(format!(
                    "GET manifest {repo}:{reference} answered {s}"
                )));
            }
        }
        if r.content_length().is_some_and(|n| n > limit as u64) {
            return Err(upstream(format!(
                "manifest {repo}:{reference} is over {limit} bytes"
            )));
        }
        let ct = r
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut out = Vec::new();
        let mut s = r.bytes_stream();
        while let Some(c) = s.next().await {
            let c = c.map_err(upstream)?;
            if out.len() + c.len() > limit {
                return Err(upstream(format!(
                    "manifest {repo}:{reference} is over {limit} bytes"
                )));
            }
            out.extend_from_slice(&c);
        }
        Ok(Some((Bytes::from(out), ct)))
    }

    /// Asks for a blob (HEAD or GET): the response if the upstream has it.
    pub async fn blob(
        &self,
        repo: &str,
        d: &Digest,
        head: bool,
    ) -> RegResult<Option<reqwest::Response>> {
        let m = if head { Method::HEAD } else { Method::GET };
        let r = self
            .send(m, &format!("/v2/{repo}/blobs/{d}"), None, repo)
            .await?;
        match r.status() {
            StatusCode::OK => Ok(Some(r)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(upstream(format!("blob {repo}@{d} answered {s}"))),
        }
    }

    /// Passes a tags listing through from upstream.
    pub async fn tags(&self, repo: &str, query: Option<&str>) -> RegResult<Response<Body>> {
        let path = match query {
            Some(q) => format!("/v2/{repo}/tags/list?{q}"),
            None => format!("/v2/{repo}/tags/list"),
        };
        let r = self.send(Method::GET, &path, None, repo).await?;
        if r.status().is_server_error() {
            return Err(upstream(format!(
                "tags list of {repo} answered {}",
                r.status()
            )));
        }
        let mut b = Response::builder().status(r.status().as_u16());
        for h in [CONTENT_TYPE, LINK] {
            if let Some(v) = r.headers().get(h.as_str()) {
                b = b.header(h, v.as_bytes());
            }
        }
        let bytes = r.bytes().await.map_err(upstream)?;
        Ok(b.body(body::full(bytes)).expect("valid response"))
    }
}

enum Auth {
    Bearer(String),
    Basic,
}

impl Registry {
    /// A manifest pull in cache mode.
    pub(crate) async fn proxy_manifest(
        self: &Arc<Self>,
        name: &str,
        r: ManifestRef,
        head: bool,
    ) -> RegResult<Response<Body>> {
        let p = self.proxy.as_ref().expect("cache mode");
        let local = |d: &Digest| self.meta.manifest(name, d).map_err(RegError::internal);
        let (d, tags) = match &r {
            ManifestRef::Digest(d) => (*d, Vec::new()),
            ManifestRef::Tag(t) => match p.head_manifest(name, t).await {
                Ok(Some(d)) => (d, vec![t.clone()]),
                Ok(None) => {
                    return Err(RegError::new(
                        Code::ManifestUnknown,
                        format!("manifest {name}:{t} not known upstream"),
                    ));
                }
                Err(e) => {
                    Metrics::add(&self.metrics.proxy_errors, 1);
                    // the upstream is unreachable: serve what the cache has
                    let cached = self.meta.tag(name, t).map_err(RegError::internal)?;
                    match cached {
                        Some(d) => {
                            tracing::warn!(repo = name, tag = %t, error = %e, "upstream unavailable; serving the cached tag");
                            (d, Vec::new())
                        }
                        None => return Err(e),
                    }
                }
            },
        };
        if let Some(row) = local(&d)? {
            Metrics::add(&self.metrics.proxy_hits, 1);
            if let Some(t) = tags.first()
                && self.meta.tag(name, t).map_err(RegError::internal)? != Some(d)
            {
                self.meta.set_tag(name, t, &d).map_err(RegError::internal)?;
            }
            let bytes = if head {
                None
            } else {
                Some(self.manifest_bytes(&d).await?)
            };
            return Ok(self.manifest_response(&d, &row.media_type, bytes, row.size));
        }
        Metrics::add(&self.metrics.proxy_misses, 1);
        let Some((bytes, ct)) = p
            .get_manifest(name, &d.to_string(), self.cfg.max_manifest_bytes)
            .await?
        else {
            return Err(RegError::new(
                Code::ManifestUnknown,
                format!("manifest {name}@{d} not known upstream"),
            ));
        };
        let got = Digest::of(&bytes);
        if got != d {
            Metrics::add(&self.metrics.proxy_errors, 1);
            return Err(upstream(format!("sent manifest {got} when asked for {d}")));
        }
        let parsed = manifest::parse(&bytes, ct.as_deref())
            .map_err(|e| upstream(format!("invalid manifest {name}@{d}: {}", e.message)))?;
        let mt = parsed.media_type.clone();
        let size = bytes.len() as u64;
        self.store_manifest(name, d, bytes.clone(), parsed, tags, false)
            .await?;
        Ok(self.manifest_response(&d, &mt, (!head).then_some(bytes), size))
    }

    /// A pull of a blob this repository does not hold yet, in cache mode.
    pub(crate) async fn proxy_blob(
        self: &Arc<Self>,
        name: &str,
        d: Digest,
        head: bool,
    ) -> RegResult<Response<Body>> {
        let p = self.proxy.as_ref().expect("cache mode");
        let unknown = || {
            RegError::new(
                Code::BlobUnknown,
                format!("blob {d} not known upstream in {name}"),
            )
        };
        if head || self.store.size(&d).is_some() {
            // HEAD, or bytes the cache has for another repository: the
            // upstream says whether this repository has the blob
            let r = p.blob(name, &d, true).await.inspect_err(|_| {
                Metrics::add(&self.metrics.proxy_errors, 1);
            })?;
            let Some(r) = r else { return Err(unknown()) };
            if let Some(size) = self.store.size(&d) {
                let _g = self.locks.lock(&d).await;
                if self.store.size(&d).is_some() {
                    self.meta
                        .commit_blob(name, &d, size, None)
                        .map_err(RegError::internal)?;
                    drop(_g);
                    Metrics::add(&self.metrics.proxy_hits, 1);
                    return self.serve_blob(name, &d, None, head).await;
                }
            }
            let mut b = Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(DOCKER_CONTENT_DIGEST, d.to_string());
            if let Some(n) = r.content_length() {
                b = b.header(CONTENT_LENGTH, n);
            }
            return Ok(b.body(body::empty()).expect("valid response"));
        }
        let Some(r) = p.blob(name, &d, false).await.inspect_err(|_| {
            Metrics::add(&self.metrics.proxy_errors, 1);
        })?
        else {
            return Err(unknown());
        };
        Metrics::add(&self.metrics.proxy_misses, 1);
        let len = r.content_length();
        let (path, file) = self.store.staging()?;
        let (client_tx, client_body) = body::channel(8);
        let reg = self.clone();
        let repo = name.to_string();
        tokio::spawn(async move {
            let (wtx, handle) = writer(Ingest::new(file));
            let mut client = Some(client_tx);
            let mut failed: Option<String> = None;
            let mut stream = r.bytes_stream();
            while let Some(c) = stream.next().await {
                match c {
                    Ok(b) => {
                        if let Some(t) = &client {
                            if t.send(Ok(b.clone())).await.is_err() {
                                client = None; // keep filling the cache
                            } else {
                                Metrics::add(&reg.metrics.bytes_sent, b.len() as u64);
                            }
                        }
                        if wtx.send(b).await.is_err() {
                            failed = Some("writing the cache file failed".into());
                            break;
                        }
                    }
                    Err(e) => {
                        if let Some(t) = &client {
                            let _ = t.send(Err(io::Error::other(e.to_string()))).await;
                        }
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            drop(wtx);
            drop(client);
            let (ing, werr) = handle.await.expect("writer does not panic");
            let failed = failed.or(werr.map(|e| e.to_string())).or_else(|| {
                let got = ing.digest();
                (got != d).then(|| format!("upstream sent {got} for {d}"))
            });
            if let Some(why) = failed {
                Metrics::add(&reg.metrics.proxy_errors, 1);
                tracing::warn!(repo = %repo, digest = %d, error = %why, "blob not cached");
                drop(ing);
                let _ = std::fs::remove_file(&path);
                return;
            }
            if let Err(e) = reg.commit_upload(&repo, d, ing, path.clone(), None).await {
                tracing::warn!(repo = %repo, digest = %d, error = %e, "caching blob failed");
                let _ = std::fs::remove_file(&path);
            }
        });
        let mut b = Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(DOCKER_CONTENT_DIGEST, d.to_string());
        if let Some(n) = len {
            b = b.header(CONTENT_LENGTH, n);
        }
        Ok(b.body(client_body).expect("valid response"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let (s, p) = challenge_params(
            r#"Bearer realm="http://127.0.0.1:1/token",service="berth-registry",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "http://127.0.0.1:1/token");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(p["error"], "insufficient_scope");
        let (s, p) = challenge_params(r#"Basic realm="x""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "x");
    }
}
