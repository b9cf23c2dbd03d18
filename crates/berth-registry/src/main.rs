//! `berth-registry`: serve a registry, collect its garbage, or make an
//! htpasswd line. A thin command line over the `berth_registry` library.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_registry::config::{Config, LogFormat, Overrides};
use berth_registry::gc::Gc;
use berth_registry::meta::Meta;
use berth_registry::server;
use berth_registry::storage::{BlobStore, Locks};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "berth-registry",
    version,
    about = "A private OCI distribution registry"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the registry API (prints "listening on URL" once bound).
    Serve {
        /// Listen address (port 0: any free port) [default: 127.0.0.1:5000]
        #[arg(long)]
        addr: Option<String>,
        /// Storage root [default: /var/lib/berth-registry]
        #[arg(long)]
        root: Option<PathBuf>,
        /// htpasswd file (bcrypt); turns on basic auth unless --auth says otherwise
        #[arg(long)]
        htpasswd: Option<PathBuf>,
        /// Auth mode: none, basic or token
        #[arg(long)]
        auth: Option<String>,
        /// TLS certificate chain (PEM)
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM)
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Configuration file (TOML); flags override it
        #[arg(long)]
        config: Option<PathBuf>,
        /// Be a pull-through cache of this upstream registry
        #[arg(long)]
        proxy: Option<String>,
        /// Log format: text or json
        #[arg(long)]
        log_format: Option<String>,
    },
    /// Collect garbage offline (the server must be stopped; it collects online by itself).
    Gc {
        #[arg(long)]
        root: PathBuf,
        /// Report what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Keep blobs and links younger than this many seconds
        #[arg(long, default_value_t = 3600)]
        grace: u64,
        /// Abandon uploads idle longer than this many seconds
        #[arg(long, default_value_t = 86400)]
        upload_expiry: u64,
    },
    /// Print an htpasswd line (bcrypt) for USER, reading the password from stdin.
    Htpasswd {
        user: String,
        #[arg(long, default_value_t = bcrypt::DEFAULT_COST)]
        cost: u32,
    },
}

fn init_logs(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("BERTH_REGISTRY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => b.json().flatten_event(true).init(),
        LogFormat::Text => b.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = match &cfg.tls {
        Some((c, k)) => Some(server::tls_acceptor(c, k)?),
        None => None,
    };
    let addr = cfg.addr;
    let reg = server::build(cfg)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, root = %reg.cfg.root.display(), auth = ?reg.cfg.auth, proxy = ?reg.cfg.proxy.as_ref().map(|p| &p.url), "berth-registry started");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "berth-registry listening on {scheme}://{bound}")?;
        out.flush()?;
    }
    server::serve(reg, listener, tls, shutdown_signal()).await
}

async fn gc(root: PathBuf, dry_run: bool, grace: u64, upload_expiry: u64) -> anyhow::Result<()> {
    let meta = Arc::new(Meta::open(&root.join("registry.redb"))?);
    let store = BlobStore::open(&root)?;
    let locks = Locks::default();
    let report = Gc {
        meta: &meta,
        store: &store,
        locks: &locks,
        sessions: None,
        grace: Duration::from_secs(grace),
        upload_expiry: Duration::from_secs(upload_expiry),
        dry_run,
    }
    .run()
    .await?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for d in &report.blobs_deleted {
        println!("{verb} blob {d}");
    }
    println!(
        "{verb} {} blobs ({} bytes), {} unreferenced links, {} expired uploads, {} stray files; dropped {} empty repositories",
        report.blobs_deleted.len(),
        report.bytes_freed,
        report.links_dropped,
        report.uploads_expired,
        report.strays_removed,
        report.repos_dropped.len()
    );
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve {
            addr,
            root,
            htpasswd,
            auth,
            tls_cert,
            tls_key,
            config,
            proxy,
            log_format,
        } => {
            let cfg = Config::load(
                config.as_deref(),
                Overrides {
                    addr,
                    root,
                    htpasswd,
                    auth,
                    tls_cert,
                    tls_key,
                    proxy,
                    log_format,
                },
            )?;
            init_logs(cfg.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(cfg))
        }
        Cmd::Gc {
            root,
            dry_run,
            grace,
            upload_expiry,
        } => {
            init_logs(LogFormat::Text);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(gc(root, dry_run, grace, upload_expiry))
        }
        Cmd::Htpasswd { user, cost } => {
            if user.is_empty() || user.contains(':') {
                anyhow::bail!("user name must be non-empty and contain no ':'");
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let pass = line.trim_end_matches(['\n', '\r']);
            if pass.is_empty() {
                anyhow::bail!("no password on stdin");
            }
            let h = bcrypt::hash_with_result(pass, cost)?.format_for_version(bcrypt::Version::TwoY);
            println!("{user}:{h}");
            Ok(())
        }
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-registry: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
