//! A container's filesystem as `docker cp` and `docker export` see it:
//! `HEAD/GET/PUT /containers/{id}/archive` and `GET /containers/{id}/export`.
//!
//! Every path the client names is resolved inside the container's root
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks are
//! followed as if the root were `/`, `..` stops at the root, so a path can
//! never name a host file. Where a path string is needed (the stat
//! header's `linkTarget`, the read-only checks), it comes from a walk that
//! opens one component at a time the same way.
//!
//! The root is, for a running container, its init's `/proc/<pid>/root`:
//! the container's own view, volumes, binds and tmpfs included. For a
//! created or stopped one, a thread in a private mount namespace mounts the
//! overlay, binds the volumes and bind sources on their destinations and
//! puts fresh tmpfs on tmpfs destinations (Docker's private view); the
//! mounts die with the thread.
//!
//! Extraction (PUT) is confined to the destination directory: an entry
//! whose name climbs out with `..` is refused, a parent reached through a
//! symlink (in the tar or in the container) must resolve inside the
//! destination, and each parent is then opened with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` from the destination, so a
//! symlink swapped in meanwhile fails instead of leading out. Entries are
//! created with `*at()` calls that never follow the final component.
//! Device nodes are skipped.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_types::{Error, ErrorKind, Result};
use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;
use serde_json::{Value, json};

use crate::ContainerService;
use crate::mounts::{MountPoint, clean_path, mount_points};

/// How many symlinks one path may go through, as Linux.
const MAX_LINKS: usize = 40;
const COPY_BUF: usize = 256 << 10;

/// `X-Docker-Container-Path-Stat`: Docker's `container.PathStat`.
#[derive(Clone, Debug, PartialEq)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits.
    pub mode: u32,
    /// RFC 3339 with nanoseconds, as Go's `time.Time`.
    pub mtime: String,
    pub link_target: String,
}

impl PathStat {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "linkTarget": self.link_target,
        })
    }

    pub fn is_dir(&self) -> bool {
        self.mode & GO_MODE_DIR != 0
    }
}

const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;
const GO_MODE_DEVICE: u32 = 1 << 26;
const GO_MODE_PIPE: u32 = 1 << 25;
const GO_MODE_SOCKET: u32 = 1 << 24;
const GO_MODE_SETUID: u32 = 1 << 23;
const GO_MODE_SETGID: u32 = 1 << 22;
const GO_MODE_CHARDEV: u32 = 1 << 21;
const GO_MODE_STICKY: u32 = 1 << 20;

/// Go's `os.FileMode` of a `stat` mode.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    match FileType::from_raw_mode(st_mode) {
        FileType::Directory => m |= GO_MODE_DIR,
        FileType::Symlink => m |= GO_MODE_SYMLINK,
        FileType::Fifo => m |= GO_MODE_PIPE,
        FileType::Socket => m |= GO_MODE_SOCKET,
        FileType::BlockDevice => m |= GO_MODE_DEVICE,
        FileType::CharacterDevice => m |= GO_MODE_DEVICE | GO_MODE_CHARDEV,
        _ => {}
    }
    if st_mode & 0o4000 != 0 {
        m |= GO_MODE_SETUID;
    }
    if st_mode & 0o2000 != 0 {
        m |= GO_MODE_SETGID;
    }
    if st_mode & 0o1000 != 0 {
        m |= GO_MODE_STICKY;
    }
    m
}

fn rfc3339_nano(secs: i64, nanos: u32) -> String {
    let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap_or_default();
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

// ------------------------------------------------------------ path strings

pub use berth_types::gopath::base as go_base;

/// go-archive's `PreserveTrailingDotOrSeparator`.
pub fn preserve_trailing(cleaned: &str, original: &str) -> String {
    let mut c = cleaned.to_string();
    if go_base(&c) != "." && go_base(original) == "." {
        if !c.ends_with('/') {
            c.push('/');
        }
        c.push('.');
    }
    if !c.ends_with('/') && original.ends_with('/') {
        c.push('/');
    }
    c
}

/// `filepath.Join("/", p)` with a trailing `/` or `/.` kept.
pub fn container_abs(p: &str) -> String {
    preserve_trailing(&clean_path(&format!("/{p}")), p)
}

/// Is `path` (clean, absolute) `base` or below it?
fn within(path: &str, base: &str) -> bool {
    base == "/" || path == base || path.strip_prefix(base).is_some_and(|r| r.starts_with('/'))
}

fn rel_of(path: &str) -> &str {
    let r = path.trim_start_matches('/');
    if r.is_empty() { "." } else { r }
}

// ------------------------------------------------------------ opening

fn errno_err(e: Errno, what: impl std::fmt::Display) -> Error {
    let kind = if e == Errno::NOENT {
        ErrorKind::NotFound
    } else {
        ErrorKind::Internal
    };
    Error::new(kind, format!("{what}: {}", go_errno(e)))
}

/// An errno as Go prints it ("no such file or directory").
fn go_errno(e: Errno) -> String {
    let s = io::Error::from(e).to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

fn openat2_retry(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rfs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, resolve) {
            // A rename raced with `..`: the kernel asks us to retry.
            Err(Errno::AGAIN) if tries < 64 => tries += 1,
            r => return r,
        }
    }
}

/// Open `path` (absolute in the container) inside `root`.
fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    openat2_retry(
        root,
        rel_of(path),
        flags,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Open `rel` below `dir` with no symlink anywhere on the way.
fn open_beneath(dir: BorrowedFd<'_>, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    openat2_retry(
        dir,
        if rel.is_empty() { "." } else { rel },
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Filesystems that are the kernel's, not the container's: Docker's view
/// of a container has only its rootfs and mounts, so these read as empty.
fn is_kernel_fs(fd: BorrowedFd<'_>) -> bool {
    const SYSFS: i64 = 0x6265_6572;
    const CGROUP: i64 = 0x0027_e0eb;
    const CGROUP2: i64 = 0x6367_7270;
    const DEVPTS: i64 = 0x1cd1;
    const MQUEUE: i64 = 0x1980_0202;
    const SECURITYFS: i64 = 0x7363_6673;
    const DEBUGFS: i64 = 0x6462_6720;
    const TRACEFS: i64 = 0x7472_6163;
    const BPF: i64 = 0xcafe_4a11;
    const PSTORE: i64 = 0x6165_676c;
    const CONFIGFS: i64 = 0x6265_6570;
    const FUSECTL: i64 = 0x6573_5546;
    const PROC: i64 = 0x9fa0;
    // f_type's width differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    match rfs::fstatfs(fd) {
        Ok(s) => matches!(
            s.f_type as i64,
            PROC | SYSFS
                | CGROUP
                | CGROUP2
                | DEVPTS
                | MQUEUE
                | SECURITYFS
                | DEBUGFS
                | TRACEFS
                | BPF
                | PSTORE
                | CONFIGFS
                | FUSECTL
        ),
        Err(_) => true,
    }
}

/// moby's `symlink.FollowSymlinkInScope(path, "/")`: `path` with every
/// symlink evaluated inside `root`; missing components are kept as named.
pub(crate) fn follow_in_scope(root: BorrowedFd<'_>, path: &str) -> Result<String> {
    let mut done = String::from("/");
    let mut todo: std::collections::VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            done = parent_of(&done);
            continue;
        }
        let cand = if done == "/" {
            format!("/{c}")
        } else {
            format!("{done}/{c}")
        };
        let fd = match open_in_root(root, &cand, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                done = cand;
                continue;
            }
            Err(e) => return Err(errno_err(e, format!("lstat {cand}"))),
        };
        let st = rfs::fstat(&fd).map_err(|e| errno_err(e, format!("lstat {cand}")))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
            done = cand;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Error::internal(format!(
                "evalSymlinksInScope: too many links in {path}"
            )));
        }
        let target = rfs::readlinkat(&fd, "", Vec::new())
            .map_err(|e| errno_err(e, format!("readlink {cand}")))?;
        let target = target.to_string_lossy().into_owned();
        if target.starts_with('/') {
            done = "/".into();
        }
        for (i, t) in target.split('/').filter(|t| !t.is_empty()).enumerate() {
            todo.insert(i, t.to_string());
        }
    }
    Ok(done)
}

fn parent_of(p: &str) -> String {
    match p.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => p[..i].to_string(),
    }
}

// ------------------------------------------------------------ the view

/// A container's filesystem, rooted at an fd.
pub struct ContainerFs {
    root: OwnedFd,
    mounts: Vec<MountPoint>,
    readonly_rootfs: bool,
    user: String,
}

impl ContainerFs {
    /// A view of the directory `root` (tests, and export).
    pub fn open(root: &Path) -> Result<Self> {
        let fd = rfs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno_err(e, format!("open {}", root.display())))?;
        Ok(ContainerFs {
            root: fd,
            mounts: Vec::new(),
            readonly_rootfs: false,
            user: String::new(),
        })
    }

    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Docker's `containerFSView.Stat`: `lstat` of `abs`, with the fully
    /// evaluated target of a symlink.
    pub fn stat(&self, abs: &str) -> Result<PathStat> {
        let fd = open_in_root(self.root(), abs, OFlags::PATH | OFlags::NOFOLLOW)
            .map_err(|e| errno_err(e, format!("lstat {abs}")))?;
        if is_kernel_fs(fd.as_fd()) && abs != "/" {
            return Err(Error::not_found(format!(
                "lstat {abs}: no such file or directory"
            )));
        }
        let st = rfs::fstat(&fd).map_err(|e| errno_err(e, format!("lstat {abs}")))?;
        let link_target = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            follow_in_scope(self.root(), abs)?
        } else {
            String::new()
        };
        Ok(PathStat {
            name: go_base(abs),
            size: st.st_size,
            mode: go_file_mode(st.st_mode),
            mtime: rfc3339_nano(st.st_mtime, st.st_mtime_nsec as u32),
            link_target,
        })
    }

    /// `GET /archive`: a tar of `abs` whose entries start with the base
    /// name of `abs` (a directory's content under it, a file alone).
    pub fn archive(&self, abs: &str, stat: &PathStat, out: impl Write) -> Result<()> {
        let mut w = TarWriter::new(out);
        let top = go_base(abs);
        if stat.is_dir() {
            let dir = open_in_root(self.root(), abs, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| errno_err(e, format!("open {abs}")))?;
            // The root's entries are "/", "/bin/", … as dockerd names them.
            w.dir_tree(dir, &top)?;
        } else {
            let parent = parent_of(&clean_path(abs));
            let dir = open_in_root(self.root(), &parent, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| errno_err(e, format!("open {parent}")))?;
            let name = go_base(&clean_path(abs));
            w.entry(dir.as_fd(), &name, &top)?;
        }
        w.finish()
    }

    /// `GET /export`: every file of the root, names relative to it.
    pub fn export(&self, out: impl Write) -> Result<()> {
        let mut w = TarWriter::new(out);
        let dir = open_in_root(self.root(), "/", OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| errno_err(e, "open /"))?;
        w.children(dir.as_fd(), "")?;
        w.finish()
    }

    /// `PUT /archive`: extract `tar` (plain, gzip or zstd) into the
    /// directory `path` names (symlinks followed).
    pub fn extract(
        &self,
        path: &str,
        tar: impl Read,
        copy_uid_gid: bool,
        no_overwrite_dir_non_dir: bool,
    ) -> Result<()> {
        let abs_in = container_abs(path);
        let dest = follow_in_scope(self.root(), &abs_in)?;
        let dest_fd = open_in_root(self.root(), &dest, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| match e {
                Errno::NOTDIR => Error::invalid("extraction point is not a directory"),
                e => errno_err(e, format!("lstat {dest}")),
            })?;
        if is_kernel_fs(dest_fd.as_fd()) {
            return Err(Error::not_found(format!(
                "lstat {dest}: no such file or directory"
            )));
        }
        self.check_writable(&dest)?;
        let owner = if copy_uid_gid && !self.user.is_empty() {
            Some(lookup_user(self.root(), &self.user)?)
        } else {
            None
        };
        let mut buffered = io::BufReader::with_capacity(64 << 10, tar);
        let c = berth_snapshots::detect_compression(&mut buffered)
            .map_err(|e| Error::internal(format!("reading the archive: {e}")))?;
        let stream = berth_snapshots::decompress(buffered, c)
            .map_err(|e| Error::internal(format!("reading the archive: {e}")))?;
        let mut ex = Extractor {
            root: self.root(),
            dest: dest.clone(),
            dest_fd,
            owner,
            no_overwrite_dir_non_dir,
            dirs: Vec::new(),
            cache: None,
            buf: vec![0; COPY_BUF],
        };
        let mut ar = tar::Archive::new(stream);
        let entries = ar.entries().map_err(tar_err)?;
        for entry in entries {
            let mut entry = entry.map_err(tar_err)?;
            ex.entry(&mut entry)?;
        }
        ex.finish()
    }

    /// Docker's `checkWritablePath`.
    fn check_writable(&self, abs: &str) -> Result<()> {
        let mut best: Option<&MountPoint> = None;
        for m in &self.mounts {
            let d = clean_path(&m.destination);
            if within(abs, &d) && best.is_none_or(|b| b.destination.len() < d.len()) {
                best = Some(m);
            }
        }
        match best {
            Some(m) if m.rw => Ok(()),
            Some(_) => Err(Error::invalid("mounted volume is marked read-only")),
            None if self.readonly_rootfs => {
                Err(Error::invalid("container rootfs is marked read-only"))
            }
            None => Ok(()),
        }
    }
}

fn tar_err(e: io::Error) -> Error {
    Error::internal(format!("reading the archive: {e}"))
}

/// `user[:group]` of the container, as numbers, from its own passwd and
/// group files (moby's `getUIDGID`).
fn lookup_user(root: BorrowedFd<'_>, spec: &str) -> Result<(u32, u32)> {
    let read = |p: &str| -> String {
        let Ok(fd) = open_in_root(root, p, OFlags::RDONLY) else {
            return String::new();
        };
        let mut s = String::new();
        let _ = std::fs::File::from(fd).take(4 << 20).read_to_string(&mut s);
        s
    };
    let (u, g) = spec.split_once(':').unwrap_or((spec, ""));
    let (mut uid, mut gid) = (0u32, 0u32);
    if !u.is_empty() {
        let passwd = read("/etc/passwd");
        let entry = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u)));
        match (entry, u.parse::<u32>()) {
            (Some(f), _) => {
                uid = f[2].parse().unwrap_or(0);
                gid = f[3].parse().unwrap_or(0);
            }
            (None, Ok(n)) => uid = n,
            (None, Err(_)) => {
                return Err(Error::invalid(format!(
                    "failed to look up user \"{u}\" in container: no matching entries in passwd file"
                )));
            }
        }
    }
    if !g.is_empty() {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => read("/etc/group")
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "failed to look up group \"{g}\" in container: no matching entries in group file"
                    ))
                })?,
        };
    }
    Ok((uid, gid))
}

// ------------------------------------------------------------ writing tars

struct TarWriter<W: Write> {
    out: W,
    /// (dev, ino) of files with more than one link → the name first written.
    links: HashMap<(u64, u64), String>,
    buf: Vec<u8>,
}

fn header_name(name: &str, dir: bool) -> String {
    if dir && !name.ends_with('/') {
        format!("{name}/")
    } else {
        name.to_string()
    }
}

impl<W: Write> TarWriter<W> {
    fn new(out: W) -> Self {
        TarWriter {
            out,
            links: HashMap::new(),
            buf: vec![0; COPY_BUF],
        }
    }

    fn io(e: io::Error) -> Error {
        Error::internal(format!("writing the archive: {e}"))
    }

    fn finish(mut self) -> Result<()> {
        self.out.write_all(&[0u8; 1024]).map_err(Self::io)?;
        self.out.flush().map_err(Self::io)
    }

    fn raw(&mut self, h: &tar::Header) -> Result<()> {
        self.out.write_all(h.as_bytes()).map_err(Self::io)
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        let rem = (512 - (len % 512)) % 512;
        self.out
            .write_all(&[0u8; 512][..rem as usize])
            .map_err(Self::io)
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> Result<()> {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len = len.to_string().len() + body_len;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.as_ustar_mut().expect("ustar").name[..9].copy_from_slice(b"PaxHeader");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.raw(&h)?;
        self.out.write_all(&data).map_err(Self::io)?;
        self.pad(data.len() as u64)
    }

    /// A header for `name` (and `link`), with a PAX record when they do not
    /// fit in ustar's fields.
    fn header(&mut self, h: &mut tar::Header, name: &str, link: Option<&[u8]>) -> Result<()> {
        let mut records: Vec<(&str, &[u8])> = Vec::new();
        let n = name.as_bytes();
        let ustar = h.as_ustar_mut().expect("ustar header");
        if n.len() <= 100 {
            ustar.name[..n.len()].copy_from_slice(n);
        } else if let Some(split) = (0..n.len())
            .rev()
            .find(|&i| n[i] == b'/' && i <= 155 && n.len() - i - 1 <= 100 && i > 0)
        {
            ustar.prefix[..split].copy_from_slice(&n[..split]);
            ustar.name[..n.len() - split - 1].copy_from_slice(&n[split + 1..]);
        } else {
            records.push(("path", n));
            let tail = &n[n.len() - 100..];
            ustar.name.copy_from_slice(tail);
        }
        if let Some(l) = link {
            if l.len() <= 100 {
                ustar.linkname[..l.len()].copy_from_slice(l);
            } else {
                records.push(("linkpath", l));
                ustar.linkname.copy_from_slice(&l[..100]);
            }
        }
        if !records.is_empty() {
            self.pax(&records)?;
        }
        h.set_cksum();
        self.raw(h)
    }

    /// Write `name` (an entry of `dir`) as `as_name`, and a directory's
    /// content below it.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &str, as_name: &str) -> Result<()> {
        let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since it was listed.
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(errno_err(e, format!("lstat {as_name}"))),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let mut h = tar::Header::new_ustar();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        if ft != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                h.set_entry_type(tar::EntryType::Link);
                return self.header(&mut h, as_name, Some(first.as_bytes()));
            }
            self.links.insert(key, as_name.to_string());
        }
        match ft {
            FileType::Directory => {
                h.set_entry_type(tar::EntryType::Directory);
                self.header(&mut h, &header_name(as_name, true), None)?;
                let child = match rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => return Ok(()),
                    Err(e) => return Err(errno_err(e, format!("open {as_name}"))),
                };
                if is_kernel_fs(child.as_fd()) {
                    return Ok(());
                }
                self.children(child.as_fd(), as_name)
            }
            FileType::RegularFile => {
                let f = match rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => return Ok(()),
                    Err(e) => return Err(errno_err(e, format!("open {as_name}"))),
                };
                let fst = rfs::fstat(&f).map_err(|e| errno_err(e, format!("stat {as_name}")))?;
                if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile {
                    return Ok(());
                }
                let mut cap = [0u8; 256];
                if let Ok(n) = rfs::fgetxattr(&f, "security.capability", &mut cap[..]) {
                    self.pax(&[("SCHILY.xattr.security.capability", &cap[..n])])?;
                }
                let size = fst.st_size.max(0) as u64;
                h.set_size(size);
                h.set_entry_type(tar::EntryType::Regular);
                self.header(&mut h, as_name, None)?;
                self.copy_exact(std::fs::File::from(f), size)?;
                self.pad(size)
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| errno_err(e, format!("readlink {as_name}")))?;
                h.set_entry_type(tar::EntryType::Symlink);
                self.header(&mut h, as_name, Some(target.as_bytes()))
            }
            FileType::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                self.header(&mut h, as_name, None)
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                h.set_entry_type(if ft == FileType::CharacterDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                let rdev = st.st_rdev;
                h.set_device_major(rfs::major(rdev)).map_err(Self::io)?;
                h.set_device_minor(rfs::minor(rdev)).map_err(Self::io)?;
                self.header(&mut h, as_name, None)
            }
            // Sockets cannot be archived (Go's tar skips them too).
            _ => Ok(()),
        }
    }

    /// The entries of `dir`, sorted, as `prefix/name`.
    fn children(&mut self, dir: BorrowedFd<'_>, prefix: &str) -> Result<()> {
        let mut names: Vec<String> = Vec::new();
        let d = rfs::Dir::read_from(dir).map_err(|e| errno_err(e, format!("read {prefix}")))?;
        for ent in d {
            let ent = ent.map_err(|e| errno_err(e, format!("read {prefix}")))?;
            let n = ent.file_name().to_string_lossy().into_owned();
            if n != "." && n != ".." {
                names.push(n);
            }
        }
        names.sort();
        for n in names {
            let as_name = if prefix.is_empty() {
                n.clone()
            } else {
                format!("{}/{n}", prefix.trim_end_matches('/'))
            };
            self.entry(dir, &n, &as_name)?;
        }
        Ok(())
    }

    fn dir_tree(&mut self, dir: OwnedFd, prefix: &str) -> Result<()> {
        let st = rfs::fstat(&dir).map_err(|e| errno_err(e, format!("stat {prefix}")))?;
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        self.header(&mut h, &header_name(prefix, true), None)?;
        if is_kernel_fs(dir.as_fd()) {
            return Ok(());
        }
        self.children(dir.as_fd(), prefix)
    }

    /// Exactly `size` bytes of `f`: a file that shrank meanwhile is padded
    /// with zeros, one that grew is cut, so the archive stays well formed.
    fn copy_exact(&mut self, mut f: std::fs::File, size: u64) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match f.read(&mut self.buf[..want]) {
                Ok(0) => {
                    self.buf[..want].fill(0);
                    want
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::internal(format!("reading a file: {e}"))),
            };
            self.out.write_all(&self.buf[..n]).map_err(Self::io)?;
            left -= n as u64;
        }
        Ok(())
    }
}

// ------------------------------------------------------------ extracting

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    /// The destination, absolute in the container, symlinks evaluated.
    dest: String,
    dest_fd: OwnedFd,
    owner: Option<(u32, u32)>,
    no_overwrite_dir_non_dir: bool,
    /// Directories made or updated, with their times, set at the end.
    dirs: Vec<(String, Timestamps)>,
    /// The last parent directory opened (its path relative to `dest`).
    cache: Option<(String, OwnedFd)>,
    buf: Vec<u8>,
}

fn not_local(name: &str) -> bool {
    name == ".." || name.starts_with("../")
}

impl Extractor<'_> {
    fn finish(mut self) -> Result<()> {
        for (rel, times) in std::mem::take(&mut self.dirs).into_iter().rev() {
            if let Ok(fd) = open_beneath(
                self.dest_fd.as_fd(),
                &rel,
                OFlags::RDONLY | OFlags::DIRECTORY,
            ) {
                let _ = rfs::futimens(&fd, &times);
            }
        }
        Ok(())
    }

    /// The directory `rel` (relative to the destination, clean) opened
    /// without symlinks, after resolving symlinks in it inside the
    /// container and checking the result stays in the destination; missing
    /// directories are made.
    fn parent(&mut self, rel: &str) -> Result<BorrowedFd<'_>> {
        if self.cache.as_ref().is_some_and(|(r, _)| r == rel) {
            return Ok(self.cache.as_ref().unwrap().1.as_fd());
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let fd = match open_beneath(self.dest_fd.as_fd(), rel, flags) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::XDEV | Errno::NOTDIR) => {
                let joined = if rel.is_empty() {
                    self.dest.clone()
                } else if self.dest == "/" {
                    format!("/{rel}")
                } else {
                    format!("{}/{rel}", self.dest)
                };
                let resolved = follow_in_scope(self.root, &joined)?;
                if !within(&resolved, &self.dest) {
                    return Err(Error::internal(format!(
                        "resolved parent {resolved:?} escapes root {:?}",
                        self.dest
                    )));
                }
                let inner = resolved[self.dest.len()..]
                    .trim_start_matches('/')
                    .to_string();
                match open_beneath(self.dest_fd.as_fd(), &inner, flags) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => self.mkdir_all(&inner)?,
                    Err(e) => return Err(errno_err(e, format!("open {resolved}"))),
                }
            }
            Err(e) => return Err(errno_err(e, format!("open {}/{rel}", self.dest))),
        };
        self.cache = Some((rel.to_string(), fd));
        Ok(self.cache.as_ref().unwrap().1.as_fd())
    }

    fn mkdir_all(&self, rel: &str) -> Result<OwnedFd> {
        let mut cur = rfs::openat(
            &self.dest_fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno_err(e, format!("open {}", self.dest)))?;
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            match rfs::mkdirat(&cur, c, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(errno_err(e, format!("mkdir {}/{rel}", self.dest))),
            }
            cur = rfs::openat(
                &cur,
                c,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno_err(e, format!("open {}/{rel}", self.dest)))?;
        }
        Ok(cur)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let typ = entry.header().entry_type();
        if typ == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        let name = clean_path(raw.trim_start_matches('/'));
        if name == "." {
            return Ok(());
        }
        if not_local(&name) {
            return Err(Error::internal(format!("invalid entry name {raw:?}")));
        }
        let h = entry.header();
        // Empty numeric fields read as 0, as Go's archive/tar reads them.
        let mode = h.mode().unwrap_or(0) & 0o7777;
        let (uid, gid) = match self.owner {
            Some(o) => o,
            None => (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32),
        };
        let mtime = h.mtime().unwrap_or(0) as i64;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let (parent_rel, base) = match name.rfind('/') {
            Some(i) => (name[..i].to_string(), name[i + 1..].to_string()),
            None => (String::new(), name.clone()),
        };
        let is_dir = typ == tar::EntryType::Directory;
        // A hard link's target is resolved before anything is replaced.
        let hard_target = if typ == tar::EntryType::Link {
            let l = link.clone().unwrap_or_default();
            let cleaned = clean_path(l.trim_start_matches('/'));
            if cleaned == "." || not_local(&cleaned) {
                return Err(Error::internal(format!("invalid hardlink target {l:?}")));
            }
            Some(cleaned)
        } else {
            None
        };
        let dest = self.dest.clone();
        let no_overwrite = self.no_overwrite_dir_non_dir;
        let parent = self.parent(&parent_rel)?;
        let parent_owned = rfs::openat(
            parent,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno_err(e, format!("open {dest}/{parent_rel}")))?;
        let parent = parent_owned.as_fd();
        match rfs::statat(parent, base.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let existing_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if no_overwrite && existing_dir && !is_dir {
                    return Err(Error::internal(format!(
                        "cannot overwrite directory {name:?} with non-directory {dest:?}"
                    )));
                }
                if no_overwrite && !existing_dir && is_dir {
                    return Err(Error::internal(format!(
                        "cannot overwrite non-directory {name:?} with directory {dest:?}"
                    )));
                }
                if !existing_dir || !is_dir {
                    remove_all(parent, &base)
                        .map_err(|e| errno_err(e, format!("remove {name}")))?;
                }
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(errno_err(e, format!("lstat {name}"))),
        }
        let perm = Mode::from_raw_mode(mode & 0o777);
        let what = |e: Errno| errno_err(e, format!("extract {name}"));
        match typ {
            tar::EntryType::Directory => {
                match rfs::mkdirat(parent, base.as_str(), perm) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(what(e)),
                }
                let fd = rfs::openat(
                    parent,
                    base.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(what)?;
                rfs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(what)?;
                rfs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(what)?;
                let rel = if parent_rel.is_empty() {
                    base.clone()
                } else {
                    format!("{parent_rel}/{base}")
                };
                self.dirs.push((rel, times));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if typ == tar::EntryType::GNUSparse {
                    return Err(Error::internal(format!(
                        "unhandled tar header type {}",
                        'S'
                    )));
                }
                let fd = rfs::openat(
                    parent,
                    base.as_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    perm,
                )
                .map_err(what)?;
                let mut f = std::fs::File::from(fd);
                loop {
                    let n = entry.read(&mut self.buf).map_err(tar_err)?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&self.buf[..n])
                        .map_err(|e| Error::internal(format!("extract {name}: {e}")))?;
                }
                rfs::fchown(&f, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(what)?;
                rfs::fchmod(&f, Mode::from_raw_mode(mode)).map_err(what)?;
                rfs::futimens(&f, &times).map_err(what)?;
            }
            tar::EntryType::Symlink => {
                let target = link.unwrap_or_default();
                rfs::symlinkat(target.as_str(), parent, base.as_str()).map_err(what)?;
                rfs::chownat(
                    parent,
                    base.as_str(),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(what)?;
                let _ = rfs::utimensat(parent, base.as_str(), &times, AtFlags::SYMLINK_NOFOLLOW);
            }
            tar::EntryType::Link => {
                let target = hard_target.unwrap_or_default();
                let (tp, tb) = match target.rfind('/') {
                    Some(i) => (target[..i].to_string(), target[i + 1..].to_string()),
                    None => (String::new(), target.clone()),
                };
                let tdir = self.parent(&tp)?;
                let tdir = rfs::openat(
                    tdir,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(what)?;
                rfs::linkat(&tdir, tb.as_str(), parent, base.as_str(), AtFlags::empty())
                    .map_err(what)?;
            }
            tar::EntryType::Fifo => {
                rfs::mknodat(parent, base.as_str(), FileType::Fifo, perm, 0).map_err(what)?;
                rfs::chownat(
                    parent,
                    base.as_str(),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(what)?;
                let _ = rfs::utimensat(parent, base.as_str(), &times, AtFlags::SYMLINK_NOFOLLOW);
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                tracing::warn!(entry = %name, "cp: device node skipped");
            }
            tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
            }
            other => {
                return Err(Error::internal(format!(
                    "unhandled tar header type {}",
                    other.as_byte() as char
                )));
            }
        }
        Ok(())
    }
}

/// Remove `name` in `dir`, a directory with everything below it; never
/// follows a symlink.
fn remove_all(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    let sub = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in rfs::Dir::read_from(&sub)? {
        let ent = ent?;
        let n = ent.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            names.push(n);
        }
    }
    for n in names {
        remove_all(sub.as_fd(), &n)?;
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

// ------------------------------------------------------------ the service

/// How the view of a container was obtained.
enum Access {
    /// A running container: its init's root.
    Running(OwnedFd),
    /// Not running: mount a private view on a thread.
    Stopped {
        lowers: Vec<PathBuf>,
        dir: PathBuf,
        /// (mount point, host source) for volumes, binds and the
        /// network files.
        binds: Vec<(MountPoint, PathBuf)>,
    },
}

impl ContainerService {
    /// Run `f` on the container's filesystem, on a thread of its own.
    /// The container's lock is held while a stopped container's view
    /// exists, so it cannot start meanwhile.
    pub async fn with_fs<T: Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        f: impl FnOnce(&ContainerFs, &Value) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let row = self.find(name)?;
        let lock = self.lock(&row.id);
        let mut guard = Some(lock.lock_owned().await);
        let row = self.find(&row.id)?;
        let rec = row.record.clone();
        let mounts = mount_points(&rec);
        let readonly_rootfs = rec["HostConfig"]["ReadonlyRootfs"].as_bool() == Some(true);
        let user = rec["Config"]["User"].as_str().unwrap_or("").to_string();
        let running = rec["State"]["Running"].as_bool() == Some(true);
        let access = if running {
            let pid = rec["State"]["Pid"].as_i64().unwrap_or(0);
            let proc_dir = rfs::open(
                format!("/proc/{pid}").as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            );
            let root = proc_dir.and_then(|d| {
                rfs::openat(
                    &d,
                    "root",
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            });
            // The init must still be the container's after the open: then
            // the pid was not reused in between.
            let st = crate::shim::call(&self.socket(&row.id), json!({"op": "state"})).await;
            match (root, st) {
                (Ok(fd), Ok(st))
                    if st["running"].as_bool() == Some(true) && st["pid"].as_i64() == Some(pid) =>
                {
                    guard = None;
                    Access::Running(fd)
                }
                _ => {
                    return Err(Error::conflict(format!(
                        "container {} is not running any more",
                        row.id
                    )));
                }
            }
        } else {
            let lowers = self.lower_dirs(&row)?;
            let mut binds: Vec<(MountPoint, PathBuf)> = Vec::new();
            let release = |binds: &[(MountPoint, PathBuf)]| {
                for (mp, _) in binds {
                    if mp.typ == "volume"
                        && let Ok(v) = self.volumes()
                    {
                        let _ = v.unmount(&mp.name, &row.id);
                    }
                }
            };
            for mp in &mounts {
                match mp.typ.as_str() {
                    "volume" => {
                        let mounted = self.volumes().and_then(|v| v.mount(&mp.name, &row.id));
                        let path = match mounted {
                            Ok(p) => p,
                            Err(e) => {
                                release(&binds);
                                return Err(e);
                            }
                        };
                        let mut src = path;
                        if let Some(sub) = mp
                            .spec
                            .volume_options
                            .as_ref()
                            .map(|v| v.subpath.as_str())
                            .filter(|s| !s.is_empty())
                        {
                            src = src.join(clean_path(sub));
                        }
                        binds.push((mp.clone(), src));
                    }
                    "bind" => binds.push((mp.clone(), PathBuf::from(&mp.source))),
                    _ => {}
                }
            }
            // dockerd's view also has the container's network files
            // (unless a mount covers them); tmpfs destinations stay the
            // rootfs's own directories, as in dockerd's view.
            let dir = self.dir(&row.id);
            for f in ["hostname", "hosts", "resolv.conf"] {
                let dest = format!("/etc/{f}");
                let src = dir.join(f);
                if src.is_file() && !mounts.iter().any(|m| clean_path(&m.destination) == dest) {
                    let mp = MountPoint {
                        typ: "bind".into(),
                        destination: dest,
                        rw: !readonly_rootfs,
                        ..Default::default()
                    };
                    binds.push((mp, src));
                }
            }
            Access::Stopped { lowers, dir, binds }
        };
        let this = self.clone();
        let id = row.id.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            match access {
                Access::Running(root) => {
                    let fs = ContainerFs {
                        root,
                        mounts,
                        readonly_rootfs,
                        user,
                    };
                    f(&fs, &rec)
                }
                Access::Stopped { lowers, dir, binds } => {
                    let res = berth_snapshots::in_private_mount_namespace(|| {
                        let rootfs = dir.join("rootfs");
                        berth_snapshots::mount_overlay(
                            &lowers,
                            &dir.join("upper"),
                            &dir.join("work"),
                            &rootfs,
                        )?;
                        let res = (|| {
                            let fs_root = rfs::open(
                                &rootfs,
                                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                                Mode::empty(),
                            )
                            .map_err(|e| errno_err(e, format!("open {}", rootfs.display())))?;
                            private_mounts(fs_root.as_fd(), &binds)?;
                            let fs = ContainerFs {
                                root: fs_root,
                                mounts,
                                readonly_rootfs,
                                user,
                            };
                            f(&fs, &rec)
                        })();
                        let _ = berth_snapshots::unmount_detach(&rootfs);
                        res
                    });
                    for (mp, _) in &binds {
                        if mp.typ == "volume"
                            && let Ok(v) = this.volumes()
                        {
                            let _ = v.unmount(&mp.name, &id);
                        }
                    }
                    res
                }
            }
        })
        .await
        .map_err(|e| Error::internal(format!("archive task failed: {e}")))?
    }

    /// `HEAD /containers/{id}/archive`.
    pub async fn archive_stat(self: &Arc<Self>, name: &str, path: &str) -> Result<PathStat> {
        check_path(path)?;
        let abs = container_abs(path);
        let r = self.with_fs(name, move |fs, _| fs.stat(&abs)).await;
        not_found_as_docker(r, path, name)
    }

    /// `GET /containers/{id}/archive`: `start` gets the stat and returns
    /// where the tar goes (or None to stop: the client went away).
    pub async fn archive_read<W: Write + Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        path: &str,
        start: impl FnOnce(&PathStat) -> Option<W> + Send + 'static,
    ) -> Result<()> {
        check_path(path)?;
        let abs = container_abs(path);
        let this = self.clone();
        let r = self
            .with_fs(name, move |fs, rec| {
                let stat = fs.stat(&abs)?;
                let Some(out) = start(&stat) else {
                    return Ok(());
                };
                this.event("archive-path", rec);
                fs.archive(&abs, &stat, out)
            })
            .await;
        not_found_as_docker(r, path, name)
    }

    /// `PUT /containers/{id}/archive`.
    pub async fn archive_extract<R: Read + Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        path: &str,
        copy_uid_gid: bool,
        no_overwrite_dir_non_dir: bool,
        body: R,
    ) -> Result<()> {
        check_path(path)?;
        let p = path.to_string();
        let this = self.clone();
        let r = self
            .with_fs(name, move |fs, rec| {
                fs.extract(&p, body, copy_uid_gid, no_overwrite_dir_non_dir)?;
                this.event("extract-to-dir", rec);
                Ok(())
            })
            .await;
        not_found_as_docker(r, path, name)
    }

    /// `GET /containers/{id}/export`: the container's root filesystem
    /// (without its volumes and mounts) as a tar.
    pub async fn export<W: Write + Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        start: impl FnOnce() -> Option<W> + Send + 'static,
    ) -> Result<()> {
        let row = self.find(name)?;
        let lock = self.lock(&row.id);
        let guard = lock.lock_owned().await;
        let row = self.find(&row.id)?;
        let dir = self.dir(&row.id);
        let running = row.record["State"]["Running"].as_bool() == Some(true);
        let lowers = self.lower_dirs(&row)?;
        let this = self.clone();
        let rec = row.record.clone();
        let rootfs = dir.join("rootfs");
        let live = running && crate::is_mountpoint(&rootfs);
        tokio::task::spawn_blocking(move || {
            let write = |fs: &ContainerFs| -> Result<()> {
                let Some(out) = start() else {
                    return Ok(());
                };
                this.event("export", &rec);
                fs.export(out)
            };
            berth_snapshots::in_private_mount_namespace(|| {
                if live {
                    // Read our copy of the running container's overlay,
                    // made private so that the daemon's unmount when the
                    // container stops never finds it busy because of us.
                    rustix::mount::mount_change(
                        "/",
                        rustix::mount::MountPropagationFlags::PRIVATE
                            | rustix::mount::MountPropagationFlags::REC,
                    )
                    .map_err(|e| errno_err(e, "make mounts private"))?;
                    let fs = ContainerFs::open(&rootfs)?;
                    // The container may stop or restart meanwhile.
                    drop(guard);
                    return write(&fs);
                }
                berth_snapshots::mount_overlay(
                    &lowers,
                    &dir.join("upper"),
                    &dir.join("work"),
                    &rootfs,
                )?;
                let res = ContainerFs::open(&rootfs).and_then(|fs| write(&fs));
                let _ = berth_snapshots::unmount_detach(&rootfs);
                drop(guard);
                res
            })
        })
        .await
        .map_err(|e| Error::internal(format!("export task failed: {e}")))?
    }
}

fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(Error::invalid("bad parameter: path cannot be empty"));
    }
    Ok(())
}

fn not_found_as_docker<T>(r: Result<T>, path: &str, name: &str) -> Result<T> {
    r.map_err(|e| {
        if e.kind == ErrorKind::NotFound && !e.message.starts_with("No such container") {
            Error::not_found(format!(
                "Could not find the file {path} in container {name}"
            ))
        } else {
            e
        }
    })
}

/// In a private mount namespace: volumes, binds and network files on
/// their destinations (resolved in the root, made if missing).
fn private_mounts(root: BorrowedFd<'_>, binds: &[(MountPoint, PathBuf)]) -> Result<()> {
    let mut all: Vec<&(MountPoint, PathBuf)> = binds.iter().collect();
    all.sort_by_key(|(m, _)| clean_path(&m.destination).matches('/').count());
    for (mp, src) in all {
        let dest = clean_path(&mp.destination);
        let is_dir = std::fs::metadata(src).map(|m| m.is_dir()).unwrap_or(true);
        let target = match open_in_root(root, &dest, OFlags::PATH) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                create_in_root(root, &dest, is_dir)?;
                open_in_root(root, &dest, OFlags::PATH)
                    .map_err(|e| errno_err(e, format!("open mount target {dest}")))?
            }
            Err(e) => return Err(errno_err(e, format!("open mount target {dest}"))),
        };
        // Mount on the fd, not on a path a symlink could redirect.
        let fd_path = format!(
            "/proc/thread-self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&target)
        );
        rustix::mount::mount_bind_recursive(src.as_path(), fd_path.as_str())
            .map_err(|e| errno_err(e, format!("bind {} on {dest}", src.display())))?;
        if !mp.rw {
            let real = rfs::readlink(fd_path.as_str(), Vec::new())
                .map_err(|e| errno_err(e, format!("readlink {fd_path}")))?;
            let real = PathBuf::from(std::ffi::OsString::from_vec(real.into_bytes()));
            rustix::mount::mount_remount(
                &real,
                rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
                "",
            )
            .map_err(|e| errno_err(e, format!("remount {dest} read-only")))?;
        }
    }
    Ok(())
}

/// Make `dest` (a directory, or an empty file) inside `root`, parents too.
fn create_in_root(root: BorrowedFd<'_>, dest: &str, is_dir: bool) -> Result<()> {
    let comps: Vec<&str> = dest.split('/').filter(|c| !c.is_empty()).collect();
    let mut cur = String::from("/");
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let parent = open_in_root(root, &cur, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| errno_err(e, format!("open {cur}")))?;
        let r = if last && !is_dir {
            rfs::openat(
                &parent,
                *c,
                OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o755),
            )
            .map(drop)
        } else {
            rfs::mkdirat(&parent, *c, Mode::from_raw_mode(0o755))
        };
        match r {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(errno_err(e, format!("create mount target {dest}"))),
        }
        // Follow what is there now (a symlink stays inside the root).
        cur = follow_in_scope(root, &format!("{}/{c}", cur.trim_end_matches('/')))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_with_links() -> (tempfile::TempDir, ContainerFs) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("dest")).unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nu:x:7:8::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(t.path().join("host-secret"), "secret").unwrap();
        symlink("/", r.join("evil")).unwrap();
        symlink("../../../../etc", r.join("evil2")).unwrap();
        symlink(t.path().join("host-secret"), r.join("hostfile")).unwrap();
        let fs = ContainerFs::open(&r).unwrap();
        (t, fs)
    }

    fn tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, typ, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*typ);
            h.set_mode(0o644);
            let ustar = h.as_ustar_mut().unwrap();
            ustar.name[..name.len()].copy_from_slice(name.as_bytes());
            if matches!(typ, tar::EntryType::Symlink | tar::EntryType::Link) {
                ustar.linkname[..data.len()].copy_from_slice(data.as_bytes());
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn paths_resolve_inside_the_root() {
        let (t, fs) = root_with_links();
        assert_eq!(follow_in_scope(fs.root(), "/evil/etc").unwrap(), "/etc");
        assert_eq!(
            follow_in_scope(fs.root(), "/evil2/passwd").unwrap(),
            "/etc/passwd"
        );
        assert_eq!(follow_in_scope(fs.root(), "/../../..").unwrap(), "/");
        let host = t.path().join("host-secret").display().to_string();
        assert_eq!(follow_in_scope(fs.root(), "/hostfile").unwrap(), host);
        // The host file is not the container's: not found.
        let st = fs.stat("/hostfile").unwrap();
        assert_eq!(st.mode & GO_MODE_SYMLINK, GO_MODE_SYMLINK);
        assert_eq!(st.link_target, host);
        let e = fs.stat(&host).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        let st = fs.stat("/evil2/passwd").unwrap();
        assert_eq!((st.name.as_str(), st.size), ("passwd", 41));
        assert_eq!(st.mode, 0o644);
    }

    #[test]
    fn archives_name_entries_after_the_requested_path() {
        let (_t, fs) = root_with_links();
        let mut out = Vec::new();
        let st = fs.stat("/evil2/").unwrap();
        assert!(st.is_dir());
        fs.archive("/evil2/", &st, &mut out).unwrap();
        let mut ar = tar::Archive::new(&out[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
            .collect();
        assert_eq!(names, ["evil2/", "evil2/passwd"]);
        let mut out = Vec::new();
        let st = fs.stat("/hostfile").unwrap();
        fs.archive("/hostfile", &st, &mut out).unwrap();
        let mut ar = tar::Archive::new(&out[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
        assert_eq!(e.header().size().unwrap(), 0, "a link, never the host file");
    }

    #[test]
    fn extraction_stays_in_the_destination() {
        let (t, fs) = root_with_links();
        let host = t.path().display().to_string();
        type Entries<'a> = &'a [(&'a str, tar::EntryType, &'a str)];
        let cases: &[(Entries, &str)] = &[
            (
                &[("../x", tar::EntryType::Regular, "x")],
                "invalid entry name",
            ),
            (
                &[("a/../../x", tar::EntryType::Regular, "x")],
                "invalid entry name",
            ),
            (
                &[
                    ("l", tar::EntryType::Symlink, "/etc"),
                    ("l/x", tar::EntryType::Regular, "x"),
                ],
                "escapes root",
            ),
            (
                &[
                    ("l2", tar::EntryType::Symlink, "../.."),
                    ("l2/x", tar::EntryType::Regular, "x"),
                ],
                "escapes root",
            ),
            (
                &[("h", tar::EntryType::Link, "../etc/passwd")],
                "invalid hardlink target",
            ),
        ];
        for (entries, want) in cases {
            let e = fs
                .extract("/dest", &tar(entries)[..], false, true)
                .unwrap_err();
            assert!(e.message.contains(want), "{entries:?}: {e}");
        }
        // A symlink to a host path, extracted into the root, stays inside it.
        let abs = [
            ("hl", tar::EntryType::Symlink, host.as_str()),
            ("hl/x", tar::EntryType::Regular, "x"),
        ];
        fs.extract("/", &tar(&abs)[..], false, true).unwrap();
        assert!(!t.path().join("x").exists());
        let inside = t
            .path()
            .join("root")
            .join(host.trim_start_matches('/'))
            .join("x");
        assert_eq!(std::fs::read_to_string(inside).unwrap(), "x");
        // Through /evil the destination is the root, never the host's /.
        fs.extract(
            "/evil",
            &tar(&[("f", tar::EntryType::Regular, "y")])[..],
            false,
            true,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("root/f")).unwrap(),
            "y"
        );
        let e = fs
            .extract(
                "/etc/passwd",
                &tar(&[("f", tar::EntryType::Regular, "y")])[..],
                false,
                true,
            )
            .unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (
                ErrorKind::InvalidArgument,
                "extraction point is not a directory"
            )
        );
        // noOverwriteDirNonDir.
        let e = fs
            .extract(
                "/",
                &tar(&[("etc", tar::EntryType::Regular, "z")])[..],
                false,
                true,
            )
            .unwrap_err();
        assert!(e.message.contains("cannot overwrite directory"), "{e}");
        assert_eq!(
            std::fs::read_to_string(t.path().join("host-secret")).unwrap(),
            "secret"
        );
    }

    #[test]
    fn long_names_and_link_targets_round_trip() {
        let (t, fs) = root_with_links();
        let deep: Vec<String> = (0..12)
            .map(|i| format!("directory-number-{i:02}-xxxxxxxx"))
            .collect();
        let rel = deep.join("/");
        let dir = t.path().join("root/dest").join(&rel);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), "deep").unwrap();
        let long_target = "t".repeat(150);
        symlink(&long_target, dir.join("ln")).unwrap();
        std::fs::hard_link(dir.join("file"), t.path().join("root/dest/hard")).unwrap();
        let st = fs.stat("/dest").unwrap();
        let mut out = Vec::new();
        fs.archive("/dest", &st, &mut out).unwrap();
        // Read back with another tar implementation, then extract it again.
        let mut ar = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.to_vec()).unwrap());
            seen.push((name, e.header().entry_type(), link));
        }
        let file = format!("dest/{rel}/file");
        assert!(file.len() > 255);
        assert!(
            seen.iter()
                .any(|(n, ty, _)| *n == file && *ty == tar::EntryType::Regular)
        );
        assert!(
            seen.iter()
                .any(|(n, _, l)| n.ends_with("/ln") && l.as_deref() == Some(long_target.as_str()))
        );
        // The second name of the inode is a hard link to the first.
        let links: Vec<_> = seen
            .iter()
            .filter(|(_, ty, _)| *ty == tar::EntryType::Link)
            .collect();
        assert_eq!(links.len(), 1, "{seen:?}");
        std::fs::create_dir_all(t.path().join("root/again")).unwrap();
        fs.extract("/again", &out[..], false, true).unwrap();
        let back = t.path().join("root/again").join(&file);
        assert_eq!(std::fs::read_to_string(back).unwrap(), "deep");
        let ln = t.path().join("root/again/dest").join(&rel).join("ln");
        assert_eq!(
            std::fs::read_link(ln).unwrap().to_str().unwrap(),
            long_target
        );
    }

    /// Random tars of `..`, absolute names, symlinks (to `/`, up, to the
    /// host dir) and hard links, extracted to random destinations: nothing
    /// outside the root is ever created or changed.
    #[test]
    fn random_hostile_tars_never_escape() {
        let (t, fs) = root_with_links();
        let outside = t.path().display().to_string();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let parts = ["a", "b", "..", ".", "l", "evil", "hostfile", "", "etc"];
        let targets = [
            "/",
            "..",
            "../..",
            "../../../..",
            "/etc",
            "a",
            "l",
            &outside,
            "/evil/x",
        ];
        let dests = ["/", "/dest", "/evil", "/evil2", "/dest/a"];
        let snapshot = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let before = snapshot(t.path());
        let host_paths = ["/a", "/b", "/l", "/etc/a", "/etc/b", "/etc/l", "/etc/etc"];
        let host_before: Vec<bool> = host_paths.iter().map(|p| Path::new(p).exists()).collect();
        let mut extracted = 0;
        for _ in 0..400 {
            let mut entries: Vec<(String, tar::EntryType, String)> = Vec::new();
            for _ in 0..1 + rnd(5) {
                let depth = 1 + rnd(3);
                let mut name: Vec<&str> = (0..depth).map(|_| parts[rnd(parts.len())]).collect();
                if rnd(4) == 0 {
                    name.insert(0, "");
                }
                let name = name.join("/");
                if name.is_empty() || name.len() > 90 {
                    continue;
                }
                let (ty, data) = match rnd(4) {
                    0 => (tar::EntryType::Regular, "pwned".to_string()),
                    1 => (tar::EntryType::Directory, String::new()),
                    2 => (
                        tar::EntryType::Symlink,
                        targets[rnd(targets.len())].to_string(),
                    ),
                    _ => (
                        tar::EntryType::Link,
                        targets[rnd(targets.len())].to_string(),
                    ),
                };
                if data.len() > 99 {
                    continue;
                }
                entries.push((name, ty, data));
            }
            let refs: Vec<(&str, tar::EntryType, &str)> = entries
                .iter()
                .map(|(n, ty, d)| (n.as_str(), *ty, d.as_str()))
                .collect();
            if fs
                .extract(dests[rnd(dests.len())], &tar(&refs)[..], false, rnd(2) == 0)
                .is_ok()
            {
                extracted += 1;
            }
            assert_eq!(snapshot(t.path()), before, "{entries:?}");
            let host_now: Vec<bool> = host_paths.iter().map(|p| Path::new(p).exists()).collect();
            assert_eq!(host_now, host_before, "{entries:?}");
            assert_eq!(
                std::fs::read_to_string(t.path().join("host-secret")).unwrap(),
                "secret",
                "{entries:?}"
            );
        }
        // Most tars are fine (inside the root): the walk really writes.
        assert!(extracted > 50, "only {extracted} extractions succeeded");
    }

    #[test]
    fn go_modes_and_paths() {
        assert_eq!(go_file_mode(0o040755), GO_MODE_DIR | 0o755);
        assert_eq!(go_file_mode(0o120777), GO_MODE_SYMLINK | 0o777);
        assert_eq!(go_file_mode(0o104755), GO_MODE_SETUID | 0o755);
        assert_eq!(
            go_file_mode(0o020600),
            GO_MODE_DEVICE | GO_MODE_CHARDEV | 0o600
        );
        assert_eq!(container_abs("tmp/"), "/tmp/");
        assert_eq!(container_abs("/tmp/."), "/tmp/.");
        assert_eq!(container_abs("../../etc"), "/etc");
        assert_eq!(go_base("/"), "/");
        assert_eq!(go_base("/a/b/"), "b");
        assert_eq!(rfc3339_nano(0, 5_000_000), "1970-01-01T00:00:00.005Z");
    }
}
