//! Where a registry name leads: the endpoints to try, in order, and how to
//! speak to each (TLS with verification, TLS without, plain HTTP).
//!
//! Sources, Docker's first, then containerd's per-host file:
//! - `registry-mirrors` (daemon.json): pull-only mirrors of Docker Hub;
//! - `insecure-registries` (daemon.json): `host[:port]` or CIDRs whose
//!   registries may use an unverified certificate or plain HTTP;
//!   `127.0.0.0/8` (and `localhost`, `::1`) always are, as with Docker;
//! - `<certs.d>/<host[:port]>/hosts.toml`, in the spirit of containerd's:
//!   `server = "https://…"` replaces the origin, each `[host."URL"]` table
//!   adds an endpoint tried before it, in file order, with `capabilities`
//!   (`pull`, `resolve`, `push`), `skip_verify` and `ca` (a path or a list).

use std::net::IpAddr;
use std::path::PathBuf;

use berth_types::{Error, Result};

/// Docker Hub's canonical name and the host that serves its API.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The key Docker uses for Docker Hub in `config.json` and `X-Registry-Auth`.
pub fn docker_hub_auth_key() -> &'static str {
    "https://index.docker.io/v1/"
}

/// The registry host of a credentials key as `docker login` writes them:
/// `https://index.docker.io/v1/` → `docker.io`, `http://h:5000/` → `h:5000`.
pub fn registry_host(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// Registry settings of the daemon.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// `registry-mirrors`: URLs of Docker Hub mirrors.
    pub mirrors: Vec<String>,
    /// `insecure-registries`: `host[:port]` names and CIDRs.
    pub insecure: Vec<String>,
    /// Per-registry certificates and `hosts.toml` (`/etc/berth/certs.d`).
    pub certs_dir: PathBuf,
    /// Layers downloaded (and pushed) at once per image (`max-concurrent-downloads`).
    pub max_concurrent_downloads: usize,
    pub max_concurrent_uploads: usize,
    /// Upload chunk size in bytes; 0 streams each blob in one request.
    pub upload_chunk_size: u64,
    /// How a push compresses layers stored uncompressed: `gzip` (Docker's
    /// choice, the default) or `zstd`.
    pub push_compression: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            mirrors: vec![],
            insecure: vec![],
            certs_dir: PathBuf::from("/etc/berth/certs.d"),
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            upload_chunk_size: 0,
            push_compression: "gzip".into(),
        }
    }
}

/// One place a registry's API can be reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// `scheme://host[:port]` with an optional path prefix, no trailing `/`.
    pub url: String,
    /// `host[:port]`: the key of its certs.d directory and of cached tokens.
    pub host: String,
    /// TLS without verifying the server's certificate.
    pub skip_verify: bool,
    pub mirror: bool,
    pub pull: bool,
    pub push: bool,
    /// Extra CA files (from hosts.toml).
    pub ca: Vec<PathBuf>,
}

impl Endpoint {
    pub fn plain_http(&self) -> bool {
        self.url.starts_with("http://")
    }
}

/// A parsed `hosts.toml`.
#[derive(Clone, Debug, Default)]
pub struct HostsFile {
    pub server: Option<String>,
    pub hosts: Vec<Endpoint>,
}

fn split_url(url: &str) -> Result<(String, String)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::invalid(format!("invalid registry URL {url:?}: no scheme")))?;
    if scheme != "http" && scheme != "https" {
        return Err(Error::invalid(format!(
            "invalid registry URL {url:?}: scheme must be http or https"
        )));
    }
    let host = rest.split('/').next().unwrap_or("").to_string();
    if host.is_empty() {
        return Err(Error::invalid(format!(
            "invalid registry URL {url:?}: no host"
        )));
    }
    let url = url
        .trim_end_matches('/')
        .trim_end_matches("/v2")
        .to_string();
    Ok((url, host))
}

impl HostsFile {
    pub fn parse(text: &str) -> Result<HostsFile> {
        let t: toml::Table = text
            .parse()
            .map_err(|e| Error::invalid(format!("hosts.toml: {e}")))?;
        let mut out = HostsFile {
            server: t.get("server").and_then(|v| v.as_str()).map(String::from),
            hosts: vec![],
        };
        if let Some(hosts) = t.get("host").and_then(|h| h.as_table()) {
            for (url, v) in hosts {
                let (url, host) = split_url(url)?;
                let caps: Vec<String> = v
                    .get("capabilities")
                    .and_then(|c| c.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_else(|| vec!["pull".into(), "resolve".into(), "push".into()]);
                let ca = match v.get("ca") {
                    Some(toml::Value::String(s)) => vec![PathBuf::from(s)],
                    Some(toml::Value::Array(a)) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(PathBuf::from))
                        .collect(),
                    _ => vec![],
                };
                out.hosts.push(Endpoint {
                    url,
                    host,
                    skip_verify: v
                        .get("skip_verify")
                        .and_then(|b| b.as_bool())
                        .unwrap_or(false),
                    mirror: true,
                    pull: caps.iter().any(|c| c == "pull"),
                    push: caps.iter().any(|c| c == "push"),
                    ca,
                });
            }
        }
        Ok(out)
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    Some((ip.parse().ok()?, bits.parse().ok()?))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The host part of `host[:port]` (IPv6 in brackets).
fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl RegistryConfig {
    /// Whether `host` (`name[:port]`) may be reached without verified TLS.
    /// Names are never resolved: only literal IPs match CIDRs.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = hostname(host);
        if name == "localhost" {
            return true;
        }
        let ip: Option<IpAddr> = name.parse().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        self.insecure.iter().any(|e| {
            if e == host || e == name {
                return true;
            }
            match (parse_cidr(e), ip) {
                (Some((net, bits)), Some(ip)) => in_cidr(ip, net, bits),
                _ => false,
            }
        })
    }

    fn hosts_file(&self, domain: &str) -> Result<HostsFile> {
        let p = self.certs_dir.join(domain).join("hosts.toml");
        match std::fs::read_to_string(&p) {
            Ok(t) => HostsFile::parse(&t).map_err(|e| e.context(p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostsFile::default()),
            Err(e) => Err(Error::from(e).context(p.display())),
        }
    }

    /// The endpoints for a registry domain (`docker.io`, `host:port`), in
    /// the order to try them: mirrors first (pull only), then the origin.
    /// An insecure origin is tried with TLS (unverified) first, then HTTP.
    pub fn endpoints(&self, domain: &str) -> Result<Vec<Endpoint>> {
        let hf = self.hosts_file(domain)?;
        let mut out = Vec::new();
        if domain == DOCKER_HUB {
            for m in &self.mirrors {
                let (url, host) = split_url(m)?;
                out.push(Endpoint {
                    skip_verify: self.is_insecure(&host),
                    url,
                    host,
                    mirror: true,
                    pull: true,
                    push: false,
                    ca: vec![],
                });
            }
        }
        for mut h in hf.hosts {
            h.skip_verify |= self.is_insecure(&h.host);
            out.push(h);
        }
        let origin = match &hf.server {
            Some(s) => split_url(s)?,
            None if domain == DOCKER_HUB => (
                format!("https://{DOCKER_HUB_API}"),
                DOCKER_HUB_API.to_string(),
            ),
            None => (format!("https://{domain}"), domain.to_string()),
        };
        let insecure = self.is_insecure(&origin.1);
        let origin_ep = Endpoint {
            url: origin.0.clone(),
            host: origin.1.clone(),
            skip_verify: insecure,
            mirror: false,
            pull: true,
            push: true,
            ca: vec![],
        };
        out.push(origin_ep.clone());
        if insecure && origin.0.starts_with("https://") {
            out.push(Endpoint {
                url: format!("http://{}", origin.1),
                ..origin_ep
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_and_mirrors() {
        let cfg = RegistryConfig {
            mirrors: vec!["https://mirror.example:5000/".into()],
            certs_dir: "/nonexistent".into(),
            ..Default::default()
        };
        let eps = cfg.endpoints("docker.io").unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].url, "https://mirror.example:5000");
        assert!(eps[0].mirror && !eps[0].push);
        assert_eq!(eps[1].url, "https://registry-1.docker.io");
        assert!(!eps[1].skip_verify);
        // mirrors are for Docker Hub only
        assert_eq!(cfg.endpoints("quay.io").unwrap().len(), 1);
    }

    #[test]
    fn insecure_and_loopback() {
        let cfg = RegistryConfig {
            insecure: vec!["10.1.0.0/16".into(), "reg.local:5000".into()],
            certs_dir: "/nonexistent".into(),
            ..Default::default()
        };
        assert!(cfg.is_insecure("127.0.0.1:5000"));
        assert!(cfg.is_insecure("localhost:5000"));
        assert!(cfg.is_insecure("[::1]:5000"));
        assert!(cfg.is_insecure("10.1.2.3"));
        assert!(!cfg.is_insecure("10.2.2.3"));
        assert!(cfg.is_insecure("reg.local:5000"));
        assert!(!cfg.is_insecure("reg.local:5001"));
        assert!(!cfg.is_insecure("example.com"));
        let eps = cfg.endpoints("127.0.0.1:5000").unwrap();
        let urls: Vec<&str> = eps.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(urls, ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]);
        assert!(eps[0].skip_verify);
    }

    #[test]
    fn hosts_toml() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("quay.io")).unwrap();
        std::fs::write(
            dir.path().join("quay.io/hosts.toml"),
            r#"
server = "https://quay.io"
[host."http://127.0.0.1:5001"]
capabilities = ["pull", "resolve"]
[host."https://b.example"]
skip_verify = true
ca = ["/x/ca.crt"]
"#,
        )
        .unwrap();
        let cfg = RegistryConfig {
            certs_dir: dir.path().into(),
            ..Default::default()
        };
        let eps = cfg.endpoints("quay.io").unwrap();
        let urls: Vec<&str> = eps.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5001",
                "https://b.example",
                "https://quay.io"
            ]
        );
        assert!(eps[0].pull && !eps[0].push);
        assert!(eps[1].skip_verify && eps[1].push);
        assert_eq!(eps[1].ca, vec![PathBuf::from("/x/ca.crt")]);
        assert!(HostsFile::parse("host = 3\n[").is_err());
    }

    #[test]
    fn auth_keys() {
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_host("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
