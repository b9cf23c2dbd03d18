//! The registry's metadata: repositories, tags, manifests, which blobs each
//! repository holds, what references what, and uploads in progress — all in
//! one redb file, every change a transaction. This is what lets garbage
//! collection run online: reachability is a query, not a walk over link
//! files.
//!
//! ```text
//! registry.redb
//!   repos       <repo>                                -> RepoRow (json)
//!   tags        <repo> \0 <tag>                       -> "sha256:<hex>"
//!   manifests   <repo> \0 sha256:<hex>                -> ManifestRow (json)
//!   links       <repo> \0 sha256:<hex>                -> LinkRow (json)   blob is in repo
//!   blob_repos  sha256:<hex> \0 <repo>                -> ""               reverse of links
//!   refs        sha256:<blob> \0 <repo> \0 sha256:<m> -> ""               manifest m needs blob
//!                                                                          (a manifest also refs itself)
//!   referrers   <repo> \0 sha256:<subject> \0 sha256:<m> -> descriptor (json)
//!   uploads     <uuid>                                -> UploadRow (json)
//! ```
//!
//! A blob file may be deleted only while no `refs` and no `blob_repos` row
//! names it (and it is older than the upload grace window); the callers
//! that add such rows hold the blob's lock (see `storage::Locks`) across
//! "file in place" and "row committed", and so does the sweep across
//! "no row" and "file deleted".

use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;

use berth_types::Digest;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

const REPOS: TableDefinition<&str, &[u8]> = TableDefinition::new("repos");
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
const LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("links");
const BLOB_REPOS: TableDefinition<&str, &str> = TableDefinition::new("blob_repos");
const REFS: TableDefinition<&str, &str> = TableDefinition::new("refs");
const REFERRERS: TableDefinition<&str, &[u8]> = TableDefinition::new("referrers");
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");

/// A metadata-store failure (always an internal error to clients).
#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct MetaError(String);

pub type MResult<T> = Result<T, MetaError>;

fn db_err(e: impl std::fmt::Display) -> MetaError {
    MetaError(e.to_string())
}

fn decode<T: DeserializeOwned>(what: &str, key: &str, b: &[u8]) -> MResult<T> {
    serde_json::from_slice(b).map_err(|e| MetaError(format!("{what} {key:?}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("metadata rows serialize")
}

fn k2(a: &str, b: &str) -> String {
    format!("{a}\0{b}")
}

fn k3(a: &str, b: &str, c: &str) -> String {
    format!("{a}\0{b}\0{c}")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoRow {
    pub v: u32,
    pub created: u64,
}

/// A manifest stored in a repository. Its bytes are the blob of the same digest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestRow {
    pub v: u32,
    pub media_type: String,
    pub size: u64,
    pub created: u64,
    /// Blobs (config, layers) and child manifests it references.
    pub refs: Vec<Digest>,
    pub subject: Option<Digest>,
    /// What the referrers API reports: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Map<String, Value>>,
}

/// A blob held by a repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LinkRow {
    pub v: u32,
    pub size: u64,
    /// When it was last uploaded or mounted into the repository (unix seconds).
    pub linked: u64,
}

/// An upload session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UploadRow {
    pub v: u32,
    pub repo: String,
    /// Who started it; only they may continue it (None when auth is off).
    pub owner: Option<String>,
    pub started: u64,
}

/// A reference a manifest makes that must exist in the repository.
#[derive(Clone, Debug, PartialEq)]
pub enum RefCheck {
    Blob { digest: Digest, size: u64 },
    Manifest { digest: Digest },
}

/// Why a manifest was refused by [`Meta::put_manifest`].
#[derive(Clone, Debug, PartialEq)]
pub enum PutRefused {
    Missing(Digest),
    SizeMismatch {
        digest: Digest,
        declared: u64,
        stored: u64,
    },
}

/// Result of the mark phase of garbage collection.
#[derive(Debug, Default)]
pub struct Marks {
    /// Every blob some manifest needs or some repository holds.
    pub in_use: HashSet<Digest>,
    /// Links older than the cutoff that no manifest of their repository needs.
    pub stale_links: Vec<(String, Digest)>,
}

pub struct Meta {
    db: redb::Database,
}

/// Rows of a `&str -> &str` table whose key starts with `prefix`.
fn scan_str<T>(t: &T, prefix: &str) -> MResult<Vec<(String, String)>>
where
    T: ReadableTable<&'static str, &'static str>,
{
    let mut out = Vec::new();
    for row in t.range(prefix..).map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_string(), v.value().to_string()));
    }
    Ok(out)
}

/// Rows of a `&str -> &[u8]` table whose key starts with `prefix`.
fn scan_bytes<T>(t: &T, prefix: &str) -> MResult<Vec<(String, Vec<u8>)>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut out = Vec::new();
    for row in t.range(prefix..).map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// True if any key of `t` starts with `prefix`.
fn has_prefix<T, V>(t: &T, prefix: &str) -> MResult<bool>
where
    T: ReadableTable<&'static str, V>,
    V: redb::Value + 'static,
{
    match t.range(prefix..).map_err(db_err)?.next() {
        Some(row) => {
            let (k, _) = row.map_err(db_err)?;
            Ok(k.value().starts_with(prefix))
        }
        None => Ok(false),
    }
}

/// Keys of `t` after `last` (exclusive) under `prefix`, at most `n`; and
/// whether more follow.
fn page<T, V>(t: &T, prefix: &str, last: Option<&str>, n: usize) -> MResult<(Vec<String>, bool)>
where
    T: ReadableTable<&'static str, V>,
    V: redb::Value + 'static,
{
    let start = match last {
        Some(l) => format!("{prefix}{l}"),
        None => prefix.to_string(),
    };
    let lower = if last.is_some() {
        Bound::Excluded(start.as_str())
    } else {
        Bound::Included(start.as_str())
    };
    let mut out = Vec::new();
    for row in t.range::<&str>((lower, Bound::Unbounded)).map_err(db_err)? {
        let (k, _) = row.map_err(db_err)?;
        let Some(rest) = k.value().strip_prefix(prefix) else {
            break;
        };
        if out.len() == n {
            return Ok((out, true));
        }
        out.push(rest.to_string());
    }
    Ok((out, false))
}

impl Meta {
    /// Opens (creating) the store at `path`. Fails if another process has it open.
    pub fn open(path: &Path) -> MResult<Self> {
        let db = redb::Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => MetaError(format!(
                "{} is in use by another process (a running berth-registry?)",
                path.display()
            )),
            e => MetaError(format!("{}: {e}", path.display())),
        })?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            tx.open_table(REPOS).map_err(db_err)?;
            tx.open_table(TAGS).map_err(db_err)?;
            tx.open_table(MANIFESTS).map_err(db_err)?;
            tx.open_table(LINKS).map_err(db_err)?;
            tx.open_table(BLOB_REPOS).map_err(db_err)?;
            tx.open_table(REFS).map_err(db_err)?;
            tx.open_table(REFERRERS).map_err(db_err)?;
            tx.open_table(UPLOADS).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Meta { db })
    }

    fn read(&self) -> MResult<redb::ReadTransaction> {
        self.db.begin_read().map_err(db_err)
    }

    fn write(&self) -> MResult<redb::WriteTransaction> {
        self.db.begin_write().map_err(db_err)
    }

    pub fn repo_exists(&self, repo: &str) -> MResult<bool> {
        let tx = self.read()?;
        let t = tx.open_table(REPOS).map_err(db_err)?;
        Ok(t.get(repo).map_err(db_err)?.is_some())
    }

    pub fn tag(&self, repo: &str, tag: &str) -> MResult<Option<Digest>> {
        let tx = self.read()?;
        let t = tx.open_table(TAGS).map_err(db_err)?;
        let v = t.get(k2(repo, tag).as_str()).map_err(db_err)?;
        v.map(|v| v.value().parse().map_err(db_err)).transpose()
    }

    pub fn manifest(&self, repo: &str, d: &Digest) -> MResult<Option<ManifestRow>> {
        let tx = self.read()?;
        let t = tx.open_table(MANIFESTS).map_err(db_err)?;
        let key = k2(repo, &d.to_string());
        let v = t.get(key.as_str()).map_err(db_err)?;
        v.map(|v| decode("manifest", &key, v.value())).transpose()
    }

    pub fn link(&self, repo: &str, d: &Digest) -> MResult<Option<LinkRow>> {
        let tx = self.read()?;
        let t = tx.open_table(LINKS).map_err(db_err)?;
        let key = k2(repo, &d.to_string());
        let v = t.get(key.as_str()).map_err(db_err)?;
        v.map(|v| decode("link", &key, v.value())).transpose()
    }

    /// Tags of `repo` in byte order after `last`, at most `n`; and whether more follow.
    pub fn tags(&self, repo: &str, last: Option<&str>, n: usize) -> MResult<(Vec<String>, bool)> {
        let tx = self.read()?;
        let t = tx.open_table(TAGS).map_err(db_err)?;
        page(&t, &format!("{repo}\0"), last, n)
    }

    /// Repository names after `last`, at most `n`; and whether more follow.
    pub fn repos(&self, last: Option<&str>, n: usize) -> MResult<(Vec<String>, bool)> {
        let tx = self.read()?;
        let t = tx.open_table(REPOS).map_err(db_err)?;
        page(&t, "", last, n)
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`.
    pub fn referrers(&self, repo: &str, subject: &Digest) -> MResult<Vec<Value>> {
        let tx = self.read()?;
        let t = tx.open_table(REFERRERS).map_err(db_err)?;
        scan_bytes(&t, &k3(repo, &subject.to_string(), ""))?
            .into_iter()
            .map(|(k, v)| decode("referrer", &k, &v))
            .collect()
    }

    pub fn upload(&self, id: &str) -> MResult<Option<UploadRow>> {
        let tx = self.read()?;
        let t = tx.open_table(UPLOADS).map_err(db_err)?;
        let v = t.get(id).map_err(db_err)?;
        v.map(|v| decode("upload", id, v.value())).transpose()
    }

    pub fn uploads(&self) -> MResult<Vec<(String, UploadRow)>> {
        let tx = self.read()?;
        let t = tx.open_table(UPLOADS).map_err(db_err)?;
        scan_bytes(&t, "")?
            .into_iter()
            .map(|(k, v)| Ok((k.clone(), decode("upload", &k, &v)?)))
            .collect()
    }

    /// True while a manifest needs `d` or a repository holds it.
    pub fn blob_in_use(&self, d: &Digest) -> MResult<bool> {
        let tx = self.read()?;
        let p = format!("{d}\0");
        Ok(has_prefix(&tx.open_table(REFS).map_err(db_err)?, &p)?
            || has_prefix(&tx.open_table(BLOB_REPOS).map_err(db_err)?, &p)?)
    }

    pub fn create_upload(&self, id: &str, row: &UploadRow) -> MResult<()> {
        let tx = self.write()?;
        tx.open_table(UPLOADS)
            .map_err(db_err)?
            .insert(id, encode(row).as_slice())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    pub fn delete_upload(&self, id: &str) -> MResult<bool> {
        let tx = self.write()?;
        let found = tx
            .open_table(UPLOADS)
            .map_err(db_err)?
            .remove(id)
            .map_err(db_err)?
            .is_some();
        tx.commit().map_err(db_err)?;
        Ok(found)
    }

    fn ensure_repo(tx: &redb::WriteTransaction, repo: &str) -> MResult<()> {
        let mut t = tx.open_table(REPOS).map_err(db_err)?;
        if t.get(repo).map_err(db_err)?.is_none() {
            let row = RepoRow {
                v: 1,
                created: now(),
            };
            t.insert(repo, encode(&row).as_slice()).map_err(db_err)?;
        }
        Ok(())
    }

    fn insert_link(tx: &redb::WriteTransaction, repo: &str, d: &Digest, size: u64) -> MResult<()> {
        Self::ensure_repo(tx, repo)?;
        let ds = d.to_string();
        let row = LinkRow {
            v: 1,
            size,
            linked: now(),
        };
        tx.open_table(LINKS)
            .map_err(db_err)?
            .insert(k2(repo, &ds).as_str(), encode(&row).as_slice())
            .map_err(db_err)?;
        tx.open_table(BLOB_REPOS)
            .map_err(db_err)?
            .insert(k2(&ds, repo).as_str(), "")
            .map_err(db_err)?;
        Ok(())
    }

    /// Records that `repo` holds blob `d` (its file is in place), ending
    /// the upload `upload` if given.
    pub fn commit_blob(
        &self,
        repo: &str,
        d: &Digest,
        size: u64,
        upload: Option<&str>,
    ) -> MResult<()> {
        let tx = self.write()?;
        Self::insert_link(&tx, repo, d, size)?;
        if let Some(id) = upload {
            tx.open_table(UPLOADS)
                .map_err(db_err)?
                .remove(id)
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Links `d` into `to` if `from` holds it; returns its size.
    pub fn mount(&self, from: &str, to: &str, d: &Digest) -> MResult<Option<u64>> {
        let tx = self.write()?;
        let key = k2(from, &d.to_string());
        let size = {
            let t = tx.open_table(LINKS).map_err(db_err)?;
            let v = t.get(key.as_str()).map_err(db_err)?;
            match v {
                Some(v) => decode::<LinkRow>("link", &key, v.value())?.size,
                None => return Ok(None),
            }
        };
        Self::insert_link(&tx, to, d, size)?;
        tx.commit().map_err(db_err)?;
        Ok(Some(size))
    }

    /// Removes blob `d` from `repo`; false if it was not there.
    pub fn unlink_blob(&self, repo: &str, d: &Digest) -> MResult<bool> {
        let tx = self.write()?;
        let ds = d.to_string();
        let found = tx
            .open_table(LINKS)
            .map_err(db_err)?
            .remove(k2(repo, &ds).as_str())
            .map_err(db_err)?
            .is_some();
        tx.open_table(BLOB_REPOS)
            .map_err(db_err)?
            .remove(k2(&ds, repo).as_str())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(found)
    }

    /// Stores manifest `d` in `repo` and points `tags` at it, after checking
    /// in the same transaction that every reference in `checks` is in the
    /// repository. The manifest's bytes must already be in the blob store.
    pub fn put_manifest(
        &self,
        repo: &str,
        d: &Digest,
        row: &ManifestRow,
        checks: &[RefCheck],
        tags: &[String],
    ) -> MResult<Result<(), PutRefused>> {
        let tx = self.write()?;
        {
            let links = tx.open_table(LINKS).map_err(db_err)?;
            let manifests = tx.open_table(MANIFESTS).map_err(db_err)?;
            for c in checks {
                match c {
                    RefCheck::Blob { digest, size } => {
                        let key = k2(repo, &digest.to_string());
                        let v = links.get(key.as_str()).map_err(db_err)?;
                        let Some(v) = v else {
                            return Ok(Err(PutRefused::Missing(*digest)));
                        };
                        let link: LinkRow = decode("link", &key, v.value())?;
                        if link.size != *size {
                            return Ok(Err(PutRefused::SizeMismatch {
                                digest: *digest,
                                declared: *size,
                                stored: link.size,
                            }));
                        }
                    }
                    RefCheck::Manifest { digest } => {
                        let key = k2(repo, &digest.to_string());
                        if manifests.get(key.as_str()).map_err(db_err)?.is_none() {
                            return Ok(Err(PutRefused::Missing(*digest)));
                        }
                    }
                }
            }
        }
        Self::ensure_repo(&tx, repo)?;
        let ds = d.to_string();
        {
            let mut manifests = tx.open_table(MANIFESTS).map_err(db_err)?;
            manifests
                .insert(k2(repo, &ds).as_str(), encode(row).as_slice())
                .map_err(db_err)?;
            let mut refs = tx.open_table(REFS).map_err(db_err)?;
            refs.insert(k3(&ds, repo, &ds).as_str(), "")
                .map_err(db_err)?;
            for r in &row.refs {
                refs.insert(k3(&r.to_string(), repo, &ds).as_str(), "")
                    .map_err(db_err)?;
            }
            if let Some(s) = &row.subject {
                let desc = referrer_descriptor(d, row);
                tx.open_table(REFERRERS)
                    .map_err(db_err)?
                    .insert(
                        k3(repo, &s.to_string(), &ds).as_str(),
                        encode(&desc).as_slice(),
                    )
                    .map_err(db_err)?;
            }
            let mut t = tx.open_table(TAGS).map_err(db_err)?;
            for tag in tags {
                t.insert(k2(repo, tag).as_str(), ds.as_str())
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(Ok(()))
    }

    /// Points `tag` at manifest `d` (which must be in `repo`).
    pub fn set_tag(&self, repo: &str, tag: &str, d: &Digest) -> MResult<bool> {
        let tx = self.write()?;
        let ds = d.to_string();
        if tx
            .open_table(MANIFESTS)
            .map_err(db_err)?
            .get(k2(repo, &ds).as_str())
            .map_err(db_err)?
            .is_none()
        {
            return Ok(false);
        }
        tx.open_table(TAGS)
            .map_err(db_err)?
            .insert(k2(repo, tag).as_str(), ds.as_str())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(true)
    }

    /// Deletes manifest `d` from `repo` with every tag pointing at it; false
    /// if it was not there.
    pub fn delete_manifest(&self, repo: &str, d: &Digest) -> MResult<bool> {
        let tx = self.write()?;
        let ds = d.to_string();
        let key = k2(repo, &ds);
        let row: ManifestRow = {
            let mut t = tx.open_table(MANIFESTS).map_err(db_err)?;
            let v = t.remove(key.as_str()).map_err(db_err)?;
            match v {
                Some(v) => decode("manifest", &key, v.value())?,
                None => return Ok(false),
            }
        };
        {
            let mut refs = tx.open_table(REFS).map_err(db_err)?;
            refs.remove(k3(&ds, repo, &ds).as_str()).map_err(db_err)?;
            for r in &row.refs {
                refs.remove(k3(&r.to_string(), repo, &ds).as_str())
                    .map_err(db_err)?;
            }
            if let Some(s) = &row.subject {
                tx.open_table(REFERRERS)
                    .map_err(db_err)?
                    .remove(k3(repo, &s.to_string(), &ds).as_str())
                    .map_err(db_err)?;
            }
            let mut tags = tx.open_table(TAGS).map_err(db_err)?;
            let pointing: Vec<String> = scan_str(&tags, &format!("{repo}\0"))?
                .into_iter()
                .filter(|(_, v)| *v == ds)
                .map(|(k, _)| k)
                .collect();
            for k in pointing {
                tags.remove(k.as_str()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(true)
    }

    /// Deletes one tag; false if it was not there.
    pub fn delete_tag(&self, repo: &str, tag: &str) -> MResult<bool> {
        let tx = self.write()?;
        let found = tx
            .open_table(TAGS)
            .map_err(db_err)?
            .remove(k2(repo, tag).as_str())
            .map_err(db_err)?
            .is_some();
        tx.commit().map_err(db_err)?;
        Ok(found)
    }

    /// Mark phase of garbage collection, in one read transaction.
    pub fn gc_mark(&self, link_cutoff: u64) -> MResult<Marks> {
        let tx = self.read()?;
        let mut marks = Marks::default();
        let refs = tx.open_table(REFS).map_err(db_err)?;
        let mut needed: HashSet<(String, String)> = HashSet::new();
        for row in refs.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let mut parts = k.value().splitn(3, '\0');
            let (Some(b), Some(repo)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Ok(d) = b.parse::<Digest>() {
                marks.in_use.insert(d);
            }
            needed.insert((b.to_string(), repo.to_string()));
        }
        let links = tx.open_table(LINKS).map_err(db_err)?;
        for row in links.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let Some((repo, b)) = k.value().split_once('\0') else {
                continue;
            };
            let Ok(d) = b.parse::<Digest>() else { continue };
            let link: LinkRow = decode("link", k.value(), v.value())?;
            if link.linked < link_cutoff && !needed.contains(&(b.to_string(), repo.to_string())) {
                marks.stale_links.push((repo.to_string(), d));
            } else {
                marks.in_use.insert(d);
            }
        }
        Ok(marks)
    }

    /// Drops the given links that are still older than `cutoff` and still
    /// needed by no manifest of their repository (re-checked inside the
    /// write transaction). Returns how many were dropped.
    pub fn gc_drop_links(&self, links: &[(String, Digest)], cutoff: u64) -> MResult<usize> {
        let tx = self.write()?;
        let mut n = 0;
        {
            let mut lt = tx.open_table(LINKS).map_err(db_err)?;
            let mut br = tx.open_table(BLOB_REPOS).map_err(db_err)?;
            let refs = tx.open_table(REFS).map_err(db_err)?;
            for (repo, d) in links {
                let ds = d.to_string();
                let key = k2(repo, &ds);
                let row: LinkRow = match lt.get(key.as_str()).map_err(db_err)? {
                    Some(v) => decode("link", &key, v.value())?,
                    None => continue,
                };
                if row.linked >= cutoff || has_prefix(&refs, &k3(&ds, repo, ""))? {
                    continue;
                }
                lt.remove(key.as_str()).map_err(db_err)?;
                br.remove(k2(&ds, repo).as_str()).map_err(db_err)?;
                n += 1;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(n)
    }

    /// Drops repositories with no tag, manifest or blob left.
    pub fn gc_drop_empty_repos(&self) -> MResult<Vec<String>> {
        let tx = self.write()?;
        let mut dropped = Vec::new();
        {
            let mut repos = tx.open_table(REPOS).map_err(db_err)?;
            let names: Vec<String> = scan_bytes(&repos, "")?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let tags = tx.open_table(TAGS).map_err(db_err)?;
            let manifests = tx.open_table(MANIFESTS).map_err(db_err)?;
            let links = tx.open_table(LINKS).map_err(db_err)?;
            for name in names {
                let p = format!("{name}\0");
                if !has_prefix(&tags, &p)?
                    && !has_prefix(&manifests, &p)?
                    && !has_prefix(&links, &p)?
                {
                    repos.remove(name.as_str()).map_err(db_err)?;
                    dropped.push(name);
                }
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(dropped)
    }
}

/// The referrers-API descriptor of a manifest.
pub fn referrer_descriptor(d: &Digest, row: &ManifestRow) -> Value {
    let mut desc = serde_json::json!({
        "mediaType": row.media_type,
        "digest": d.to_string(),
        "size": row.size,
    });
    if let Some(a) = &row.artifact_type {
        desc["artifactType"] = Value::String(a.clone());
    }
    if let Some(a) = &row.annotations {
        desc["annotations"] = Value::Object(a.clone());
    }
    desc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn row(refs: Vec<Digest>, subject: Option<Digest>) -> ManifestRow {
        ManifestRow {
            v: 1,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 10,
            created: now(),
            refs,
            subject,
            artifact_type: Some("x/y".into()),
            annotations: None,
        }
    }

    #[test]
    fn manifests_tags_links_and_gc_marks() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("r.redb")).unwrap();
        let (cfg, layer, man) = (d("cfg"), d("layer"), d("man"));
        assert!(!m.repo_exists("a").unwrap());
        m.commit_blob("a", &cfg, 3, None).unwrap();
        let checks = [
            RefCheck::Blob {
                digest: cfg,
                size: 3,
            },
            RefCheck::Blob {
                digest: layer,
                size: 5,
            },
        ];
        assert_eq!(
            m.put_manifest(
                "a",
                &man,
                &row(vec![cfg, layer], None),
                &checks,
                &["v1".into()]
            )
            .unwrap(),
            Err(PutRefused::Missing(layer))
        );
        m.commit_blob("a", &layer, 6, None).unwrap();
        assert!(matches!(
            m.put_manifest(
                "a",
                &man,
                &row(vec![cfg, layer], None),
                &checks,
                &["v1".into()]
            )
            .unwrap(),
            Err(PutRefused::SizeMismatch { .. })
        ));
        m.commit_blob("a", &layer, 5, None).unwrap();
        m.put_manifest(
            "a",
            &man,
            &row(vec![cfg, layer], None),
            &checks,
            &["v1".into(), "v2".into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.tag("a", "v1").unwrap(), Some(man));
        assert_eq!(
            m.tags("a", None, 10).unwrap(),
            (vec!["v1".into(), "v2".into()], false)
        );
        assert_eq!(m.tags("a", None, 1).unwrap(), (vec!["v1".into()], true));
        assert_eq!(
            m.tags("a", Some("v1"), 1).unwrap(),
            (vec!["v2".into()], false)
        );
        assert_eq!(m.tags("b", None, 10).unwrap(), (vec![], false));

        // a referrer
        let sig = d("sig");
        m.put_manifest("a", &sig, &row(vec![], Some(man)), &[], &[])
            .unwrap()
            .unwrap();
        let refs = m.referrers("a", &man).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["digest"], sig.to_string());
        assert_eq!(refs[0]["artifactType"], "x/y");

        // everything is in use; nothing is stale even with a future cutoff
        let marks = m.gc_mark(now() + 100).unwrap();
        assert!(
            marks.in_use.contains(&cfg)
                && marks.in_use.contains(&layer)
                && marks.in_use.contains(&man)
        );
        assert!(marks.stale_links.is_empty());

        // delete the manifest: its tags go, its blobs' links become stale
        assert!(m.delete_manifest("a", &man).unwrap());
        assert!(!m.delete_manifest("a", &man).unwrap());
        assert_eq!(m.tag("a", "v1").unwrap(), None);
        assert!(
            m.referrers("a", &man).unwrap().len() == 1,
            "referrers outlive their subject"
        );
        let marks = m.gc_mark(now() + 100).unwrap();
        assert_eq!(marks.stale_links.len(), 2);
        assert!(!marks.in_use.contains(&man));
        // not older than a past cutoff: kept
        assert_eq!(m.gc_drop_links(&marks.stale_links, 0).unwrap(), 0);
        assert_eq!(m.gc_drop_links(&marks.stale_links, now() + 100).unwrap(), 2);
        assert!(!m.blob_in_use(&cfg).unwrap());
        assert!(m.delete_manifest("a", &sig).unwrap());
        assert_eq!(m.gc_drop_empty_repos().unwrap(), vec!["a".to_string()]);
        assert!(!m.repo_exists("a").unwrap());
    }

    #[test]
    fn mounts_and_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("r.redb")).unwrap();
        let b = d("b");
        assert_eq!(m.mount("src", "dst", &b).unwrap(), None);
        let up = UploadRow {
            v: 1,
            repo: "src".into(),
            owner: Some("alice".into()),
            started: now(),
        };
        m.create_upload("u1", &up).unwrap();
        assert_eq!(m.upload("u1").unwrap(), Some(up));
        m.commit_blob("src", &b, 1, Some("u1")).unwrap();
        assert_eq!(m.upload("u1").unwrap(), None);
        assert_eq!(m.mount("src", "dst", &b).unwrap(), Some(1));
        assert!(m.link("dst", &b).unwrap().is_some());
        assert!(m.unlink_blob("src", &b).unwrap());
        assert!(m.blob_in_use(&b).unwrap());
        assert!(m.unlink_blob("dst", &b).unwrap());
        assert!(!m.blob_in_use(&b).unwrap());
        assert_eq!(
            m.repos(None, 10).unwrap().0,
            vec!["dst".to_string(), "src".to_string()]
        );
        assert_eq!(m.repos(Some("dst"), 10).unwrap().0, vec!["src".to_string()]);
    }

    #[test]
    fn a_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.redb");
        let _m = Meta::open(&p).unwrap();
        let e = Meta::open(&p).err().unwrap();
        assert!(e.to_string().contains("in use"), "{e}");
    }
}
