//! Networking through the real docker CLI against berthd: the default
//! bridge with outbound NAT, published ports, user-defined networks with
//! DNS and isolation, the host/none/container modes, and teardown.
//!
//! berthd runs in a network namespace of its own (the harness makes one
//! per daemon): that namespace is "the host". Where a test needs "the
//! outside world", it makes another namespace joined to the daemon's by a
//! veth pair (10.99.0.1 on the daemon's side, 10.99.0.2 outside) and runs
//! its server there. No traffic leaves those namespaces.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use berth_e2e::{Daemon, Forks, Netns, require_root};
use serde_json::Value;

fn daemon() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

/// An "outside world" namespace joined to the daemon's: the daemon's side
/// is 10.99.0.1/24, the outside is 10.99.0.2/24.
fn outside(d: &Daemon) -> Netns {
    let out = Netns::new("berth-out");
    d.netns
        .link_to(&out, "bout0", "10.99.0.1/24", "bin0", "10.99.0.2/24");
    out
}

#[track_caller]
fn inspect(d: &Daemon, name: &str) -> Value {
    let out = d.docker(["inspect", name]);
    let v: Value = serde_json::from_str(out.ok()).expect("inspect JSON");
    v[0].clone()
}

/// An HTTP GET over a plain TCP connection; the body.
fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// A busybox httpd serving `text` as /index.html on port 80.
fn web_cmd(text: &str) -> String {
    format!("mkdir -p /w && echo {text} > /w/index.html && exec httpd -f -p 80 -h /w")
}

#[track_caller]
fn wait_http(ns: &Netns, addr: &'static str) -> String {
    for _ in 0..100 {
        if let Ok(body) = ns.run(move || http_get(addr))
            && !body.is_empty()
        {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing answered on {addr}");
}

#[test]
fn the_default_bridge_gives_an_address_and_outbound_nat() {
    require_root!();
    let d = daemon();
    let out = outside(&d);
    // The daemon's namespace routes the container's traffic out through
    // bout0; the outside namespace knows no route back to the bridge, so
    // only a masqueraded reply can arrive.
    let listener = out.run(|| TcpListener::bind("10.99.0.2:9000").expect("bind"));
    let server = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().expect("accept");
        c.write_all(format!("{}\n", peer.ip()).as_bytes()).unwrap();
    });
    let run = d.docker(["run", "--rm", "busybox", "nc", "10.99.0.2", "9000"]);
    assert_eq!(run.ok(), "10.99.0.1\n", "source address not masqueraded");
    server.join().unwrap();

    d.docker([
        "run",
        "-d",
        "--name",
        "c1",
        "--hostname",
        "boxy",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    let c = inspect(&d, "c1");
    let ns = &c["NetworkSettings"];
    assert_eq!(c["HostConfig"]["NetworkMode"], "bridge");
    assert_eq!(ns["IPAddress"], "172.17.0.2", "{ns}");
    assert_eq!(ns["IPPrefixLen"], 16);
    assert_eq!(ns["Gateway"], "172.17.0.1");
    assert_eq!(ns["MacAddress"], "02:42:ac:11:00:02");
    let b = &ns["Networks"]["bridge"];
    assert_eq!(b["IPAddress"], "172.17.0.2");
    assert_eq!(b["EndpointID"], ns["EndpointID"]);
    assert_eq!(b["NetworkID"].as_str().unwrap().len(), 64);
    let bridge = inspect(&d, "bridge");
    assert_eq!(b["NetworkID"], bridge["Id"]);
    assert_eq!(bridge["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert!(
        bridge["Containers"][c["Id"].as_str().unwrap()]["IPv4Address"] == "172.17.0.2/16",
        "{bridge}"
    );
    let key = ns["SandboxKey"].as_str().unwrap();
    assert!(std::path::Path::new(key).exists(), "{key}");

    let inside = d.docker([
        "exec",
        "c1",
        "sh",
        "-c",
        "ip -o -4 addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf",
    ]);
    let text = inside.ok();
    assert!(text.contains("inet 172.17.0.2/16"), "{text}");
    assert!(text.contains("default via 172.17.0.1 dev eth0"), "{text}");
    assert!(text.contains("172.17.0.2\tboxy\n"), "{text}");
    assert!(text.contains("127.0.0.1\tlocalhost\n"), "{text}");
    assert!(!text.contains("nameserver 127."), "{text}");

    // Stopped: the address goes back to the pool and inspect shows none.
    d.docker(["stop", "-t", "0", "c1"]).ok();
    let c = inspect(&d, "c1");
    assert_eq!(c["NetworkSettings"]["IPAddress"], "");
    assert_eq!(c["NetworkSettings"]["Networks"]["bridge"]["IPAddress"], "");
    assert!(!std::path::Path::new(key).exists());
    d.docker(["run", "-d", "--name", "c2", "busybox", "sleep", "300"])
        .ok();
    assert_eq!(
        inspect(&d, "c2")["NetworkSettings"]["IPAddress"],
        "172.17.0.2"
    );
}

#[test]
fn none_host_and_container_modes() {
    require_root!();
    let d = daemon();
    let none = d.docker([
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    let links: Vec<&str> = none.ok().lines().collect();
    assert_eq!(links.len(), 1, "{none}");
    assert!(links[0].contains(": lo:"), "{none}");
    // The daemon's namespace is the host here: it has berth0.
    let host = d.docker([
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert!(host.ok().contains(": berth0:"), "{host}");
    assert!(
        inspect(&d, "bridge")["Containers"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    d.docker(["run", "-d", "--name", "first", "busybox", "sleep", "300"])
        .ok();
    let shared = d.docker([
        "run",
        "--rm",
        "--network",
        "container:first",
        "busybox",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(shared.ok().contains("inet 172.17.0.2/16"), "{shared}");
    let bad = d.docker([
        "run",
        "--rm",
        "--network",
        "container:first",
        "-p",
        "80:80",
        "busybox",
        "true",
    ]);
    assert_eq!(bad.code(), 125, "{bad}");
    assert!(bad.stderr.contains("conflicting options"), "{bad}");
    let missing = d.docker(["run", "--rm", "--network", "nosuchnet", "busybox", "true"]);
    assert_ne!(missing.code(), 0);
    assert!(
        missing.stderr.contains("network nosuchnet not found"),
        "{missing}"
    );
}

#[test]
fn published_ports_serve_the_host_and_the_outside() {
    require_root!();
    let d = daemon();
    let out = outside(&d);
    d.docker([
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1:8080:80",
        "-p",
        "8081:80",
        "busybox",
        "sh",
        "-c",
        &web_cmd("hello-web"),
    ])
    .ok();
    // Loopback (the userland proxy), the host's own address (DNAT in
    // output), and another machine (DNAT in prerouting).
    assert_eq!(wait_http(&d.netns, "127.0.0.1:8080"), "hello-web\n");
    assert_eq!(wait_http(&d.netns, "10.99.0.1:8081"), "hello-web\n");
    assert_eq!(wait_http(&out, "10.99.0.1:8081"), "hello-web\n");
    // 127.0.0.1:8080 is only on loopback.
    assert!(out.run(|| http_get("10.99.0.1:8080")).is_err());
    // Other containers reach it on the host's address (through the proxy).
    let hairpin = d.docker([
        "run",
        "--rm",
        "busybox",
        "wget",
        "-qO-",
        "http://10.99.0.1:8081/index.html",
    ]);
    assert_eq!(hairpin.ok(), "hello-web\n");
    let port = d.docker(["port", "web"]);
    assert_eq!(
        port.ok(),
        "80/tcp -> 0.0.0.0:8081\n80/tcp -> 127.0.0.1:8080\n"
    );
    let ps = d.docker(["ps", "--format", "{{.Ports}}"]);
    assert_eq!(ps.ok(), "0.0.0.0:8081->80/tcp, 127.0.0.1:8080->80/tcp\n");
    let c = inspect(&d, "web");
    assert_eq!(
        c["NetworkSettings"]["Ports"]["80/tcp"],
        serde_json::json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}, {"HostIp": "0.0.0.0", "HostPort": "8081"}])
    );

    // The port is taken: by another container, then by another process.
    let dup = d.docker(["run", "--rm", "-p", "8081:80", "busybox", "true"]);
    assert_eq!(dup.code(), 125, "{dup}");
    assert!(
        dup.stderr
            .contains("Bind for 0.0.0.0:8081 failed: port is already allocated"),
        "{dup}"
    );
    let held = d
        .netns
        .run(|| TcpListener::bind("0.0.0.0:8090").expect("bind 8090"));
    let busy = d.docker(["run", "--rm", "-p", "8090:80", "busybox", "true"]);
    assert_eq!(busy.code(), 125, "{busy}");
    assert!(busy.stderr.contains("address already in use"), "{busy}");
    drop(held);
    // Failed starts of --rm containers leave nothing behind.
    assert_eq!(d.docker(["ps", "-aq"]).ok().lines().count(), 1);

    // -P: the exposed port on a random host port.
    d.docker([
        "run",
        "-d",
        "--name",
        "rnd",
        "--expose",
        "80",
        "-P",
        "busybox",
        "sh",
        "-c",
        &web_cmd("hello-rnd"),
    ])
    .ok();
    let p = d.docker(["port", "rnd", "80"]);
    let line = p.ok().trim().to_string();
    let hp: u16 = line.rsplit(':').next().unwrap().parse().expect("port");
    assert!(hp >= 1024, "{line}");
    let addr: &'static str = Box::leak(format!("127.0.0.1:{hp}").into_boxed_str());
    assert_eq!(wait_http(&d.netns, addr), "hello-rnd\n");

    // Stopping the container takes the DNAT rule and the proxy away.
    d.docker(["rm", "-f", "web"]).ok();
    assert!(d.netns.run(|| http_get("127.0.0.1:8080")).is_err());
    let rules = d
        .netns
        .command("nft")
        .args(["list", "chain", "inet", "berth", "ports"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("8081"), "{rules}");
    assert!(rules.contains(&format!("dport {hp}")), "{rules}");
}

/// A DNS server that answers every A question with 10.1.2.3 (and others
/// with no records), standing for the host's resolver.
fn fake_resolver(sock: UdpSocket) {
    let mut buf = [0u8; 512];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        let q = &buf[..n];
        let mut i = 12;
        while i < n && q[i] != 0 {
            i += q[i] as usize + 1;
        }
        let end = i + 5;
        if end > n {
            continue;
        }
        let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
        let mut r = q[..end].to_vec();
        r[2] |= 0x80;
        r[3] = 0x80;
        r[6..12].copy_from_slice(&[0, (qtype == 1) as u8, 0, 0, 0, 0]);
        if qtype == 1 {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
        }
        let _ = sock.send_to(&r, from);
    }
}

#[test]
fn user_networks_resolve_names_and_are_isolated() {
    require_root!();
    let d = daemon();
    let out = outside(&d);
    d.docker(["network", "create", "front"]).ok();
    d.docker(["network", "create", "back"]).ok();
    d.docker([
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--network-alias",
        "www",
        "busybox",
        "sh",
        "-c",
        &web_cmd("hello-front"),
    ])
    .ok();
    let web = inspect(&d, "web");
    let ip = web["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("172.18."), "{ip}");
    assert_eq!(
        web["NetworkSettings"]["IPAddress"], "",
        "top-level fields are the default bridge's"
    );
    assert_eq!(
        web["NetworkSettings"]["Networks"]["front"]["DNSNames"],
        serde_json::json!(["web", "www", &web["Id"].as_str().unwrap()[..12]])
    );
    let client = d.docker([
        "run",
        "--rm",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        "cat /etc/resolv.conf; nslookup web; nslookup www.front; \
         printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc www 80",
    ]);
    let text = client.ok();
    assert!(text.contains("nameserver 127.0.0.11\n"), "{text}");
    assert!(
        text.matches(&format!("Address: {ip}")).count() >= 2,
        "{text}"
    );
    assert!(text.ends_with("hello-front\n"), "{text}");

    // Another network, and the default bridge, cannot reach it.
    let other = d.docker([
        "run",
        "--rm",
        "--network",
        "back",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        &ip,
    ]);
    assert_ne!(other.code(), 0, "{other}");
    let legacy = d.docker(["run", "--rm", "busybox", "ping", "-c", "1", "-W", "1", &ip]);
    assert_ne!(legacy.code(), 0, "{legacy}");
    let noname = d.docker(["run", "--rm", "busybox", "nslookup", "web"]);
    assert_ne!(
        noname.code(),
        0,
        "the default bridge has no name resolution: {noname}"
    );

    // Other names are forwarded, from the daemon's namespace, to the
    // resolvers the container was given.
    let dns = out.run(|| UdpSocket::bind("10.99.0.2:53").expect("bind 53"));
    std::thread::spawn(move || fake_resolver(dns));
    let fwd = d.docker([
        "run",
        "--rm",
        "--network",
        "front",
        "--dns",
        "10.99.0.2",
        "busybox",
        "nslookup",
        "example.test",
    ]);
    assert!(fwd.ok().contains("Address: 10.1.2.3"), "{fwd}");

    // An internal network has no way out.
    d.docker(["network", "create", "--internal", "priv"]).ok();
    let listener = out.run(|| TcpListener::bind("10.99.0.2:9002").expect("bind"));
    std::thread::spawn(move || {
        while let Ok((mut c, _)) = listener.accept() {
            let _ = c.write_all(b"reached\n");
        }
    });
    let open = d.docker([
        "run",
        "--rm",
        "--network",
        "back",
        "busybox",
        "nc",
        "-w",
        "2",
        "10.99.0.2",
        "9002",
    ]);
    assert_eq!(open.ok(), "reached\n");
    let shut = d.docker([
        "run",
        "--rm",
        "--network",
        "priv",
        "busybox",
        "sh",
        "-c",
        "ip route; nc -w 2 10.99.0.2 9002",
    ]);
    assert!(!shut.stdout.contains("default"), "{shut}");
    assert!(!shut.stdout.contains("reached"), "{shut}");

    // connect/disconnect a running container.
    d.docker([
        "run",
        "-d",
        "--name",
        "side",
        "--network",
        "back",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    d.docker(["network", "connect", "--alias", "sidekick", "front", "side"])
        .ok();
    let side = inspect(&d, "side");
    let side_ip = side["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(side_ip.starts_with("172.18."), "{side}");
    let seen = d.docker(["exec", "web", "nslookup", "sidekick"]);
    assert!(seen.ok().contains(&format!("Address: {side_ip}")), "{seen}");
    let reach = d.docker(["exec", "side", "ping", "-c", "1", "-W", "2", &ip]);
    reach.ok();
    d.docker(["network", "disconnect", "front", "side"]).ok();
    let gone = d.docker(["exec", "side", "ping", "-c", "1", "-W", "1", &ip]);
    assert_ne!(gone.code(), 0, "{gone}");
    assert!(
        inspect(&d, "side")["NetworkSettings"]["Networks"]
            .get("front")
            .is_none()
    );
}

#[test]
fn network_commands_and_bad_input() {
    require_root!();
    let d = daemon();
    let since = berth_e2e::unix_now().to_string();
    let id = d
        .docker([
            "network",
            "create",
            "--subnet",
            "10.50.0.0/24",
            "--gateway",
            "10.50.0.254",
            "--ip-range",
            "10.50.0.128/25",
            "--label",
            "team=a",
            "-o",
            "com.docker.network.bridge.name=brtest",
            "net1",
        ])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let ls = d.docker([
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ]);
    assert_eq!(
        ls.ok(),
        "bridge bridge local\nhost host local\nnet1 bridge local\nnone null local\n"
    );
    let n = inspect(&d, "net1");
    assert_eq!(n["Id"], id.as_str());
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.50.0.0/24");
    assert_eq!(n["IPAM"]["Config"][0]["Gateway"], "10.50.0.254");
    assert_eq!(n["IPAM"]["Config"][0]["IPRange"], "10.50.0.128/25");
    assert_eq!(n["Labels"]["team"], "a");
    assert!(d.netns.links().contains(&"brtest".to_string()));
    let f = d.docker(["network", "ls", "-q", "--filter", "label=team=a"]);
    assert_eq!(f.ok().trim(), &id[..12]);

    let dup = d.docker(["network", "create", "net1"]);
    assert_eq!(dup.code(), 1);
    assert!(
        dup.stderr.contains("network with name net1 already exists"),
        "{dup}"
    );
    let overlap = d.docker(["network", "create", "--subnet", "10.50.0.0/16", "net2"]);
    assert!(
        overlap
            .stderr
            .contains("Pool overlaps with other one on this address space"),
        "{overlap}"
    );
    let gw = d.docker([
        "network",
        "create",
        "--subnet",
        "10.60.0.0/24",
        "--gateway",
        "10.61.0.1",
        "net3",
    ]);
    assert!(
        gw.stderr
            .contains("no matching subnet for gateway 10.61.0.1"),
        "{gw}"
    );
    let pre = d.docker(["network", "rm", "bridge"]);
    assert!(
        pre.stderr
            .contains("bridge is a pre-defined network and cannot be removed"),
        "{pre}"
    );

    d.docker([
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "net1",
        "--ip",
        "10.50.0.200",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    let f = inspect(&d, "fixed");
    assert_eq!(
        f["NetworkSettings"]["Networks"]["net1"]["IPAddress"],
        "10.50.0.200"
    );
    assert_eq!(
        f["NetworkSettings"]["Networks"]["net1"]["IPAMConfig"]["IPv4Address"],
        "10.50.0.200"
    );
    let auto = d.docker([
        "run",
        "-d",
        "--name",
        "auto",
        "--network",
        "net1",
        "busybox",
        "sleep",
        "300",
    ]);
    auto.ok();
    assert_eq!(
        inspect(&d, "auto")["NetworkSettings"]["Networks"]["net1"]["IPAddress"],
        "10.50.0.128"
    );
    let outside_ip = d.docker([
        "run",
        "--rm",
        "--network",
        "net1",
        "--ip",
        "10.70.0.5",
        "busybox",
        "true",
    ]);
    assert_ne!(outside_ip.code(), 0);
    assert!(
        outside_ip
            .stderr
            .contains("no configured subnet or ip-range contain the IP address 10.70.0.5"),
        "{outside_ip}"
    );
    let taken = d.docker([
        "run",
        "--rm",
        "--network",
        "net1",
        "--ip",
        "10.50.0.200",
        "busybox",
        "true",
    ]);
    assert_ne!(taken.code(), 0);
    assert!(taken.stderr.contains("Address already in use"), "{taken}");
    let on_default = d.docker(["run", "--rm", "--ip", "172.17.0.50", "busybox", "true"]);
    assert!(
        on_default
            .stderr
            .contains("user specified IP address is supported on user defined networks only"),
        "{on_default}"
    );

    let busy = d.docker(["network", "rm", "net1"]);
    assert_ne!(busy.code(), 0);
    assert!(busy.stderr.contains("has active endpoints"), "{busy}");
    let n = inspect(&d, "net1");
    assert_eq!(n["Containers"].as_object().unwrap().len(), 2, "{n}");

    d.docker(["rm", "-f", "fixed", "auto"]).ok();
    d.docker(["network", "rm", "net1"]).ok();
    assert!(!d.netns.links().contains(&"brtest".to_string()));
    d.docker(["network", "create", "spare"]).ok();
    let pruned = d.docker(["network", "prune", "-f"]);
    assert!(pruned.ok().contains("spare"), "{pruned}");
    assert_eq!(d.docker(["network", "ls", "-q"]).ok().lines().count(), 3);
    let until = (berth_e2e::unix_now() + 1).to_string();
    let ev = d.docker([
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=network",
        "--filter",
        "network=net1",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    let text = ev.ok();
    for want in [
        "create net1",
        "connect net1",
        "disconnect net1",
        "destroy net1",
    ] {
        assert!(text.contains(want), "no {want:?} event in:\n{text}");
    }
}

#[test]
fn nothing_of_berth_is_left_after_teardown() {
    require_root!();
    let mut d = daemon();
    d.docker(["network", "create", "tmpnet"]).ok();
    d.docker([
        "run", "-d", "--name", "a1", "-p", "8085:80", "busybox", "sleep", "300",
    ])
    .ok();
    d.docker([
        "run",
        "-d",
        "--name",
        "a2",
        "--network",
        "tmpnet",
        "busybox",
        "sleep",
        "300",
    ])
    .ok();
    let links = d.netns.links();
    assert!(
        links.iter().filter(|l| l.starts_with("veth")).count() == 2,
        "{links:?}"
    );
    assert!(d.netns.nft_tables().contains("table inet berth"));

    // A daemon killed with -9 comes back with the containers' addresses and
    // ports as they were.
    let before = inspect(&d, "a1")["NetworkSettings"]["IPAddress"].clone();
    let a2 = inspect(&d, "a2");
    let a2_pid = a2["State"]["Pid"].as_i64().unwrap() as i32;
    let a2_ns = a2["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    d.kill9();
    // a2 dies while the daemon is down: its endpoint is stale.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(a2_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    d.start_again();
    assert_eq!(inspect(&d, "a1")["NetworkSettings"]["IPAddress"], before);
    let a2 = inspect(&d, "a2");
    assert_eq!(a2["State"]["Running"], false);
    assert_eq!(a2["NetworkSettings"]["Networks"]["tmpnet"]["IPAddress"], "");
    assert!(
        !std::path::Path::new(&a2_ns).exists(),
        "stale namespace {a2_ns} left"
    );
    let tmpnet = inspect(&d, "tmpnet");
    assert!(
        tmpnet["Containers"].as_object().unwrap().is_empty(),
        "{tmpnet}"
    );
    let rules = d
        .netns
        .command("nft")
        .args(["list", "chain", "inet", "berth", "ports"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&rules.stdout).contains("dport 8085"));
    // Someone flushes berth's table: it comes back.
    let flush = d
        .netns
        .command("nft")
        .args(["flush", "table", "inet", "berth"])
        .status()
        .unwrap();
    assert!(flush.success());
    let back = berth_e2e::wait_for(Duration::from_secs(10), || {
        let r = d
            .netns
            .command("nft")
            .args(["list", "chain", "inet", "berth", "ports"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&r.stdout)
            .contains("dport 8085")
            .then_some(())
    });
    assert!(back.is_some(), "berth's table was not restored");

    d.docker(["rm", "-f", "a1", "a2"]).ok();
    d.docker(["network", "rm", "tmpnet"]).ok();
    let netns_dir = d.root.with_file_name("run").join("netns");
    assert_eq!(std::fs::read_dir(&netns_dir).unwrap().count(), 0);
    d.stop();
    // Veths go with their namespaces, which the kernel cleans up in the
    // background.
    let clean = berth_e2e::wait_for(Duration::from_secs(10), || {
        (d.netns.links() == vec!["lo".to_string()]).then_some(())
    });
    assert!(clean.is_some(), "links left: {:?}", d.netns.links());
    assert!(
        !d.netns.nft_tables().contains("berth"),
        "{}",
        d.netns.nft_tables()
    );
}

/// `iptables -S FORWARD` in the daemon's namespace.
fn forward_chain(d: &Daemon) -> String {
    let out = d
        .netns
        .command("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn outbound_access_survives_a_forward_policy_of_drop() {
    require_root!();
    let mut d = daemon();
    let out = outside(&d);
    // What dockerd does to the FORWARD chain when it starts.
    let st = d
        .netns
        .command("iptables")
        .args(["-P", "FORWARD", "DROP"])
        .status()
        .unwrap();
    assert!(st.success());
    let added = berth_e2e::wait_for(Duration::from_secs(10), || {
        forward_chain(&d)
            .contains("-i berth0 -m comment --comment berth -j ACCEPT")
            .then_some(())
    });
    assert!(
        added.is_some(),
        "no accept for berth0: {}",
        forward_chain(&d)
    );
    let listener = out.run(|| TcpListener::bind("10.99.0.2:9001").expect("bind"));
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.write_all(b"through\n").unwrap();
    });
    let run = d.docker([
        "run",
        "--rm",
        "busybox",
        "nc",
        "-w",
        "5",
        "10.99.0.2",
        "9001",
    ]);
    assert_eq!(run.ok(), "through\n");
    server.join().unwrap();
    d.stop();
    let chain = forward_chain(&d);
    assert!(chain.contains("-P FORWARD DROP"), "{chain}");
    assert!(
        !chain.contains("berth"),
        "berth's accepts were left behind: {chain}"
    );
}

/// Whether berth's published-port rule for `port` is in its table.
fn has_port_rule(d: &Daemon, port: u16) -> bool {
    d.netns
        .command("nft")
        .args(["list", "chain", "inet", "berth", "ports"])
        .output()
        .is_ok_and(|r| String::from_utf8_lossy(&r.stdout).contains(&format!("dport {port}")))
}

#[test]
fn an_idle_daemon_spawns_nothing_and_repairs_its_firewall_at_once() {
    require_root!();
    let d = daemon();
    d.docker([
        "run", "-d", "--name", "idle1", "-p", "8086:80", "busybox", "sleep", "300",
    ])
    .ok();
    assert!(has_port_rule(&d, 8086));
    let mut forks = Forks::watch(d.pid());
    // Idle: no nft, no iptables, nothing at all.
    std::thread::sleep(Duration::from_secs(1));
    forks.take();
    std::thread::sleep(Duration::from_secs(5));
    let idle = forks.take();
    assert!(idle.is_empty(), "an idle berthd started {idle:?}");

    // Changes made from outside (in the daemon's namespace) are put right
    // within a second by one round of the check: one `nft list`, the
    // rebuild (`nft -f`) if the table was touched, `iptables` to read and
    // fix the FORWARD chain. berth's own repair does not set off another
    // round (which would run another `nft list`).
    let repaired = |what: &str, ok: &dyn Fn() -> bool, nft_runs: usize, forks: &mut Forks| {
        let t = Instant::now();
        let done = berth_e2e::wait_for(Duration::from_secs(1), || ok().then_some(()));
        assert!(done.is_some(), "{what}: not repaired within 1 s");
        let took = t.elapsed();
        std::thread::sleep(Duration::from_millis(800));
        let ran = forks.take();
        eprintln!("{what}: repaired in {took:?}, berthd ran {ran:?}");
        assert!(!ran.is_empty(), "{what}: berthd ran nothing");
        assert!(
            ran.iter()
                .all(|(_, c)| ["nft", "iptables", "?"].contains(&c.as_str())),
            "{what}: berthd ran {ran:?}"
        );
        assert!(
            ran.iter().filter(|(_, c)| c != "iptables").count() <= nft_runs,
            "{what}: more than one round of checks: {ran:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
        let after = forks.take();
        assert!(after.is_empty(), "{what}: berthd kept running {after:?}");
    };
    let nft = |args: &[&str]| {
        let st = d.netns.command("nft").args(args).status().unwrap();
        assert!(st.success(), "nft {args:?}");
    };
    nft(&["flush", "table", "inet", "berth"]);
    assert!(!has_port_rule(&d, 8086));
    repaired(
        "nft flush table",
        &|| has_port_rule(&d, 8086),
        2,
        &mut forks,
    );

    nft(&["flush", "ruleset"]);
    repaired(
        "nft flush ruleset",
        &|| has_port_rule(&d, 8086),
        2,
        &mut forks,
    );

    let st = d
        .netns
        .command("iptables")
        .args(["-P", "FORWARD", "DROP"])
        .status()
        .unwrap();
    assert!(st.success());
    repaired(
        "FORWARD policy DROP",
        &|| forward_chain(&d).contains("-i berth0 -m comment --comment berth -j ACCEPT"),
        1,
        &mut forks,
    );
    d.docker(["rm", "-f", "idle1"]).ok();
}

#[test]
fn the_berth_cli_manages_networks_and_ports() {
    require_root!();
    let d = daemon();
    let id = d.berth([
        "network",
        "create",
        "--subnet",
        "10.80.0.0/24",
        "--label",
        "k=v",
        "cli1",
    ]);
    let id = id.ok().trim().to_string();
    assert_eq!(id.len(), 64);
    let ls = d.berth(["network", "ls"]);
    let text = ls.ok();
    assert!(
        text.starts_with("NETWORK ID     NAME      DRIVER    SCOPE\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}   cli1      bridge    local\n", &id[..12])),
        "{text}"
    );
    let f = d.berth([
        "network",
        "inspect",
        "-f",
        "{{.Name}} {{(index .IPAM.Config 0).Subnet}} {{.Labels.k}}",
        "cli1",
    ]);
    assert_eq!(f.ok(), "cli1 10.80.0.0/24 v\n");
    let missing = d.berth(["network", "inspect", "nope"]);
    assert_eq!(missing.code(), 1);
    assert!(
        missing.stderr.contains("Error: No such network: nope"),
        "{missing}"
    );

    d.berth([
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "cli1",
        "--ip",
        "10.80.0.9",
        "--network-alias",
        "www",
        "--add-host",
        "db:10.0.0.5",
        "--dns-search",
        "example.test",
        "-p",
        "127.0.0.1:8181:80",
        "busybox",
        "sh",
        "-c",
        &web_cmd("hello-berth"),
    ])
    .ok();
    assert_eq!(d.berth(["port", "web"]).ok(), "80/tcp -> 127.0.0.1:8181\n");
    assert_eq!(d.berth(["port", "web", "80/tcp"]).ok(), "127.0.0.1:8181\n");
    let none = d.berth(["port", "web", "81"]);
    assert!(
        none.stderr
            .contains("No public port '81/tcp' published for web"),
        "{none}"
    );
    assert_eq!(wait_http(&d.netns, "127.0.0.1:8181"), "hello-berth\n");
    let etc = d.berth(["exec", "web", "cat", "/etc/hosts", "/etc/resolv.conf"]);
    let text = etc.ok();
    assert!(text.contains("10.0.0.5\tdb\n"), "{text}");
    assert!(
        text.contains(&format!(
            "10.80.0.9\t{}\n",
            &inspect(&d, "web")["Id"].as_str().unwrap()[..12]
        )),
        "{text}"
    );
    assert!(text.contains("search example.test\n"), "{text}");
    let ps = d.berth(["ps", "--format", "{{.Ports}}"]);
    assert_eq!(ps.ok(), "127.0.0.1:8181->80/tcp\n");
    let bad = d.berth(["run", "--rm", "-p", "80:80:80:80", "busybox", "true"]);
    assert_eq!(bad.code(), 125, "{bad}");
    d.berth(["network", "connect", "--alias", "other", "bridge", "web"]);
    d.berth(["network", "connect", "bridge", "web"]).ok();
    assert!(
        inspect(&d, "web")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
            .as_str()
            .unwrap()
            .starts_with("172.17.")
    );
    d.berth(["network", "disconnect", "bridge", "web"]).ok();
    let busy = d.berth(["network", "rm", "cli1"]);
    assert_eq!(busy.code(), 1);
    assert!(busy.stderr.contains("has active endpoints"), "{busy}");
    d.berth(["rm", "-f", "web"]).ok();
    assert_eq!(d.berth(["network", "rm", "cli1"]).ok(), "cli1\n");
}
