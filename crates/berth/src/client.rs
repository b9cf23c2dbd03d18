//! A small Docker Engine API client over a unix socket (hyper HTTP/1.1).
//! berth talks to berthd only through this.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Empty, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
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

pub struct Client {
    socket: PathBuf,
    host: String,
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
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

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Result<Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                anyhow!(
                    "Cannot connect to the berth daemon at {}. Is the berth daemon running? ({e})",
                    self.host
                )
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let uri = format!("/v{API_VERSION}{path}");
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("Host", "berth")
            .header("User-Agent", concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let resp = sender
            .send_request(req.body(body)?)
            .await
            .context("request to berthd")?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
            return Err(DaemonError { status, message }.into());
        }
        Ok(resp)
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
