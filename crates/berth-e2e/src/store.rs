//! The data root as seen from outside: which blobs, layer directories and
//! staging files exist. berthd's layout (see berth-content and berth-images):
//!
//! ```text
//! <data-root>/
//!   content/sha256/<hex>     blobs: image configs and layer blobs
//!   layers/<chain id hex>/   one unpacked layer per chain ID (diff/ inside)
//!   tmp/                     ingests and extractions in progress; empty when idle
//! ```

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// What the data root holds, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreState {
    /// Hex names under `content/sha256/`.
    pub blobs: BTreeSet<String>,
    /// Names under `layers/`.
    pub layers: BTreeSet<String>,
    /// Names under `tmp/`.
    pub tmp: BTreeSet<String>,
}

impl StoreState {
    /// Reads the state of the data root `root` (missing directories are empty).
    pub fn read(root: &Path) -> StoreState {
        StoreState {
            blobs: names(&root.join("content/sha256")),
            layers: names(&root.join("layers")),
            tmp: names(&root.join("tmp")),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.layers.is_empty() && self.tmp.is_empty()
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                e.expect("read a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    }
}

/// Chain IDs (`sha256:<hex>`) of a list of diff IDs (`sha256:<hex>`), per
/// the OCI image spec: `chain[0] = diff[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff[n])`. Computed here, not with
/// berth's own code, so the tests check berthd independently.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}")))
            ),
        };
        out.push(next);
    }
    out
}

/// Strips `sha256:`.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Every regular file under `dir` (recursively, not following symlinks).
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        let expect = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(chain[1], format!("sha256:{expect}"));
        assert!(chain_ids(&[]).is_empty());
    }
}
