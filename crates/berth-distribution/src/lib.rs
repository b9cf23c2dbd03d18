//! berth-distribution: the registry client. Speaks the OCI distribution
//! protocol (Docker registry v2) with Docker Hub's conventions: endpoint
//! resolution for a reference (mirrors, `hosts.toml`, insecure registries),
//! the bearer-token and basic auth flows, manifests and indexes with
//! platform selection, blob downloads that resume with HTTP `Range` and
//! retry transient errors, and pushes (existence checks, cross-repository
//! mounts, monolithic and chunked uploads, manifest puts).
//!
//! Owns: HTTP to registries and the TLS set-up for it. Must not: store
//! anything (bytes go to the caller as they arrive; the content store
//! verifies and commits them), know about images beyond their documents.
//!
//! ```text
//! /etc/berth/certs.d/<host[:port]>/   (Docker's layout, containerd's hosts.toml)
//!   ca.crt  *.crt                     extra CAs for the registry
//!   client.cert + client.key          a client certificate (Docker's names)
//!   hosts.toml                        endpoints: mirrors, order, capabilities, TLS
//! ```
#![forbid(unsafe_code)]

mod auth;
mod client;
mod config;
mod manifest;
mod tls;

pub use auth::{AuthConfig, Challenge, parse_challenges};
pub use client::{
    BlobStream, Client, ManifestResponse, PushSource, Repository, RetryPolicy, UploadOutcome,
};
pub use config::{Endpoint, HostsFile, RegistryConfig, docker_hub_auth_key, registry_host};
pub use manifest::{
    Descriptor, Manifest, ManifestKind, Platform, media, parse_manifest, select_platform,
};
pub use tls::install_crypto_provider;

/// Largest manifest or index berth accepts (Docker's limit).
pub const MAX_MANIFEST: u64 = 4 << 20;
