//! Container directories and rows that do not belong together: what a crash
//! between `create`'s mkdir and its row, or between `rm`'s row delete and
//! its rename into `tmp/`, leaves behind.
//!
//! ```text
//! <data-root>/containers/<id>/   owned by the row `containers/<id>` in meta.redb
//! ```

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use berth_metadata::MetaRead;
use berth_types::Result;

use crate::ContainerService;

/// A directory under `containers/` with no row, or a row with no directory.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub id: String,
    /// The directory (for a row without one: where it should be).
    pub path: PathBuf,
    /// The container's name, for a row.
    pub name: Option<String>,
}

/// How old a directory without a row must be before `system check` calls it
/// garbage: `create` makes the directory a moment before it commits the row.
const CREATE_GRACE: Duration = Duration::from_secs(60);

impl ContainerService {
    /// Directories under `containers/` that no row owns. With `settled`
    /// (the daemon is starting: nothing is in flight) every such directory
    /// counts; otherwise only those older than a minute.
    pub fn unowned_dirs(&self, settled: bool) -> Result<Vec<Orphan>> {
        let rows: std::collections::HashSet<String> = self
            .meta
            .read(|r| r.containers())?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut out = Vec::new();
        let root = self.cfg.data_root.join("containers");
        for e in std::fs::read_dir(&root)? {
            let e = e?;
            let id = e.file_name().to_string_lossy().into_owned();
            if rows.contains(&id) {
                continue;
            }
            if !settled {
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default();
                if age < CREATE_GRACE {
                    continue;
                }
            }
            out.push(Orphan {
                id,
                path: e.path(),
                name: None,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Rows of containers that are not running and whose directory (their
    /// read-write layer) is gone.
    pub fn rows_without_dirs(&self) -> Result<Vec<Orphan>> {
        Ok(self
            .meta
            .read(|r| r.containers())?
            .into_iter()
            .filter(|c| c.record["State"]["Running"].as_bool() != Some(true))
            .filter(|c| !self.dir(&c.id).is_dir())
            .map(|c| Orphan {
                path: self.dir(&c.id),
                id: c.id,
                name: Some(c.name),
            })
            .collect())
    }

    /// Removes an orphan: the directory, or the row (and its name).
    pub fn remove_orphan(&self, o: &Orphan) -> Result<()> {
        if o.name.is_some() {
            self.meta.write(|w| w.delete_container(&o.id))?;
            self.notify();
            return Ok(());
        }
        let _ = berth_snapshots::unmount(&o.path.join("rootfs"));
        match std::fs::remove_dir_all(&o.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// At daemon start, before containers are re-adopted: drop directories
    /// without rows and rows without directories, each reported in the log.
    /// Returns (directories removed, rows removed).
    pub fn reconcile(&self) -> Result<(usize, usize)> {
        let mut counts = (0, 0);
        for o in self.unowned_dirs(true)? {
            match self.remove_orphan(&o) {
                Ok(()) => {
                    tracing::warn!(container = %o.id, dir = %o.path.display(), "removed a container directory no container owns");
                    counts.0 += 1;
                }
                Err(e) => {
                    tracing::warn!(container = %o.id, error = %e, "cannot remove an unowned container directory")
                }
            }
        }
        for o in self.rows_without_dirs()? {
            match self.remove_orphan(&o) {
                Ok(()) => {
                    tracing::warn!(container = %o.id, name = o.name.as_deref().unwrap_or(""), "removed a container whose directory is gone (interrupted create or remove)");
                    counts.1 += 1;
                }
                Err(e) => {
                    tracing::warn!(container = %o.id, error = %e, "cannot remove a container row without a directory")
                }
            }
        }
        Ok(counts)
    }
}
