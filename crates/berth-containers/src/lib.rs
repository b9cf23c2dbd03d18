//! berth-containers: the container lifecycle (created → running ⇄ paused →
//! exited → removed), the OCI spec berth generates from a Docker create
//! request, and the daemon's side of the shim protocol.
//!
//! Owns: `<data-root>/containers/<id>/` (the read-write layer, the rootfs
//! mount point, the bundle, the log) and container rows in the metadata
//! store. Must not: wait on container processes (the shim does), fork from
//! the daemon's threads into a container (the shim and berth-runtime do),
//! or know HTTP.
//!
//! ```text
//! <data-root>/containers/<id>/
//!   init/               the init layer: mount points berth makes (initlayer.rs)
//!   upper/ work/        the read-write layer
//!   rootfs/             overlay mount point (mounted while running)
//!   config.json         the OCI bundle, rewritten at every start
//!   hostname hosts resolv.conf
//!   <id>-json.log       written by the shim
//!   exit.json           the last exit, written by the shim
//! ```
#![forbid(unsafe_code)]

pub mod archive;
mod commit;
pub mod health;
mod housekeeping;
mod initlayer;
pub mod mounts;
mod names;
pub mod resources;
pub mod shim;
pub mod spec;
pub mod stats;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_metadata::{ContainerRow, MetaRead, MetaStore};
use berth_types::{Digest, Error, ErrorKind, Result};
use serde_json::{Value, json};

pub use commit::{CommitOptions, ContainerCommit};
pub use housekeeping::Orphan;
pub use mounts::{ProvidedVolume, VolumeProvider, VolumeUsers};
pub use names::validate as validate_name;
pub use shim::ShimConn;

/// How many removed containers' exit codes `wait` can still report.
const REMEMBER_REMOVED: usize = 256;

/// What a container needs from the image store.
pub struct ContainerImage {
    pub id: Digest,
    /// The image config's `config` object (Cmd, Entrypoint, Env, …).
    pub config: Value,
    /// Layer directories, top first.
    pub layer_dirs: Vec<PathBuf>,
}

/// The narrow view of the image service that containers use.
pub trait ImageSource: Send + Sync {
    fn container_image(&self, name: &str) -> Result<ContainerImage>;
    /// Layer directories of an image by ID, top first.
    fn layer_dirs(&self, id: &Digest) -> Result<Vec<PathBuf>>;
    /// Make an image from a container's read-write layer (`docker commit`);
    /// returns its ID. Blocks.
    fn commit(&self, c: commit::ContainerCommit<'_>) -> Result<Digest>;
}

/// Where a container's network namespace comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum NetNs {
    /// The daemon's own (`--network host`).
    Host,
    /// A new one with only `lo`, made by the runtime (`--network none`).
    Fresh,
    /// An existing one, joined by path.
    Path(PathBuf),
}

/// What a container gets from the network service before it starts.
pub struct NetSetup {
    pub netns: NetNs,
    pub hosts: String,
    pub resolv_conf: String,
    /// The record's new `NetworkSettings`.
    pub settings: Value,
}

/// The network service as containers see it (the daemon implements it).
///
/// Lifecycle: `prepare` once at create (it checks the network mode and
/// endpoints and fills `NetworkSettings.Networks` in the record); `setup`
/// before every start (sandbox, addresses, published ports, `/etc`
/// files); `teardown` after every exit, after a failed start and at
/// remove, returning the cleared `NetworkSettings` (calling it again is
/// harmless); `connect` and `disconnect` at any time, plugging a running
/// container in or out at once. `setup`, `teardown`, `connect` and
/// `disconnect` block (netlink, nft): call them off the async threads.
pub trait NetworkHooks: Send + Sync {
    fn prepare(&self, record: &mut Value, networking_config: &Value) -> Result<()>;
    fn setup(&self, record: &Value) -> Result<NetSetup>;
    fn teardown(&self, record: &Value) -> Result<Value>;
    /// Returns the network's name and the endpoint's settings.
    fn connect(&self, record: &Value, network: &str, endpoint: &Value) -> Result<(String, Value)>;
    /// Returns the network's name.
    fn disconnect(&self, record: &Value, network: &str) -> Result<String>;
}

/// Where container events go (the daemon's event bus).
pub trait EventSink: Send + Sync {
    fn container_event(&self, action: &str, id: &str, attributes: BTreeMap<String, String>);
}

pub struct Config {
    pub data_root: PathBuf,
    /// `/run/berth` or the directory of the daemon's socket: shim sockets go here.
    pub run_dir: PathBuf,
    pub shim_binary: PathBuf,
    pub cgroup_parent: String,
    /// daemon.json `log-driver` (`json-file` or `none`) and `log-opts`:
    /// what a container gets when its create request names no driver.
    pub log_driver: String,
    pub log_opts: serde_json::Map<String, Value>,
    /// daemon.json `init`: `--init` unless the request says otherwise.
    pub init: bool,
}

/// The json-file driver's options, as dockerd accepts them.
const JSON_FILE_OPTS: &[&str] = &[
    "max-size",
    "max-file",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
];

/// Docker's `HostConfig.LogConfig` for a new container: the daemon's driver
/// and options fill in what the request leaves out; unknown drivers and
/// options are refused as dockerd refuses them.
pub fn resolve_log_config(
    requested: &Value,
    driver: &str,
    defaults: &serde_json::Map<String, Value>,
) -> Result<Value> {
    let mut ty = requested["Type"].as_str().unwrap_or("").to_string();
    let mut opts = requested["Config"].as_object().cloned().unwrap_or_default();
    if ty.is_empty() {
        ty = driver.to_string();
        if opts.is_empty() {
            opts = defaults.clone();
        }
    }
    match ty.as_str() {
        "json-file" => {}
        "none" => {
            if let Some(k) = opts.keys().next() {
                return Err(Error::invalid(format!(
                    "unknown log opt '{k}' for none log driver"
                )));
            }
        }
        other => {
            return Err(Error::invalid(format!(
                "logger: no log driver named '{other}' is registered"
            )));
        }
    }
    for (k, v) in &opts {
        if !JSON_FILE_OPTS.contains(&k.as_str()) {
            return Err(Error::invalid(format!(
                "unknown log opt '{k}' for json-file log driver"
            )));
        }
        let v = v.as_str().unwrap_or("");
        match k.as_str() {
            "max-size" if berth_format::ram_in_bytes(v).is_err() => {
                return Err(Error::invalid(format!("invalid size: '{v}'")));
            }
            "max-file" => match v.parse::<i64>() {
                Ok(n) if n >= 1 => {}
                Ok(_) => return Err(Error::invalid("max-file cannot be less than 1")),
                Err(_) => {
                    return Err(Error::invalid(format!(
                        "strconv.Atoi: parsing \"{v}\": invalid syntax"
                    )));
                }
            },
            _ => {}
        }
    }
    Ok(json!({"Type": ty, "Config": opts}))
}

pub struct ContainerService {
    cfg: Config,
    meta: Arc<MetaStore>,
    images: Arc<dyn ImageSource>,
    events: Arc<dyn EventSink>,
    networks: Arc<dyn NetworkHooks>,
    /// Bumped whenever a container's state changes, for `wait`.
    changes: tokio::sync::watch::Sender<u64>,
    execs: Mutex<HashMap<String, Exec>>,
    /// Exit codes of recently removed containers, for a `wait` that only
    /// looks again after the row is gone (`run --rm` waits for "removed").
    removed: Mutex<VecDeque<(String, i64)>>,
    /// Serialises start/stop/remove of one container.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Attach streams opened before a container started, for its shim.
    pending_attach: Mutex<HashMap<String, (std::os::unix::net::UnixStream, [bool; 3])>>,
    /// The volume driver (see `mounts.rs`); without it, volume mounts are refused.
    volumes: Option<Arc<dyn VolumeProvider>>,
    /// Healthcheck state and unhealthy-action backoff (see `health.rs`).
    health: health::HealthMap,
    health_actions: health::ActionMap,
}

/// An exec instance (Docker keeps them in memory too).
#[derive(Clone, Debug)]
pub struct Exec {
    pub id: String,
    pub container: String,
    pub config: Value,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub pid: i64,
}

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn no_such(name: &str) -> Error {
    Error::not_found(format!("No such container: {name}"))
}

/// Docker's restart policies, applied when a container exits on its own.
fn restart_wanted(rec: &Value) -> bool {
    if rec["HasBeenManuallyStopped"].as_bool() == Some(true) {
        return false;
    }
    let p = &rec["HostConfig"]["RestartPolicy"];
    match p["Name"].as_str().unwrap_or("") {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            let max = p["MaximumRetryCount"].as_u64().unwrap_or(0);
            rec["State"]["ExitCode"].as_i64().unwrap_or(0) != 0
                && (max == 0 || rec["RestartCount"].as_u64().unwrap_or(0) < max)
        }
        _ => false,
    }
}

/// A signal by name (`KILL`, `SIGKILL`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    berth_runtime::signal_number(s).ok_or_else(|| Error::invalid(format!("Invalid signal: {s}")))
}

fn str_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
        ),
        Value::String(s) => Some(vec!["/bin/sh".into(), "-c".into(), s.clone()]),
        _ => None,
    }
}

/// Merge the image's environment with the container's (container wins by key).
fn merge_env(image: &[String], given: &[String]) -> Vec<String> {
    let mut out: Vec<String> = image.to_vec();
    for e in given {
        let k = e.split_once('=').map(|(k, _)| k).unwrap_or(e);
        out.retain(|x| x.split_once('=').map(|(xk, _)| xk).unwrap_or(x) != k);
        out.push(e.clone());
    }
    out
}

impl ContainerService {
    pub fn new(
        cfg: Config,
        meta: Arc<MetaStore>,
        images: Arc<dyn ImageSource>,
        events: Arc<dyn EventSink>,
        networks: Arc<dyn NetworkHooks>,
    ) -> Result<Self> {
        std::fs::create_dir_all(cfg.data_root.join("containers"))?;
        // Containers' read-write layers come and go: spread them over the
        // filesystem like staged layers (berth_snapshots::spread_subdirectories).
        berth_snapshots::spread_subdirectories(&cfg.data_root.join("containers"));
        std::fs::create_dir_all(cfg.run_dir.join("shims"))?;
        Ok(ContainerService {
            cfg,
            meta,
            images,
            events,
            networks,
            changes: tokio::sync::watch::channel(0).0,
            execs: Mutex::new(HashMap::new()),
            removed: Mutex::new(VecDeque::new()),
            locks: Mutex::new(HashMap::new()),
            pending_attach: Mutex::new(HashMap::new()),
            volumes: None,
            health: Default::default(),
            health_actions: Default::default(),
        })
    }

    /// Gives containers their volume driver.
    pub fn with_volumes(mut self, volumes: Arc<dyn VolumeProvider>) -> Self {
        self.volumes = Some(volumes);
        self
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.cfg.data_root.join("containers").join(id)
    }

    /// The lower dirs of a container's rootfs, top first: its init layer
    /// (containers made before berth had one have none), then its image's
    /// layers.
    fn lower_dirs(&self, row: &ContainerRow) -> Result<Vec<PathBuf>> {
        let mut lowers = Vec::new();
        let init = self.dir(&row.id).join("init");
        if init.is_dir() {
            lowers.push(init);
        }
        lowers.extend(self.images.layer_dirs(&row.image_id)?);
        Ok(lowers)
    }

    fn socket(&self, id: &str) -> PathBuf {
        shim::socket_path(&self.cfg.run_dir, id)
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn event(&self, action: &str, rec: &Value) {
        self.event_with(action, rec, BTreeMap::new());
    }

    fn event_with(&self, action: &str, rec: &Value, mut attrs: BTreeMap<String, String>) {
        attrs.insert(
            "name".to_string(),
            rec["Name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
        );
        attrs.insert(
            "image".to_string(),
            rec["Config"]["Image"].as_str().unwrap_or("").to_string(),
        );
        if let Some(labels) = rec["Config"]["Labels"].as_object() {
            for (k, v) in labels {
                attrs.insert(k.clone(), v.as_str().unwrap_or("").to_string());
            }
        }
        if action == "die" {
            attrs.insert("exitCode".into(), rec["State"]["ExitCode"].to_string());
        }
        self.events
            .container_event(action, rec["Id"].as_str().unwrap_or(""), attrs);
    }

    /// Publishes a container event of `action` with Docker's attributes
    /// (name, image, labels) plus `extra` (`restart`, `attach`, `resize`).
    pub fn log_event(&self, name: &str, action: &str, extra: BTreeMap<String, String>) {
        let Ok(row) = self.find(name) else {
            return;
        };
        self.event_with(action, &row.record, extra);
    }

    /// Bytes in a container's read-write layer (`SizeRw`): file sizes,
    /// hard links counted once.
    pub fn size_rw(&self, id: &str) -> i64 {
        let upper = self.dir(id).join("upper");
        berth_snapshots::dir_size(&upper).unwrap_or_else(|e| {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(container = %id, error = %e, "size of the read-write layer");
            }
            0
        })
    }

    /// Find a container by full ID, name, or unique ID prefix.
    pub fn find(&self, name: &str) -> Result<ContainerRow> {
        self.meta.read(|r| {
            if let Some(row) = r.container(name)? {
                return Ok(row);
            }
            if let Some(id) = r.name(name.trim_start_matches('/'))? {
                return r.container(&id)?.ok_or_else(|| no_such(name));
            }
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(no_such(name));
            }
            let matches: Vec<ContainerRow> = r
                .containers()?
                .into_iter()
                .filter(|c| c.id.starts_with(name))
                .collect();
            match matches.len() {
                0 => Err(no_such(name)),
                1 => Ok(matches.into_iter().next().unwrap()),
                _ => Err(Error::invalid(format!(
                    "multiple IDs found with provided prefix: {name}"
                ))),
            }
        })
    }

    fn save(&self, row: &ContainerRow) -> Result<()> {
        self.meta.write(|w| w.put_container(row))?;
        self.notify();
        Ok(())
    }

    /// Update a container's record in one transaction.
    fn update(&self, id: &str, f: impl FnOnce(&mut Value)) -> Result<Value> {
        let rec = self.meta.write(|w| {
            let mut row = w.container(id)?.ok_or_else(|| no_such(id))?;
            f(&mut row.record);
            w.put_container(&row)?;
            Ok(row.record)
        })?;
        self.notify();
        Ok(rec)
    }

    /// `POST /containers/create`.
    pub fn create(&self, name: Option<&str>, body: &Value) -> Result<(String, Vec<String>)> {
        let config = body.clone();
        let image_name = config["Image"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::invalid("no image specified"))?;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => names::validate(n)?,
            None => loop {
                let n = names::generate();
                if self.meta.read(|r| r.name(&n))?.is_none() {
                    break n;
                }
            },
        };
        let img = self.images.container_image(image_name)?;
        let ic = &img.config;
        let given_cmd = str_list(&config["Cmd"]).filter(|c| !c.is_empty());
        let given_ep = str_list(&config["Entrypoint"]);
        let entrypoint = match &given_ep {
            Some(ep) => ep.clone(), // an explicit empty entrypoint clears the image's
            None => str_list(&ic["Entrypoint"]).unwrap_or_default(),
        };
        let cmd = match (&given_cmd, &given_ep) {
            (Some(c), _) => c.clone(),
            (None, Some(_)) => vec![],
            (None, None) => str_list(&ic["Cmd"]).unwrap_or_default(),
        };
        let mut argv = entrypoint.clone();
        argv.extend(cmd.iter().cloned());
        if argv.is_empty() {
            return Err(Error::invalid("no command specified"));
        }
        let image_env = str_list(&ic["Env"]).unwrap_or_default();
        let env = merge_env(&image_env, &str_list(&config["Env"]).unwrap_or_default());
        let id = hex::encode(rand::random::<[u8; 32]>());
        let hostname = config["Hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(String::from)
            .unwrap_or_else(|| id[..12].to_string());
        let host_config = if body["HostConfig"].is_object() {
            body["HostConfig"].clone()
        } else {
            json!({})
        };
        let mut host_config = host_config;
        if let Some(target) = host_config["NetworkMode"]
            .as_str()
            .and_then(|m| m.strip_prefix("container:"))
            .map(String::from)
        {
            let other = self.find(&target)?;
            host_config["NetworkMode"] = json!(format!("container:{}", other.id));
        }
        host_config["LogConfig"] = resolve_log_config(
            &host_config["LogConfig"],
            &self.cfg.log_driver,
            &self.cfg.log_opts,
        )?;
        if host_config["Init"].is_null() && self.cfg.init {
            host_config["Init"] = json!(true);
        }
        let policy = host_config["RestartPolicy"]["Name"].as_str().unwrap_or("");
        if !policy.is_empty() && policy != "no" && host_config["AutoRemove"].as_bool() == Some(true)
        {
            return Err(Error::invalid(
                "conflicting options: cannot specify both --restart and --rm",
            ));
        }
        resources::validate(&host_config, false)?;
        health::validate_action(&host_config, &config["Labels"])?;
        resources::adapt_create(&mut host_config);
        if let Some(rp) = host_config["RestartPolicy"]["Name"].as_str()
            && !["", "no", "always", "unless-stopped", "on-failure"].contains(&rp)
        {
            return Err(Error::invalid(format!("invalid restart policy '{rp}'")));
        }
        let config_volumes = mounts::config_volumes(&config["Volumes"], &ic["Volumes"]);
        let mount_points = self.register_mounts(&mounts::MountRequest {
            id: &id,
            host_config: &host_config,
            volumes: &config_volumes,
            layer_dirs: &img.layer_dirs,
            data_root: &self.cfg.data_root,
        })?;
        let dir = self.dir(&id);
        let mut cfg_out = json!({
            "Hostname": hostname,
            "Domainname": config["Domainname"].as_str().unwrap_or(""),
            "User": config["User"].as_str().filter(|u| !u.is_empty()).or(ic["User"].as_str()).unwrap_or(""),
            "AttachStdin": config["AttachStdin"].as_bool().unwrap_or(false),
            "AttachStdout": config["AttachStdout"].as_bool().unwrap_or(false),
            "AttachStderr": config["AttachStderr"].as_bool().unwrap_or(false),
            "Tty": config["Tty"].as_bool().unwrap_or(false),
            "OpenStdin": config["OpenStdin"].as_bool().unwrap_or(false),
            "StdinOnce": config["StdinOnce"].as_bool().unwrap_or(false),
            "Env": env,
            "Cmd": if cmd.is_empty() { Value::Null } else { json!(cmd) },
            "Image": image_name,
            "Volumes": config_volumes,
            "WorkingDir": config["WorkingDir"].as_str().filter(|w| !w.is_empty()).or(ic["WorkingDir"].as_str()).unwrap_or(""),
            "Entrypoint": if entrypoint.is_empty() { Value::Null } else { json!(entrypoint) },
            "OnBuild": null,
            "Labels": {},
        });
        let mut labels = ic["Labels"].as_object().cloned().unwrap_or_default();
        if let Some(l) = config["Labels"].as_object() {
            labels.extend(l.clone());
        }
        cfg_out["Labels"] = Value::Object(labels);
        let mut exposed = ic["ExposedPorts"].as_object().cloned().unwrap_or_default();
        if let Some(e) = config["ExposedPorts"].as_object() {
            exposed.extend(e.clone());
        }
        if !exposed.is_empty() {
            cfg_out["ExposedPorts"] = Value::Object(exposed);
        }
        if let Some(m) = config["MacAddress"].as_str().filter(|m| !m.is_empty()) {
            cfg_out["MacAddress"] = json!(m);
        }
        health::validate(&config["Healthcheck"])?;
        let healthcheck = health::merge(&config["Healthcheck"], &ic["Healthcheck"]);
        if healthcheck.is_object() {
            cfg_out["Healthcheck"] = healthcheck;
        }
        for k in ["StopSignal", "StopTimeout"] {
            if !config[k].is_null() {
                cfg_out[k] = config[k].clone();
            } else if k == "StopSignal" && ic[k].is_string() {
                cfg_out[k] = ic[k].clone();
            }
        }
        let mut record = json!({
            "Id": id,
            "Created": now(),
            "Path": argv[0],
            "Args": &argv[1..],
            "State": {
                "Status": "created", "Running": false, "Paused": false, "Restarting": false,
                "OOMKilled": false, "Dead": false, "Pid": 0, "ExitCode": 0, "Error": "",
                "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME
            },
            "Image": img.id.to_string(),
            "ResolvConfPath": dir.join("resolv.conf").display().to_string(),
            "HostnamePath": dir.join("hostname").display().to_string(),
            "HostsPath": dir.join("hosts").display().to_string(),
            "LogPath": dir.join(format!("{id}-json.log")).display().to_string(),
            "Name": format!("/{name}"),
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": null,
            "HostConfig": host_config,
            "GraphDriver": {
                "Data": {
                    "LowerDir": std::iter::once(dir.join("init")).chain(img.layer_dirs.iter().cloned()).map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"),
                    "MergedDir": dir.join("rootfs").display().to_string(),
                    "UpperDir": dir.join("upper").display().to_string(),
                    "WorkDir": dir.join("work").display().to_string()
                },
                "Name": "overlay2"
            },
            "Mounts": mounts::docker_mounts(&mount_points),
            "Config": cfg_out,
            "NetworkSettings": {
                "Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
                "HairpinMode": false, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
                "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null,
                "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
                "Networks": {}
            }
        });
        record[mounts::RECORD_KEY] = json!(mount_points);
        self.networks
            .prepare(&mut record, &body["NetworkingConfig"])?;
        for d in ["upper", "work", "rootfs"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        if let Err(e) = initlayer::make(&dir.join("init"), &img.layer_dirs) {
            let _ = std::fs::remove_dir_all(&dir);
            let anonymous: Vec<String> = mount_points
                .iter()
                .filter(|m| m.is_anonymous_volume())
                .map(|m| m.name.clone())
                .collect();
            self.end_create(&id, &anonymous);
            return Err(e.context("making the init layer"));
        }
        let row = ContainerRow {
            id: id.clone(),
            name,
            image_id: img.id,
            record,
        };
        if let Err(e) = self.meta.write(|w| w.put_container(&row)) {
            let _ = std::fs::remove_dir_all(&dir);
            let anonymous: Vec<String> = mount_points
                .iter()
                .filter(|m| m.is_anonymous_volume())
                .map(|m| m.name.clone())
                .collect();
            self.end_create(&id, &anonymous);
            return Err(e);
        }
        self.end_create(&id, &[]);
        self.notify();
        self.event("create", &row.record);
        Ok((id, vec![]))
    }

    fn write_etc_files(&self, dir: &Path, rec: &Value, net: &NetSetup) -> Result<()> {
        let hostname = rec["Config"]["Hostname"].as_str().unwrap_or("");
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
        std::fs::write(dir.join("hosts"), &net.hosts)?;
        std::fs::write(dir.join("resolv.conf"), &net.resolv_conf)?;
        Ok(())
    }

    /// The network a container starts with: from the network service, or
    /// the namespace and files of the container it shares with.
    async fn net_setup(&self, rec: &Value) -> Result<NetSetup> {
        let mode = rec["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
        if let Some(target) = mode.strip_prefix("container:") {
            let other = self.find(target)?;
            let st = &other.record["State"];
            if st["Running"].as_bool() != Some(true) {
                return Err(Error::conflict(format!(
                    "cannot join network namespace of a non running container: {}",
                    other.id
                )));
            }
            let pid = st["Pid"].as_i64().unwrap_or(0);
            let odir = self.dir(&other.id);
            return Ok(NetSetup {
                netns: NetNs::Path(PathBuf::from(format!("/proc/{pid}/ns/net"))),
                hosts: std::fs::read_to_string(odir.join("hosts")).unwrap_or_default(),
                resolv_conf: std::fs::read_to_string(odir.join("resolv.conf")).unwrap_or_default(),
                settings: rec["NetworkSettings"].clone(),
            });
        }
        let (nets, rec) = (self.networks.clone(), rec.clone());
        tokio::task::spawn_blocking(move || nets.setup(&rec))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
    }

    /// Undo `net_setup`; returns the cleared `NetworkSettings` for the
    /// record (None when there is nothing to change).
    async fn net_release(&self, id: &str) -> Option<Value> {
        let row = self.meta.read(|r| r.container(id)).ok().flatten()?;
        if row.record["HostConfig"]["NetworkMode"]
            .as_str()
            .is_some_and(|m| m.starts_with("container:"))
        {
            return None;
        }
        let nets = self.networks.clone();
        let rec = row.record;
        match tokio::task::spawn_blocking(move || nets.teardown(&rec)).await {
            Ok(Ok(settings)) => Some(settings),
            Ok(Err(e)) => {
                tracing::warn!(container = %id, error = %e, "network teardown");
                None
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "network teardown");
                None
            }
        }
    }

    /// Undo `net_setup` and record the cleared `NetworkSettings`.
    async fn net_teardown(&self, id: &str) {
        if let Some(settings) = self.net_release(id).await {
            let _ = self.update(id, |r| r["NetworkSettings"] = settings);
        }
    }

    /// `network connect`.
    pub async fn connect(&self, name: &str, network: &str, endpoint: &Value) -> Result<()> {
        let row = self.find(name)?;
        let lock = self.lock(&row.id);
        let _g = lock.lock().await;
        let row = self.find(&row.id)?;
        let (nets, rec, network, endpoint) = (
            self.networks.clone(),
            row.record.clone(),
            network.to_string(),
            endpoint.clone(),
        );
        let (net_name, ep) =
            tokio::task::spawn_blocking(move || nets.connect(&rec, &network, &endpoint))
                .await
                .map_err(|e| Error::internal(e.to_string()))??;
        self.update(&row.id, |r| {
            r["NetworkSettings"]["Networks"][net_name.as_str()] = ep;
        })?;
        Ok(())
    }

    /// `network disconnect`.
    pub async fn disconnect(&self, name: &str, network: &str) -> Result<()> {
        let row = self.find(name)?;
        let lock = self.lock(&row.id);
        let _g = lock.lock().await;
        let row = self.find(&row.id)?;
        let (nets, rec, network) = (
            self.networks.clone(),
            row.record.clone(),
            network.to_string(),
        );
        let net_name = tokio::task::spawn_blocking(move || nets.disconnect(&rec, &network))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
        self.update(&row.id, |r| {
            if let Some(m) = r["NetworkSettings"]["Networks"].as_object_mut() {
                m.remove(&net_name);
            }
            if net_name == "bridge" {
                let s = &mut r["NetworkSettings"];
                for k in ["EndpointID", "Gateway", "IPAddress", "MacAddress"] {
                    s[k] = json!("");
                }
                s["IPPrefixLen"] = json!(0);
            }
        })?;
        Ok(())
    }

    /// `POST /containers/{id}/start`. Returns false when it was already running.
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<bool> {
        self.start_with(name, false).await
    }

    /// Start; `restart`: the restart policy's start after a backoff, which
    /// does nothing once a stop has cancelled it (the stop holds the
    /// container's lock while it marks the container stopped).
    async fn start_with(self: &Arc<Self>, name: &str, restart: bool) -> Result<bool> {
        let row = self.find(name)?;
        let lock = self.lock(&row.id);
        let _g = lock.lock().await;
        let row = self.find(&row.id)?;
        let rec = &row.record;
        if rec["State"]["Running"].as_bool() == Some(true) {
            return Ok(false);
        }
        if restart && rec["State"]["Restarting"].as_bool() != Some(true) {
            return Ok(false);
        }
        let id = row.id.clone();
        let dir = self.dir(&id);
        let rootfs = dir.join("rootfs");
        let t0 = std::time::Instant::now();
        let lowers = self.lower_dirs(&row)?;
        let net = match self.net_setup(rec).await {
            Ok(n) => n,
            Err(e) => {
                let rec = self.update(&id, |r| r["State"]["Error"] = json!(e.message))?;
                self.auto_remove_failed(&id, &rec);
                return Err(e);
            }
        };
        let t_net = t0.elapsed();
        if let Err(e) = mount_rootfs(&lowers, &dir, &rootfs) {
            self.net_teardown(&id).await;
            return Err(e);
        }
        let t_rootfs = t0.elapsed();
        let res = match self.setup_mounts(&row, &rootfs) {
            Ok(prepared) => self
                .launch(&row, &dir, &rootfs, &prepared, &net)
                .await
                .map_err(|(msg, code)| runtime_error(msg, code)),
            Err(e) => {
                let msg = e.message.clone();
                Err((e, msg, 125))
            }
        };
        let t_launch = t0.elapsed();
        match res {
            Ok(pid) => {
                let settings = net.settings.clone();
                let rec = self.update(&id, |r| {
                    r["NetworkSettings"] = settings;
                    r["HasBeenManuallyStopped"] = json!(false);
                    let s = &mut r["State"];
                    s["Restarting"] = json!(false);
                    s["Status"] = json!("running");
                    s["Running"] = json!(true);
                    s["Paused"] = json!(false);
                    s["Pid"] = json!(pid);
                    s["ExitCode"] = json!(0);
                    s["Error"] = json!("");
                    s["OOMKilled"] = json!(false);
                    s["StartedAt"] = json!(now());
                    s["FinishedAt"] = json!(ZERO_TIME);
                })?;
                // Where a start's time goes (cumulative milliseconds).
                tracing::debug!(
                    container = %id,
                    network = t_net.as_secs_f64() * 1e3,
                    rootfs = t_rootfs.as_secs_f64() * 1e3,
                    launched = t_launch.as_secs_f64() * 1e3,
                    recorded = t0.elapsed().as_secs_f64() * 1e3,
                    "started"
                );
                self.event("start", &rec);
                self.health_started(&id, &rec);
                self.clone().monitor(id);
                Ok(true)
            }
            Err((err, msg, code)) => {
                self.teardown_mounts(&id, &row.record);
                let _ = berth_snapshots::unmount(&rootfs);
                self.net_teardown(&id).await;
                let rec = self.update(&id, |r| {
                    let never_ran = r["State"]["StartedAt"] == ZERO_TIME;
                    let s = &mut r["State"];
                    s["Status"] = json!(if never_ran { "created" } else { "exited" });
                    s["ExitCode"] = json!(code);
                    s["Error"] = json!(msg);
                })?;
                self.auto_remove_failed(&id, &rec);
                Err(err)
            }
        }
    }

    /// As dockerd: a --rm container that cannot start is removed (the
    /// client is waiting for that).
    fn auto_remove_failed(self: &Arc<Self>, id: &str, rec: &Value) {
        if rec["HostConfig"]["AutoRemove"].as_bool() == Some(true) {
            let this = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(e) = this.remove_with_volumes(&id, true, true).await {
                    tracing::warn!(container = %id, error = %e, "auto-remove after a failed start");
                }
            });
        }
    }

    async fn launch(
        &self,
        row: &ContainerRow,
        dir: &Path,
        rootfs: &Path,
        prepared: &mounts::PreparedMounts,
        net: &NetSetup,
    ) -> std::result::Result<i32, (String, i32)> {
        let rec = &row.record;
        let internal = |e: Error| (e.message, 125);
        self.write_etc_files(dir, rec, net).map_err(internal)?;
        let c = &rec["Config"];
        let user =
            spec::resolve_user(rootfs, c["User"].as_str().unwrap_or("")).map_err(|e| (e, 125))?;
        let mut args = vec![rec["Path"].as_str().unwrap_or("").to_string()];
        args.extend(str_list(&rec["Args"]).unwrap_or_default());
        let env = str_list(&c["Env"]).unwrap_or_default();
        let tty = c["Tty"].as_bool().unwrap_or(false);
        let mut oci = spec::runtime_spec(&spec::SpecInput {
            id: &row.id,
            rootfs,
            dir,
            args: &args,
            env: &env,
            cwd: c["WorkingDir"].as_str().unwrap_or("/"),
            user: &user,
            hostname: c["Hostname"].as_str().unwrap_or(""),
            tty,
            host_config: &rec["HostConfig"],
            netns: match &net.netns {
                NetNs::Host => spec::Netns::Host,
                NetNs::Fresh => spec::Netns::New,
                NetNs::Path(p) => spec::Netns::Join(p),
            },
            cgroup_parent: &self.cfg.cgroup_parent,
            init: (rec["HostConfig"]["Init"].as_bool() == Some(true))
                .then_some(self.cfg.shim_binary.as_path()),
        });
        prepared.apply(&mut oci);
        let tmp = dir.join("config.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&oci).expect("json"))
            .map_err(|e| (e.to_string(), 125))?;
        std::fs::rename(&tmp, dir.join("config.json")).map_err(|e| (e.to_string(), 125))?;
        let _ = std::fs::remove_file(dir.join("exit.json"));
        let socket = self.socket(&row.id);
        let log = &rec["HostConfig"]["LogConfig"]["Config"];
        let attach = self.pending_attach.lock().unwrap().remove(&row.id);
        let ready = shim::spawn(shim::ShimLaunch {
            binary: &self.cfg.shim_binary,
            id: &row.id,
            bundle: dir,
            socket: &socket,
            tty,
            stdin: c["OpenStdin"].as_bool().unwrap_or(false),
            stdin_once: c["StdinOnce"].as_bool().unwrap_or(false),
            log_max_size: log["max-size"].as_str(),
            log_max_file: log["max-file"].as_str(),
            no_log: rec["HostConfig"]["LogConfig"]["Type"] == "none",
            attach,
        })
        .await
        .map_err(internal)?;
        match ready {
            shim::Ready::Started { pid } => Ok(pid),
            shim::Ready::Failed { message, exit_code } => Err((message, exit_code)),
        }
    }

    /// Watch a running container until it exits, then record the exit.
    fn monitor(self: Arc<Self>, id: String) {
        tokio::spawn(async move {
            let socket = self.socket(&id);
            let exit = match shim::call(&socket, json!({"op": "wait"})).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "lost the shim; reading its recorded exit");
                    shim::read_exit(&self.dir(&id))
                        .unwrap_or_else(|| json!({"exit_code": 255, "finished_at": now()}))
                }
            };
            self.exited(&id, &exit).await;
        });
    }

    async fn exited(self: &Arc<Self>, id: &str, exit: &Value) {
        // The cleanup steps are independent: run them at once (`wait` and a
        // following `rm` see the exit only after all of them). Unmounting the
        // rootfs syncs the upper filesystem, so it blocks a thread of its own.
        let rootfs_and_volumes = {
            let (this, id) = (self.clone(), id.to_string());
            tokio::task::spawn_blocking(move || {
                let _ = berth_snapshots::unmount(&this.dir(&id).join("rootfs"));
                if let Ok(Some(row)) = this.meta.read(|r| r.container(&id)) {
                    this.teardown_mounts(&id, &row.record);
                }
            })
        };
        let socket = self.socket(id);
        let (_, _, cleared) = tokio::join!(
            rootfs_and_volumes,
            shim::call(&socket, json!({"op": "shutdown"})),
            self.net_release(id)
        );
        let health = self.health_stopped(id);
        let rec = match self.update(id, |r| {
            if let Some(c) = cleared {
                r["NetworkSettings"] = c;
            }
            if let Some(h) = health {
                r["State"]["Health"] = h;
            }
            let s = &mut r["State"];
            s["Status"] = json!("exited");
            s["Running"] = json!(false);
            s["Paused"] = json!(false);
            s["Pid"] = json!(0);
            s["ExitCode"] = exit["exit_code"].clone();
            s["OOMKilled"] = json!(exit["oom_killed"].as_bool().unwrap_or(false));
            s["FinishedAt"] = json!(
                exit["finished_at"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(now)
            );
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "cannot record exit");
                return;
            }
        };
        if rec["State"]["OOMKilled"].as_bool() == Some(true) {
            self.event("oom", &rec);
        }
        self.event("die", &rec);
        if rec["HostConfig"]["AutoRemove"].as_bool() == Some(true) {
            if let Err(e) = self.remove_with_volumes(id, true, true).await {
                tracing::warn!(container = %id, error = %e, "auto-remove failed");
            }
            return;
        }
        if restart_wanted(&rec) {
            self.schedule_restart(id, &rec);
        }
    }

    /// Restart after Docker's backoff: 100 ms doubling per restart, at most a minute.
    fn schedule_restart(self: &Arc<Self>, id: &str, rec: &Value) {
        let n = rec["RestartCount"].as_u64().unwrap_or(0).min(10) as u32;
        let delay = Duration::from_millis(100 * 2u64.pow(n)).min(Duration::from_secs(60));
        let _ = self.update(id, |r| {
            r["State"]["Restarting"] = json!(true);
            r["State"]["Status"] = json!("restarting");
            r["RestartCount"] = json!(r["RestartCount"].as_u64().unwrap_or(0) + 1);
        });
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // A stop, kill or rm during the backoff cancels the restart.
            let still = this.meta.read(|r| r.container(&id)).ok().flatten();
            if still.is_none_or(|c| c.record["State"]["Restarting"].as_bool() != Some(true)) {
                return;
            }
            if let Err(e) = this.start_with(&id, true).await {
                tracing::warn!(container = %id, error = %e, "restart failed");
                let _ = this.update(&id, |r| {
                    r["State"]["Restarting"] = json!(false);
                    r["State"]["Status"] = json!("exited");
                });
            }
        });
    }

    /// Mark a container as stopped by the user (no restart policy applies
    /// until it is started again), cancelling a pending restart.
    fn manual_stop(&self, id: &str) -> Result<()> {
        self.update(id, |r| {
            r["HasBeenManuallyStopped"] = json!(true);
            if r["State"]["Restarting"].as_bool() == Some(true) {
                r["State"]["Restarting"] = json!(false);
                r["State"]["Status"] = json!("exited");
            }
        })
        .map(|_| ())
    }

    /// Re-adopt containers after a daemon restart: live shims are watched
    /// again, containers whose shim is gone get their recorded exit.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        let rows = self.meta.read(|r| r.containers())?;
        for row in rows {
            if row.record["State"]["Running"].as_bool() != Some(true) {
                let policy = row.record["HostConfig"]["RestartPolicy"]["Name"]
                    .as_str()
                    .unwrap_or("");
                let manual = row.record["HasBeenManuallyStopped"].as_bool() == Some(true);
                let restarting = row.record["State"]["Restarting"].as_bool() == Some(true);
                if policy == "always" || (policy == "unless-stopped" && !manual) || restarting {
                    let this = self.clone();
                    let id = row.id.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.start(&id).await {
                            tracing::warn!(container = %id, error = %e, "restart after daemon start failed");
                        }
                    });
                }
                continue;
            }
            match shim::call(&self.socket(&row.id), json!({"op": "state"})).await {
                Ok(st) if st["running"].as_bool() == Some(true) => {
                    tracing::info!(container = %row.id, "re-adopted running container");
                    self.readopt_mounts(&row.id, &row.record);
                    self.health_resume(&row.id, &row.record);
                    self.clone().monitor(row.id.clone());
                }
                Ok(st) => self.exited(&row.id, &st).await,
                Err(_) => {
                    let exit = shim::read_exit(&self.dir(&row.id))
                        .unwrap_or_else(|| json!({"exit_code": 255, "finished_at": now()}));
                    self.exited(&row.id, &exit).await;
                }
            }
        }
        Ok(())
    }

    pub async fn kill(&self, name: &str, signal: Option<&str>) -> Result<()> {
        let row = self.find(name)?;
        let sig = match signal.filter(|s| !s.is_empty()) {
            Some(s) => parse_signal(s)?,
            None => libc::SIGKILL,
        };
        if row.record["State"]["Running"].as_bool() != Some(true) {
            return Err(Error::conflict(format!(
                "cannot kill container: {name}: container {} is not running",
                row.id
            )));
        }
        if sig == libc::SIGKILL || sig == libc::SIGTERM {
            self.manual_stop(&row.id)?;
        }
        shim::kill(&self.socket(&row.id), sig).await?;
        self.event_with(
            "kill",
            &row.record,
            BTreeMap::from([("signal".to_string(), sig.to_string())]),
        );
        // As dockerd: SIGKILL returns once the container has exited.
        if sig == libc::SIGKILL {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.wait(&row.id, "not-running"))
                    .await;
        }
        Ok(())
    }

    /// Wait until the container is not running (or `removed`, or the next exit).
    pub async fn wait(&self, name: &str, condition: &str) -> Result<i64> {
        let row = self.find(name)?;
        let id = row.id.clone();
        let mut rx = self.changes.subscribe();
        let finished = row.record["State"]["FinishedAt"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let mut last_code = row.record["State"]["ExitCode"].as_i64().unwrap_or(0);
        loop {
            let row = self.meta.read(|r| r.container(&id))?;
            let Some(r) = row else {
                let removed = self.removed.lock().unwrap();
                let code = removed
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == id)
                    .map(|(_, c)| *c);
                return Ok(code.unwrap_or(last_code));
            };
            let st = &r.record["State"];
            last_code = st["ExitCode"].as_i64().unwrap_or(0);
            let running = st["Running"].as_bool() == Some(true);
            let done = match condition {
                "removed" => false,
                "next-exit" => !running && st["FinishedAt"].as_str() != Some(finished.as_str()),
                _ => !running,
            };
            if done {
                return Ok(last_code);
            }
            if rx.changed().await.is_err() {
                return Err(Error::new(ErrorKind::Unavailable, "daemon shutting down"));
            }
        }
    }

    /// `restart`: stop (as `stop`), start, and the `restart` event.
    pub async fn restart(
        self: &Arc<Self>,
        name: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        self.stop(name, timeout, signal).await?;
        self.start(name).await?;
        self.log_event(name, "restart", Default::default());
        Ok(())
    }

    /// `stop`: the stop signal, then SIGKILL after the timeout.
    pub async fn stop(
        &self,
        name: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<bool> {
        let row = self.find(name)?;
        let row = {
            // Under the lock: a restart that is starting the container
            // finishes first (and is then stopped), one that has not begun
            // sees the stop and does nothing.
            let lock = self.lock(&row.id);
            let _g = lock.lock().await;
            self.manual_stop(&row.id)?;
            self.find(&row.id)?
        };
        if row.record["State"]["Running"].as_bool() != Some(true) {
            return Ok(false);
        }
        let c = &row.record["Config"];
        let sig = match signal
            .filter(|s| !s.is_empty())
            .or(c["StopSignal"].as_str())
        {
            Some(s) => parse_signal(s)?,
            None => libc::SIGTERM,
        };
        let secs = timeout.or(c["StopTimeout"].as_i64()).unwrap_or(10);
        let socket = self.socket(&row.id);
        if row.record["State"]["Paused"].as_bool() == Some(true) {
            let _ = shim::call(&socket, json!({"op": "resume"})).await;
        }
        let _ = shim::kill(&socket, sig).await;
        let waited = if secs < 0 {
            self.wait(&row.id, "not-running").await.map(|_| ())
        } else {
            match tokio::time::timeout(
                Duration::from_secs(secs as u64),
                self.wait(&row.id, "not-running"),
            )
            .await
            {
                Ok(r) => r.map(|_| ()),
                Err(_) => {
                    let _ = shim::kill(&socket, libc::SIGKILL).await;
                    self.wait(&row.id, "not-running").await.map(|_| ())
                }
            }
        };
        waited?;
        self.events.container_event(
            "stop",
            &row.id,
            BTreeMap::from([("name".to_string(), row.name.clone())]),
        );
        Ok(true)
    }

    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        self.remove_with_volumes(name, force, false).await
    }

    /// `DELETE /containers/{id}?v=1`: also its anonymous volumes (unless
    /// another container still uses them).
    pub async fn remove_with_volumes(&self, name: &str, force: bool, volumes: bool) -> Result<()> {
        let row = self.find(name)?;
        if row.record["State"]["Running"].as_bool() == Some(true) {
            if !force {
                return Err(Error::conflict(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    row.name
                )));
            }
            let _ = shim::kill(&self.socket(&row.id), libc::SIGKILL).await;
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.wait(&row.id, "not-running"))
                    .await;
        }
        let dir = self.dir(&row.id);
        let _ = berth_snapshots::unmount(&dir.join("rootfs"));
        let _ = shim::call(&self.socket(&row.id), json!({"op": "shutdown"})).await;
        self.net_release(&row.id).await;
        // The row read again: the exit may have been recorded since `find`.
        let code = self
            .meta
            .read(|r| r.container(&row.id))?
            .map(|r| r.record["State"]["ExitCode"].as_i64().unwrap_or(0))
            .unwrap_or(0);
        {
            let mut removed = self.removed.lock().unwrap();
            if removed.len() >= REMEMBER_REMOVED {
                removed.pop_front();
            }
            removed.push_back((row.id.clone(), code));
        }
        self.meta.write(|w| w.delete_container(&row.id))?;
        self.health_forget(&row.id);
        self.notify();
        self.teardown_mounts(&row.id, &row.record);
        if volumes {
            self.remove_anonymous_volumes(&row.record);
        }
        self.event("destroy", &row.record);
        // One rename takes the directory (the read-write layer, logs,
        // bundle) out of sight; deleting its files, which can take tens of
        // milliseconds on a busy disk, goes on in the background. tmp/ is
        // emptied at every daemon start, so an interrupted delete is
        // finished then.
        let trash = self
            .cfg
            .data_root
            .join("tmp")
            .join(format!("container-{}", row.id));
        let doomed = match std::fs::rename(&dir, &trash) {
            Ok(()) => trash,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => dir.clone(),
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = std::fs::remove_dir_all(&doomed)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %doomed.display(), error = %e, "remove container directory");
            }
        });
        Ok(())
    }

    pub fn inspect(&self, name: &str) -> Result<Value> {
        let row = self.find(name)?;
        let mut rec = row.record;
        // Internal state, not part of Docker's inspect shape.
        if let Some(o) = rec.as_object_mut() {
            o.remove("HasBeenManuallyStopped");
            o.remove(mounts::RECORD_KEY);
        }
        self.health_overlay(&mut rec);
        let ids: Vec<String> = self
            .execs
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.container == row.id)
            .map(|e| e.id.clone())
            .collect();
        if !ids.is_empty() {
            rec["ExecIDs"] = json!(ids);
        }
        Ok(rec)
    }

    /// All container records (list filtering happens in the API layer).
    pub fn all(&self) -> Result<Vec<Value>> {
        Ok(self
            .meta
            .read(|r| r.containers())?
            .into_iter()
            .map(|c| {
                let mut r = c.record;
                self.health_overlay(&mut r);
                r
            })
            .collect())
    }

    pub fn rename(&self, name: &str, new_name: &str) -> Result<()> {
        let new_name = names::validate(new_name)?;
        let mut row = self.find(name)?;
        let old = row.name.clone();
        row.name = new_name.clone();
        row.record["Name"] = json!(format!("/{new_name}"));
        self.save(&row)?;
        self.events.container_event(
            "rename",
            &row.id,
            BTreeMap::from([
                ("name".to_string(), new_name),
                ("oldName".to_string(), format!("/{old}")),
            ]),
        );
        Ok(())
    }

    pub async fn pause(&self, name: &str, pause: bool) -> Result<()> {
        let row = self.find(name)?;
        let st = &row.record["State"];
        if st["Running"].as_bool() != Some(true) {
            return Err(Error::conflict(format!(
                "Container {} is not running",
                row.id
            )));
        }
        if pause && st["Paused"].as_bool() == Some(true) {
            return Err(Error::conflict(format!(
                "Container {} is already paused",
                row.id
            )));
        }
        if !pause && st["Paused"].as_bool() != Some(true) {
            return Err(Error::conflict(format!(
                "Container {} is not paused",
                row.id
            )));
        }
        shim::call(
            &self.socket(&row.id),
            json!({"op": if pause { "pause" } else { "resume" }}),
        )
        .await?;
        let rec = self.update(&row.id, |r| {
            r["State"]["Paused"] = json!(pause);
            r["State"]["Status"] = json!(if pause { "paused" } else { "running" });
        })?;
        self.event(if pause { "pause" } else { "unpause" }, &rec);
        Ok(())
    }

    pub async fn resize(&self, name: &str, height: u32, width: u32) -> Result<()> {
        let row = self.find(name)?;
        if row.record["State"]["Running"].as_bool() != Some(true) {
            return Err(Error::conflict(format!(
                "Container {} is not running",
                row.id
            )));
        }
        shim::call(
            &self.socket(&row.id),
            json!({"op": "resize", "height": height, "width": width}),
        )
        .await
        .map(|_| ())
    }

    /// Open an attach stream; returns (is tty, bytes already read, stream).
    /// A container not started yet (`docker run` attaches first) gets the
    /// stream handed to its shim at start, so no output is missed.
    pub async fn attach(
        &self,
        name: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<(bool, Vec<u8>, tokio::net::UnixStream)> {
        let row = self.find(name)?;
        let tty = row.record["Config"]["Tty"].as_bool().unwrap_or(false);
        let state = &row.record["State"];
        if state["Paused"].as_bool() == Some(true) {
            return Err(Error::conflict(format!(
                "container {name} is paused, unpause the container before attach"
            )));
        }
        if state["Running"].as_bool() != Some(true) {
            // As dockerd: the stream waits for the next start (the CLI
            // refuses `attach` to a stopped container itself).
            let (mine, theirs) = std::os::unix::net::UnixStream::pair()?;
            mine.set_nonblocking(true)?;
            self.pending_attach
                .lock()
                .unwrap()
                .insert(row.id.clone(), (theirs, [stdin, stdout, stderr]));
            return Ok((tty, vec![], tokio::net::UnixStream::from_std(mine)?));
        }
        let mut c = ShimConn::connect(&self.socket(&row.id)).await?;
        c.call(&json!({"op": "attach", "stdin": stdin, "stdout": stdout, "stderr": stderr}))
            .await?;
        let (buf, s) = c.into_stream();
        Ok((tty, buf, s))
    }

    /// Where a container's log is, and whether it uses a tty.
    pub fn log_info(&self, name: &str) -> Result<(PathBuf, bool, String)> {
        let row = self.find(name)?;
        if row.record["HostConfig"]["LogConfig"]["Type"] == "none" {
            return Err(Error::not_implemented(
                "configured logging driver does not support reading",
            ));
        }
        let path = PathBuf::from(row.record["LogPath"].as_str().unwrap_or(""));
        Ok((
            path,
            row.record["Config"]["Tty"].as_bool().unwrap_or(false),
            row.id,
        ))
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.meta
            .read(|r| r.container(id))
            .ok()
            .flatten()
            .is_some_and(|c| c.record["State"]["Running"].as_bool() == Some(true))
    }

    // ---- exec ----

    pub fn exec_create(&self, name: &str, body: &Value) -> Result<String> {
        let row = self.find(name)?;
        if row.record["State"]["Running"].as_bool() != Some(true) {
            return Err(Error::conflict(format!(
                "container {} is not running",
                row.id
            )));
        }
        if row.record["State"]["Paused"].as_bool() == Some(true) {
            return Err(Error::conflict(format!(
                "container {} is paused, unpause the container before exec",
                row.id
            )));
        }
        let cmd = str_list(&body["Cmd"])
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::invalid("No exec command specified"))?;
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut config = body.clone();
        config["Cmd"] = json!(cmd);
        self.execs.lock().unwrap().insert(
            id.clone(),
            Exec {
                id: id.clone(),
                container: row.id.clone(),
                config,
                running: false,
                exit_code: None,
                pid: 0,
            },
        );
        self.events.container_event(
            &format!("exec_create: {}", cmd.join(" ")),
            &row.id,
            BTreeMap::from([
                ("name".to_string(), row.name.clone()),
                ("execID".to_string(), id.clone()),
            ]),
        );
        Ok(id)
    }

    pub fn exec_get(&self, id: &str) -> Result<Exec> {
        self.execs
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("No such exec instance: {id}")))
    }

    /// Start an exec; unless detached returns (tty, buffered bytes, stream).
    pub async fn exec_start(
        self: &Arc<Self>,
        exec_id: &str,
        detach: bool,
    ) -> Result<Option<(bool, Vec<u8>, tokio::net::UnixStream)>> {
        let ex = self.exec_get(exec_id)?;
        if ex.running || ex.exit_code.is_some() {
            return Err(Error::conflict(format!(
                "Error: Exec command {exec_id} is already running"
            )));
        }
        let row = self.find(&ex.container)?;
        let rec = &row.record;
        let c = &ex.config;
        let tty = c["Tty"].as_bool().unwrap_or(false);
        let rootfs = self.dir(&row.id).join("rootfs");
        let user_spec = c["User"]
            .as_str()
            .filter(|u| !u.is_empty())
            .or(rec["Config"]["User"].as_str())
            .unwrap_or("");
        let user = spec::resolve_user(&rootfs, user_spec).map_err(Error::invalid)?;
        let env = merge_env(
            &str_list(&rec["Config"]["Env"]).unwrap_or_default(),
            &str_list(&c["Env"]).unwrap_or_default(),
        );
        let cwd = c["WorkingDir"]
            .as_str()
            .filter(|w| !w.is_empty())
            .or(rec["Config"]["WorkingDir"].as_str())
            .unwrap_or("/");
        let args = str_list(&c["Cmd"]).unwrap_or_default();
        let process = spec::process(&args, &env, cwd, &user, tty);
        let mut conn = ShimConn::connect(&self.socket(&row.id)).await?;
        let ans = conn
            .call(&json!({
                "op": "exec", "exec_id": exec_id, "process": process, "tty": tty,
                "stdin": c["AttachStdin"].as_bool().unwrap_or(false),
                "stdout": c["AttachStdout"].as_bool().unwrap_or(true),
                "stderr": c["AttachStderr"].as_bool().unwrap_or(true),
                "detach": detach,
            }))
            .await
            .map_err(|e| {
                Error::new(
                    e.kind,
                    format!("OCI runtime exec failed: exec failed: unable to start container process: {}: unknown", e.message),
                )
            })?;
        let pid = ans["pid"].as_i64().unwrap_or(0);
        if let Some(e) = self.execs.lock().unwrap().get_mut(exec_id) {
            e.running = true;
            e.pid = pid;
        }
        self.events.container_event(
            &format!("exec_start: {}", args.join(" ")),
            &row.id,
            BTreeMap::from([
                ("name".to_string(), row.name.clone()),
                ("execID".to_string(), exec_id.to_string()),
            ]),
        );
        let this = self.clone();
        let (eid, cid) = (exec_id.to_string(), row.id.clone());
        if detach {
            tokio::spawn(async move { this.exec_reap(&cid, &eid).await });
            return Ok(None);
        }
        let (buf, s) = conn.into_stream();
        Ok(Some((tty, buf, s)))
    }

    /// Ask the shim once whether an exec has exited, and record it.
    pub async fn exec_refresh(&self, exec_id: &str) -> bool {
        let Ok(ex) = self.exec_get(exec_id) else {
            return true;
        };
        match shim::call(
            &self.socket(&ex.container),
            json!({"op": "exec_state", "exec_id": exec_id}),
        )
        .await
        {
            Ok(st) if st["running"].as_bool() == Some(false) => {
                if let Some(e) = self.execs.lock().unwrap().get_mut(exec_id) {
                    e.running = false;
                    e.exit_code = st["exit_code"].as_i64();
                }
                true
            }
            Ok(_) => false,
            Err(_) => {
                if let Some(e) = self.execs.lock().unwrap().get_mut(exec_id) {
                    e.running = false;
                    e.exit_code.get_or_insert(126);
                }
                true
            }
        }
    }

    /// Collect an exec's exit code from the shim (after its stream ended).
    pub async fn exec_reap(&self, container: &str, exec_id: &str) {
        for _ in 0..600 {
            if self.exec_refresh(exec_id).await {
                let code = self
                    .exec_get(exec_id)
                    .ok()
                    .and_then(|e| e.exit_code)
                    .unwrap_or(-1);
                self.events.container_event(
                    "exec_die",
                    container,
                    BTreeMap::from([
                        ("execID".to_string(), exec_id.to_string()),
                        ("exitCode".to_string(), code.to_string()),
                    ]),
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn exec_resize(&self, exec_id: &str, height: u32, width: u32) -> Result<()> {
        let ex = self.exec_get(exec_id)?;
        shim::call(
            &self.socket(&ex.container),
            json!({"op": "exec_resize", "exec_id": exec_id, "height": height, "width": width}),
        )
        .await
        .map(|_| ())
    }

    /// Processes of a running container (for `top`): host PIDs in its cgroup.
    pub fn pid(&self, name: &str) -> Result<i64> {
        let row = self.find(name)?;
        if row.record["State"]["Running"].as_bool() != Some(true) {
            return Err(Error::conflict(format!(
                "container {} is not running",
                row.id
            )));
        }
        Ok(row.record["State"]["Pid"].as_i64().unwrap_or(0))
    }
}

/// A runtime's failure to start a container as the API reports it, with
/// the message and exit code its state records.
fn runtime_error(msg: String, code: i32) -> (Error, String, i32) {
    let hint = mounts::start_error_hint(&msg);
    let code = if hint.is_empty() { code } else { 127 };
    let kind = if code == 126 || code == 127 {
        ErrorKind::InvalidArgument
    } else {
        ErrorKind::Internal
    };
    let text = format!(
        "failed to create task for container: OCI runtime create failed: unable to start container process: {msg}: unknown{hint}"
    );
    (Error::new(kind, text), format!("{msg}{hint}"), code)
}

fn mount_rootfs(lowers: &[PathBuf], dir: &Path, rootfs: &Path) -> Result<()> {
    if is_mountpoint(rootfs) {
        return Ok(());
    }
    berth_snapshots::mount_overlay(lowers, &dir.join("upper"), &dir.join("work"), rootfs)
}

fn is_mountpoint(p: &Path) -> bool {
    let target = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert_eq!(
            parse_signal("BOGUS").unwrap_err().message,
            "Invalid signal: BOGUS"
        );
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn env_merges_by_key() {
        assert_eq!(
            merge_env(
                &["PATH=/bin".into(), "A=1".into()],
                &["A=2".into(), "B=3".into()]
            ),
            vec!["PATH=/bin", "A=2", "B=3"]
        );
    }
}
