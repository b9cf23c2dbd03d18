//! The kernel side: bridges, veth pairs, addresses and routes through
//! rtnetlink, and containers' network namespaces.
//!
//! Every operation runs on a dedicated short-lived thread with its own
//! current-thread tokio runtime, never on one of the daemon's workers:
//! creating a namespace switches the calling thread into it, and a netlink
//! socket belongs to the namespace its thread was in when it was opened.
//! So a sandbox is made like this, on one thread:
//!
//! 1. open a netlink socket (it stays in the daemon's namespace);
//! 2. `unshare(CLONE_NEWNET)`: the thread is now in a fresh namespace;
//!    bind-mount `/proc/thread-self/ns/net` on `<run>/netns/<id>` so it
//!    outlives the thread;
//! 3. open a second netlink socket (in the new namespace), and the
//!    embedded DNS server's sockets when asked for;
//! 4. with the first socket, create each veth pair with its peer placed
//!    straight into the new namespace under its final name and MAC;
//! 5. with the second, bring up `lo` and the interfaces, add addresses
//!    and the default route.
//!
//! The thread then ends; nothing of the daemon's own threads ever changes
//! namespace.
#![allow(unsafe_code)]

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use berth_types::{Error, Result};
use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;

fn nl_err(what: &str, e: rtnetlink::Error) -> Error {
    Error::internal(format!("{what}: {e}"))
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Run `f` on a fresh thread with a current-thread runtime.
fn on_thread<T, F, Fut>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    std::thread::Builder::new()
        .name("berth-netlink".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| Error::internal(format!("netlink runtime: {e}")))?;
            rt.block_on(f())
        })
        .map_err(|e| Error::internal(format!("spawn netlink thread: {e}")))?
        .join()
        .map_err(|_| Error::internal("netlink thread panicked"))?
}

/// A netlink connection in the calling thread's network namespace.
fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| Error::internal(format!("open netlink socket: {e}")))?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl_err(&format!("look up link {name}"), e)),
    }
}

/// A bridge `name` with `gateway` (address/prefix) on it, up. Made if
/// missing; an existing one gets the address if it lacks it.
pub fn ensure_bridge(name: &str, gateway: Ipv4Net, mtu: u32) -> Result<()> {
    let name = name.to_string();
    on_thread(move || async move {
        let h = connect()?;
        let idx = match index_of(&h, &name).await? {
            Some(i) => i,
            None => {
                let msg = LinkBridge::new(&name).mtu(mtu).build();
                match h.link().add(msg).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(EEXIST) => {}
                    Err(e) => return Err(nl_err(&format!("create bridge {name}"), e)),
                }
                index_of(&h, &name)
                    .await?
                    .ok_or_else(|| Error::internal(format!("bridge {name} vanished")))?
            }
        };
        match h
            .address()
            .add(idx, IpAddr::V4(gateway.addr()), gateway.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl_err(&format!("address {gateway} on {name}"), e)),
        }
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("bring up {name}"), e))
    })
}

/// Delete links by name in the daemon's namespace; missing ones are fine.
pub fn delete_links(names: Vec<String>) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    on_thread(move || async move {
        let h = connect()?;
        let mut errs = Vec::new();
        for name in names {
            match index_of(&h, &name).await {
                Ok(Some(i)) => match h.link().del(i).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(ENODEV) => {}
                    Err(e) => errs.push(format!("delete {name}: {e}")),
                },
                Ok(None) => {}
                Err(e) => errs.push(e.message),
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::internal(errs.join("; ")))
        }
    })
}

/// Whether a link exists in the daemon's namespace.
pub fn link_exists(name: &str) -> Result<bool> {
    let name = name.to_string();
    on_thread(move || async move {
        let h = connect()?;
        Ok(index_of(&h, &name).await?.is_some())
    })
}

/// One interface of a container.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The host side of the veth pair.
    pub host_veth: String,
    pub bridge: String,
    /// The name inside the container (`eth0`, `eth1`, …).
    pub ifname: String,
    pub mac: [u8; 6],
    pub address: Ipv4Net,
    /// The default route goes through this endpoint's gateway.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// Sockets of the embedded DNS server, opened inside a container's
/// namespace on 127.0.0.11:53.
pub struct DnsSockets {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
}

fn open_dns() -> Result<DnsSockets> {
    let addr = (crate::etc::INTERNAL_DNS, 53);
    let udp = std::net::UdpSocket::bind(addr)
        .map_err(|e| Error::internal(format!("embedded DNS on 127.0.0.11:53/udp: {e}")))?;
    let tcp = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::internal(format!("embedded DNS on 127.0.0.11:53/tcp: {e}")))?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok(DnsSockets { udp, tcp })
}

/// Create the veths of `eps` (host side on their bridges, peer in the
/// namespace `ns`), then configure the peers with `inner`.
async fn plug(host: &Handle, inner: &Handle, ns: &File, eps: &[Endpoint]) -> Result<()> {
    for ep in eps {
        let bridge = index_of(host, &ep.bridge)
            .await?
            .ok_or_else(|| Error::not_found(format!("bridge {} does not exist", ep.bridge)))?;
        let peer = LinkUnspec::new_with_name(&ep.ifname)
            .address(ep.mac.to_vec())
            .mtu(ep.mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(&ep.host_veth, &ep.ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(bridge)
            .mtu(ep.mtu)
            .up()
            .build();
        match host.link().add(msg.clone()).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {
                // The veth of an earlier run whose namespace is still
                // being cleaned up by the kernel.
                if let Some(old) = index_of(host, &ep.host_veth).await? {
                    match host.link().del(old).execute().await {
                        Ok(()) => {}
                        Err(e) if errno(&e) == Some(ENODEV) => {}
                        Err(e) => return Err(nl_err(&format!("delete stale {}", ep.host_veth), e)),
                    }
                }
                host.link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(|e| nl_err(&format!("create veth {}", ep.host_veth), e))?;
            }
            Err(e) => return Err(nl_err(&format!("create veth {}", ep.host_veth), e)),
        }
    }
    for ep in eps {
        let idx = index_of(inner, &ep.ifname)
            .await?
            .ok_or_else(|| Error::internal(format!("{} not in the sandbox", ep.ifname)))?;
        inner
            .address()
            .add(idx, IpAddr::V4(ep.address.addr()), ep.address.prefix_len())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("address {} on {}", ep.address, ep.ifname), e))?;
        inner
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("bring up {}", ep.ifname), e))?;
        if let Some(gw) = ep.gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(idx)
                .build();
            inner
                .route()
                .add(route)
                .execute()
                .await
                .map_err(|e| nl_err(&format!("default route via {gw}"), e))?;
        }
    }
    Ok(())
}

/// Make the persistent namespace `path` with `eps` plugged in (and the
/// embedded DNS server's sockets if `dns`). On failure nothing is left.
pub fn create_sandbox(path: &Path, eps: Vec<Endpoint>, dns: bool) -> Result<Option<DnsSockets>> {
    let path = path.to_path_buf();
    let p2 = path.clone();
    let veths: Vec<String> = eps.iter().map(|e| e.host_veth.clone()).collect();
    let res = on_thread(move || async move {
        let host = connect()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        File::create(&path)
            .map_err(|e| Error::internal(format!("create {}: {e}", path.display())))?;
        // SAFETY: only the network namespace is unshared (never the fd
        // table or the filesystem context), and only on this thread, which
        // ends when the sandbox is made.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .map_err(|e| Error::internal(format!("create network namespace: {e}")))?;
        rustix::mount::mount_bind("/proc/thread-self/ns/net", &path)
            .map_err(|e| Error::internal(format!("bind network namespace: {e}")))?;
        let inner = connect()?;
        inner
            .link()
            .set(LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|e| nl_err("bring up lo", e))?;
        let sockets = if dns { Some(open_dns()?) } else { None };
        let ns = File::open("/proc/thread-self/ns/net")?;
        plug(&host, &inner, &ns, &eps).await?;
        Ok(sockets)
    });
    if res.is_err() {
        let _ = delete_links(veths);
        let _ = remove_sandbox(&p2);
    }
    res
}

/// Run `f` inside the namespace at `path` on a dedicated thread, with a
/// netlink connection there and one in the daemon's namespace.
fn in_sandbox<T, F, Fut>(path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle, Handle, File) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let path = path.to_path_buf();
    on_thread(move || async move {
        let host = connect()?;
        let ns = File::open(&path)
            .map_err(|e| Error::internal(format!("open {}: {e}", path.display())))?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| Error::internal(format!("enter {}: {e}", path.display())))?;
        let inner = connect()?;
        f(host, inner, ns).await
    })
}

/// Plug more endpoints into a running container (`network connect`).
pub fn add_endpoints(path: &Path, eps: Vec<Endpoint>) -> Result<()> {
    let veths: Vec<String> = eps.iter().map(|e| e.host_veth.clone()).collect();
    let res = in_sandbox(path, move |host, inner, ns| async move {
        plug(&host, &inner, &ns, &eps).await
    });
    if res.is_err() {
        let _ = delete_links(veths);
    }
    res
}

/// Open the embedded DNS server's sockets in an existing sandbox (after a
/// daemon restart, or when a container joins its first user network).
pub fn open_dns_in(path: &Path) -> Result<DnsSockets> {
    in_sandbox(path, |_, _, _| async { open_dns() })
}

/// Unmount and remove a sandbox (its veths go with it).
pub fn remove_sandbox(path: &Path) -> Result<()> {
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(Error::internal(format!("unmount {}: {e}", path.display())));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::internal(format!("remove {}: {e}", path.display()))),
    }
}

/// The sandboxes under `dir` (file names are container IDs).
pub fn sandboxes(dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}
