//! berth-registry: a private OCI distribution registry server (distribution
//! spec v1.1) — the library behind the `berth-registry` binary.
//!
//! Owns: a registry root directory (layout in [`storage`]): blobs stored
//! once by digest and shared by every repository, upload staging, and the
//! metadata in one redb file ([`meta`]) — repositories, tags, manifests and
//! what they reference, uploads — so that garbage collection ([`gc`]) runs
//! online. Serves HTTP/1.1 (optionally TLS) with auth ([`auth`]: none,
//! htpasswd basic, or its own bearer tokens with per-repository rules), and
//! can act as a pull-through cache of another registry ([`proxy`]).
//!
//! Must not: depend on the daemon's crates (it shares only `berth-types`),
//! make a blob visible before its digest was verified, or hold the metadata
//! write lock across file I/O.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod gc;
pub mod manifest;
pub mod meta;
pub mod metrics;
pub mod names;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod storage;
