//! Network commands (`network create/ls/inspect/rm/prune/connect/disconnect`),
//! `port`, and the parsing of `run`/`create`'s networking flags
//! (`-p`, `--add-host`) as docker does it.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Map, Value, json};

use crate::Exit;
use crate::client::{Client, DaemonError, enc};
use crate::images::{confirm, filters_json, print_inspect};
use berth_format as format;

#[derive(Subcommand)]
#[command(defer = true)]
pub enum NetworkCmd {
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Create a network
    Create(CreateArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(RmArgs),
}

pub async fn network(c: &Client, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Connect(a) => connect(c, a).await,
        NetworkCmd::Create(a) => create(c, a).await,
        NetworkCmd::Disconnect(a) => disconnect(c, a).await,
        NetworkCmd::Inspect(a) => inspect(c, a).await,
        NetworkCmd::Ls(a) => ls(c, a).await,
        NetworkCmd::Prune(a) => prune(c, a).await,
        NetworkCmd::Rm(a) => rm(c, a).await,
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Enable manual container attachment
    #[arg(long)]
    attachable: bool,
    /// Driver to manage the Network
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long)]
    gateway: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    internal: bool,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range")]
    ip_range: Vec<String>,
    /// IP Address Management Driver
    #[arg(long = "ipam-driver", default_value = "default")]
    ipam_driver: String,
    /// Enable or disable IPv6 address assignment
    #[arg(long)]
    ipv6: bool,
    /// Set metadata on a network
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long)]
    subnet: Vec<String>,
    name: String,
}

fn kv_map(list: &[String]) -> Map<String, Value> {
    list.iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap_or((o, ""));
            (k.to_string(), json!(v))
        })
        .collect()
}

/// docker's consolidateIpam: each gateway and range goes with the subnet
/// that contains it.
fn ipam_config(subnets: &[String], gateways: &[String], ranges: &[String]) -> Result<Vec<Value>> {
    if subnets.is_empty() {
        if !gateways.is_empty() || !ranges.is_empty() {
            bail!("every ip-range or gateway must have a corresponding subnet");
        }
        return Ok(vec![]);
    }
    let contains = |subnet: &str, ip: &str| -> bool {
        let Some((net, len)) = subnet.split_once('/') else {
            return false;
        };
        let (Ok(net), Ok(len)) = (net.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
            return false;
        };
        let ip = ip.split('/').next().unwrap_or(ip);
        let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() else {
            return false;
        };
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - len.min(32))
        };
        u32::from(net) & mask == u32::from(ip) & mask
    };
    let mut out: Vec<Value> = subnets.iter().map(|s| json!({"Subnet": s})).collect();
    for g in gateways {
        let i = subnets
            .iter()
            .position(|s| contains(s, g))
            .with_context(|| format!("no matching subnet for gateway {g}"))?;
        out[i]["Gateway"] = json!(g);
    }
    for r in ranges {
        let i = subnets
            .iter()
            .position(|s| contains(s, r))
            .with_context(|| format!("no matching subnet for range {r}"))?;
        out[i]["IPRange"] = json!(r);
    }
    Ok(out)
}

async fn create(c: &Client, a: CreateArgs) -> Result<()> {
    let body = json!({
        "Name": a.name,
        "Driver": a.driver,
        "Internal": a.internal,
        "Attachable": a.attachable,
        "EnableIPv6": a.ipv6,
        "IPAM": {"Driver": a.ipam_driver, "Config": ipam_config(&a.subnet, &a.gateway, &a.ip_range)?, "Options": {}},
        "Options": kv_map(&a.opt),
        "Labels": kv_map(&a.label),
    });
    let resp: Value = c.post_json("/networks/create", &body).await?;
    println!("{}", resp["Id"].as_str().unwrap_or(""));
    Ok(())
}

#[derive(Args)]
pub struct LsArgs {
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only display network IDs
    #[arg(short, long)]
    quiet: bool,
}

async fn ls(c: &Client, a: LsArgs) -> Result<()> {
    let mut path = "/networks".to_string();
    if !a.filter.is_empty() {
        path.push_str(&format!("?filters={}", enc(&filters_json(&a.filter)?)));
    }
    let mut nets: Vec<Value> = c.get_json(&path).await?;
    nets.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
    let fmt = match (&a.format, a.quiet) {
        (_, true) => "{{.ID}}".to_string(),
        (Some(f), false) if !f.is_empty() && f != "table" => f.clone(),
        _ => "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}".into(),
    };
    let rows: Vec<Value> = nets
        .iter()
        .map(|n| {
            let id = n["Id"].as_str().unwrap_or("");
            let labels: Vec<String> = n["Labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            json!({
                "ID": if a.no_trunc { id } else { &id[..id.len().min(12)] },
                "Name": n["Name"],
                "Driver": n["Driver"],
                "Scope": n["Scope"],
                "IPv4": n["EnableIPv4"].as_bool().unwrap_or(true).to_string(),
                "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
                "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
                "Labels": labels.join(","),
                "CreatedAt": n["Created"],
            })
        })
        .collect();
    let header = json!({
        "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
        "IPv4": "IPV4", "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT",
    });
    let out = format::render_list(&fmt, &header, &rows)
        .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
    print!("{out}");
    Ok(())
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    /// Verbose output for diagnostics
    #[arg(short, long)]
    verbose: bool,
    #[arg(required = true, value_name = "NETWORK")]
    names: Vec<String>,
}

async fn inspect(c: &Client, a: InspectArgs) -> Result<()> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for n in &a.names {
        match c.get_value(&format!("/networks/{}", enc(n))).await {
            Ok(v) => items.push(v),
            Err(e) => match e.downcast_ref::<DaemonError>() {
                Some(d) if d.status == hyper::StatusCode::NOT_FOUND => {
                    errors.push(format!("Error: No such network: {n}"))
                }
                _ => return Err(e),
            },
        }
    }
    print_inspect(&items, &errors, a.format.as_deref())
}

#[derive(Args)]
pub struct RmArgs {
    /// Do not error if the network does not exist
    #[arg(short, long)]
    force: bool,
    #[arg(required = true, value_name = "NETWORK")]
    names: Vec<String>,
}

async fn rm(c: &Client, a: RmArgs) -> Result<()> {
    let mut failed = false;
    for n in &a.names {
        match c
            .send_json::<Value>(Method::DELETE, &format!("/networks/{}", enc(n)))
            .await
        {
            Ok(_) => println!("{n}"),
            Err(e) => {
                if a.force
                    && e.downcast_ref::<DaemonError>()
                        .is_some_and(|d| d.status == hyper::StatusCode::NOT_FOUND)
                {
                    continue;
                }
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(Exit(1).into());
    }
    Ok(())
}

#[derive(Args)]
pub struct PruneArgs {
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    if !a.force
        && !confirm(
            "WARNING! This will remove all custom networks not used by at least one container.",
        )?
    {
        return Ok(());
    }
    crate::images::prune_request(
        c,
        "/networks/prune",
        &a.filter,
        "NetworksDeleted",
        "Deleted Networks",
    )
    .await?;
    Ok(())
}

#[derive(Args)]
pub struct ConnectArgs {
    /// Add network-scoped alias for the container
    #[arg(long)]
    alias: Vec<String>,
    /// IPv4 address (e.g., "172.30.100.104")
    #[arg(long)]
    ip: Option<String>,
    network: String,
    container: String,
}

async fn connect(c: &Client, a: ConnectArgs) -> Result<()> {
    let mut ep = json!({});
    if let Some(ip) = &a.ip {
        ep["IPAMConfig"] = json!({"IPv4Address": ip});
    }
    if !a.alias.is_empty() {
        ep["Aliases"] = json!(a.alias);
    }
    let body = json!({"Container": a.container, "EndpointConfig": ep});
    c.request(
        Method::POST,
        &format!("/networks/{}/connect", enc(&a.network)),
        crate::client::json_body(&body),
        Some("application/json"),
    )
    .await?;
    Ok(())
}

#[derive(Args)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short, long)]
    force: bool,
    network: String,
    container: String,
}

async fn disconnect(c: &Client, a: DisconnectArgs) -> Result<()> {
    let body = json!({"Container": a.container, "Force": a.force});
    c.request(
        Method::POST,
        &format!("/networks/{}/disconnect", enc(&a.network)),
        crate::client::json_body(&body),
        Some("application/json"),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- port

#[derive(Args)]
pub struct PortArgs {
    container: String,
    /// PRIVATE_PORT[/PROTO]
    port: Option<String>,
}

/// `host:port` as docker prints it (IPv6 in brackets).
fn host_port(b: &Value) -> String {
    let ip = b["HostIp"].as_str().unwrap_or("");
    let port = b["HostPort"].as_str().unwrap_or("");
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

pub async fn port(c: &Client, a: PortArgs) -> Result<()> {
    let info = c
        .get_value(&format!("/containers/{}/json", enc(&a.container)))
        .await?;
    let ports = info["NetworkSettings"]["Ports"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(p) = &a.port {
        let key = if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        };
        let list: Vec<String> = ports
            .get(&key)
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
            .map(host_port)
            .collect();
        if list.is_empty() {
            bail!("No public port '{key}' published for {}", a.container);
        }
        for l in list {
            println!("{l}");
        }
        return Ok(());
    }
    let mut lines = Vec::new();
    for (k, binds) in &ports {
        for b in binds.as_array().into_iter().flatten() {
            lines.push(format!("{k} -> {}", host_port(b)));
        }
    }
    lines.sort();
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

// ---------------------------------------------------------------- run/create flags

/// One `-p` flag as docker's nat.ParsePortSpec reads it:
/// `[ip:][hostPort[-end]:]containerPort[-end][/proto]`. Returns
/// (`port/proto`, host IP, host port) triples.
pub fn parse_publish(spec: &str) -> Result<Vec<(String, String, String)>> {
    let bad = || {
        anyhow::anyhow!(
            "invalid argument \"{spec}\" for \"-p, --publish\" flag: invalid port format"
        )
    };
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        bail!("invalid proto: {proto}");
    }
    // An IPv6 host address is in brackets.
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, r) = r.split_once("]:").ok_or_else(bad)?;
        (ip.to_string(), r)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), rest),
            3 => (parts[0].to_string(), &rest[parts[0].len() + 1..]),
            _ => return Err(bad()),
        }
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        bail!("invalid IP address: {ip}");
    }
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let range = |s: &str| -> Result<(u16, u16)> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid containerPort: {s}"))?;
        let b: u16 = b
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid containerPort: {s}"))?;
        if a == 0 || b < a {
            bail!("invalid port range: {s}");
        }
        Ok((a, b))
    };
    if container.is_empty() {
        bail!("no port specified: {spec}<empty>");
    }
    let (c0, c1) = range(container)?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(range(host).map_err(|_| anyhow::anyhow!("invalid hostPort: {host}"))?)
    };
    let n = c1 - c0;
    let mut out = Vec::new();
    for i in 0..=n {
        let key = format!("{}/{proto}", c0 + i);
        let hp = match host_range {
            None => String::new(),
            Some((h0, h1)) if h1 - h0 == n => (h0 + i).to_string(),
            Some((h0, h1)) if n == 0 => {
                if h0 == h1 {
                    h0.to_string()
                } else {
                    format!("{h0}-{h1}")
                }
            }
            Some(_) => bail!(
                "invalid ranges specified for container and host Ports: {container} and {host}"
            ),
        };
        out.push((key, ip.clone(), hp));
    }
    Ok(out)
}

/// `--expose 80` / `80-90/udp`: `port/proto` keys.
pub fn parse_expose(spec: &str) -> Result<Vec<String>> {
    let (p, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let (a, b) = p.split_once('-').unwrap_or((p, p));
    let bad = || anyhow::anyhow!("invalid range format for --expose: {spec}");
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

/// `--add-host name:ip` (or `name=ip`; `host-gateway` is not supported).
pub fn check_add_host(v: &str) -> Result<String> {
    let (name, ip) = v
        .split_once('=')
        .or_else(|| v.split_once(':'))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "invalid argument \"{v}\" for \"--add-host\" flag: bad format for add-host: \"{v}\""
            )
        })?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
        bail!(
            "invalid argument \"{v}\" for \"--add-host\" flag: invalid IP address in add-host: \"{ip}\""
        );
    }
    Ok(format!("{name}:{ip}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String, String)> {
        parse_publish(s).unwrap()
    }

    #[test]
    fn publish_specs_as_docker_reads_them() {
        let t = |k: &str, ip: &str, hp: &str| (k.to_string(), ip.to_string(), hp.to_string());
        assert_eq!(p("80"), vec![t("80/tcp", "", "")]);
        assert_eq!(p("8080:80"), vec![t("80/tcp", "", "8080")]);
        assert_eq!(
            p("127.0.0.1:8080:80/udp"),
            vec![t("80/udp", "127.0.0.1", "8080")]
        );
        assert_eq!(p("127.0.0.1::80"), vec![t("80/tcp", "127.0.0.1", "")]);
        assert_eq!(
            p("8000-8001:80-81"),
            vec![t("80/tcp", "", "8000"), t("81/tcp", "", "8001")]
        );
        assert_eq!(p("8000-8010:80"), vec![t("80/tcp", "", "8000-8010")]);
        assert_eq!(p("[::1]:8080:80"), vec![t("80/tcp", "::1", "8080")]);
        assert!(parse_publish("8000-8002:80-81").is_err());
        assert!(parse_publish("abc:80").is_err());
        assert!(parse_publish("80/icmp").is_err());
        assert!(parse_publish("1.2.3.4.5:80:80").is_err());
    }

    #[test]
    fn expose_and_add_host() {
        assert_eq!(parse_expose("80-81/udp").unwrap(), vec!["80/udp", "81/udp"]);
        assert!(parse_expose("x").is_err());
        assert_eq!(check_add_host("db:10.0.0.5").unwrap(), "db:10.0.0.5");
        assert_eq!(check_add_host("db=10.0.0.5").unwrap(), "db:10.0.0.5");
        assert!(check_add_host("db").is_err());
        assert!(check_add_host("db:nope").is_err());
    }

    #[test]
    fn gateways_and_ranges_join_their_subnet() {
        let c = ipam_config(
            &["10.1.0.0/16".into(), "10.2.0.0/16".into()],
            &["10.2.0.254".into()],
            &["10.1.5.0/24".into()],
        )
        .unwrap();
        assert_eq!(
            c[0],
            json!({"Subnet": "10.1.0.0/16", "IPRange": "10.1.5.0/24"})
        );
        assert_eq!(
            c[1],
            json!({"Subnet": "10.2.0.0/16", "Gateway": "10.2.0.254"})
        );
        assert!(ipam_config(&[], &["10.0.0.1".into()], &[]).is_err());
        assert!(ipam_config(&["10.1.0.0/16".into()], &["10.9.0.1".into()], &[]).is_err());
    }
}
