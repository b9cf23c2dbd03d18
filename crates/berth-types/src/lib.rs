//! berth-types: the vocabulary every other crate shares — error kinds,
//! content digests (`Digest`, `DiffId`, `ChainId` as distinct newtypes) and
//! image references normalised the way Docker normalises them.
//!
//! Owns: pure data types and their parsing. Must not: do I/O, know about
//! HTTP, or depend on any other berth crate.
#![forbid(unsafe_code)]

mod digest;
mod error;
pub mod gopath;
mod reference;

pub use digest::{ChainId, DiffId, Digest, Sha256Writer};
pub use error::{Error, ErrorKind, Result};
pub use reference::{Reference, normalize_name};
