//! berth-snapshots: turns layer tars (gzip, zstd or plain) into layer
//! directories usable as overlayfs lower dirs, and (later) mounts overlay
//! stacks and computes a container's diff.
//!
//! Owns: the bytes inside one layer directory. Must not: write, link or
//! follow anything outside the target directory it is given; know about
//! images, digests of manifests, or metadata.
//!
//! TODO(helper): implement the API below.
