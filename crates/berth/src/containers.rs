//! Container commands: run, create, start, stop, restart, kill, pause,
//! unpause, wait, attach, logs, ps, rm, rename, top, exec, container prune,
//! container inspect (and the `inspect` that tries containers, then images),
//! and the `container` group. Flags, output and exit codes follow docker 28.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{ArgAction, Args, Subcommand};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

use crate::Exit;
use crate::client::{Client, DaemonError, body_stream, daemon_status, empty, enc};
use crate::hijack::{self, Demux, End, StdSink, StreamOpts};
use crate::images::{confirm, filters_json};
use crate::tty;
use berth_format::{self as format, created_at, human_since, human_size_with_precision};

type Io = TokioIo<hyper::upgrade::Upgraded>;

// ---------------------------------------------------------------- groups

#[derive(Subcommand)]
#[command(defer = true)]
pub enum ContainerCmd {
    /// Attach local standard input, output, and error streams to a running container
    Attach(AttachArgs),
    /// Create a new image from a container's changes
    Commit(crate::commit::CommitArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(crate::cp::CpArgs),
    /// Create a new container
    Create(CreateArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(crate::commit::DiffArgs),
    /// Execute a command in a running container
    Exec(ExecArgs),
    /// Export a container's filesystem as a tar archive
    Export(crate::cp::ExportArgs),
    /// Display detailed information on one or more containers
    Inspect(ContainerInspectArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// List containers
    #[command(aliases = ["ps", "list"])]
    Ls(PsArgs),
    /// Pause all processes within one or more containers
    Pause(NamesArgs),
    /// Remove all stopped containers
    Prune(PruneArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Remove one or more containers
    #[command(aliases = ["remove"])]
    Rm(RmArgs),
    /// Create and run a new container from an image
    Run(RunArgs),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Display the running processes of a container
    Top(TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(crate::ops::StatsArgs),
    /// Unpause all processes within one or more containers
    Unpause(NamesArgs),
    /// Update configuration of one or more containers
    Update(crate::ops::UpdateArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(NamesArgs),
}

pub async fn container(c: &Client, cmd: ContainerCmd) -> Result<()> {
    match cmd {
        ContainerCmd::Attach(a) => attach(c, a).await,
        ContainerCmd::Commit(a) => crate::commit::commit(c, a).await,
        ContainerCmd::Cp(a) => crate::cp::cp(c, a).await,
        ContainerCmd::Create(a) => create(c, a).await,
        ContainerCmd::Diff(a) => crate::commit::diff(c, a).await,
        ContainerCmd::Export(a) => crate::cp::export(c, a).await,
        ContainerCmd::Exec(a) => exec(c, a).await,
        ContainerCmd::Inspect(a) => container_inspect(c, a).await,
        ContainerCmd::Kill(a) => kill(c, a).await,
        ContainerCmd::Logs(a) => logs(c, a).await,
        ContainerCmd::Ls(a) => ps(c, a).await,
        ContainerCmd::Pause(a) => pause(c, a, true).await,
        ContainerCmd::Prune(a) => prune(c, a).await,
        ContainerCmd::Rename(a) => rename(c, a).await,
        ContainerCmd::Restart(a) => stop(c, a, true).await,
        ContainerCmd::Rm(a) => rm(c, a).await,
        ContainerCmd::Run(a) => run(c, a).await,
        ContainerCmd::Start(a) => start(c, a).await,
        ContainerCmd::Stop(a) => stop(c, a, false).await,
        ContainerCmd::Top(a) => top(c, a).await,
        ContainerCmd::Stats(a) => crate::ops::stats(c, a).await,
        ContainerCmd::Unpause(a) => pause(c, a, false).await,
        ContainerCmd::Update(a) => crate::ops::update(c, a).await,
        ContainerCmd::Wait(a) => wait(c, a).await,
    }
}

// ---------------------------------------------------------------- helpers

fn cpath(name: &str) -> String {
    enc(name)
}

/// The text docker prints for an error.
fn err_text(e: &anyhow::Error) -> String {
    match e.downcast_ref::<DaemonError>() {
        Some(d) => d.to_string(),
        None => format!("{e:#}"),
    }
}

/// docker's `StatusError` for run/create: the error, a pointer to `--help`,
/// and the chosen exit status.
fn status_error(e: &anyhow::Error, cmd: &str, code: u8) -> anyhow::Error {
    if let Some(FlagError(msg)) = e.downcast_ref::<FlagError>() {
        let usage = match cmd {
            "exec" => "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
            "create" => "create [OPTIONS] IMAGE [COMMAND] [ARG...]",
            _ => "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
        };
        eprintln!(
            "{msg}\n\nUsage:  berth {usage}\n\nRun 'berth {cmd} --help' for more information"
        );
        return Exit(125).into();
    }
    eprintln!(
        "berth: {}\n\nRun 'berth {cmd} --help' for more information",
        err_text(e)
    );
    Exit(code).into()
}

/// A positional that takes hyphen values (run's image, exec's container)
/// holding a flag: one the parser does not know, in docker's words.
fn not_a_flag(arg: &str) -> Result<()> {
    match arg.strip_prefix('-') {
        Some(rest) if !rest.is_empty() => Err(FlagError(match rest.strip_prefix('-') {
            Some(_) => format!("unknown flag: {arg}"),
            None => format!(
                "unknown shorthand flag: '{}' in {arg}",
                rest.chars().next().unwrap_or('-')
            ),
        })
        .into()),
        _ => Ok(()),
    }
}

/// A bad flag value, reported as docker's flag parser does.
#[derive(Debug)]
pub(crate) struct FlagError(pub(crate) String);
impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for FlagError {}

/// docker's `toStatusError`: a command that cannot be found exits 127, one
/// that cannot be run 126, anything else the engine's 125.
fn run_exit_code(msg: &str) -> u8 {
    let msg = msg.to_lowercase();
    if msg.contains("executable file not found")
        || msg.contains("no such file or directory")
        || msg.contains("system cannot find the file specified")
    {
        127
    } else if msg.contains("permission denied") || msg.contains("is a directory") {
        126
    } else {
        125
    }
}

fn exit_with(code: i64) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Exit((code & 0xff) as u8).into())
    }
}

/// Errors of a multi-container command, printed after the successes (docker's
/// `errors.Join`), with exit status 1.
fn finish(errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    eprintln!("{}", errors.join("\n"));
    Err(Exit(1).into())
}

/// Run `op` on every name concurrently; print each name that succeeded (in
/// the order given) and then the errors.
async fn each<F, Fut>(names: &[String], op: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let results = futures_util::future::join_all(names.iter().map(|n| op(n.clone()))).await;
    let mut errors = Vec::new();
    for (n, r) in names.iter().zip(results) {
        match r {
            Ok(()) => println!("{n}"),
            Err(e) => errors.push(err_text(&e)),
        }
    }
    finish(errors)
}

async fn post(c: &Client, path: &str) -> Result<()> {
    let resp = c.request(Method::POST, path, empty(), None).await?;
    let _ = resp.into_body().collect().await;
    Ok(())
}

async fn inspect_container(c: &Client, name: &str) -> Result<Value> {
    c.get_value(&format!("/containers/{}/json", cpath(name)))
        .await
}

fn is_conflict(e: &anyhow::Error) -> bool {
    daemon_status(e) == Some(StatusCode::CONFLICT)
}

// ---------------------------------------------------------------- parsing

pub use berth_format::ram_in_bytes;

/// docker's `--cpus`: a decimal number of CPUs to nano-CPUs, exactly.
pub fn parse_cpus(s: &str) -> Result<i64, String> {
    let bad = || format!("failed to parse {s} as a rational number");
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let frac_trim = frac.trim_end_matches('0');
    if frac_trim.len() > 9 {
        return Err("value is too precise".into());
    }
    let whole: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut nanos: i64 = 0;
    for (i, d) in frac_trim.bytes().enumerate() {
        nanos += (d - b'0') as i64 * 10i64.pow(8 - i as u32);
    }
    let v = whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(nanos))
        .ok_or_else(bad)?;
    Ok(if neg { -v } else { v })
}

/// docker's `-e`: `KEY=VALUE` as given; a bare `KEY` takes our value if set.
pub fn env_flag(v: &str) -> Result<String> {
    let (k, has_value) = match v.split_once('=') {
        Some((k, _)) => (k, true),
        None => (v, false),
    };
    if k.is_empty() {
        bail!("invalid environment variable: {v}");
    }
    if has_value {
        return Ok(v.to_string());
    }
    Ok(match std::env::var(k) {
        Ok(val) => format!("{k}={val}"),
        Err(_) => v.to_string(),
    })
}

/// docker's key=value files (`--env-file`, `--label-file`): blank lines and
/// `#` comments skipped, leading space trimmed, keys without whitespace; a
/// bare key takes our environment's value when `env_lookup` (env files).
pub fn parse_kv_file(text: &str, env_lookup: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = if i == 0 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        };
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (var, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if var.is_empty() {
            bail!("no variable name on line '{line}'");
        }
        if var.contains([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']) {
            bail!("variable '{var}' contains whitespaces");
        }
        match value {
            Some(v) => out.push(format!("{var}={v}")),
            None => match std::env::var(var.trim()).ok().filter(|_| env_lookup) {
                Some(v) => out.push(format!("{}={v}", var.trim())),
                None => out.push(line.trim().to_string()),
            },
        }
    }
    Ok(out)
}

fn read_kv_files(files: &[String], env_lookup: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("open {f}"))?;
        out.extend(parse_kv_file(&text, env_lookup)?);
    }
    Ok(out)
}

/// `-l k=v` / `-l k` to a label map (a bare key has the empty value).
pub fn labels_map(labels: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    for l in labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        m.insert(k.to_string(), json!(v));
    }
    m
}

/// docker's `--restart`: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
pub fn restart_policy(s: &str) -> Result<Value> {
    let (name, count) = s.split_once(':').unwrap_or((s, ""));
    if s.contains(':') && name.is_empty() {
        bail!("invalid restart policy format: no policy provided before colon");
    }
    let count: i64 = if count.is_empty() {
        0
    } else {
        count.parse().map_err(|_| {
            anyhow!("invalid restart policy format: maximum retry count must be an integer")
        })?
    };
    Ok(json!({"Name": name, "MaximumRetryCount": count}))
}

// ---------------------------------------------------------------- create / run

// The flags `create` and `run` share (docker's containerOptions). Plain
// comments: a doc comment here would become their `--help` title (`defer`).
#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct CreateOpts {
    /// Attach to STDIN, STDOUT or STDERR
    #[arg(short = 'a', long = "attach")]
    attach: Vec<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<i64>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    env_file: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    dns: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", alias = "dns-opt")]
    dns_option: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// Container NIS domain name
    #[arg(long)]
    domainname: Option<String>,
    /// Expose a port or a range of ports
    #[arg(long)]
    expose: Vec<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    ip: Option<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address")]
    mac_address: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    network_alias: Vec<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    init: bool,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long = "pull", value_enum, default_value = "missing")]
    pull: crate::pull::PullPolicy,
    /// Set platform if server is multi-platform capable
    #[arg(long = "platform")]
    platform: Option<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// Read in a line delimited file of labels
    #[arg(long = "label-file")]
    label_file: Vec<String>,
    /// Logging driver for the container
    #[arg(long = "log-driver")]
    log_driver: Option<String>,
    /// Log driver options
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// Memory limit
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Connect a container to a network
    #[arg(long, alias = "net")]
    network: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Give extended privileges to this container
    #[arg(long)]
    privileged: bool,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    read_only: bool,
    /// Restart policy to apply when a container exits
    #[arg(long, default_value = "no")]
    restart: String,
    /// Automatically remove the container and its associated anonymous volumes when it exits
    #[arg(long)]
    rm: bool,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout", allow_hyphen_values = true)]
    stop_timeout: Option<i64>,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Bind mount a volume
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Attach a filesystem mount to the container
    #[arg(long = "mount")]
    mount: Vec<String>,
    /// Mount a tmpfs directory
    #[arg(long = "tmpfs")]
    tmpfs: Vec<String>,
    /// Mount volumes from the specified container(s)
    #[arg(long = "volumes-from")]
    volumes_from: Vec<String>,
    /// Optional volume driver for the container
    #[arg(long = "volume-driver")]
    volume_driver: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    #[command(flatten)]
    limits: crate::ops::LimitOpts,
    /// Print help
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    args: Vec<String>,
}

impl CreateOpts {
    fn image(&self) -> &str {
        &self.args[0]
    }

    /// Docker's create request for these flags.
    fn config(&self) -> Result<Value> {
        // The image takes hyphen values (so `run IMAGE -x` passes `-x` on);
        // one in the image's place is a flag this parser does not know.
        not_a_flag(self.image())?;
        let mut env = read_kv_files(&self.env_file, true)?;
        for e in &self.env {
            env.push(env_flag(e)?);
        }
        let mut labels = labels_map(&read_kv_files(&self.label_file, false)?);
        labels.extend(labels_map(&self.label));
        for a in &self.attach {
            if !["stdin", "stdout", "stderr"].contains(&a.to_lowercase().as_str()) {
                bail!(
                    "invalid argument \"{a}\" for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR"
                );
            }
        }
        let attached = |s: &str| self.attach.iter().any(|a| a.eq_ignore_ascii_case(s));
        let attach_stdin = attached("stdin") || self.interactive;
        let (attach_stdout, attach_stderr) = if self.attach.is_empty() {
            (true, true)
        } else {
            (attached("stdout"), attached("stderr"))
        };
        let cmd = &self.args[1..];
        let mut cfg = json!({
            "Hostname": self.hostname.clone().unwrap_or_default(),
            "Domainname": self.domainname.clone().unwrap_or_default(),
            "User": self.user.clone().unwrap_or_default(),
            "AttachStdin": attach_stdin,
            "AttachStdout": attach_stdout,
            "AttachStderr": attach_stderr,
            "Tty": self.tty,
            "OpenStdin": self.interactive,
            "StdinOnce": self.interactive && attach_stdin,
            "Env": env,
            "Cmd": if cmd.is_empty() { Value::Null } else { json!(cmd) },
            "Image": self.image(),
            "Volumes": null,
            "WorkingDir": self.workdir.clone().unwrap_or_default(),
            "Entrypoint": null,
            "Labels": labels,
        });
        if let Some(ep) = &self.entrypoint {
            // An empty --entrypoint clears the image's.
            cfg["Entrypoint"] = if ep.is_empty() {
                json!([])
            } else {
                json!([ep])
            };
        }
        if let Some(s) = &self.stop_signal {
            cfg["StopSignal"] = json!(s);
        }
        if let Some(t) = self.stop_timeout {
            cfg["StopTimeout"] = json!(t);
        }
        let memory = match &self.memory {
            Some(m) => ram_in_bytes(m).map_err(|e| {
                FlagError(format!(
                    "invalid argument {m:?} for \"-m, --memory\" flag: {e}"
                ))
            })?,
            None => 0,
        };
        let cpus = match &self.cpus {
            Some(n) => parse_cpus(n).map_err(|e| {
                FlagError(format!("invalid argument {n:?} for \"--cpus\" flag: {e}"))
            })?,
            None => 0,
        };
        let mut log_config = Map::new();
        for o in &self.log_opt {
            let (k, v) = o.split_once('=').unwrap_or((o, ""));
            log_config.insert(k.to_string(), json!(v));
        }
        if self.log_driver.as_deref() == Some("none") && !log_config.is_empty() {
            bail!("invalid logging opts for driver none");
        }
        let mut hc = json!({
            "AutoRemove": self.rm,
            "Memory": memory,
            "NanoCpus": cpus,
            "CpuShares": self.cpu_shares.unwrap_or(0),
            "RestartPolicy": restart_policy(&self.restart)?,
            "Privileged": self.privileged,
            "ReadonlyRootfs": self.read_only,
            "LogConfig": {"Type": self.log_driver.clone().unwrap_or_default(), "Config": log_config},
        });
        if self.init {
            hc["Init"] = json!(true);
        }
        if let Some(p) = self.pids_limit {
            hc["PidsLimit"] = json!(p);
        }
        let mut exposed = Map::new();
        let mut bindings = Map::new();
        for e in &self.expose {
            for k in crate::network::parse_expose(e)? {
                exposed.insert(k, json!({}));
            }
        }
        for p in &self.publish {
            for (k, ip, port) in crate::network::parse_publish(p)? {
                exposed.insert(k.clone(), json!({}));
                let list = bindings.entry(k).or_insert_with(|| json!([]));
                list.as_array_mut()
                    .expect("array")
                    .push(json!({"HostIp": ip, "HostPort": port}));
            }
        }
        if !exposed.is_empty() {
            cfg["ExposedPorts"] = Value::Object(exposed);
        }
        hc["PortBindings"] = Value::Object(bindings);
        hc["PublishAllPorts"] = json!(self.publish_all);
        let mut hosts = Vec::new();
        for h in &self.add_host {
            hosts.push(crate::network::check_add_host(h)?);
        }
        hc["ExtraHosts"] = json!(hosts);
        hc["Dns"] = json!(self.dns);
        hc["DnsSearch"] = json!(self.dns_search);
        hc["DnsOptions"] = json!(self.dns_option);
        let mode = self.network.clone().unwrap_or_else(|| "default".into());
        hc["NetworkMode"] = json!(mode);
        let mut ep = Map::new();
        if let Some(ip) = &self.ip {
            ep.insert("IPAMConfig".into(), json!({"IPv4Address": ip}));
        }
        if !self.network_alias.is_empty() {
            ep.insert("Aliases".into(), json!(self.network_alias));
        }
        if let Some(m) = &self.mac_address {
            ep.insert("MacAddress".into(), json!(m));
        }
        if !ep.is_empty() {
            cfg["NetworkingConfig"] = json!({"EndpointsConfig": {mode: ep}});
        }
        crate::volumes::apply_mount_flags(
            &mut cfg,
            &mut hc,
            &self.volume,
            &self.mount,
            &self.tmpfs,
            &self.volumes_from,
        )?;
        if let Some(d) = &self.volume_driver {
            hc["VolumeDriver"] = json!(d);
        }
        if self.tty
            && tty::stdout_is_terminal()
            && let Some((h, w)) = tty::size()
        {
            hc["ConsoleSize"] = json!([h, w]);
        }
        self.limits.apply(&mut cfg, &mut hc)?;
        cfg["HostConfig"] = hc;
        Ok(cfg)
    }
}

#[derive(Args)]
#[command(override_usage = "berth create [OPTIONS] IMAGE [COMMAND] [ARG...]")]
pub struct CreateArgs {
    #[command(flatten)]
    opts: CreateOpts,
}

#[derive(Args)]
#[command(override_usage = "berth run [OPTIONS] IMAGE [COMMAND] [ARG...]")]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    detach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Proxy received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    sig_proxy: bool,
    #[command(flatten)]
    opts: CreateOpts,
}

/// `POST /containers/create`; prints the warnings. A missing image is
/// reported as docker does when its pull fails.
async fn create_container(c: &Client, o: &CreateOpts, cfg: &Value) -> Result<String> {
    let path = match &o.name {
        Some(n) => format!("/containers/create?name={}", enc(n)),
        None => "/containers/create".to_string(),
    };
    let resp: Value =
        crate::pull::create_or_pull(c, o.image(), o.platform.as_deref(), o.pull, || {
            c.post_json(&path, cfg)
        })
        .await?;
    for w in resp["Warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str() {
            eprintln!("WARNING: {w}");
        }
    }
    resp["Id"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("daemon returned no container ID"))
}

pub async fn create(c: &Client, a: CreateArgs) -> Result<()> {
    let cfg = a
        .opts
        .config()
        .map_err(|e| status_error(&e, "create", 125))?;
    // Unlike run, create reports the daemon's errors plainly (exit 1).
    let id = create_container(c, &a.opts, &cfg).await?;
    println!("{id}");
    Ok(())
}

/// docker's waitExitOrRemoved: the wait request is made now (before the
/// container starts, so `next-exit` is this run's exit), the exit code
/// arrives when it ends.
async fn wait_exit(c: &Client, id: &str, removed: bool) -> tokio::task::JoinHandle<i64> {
    let cond = if removed { "removed" } else { "next-exit" };
    let resp = c
        .request(
            Method::POST,
            &format!("/containers/{}/wait?condition={cond}", cpath(id)),
            empty(),
            None,
        )
        .await;
    tokio::spawn(async move {
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error waiting for container: {}", err_text(&e));
                return 125;
            }
        };
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                eprintln!("error waiting for container: {e}");
                return 125;
            }
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if let Some(m) = v["Error"]["Message"].as_str() {
            eprintln!("Error waiting for container: {m}");
            return 125;
        }
        v["StatusCode"].as_i64().unwrap_or(125)
    })
}

fn attach_path(id: &str, stdin: bool, stdout: bool, stderr: bool) -> String {
    format!(
        "/containers/{}/attach?stream=1&stdin={}&stdout={}&stderr={}",
        cpath(id),
        stdin as u8,
        stdout as u8,
        stderr as u8
    )
}

/// An attach made before the container starts, so that no output is lost.
/// `None` when the daemon cannot attach to a container that is not running
/// yet (it answers 409); the session then attaches after the start.
async fn early_attach(
    c: &Client,
    id: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<Option<Io>> {
    match c
        .hijack(&attach_path(id, stdin, stdout, stderr), None)
        .await
    {
        Ok(io) => Ok(Some(io)),
        Err(e) if is_conflict(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What an attached session streams.
struct Session {
    id: String,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    detach_keys: Vec<u8>,
    /// When the start was asked for: a late session reads the log from here
    /// on, not what earlier runs wrote.
    since: chrono::DateTime<chrono::Utc>,
}

impl Session {
    async fn run(&self, c: &Client, early: Option<Io>) -> Result<End> {
        let io = match early {
            Some(io) => io,
            None => {
                // Attached only now: without stdin the log has every byte of
                // the output; with stdin, attach (or read the log if the
                // container is already gone).
                if !self.stdin {
                    self.follow_logs(c).await?;
                    return Ok(End::Eof);
                }
                match c
                    .hijack(&attach_path(&self.id, true, self.stdout, self.stderr), None)
                    .await
                {
                    Ok(io) => io,
                    Err(e) if is_conflict(&e) => {
                        self.follow_logs(c).await?;
                        return Ok(End::Eof);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        hijack::stream(
            io,
            StreamOpts {
                tty: self.tty,
                stdin: self.stdin,
                raw: self.tty && self.stdin && tty::stdin_is_terminal(),
                detach_keys: Some(self.detach_keys.clone()),
            },
        )
        .await
    }

    async fn follow_logs(&self, c: &Client) -> Result<()> {
        if !self.stdout && !self.stderr {
            return Ok(());
        }
        let path = format!(
            "/containers/{}/logs?follow=1&stdout={}&stderr={}&since={}.{:09}",
            cpath(&self.id),
            self.stdout as u8,
            self.stderr as u8,
            self.since.timestamp(),
            self.since.timestamp_subsec_nanos()
        );
        match c.request(Method::GET, &path, empty(), None).await {
            Ok(resp) => copy_output(resp, self.tty).await,
            Err(e) if daemon_status(&e) == Some(StatusCode::NOT_FOUND) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A log or attach body to our stdout/stderr.
async fn copy_output(resp: hyper::Response<hyper::body::Incoming>, tty: bool) -> Result<()> {
    use crate::hijack::Sink;
    let mut chunks = Box::pin(body_stream(resp));
    let mut demux = Demux::new();
    let mut sink = StdSink;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if tty {
            sink.out(&chunk)
                .map_err(|e| hijack::closed_output(e.into()))?;
        } else {
            demux
                .feed(&chunk, &mut sink)
                .map_err(hijack::closed_output)?;
        }
    }
    Ok(())
}

/// Keep the container's tty the size of ours: now (retrying while the
/// process starts, as docker does) and on every SIGWINCH.
fn monitor_size(c: &Client, resize_path: String) {
    let c = c.clone();
    tokio::spawn(async move {
        let resize = |c: Client, p: String| async move {
            match tty::size() {
                Some((h, w)) => post(&c, &format!("{p}?h={h}&w={w}")).await,
                None => Ok(()),
            }
        };
        for retry in 0..10u64 {
            if resize(c.clone(), resize_path.clone()).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10 * (retry + 1))).await;
        }
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            let _ = resize(c.clone(), resize_path.clone()).await;
        }
    });
}

/// `--sig-proxy`: signals we receive go to the container (`/kill?signal=`).
fn forward_signals(c: &Client, id: &str) {
    const SIGNALS: [(i32, &str); 6] = [
        (libc::SIGINT, "INT"),
        (libc::SIGTERM, "TERM"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    for (n, name) in SIGNALS {
        let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(n))
        else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(name).is_err() {
                    break;
                }
            }
        });
    }
    let c = c.clone();
    let path = format!("/containers/{}/kill", cpath(id));
    tokio::spawn(async move {
        while let Some(sig) = rx.recv().await {
            let _ = post(&c, &format!("{path}?signal={sig}")).await;
        }
    });
}

fn detach_keys(flag: Option<&str>) -> Result<Vec<u8>> {
    tty::parse_detach_keys(flag.unwrap_or(tty::DEFAULT_DETACH_KEYS))
}

fn check_tty(attach_stdin: bool, tty_mode: bool) -> Result<()> {
    if tty_mode && attach_stdin && !tty::stdin_is_terminal() {
        bail!("the input device is not a TTY");
    }
    Ok(())
}

pub async fn run(c: &Client, a: RunArgs) -> Result<()> {
    let o = &a.opts;
    let mut cfg = o.config().map_err(|e| status_error(&e, "run", 125))?;
    if a.detach {
        if !o.attach.is_empty() {
            return Err(status_error(
                &anyhow!("Conflicting options: -a and -d"),
                "run",
                125,
            ));
        }
        for k in ["AttachStdin", "AttachStdout", "AttachStderr", "StdinOnce"] {
            cfg[k] = json!(false);
        }
    } else {
        check_tty(cfg["AttachStdin"] == true, o.tty)?;
    }
    let keys = detach_keys(a.detach_keys.as_deref()).map_err(|e| status_error(&e, "run", 125))?;
    let id = match create_container(c, o, &cfg).await {
        Ok(id) => id,
        Err(e) => return Err(status_error(&e, "run", run_exit_code(&err_text(&e)))),
    };
    let start_path = format!("/containers/{}/start", cpath(&id));
    if a.detach {
        if let Err(e) = post(c, &start_path).await {
            return Err(status_error(&e, "run", run_exit_code(&err_text(&e))));
        }
        println!("{id}");
        return Ok(());
    }
    let session = Session {
        id: id.clone(),
        tty: o.tty,
        stdin: cfg["AttachStdin"] == true,
        stdout: cfg["AttachStdout"] == true,
        stderr: cfg["AttachStderr"] == true,
        detach_keys: keys,
        since: chrono::Utc::now(),
    };
    let early = early_attach(c, &id, session.stdin, session.stdout, session.stderr).await?;
    let status = wait_exit(c, &id, o.rm).await;
    if a.sig_proxy && !o.tty {
        forward_signals(c, &id);
    }
    if let Err(e) = post(c, &start_path).await {
        drop(early);
        if o.rm {
            // docker waits for the daemon to remove it; do it ourselves if
            // the daemon does not remove a container that never started.
            if tokio::time::timeout(Duration::from_secs(2), status)
                .await
                .is_err()
            {
                let _ = c
                    .request(
                        Method::DELETE,
                        &format!("/containers/{}?force=1", cpath(&id)),
                        empty(),
                        None,
                    )
                    .await;
            }
        }
        return Err(status_error(&e, "run", run_exit_code(&err_text(&e))));
    }
    if o.tty && tty::stdout_is_terminal() {
        monitor_size(c, format!("/containers/{}/resize", cpath(&id)));
    }
    if session.run(c, early).await? == End::Detached {
        return Ok(());
    }
    exit_with(status.await.unwrap_or(125))
}

// ---------------------------------------------------------------- start / attach

#[derive(Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    attach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    interactive: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn start(c: &Client, a: StartArgs) -> Result<()> {
    if !(a.attach || a.interactive) {
        let mut failed = Vec::new();
        for n in &a.containers {
            match post(c, &format!("/containers/{}/start", cpath(n))).await {
                Ok(()) => println!("{n}"),
                Err(e) => {
                    eprintln!("{}", err_text(&e));
                    failed.push(n.clone());
                }
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        bail!("Error: failed to start containers: {}", failed.join(", "));
    }
    if a.containers.len() > 1 {
        bail!("you cannot start and attach multiple containers at once");
    }
    let info = inspect_container(c, &a.containers[0]).await?;
    let id = info["Id"].as_str().unwrap_or_default().to_string();
    let tty = info["Config"]["Tty"] == true;
    let keys = detach_keys(a.detach_keys.as_deref())?;
    if !tty {
        forward_signals(c, &id);
    }
    let session = Session {
        id: id.clone(),
        tty,
        stdin: a.interactive && info["Config"]["OpenStdin"] == true,
        stdout: true,
        stderr: true,
        detach_keys: keys,
        since: chrono::Utc::now(),
    };
    let early = early_attach(c, &id, session.stdin, true, true).await?;
    let status = wait_exit(c, &id, info["HostConfig"]["AutoRemove"] == true).await;
    if let Err(e) = post(c, &format!("/containers/{}/start", cpath(&id))).await {
        drop(early);
        return Err(e);
    }
    if tty && tty::stdout_is_terminal() {
        monitor_size(c, format!("/containers/{}/resize", cpath(&id)));
    }
    if session.run(c, early).await? == End::Detached {
        return Ok(());
    }
    exit_with(status.await.unwrap_or(125))
}

#[derive(Args)]
pub struct AttachArgs {
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    sig_proxy: bool,
    container: String,
}

fn check_attachable(info: &Value) -> Result<()> {
    let st = &info["State"];
    if st["Running"] != true {
        bail!("You cannot attach to a stopped container, start it first");
    }
    if st["Paused"] == true {
        bail!("You cannot attach to a paused container, unpause it first");
    }
    if st["Restarting"] == true {
        bail!("You cannot attach to a restarting container, wait until it is running");
    }
    Ok(())
}

pub async fn attach(c: &Client, a: AttachArgs) -> Result<()> {
    let info = inspect_container(c, &a.container).await?;
    check_attachable(&info)?;
    let id = info["Id"].as_str().unwrap_or_default().to_string();
    let tty = info["Config"]["Tty"] == true;
    check_tty(!a.no_stdin, tty)?;
    let keys = detach_keys(a.detach_keys.as_deref())?;
    let stdin = !a.no_stdin && info["Config"]["OpenStdin"] == true;
    if a.sig_proxy && !tty {
        forward_signals(c, &id);
    }
    let io = c.hijack(&attach_path(&id, stdin, true, true), None).await?;
    let status = wait_not_running(c, &id).await;
    check_attachable(&inspect_container(c, &id).await?)?;
    if tty && tty::stdout_is_terminal() {
        monitor_size(c, format!("/containers/{}/resize", cpath(&id)));
    }
    let end = hijack::stream(
        io,
        StreamOpts {
            tty,
            stdin,
            raw: tty && stdin && tty::stdin_is_terminal(),
            detach_keys: Some(keys),
        },
    )
    .await?;
    if end == End::Detached {
        return Ok(());
    }
    exit_with(status.await.unwrap_or(125))
}

async fn wait_not_running(c: &Client, id: &str) -> tokio::task::JoinHandle<i64> {
    let resp = c
        .request(
            Method::POST,
            &format!("/containers/{}/wait", cpath(id)),
            empty(),
            None,
        )
        .await;
    tokio::spawn(async move {
        let Ok(resp) = resp else { return 125 };
        let Ok(body) = resp.into_body().collect().await else {
            return 125;
        };
        let v: Value = serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null);
        v["StatusCode"].as_i64().unwrap_or(125)
    })
}

// ---------------------------------------------------------------- exec

#[derive(Args)]
#[command(override_usage = "berth exec [OPTIONS] CONTAINER COMMAND [ARG...]")]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    env_file: Vec<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// CONTAINER COMMAND [ARG...]
    #[arg(
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CONTAINER COMMAND [ARG...]"
    )]
    args: Vec<String>,
}

pub async fn exec(c: &Client, a: ExecArgs) -> Result<()> {
    let container = &a.args[0];
    not_a_flag(container).map_err(|e| status_error(&e, "exec", 125))?;
    let mut env = read_kv_files(&a.env_file, true)?;
    for e in &a.env {
        env.push(env_flag(e)?);
    }
    let keys = detach_keys(a.detach_keys.as_deref())?;
    let mut body = json!({
        "User": a.user.clone().unwrap_or_default(),
        "Privileged": a.privileged,
        "Tty": a.tty,
        "AttachStdin": a.interactive && !a.detach,
        "AttachStdout": !a.detach,
        "AttachStderr": !a.detach,
        "DetachKeys": a.detach_keys.clone().unwrap_or_default(),
        "Env": env,
        "WorkingDir": a.workdir.clone().unwrap_or_default(),
        "Cmd": &a.args[1..],
    });
    if a.tty
        && tty::stdout_is_terminal()
        && let Some((h, w)) = tty::size()
    {
        body["ConsoleSize"] = json!([h, w]);
    }
    let created: Value = c
        .post_json(&format!("/containers/{}/exec", cpath(container)), &body)
        .await?;
    let exec_id = created["Id"]
        .as_str()
        .ok_or_else(|| anyhow!("daemon returned no exec ID"))?
        .to_string();
    let start_path = format!("/exec/{exec_id}/start");
    if a.detach {
        c.post_json::<Value>(&start_path, &json!({"Detach": true, "Tty": a.tty}))
            .await?;
        return Ok(());
    }
    check_tty(a.interactive, a.tty)?;
    let io = match c
        .hijack(&start_path, Some(&json!({"Detach": false, "Tty": a.tty})))
        .await
    {
        Ok(io) => io,
        Err(e) => {
            // docker's daemon reports a process that cannot start in the
            // stream, and its exit code (127 not found, 126 not executable)
            // as the exec's.
            if let Some(d) = e.downcast_ref::<DaemonError>()
                && d.status == StatusCode::BAD_REQUEST
                && let code @ (126 | 127) = run_exit_code(&d.message)
            {
                println!("{}\r", d.message);
                return Err(Exit(code).into());
            }
            return Err(e);
        }
    };
    if a.tty && tty::stdout_is_terminal() {
        monitor_size(c, format!("/exec/{exec_id}/resize"));
    }
    let end = hijack::stream(
        io,
        StreamOpts {
            tty: a.tty,
            stdin: a.interactive,
            raw: a.tty && a.interactive && tty::stdin_is_terminal(),
            detach_keys: Some(keys),
        },
    )
    .await?;
    if end == End::Detached {
        return Ok(());
    }
    // The daemon collects the exit code as the stream ends; give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = c.get_value(&format!("/exec/{exec_id}/json")).await?;
        let code = v["ExitCode"].as_i64();
        if (v["Running"] != true && code.is_some()) || tokio::time::Instant::now() > deadline {
            return exit_with(code.unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- stop & co

#[derive(Args)]
pub struct StopArgs {
    /// Signal to send to the container
    #[arg(short = 's', long)]
    signal: Option<String>,
    /// Seconds to wait before killing the container
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        allow_hyphen_values = true
    )]
    time: Option<i64>,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn stop(c: &Client, a: StopArgs, restart: bool) -> Result<()> {
    let mut q = Vec::new();
    if let Some(s) = &a.signal {
        q.push(format!("signal={}", enc(s)));
    }
    if let Some(t) = a.time {
        q.push(format!("t={t}"));
    }
    let verb = if restart { "restart" } else { "stop" };
    let q = if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    };
    each(&a.containers, |n| {
        let path = format!("/containers/{}/{verb}{q}", cpath(&n));
        async move { post(c, &path).await }
    })
    .await
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long)]
    signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn kill(c: &Client, a: KillArgs) -> Result<()> {
    let q = match &a.signal {
        Some(s) => format!("?signal={}", enc(s)),
        None => String::new(),
    };
    each(&a.containers, |n| {
        let path = format!("/containers/{}/kill{q}", cpath(&n));
        async move { post(c, &path).await }
    })
    .await
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn pause(c: &Client, a: NamesArgs, pause: bool) -> Result<()> {
    let verb = if pause { "pause" } else { "unpause" };
    each(&a.containers, |n| {
        let path = format!("/containers/{}/{verb}", cpath(&n));
        async move { post(c, &path).await }
    })
    .await
}

pub async fn wait(c: &Client, a: NamesArgs) -> Result<()> {
    let mut errors = Vec::new();
    for n in &a.containers {
        let res: Result<Value> = async {
            let resp = c
                .request(
                    Method::POST,
                    &format!("/containers/{}/wait", cpath(n)),
                    empty(),
                    None,
                )
                .await?;
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(serde_json::from_slice(&body)?)
        }
        .await;
        match res {
            Ok(v) => match v["Error"]["Message"].as_str() {
                Some(m) => errors.push(m.to_string()),
                None => println!("{}", v["StatusCode"].as_i64().unwrap_or(-1)),
            },
            Err(e) => errors.push(err_text(&e)),
        }
    }
    finish(errors)
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove the specified link
    #[arg(short, long)]
    link: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn rm(c: &Client, a: RmArgs) -> Result<()> {
    let results = futures_util::future::join_all(a.containers.iter().map(|n| {
        let name = n.trim_matches('/').to_string();
        let path = format!(
            "/containers/{}?force={}&v={}&link={}",
            cpath(&name),
            a.force as u8,
            a.volumes as u8,
            a.link as u8
        );
        async move {
            if name.is_empty() {
                bail!("container name cannot be empty");
            }
            let resp = c.request(Method::DELETE, &path, empty(), None).await?;
            let _ = resp.into_body().collect().await;
            Ok(())
        }
    }))
    .await;
    let mut errors = Vec::new();
    for (n, r) in a.containers.iter().zip(results) {
        match r {
            Ok(()) => println!("{n}"),
            Err(e) if a.force && daemon_status(&e) == Some(StatusCode::NOT_FOUND) => {
                eprintln!("{}", err_text(&e))
            }
            Err(e) => errors.push(err_text(&e)),
        }
    }
    finish(errors)
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub async fn rename(c: &Client, a: RenameArgs) -> Result<()> {
    let old = a.container.trim();
    let new = a.new_name.trim();
    if old.is_empty() || new.is_empty() {
        bail!("Error: Neither old nor new names may be empty");
    }
    if let Err(e) = post(
        c,
        &format!("/containers/{}/rename?name={}", cpath(old), enc(new)),
    )
    .await
    {
        eprintln!("{}", err_text(&e));
        bail!("Error: failed to rename container named {old}");
    }
    Ok(())
}

#[derive(Args)]
pub struct TopArgs {
    container: String,
    /// [ps OPTIONS]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

pub async fn top(c: &Client, a: TopArgs) -> Result<()> {
    let mut path = format!("/containers/{}/top", cpath(&a.container));
    if !a.ps_args.is_empty() {
        path.push_str(&format!("?ps_args={}", enc(&a.ps_args.join(" "))));
    }
    let v = c.get_value(&path).await?;
    let cell = |x: &Value| match x {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut text = String::new();
    let titles: Vec<String> = v["Titles"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    text.push_str(&titles.join("\t"));
    text.push('\n');
    for p in v["Processes"].as_array().into_iter().flatten() {
        let row: Vec<String> = p.as_array().into_iter().flatten().map(cell).collect();
        text.push_str(&row.join("\t"));
        text.push('\n');
    }
    print!("{}", tabwrite(&text, 20));
    Ok(())
}

/// Go's tabwriter with `minwidth`, padding 3, spaces.
fn tabwrite(text: &str, minwidth: usize) -> String {
    use std::io::Write;
    let mut tw = tabwriter::TabWriter::new(Vec::new())
        .minwidth(minwidth - 3)
        .padding(3);
    let _ = tw.write_all(text.as_bytes());
    let _ = tw.flush();
    String::from_utf8_lossy(&tw.into_inner().unwrap_or_default()).into_owned()
}

#[derive(Args)]
pub struct PruneArgs {
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    if !a.force && !confirm("WARNING! This will remove all stopped containers.")? {
        return Ok(());
    }
    let (report, deleted) = crate::images::prune_request(
        c,
        "/containers/prune",
        &a.filter,
        "ContainersDeleted",
        "Deleted Containers",
    )
    .await?;
    if deleted {
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size_with_precision(report["SpaceReclaimed"].as_f64().unwrap_or(0.0), 4)
    );
    Ok(())
}

// ---------------------------------------------------------------- logs

#[derive(Args)]
pub struct LogsArgs {
    /// Show extra details provided to logs
    #[arg(long)]
    details: bool,
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long)]
    since: Option<String>,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all", allow_hyphen_values = true)]
    tail: String,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long)]
    until: Option<String>,
    container: String,
}

/// Go's `time.ParseDuration` (e.g. "1h30m", "1.5s", "-10m").
pub fn go_duration(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * unit;
    }
    Some(if neg { -total } else { total })
}

/// docker's `timetypes.GetTimestamp`: a duration (before now), an RFC 3339
/// or shorter date, or a unix timestamp passed through.
pub fn get_timestamp(value: &str, now: chrono::DateTime<chrono::Utc>) -> Result<String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone};
    if value != "0"
        && let Some(d) = go_duration(value)
    {
        let t = now - chrono::Duration::nanoseconds((d * 1e9) as i64);
        return Ok(t.timestamp().to_string());
    }
    let zoned = value.contains(['z', 'Z', '+']) || value.matches('-').count() == 3;
    let parsed: Option<chrono::DateTime<chrono::FixedOffset>> = if zoned {
        chrono::DateTime::parse_from_rfc3339(value)
            .ok()
            .or_else(|| {
                // Shorter forms with a zone: 2006-01-02T15:04Z07:00, 2006-01-02Z07:00.
                let (date, zone) = value.split_at(value.rfind(['Z', 'z', '+', '-'])?);
                let zone = if zone.eq_ignore_ascii_case("z") {
                    "+00:00"
                } else {
                    zone
                };
                let full = if date.contains('T') {
                    let t = date.split_once('T')?.1;
                    match t.matches(':').count() {
                        0 => format!("{date}:00:00{zone}"),
                        1 => format!("{date}:00{zone}"),
                        _ => format!("{date}{zone}"),
                    }
                } else {
                    format!("{date}T00:00:00{zone}")
                };
                chrono::DateTime::parse_from_rfc3339(&full).ok()
            })
    } else {
        let naive = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .or_else(|| NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M").ok())
            .or_else(|| {
                NaiveDateTime::parse_from_str(&format!("{value}:00"), "%Y-%m-%dT%H:%M").ok()
            })
            .or_else(|| {
                NaiveDate::parse_from_str(value, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            });
        naive.and_then(|n| {
            chrono::Local
                .from_local_datetime(&n)
                .single()
                .map(|t| t.fixed_offset())
        })
    };
    match parsed {
        Some(t) => Ok(format!(
            "{}.{:09}",
            t.timestamp(),
            t.timestamp_subsec_nanos()
        )),
        None if value.contains('-') => bail!("parsing time {value:?}: cannot parse"),
        None => {
            let (secs, nanos) = value.split_once('.').unwrap_or((value, "0"));
            if secs.parse::<i64>().is_err() || nanos.parse::<i64>().is_err() {
                bail!("failed to parse value as time or duration: {value:?}");
            }
            Ok(value.to_string())
        }
    }
}

pub async fn logs(c: &Client, a: LogsArgs) -> Result<()> {
    let info = inspect_container(c, &a.container).await?;
    let tty = info["Config"]["Tty"] == true;
    let now = chrono::Utc::now();
    let mut q = vec!["stdout=1".to_string(), "stderr=1".to_string()];
    if let Some(s) = &a.since {
        q.push(format!("since={}", enc(&get_timestamp(s, now)?)));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", enc(&get_timestamp(u, now)?)));
    }
    if a.timestamps {
        q.push("timestamps=1".into());
    }
    if a.follow {
        q.push("follow=1".into());
    }
    if a.details {
        q.push("details=1".into());
    }
    q.push(format!("tail={}", enc(&a.tail)));
    let resp = c
        .request(
            Method::GET,
            &format!("/containers/{}/logs?{}", cpath(&a.container), q.join("&")),
            empty(),
            None,
        )
        .await?;
    copy_output(resp, tty).await
}

// ---------------------------------------------------------------- ps

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_hyphen_values = true)]
    last: i64,
    /// Show the latest created container (includes all states)
    #[arg(short, long)]
    latest: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Display total file sizes
    #[arg(short, long)]
    size: bool,
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// docker's `formatter.Ellipsis`: at most `max` characters, the last one
/// "…" when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 1 {
        return s.chars().take(1).collect();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn trunc_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// docker's Ports column: "0.0.0.0:8080->80/tcp, 443/tcp".
fn ports_text(ports: &Value) -> String {
    let mut out: Vec<String> = Vec::new();
    for p in ports.as_array().into_iter().flatten() {
        let private = p["PrivatePort"].as_i64().unwrap_or(0);
        let typ = p["Type"].as_str().unwrap_or("tcp");
        match p["PublicPort"].as_i64().filter(|n| *n != 0) {
            Some(public) => {
                let ip = p["IP"].as_str().unwrap_or("");
                let ip = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                let prefix = if ip.is_empty() {
                    String::new()
                } else {
                    format!("{ip}:")
                };
                out.push(format!("{prefix}{public}->{private}/{typ}"));
            }
            None => out.push(format!("{private}/{typ}")),
        }
    }
    out.dedup();
    out.join(", ")
}

/// One `ps` row: docker's ContainerContext fields, already formatted.
pub fn ps_row(ctr: &Value, trunc: bool) -> Value {
    let id = ctr["Id"].as_str().unwrap_or("");
    let image = ctr["Image"].as_str().unwrap_or("");
    let image_id = ctr["ImageID"].as_str().unwrap_or("");
    let image = if image.is_empty() {
        "<no image>".to_string()
    } else if trunc && trunc_id(image_id) == trunc_id(image) {
        trunc_id(image)
    } else if trunc {
        // Drop a digest, keep a tag.
        image.split('@').next().unwrap_or(image).to_string()
    } else {
        image.to_string()
    };
    let command = ctr["Command"].as_str().unwrap_or("");
    let command = go_quote(&if trunc {
        ellipsis(command, 20)
    } else {
        command.to_string()
    });
    let mut names: Vec<String> = ctr["Names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .collect();
    if trunc && let Some(n) = names.iter().find(|n| !n.contains('/')) {
        names = vec![n.clone()];
    }
    let labels = ctr["Labels"].as_object().cloned().unwrap_or_default();
    let mut label_pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    label_pairs.sort();
    let created = ctr["Created"].as_i64().unwrap_or(0);
    let size = {
        let rw = ctr["SizeRw"].as_f64().unwrap_or(0.0);
        let root = ctr["SizeRootFs"].as_f64().unwrap_or(0.0);
        let srw = human_size_with_precision(rw, 3);
        if root > 0.0 {
            format!("{srw} (virtual {})", human_size_with_precision(root, 3))
        } else {
            srw
        }
    };
    let mounts: Vec<String> = ctr["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let name = m["Name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or(m["Source"].as_str())
                .unwrap_or("");
            if trunc {
                ellipsis(name, 15)
            } else {
                name.to_string()
            }
        })
        .collect();
    let local_volumes = ctr["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Driver"] == "local")
        .count();
    let mut networks: Vec<String> = ctr["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    networks.sort();
    json!({
        "Command": command,
        "CreatedAt": created_at(created),
        "ID": if trunc { trunc_id(id) } else { id.to_string() },
        "Image": image,
        "Labels": label_pairs.join(","),
        "Label": labels,
        "LocalVolumes": local_volumes.to_string(),
        "Mounts": mounts.join(","),
        "Names": names.join(","),
        "Networks": networks.join(","),
        "Platform": ctr["ImageManifestDescriptor"]["platform"].clone(),
        "Ports": ports_text(&ctr["Ports"]),
        "RunningFor": human_since(created),
        "Size": size,
        "State": ctr["State"].as_str().unwrap_or(""),
        "Status": ctr["Status"].as_str().unwrap_or(""),
    })
}

/// Go reports a field a struct lacks as "can't evaluate field X in type T".
fn go_field_error(msg: &str) -> String {
    match msg.split_once("map has no entry for key \"") {
        Some((head, rest)) => {
            let field = rest.split('"').next().unwrap_or("");
            format!("{head}can't evaluate field {field} in type *formatter.ContainerContext")
        }
        None => msg.to_string(),
    }
}

const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

pub fn ps_header() -> Value {
    json!({
        "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS",
        "Size": "SIZE", "Names": "NAMES", "Labels": "LABELS", "Label": "LABEL", "Mounts": "MOUNTS",
        "Networks": "NETWORKS", "LocalVolumes": "LOCAL VOLUMES",
    })
}

/// The template `ps` uses for its flags (docker's NewContainerFormat).
fn ps_format(a: &PsArgs) -> String {
    match a.format.as_deref() {
        Some(f) if !f.is_empty() && f != "table" => f.to_string(),
        _ if a.quiet => "{{.ID}}".into(),
        _ if a.size => format!("{PS_TABLE}\t{{{{.Size}}}}"),
        _ => PS_TABLE.into(),
    }
}

pub async fn ps(c: &Client, a: PsArgs) -> Result<()> {
    let fmt = ps_format(&a);
    let last = if a.latest && a.last == -1 { 1 } else { a.last };
    let size = a.size || fmt.contains(".Size");
    let mut path = format!("/containers/json?all={}", a.all as u8);
    if last > 0 {
        path.push_str(&format!("&limit={last}"));
    }
    if size {
        path.push_str("&size=1");
    }
    if !a.filter.is_empty() {
        path.push_str(&format!("&filters={}", enc(&filters_json(&a.filter)?)));
    }
    let list: Vec<Value> = c.get_json(&path).await?;
    let rows: Vec<Value> = list.iter().map(|x| ps_row(x, !a.no_trunc)).collect();
    if let Err(e) = format::Template::parse(&format::table::prepare_format(&fmt)) {
        bail!("failed to parse template: {e}");
    }
    let out = format::render_list(&fmt, &ps_header(), &rows).map_err(|e| {
        anyhow!(
            "failed to execute template: {}",
            go_field_error(&e.to_string())
        )
    })?;
    print!("{out}");
    Ok(())
}

// ---------------------------------------------------------------- inspect

#[derive(Args)]
pub struct ContainerInspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    /// Display total file sizes
    #[arg(short, long)]
    size: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    names: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short, long)]
    size: bool,
    /// Return JSON for specified type
    #[arg(long = "type")]
    typ: Option<String>,
    #[arg(required = true, value_name = "NAME|ID")]
    names: Vec<String>,
}

/// Image names go into the path as they are (docker's router takes slashes).
fn image_path(n: &str) -> String {
    n.split('/').map(enc).collect::<Vec<_>>().join("/")
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Container,
    Image,
    Volume,
}

async fn find_object(c: &Client, name: &str, kinds: &[Kind], size: bool) -> Result<Value> {
    for k in kinds {
        let path = match k {
            Kind::Container => format!(
                "/containers/{}/json{}",
                cpath(name),
                if size { "?size=1" } else { "" }
            ),
            Kind::Image => format!("/images/{}/json", image_path(name)),
            Kind::Volume => format!("/volumes/{}", enc(name)),
        };
        match c.get_value(&path).await {
            Ok(v) => return Ok(v),
            Err(e) if daemon_status(&e) == Some(StatusCode::NOT_FOUND) => {
                if kinds.len() == 1 {
                    bail!("{}", err_text(&e));
                }
            }
            Err(e) => return Err(e),
        }
    }
    bail!("Error: No such object: {name}")
}

/// docker's inspect output: the JSON array, or a template line per object;
/// missing objects reported after, with exit status 1.
async fn inspect_objects(
    c: &Client,
    names: &[String],
    kinds: &[Kind],
    fmt: Option<&str>,
    size: bool,
) -> Result<()> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for n in names {
        match find_object(c, n, kinds, size).await {
            Ok(v) => items.push(v),
            Err(e) if e.downcast_ref::<DaemonError>().is_none() => errors.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    crate::images::print_inspect(&items, &errors, fmt)
}

pub async fn container_inspect(c: &Client, a: ContainerInspectArgs) -> Result<()> {
    inspect_objects(c, &a.names, &[Kind::Container], a.format.as_deref(), a.size).await
}

/// `inspect`: a container if there is one by that name, else an image,
/// else a volume.
pub async fn inspect(c: &Client, a: InspectArgs) -> Result<()> {
    let kinds: &[Kind] = match a.typ.as_deref() {
        None | Some("") => &[Kind::Container, Kind::Image, Kind::Volume],
        Some("container") => &[Kind::Container],
        Some("image") => &[Kind::Image],
        Some("volume") => &[Kind::Volume],
        Some(t) => bail!("\"{t}\" is not a valid value for --type"),
    };
    inspect_objects(c, &a.names, kinds, a.format.as_deref(), a.size).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(ram_in_bytes("64m"), Ok(64 << 20));
        assert_eq!(ram_in_bytes("64M"), Ok(64 << 20));
        assert_eq!(ram_in_bytes("64mb"), Ok(64 << 20));
        assert_eq!(ram_in_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(ram_in_bytes("1.5g"), Ok(1536 << 20));
        assert_eq!(ram_in_bytes("100"), Ok(100));
        assert_eq!(ram_in_bytes("100b"), Ok(100));
        assert_eq!(ram_in_bytes("4k"), Ok(4096));
        assert_eq!(ram_in_bytes("32 m"), Ok(32 << 20));
        assert_eq!(ram_in_bytes("2t"), Ok(2 << 40));
        assert_eq!(ram_in_bytes("m"), Err("invalid size: 'm'".into()));
        assert_eq!(ram_in_bytes("64x"), Err("invalid suffix: 'x'".into()));
        assert_eq!(ram_in_bytes("64mx"), Err("invalid suffix: 'mx'".into()));
        assert_eq!(ram_in_bytes("64bb"), Err("invalid suffix: 'bb'".into()));
        assert_eq!(ram_in_bytes("64mibb"), Err("invalid suffix: 'mibb'".into()));
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1"), Ok(1_000_000_000));
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("1.25"), Ok(1_250_000_000));
        assert_eq!(parse_cpus(".5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2.000000001"), Ok(2_000_000_001));
        assert_eq!(parse_cpus("0.1000000000"), Ok(100_000_000));
        assert_eq!(
            parse_cpus("0.0000000001"),
            Err("value is too precise".into())
        );
        assert!(parse_cpus("abc").is_err());
        assert!(parse_cpus("1.2.3").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn env_flags() {
        assert_eq!(env_flag("A=1").unwrap(), "A=1");
        assert_eq!(env_flag("A=").unwrap(), "A=");
        assert_eq!(env_flag("A=b=c").unwrap(), "A=b=c");
        // SAFETY-free: a variable only this test uses.
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(env_flag("PATH").unwrap(), format!("PATH={path}"));
        assert_eq!(
            env_flag("BERTH_SURELY_UNSET_VAR").unwrap(),
            "BERTH_SURELY_UNSET_VAR"
        );
        assert!(env_flag("=x").is_err());
    }

    #[test]
    fn env_files() {
        let path = std::env::var("PATH").unwrap_or_default();
        let text = "\u{feff}# comment\n\nA=1\n  B=two \nC=\nPATH\nBERTH_SURELY_UNSET_VAR\nD=x=y\n";
        assert_eq!(
            parse_kv_file(text, true).unwrap(),
            vec![
                "A=1".to_string(),
                "B=two ".into(),
                "C=".into(),
                format!("PATH={path}"),
                "BERTH_SURELY_UNSET_VAR".into(),
                "D=x=y".into(),
            ]
        );
        // Labels files do not read our environment.
        assert_eq!(parse_kv_file("PATH\n", false).unwrap(), vec!["PATH"]);
        assert_eq!(
            parse_kv_file("A B=1\n", true).unwrap_err().to_string(),
            "variable 'A B' contains whitespaces"
        );
        assert_eq!(
            parse_kv_file("=1\n", true).unwrap_err().to_string(),
            "no variable name on line '=1'"
        );
    }

    #[test]
    fn labels_and_restart() {
        let m = labels_map(&["a=1".into(), "b".into(), "c=x=y".into(), "a=2".into()]);
        assert_eq!(Value::Object(m), json!({"a": "2", "b": "", "c": "x=y"}));
        assert_eq!(
            restart_policy("on-failure:3").unwrap(),
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
        assert_eq!(
            restart_policy("always").unwrap(),
            json!({"Name": "always", "MaximumRetryCount": 0})
        );
        assert!(restart_policy(":3").is_err());
        assert!(restart_policy("on-failure:x").is_err());
    }

    #[test]
    fn quote_and_ellipsis() {
        assert_eq!(go_quote("echo hi"), "\"echo hi\"");
        assert_eq!(go_quote("a\"b\\c\n\t\u{1}"), "\"a\\\"b\\\\c\\n\\t\\x01\"");
        assert_eq!(go_quote("héllo"), "\"héllo\"");
        assert_eq!(ellipsis("short", 20), "short");
        assert_eq!(ellipsis("exactly twenty chars", 20), "exactly twenty chars");
        assert_eq!(
            ellipsis("sh -c 'while true; do sleep 1; done'", 20),
            "sh -c 'while true; …"
        );
        assert_eq!(ellipsis("abc", 1), "a");
    }

    #[test]
    fn ps_rows() {
        let ctr = json!({
            "Id": "4f2e8a1b9c3d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f",
            "Names": ["/web", "/other/alias"],
            "Image": "busybox",
            "ImageID": "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
            "Command": "sh -c 'while true; do sleep 1; done'",
            "Created": chrono::Utc::now().timestamp() - 125,
            "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "IP": "0.0.0.0", "Type": "tcp"}, {"PrivatePort": 443, "Type": "tcp"}],
            "Labels": {"b": "2", "a": "1"},
            "State": "running",
            "Status": "Up 2 minutes",
            "NetworkSettings": {"Networks": {"bridge": {}}},
            "Mounts": [],
        });
        let r = ps_row(&ctr, true);
        assert_eq!(r["ID"], "4f2e8a1b9c3d");
        assert_eq!(r["Command"], "\"sh -c 'while true; …\"");
        assert_eq!(r["RunningFor"], "2 minutes ago");
        assert_eq!(r["Status"], "Up 2 minutes");
        assert_eq!(r["Names"], "web");
        assert_eq!(r["Labels"], "a=1,b=2");
        assert_eq!(r["Ports"], "0.0.0.0:8080->80/tcp, 443/tcp");
        assert_eq!(r["Networks"], "bridge");
        assert_eq!(r["Size"], "0B");
        let full = ps_row(&ctr, false);
        assert_eq!(full["ID"].as_str().unwrap().len(), 64);
        assert_eq!(full["Command"], "\"sh -c 'while true; do sleep 1; done'\"");
        assert_eq!(full["Names"], "web,other/alias");
        // An image given by ID shows as its short ID; digests are dropped.
        let mut by_id = ctr.clone();
        by_id["Image"] =
            json!("sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
        assert_eq!(ps_row(&by_id, true)["Image"], "abcdef012345");
        by_id["Image"] = json!("busybox:1.36@sha256:0000");
        assert_eq!(ps_row(&by_id, true)["Image"], "busybox:1.36");

        let table = format::render_list(PS_TABLE, &ps_header(), &[r]).unwrap();
        let mut lines = table.lines();
        assert_eq!(
            lines.next().unwrap(),
            "CONTAINER ID   IMAGE     COMMAND                  CREATED         STATUS         PORTS                           NAMES"
        );
        assert_eq!(
            lines.next().unwrap(),
            "4f2e8a1b9c3d   busybox   \"sh -c 'while true; …\"   2 minutes ago   Up 2 minutes   0.0.0.0:8080->80/tcp, 443/tcp   web"
        );
    }

    #[test]
    fn empty_ps_header_matches_docker() {
        let t = format::render_list(PS_TABLE, &ps_header(), &[]).unwrap();
        assert_eq!(
            t,
            "CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES\n"
        );
    }

    #[test]
    fn durations_and_timestamps() {
        assert_eq!(go_duration("10m"), Some(600.0));
        assert_eq!(go_duration("1h30m"), Some(5400.0));
        assert_eq!(go_duration("1.5s"), Some(1.5));
        assert_eq!(go_duration("500ms"), Some(0.5));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration("x"), None);
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            get_timestamp("1m", now).unwrap(),
            (now.timestamp() - 60).to_string()
        );
        assert_eq!(
            get_timestamp("2024-01-02T03:04:05Z", now).unwrap(),
            format!("{}.000000000", now.timestamp())
        );
        assert_eq!(
            get_timestamp("2024-01-02T03:04:05.5+00:00", now).unwrap(),
            format!("{}.500000000", now.timestamp())
        );
        assert_eq!(get_timestamp("1700000000", now).unwrap(), "1700000000");
        assert_eq!(get_timestamp("1700000000.5", now).unwrap(), "1700000000.5");
        assert!(get_timestamp("yesterday", now).is_err());
    }

    #[derive(clap::Parser)]
    struct T {
        #[command(subcommand)]
        cmd: ContainerCmd,
    }

    fn parse(args: &[&str]) -> Result<ContainerCmd, clap::Error> {
        use clap::Parser;
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.cmd)
    }

    #[test]
    fn run_flags_stop_at_the_image() {
        let Ok(ContainerCmd::Run(r)) = parse(&[
            "run",
            "-it",
            "--rm",
            "-h",
            "box",
            "-e",
            "A=1",
            "-m",
            "64m",
            "--cpus",
            "1.5",
            "--sig-proxy=false",
            "busybox",
            "ls",
            "-l",
            "--rm",
        ]) else {
            panic!("parse failed")
        };
        assert!(r.opts.interactive && r.opts.tty && r.opts.rm && !r.sig_proxy);
        assert_eq!(r.opts.hostname.as_deref(), Some("box"));
        assert_eq!(r.opts.args, ["busybox", "ls", "-l", "--rm"]);
        let cfg = r.opts.config().unwrap();
        assert_eq!(cfg["HostConfig"]["Memory"], 64 << 20);
        assert_eq!(cfg["HostConfig"]["NanoCpus"], 1_500_000_000i64);
        assert_eq!(cfg["Cmd"], json!(["ls", "-l", "--rm"]));
        assert_eq!(cfg["Env"], json!(["A=1"]));
        assert_eq!(cfg["OpenStdin"], true);
        assert_eq!(cfg["StdinOnce"], true);
        assert_eq!(cfg["AttachStdin"], true);
        assert!(cfg["HostConfig"].get("Init").is_none());

        let Ok(ContainerCmd::Run(r)) = parse(&["run", "-d", "busybox", "-x"]) else {
            panic!("parse failed")
        };
        assert!(r.detach && r.sig_proxy);
        assert_eq!(r.opts.args, ["busybox", "-x"]);
        assert_eq!(r.opts.config().unwrap()["Cmd"], json!(["-x"]));

        let Ok(ContainerCmd::Exec(e)) = parse(&["exec", "-it", "c1", "sh", "-c", "echo"]) else {
            panic!("parse failed")
        };
        assert_eq!(e.args, ["c1", "sh", "-c", "echo"]);
        assert!(parse(&["exec", "c1"]).is_err());
        let Ok(ContainerCmd::Run(r)) = parse(&["run", "-m", "lots", "busybox"]) else {
            panic!("parse failed")
        };
        assert_eq!(
            r.opts.config().unwrap_err().to_string(),
            "invalid argument \"lots\" for \"-m, --memory\" flag: invalid size: 'lots'"
        );
        assert!(parse(&["run"]).is_err());
        let Ok(ContainerCmd::Run(r)) = parse(&["run", "--entrypoint", "", "busybox"]) else {
            panic!("parse failed")
        };
        assert_eq!(r.opts.config().unwrap()["Entrypoint"], json!([]));
        // Unknown flags land in the image's place (it takes hyphen values):
        // docker's flag errors, exit 125.
        for (flag, msg) in [
            ("--bogus", "unknown flag: --bogus"),
            ("-z", "unknown shorthand flag: 'z' in -z"),
        ] {
            let Ok(ContainerCmd::Run(r)) = parse(&["run", flag, "busybox"]) else {
                panic!("parse failed")
            };
            let e = r.opts.config().unwrap_err();
            assert_eq!(e.downcast_ref::<FlagError>().unwrap().0, msg);
        }
    }

    #[test]
    fn run_exit_codes() {
        assert_eq!(
            run_exit_code(
                "failed to create task for container: OCI runtime create failed: unable to start container process: exec: \"nosuchcmd\": executable file not found in $PATH: unknown"
            ),
            127
        );
        assert_eq!(run_exit_code("exec: \"/etc\": permission denied"), 126);
        assert_eq!(run_exit_code("No such image: busybox:latest"), 125);
    }
}
