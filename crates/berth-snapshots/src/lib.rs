//! berth-snapshots: turns layer tars (gzip, zstd or plain) into layer
//! directories usable as overlayfs lower dirs, mounts overlay stacks, and
//! reads a container's read-write layer back as changes or as a layer tar
//! (see `diff.rs`).
//!
//! Owns: the bytes inside one layer directory. Must not: write, link or
//! follow anything outside the target directory it is given; know about
//! images, digests of manifests, or metadata.
//!
//! A layer is applied in one pass over its (decompressed) tar stream:
//!
//! ```text
//! blob ──detect_compression──▶ decompress ──▶ apply_tar(target)
//!                                               │ every path resolved with
//!                                               │ openat2(RESOLVE_IN_ROOT)
//!                                               ▼
//! target/                 an overlay lower dir: whiteouts as char 0/0,
//!                         opaque dirs as trusted.overlay.opaque=y
//! ```
//!
//! The caller owns `target`: it creates it empty (under the data root's
//! `tmp/`), and deletes it if `apply_tar` fails.
//!
//! How entries are treated (Docker's rules unless said otherwise):
//! - names lose leading `/` and `./` and are cleaned lexically; a relative
//!   name whose `..` climbs above the root is an error, in an absolute name
//!   `..` stops at the root;
//! - symlink texts are stored as given (they only ever resolve inside a root);
//!   a hard link must name a path already in the layer, and keeps the
//!   metadata of the inode it links to; a hard link to itself (GNU tar's way
//!   of listing a file twice) is a no-op;
//! - an entry replaces whatever is at its path, except that a directory over
//!   a directory only updates metadata; missing parents are made 0755 root;
//! - `.wh.name` becomes a char device 0/0 `name`, `.wh..wh..opq` sets
//!   `trusted.overlay.opaque=y` on its directory, other `.wh..wh.*` entries
//!   are ignored;
//! - device nodes are skipped unless allowed, except char 0/0 (a whiteout);
//! - `SCHILY.xattr.*` records are applied (after chown and chmod, so file
//!   capabilities survive), except `trusted.overlay.*`, which a layer could
//!   use to steer overlayfs; EPERM and ENOTSUP from an xattr are warnings;
//! - mtimes (PAX sub-second ones too) are set with atime = mtime, on
//!   directories after every entry is written.
#![deny(unsafe_code)]

mod apply;
mod compress;
mod copy;
mod diff;
mod overlay;
mod size;
mod spread;
#[cfg(test)]
mod testutil;

pub use apply::{ApplyOptions, ApplyStats, apply_tar, apply_tar_buffered};
pub use berth_types::{Error, ErrorKind, Result};
pub use compress::{Compression, decompress, detect_compression};
pub use copy::{CopyStats, copy_tree};
pub use diff::{Change, ChangeKind, changes, write_layer_tar};
pub use overlay::{
    in_private_mount_namespace, mount_overlay, mount_overlay_readonly, unmount, unmount_detach,
};
pub use size::dir_size;
pub use spread::{RecentlyFreed, delays_inode_reuse, spread_subdirectories};
