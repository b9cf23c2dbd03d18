//! Connections: the accept loop (plain TCP or TLS via rustls with the ring
//! provider), HTTP/1.1 per connection, the periodic garbage collection, and
//! graceful shutdown — stop accepting, let requests in flight (uploads
//! included) finish, then exit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Auth, ChallengeOrigin};
use crate::config::Config;
use crate::gc::Gc;
use crate::meta::Meta;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::registry::{Origin, Registry};
use crate::storage::{BlobStore, Locks};

/// Opens the store under `cfg.root` and builds the registry.
pub fn build(cfg: Config) -> anyhow::Result<Arc<Registry>> {
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("creating {}", cfg.root.display()))?;
    let meta = Meta::open(&cfg.root.join("registry.redb"))?;
    let store = BlobStore::open(&cfg.root)
        .with_context(|| format!("opening the blob store in {}", cfg.root.display()))?;
    let auth = Auth::new(&cfg, &cfg.root.join("token.key"))?;
    let proxy = cfg.proxy.as_ref().map(Proxy::new).transpose()?;
    Ok(Arc::new(Registry {
        cfg,
        meta: Arc::new(meta),
        store,
        locks: Locks::default(),
        auth,
        metrics: Arc::new(Metrics::default()),
        sessions: Default::default(),
        proxy,
    }))
}

/// A TLS acceptor from PEM certificate chain and key files.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The host to name in auth challenges: the request's `Host` if it is
/// plausible, else the listening address.
fn challenge_host(h: Option<&http::HeaderValue>, local: SocketAddr) -> String {
    h.and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 255
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .map(String::from)
        .unwrap_or_else(|| local.to_string())
}

/// Runs garbage collection every `cfg.gc_interval`.
async fn gc_loop(reg: Arc<Registry>) {
    let Some(every) = reg.cfg.gc_interval else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let gc = Gc {
            meta: &reg.meta,
            store: &reg.store,
            locks: &reg.locks,
            sessions: Some(&reg.sessions),
            grace: reg.cfg.gc_grace,
            upload_expiry: reg.cfg.upload_expiry,
            dry_run: false,
        };
        match gc.run().await {
            Ok(r) => {
                let m = &reg.metrics;
                Metrics::add(&m.gc_runs, 1);
                Metrics::add(&m.gc_blobs_deleted, r.blobs_deleted.len() as u64);
                Metrics::add(&m.gc_bytes_freed, r.bytes_freed);
                Metrics::add(&m.gc_links_dropped, r.links_dropped as u64);
                Metrics::add(&m.gc_uploads_expired, r.uploads_expired as u64);
                m.gc_last_run
                    .store(crate::meta::now(), std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    blobs = r.blobs_deleted.len(),
                    bytes = r.bytes_freed,
                    links = r.links_dropped,
                    uploads = r.uploads_expired,
                    repos = r.repos_dropped.len(),
                    "garbage collection done"
                );
            }
            Err(e) => tracing::error!(error = %e, "garbage collection failed"),
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    reg: Arc<Registry>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let gc = tokio::spawn(gc_loop(reg.clone()));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let reg = reg.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let is_tls = tls.is_some();
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let reg = reg.clone();
                let origin = Origin {
                    remote,
                    auth: ChallengeOrigin {
                        host: challenge_host(req.headers().get(http::header::HOST), local),
                        tls: is_tls,
                    },
                };
                async move { Ok::<_, std::convert::Infallible>(reg.handle(req, origin).await) }
            });
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .keep_alive(true);
            let r = match tls {
                Some(acc) => {
                    match tokio::time::timeout(Duration::from_secs(30), acc.accept(stream)).await {
                        Ok(Ok(s)) => {
                            watcher
                                .watch(b.serve_connection(TokioIo::new(s), svc))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => {
                    watcher
                        .watch(b.serve_connection(TokioIo::new(stream), svc))
                        .await
                }
            };
            if let Err(e) = r {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    gc.abort();
    drop(listener);
    let timeout = reg.cfg.shutdown_timeout;
    tracing::info!(
        connections = graceful.count(),
        "shutting down: waiting for requests in flight"
    );
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?timeout,
            "requests still running at the shutdown timeout; exiting"
        );
    }
    Ok(())
}
