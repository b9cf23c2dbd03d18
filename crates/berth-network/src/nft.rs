//! berth's own nftables table, `inet berth`: masquerade for each network's
//! subnet, DNAT for published ports, isolation between networks. The whole
//! table is rebuilt from the daemon's state in one atomic batch (`add
//! table; flush table; add chain…; add rule…`) through `nft -j -f -`; no
//! other table is ever read, flushed or changed.
//!
//! ```text
//! table inet berth
//!   chain forward      filter/forward   isolation: bridge → other berth bridge: drop;
//!                                       internal networks: nothing in or out
//!   chain prerouting   nat/prerouting   fib daddr type local → jump ports
//!   chain output       nat/output       ip daddr != 127/8, fib daddr type local → jump ports
//!   chain ports        (regular)        iifname != <bridge> [ip daddr H] <proto> dport P → dnat C:p
//!   chain postrouting  nat/postrouting  ip saddr <subnet> oifname != <bridge> → masquerade
//! ```
//!
//! Loopback connections to published ports are served by the userland
//! proxy (as Docker's default), and so are connections from a container to
//! its host's address: the DNAT rules skip packets coming in on the
//! container's own bridge.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use berth_types::{Error, Result};
use ipnet::Ipv4Net;
use serde_json::{Value, json};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "berth";

/// A bridge network as the firewall sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct BridgeNet {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub internal: bool,
    pub masquerade: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn parse(s: &str) -> Result<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "" | "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(Error::invalid(format!("invalid proto: {other}"))),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port: host address and port → container address and port.
#[derive(Clone, Debug, PartialEq)]
pub struct PortMap {
    pub proto: Proto,
    /// `None` is every host address (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    /// The bridge the container's endpoint is on.
    pub bridge: String,
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn chain(name: &str, hook: Option<(&str, &str, i32)>) -> Value {
    let mut c = json!({"family": FAMILY, "table": TABLE, "name": name});
    if let Some((ty, hook, prio)) = hook {
        c["type"] = json!(ty);
        c["hook"] = json!(hook);
        c["prio"] = json!(prio);
        c["policy"] = json!("accept");
    }
    json!({"add": {"chain": c}})
}

fn m(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(proto: &str, field: &str) -> Value {
    json!({"payload": {"protocol": proto, "field": field}})
}

fn prefix(n: &Ipv4Net) -> Value {
    json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})
}

fn fib_local() -> Value {
    m(
        "==",
        json!({"fib": {"result": "type", "flags": ["daddr"]}}),
        json!("local"),
    )
}

/// The whole table for these networks and ports, as one `nft -j` batch.
pub fn ruleset(nets: &[BridgeNet], ports: &[PortMap]) -> Value {
    let mut cmds = vec![
        json!({"add": {"table": {"family": FAMILY, "name": TABLE}}}),
        json!({"flush": {"table": {"family": FAMILY, "name": TABLE}}}),
        chain("forward", Some(("filter", "forward", 0))),
        chain("prerouting", Some(("nat", "prerouting", -100))),
        chain("output", Some(("nat", "output", -100))),
        chain("postrouting", Some(("nat", "postrouting", 100))),
        chain("ports", None),
    ];
    cmds.extend(rules(nets, ports));
    json!({"nftables": cmds})
}

/// The rules alone (their count tells whether the table is intact).
fn rules(nets: &[BridgeNet], ports: &[PortMap]) -> Vec<Value> {
    let mut out = vec![
        rule(
            "prerouting",
            vec![fib_local(), json!({"jump": {"target": "ports"}})],
        ),
        rule(
            "output",
            vec![
                m(
                    "!=",
                    payload("ip", "daddr"),
                    prefix(&"127.0.0.0/8".parse().expect("valid")),
                ),
                fib_local(),
                json!({"jump": {"target": "ports"}}),
            ],
        ),
    ];
    let bridges: Vec<&str> = nets.iter().map(|n| n.bridge.as_str()).collect();
    for n in nets {
        let b = json!(n.bridge);
        if n.internal {
            out.push(rule(
                "forward",
                vec![
                    m("==", meta("iifname"), b.clone()),
                    m("!=", meta("oifname"), b.clone()),
                    json!({"drop": null}),
                ],
            ));
            out.push(rule(
                "forward",
                vec![
                    m("==", meta("oifname"), b.clone()),
                    m("!=", meta("iifname"), b.clone()),
                    json!({"drop": null}),
                ],
            ));
            continue;
        }
        let others: Vec<&str> = bridges.iter().copied().filter(|o| *o != n.bridge).collect();
        if !others.is_empty() {
            out.push(rule(
                "forward",
                vec![
                    m("==", meta("iifname"), b.clone()),
                    m("==", meta("oifname"), json!({"set": others})),
                    json!({"drop": null}),
                ],
            ));
        }
        if n.masquerade {
            out.push(rule(
                "postrouting",
                vec![
                    m("==", payload("ip", "saddr"), prefix(&n.subnet)),
                    m("!=", meta("oifname"), b.clone()),
                    json!({"masquerade": null}),
                ],
            ));
        }
    }
    for p in ports {
        let mut e = vec![m("!=", meta("iifname"), json!(p.bridge))];
        if let Some(ip) = p.host_ip {
            e.push(m("==", payload("ip", "daddr"), json!(ip.to_string())));
        }
        e.push(m(
            "==",
            payload(p.proto.as_str(), "dport"),
            json!(p.host_port),
        ));
        e.push(json!({"dnat": {"family": "ip", "addr": p.container_ip.to_string(), "port": p.container_port}}));
        out.push(rule("ports", e));
    }
    out
}

/// How many rules `ruleset` puts in the table.
pub fn rule_count(nets: &[BridgeNet], ports: &[PortMap]) -> usize {
    rules(nets, ports).len()
}

fn nft(args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    let mut child = crate::fwwatch::spawn_own(
        Command::new("nft")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| Error::internal(format!("cannot run nft (install nftables): {e}")))?;
    let pid = child.id();
    let written = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut w)) => w.write_all(input),
        _ => Ok(()),
    };
    let out = child.wait_with_output();
    crate::fwwatch::reaped(pid);
    written.map_err(|e| Error::internal(format!("write to nft: {e}")))?;
    let out = out.map_err(|e| Error::internal(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replace berth's table with `ruleset` in one transaction.
pub fn apply(ruleset: &Value) -> Result<()> {
    let text = serde_json::to_vec(ruleset).expect("json");
    nft(&["-j", "-f", "-"], Some(&text)).map(|_| ())
}

/// Remove berth's table (nothing if it is not there).
pub fn delete_table() -> Result<()> {
    let batch = json!({"nftables": [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
    ]});
    apply(&batch)
}

/// How many rules berth's table holds now; `None` when the table is gone.
/// Only berth's table is listed, and only objects' kinds are looked at, so
/// expressions this code does not know cannot break it.
pub fn live_rule_count() -> Option<usize> {
    let text = nft(&["-j", "list", "table", FAMILY, TABLE], None).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some(
        v["nftables"]
            .as_array()?
            .iter()
            .filter(|o| o.get("rule").is_some())
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_masquerades_isolates_and_publishes() {
        let nets = vec![
            BridgeNet {
                bridge: "berth0".into(),
                subnet: "172.17.0.0/16".parse().unwrap(),
                internal: false,
                masquerade: true,
            },
            BridgeNet {
                bridge: "br-1".into(),
                subnet: "10.5.0.0/24".parse().unwrap(),
                internal: true,
                masquerade: true,
            },
        ];
        let ports = vec![PortMap {
            proto: Proto::Tcp,
            host_ip: Some(Ipv4Addr::new(127, 0, 0, 1)),
            host_port: 8080,
            container_ip: Ipv4Addr::new(172, 17, 0, 2),
            container_port: 80,
            bridge: "berth0".into(),
        }];
        let rs = ruleset(&nets, &ports);
        let cmds = rs["nftables"].as_array().unwrap();
        assert_eq!(cmds[1]["flush"]["table"]["name"], "berth");
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        assert_eq!(rules.len(), rule_count(&nets, &ports));
        let text = serde_json::to_string(&rs).unwrap();
        assert!(text.contains(r#"{"masquerade":null}"#));
        assert!(text.contains(r#""right":{"set":["br-1"]}"#));
        assert!(text.contains(r#"{"dnat":{"family":"ip","addr":"172.17.0.2","port":80}}"#));
        // The internal network is neither masqueraded nor reachable.
        assert!(!text.contains(r#""addr":"10.5.0.0""#));
        assert_eq!(
            rules
                .iter()
                .filter(|r| r["chain"] == "forward" && r["expr"][0]["match"]["right"] == "br-1")
                .count(),
            2
        );
    }
}
