//! Build cache rows: which image a build step produced from which parent,
//! so that the same step on the same parent is reused (`---> Using cache`).
//!
//! ```text
//! meta.redb
//!   build_cache  <hex sha256 of (parent id, step key)>  -> BuildCacheRow (json, versioned)
//! ```
//!
//! A row references an image row; the image (untagged, with `parent` set)
//! holds the step's layer and config. A row whose image is gone is stale
//! and ignored by lookups; `builder prune` removes rows and the images only
//! they keep.

use berth_types::{Digest, Result};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{ReadTx, WriteTx, db_err, decode, encode};

pub(crate) const BUILD_CACHE: TableDefinition<&str, &[u8]> = TableDefinition::new("build_cache");

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuildCacheRow {
    pub v: u32,
    /// The row's key: hex sha256 of the parent image ID and the step's key.
    pub key: String,
    /// The image the step produced.
    pub image: Digest,
    /// The image the step ran on (`None` for a step on `scratch`).
    pub parent: Option<Digest>,
    /// What the step was, as the image's history records it.
    pub description: String,
    /// Bytes of the layer the step added (0 for a metadata-only step).
    pub size: u64,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; the last build that reused the step.
    pub last_used: Option<String>,
    pub usage_count: u64,
}

/// Reads of build cache rows, in read and write transactions alike.
pub trait BuildCacheRead {
    fn build_cache(&self, key: &str) -> Result<Option<BuildCacheRow>>;
    /// Every row, sorted by key.
    fn build_caches(&self) -> Result<Vec<BuildCacheRow>>;
}

macro_rules! build_cache_reads {
    () => {
        fn build_cache(&self, key: &str) -> Result<Option<BuildCacheRow>> {
            let t = self.tx.open_table(BUILD_CACHE).map_err(db_err)?;
            t.get(key)
                .map_err(db_err)?
                .map(|v| decode("build cache", key, v.value()))
                .transpose()
        }

        fn build_caches(&self) -> Result<Vec<BuildCacheRow>> {
            let t = self.tx.open_table(BUILD_CACHE).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(decode("build cache", k.value(), v.value())?);
            }
            Ok(out)
        }
    };
}

impl BuildCacheRead for ReadTx {
    build_cache_reads!();
}

impl BuildCacheRead for WriteTx {
    build_cache_reads!();
}

impl WriteTx {
    pub fn put_build_cache(&self, row: &BuildCacheRow) -> Result<()> {
        let mut t = self.tx.open_table(BUILD_CACHE).map_err(db_err)?;
        t.insert(row.key.as_str(), encode(row).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Returns whether there was a row.
    pub fn delete_build_cache(&self, key: &str) -> Result<bool> {
        let mut t = self.tx.open_table(BUILD_CACHE).map_err(db_err)?;
        Ok(t.remove(key).map_err(db_err)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetaStore;

    fn row(key: &str) -> BuildCacheRow {
        BuildCacheRow {
            v: 1,
            key: key.into(),
            image: Digest::from_bytes([7; 32]),
            parent: None,
            description: "/bin/sh -c #(nop)  ENV A=1".into(),
            size: 0,
            created: "2026-01-01T00:00:00Z".into(),
            last_used: None,
            usage_count: 0,
        }
    }

    #[test]
    fn build_cache_rows_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let m = MetaStore::open(&path).unwrap();
            m.write(|w| {
                w.put_build_cache(&row("bb"))?;
                w.put_build_cache(&row("aa"))
            })
            .unwrap();
        }
        let m = MetaStore::open(&path).unwrap();
        let keys: Vec<String> = m
            .read(|r| r.build_caches())
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["aa", "bb"]);
        assert_eq!(m.read(|r| r.build_cache("aa")).unwrap(), Some(row("aa")));
        assert!(m.write(|w| w.delete_build_cache("aa")).unwrap());
        assert!(!m.write(|w| w.delete_build_cache("aa")).unwrap());
        assert_eq!(m.read(|r| r.build_cache("aa")).unwrap(), None);
    }
}
