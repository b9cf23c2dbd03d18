//! In-memory leases: what an operation in flight holds (blobs committed to
//! the content store, layer directories moved into place) before its image
//! row is committed. Garbage collection treats them as roots until they are
//! dropped or expire. No operation outlives the daemon process, so leases
//! are not persisted: after a crash, startup garbage collection removes
//! whatever an unfinished operation left.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_types::{ChainId, Digest};

#[derive(Default)]
struct Held {
    expires: Option<Instant>,
    blobs: HashSet<Digest>,
    layers: HashSet<ChainId>,
}

#[derive(Clone, Default)]
pub struct Leases {
    inner: Arc<Mutex<(u64, HashMap<u64, Held>)>>,
}

/// A lease; dropping it releases what it holds.
pub struct Lease {
    id: u64,
    ttl: Duration,
    leases: Leases,
    /// Left to expire instead of released on drop.
    expiring: bool,
}

impl Leases {
    pub fn create(&self, ttl: Duration) -> Lease {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        let id = g.0;
        let now = Instant::now();
        g.1.retain(|_, h| h.expires.is_none_or(|e| e > now));
        g.1.insert(
            id,
            Held {
                expires: Some(Instant::now() + ttl),
                ..Default::default()
            },
        );
        Lease {
            id,
            ttl,
            leases: self.clone(),
            expiring: false,
        }
    }

    /// Everything held by unexpired leases.
    pub fn held(&self) -> (HashSet<Digest>, HashSet<ChainId>) {
        let g = self.inner.lock().unwrap();
        let now = Instant::now();
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for h in g.1.values().filter(|h| h.expires.is_none_or(|e| e > now)) {
            blobs.extend(h.blobs.iter().copied());
            layers.extend(h.layers.iter().copied());
        }
        (blobs, layers)
    }
}

/// A second handle on a lease, for tasks of the operation that holds it;
/// dropping it releases nothing.
#[derive(Clone)]
pub struct LeaseHandle {
    id: u64,
    ttl: Duration,
    leases: Leases,
}

impl LeaseHandle {
    fn with(&self, f: impl FnOnce(&mut Held)) {
        let mut g = self.leases.inner.lock().unwrap();
        if let Some(h) = g.1.get_mut(&self.id) {
            h.expires = Some(Instant::now() + self.ttl);
            f(h);
        }
    }
    pub fn hold_blob(&self, d: &Digest) {
        self.with(|h| {
            h.blobs.insert(*d);
        })
    }
    pub fn hold_layer(&self, c: &ChainId) {
        self.with(|h| {
            h.layers.insert(*c);
        })
    }
}

impl Lease {
    pub fn handle(&self) -> LeaseHandle {
        LeaseHandle {
            id: self.id,
            ttl: self.ttl,
            leases: self.leases.clone(),
        }
    }
    fn with(&self, f: impl FnOnce(&mut Held)) {
        let mut g = self.leases.inner.lock().unwrap();
        if let Some(h) = g.1.get_mut(&self.id) {
            h.expires = Some(Instant::now() + self.ttl);
            f(h);
        }
    }
    pub fn hold_blob(&self, d: &Digest) {
        self.with(|h| {
            h.blobs.insert(*d);
        })
    }
    pub fn hold_layer(&self, c: &ChainId) {
        self.with(|h| {
            h.layers.insert(*c);
        })
    }
}

impl Lease {
    /// Keep what the lease holds for `after` more, then let it go: an
    /// operation that failed leaves what it verified for a retry to reuse.
    pub fn release_after(mut self, after: Duration) {
        let mut g = self.leases.inner.lock().unwrap();
        if let Some(h) = g.1.get_mut(&self.id) {
            h.expires = Some(Instant::now() + after);
        }
        self.expiring = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.expiring {
            return;
        }
        self.leases.inner.lock().unwrap().1.remove(&self.id);
    }
}
