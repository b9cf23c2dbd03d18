//! Configuration: a small TOML file, overridden by command-line flags.
//!
//! ```toml
//! addr = "127.0.0.1:5000"
//! root = "/var/lib/berth-registry"
//! log_format = "text"            # or "json"
//! delete_enabled = true
//! max_manifest_bytes = 4194304
//! max_blob_bytes = 0             # 0: no limit
//! shutdown_timeout_secs = 30
//! tls_cert = "/etc/berth-registry/cert.pem"
//! tls_key = "/etc/berth-registry/key.pem"
//!
//! [auth]
//! mode = "token"                 # "none" (default), "basic" or "token"
//! htpasswd = "/etc/berth-registry/htpasswd"   # bcrypt entries
//! service = "berth-registry"
//! realm = "https://registry.example:5000/token"   # default: this server's /token
//! token_ttl_secs = 300
//!
//! [[access]]                     # no rules: full access for every authenticated user
//! users = ["alice"]              # names, "*" (any authenticated user) or "anonymous"
//! repos = ["alice/*", "shared"]  # "*" matches anything (slashes too); "{user}" is the user's name
//! actions = ["pull", "push", "delete"]
//!
//! [gc]
//! interval_secs = 3600           # 0: only `berth-registry gc`
//! grace_secs = 3600              # never collect a blob or link younger than this
//! upload_expiry_secs = 86400     # abandon uploads idle longer than this
//!
//! [proxy]                        # pull-through cache of an upstream registry
//! url = "https://upstream.example"
//! username = "..."
//! password = "..."
//! ca_cert = "/path/to/ca.pem"    # extra trusted root for the upstream
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

pub const DEFAULT_ADDR: &str = "127.0.0.1:5000";
pub const DEFAULT_ROOT: &str = "/var/lib/berth-registry";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<String>,
    pub root: Option<PathBuf>,
    pub log_format: Option<String>,
    pub delete_enabled: Option<bool>,
    pub max_manifest_bytes: Option<usize>,
    pub max_blob_bytes: Option<u64>,
    pub shutdown_timeout_secs: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub auth: Option<AuthFile>,
    #[serde(default)]
    pub access: Vec<AccessRule>,
    pub gc: Option<GcFile>,
    pub proxy: Option<ProxyFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub mode: Option<String>,
    pub htpasswd: Option<PathBuf>,
    pub service: Option<String>,
    pub realm: Option<String>,
    pub token_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub users: Vec<String>,
    pub repos: Vec<String>,
    pub actions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcFile {
    pub interval_secs: Option<u64>,
    pub grace_secs: Option<u64>,
    pub upload_expiry_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Basic,
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub log_format: LogFormat,
    pub delete_enabled: bool,
    pub max_manifest_bytes: usize,
    pub max_blob_bytes: Option<u64>,
    pub shutdown_timeout: Duration,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub auth: AuthMode,
    pub htpasswd: Option<PathBuf>,
    pub service: String,
    pub realm: Option<String>,
    pub token_ttl: Duration,
    pub access: Vec<AccessRule>,
    pub gc_interval: Option<Duration>,
    pub gc_grace: Duration,
    pub upload_expiry: Duration,
    pub proxy: Option<ProxyConfig>,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// Flags of `serve` that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub addr: Option<String>,
    pub root: Option<PathBuf>,
    pub htpasswd: Option<PathBuf>,
    pub auth: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub proxy: Option<String>,
    pub log_format: Option<String>,
}

pub const ACTIONS: [&str; 3] = ["pull", "push", "delete"];

impl Config {
    /// Reads `file` (if any) and applies `o`.
    pub fn load(file: Option<&Path>, o: Overrides) -> anyhow::Result<Config> {
        let f: FileConfig = match file {
            Some(p) => {
                let s = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                toml::from_str(&s).with_context(|| format!("parsing config {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        Config::resolve(f, o)
    }

    pub fn resolve(f: FileConfig, o: Overrides) -> anyhow::Result<Config> {
        let addr_s = o
            .addr
            .or(f.addr)
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let addr: SocketAddr = addr_s
            .parse()
            .with_context(|| format!("invalid listen address {addr_s:?} (want HOST:PORT)"))?;
        let root = o
            .root
            .or(f.root)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        let log_format = match o.log_format.or(f.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(x) => bail!("invalid log format {x:?} (text or json)"),
        };
        let tls = match (o.tls_cert.or(f.tls_cert), o.tls_key.or(f.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate and a key (--tls-cert and --tls-key)"),
        };
        let af = f.auth.unwrap_or_default();
        let htpasswd = o.htpasswd.or(af.htpasswd);
        let auth = match o.auth.or(af.mode).as_deref() {
            Some("none") => AuthMode::None,
            Some("basic") => AuthMode::Basic,
            Some("token") => AuthMode::Token,
            None if htpasswd.is_some() => AuthMode::Basic,
            None => AuthMode::None,
            Some(x) => bail!("invalid auth mode {x:?} (none, basic or token)"),
        };
        if auth != AuthMode::None && htpasswd.is_none() {
            bail!("auth mode {auth:?} needs an htpasswd file (--htpasswd)");
        }
        for r in &f.access {
            for a in &r.actions {
                if !ACTIONS.contains(&a.as_str()) {
                    bail!("access rule: unknown action {a:?} (pull, push, delete)");
                }
            }
            if r.users.is_empty() || r.repos.is_empty() {
                bail!("access rule: users and repos must not be empty");
            }
        }
        let gc = f.gc.unwrap_or_default();
        let proxy_file = f.proxy.unwrap_or_default();
        let proxy = match o.proxy.or(proxy_file.url) {
            Some(url) => {
                let url = url.trim_end_matches('/').to_string();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("proxy URL {url:?} must start with http:// or https://");
                }
                Some(ProxyConfig {
                    url,
                    username: proxy_file.username,
                    password: proxy_file.password,
                    ca_cert: proxy_file.ca_cert,
                })
            }
            None => None,
        };
        Ok(Config {
            addr,
            root,
            log_format,
            delete_enabled: f.delete_enabled.unwrap_or(true),
            max_manifest_bytes: f
                .max_manifest_bytes
                .unwrap_or(crate::manifest::DEFAULT_MAX_MANIFEST),
            max_blob_bytes: f.max_blob_bytes.filter(|&n| n > 0),
            shutdown_timeout: Duration::from_secs(f.shutdown_timeout_secs.unwrap_or(30)),
            tls,
            auth,
            htpasswd,
            service: af.service.unwrap_or_else(|| "berth-registry".to_string()),
            realm: af.realm,
            token_ttl: Duration::from_secs(af.token_ttl_secs.unwrap_or(300)),
            access: f.access,
            gc_interval: match gc.interval_secs.unwrap_or(3600) {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            gc_grace: Duration::from_secs(gc.grace_secs.unwrap_or(3600)),
            upload_expiry: Duration::from_secs(gc.upload_expiry_secs.unwrap_or(86400)),
            proxy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_flags() {
        let f: FileConfig = toml::from_str(
            r#"
addr = "127.0.0.1:6000"
[auth]
mode = "token"
htpasswd = "/h"
[[access]]
users = ["alice"]
repos = ["alice/*"]
actions = ["pull", "push"]
[gc]
interval_secs = 0
grace_secs = 5
"#,
        )
        .unwrap();
        let c = Config::resolve(
            f,
            Overrides {
                addr: Some("127.0.0.1:0".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.addr.port(), 0);
        assert_eq!(c.auth, AuthMode::Token);
        assert_eq!(c.gc_interval, None);
        assert_eq!(c.gc_grace, Duration::from_secs(5));
        assert_eq!(c.access.len(), 1);

        let c = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(c.auth, AuthMode::None);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(toml::from_str::<FileConfig>("unknown_key = 1").is_err());
        let bad = |o: Overrides| Config::resolve(FileConfig::default(), o).is_err();
        assert!(bad(Overrides {
            addr: Some("nowhere".into()),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            auth: Some("token".into()),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            tls_cert: Some("/c".into()),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            proxy: Some("ftp://x".into()),
            ..Default::default()
        }));
        let f: FileConfig =
            toml::from_str("[[access]]\nusers=[\"a\"]\nrepos=[\"*\"]\nactions=[\"fly\"]").unwrap();
        assert!(Config::resolve(f, Overrides::default()).is_err());
    }
}
