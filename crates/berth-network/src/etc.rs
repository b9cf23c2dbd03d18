//! The `/etc/hosts` and `/etc/resolv.conf` a container gets, as Docker
//! writes them. Pure functions of the host's files and the container's
//! settings.

use std::net::Ipv4Addr;

/// The embedded resolver's address inside containers on user networks.
pub const INTERNAL_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// Nameservers Docker falls back to when the host has none a container
/// can reach. They are only written into the file.
const FALLBACK_DNS: &[&str] = &["8.8.8.8", "8.8.4.4"];

const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// `--add-host name:ip` entries (`name=ip` is accepted too, as docker does),
/// as hosts-file lines.
pub fn extra_hosts(extra: &[String]) -> String {
    let mut out = String::new();
    for e in extra {
        let (name, ip) = e
            .split_once('=')
            .or_else(|| e.split_once(':'))
            .unwrap_or((e.as_str(), ""));
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    out
}

/// A container's hosts file: the defaults, `--add-host` entries, then its
/// own address and name (none for `--network none`).
pub fn hosts(own: Option<(Ipv4Addr, &str, &str)>, extra: &[String]) -> String {
    let mut out = DEFAULT_HOSTS.to_string();
    out.push_str(&extra_hosts(extra));
    if let Some((ip, hostname, domain)) = own {
        if domain.is_empty() {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname}.{domain} {hostname}\n"));
        }
    }
    out
}

/// What the request says about DNS (`--dns`, `--dns-search`, `--dns-option`).
#[derive(Default, Debug)]
pub struct DnsOverrides {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

fn is_loopback(ns: &str) -> bool {
    ns.starts_with("127.") || ns == "::1"
}

/// The host's resolv.conf, split into nameservers, search domains and options.
pub fn parse_resolv(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut ns, mut search, mut opts) = (vec![], vec![], vec![]);
    for l in text.lines() {
        let mut f = l.split_whitespace();
        match f.next() {
            Some("nameserver") => ns.extend(f.next().map(String::from)),
            Some("search") | Some("domain") => {
                search = f.map(String::from).collect();
            }
            Some("options") => opts.extend(f.map(String::from)),
            _ => {}
        }
    }
    (ns, search, opts)
}

/// A container's resolv.conf. `internal` means it uses the embedded
/// resolver (user-defined networks); otherwise it gets the host's
/// resolvers minus loopback ones, which it could not reach.
pub fn resolv_conf(host: &str, internal: bool, o: &DnsOverrides) -> String {
    let (host_ns, host_search, host_opts) = parse_resolv(host);
    let search = if o.search.is_empty() {
        host_search
    } else {
        o.search.iter().filter(|s| *s != ".").cloned().collect()
    };
    let mut options = if o.options.is_empty() {
        host_opts
    } else {
        o.options.clone()
    };
    let servers: Vec<String> = if internal {
        if !options.iter().any(|x| x.starts_with("ndots:")) {
            options.push("ndots:0".into());
        }
        vec![INTERNAL_DNS.to_string()]
    } else if !o.servers.is_empty() {
        o.servers.clone()
    } else {
        let kept: Vec<String> = host_ns.into_iter().filter(|n| !is_loopback(n)).collect();
        if kept.is_empty() {
            FALLBACK_DNS.iter().map(|s| s.to_string()).collect()
        } else {
            kept
        }
    };
    let mut out = String::new();
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The resolvers the embedded DNS server forwards to: `--dns` if given,
/// else the host's own (loopback ones included: the forwarder runs in the
/// host's network namespace, so 127.0.0.53 works).
pub fn upstreams(host: &str, o: &DnsOverrides) -> Vec<String> {
    if !o.servers.is_empty() {
        return o.servers.clone();
    }
    parse_resolv(host).0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "# comment\nnameserver 127.0.0.53\nnameserver 10.9.9.9\nsearch corp.example\noptions edns0\n";

    #[test]
    fn bridge_containers_get_the_hosts_reachable_resolvers() {
        assert_eq!(
            resolv_conf(HOST, false, &DnsOverrides::default()),
            "nameserver 10.9.9.9\nsearch corp.example\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\n", false, &DnsOverrides::default()),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let o = DnsOverrides {
            servers: vec!["10.0.0.53".into()],
            search: vec!["a.test".into()],
            options: vec!["ndots:2".into()],
        };
        assert_eq!(
            resolv_conf(HOST, false, &o),
            "nameserver 10.0.0.53\nsearch a.test\noptions ndots:2\n"
        );
    }

    #[test]
    fn user_network_containers_use_the_embedded_resolver() {
        assert_eq!(
            resolv_conf(HOST, true, &DnsOverrides::default()),
            "nameserver 127.0.0.11\nsearch corp.example\noptions edns0 ndots:0\n"
        );
        assert_eq!(
            upstreams(HOST, &DnsOverrides::default()),
            vec!["127.0.0.53", "10.9.9.9"]
        );
    }

    #[test]
    fn hosts_lists_extra_hosts_then_the_container() {
        let h = hosts(
            Some((Ipv4Addr::new(172, 17, 0, 2), "web", "")),
            &["db:10.0.0.5".into(), "cache=10.0.0.6".into()],
        );
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(
            h.ends_with("10.0.0.5\tdb\n10.0.0.6\tcache\n172.17.0.2\tweb\n"),
            "{h}"
        );
        assert!(!hosts(None, &[]).contains("172."));
    }
}
