//! berth-metadata: the one place that knows how objects reference each other.
//! Images, tags and layers (snapshots) live in one redb file; every change
//! is a transaction. Garbage collection marks from here: a blob or a layer
//! directory survives only while an image row names it or an in-flight
//! operation's lease holds it (leases live in the daemon's memory: no
//! operation outlives the process, so a restart voids them all).
//!
//! Owns: `<data-root>/meta.redb`. Must not: touch blob or layer bytes (the
//! sweep happens in the caller, outside any write transaction).
//!
//! ```text
//! meta.redb
//!   images   <config digest hex>  -> ImageRecord (json, versioned)
//!   tags     <full reference>     -> <config digest hex>   ("docker.io/library/busybox:latest")
//!   layers   <chain id hex>       -> LayerRecord
//!   containers <container id>     -> ContainerRow (the record is the containers service's JSON)
//!   names    <container name>     -> <container id>
//!   volumes  <volume name>        -> VolumeRow (see volumes.rs)
//!   networks <network id>         -> NetworkRow (the record is the network service's JSON)
//!   network_names <network name>  -> <network id>
//!   leases   <network id>/<ipv4>  -> <container id>   (IPAM: one row per address in use)
//!   build_cache <key>             -> BuildCacheRow (see build_cache.rs)
//!   indexes  <index digest hex>   -> IndexRecord (a multi-platform index a tag names)
//!   tag_indexes <full reference>  -> <index digest hex>   (the tag was pulled as that index)
//! ```
//!
//! A tag that was pulled from a multi-platform index keeps it: the index's
//! bytes and each child manifest pulled stay in the content store (so a
//! push sends them unchanged and the registry sees the same digests), and
//! the index row lists which children are here (their image IDs). The tag
//! itself still names one image (the host's platform when it is here).
//! Setting or removing a tag drops its index association; an index row
//! goes with its last tag.
#![forbid(unsafe_code)]

mod build_cache;
mod volumes;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use berth_types::{ChainId, DiffId, Digest, Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use build_cache::{BuildCacheRead, BuildCacheRow};
pub use volumes::{VolumeRead, VolumeRow};

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const NETWORK_NAMES: TableDefinition<&str, &str> = TableDefinition::new("network_names");
const LEASES: TableDefinition<&str, &str> = TableDefinition::new("leases");
const INDEXES: TableDefinition<&str, &[u8]> = TableDefinition::new("indexes");
const TAG_INDEXES: TableDefinition<&str, &str> = TableDefinition::new("tag_indexes");

/// One layer blob of an image, as its manifest lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerBlob {
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    pub media_type: String,
    /// Size of the stored blob.
    pub size: u64,
    pub diff_id: DiffId,
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
}

/// An image: its config blob, its layer blobs, and what listings need
/// without opening the config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub v: u32,
    /// The config digest, which is the image ID.
    pub id: Digest,
    pub layers: Vec<LayerBlob>,
    /// Chain ID of the top layer (None for an image with no layers).
    pub top_layer: Option<ChainId>,
    /// Sum of the layers' unpacked sizes.
    pub size: u64,
    /// `created` of the config, unix seconds.
    pub created: i64,
    pub labels: BTreeMap<String, String>,
    /// Digests under which registries know this image (`name@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Parent image ID for locally built images; empty otherwise.
    pub parent: Option<Digest>,
    /// When a tag was last set on this image (RFC 3339), as Docker reports it.
    pub last_tag_time: Option<String>,
}

/// An unpacked layer directory (`layers/<chain id>/`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub v: u32,
    pub chain_id: ChainId,
    pub diff_id: DiffId,
    pub parent: Option<ChainId>,
    /// Sum of regular file sizes in the layer.
    pub size: u64,
}

/// A container as the metadata layer sees it: what it references (its
/// image) and an opaque record owned by the containers service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContainerRow {
    pub id: String,
    pub name: String,
    pub image_id: Digest,
    pub record: serde_json::Value,
}

/// A network as the metadata layer sees it: its name (unique) and an
/// opaque record owned by the network service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NetworkRow {
    pub id: String,
    pub name: String,
    pub record: serde_json::Value,
}

/// A multi-platform index (OCI index or Docker manifest list) a tag was
/// pulled from. Its bytes are the content-store blob `digest`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexRecord {
    pub v: u32,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Every entry of the index, in its order.
    pub children: Vec<IndexChild>,
}

/// One entry of an index, and whether berth has it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexChild {
    /// The child manifest's digest (its bytes are a content-store blob when
    /// `image` is set).
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The entry's platform as the index spells it (JSON), if any.
    #[serde(default)]
    pub platform: Option<serde_json::Value>,
    /// The image pulled for this entry (its config digest), when here.
    #[serde(default)]
    pub image: Option<Digest>,
    /// The blobs the child manifest names (config, then layers), when here.
    #[serde(default)]
    pub blobs: Vec<Digest>,
}

impl IndexRecord {
    /// Image IDs of the children that are here.
    pub fn images(&self) -> impl Iterator<Item = Digest> + '_ {
        self.children.iter().filter_map(|c| c.image)
    }
}

/// What garbage collection must keep.
#[derive(Debug, Default)]
pub struct Roots {
    pub blobs: HashSet<Digest>,
    pub layers: HashSet<ChainId>,
}

pub struct MetaStore {
    db: redb::Database,
}

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("metadata store: {e}"))
}

fn decode<T: DeserializeOwned>(what: &str, key: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::internal(format!("metadata {what} {key}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("metadata records serialize")
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = redb::Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            tx.open_table(IMAGES).map_err(db_err)?;
            tx.open_table(TAGS).map_err(db_err)?;
            tx.open_table(LAYERS).map_err(db_err)?;
            tx.open_table(CONTAINERS).map_err(db_err)?;
            tx.open_table(NAMES).map_err(db_err)?;
            tx.open_table(volumes::VOLUMES).map_err(db_err)?;
            tx.open_table(NETWORKS).map_err(db_err)?;
            tx.open_table(NETWORK_NAMES).map_err(db_err)?;
            tx.open_table(LEASES).map_err(db_err)?;
            tx.open_table(build_cache::BUILD_CACHE).map_err(db_err)?;
            tx.open_table(INDEXES).map_err(db_err)?;
            tx.open_table(TAG_INDEXES).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(MetaStore { db })
    }

    /// Run `f` in one read transaction (a consistent snapshot).
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_read().map_err(db_err)?;
        f(&ReadTx { tx })
    }

    /// Run `f` in one write transaction; commits if `f` returns Ok.
    pub fn write<T>(&self, f: impl FnOnce(&WriteTx) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let w = WriteTx { tx };
        let out = f(&w)?;
        w.tx.commit().map_err(db_err)?;
        Ok(out)
    }

    /// Like [`MetaStore::write`], but the commit is not flushed to disk:
    /// it becomes durable with the next durable commit, and a crash before
    /// that loses it. Only for rows the daemon can rebuild from durable
    /// ones (IPAM leases, rebuilt from the running containers at start).
    pub fn write_volatile<T>(&self, f: impl FnOnce(&WriteTx) -> Result<T>) -> Result<T> {
        let mut tx = self.db.begin_write().map_err(db_err)?;
        tx.set_durability(redb::Durability::None).map_err(db_err)?;
        let w = WriteTx { tx };
        let out = f(&w)?;
        w.tx.commit().map_err(db_err)?;
        Ok(out)
    }

    /// Mark phase of garbage collection: every blob and layer an image references.
    pub fn roots(&self) -> Result<Roots> {
        self.read(|r| {
            let mut roots = Roots::default();
            for img in r.images()? {
                roots.blobs.insert(img.id);
                roots.blobs.extend(img.layers.iter().map(|l| l.digest));
                let diffs: Vec<DiffId> = img.layers.iter().map(|l| l.diff_id).collect();
                roots.layers.extend(ChainId::chain(&diffs));
            }
            for ix in r.indexes()? {
                roots.blobs.insert(ix.digest);
                for c in ix.children.iter().filter(|c| c.image.is_some()) {
                    roots.blobs.insert(c.digest);
                    roots.blobs.extend(c.blobs.iter().copied());
                }
            }
            Ok(roots)
        })
    }
}

pub struct ReadTx {
    tx: redb::ReadTransaction,
}

/// Reads shared by read and write transactions (a write transaction reads
/// its own uncommitted changes).
pub trait MetaRead {
    fn image(&self, id: &Digest) -> Result<Option<ImageRecord>>;
    fn images(&self) -> Result<Vec<ImageRecord>>;
    /// Image IDs whose hex starts with `prefix`.
    fn image_ids_with_prefix(&self, prefix: &str) -> Result<Vec<Digest>>;
    fn tag(&self, reference: &str) -> Result<Option<Digest>>;
    /// Every (reference, image id) pair, sorted by reference.
    fn tags(&self) -> Result<Vec<(String, Digest)>>;
    fn layer(&self, chain: &ChainId) -> Result<Option<LayerRecord>>;
    fn layers(&self) -> Result<Vec<LayerRecord>>;
    fn container(&self, id: &str) -> Result<Option<ContainerRow>>;
    fn containers(&self) -> Result<Vec<ContainerRow>>;
    /// Container ID by name (without the leading `/`).
    fn name(&self, name: &str) -> Result<Option<String>>;
    fn network(&self, id: &str) -> Result<Option<NetworkRow>>;
    fn networks(&self) -> Result<Vec<NetworkRow>>;
    /// Network ID by name.
    fn network_name(&self, name: &str) -> Result<Option<String>>;
    /// The addresses leased in a network: (address, container id), sorted
    /// by key (not numerically).
    fn leases(&self, network: &str) -> Result<Vec<(String, String)>>;
    fn index(&self, digest: &Digest) -> Result<Option<IndexRecord>>;
    fn indexes(&self) -> Result<Vec<IndexRecord>>;
    /// The index a tag was pulled as, if any.
    fn tag_index(&self, reference: &str) -> Result<Option<Digest>>;
    /// Every (reference, index digest) pair.
    fn tag_indexes(&self) -> Result<Vec<(String, Digest)>>;
}

macro_rules! read_methods {
    () => {
        fn image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
            let t = self.tx.open_table(IMAGES).map_err(db_err)?;
            let key = id.hex();
            t.get(key.as_str())
                .map_err(db_err)?
                .map(|v| decode("image", &key, v.value()))
                .transpose()
        }

        fn images(&self) -> Result<Vec<ImageRecord>> {
            let t = self.tx.open_table(IMAGES).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(decode("image", k.value(), v.value())?);
            }
            Ok(out)
        }

        fn image_ids_with_prefix(&self, prefix: &str) -> Result<Vec<Digest>> {
            let t = self.tx.open_table(IMAGES).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.range(prefix..).map_err(db_err)? {
                let (k, _) = row.map_err(db_err)?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.push(Digest::from_hex(k.value())?);
            }
            Ok(out)
        }

        fn tag(&self, reference: &str) -> Result<Option<Digest>> {
            let t = self.tx.open_table(TAGS).map_err(db_err)?;
            t.get(reference)
                .map_err(db_err)?
                .map(|v| Digest::from_hex(v.value()))
                .transpose()
        }

        fn tags(&self) -> Result<Vec<(String, Digest)>> {
            let t = self.tx.open_table(TAGS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push((k.value().to_string(), Digest::from_hex(v.value())?));
            }
            Ok(out)
        }

        fn layer(&self, chain: &ChainId) -> Result<Option<LayerRecord>> {
            let t = self.tx.open_table(LAYERS).map_err(db_err)?;
            let key = chain.0.hex();
            t.get(key.as_str())
                .map_err(db_err)?
                .map(|v| decode("layer", &key, v.value()))
                .transpose()
        }

        fn container(&self, id: &str) -> Result<Option<ContainerRow>> {
            let t = self.tx.open_table(CONTAINERS).map_err(db_err)?;
            t.get(id)
                .map_err(db_err)?
                .map(|v| decode("container", id, v.value()))
                .transpose()
        }

        fn containers(&self) -> Result<Vec<ContainerRow>> {
            let t = self.tx.open_table(CONTAINERS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(decode("container", k.value(), v.value())?);
            }
            Ok(out)
        }

        fn name(&self, name: &str) -> Result<Option<String>> {
            let t = self.tx.open_table(NAMES).map_err(db_err)?;
            Ok(t.get(name).map_err(db_err)?.map(|v| v.value().to_string()))
        }

        fn network(&self, id: &str) -> Result<Option<NetworkRow>> {
            let t = self.tx.open_table(NETWORKS).map_err(db_err)?;
            t.get(id)
                .map_err(db_err)?
                .map(|v| decode("network", id, v.value()))
                .transpose()
        }

        fn networks(&self) -> Result<Vec<NetworkRow>> {
            let t = self.tx.open_table(NETWORKS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(decode("network", k.value(), v.value())?);
            }
            Ok(out)
        }

        fn network_name(&self, name: &str) -> Result<Option<String>> {
            let t = self.tx.open_table(NETWORK_NAMES).map_err(db_err)?;
            Ok(t.get(name).map_err(db_err)?.map(|v| v.value().to_string()))
        }

        fn leases(&self, network: &str) -> Result<Vec<(String, String)>> {
            let t = self.tx.open_table(LEASES).map_err(db_err)?;
            let prefix = format!("{network}/");
            let mut out = Vec::new();
            for row in t.range(prefix.as_str()..).map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                let Some(ip) = k.value().strip_prefix(prefix.as_str()) else {
                    break;
                };
                out.push((ip.to_string(), v.value().to_string()));
            }
            Ok(out)
        }

        fn index(&self, digest: &Digest) -> Result<Option<IndexRecord>> {
            let t = self.tx.open_table(INDEXES).map_err(db_err)?;
            let key = digest.hex();
            t.get(key.as_str())
                .map_err(db_err)?
                .map(|v| decode("index", &key, v.value()))
                .transpose()
        }

        fn indexes(&self) -> Result<Vec<IndexRecord>> {
            let t = self.tx.open_table(INDEXES).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(decode("index", k.value(), v.value())?);
            }
            Ok(out)
        }

        fn tag_index(&self, reference: &str) -> Result<Option<Digest>> {
            let t = self.tx.open_table(TAG_INDEXES).map_err(db_err)?;
            t.get(reference)
                .map_err(db_err)?
                .map(|v| Digest::from_hex(v.value()))
                .transpose()
        }

        fn tag_indexes(&self) -> Result<Vec<(String, Digest)>> {
            let t = self.tx.open_table(TAG_INDEXES).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push((k.value().to_string(), Digest::from_hex(v.value())?));
            }
            Ok(out)
        }

        fn layers(&self) -> Result<Vec<LayerRecord>> {
            let t = self.tx.open_table(LAYERS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(decode("layer", k.value(), v.value())?);
            }
            Ok(out)
        }
    };
}

impl MetaRead for ReadTx {
    read_methods!();
}

pub struct WriteTx {
    tx: redb::WriteTransaction,
}

impl MetaRead for WriteTx {
    read_methods!();
}

impl WriteTx {
    pub fn put_image(&self, img: &ImageRecord) -> Result<()> {
        let mut t = self.tx.open_table(IMAGES).map_err(db_err)?;
        t.insert(img.id.hex().as_str(), encode(img).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Remove an image; an index that had it as a child no longer has it.
    pub fn delete_image(&self, id: &Digest) -> Result<()> {
        {
            let mut t = self.tx.open_table(IMAGES).map_err(db_err)?;
            t.remove(id.hex().as_str()).map_err(db_err)?;
        }
        for mut ix in self.indexes()? {
            let mut changed = false;
            for c in ix.children.iter_mut().filter(|c| c.image == Some(*id)) {
                c.image = None;
                c.blobs.clear();
                changed = true;
            }
            if changed {
                self.put_index(&ix)?;
            }
        }
        Ok(())
    }

    /// Point `reference` at `id`; returns the image it pointed at before.
    /// The tag loses any index it was pulled as (see [`WriteTx::set_tag_index`]).
    pub fn set_tag(&self, reference: &str, id: &Digest) -> Result<Option<Digest>> {
        self.drop_tag_index(reference)?;
        let mut t = self.tx.open_table(TAGS).map_err(db_err)?;
        let prev = t.insert(reference, id.hex().as_str()).map_err(db_err)?;
        prev.map(|v| Digest::from_hex(v.value())).transpose()
    }

    pub fn remove_tag(&self, reference: &str) -> Result<bool> {
        self.drop_tag_index(reference)?;
        let mut t = self.tx.open_table(TAGS).map_err(db_err)?;
        Ok(t.remove(reference).map_err(db_err)?.is_some())
    }

    /// Record that the tag `reference` (already set) names the index
    /// `digest`, whose row must exist.
    pub fn set_tag_index(&self, reference: &str, digest: &Digest) -> Result<()> {
        if self.index(digest)?.is_none() {
            return Err(Error::internal(format!(
                "tag {reference}: index {digest} has no record"
            )));
        }
        if self.tag(reference)?.is_none() {
            return Err(Error::internal(format!(
                "index {digest}: tag {reference} is not set"
            )));
        }
        let old = {
            let mut t = self.tx.open_table(TAG_INDEXES).map_err(db_err)?;
            t.insert(reference, digest.hex().as_str())
                .map_err(db_err)?
                .map(|v| Digest::from_hex(v.value()))
                .transpose()?
        };
        if let Some(old) = old
            && old != *digest
        {
            self.drop_unreferenced_index(&old)?;
        }
        Ok(())
    }

    pub fn put_index(&self, ix: &IndexRecord) -> Result<()> {
        let mut t = self.tx.open_table(INDEXES).map_err(db_err)?;
        t.insert(ix.digest.hex().as_str(), encode(ix).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Forget which index `reference` was pulled as; the index row goes
    /// when no tag names it any more. Returns the index it named.
    fn drop_tag_index(&self, reference: &str) -> Result<Option<Digest>> {
        let old = {
            let mut t = self.tx.open_table(TAG_INDEXES).map_err(db_err)?;
            t.remove(reference)
                .map_err(db_err)?
                .map(|v| Digest::from_hex(v.value()))
                .transpose()?
        };
        if let Some(d) = &old {
            self.drop_unreferenced_index(d)?;
        }
        Ok(old)
    }

    fn drop_unreferenced_index(&self, digest: &Digest) -> Result<()> {
        if self.tag_indexes()?.iter().any(|(_, d)| d == digest) {
            return Ok(());
        }
        let mut t = self.tx.open_table(INDEXES).map_err(db_err)?;
        t.remove(digest.hex().as_str()).map_err(db_err)?;
        Ok(())
    }

    pub fn put_layer(&self, l: &LayerRecord) -> Result<()> {
        let mut t = self.tx.open_table(LAYERS).map_err(db_err)?;
        t.insert(l.chain_id.0.hex().as_str(), encode(l).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Insert or update a container; its name must be free or already its own.
    pub fn put_container(&self, c: &ContainerRow) -> Result<()> {
        let mut names = self.tx.open_table(NAMES).map_err(db_err)?;
        if let Some(owner) = names.get(c.name.as_str()).map_err(db_err)?
            && owner.value() != c.id
        {
            return Err(Error::conflict(format!(
                "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                c.name,
                owner.value()
            )));
        }
        let mut t = self.tx.open_table(CONTAINERS).map_err(db_err)?;
        if let Some(old) = t.get(c.id.as_str()).map_err(db_err)? {
            let old: ContainerRow = decode("container", &c.id, old.value())?;
            if old.name != c.name {
                names.remove(old.name.as_str()).map_err(db_err)?;
            }
        }
        names
            .insert(c.name.as_str(), c.id.as_str())
            .map_err(db_err)?;
        t.insert(c.id.as_str(), encode(c).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    pub fn delete_container(&self, id: &str) -> Result<()> {
        let mut t = self.tx.open_table(CONTAINERS).map_err(db_err)?;
        if let Some(old) = t.remove(id).map_err(db_err)? {
            let old: ContainerRow = decode("container", id, old.value())?;
            let mut names = self.tx.open_table(NAMES).map_err(db_err)?;
            names.remove(old.name.as_str()).map_err(db_err)?;
        }
        Ok(())
    }

    /// Insert or update a network; its name must be free or already its own.
    pub fn put_network(&self, n: &NetworkRow) -> Result<()> {
        let mut names = self.tx.open_table(NETWORK_NAMES).map_err(db_err)?;
        if let Some(owner) = names.get(n.name.as_str()).map_err(db_err)?
            && owner.value() != n.id
        {
            return Err(Error::conflict(format!(
                "network with name {} already exists",
                n.name
            )));
        }
        let mut t = self.tx.open_table(NETWORKS).map_err(db_err)?;
        if let Some(old) = t.get(n.id.as_str()).map_err(db_err)? {
            let old: NetworkRow = decode("network", &n.id, old.value())?;
            if old.name != n.name {
                names.remove(old.name.as_str()).map_err(db_err)?;
            }
        }
        names
            .insert(n.name.as_str(), n.id.as_str())
            .map_err(db_err)?;
        t.insert(n.id.as_str(), encode(n).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Remove a network, its name and every lease in it.
    pub fn delete_network(&self, id: &str) -> Result<()> {
        let mut t = self.tx.open_table(NETWORKS).map_err(db_err)?;
        if let Some(old) = t.remove(id).map_err(db_err)? {
            let old: NetworkRow = decode("network", id, old.value())?;
            let mut names = self.tx.open_table(NETWORK_NAMES).map_err(db_err)?;
            names.remove(old.name.as_str()).map_err(db_err)?;
        }
        for (ip, _) in self.leases(id)? {
            self.delete_lease(id, &ip)?;
        }
        Ok(())
    }

    /// Lease `ip` in `network` to `container`; a conflict if another holds it.
    pub fn put_lease(&self, network: &str, ip: &str, container: &str) -> Result<()> {
        let mut t = self.tx.open_table(LEASES).map_err(db_err)?;
        let key = format!("{network}/{ip}");
        if let Some(owner) = t.get(key.as_str()).map_err(db_err)?
            && owner.value() != container
        {
            return Err(Error::conflict(format!(
                "Address already in use: {ip} is in use by container {}",
                owner.value()
            )));
        }
        t.insert(key.as_str(), container).map_err(db_err)?;
        Ok(())
    }

    pub fn delete_lease(&self, network: &str, ip: &str) -> Result<bool> {
        let mut t = self.tx.open_table(LEASES).map_err(db_err)?;
        Ok(t.remove(format!("{network}/{ip}").as_str())
            .map_err(db_err)?
            .is_some())
    }

    pub fn delete_layer(&self, chain: &ChainId) -> Result<()> {
        let mut t = self.tx.open_table(LAYERS).map_err(db_err)?;
        t.remove(chain.0.hex().as_str()).map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(n: u8) -> ImageRecord {
        let diff = DiffId(Digest::of(&[n, 1]));
        ImageRecord {
            v: 1,
            id: Digest::of(&[n]),
            layers: vec![LayerBlob {
                digest: Digest::of(&[n, 2]),
                media_type: "x".into(),
                size: 1,
                diff_id: diff,
                tar_size: 1,
            }],
            top_layer: Some(ChainId(diff.0)),
            size: 1,
            created: 0,
            labels: BTreeMap::new(),
            repo_digests: vec![],
            parent: None,
            last_tag_time: None,
        }
    }

    #[test]
    fn images_tags_and_roots() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let a = img(1);
        m.write(|w| {
            w.put_image(&a)?;
            assert_eq!(w.set_tag("docker.io/library/a:latest", &a.id)?, None);
            Ok(())
        })
        .unwrap();
        let got = m.read(|r| r.image(&a.id)).unwrap().unwrap();
        assert_eq!(got, a);
        assert_eq!(
            m.read(|r| r.tag("docker.io/library/a:latest")).unwrap(),
            Some(a.id)
        );
        assert_eq!(
            m.read(|r| r.image_ids_with_prefix(&a.id.hex()[..6]))
                .unwrap(),
            vec![a.id]
        );

        let roots = m.roots().unwrap();
        assert!(roots.blobs.contains(&a.id) && roots.blobs.contains(&a.layers[0].digest));
        assert!(roots.layers.contains(&a.top_layer.unwrap()));
    }

    #[test]
    fn networks_names_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let n = NetworkRow {
            id: "n1".into(),
            name: "front".into(),
            record: serde_json::json!({"Name": "front"}),
        };
        m.write(|w| {
            w.put_network(&n)?;
            w.put_lease("n1", "10.0.0.2", "c1")?;
            w.put_lease("n1", "10.0.0.3", "c2")?;
            w.put_lease("n10", "10.0.0.2", "c3")
        })
        .unwrap();
        let dup = NetworkRow {
            id: "n2".into(),
            ..n.clone()
        };
        let e = m.write(|w| w.put_network(&dup)).unwrap_err();
        assert_eq!(e.message, "network with name front already exists");
        let e = m
            .write(|w| w.put_lease("n1", "10.0.0.2", "c9"))
            .unwrap_err();
        assert_eq!(e.kind, berth_types::ErrorKind::Conflict);
        assert_eq!(
            m.read(|r| r.leases("n1")).unwrap(),
            vec![
                ("10.0.0.2".to_string(), "c1".to_string()),
                ("10.0.0.3".to_string(), "c2".to_string())
            ]
        );
        assert_eq!(m.read(|r| r.network_name("front")).unwrap().unwrap(), "n1");
        m.write(|w| w.delete_network("n1")).unwrap();
        assert!(m.read(|r| r.leases("n1")).unwrap().is_empty());
        assert_eq!(m.read(|r| r.leases("n10")).unwrap().len(), 1);
        assert!(m.read(|r| r.network_name("front")).unwrap().is_none());
    }

    #[test]
    fn a_tag_keeps_its_index_until_it_is_set_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let (a, b) = (img(1), img(2));
        let child = |i: &ImageRecord, n: u8| IndexChild {
            digest: Digest::of(&[n, 9]),
            media_type: "m".into(),
            size: 1,
            platform: None,
            image: Some(i.id),
            blobs: vec![i.id, i.layers[0].digest],
        };
        let ix = IndexRecord {
            v: 1,
            digest: Digest::of(b"index"),
            media_type: "i".into(),
            size: 5,
            children: vec![child(&a, 1), child(&b, 2)],
        };
        let (t1, t2) = ("r/x:1", "r/x:2");
        m.write(|w| {
            w.put_image(&a)?;
            w.put_image(&b)?;
            w.put_index(&ix)?;
            // an index row needs a tag set first
            assert!(w.set_tag_index(t1, &ix.digest).is_err());
            w.set_tag(t1, &a.id)?;
            w.set_tag_index(t1, &ix.digest)?;
            w.set_tag(t2, &a.id)?;
            w.set_tag_index(t2, &ix.digest)
        })
        .unwrap();
        let roots = m.roots().unwrap();
        for d in [ix.digest, ix.children[0].digest, ix.children[1].digest] {
            assert!(roots.blobs.contains(&d), "{d}");
        }
        // deleting a child image clears it from the index
        m.write(|w| w.delete_image(&b.id)).unwrap();
        let got = m.read(|r| r.index(&ix.digest)).unwrap().unwrap();
        assert_eq!(got.images().collect::<Vec<_>>(), vec![a.id]);
        assert!(got.children[1].blobs.is_empty());
        // re-pointing one tag drops its association; the row stays for the other
        m.write(|w| w.set_tag(t1, &a.id).map(|_| ())).unwrap();
        assert_eq!(m.read(|r| r.tag_index(t1)).unwrap(), None);
        assert_eq!(m.read(|r| r.tag_index(t2)).unwrap(), Some(ix.digest));
        // removing the last tag removes the row
        m.write(|w| w.remove_tag(t2).map(|_| ())).unwrap();
        assert!(m.read(|r| r.index(&ix.digest)).unwrap().is_none());
        assert!(!m.roots().unwrap().blobs.contains(&ix.digest));
    }

    #[test]
    fn a_failed_transaction_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let a = img(1);
        let r: Result<()> = m.write(|w| {
            w.put_image(&a)?;
            Err(Error::invalid("boom"))
        });
        assert!(r.is_err());
        assert!(m.read(|r| r.images()).unwrap().is_empty());
    }
}
