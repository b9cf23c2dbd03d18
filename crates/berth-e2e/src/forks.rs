//! Counting the processes a daemon starts, from the kernel's process
//! events (the proc connector, `CONFIG_PROC_EVENTS`; root, and the host's
//! network namespace). The kernel reports every fork on the machine with
//! its parent, so a child that lives 10 ms (an `nft`) cannot slip between
//! two looks at /proc.
//!
//! ```text
//! datagram   nlmsghdr (16) | cn_msg (20: idx, val, seq, ack, len, flags) | proc_event
//! proc_event what (4) | cpu (4) | timestamp_ns (8) | data
//!   FORK     parent_pid, parent_tgid, child_pid, child_tgid (4 each)
//!   EXEC     process_pid, process_tgid
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const NLMSG_DONE: u16 = 3;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const EVENT: usize = 16 + 20;

#[derive(Default)]
struct Seen {
    /// Child PID → its command name once it has exec'd ("?" before).
    children: Vec<(u32, String)>,
    index: HashMap<u32, usize>,
    overflowed: bool,
}

/// Processes forked by one parent since the last [`Forks::take`].
pub struct Forks {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    fd: Arc<rustix::fd::OwnedFd>,
}

fn control(fd: &rustix::fd::OwnedFd, op: u32) -> rustix::io::Result<usize> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&40u32.to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&std::process::id().to_ne_bytes());
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&4u16.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&op.to_ne_bytes());
    rustix::net::sendto(fd, &m, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Forks {
    /// Starts counting the processes (not threads) `parent` forks.
    #[track_caller]
    pub fn watch(parent: u32) -> Forks {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::CONNECTOR),
        )
        .expect("open a proc connector socket");
        // Every fork on the machine arrives here; room for a busy one.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, 8 << 20);
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_millis(100)),
        )
        .expect("SO_RCVTIMEO");
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, CN_IDX_PROC))
            .expect("bind the proc connector (needs root in the host's network namespace)");
        control(&fd, PROC_CN_MCAST_LISTEN).expect("subscribe to process events");
        let fd = Arc::new(fd);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (fd, seen, stop) = (fd.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while !stop.load(Ordering::Relaxed) {
                    let n = match rustix::net::recv(&*fd, &mut buf[..], RecvFlags::empty()) {
                        Ok((n, _)) => n,
                        Err(Errno::NOBUFS) => {
                            seen.lock().unwrap().overflowed = true;
                            continue;
                        }
                        Err(Errno::AGAIN | Errno::INTR) => continue,
                        Err(e) => panic!("read process events: {e}"),
                    };
                    let ev = &buf[..n];
                    let field = |i: usize| u32_at(ev, EVENT + 16 + 4 * i);
                    let mut s = seen.lock().unwrap();
                    match u32_at(ev, EVENT) {
                        // parent_pid, parent_tgid, child_pid, child_tgid: a
                        // new process (a thread has child_pid != child_tgid).
                        Some(PROC_EVENT_FORK)
                            if field(1) == Some(parent) && field(2) == field(3) =>
                        {
                            let Some(child) = field(3) else { continue };
                            let i = s.children.len();
                            s.index.insert(child, i);
                            s.children.push((child, "?".to_string()));
                        }
                        // process_pid, process_tgid
                        Some(PROC_EVENT_EXEC) => {
                            let Some(pid) = field(1) else { continue };
                            if let Some(&i) = s.index.get(&pid) {
                                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                                    .map(|c| c.trim().to_string())
                                    .unwrap_or_else(|_| "?".to_string());
                                s.children[i].1 = comm;
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        Forks {
            seen,
            stop,
            reader: Some(reader),
            fd,
        }
    }

    /// The children forked since the last call (PID and command name), in
    /// order. Panics if process events were lost (the count would be wrong).
    #[track_caller]
    pub fn take(&mut self) -> Vec<(u32, String)> {
        // Events of the last moment may still be queued.
        std::thread::sleep(Duration::from_millis(200));
        let mut s = self.seen.lock().unwrap();
        assert!(
            !s.overflowed,
            "process events were lost (the machine forked faster than this test read)"
        );
        s.index.clear();
        std::mem::take(&mut s.children)
    }
}

impl Drop for Forks {
    fn drop(&mut self) {
        let _ = control(&self.fd, PROC_CN_MCAST_IGNORE);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
