//! `daemon.json`: the same keys as Docker's where they exist. Flags win.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
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

#[derive(Debug, Deserialize, Serialize)]
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
        let cfg = parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "unable to configure the Docker daemon with file {}: {e}",
                path.display()
            )
        })?;
        for k in cfg.other.keys() {
            tracing::warn!(key = %k, "daemon.json: key not supported by berth yet, ignored");
        }
        Ok(cfg)
    }
}

/// Keys of Docker's daemon.json (Linux) that berth accepts without acting
/// on them yet (they are reported in the log at start).
const DOCKER_KEYS: &[&str] = &[
    "allow-direct-routing",
    "allow-nondistributable-artifacts",
    "api-cors-header",
    "authorization-plugins",
    "bip6",
    "builder",
    "cdi-spec-dirs",
    "cgroup-parent",
    "containerd",
    "containerd-namespace",
    "containerd-plugins-namespace",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "default-cgroupns-mode",
    "default-gateway",
    "default-gateway-v6",
    "default-ipc-mode",
    "default-network-opts",
    "default-runtime",
    "default-shm-size",
    "default-ulimits",
    "dns",
    "dns-opts",
    "dns-search",
    "exec-opts",
    "experimental",
    "features",
    "firewall-backend",
    "fixed-cidr",
    "fixed-cidr-v6",
    "group",
    "host-gateway-ip",
    "host-gateway-ips",
    "proxies",
    "icc",
    "init-path",
    "ip",
    "ip-masq",
    "ip6tables",
    "ipv6",
    "labels",
    "live-restore",
    "log-format",
    "max-download-attempts",
    "metrics-addr",
    "min-api-version",
    "no-new-privileges",
    "node-generic-resources",
    "oom-score-adjust",
    "raw-logs",
    "runtimes",
    "seccomp-profile",
    "selinux-enabled",
    "shutdown-timeout",
    "storage-driver",
    "storage-opts",
    "swarm-default-advertise-addr",
    "tls",
    "tlscacert",
    "tlscert",
    "tlskey",
    "tlsverify",
    "userland-proxy",
    "userland-proxy-path",
    "userns-remap",
];

/// Go's name for the type a key of berth's takes, for dockerd's wording
/// of a value of the wrong JSON type.
fn go_type(key: &str) -> &'static str {
    match key {
        "debug" | "init" | "ip-forward" | "iptables" => "bool",
        "hosts" | "registry-mirrors" | "insecure-registries" => "[]string",
        "log-opts" => "map[string]string",
        "default-address-pools" => "[]*ipamutils.NetworkToSplit",
        "max-concurrent-downloads" | "max-concurrent-uploads" | "mtu" => "int",
        "upload-chunk-size" => "int64",
        _ => "string",
    }
}

fn json_kind(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(_) => "bool".into(),
        serde_json::Value::Number(n) => format!("number {n}"),
        serde_json::Value::String(_) => "string".into(),
        serde_json::Value::Array(_) => "array".into(),
        serde_json::Value::Object(_) => "object".into(),
    }
}

/// Parses daemon.json as dockerd does: keys neither berth nor Docker
/// knows are an error, and so is a value of the wrong type (both in
/// dockerd's words).
pub fn parse(text: &str) -> Result<DaemonConfig, String> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let obj = doc.as_object().ok_or_else(|| {
        format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(&doc)
        )
    })?;
    let ours = serde_json::to_value(DaemonConfig::default()).map_err(|e| e.to_string())?;
    let ours = ours.as_object().cloned().unwrap_or_default();
    let mut unknown: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !ours.contains_key(*k) && !DOCKER_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(format!(
            "the following directives don't match any configuration option: {}",
            unknown.join(", ")
        ));
    }
    for (k, v) in obj.iter().filter(|(k, _)| ours.contains_key(*k)) {
        let one = serde_json::json!({ k: v });
        if serde_json::from_value::<DaemonConfig>(one).is_err() {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field Config.{k} of type {}",
                json_kind(v).split(' ').next().unwrap_or(""),
                go_type(k)
            ));
        }
    }
    serde_json::from_value(doc).map_err(|e| e.to_string())
}

impl DaemonConfig {
    /// Values dockerd would refuse (after the types were checked), in
    /// dockerd's words where dockerd has the same check.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(l) = &self.log_level
            && ![
                "debug", "info", "warn", "warning", "error", "fatal", "panic", "trace",
            ]
            .contains(&l.to_ascii_lowercase().as_str())
        {
            anyhow::bail!("invalid logging level: {l}");
        }
        for (k, n) in [
            ("max concurrent downloads", self.max_concurrent_downloads),
            ("max concurrent uploads", self.max_concurrent_uploads),
        ] {
            if n == Some(0) {
                anyhow::bail!("invalid {k}: 0");
            }
        }
        // 0 is dockerd's "the default".
        if let Some(m) = self.mtu
            && m != 0
            && !(68..=65535).contains(&m)
        {
            anyhow::bail!("invalid default MTU: {m}");
        }
        for h in &self.hosts {
            if !h.starts_with("unix://") {
                anyhow::bail!("unsupported host {h:?}: only unix:// sockets are served");
            }
        }
        let log_driver = self.log_driver.as_deref().unwrap_or("json-file");
        berth_containers::resolve_log_config(&serde_json::json!({}), log_driver, &self.log_opts)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        self.registry()?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named_in_dockerds_words() {
        let e = parse(r#"{"zeta": 1, "alpha": 2, "debug": true}"#).unwrap_err();
        assert_eq!(
            e,
            "the following directives don't match any configuration option: alpha, zeta"
        );
    }

    #[test]
    fn docker_keys_berth_ignores_are_kept() {
        let c = parse(r#"{"live-restore": true, "data-root": "/x"}"#).unwrap();
        assert!(c.other.contains_key("live-restore"));
        assert_eq!(c.data_root.as_deref(), Some(Path::new("/x")));
    }

    #[test]
    fn wrong_types_are_named_as_go_would() {
        assert_eq!(
            parse(r#"{"mtu": "big"}"#).unwrap_err(),
            "json: cannot unmarshal string into Go struct field Config.mtu of type int"
        );
        assert_eq!(
            parse(r#"{"insecure-registries": "r:5000"}"#).unwrap_err(),
            "json: cannot unmarshal string into Go struct field Config.insecure-registries of type []string"
        );
    }

    #[test]
    fn values_are_validated() {
        let c = parse(r#"{"log-level": "chatty"}"#).unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid logging level: chatty"
        );
        let c = parse(r#"{"mtu": 20}"#).unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid default MTU: 20"
        );
        assert!(parse(r#"{"debug": true}"#).unwrap().validate().is_ok());
        assert!(parse(r#"{"mtu": 0}"#).unwrap().validate().is_ok());
    }
}
