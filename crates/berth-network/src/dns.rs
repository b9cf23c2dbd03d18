//! The embedded DNS server of user-defined networks.
//!
//! Each container on a user-defined network gets its own listener on
//! 127.0.0.11:53 (UDP and TCP) *inside its network namespace*: the sockets
//! are opened on the thread that made the namespace and then served from
//! the daemon's runtime. So no DNAT rule is needed in the container, and
//! the resolver always knows who is asking. Names of containers on the
//! asker's networks (names, aliases, short IDs) are answered from the
//! daemon's memory, which is updated in place (listeners are never
//! reopened for that); everything else is forwarded from the daemon's own
//! namespace to the host's resolvers, so a host resolver on 127.0.0.53
//! works.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::AbortHandle;

use crate::netlink::DnsSockets;

/// TTL of the answers about containers (Docker's).
const TTL: u32 = 600;
/// How long one upstream resolver gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// What the server asks the daemon.
pub trait Lookup: Send + Sync + 'static {
    /// Addresses of `name` (lower case, no trailing dot) as seen from
    /// `container`'s networks; `None` when it is not a container there.
    fn lookup(&self, container: &str, name: &str) -> Option<Vec<Ipv4Addr>>;
    /// Where to forward other names for `container`.
    fn upstreams(&self, container: &str) -> Vec<SocketAddr>;
}

/// Serve `sockets` for `container` until the returned tasks are aborted.
/// Must be called inside the daemon's runtime.
pub fn serve(
    sockets: DnsSockets,
    container: String,
    lookup: Arc<dyn Lookup>,
) -> std::io::Result<Vec<AbortHandle>> {
    let udp = Arc::new(tokio::net::UdpSocket::from_std(sockets.udp)?);
    let tcp = tokio::net::TcpListener::from_std(sockets.tcp)?;
    let (c1, l1) = (container.clone(), lookup.clone());
    let u = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let q = buf[..n].to_vec();
            let (udp, c, l) = (udp.clone(), c1.clone(), l1.clone());
            tokio::spawn(async move {
                if let Some(ans) = answer(&q, &c, l.as_ref(), false).await {
                    let _ = udp.send_to(&ans, from).await;
                }
            });
        }
    });
    let t = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (c, l) = (container.clone(), lookup.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(len) = s.read_u16().await else { return };
                    let mut q = vec![0u8; len as usize];
                    if s.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let Some(ans) = answer(&q, &c, l.as_ref(), true).await else {
                        return;
                    };
                    if s.write_u16(ans.len() as u16).await.is_err()
                        || s.write_all(&ans).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(vec![u.abort_handle(), t.abort_handle()])
}

/// The answer to one query packet; `None` for garbage.
async fn answer(q: &[u8], container: &str, lookup: &dyn Lookup, tcp: bool) -> Option<Vec<u8>> {
    let msg = Message::from_vec(q).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    if let Some(local) = local_answer(&msg, |n| lookup.lookup(container, n)) {
        return local.to_vec().ok();
    }
    for up in lookup.upstreams(container) {
        if let Some(r) = forward(q, up, tcp).await {
            return Some(r);
        }
    }
    let mut e = Message::error_msg(
        msg.metadata.id,
        msg.metadata.op_code,
        ResponseCode::ServFail,
    );
    e.metadata.recursion_desired = msg.metadata.recursion_desired;
    e.metadata.recursion_available = true;
    e.add_queries(msg.queries.clone());
    e.to_vec().ok()
}

/// An answer from the containers' records, if the question is about one.
pub fn local_answer(
    msg: &Message,
    lookup: impl Fn(&str) -> Option<Vec<Ipv4Addr>>,
) -> Option<Message> {
    if msg.metadata.op_code != OpCode::Query || msg.queries.len() != 1 {
        return None;
    }
    let q = &msg.queries[0];
    let name = q.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let ips = lookup(name)?;
    let mut r = Message::response(msg.metadata.id, OpCode::Query);
    r.metadata.authoritative = true;
    r.metadata.recursion_desired = msg.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_query(q.clone());
    match q.query_type() {
        RecordType::A | RecordType::ANY => {
            for ip in ips {
                r.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
            }
        }
        // A container has no IPv6 address here: the name exists, with no
        // record of that type (NOERROR, empty).
        _ => {}
    }
    Some(r)
}

async fn forward(q: &[u8], up: SocketAddr, tcp: bool) -> Option<Vec<u8>> {
    let fut = async {
        if tcp {
            let mut s = tokio::net::TcpStream::connect(up).await.ok()?;
            s.write_u16(q.len() as u16).await.ok()?;
            s.write_all(q).await.ok()?;
            let len = s.read_u16().await.ok()?;
            let mut b = vec![0u8; len as usize];
            s.read_exact(&mut b).await.ok()?;
            Some(b)
        } else {
            let bind: SocketAddr = if up.is_ipv4() {
                "0.0.0.0:0".parse().expect("addr")
            } else {
                "[::]:0".parse().expect("addr")
            };
            let s = tokio::net::UdpSocket::bind(bind).await.ok()?;
            s.connect(up).await.ok()?;
            s.send(q).await.ok()?;
            let mut b = vec![0u8; 4096];
            let n = s.recv(&mut b).await.ok()?;
            b.truncate(n);
            Some(b)
        }
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, fut)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str, ty: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m
    }

    #[test]
    fn container_names_are_answered_and_others_are_not() {
        let table = |n: &str| (n == "web").then(|| vec![Ipv4Addr::new(10, 0, 0, 2)]);
        let r = local_answer(&query("WEB.", RecordType::A), table).unwrap();
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        let bytes = r.to_vec().unwrap();
        let back = Message::from_vec(&bytes).unwrap();
        assert_eq!(
            back.answers[0].data,
            RData::A(A(Ipv4Addr::new(10, 0, 0, 2)))
        );
        let r6 = local_answer(&query("web", RecordType::AAAA), table).unwrap();
        assert!(r6.answers.is_empty());
        assert_eq!(r6.metadata.response_code, ResponseCode::NoError);
        assert!(local_answer(&query("example.org", RecordType::A), table).is_none());
    }
}
