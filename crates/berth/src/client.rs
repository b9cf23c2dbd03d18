//! A small Docker Engine API client over a unix socket (hyper HTTP/1.1).
//! berth talks to berthd only through this.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use berth_api::{API_VERSION, ErrorBody};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// An error the daemon answered with; printed as docker does.
#[derive(Debug)]
pub struct DaemonError {
    pub status: StatusCode,
    pub message: String,
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error response from daemon: {}", self.message)
    }
}
impl std::error::Error for DaemonError {}

#[derive(Clone)]
pub struct Client {
    socket: PathBuf,
    host: String,
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A JSON request body.
pub fn json_body(v: &serde_json::Value) -> Body {
    Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
        .map_err(|never| match never {})
        .boxed()
}

/// A request body streamed from a reader (a file, stdin).
pub fn reader_body<R: tokio::io::AsyncRead + Send + Sync + 'static>(r: R) -> Body {
    let s = tokio_util::io::ReaderStream::with_capacity(r, 256 << 10).map_ok(Frame::data);
    BodyExt::boxed(StreamBody::new(s))
}

impl Client {
    pub fn new(host: &str) -> Result<Client> {
        let socket = host.strip_prefix("unix://").ok_or_else(|| {
            anyhow!("unsupported host {host:?}: berth talks to berthd over unix:// sockets")
        })?;
        Ok(Client {
            socket: socket.into(),
            host: host.to_string(),
        })
    }

    async fn connect(&self) -> Result<TokioIo<tokio::net::UnixStream>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                anyhow!(
                    "Cannot connect to the berth daemon at {}. Is the berth daemon running? ({e})",
                    self.host
                )
            })?;
        Ok(TokioIo::new(stream))
    }

    fn builder(method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("/v{API_VERSION}{path}"))
            .header("Host", "berth")
            .header("User-Agent", concat!("berth/", env!("CARGO_PKG_VERSION")))
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Result<Response<Incoming>> {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(self.connect().await?).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Self::builder(method, path);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let resp = sender
            .send_request(req.body(body)?)
            .await
            .context("request to berthd")?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            return Err(daemon_error(resp).await);
        }
        Ok(resp)
    }

    /// A request with extra headers (`X-Registry-Auth`).
    pub async fn request_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Result<Response<Incoming>> {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(self.connect().await?).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Self::builder(method, path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(body)?)
            .await
            .context("request to berthd")?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            return Err(daemon_error(resp).await);
        }
        Ok(resp)
    }

    /// POST `path` (with a JSON body, if any) asking to take over the
    /// connection (`Connection: Upgrade`, `Upgrade: tcp`), as docker's attach
    /// and exec start do. On `101 Switching Protocols` the connection is a raw
    /// bidirectional stream: the container's output one way, its stdin the
    /// other; shutting down the write half closes the container's stdin.
    pub async fn hijack(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<TokioIo<Upgraded>> {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(self.connect().await?).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = Self::builder(Method::POST, path)
            .header("Connection", "Upgrade")
            .header("Upgrade", "tcp");
        let body = match body {
            Some(v) => {
                req = req.header("Content-Type", "application/json");
                json_body(v)
            }
            None => empty(),
        };
        let resp = sender
            .send_request(req.body(body)?)
            .await
            .context("request to berthd")?;
        let status = resp.status();
        if status.is_client_error() || status.is_server_error() {
            return Err(daemon_error(resp).await);
        }
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(anyhow!(
                "berthd did not switch protocols for {path} (status {status})"
            ));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .context("upgrade the connection")?;
        Ok(TokioIo::new(upgraded))
    }

    /// Send a JSON body and decode the JSON answer (`null` when empty).
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        let resp = self
            .request(
                Method::POST,
                path,
                json_body(body),
                Some("application/json"),
            )
            .await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        if bytes.is_empty() {
            return serde_json::from_slice(b"null").map_err(Into::into);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("decode response of {path}"))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.request(Method::GET, path, empty(), None).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).with_context(|| format!("decode response of {path}"))
    }

    /// The raw JSON (for templates that must see every field).
    pub async fn get_value(&self, path: &str) -> Result<serde_json::Value> {
        self.get_json(path).await
    }

    pub async fn send_json<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T> {
        let resp = self.request(method, path, empty(), None).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        if bytes.is_empty() {
            return serde_json::from_slice(b"null").map_err(Into::into);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("decode response of {path}"))
    }
}

/// The daemon's error answer as a [`DaemonError`].
async fn daemon_error(resp: Response<Incoming>) -> anyhow::Error {
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return e.into(),
    };
    let message = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
    DaemonError { status, message }.into()
}

/// The status of a daemon error, if `e` is one.
pub fn daemon_status(e: &anyhow::Error) -> Option<StatusCode> {
    e.downcast_ref::<DaemonError>().map(|d| d.status)
}

/// The body of a response as a stream of chunks.
pub fn body_stream(resp: Response<Incoming>) -> impl Stream<Item = Result<Bytes>> {
    resp.into_body()
        .into_data_stream()
        .map_err(anyhow::Error::from)
}

/// Split a streaming body into JSON values, one per line (or concatenated).
pub fn json_lines(resp: Response<Incoming>) -> impl Stream<Item = Result<serde_json::Value>> {
    let mut buf = Vec::<u8>::new();
    body_stream(resp)
        .map(move |chunk| -> Result<Vec<serde_json::Value>> {
            buf.extend_from_slice(&chunk?);
            let mut out = Vec::new();
            let mut de =
                serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
            let mut consumed = 0;
            while let Some(Ok(v)) = de.next() {
                consumed = de.byte_offset();
                out.push(v);
            }
            buf.drain(..consumed);
            Ok(out)
        })
        .flat_map(|r| {
            futures_util::stream::iter(match r {
                Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        })
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .unwrap_or_default()
        .trim_start_matches('=')
        .to_string()
}
