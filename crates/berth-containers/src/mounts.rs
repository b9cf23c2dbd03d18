//! Mounts of a container: `HostConfig.Binds`, `Mounts`, `Tmpfs`,
//! `VolumesFrom` and the image's (and `Config`'s) `Volumes`, turned into
//! mount points at create time and into OCI spec mounts at every start,
//! following dockerd's `registerMountPoints`, `createContainerOSSpecificSettings`,
//! `setupMounts` and `withMounts`, with its messages and status codes.
//!
//! The container record keeps two lists:
//!
//! ```text
//! record
//!   Mounts        Docker's MountPoint objects (Type, Name, Source,
//!                 Destination, Driver, Mode, RW, Propagation), as
//!                 `inspect` and `ps` show them
//!   MountPoints   the same mount points with what starting needs
//!                 (Spec, CopyData, Anonymous, SkipMountpointCreation);
//!                 internal, removed from `inspect`
//! ```
//!
//! Volumes come from a [`VolumeProvider`] (berthd wires in berth-volumes):
//! `ensure` at create (the volume counts as in use until `release`),
//! `mount` at start, `unmount` at exit, `remove` for `rm -v` and `--rm`.
//! On its first start a container copies the image's content at a volume's
//! destination into the volume when the volume is empty (Docker's
//! copy-up), unless `nocopy`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use berth_metadata::{ContainerRow, MetaRead};
use berth_types::{Error, ErrorKind, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ContainerService;

/// The record key of the internal mount point list.
pub const RECORD_KEY: &str = "MountPoints";

/// Which containers use which volume (volume name → container IDs).
pub type VolumeUsers<'a> = &'a dyn Fn() -> Result<BTreeMap<String, Vec<String>>>;

/// A volume as containers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProvidedVolume {
    pub name: String,
    pub driver: String,
    /// The directory to bind into containers (`…/volumes/<name>/_data`).
    pub mountpoint: PathBuf,
}

/// The volume driver, as containers use it. Lifecycle for one container:
/// `ensure`/`reference` while it is created, then `release` once its record
/// is saved (or its create failed); `mount` at each start and `unmount`
/// when it stops; `remove` of its anonymous volumes when it is removed
/// with `-v` (or `--rm`). `remove` must refuse a volume that `users`
/// reports in use, or that another container is being created with.
pub trait VolumeProvider: Send + Sync {
    /// The named volume (created if missing), or a new anonymous one.
    fn ensure(
        &self,
        name: Option<&str>,
        driver: &str,
        options: Option<BTreeMap<String, String>>,
        labels: Option<BTreeMap<String, String>>,
        container: &str,
    ) -> Result<ProvidedVolume>;
    /// An existing volume (taken over with `--volumes-from`).
    fn reference(&self, name: &str, container: &str) -> Result<ProvidedVolume>;
    /// The create of `container` is over.
    fn release(&self, container: &str);
    /// Makes the volume's data available at its mountpoint (mounting its
    /// filesystem when it has driver options); returns the mountpoint.
    fn mount(&self, name: &str, container: &str) -> Result<PathBuf>;
    fn unmount(&self, name: &str, container: &str) -> Result<()>;
    /// Removes a volume unless it is in use (then a Conflict error).
    fn remove(&self, name: &str, users: VolumeUsers) -> Result<()>;
    /// A volume event (`mount`) for the daemon's event stream.
    fn event(&self, action: &str, name: &str, attributes: BTreeMap<String, String>);
}

// ---------------------------------------------------------------- API types

/// Docker's `mount.Mount` (an entry of `HostConfig.Mounts`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountSpec {
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub typ: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub consistency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_options: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_options: Option<Value>,
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindOptions {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub propagation: String,
    #[serde(skip_serializing_if = "is_false")]
    pub non_recursive: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub create_mountpoint: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_non_recursive: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_force_recursive: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    #[serde(skip_serializing_if = "is_false")]
    pub no_copy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subpath: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<DriverConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DriverConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    #[serde(skip_serializing_if = "is_zero")]
    pub size_bytes: i64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<Vec<String>>>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// One mount point of a container (moby's `volume/mounts.MountPoint`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub typ: String,
    /// Host path: the bind source, or the volume's mountpoint.
    pub source: String,
    pub destination: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Volume name.
    pub name: String,
    pub driver: String,
    /// The mode string the user gave (`ro`, `z`, `nocopy`, …).
    pub mode: String,
    pub propagation: String,
    /// Copy the image's content into an empty volume at the next start.
    pub copy_data: bool,
    /// The request this mount point came from.
    pub spec: MountSpec,
    /// A `--mount` bind: a missing source is not created.
    pub skip_mountpoint_creation: bool,
}

impl MountPoint {
    /// Docker's `MountPoint` object for `inspect` and `ps`.
    pub fn docker(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("Type".into(), json!(self.typ));
        if !self.name.is_empty() {
            m.insert("Name".into(), json!(self.name));
        }
        m.insert("Source".into(), json!(self.source));
        m.insert("Destination".into(), json!(self.destination));
        if !self.driver.is_empty() {
            m.insert("Driver".into(), json!(self.driver));
        }
        m.insert("Mode".into(), json!(self.mode));
        m.insert("RW".into(), json!(self.rw));
        m.insert("Propagation".into(), json!(self.propagation));
        Value::Object(m)
    }

    /// A volume the container made for itself: `rm -v` removes it.
    pub fn is_anonymous_volume(&self) -> bool {
        self.typ == "volume" && self.spec.source.is_empty()
    }
}

/// The mount points stored in a container record.
pub fn mount_points(record: &Value) -> Vec<MountPoint> {
    serde_json::from_value(record[RECORD_KEY].clone()).unwrap_or_default()
}

/// `Mounts` of a record, as Docker shows them.
pub fn docker_mounts(mps: &[MountPoint]) -> Value {
    Value::Array(mps.iter().map(MountPoint::docker).collect())
}

// ---------------------------------------------------------------- parsing

fn internal(m: impl Into<String>) -> Error {
    Error::new(ErrorKind::Internal, m)
}

/// Go's `path.Clean`.
pub fn clean_path(p: &str) -> String {
    berth_types::gopath::clean(p)
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "slave", "rslave", "shared", "rshared",
];

fn is_propagation(o: &str) -> bool {
    PROPAGATIONS.contains(&o)
}

/// dockerd's `linuxValidMountMode`.
fn valid_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let mut counts = [0u8; 5];
    for o in mode.split(',') {
        let i = match o {
            "rw" | "ro" => 0,
            "z" | "Z" => 1,
            p if is_propagation(p) => 2,
            "nocopy" => 3,
            "consistent" | "cached" | "delegated" => 4,
            _ => return false,
        };
        counts[i] += 1;
    }
    counts.iter().all(|c| *c <= 1)
}

fn read_write(mode: &str) -> bool {
    valid_mode(mode) && !mode.split(',').any(|o| o == "ro")
}

fn invalid_spec(raw: &str) -> String {
    format!("invalid volume specification: '{raw}'")
}

fn invalid_mode(mode: &str) -> String {
    format!("invalid mode: {mode}")
}

fn validate_not_root(p: &str) -> std::result::Result<(), String> {
    if clean_path(&p.replace('\\', "/")) == "/" {
        return Err("invalid specification: destination can't be '/'".into());
    }
    Ok(())
}

fn validate_absolute(p: &str) -> std::result::Result<(), String> {
    let p = p.replace('\\', "/");
    if p.starts_with('/') {
        return Ok(());
    }
    Err(format!(
        "invalid mount path: '{p}' mount path must be absolute"
    ))
}

/// `--tmpfs` destinations (dockerd's `ValidateTmpfsMountDestination`).
pub fn validate_tmpfs_destination(dest: &str) -> std::result::Result<(), String> {
    validate_not_root(dest)?;
    validate_absolute(dest)
}

fn is_local_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !clean_path(p).starts_with("..")
        && clean_path(p) != ".."
}

/// dockerd's `validateMountConfigImpl`; the message without the
/// `invalid mount config for type "…": ` prefix.
fn validate_spec(m: &MountSpec, bind_source_must_exist: bool) -> std::result::Result<(), String> {
    if m.target.is_empty() {
        return Err("field Target must not be empty".into());
    }
    validate_not_root(&m.target)?;
    validate_absolute(&m.target)?;
    match m.typ.as_str() {
        "bind" => {
            if m.source.is_empty() {
                return Err("field Source must not be empty".into());
            }
            if let Some(b) = &m.bind_options
                && !b.propagation.is_empty()
                && !is_propagation(&b.propagation)
            {
                return Err(format!("invalid propagation mode: {}", b.propagation));
            }
            if m.volume_options.is_some() {
                return Err("field VolumeOptions must not be specified".into());
            }
            if m.image_options.is_some() {
                return Err("field ImageOptions must not be specified".into());
            }
            validate_absolute(&m.source)?;
            if bind_source_must_exist {
                let create = m.bind_options.as_ref().is_some_and(|b| b.create_mountpoint);
                match std::fs::symlink_metadata(&m.source) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if !create {
                            return Err(format!("bind source path does not exist: {}", m.source));
                        }
                    }
                    Err(e) => return Err(format!("stat {}: {e}", m.source)),
                }
            }
        }
        "volume" => {
            if m.bind_options.is_some() {
                return Err("field BindOptions must not be specified".into());
            }
            if m.image_options.is_some() {
                return Err("field ImageOptions must not be specified".into());
            }
            let anonymous = m.source.is_empty();
            if let Some(v) = &m.volume_options
                && !v.subpath.is_empty()
            {
                if anonymous {
                    return Err("must not set Subpath when using anonymous volumes".into());
                }
                if !is_local_path(&v.subpath) {
                    return Err("subpath must be a relative path within the volume".into());
                }
            }
            if m.read_only && anonymous {
                return Err("must not set ReadOnly mode when using anonymous volumes".into());
            }
        }
        "tmpfs" => {
            if m.bind_options.is_some() {
                return Err("field BindOptions must not be specified".into());
            }
            if m.image_options.is_some() {
                return Err("field ImageOptions must not be specified".into());
            }
            if !m.source.is_empty() {
                return Err("field Source must not be specified".into());
            }
            convert_tmpfs_options(m.tmpfs_options.as_ref(), m.read_only)?;
        }
        _ => return Err("mount type unknown".into()),
    }
    Ok(())
}

fn config_error(m: &MountSpec, e: String) -> String {
    format!("invalid mount config for type \"{}\": {e}", m.typ)
}

/// `HostConfig.Mounts` validation at create (400 on failure).
pub fn validate_mounts(mounts: &[MountSpec]) -> Result<()> {
    for m in mounts {
        validate_spec(m, true).map_err(|e| Error::invalid(config_error(m, e)))?;
    }
    Ok(())
}

/// dockerd's `parseMountSpec`: a mount point from a validated spec.
fn mount_point_of(
    spec: &MountSpec,
    bind_source_must_exist: bool,
) -> std::result::Result<MountPoint, String> {
    validate_spec(spec, bind_source_must_exist).map_err(|e| config_error(spec, e))?;
    let mut mp = MountPoint {
        typ: spec.typ.clone(),
        rw: !spec.read_only,
        destination: clean_path(&spec.target.replace('\\', "/")),
        spec: spec.clone(),
        ..MountPoint::default()
    };
    match spec.typ.as_str() {
        "volume" => {
            mp.name = spec.source.clone();
            mp.copy_data = true;
            if let Some(v) = &spec.volume_options {
                if let Some(d) = &v.driver_config {
                    mp.driver = d.name.clone();
                }
                if v.no_copy {
                    mp.copy_data = false;
                }
            }
        }
        "bind" => {
            mp.source = clean_path(&spec.source.replace('\\', "/"));
            mp.propagation = spec
                .bind_options
                .as_ref()
                .map(|b| b.propagation.clone())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "rprivate".into());
        }
        _ => {}
    }
    Ok(mp)
}

/// dockerd's `ParseMountRaw` for an entry of `HostConfig.Binds`
/// (`[source:]destination[:mode]`). Errors are dockerd's (status 500).
pub fn parse_bind(raw: &str, volume_driver: &str) -> Result<MountPoint> {
    let arr: Vec<&str> = raw.splitn(4, ':').collect();
    if arr[0].is_empty() {
        return Err(internal(invalid_spec(raw)));
    }
    let mut spec = MountSpec::default();
    let mut mode = "";
    match arr.len() {
        1 => spec.target = arr[0].into(),
        2 => {
            if valid_mode(arr[1]) {
                return Err(internal(invalid_spec(raw)));
            }
            spec.source = arr[0].into();
            spec.target = arr[1].into();
        }
        3 => {
            spec.source = arr[0].into();
            spec.target = arr[1].into();
            mode = arr[2];
        }
        _ => return Err(internal(invalid_spec(raw))),
    }
    if !valid_mode(mode) {
        return Err(internal(invalid_mode(mode)));
    }
    spec.typ = if spec.source.starts_with('/') {
        "bind".into()
    } else {
        "volume".into()
    };
    spec.read_only = !read_write(mode);
    if !volume_driver.is_empty() && spec.typ == "volume" {
        spec.volume_options = Some(VolumeOptions {
            driver_config: Some(DriverConfig {
                name: volume_driver.into(),
                options: None,
            }),
            ..VolumeOptions::default()
        });
    }
    if mode.split(',').any(|o| o == "nocopy") {
        spec.volume_options
            .get_or_insert_with(Default::default)
            .no_copy = true;
    }
    if let Some(p) = mode.split(',').find(|o| is_propagation(o)) {
        spec.bind_options = Some(BindOptions {
            propagation: p.into(),
            ..BindOptions::default()
        });
    }
    let mut mp = mount_point_of(&spec, false)
        .map_err(|e| internal(format!("{}: {e}", invalid_spec(raw))))?;
    mp.mode = mode.into();
    Ok(mp)
}

/// dockerd's `ParseVolumesFrom`: `container[:ro|rw]`.
pub fn parse_volumes_from(spec: &str) -> Result<(String, String)> {
    if spec.is_empty() {
        return Err(Error::invalid(
            "volumes-from specification cannot be an empty string",
        ));
    }
    let (id, mode) = spec.split_once(':').unwrap_or((spec, ""));
    if mode.is_empty() {
        return Ok((id.into(), "rw".into()));
    }
    if !valid_mode(mode)
        || mode.split(',').any(is_propagation)
        || mode.split(',').any(|o| o == "nocopy")
    {
        return Err(Error::invalid(invalid_mode(mode)));
    }
    Ok((id.into(), mode.into()))
}

/// dockerd's `ConvertTmpfsOptions`: the data string of a `--mount
/// type=tmpfs`.
pub fn convert_tmpfs_options(
    opt: Option<&TmpfsOptions>,
    read_only: bool,
) -> std::result::Result<String, String> {
    let mut raw: Vec<String> = Vec::new();
    if read_only {
        raw.push("ro".into());
    }
    if let Some(o) = opt {
        if o.mode != 0 {
            raw.push(format!("mode={:o}", o.mode));
        }
        if o.size_bytes != 0 {
            let mut size = o.size_bytes;
            let mut suffix = "";
            for (s, d) in [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
                if size % d == 0 {
                    size /= d;
                    suffix = s;
                    break;
                }
            }
            raw.push(format!("size={size}{suffix}"));
        }
        for o in o.options.iter().flatten() {
            if o.is_empty() || o.len() > 2 {
                return Err("invalid option array length".into());
            }
            if !["exec", "noexec"].contains(&o[0].as_str()) {
                return Err(format!("invalid option: {}", o[0]));
            }
            raw.push(o.join("="));
        }
    }
    Ok(raw.join(","))
}

/// Mount flags of the `mount` syscall that tmpfs options may set; the
/// propagation ones share one slot.
fn tmpfs_flag_slot(o: &str) -> Option<&'static str> {
    Some(match o {
        "ro" | "rw" => "rdonly",
        "suid" | "nosuid" => "nosuid",
        "dev" | "nodev" => "nodev",
        "exec" | "noexec" => "noexec",
        "sync" | "async" => "sync",
        "dirsync" => "dirsync",
        "remount" => "remount",
        "mand" | "nomand" => "mand",
        "atime" | "noatime" => "noatime",
        "diratime" | "nodiratime" => "nodiratime",
        "relatime" | "norelatime" => "relatime",
        "strictatime" | "nostrictatime" => "strictatime",
        "bind" | "rbind" | "unbindable" | "runbindable" | "private" | "rprivate" | "shared"
        | "rshared" | "slave" | "rslave" => "propagation",
        _ => return None,
    })
}

/// moby's `MergeTmpfsOptions`: later options win, one per flag and per
/// data key.
pub fn merge_tmpfs_options(options: &[String]) -> std::result::Result<Vec<String>, String> {
    let mut flags = BTreeSet::new();
    let mut data = BTreeSet::new();
    let mut out: Vec<String> = Vec::new();
    for o in options.iter().rev() {
        if o == "defaults" {
            continue;
        }
        if let Some(slot) = tmpfs_flag_slot(o) {
            if flags.insert(slot) {
                out.insert(0, o.clone());
            }
            continue;
        }
        let kv: Vec<&str> = o.splitn(2, '=').collect();
        let valid = [
            "",
            "size",
            "mode",
            "uid",
            "gid",
            "nr_inodes",
            "nr_blocks",
            "mpol",
        ];
        if kv.len() != 2 || !valid.contains(&kv[0]) {
            let quoted: Vec<String> = kv.iter().map(|s| format!("{s:?}")).collect();
            return Err(format!("invalid tmpfs option [{}]", quoted.join(" ")));
        }
        if data.insert(kv[0].to_string()) {
            out.insert(0, o.clone());
        }
    }
    Ok(out)
}

/// `Config.Volumes` of a new container: the request's, with the image's
/// added (dockerd's `merge`); null when both are empty.
pub fn config_volumes(requested: &Value, image: &Value) -> Value {
    let mut out = requested.as_object().cloned().unwrap_or_default();
    if let Some(img) = image.as_object() {
        for (k, v) in img {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

// ---------------------------------------------------------------- image lookups

/// What the image holds at `path` (absolute, clean), looking through its
/// layer directories top first: whiteouts hide what is below, an opaque
/// directory hides lower layers' content. Symlinks on the way are not
/// followed (an approximation used only to refuse an anonymous volume
/// over a file, as dockerd does).
fn image_entry(layers: &[PathBuf], path: &str) -> Option<std::fs::FileType> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return None;
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for layer in layers {
        let mut hidden_below = false;
        for i in 1..=parts.len() {
            let p = layer.join(parts[..i].join("/"));
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if md.file_type().is_char_device() && md.rdev() == 0 {
                return None; // a whiteout of the path or a parent
            }
            if i == parts.len() {
                return Some(md.file_type());
            }
            if !md.is_dir() {
                return None;
            }
            if rustix::fs::lgetxattr(&p, "trusted.overlay.opaque", &mut [0u8; 4][..])
                .is_ok_and(|n| n == 1)
            {
                hidden_below = true;
            }
        }
        if hidden_below {
            return None;
        }
    }
    None
}

// ---------------------------------------------------------------- create

/// What registering a new container's mounts needs.
pub(crate) struct MountRequest<'a> {
    pub id: &'a str,
    pub host_config: &'a Value,
    /// `Config.Volumes` after merging the image's.
    pub volumes: &'a Value,
    pub layer_dirs: &'a [PathBuf],
    pub data_root: &'a Path,
}

fn duplicate(dest: &str) -> Error {
    Error::invalid(format!("Duplicate mount point: {dest}"))
}

/// dockerd's `validateBindDaemonRoot`: a bind of (or over) the data root
/// gets rslave propagation unless it asks for rslave/rshared itself.
fn bind_in_data_root(mp: &mut MountPoint, data_root: &Path) -> Result<()> {
    if mp.spec.typ != "bind" {
        return Ok(());
    }
    let root = data_root.display().to_string();
    if !mp.spec.source.starts_with(&root) && !root.starts_with(&mp.spec.source) {
        return Ok(());
    }
    let given = mp
        .spec
        .bind_options
        .as_ref()
        .map(|b| b.propagation.as_str())
        .unwrap_or("");
    match given {
        "" => mp.propagation = "rslave".into(),
        "rslave" | "rshared" => {}
        p => {
            return Err(Error::invalid(format!(
                "invalid mount config: must use either propagation mode \"rslave\" or \"rshared\" when mount source is within the daemon root, daemon root: {root:?}, bind mount source: {:?}, propagation: {p:?}",
                mp.spec.source
            )));
        }
    }
    Ok(())
}

impl ContainerService {
    pub(crate) fn volumes(&self) -> Result<&dyn VolumeProvider> {
        self.volumes
            .as_deref()
            .ok_or_else(|| Error::not_implemented("volumes are not available in this daemon"))
    }

    /// Every container's volumes: volume name → container IDs.
    pub fn volume_users(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in self.meta.read(|r| r.containers())? {
            for m in row.record["Mounts"].as_array().into_iter().flatten() {
                if m["Type"] == "volume"
                    && let Some(n) = m["Name"].as_str()
                {
                    let ids = out.entry(n.to_string()).or_default();
                    if !ids.contains(&row.id) {
                        ids.push(row.id.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// The mount points of a container being created. Volumes it names
    /// are created as needed and held for it until [`Self::end_create`];
    /// on error, the anonymous volumes made so far are removed again.
    pub(crate) fn register_mounts(&self, req: &MountRequest) -> Result<Vec<MountPoint>> {
        let hc = req.host_config;
        let specs: Vec<MountSpec> = match &hc["Mounts"] {
            Value::Null => vec![],
            v => serde_json::from_value(v.clone())
                .map_err(|e| Error::invalid(format!("invalid HostConfig.Mounts: {e}")))?,
        };
        let needs_volumes = !specs.is_empty()
            || hc["Binds"].as_array().is_some_and(|b| !b.is_empty())
            || hc["VolumesFrom"].as_array().is_some_and(|b| !b.is_empty())
            || req.volumes.as_object().is_some_and(|v| !v.is_empty());
        if !needs_volumes && hc["Tmpfs"].as_object().is_none_or(|t| t.is_empty()) {
            return Ok(vec![]);
        }
        // Checked before anything is created (dockerd's verifyContainerSettings).
        validate_mounts(&specs)?;
        let tmpfs: BTreeSet<String> = hc["Tmpfs"]
            .as_object()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        for dest in &tmpfs {
            validate_tmpfs_destination(dest).map_err(Error::invalid)?;
        }
        let mut created_anonymous = Vec::new();
        let res = self.register_with(req, &specs, &tmpfs, &mut created_anonymous);
        if res.is_err() {
            self.end_create(req.id, &created_anonymous);
        }
        res
    }

    fn register_with(
        &self,
        req: &MountRequest,
        specs: &[MountSpec],
        tmpfs: &BTreeSet<String>,
        anonymous: &mut Vec<String>,
    ) -> Result<Vec<MountPoint>> {
        let hc = req.host_config;
        let volume_driver = hc["VolumeDriver"].as_str().unwrap_or("");
        let mut points: BTreeMap<String, MountPoint> = BTreeMap::new();
        let mut binds: BTreeSet<String> = BTreeSet::new();

        // 1. Volumes of other containers.
        for v in hc["VolumesFrom"].as_array().into_iter().flatten() {
            let (name, mode) = parse_volumes_from(v.as_str().unwrap_or(""))?;
            let src = self
                .find(&name)
                .map_err(|e| Error::new(ErrorKind::InvalidArgument, e.message))?;
            for m in mount_points(&src.record) {
                let mut cp = MountPoint {
                    rw: m.rw && read_write(&mode),
                    copy_data: false,
                    mode: String::new(),
                    ..m.clone()
                };
                if cp.typ == "volume" {
                    let pv = self.volumes()?.reference(&cp.name, req.id)?;
                    cp.source = pv.mountpoint.display().to_string();
                }
                points.insert(cp.destination.clone(), cp);
            }
        }

        // 2. Binds (`-v`).
        for b in hc["Binds"].as_array().into_iter().flatten() {
            let raw = b.as_str().unwrap_or("");
            let mut mp = parse_bind(raw, volume_driver)?;
            bind_in_data_root(&mut mp, req.data_root)?;
            if binds.contains(&mp.destination) || tmpfs.contains(&mp.destination) {
                return Err(duplicate(&mp.destination));
            }
            if mp.typ == "volume" {
                let name = (!mp.name.is_empty()).then_some(mp.name.as_str());
                let pv = self
                    .volumes()?
                    .ensure(name, &mp.driver, None, None, req.id)?;
                if name.is_none() {
                    anonymous.push(pv.name.clone());
                }
                mp.name = pv.name;
                mp.driver = pv.driver;
                mp.source = pv.mountpoint.display().to_string();
                if mp.mode.is_empty() {
                    mp.mode = "z".into();
                }
            }
            binds.insert(mp.destination.clone());
            points.insert(mp.destination.clone(), mp);
        }

        // 3. Mounts (`--mount`).
        for spec in specs {
            let mut mp = mount_point_of(spec, true).map_err(Error::invalid)?;
            bind_in_data_root(&mut mp, req.data_root)?;
            if binds.contains(&mp.destination) {
                return Err(duplicate(&spec.target));
            }
            match mp.typ.as_str() {
                "volume" => {
                    let (opts, labels) = match &spec.volume_options {
                        Some(v) => (
                            v.driver_config.as_ref().and_then(|d| d.options.clone()),
                            v.labels.clone(),
                        ),
                        None => (None, None),
                    };
                    let name = (!mp.name.is_empty()).then_some(mp.name.as_str());
                    let pv = self
                        .volumes()?
                        .ensure(name, &mp.driver, opts, labels, req.id)?;
                    if name.is_none() {
                        anonymous.push(pv.name.clone());
                    }
                    mp.name = pv.name;
                    mp.driver = pv.driver;
                    mp.source = pv.mountpoint.display().to_string();
                    if mp.mode.is_empty() {
                        mp.mode = "z".into();
                    }
                }
                "bind" => {
                    mp.skip_mountpoint_creation = !spec
                        .bind_options
                        .as_ref()
                        .is_some_and(|b| b.create_mountpoint);
                }
                _ => {}
            }
            binds.insert(mp.destination.clone());
            points.insert(mp.destination.clone(), mp);
        }

        // 4. Config.Volumes (with the image's): anonymous volumes where
        // nothing else is mounted.
        let mut wanted: Vec<&String> = req
            .volumes
            .as_object()
            .map(|v| v.keys().collect())
            .unwrap_or_default();
        wanted.sort();
        for spec in wanted {
            let dest = clean_path(spec);
            if points.contains_key(&dest) || tmpfs.contains(&dest) {
                continue;
            }
            if image_entry(req.layer_dirs, &dest).is_some_and(|t| !t.is_dir()) {
                return Err(internal(format!(
                    "cannot mount volume over existing file, file exists {}",
                    self.dir(req.id)
                        .join("rootfs")
                        .join(dest.trim_start_matches('/'))
                        .display()
                )));
            }
            let pv = self
                .volumes()?
                .ensure(None, volume_driver, None, None, req.id)?;
            anonymous.push(pv.name.clone());
            points.insert(
                dest.clone(),
                MountPoint {
                    typ: "volume".into(),
                    source: pv.mountpoint.display().to_string(),
                    destination: dest,
                    rw: true,
                    name: pv.name,
                    driver: pv.driver,
                    copy_data: true,
                    ..MountPoint::default()
                },
            );
        }
        Ok(points.into_values().collect())
    }

    /// A create is over: release the volumes it held; after a failed
    /// create, remove the anonymous volumes it made.
    pub(crate) fn end_create(&self, id: &str, failed_anonymous: &[String]) {
        let Some(vols) = self.volumes.as_deref() else {
            return;
        };
        vols.release(id);
        for name in failed_anonymous {
            if let Err(e) = vols.remove(name, &|| self.volume_users()) {
                tracing::warn!(volume = %name, error = %e, "remove the anonymous volume of a failed create");
            }
        }
    }

    // ------------------------------------------------------------ start

    /// Before a container's process starts: volumes mounted, bind sources
    /// made, the first start's copy-up done; returns the OCI mounts to
    /// add to its spec. The rootfs is mounted at `rootfs`.
    pub(crate) fn setup_mounts(&self, row: &ContainerRow, rootfs: &Path) -> Result<PreparedMounts> {
        let mps = mount_points(&row.record);
        let hc = &row.record["HostConfig"];
        let mut done: Vec<String> = Vec::new();
        let res = self.setup_with(row, rootfs, &mps, hc, &mut done);
        if res.is_err()
            && let Some(vols) = self.volumes.as_deref()
        {
            for name in &done {
                let _ = vols.unmount(name, &row.id);
            }
        }
        res
    }

    fn setup_with(
        &self,
        row: &ContainerRow,
        rootfs: &Path,
        mps: &[MountPoint],
        hc: &Value,
        done: &mut Vec<String>,
    ) -> Result<PreparedMounts> {
        let mut prepared = PreparedMounts::default();
        let mut copied = false;
        for mp in mps {
            let mut source = mp.source.clone();
            match mp.typ.as_str() {
                "volume" => {
                    let vols = self.volumes()?;
                    let path = vols.mount(&mp.name, &row.id).map_err(|e| {
                        Error::new(
                            e.kind,
                            format!("error while mounting volume '{}': {}", mp.source, e.message),
                        )
                    })?;
                    done.push(mp.name.clone());
                    if mp.copy_data {
                        copied = true;
                        copy_up(rootfs, &mp.destination, &path)?;
                    }
                    source = path.display().to_string();
                    if let Some(sub) = mp
                        .spec
                        .volume_options
                        .as_ref()
                        .map(|v| v.subpath.as_str())
                        .filter(|s| !s.is_empty())
                    {
                        source = subpath(&path, sub)?.display().to_string();
                    }
                    vols.event(
                        "mount",
                        &mp.name,
                        BTreeMap::from([
                            ("container".to_string(), row.id.clone()),
                            ("destination".to_string(), mp.destination.clone()),
                            ("driver".to_string(), mp.driver.clone()),
                            ("propagation".to_string(), mp.propagation.clone()),
                            ("read/write".to_string(), mp.rw.to_string()),
                        ]),
                    );
                }
                "bind" if !mp.skip_mountpoint_creation => {
                    // As dockerd: a missing `-v` source becomes a directory.
                    if let Err(e) = std::fs::create_dir_all(&mp.source)
                        && e.raw_os_error() != Some(libc::ENOTDIR)
                        && e.kind() != std::io::ErrorKind::AlreadyExists
                    {
                        return Err(Error::internal(format!(
                            "error while creating mount source path '{}': {e}",
                            mp.source
                        )));
                    }
                }
                _ => {}
            }
            prepared.user.push(UserMount {
                mp: mp.clone(),
                source,
            });
        }
        if copied {
            // Copy-up happens once, at a container's first start.
            self.update(&row.id, |r| {
                if let Some(list) = r[RECORD_KEY].as_array_mut() {
                    for m in list {
                        m["CopyData"] = json!(false);
                    }
                }
            })?;
        }
        prepared.tmpfs = hc["Tmpfs"]
            .as_object()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        prepared.readonly_rootfs = hc["ReadonlyRootfs"].as_bool() == Some(true);
        prepared.oci = oci_mounts(&prepared)?;
        propagation_checks(&mut prepared, &self.cfg.data_root)?;
        Ok(prepared)
    }

    /// The container stopped (or could not start): let go of its volumes.
    pub(crate) fn teardown_mounts(&self, id: &str, record: &Value) {
        let Some(vols) = self.volumes.as_deref() else {
            return;
        };
        for mp in mount_points(record) {
            if mp.typ != "volume" {
                continue;
            }
            match vols.unmount(&mp.name, id) {
                Ok(()) => vols.event(
                    "unmount",
                    &mp.name,
                    BTreeMap::from([
                        ("container".to_string(), id.to_string()),
                        ("driver".to_string(), mp.driver.clone()),
                    ]),
                ),
                Err(e) => {
                    tracing::warn!(container = %id, volume = %mp.name, error = %e, "unmount volume")
                }
            }
        }
    }

    /// A running container re-adopted after a daemon restart holds its
    /// volumes again (no events, no copy-up).
    pub(crate) fn readopt_mounts(&self, id: &str, record: &Value) {
        let Some(vols) = self.volumes.as_deref() else {
            return;
        };
        for mp in mount_points(record) {
            if mp.typ == "volume"
                && let Err(e) = vols.mount(&mp.name, id)
            {
                tracing::warn!(container = %id, volume = %mp.name, error = %e, "re-adopt volume");
            }
        }
    }

    /// `rm -v`: the container's anonymous volumes, unless another
    /// container still uses them.
    pub(crate) fn remove_anonymous_volumes(&self, record: &Value) {
        let Some(vols) = self.volumes.as_deref() else {
            return;
        };
        for mp in mount_points(record) {
            if !mp.is_anonymous_volume() {
                continue;
            }
            match vols.remove(&mp.name, &|| self.volume_users()) {
                Ok(()) => {}
                Err(e) if matches!(e.kind, ErrorKind::Conflict | ErrorKind::NotFound) => {}
                Err(e) => {
                    tracing::warn!(volume = %mp.name, error = %e, "remove anonymous volume")
                }
            }
        }
    }
}

/// `Source` of a volume mount with a subpath: `volume/subpath`, which must
/// exist inside the volume and be reached without symlinks.
fn subpath(volume: &Path, sub: &str) -> Result<PathBuf> {
    let root = rustix::fs::open(
        volume,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::internal(format!("open volume {}: {e}", volume.display())))?;
    rustix::fs::openat2(
        &root,
        sub,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| {
        Error::invalid(format!(
            "cannot access path {}: {}",
            volume.join(sub).display(),
            std::io::Error::from(e)
        ))
    })?;
    Ok(volume.join(clean_path(sub)))
}

/// Docker's copy-up: the image's content at `dest` into the volume at
/// `volume` when the volume is empty. `dest` is resolved inside the
/// rootfs (a symlink in the image cannot point the copy at the host).
fn copy_up(rootfs: &Path, dest: &str, volume: &Path) -> Result<()> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::internal(format!("open rootfs {}: {e}", rootfs.display())))?;
    let rel = dest.trim_start_matches('/');
    let src = match rustix::fs::openat2(
        &root,
        if rel.is_empty() { "." } else { rel },
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // Nothing (or no directory) in the image there: nothing to copy.
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => {
            return Err(Error::internal(format!(
                "failed to populate volume: open {dest} in the container: {}",
                std::io::Error::from(e)
            )));
        }
    };
    let dst = rustix::fs::open(
        volume,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::internal(format!(
            "failed to populate volume: open {}: {e}",
            volume.display()
        ))
    })?;
    if std::fs::read_dir(volume)?.next().is_some() {
        return Ok(());
    }
    berth_snapshots::copy_tree(src.as_fd(), dst.as_fd())
        .map_err(|e| Error::internal(format!("failed to populate volume: {}", e.message)))?;
    Ok(())
}

// ---------------------------------------------------------------- the spec

/// A user mount with its resolved host source.
#[derive(Clone, Debug)]
pub(crate) struct UserMount {
    mp: MountPoint,
    source: String,
}

/// What [`ContainerService::setup_mounts`] prepared for the spec.
#[derive(Clone, Debug, Default)]
pub struct PreparedMounts {
    user: Vec<UserMount>,
    /// `HostConfig.Tmpfs`: destination → options.
    tmpfs: BTreeMap<String, String>,
    readonly_rootfs: bool,
    /// The OCI mounts, sorted so that no mount shadows a later one.
    oci: Vec<Value>,
    /// `linux.rootfsPropagation` a shared/slave bind needs.
    rootfs_propagation: Option<&'static str>,
}

fn depth(dest: &str) -> usize {
    clean_path(dest).matches('/').count()
}

/// The mount a path lives on: (mount point, optional fields) of the
/// longest matching entry of /proc/self/mountinfo.
fn source_mount(path: &str) -> Result<(String, String)> {
    let real = std::fs::canonicalize(path).map_err(|e| Error::internal(format!("{path}: {e}")))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut best: Option<(String, String)> = None;
    for l in info.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() < 7 {
            continue;
        }
        let mp = f[4];
        if real.starts_with(mp) && best.as_ref().is_none_or(|(b, _)| mp.len() >= b.len()) {
            let sep = f.iter().position(|x| *x == "-").unwrap_or(f.len());
            best = Some((mp.to_string(), f[6..sep].join(" ")));
        }
    }
    best.ok_or_else(|| Error::internal(format!("could not find source mount of {path}")))
}

fn oci_mounts(p: &PreparedMounts) -> Result<Vec<Value>> {
    let mut entries: Vec<(String, Value)> = Vec::new();
    for (dest, data) in &p.tmpfs {
        entries.push((dest.clone(), tmpfs_mount(dest, data)?));
    }
    for u in &p.user {
        let m = &u.mp;
        if m.typ == "tmpfs" {
            let data = convert_tmpfs_options(m.spec.tmpfs_options.as_ref(), m.spec.read_only)
                .map_err(Error::internal)?;
            entries.push((m.destination.clone(), tmpfs_mount(&m.destination, &data)?));
            continue;
        }
        let recursive = !m
            .spec
            .bind_options
            .as_ref()
            .is_some_and(|b| b.non_recursive);
        let mut opts = vec![if recursive { "rbind" } else { "bind" }.to_string()];
        if !m.rw {
            if m.spec
                .bind_options
                .as_ref()
                .is_some_and(|b| b.read_only_force_recursive)
            {
                return Err(Error::internal("rro is not supported by runtime \"berth\""));
            }
            // berth-runtime has no recursive read-only (rro): like dockerd
            // on a runtime without it, a plain read-only bind.
            opts.push("ro".into());
        }
        if !m.propagation.is_empty() {
            opts.push(m.propagation.clone());
        }
        // Destinations of anonymous volumes may be relative (dockerd
        // accepts `Volumes: {"data": {}}`): they are under the root.
        let dest = if m.destination.starts_with('/') {
            m.destination.clone()
        } else {
            format!("/{}", m.destination)
        };
        entries.push((
            m.destination.clone(),
            json!({"destination": dest, "type": "bind", "source": u.source, "options": opts}),
        ));
    }
    entries.sort_by_key(|(d, _)| depth(d));
    Ok(entries.into_iter().map(|(_, v)| v).collect())
}

fn tmpfs_mount(dest: &str, data: &str) -> Result<Value> {
    let mut options: Vec<String> = ["noexec", "nosuid", "nodev", "rprivate"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !data.is_empty() {
        options.extend(data.split(',').map(String::from));
    }
    let merged = merge_tmpfs_options(&options).map_err(Error::internal)?;
    Ok(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": merged}))
}

/// Checks the propagation of shared and slave binds against their source
/// mounts (dockerd's `ensureShared`/`ensureSharedOrSlave`) and picks the
/// rootfs propagation they need.
fn propagation_checks(p: &mut PreparedMounts, data_root: &Path) -> Result<()> {
    for u in &p.user {
        let m = &u.mp;
        if m.typ != "bind" && m.typ != "volume" {
            continue;
        }
        match m.propagation.as_str() {
            "shared" | "rshared" => {
                let (mp, opts) = source_mount(&u.source)?;
                if !opts.split(' ').any(|o| o.starts_with("shared:")) {
                    return Err(Error::internal(format!(
                        "path {} is mounted on {mp} but it is not a shared mount",
                        u.source
                    )));
                }
                p.rootfs_propagation = Some("shared");
            }
            "slave" | "rslave" => {
                let (mp, opts) = source_mount(&u.source)?;
                let ok = opts
                    .split(' ')
                    .any(|o| o.starts_with("shared:") || o.starts_with("master:"));
                if !ok {
                    let root = data_root.display().to_string();
                    let fallback = (u.source.starts_with(&root) || root.starts_with(&u.source))
                        && m.spec
                            .bind_options
                            .as_ref()
                            .is_none_or(|b| b.propagation.is_empty());
                    if !fallback {
                        return Err(Error::internal(format!(
                            "path {} is mounted on {mp} but it is not a shared or slave mount",
                            u.source
                        )));
                    }
                    continue;
                }
                if p.rootfs_propagation != Some("shared") {
                    p.rootfs_propagation = Some("rslave");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

impl PreparedMounts {
    /// Adds the user's mounts to a container's OCI spec as dockerd's
    /// `withMounts` does: they replace default mounts at the same
    /// destination (a mount over /dev replaces everything under it), and
    /// with a read-only rootfs every other mount but /proc, /dev,
    /// /dev/pts, /dev/shm and /dev/mqueue becomes read-only.
    pub fn apply(&self, spec: &mut Value) {
        let me = self;
        let user: BTreeSet<String> = me
            .oci
            .iter()
            .filter_map(|m| m["destination"].as_str().map(String::from))
            .collect();
        let over_dev = user.contains("/dev");
        let mut mounts: Vec<Value> = spec["mounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| {
                let d = m["destination"].as_str().unwrap_or("");
                !(user.contains(d) || over_dev && d.starts_with("/dev/"))
            })
            .collect();
        if me.readonly_rootfs {
            for m in &mut mounts {
                let d = m["destination"].as_str().unwrap_or("");
                if ["/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"].contains(&d) {
                    continue;
                }
                if let Some(o) = m["options"].as_array_mut()
                    && !o.iter().any(|x| x == "ro")
                {
                    o.push(json!("ro"));
                }
            }
        }
        mounts.extend(me.oci.iter().cloned());
        spec["mounts"] = Value::Array(mounts);
        if let Some(p) = me.rootfs_propagation {
            spec["linux"]["rootfsPropagation"] = json!(p);
        }
    }
}

/// Docker's hint for a bind whose source and destination are of different
/// kinds, to append to the runtime's error (such a start records exit
/// code 127); empty for other errors.
pub fn start_error_hint(msg: &str) -> &'static str {
    if msg.to_lowercase().contains("not a directory") {
        ": Are you trying to mount a directory onto a file (or vice-versa)? Check if the specified host path exists and is the expected type"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_as_go() {
        assert_eq!(clean_path("/a/b/../c/"), "/a/c");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path("a/./b"), "a/b");
        assert_eq!(clean_path("../a"), "../a");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("//data//"), "/data");
    }

    #[test]
    fn modes() {
        assert!(valid_mode("ro"));
        assert!(valid_mode("ro,z,rshared,nocopy,cached"));
        assert!(!valid_mode("ro,rw"));
        assert!(!valid_mode("bad"));
        assert!(!read_write("ro"));
        assert!(read_write("rw,nocopy"));
    }

    #[test]
    fn binds_parse_as_dockerd() {
        let b = parse_bind("/host:/ctr:ro", "").unwrap();
        assert_eq!(
            (
                b.typ.as_str(),
                b.source.as_str(),
                b.destination.as_str(),
                b.rw
            ),
            ("bind", "/host", "/ctr", false)
        );
        assert_eq!(
            (b.mode.as_str(), b.propagation.as_str()),
            ("ro", "rprivate")
        );
        let v = parse_bind("data:/d:nocopy", "").unwrap();
        assert_eq!(
            (v.typ.as_str(), v.name.as_str(), v.copy_data),
            ("volume", "data", false)
        );
        let a = parse_bind("/anon", "").unwrap();
        assert_eq!((a.typ.as_str(), a.name.as_str()), ("volume", ""));
        assert!(a.is_anonymous_volume());
        let s = parse_bind("/h:/c:rshared", "").unwrap();
        assert_eq!(s.propagation, "rshared");
        let msg = |raw: &str| parse_bind(raw, "").unwrap_err();
        assert_eq!(msg("/tmp:/x:bad").message, "invalid mode: bad");
        assert_eq!(msg("/tmp:/x:bad").kind, ErrorKind::Internal);
        assert_eq!(
            msg("/x:rw").message,
            "invalid volume specification: '/x:rw'"
        );
        assert_eq!(
            msg("a:b:c:d:e").message,
            "invalid volume specification: 'a:b:c:d:e'"
        );
        assert_eq!(
            msg("/tmp:/").message,
            "invalid volume specification: '/tmp:/': invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
        );
        assert_eq!(
            msg("/tmp:x").message,
            "invalid volume specification: '/tmp:x': invalid mount config for type \"bind\": invalid mount path: 'x' mount path must be absolute"
        );
        assert_eq!(
            msg("/tmp:/x:nocopy").message,
            "invalid volume specification: '/tmp:/x:nocopy': invalid mount config for type \"bind\": field VolumeOptions must not be specified"
        );
        assert_eq!(msg("/tmp:/x:ro,rw").message, "invalid mode: ro,rw");
    }

    #[test]
    fn mount_specs_validate_as_dockerd() {
        let spec = |v: Value| -> MountSpec { serde_json::from_value(v).unwrap() };
        let err = |v: Value| validate_mounts(&[spec(v)]).unwrap_err().message;
        assert_eq!(
            err(json!({"Type": "bind", "Source": "/nonexistent-berth", "Target": "/x"})),
            "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent-berth"
        );
        assert_eq!(
            err(json!({"Type": "bind", "Source": "rel", "Target": "/x"})),
            "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute"
        );
        assert_eq!(
            err(json!({"Type": "foo", "Target": "/x"})),
            "invalid mount config for type \"foo\": mount type unknown"
        );
        assert_eq!(
            err(json!({"Type": "volume", "Target": "/x", "ReadOnly": true})),
            "invalid mount config for type \"volume\": must not set ReadOnly mode when using anonymous volumes"
        );
        assert_eq!(
            err(json!({"Type": "tmpfs", "Target": "/x", "Source": "a"})),
            "invalid mount config for type \"tmpfs\": field Source must not be specified"
        );
        assert_eq!(
            err(
                json!({"Type": "bind", "Source": "/tmp", "Target": "/x", "BindOptions": {"Propagation": "foo"}})
            ),
            "invalid mount config for type \"bind\": invalid propagation mode: foo"
        );
        assert_eq!(
            err(json!({"Type": "volume", "Source": "x"})),
            "invalid mount config for type \"volume\": field Target must not be empty"
        );
        assert_eq!(
            err(
                json!({"Type": "volume", "Source": "x", "Target": "/x", "VolumeOptions": {"Subpath": "../up"}})
            ),
            "invalid mount config for type \"volume\": subpath must be a relative path within the volume"
        );
        validate_mounts(&[spec(
            json!({"Type": "bind", "Source": "/tmp", "Target": "/x"}),
        )])
        .unwrap();
        // What the docker CLI sends for `--mount type=volume,dst=/x` round-trips.
        let sent = json!({"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": {}}});
        assert_eq!(serde_json::to_value(spec(sent.clone())).unwrap(), sent);
    }

    #[test]
    fn tmpfs_options_merge_as_moby() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            merge_tmpfs_options(&s(&[
                "noexec", "nosuid", "nodev", "rprivate", "size=2m", "exec"
            ]))
            .unwrap(),
            s(&["nosuid", "nodev", "rprivate", "size=2m", "exec"])
        );
        assert_eq!(
            merge_tmpfs_options(&s(&["size=1m", "size=2m"])).unwrap(),
            s(&["size=2m"])
        );
        assert_eq!(
            merge_tmpfs_options(&s(&["foo"])).unwrap_err(),
            r#"invalid tmpfs option ["foo"]"#
        );
        assert_eq!(
            convert_tmpfs_options(
                Some(&TmpfsOptions {
                    size_bytes: 1 << 20,
                    mode: 0o1777,
                    options: Some(vec![vec!["exec".into()]]),
                }),
                true
            )
            .unwrap(),
            "ro,mode=1777,size=1m,exec"
        );
        assert_eq!(
            convert_tmpfs_options(
                Some(&TmpfsOptions {
                    size_bytes: 1000,
                    ..Default::default()
                }),
                false
            )
            .unwrap(),
            "size=1000"
        );
    }

    #[test]
    fn volumes_from_modes() {
        assert_eq!(parse_volumes_from("c").unwrap(), ("c".into(), "rw".into()));
        assert_eq!(
            parse_volumes_from("c:ro").unwrap(),
            ("c".into(), "ro".into())
        );
        assert_eq!(
            parse_volumes_from("c:bad").unwrap_err().message,
            "invalid mode: bad"
        );
        assert!(parse_volumes_from("c:rshared").is_err());
        assert!(parse_volumes_from("c:nocopy").is_err());
    }

    #[test]
    fn user_mounts_replace_defaults_and_readonly_rootfs_reaches_the_rest() {
        let mut spec = json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/x/hosts", "options": ["rbind", "rprivate"]},
            {"destination": "/etc/hostname", "type": "bind", "source": "/x/hostname", "options": ["rbind", "rprivate"]},
        ], "linux": {}});
        let p = PreparedMounts {
            user: vec![
                UserMount {
                    mp: MountPoint {
                        typ: "bind".into(),
                        source: "/h/deep".into(),
                        destination: "/a/b/c".into(),
                        rw: false,
                        propagation: "rprivate".into(),
                        ..Default::default()
                    },
                    source: "/h/deep".into(),
                },
                UserMount {
                    mp: MountPoint {
                        typ: "volume".into(),
                        destination: "/etc/hosts".into(),
                        rw: true,
                        ..Default::default()
                    },
                    source: "/v/_data".into(),
                },
            ],
            tmpfs: BTreeMap::from([("/run".to_string(), "size=1m".to_string())]),
            readonly_rootfs: true,
            ..Default::default()
        };
        let p = PreparedMounts {
            oci: oci_mounts(&p).unwrap(),
            ..p
        };
        p.apply(&mut spec);
        let m = spec["mounts"].as_array().unwrap();
        let dests: Vec<&str> = m
            .iter()
            .map(|x| x["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev/shm",
                "/etc/hostname",
                "/run",
                "/etc/hosts",
                "/a/b/c"
            ]
        );
        assert_eq!(m[0]["options"], json!(["nosuid"]), "/proc stays writable");
        assert_eq!(m[2]["options"], json!(["rbind", "rprivate", "ro"]));
        assert_eq!(
            m[3]["options"],
            json!(["noexec", "nosuid", "nodev", "rprivate", "size=1m"])
        );
        assert_eq!(
            m[4]["options"],
            json!(["rbind"]),
            "user mounts keep their mode"
        );
        assert_eq!(m[5]["options"], json!(["rbind", "ro", "rprivate"]));
    }

    #[test]
    fn mount_type_errors_get_dockers_hint() {
        let h = start_error_hint("mount /etc: Not a directory (os error 20)");
        assert!(h.ends_with("Check if the specified host path exists and is the expected type"));
        assert_eq!(start_error_hint("other"), "");
    }

    #[test]
    fn image_entries_respect_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("top");
        let low = d.path().join("low");
        std::fs::create_dir_all(low.join("etc")).unwrap();
        std::fs::write(low.join("etc/file"), b"x").unwrap();
        std::fs::create_dir_all(low.join("data")).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        let layers = vec![top.clone(), low.clone()];
        assert!(image_entry(&layers, "/etc/file").is_some_and(|t| t.is_file()));
        assert!(image_entry(&layers, "/data").is_some_and(|t| t.is_dir()));
        assert!(image_entry(&layers, "/nope").is_none());
        if rustix::process::geteuid().is_root() {
            std::fs::create_dir_all(top.join("etc")).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                top.join("etc/file"),
                rustix::fs::FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .unwrap();
            assert!(image_entry(&layers, "/etc/file").is_none());
        }
    }
}
