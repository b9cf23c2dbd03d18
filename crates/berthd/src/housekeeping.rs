//! The daemon's own housekeeping: what a crash leaves in the data root and
//! the exec root is reconciled at start and reported in the log, and
//! `system check` (`/berth/system/check`) lists — and with repair removes —
//! whatever no metadata row or lease owns while the daemon runs.
//!
//! ```text
//! <data-root>/
//!   tmp/<anything>                staging: never owned after a restart;
//!                                 while running, garbage once untouched for an hour
//!   content/sha256/<hex>          owned by an image row or an operation's lease
//!   layers/<chain-id>/            owned by an image row or an operation's lease
//!   containers/<id>/              owned by the container row <id>
//!   volumes/<name>/               owned by the volume row <name>
//!   <mount points>                a running container's rootfs, a volume's _data
//! <exec-root>/netns/<id>          a running container's network namespace
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_types::Result;
use serde::Serialize;

/// Staging entries younger than this may belong to an operation in flight.
const STAGING_GRACE: Duration = Duration::from_secs(3600);
/// Volume directories younger than this may be a `create` in flight.
const CREATE_GRACE: Duration = Duration::from_secs(60);

/// Entries of the data root that berth itself keeps there.
const TOP_LEVEL: &[&str] = &[
    "meta.redb",
    "berthd.lock",
    "engine-id",
    "content",
    "layers",
    "containers",
    "volumes",
    "tmp",
];

/// One thing nothing owns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Item {
    /// `staging`, `blob`, `layer`, `container`, `container-row`, `volume`,
    /// `mount`, `stray` (an unknown file inside a store) or `unknown` (an
    /// entry of the data root berth does not know; listed, never removed).
    pub kind: &'static str,
    pub path: String,
    /// Bytes it holds (0 for mounts and rows).
    pub size: u64,
    pub reason: String,
    pub removed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    pub items: Vec<Item>,
    /// Bytes of all items (reclaimed ones, after a repair).
    pub size: u64,
}

/// The services housekeeping looks at.
#[derive(Clone)]
pub struct Stores {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub images: Arc<berth_images::ImageService>,
    pub containers: Arc<berth_containers::ContainerService>,
    pub volumes: Arc<berth_volumes::VolumeService>,
}

fn age(p: &Path) -> Duration {
    std::fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

fn size_of(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => berth_snapshots::dir_size(p).unwrap_or(0).max(0) as u64,
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn remove_path(p: &Path) -> std::io::Result<()> {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn item(kind: &'static str, path: &Path, size: u64, reason: impl Into<String>) -> Item {
    Item {
        kind,
        path: path.display().to_string(),
        size,
        reason: reason.into(),
        removed: false,
        error: None,
    }
}

/// Entries of `tmp/`: all of them when `settled` (daemon start), otherwise
/// those untouched for an hour.
fn staging(data_root: &Path, settled: bool) -> Vec<Item> {
    let tmp = data_root.join("tmp");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let p = e.path();
        if !settled && age(&p) < STAGING_GRACE {
            continue;
        }
        out.push(item(
            "staging",
            &p,
            size_of(&p),
            if settled {
                "staging left by an earlier run"
            } else {
                "staging untouched for over an hour"
            },
        ));
    }
    out
}

/// Mount points under the data root and the exec root that nothing owns:
/// a container's rootfs (owned while it runs; while the daemon runs, while
/// its row exists), a volume's `_data` (while its row exists) and a
/// container's network namespace (as its rootfs). Deepest first.
fn dangling_mounts(s: &Stores, settled: bool) -> Vec<Item> {
    let owns_container = |id: &str| {
        if settled {
            s.containers.is_running(id)
        } else {
            s.containers.find(id).is_ok_and(|r| r.id == id)
        }
    };
    let mut out = Vec::new();
    for root in [&s.data_root, &s.exec_root] {
        // When one root lies inside the other, a mount belongs to the inner one.
        let other = if root == &s.data_root {
            &s.exec_root
        } else {
            &s.data_root
        };
        for m in berth_volumes::mounts::mounts_under(root) {
            let Ok(rel) = m.strip_prefix(root) else {
                continue;
            };
            if other.starts_with(root) && other != root && m.starts_with(other) {
                continue;
            }
            let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            let owned = if root == &s.data_root {
                match parts.as_slice() {
                    [] => true,
                    ["containers", id, "rootfs", ..] => owns_container(id),
                    ["volumes", name, "_data", ..] => s.volumes.get(name).is_ok(),
                    _ => false,
                }
            } else {
                match parts.as_slice() {
                    [] => true,
                    ["netns", id] => owns_container(id),
                    _ => false,
                }
            };
            if !owned {
                out.push(item(
                    "mount",
                    &m,
                    0,
                    "a mount point no container or volume holds",
                ));
            }
        }
    }
    out
}

/// Directories under `volumes/` without a volume row (the volume service
/// adopts these at start; while running they can only be made by hand).
fn unowned_volumes(s: &Stores) -> Vec<Item> {
    let dir = s.data_root.join("volumes");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if s.volumes.get(&name).is_ok() || age(&p) < CREATE_GRACE {
            continue;
        }
        out.push(item("volume", &p, size_of(&p), "no volume row owns it"));
    }
    out
}

/// Names in the content and layer stores that are not digests, and
/// entries of the data root berth does not keep.
fn strays(s: &Stores) -> Vec<Item> {
    let mut out = Vec::new();
    for (dir, what) in [
        (s.data_root.join("content/sha256"), "not a blob name"),
        (s.data_root.join("layers"), "not a layer name"),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let ok = name
                .to_str()
                .is_some_and(|n| berth_types::Digest::from_hex(n).is_ok());
            if !ok {
                out.push(item("stray", &e.path(), size_of(&e.path()), what));
            }
        }
    }
    for e in std::fs::read_dir(&s.data_root)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !TOP_LEVEL.contains(&name.as_str()) {
            out.push(item(
                "unknown",
                &e.path(),
                0,
                "not part of berth's data root layout; left alone",
            ));
        }
    }
    out
}

/// Everything nothing owns, as `system check` lists it.
pub fn check(s: &Stores) -> Result<Report> {
    let mut items = staging(&s.data_root, false);
    let berth_images::Unreferenced { blobs, layers } = s.images.unreferenced()?;
    for (d, p) in blobs {
        items.push(item(
            "blob",
            &p,
            size_of(&p),
            format!("no image references {d} and no operation holds it"),
        ));
    }
    for (c, p) in layers {
        items.push(item(
            "layer",
            &p,
            size_of(&p),
            format!("no image has chain ID {c} and no operation holds it"),
        ));
    }
    for o in s.containers.unowned_dirs(false)? {
        items.push(item(
            "container",
            &o.path,
            size_of(&o.path),
            format!("no container {} exists", o.id),
        ));
    }
    for o in s.containers.rows_without_dirs()? {
        let mut it = item(
            "container-row",
            &o.path,
            0,
            format!(
                "container {} ({}) has no directory",
                o.id,
                o.name.as_deref().unwrap_or("")
            ),
        );
        it.path = o.id.clone();
        items.push(it);
    }
    items.extend(unowned_volumes(s));
    items.extend(dangling_mounts(s, false));
    items.extend(strays(s));
    let size = items.iter().map(|i| i.size).sum();
    Ok(Report { items, size })
}

/// [`check`], then remove each item (mounts first, deepest first), going
/// on past failures. Blobs and layers go through the image service's
/// garbage collection, which marks again, so nothing referenced meanwhile
/// is lost.
pub fn repair(s: &Stores) -> Result<Report> {
    let mut report = check(s)?;
    let mut gc_needed = false;
    let mut order: Vec<usize> = (0..report.items.len()).collect();
    order.sort_by_key(|i| report.items[*i].kind != "mount");
    for i in order {
        let it = &mut report.items[i];
        let res: std::result::Result<(), String> = match it.kind {
            "mount" => berth_volumes::mounts::unmount(Path::new(&it.path)).map_err(|e| e.message),
            "blob" | "layer" => {
                gc_needed = true;
                continue;
            }
            "container" | "container-row" => {
                let orphan = berth_containers::Orphan {
                    id: if it.kind == "container" {
                        Path::new(&it.path)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    } else {
                        it.path.clone()
                    },
                    path: PathBuf::from(&it.path),
                    name: (it.kind == "container-row").then(String::new),
                };
                s.containers.remove_orphan(&orphan).map_err(|e| e.message)
            }
            "unknown" => continue,
            _ => remove_path(Path::new(&it.path)).map_err(|e| e.to_string()),
        };
        match res {
            Ok(()) => it.removed = true,
            Err(e) => it.error = Some(e),
        }
    }
    if gc_needed {
        let gc = s.images.gc();
        for it in report
            .items
            .iter_mut()
            .filter(|i| i.kind == "blob" || i.kind == "layer")
        {
            match &gc {
                Ok(_) if !Path::new(&it.path).exists() => it.removed = true,
                Ok(_) => it.error = Some("referenced again meanwhile; kept".into()),
                Err(e) => it.error = Some(e.message.clone()),
            }
        }
    }
    for it in report.items.iter().filter(|i| i.removed) {
        tracing::info!(kind = it.kind, path = %it.path, "system check: removed");
    }
    report.size = report
        .items
        .iter()
        .filter(|i| i.removed)
        .map(|i| i.size)
        .sum();
    Ok(report)
}

/// At start, before any service opens: empty `tmp/` and collect the blobs
/// and layer directories no image references. Logged with counts.
pub fn reconcile_store(data_root: &Path, images: &berth_images::ImageService) -> Result<()> {
    // A mount in the staging area would have its files deleted through it.
    let tmp = data_root.join("tmp");
    for m in berth_volumes::mounts::mounts_under(&tmp)
        .into_iter()
        .filter(|m| *m != tmp)
    {
        match berth_volumes::mounts::unmount(&m) {
            Ok(()) => {
                tracing::warn!(mount = %m.display(), "housekeeping: unmounted a dangling mount in tmp/")
            }
            Err(e) => {
                tracing::warn!(mount = %m.display(), error = %e, "cannot unmount a dangling mount")
            }
        }
    }
    let staged = staging(data_root, true);
    let (mut removed, mut bytes) = (0usize, 0u64);
    for it in &staged {
        match remove_path(Path::new(&it.path)) {
            Ok(()) => {
                removed += 1;
                bytes += it.size;
            }
            Err(e) => {
                tracing::warn!(path = %it.path, error = %e, "cannot remove staging garbage")
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            entries = removed,
            bytes,
            "housekeeping: emptied tmp/ (staging left by an earlier run)"
        );
    }
    let gc = images.gc()?;
    if gc.blobs > 0 || !gc.layers.is_empty() {
        tracing::info!(
            blobs = gc.blobs,
            layers = gc.layers.len(),
            bytes = gc.reclaimed,
            "housekeeping: removed blobs and layer directories no image references"
        );
    }
    Ok(())
}

/// At start, after containers were re-adopted and volumes and networks
/// restored: unmount what nothing holds any more. Logged with a count.
pub fn reconcile_mounts(s: &Stores) {
    let dangling = dangling_mounts(s, true);
    let mut n = 0;
    for it in &dangling {
        match berth_volumes::mounts::unmount(Path::new(&it.path)) {
            Ok(()) => {
                tracing::warn!(mount = %it.path, "housekeeping: unmounted a dangling mount");
                n += 1;
            }
            Err(e) => {
                tracing::warn!(mount = %it.path, error = %e, "cannot unmount a dangling mount")
            }
        }
    }
    if n > 0 {
        tracing::info!(mounts = n, "housekeeping: unmounted dangling mounts");
    }
}
