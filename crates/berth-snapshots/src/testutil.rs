//! Helpers for the tests: building layer tars by hand, as an attacker would.

use std::io::Write;

use tar::{EntryType, Header};

/// True when running as root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping {test}: needs root");
        false
    }
}

/// Runs `f` on a fresh thread in its own mount namespace, with every
/// mount private, so nothing it mounts is seen by (or leaks to) the host.
pub fn in_mount_namespace(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        #[allow(unsafe_code)]
        // SAFETY: only NEWNS (and the CLONE_FS it implies) is unshared;
        // the fd table stays shared, which is what the safety contract
        // of unshare_unsafe is about.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
            .expect("unshare mount namespace");
        rustix::mount::mount_change(
            "/",
            rustix::mount::MountPropagationFlags::PRIVATE
                | rustix::mount::MountPropagationFlags::REC,
        )
        .expect("make mounts private");
        f()
    })
    .join()
    .expect("test thread panicked");
}

/// Builds a tar in memory, entry by entry.
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

/// Per-entry options.
#[derive(Clone)]
pub struct E {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub major: u32,
    pub minor: u32,
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Default for E {
    fn default() -> Self {
        E {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            link: Vec::new(),
            major: 0,
            minor: 0,
            pax: Vec::new(),
        }
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// Appends an entry with the raw name bytes written straight into the
    /// header (no checks, so `..` and absolute names get through); names
    /// longer than 100 bytes go in a PAX `path` record.
    pub fn raw(&mut self, name: &[u8], kind: EntryType, data: &[u8], o: &E) -> &mut Self {
        let mut pax = o.pax.clone();
        if name.len() >= 100 {
            pax.push(("path".into(), name.to_vec()));
        }
        if o.link.len() >= 100 {
            pax.push(("linkpath".into(), o.link.clone()));
        }
        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax {
                // "<len> <key>=<value>\n", len counting itself.
                let rest = k.len() + v.len() + 3;
                let mut len = rest + 1;
                while len != rest + len.to_string().len() {
                    len = rest + len.to_string().len();
                }
                write!(body, "{len} {k}=").unwrap();
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            let mut h = Header::new_ustar();
            h.as_ustar_mut().unwrap().name[..12].copy_from_slice(b"PaxHeaders/x");
            h.set_entry_type(EntryType::XHeader);
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.b.append(&h, &body[..]).unwrap();
        }
        let mut h = Header::new_ustar();
        let n = name.len().min(99);
        h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        let l = o.link.len().min(99);
        h.as_old_mut().linkname[..l].copy_from_slice(&o.link[..l]);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(o.mode);
        h.set_uid(o.uid);
        h.set_gid(o.gid);
        h.set_mtime(o.mtime);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(o.major).unwrap();
            h.set_device_minor(o.minor).unwrap();
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Regular, data, &E::default())
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        let o = E {
            mode: 0o755,
            ..E::default()
        };
        self.raw(name.as_bytes(), EntryType::Directory, b"", &o)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let o = E {
            mode: 0o777,
            link: target.as_bytes().to_vec(),
            ..E::default()
        };
        self.raw(name.as_bytes(), EntryType::Symlink, b"", &o)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let o = E {
            link: target.as_bytes().to_vec(),
            ..E::default()
        };
        self.raw(name.as_bytes(), EntryType::Link, b"", &o)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.b.finish().unwrap();
        std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}
