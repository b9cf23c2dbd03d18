//! berth-volumes: the local volume driver. A volume is a directory that
//! outlives the containers that mount it: named (the user picks the name)
//! or anonymous (a random 64-hex name and the label
//! `com.docker.volume.anonymous`, as dockerd gives them).
//!
//! Owns: `<data-root>/volumes/` and the `volumes` rows of the metadata
//! store. Must not: know containers (which containers use a volume is asked
//! of the caller, through a [`Users`] function, under this service's lock),
//! or HTTP.
//!
//! ```text
//! <data-root>/volumes/            0701
//!   <name>/                       0701, one per volume row
//!     _data/                      0755, the Mountpoint; volumes with driver
//!                                 options (type/device/o) have their
//!                                 filesystem mounted here while in use
//! <data-root>/tmp/volume-*        staging of create and remove
//! ```
//!
//! Lifecycle of a volume: `create` stages `tmp/volume-new-*/_data`,
//! commits the row, then renames the directory into place; `remove` (and
//! `prune`) check under the lock that no container uses it, unmount it,
//! rename it into `tmp/`, delete the row, and delete the files after the
//! lock is released. A crash leaves at worst a row without a directory
//! (dropped at the next start) or garbage in `tmp/` (emptied at every
//! start); a directory without a row is adopted as a volume, as Docker's
//! local driver does with whatever it finds under `volumes/`.
//!
//! Volumes with driver options are mounted on first use by a container
//! and unmounted when the last container using them stops
//! ([`VolumeService::mount`], [`VolumeService::unmount`]); after a daemon
//! restart the container service re-registers its running containers,
//! then [`VolumeService::sweep_mounts`] unmounts what nothing uses.
#![forbid(unsafe_code)]

pub mod mounts;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use berth_metadata::{MetaStore, VolumeRead, VolumeRow};
use berth_types::{Error, ErrorKind, Result};
use serde_json::{Value, json};

/// The label dockerd puts on anonymous volumes; `volume prune` without
/// `all` only removes volumes that carry it.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
/// The only driver berth has.
pub const LOCAL: &str = "local";

/// Docker's restricted name pattern (also used for container names).
const NAME_CHARS: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]";

/// Where volume events go (the daemon's event bus).
pub trait VolumeEvents: Send + Sync {
    fn volume_event(&self, action: &str, id: &str, attributes: BTreeMap<String, String>);
}

/// Which containers use which volume (volume name → container IDs), read
/// from the container records when asked.
pub type Users<'a> = &'a dyn Fn() -> Result<BTreeMap<String, Vec<String>>>;

/// Filters as the API passes them (`name` → values).
pub type Filters = std::collections::HashMap<String, Vec<String>>;

/// A volume as the driver reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub options: Option<BTreeMap<String, String>>,
    /// RFC 3339.
    pub created: String,
    /// `<data-root>/volumes/<name>/_data`.
    pub mountpoint: PathBuf,
}

impl Volume {
    /// Docker's Volume object (without `UsageData`).
    pub fn json(&self) -> Value {
        json!({
            "CreatedAt": self.created,
            "Driver": self.driver,
            "Labels": self.labels,
            "Mountpoint": self.mountpoint.display().to_string(),
            "Name": self.name,
            "Options": self.options,
            "Scope": "local",
        })
    }

    pub fn is_anonymous(&self) -> bool {
        self.labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ANONYMOUS_LABEL))
    }

    /// Whether the volume's filesystem must be mounted on `_data` (it has
    /// a `type` or `device` option).
    pub fn needs_mount(&self) -> bool {
        self.options
            .as_ref()
            .is_some_and(|o| o.contains_key("type") || o.contains_key("device"))
    }

    fn has_options(&self) -> bool {
        self.options.as_ref().is_some_and(|o| !o.is_empty())
    }
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PruneReport {
    pub deleted: Vec<String>,
    pub reclaimed: u64,
}

/// A volume with its disk usage (`/system/df`).
#[derive(Debug, Clone)]
pub struct VolumeUsage {
    pub volume: Volume,
    pub size: i64,
    pub ref_count: i64,
}

#[derive(Default)]
struct State {
    /// Containers being created → the volumes they will use; a volume
    /// listed here is in use until [`VolumeService::release`].
    pending: HashMap<String, BTreeSet<String>>,
    /// Volumes with driver options → containers that have them mounted.
    mounted: HashMap<String, BTreeSet<String>>,
}

pub struct VolumeService {
    /// `<data-root>/volumes`
    dir: PathBuf,
    /// `<data-root>/tmp`
    tmp: PathBuf,
    meta: Arc<MetaStore>,
    events: Arc<dyn VolumeEvents>,
    state: Mutex<State>,
    pruning: AtomicBool,
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn no_such(name: &str) -> Error {
    Error::not_found(format!("get {name}: no such volume"))
}

/// Docker's local driver name rules; the message is dockerd's.
pub fn validate_name(name: &str) -> Result<()> {
    if name.chars().count() == 1 {
        return Err(Error::invalid(
            "volume name is too short, names should be at least two alphanumeric characters",
        ));
    }
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Error::invalid(format!(
            "{} includes invalid characters for a local volume name, only {} are allowed. If you intended to pass a host directory, use absolute path",
            go_quote(name),
            go_quote(NAME_CHARS)
        )));
    }
    Ok(())
}

/// Go's `%q` for the strings that reach our messages.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The local driver's option rules (dockerd's `validateOpts`).
pub fn validate_options(opts: &BTreeMap<String, String>) -> Result<()> {
    for k in opts.keys() {
        if !["type", "o", "device", "size"].contains(&k.as_str()) {
            return Err(Error::invalid(format!("invalid option: {}", go_quote(k))));
        }
    }
    if let Some(v) = opts.get("size") {
        let size = berth_format::ram_in_bytes(v).map_err(Error::invalid)?;
        if size > 0 {
            // Quotas need project quotas on the backing filesystem (xfs);
            // berth has no quota control, like dockerd on ext4.
            return Err(Error::invalid("quota size requested but no quota support"));
        }
    }
    for (opt, required) in [
        ("device", &["type"][..]),
        ("type", &["device"][..]),
        ("o", &["device", "type"][..]),
    ] {
        if opts.contains_key(opt) {
            for r in required {
                if !opts.contains_key(*r) {
                    return Err(Error::invalid(format!(
                        "missing required option: {}",
                        go_quote(r)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `%s` of a string slice: `[a b]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Docker's `MatchKVList`: every `key` or `key=value` is on the volume.
fn match_kv(wanted: &[String], labels: Option<&BTreeMap<String, String>>) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let Some(labels) = labels.filter(|l| !l.is_empty()) else {
        return false;
    };
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(w),
    })
}

/// Docker's `Args.Match`: exact, or an (unanchored) regular expression.
fn match_name(wanted: &[String], name: &str) -> bool {
    wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == name || regex::Regex::new(w).is_ok_and(|r| r.is_match(name)))
}

fn check_filters(filters: &Filters, accepted: &[&str]) -> Result<()> {
    let mut keys: Vec<&String> = filters.keys().collect();
    keys.sort();
    match keys.into_iter().find(|k| !accepted.contains(&k.as_str())) {
        Some(k) => Err(Error::invalid(format!("invalid filter '{k}'"))),
        None => Ok(()),
    }
}

/// `dangling` as Docker reads it (`GetBoolOrDefault`).
fn dangling_filter(filters: &Filters) -> Result<Option<bool>> {
    let Some(vals) = filters.get("dangling") else {
        return Ok(None);
    };
    if vals.is_empty() {
        return Err(Error::invalid("invalid filter 'dangling'"));
    }
    let is_true = vals.iter().any(|v| v == "1" || v == "true");
    let is_false = vals.iter().any(|v| v == "0" || v == "false");
    if is_true == is_false {
        let mut v = vals.clone();
        v.sort();
        return Err(Error::invalid(format!(
            "invalid filter 'dangling={}'",
            go_list(&v)
        )));
    }
    Ok(Some(is_true))
}

pub use berth_snapshots::dir_size;

impl VolumeService {
    /// Opens the driver on `<data_root>/volumes`, reconciling directories
    /// and rows left by a crash.
    pub fn open(
        data_root: &Path,
        meta: Arc<MetaStore>,
        events: Arc<dyn VolumeEvents>,
    ) -> Result<Self> {
        let dir = data_root.join("volumes");
        let tmp = data_root.join("tmp");
        for d in [&dir, &tmp] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o701))?;
        let svc = VolumeService {
            dir,
            tmp,
            meta,
            events,
            state: Mutex::new(State::default()),
            pruning: AtomicBool::new(false),
        };
        svc.reconcile()?;
        Ok(svc)
    }

    fn reconcile(&self) -> Result<()> {
        let rows = self.meta.read(|r| r.volumes())?;
        let mut known = BTreeSet::new();
        for row in rows {
            if self.dir.join(&row.name).join("_data").is_dir() {
                known.insert(row.name);
                continue;
            }
            tracing::warn!(volume = %row.name, "volume row without a directory (interrupted create or remove): dropped");
            self.meta.write(|w| w.delete_volume(&row.name))?;
        }
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if known.contains(&name) || !e.file_type()?.is_dir() || validate_name(&name).is_err() {
                continue;
            }
            let data = e.path().join("_data");
            if !data.is_dir() {
                std::fs::DirBuilder::new().mode(0o755).create(&data)?;
            }
            let created = chrono::DateTime::from_timestamp(e.metadata()?.ctime(), 0)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
                .unwrap_or_else(now);
            tracing::warn!(volume = %name, "volume directory without a row: adopted");
            self.meta.write(|w| {
                w.put_volume(&VolumeRow {
                    v: 1,
                    name: name.clone(),
                    driver: LOCAL.into(),
                    labels: None,
                    options: None,
                    created,
                })
            })?;
        }
        Ok(())
    }

    fn volume_of(&self, row: VolumeRow) -> Volume {
        Volume {
            mountpoint: self.dir.join(&row.name).join("_data"),
            name: row.name,
            driver: row.driver,
            labels: row.labels,
            options: row.options,
            created: row.created,
        }
    }

    fn event(&self, action: &str, id: &str, attrs: &[(&str, &str)]) {
        self.events.volume_event(
            action,
            id,
            attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// Publishes a volume event on behalf of a user of the volume (the
    /// container service's `mount`).
    pub fn event_for(&self, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        self.events.volume_event(action, id, attributes);
    }

    /// A volume by name.
    pub fn get(&self, name: &str) -> Result<Volume> {
        self.meta
            .read(|r| r.volume(name))?
            .map(|r| self.volume_of(r))
            .ok_or_else(|| no_such(name))
    }

    /// `POST /volumes/create` and the volumes containers name: an existing
    /// volume is returned as it is (labels and options of the request are
    /// ignored, as dockerd does); a missing name makes an anonymous
    /// volume. With `reference` (a container being created) the volume
    /// counts as in use until [`VolumeService::release`].
    pub fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        options: Option<BTreeMap<String, String>>,
        labels: Option<BTreeMap<String, String>>,
        reference: Option<&str>,
    ) -> Result<Volume> {
        let mut labels = labels;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => {
                labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ANONYMOUS_LABEL.into(), String::new());
                hex::encode(rand::random::<[u8; 32]>())
            }
        };
        let ctx = |e: Error| e.context(format!("create {name}"));
        if !driver.is_empty() && driver != LOCAL {
            return Err(ctx(Error::not_found(format!(
                "error looking up volume plugin {driver}: plugin {} not found",
                go_quote(driver)
            ))));
        }
        let mut st = self.state.lock().unwrap();
        if let Some(row) = self.meta.read(|r| r.volume(&name))? {
            if let Some(c) = reference {
                st.pending.entry(c.into()).or_default().insert(name.clone());
            }
            return Ok(self.volume_of(row));
        }
        validate_name(&name).map_err(ctx)?;
        if let Some(o) = &options {
            validate_options(o).map_err(ctx)?;
        }
        let staging = self.tmp.join(format!(
            "volume-new-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let made = (|| -> std::io::Result<()> {
            std::fs::DirBuilder::new().mode(0o701).create(&staging)?;
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(staging.join("_data"))?;
            // The umask may have narrowed the modes.
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o701))?;
            std::fs::set_permissions(
                staging.join("_data"),
                std::fs::Permissions::from_mode(0o755),
            )
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ctx(
                Error::from(e).context("error while creating volume root path")
            ));
        }
        let row = VolumeRow {
            v: 1,
            name: name.clone(),
            driver: LOCAL.into(),
            labels,
            options,
            created: now(),
        };
        if let Err(e) = self.meta.write(|w| w.put_volume(&row)) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ctx(e));
        }
        if let Err(e) = std::fs::rename(&staging, self.dir.join(&name)) {
            let _ = self.meta.write(|w| w.delete_volume(&name));
            let _ = std::fs::remove_dir_all(&staging);
            return Err(ctx(Error::from(e)));
        }
        if let Some(c) = reference {
            st.pending.entry(c.into()).or_default().insert(name.clone());
        }
        drop(st);
        self.event("create", &name, &[("driver", LOCAL)]);
        Ok(self.volume_of(row))
    }

    /// Declares a container being created as a user of `name` (a volume
    /// taken over with `--volumes-from`), until [`VolumeService::release`].
    pub fn reference(&self, name: &str, container: &str) -> Result<Volume> {
        let mut st = self.state.lock().unwrap();
        let v = self.get(name)?;
        st.pending
            .entry(container.into())
            .or_default()
            .insert(name.into());
        Ok(v)
    }

    /// The container's create is over: its record now names its volumes
    /// (or it failed and names none).
    pub fn release(&self, container: &str) {
        self.state.lock().unwrap().pending.remove(container);
    }

    /// Containers using `name` now: being created, recorded, or mounted.
    fn users_of(&self, st: &State, name: &str, users: Users) -> Result<Vec<String>> {
        let mut ids: BTreeSet<String> = st
            .pending
            .iter()
            .filter(|(_, vols)| vols.contains(name))
            .map(|(c, _)| c.clone())
            .collect();
        if let Some(m) = st.mounted.get(name) {
            ids.extend(m.iter().cloned());
        }
        if let Some(u) = users()?.get(name) {
            ids.extend(u.iter().cloned());
        }
        Ok(ids.into_iter().collect())
    }

    /// `GET /volumes` (filters `dangling`, `name`, `driver`, `label`),
    /// sorted by name.
    pub fn list(&self, filters: &Filters, users: Users) -> Result<Vec<Volume>> {
        check_filters(filters, &["dangling", "name", "driver", "label"])?;
        let dangling = dangling_filter(filters)?;
        let none = Vec::new();
        let names = filters.get("name").unwrap_or(&none);
        let drivers = filters.get("driver").unwrap_or(&none);
        let labels = filters.get("label").unwrap_or(&none);
        let used = match dangling {
            Some(_) => users()?,
            None => BTreeMap::new(),
        };
        let st = self.state.lock().unwrap();
        let mut out = Vec::new();
        for row in self.meta.read(|r| r.volumes())? {
            let v = self.volume_of(row);
            if !drivers.is_empty() && !drivers.contains(&v.driver) {
                continue;
            }
            if !match_name(names, &v.name) || !match_kv(labels, v.labels.as_ref()) {
                continue;
            }
            if let Some(d) = dangling {
                let in_use = used.get(&v.name).is_some_and(|u| !u.is_empty())
                    || st.pending.values().any(|s| s.contains(&v.name))
                    || st.mounted.get(&v.name).is_some_and(|m| !m.is_empty());
                if in_use == d {
                    continue;
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    /// `DELETE /volumes/{name}`: refused (409) while any container uses
    /// it, with or without `force`; `force` only makes a missing volume
    /// not an error.
    pub fn remove(&self, name: &str, force: bool, users: Users) -> Result<()> {
        let doomed = {
            let st = self.state.lock().unwrap();
            let v = match self.get(name) {
                Ok(v) => v,
                Err(e) if e.kind == ErrorKind::NotFound && force => return Ok(()),
                Err(e) => return Err(e),
            };
            let refs = self.users_of(&st, name, users)?;
            if !refs.is_empty() {
                return Err(Error::conflict(format!(
                    "remove {name}: volume is in use - [{}]",
                    refs.join(", ")
                )));
            }
            self.take_out(&v)?
        };
        self.delete_files(&doomed);
        self.event("destroy", name, &[("driver", LOCAL)]);
        Ok(())
    }

    /// Under the lock: unmount, move the directory into `tmp/`, drop the row.
    fn take_out(&self, v: &Volume) -> Result<PathBuf> {
        let ctx = |e: Error| e.context(format!("remove {}", v.name));
        if v.needs_mount() {
            mounts::unmount(&v.mountpoint).map_err(ctx)?;
        }
        let root = self.dir.join(&v.name);
        if let Some(m) = mounts::mounts_under(&root).first() {
            return Err(ctx(Error::conflict(format!(
                "{} is a mount point: not removing the volume",
                m.display()
            ))));
        }
        let trash = self.tmp.join(format!(
            "volume-rm-{}-{}",
            v.name,
            hex::encode(rand::random::<[u8; 4]>())
        ));
        match std::fs::rename(&root, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx(Error::from(e))),
        }
        if let Err(e) = self.meta.write(|w| w.delete_volume(&v.name)) {
            let _ = std::fs::rename(&trash, &root);
            return Err(ctx(e));
        }
        Ok(trash)
    }

    fn delete_files(&self, trash: &Path) {
        if let Err(e) = std::fs::remove_dir_all(trash)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %trash.display(), error = %e, "delete removed volume's files (tmp/ is emptied at the next start)");
        }
    }

    /// `POST /volumes/prune`: unused local volumes without driver options;
    /// only anonymous ones unless the filter `all` is true (filters
    /// `label`, `label!`, `all`).
    pub fn prune(&self, filters: &Filters, users: Users) -> Result<PruneReport> {
        check_filters(filters, &["label", "label!", "all"])?;
        let all = match filters.get("all").map(Vec::as_slice) {
            None | Some([]) => false,
            Some([one]) => parse_bool(one).ok_or_else(|| {
                Error::invalid(format!(
                    "invalid filter 'all': strconv.ParseBool: parsing {}: invalid syntax",
                    go_quote(one)
                ))
            })?,
            Some(many) => {
                return Err(Error::invalid(format!(
                    "invalid filter 'all={}': only one value is expected",
                    go_list(many)
                )));
            }
        };
        let mut labels = filters.get("label").cloned().unwrap_or_default();
        if !all {
            labels.push(ANONYMOUS_LABEL.into());
        }
        let not_labels = filters.get("label!").cloned().unwrap_or_default();
        if self.pruning.swap(true, Ordering::SeqCst) {
            return Err(Error::conflict("a prune operation is already running"));
        }
        let res = self.prune_with(&labels, &not_labels, users);
        self.pruning.store(false, Ordering::SeqCst);
        let report = res?;
        self.event("prune", "", &[("reclaimed", &report.reclaimed.to_string())]);
        Ok(report)
    }

    fn prune_with(
        &self,
        labels: &[String],
        not_labels: &[String],
        users: Users,
    ) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let candidates: Vec<Volume> = self
            .meta
            .read(|r| r.volumes())?
            .into_iter()
            .map(|r| self.volume_of(r))
            .filter(|v| {
                v.driver == LOCAL
                    && !v.has_options()
                    && match_kv(labels, v.labels.as_ref())
                    && (not_labels.is_empty() || !match_kv(not_labels, v.labels.as_ref()))
            })
            .collect();
        for v in candidates {
            let doomed = {
                let st = self.state.lock().unwrap();
                if !self.users_of(&st, &v.name, users)?.is_empty() {
                    continue;
                }
                let size = dir_size(&v.mountpoint).unwrap_or_else(|e| {
                    tracing::warn!(volume = %v.name, error = %e, "could not determine size of volume");
                    0
                });
                match self.take_out(&v) {
                    Ok(t) => (t, size),
                    Err(e) => {
                        tracing::warn!(volume = %v.name, error = %e, "prune: cannot remove volume");
                        continue;
                    }
                }
            };
            self.delete_files(&doomed.0);
            self.event("destroy", &v.name, &[("driver", LOCAL)]);
            report.reclaimed += doomed.1 as u64;
            report.deleted.push(v.name);
        }
        Ok(report)
    }

    /// `/system/df`: local volumes without driver options, with their size
    /// and how many containers use them.
    pub fn usage(&self, users: Users) -> Result<Vec<VolumeUsage>> {
        let used = users()?;
        let rows = self.meta.read(|r| r.volumes())?;
        Ok(rows
            .into_iter()
            .map(|r| self.volume_of(r))
            .filter(|v| !v.has_options())
            .map(|v| VolumeUsage {
                size: dir_size(&v.mountpoint).unwrap_or_else(|e| {
                    tracing::warn!(volume = %v.name, error = %e, "failed to determine size of volume");
                    -1
                }),
                ref_count: used.get(&v.name).map_or(0, |u| u.len() as i64),
                volume: v,
            })
            .collect())
    }

    /// A container starts with the volume `name`: mounts its filesystem
    /// first if it has driver options and is not mounted yet. Returns the
    /// path to bind into the container.
    pub fn mount(&self, name: &str, container: &str) -> Result<PathBuf> {
        let mut st = self.state.lock().unwrap();
        let v = self.get(name)?;
        if !v.needs_mount() {
            return Ok(v.mountpoint);
        }
        if !mounts::is_mountpoint(&v.mountpoint) {
            let o = v.options.clone().unwrap_or_default();
            let device = o.get("device").map(String::as_str).unwrap_or("");
            if device.is_empty() {
                return Err(Error::internal(format!(
                    "error while mounting volume '{}': missing device in volume options",
                    v.mountpoint.display()
                )));
            }
            mounts::mount(
                device,
                &v.mountpoint,
                o.get("type").map(String::as_str).unwrap_or(""),
                o.get("o").map(String::as_str).unwrap_or(""),
            )
            .map_err(|e| {
                e.context(format!(
                    "error while mounting volume '{}'",
                    v.mountpoint.display()
                ))
            })?;
        }
        st.mounted
            .entry(name.into())
            .or_default()
            .insert(container.into());
        Ok(v.mountpoint)
    }

    /// A container using `name` stopped: the last one out unmounts.
    pub fn unmount(&self, name: &str, container: &str) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        let users = st.mounted.entry(name.into()).or_default();
        users.remove(container);
        if !users.is_empty() {
            return Ok(());
        }
        st.mounted.remove(name);
        let v = match self.get(name) {
            Ok(v) => v,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if v.needs_mount() && mounts::is_mountpoint(&v.mountpoint) {
            mounts::unmount(&v.mountpoint)?;
        }
        Ok(())
    }

    /// After the containers were re-adopted at daemon start: unmount the
    /// driver-option volumes no running container holds.
    pub fn sweep_mounts(&self) -> Result<()> {
        let st = self.state.lock().unwrap();
        for row in self.meta.read(|r| r.volumes())? {
            let v = self.volume_of(row);
            if v.needs_mount()
                && st.mounted.get(&v.name).is_none_or(|m| m.is_empty())
                && mounts::is_mountpoint(&v.mountpoint)
            {
                tracing::info!(volume = %v.name, "unmounting a volume no container uses");
                if let Err(e) = mounts::unmount(&v.mountpoint) {
                    tracing::warn!(volume = %v.name, error = %e, "cannot unmount unused volume");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sink(Mutex<Vec<(String, String)>>);
    impl VolumeEvents for Sink {
        fn volume_event(&self, action: &str, id: &str, _: BTreeMap<String, String>) {
            self.0.lock().unwrap().push((action.into(), id.into()));
        }
    }

    fn service() -> (tempfile::TempDir, VolumeService, Arc<Sink>) {
        let d = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaStore::open(&d.path().join("meta.redb")).unwrap());
        let sink = Arc::new(Sink::default());
        let s = VolumeService::open(d.path(), meta, sink.clone()).unwrap();
        (d, s, sink)
    }

    fn nobody() -> Result<BTreeMap<String, Vec<String>>> {
        Ok(BTreeMap::new())
    }

    fn filters(kv: &[(&str, &str)]) -> Filters {
        let mut f = Filters::new();
        for (k, v) in kv {
            f.entry(k.to_string()).or_default().push(v.to_string());
        }
        f
    }

    #[test]
    fn names_follow_dockers_rules() {
        assert!(validate_name("ab").is_ok());
        assert!(validate_name("a.b_c-d").is_ok());
        assert_eq!(
            validate_name("a").unwrap_err().message,
            "volume name is too short, names should be at least two alphanumeric characters"
        );
        assert_eq!(
            validate_name("a/b").unwrap_err().message,
            r#""a/b" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path"#
        );
        assert!(validate_name("-ab").is_err());
        assert!(validate_name("").is_err());
    }

    #[test]
    fn options_follow_dockers_rules() {
        let o = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let msg = |kv: &[(&str, &str)]| validate_options(&o(kv)).unwrap_err().message;
        assert_eq!(msg(&[("foo", "bar")]), r#"invalid option: "foo""#);
        assert_eq!(
            msg(&[("type", "tmpfs")]),
            r#"missing required option: "device""#
        );
        assert_eq!(
            msg(&[("o", "size=1m")]),
            r#"missing required option: "device""#
        );
        assert_eq!(
            msg(&[("device", "x")]),
            r#"missing required option: "type""#
        );
        assert_eq!(
            msg(&[("size", "1m")]),
            "quota size requested but no quota support"
        );
        assert_eq!(msg(&[("size", "x")]), "invalid size: 'x'");
        validate_options(&o(&[
            ("type", "tmpfs"),
            ("device", "tmpfs"),
            ("o", "size=1m"),
        ]))
        .unwrap();
    }

    #[test]
    fn create_get_list_remove() {
        let (d, s, sink) = service();
        let v = s.create(Some("data"), "", None, None, None).unwrap();
        assert_eq!(v.mountpoint, d.path().join("volumes/data/_data"));
        assert!(v.mountpoint.is_dir());
        let j = v.json();
        assert_eq!(j["Labels"], Value::Null);
        assert_eq!(j["Scope"], "local");
        // Again: the same volume, no second event, the request's labels ignored.
        let again = s
            .create(
                Some("data"),
                "local",
                None,
                Some(BTreeMap::from([("a".into(), "b".into())])),
                None,
            )
            .unwrap();
        assert_eq!(again, v);
        let anon = s.create(None, "", None, None, None).unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(anon.is_anonymous());
        assert_eq!(
            s.create(Some("x"), "nope", None, None, None)
                .unwrap_err()
                .message,
            r#"create x: error looking up volume plugin nope: plugin "nope" not found"#
        );
        let names: Vec<String> = s
            .list(&Filters::new(), &nobody)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"data".to_string()));

        let used = || {
            Ok(BTreeMap::from([(
                "data".to_string(),
                vec!["c1".to_string()],
            )]))
        };
        let e = s.remove("data", true, &used).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(e.message, "remove data: volume is in use - [c1]");
        assert!(v.mountpoint.is_dir());
        let dangling: Vec<String> = s
            .list(&filters(&[("dangling", "true")]), &used)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(dangling, vec![anon.name.clone()]);

        std::fs::write(v.mountpoint.join("f"), b"x").unwrap();
        s.remove("data", false, &nobody).unwrap();
        assert!(!d.path().join("volumes/data").exists());
        assert_eq!(
            s.get("data").unwrap_err().message,
            "get data: no such volume"
        );
        assert_eq!(
            s.remove("data", false, &nobody).unwrap_err().kind,
            ErrorKind::NotFound
        );
        s.remove("data", true, &nobody).unwrap();
        let ev = sink.0.lock().unwrap().clone();
        assert_eq!(
            ev.iter().filter(|(a, _)| a == "create").count(),
            2,
            "{ev:?}"
        );
        assert!(ev.contains(&("destroy".into(), "data".into())));
        assert!(
            std::fs::read_dir(d.path().join("tmp"))
                .unwrap()
                .next()
                .is_none(),
            "tmp/ is left empty"
        );
    }

    #[test]
    fn a_volume_being_created_with_a_container_is_in_use() {
        let (_d, s, _) = service();
        s.create(Some("vol"), "", None, None, Some("c1")).unwrap();
        let e = s.remove("vol", false, &nobody).unwrap_err();
        assert_eq!(e.message, "remove vol: volume is in use - [c1]");
        s.release("c1");
        s.remove("vol", false, &nobody).unwrap();
    }

    #[test]
    fn prune_takes_anonymous_unused_volumes_unless_all() {
        let (_d, s, sink) = service();
        let anon = s.create(None, "", None, None, None).unwrap();
        let used_anon = s.create(None, "", None, None, None).unwrap();
        s.create(Some("named"), "", None, None, None).unwrap();
        s.create(
            Some("opts"),
            "",
            Some(BTreeMap::from([
                ("type".into(), "tmpfs".into()),
                ("device".into(), "tmpfs".into()),
            ])),
            None,
            None,
        )
        .unwrap();
        std::fs::write(anon.mountpoint.join("f"), vec![0u8; 1000]).unwrap();
        let un = used_anon.name.clone();
        let used = move || Ok(BTreeMap::from([(un.clone(), vec!["c".to_string()])]));
        let r = s.prune(&Filters::new(), &used).unwrap();
        assert_eq!(r.deleted, vec![anon.name.clone()]);
        assert_eq!(r.reclaimed, 1000);
        let r = s.prune(&filters(&[("all", "true")]), &used).unwrap();
        assert_eq!(r.deleted, vec!["named".to_string()]);
        let left: Vec<String> = s
            .list(&Filters::new(), &nobody)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            sink.0
                .lock()
                .unwrap()
                .contains(&("prune".into(), "".into()))
        );
        assert_eq!(
            s.prune(&filters(&[("all", "maybe")]), &nobody)
                .unwrap_err()
                .message,
            r#"invalid filter 'all': strconv.ParseBool: parsing "maybe": invalid syntax"#
        );
        assert_eq!(
            s.prune(&filters(&[("dangling", "true")]), &nobody)
                .unwrap_err()
                .message,
            "invalid filter 'dangling'"
        );
    }

    #[test]
    fn list_filters() {
        let (_d, s, _) = service();
        s.create(
            Some("alpha"),
            "",
            None,
            Some(BTreeMap::from([("k".into(), "v".into())])),
            None,
        )
        .unwrap();
        s.create(Some("beta"), "", None, None, None).unwrap();
        let names = |f: &[(&str, &str)]| -> Vec<String> {
            s.list(&filters(f), &nobody)
                .unwrap()
                .into_iter()
                .map(|v| v.name)
                .collect()
        };
        assert_eq!(names(&[("name", "alp")]), ["alpha"]);
        assert_eq!(names(&[("name", "^b.t")]), ["beta"]);
        assert_eq!(names(&[("label", "k")]), ["alpha"]);
        assert_eq!(names(&[("label", "k=v")]), ["alpha"]);
        assert!(names(&[("label", "k=w")]).is_empty());
        assert_eq!(names(&[("driver", "local")]).len(), 2);
        assert_eq!(
            s.list(&filters(&[("foo", "bar")]), &nobody)
                .unwrap_err()
                .message,
            "invalid filter 'foo'"
        );
        assert_eq!(
            s.list(&filters(&[("dangling", "maybe")]), &nobody)
                .unwrap_err()
                .message,
            "invalid filter 'dangling=[maybe]'"
        );
    }

    #[test]
    fn crash_leftovers_are_reconciled() {
        let d = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaStore::open(&d.path().join("meta.redb")).unwrap());
        {
            let s = VolumeService::open(d.path(), meta.clone(), Arc::new(Sink::default())).unwrap();
            s.create(Some("kept"), "", None, None, None).unwrap();
            s.create(Some("lost"), "", None, None, None).unwrap();
        }
        std::fs::remove_dir_all(d.path().join("volumes/lost")).unwrap();
        std::fs::create_dir_all(d.path().join("volumes/found/_data")).unwrap();
        let s = VolumeService::open(d.path(), meta, Arc::new(Sink::default())).unwrap();
        let names: Vec<String> = s
            .list(&Filters::new(), &nobody)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["found", "kept"]);
    }

    #[test]
    fn sizes_count_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a"), vec![1u8; 100]).unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("sub/b")).unwrap();
        std::fs::write(d.path().join("sub/c"), vec![1u8; 10]).unwrap();
        assert_eq!(dir_size(d.path()).unwrap(), 110);
    }
}

#[cfg(test)]
mod mount_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn driver_option_volumes_are_mounted_while_in_use() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: mounting a tmpfs volume needs root");
            return;
        }
        let (_d, s) = service();
        let opts = BTreeMap::from([
            ("type".to_string(), "tmpfs".to_string()),
            ("device".to_string(), "tmpfs".to_string()),
            ("o".to_string(), "size=1m,mode=0750".to_string()),
        ]);
        let v = s.create(Some("tv"), "", Some(opts), None, None).unwrap();
        // Whatever happens below, nothing stays mounted.
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                while mounts::is_mountpoint(&self.0) {
                    let _ = mounts::unmount(&self.0);
                }
            }
        }
        let _guard = Unmount(v.mountpoint.clone());
        assert!(!mounts::is_mountpoint(&v.mountpoint));
        assert_eq!(s.mount("tv", "c1").unwrap(), v.mountpoint);
        s.mount("tv", "c2").unwrap();
        assert!(mounts::is_mountpoint(&v.mountpoint));
        std::fs::write(v.mountpoint.join("f"), b"x").unwrap();
        let nobody = || Ok(BTreeMap::new());
        assert_eq!(
            s.remove("tv", false, &nobody).unwrap_err().kind,
            ErrorKind::Conflict,
            "a mounted volume is in use"
        );
        s.unmount("tv", "c1").unwrap();
        assert!(mounts::is_mountpoint(&v.mountpoint), "c2 still uses it");
        s.unmount("tv", "c2").unwrap();
        assert!(!mounts::is_mountpoint(&v.mountpoint));
        assert!(!v.mountpoint.join("f").exists(), "tmpfs contents are gone");
        // A mount nothing holds (as after a daemon restart) is swept.
        mounts::mount("tmpfs", &v.mountpoint, "tmpfs", "size=1m").unwrap();
        s.sweep_mounts().unwrap();
        assert!(!mounts::is_mountpoint(&v.mountpoint));
        s.remove("tv", false, &nobody).unwrap();
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    struct Quiet;
    impl VolumeEvents for Quiet {
        fn volume_event(&self, _: &str, _: &str, _: BTreeMap<String, String>) {}
    }

    pub fn service() -> (tempfile::TempDir, VolumeService) {
        let d = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaStore::open(&d.path().join("meta.redb")).unwrap());
        let s = VolumeService::open(d.path(), meta, Arc::new(Quiet)).unwrap();
        (d, s)
    }
}
