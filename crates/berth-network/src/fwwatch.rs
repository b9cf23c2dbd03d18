//! Noticing firewall changes made by others, without polling.
//!
//! The kernel multicasts every committed nf_tables transaction of a network
//! namespace to the netlink group `NFNLGRP_NFTABLES` (what `nft monitor`
//! reads): one message per table, chain, rule, set or element added or
//! deleted, then one `NFT_MSG_NEWGEN` carrying the PID of the process that
//! committed it. iptables-nft goes through nf_tables too, so a change to the
//! FORWARD chain (dockerd setting its policy to DROP) arrives the same way.
//!
//! [`run`] listens there in berthd's own namespace and runs the daemon's
//! check (is berth's table what berth put there? are the FORWARD accepts in
//! line?) only after a transaction that touched `inet berth` or `ip filter`
//! and was not committed by an `nft` or `iptables` berth ran itself
//! ([`spawn_own`]), once changes have stopped for [`DEBOUNCE`] (a firewall
//! reload is many transactions). What events cannot show is covered by a
//! slow fallback: the check also runs every [`FALLBACK`] (hosts on
//! iptables-legacy send no events for FORWARD changes), when the socket's
//! queue overflowed (`ENOBUFS`: events were lost), and every [`POLL`] when
//! the socket cannot be opened at all.
//!
//! ```text
//! datagram   nlmsghdr (16) | nfgenmsg (4: family, version, res_id) | attributes
//!            type = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*
//! attr 1     the table's name, in every table/chain/rule/set/element/object message
//! NEWGEN     attr 2 (NFTA_GEN_PROC_PID, big-endian u32): who committed
//! ```

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant as TokioInstant;

/// Quiet time after the last change before the check runs.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a stream of changes can put the check off.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// How often the check runs anyway while events arrive.
pub const FALLBACK: Duration = Duration::from_secs(60);
/// How often the check runs when no events can be had.
pub const POLL: Duration = Duration::from_secs(3);

const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_PROC_PID: u16 = 2;
/// Attribute 1 of every table, chain, rule, set, element, object and
/// flowtable message is the name of the table it belongs to.
const NFTA_TABLE: u16 = 1;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// Receive queue asked for; the kernel caps it at `net.core.rmem_max`.
const RCVBUF: usize = 1 << 20;

// ---- berth's own processes ------------------------------------------------

struct OwnProc {
    pid: u32,
    spawned: Instant,
    reaped: Option<Instant>,
}

static OWN: Mutex<Vec<OwnProc>> = Mutex::new(Vec::new());

/// How long a reaped child's PID still counts as berth's (its events may
/// still be queued on the socket).
const OWN_GRACE: Duration = Duration::from_secs(10);
/// A child never marked reaped (an error path) is forgotten after this.
const OWN_MAX: Duration = Duration::from_secs(600);

fn own_list() -> std::sync::MutexGuard<'static, Vec<OwnProc>> {
    OWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns `cmd`, an `nft` or `iptables` of berth's, and remembers its PID
/// so the transaction it commits is known as berth's own. Call
/// [`reaped`] once it has been waited for.
pub fn spawn_own(cmd: &mut Command) -> io::Result<Child> {
    // Held across the spawn: the child cannot commit anything before its
    // PID is recorded, and the watcher looks PIDs up under this lock.
    let mut own = own_list();
    own.retain(|p| {
        p.spawned.elapsed() < OWN_MAX && p.reaped.is_none_or(|t| t.elapsed() < OWN_GRACE)
    });
    let child = cmd.spawn()?;
    own.push(OwnProc {
        pid: child.id(),
        spawned: Instant::now(),
        reaped: None,
    });
    Ok(child)
}

/// The child `pid` from [`spawn_own`] has been waited for.
pub fn reaped(pid: u32) {
    for p in own_list()
        .iter_mut()
        .filter(|p| p.pid == pid && p.reaped.is_none())
    {
        p.reaped = Some(Instant::now());
    }
}

fn is_own(pid: u32) -> bool {
    own_list().iter().any(|p| p.pid == pid)
}

// ---- reading events -------------------------------------------------------

/// What the events seen so far call for.
#[derive(Debug, Default)]
pub struct Watch {
    /// The transaction being read touched a watched table (its NEWGEN, which
    /// says whose it is, has not arrived yet).
    batch: bool,
    /// Someone else changed a watched table, or events were lost.
    changed: bool,
}

impl Watch {
    /// Whether the check should run.
    pub fn due(&self) -> bool {
        self.changed || self.batch
    }

    /// Events were lost (`ENOBUFS`): anything may have changed.
    pub fn overflow(&mut self) {
        self.changed = true;
        self.batch = false;
    }

    /// The check is running: what was seen so far is dealt with.
    pub fn reset(&mut self) {
        *self = Watch::default();
    }

    /// Takes one datagram (one or more netlink messages); returns whether
    /// any of it touched a watched table. `own` says whether a PID is one
    /// of berth's own processes.
    pub fn feed(&mut self, mut dgram: &[u8], own: &dyn Fn(u32) -> bool) -> bool {
        let mut seen = false;
        while dgram.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes(dgram[0..4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes(dgram[4..6].try_into().expect("2 bytes"));
            if len < NLMSG_HDRLEN || len > dgram.len() {
                // Not what the kernel sends: assume the worst.
                self.changed = true;
                return true;
            }
            let body = &dgram[NLMSG_HDRLEN..len];
            if ty >> 8 == NFNL_SUBSYS_NFTABLES {
                if ty & 0xff == NFT_MSG_NEWGEN {
                    let pid = attr(body, NFTA_GEN_PROC_PID)
                        .and_then(|v| v.get(..4))
                        .map(|v| u32::from_be_bytes(v.try_into().expect("4 bytes")));
                    // The PID is as the initial PID namespace sees it; a
                    // berthd in a PID namespace of its own takes its own
                    // changes for someone else's (one needless check).
                    if self.batch && !pid.is_some_and(own) {
                        self.changed = true;
                        seen = true;
                    }
                    self.batch = false;
                } else if watched(body) {
                    self.batch = true;
                    seen = true;
                }
            }
            dgram = &dgram[len.next_multiple_of(4).min(dgram.len())..];
        }
        seen
    }
}

/// Whether an nf_tables message (after its netlink header) is about
/// berth's table or iptables-nft's `filter` table (the FORWARD chain). One
/// that names no table counts.
fn watched(body: &[u8]) -> bool {
    let Some(&family) = body.first() else {
        return true;
    };
    let Some(name) = attr(body, NFTA_TABLE) else {
        return true;
    };
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    (family == NFPROTO_INET && name == crate::nft::TABLE.as_bytes())
        || (family == NFPROTO_IPV4 && name == b"filter")
}

/// The payload of the first top-level attribute of type `want`.
fn attr(body: &[u8], want: u16) -> Option<&[u8]> {
    let mut rest = body.get(NFGENMSG_LEN..)?;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        // The top bits are the nested and byte-order flags.
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if ty == want {
            return Some(&rest[4..len]);
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    None
}

/// A netlink socket subscribed to nf_tables changes.
pub struct Events {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl Events {
    /// Subscribes in the calling thread's network namespace (needs
    /// CAP_NET_ADMIN there). Must be called inside a tokio runtime.
    pub fn open() -> io::Result<Events> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(rustix::net::netlink::NETFILTER),
        )?;
        // Best effort: the default queue holds a few hundred events, a
        // firewall reload can send thousands (an overflow costs one check).
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, RCVBUF);
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 1 << (NFNLGRP_NFTABLES - 1)))?;
        #[allow(unsafe_code)]
        // SAFETY: the OwnedFd is moved in, so the descriptor stays open and
        // the same until the AsyncFd (which owns it) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Events {
            fd,
            buf: vec![0; 64 << 10],
        })
    }

    /// Waits for events and feeds everything queued to `watch`; returns
    /// whether any of it touched a watched table (or events were lost).
    pub async fn read(&mut self, watch: &mut Watch) -> io::Result<bool> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = false;
            let mut seen = false;
            loop {
                match rustix::net::recv(
                    guard.get_inner(),
                    &mut self.buf[..],
                    rustix::net::RecvFlags::empty(),
                ) {
                    Ok((n, _)) => {
                        got = true;
                        seen |= watch.feed(&self.buf[..n], &is_own);
                    }
                    Err(Errno::NOBUFS) => {
                        got = true;
                        seen = true;
                        watch.overflow();
                    }
                    Err(Errno::INTR) => {}
                    Err(Errno::AGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if got {
                return Ok(seen);
            }
        }
    }
}

async fn next(events: &mut Option<Events>, watch: &mut Watch) -> io::Result<bool> {
    match events {
        Some(ev) => ev.read(watch).await,
        None => std::future::pending().await,
    }
}

/// Runs `check` once at the start (changes before the subscription), then
/// whenever someone else changed berth's table or the FORWARD chain, and at
/// least every [`FALLBACK`] ([`POLL`] without events). Returns when `check`
/// returns false (the daemon is gone).
pub async fn run<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut events = match Events::open() {
        Ok(ev) => Some(ev),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot subscribe to nftables changes; looking at berth's table every {}s",
                POLL.as_secs()
            );
            None
        }
    };
    let mut watch = Watch::default();
    // When the check is due after events: DEBOUNCE after the last one, but
    // no later than MAX_DELAY after the first.
    let mut due: Option<(TokioInstant, TokioInstant)> = None;
    let mut next_poll = TokioInstant::now();
    loop {
        let wake = due.map_or(next_poll, |(_, at)| at.min(next_poll));
        tokio::select! {
            r = next(&mut events, &mut watch) => match r {
                Ok(seen) => {
                    if !watch.due() {
                        due = None;
                    } else if seen {
                        let now = TokioInstant::now();
                        let first = due.map_or(now, |(first, _)| first);
                        due = Some((first, (now + DEBOUNCE).min(first + MAX_DELAY)));
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "lost the nftables change events; looking at berth's table every {}s",
                        POLL.as_secs()
                    );
                    events = None;
                    next_poll = TokioInstant::now();
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                watch.reset();
                due = None;
                if !check().await {
                    return;
                }
                let every = if events.is_some() { FALLBACK } else { POLL };
                next_poll = TokioInstant::now() + every;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message of nf_tables type `kind` with `attrs`.
    fn msg(kind: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for (ty, val) in attrs {
            body.extend_from_slice(&((4 + val.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&ty.to_ne_bytes());
            body.extend_from_slice(val);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    const DELTABLE: u16 = 2;
    const NEWCHAIN: u16 = 3;
    const DELRULE: u16 = 8;

    fn gen_by(pid: u32) -> Vec<u8> {
        msg(
            NFT_MSG_NEWGEN,
            0,
            &[
                (1, &7u32.to_be_bytes()),
                (NFTA_GEN_PROC_PID, &pid.to_be_bytes()),
                (3, b"nft\0"),
            ],
        )
    }

    fn ours(pid: u32) -> bool {
        pid == 100
    }

    #[test]
    fn a_flush_of_berths_table_by_someone_else_is_due() {
        let mut w = Watch::default();
        let mut d = msg(
            DELRULE,
            NFPROTO_INET,
            &[(NFTA_TABLE, b"berth\0"), (2, b"ports\0")],
        );
        d.extend(msg(DELRULE, NFPROTO_INET, &[(NFTA_TABLE, b"berth\0")]));
        assert!(w.feed(&d, &ours));
        assert!(w.due());
        // The NEWGEN comes in a datagram of its own.
        assert!(w.feed(&gen_by(4242), &ours));
        assert!(w.due());
        w.reset();
        assert!(!w.due());
    }

    #[test]
    fn berths_own_changes_are_not_due() {
        let mut w = Watch::default();
        let mut d = msg(DELTABLE, NFPROTO_INET, &[(NFTA_TABLE, b"berth\0")]);
        d.extend(gen_by(100));
        w.feed(&d, &ours);
        assert!(!w.due());
        // …but a change by someone else before it stays due.
        w.feed(
            &msg(NEWCHAIN, NFPROTO_IPV4, &[(NFTA_TABLE, b"filter\0")]),
            &ours,
        );
        w.feed(&gen_by(7), &ours);
        w.feed(
            &msg(DELTABLE, NFPROTO_INET, &[(NFTA_TABLE, b"berth\0")]),
            &ours,
        );
        w.feed(&gen_by(100), &ours);
        assert!(w.due());
    }

    #[test]
    fn other_tables_are_not_watched() {
        let mut w = Watch::default();
        for (family, table) in [
            (NFPROTO_INET, &b"firewalld\0"[..]),
            (NFPROTO_IPV4, b"nat\0"),
            (NFPROTO_INET, b"berthx\0"),
            (10, b"filter\0"),
        ] {
            let mut d = msg(NEWCHAIN, family, &[(NFTA_TABLE, table)]);
            d.extend(gen_by(7));
            assert!(!w.feed(&d, &ours));
        }
        assert!(!w.due());
    }

    #[test]
    fn what_cannot_be_read_is_due() {
        // A table message without a table name, or a NEWGEN without a PID.
        let mut w = Watch::default();
        w.feed(&msg(NEWCHAIN, NFPROTO_INET, &[]), &ours);
        w.feed(&msg(NFT_MSG_NEWGEN, 0, &[(1, &[0, 0, 0, 1])]), &ours);
        assert!(w.due());
        // A transaction whose NEWGEN never came.
        let mut w = Watch::default();
        w.feed(
            &msg(DELTABLE, NFPROTO_INET, &[(NFTA_TABLE, b"berth\0")]),
            &ours,
        );
        assert!(w.due());
        // A truncated datagram.
        let mut w = Watch::default();
        let d = msg(DELTABLE, NFPROTO_INET, &[(NFTA_TABLE, b"berth\0")]);
        let mut cut = d.clone();
        cut[0] += 8;
        assert!(w.feed(&cut, &ours));
        assert!(w.due());
        // Garbage attributes inside a well-formed message end the walk.
        let mut w = Watch::default();
        let mut bad = d.clone();
        bad[NLMSG_HDRLEN + NFGENMSG_LEN] = 0xff;
        w.feed(&bad, &ours);
        assert!(w.due());
        // Lost events.
        let mut w = Watch::default();
        w.overflow();
        assert!(w.due());
    }

    #[test]
    fn messages_of_other_subsystems_are_skipped() {
        let mut w = Watch::default();
        let mut d = msg(DELTABLE, NFPROTO_INET, &[(NFTA_TABLE, b"berth\0")]);
        d[4..6].copy_from_slice(&((1u16 << 8) | DELTABLE).to_ne_bytes());
        assert!(!w.feed(&d, &ours));
        assert!(!w.due());
    }

    /// The real kernel: a change in a namespace this test makes is seen,
    /// and the same change made through `spawn_own` is not.
    #[test]
    fn the_kernel_reports_changes_and_whose_they_are() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping the_kernel_reports_changes_and_whose_they_are: needs root");
            return;
        }
        let ns = format!("berth-fwwatch-{}", std::process::id());
        let add = Command::new("ip").args(["netns", "add", &ns]).status();
        assert!(add.expect("ip").success());
        struct Del(String);
        impl Drop for Del {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let _del = Del(ns.clone());
        let path = format!("/run/netns/{ns}");
        let nft = move |args: &str| {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={path}"))
                .arg("--")
                .arg("nft")
                .args(args.split(' '));
            c
        };
        let ns_file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
        std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns_file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut ev = Events::open().expect("subscribe");
                let settle = async |ev: &mut Events, w: &mut Watch| {
                    while let Ok(Ok(_)) =
                        tokio::time::timeout(Duration::from_millis(300), ev.read(w)).await
                    {
                    }
                };
                // berth's own: not due.
                let mut w = Watch::default();
                let child = spawn_own(&mut nft("add table inet berth")).expect("nft");
                let pid = child.id();
                assert!(child.wait_with_output().unwrap().status.success());
                reaped(pid);
                settle(&mut ev, &mut w).await;
                assert!(!w.due(), "berth's own change counted: {w:?}");
                // Someone else's in another table: not due.
                assert!(nft("add table inet other").status().unwrap().success());
                settle(&mut ev, &mut w).await;
                assert!(!w.due(), "another table's change counted: {w:?}");
                // Someone else's in berth's: due.
                assert!(nft("flush table inet berth").status().unwrap().success());
                assert!(nft("add chain inet berth c").status().unwrap().success());
                settle(&mut ev, &mut w).await;
                assert!(w.due(), "someone else's change was not seen");
                w.reset();
                assert!(nft("flush ruleset").status().unwrap().success());
                settle(&mut ev, &mut w).await;
                assert!(w.due(), "a flushed ruleset was not seen");
            });
        })
        .join()
        .expect("test thread");
    }
}
