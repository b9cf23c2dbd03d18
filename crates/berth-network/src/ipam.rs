//! Address management: which subnet a new network gets, which address a
//! new endpoint gets, the MAC that goes with it. Pure functions; the leases
//! themselves are rows in the metadata store (`leases`).

use std::net::Ipv4Addr;

use berth_types::{Error, Result};
use ipnet::Ipv4Net;

/// A pool subnets are carved from: `size`-bit subnets of `base`
/// (daemon.json `default-address-pools`).
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub base: Ipv4Net,
    pub size: u8,
}

/// Docker's default pools: 172.17.0.0/16 … 172.31.0.0/16, then /20s of
/// 192.168.0.0/16.
pub fn default_pools() -> Vec<Pool> {
    let mut v: Vec<Pool> = (17..=31)
        .map(|b| Pool {
            base: Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid"),
            size: 16,
        })
        .collect();
    v.push(Pool {
        base: "192.168.0.0/16".parse().expect("valid"),
        size: 20,
    });
    v
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first subnet of the pools that overlaps none of `used` (other
/// networks' subnets and the host's routes).
pub fn pick_subnet(pools: &[Pool], used: &[Ipv4Net]) -> Result<Ipv4Net> {
    for p in pools {
        let Ok(subnets) = p.base.subnets(p.size.max(p.base.prefix_len())) else {
            continue;
        };
        for s in subnets {
            if !used.iter().any(|u| overlaps(u, &s)) {
                return Ok(s);
            }
        }
    }
    Err(Error::invalid(
        "all predefined address pools have been fully subnetted",
    ))
}

/// The host's IPv4 routes (`/proc/net/route` of the caller's network
/// namespace), default routes left out: subnets a new network must avoid.
pub fn host_routes() -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    parse_routes(&text)
}

fn parse_routes(text: &str) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dst), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
        else {
            continue;
        };
        // The file holds addresses in host byte order of a little-endian
        // dump: bytes as in memory, i.e. network order read as LE.
        let dst = Ipv4Addr::from(dst.to_le_bytes());
        let mask = Ipv4Addr::from(mask.to_le_bytes());
        let len = u32::from(mask).leading_ones() as u8;
        if len == 0 {
            continue;
        }
        if let Ok(n) = Ipv4Net::new(dst, len) {
            out.push(n.trunc());
        }
    }
    out
}

/// The gateway of a subnet when none is given: its first host address.
pub fn default_gateway(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The next free address in `range` (within `subnet`), skipping the
/// network and broadcast addresses, the gateway and `used`.
pub fn next_free(
    subnet: &Ipv4Net,
    range: Option<&Ipv4Net>,
    gateway: Ipv4Addr,
    used: &std::collections::HashSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let r = range.unwrap_or(subnet);
    let (lo, hi) = (u32::from(r.network()), u32::from(r.broadcast()));
    let (net, bcast) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
    (lo..=hi)
        .filter(|a| *a != net && *a != bcast)
        .map(Ipv4Addr::from)
        .find(|a| *a != gateway && !used.contains(a))
}

/// Whether `ip` may be given to an endpoint of `subnet` (with `range`).
pub fn check_static(subnet: &Ipv4Net, range: Option<&Ipv4Net>, ip: Ipv4Addr) -> Result<()> {
    if !subnet.contains(&ip) || range.is_some_and(|r| !r.contains(&ip)) {
        return Err(Error::invalid(format!(
            "invalid endpoint settings:\nno configured subnet or ip-range contain the IP address {ip}"
        )));
    }
    if ip == subnet.network() || ip == subnet.broadcast() {
        return Err(Error::invalid(format!(
            "invalid endpoint settings:\nIP address {ip} is the network or broadcast address of {subnet}"
        )));
    }
    Ok(())
}

/// Docker's MAC for an address: 02:42 then the four bytes of the IP.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || Error::invalid(format!("invalid MAC address: {s}"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        out[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_first_pool_that_overlaps_nothing_wins() {
        let pools = default_pools();
        assert_eq!(
            pick_subnet(&pools, &[]).unwrap().to_string(),
            "172.17.0.0/16"
        );
        let used = vec![
            "172.17.0.0/16".parse().unwrap(),
            "172.18.5.0/24".parse().unwrap(),
        ];
        assert_eq!(
            pick_subnet(&pools, &used).unwrap().to_string(),
            "172.19.0.0/16"
        );
        let all: Vec<Ipv4Net> = vec!["172.16.0.0/12".parse().unwrap()];
        assert_eq!(
            pick_subnet(&pools, &all).unwrap().to_string(),
            "192.168.0.0/20"
        );
        let none: Vec<Ipv4Net> = vec![
            "172.16.0.0/12".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        ];
        assert!(pick_subnet(&pools, &none).is_err());
    }

    #[test]
    fn routes_parse_from_proc() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(
            parse_routes(text),
            vec!["172.17.0.0/16".parse::<Ipv4Net>().unwrap()]
        );
    }

    #[test]
    fn addresses_skip_gateway_used_and_edges() {
        let s: Ipv4Net = "10.1.0.0/30".parse().unwrap();
        let gw = default_gateway(&s);
        assert_eq!(gw, Ipv4Addr::new(10, 1, 0, 1));
        let mut used = HashSet::new();
        assert_eq!(
            next_free(&s, None, gw, &used),
            Some(Ipv4Addr::new(10, 1, 0, 2))
        );
        used.insert(Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(next_free(&s, None, gw, &used), None);
        let big: Ipv4Net = "10.2.0.0/16".parse().unwrap();
        let range: Ipv4Net = "10.2.5.0/24".parse().unwrap();
        assert_eq!(
            next_free(&big, Some(&range), default_gateway(&big), &HashSet::new()),
            Some(Ipv4Addr::new(10, 2, 5, 0))
        );
        assert!(check_static(&big, Some(&range), Ipv4Addr::new(10, 2, 6, 1)).is_err());
        assert!(check_static(&big, None, Ipv4Addr::new(10, 3, 0, 1)).is_err());
        assert!(check_static(&big, None, Ipv4Addr::new(10, 2, 255, 255)).is_err());
        check_static(&big, None, Ipv4Addr::new(10, 2, 6, 1)).unwrap();
    }

    #[test]
    fn mac_from_ip_as_docker() {
        let m = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(mac_text(&m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02").unwrap(), m);
        assert!(parse_mac("02:42:ac:11:00").is_err());
    }
}
