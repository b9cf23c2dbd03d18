//! berth-network: networks and containers' places on them. IPAM (leases in
//! the metadata store), Linux bridges and veth pairs through netlink,
//! containers' network namespaces, berth's own nftables table (masquerade,
//! published ports, isolation), the userland proxy, and the embedded DNS
//! server of user-defined networks.
//!
//! Owns: network rows and leases in the metadata store; `<exec-root>/netns/`
//! (one bind-mounted namespace per networked container, named by its ID);
//! the bridges it made (`berth0`, `br-<id>`), their veths, and the table
//! `inet berth`. Must not: touch any other table or link, know HTTP, or
//! know the container lifecycle (the containers service calls in through
//! the daemon at create, start, stop and connect).
//!
//! ```text
//! <exec-root>/netns/<container id>   a network namespace (bind mount)
//! meta.redb  networks/<id>           Docker's network object (without Containers)
//!            leases/<net id>/<ip>    the container holding the address
//! ```
#![deny(unsafe_code)]

pub mod dns;
pub mod etc;
pub mod fwwatch;
pub mod ipam;
pub mod iptables;
pub mod netlink;
pub mod nft;
pub mod proxy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use berth_metadata::{MetaRead, MetaStore, NetworkRow};
use berth_types::{Error, ErrorKind, Result};
use ipnet::Ipv4Net;
use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

pub use ipam::Pool;
use nft::{BridgeNet, PortMap, Proto};

/// Networks that exist on every daemon and cannot be removed.
pub const PREDEFINED: &[&str] = &["bridge", "host", "none"];

pub struct Config {
    /// The exec root (`/run/berth`); namespaces go in `netns/` under it.
    pub run_dir: PathBuf,
    /// The default bridge's device name (daemon.json `bridge`); `None`
    /// when it is disabled (`"bridge": "none"`).
    pub bridge: Option<String>,
    /// The default bridge's address and prefix (daemon.json `bip`).
    pub bip: Option<Ipv4Net>,
    /// Where subnets come from (daemon.json `default-address-pools`).
    pub pools: Vec<Pool>,
    pub mtu: u32,
    /// Set `net.ipv4.ip_forward` (daemon.json `ip-forward`, default true).
    pub ip_forward: bool,
    /// Manage the nftables table and the iptables FORWARD accepts
    /// (daemon.json `iptables`, default true). Off, berth touches no
    /// firewall: no NAT, no published ports through DNAT.
    pub firewall: bool,
}

/// Where network events go (the daemon's event bus).
pub trait NetworkEvents: Send + Sync {
    fn network_event(&self, action: &str, id: &str, attributes: BTreeMap<String, String>);
}

/// Where a container's process runs, network-wise.
#[derive(Clone, Debug, PartialEq)]
pub enum Sandbox {
    /// The daemon's own namespace (`--network host`).
    Host,
    /// A fresh namespace with only `lo` (`--network none`), made by the runtime.
    Fresh,
    /// A namespace berth made and configured.
    Path(PathBuf),
}

/// What a container gets from `setup`.
pub struct Setup {
    pub sandbox: Sandbox,
    pub hosts: String,
    pub resolv_conf: String,
    /// `NetworkSettings` for the container's record.
    pub settings: Value,
}

/// A running container's endpoint, as the daemon keeps it in memory.
#[derive(Clone, Debug)]
struct ActiveEp {
    network_id: String,
    ip: Ipv4Addr,
    /// Names it answers to on this network (user-defined networks only).
    names: Vec<String>,
}

/// A running container's network state.
struct Active {
    endpoints: Vec<ActiveEp>,
    ports: Vec<PortMap>,
    tasks: Vec<AbortHandle>,
    dns: bool,
    upstreams: Vec<SocketAddr>,
}

pub struct NetworkService {
    cfg: Config,
    meta: Arc<MetaStore>,
    events: Arc<dyn NetworkEvents>,
    rt: tokio::runtime::Handle,
    active: Mutex<HashMap<String, Active>>,
    /// Serialises firewall rebuilds; holds the rule count last applied.
    fw: Mutex<Option<usize>>,
    /// Serialises address allocation and sandbox changes.
    ops: Mutex<()>,
    me: Weak<NetworkService>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn no_network(name: &str) -> Error {
    Error::not_found(format!("network {name} not found"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

/// A network record's IPv4 subnet, gateway and range.
fn ipv4_config(rec: &Value) -> Option<(Ipv4Net, Ipv4Addr, Option<Ipv4Net>)> {
    let c = rec["IPAM"]["Config"].as_array()?.iter().find(|c| {
        c["Subnet"]
            .as_str()
            .is_some_and(|s| s.parse::<Ipv4Net>().is_ok())
    })?;
    let subnet: Ipv4Net = c["Subnet"].as_str()?.parse().ok()?;
    let gw = c["Gateway"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| ipam::default_gateway(&subnet));
    let range = c["IPRange"].as_str().and_then(|r| r.parse().ok());
    Some((subnet, gw, range))
}

fn opt<'a>(rec: &'a Value, key: &str) -> Option<&'a str> {
    rec["Options"][key].as_str()
}

fn is_bridge(rec: &Value) -> bool {
    rec["Driver"] == "bridge"
}

fn is_default_bridge(rec: &Value) -> bool {
    opt(rec, "com.docker.network.bridge.default_bridge") == Some("true")
}

/// The bridge device of a bridge network.
fn bridge_name(rec: &Value) -> String {
    opt(rec, "com.docker.network.bridge.name")
        .map(String::from)
        .unwrap_or_else(|| format!("br-{}", &rec["Id"].as_str().unwrap_or("")[..12]))
}

/// The host side of a container's veth on a network: stable, so teardown
/// finds it from the record alone.
fn veth_name(container: &str, network: &str) -> String {
    format!("veth{}{}", &container[..6], &network[..5])
}

/// Docker's `EndpointSettings`, empty where there is no address.
struct Ep<'a> {
    network_id: &'a str,
    ipam_config: Value,
    aliases: Value,
    endpoint_id: String,
    mac: String,
    addr: Option<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    dns_names: Value,
}

fn endpoint_json(e: &Ep) -> Value {
    let (ip, len, gw) = match e.addr {
        Some((ip, len, gw)) => (
            ip.to_string(),
            len,
            gw.map(|g| g.to_string()).unwrap_or_default(),
        ),
        None => (String::new(), 0, String::new()),
    };
    json!({
        "IPAMConfig": e.ipam_config,
        "Links": null,
        "Aliases": e.aliases,
        "MacAddress": e.mac,
        "DriverOpts": null,
        "GwPriority": 0,
        "NetworkID": e.network_id,
        "EndpointID": e.endpoint_id,
        "Gateway": gw,
        "IPAddress": ip,
        "IPPrefixLen": len,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": e.dns_names,
    })
}

/// `NetworkSettings` as Docker reports it; the top-level address fields
/// come from the default bridge's endpoint, when there is one.
fn settings_json(
    sandbox: Option<(&str, &str)>,
    ports: Value,
    networks: Map<String, Value>,
) -> Value {
    let b = networks.get("bridge").cloned().unwrap_or(Value::Null);
    let s = |k: &str| b[k].as_str().unwrap_or("").to_string();
    let (sid, skey) = sandbox.unwrap_or(("", ""));
    json!({
        "Bridge": "",
        "SandboxID": sid,
        "SandboxKey": skey,
        "Ports": ports,
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": s("EndpointID"),
        "Gateway": s("Gateway"),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": s("IPAddress"),
        "IPPrefixLen": b["IPPrefixLen"].as_u64().unwrap_or(0),
        "IPv6Gateway": "",
        "MacAddress": s("MacAddress"),
        "Networks": networks,
    })
}

/// One requested publication: `HostConfig.PortBindings` entry.
#[derive(Clone, Debug)]
struct Binding {
    proto: Proto,
    container_port: u16,
    host_ip: Option<Ipv4Addr>,
    /// Inclusive range; (0, 0) means any free port.
    host_ports: (u16, u16),
}

/// `80/tcp` → (80, tcp).
fn parse_port_key(k: &str) -> Result<(u16, Proto)> {
    let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
    let port = p
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Error::invalid(format!("invalid port specification: \"{k}\"")))?;
    Ok((port, Proto::parse(proto)?))
}

fn parse_host_ports(s: &str) -> Result<(u16, u16)> {
    if s.is_empty() {
        return Ok((0, 0));
    }
    let bad = || Error::invalid(format!("invalid hostPort: {s}"));
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (
                a.parse::<u16>().map_err(|_| bad())?,
                b.parse::<u16>().map_err(|_| bad())?,
            );
            if a > b || a == 0 {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => {
            let p = s.parse::<u16>().map_err(|_| bad())?;
            Ok((p, p))
        }
    }
}

fn parse_host_ip(s: &str) -> Result<Option<Ipv4Addr>> {
    if s.is_empty() || s == "0.0.0.0" {
        return Ok(None);
    }
    if s.contains(':') {
        if s == "::" {
            return Ok(None);
        }
        return Err(Error::not_implemented(format!(
            "publishing on IPv6 address {s} is not supported by berth"
        )));
    }
    s.parse()
        .map(Some)
        .map_err(|_| Error::invalid(format!("invalid IP address: {s}")))
}

/// Every publication a container asks for: `PortBindings`, plus
/// `ExposedPorts` on random ports with `PublishAllPorts`.
fn bindings(rec: &Value) -> Result<Vec<Binding>> {
    let hc = &rec["HostConfig"];
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    if let Some(pb) = hc["PortBindings"].as_object() {
        for (k, list) in pb {
            let (port, proto) = parse_port_key(k)?;
            seen.insert((port, proto));
            let list = list.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                out.push(Binding {
                    proto,
                    container_port: port,
                    host_ip: None,
                    host_ports: (0, 0),
                });
            }
            for b in list {
                out.push(Binding {
                    proto,
                    container_port: port,
                    host_ip: parse_host_ip(b["HostIp"].as_str().unwrap_or(""))?,
                    host_ports: parse_host_ports(b["HostPort"].as_str().unwrap_or(""))?,
                });
            }
        }
    }
    if hc["PublishAllPorts"].as_bool() == Some(true)
        && let Some(ex) = rec["Config"]["ExposedPorts"].as_object()
    {
        for k in ex.keys() {
            let (port, proto) = parse_port_key(k)?;
            if seen.insert((port, proto)) {
                out.push(Binding {
                    proto,
                    container_port: port,
                    host_ip: None,
                    host_ports: (0, 0),
                });
            }
        }
    }
    Ok(out)
}

/// `NetworkSettings.Ports`: every exposed or published port, with its
/// bindings (or null).
fn ports_json(rec: &Value, maps: &[PortMap]) -> Value {
    let mut out = Map::new();
    let mut keys: Vec<String> = rec["Config"]["ExposedPorts"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.extend(
        rec["HostConfig"]["PortBindings"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    for k in keys {
        let Ok((port, proto)) = parse_port_key(&k) else {
            continue;
        };
        let key = format!("{port}/{}", proto.as_str());
        out.entry(key).or_insert(Value::Null);
    }
    for m in maps {
        let key = format!("{}/{}", m.container_port, m.proto.as_str());
        let e = out.entry(key).or_insert(json!([]));
        if e.is_null() {
            *e = json!([]);
        }
        e.as_array_mut().expect("array").push(json!({
            "HostIp": m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string(),
            "HostPort": m.host_port.to_string(),
        }));
    }
    Value::Object(out)
}

/// The ephemeral port range random host ports come from.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut f = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((f.next()??, f.next()??))
        })
        .unwrap_or((32768, 60999))
}

impl NetworkService {
    /// Open the service: the predefined networks exist, every bridge
    /// network's device exists, and berth's table is in place. Must be
    /// called inside the daemon's runtime.
    pub fn open(
        cfg: Config,
        meta: Arc<MetaStore>,
        events: Arc<dyn NetworkEvents>,
    ) -> Result<Arc<Self>> {
        let svc = Arc::new_cyclic(|me| NetworkService {
            cfg,
            meta,
            events,
            rt: tokio::runtime::Handle::current(),
            active: Mutex::new(HashMap::new()),
            fw: Mutex::new(None),
            ops: Mutex::new(()),
            me: me.clone(),
        });
        std::fs::create_dir_all(svc.netns_dir())?;
        if svc.cfg.ip_forward
            && let Err(e) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        {
            tracing::warn!(error = %e, "cannot enable IP forwarding; containers will have no outbound access");
        }
        svc.predefined()?;
        for row in svc.meta.read(|r| r.networks())? {
            if is_bridge(&row.record) {
                svc.ensure_bridge(&row.record)?;
            }
        }
        svc.refresh_firewall()?;
        Ok(svc)
    }

    fn netns_dir(&self) -> PathBuf {
        self.cfg.run_dir.join("netns")
    }

    fn sandbox_path(&self, id: &str) -> PathBuf {
        self.netns_dir().join(id)
    }

    /// `bridge`, `host` and `none`, as Docker lists them.
    fn predefined(&self) -> Result<()> {
        let rows = self.meta.read(|r| r.networks())?;
        let by_name = |n: &str| rows.iter().find(|r| r.name == n).cloned();
        for (name, driver) in [("host", "host"), ("none", "null")] {
            if by_name(name).is_none() {
                let rec = self.network_record(
                    name,
                    driver,
                    json!({"Driver": "default", "Options": null, "Config": []}),
                    false,
                    false,
                    json!({}),
                    json!({}),
                );
                self.save_network(&rec)?;
            }
        }
        let existing = by_name("bridge");
        let Some(dev) = self.cfg.bridge.clone() else {
            if let Some(old) = existing {
                self.meta.write(|w| w.delete_network(&old.id))?;
            }
            return Ok(());
        };
        let (subnet, gw) = match self.cfg.bip {
            Some(bip) => (bip.trunc(), bip.addr()),
            None => match existing.as_ref().and_then(|r| ipv4_config(&r.record)) {
                Some((s, g, _)) => (s, g),
                None => {
                    let mut used = ipam::host_routes();
                    used.extend(
                        rows.iter()
                            .filter_map(|r| ipv4_config(&r.record).map(|c| c.0)),
                    );
                    let s = ipam::pick_subnet(&self.cfg.pools, &used)?;
                    (s, ipam::default_gateway(&s))
                }
            },
        };
        let options = json!({
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.enable_icc": "true",
            "com.docker.network.bridge.enable_ip_masquerade": "true",
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": dev,
            "com.docker.network.driver.mtu": self.cfg.mtu.to_string(),
        });
        let ipam = json!({"Driver": "default", "Options": null, "Config": [{"Subnet": subnet.to_string(), "Gateway": gw.to_string()}]});
        match existing {
            Some(mut row) => {
                if row.record["IPAM"] != ipam || row.record["Options"] != options {
                    row.record["IPAM"] = ipam;
                    row.record["Options"] = options;
                    self.meta.write(|w| w.put_network(&row))?;
                }
            }
            None => {
                let rec =
                    self.network_record("bridge", "bridge", ipam, false, false, options, json!({}));
                self.save_network(&rec)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn network_record(
        &self,
        name: &str,
        driver: &str,
        ipam: Value,
        internal: bool,
        attachable: bool,
        options: Value,
        labels: Value,
    ) -> Value {
        json!({
            "Name": name,
            "Id": new_id(),
            "Created": now(),
            "Scope": "local",
            "Driver": driver,
            "EnableIPv4": true,
            "EnableIPv6": false,
            "IPAM": ipam,
            "Internal": internal,
            "Attachable": attachable,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Options": options,
            "Labels": labels,
        })
    }

    fn save_network(&self, rec: &Value) -> Result<()> {
        let row = NetworkRow {
            id: rec["Id"].as_str().unwrap_or("").to_string(),
            name: rec["Name"].as_str().unwrap_or("").to_string(),
            record: rec.clone(),
        };
        self.meta.write(|w| w.put_network(&row))
    }

    fn ensure_bridge(&self, rec: &Value) -> Result<()> {
        let Some((subnet, gw, _)) = ipv4_config(rec) else {
            return Ok(());
        };
        let gwnet = Ipv4Net::new(gw, subnet.prefix_len()).expect("valid prefix");
        let mtu = opt(rec, "com.docker.network.driver.mtu")
            .and_then(|m| m.parse().ok())
            .unwrap_or(self.cfg.mtu);
        netlink::ensure_bridge(&bridge_name(rec), gwnet, mtu)
    }

    // ---- networks ---------------------------------------------------------

    /// A network by full ID, name, or unique ID prefix (Docker's order).
    pub fn find(&self, name: &str) -> Result<NetworkRow> {
        self.meta.read(|r| {
            if let Some(row) = r.network(name)? {
                return Ok(row);
            }
            if let Some(id) = r.network_name(name)? {
                return r.network(&id)?.ok_or_else(|| no_network(name));
            }
            let m: Vec<NetworkRow> = r
                .networks()?
                .into_iter()
                .filter(|n| !name.is_empty() && n.id.starts_with(name))
                .collect();
            match m.len() {
                1 => Ok(m.into_iter().next().expect("one")),
                0 => Err(no_network(name)),
                _ => Err(Error::invalid(format!(
                    "network {name} is ambiguous ({} matches found based on ID prefix)",
                    m.len()
                ))),
            }
        })
    }

    /// Every network's record (without `Containers`).
    pub fn list(&self) -> Result<Vec<Value>> {
        Ok(self
            .meta
            .read(|r| r.networks())?
            .into_iter()
            .map(|n| n.record)
            .collect())
    }

    /// `GET /networks/{id}`: the record with its running endpoints, given
    /// the names of containers by ID.
    pub fn inspect(&self, name: &str, names: &dyn Fn(&str) -> Option<String>) -> Result<Value> {
        let row = self.find(name)?;
        let mut rec = row.record;
        let mut containers = Map::new();
        if let Some((subnet, _, _)) = ipv4_config(&rec) {
            let active = self.active.lock().unwrap();
            let mut ids: Vec<&String> = active.keys().collect();
            ids.sort();
            for id in ids {
                for ep in active[id]
                    .endpoints
                    .iter()
                    .filter(|e| e.network_id == row.id)
                {
                    containers.insert(
                        id.clone(),
                        json!({
                            "Name": names(id).unwrap_or_default(),
                            "EndpointID": endpoint_id(id, &row.id),
                            "MacAddress": ipam::mac_text(&ipam::mac_for(ep.ip)),
                            "IPv4Address": format!("{}/{}", ep.ip, subnet.prefix_len()),
                            "IPv6Address": "",
                        }),
                    );
                }
            }
        }
        rec["Containers"] = Value::Object(containers);
        Ok(rec)
    }

    /// `POST /networks/create`: returns the new network's ID.
    pub fn create(&self, body: &Value) -> Result<String> {
        let name = body["Name"].as_str().unwrap_or("");
        if name.is_empty() {
            return Err(Error::invalid("network name cannot be empty"));
        }
        if !name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(Error::invalid(format!(
                "invalid name \"{name}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if PREDEFINED.contains(&name) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("{name} is a pre-defined network and cannot be created"),
            ));
        }
        let driver = body["Driver"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or("bridge");
        if driver != "bridge" {
            return Err(Error::not_found(format!("plugin \"{driver}\" not found")));
        }
        if body["EnableIPv6"].as_bool() == Some(true) {
            return Err(Error::not_implemented(
                "IPv6 networks are not supported by berth",
            ));
        }
        let _g = self.ops.lock().unwrap();
        if self.meta.read(|r| r.network_name(name))?.is_some() {
            return Err(Error::conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let rows = self.meta.read(|r| r.networks())?;
        let taken: Vec<Ipv4Net> = rows
            .iter()
            .filter_map(|r| ipv4_config(&r.record).map(|c| c.0))
            .collect();
        let given = body["IPAM"]["Config"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut config = Map::new();
        let (subnet, gw) = match given.first() {
            Some(c) if c["Subnet"].as_str().is_some_and(|s| !s.is_empty()) => {
                let s = c["Subnet"].as_str().unwrap_or("");
                if s.contains(':') {
                    return Err(Error::not_implemented(
                        "IPv6 networks are not supported by berth",
                    ));
                }
                let subnet: Ipv4Net = s
                    .parse()
                    .map_err(|_| Error::invalid(format!("invalid CIDR address: {s}")))?;
                if subnet.trunc() != subnet {
                    return Err(Error::invalid(format!(
                        "invalid subnet {s}: it should be {}",
                        subnet.trunc()
                    )));
                }
                if taken.iter().any(|t| ipam::overlaps(t, &subnet)) {
                    return Err(Error::new(
                        ErrorKind::PermissionDenied,
                        "invalid pool request: Pool overlaps with other one on this address space",
                    ));
                }
                let gw = match c["Gateway"].as_str().filter(|g| !g.is_empty()) {
                    Some(g) => {
                        let gw: Ipv4Addr = g
                            .parse()
                            .map_err(|_| Error::invalid(format!("invalid gateway address {g}")))?;
                        if !subnet.contains(&gw) {
                            return Err(Error::invalid(format!(
                                "no matching subnet for gateway {g}"
                            )));
                        }
                        gw
                    }
                    None => ipam::default_gateway(&subnet),
                };
                if let Some(r) = c["IPRange"].as_str().filter(|r| !r.is_empty()) {
                    let range: Ipv4Net = r
                        .parse()
                        .map_err(|_| Error::invalid(format!("invalid CIDR address: {r}")))?;
                    if !subnet.contains(&range.network())
                        || range.prefix_len() < subnet.prefix_len()
                    {
                        return Err(Error::invalid(format!("no matching subnet for range {r}")));
                    }
                    config.insert("IPRange".into(), json!(r));
                }
                (subnet, gw)
            }
            Some(c) if c["Gateway"].as_str().is_some_and(|g| !g.is_empty()) => {
                return Err(Error::invalid(
                    "invalid pool request: gateway without a subnet",
                ));
            }
            _ => {
                let mut used = ipam::host_routes();
                used.extend(taken);
                let s = ipam::pick_subnet(&self.cfg.pools, &used)?;
                (s, ipam::default_gateway(&s))
            }
        };
        let mut cfg_entry = Map::new();
        cfg_entry.insert("Subnet".into(), json!(subnet.to_string()));
        if let Some(r) = config.remove("IPRange") {
            cfg_entry.insert("IPRange".into(), r);
        }
        cfg_entry.insert("Gateway".into(), json!(gw.to_string()));
        let options = body["Options"].as_object().cloned().unwrap_or_default();
        for (k, v) in &options {
            let v = v.as_str().unwrap_or("");
            match k.as_str() {
                "com.docker.network.bridge.enable_ip_masquerade"
                | "com.docker.network.bridge.enable_icc"
                    if v.parse::<bool>().is_err() =>
                {
                    return Err(Error::invalid(format!("invalid value for {k}: {v}")));
                }
                "com.docker.network.driver.mtu" if v.parse::<u32>().is_err() => {
                    return Err(Error::invalid(format!("invalid MTU: {v}")));
                }
                "com.docker.network.bridge.name" => {
                    if v.is_empty() || v.len() > 15 {
                        return Err(Error::invalid(format!("invalid bridge name: {v}")));
                    }
                    if rows
                        .iter()
                        .any(|r| is_bridge(&r.record) && bridge_name(&r.record) == v)
                    {
                        return Err(Error::conflict(format!(
                            "bridge name {v} is already in use by another network"
                        )));
                    }
                }
                _ => {}
            }
        }
        let mut rec = self.network_record(
            name,
            "bridge",
            json!({
                "Driver": body["IPAM"]["Driver"].as_str().filter(|d| !d.is_empty()).unwrap_or("default"),
                "Options": body["IPAM"]["Options"].as_object().filter(|o| !o.is_empty()).map(|o| Value::Object(o.clone())).unwrap_or(json!({})),
                "Config": [Value::Object(cfg_entry)],
            }),
            body["Internal"].as_bool().unwrap_or(false),
            body["Attachable"].as_bool().unwrap_or(false),
            Value::Object(options),
            body["Labels"].as_object().map(|l| Value::Object(l.clone())).unwrap_or(json!({})),
        );
        if rec["IPAM"]["Options"] == json!({}) && body["IPAM"]["Options"].is_null() {
            rec["IPAM"]["Options"] = json!({});
        }
        let id = rec["Id"].as_str().unwrap_or("").to_string();
        self.save_network(&rec)?;
        if let Err(e) = self
            .ensure_bridge(&rec)
            .and_then(|_| self.refresh_firewall())
        {
            let _ = netlink::delete_links(vec![bridge_name(&rec)]);
            let _ = self.meta.write(|w| w.delete_network(&id));
            let _ = self.refresh_firewall();
            return Err(e);
        }
        self.event("create", &id, name);
        Ok(id)
    }

    fn event(&self, action: &str, id: &str, name: &str) {
        self.events.network_event(
            action,
            id,
            BTreeMap::from([
                ("name".to_string(), name.to_string()),
                ("type".to_string(), "bridge".to_string()),
            ]),
        );
    }

    /// `DELETE /networks/{id}`.
    pub fn remove(&self, name: &str) -> Result<()> {
        let row = self.find(name)?;
        if PREDEFINED.contains(&row.name.as_str()) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{} is a pre-defined network and cannot be removed",
                    row.name
                ),
            ));
        }
        let _g = self.ops.lock().unwrap();
        let users: Vec<String> = self
            .active
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a)| a.endpoints.iter().any(|e| e.network_id == row.id))
            .map(|(id, _)| id.clone())
            .collect();
        if !users.is_empty() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "error while removing network: network {} id {} has active endpoints",
                    row.name, row.id
                ),
            ));
        }
        self.meta.write(|w| w.delete_network(&row.id))?;
        let mut errs = Vec::new();
        if is_bridge(&row.record)
            && let Err(e) = netlink::delete_links(vec![bridge_name(&row.record)])
        {
            errs.push(e.message);
        }
        if let Err(e) = self.refresh_firewall() {
            errs.push(e.message);
        }
        self.event("destroy", &row.id, &row.name);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::internal(errs.join("; ")))
        }
    }

    /// IDs of networks with a running endpoint.
    pub fn in_use(&self) -> HashSet<String> {
        self.active
            .lock()
            .unwrap()
            .values()
            .flat_map(|a| a.endpoints.iter().map(|e| e.network_id.clone()))
            .collect()
    }

    // ---- containers -------------------------------------------------------

    /// At create: check the container's network mode and endpoints, and put
    /// the endpoints it will have into `NetworkSettings.Networks`.
    pub fn prepare(&self, rec: &mut Value, networking: &Value) -> Result<()> {
        let asked = rec["HostConfig"]["NetworkMode"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let mode = match asked.as_str() {
            "" | "default" => {
                if self.cfg.bridge.is_some() {
                    "bridge".to_string()
                } else {
                    "none".to_string()
                }
            }
            m => m.to_string(),
        };
        rec["HostConfig"]["NetworkMode"] = json!(mode);
        bindings(rec)?;
        let given = networking["EndpointsConfig"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut networks = Map::new();
        if mode.starts_with("container:") {
            if rec["HostConfig"]["PortBindings"]
                .as_object()
                .is_some_and(|p| !p.is_empty())
                || rec["HostConfig"]["PublishAllPorts"].as_bool() == Some(true)
            {
                return Err(Error::invalid(
                    "conflicting options: port publishing and the container type network mode",
                ));
            }
            rec["NetworkSettings"]["Networks"] = json!({});
            return Ok(());
        }
        // As dockerd: a network that does not exist fails the start, not
        // the create.
        let lookup = |name: &str| match self.find(name) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let first = lookup(&mode)?;
        let first_name = first
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or(mode.clone());
        let mut wanted = vec![(
            first_name.clone(),
            first,
            given
                .get(&mode)
                .or(given.get(&first_name))
                .or(given.get(&asked))
                .cloned(),
        )];
        for (k, v) in &given {
            if *k == mode || *k == first_name || *k == asked {
                continue;
            }
            let row = lookup(k)?;
            let name = row.as_ref().map(|r| r.name.clone()).unwrap_or(k.clone());
            wanted.push((name, row, Some(v.clone())));
        }
        if wanted.len() > 1
            && wanted
                .iter()
                .any(|(_, r, _)| r.as_ref().is_some_and(|r| !is_bridge(&r.record)))
        {
            return Err(Error::invalid(
                "Container cannot be connected to network endpoints: host or none networks cannot be combined with others",
            ));
        }
        for (name, row, cfg) in wanted {
            let cfg = cfg.unwrap_or(Value::Null);
            if let Some(row) = &row {
                self.check_endpoint(row, &cfg)?;
            }
            networks.insert(
                name,
                endpoint_json(&Ep {
                    network_id: row.as_ref().map(|r| r.id.as_str()).unwrap_or(""),
                    ipam_config: cfg["IPAMConfig"].clone(),
                    aliases: cfg["Aliases"].clone(),
                    endpoint_id: String::new(),
                    mac: cfg["MacAddress"].as_str().unwrap_or("").to_string(),
                    addr: None,
                    dns_names: Value::Null,
                }),
            );
        }
        rec["NetworkSettings"]["Networks"] = Value::Object(networks);
        Ok(())
    }

    fn check_endpoint(&self, row: &NetworkRow, cfg: &Value) -> Result<()> {
        let user_defined = is_bridge(&row.record) && !is_default_bridge(&row.record);
        let ip = cfg["IPAMConfig"]["IPv4Address"]
            .as_str()
            .filter(|s| !s.is_empty());
        if let Some(ip) = ip {
            if !user_defined {
                return Err(Error::invalid(
                    "invalid endpoint settings:\nuser specified IP address is supported on user defined networks only",
                ));
            }
            let ip: Ipv4Addr = ip.parse().map_err(|_| {
                Error::invalid(format!(
                    "invalid endpoint settings:\ninvalid IPv4 address: {ip}"
                ))
            })?;
            let (subnet, gw, range) = ipv4_config(&row.record)
                .ok_or_else(|| Error::invalid("network has no IPv4 subnet"))?;
            ipam::check_static(&subnet, range.as_ref(), ip)?;
            if ip == gw {
                return Err(Error::conflict(format!(
                    "Address already in use: {ip} is the gateway"
                )));
            }
        }
        if !user_defined && strs(&cfg["Aliases"]).iter().any(|a| !a.is_empty()) {
            return Err(Error::invalid(
                "invalid endpoint settings:\nnetwork-scoped alias is supported only for containers in user defined networks",
            ));
        }
        if let Some(m) = cfg["MacAddress"].as_str().filter(|m| !m.is_empty()) {
            ipam::parse_mac(m)?;
        }
        Ok(())
    }

    /// Before a container starts: its sandbox, endpoints, published ports
    /// and `/etc` files. On failure nothing is left behind.
    pub fn setup(&self, rec: &Value) -> Result<Setup> {
        let id = rec["Id"].as_str().unwrap_or("").to_string();
        let hc = &rec["HostConfig"];
        let mode = hc["NetworkMode"].as_str().unwrap_or("");
        let overrides = etc::DnsOverrides {
            servers: strs(&hc["Dns"]),
            search: strs(&hc["DnsSearch"]),
            options: strs(&hc["DnsOptions"]),
        };
        let extra = strs(&hc["ExtraHosts"]);
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let networks = rec["NetworkSettings"]["Networks"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        match mode {
            "host" => {
                let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                if !hosts.is_empty() && !hosts.ends_with('\n') {
                    hosts.push('\n');
                }
                hosts.push_str(&etc::extra_hosts(&extra));
                let resolv = if overrides.servers.is_empty()
                    && overrides.search.is_empty()
                    && overrides.options.is_empty()
                {
                    host_resolv
                } else {
                    etc::resolv_conf(&host_resolv, false, &overrides)
                };
                return Ok(Setup {
                    sandbox: Sandbox::Host,
                    hosts,
                    resolv_conf: resolv,
                    settings: settings_json(None, json!({}), networks),
                });
            }
            "none" => {
                return Ok(Setup {
                    sandbox: Sandbox::Fresh,
                    hosts: etc::hosts(None, &extra),
                    resolv_conf: etc::resolv_conf(&host_resolv, false, &overrides),
                    settings: settings_json(None, json!({}), networks),
                });
            }
            _ => {}
        }
        let _g = self.ops.lock().unwrap();
        let t0 = std::time::Instant::now();
        // Endpoints in order: the mode's network first (eth0, the gateway).
        let mut wanted: Vec<(String, Value)> = networks.into_iter().collect();
        let first_name = self.find(mode).map(|r| r.name).unwrap_or_default();
        wanted.sort_by_key(|(n, _)| (*n != first_name, n.clone()));
        let mut plans = Vec::new();
        let mut leased: Vec<(String, Ipv4Addr)> = Vec::new();
        let release = |leased: &[(String, Ipv4Addr)]| {
            let _ = self.meta.write_volatile(|w| {
                for (n, ip) in leased {
                    w.delete_lease(n, &ip.to_string())?;
                }
                Ok(())
            });
        };
        let mut infos = Vec::new();
        for (i, (name, cfg)) in wanted.iter().enumerate() {
            let row = match self.find(name) {
                Ok(r) => r,
                Err(e) => {
                    release(&leased);
                    return Err(Error::new(
                        e.kind,
                        format!("failed to set up container networking: {}", e.message),
                    ));
                }
            };
            match self.lease(&row, &id, cfg) {
                Ok(ip) => leased.push((row.id.clone(), ip)),
                Err(e) => {
                    release(&leased);
                    return Err(e);
                }
            }
            let ip = leased.last().expect("pushed").1;
            let (subnet, gw, _) = ipv4_config(&row.record).expect("leased");
            let internal = row.record["Internal"].as_bool() == Some(true);
            let mac = match cfg["MacAddress"]
                .as_str()
                .filter(|m| !m.is_empty())
                .or(if i == 0 {
                    rec["Config"]["MacAddress"].as_str()
                } else {
                    None
                })
                .filter(|m| !m.is_empty())
            {
                Some(m) => ipam::parse_mac(m)?,
                None => ipam::mac_for(ip),
            };
            plans.push(netlink::Endpoint {
                host_veth: veth_name(&id, &row.id),
                bridge: bridge_name(&row.record),
                ifname: format!("eth{i}"),
                mac,
                address: Ipv4Net::new(ip, subnet.prefix_len()).expect("prefix"),
                gateway: (i == 0 && !internal).then_some(gw),
                mtu: opt(&row.record, "com.docker.network.driver.mtu")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(self.cfg.mtu),
            });
            infos.push((row, cfg.clone(), ip, subnet, gw, mac, internal));
        }
        let dns = infos
            .iter()
            .any(|(row, ..)| !is_default_bridge(&row.record));
        let path = self.sandbox_path(&id);
        let t1 = std::time::Instant::now();
        let mut created = netlink::create_sandbox(&path, plans.clone(), dns);
        if created
            .as_ref()
            .is_err_and(|e| e.kind == ErrorKind::NotFound)
        {
            // A bridge was deleted behind berth's back: make it again.
            for (row, ..) in &infos {
                if let Err(e) = self.ensure_bridge(&row.record) {
                    release(&leased);
                    return Err(e);
                }
            }
            created = netlink::create_sandbox(&path, plans.clone(), dns);
        }
        tracing::debug!(container = %id, elapsed = ?t1.elapsed(), "network sandbox");
        let sockets = match created {
            Ok(s) => s,
            Err(e) => {
                release(&leased);
                return Err(e);
            }
        };
        let undo = |tasks: &[AbortHandle]| {
            for t in tasks {
                t.abort();
            }
            let _ = netlink::delete_links(plans.iter().map(|p| p.host_veth.clone()).collect());
            let _ = netlink::remove_sandbox(&path);
            release(&leased);
        };
        // Published ports go to the first endpoint.
        let mut tasks = Vec::new();
        let ports = match self.publish(rec, &infos[0].0, infos[0].2, &mut tasks) {
            Ok(p) => p,
            Err(e) => {
                undo(&tasks);
                return Err(e);
            }
        };
        let upstreams: Vec<SocketAddr> = etc::upstreams(&host_resolv, &overrides)
            .iter()
            .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        let name = rec["Name"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        let short = id[..12].to_string();
        let mut endpoints = Vec::new();
        let mut settings_nets = Map::new();
        for (row, cfg, ip, subnet, gw, mac, internal) in &infos {
            let user_defined = !is_default_bridge(&row.record);
            let aliases = strs(&cfg["Aliases"]);
            let mut names = Vec::new();
            if user_defined {
                names.push(name.clone());
                names.extend(aliases.iter().cloned());
                names.push(short.clone());
            }
            endpoints.push(ActiveEp {
                network_id: row.id.clone(),
                ip: *ip,
                names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            });
            settings_nets.insert(
                row.name.clone(),
                endpoint_json(&Ep {
                    network_id: &row.id,
                    ipam_config: cfg["IPAMConfig"].clone(),
                    aliases: cfg["Aliases"].clone(),
                    endpoint_id: endpoint_id(&id, &row.id),
                    mac: ipam::mac_text(mac),
                    addr: Some((*ip, subnet.prefix_len(), (!*internal).then_some(*gw))),
                    dns_names: if names.is_empty() {
                        Value::Null
                    } else {
                        json!(names)
                    },
                }),
            );
        }
        if let Some(s) = sockets {
            match dns::serve(s, id.clone(), self.lookup()) {
                Ok(t) => tasks.extend(t),
                Err(e) => {
                    undo(&tasks);
                    return Err(Error::internal(format!("embedded DNS: {e}")));
                }
            }
        }
        let had_ports = !ports.is_empty();
        self.active.lock().unwrap().insert(
            id.clone(),
            Active {
                endpoints,
                ports: ports.clone(),
                tasks,
                dns,
                upstreams,
            },
        );
        if had_ports && let Err(e) = self.refresh_firewall() {
            if let Some(a) = self.active.lock().unwrap().remove(&id) {
                undo(&a.tasks);
            }
            let _ = self.refresh_firewall();
            return Err(e);
        }
        for (row, ..) in &infos {
            self.events.network_event(
                "connect",
                &row.id,
                BTreeMap::from([
                    ("container".to_string(), id.clone()),
                    ("name".to_string(), row.name.clone()),
                    ("type".to_string(), "bridge".to_string()),
                ]),
            );
        }
        tracing::debug!(container = %id, elapsed = ?t0.elapsed(), "network setup");
        let first = &infos[0];
        let own = (
            first.2,
            rec["Config"]["Hostname"].as_str().unwrap_or(""),
            rec["Config"]["Domainname"].as_str().unwrap_or(""),
        );
        let key = path.display().to_string();
        Ok(Setup {
            sandbox: Sandbox::Path(path),
            hosts: etc::hosts(Some(own), &extra),
            resolv_conf: etc::resolv_conf(&host_resolv, dns, &overrides),
            settings: settings_json(
                Some((&sandbox_id(&id), &key)),
                ports_json(rec, &ports),
                settings_nets,
            ),
        })
    }

    /// Lease an address on `row` to container `id`: the one asked for, or
    /// the next free one.
    fn lease(&self, row: &NetworkRow, id: &str, cfg: &Value) -> Result<Ipv4Addr> {
        let (subnet, gw, range) = ipv4_config(&row.record)
            .ok_or_else(|| Error::invalid(format!("network {} has no IPv4 subnet", row.name)))?;
        let want = cfg["IPAMConfig"]["IPv4Address"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Ipv4Addr>())
            .transpose()
            .map_err(|_| Error::invalid("invalid IPv4 address"))?;
        // Leases are rebuilt from the running containers at daemon start,
        // so they need not cost a disk flush of their own.
        self.meta.write_volatile(|w| {
            let leases = w.leases(&row.id)?;
            if let Some((ip, _)) = leases.iter().find(|(_, c)| c == id) {
                return ip.parse().map_err(|_| Error::internal("bad lease"));
            }
            let ip = match want {
                Some(ip) => {
                    ipam::check_static(&subnet, range.as_ref(), ip)?;
                    ip
                }
                None => {
                    let used: HashSet<Ipv4Addr> = leases
                        .iter()
                        .filter_map(|(ip, _)| ip.parse().ok())
                        .collect();
                    ipam::next_free(&subnet, range.as_ref(), gw, &used).ok_or_else(|| {
                        Error::internal(format!(
                            "no available IPv4 addresses on this network's address pools: {} ({})",
                            row.name, row.id
                        ))
                    })?
                }
            };
            w.put_lease(&row.id, &ip.to_string(), id)?;
            Ok(ip)
        })
    }

    /// Bind the host ports a container publishes (each through the
    /// userland proxy, to `ip`); the returned maps go into the firewall.
    fn publish(
        &self,
        rec: &Value,
        row: &NetworkRow,
        ip: Ipv4Addr,
        tasks: &mut Vec<AbortHandle>,
    ) -> Result<Vec<PortMap>> {
        let want = bindings(rec)?;
        let mut out = Vec::new();
        let bridge = bridge_name(&row.record);
        let (lo, hi) = ephemeral_range();
        for b in want {
            let target = SocketAddrV4::new(ip, b.container_port);
            let taken = |port: u16| {
                self.active
                    .lock()
                    .unwrap()
                    .values()
                    .flat_map(|a| a.ports.iter())
                    .chain(out.iter())
                    .any(|m: &PortMap| {
                        m.proto == b.proto
                            && m.host_port == port
                            && (m.host_ip.is_none()
                                || b.host_ip.is_none()
                                || m.host_ip == b.host_ip)
                    })
            };
            let candidates: Vec<u16> = if b.host_ports == (0, 0) {
                let start = lo + (rand::random::<u16>() % (hi - lo + 1));
                (start..=hi).chain(lo..start).collect()
            } else {
                (b.host_ports.0..=b.host_ports.1).collect()
            };
            let mut last_err = None;
            let mut got = None;
            for port in candidates {
                if taken(port) {
                    last_err = Some(Error::internal(format!(
                        "Bind for {}:{port} failed: port is already allocated",
                        b.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
                    )));
                    continue;
                }
                match proxy::bind(b.proto, b.host_ip, port) {
                    Ok((bound, p)) => {
                        got = Some((bound, p));
                        break;
                    }
                    Err(e) => {
                        last_err = Some(proxy::bind_error(b.proto, b.host_ip, port, target, &e))
                    }
                }
            }
            let Some((bound, port)) = got else {
                let e = last_err.unwrap_or_else(|| Error::internal("no free host port"));
                return Err(Error::internal(format!(
                    "driver failed programming external connectivity on endpoint {} ({}): {}",
                    rec["Name"].as_str().unwrap_or("").trim_start_matches('/'),
                    endpoint_id(rec["Id"].as_str().unwrap_or(""), &row.id),
                    e.message
                )));
            };
            let _rt = self.rt.enter();
            tasks.push(proxy::start(bound, target)?);
            out.push(PortMap {
                proto: b.proto,
                host_ip: b.host_ip,
                host_port: port,
                container_ip: ip,
                container_port: b.container_port,
                bridge: bridge.clone(),
            });
        }
        Ok(out)
    }

    /// After a container stopped (or failed to start, or is removed): its
    /// endpoints, leases, proxies and sandbox go. Returns its cleared
    /// `NetworkSettings`. Safe to call again.
    pub fn teardown(&self, rec: &Value) -> Result<Value> {
        let id = rec["Id"].as_str().unwrap_or("").to_string();
        let networks = rec["NetworkSettings"]["Networks"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let _g = self.ops.lock().unwrap();
        let active = self.active.lock().unwrap().remove(&id);
        let mut errs = Vec::new();
        let mut had_ports = false;
        if let Some(a) = &active {
            for t in &a.tasks {
                t.abort();
            }
            had_ports = !a.ports.is_empty();
        }
        let net_ids: Vec<String> = networks
            .values()
            .filter_map(|ep| ep["NetworkID"].as_str().filter(|n| n.len() >= 12))
            .map(String::from)
            .collect();
        // The host ends of the veths go with the namespace: deleting a
        // link waits for the kernel's RCU grace periods (10-20 ms each),
        // while the namespace's own cleanup runs in the background once
        // its last user (the mount, the container, the DNS sockets) is
        // gone. A restart that finds a veth still there removes it first.
        let path = self.sandbox_path(&id);
        if let Err(e) = netlink::remove_sandbox(&path) {
            errs.push(e.message);
        }
        let held = |r: &dyn MetaRead| -> Result<bool> {
            for n in &net_ids {
                if r.leases(n)?.iter().any(|(_, c)| *c == id) {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        if self.meta.read(|r| held(r)).unwrap_or(true)
            && let Err(e) = self.meta.write_volatile(|w| {
                for n in &net_ids {
                    for (ip, c) in w.leases(n)? {
                        if c == id {
                            w.delete_lease(n, &ip)?;
                        }
                    }
                }
                Ok(())
            })
        {
            errs.push(e.message);
        }
        if had_ports && let Err(e) = self.refresh_firewall() {
            errs.push(e.message);
        }
        if active.is_some() {
            for n in &net_ids {
                let name = self
                    .meta
                    .read(|r| r.network(n))
                    .ok()
                    .flatten()
                    .map(|r| r.name)
                    .unwrap_or_default();
                self.events.network_event(
                    "disconnect",
                    n,
                    BTreeMap::from([
                        ("container".to_string(), id.clone()),
                        ("name".to_string(), name),
                        ("type".to_string(), "bridge".to_string()),
                    ]),
                );
            }
        }
        let mut cleared = Map::new();
        for (name, ep) in networks {
            cleared.insert(
                name,
                endpoint_json(&Ep {
                    network_id: ep["NetworkID"].as_str().unwrap_or(""),
                    ipam_config: ep["IPAMConfig"].clone(),
                    aliases: ep["Aliases"].clone(),
                    endpoint_id: String::new(),
                    mac: String::new(),
                    addr: None,
                    dns_names: Value::Null,
                }),
            );
        }
        let settings = settings_json(None, json!({}), cleared);
        if errs.is_empty() {
            Ok(settings)
        } else {
            Err(Error::internal(format!(
                "network teardown of {id}: {}",
                errs.join("; ")
            )))
        }
    }

    /// `network connect`: a new endpoint for the container; plugged in at
    /// once when it runs. Returns (network name, endpoint settings).
    pub fn connect(&self, rec: &Value, network: &str, cfg: &Value) -> Result<(String, Value)> {
        let row = self.find(network)?;
        let id = rec["Id"].as_str().unwrap_or("").to_string();
        let mode = rec["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
        if mode == "host" || !is_bridge(&row.record) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "container cannot be disconnected from host network or connected to host network",
            ));
        }
        if mode == "none" || mode.starts_with("container:") {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "container sharing network namespace with another container or host cannot be connected to any other network",
            ));
        }
        if rec["NetworkSettings"]["Networks"].get(&row.name).is_some() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "endpoint with name {} already exists in network {}",
                    rec["Name"].as_str().unwrap_or("").trim_start_matches('/'),
                    row.name
                ),
            ));
        }
        self.check_endpoint(&row, cfg)?;
        let running = self.active.lock().unwrap().contains_key(&id);
        if !running {
            let ep = endpoint_json(&Ep {
                network_id: &row.id,
                ipam_config: cfg["IPAMConfig"].clone(),
                aliases: cfg["Aliases"].clone(),
                endpoint_id: String::new(),
                mac: String::new(),
                addr: None,
                dns_names: Value::Null,
            });
            return Ok((row.name, ep));
        }
        let _g = self.ops.lock().unwrap();
        let ip = self.lease(&row, &id, cfg)?;
        let (subnet, gw, _) = ipv4_config(&row.record).expect("leased");
        let index = rec["NetworkSettings"]["Networks"]
            .as_object()
            .map(|m| m.len())
            .unwrap_or(0);
        let mac = ipam::mac_for(ip);
        let plan = netlink::Endpoint {
            host_veth: veth_name(&id, &row.id),
            bridge: bridge_name(&row.record),
            ifname: format!("eth{index}"),
            mac,
            address: Ipv4Net::new(ip, subnet.prefix_len()).expect("prefix"),
            gateway: None,
            mtu: self.cfg.mtu,
        };
        let path = self.sandbox_path(&id);
        let release = || {
            let _ = self
                .meta
                .write(|w| w.delete_lease(&row.id, &ip.to_string()).map(|_| ()));
        };
        if !netlink::link_exists(&plan.bridge).unwrap_or(false)
            && let Err(e) = self.ensure_bridge(&row.record)
        {
            release();
            return Err(e);
        }
        if let Err(e) = netlink::add_endpoints(&path, vec![plan]) {
            release();
            return Err(e);
        }
        let user_defined = !is_default_bridge(&row.record);
        let name = rec["Name"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        let mut names = Vec::new();
        if user_defined {
            names.push(name);
            names.extend(strs(&cfg["Aliases"]));
            names.push(id[..12].to_string());
        }
        let mut need_dns = false;
        {
            let mut active = self.active.lock().unwrap();
            if let Some(a) = active.get_mut(&id) {
                a.endpoints.push(ActiveEp {
                    network_id: row.id.clone(),
                    ip,
                    names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                });
                need_dns = user_defined && !a.dns;
                if need_dns {
                    a.dns = true;
                }
            }
        }
        if need_dns {
            // The container's resolv.conf was written for the default
            // bridge; the server is there for when it is pointed at it.
            match netlink::open_dns_in(&path) {
                Ok(s) => {
                    let _rt = self.rt.enter();
                    if let Ok(t) = dns::serve(s, id.clone(), self.lookup())
                        && let Some(a) = self.active.lock().unwrap().get_mut(&id)
                    {
                        a.tasks.extend(t);
                    }
                }
                Err(e) => tracing::warn!(container = %id, error = %e, "embedded DNS not started"),
            }
        }
        self.events.network_event(
            "connect",
            &row.id,
            BTreeMap::from([
                ("container".to_string(), id.clone()),
                ("name".to_string(), row.name.clone()),
                ("type".to_string(), "bridge".to_string()),
            ]),
        );
        let ep = endpoint_json(&Ep {
            network_id: &row.id,
            ipam_config: cfg["IPAMConfig"].clone(),
            aliases: cfg["Aliases"].clone(),
            endpoint_id: endpoint_id(&id, &row.id),
            mac: ipam::mac_text(&mac),
            addr: Some((ip, subnet.prefix_len(), Some(gw))),
            dns_names: if names.is_empty() {
                Value::Null
            } else {
                json!(names)
            },
        });
        Ok((row.name, ep))
    }

    /// `network disconnect`: the endpoint goes (unplugged at once when the
    /// container runs). Returns the network's name.
    pub fn disconnect(&self, rec: &Value, network: &str) -> Result<String> {
        let id = rec["Id"].as_str().unwrap_or("").to_string();
        let row = match self.find(network) {
            Ok(r) => r,
            Err(e) => {
                // A network removed behind a stopped container's back can
                // still be left by name.
                if rec["NetworkSettings"]["Networks"].get(network).is_some() {
                    return Ok(network.to_string());
                }
                return Err(e);
            }
        };
        if rec["NetworkSettings"]["Networks"].get(&row.name).is_none() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("container {id} is not connected to network {}", row.name),
            ));
        }
        if !is_bridge(&row.record) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "container cannot be disconnected from host network or connected to host network",
            ));
        }
        let _g = self.ops.lock().unwrap();
        let mut had_ports = false;
        {
            let mut active = self.active.lock().unwrap();
            if let Some(a) = active.get_mut(&id) {
                a.endpoints.retain(|e| e.network_id != row.id);
                let bridge = bridge_name(&row.record);
                let before = a.ports.len();
                a.ports.retain(|p| p.bridge != bridge);
                had_ports = a.ports.len() != before;
            }
        }
        let mut errs = Vec::new();
        if let Err(e) = netlink::delete_links(vec![veth_name(&id, &row.id)]) {
            errs.push(e.message);
        }
        if let Err(e) = self.meta.write(|w| {
            for (ip, c) in w.leases(&row.id)? {
                if c == id {
                    w.delete_lease(&row.id, &ip)?;
                }
            }
            Ok(())
        }) {
            errs.push(e.message);
        }
        if had_ports && let Err(e) = self.refresh_firewall() {
            errs.push(e.message);
        }
        self.events.network_event(
            "disconnect",
            &row.id,
            BTreeMap::from([
                ("container".to_string(), id.clone()),
                ("name".to_string(), row.name.clone()),
                ("type".to_string(), "bridge".to_string()),
            ]),
        );
        if errs.is_empty() {
            Ok(row.name)
        } else {
            Err(Error::internal(errs.join("; ")))
        }
    }

    /// After a daemon start: running containers get their proxies, DNS
    /// listeners and firewall rules back; sandboxes and leases of
    /// containers that are not running go.
    pub fn restore(&self, records: &[Value]) -> Result<()> {
        let running: HashMap<String, &Value> = records
            .iter()
            .filter(|r| r["State"]["Running"].as_bool() == Some(true))
            .filter_map(|r| r["Id"].as_str().map(|id| (id.to_string(), r)))
            .collect();
        for (id, path) in netlink::sandboxes(&self.netns_dir()) {
            if !running.contains_key(&id) {
                tracing::info!(container = %id, "removing a stale network namespace");
                let veths: Vec<String> = records
                    .iter()
                    .find(|r| r["Id"] == id.as_str())
                    .and_then(|r| r["NetworkSettings"]["Networks"].as_object())
                    .map(|m| {
                        m.values()
                            .filter_map(|e| e["NetworkID"].as_str().filter(|n| n.len() >= 12))
                            .map(|n| veth_name(&id, n))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = netlink::delete_links(veths);
                if let Err(e) = netlink::remove_sandbox(&path) {
                    tracing::warn!(error = %e, "stale network namespace");
                }
            }
        }
        // Leases of containers that do not run.
        let dropped = self.meta.write(|w| {
            let mut n_dropped = 0usize;
            for n in w.networks()? {
                for (ip, c) in w.leases(&n.id)? {
                    if !running.contains_key(&c) {
                        w.delete_lease(&n.id, &ip)?;
                        n_dropped += 1;
                    }
                }
            }
            Ok(n_dropped)
        })?;
        if dropped > 0 {
            tracing::info!(
                leases = dropped,
                "housekeeping: released address leases of containers that no longer run"
            );
        }
        for (id, rec) in &running {
            let mode = rec["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
            if mode == "host" || mode == "none" || mode.starts_with("container:") {
                continue;
            }
            let path = self.sandbox_path(id);
            if !path.exists() {
                continue;
            }
            if let Err(e) = self.readopt(id, rec, &path) {
                tracing::warn!(container = %id, error = %e, "cannot restore the container's network");
            }
        }
        self.refresh_firewall()
    }

    fn readopt(&self, id: &str, rec: &Value, path: &Path) -> Result<()> {
        let nets = rec["NetworkSettings"]["Networks"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let name = rec["Name"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        let mut endpoints = Vec::new();
        let mut dns = false;
        for ep in nets.values() {
            let (Some(nid), Some(ip)) = (
                ep["NetworkID"].as_str(),
                ep["IPAddress"]
                    .as_str()
                    .and_then(|i| i.parse::<Ipv4Addr>().ok()),
            ) else {
                continue;
            };
            let Ok(Some(row)) = self.meta.read(|r| r.network(nid)) else {
                continue;
            };
            self.meta.write(|w| w.put_lease(nid, &ip.to_string(), id))?;
            let user_defined = !is_default_bridge(&row.record);
            dns |= user_defined;
            let names: Vec<String> = if user_defined {
                let mut n = vec![name.clone()];
                n.extend(strs(&ep["Aliases"]));
                n.push(id[..12].to_string());
                n.iter().map(|x| x.to_ascii_lowercase()).collect()
            } else {
                vec![]
            };
            endpoints.push((
                row,
                ActiveEp {
                    network_id: nid.to_string(),
                    ip,
                    names,
                },
            ));
        }
        let Some((first_row, first)) = endpoints.first().cloned() else {
            return Ok(());
        };
        let mut tasks = Vec::new();
        let ports = self.publish(rec, &first_row, first.ip, &mut tasks)?;
        if dns {
            match netlink::open_dns_in(path) {
                Ok(s) => {
                    let _rt = self.rt.enter();
                    tasks.extend(dns::serve(s, id.to_string(), self.lookup())?);
                }
                Err(e) => tracing::warn!(container = %id, error = %e, "embedded DNS not restored"),
            }
        }
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let overrides = etc::DnsOverrides {
            servers: strs(&rec["HostConfig"]["Dns"]),
            ..Default::default()
        };
        let upstreams = etc::upstreams(&host_resolv, &overrides)
            .iter()
            .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        self.active.lock().unwrap().insert(
            id.to_string(),
            Active {
                endpoints: endpoints.into_iter().map(|(_, e)| e).collect(),
                ports,
                tasks,
                dns,
                upstreams,
            },
        );
        Ok(())
    }

    // ---- firewall ---------------------------------------------------------

    fn firewall_state(&self) -> Result<(Vec<BridgeNet>, Vec<PortMap>)> {
        let mut nets = Vec::new();
        for row in self.meta.read(|r| r.networks())? {
            if !is_bridge(&row.record) {
                continue;
            }
            let Some((subnet, _, _)) = ipv4_config(&row.record) else {
                continue;
            };
            nets.push(BridgeNet {
                bridge: bridge_name(&row.record),
                subnet,
                internal: row.record["Internal"].as_bool() == Some(true),
                masquerade: opt(
                    &row.record,
                    "com.docker.network.bridge.enable_ip_masquerade",
                ) != Some("false"),
            });
        }
        nets.sort_by(|a, b| a.bridge.cmp(&b.bridge));
        let mut ports: Vec<PortMap> = self
            .active
            .lock()
            .unwrap()
            .values()
            .flat_map(|a| a.ports.iter().cloned())
            .collect();
        ports.sort_by_key(|p| (p.host_port, p.proto.as_str()));
        Ok((nets, ports))
    }

    /// Rebuild berth's table from the networks and running containers.
    pub fn refresh_firewall(&self) -> Result<()> {
        if !self.cfg.firewall {
            return Ok(());
        }
        let mut fw = self.fw.lock().unwrap();
        let (nets, ports) = self.firewall_state()?;
        nft::apply(&nft::ruleset(&nets, &ports))?;
        *fw = Some(nft::rule_count(&nets, &ports));
        let bridges: Vec<String> = nets.iter().map(|n| n.bridge.clone()).collect();
        iptables::sync(&bridges)?;
        Ok(())
    }

    /// Notice a table flushed or deleted by someone else (a firewall
    /// reload) or a FORWARD policy dockerd set to DROP, and put berth's
    /// rules back. Driven by the kernel's nftables change events (see
    /// [`fwwatch`]); runs until the daemon's runtime ends.
    pub fn watch_firewall(self: &Arc<Self>) {
        if !self.cfg.firewall {
            return;
        }
        let me = Arc::downgrade(self);
        self.rt.spawn(fwwatch::run(move || {
            let me = me.clone();
            async move {
                let Some(svc) = me.upgrade() else {
                    return false;
                };
                let r = tokio::task::spawn_blocking(move || svc.check_firewall()).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "cannot restore berth's nftables table");
                }
                true
            }
        }));
    }

    /// Rebuild berth's table if it is not what berth last put there, and
    /// bring the FORWARD accepts in line.
    fn check_firewall(&self) -> Result<()> {
        let want = *self.fw.lock().unwrap();
        let Some(want) = want else { return Ok(()) };
        if nft::live_rule_count() != Some(want) {
            tracing::warn!("berth's nftables table was changed from outside; restoring it");
            self.refresh_firewall()?;
        } else {
            // dockerd may have come up (FORWARD policy DROP), or a firewall
            // reload may have taken berth's accepts.
            let (nets, _) = self.firewall_state()?;
            let bridges: Vec<String> = nets.into_iter().map(|n| n.bridge).collect();
            if iptables::sync(&bridges)? {
                tracing::info!("FORWARD chain accepts for berth's bridges brought up to date");
            }
        }
        Ok(())
    }

    /// At daemon stop: with no container running, the bridges and berth's
    /// table go (they are made again at the next start).
    pub fn shutdown(&self) -> Result<()> {
        if !self.active.lock().unwrap().is_empty() {
            return Ok(());
        }
        *self.fw.lock().unwrap() = None;
        let mut errs = Vec::new();
        let bridges: Vec<String> = self
            .meta
            .read(|r| r.networks())?
            .iter()
            .filter(|r| is_bridge(&r.record))
            .map(|r| bridge_name(&r.record))
            .collect();
        if let Err(e) = netlink::delete_links(bridges) {
            errs.push(e.message);
        }
        if self.cfg.firewall {
            if let Err(e) = nft::delete_table() {
                errs.push(e.message);
            }
            if let Err(e) = iptables::sync(&[]) {
                errs.push(e.message);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::internal(errs.join("; ")))
        }
    }

    fn lookup(&self) -> Arc<dyn dns::Lookup> {
        Arc::new(Resolver(self.me.clone()))
    }
}

/// The endpoint ID of a container on a network: stable, so it survives a
/// daemon restart without being stored.
fn endpoint_id(container: &str, network: &str) -> String {
    let mut out = String::with_capacity(64);
    for (a, b) in container.bytes().zip(network.bytes().cycle()).take(64) {
        let x = (hex_val(a) ^ hex_val(b)) & 0xf;
        out.push(char::from_digit(x as u32, 16).expect("nibble"));
    }
    out
}

fn hex_val(c: u8) -> u8 {
    (c as char).to_digit(16).unwrap_or(0) as u8
}

fn sandbox_id(container: &str) -> String {
    endpoint_id(container, "5a4db0c5")
}

/// The DNS server's view of the daemon.
struct Resolver(Weak<NetworkService>);

impl dns::Lookup for Resolver {
    fn lookup(&self, container: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let svc = self.0.upgrade()?;
        let active = svc.active.lock().unwrap();
        let me = active.get(container)?;
        let mine: Vec<&str> = me
            .endpoints
            .iter()
            .filter(|e| !e.names.is_empty())
            .map(|e| e.network_id.as_str())
            .collect();
        let mut out = Vec::new();
        let net_names: HashMap<String, String> = svc
            .meta
            .read(|r| r.networks())
            .ok()?
            .into_iter()
            .filter(|n| mine.contains(&n.id.as_str()))
            .map(|n| (n.id, n.name.to_ascii_lowercase()))
            .collect();
        for a in active.values() {
            for ep in &a.endpoints {
                if !mine.contains(&ep.network_id.as_str()) {
                    continue;
                }
                let netname = net_names.get(&ep.network_id).cloned().unwrap_or_default();
                let hit = ep.names.iter().any(|n| {
                    n == name
                        || name
                            .strip_suffix(netname.as_str())
                            .and_then(|s| s.strip_suffix('.'))
                            == Some(n.as_str())
                });
                if hit && !out.contains(&ep.ip) {
                    out.push(ep.ip);
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn upstreams(&self, container: &str) -> Vec<SocketAddr> {
        self.0
            .upgrade()
            .and_then(|s| {
                s.active
                    .lock()
                    .unwrap()
                    .get(container)
                    .map(|a| a.upstreams.clone())
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bindings_and_publish_all() {
        let rec = json!({
            "Config": {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}}},
            "HostConfig": {
                "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "443/tcp": [{"HostIp": "", "HostPort": "9000-9010"}]},
                "PublishAllPorts": true
            }
        });
        let b = bindings(&rec).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b[0].host_ip, Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(b[0].host_ports, (8080, 8080));
        assert_eq!(b[1].host_ports, (9000, 9010));
        assert!(b[2..].iter().all(|x| x.host_ports == (0, 0)));
        let maps = vec![PortMap {
            proto: Proto::Tcp,
            host_ip: Some(Ipv4Addr::new(127, 0, 0, 1)),
            host_port: 8080,
            container_ip: Ipv4Addr::new(172, 17, 0, 2),
            container_port: 80,
            bridge: "berth0".into(),
        }];
        let p = ports_json(&rec, &maps);
        assert_eq!(
            p["80/tcp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}])
        );
        assert_eq!(p["53/udp"], Value::Null);
        assert!(p.get("443/tcp").is_some());
        let bad = json!({"HostConfig": {"PortBindings": {"0/tcp": []}}});
        assert!(bindings(&bad).is_err());
        let bad = json!({"HostConfig": {"PortBindings": {"80/sctp": []}}});
        assert!(bindings(&bad).is_err());
    }

    #[test]
    fn stable_names_fit_the_kernel() {
        let c = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let n = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        assert!(veth_name(c, n).len() <= 15);
        assert_eq!(endpoint_id(c, n).len(), 64);
        assert_ne!(endpoint_id(c, n), sandbox_id(c));
    }

    #[test]
    fn top_level_settings_come_from_the_default_bridge() {
        let mut nets = Map::new();
        nets.insert(
            "bridge".into(),
            endpoint_json(&Ep {
                network_id: "n",
                ipam_config: Value::Null,
                aliases: Value::Null,
                endpoint_id: "e".into(),
                mac: "02:42:ac:11:00:02".into(),
                addr: Some((
                    Ipv4Addr::new(172, 17, 0, 2),
                    16,
                    Some(Ipv4Addr::new(172, 17, 0, 1)),
                )),
                dns_names: Value::Null,
            }),
        );
        let s = settings_json(Some(("s", "/run/berth/netns/x")), json!({}), nets);
        assert_eq!(s["IPAddress"], "172.17.0.2");
        assert_eq!(s["IPPrefixLen"], 16);
        assert_eq!(s["Gateway"], "172.17.0.1");
        assert_eq!(s["MacAddress"], "02:42:ac:11:00:02");
        assert_eq!(s["Networks"]["bridge"]["EndpointID"], "e");
        let keys: Vec<&String> = s["Networks"]["bridge"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys[0], "IPAMConfig");
        assert_eq!(keys.last().unwrap().as_str(), "DNSNames");
    }
}
