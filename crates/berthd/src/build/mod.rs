//! The builder behind `POST /build`: Dockerfile stages run as Docker's
//! legacy builder runs them, printing the same `Step N/M : ...` stream.
//!
//! Each step makes an image (untagged, its `parent` the step before):
//! RUN in a container of berth's own container service whose read-write
//! layer becomes the image's new layer; COPY and ADD write their layer tar
//! straight from the sources (no container); metadata-only steps (ENV,
//! LABEL, CMD…) add a config with an `empty_layer` history entry.
//!
//! The cache is a `build_cache` row per step in the metadata store, keyed
//! by the parent image, the step as it ran (after substitution, with the
//! build args RUN sees) and, for COPY/ADD, the content hash of the sources
//! (bytes, mode, owner; not mtimes). A hit reuses the step's image.
//!
//! Stages run as concurrent tasks, each waiting only for the stages it uses
//! (`FROM <stage>`, `COPY --from=<stage>`); their output is printed in
//! stage order, so the stream reads as a sequential build.

pub mod context;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use berth_api::JsonMessage;
use berth_dockerfile::{CommandLine, Healthcheck, Instruction, Step};
use berth_images::distribution::{AuthConfig, registry_host};
use berth_images::{HistoryEntry, ImageCommit, ImageService, PullOptions};
use berth_metadata::{BuildCacheRead, BuildCacheRow, MetaStore};
use berth_types::{Digest, Error, ErrorKind, Reference};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::UnboundedSender;

use context::{Attrs, Context, Item, LayerTar, Staging};

/// Build args Docker lets every build use without an ARG line; they are
/// kept out of the image's history.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `POST /build` query parameters, parsed.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub tags: Vec<String>,
    pub dockerfile: String,
    pub build_args: BTreeMap<String, Option<String>>,
    pub no_cache: bool,
    pub pull: bool,
    pub rm: bool,
    pub force_rm: bool,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    pub quiet: bool,
    pub network_mode: String,
    pub extra_hosts: Vec<String>,
    /// Resource limits for RUN containers, as HostConfig fields.
    pub host_config: Map<String, Value>,
    pub cache_from: Vec<String>,
    /// Credentials per registry host (`X-Registry-Config`).
    pub auth: HashMap<String, AuthConfig>,
    /// Cancelled when the client goes away: the build stops (a running
    /// RUN's container is killed and removed).
    pub cancel: tokio_util::sync::CancellationToken,
}

/// A build failure: the message and, for a RUN that failed, its exit code
/// (Docker's `errorDetail.code`).
#[derive(Debug)]
pub struct BuildError {
    pub code: Option<i64>,
    pub error: Error,
}

impl From<Error> for BuildError {
    fn from(error: Error) -> Self {
        BuildError { code: None, error }
    }
}

impl From<std::io::Error> for BuildError {
    fn from(e: std::io::Error) -> Self {
        BuildError {
            code: None,
            error: e.into(),
        }
    }
}

type BResult<T> = std::result::Result<T, BuildError>;

/// Where messages go: one channel per stage, printed in stage order.
#[derive(Clone)]
struct Out {
    tx: UnboundedSender<JsonMessage>,
    quiet: bool,
}

impl Out {
    fn stream(&self, s: impl Into<String>) {
        if !self.quiet {
            let _ = self.tx.send(JsonMessage::stream(s));
        }
    }
    fn aux(&self, id: &Digest) {
        if self.quiet {
            return; // dockerd sends only the ID, as a stream line
        }
        let _ = self.tx.send(JsonMessage {
            aux: Some(json!({"ID": id.to_string()})),
            ..Default::default()
        });
    }
}

/// The services a build uses.
pub struct Builder {
    pub images: Arc<ImageService>,
    pub containers: Arc<berth_containers::ContainerService>,
    pub registry: Arc<berth_images::distribution::Client>,
    pub meta: Arc<MetaStore>,
    pub data_root: PathBuf,
}

/// What a finished stage leaves for later stages.
#[derive(Clone, Debug)]
struct StageOut {
    image: Option<Digest>,
}

type StageSlot = tokio::sync::watch::Receiver<Option<Result<StageOut, ()>>>;

/// One build: what every stage task shares.
struct Run {
    b: Arc<Builder>,
    opts: BuildOptions,
    ctx: Context,
    staging: Staging,
    escape: char,
    /// Meta args (before the first FROM) with their values.
    meta_args: BTreeMap<String, Option<String>>,
    stage_names: Vec<Option<String>>,
    slots: Vec<StageSlot>,
    failed: AtomicBool,
    /// Build args some ARG declared.
    consumed: Mutex<BTreeSet<String>>,
    /// Cache rows that were hit (their `last_used` is updated at the end).
    hits: Mutex<Vec<String>>,
    /// Pulls done by this build (so `pull` pulls each image once).
    pulled: tokio::sync::Mutex<HashMap<String, Digest>>,
    /// Steps the `cachefrom` images (and their ancestors) record, and the
    /// images themselves with their histories.
    cache_from: tokio::sync::OnceCell<(Vec<CacheFromStep>, Vec<CacheFromImage>)>,
}

/// A `cachefrom` image as its history and layers describe it.
struct CacheFromImage {
    id: Digest,
    /// (created_by, empty_layer) of every history entry.
    history: Vec<(String, bool)>,
    diff_ids: Vec<berth_types::DiffId>,
    config: Map<String, Value>,
}

fn history_of(c: &berth_images::ImageConfig) -> Vec<(String, bool)> {
    c.history
        .iter()
        .map(|h| (h.created_by.clone().unwrap_or_default(), h.empty_layer))
        .collect()
}

/// One image of a `cachefrom` image's parent chain, as a cache candidate.
struct CacheFromStep {
    id: Digest,
    parent: Option<Digest>,
    created_by: String,
    config: Map<String, Value>,
}

fn short(id: &Digest) -> String {
    id.hex()[..12].to_string()
}

fn internal(e: impl std::fmt::Display) -> BuildError {
    Error::internal(e.to_string()).into()
}

/// Go's `%q` of a string list: `["a" "b"]`.
fn go_list(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| serde_json::to_string(s).expect("json"))
        .collect();
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()` for whole milliseconds and above.
fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let total_s = d.as_secs();
    let frac = d.subsec_nanos();
    let (h, m, s) = (total_s / 3600, (total_s % 3600) / 60, total_s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if total_s == 0 && frac.is_multiple_of(1_000_000) {
        return format!("{}ms", frac / 1_000_000);
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let f = format!("{:09}", frac);
        out.push_str(&format!("{s}.{}s", f.trim_end_matches('0')));
    }
    out
}

fn env_list(cfg: &Map<String, Value>) -> Vec<String> {
    cfg.get("Env")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn env_get(cfg: &Map<String, Value>, k: &str) -> Option<String> {
    env_list(cfg).into_iter().find_map(|e| {
        e.split_once('=')
            .filter(|(ek, _)| *ek == k)
            .map(|(_, v)| v.to_string())
    })
}

/// A copy of the object under `key` of an image config (empty if absent).
fn object_field(cfg: &Map<String, Value>, key: &str) -> Map<String, Value> {
    cfg.get(key)
        .and_then(|l| l.as_object())
        .cloned()
        .unwrap_or_default()
}

fn env_set(cfg: &mut Map<String, Value>, k: &str, v: &str) {
    let mut env = env_list(cfg);
    let entry = format!("{k}={v}");
    match env
        .iter()
        .position(|e| e.split_once('=').map(|(ek, _)| ek).unwrap_or(e) == k)
    {
        Some(i) => env[i] = entry,
        None => env.push(entry),
    }
    cfg.insert("Env".into(), json!(env));
}

/// The state of a stage between steps.
struct State {
    image: Option<Digest>,
    config: Map<String, Value>,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, Option<String>>,
    shell: Vec<String>,
    cmd_set: bool,
    author: Option<String>,
}

impl State {
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |k: &str| env_get(&self.config, k).or_else(|| self.args.get(k).cloned().flatten())
    }
}

/// How a step changes the image.
enum Action {
    /// A new config over the same layers.
    Meta,
    /// WORKDIR: a layer with the directory when the image lacks it.
    Workdir(String),
    Run {
        argv: Vec<String>,
        env: Vec<String>,
        network: Option<String>,
    },
    Copy(Box<CopyPlan>),
}

/// A COPY/ADD, resolved far enough to compute its cache key.
struct CopyPlan {
    what: &'static str,
    /// Items with destinations relative to the copy's destination.
    items: Vec<Item>,
    /// Downloaded or inline files: (name relative to dest, file on disk).
    extra: Vec<(PathBuf, PathBuf, u32)>,
    /// Local archives ADD unpacks into dest.
    archives: Vec<PathBuf>,
    dest: String,
    /// The destination as written (after substitution), for the history.
    dest_written: String,
    dest_is_dir: bool,
    chown: Option<String>,
    chmod: Option<u32>,
    /// Root the `--from` view was mounted at, unmounted after the step.
    mounted: Option<PathBuf>,
    /// Sources after wildcard expansion: whether each is a directory.
    sources: Vec<bool>,
}

impl Builder {
    /// Run a build over an extracted context. Returns the final image ID.
    pub async fn build(
        self: Arc<Self>,
        opts: BuildOptions,
        staging: Staging,
        ctx: Context,
        tx: UnboundedSender<JsonMessage>,
    ) -> BResult<Digest> {
        let df_rel = context::clean_rel(&opts.dockerfile).ok_or_else(|| {
            Error::invalid(format!(
                "Cannot locate specified Dockerfile: {}",
                opts.dockerfile
            ))
        })?;
        let df_path = context::resolve_in_root(&ctx.dir, &df_rel, true)?;
        // dockerd's words and statuses (500 for a missing Dockerfile).
        let src = std::fs::read(&df_path).map_err(|_| {
            Error::internal(format!(
                "Cannot locate specified Dockerfile: {}",
                opts.dockerfile
            ))
        })?;
        if src.is_empty() {
            return Err(Error::invalid(format!(
                "the Dockerfile ({}) cannot be empty",
                opts.dockerfile
            ))
            .into());
        }
        let df = berth_dockerfile::parse(&src).map_err(|e| match e.kind {
            berth_dockerfile::ParseErrorKind::NoInstructions => {
                Error::invalid(format!("failed to parse Dockerfile: {e}"))
            }
            _ => Error::invalid(e.to_string()),
        })?;
        let mut tags = Vec::new();
        for t in &opts.tags {
            let rf = Reference::parse(t)
                .map_err(|_| Error::invalid(format!("invalid reference format: {t}")))?;
            if rf.digest.is_some() {
                return Err(Error::invalid(format!(
                    "invalid reference format: {t}: digests are not allowed in tags"
                ))
                .into());
            }
            tags.push(rf.with_default_tag());
        }
        let mut stages = df.stages.clone();
        if let Some(t) = opts.target.as_deref().filter(|t| !t.is_empty()) {
            let t = t.to_ascii_lowercase();
            let i = stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.as_str()))
                .ok_or_else(|| {
                    Error::invalid(format!("failed to reach build target {t} in Dockerfile"))
                })?;
            stages.truncate(i + 1);
        }
        if !opts.labels.is_empty() {
            // As dockerd: labels given with the build are one more LABEL step.
            let kv: Vec<String> = opts
                .labels
                .iter()
                .map(|(k, v)| format!("{}={}", quote_word(k), quote_word(v)))
                .collect();
            let text = format!("LABEL {}", kv.join(" "));
            let extra = berth_dockerfile::parse(format!("FROM scratch\n{text}\n").as_bytes())
                .map_err(|e| Error::invalid(e.to_string()))?;
            let mut step = extra.stages[0].instructions[0].clone();
            // Shown as dockerd shows it: values unquoted.
            let plain: Vec<String> = opts
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            step.original = format!("LABEL {}", plain.join(" "));
            stages.last_mut().expect("a stage").instructions.push(step);
        }

        // Meta args: defaults, overridden by build args.
        let mut meta_args: BTreeMap<String, Option<String>> = BTreeMap::new();
        for a in &df.meta_args {
            let v = match opts.build_args.get(&a.name) {
                Some(v) => v.clone(),
                None => match &a.default {
                    Some(d) => Some(
                        berth_dockerfile::expand(
                            d,
                            &|k| meta_args.get(k).cloned().flatten(),
                            df.escape,
                        )
                        .map_err(|e| Error::invalid(e.to_string()))?,
                    ),
                    None => None,
                },
            };
            meta_args.insert(a.name.clone(), v);
        }
        let total = df.meta_args.len()
            + stages
                .iter()
                .map(|s| 1 + s.instructions.len())
                .sum::<usize>();
        let out = Out {
            tx: tx.clone(),
            quiet: opts.quiet,
        };
        // The build has started: from here on failures travel in the
        // stream (an empty message tells the API layer, which drops it).
        let _ = tx.send(JsonMessage::default());
        for w in &df.warnings {
            out.stream(format!("[WARNING]: {w}\n"));
        }
        let mut step_no = 0;
        for a in &df.meta_args {
            step_no += 1;
            let text = match &a.default {
                Some(d) => format!("ARG {}={d}", a.name),
                None => format!("ARG {}", a.name),
            };
            out.stream(format!("Step {step_no}/{total} : {text}"));
            out.stream("\n");
        }
        let mut consumed: BTreeSet<String> = df.meta_args.iter().map(|a| a.name.clone()).collect();
        consumed.extend(PROXY_ARGS.iter().map(|s| s.to_string()));

        let stage_names: Vec<Option<String>> = stages.iter().map(|s| s.name.clone()).collect();
        let mut senders = Vec::new();
        let mut slots = Vec::new();
        for _ in &stages {
            let (stx, srx) = tokio::sync::watch::channel(None);
            senders.push(stx);
            slots.push(srx);
        }
        let run = Arc::new(Run {
            b: self.clone(),
            escape: df.escape,
            meta_args,
            stage_names,
            slots,
            failed: AtomicBool::new(false),
            consumed: Mutex::new(consumed),
            hits: Mutex::new(Vec::new()),
            pulled: Default::default(),
            cache_from: Default::default(),
            opts,
            ctx,
            staging,
        });

        let mut tasks = Vec::new();
        let mut outputs = Vec::new();
        for (i, (stage, stx)) in stages.into_iter().zip(senders).enumerate() {
            let first_step = step_no + 1;
            step_no += 1 + stage.instructions.len();
            let (otx, orx) = tokio::sync::mpsc::unbounded_channel();
            outputs.push(orx);
            let run = run.clone();
            let o = Out {
                tx: otx,
                quiet: run.opts.quiet,
            };
            tasks.push(tokio::spawn(async move {
                let r = run.clone().stage(i, stage, first_step, total, &o).await;
                if r.is_err() {
                    run.failed.store(true, Ordering::SeqCst);
                }
                let _ = stx.send(Some(r.as_ref().map(|s| s.clone()).map_err(|_| ())));
                r
            }));
        }
        // Print stage by stage; the first failure in stage order wins.
        let mut result: Option<BResult<StageOut>> = None;
        for (mut orx, task) in outputs.into_iter().zip(tasks) {
            let failed_before = matches!(result, Some(Err(_)));
            while let Some(m) = orx.recv().await {
                if !failed_before {
                    let _ = tx.send(m);
                }
            }
            let r = task
                .await
                .unwrap_or_else(|e| Err(internal(format!("build stage task: {e}"))));
            match (&result, r) {
                (Some(Err(_)), _) => {}
                (_, Err(e))
                    if e.error.kind == ErrorKind::Unavailable && e.error.message == CANCELLED => {}
                (_, r) => result = Some(r),
            }
        }
        let last = match result {
            Some(r) => r?,
            None => return Err(Error::internal("build cancelled").into()),
        };
        let hits = std::mem::take(&mut *run.hits.lock().unwrap());
        if !hits.is_empty() {
            let meta = run.b.meta.clone();
            tokio::task::spawn_blocking(move || touch_cache(&meta, &hits))
                .await
                .map_err(internal)??;
        }
        let Some(id) = last.image else {
            return Err(Error::invalid("No image was generated. Is your Dockerfile empty?").into());
        };
        let unused: Vec<String> = {
            let consumed = run.consumed.lock().unwrap();
            run.opts
                .build_args
                .keys()
                .filter(|k| !consumed.contains(*k))
                .cloned()
                .collect()
        };
        if !unused.is_empty() {
            out.stream(format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                unused.join(" ")
            ));
        }
        out.stream(format!("Successfully built {}\n", short(&id)));
        for t in tags {
            let images = self.images.clone();
            let (name, tag) = (t.name.clone(), t.tag.clone());
            let idc = id;
            tokio::task::spawn_blocking(move || {
                // Nothing to write when the tag is already there.
                if images
                    .resolve(&format!("{name}:{}", tag.as_deref().unwrap_or("latest")))
                    .is_ok_and(|r| r.id == idc)
                {
                    return Ok(());
                }
                images
                    .tag(&idc.to_string(), &name, tag.as_deref())
                    .map(|_| ())
            })
            .await
            .map_err(internal)??;
            out.stream(format!("Successfully tagged {}\n", t.familiar()));
        }
        if run.opts.quiet {
            let _ = tx.send(JsonMessage::stream(format!("{id}\n")));
        }
        Ok(id)
    }
}

const CANCELLED: &str = "build cancelled: another stage failed";
const CLIENT_GONE: &str = "build cancelled: the client went away";

/// `a b` → `"a b"` for a synthetic LABEL line.
fn quote_word(s: &str) -> String {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == '$')
    {
        serde_json::to_string(s).expect("json").replace('$', "\\$")
    } else {
        s.to_string()
    }
}

fn touch_cache(meta: &MetaStore, keys: &[String]) -> berth_types::Result<()> {
    let now = berth_images::now_rfc3339();
    meta.write_volatile(|w| {
        for k in keys {
            if let Some(mut row) = w.build_cache(k)? {
                row.last_used = Some(now.clone());
                row.usage_count += 1;
                w.put_build_cache(&row)?;
            }
        }
        Ok(())
    })
}

fn cache_key(
    parent: Option<&Digest>,
    created_by: &str,
    config: &Map<String, Value>,
    extra: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(
        parent
            .map(|p| p.to_string())
            .unwrap_or_else(|| "scratch".into()),
    );
    h.update(b"\n");
    h.update(created_by.as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_vec(config).expect("json"));
    h.update(b"\n");
    h.update(extra.as_bytes());
    hex::encode(h.finalize())
}

/// Demultiplex Docker's 8-byte-header stream into text chunks.
struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    fn push(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        self.buf.extend_from_slice(data);
        loop {
            if self.buf.len() < 8 {
                return;
            }
            let n =
                u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if self.buf.len() < 8 + n {
                return;
            }
            emit(&self.buf[8..8 + n]);
            self.buf.drain(..8 + n);
        }
    }
}

impl Run {
    fn cancelled(&self) -> BResult<()> {
        if self.opts.cancel.is_cancelled() {
            return Err(Error::internal(CLIENT_GONE).into());
        }
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Unavailable, CANCELLED).into());
        }
        Ok(())
    }

    fn stage_index(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self.stage_names[..before]
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    async fn stage_result(&self, i: usize) -> BResult<StageOut> {
        let mut rx = self.slots[i].clone();
        let v = rx
            .wait_for(|v| v.is_some())
            .await
            .map_err(|_| internal("stage ended without a result"))?;
        match v.clone().expect("some") {
            Ok(s) => Ok(s),
            Err(()) => Err(Error::new(ErrorKind::Unavailable, CANCELLED).into()),
        }
    }

    /// An image by name, pulled when missing (or always, with `pull`), for
    /// `platform` (the stage's `--platform`, else the build's).
    async fn image(&self, name: &str, platform: Option<&str>, out: &Out) -> BResult<Digest> {
        let rf = Reference::parse(name)
            .map_err(|_| Error::invalid(format!("invalid reference format: {name}")))?;
        let rf = rf.with_default_tag();
        let key = rf.to_string();
        let mut pulled = self.pulled.lock().await;
        if let Some(id) = pulled.get(&key) {
            return Ok(*id);
        }
        if !self.opts.pull {
            let images = self.b.images.clone();
            let n = name.to_string();
            if let Ok(rec) = tokio::task::spawn_blocking(move || images.resolve(&n))
                .await
                .map_err(internal)?
            {
                return Ok(rec.id);
            }
        }
        let host = registry_host(rf.name.split('/').next().unwrap_or(""));
        let auth = self.opts.auth.get(&host).cloned();
        let tx = out.tx.clone();
        let quiet = out.quiet;
        let progress: berth_images::ProgressFn = Arc::new(move |p| {
            if !quiet {
                let _ = tx.send(crate::api::registry::message(&p));
            }
        });
        let r = self
            .b
            .images
            .clone()
            .pull(
                &self.b.registry,
                &rf,
                &PullOptions {
                    platform: platform
                        .map(str::to_string)
                        .or_else(|| self.opts.platform.clone())
                        .filter(|p| !p.is_empty()),
                    auth,
                },
                progress,
            )
            .await?;
        pulled.insert(key, r.id);
        Ok(r.id)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> BResult<T> + Send + 'static,
    ) -> BResult<T> {
        tokio::task::spawn_blocking(f).await.map_err(internal)?
    }

    async fn image_config(&self, id: &Digest) -> BResult<(Map<String, Value>, Vec<PathBuf>)> {
        let images = self.b.images.clone();
        let id = id.to_string();
        self.blocking(move || {
            let d = images.inspect(&id)?;
            let cfg = match d.config.config {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            Ok((cfg, d.layer_dirs))
        })
        .await
    }

    async fn stage(
        self: Arc<Self>,
        index: usize,
        stage: berth_dockerfile::Stage,
        first_step: usize,
        total: usize,
        out: &Out,
    ) -> BResult<StageOut> {
        if let Some(n) = &stage.name
            && self.stage_names[..index]
                .iter()
                .any(|m| m.as_ref() == Some(n))
        {
            return Err(Error::invalid("a stage name already used").into());
        }
        let meta_lookup = |k: &str| self.meta_args.get(k).cloned().flatten();
        let base = berth_dockerfile::expand(&stage.base, &meta_lookup, self.escape)
            .map_err(|e| Error::invalid(e.to_string()))?;
        let platform = stage
            .platform
            .as_deref()
            .map(|p| berth_dockerfile::expand(p, &meta_lookup, self.escape))
            .transpose()
            .map_err(|e| Error::invalid(e.to_string()))?
            .filter(|p| !p.is_empty());
        out.stream(format!("Step {first_step}/{total} : {}", stage.original));
        out.stream("\n");
        let mut st = State {
            image: None,
            config: Map::new(),
            args: BTreeMap::new(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            cmd_set: false,
            author: None,
        };
        if base.eq_ignore_ascii_case("scratch") {
            st.config.insert("Env".into(), json!([DEFAULT_PATH]));
            out.stream(" ---> \n");
        } else {
            let id = match self.stage_index(&base, index) {
                Some(j) => self
                    .stage_result(j)
                    .await?
                    .image
                    .ok_or_else(|| Error::invalid(format!("stage {base} produced no image")))?,
                None => self.image(&base, platform.as_deref(), out).await?,
            };
            let (cfg, _) = self.image_config(&id).await?;
            st.image = Some(id);
            st.config = cfg;
            if let Some(sh) = st.config.get("Shell").and_then(|s| s.as_array()) {
                st.shell = sh
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect();
            }
        }
        // ONBUILD triggers of the base run first, as Docker runs them; the
        // FROM step's ` ---> ID` is the image after them.
        let triggers: Vec<String> = st
            .config
            .get("OnBuild")
            .and_then(|o| o.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if !triggers.is_empty() {
            st.config.insert("OnBuild".into(), Value::Null);
            let steps = berth_dockerfile::parse_triggers(&triggers, self.escape)
                .map_err(|e| Error::invalid(e.to_string()))?;
            out.stream(format!(
                "# Executing {} build trigger{}\n",
                steps.len(),
                if steps.len() == 1 { "" } else { "s" }
            ));
            for s in steps {
                self.cancelled()?;
                self.step(index, &mut st, &s, out, false).await?;
            }
        }
        if let Some(id) = &st.image {
            out.stream(format!(" ---> {}\n", short(id)));
        }
        for (k, s) in stage.instructions.iter().enumerate() {
            self.cancelled()?;
            out.stream(format!(
                "Step {}/{total} : {}",
                first_step + 1 + k,
                s.original
            ));
            out.stream("\n");
            self.step(index, &mut st, s, out, true).await?;
        }
        if let Some(id) = &st.image {
            out.aux(id);
        }
        Ok(StageOut { image: st.image })
    }

    fn expand(&self, st: &State, w: &str) -> BResult<String> {
        berth_dockerfile::expand(w, &st.lookup(), self.escape)
            .map_err(|e| Error::invalid(e.to_string()).into())
    }

    fn expand_words(&self, st: &State, w: &str) -> BResult<Vec<String>> {
        berth_dockerfile::expand_words(w, &st.lookup(), self.escape)
            .map_err(|e| Error::invalid(e.to_string()).into())
    }

    /// Build args a RUN sees: declared ones with values, and the proxy
    /// args given, unless ENV sets the same name. Sorted by name.
    fn run_args(&self, st: &State) -> (Vec<String>, Vec<String>) {
        let mut shown = Vec::new();
        let mut env = Vec::new();
        for (k, v) in &st.args {
            if let Some(v) = v
                && env_get(&st.config, k).is_none()
            {
                shown.push(format!("{k}={v}"));
                env.push(format!("{k}={v}"));
            }
        }
        for p in PROXY_ARGS {
            if st.args.contains_key(*p) {
                continue;
            }
            if let Some(Some(v)) = self.opts.build_args.get(*p) {
                env.push(format!("{p}={v}"));
            }
        }
        (shown, env)
    }

    async fn step(
        &self,
        index: usize,
        st: &mut State,
        s: &Step,
        out: &Out,
        show_id: bool,
    ) -> BResult<()> {
        let mut new_cfg = st.config.clone();
        let (created_by, action) = match &s.instruction {
            Instruction::Env(kvs) => {
                // Every word is expanded with the environment before the
                // line (`ENV a=bye b=$a` gives b the old a), as Docker does.
                let mut parts = Vec::new();
                for kv in kvs {
                    let k = self.expand(st, &kv.key)?;
                    let v = self.expand(st, &kv.value)?;
                    env_set(&mut new_cfg, &k, &v);
                    parts.push(format!("{k}={v}"));
                }
                (
                    nop(&st.shell, &format!("ENV {}", parts.join(" "))),
                    Action::Meta,
                )
            }
            Instruction::Label(kvs) => {
                let mut labels = object_field(&new_cfg, "Labels");
                let mut parts = Vec::new();
                for kv in kvs {
                    let k = self.expand(st, &kv.key)?;
                    let v = self.expand(st, &kv.value)?;
                    parts.push(format!("{k}={v}"));
                    labels.insert(k, json!(v));
                }
                new_cfg.insert("Labels".into(), Value::Object(labels));
                (
                    nop(&st.shell, &format!("LABEL {}", parts.join(" "))),
                    Action::Meta,
                )
            }
            Instruction::Cmd(c) => {
                let v = self.command(st, c);
                new_cfg.insert("Cmd".into(), json!(v));
                st.cmd_set = true;
                (
                    nop(&st.shell, &format!("CMD {}", go_list(&v))),
                    Action::Meta,
                )
            }
            Instruction::Entrypoint(c) => {
                let v = match c {
                    CommandLine::Shell(t) if t.is_empty() => vec![],
                    c => self.command(st, c),
                };
                new_cfg.insert(
                    "Entrypoint".into(),
                    if v.is_empty() { Value::Null } else { json!(v) },
                );
                if !st.cmd_set {
                    new_cfg.insert("Cmd".into(), Value::Null);
                }
                (
                    nop(&st.shell, &format!("ENTRYPOINT {}", go_list(&v))),
                    Action::Meta,
                )
            }
            Instruction::Expose(ports) => {
                let mut exposed = object_field(&new_cfg, "ExposedPorts");
                let mut words = Vec::new();
                for p in ports {
                    for w in self.expand_words(st, p)? {
                        for key in expose_keys(&w)? {
                            exposed.insert(key, json!({}));
                        }
                        words.push(w);
                    }
                }
                new_cfg.insert("ExposedPorts".into(), Value::Object(exposed));
                (
                    nop(&st.shell, &format!("EXPOSE {}", words.join(" "))),
                    Action::Meta,
                )
            }
            Instruction::Volume(vols) => {
                let mut map = object_field(&new_cfg, "Volumes");
                let mut all = Vec::new();
                for v in vols {
                    for w in self.expand_words(st, v)? {
                        if w.trim().is_empty() {
                            return Err(Error::invalid(
                                "VOLUME specified can not be an empty string",
                            )
                            .into());
                        }
                        map.insert(w.clone(), json!({}));
                        all.push(w);
                    }
                }
                new_cfg.insert("Volumes".into(), Value::Object(map));
                (
                    nop(&st.shell, &format!("VOLUME [{}]", all.join(" "))),
                    Action::Meta,
                )
            }
            Instruction::User(u) => {
                let u = self.expand(st, u)?;
                new_cfg.insert("User".into(), json!(u));
                (nop(&st.shell, &format!("USER {u}")), Action::Meta)
            }
            Instruction::Workdir(w) => {
                let w = self.expand(st, w)?;
                let cur = new_cfg
                    .get("WorkingDir")
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string();
                let path = if w.starts_with('/') {
                    w.clone()
                } else {
                    format!("{}/{w}", if cur.is_empty() { "/" } else { cur.as_str() })
                };
                let clean = format!(
                    "/{}",
                    context::clean_rel(&path).unwrap_or_default().display()
                );
                new_cfg.insert("WorkingDir".into(), json!(clean));
                (
                    format!("{} #(nop) WORKDIR {clean}", st.shell.join(" ")),
                    Action::Workdir(clean),
                )
            }
            Instruction::Arg(args) => {
                let mut parts = Vec::new();
                for a in args {
                    let given = self.opts.build_args.get(&a.name);
                    let v = match given {
                        Some(v) => v.clone(),
                        None => match &a.default {
                            Some(d) => Some(self.expand(st, d)?),
                            None => self.meta_args.get(&a.name).cloned().flatten(),
                        },
                    };
                    self.consumed.lock().unwrap().insert(a.name.clone());
                    st.args.insert(a.name.clone(), v);
                    parts.push(match &a.default {
                        Some(d) => format!("{}={d}", a.name),
                        None => a.name.clone(),
                    });
                }
                (
                    nop(&st.shell, &format!("ARG {}", parts.join(" "))),
                    Action::Meta,
                )
            }
            Instruction::Onbuild(expr) => {
                let mut list: Vec<Value> = new_cfg
                    .get("OnBuild")
                    .and_then(|o| o.as_array())
                    .cloned()
                    .unwrap_or_default();
                list.push(json!(expr));
                new_cfg.insert("OnBuild".into(), Value::Array(list));
                (nop(&st.shell, &format!("ONBUILD {expr}")), Action::Meta)
            }
            Instruction::Stopsignal(sig) => {
                let sig = self.expand(st, sig)?;
                berth_containers::parse_signal(&sig)?;
                new_cfg.insert("StopSignal".into(), json!(sig));
                (nop(&st.shell, &format!("STOPSIGNAL {sig}")), Action::Meta)
            }
            Instruction::Healthcheck(h) => {
                let test = h.test();
                let mut hc = Map::new();
                hc.insert("Test".into(), json!(test));
                let (mut iv, mut to, mut sp, mut retries) = (0u128, 0u128, 0u128, 0u32);
                if let Healthcheck::Cmd {
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries: r,
                    ..
                } = h
                {
                    if let Some(d) = interval {
                        iv = d.as_nanos();
                        hc.insert("Interval".into(), json!(iv as u64));
                    }
                    if let Some(d) = timeout {
                        to = d.as_nanos();
                        hc.insert("Timeout".into(), json!(to as u64));
                    }
                    if let Some(d) = start_period {
                        sp = d.as_nanos();
                        hc.insert("StartPeriod".into(), json!(sp as u64));
                    }
                    if let Some(d) = start_interval {
                        hc.insert("StartInterval".into(), json!(d.as_nanos() as u64));
                    }
                    if let Some(r) = r {
                        retries = *r;
                        hc.insert("Retries".into(), json!(r));
                    }
                }
                new_cfg.insert("Healthcheck".into(), Value::Object(hc));
                let d = |n: u128| go_duration(std::time::Duration::from_nanos(n as u64));
                let r = if retries < 32 {
                    format!("'\\x{retries:02x}'")
                } else {
                    format!("{:?}", char::from_u32(retries).unwrap_or('?'))
                };
                (
                    nop(
                        &st.shell,
                        &format!(
                            "HEALTHCHECK &{{{} {:?} {:?} {:?} {r}}}",
                            go_list(&test),
                            d(iv),
                            d(to),
                            d(sp)
                        ),
                    ),
                    Action::Meta,
                )
            }
            Instruction::Shell(sh) => {
                st.shell = sh.clone();
                new_cfg.insert("Shell".into(), json!(sh));
                (
                    nop(&st.shell, &format!("SHELL [{}]", sh.join(" "))),
                    Action::Meta,
                )
            }
            Instruction::Maintainer(m) => {
                st.author = Some(m.clone());
                (nop(&st.shell, &format!("MAINTAINER {m}")), Action::Meta)
            }
            Instruction::Run(r) => {
                let mut argv = match &r.command {
                    CommandLine::Exec(v) => v.clone(),
                    CommandLine::Shell(t) => {
                        let mut v = st.shell.clone();
                        v.push(t.clone());
                        v
                    }
                };
                if let Some(h) = r.heredocs.first()
                    && matches!(&r.command, CommandLine::Shell(t) if t.trim_start().starts_with("<<"))
                {
                    // `RUN <<EOF`: the heredoc is the script, as written;
                    // the shell running it expands what it expands.
                    argv = st.shell.clone();
                    argv.push(h.text());
                }
                let (shown, env) = self.run_args(st);
                let joined = argv.join(" ");
                let created_by = if shown.is_empty() {
                    joined
                } else {
                    format!("|{} {} {joined}", shown.len(), shown.join(" "))
                };
                (
                    created_by,
                    Action::Run {
                        argv,
                        env,
                        network: r.network.clone(),
                    },
                )
            }
            Instruction::Copy(c) => {
                let plan = self
                    .plan_copy(
                        index,
                        st,
                        "COPY",
                        &c.sources,
                        &c.heredocs,
                        &c.dest,
                        c.from.as_deref(),
                        c.chown.as_deref(),
                        c.chmod.as_deref(),
                        None,
                        false,
                        out,
                    )
                    .await?;
                let cb = tokio::task::block_in_place(|| copy_created_by(&plan, &st.shell))?;
                (cb, Action::Copy(Box::new(plan)))
            }
            Instruction::Add(a) => {
                let plan = self
                    .plan_copy(
                        index,
                        st,
                        "ADD",
                        &a.sources,
                        &a.heredocs,
                        &a.dest,
                        None,
                        a.chown.as_deref(),
                        a.chmod.as_deref(),
                        a.checksum.as_deref(),
                        a.unpack != Some(false),
                        out,
                    )
                    .await?;
                let cb = tokio::task::block_in_place(|| copy_created_by(&plan, &st.shell))?;
                (cb, Action::Copy(Box::new(plan)))
            }
        };

        let key = cache_key(st.image.as_ref(), &created_by, &new_cfg, "");
        let hit = if self.opts.no_cache {
            None
        } else {
            match self.cached(&key).await? {
                Some(id) => Some(id),
                None => {
                    self.cache_from_match(st.image.as_ref(), &created_by, &new_cfg)
                        .await?
                }
            }
        };
        if let Some(id) = hit {
            if let Action::Copy(p) = &action
                && let Some(m) = &p.mounted
            {
                self.staging.unmount(m);
            }
            out.stream(" ---> Using cache\n");
            if show_id {
                out.stream(format!(" ---> {}\n", short(&id)));
            }
            st.image = Some(id);
            st.config = new_cfg;
            self.hits.lock().unwrap().push(key);
            return Ok(());
        }
        let history = HistoryEntry {
            created_by: created_by.clone(),
            author: st.author.clone().unwrap_or_default(),
            ..Default::default()
        };
        let (id, size) = match action {
            Action::Meta => {
                self.commit(st.image.as_ref(), None, &new_cfg, history)
                    .await?
            }
            Action::Workdir(dir) => {
                let layer = self.workdir_layer(st, &dir).await?;
                self.commit(st.image.as_ref(), layer, &new_cfg, history)
                    .await?
            }
            Action::Copy(plan) => {
                let layer = self.copy_layer(st, *plan).await?;
                self.commit(st.image.as_ref(), Some(layer), &new_cfg, history)
                    .await?
            }
            Action::Run { argv, env, network } => {
                self.run_step(st, &new_cfg, argv, env, network, history, out)
                    .await?
            }
        };
        if show_id {
            out.stream(format!(" ---> {}\n", short(&id)));
        }
        let row = BuildCacheRow {
            v: 1,
            key,
            image: id,
            parent: st.image,
            description: created_by,
            size,
            created: berth_images::now_rfc3339(),
            last_used: None,
            usage_count: 0,
        };
        let meta = self.b.meta.clone();
        // Not flushed on its own: the step's image row was (a cache row a
        // crash loses is a cache miss); the next durable commit (the next
        // step, the tag) carries it to disk.
        self.blocking(move || Ok(meta.write_volatile(|w| w.put_build_cache(&row))?))
            .await?;
        st.image = Some(id);
        st.config = new_cfg;
        Ok(())
    }

    fn command(&self, st: &State, c: &CommandLine) -> Vec<String> {
        match c {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(t) => {
                let mut v = st.shell.clone();
                v.push(t.clone());
                v
            }
        }
    }

    /// A step of a `cachefrom` image's chain that ran `created_by` on
    /// `parent` and left `cfg` (Docker's legacy cache-from, for images this
    /// daemon built: their parent links are the chain).
    async fn cache_from_match(
        &self,
        parent: Option<&Digest>,
        created_by: &str,
        cfg: &Map<String, Value>,
    ) -> BResult<Option<Digest>> {
        if self.opts.cache_from.is_empty() {
            return Ok(None);
        }
        let steps = self
            .cache_from
            .get_or_try_init(|| async {
                let images = self.b.images.clone();
                let names = self.opts.cache_from.clone();
                self.blocking(move || {
                    let mut out: Vec<CacheFromStep> = Vec::new();
                    let mut whole: Vec<CacheFromImage> = Vec::new();
                    for n in names {
                        if let Ok(d) = images.inspect(&n) {
                            whole.push(CacheFromImage {
                                id: d.summary.record.id,
                                history: history_of(&d.config),
                                diff_ids: d.config.rootfs.diff_ids.clone(),
                                config: match d.config.config {
                                    Some(Value::Object(m)) => m,
                                    _ => Map::new(),
                                },
                            });
                        }
                        let mut cur = images.resolve(&n).ok().map(|r| r.id);
                        while let Some(id) = cur {
                            if out.iter().any(|s| s.id == id) {
                                break;
                            }
                            let Ok(d) = images.inspect(&id.to_string()) else {
                                break;
                            };
                            let created_by = d
                                .config
                                .history
                                .last()
                                .and_then(|h| h.created_by.clone())
                                .unwrap_or_default();
                            let config = match d.config.config {
                                Some(Value::Object(m)) => m,
                                _ => Map::new(),
                            };
                            cur = d.summary.record.parent;
                            out.push(CacheFromStep {
                                id,
                                parent: cur,
                                created_by,
                                config,
                            });
                        }
                    }
                    Ok((out, whole))
                })
                .await
            })
            .await?;
        let (steps, whole) = steps;
        if let Some(s) = steps
            .iter()
            .find(|s| s.parent.as_ref() == parent && s.created_by == created_by && &s.config == cfg)
        {
            return Ok(Some(s.id));
        }
        // An image without its chain here (pulled, loaded): its history
        // says which steps made it, as Docker's legacy cache-from reads it.
        let (ph, pd) = match parent {
            Some(p) => {
                let images = self.b.images.clone();
                let p = p.to_string();
                self.blocking(move || {
                    let d = images.inspect(&p)?;
                    Ok((history_of(&d.config), d.config.rootfs.diff_ids.clone()))
                })
                .await?
            }
            None => (vec![], vec![]),
        };
        for img in whole {
            let n = ph.len();
            if img.history.len() <= n
                || img.history[..n] != ph[..]
                || !img.diff_ids.starts_with(&pd)
                || img.history[n].0 != created_by
            {
                continue;
            }
            let layers = pd.len() + usize::from(!img.history[n].1);
            if layers > img.diff_ids.len() {
                continue;
            }
            if n + 1 == img.history.len() && layers == img.diff_ids.len() && &img.config == cfg {
                return Ok(Some(img.id));
            }
            let images = self.b.images.clone();
            let (parent, source, cfg) = (parent.copied(), img.id, cfg.clone());
            let id = self
                .blocking(move || {
                    Ok(images.derive_image(
                        parent.as_ref(),
                        &source,
                        layers,
                        n + 1,
                        Value::Object(cfg),
                    )?)
                })
                .await?;
            return Ok(Some(id));
        }
        Ok(None)
    }

    /// The image a cache row names, if the row and the image are there.
    async fn cached(&self, key: &str) -> BResult<Option<Digest>> {
        let meta = self.b.meta.clone();
        let images = self.b.images.clone();
        let key = key.to_string();
        self.blocking(move || {
            let Some(row) = meta.read(|r| r.build_cache(&key))? else {
                return Ok(None);
            };
            Ok(images.resolve(&row.image.to_string()).ok().map(|r| r.id))
        })
        .await
    }

    async fn commit(
        &self,
        parent: Option<&Digest>,
        layer: Option<berth_images::NewLayer>,
        cfg: &Map<String, Value>,
        history: HistoryEntry,
    ) -> BResult<(Digest, u64)> {
        let images = self.b.images.clone();
        let size = layer.as_ref().map(|l| l.size()).unwrap_or(0);
        let c = ImageCommit {
            parent: parent.map(|p| p.to_string()),
            layer,
            config: Value::Object(cfg.clone()),
            history,
            container: None,
            tag: None,
        };
        let id = self.blocking(move || Ok(images.commit_image(c)?)).await?;
        Ok((id, size))
    }

    /// A layer holding `dir` (and its missing parents) when the image does
    /// not have it; `None` when it does.
    async fn workdir_layer(
        &self,
        st: &State,
        dir: &str,
    ) -> BResult<Option<berth_images::NewLayer>> {
        let layer_dirs = match &st.image {
            Some(id) => self.image_config(id).await?.1,
            None => vec![],
        };
        let root = self.staging.mount_image(&layer_dirs)?;
        let rel = context::clean_rel(dir).unwrap_or_default();
        let exists = context::is_dir_in(&root, &rel);
        let mut missing = Vec::new();
        if !exists {
            let mut p = PathBuf::new();
            for c in rel.components() {
                p.push(c);
                if !context::is_dir_in(&root, &p) {
                    missing.push(p.clone());
                }
            }
        }
        self.staging.unmount(&root);
        if missing.is_empty() {
            return Ok(None);
        }
        let images = self.b.images.clone();
        let layer = self
            .blocking(move || {
                Ok(images.create_layer(move |w| {
                    let mut t = LayerTar::new(w);
                    let now = chrono::Utc::now().timestamp() as u64;
                    for m in &missing {
                        t.dir(m, 0o755, 0, 0, now)?;
                    }
                    t.finish()
                })?)
            })
            .await?;
        Ok(Some(layer))
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_copy(
        &self,
        index: usize,
        st: &State,
        what: &'static str,
        sources: &[String],
        heredocs: &[berth_dockerfile::Heredoc],
        dest: &str,
        from: Option<&str>,
        chown: Option<&str>,
        chmod: Option<&str>,
        checksum: Option<&str>,
        unpack: bool,
        _out: &Out,
    ) -> BResult<CopyPlan> {
        let mut srcs = Vec::new();
        for s in sources {
            srcs.push(self.expand(st, s)?);
        }
        let dest = self.expand(st, dest)?;
        let chown = chown.map(|c| self.expand(st, c)).transpose()?;
        let chmod = chmod.map(context::parse_chmod).transpose()?;
        let workdir = st
            .config
            .get("WorkingDir")
            .and_then(|w| w.as_str())
            .unwrap_or("")
            .to_string();
        let abs_dest = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!(
                "{}/{dest}",
                if workdir.is_empty() {
                    ""
                } else {
                    workdir.as_str()
                }
            )
        };
        let dest_dir_written = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
        let mut plan = CopyPlan {
            what,
            items: Vec::new(),
            extra: Vec::new(),
            archives: Vec::new(),
            dest: abs_dest,
            dest_written: dest.clone(),
            dest_is_dir: dest_dir_written,
            chown,
            chmod,
            mounted: None,
            sources: Vec::new(),
        };
        let (root, from_ctx) = match from {
            Some(f) => {
                let f = self.expand(st, f)?;
                let own = self.stage_names[index].as_deref()
                    == Some(f.to_ascii_lowercase().as_str())
                    || f.parse::<usize>() == Ok(index);
                if own {
                    return Err(Error::invalid(format!(
                        "invalid from flag value {f}: refers to current build stage"
                    ))
                    .into());
                }
                let id = match self.stage_index(&f, index) {
                    Some(j) => self.stage_result(j).await?.image,
                    None => Some(self.image(&f, None, _out).await?),
                };
                let dirs = match id {
                    Some(id) => self.image_config(&id).await?.1,
                    None => vec![],
                };
                let root = self.staging.mount_image(&dirs)?;
                plan.mounted = Some(root.clone());
                (root, false)
            }
            None => (self.ctx.dir.clone(), true),
        };
        let ctx = from_ctx.then_some(&self.ctx);
        let mut count = 0;
        for s in &srcs {
            if what == "ADD" && (s.starts_with("http://") || s.starts_with("https://")) {
                let (name, file) = self.download(s, checksum).await?;
                plan.extra.push((PathBuf::from(name), file, 0o600));
                plan.sources.push(false);
                count += 1;
                continue;
            }
            if what == "ADD" && checksum.is_some() {
                return Err(
                    Error::invalid("checksum can't be specified for non-HTTP(S) sources").into(),
                );
            }
            // File walks and hashes may be long: keep the other tasks of
            // this worker thread going meanwhile.
            let found =
                tokio::task::block_in_place(|| context::expand_sources(&root, s, ctx, what))?;
            count += found.len();
            for src in found {
                let meta = std::fs::metadata(&src.path)?;
                plan.sources.push(meta.is_dir());
                if what == "ADD" && unpack && meta.is_file() && is_archive(&src.path) {
                    plan.archives.push(src.path.clone());
                    continue;
                }
                let base = if meta.is_dir() {
                    PathBuf::new()
                } else {
                    PathBuf::from(src.path.file_name().unwrap_or_default())
                };
                let start = plan.items.len();
                tokio::task::block_in_place(|| context::walk(&src, &base, ctx, &mut plan.items))?;
                if meta.is_dir() {
                    // The directory itself is not copied, only what is in it.
                    plan.items.remove(start);
                }
            }
        }
        for h in heredocs {
            // An unquoted delimiter expands variables, quotes stay (BuildKit).
            let body = if h.expand {
                berth_dockerfile::expand_heredoc(&h.text(), &st.lookup())
                    .map_err(|e| Error::invalid(e.to_string()))?
            } else {
                h.text()
            };
            let f = self.staging.path("heredoc");
            std::fs::write(&f, body)?;
            plan.extra.push((PathBuf::from(&h.name), f, 0o644));
            plan.sources.push(false);
            count += 1;
        }
        if (count > 1 || srcs.iter().any(|s| context::has_wildcards(s))) && !plan.dest_is_dir {
            return Err(Error::invalid(format!(
                "When using {what} with more than one source file, the destination must be a directory and end with a /"
            ))
            .into());
        }
        Ok(plan)
    }

    /// ADD <url>: fetch into staging; the name is the URL's last segment.
    async fn download(&self, url: &str, checksum: Option<&str>) -> BResult<(String, PathBuf)> {
        let fail = |m: String| -> BuildError { Error::invalid(format!("ADD failed: {m}")).into() };
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(format!("Get {url:?}: {}", error_chain(&e))))?;
        if !resp.status().is_success() {
            return Err(fail(format!(
                "failed to GET {url} with status {}",
                resp.status()
            )));
        }
        let name = url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("__unnamed__")
            .to_string();
        let path = self.staging.path("download");
        let mut f = std::fs::File::create(&path)?;
        let mut h = Sha256::new();
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| fail(format!("Get {url:?}: {}", error_chain(&e))))?
        {
            h.update(&chunk);
            f.write_all(&chunk)?;
        }
        if let Some(c) = checksum {
            let got = format!("sha256:{}", hex::encode(h.finalize()));
            if got != c {
                return Err(fail(format!(
                    "digest mismatch for {url}: expected {c}, got {got}"
                )));
            }
        }
        Ok((name, path))
    }

    async fn copy_layer(&self, st: &State, plan: CopyPlan) -> BResult<berth_images::NewLayer> {
        let layer_dirs = match &st.image {
            Some(id) => self.image_config(id).await?.1,
            None => vec![],
        };
        let parent_root = self.staging.mount_image(&layer_dirs)?;
        let r = self.copy_layer_in(&parent_root, plan).await;
        self.staging.unmount(&parent_root);
        r
    }

    async fn copy_layer_in(
        &self,
        parent_root: &Path,
        plan: CopyPlan,
    ) -> BResult<berth_images::NewLayer> {
        let dest_rel = context::clean_rel(&plan.dest).unwrap_or_default();
        let single_file = plan.sources.as_slice() == [false] && plan.archives.is_empty();
        // A single file goes to dest itself unless dest is (or is written
        // as) a directory.
        let into_dir =
            plan.dest_is_dir || !single_file || context::is_dir_in(parent_root, &dest_rel);
        let owner = match &plan.chown {
            Some(c) => Some(context::resolve_owner(parent_root, c)?),
            None => Some((0, 0)),
        };
        let attrs = Attrs {
            owner,
            chmod: plan.chmod,
        };
        // Parents the image lacks are made 0755 root.
        let mut missing = Vec::new();
        let parent_dirs: Vec<PathBuf> = {
            let mut v = Vec::new();
            let mut p = PathBuf::new();
            let comps: Vec<_> = dest_rel.components().collect();
            let n = if into_dir {
                comps.len()
            } else {
                comps.len().saturating_sub(1)
            };
            for c in &comps[..n] {
                p.push(c);
                v.push(p.clone());
            }
            v
        };
        for p in &parent_dirs {
            if !context::is_dir_in(parent_root, p) {
                missing.push(p.clone());
            }
        }
        let dest_owned_by_copy = into_dir && missing.last() == parent_dirs.last();
        let images = self.b.images.clone();
        let mounted = plan.mounted.clone();
        let layer = self
            .blocking(move || {
                Ok(images.create_layer(move |w| {
                    let mut t = LayerTar::new(w);
                    let now = chrono::Utc::now().timestamp() as u64;
                    for m in &missing {
                        let (u, g) = if dest_owned_by_copy && Some(m) == parent_dirs.last() {
                            owner.unwrap_or((0, 0))
                        } else {
                            (0, 0)
                        };
                        t.dir(m, 0o755, u, g, now)?;
                    }
                    for it in &plan.items {
                        let mut it = it.clone();
                        it.dest = if into_dir {
                            dest_rel.join(&it.dest)
                        } else {
                            dest_rel.clone()
                        };
                        t.item(&it, attrs)?;
                    }
                    for (name, file, mode) in &plan.extra {
                        let d = if into_dir {
                            dest_rel.join(name)
                        } else {
                            dest_rel.clone()
                        };
                        let f = std::fs::File::open(file)?;
                        let len = f.metadata()?.len();
                        let (u, g) = owner.unwrap_or((0, 0));
                        t.file(&d, plan.chmod.unwrap_or(*mode), u, g, now, len, f)?;
                    }
                    for a in &plan.archives {
                        unpack_into(&mut t, a, &dest_rel, owner)?;
                    }
                    t.finish()
                })?)
            })
            .await;
        if let Some(m) = mounted {
            self.staging.unmount(&m);
        }
        layer
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        st: &State,
        cfg: &Map<String, Value>,
        argv: Vec<String>,
        args_env: Vec<String>,
        network: Option<String>,
        history: HistoryEntry,
        out: &Out,
    ) -> BResult<(Digest, u64)> {
        let parent = st.image.ok_or_else(|| {
            Error::invalid("Please provide a source image with `from` prior to run")
        })?;
        let mut env = env_list(cfg);
        env.extend(args_env);
        let mut host = self.opts.host_config.clone();
        let mode = match network.as_deref() {
            Some("none") => "none".to_string(),
            Some("host") => "host".to_string(),
            _ if self.opts.network_mode.is_empty() => "default".to_string(),
            _ => self.opts.network_mode.clone(),
        };
        host.insert("NetworkMode".into(), json!(mode));
        host.insert("LogConfig".into(), json!({"Type": "none", "Config": {}}));
        if !self.opts.extra_hosts.is_empty() {
            host.insert("ExtraHosts".into(), json!(self.opts.extra_hosts));
        }
        let body = json!({
            "Image": parent.to_string(),
            "Cmd": argv,
            "Entrypoint": [],
            "Env": env,
            "User": cfg.get("User").cloned().unwrap_or(json!("")),
            "WorkingDir": cfg.get("WorkingDir").cloned().unwrap_or(json!("")),
            "AttachStdout": true,
            "AttachStderr": true,
            "Labels": {},
            "HostConfig": host,
        });
        let containers = self.b.containers.clone();
        let (cid, _) = {
            let c = containers.clone();
            self.blocking(move || Ok(c.create(None, &body)?)).await?
        };
        out.stream(format!(" ---> Running in {}\n", &cid[..12]));
        let r = self.run_container(&cid, out).await;
        let remove = |force: bool| {
            let c = containers.clone();
            let cid = cid.clone();
            async move {
                if let Err(e) = c.remove_with_volumes(&cid, force, true).await {
                    tracing::warn!(container = %cid, error = %e, "remove build container");
                }
            }
        };
        let code = match r {
            Ok(c) => c,
            Err(e) => {
                remove(true).await;
                return Err(e);
            }
        };
        if code != 0 {
            if self.opts.force_rm {
                remove(true).await;
                out.stream(format!("Removing intermediate container {}\n", &cid[..12]));
            }
            let cmd = match &history.created_by {
                s if s.starts_with('|') => argv_text(s),
                s => s.clone(),
            };
            return Err(BuildError {
                code: Some(code),
                error: Error::internal(format!(
                    "The command '{cmd}' returned a non-zero code: {code}"
                )),
            });
        }
        let upper = self.b.data_root.join("containers").join(&cid).join("upper");
        let images = self.b.images.clone();
        let committed = async {
            let layer = self
                .blocking(move || Ok(images.layer_from_dir(&upper)?))
                .await?;
            self.commit(Some(&parent), Some(layer), cfg, history).await
        }
        .await;
        if self.opts.rm || self.opts.force_rm || committed.is_err() {
            remove(true).await;
            if self.opts.rm || self.opts.force_rm {
                out.stream(format!("Removing intermediate container {}\n", &cid[..12]));
            }
        }
        committed
    }

    /// Start a created container with its output streamed to `out`;
    /// returns its exit code.
    async fn run_container(&self, cid: &str, out: &Out) -> BResult<i64> {
        use tokio::io::AsyncReadExt;
        let c = &self.b.containers;
        let (_, buffered, mut stream) = c.attach(cid, false, true, true).await?;
        c.start(cid).await?;
        let mut demux = Demux { buf: Vec::new() };
        let emit = |b: &[u8]| out.stream(String::from_utf8_lossy(b).to_string());
        demux.push(&buffered, emit);
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = tokio::select! {
                n = stream.read(&mut buf) => n.unwrap_or(0),
                _ = self.opts.cancel.cancelled() => {
                    let _ = c.kill(cid, Some("KILL")).await;
                    return Err(Error::internal(CLIENT_GONE).into());
                }
            };
            if n == 0 {
                break;
            }
            demux.push(&buf[..n], |b: &[u8]| {
                out.stream(String::from_utf8_lossy(b).to_string())
            });
        }
        Ok(c.wait(cid, "not-running").await?)
    }
}

/// A metadata step's history entry: the shell, `#(nop)`, the step (the two
/// spaces are dockerd's).
fn nop(shell: &[String], step: &str) -> String {
    format!("{} #(nop)  {step}", shell.join(" "))
}

/// `|1 V=1 /bin/sh -c echo` → `/bin/sh -c echo`.
fn argv_text(created_by: &str) -> String {
    let rest = created_by.trim_start_matches('|');
    let mut it = rest.splitn(2, ' ');
    let n: usize = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut rest = it.next().unwrap_or("");
    for _ in 0..n {
        rest = rest.split_once(' ').map(|(_, r)| r).unwrap_or("");
    }
    rest.to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// `COPY file:<hash> in <dest> ` as dockerd writes it in the history.
fn copy_created_by(p: &CopyPlan, shell: &[String]) -> BResult<String> {
    let mut h = Sha256::new();
    let items_hash = context::hash_items(&p.items, None, Some((0, 0)))?;
    h.update(items_hash.as_bytes());
    for (name, file, mode) in &p.extra {
        h.update(name.as_os_str().as_encoded_bytes());
        h.update(context::hash_file(file)?);
        h.update(format!("{mode:o}"));
    }
    for a in &p.archives {
        h.update(context::hash_file(a)?);
    }
    h.update(format!("{:?} {:?}", p.chown, p.chmod));
    let kind = match p.sources.as_slice() {
        [true] => "dir",
        [_] => "file",
        _ => "multi",
    };
    // dockerd writes `--chown=U:G` glued to the source kind.
    let chown = p
        .chown
        .as_deref()
        .map(|c| format!("--chown={c}"))
        .unwrap_or_default();
    Ok(format!(
        "{} #(nop) {} {chown}{kind}:{} in {} ",
        shell.join(" "),
        p.what,
        hex::encode(h.finalize()),
        p.dest_written
    ))
}

/// `80`, `53/udp`, `8000-8002/tcp` → ExposedPorts keys.
fn expose_keys(w: &str) -> BResult<Vec<String>> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, pr)) => (p, pr.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    let bad = || -> BuildError { Error::invalid(format!("Invalid containerPort: {w}")).into() };
    let (a, b) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if b < a {
        return Err(bad());
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

/// Whether a local file is a tar archive (plain, gzip or zstd) ADD unpacks.
fn is_archive(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut r = std::io::BufReader::new(f);
    let Ok(c) = berth_snapshots::detect_compression(&mut r) else {
        return false;
    };
    let Ok(mut d) = berth_snapshots::decompress(r, c) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < 512 {
        match d.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == 512 && (&head[257..262] == b"ustar" || tar_checksum_ok(&head))
}

fn tar_checksum_ok(h: &[u8; 512]) -> bool {
    let field = std::str::from_utf8(&h[148..156]).unwrap_or("");
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == want
}

/// Copy a local archive's entries into the layer under `dest`.
fn unpack_into<W: Write>(
    t: &mut LayerTar<W>,
    archive: &Path,
    dest: &Path,
    owner: Option<(u32, u32)>,
) -> berth_types::Result<()> {
    let f = std::fs::File::open(archive)?;
    let mut r = std::io::BufReader::new(f);
    let c = berth_snapshots::detect_compression(&mut r)?;
    let d = berth_snapshots::decompress(r, c)?;
    let mut a = tar::Archive::new(d);
    for e in a.entries()? {
        let mut e = e?;
        let path = e.path()?.to_path_buf();
        let Some(rel) = context::clean_rel(&path.to_string_lossy()) else {
            continue; // entries climbing out of the archive are dropped
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        let h = e.header().clone();
        let mode = h.mode().unwrap_or(0o644);
        let (uid, gid) = match owner {
            Some((u, g)) if owner != Some((0, 0)) => (u, g),
            _ => (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32),
        };
        let mtime = h.mtime().unwrap_or(0);
        match h.entry_type() {
            tar::EntryType::Directory => t.dir(&target, mode, uid, gid, mtime)?,
            tar::EntryType::Symlink => {
                if let Some(l) = e.link_name()? {
                    t.symlink(&target, &l, uid, gid, mtime)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = h.size().unwrap_or(0);
                t.file(&target, mode, uid, gid, mtime, size, &mut e)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `POST /build/prune`: remove cache rows (all with `all`, else those
/// whose image nothing tagged builds on) and the images only they keep.
pub fn prune(
    images: &ImageService,
    meta: &MetaStore,
    all: bool,
    until: Option<i64>,
    keep_storage: u64,
) -> berth_types::Result<(Vec<String>, u64)> {
    let rows = meta.read(|r| r.build_caches())?;
    // Images reachable from a tagged image (its ancestors) are in use.
    let list = images.list(&HashMap::new())?;
    let by_id: HashMap<Digest, berth_images::ImageSummary> =
        list.iter().map(|s| (s.record.id, s.clone())).collect();
    let mut in_use: BTreeSet<Digest> = BTreeSet::new();
    for s in &list {
        if s.repo_tags.is_empty() {
            continue;
        }
        let mut cur = Some(s.record.id);
        while let Some(id) = cur {
            if !in_use.insert(id) {
                break;
            }
            cur = by_id.get(&id).and_then(|p| p.record.parent);
        }
    }
    let mut candidates: Vec<&BuildCacheRow> = rows
        .iter()
        .filter(|r| all || !in_use.contains(&r.image))
        .filter(|r| {
            until.is_none_or(|u| {
                let t = r.last_used.as_deref().unwrap_or(&r.created);
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.timestamp())
                    .unwrap_or(0)
                    < u
            })
        })
        .collect();
    // Oldest first; keep-storage keeps the newest that fit.
    candidates.sort_by(|a, b| {
        a.last_used
            .as_deref()
            .unwrap_or(&a.created)
            .cmp(b.last_used.as_deref().unwrap_or(&b.created))
    });
    let total: u64 = rows.iter().map(|r| r.size).sum();
    let mut remaining = total;
    let mut deleted = Vec::new();
    for r in candidates {
        if keep_storage > 0 && remaining <= keep_storage {
            break;
        }
        meta.write(|w| w.delete_build_cache(&r.key))?;
        remaining = remaining.saturating_sub(r.size);
        deleted.push(r.key.clone());
    }
    // Untagged images built here (they have a parent) that no cache row,
    // container, child or tag keeps: the steps' images.
    let keep_rows: BTreeSet<Digest> = meta
        .read(|r| r.build_caches())?
        .into_iter()
        .map(|r| r.image)
        .collect();
    let mut reclaimed = 0;
    let mut changed = true;
    while changed {
        changed = false;
        let list = images.list(&HashMap::new())?;
        let parents: BTreeSet<Digest> = list.iter().filter_map(|s| s.record.parent).collect();
        for s in &list {
            let id = s.record.id;
            if !s.repo_tags.is_empty() || keep_rows.contains(&id) || parents.contains(&id) {
                continue;
            }
            if s.record.parent.is_none() {
                continue; // pulled or loaded images are not build cache
            }
            match images.remove(&id.to_string(), false, false) {
                Ok(items) => {
                    if items
                        .iter()
                        .any(|i| matches!(i, berth_images::DeleteItem::Deleted(_)))
                    {
                        reclaimed += s.record.size;
                        changed = true;
                    }
                }
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok((deleted, reclaimed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(go_list(&["-c".into(), "echo".into()]), r#"["-c" "echo"]"#);
        assert_eq!(go_duration(std::time::Duration::from_secs(5)), "5s");
        assert_eq!(go_duration(std::time::Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(std::time::Duration::ZERO), "0s");
        assert_eq!(go_duration(std::time::Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(std::time::Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn cache_keys_change_with_parent_step_config_and_content() {
        let p = Digest::from_bytes([1; 32]);
        let q = Digest::from_bytes([2; 32]);
        let mut cfg = Map::new();
        cfg.insert("Env".into(), json!(["A=1"]));
        let k = cache_key(Some(&p), "RUN x", &cfg, "");
        assert_eq!(k, cache_key(Some(&p), "RUN x", &cfg, ""));
        assert_ne!(k, cache_key(Some(&q), "RUN x", &cfg, ""));
        assert_ne!(k, cache_key(None, "RUN x", &cfg, ""));
        assert_ne!(k, cache_key(Some(&p), "RUN y", &cfg, ""));
        assert_ne!(k, cache_key(Some(&p), "RUN x", &cfg, "h"));
        let mut cfg2 = cfg.clone();
        cfg2.insert("User".into(), json!("1"));
        assert_ne!(k, cache_key(Some(&p), "RUN x", &cfg2, ""));
    }

    #[test]
    fn metadata_history_uses_the_shell() {
        assert_eq!(
            nop(&["/bin/sh".into(), "-c".into()], "ENV A=1"),
            "/bin/sh -c #(nop)  ENV A=1"
        );
        assert_eq!(
            nop(&["/bin/bash".into(), "-xc".into()], "USER x"),
            "/bin/bash -xc #(nop)  USER x"
        );
    }

    #[test]
    fn run_prefix_is_stripped_for_errors() {
        assert_eq!(argv_text("|1 V=1 /bin/sh -c exit 3"), "/bin/sh -c exit 3");
        assert_eq!(argv_text("|2 A=1 B=2 sh"), "sh");
    }

    #[test]
    fn expose_ranges() {
        assert_eq!(expose_keys("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_keys("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(expose_keys("8000-8001").unwrap(), ["8000/tcp", "8001/tcp"]);
        assert!(expose_keys("x").is_err());
    }

    #[test]
    fn demux_splits_frames() {
        let mut d = Demux { buf: vec![] };
        let mut got = Vec::new();
        let mut frame = vec![1, 0, 0, 0, 0, 0, 0, 3];
        frame.extend_from_slice(b"hi\n");
        d.push(&frame[..5], |b| got.push(b.to_vec()));
        d.push(&frame[5..], |b| got.push(b.to_vec()));
        assert_eq!(got, vec![b"hi\n".to_vec()]);
    }
}
