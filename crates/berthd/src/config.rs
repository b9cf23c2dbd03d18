//! `daemon.json`: the same keys as Docker's where they exist. Flags win.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DaemonConfig {
    pub data_root: Option<PathBuf>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub log_level: Option<String>,
    pub pidfile: Option<PathBuf>,
    pub exec_root: Option<PathBuf>,
    #[serde(default)]
    pub debug: bool,
    /// Containers' default log driver (`json-file` or `none`) and options.
    pub log_driver: Option<String>,
    #[serde(default)]
    pub log_opts: serde_json::Map<String, serde_json::Value>,
    /// Run `--init` in every container that does not say otherwise.
    #[serde(default)]
    pub init: bool,
    /// Docker Hub mirrors.
    #[serde(default)]
    pub registry_mirrors: Vec<String>,
    /// Registries reached without verified TLS (`host[:port]` or CIDR).
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    pub max_concurrent_downloads: Option<usize>,
    pub max_concurrent_uploads: Option<usize>,
    /// berth's own: where per-registry certificates and hosts.toml live
    /// (default `/etc/berth/certs.d`).
    pub registry_certs_dir: Option<PathBuf>,
    /// berth's own: `gzip` (default) or `zstd` for layers a push compresses.
    pub push_compression: Option<String>,
    /// berth's own: upload chunk size in bytes (0: one streamed request per blob).
    pub upload_chunk_size: Option<u64>,
    /// The default bridge's device name, or `none` to have no default
    /// bridge (berth's default: `berth0`).
    pub bridge: Option<String>,
    /// The default bridge's address and prefix (`192.168.5.1/24`).
    pub bip: Option<String>,
    /// Pools subnets are carved from: `[{"base": "10.10.0.0/16", "size": 24}]`.
    #[serde(default)]
    pub default_address_pools: Vec<AddressPool>,
    /// MTU of the bridges and containers' interfaces.
    pub mtu: Option<u32>,
    /// Enable IPv4 forwarding (default true).
    pub ip_forward: Option<bool>,
    /// Manage firewall rules (NAT, published ports); default true.
    pub iptables: Option<bool>,
    /// Keys berth does not know yet are kept, so a Docker daemon.json loads.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct AddressPool {
    pub base: String,
    pub size: u8,
}

impl DaemonConfig {
    /// Read the file; a missing default file is fine, a missing named one is not.
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("read config file {}", path.display()));
            }
        };
        let cfg: DaemonConfig = serde_json::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        for k in cfg.other.keys() {
            tracing::warn!(key = %k, "daemon.json: key not supported by berth yet, ignored");
        }
        Ok(cfg)
    }
}

impl DaemonConfig {
    /// The registry client's settings.
    pub fn registry(&self) -> anyhow::Result<berth_images::distribution::RegistryConfig> {
        if let Some(c) = &self.push_compression
            && c != "gzip"
            && c != "zstd"
        {
            anyhow::bail!("invalid push-compression {c:?}: gzip or zstd");
        }
        let mut r = berth_images::distribution::RegistryConfig {
            mirrors: self.registry_mirrors.clone(),
            insecure: self.insecure_registries.clone(),
            ..Default::default()
        };
        if let Some(n) = self.max_concurrent_downloads.filter(|n| *n > 0) {
            r.max_concurrent_downloads = n;
        }
        if let Some(n) = self.max_concurrent_uploads.filter(|n| *n > 0) {
            r.max_concurrent_uploads = n;
        }
        if let Some(d) = &self.registry_certs_dir {
            r.certs_dir = d.clone();
        }
        if let Some(c) = &self.push_compression {
            r.push_compression = c.clone();
        }
        if let Some(n) = self.upload_chunk_size {
            r.upload_chunk_size = n;
        }
        Ok(r)
    }
}
