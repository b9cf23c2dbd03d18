//! Network namespaces the tests make, so that berthd's bridges, veths and
//! nftables table never touch the host's network, and so that tests can
//! stand up an "outside world" (another namespace, joined by a veth pair)
//! without any traffic leaving the machine.
//!
//! Each namespace is a named one (`ip netns add`), so a berthd restarted
//! by a test lands in the same one; dropping it deletes it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace with `lo` up.
pub struct Netns {
    pub name: String,
}

#[track_caller]
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// A fresh namespace named `<prefix>-<pid>-<n>`.
    #[track_caller]
    pub fn new(prefix: &str) -> Netns {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `program args…` to be run in this namespace (only its network
    /// namespace changes, unlike `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `f` on a thread inside this namespace (sockets it opens stay
    /// in it) and returns what it returns.
    #[track_caller]
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let f_ns = std::fs::File::open(&path).expect("open netns");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&f_ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
        .join()
        .expect("thread in netns")
    }

    /// Joins this namespace to `other` with a veth pair: `here` (with
    /// `here_addr`, e.g. `10.99.0.1/24`) in this one, `there` (with
    /// `there_addr`) in the other; both up.
    #[track_caller]
    pub fn link_to(
        &self,
        other: &Netns,
        here: &str,
        here_addr: &str,
        there: &str,
        there_addr: &str,
    ) {
        ip(&[
            "-n",
            &self.name,
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ]);
        ip(&["-n", &self.name, "addr", "add", here_addr, "dev", here]);
        ip(&["-n", &self.name, "link", "set", here, "up"]);
        ip(&["-n", &other.name, "addr", "add", there_addr, "dev", there]);
        ip(&["-n", &other.name, "link", "set", there, "up"]);
    }

    /// Adds a route in this namespace (`ip route add <args>`).
    #[track_caller]
    pub fn route(&self, args: &[&str]) {
        let mut a = vec!["-n", &self.name, "route", "add"];
        a.extend_from_slice(args);
        ip(&a);
    }

    /// Names of the links in this namespace.
    pub fn links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// `nft list tables` in this namespace.
    pub fn nft_tables(&self) -> String {
        let out = self
            .command("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
