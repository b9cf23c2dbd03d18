#![recursion_limit = "256"]
#![forbid(unsafe_code)]
//! berthd: the berth daemon. Owns every object under one data root and
//! serves the Docker Engine API on a unix socket. This file is the
//! composition root: it reads configuration, takes the data-root lock,
//! builds the services and wires them to the API.

mod api;
mod config;
mod events;
mod housekeeping;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use tracing_subscriber::EnvFilter;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long in-flight requests may run after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(name = "berthd", version, about = "The berth container engine daemon")]
struct Args {
    /// Root directory of persistent state
    #[arg(long = "data-root")]
    data_root: Option<PathBuf>,
    /// Daemon socket to listen on (unix://PATH)
    #[arg(short = 'H', long = "host")]
    host: Option<String>,
    /// Daemon configuration file
    #[arg(long = "config-file", default_value = "/etc/berth/daemon.json")]
    config_file: PathBuf,
    /// Log level: debug, info, warn, error
    #[arg(short = 'l', long = "log-level")]
    log_level: Option<String>,
    /// Path of the daemon's PID file
    #[arg(short = 'p', long = "pidfile")]
    pidfile: Option<PathBuf>,
    /// Enable debug logging
    #[arg(short = 'D', long)]
    debug: bool,
    /// Root directory for execution state (shim sockets)
    #[arg(long = "exec-root")]
    exec_root: Option<PathBuf>,
    /// Validate daemon configuration and exit
    #[arg(long)]
    validate: bool,
}

/// `--validate`: the configuration file checked as a start would check
/// it, "configuration OK" or dockerd's wording of the first problem.
fn validate(args: &Args) -> std::process::ExitCode {
    let res = config::DaemonConfig::load(&args.config_file, true).and_then(|cfg| {
        cfg.validate().map_err(|e| {
            anyhow::anyhow!(
                "unable to configure the Docker daemon with file {}: {e}",
                args.config_file.display()
            )
        })?;
        network_config(&cfg, Path::new("/run/berth"))?;
        Ok(())
    });
    match res {
        Ok(()) => {
            println!("configuration OK");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    if args.validate {
        return Ok(validate(&args));
    }
    let cfg = config::DaemonConfig::load(
        &args.config_file,
        args.config_file.as_os_str() != "/etc/berth/daemon.json",
    )?;
    cfg.validate().with_context(|| {
        format!(
            "unable to configure the daemon with file {}",
            args.config_file.display()
        )
    })?;
    let level = if args.debug || cfg.debug {
        "debug".to_string()
    } else {
        args.log_level
            .clone()
            .or(cfg.log_level.clone())
            .unwrap_or_else(|| "info".into())
    };
    let from_env = std::env::var_os("BERTH_LOG").is_some();
    let (filter, filter_handle) = tracing_subscriber::reload::Layer::new(
        EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new(&level)),
    );
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only on a terminal: a log file stays greppable.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }
    let reload = Reload {
        config_file: args.config_file.clone(),
        flag_level: if args.debug {
            Some("debug".into())
        } else {
            args.log_level.clone()
        },
        from_env,
        filter: filter_handle,
    };
    let data_root = args
        .data_root
        .or(cfg.data_root.clone())
        .unwrap_or_else(|| "/var/lib/berth".into());
    let host = args
        .host
        .or(cfg.hosts.first().cloned())
        .unwrap_or_else(|| "unix:///run/berth/berth.sock".into());
    let socket =
        PathBuf::from(host.strip_prefix("unix://").with_context(|| {
            format!("unsupported host {host:?}: only unix:// sockets are served")
        })?);
    let pidfile = args
        .pidfile
        .or(cfg.pidfile.clone())
        .unwrap_or_else(|| "/run/berth/berthd.pid".into());

    let log_driver = cfg.log_driver.as_deref().unwrap_or("json-file");
    berth_containers::resolve_log_config(&serde_json::json!({}), log_driver, &cfg.log_opts)
        .map_err(|e| anyhow::anyhow!("daemon.json: {}", e.message))?;
    std::fs::create_dir_all(&data_root)
        .with_context(|| format!("create data root {}", data_root.display()))?;
    let _lock = lock_data_root(&data_root)?;
    write_pidfile(&pidfile)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let exec_root = args
        .exec_root
        .or(cfg.exec_root.clone())
        .unwrap_or_else(|| "/run/berth".into());
    berth_images::distribution::install_crypto_provider();
    let registry = Arc::new(berth_images::distribution::Client::new(cfg.registry()?));
    let res = rt.block_on(serve(
        &cfg,
        data_root,
        socket.clone(),
        exec_root,
        registry,
        reload,
    ));
    let _ = std::fs::remove_file(&pidfile);
    let _ = std::fs::remove_file(&socket);
    res.map(|()| std::process::ExitCode::SUCCESS)
}

/// One daemon per data root: an exclusive flock held for the process's life.
fn lock_data_root(root: &Path) -> anyhow::Result<std::fs::File> {
    let path = root.join("berthd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            bail!(
                "another berthd is already running with data root {} (lock {} is held)",
                root.display(),
                path.display()
            )
        }
        Err(e) => Err(e).context("lock data root"),
    }
}

fn write_pidfile(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(old) = std::fs::read_to_string(path)
        && let Ok(pid) = old.trim().parse::<i32>()
        && pid != std::process::id() as i32
        && Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "berthd")
    {
        bail!(
            "pid file found, ensure berthd is not running or delete {}",
            path.display()
        );
    }
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("write pid file {}", path.display()))
}

/// The image service as containers see it.
struct Images(Arc<berth_images::ImageService>);

impl berth_containers::ImageSource for Images {
    fn container_image(&self, name: &str) -> berth_types::Result<berth_containers::ContainerImage> {
        let d = self.0.inspect(name)?;
        Ok(berth_containers::ContainerImage {
            id: d.summary.record.id,
            config: d.config.config.unwrap_or_default(),
            layer_dirs: d.layer_dirs,
        })
    }
    fn layer_dirs(&self, id: &berth_types::Digest) -> berth_types::Result<Vec<PathBuf>> {
        Ok(self.0.inspect(&id.to_string())?.layer_dirs)
    }
    fn commit(
        &self,
        c: berth_containers::ContainerCommit<'_>,
    ) -> berth_types::Result<berth_types::Digest> {
        let config = berth_images::commit_config(&c.config, c.changes, c.container_config)?;
        let layer = self.0.layer_from_dir(c.upper)?;
        self.0.commit_image(berth_images::ImageCommit {
            parent: Some(c.image.to_string()),
            layer: Some(layer),
            config,
            history: berth_images::HistoryEntry {
                created_by: c.created_by,
                comment: c.comment.to_string(),
                author: c.author.to_string(),
            },
            container: Some((c.container_id.to_string(), c.container_config.clone())),
            tag: c.repo_tag.map(String::from),
        })
    }
}

impl berth_volumes::VolumeEvents for events::EventBus {
    fn volume_event(
        &self,
        action: &str,
        id: &str,
        attributes: std::collections::BTreeMap<String, String>,
    ) {
        self.publish("volume", action, id, attributes);
    }
}

/// The volume driver as containers see it.
struct Volumes(Arc<berth_volumes::VolumeService>);

impl berth_containers::VolumeProvider for Volumes {
    fn ensure(
        &self,
        name: Option<&str>,
        driver: &str,
        options: Option<std::collections::BTreeMap<String, String>>,
        labels: Option<std::collections::BTreeMap<String, String>>,
        container: &str,
    ) -> berth_types::Result<berth_containers::ProvidedVolume> {
        let v = self
            .0
            .create(name, driver, options, labels, Some(container))?;
        Ok(berth_containers::ProvidedVolume {
            name: v.name,
            driver: v.driver,
            mountpoint: v.mountpoint,
        })
    }
    fn reference(
        &self,
        name: &str,
        container: &str,
    ) -> berth_types::Result<berth_containers::ProvidedVolume> {
        let v = self.0.reference(name, container)?;
        Ok(berth_containers::ProvidedVolume {
            name: v.name,
            driver: v.driver,
            mountpoint: v.mountpoint,
        })
    }
    fn release(&self, container: &str) {
        self.0.release(container)
    }
    fn mount(&self, name: &str, container: &str) -> berth_types::Result<PathBuf> {
        self.0.mount(name, container)
    }
    fn unmount(&self, name: &str, container: &str) -> berth_types::Result<()> {
        self.0.unmount(name, container)
    }
    fn remove(&self, name: &str, users: berth_containers::VolumeUsers) -> berth_types::Result<()> {
        self.0.remove(name, false, users)
    }
    fn event(
        &self,
        action: &str,
        name: &str,
        attributes: std::collections::BTreeMap<String, String>,
    ) {
        self.0.event_for(action, name, attributes)
    }
}

impl berth_containers::EventSink for events::EventBus {
    fn container_event(
        &self,
        action: &str,
        id: &str,
        attributes: std::collections::BTreeMap<String, String>,
    ) {
        self.publish("container", action, id, attributes);
    }
}

impl berth_network::NetworkEvents for events::EventBus {
    fn network_event(
        &self,
        action: &str,
        id: &str,
        attributes: std::collections::BTreeMap<String, String>,
    ) {
        self.publish("network", action, id, attributes);
    }
}

/// The network service as containers see it.
struct Networks(Arc<berth_network::NetworkService>);

impl berth_containers::NetworkHooks for Networks {
    fn prepare(
        &self,
        record: &mut serde_json::Value,
        networking_config: &serde_json::Value,
    ) -> berth_types::Result<()> {
        self.0.prepare(record, networking_config)
    }
    fn setup(&self, record: &serde_json::Value) -> berth_types::Result<berth_containers::NetSetup> {
        let s = self.0.setup(record)?;
        Ok(berth_containers::NetSetup {
            netns: match s.sandbox {
                berth_network::Sandbox::Host => berth_containers::NetNs::Host,
                berth_network::Sandbox::Fresh => berth_containers::NetNs::Fresh,
                berth_network::Sandbox::Path(p) => berth_containers::NetNs::Path(p),
            },
            hosts: s.hosts,
            resolv_conf: s.resolv_conf,
            settings: s.settings,
        })
    }
    fn teardown(&self, record: &serde_json::Value) -> berth_types::Result<serde_json::Value> {
        self.0.teardown(record)
    }
    fn connect(
        &self,
        record: &serde_json::Value,
        network: &str,
        endpoint: &serde_json::Value,
    ) -> berth_types::Result<(String, serde_json::Value)> {
        self.0.connect(record, network, endpoint)
    }
    fn disconnect(&self, record: &serde_json::Value, network: &str) -> berth_types::Result<String> {
        self.0.disconnect(record, network)
    }
}

/// daemon.json's network keys as the network service takes them.
fn network_config(
    cfg: &config::DaemonConfig,
    exec_root: &Path,
) -> anyhow::Result<berth_network::Config> {
    let bridge = match cfg.bridge.as_deref() {
        None | Some("") => Some("berth0".to_string()),
        Some("none") => None,
        Some(b) if b.len() > 15 => bail!("daemon.json: bridge name {b:?} is longer than 15 bytes"),
        Some(b) => Some(b.to_string()),
    };
    let bip = cfg
        .bip
        .as_deref()
        .map(|b| {
            b.parse::<ipnet::Ipv4Net>()
                .with_context(|| format!("daemon.json: invalid bip {b:?}"))
        })
        .transpose()?;
    let pools = if cfg.default_address_pools.is_empty() {
        berth_network::ipam::default_pools()
    } else {
        cfg.default_address_pools
            .iter()
            .map(|p| {
                let base: ipnet::Ipv4Net = p.base.parse().with_context(|| {
                    format!(
                        "daemon.json: invalid default-address-pools base {:?}",
                        p.base
                    )
                })?;
                if p.size < base.prefix_len() || p.size > 30 {
                    bail!(
                        "daemon.json: default-address-pools size {} does not fit base {}",
                        p.size,
                        p.base
                    );
                }
                Ok(berth_network::Pool { base, size: p.size })
            })
            .collect::<anyhow::Result<_>>()?
    };
    Ok(berth_network::Config {
        run_dir: exec_root.to_path_buf(),
        bridge,
        bip,
        pools,
        mtu: cfg.mtu.filter(|m| *m != 0).unwrap_or(1500),
        ip_forward: cfg.ip_forward.unwrap_or(true),
        firewall: cfg.iptables.unwrap_or(true),
    })
}

/// berth-shim lives next to berthd unless BERTH_SHIM says otherwise.
fn shim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_SHIM") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "berth-shim".into())
}

async fn serve(
    cfg: &config::DaemonConfig,
    data_root: PathBuf,
    socket: PathBuf,
    exec_root: PathBuf,
    registry: Arc<berth_images::distribution::Client>,
    reload: Reload,
) -> anyhow::Result<()> {
    let meta = Arc::new(berth_metadata::MetaStore::open(
        &data_root.join("meta.redb"),
    )?);
    let images = Arc::new(berth_images::ImageService::open(&data_root, meta.clone())?);
    {
        let (images, root) = (images.clone(), data_root.clone());
        tokio::task::spawn_blocking(move || housekeeping::reconcile_store(&root, &images))
            .await??;
    }
    let id = daemon_id(&data_root)?;
    let events = Arc::new(events::EventBus::default());
    let volumes = Arc::new(berth_volumes::VolumeService::open(
        &data_root,
        meta.clone(),
        events.clone(),
    )?);
    let net_cfg = network_config(cfg, &exec_root)?;
    let networks = {
        let (meta, events) = (meta.clone(), events.clone());
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _rt = handle.enter();
            berth_network::NetworkService::open(net_cfg, meta, events)
        })
        .await??
    };
    let containers = Arc::new(
        berth_containers::ContainerService::new(
            berth_containers::Config {
                data_root: data_root.clone(),
                run_dir: exec_root.clone(),
                shim_binary: shim_binary(),
                cgroup_parent: "/berth".into(),
                log_driver: cfg.log_driver.clone().unwrap_or_else(|| "json-file".into()),
                log_opts: cfg.log_opts.clone(),
                init: cfg.init,
            },
            meta.clone(),
            Arc::new(Images(images.clone())),
            events.clone(),
            Arc::new(Networks(networks.clone())),
        )?
        .with_volumes(Arc::new(Volumes(volumes.clone()))),
    );
    {
        let c = containers.clone();
        let (dirs, rows) = tokio::task::spawn_blocking(move || c.reconcile()).await??;
        if dirs > 0 || rows > 0 {
            tracing::info!(
                directories = dirs,
                rows,
                "housekeeping: removed container directories without rows and rows without directories"
            );
        }
    }
    containers.restore().await?;
    volumes.sweep_mounts()?;
    {
        let (n, records) = (networks.clone(), containers.all()?);
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _rt = handle.enter();
            n.restore(&records)
        })
        .await??;
    }
    let stores = housekeeping::Stores {
        data_root: data_root.clone(),
        exec_root: exec_root.clone(),
        images: images.clone(),
        containers: containers.clone(),
        volumes: volumes.clone(),
    };
    {
        let s = stores.clone();
        tokio::task::spawn_blocking(move || housekeeping::reconcile_mounts(&s)).await?;
    }
    networks.watch_firewall();
    reload.watch(events.clone(), id.clone());
    let state = api::AppState {
        images,
        registry,
        containers,
        volumes,
        networks: networks.clone(),
        events,
        stores,
        daemon: Arc::new(api::DaemonInfo {
            id,
            data_root: data_root.clone(),
            log_driver: cfg.log_driver.clone().unwrap_or_else(|| "json-file".into()),
            ip_forward: cfg.ip_forward.unwrap_or(true),
            firewall: cfg.iptables.unwrap_or(true),
            address_pools: cfg
                .default_address_pools
                .iter()
                .map(|p| (p.base.clone(), p.size))
                .collect(),
        }),
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("listen on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %socket.display(), data_root = %data_root.display(), "berthd {VERSION} serving the Docker Engine API");
    let app = api::router(state);
    // Streams such as `events`, `logs -f`, `wait` or an attach can stay open
    // for ever: after a signal, requests get a grace period, then berthd
    // exits anyway (containers keep running under their shims).
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    });
    tokio::select! {
        r = server => r?,
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; exiting"),
    }
    let n = networks.clone();
    match tokio::task::spawn_blocking(move || n.shutdown()).await {
        Ok(Err(e)) => tracing::warn!(error = %e, "network cleanup at stop"),
        Err(e) => tracing::warn!(error = %e, "network cleanup at stop"),
        Ok(Ok(())) => {}
    }
    tracing::info!("berthd stopped");
    Ok(())
}

/// SIGHUP: read the configuration file again and apply what can change
/// while running (the log level: `debug`, `log-level`; flags and
/// `BERTH_LOG` still win), then publish dockerd's `daemon reload` event.
/// A file that does not validate changes nothing.
struct Reload {
    config_file: PathBuf,
    flag_level: Option<String>,
    from_env: bool,
    filter: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
}

impl Reload {
    fn watch(self, events: Arc<events::EventBus>, daemon_id: String) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: configuration reload is off");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                self.apply(&events, &daemon_id);
            }
        });
    }

    fn apply(&self, events: &events::EventBus, daemon_id: &str) {
        let cfg = match config::DaemonConfig::load(&self.config_file, false)
            .and_then(|c| c.validate().map(|()| c))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "Error reconfiguring the daemon");
                return;
            }
        };
        let level = self.flag_level.clone().unwrap_or_else(|| {
            if cfg.debug {
                "debug".into()
            } else {
                cfg.log_level.clone().unwrap_or_else(|| "info".into())
            }
        });
        if !self.from_env
            && let Err(e) = self.filter.reload(EnvFilter::new(&level))
        {
            tracing::warn!(error = %e, "cannot change the log level");
        }
        let hostname = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let attrs = std::collections::BTreeMap::from([
            ("debug".to_string(), (level == "debug").to_string()),
            ("log-level".to_string(), level.clone()),
            ("name".to_string(), hostname),
        ]);
        tracing::info!(config_file = %self.config_file.display(), log_level = %level, "Reloaded configuration");
        events.publish("daemon", "reload", daemon_id, attrs);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// A stable identity for this daemon, kept in the data root.
fn daemon_id(root: &Path) -> anyhow::Result<String> {
    let p = root.join("engine-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        return Ok(s.trim().to_string());
    }
    let bytes: [u8; 16] = rand_bytes();
    let id = hex_uuid(&bytes);
    let tmp = root.join("tmp").join("engine-id");
    std::fs::create_dir_all(root.join("tmp"))?;
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &p)?;
    Ok(id)
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    b
}

fn hex_uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
