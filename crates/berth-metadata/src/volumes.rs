//! Volume rows: what the local volume driver knows about each volume
//! besides its directory (`<data-root>/volumes/<name>/`).
//!
//! ```text
//! meta.redb
//!   volumes  <volume name>  -> VolumeRow (json, versioned)
//! ```
//!
//! Which containers use a volume is not stored here: a container's record
//! names its volumes, and the volume service asks the container service.

use std::collections::BTreeMap;

use berth_types::Result;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{ReadTx, WriteTx, db_err, decode, encode};

pub(crate) const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");

/// A volume of the local driver. `labels` and `options` keep the
/// difference between "none given" (null in Docker's JSON) and "given
/// empty" (`{}`), as dockerd does.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VolumeRow {
    pub v: u32,
    pub name: String,
    /// Always `local` for now.
    pub driver: String,
    pub labels: Option<BTreeMap<String, String>>,
    /// Driver options (`type`, `device`, `o`, `size`).
    pub options: Option<BTreeMap<String, String>>,
    /// RFC 3339, seconds.
    pub created: String,
}

/// Reads of volume rows, in read and write transactions alike.
pub trait VolumeRead {
    fn volume(&self, name: &str) -> Result<Option<VolumeRow>>;
    /// Every volume, sorted by name.
    fn volumes(&self) -> Result<Vec<VolumeRow>>;
}

macro_rules! volume_reads {
    () => {
        fn volume(&self, name: &str) -> Result<Option<VolumeRow>> {
            let t = self.tx.open_table(VOLUMES).map_err(db_err)?;
            t.get(name)
                .map_err(db_err)?
                .map(|v| decode("volume", name, v.value()))
                .transpose()
        }

        fn volumes(&self) -> Result<Vec<VolumeRow>> {
            let t = self.tx.open_table(VOLUMES).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(decode("volume", k.value(), v.value())?);
            }
            Ok(out)
        }
    };
}

impl VolumeRead for ReadTx {
    volume_reads!();
}

impl VolumeRead for WriteTx {
    volume_reads!();
}

impl WriteTx {
    pub fn put_volume(&self, v: &VolumeRow) -> Result<()> {
        let mut t = self.tx.open_table(VOLUMES).map_err(db_err)?;
        t.insert(v.name.as_str(), encode(v).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Returns whether there was a row.
    pub fn delete_volume(&self, name: &str) -> Result<bool> {
        let mut t = self.tx.open_table(VOLUMES).map_err(db_err)?;
        Ok(t.remove(name).map_err(db_err)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetaStore;

    fn row(name: &str) -> VolumeRow {
        VolumeRow {
            v: 1,
            name: name.into(),
            driver: "local".into(),
            labels: Some(BTreeMap::from([("a".into(), "b".into())])),
            options: None,
            created: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn volume_rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        assert!(m.read(|r| r.volumes()).unwrap().is_empty());
        m.write(|w| {
            w.put_volume(&row("b"))?;
            w.put_volume(&row("a"))
        })
        .unwrap();
        let names: Vec<String> = m
            .read(|r| r.volumes())
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(m.read(|r| r.volume("a")).unwrap(), Some(row("a")));
        assert!(m.write(|w| w.delete_volume("a")).unwrap());
        assert!(!m.write(|w| w.delete_volume("a")).unwrap());
        assert_eq!(m.read(|r| r.volume("a")).unwrap(), None);
    }
}
