//! Garbage collection, online: pushes and pulls go on while it runs.
//!
//! 1. Uploads idle longer than the expiry are abandoned (their files and
//!    rows removed); staging files without a row are removed once older
//!    than the grace window.
//! 2. Mark, in one read transaction: every blob a manifest needs or a
//!    repository holds; and the repository links that no manifest of their
//!    repository needs and that are older than the grace window (blobs
//!    pushed for a manifest that never came, or whose manifest was deleted).
//! 3. Those links are dropped in short write transactions, each re-checking
//!    its rows.
//! 4. Sweep, outside any transaction: every blob file not marked and older
//!    than the grace window is deleted, one at a time under the blob's lock
//!    after re-checking in the store that nothing took it meanwhile (the
//!    writers that add references hold the same lock).
//! 5. Repositories left with nothing are dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_types::Digest;
use serde::Serialize;

use crate::meta::Meta;
use crate::registry::SessionMap;
use crate::storage::{BlobStore, Locks};

/// What a run did (or, dry, would do).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub blobs_deleted: Vec<String>,
    pub bytes_freed: u64,
    pub links_dropped: usize,
    pub uploads_expired: usize,
    pub repos_dropped: Vec<String>,
    pub strays_removed: usize,
}

pub struct Gc<'a> {
    pub meta: &'a Arc<Meta>,
    pub store: &'a BlobStore,
    pub locks: &'a Locks,
    pub sessions: Option<&'a SessionMap>,
    pub grace: Duration,
    pub upload_expiry: Duration,
    pub dry_run: bool,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("gc task does not panic")
}

impl Gc<'_> {
    pub async fn run(&self) -> anyhow::Result<GcReport> {
        let mut report = GcReport {
            dry_run: self.dry_run,
            ..Default::default()
        };
        let now = SystemTime::now();
        let cutoff = now
            .checked_sub(self.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.expire_uploads(now, cutoff, &mut report).await?;

        let meta = self.meta.clone();
        let link_cutoff = secs(cutoff);
        let marks = blocking(move || meta.gc_mark(link_cutoff)).await?;
        let mut in_use: HashSet<Digest> = marks.in_use;
        if self.dry_run {
            report.links_dropped = marks.stale_links.len();
        } else {
            for batch in marks.stale_links.chunks(512) {
                let (meta, batch) = (self.meta.clone(), batch.to_vec());
                report.links_dropped +=
                    blocking(move || meta.gc_drop_links(&batch, link_cutoff)).await?;
            }
            // a link kept by the re-check (refreshed meanwhile) keeps its blob
            for (_, d) in &marks.stale_links {
                if self.meta.blob_in_use(d)? {
                    in_use.insert(*d);
                }
            }
        }

        let store = self.store.clone();
        let (blobs, strays) = blocking(move || store.list()).await?;
        for (d, size, mtime) in blobs {
            if in_use.contains(&d) || mtime >= cutoff {
                continue;
            }
            if self.dry_run {
                report.blobs_deleted.push(d.to_string());
                report.bytes_freed += size;
                continue;
            }
            let _guard = self.locks.lock(&d).await;
            let (meta, store) = (self.meta.clone(), self.store.clone());
            let freed = blocking(move || -> anyhow::Result<Option<u64>> {
                if meta.blob_in_use(&d)? {
                    return Ok(None);
                }
                // re-read the mtime: a writer may have refreshed it (install)
                let fresh = std::fs::metadata(store.path(&d))
                    .and_then(|m| m.modified())
                    .map(|m| m >= cutoff)
                    .unwrap_or(false);
                if fresh {
                    return Ok(None);
                }
                Ok(Some(store.remove(&d)?))
            })
            .await?;
            if let Some(n) = freed {
                report.blobs_deleted.push(d.to_string());
                report.bytes_freed += n;
            }
        }
        for p in strays {
            let old = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .map(|m| m < cutoff)
                .unwrap_or(false);
            if old {
                report.strays_removed += 1;
                if !self.dry_run {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        if !self.dry_run {
            let meta = self.meta.clone();
            report.repos_dropped = blocking(move || meta.gc_drop_empty_repos()).await?;
        }
        Ok(report)
    }

    async fn expire_uploads(
        &self,
        now: SystemTime,
        cutoff: SystemTime,
        report: &mut GcReport,
    ) -> anyhow::Result<()> {
        let expiry = now
            .checked_sub(self.upload_expiry)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let rows = self.meta.uploads()?;
        let store = self.store.clone();
        let files = blocking(move || store.list_uploads()).await?;
        let known: HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
        for (id, _, mtime) in &files {
            if !known.contains(id.as_str()) && *mtime < cutoff {
                report.strays_removed += 1;
                if !self.dry_run {
                    let _ = std::fs::remove_file(self.store.upload_path(id));
                }
            }
        }
        for (id, row) in &rows {
            let last = files
                .iter()
                .find(|(f, _, _)| f == id)
                .map(|(_, _, m)| *m)
                .unwrap_or_else(|| SystemTime::UNIX_EPOCH + Duration::from_secs(row.started));
            if last >= expiry {
                continue;
            }
            // an upload streaming right now holds its session lock: skip it
            let session = self
                .sessions
                .and_then(|s| s.lock().unwrap().get(id).cloned());
            let _held = match &session {
                Some(s) => match s.clone().try_lock_owned() {
                    Ok(g) => Some(g),
                    Err(_) => continue,
                },
                None => None,
            };
            report.uploads_expired += 1;
            if self.dry_run {
                continue;
            }
            if let Some(s) = self.sessions {
                s.lock().unwrap().remove(id);
            }
            let (meta, i) = (self.meta.clone(), id.clone());
            blocking(move || meta.delete_upload(&i)).await?;
            let _ = std::fs::remove_file(self.store.upload_path(id));
        }
        Ok(())
    }
}
