//! The userland proxy: one listener per published port on the host's side,
//! relaying to the container. It is what serves connections that DNAT
//! cannot (from 127.0.0.1, and from a container to its own host's
//! address), and holding the host port is what makes a second publication
//! of it fail, as with Docker's default `userland-proxy: true`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_types::{Error, Result};
use tokio::task::AbortHandle;

use crate::nft::Proto;

/// Relay buffer per direction: with tokio's default (8 KiB) a bulk
/// transfer costs four times the system calls.
const BUF: usize = 256 << 10;

/// How long a UDP client's relay socket lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// A bound host port, not yet relaying.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Bind `ip:port` (every address if `ip` is None; a random free port if
/// `port` is 0). Returns the socket and the port it got.
pub fn bind(proto: Proto, ip: Option<Ipv4Addr>, port: u16) -> std::io::Result<(Bound, u16)> {
    let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    match proto {
        Proto::Tcp => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            let p = l.local_addr()?.port();
            Ok((Bound::Tcp(l), p))
        }
        Proto::Udp => {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            let p = s.local_addr()?.port();
            Ok((Bound::Udp(s), p))
        }
    }
}

/// Start relaying `bound` to `target`; the task runs until aborted.
/// Must be called inside the daemon's runtime.
pub fn start(bound: Bound, target: SocketAddrV4) -> Result<AbortHandle> {
    match bound {
        Bound::Tcp(l) => {
            let l = tokio::net::TcpListener::from_std(l)?;
            Ok(tokio::spawn(tcp(l, target)).abort_handle())
        }
        Bound::Udp(s) => {
            let s = tokio::net::UdpSocket::from_std(s)?;
            Ok(tokio::spawn(udp(Arc::new(s), target)).abort_handle())
        }
    }
}

async fn tcp(l: tokio::net::TcpListener, target: SocketAddrV4) {
    loop {
        let Ok((mut client, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, BUF, BUF).await;
        });
    }
}

async fn udp(s: Arc<tokio::net::UdpSocket>, target: SocketAddrV4) {
    let peers: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf).await else {
            continue;
        };
        let existing = peers.lock().unwrap().get(&from).cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = tokio::net::UdpSocket::bind("0.0.0.0:0").await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                peers.lock().unwrap().insert(from, u.clone());
                let (s2, u2, peers2) = (s.clone(), u.clone(), peers.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65535];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut b)).await {
                        let _ = s2.send_to(&b[..n], from).await;
                    }
                    peers2.lock().unwrap().remove(&from);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// Docker's message when a host port cannot be had.
pub fn bind_error(
    proto: Proto,
    ip: Option<Ipv4Addr>,
    host_port: u16,
    target: SocketAddrV4,
    e: &std::io::Error,
) -> Error {
    let host = ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let what = if e.kind() == std::io::ErrorKind::AddrInUse {
        "address already in use".to_string()
    } else {
        e.to_string()
    };
    Error::internal(format!(
        "failed to bind host port for {host}:{host_port}:{target}/{}: {what}",
        proto.as_str()
    ))
}
