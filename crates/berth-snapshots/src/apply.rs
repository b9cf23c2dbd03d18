//! Applying one uncompressed layer tar to a directory, confined to it.
//!
//! Every path is resolved relative to the target with
//! `openat2(RESOLVE_IN_ROOT)`: `..`, absolute symlinks and symlinks made
//! earlier in the same layer all stay inside the target. Only the parent
//! directory of an entry is resolved that way; the entry itself is then
//! created with `*at()` calls on the parent's fd that never follow a symlink
//! in the final component.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use berth_types::{Error, ErrorKind, Result};
use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
    Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

/// How much file data is copied per read/write.
const COPY_BUF: usize = 1 << 20;
/// Buffer between the caller's reader and the tar parser, so that 512-byte
/// header reads do not each become a syscall on a plain file.
const READ_BUF: usize = 64 << 10;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const DEFAULT_ACL_XATTR: &[u8] = b"system.posix_acl_default";
/// Layer tars never carry overlayfs' own xattrs legitimately (whiteouts and
/// opaque dirs come as `.wh.` files); honouring them would let a layer steer
/// overlayfs (redirects, metacopy), so they are dropped.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// Options for [`apply_tar`].
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Create block/char device nodes found in the layer (default false: they
    /// are skipped with a tracing warning). Whiteouts are always converted.
    pub allow_devices: bool,
}

/// What [`apply_tar`] did.
#[derive(Clone, Debug, Default)]
pub struct ApplyStats {
    /// Bytes the layer holds as Docker counts them (lstat sizes of every
    /// non-directory, hard links once): regular file sizes plus symlink
    /// target lengths.
    pub size: u64,
    /// Number of entries applied.
    pub entries: u64,
}

/// Apply an *uncompressed* layer tar stream to the empty directory `target`
/// (which must already exist), producing a directory usable as an overlayfs
/// lower dir. Reads the stream to its end (callers hash it).
///
/// Nothing outside `target` is ever created, modified or linked. A relative
/// entry name whose `..` climbs out of the layer is an error; absolute names
/// are taken relative to the layer root, as Docker does. On error the target
/// is left partly written; the caller deletes it.
pub fn apply_tar<R: Read>(tar: R, target: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    apply(BufReader::with_capacity(READ_BUF, tar), target, opts)
}

/// [`apply_tar`] for a reader that is already buffered (a stream of chunks
/// from another thread): it is read as it is, without a second buffer.
pub fn apply_tar_buffered<R: BufRead>(
    tar: R,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats> {
    apply(tar, target, opts)
}

fn apply<R: Read>(tar: R, target: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    let root = rfs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::from(io::Error::from(e))
            .context(format_args!("opening layer target {}", target.display()))
    })?;
    let root_gid = Gid::from_raw(
        rfs::fstat(&root)
            .map_err(|e| Error::from(io::Error::from(e)).context("stat layer target"))?
            .st_gid,
    );
    // One the target inherited counts too.
    let default_acl = !matches!(
        rfs::fgetxattr(&root, "system.posix_acl_default", &mut [0u8; 0]),
        Err(Errno::NODATA | Errno::NOTSUP)
    );
    let mut ex = Extractor {
        dirs: Dirs {
            root,
            root_gid,
            cached: None,
        },
        me: (rustix::process::geteuid(), rustix::process::getegid()),
        umask: current_umask(),
        default_acl,
        removed: false,
        buf: vec![0; COPY_BUF],
        dir_times: Vec::new(),
        stats: ApplyStats::default(),
        allow_devices: opts.allow_devices,
        proc_path: Vec::new(),
    };
    let mut scratch = Scratch::default();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        ex.apply_entry(&mut entry, &mut scratch)?;
    }
    ex.set_dir_times()?;

    // Whatever follows the end-of-archive marker (padding, a gzip trailer
    // behind the decoder) is read too, so the caller's digest covers it all
    // and a corrupt tail is an error.
    let mut rest = archive.into_inner();
    loop {
        match rest.read(&mut ex.buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(tar_error(e)),
        }
    }
    Ok(ex.stats)
}

/// The layer root and the most recently used parent directory. Tar streams
/// list a directory's entries together, so one cached fd saves most lookups.
struct Dirs {
    root: OwnedFd,
    root_gid: Gid,
    /// A cleaned, non-empty path, the directory it resolved to and its group.
    cached: Option<(Vec<u8>, OwnedFd, Gid)>,
}

impl Dirs {
    /// The directory `dir` (a cleaned path, empty for the root), resolved
    /// inside the root, and its group; missing directories are created
    /// (0755, root-owned) as Docker does.
    fn parent(&mut self, dir: &[u8]) -> io::Result<(BorrowedFd<'_>, Gid)> {
        if dir.is_empty() {
            return Ok((self.root.as_fd(), self.root_gid));
        }
        let hit = matches!(&self.cached, Some((p, _, _)) if p == dir);
        if !hit {
            let fd = match open_dir_in_root(self.root.as_fd(), dir) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => mkdir_all(self.root.as_fd(), dir)?,
                Err(e) => return Err(e.into()),
            };
            let gid = Gid::from_raw(rfs::fstat(&fd)?.st_gid);
            self.remember(dir, fd, gid);
        }
        match &self.cached {
            Some((_, fd, gid)) => Ok((fd.as_fd(), *gid)),
            None => Err(io::Error::other("parent directory cache is empty")),
        }
    }

    fn remember(&mut self, dir: &[u8], fd: OwnedFd, gid: Gid) {
        match &mut self.cached {
            Some((p, f, g)) => {
                p.clear();
                p.extend_from_slice(dir);
                *f = fd;
                *g = gid;
            }
            None => self.cached = Some((dir.to_vec(), fd, gid)),
        }
    }
}

/// The process umask, from `/proc/self/status` (reading it with umask(2)
/// would change it for a moment under the other threads); `None` when it
/// cannot be read.
fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(v.trim(), 8).ok()
}

struct Extractor {
    dirs: Dirs,
    /// Effective uid and gid: what a new inode is owned by, unless its
    /// directory makes its group another.
    me: (Uid, Gid),
    /// What the kernel takes off a new file's mode (`None`: not known).
    umask: Option<u32>,
    /// A default ACL was set in the layer: it, not the umask, decides new
    /// files' modes, so they are always chmod'ed.
    default_acl: bool,
    /// Set when an entry removed something that was in its way; the cached
    /// parent may then have resolved through what is gone.
    removed: bool,
    buf: Vec<u8>,
    /// Directory mtimes, set after every entry is written (creating a child
    /// changes its parent's mtime).
    dir_times: Vec<(Vec<u8>, Timespec)>,
    stats: ApplyStats,
    allow_devices: bool,
    /// Buffer for `/proc/self/fd/N/name` paths.
    proc_path: Vec<u8>,
}

/// Buffers reused from entry to entry.
#[derive(Default)]
struct Scratch {
    path: Vec<u8>,
    link: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Ownership, permissions, mtime and xattrs of an entry.
struct Meta<'a> {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    times: Timestamps,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

impl Extractor {
    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        s: &mut Scratch,
    ) -> Result<()> {
        let mut kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        {
            let raw = entry.path_bytes();
            if clean_path(&raw, &mut s.path).is_err() {
                return Err(Error::invalid(format!(
                    "invalid layer: path {:?} escapes the layer",
                    Lossy(&raw)
                )));
            }
            // Old tars mark directories as type '\0' with a trailing slash.
            if entry.header().as_old().linkflag[0] == 0 && raw.ends_with(b"/") {
                kind = EntryType::Directory;
            }
        }
        let meta = read_meta(entry, &mut s.xattrs, &s.path)?;
        if meta.xattrs.iter().any(|(n, _)| n == DEFAULT_ACL_XATTR) {
            self.default_acl = true;
        }
        let path = s.path.as_slice();
        let (parent, name) = split(path);

        if let Some(rest) = name.strip_prefix(WHITEOUT_PREFIX) {
            if name == WHITEOUT_OPAQUE {
                self.opaque(parent, path)?;
            } else if name.starts_with(WHITEOUT_META_PREFIX) {
                tracing::debug!(path = %Lossy(path), "ignoring whiteout metadata entry");
                return Ok(());
            } else {
                self.whiteout(parent, rest, path, &meta)?;
            }
        } else if path.is_empty() && kind != EntryType::Directory {
            return Err(Error::invalid(format!(
                "invalid layer: entry {:?} of type {kind:?} names the layer root",
                Lossy(&entry.path_bytes())
            )));
        } else {
            match kind {
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    self.file(entry, parent, name, path, &meta)?
                }
                EntryType::Directory => self.dir(parent, name, path, &meta)?,
                EntryType::Symlink => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    // Docker sizes a layer by lstat: a symlink counts its target's length.
                    self.stats.size += target.len() as u64;
                    self.symlink(&target, parent, name, path, &meta)?
                }
                EntryType::Link => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    if clean_path(&target, &mut s.link).is_err() || s.link.is_empty() {
                        return Err(Error::invalid(format!(
                            "invalid layer: hard link {:?} points to {:?}, outside the layer",
                            Lossy(path),
                            Lossy(&target)
                        )));
                    }
                    self.hardlink(&s.link, &target, parent, name, path)?
                }
                EntryType::Fifo => self.node(FileType::Fifo, 0, parent, name, path, &meta)?,
                EntryType::Char | EntryType::Block => {
                    let h = entry.header();
                    let major = h.device_major().map_err(tar_error)?.unwrap_or(0);
                    let minor = h.device_minor().map_err(tar_error)?.unwrap_or(0);
                    let ft = if kind == EntryType::Char {
                        FileType::CharacterDevice
                    } else {
                        FileType::BlockDevice
                    };
                    // A char device 0/0 is an overlayfs whiteout in the
                    // layer's own format; it gives access to nothing.
                    let whiteout = ft == FileType::CharacterDevice && major == 0 && minor == 0;
                    if !self.allow_devices && !whiteout {
                        tracing::warn!(
                            path = %Lossy(path),
                            "skipping device node in layer: devices are not allowed"
                        );
                        return Ok(());
                    }
                    let dev = rfs::makedev(major, minor);
                    self.node(ft, dev, parent, name, path, &meta)?
                }
                other => {
                    return Err(Error::invalid(format!(
                        "invalid layer: entry {:?} has unsupported type {other:?}",
                        Lossy(path)
                    )));
                }
            }
        }
        if std::mem::take(&mut self.removed) {
            self.dirs.cached = None;
        }
        self.stats.entries += 1;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &[u8],
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        let (pfd, pgid) = self
            .dirs
            .parent(parent)
            .map_err(io_err(path, "resolving parent directory"))?;
        // A new file is ours, with our group or its directory's: when that
        // is what the layer says, chown has nothing to do. Its mode is the
        // one asked for less the umask: when that takes nothing off, and
        // there are no setuid, setgid or sticky bits (which chown would
        // clear), the file is made with its mode and needs no chmod.
        let owned = meta.uid == self.me.0 && meta.gid == self.me.1 && pgid == self.me.1;
        let mode = meta.mode.as_raw_mode();
        let final_mode = owned
            && mode & 0o7000 == 0
            && !self.default_acl
            && self.umask.is_some_and(|u| mode & u == 0);
        let create_mode = if final_mode { mode } else { 0o600 };
        let fd = replacing(&mut self.removed, pfd, name, || {
            rfs::openat(
                pfd,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(create_mode),
            )
        })
        .map_err(errno(path, "creating file"))?;
        let mut file = File::from(fd);
        let expected = entry.size();
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(tar_error(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(io_err(path, "writing file"))?;
            written += n as u64;
        }
        if written != expected {
            return Err(Error::invalid(format!(
                "invalid layer: stream ends inside file {:?} ({written} of {expected} bytes)",
                Lossy(path)
            )));
        }
        let fd = file.as_fd();
        // chown clears setuid/setgid and file capabilities, so: owner, then
        // mode, then xattrs.
        if !owned {
            rfs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(errno(path, "chown"))?;
        }
        if !final_mode {
            rfs::fchmod(fd, meta.mode).map_err(errno(path, "chmod"))?;
        }
        set_xattrs(XattrTarget::Fd(fd), meta.xattrs, path, &mut self.proc_path)?;
        rfs::futimens(fd, &meta.times).map_err(errno(path, "setting times"))?;
        self.stats.size += written;
        Ok(())
    }

    fn dir(&mut self, parent: &[u8], name: &[u8], path: &[u8], meta: &Meta<'_>) -> Result<()> {
        if path.is_empty() {
            let fd = self.dirs.root.as_fd();
            set_owner_mode_fd(fd, meta, path)?;
            set_xattrs(XattrTarget::Fd(fd), meta.xattrs, path, &mut self.proc_path)?;
            self.dir_times
                .push((Vec::new(), meta.times.last_modification));
            return Ok(());
        }
        let (pfd, _) = self
            .dirs
            .parent(parent)
            .map_err(io_err(path, "resolving parent directory"))?;
        let mkdir = || rfs::mkdirat(pfd, name, Mode::from_raw_mode(0o700));
        match mkdir() {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rfs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(errno(path, "stat"))?;
                // An existing directory keeps its contents; only its
                // metadata is updated.
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    self.removed = true;
                    remove_any(pfd, name).map_err(errno(path, "removing existing entry"))?;
                    mkdir().map_err(errno(path, "creating directory"))?;
                }
            }
            Err(e) => return Err(errno(path, "creating directory")(e)),
        }
        let fd = rfs::openat(
            pfd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno(path, "opening directory"))?;
        set_owner_mode_fd(fd.as_fd(), meta, path)?;
        set_xattrs(
            XattrTarget::Fd(fd.as_fd()),
            meta.xattrs,
            path,
            &mut self.proc_path,
        )?;
        self.dir_times
            .push((path.to_vec(), meta.times.last_modification));
        // Its children most likely come next.
        self.dirs.remember(path, fd, meta.gid);
        Ok(())
    }

    fn symlink(
        &mut self,
        target: &[u8],
        parent: &[u8],
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        if target.is_empty() || target.contains(&0) {
            return Err(Error::invalid(format!(
                "invalid layer: symlink {:?} has an invalid target",
                Lossy(path)
            )));
        }
        let (pfd, pgid) = self
            .dirs
            .parent(parent)
            .map_err(io_err(path, "resolving parent directory"))?;
        // The link text is stored as given; it is only ever resolved inside
        // a root (here with RESOLVE_IN_ROOT, later inside the container).
        replacing(&mut self.removed, pfd, name, || {
            rfs::symlinkat(target, pfd, name)
        })
        .map_err(errno(path, "creating symlink"))?;
        // Already owned as the layer says (see `file`)?
        if meta.uid != self.me.0 || meta.gid != self.me.1 || pgid != self.me.1 {
            rfs::chownat(
                pfd,
                name,
                Some(meta.uid),
                Some(meta.gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno(path, "chown"))?;
        }
        xattrs_and_times(pfd, name, meta, path, &mut self.proc_path)
    }

    /// A hard link to `link` (cleaned), which must already be in the layer.
    /// The shared inode's metadata is left as its first entry set it.
    fn hardlink(
        &mut self,
        link: &[u8],
        raw_link: &[u8],
        parent: &[u8],
        name: &[u8],
        path: &[u8],
    ) -> Result<()> {
        let missing = || {
            Error::invalid(format!(
                "invalid layer: hard link {:?} points to {:?}, which is not in the layer",
                Lossy(path),
                Lossy(raw_link)
            ))
        };
        // GNU tar stores a file listed twice as a hard link to itself.
        if link == path {
            return match self
                .dirs
                .parent(parent)
                .map(|(p, _)| rfs::statat(p, name, AtFlags::SYMLINK_NOFOLLOW))
            {
                Ok(Ok(_)) => Ok(()),
                _ => Err(missing()),
            };
        }
        let (tparent, tname) = split(link);
        let tdir = open_dir_in_root(
            self.dirs.root.as_fd(),
            if tparent.is_empty() { b"." } else { tparent },
        )
        .map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR | Errno::LOOP => missing(),
            e => errno(path, "opening hard link target")(e),
        })?;
        let (pfd, _) = self
            .dirs
            .parent(parent)
            .map_err(io_err(path, "resolving parent directory"))?;
        // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never
        // what it points to.
        replacing(&mut self.removed, pfd, name, || {
            rfs::linkat(&tdir, tname, pfd, name, AtFlags::empty())
        })
        .map_err(|e| match e {
            Errno::NOENT => missing(),
            e => errno(path, "creating hard link")(e),
        })?;
        Ok(())
    }

    /// A fifo or device node.
    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        ft: FileType,
        dev: rfs::Dev,
        parent: &[u8],
        name: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        let (pfd, _) = self
            .dirs
            .parent(parent)
            .map_err(io_err(path, "resolving parent directory"))?;
        replacing(&mut self.removed, pfd, name, || {
            rfs::mknodat(pfd, name, ft, Mode::from_raw_mode(0o600), dev)
        })
        .map_err(errno(path, "creating node"))?;
        rfs::chownat(
            pfd,
            name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno(path, "chown"))?;
        // fchmodat follows a final symlink, but the name is the node just
        // made in a directory only this extraction writes to.
        rfs::chmodat(pfd, name, meta.mode, AtFlags::empty()).map_err(errno(path, "chmod"))?;
        xattrs_and_times(pfd, name, meta, path, &mut self.proc_path)
    }

    /// `dir/.wh.name`: an overlayfs whiteout, a char device 0/0 `dir/name`.
    fn whiteout(
        &mut self,
        parent: &[u8],
        hidden: &[u8],
        path: &[u8],
        meta: &Meta<'_>,
    ) -> Result<()> {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(Error::invalid(format!(
                "invalid layer: whiteout {:?} names no file",
                Lossy(path)
            )));
        }
        let (pfd, _) = self
            .dirs
            .parent(parent)
            .map_err(io_err(path, "resolving parent directory"))?;
        replacing(&mut self.removed, pfd, hidden, || {
            rfs::mknodat(pfd, hidden, FileType::CharacterDevice, Mode::empty(), 0)
        })
        .map_err(errno(path, "creating whiteout"))?;
        rfs::chownat(
            pfd,
            hidden,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno(path, "chown"))?;
        Ok(())
    }

    /// `dir/.wh..wh..opq`: `dir` hides everything below it in lower layers.
    fn opaque(&mut self, dir: &[u8], path: &[u8]) -> Result<()> {
        let (fd, _) = self
            .dirs
            .parent(dir)
            .map_err(io_err(path, "opening directory"))?;
        rfs::fsetxattr(fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(errno(path, "marking directory opaque"))?;
        Ok(())
    }

    fn set_dir_times(&mut self) -> Result<()> {
        for (path, mtime) in self.dir_times.drain(..) {
            let times = Timestamps {
                last_access: mtime,
                last_modification: mtime,
            };
            if path.is_empty() {
                rfs::futimens(&self.dirs.root, &times).map_err(errno(&path, "setting times"))?;
                continue;
            }
            let fd = match rfs::openat2(
                &self.dirs.root,
                &path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => fd,
                // Replaced by a later entry of the layer.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(errno(&path, "opening directory")(e)),
            };
            rfs::futimens(&fd, &times).map_err(errno(&path, "setting times"))?;
        }
        Ok(())
    }
}

/// Reads owner, mode, mtime and the `SCHILY.xattr.*` records of an entry.
fn read_meta<'x, R: Read>(
    entry: &mut tar::Entry<'_, R>,
    xattrs: &'x mut Vec<(Vec<u8>, Vec<u8>)>,
    path: &[u8],
) -> Result<Meta<'x>> {
    let h = entry.header();
    let bad = |what: &str| {
        Error::invalid(format!(
            "invalid layer: entry {:?} has an invalid {what}",
            Lossy(path)
        ))
    };
    // tar has already applied PAX uid/gid records to the header.
    let old = h.as_old();
    // An empty numeric field reads as 0, as in Go's archive/tar.
    let num = |v: io::Result<u64>, field: &[u8], what: &str| match v {
        Ok(v) => Ok(v),
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(_) => Err(bad(what)),
    };
    let id = |v: io::Result<u64>, field: &[u8], what: &str| {
        u32::try_from(num(v, field, what)?)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| bad(what))
    };
    let uid = Uid::from_raw(id(h.uid(), &old.uid, "uid")?);
    let gid = Gid::from_raw(id(h.gid(), &old.gid, "gid")?);
    let mode = num(h.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
    let mode = Mode::from_raw_mode(mode);
    let mut mtime = Timespec {
        tv_sec: i64::try_from(num(h.mtime(), &old.mtime, "mtime")?).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    xattrs.clear();
    if let Some(pax) = entry.pax_extensions().map_err(tar_error)? {
        for ext in pax {
            let ext = ext.map_err(tar_error)?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                mtime = parse_pax_time(ext.value_bytes()).ok_or_else(|| bad("mtime"))?;
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        times: Timestamps {
            last_access: mtime,
            last_modification: mtime,
        },
        xattrs,
    })
}

/// A PAX time: decimal seconds with an optional fraction, maybe negative.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nsec: i64 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.as_bytes().get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    let (tv_sec, tv_nsec) = match (neg, nsec) {
        (false, n) => (secs, n),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    };
    Some(Timespec {
        tv_sec,
        tv_nsec: tv_nsec as _,
    })
}

/// Cleans an entry name into `out`: components joined by `/`, no leading
/// `/`, no `.`, `..` resolved lexically. An empty result is the layer root.
/// A relative name whose `..` climbs above the root is an error; in an
/// absolute name `..` stops at the root, as in Go's `filepath.Clean`.
fn clean_path(raw: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), ()> {
    out.clear();
    let absolute = raw.first() == Some(&b'/');
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    if absolute {
                        continue;
                    }
                    return Err(());
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

/// Splits a cleaned path into its parent (empty for the root) and last
/// component.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

fn open_dir_in_root(root: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    let mut again = 0;
    loop {
        match rfs::openat2(
            root,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // openat2 asks for a retry when a rename raced the lookup.
            Err(Errno::AGAIN) if again < 16 => again += 1,
            Err(Errno::INTR) => {}
            r => return r,
        }
    }
}

/// Creates the missing directories of `path`, each inside the root.
fn mkdir_all(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    let mut start = 0;
    let ends = path
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .map(|(i, _)| i)
        .chain(std::iter::once(path.len()));
    for end in ends {
        let (prefix, comp) = (&path[..end], &path[start..end]);
        start = end + 1;
        let fd = match open_dir_in_root(root, prefix) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let at = cur.as_ref().map_or(root, |f| f.as_fd());
                let made = match rfs::mkdirat(at, comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) => true,
                    Err(Errno::EXIST) => false,
                    Err(e) => return Err(e.into()),
                };
                // EEXIST here means a dangling symlink; reopening fails and
                // reports it.
                let fd = open_dir_in_root(root, prefix)?;
                if made {
                    rfs::fchmod(&fd, Mode::from_raw_mode(0o755))?;
                }
                fd
            }
            Err(e) => return Err(e.into()),
        };
        cur = Some(fd);
    }
    cur.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// Runs `create`; if the name is taken, removes what is there (recursively
/// for a directory) and runs it once more.
fn replacing<T>(
    removed: &mut bool,
    dir: BorrowedFd<'_>,
    name: &[u8],
    create: impl Fn() -> rustix::io::Result<T>,
) -> rustix::io::Result<T> {
    match create() {
        Err(Errno::EXIST) => {
            *removed = true;
            remove_any(dir, name)?;
            create()
        }
        r => r,
    }
}

fn remove_any(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => remove_dir_all(dir, name, &mut |_| {}),
        r => r,
    }
}

/// Removes the directory `name` in `dir` and everything in it, without
/// following symlinks and without recursion (layers can be deep). `removed`
/// sees the inode number of every entry below `name`.
pub(crate) fn remove_dir_all(
    dir: BorrowedFd<'_>,
    name: &[u8],
    removed: &mut dyn FnMut(u64),
) -> rustix::io::Result<()> {
    let open = |at: BorrowedFd<'_>, n: &std::ffi::CStr| {
        let fd = rfs::openat(
            at,
            n,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Dir::new(fd)
    };
    let first = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
    let mut stack = vec![(open(dir, &first)?, first, 0u32)];
    while let Some((d, _, _)) = stack.last_mut() {
        match d.read() {
            Some(ent) => {
                let ent = ent?;
                let n = ent.file_name();
                if n == c"." || n == c".." {
                    continue;
                }
                removed(ent.ino());
                let (top, _, _) = &stack[stack.len() - 1];
                let at = top.fd()?;
                let is_dir = match ent.file_type() {
                    FileType::Directory => true,
                    _ => match rfs::unlinkat(at, n, AtFlags::empty()) {
                        Ok(()) | Err(Errno::NOENT) => false,
                        Err(Errno::ISDIR) => true,
                        Err(e) => return Err(e),
                    },
                };
                if is_dir {
                    let sub = open(at, n)?;
                    stack.push((sub, n.to_owned(), 0));
                }
            }
            None => {
                let depth = stack.len();
                let at = if depth >= 2 {
                    stack[depth - 2].0.fd()?
                } else {
                    dir
                };
                match rfs::unlinkat(at, &stack[depth - 1].1, AtFlags::REMOVEDIR) {
                    Ok(()) => {
                        stack.pop();
                    }
                    // Entries the first pass missed: go round once more.
                    Err(Errno::NOTEMPTY) if stack[depth - 1].2 < 2 => {
                        let top = &mut stack[depth - 1];
                        top.2 += 1;
                        top.0.rewind();
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

fn set_owner_mode_fd(fd: BorrowedFd<'_>, meta: &Meta<'_>, path: &[u8]) -> Result<()> {
    rfs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(errno(path, "chown"))?;
    rfs::fchmod(fd, meta.mode).map_err(errno(path, "chmod"))?;
    Ok(())
}

enum XattrTarget<'a> {
    /// An fd open on the entry itself (file or directory).
    Fd(BorrowedFd<'a>),
    /// A name in a directory, not to be followed if it is a symlink.
    At(BorrowedFd<'a>, &'a [u8]),
}

/// The last steps for a non-directory made at `pfd`/`name` (directory
/// times are set at the end of the layer): its xattrs, then its times.
fn xattrs_and_times(
    pfd: BorrowedFd<'_>,
    name: &[u8],
    meta: &Meta<'_>,
    path: &[u8],
    proc_path: &mut Vec<u8>,
) -> Result<()> {
    set_xattrs(XattrTarget::At(pfd, name), meta.xattrs, path, proc_path)?;
    rfs::utimensat(pfd, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno(path, "setting times"))?;
    Ok(())
}

fn set_xattrs(
    target: XattrTarget<'_>,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    path: &[u8],
    proc_path: &mut Vec<u8>,
) -> Result<()> {
    for (name, value) in xattrs {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            tracing::warn!(path = %Lossy(path), xattr = %Lossy(name), "ignoring overlayfs xattr in layer");
            continue;
        }
        let r = match target {
            XattrTarget::Fd(fd) => rfs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()),
            XattrTarget::At(dir, n) => {
                // lsetxattr on /proc/self/fd/<dir>/<name>: the magic link
                // leads to the directory, and the last component is not
                // followed.
                proc_path.clear();
                write!(proc_path, "/proc/self/fd/{}/", dir.as_raw_fd())
                    .map_err(io_err(path, "xattr path"))?;
                proc_path.extend_from_slice(n);
                rfs::lsetxattr(
                    proc_path.as_slice(),
                    name.as_slice(),
                    value,
                    XattrFlags::empty(),
                )
            }
        };
        match r {
            Ok(()) => {}
            // As Docker: a filesystem or namespace that refuses the xattr
            // (e.g. user.* on a symlink) is not fatal.
            Err(e @ (Errno::NOTSUP | Errno::PERM)) => tracing::warn!(
                path = %Lossy(path),
                xattr = %Lossy(name),
                error = %e,
                "could not set xattr from layer"
            ),
            Err(e) => {
                return Err(errno(path, "setting xattr")(e)
                    .context(format_args!("xattr {:?}", Lossy(name))));
            }
        }
    }
    Ok(())
}

/// Errors from the tar stream itself (format, truncation, decoding).
fn tar_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::Other
        | io::ErrorKind::InvalidData
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::UnexpectedEof => {
            Error::new(ErrorKind::InvalidArgument, format!("invalid layer: {e}"))
        }
        _ => Error::from(e).context("reading layer"),
    }
}

fn errno<'a>(path: &'a [u8], what: &'a str) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| io_err(path, what)(io::Error::from(e))
}

/// A failed filesystem call while applying an entry. Errors a layer can
/// cause by its content (a missing link target, a file where a directory is
/// needed, a name too long) are the layer's fault; the rest (no space, I/O)
/// are the host's.
fn io_err<'a>(path: &'a [u8], what: &'a str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| {
        let layer_fault = e
            .raw_os_error()
            .map(Errno::from_raw_os_error)
            .is_some_and(|n| {
                matches!(
                    n,
                    Errno::NOENT
                        | Errno::NOTDIR
                        | Errno::LOOP
                        | Errno::EXIST
                        | Errno::INVAL
                        | Errno::NAMETOOLONG
                        | Errno::ISDIR
                        | Errno::NOTEMPTY
                        | Errno::MLINK
                )
            });
        let kind = if layer_fault {
            ErrorKind::InvalidArgument
        } else {
            ErrorKind::Internal
        };
        Error::new(
            kind,
            format!("applying layer entry {:?}: {what}: {e}", Lossy(path)),
        )
    }
}

/// Shows bytes as a (lossy) string.
struct Lossy<'a>(&'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&String::from_utf8_lossy(self.0), f)
    }
}

impl fmt::Debug for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.0), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{E, TarBuilder, root_or_skip};
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    /// A scratch area: `layer/` is the target, `outside/` must stay untouched.
    struct Area {
        _tmp: tempfile::TempDir,
        layer: PathBuf,
        outside: PathBuf,
    }

    fn area() -> Area {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        let outside = tmp.path().join("outside");
        fs::create_dir(&layer).unwrap();
        fs::create_dir(&outside).unwrap();
        Area {
            _tmp: tmp,
            layer,
            outside,
        }
    }

    fn apply(a: &Area, tar: &[u8]) -> Result<ApplyStats> {
        apply_tar(tar, &a.layer, &ApplyOptions::default())
    }

    fn assert_empty(dir: &Path) {
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.is_empty(),
            "{} is not empty: {names:?}",
            dir.display()
        );
    }

    fn lmeta(p: impl AsRef<Path>) -> fs::Metadata {
        fs::symlink_metadata(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
    }

    fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        match rfs::lgetxattr(p, name, &mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    #[test]
    fn clean_path_rules() {
        let mut out = Vec::new();
        let ok = |raw: &str, want: &str| {
            let mut out = Vec::new();
            clean_path(raw.as_bytes(), &mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want, "for {raw:?}");
        };
        ok("./a/b/", "a/b");
        ok("/abs/file", "abs/file");
        ok("a//./b/../c", "a/c");
        ok("/../../etc/x", "etc/x");
        ok("./", "");
        ok("a/..", "");
        for bad in [
            "../evil",
            "a/../../evil",
            "./../x",
            "../../../../tmp/x",
            "..",
        ] {
            assert!(clean_path(bad.as_bytes(), &mut out).is_err(), "{bad}");
        }
    }

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1600000000"), Some((1_600_000_000, 0)));
        assert_eq!(t("1600000000.5"), Some((1_600_000_000, 500_000_000)));
        assert_eq!(t("1.0000000019"), Some((1, 1)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("abc"), None);
        assert_eq!(t(".5"), None);
    }

    #[test]
    fn regular_layer() {
        if !root_or_skip("regular_layer") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        let root = E {
            mode: 0o751,
            mtime: 1_000_000,
            ..E::default()
        };
        t.raw(b"./", EntryType::Directory, b"", &root);
        let etc = E {
            mode: 0o755,
            mtime: 1_111_111,
            ..E::default()
        };
        t.raw(b"./etc/", EntryType::Directory, b"", &etc);
        let secret = E {
            mode: 0o600,
            uid: 1000,
            gid: 1001,
            mtime: 1_234_567,
            ..E::default()
        };
        t.raw(b"./etc/secret", EntryType::Regular, b"s3cret", &secret);
        t.dir("./bin/");
        let su = E {
            mode: 0o4755,
            uid: 0,
            gid: 0,
            ..E::default()
        };
        t.raw(b"./bin/busybox", EntryType::Regular, b"#!busybox", &su);
        let link = E {
            mode: 0o777,
            uid: 1000,
            gid: 1000,
            mtime: 1_222_222,
            link: b"busybox".to_vec(),
            ..E::default()
        };
        t.raw(b"bin/sh", EntryType::Symlink, b"", &link);
        t.hardlink("bin/ls", "./bin/busybox");
        let fifo = E {
            mode: 0o640,
            uid: 7,
            gid: 8,
            ..E::default()
        };
        t.raw(b"run/fifo", EntryType::Fifo, b"", &fifo);
        let x = E {
            pax: vec![
                ("SCHILY.xattr.user.foo".into(), b"bar".to_vec()),
                ("mtime".into(), b"1300000000.25".to_vec()),
            ],
            ..E::default()
        };
        t.raw(b"xattr-file", EntryType::Regular, b"x", &x);
        // security.capability (v2, cap_net_raw permitted+effective) on a
        // file that is chowned: the capability must survive the chown.
        let cap = [
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let ping = E {
            mode: 0o755,
            uid: 1000,
            pax: vec![("SCHILY.xattr.security.capability".into(), cap.to_vec())],
            ..E::default()
        };
        t.raw(b"bin/ping", EntryType::Regular, b"ping", &ping);
        let long = format!("{}/{}", "d".repeat(60), "f".repeat(80));
        t.raw(long.as_bytes(), EntryType::Regular, b"long", &E::default());
        let tar = t.finish();

        let stats = apply(&a, &tar).unwrap();
        let l = &a.layer;
        assert_eq!(stats.entries, 11);
        // Regular files, plus the 7-byte target of the bin/sh symlink.
        assert_eq!(stats.size, (6 + 9 + 1 + 4 + 4 + 7) as u64);

        let m = lmeta(l);
        assert_eq!(m.mode() & 0o7777, 0o751);
        assert_eq!(m.mtime(), 1_000_000);
        let m = lmeta(l.join("etc"));
        assert!(m.is_dir());
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o755, 1_111_111));
        let m = lmeta(l.join("etc/secret"));
        assert_eq!(fs::read(l.join("etc/secret")).unwrap(), b"s3cret");
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 1000, 1001));
        assert_eq!((m.mtime(), m.atime()), (1_234_567, 1_234_567));
        assert_eq!(lmeta(l.join("bin/busybox")).mode() & 0o7777, 0o4755);
        let m = lmeta(l.join("bin/sh"));
        assert!(m.file_type().is_symlink());
        assert_eq!(
            fs::read_link(l.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!((m.uid(), m.gid(), m.mtime()), (1000, 1000, 1_222_222));
        let (bb, ls) = (lmeta(l.join("bin/busybox")), lmeta(l.join("bin/ls")));
        assert_eq!(bb.ino(), ls.ino());
        assert_eq!(bb.nlink(), 2);
        let m = lmeta(l.join("run/fifo"));
        assert!(m.file_type().is_fifo());
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 7, 8));
        // Implicit parent: 0755, root.
        let m = lmeta(l.join("run"));
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o755, 0));
        let p = l.join("xattr-file");
        assert_eq!(xattr(&p, "user.foo").as_deref(), Some(&b"bar"[..]));
        let m = lmeta(&p);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_300_000_000, 250_000_000));
        let p = l.join("bin/ping");
        assert_eq!(xattr(&p, "security.capability").as_deref(), Some(&cap[..]));
        assert_eq!(lmeta(&p).uid(), 1000);
        assert_eq!(fs::read(l.join(&long)).unwrap(), b"long");
    }

    /// Files made without chown or chmod (owner and mode already right at
    /// creation) and those that need them end up the same: the umask, a
    /// setgid directory of another group and a default ACL change nothing.
    #[test]
    fn modes_and_owners_are_exact_whatever_the_umask_and_directory() {
        if !root_or_skip("modes_and_owners_are_exact_whatever_the_umask_and_directory") {
            return;
        }
        // Each test is a process of its own under nextest.
        rustix::process::umask(Mode::from_raw_mode(0o027));
        let a = area();
        let mut t = TarBuilder::new();
        let file = |mode| E {
            mode,
            ..E::default()
        };
        for (name, mode) in [
            ("plain", 0o644),
            ("wide", 0o666),
            ("all", 0o777),
            ("none", 0o000),
            ("sticky", 0o1755),
        ] {
            t.raw(name.as_bytes(), EntryType::Regular, b"data", &file(mode));
        }
        // A setgid directory of group 50: what is made in it is of group
        // 50 until chown'ed.
        let g = E {
            mode: 0o2775,
            gid: 50,
            ..E::default()
        };
        t.raw(b"g/", EntryType::Directory, b"", &g);
        t.raw(b"g/f", EntryType::Regular, b"f", &file(0o644));
        t.raw(
            b"g/own",
            EntryType::Regular,
            b"o",
            &E {
                gid: 50,
                ..file(0o640)
            },
        );
        let link = E {
            link: b"f".to_vec(),
            ..E::default()
        };
        t.raw(b"g/l", EntryType::Symlink, b"", &link);
        // A default ACL (user::r-x group::r-x other::---): it, not the
        // umask, masks new files' modes.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm) in [(0x01u16, 5u16), (0x04, 5), (0x20, 0)] {
            acl.extend(tag.to_le_bytes());
            acl.extend(perm.to_le_bytes());
            acl.extend(u32::MAX.to_le_bytes());
        }
        let d = E {
            mode: 0o755,
            pax: vec![("SCHILY.xattr.system.posix_acl_default".into(), acl)],
            ..E::default()
        };
        t.raw(b"acl/", EntryType::Directory, b"", &d);
        t.raw(b"acl/x", EntryType::Regular, b"x", &file(0o750));
        let tar = t.finish();
        apply(&a, &tar).unwrap();
        let l = &a.layer;
        let got = |p: &str| {
            let m = lmeta(l.join(p));
            (m.mode() & 0o7777, m.uid(), m.gid())
        };
        assert_eq!(got("plain"), (0o644, 0, 0));
        assert_eq!(got("wide"), (0o666, 0, 0));
        assert_eq!(got("all"), (0o777, 0, 0));
        assert_eq!(got("none"), (0o000, 0, 0));
        assert_eq!(fs::read(l.join("none")).unwrap(), b"data");
        assert_eq!(got("sticky"), (0o1755, 0, 0));
        assert_eq!(got("g"), (0o2775, 0, 50));
        assert_eq!(got("g/f"), (0o644, 0, 0));
        assert_eq!(got("g/own"), (0o640, 0, 50));
        let m = lmeta(l.join("g/l"));
        assert_eq!((m.uid(), m.gid()), (0, 0));
        assert_eq!(got("acl/x"), (0o750, 0, 0));
    }

    #[test]
    fn gnu_long_names_and_links() {
        if !root_or_skip("gnu_long_names_and_links") {
            return;
        }
        let a = area();
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/{}", "a".repeat(90), "b".repeat(90));
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, &long, &b"data"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "short-link", format!("/{long}"))
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, format!("{long}-hard"), &long)
            .unwrap();
        let tar = b.into_inner().unwrap();
        apply(&a, &tar).unwrap();
        assert_eq!(fs::read(a.layer.join(&long)).unwrap(), b"data");
        let target = fs::read_link(a.layer.join("short-link")).unwrap();
        assert_eq!(target, Path::new(&format!("/{long}")));
        let (x, y) = (
            lmeta(a.layer.join(&long)),
            lmeta(a.layer.join(format!("{long}-hard"))),
        );
        assert_eq!(x.ino(), y.ino());
    }

    #[test]
    fn directory_times_are_set_last() {
        if !root_or_skip("directory_times_are_set_last") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        let d = E {
            mode: 0o755,
            mtime: 42,
            ..E::default()
        };
        t.raw(b"d/", EntryType::Directory, b"", &d);
        t.raw(b"d/sub/", EntryType::Directory, b"", &d);
        t.file("d/sub/f", b"1");
        t.file("d/g", b"2");
        t.raw(b"d/.wh.gone", EntryType::Regular, b"", &E::default());
        t.symlink("d/l", "g");
        apply(&a, &t.finish()).unwrap();
        assert_eq!(lmeta(a.layer.join("d")).mtime(), 42);
        assert_eq!(lmeta(a.layer.join("d/sub")).mtime(), 42);
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !root_or_skip("whiteouts_become_overlay_whiteouts") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        t.dir("dir/");
        let wo = E {
            uid: 5,
            gid: 6,
            ..E::default()
        };
        t.raw(b"dir/.wh.x", EntryType::Regular, b"", &wo);
        t.file("dir/.wh..wh..opq", b"");
        t.file(".wh..wh.plnk", b"");
        t.file("missing/parent/.wh.y", b"");
        t.file("newdir/.wh..wh..opq", b"");
        t.file(".wh.top", b"");
        let stats = apply(&a, &t.finish()).unwrap();
        assert_eq!(stats.entries, 6);
        let l = &a.layer;
        for (p, owner) in [
            ("dir/x", (5, 6)),
            ("missing/parent/y", (0, 0)),
            ("top", (0, 0)),
        ] {
            let m = lmeta(l.join(p));
            assert!(m.file_type().is_char_device(), "{p}");
            assert_eq!(m.rdev(), 0, "{p}");
            assert_eq!((m.uid(), m.gid()), owner, "{p}");
        }
        assert_eq!(
            xattr(&l.join("dir"), OPAQUE_XATTR).as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            xattr(&l.join("newdir"), OPAQUE_XATTR).as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(xattr(l, OPAQUE_XATTR), None);
        for p in [
            "dir/.wh.x",
            "dir/.wh..wh..opq",
            ".wh..wh.plnk",
            ".wh.top",
            "plnk",
        ] {
            assert!(fs::symlink_metadata(l.join(p)).is_err(), "{p} exists");
        }
    }

    #[test]
    fn bad_whiteout_names_are_rejected() {
        if !root_or_skip("bad_whiteout_names_are_rejected") {
            return;
        }
        for name in ["d/.wh.", "d/.wh..", "d/.wh..."] {
            let a = area();
            let mut t = TarBuilder::new();
            t.dir("d/");
            t.file(name, b"");
            // ".wh..." names "..", ".wh.." names "."; never a parent.
            assert!(apply(&a, &t.finish()).is_err(), "{name}");
            assert_empty(&a.outside);
        }
    }

    #[test]
    fn overlay_xattrs_from_the_layer_are_dropped() {
        if !root_or_skip("overlay_xattrs_from_the_layer_are_dropped") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        let o = E {
            mode: 0o755,
            pax: vec![(
                "SCHILY.xattr.trusted.overlay.redirect".into(),
                b"/etc".to_vec(),
            )],
            ..E::default()
        };
        t.raw(b"d/", EntryType::Directory, b"", &o);
        apply(&a, &t.finish()).unwrap();
        assert_eq!(xattr(&a.layer.join("d"), "trusted.overlay.redirect"), None);
    }

    #[test]
    fn replacing_entries() {
        if !root_or_skip("replacing_entries") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        t.file("f", b"old");
        t.file("f", b"new");
        // A directory with contents replaced by a file.
        t.dir("d/");
        t.dir("d/sub/");
        t.file("d/sub/x", b"x");
        t.symlink("d/sub/l", "/");
        t.file("d", b"now a file");
        // A file replaced by a directory.
        t.file("e", b"file");
        t.dir("e/");
        t.file("e/inner", b"inner");
        // A directory entry again: contents are kept.
        t.dir("e/");
        // A hard link replaced by a file must not write through the link.
        t.file("orig", b"orig");
        t.hardlink("hl", "orig");
        t.file("hl", b"replaced");
        // A directory replaced by a symlink, then written beneath.
        t.dir("s/");
        t.file("s/a", b"a");
        t.dir("target/");
        t.symlink("s", "target");
        t.file("s/b", b"b");
        apply(&a, &t.finish()).unwrap();
        let l = &a.layer;
        assert_eq!(fs::read(l.join("f")).unwrap(), b"new");
        assert_eq!(fs::read(l.join("d")).unwrap(), b"now a file");
        assert!(lmeta(l.join("e")).is_dir());
        assert_eq!(fs::read(l.join("e/inner")).unwrap(), b"inner");
        assert_eq!(fs::read(l.join("orig")).unwrap(), b"orig");
        assert_eq!(fs::read(l.join("hl")).unwrap(), b"replaced");
        assert!(lmeta(l.join("s")).file_type().is_symlink());
        assert_eq!(fs::read(l.join("target/b")).unwrap(), b"b");
        assert!(fs::symlink_metadata(l.join("target/a")).is_err());
    }

    #[test]
    fn dotdot_escape_is_rejected() {
        if !root_or_skip("dotdot_escape_is_rejected") {
            return;
        }
        for name in [
            &b"../escape"[..],
            b"../../../../tmp/x",
            b"a/../../outside/x",
            b"./../outside/y",
        ] {
            let a = area();
            let mut t = TarBuilder::new();
            t.raw(name, EntryType::Regular, b"evil", &E::default());
            let err = apply(&a, &t.finish()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument);
            assert!(err.message.contains("escapes the layer"), "{}", err.message);
            assert!(
                err.message.contains(std::str::from_utf8(name).unwrap()),
                "{}",
                err.message
            );
            assert_empty(&a.outside);
            assert!(!a.layer.parent().unwrap().join("escape").exists());
        }
    }

    #[test]
    fn absolute_paths_stay_inside() {
        if !root_or_skip("absolute_paths_stay_inside") {
            return;
        }
        let a = area();
        let abs = a.outside.join("abs-file");
        let mut t = TarBuilder::new();
        t.raw(b"/abs/file", EntryType::Regular, b"in", &E::default());
        t.raw(
            abs.as_os_str().as_encoded_bytes(),
            EntryType::Regular,
            b"in",
            &E::default(),
        );
        t.raw(b"/../../up/file", EntryType::Regular, b"in", &E::default());
        apply(&a, &t.finish()).unwrap();
        assert_eq!(fs::read(a.layer.join("abs/file")).unwrap(), b"in");
        assert_eq!(fs::read(a.layer.join("up/file")).unwrap(), b"in");
        let inner = a.layer.join(abs.strip_prefix("/").unwrap());
        assert_eq!(fs::read(inner).unwrap(), b"in");
        assert_empty(&a.outside);
    }

    #[test]
    fn symlinked_parents_stay_inside() {
        if !root_or_skip("symlinked_parents_stay_inside") {
            return;
        }
        let a = area();
        let out = a.outside.to_str().unwrap().to_owned();
        // Absolute symlink to an outside dir, then entries through it: the
        // symlink resolves inside the layer, where that dir does not exist.
        for victim in [
            "evil/pwned",
            "evil/.wh.pwned",
            "evil/.wh..wh..opq",
            "evil/sub/file",
        ] {
            let mut t = TarBuilder::new();
            t.symlink("evil", &out);
            t.file(victim, b"pwned");
            let err = apply(&a, &t.finish()).unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::InvalidArgument,
                "{victim}: {}",
                err.message
            );
            assert!(err.message.contains(victim), "{}", err.message);
            assert_empty(&a.outside);
            assert_eq!(xattr(&a.outside, OPAQUE_XATTR), None);
        }

        // When the directory exists in the layer, the write lands there.
        let a = area();
        let mut t = TarBuilder::new();
        let inner = a.layer.join(a.outside.strip_prefix("/").unwrap());
        t.dir(inner.strip_prefix(&a.layer).unwrap().to_str().unwrap());
        t.symlink("evil", a.outside.to_str().unwrap());
        t.file("evil/pwned", b"pwned");
        t.dir("etc/");
        t.symlink("etc-link", "/etc");
        t.file("etc-link/passwd", b"root::0:0::/:/bin/sh");
        apply(&a, &t.finish()).unwrap();
        assert_empty(&a.outside);
        assert_eq!(fs::read(inner.join("pwned")).unwrap(), b"pwned");
        assert_eq!(
            fs::read(a.layer.join("etc/passwd")).unwrap(),
            b"root::0:0::/:/bin/sh"
        );

        // Relative symlinks climbing out stop at the layer root.
        let a = area();
        let mut t = TarBuilder::new();
        t.symlink("up", "../../../../..");
        t.file("up/pwned", b"pwned");
        t.symlink("d/up2", "../../..");
        t.file("d/up2/outside/pwned", b"pwned");
        apply(&a, &t.finish()).unwrap();
        assert_empty(&a.outside);
        assert_eq!(fs::read(a.layer.join("pwned")).unwrap(), b"pwned");
        assert_eq!(fs::read(a.layer.join("outside/pwned")).unwrap(), b"pwned");
    }

    #[test]
    fn entries_replace_symlinks_instead_of_following_them() {
        if !root_or_skip("entries_replace_symlinks_instead_of_following_them") {
            return;
        }
        let a = area();
        let victim = a.outside.join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let vdir = a.outside.join("vdir");
        fs::create_dir(&vdir).unwrap();
        fs::set_permissions(&vdir, fs::Permissions::from_mode(0o700)).unwrap();
        let before = (lmeta(&victim), lmeta(&vdir));

        let mut t = TarBuilder::new();
        t.symlink("f", victim.to_str().unwrap());
        let o = E {
            mode: 0o4777,
            uid: 1234,
            mtime: 5,
            ..E::default()
        };
        t.raw(b"f", EntryType::Regular, b"overwritten", &o);
        // CVE-2026-33056: a directory entry over a symlink must not chmod
        // the symlink's target.
        t.symlink("d", vdir.to_str().unwrap());
        let o = E {
            mode: 0o777,
            uid: 1234,
            mtime: 5,
            ..E::default()
        };
        t.raw(b"d", EntryType::Directory, b"", &o);
        t.symlink("rel", "../outside/victim");
        t.raw(b"rel", EntryType::Fifo, b"", &o);
        t.symlink("dev", "../outside/victim");
        t.file("dev/../.wh.dev", b"");
        apply(&a, &t.finish()).unwrap();

        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let after = (lmeta(&victim), lmeta(&vdir));
        for (b, a) in [(&before.0, &after.0), (&before.1, &after.1)] {
            assert_eq!(
                (b.mode(), b.uid(), b.mtime()),
                (a.mode(), a.uid(), a.mtime())
            );
        }
        assert_eq!(fs::read(a.layer.join("f")).unwrap(), b"overwritten");
        assert_eq!(lmeta(a.layer.join("f")).mode() & 0o7777, 0o4777);
        assert!(lmeta(a.layer.join("d")).is_dir());
        assert!(lmeta(a.layer.join("rel")).file_type().is_fifo());
        assert!(lmeta(a.layer.join("dev")).file_type().is_char_device());
    }

    #[test]
    fn hard_links_to_host_files_fail() {
        if !root_or_skip("hard_links_to_host_files_fail") {
            return;
        }
        let a = area();
        let host = a.outside.join("host-file");
        fs::write(&host, b"host").unwrap();
        let passwd_links = lmeta("/etc/passwd").nlink();
        let host_rel = "../outside/host-file";
        // (name, target, is_symlink) entries, and the expected error.
        type Case<'a> = (Vec<(&'a str, &'a str, bool)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (vec![("h", "/etc/passwd", false)], "not in the layer"),
            (vec![("h", "etc/passwd", false)], "not in the layer"),
            (vec![("h", host_rel, false)], "outside the layer"),
            (
                vec![("h", host.to_str().unwrap(), false)],
                "not in the layer",
            ),
            // Through a symlink made earlier in the layer.
            (
                vec![("etc", "/etc", true), ("h", "etc/passwd", false)],
                "not in the layer",
            ),
            (
                vec![
                    ("o", a.outside.to_str().unwrap(), true),
                    ("h", "o/host-file", false),
                ],
                "not in the layer",
            ),
        ];
        for (entries, want) in cases {
            let a2 = area();
            let mut t = TarBuilder::new();
            for (name, target, sym) in &entries {
                if *sym {
                    t.symlink(name, target);
                } else {
                    t.hardlink(name, target);
                }
            }
            let err = apply(&a2, &t.finish()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{}", err.message);
            assert!(err.message.contains(want), "{entries:?}: {}", err.message);
            assert!(err.message.contains("hard link \"h\""), "{}", err.message);
        }
        assert_eq!(lmeta("/etc/passwd").nlink(), passwd_links);
        assert_eq!(lmeta(&host).nlink(), 1);
    }

    #[test]
    fn hard_link_to_itself_is_a_no_op() {
        if !root_or_skip("hard_link_to_itself_is_a_no_op") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        t.file("d/f", b"f");
        t.hardlink("d/f", "/d/./f");
        apply(&a, &t.finish()).unwrap();
        assert_eq!(fs::read(a.layer.join("d/f")).unwrap(), b"f");
        let mut t = TarBuilder::new();
        t.hardlink("d/g", "d/g");
        assert!(apply(&area(), &t.finish()).is_err());
    }

    #[test]
    fn hard_link_to_a_symlink_links_the_symlink() {
        if !root_or_skip("hard_link_to_a_symlink_links_the_symlink") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        t.symlink("s", "/etc/passwd");
        t.hardlink("h", "s");
        apply(&a, &t.finish()).unwrap();
        assert!(lmeta(a.layer.join("h")).file_type().is_symlink());
        assert_eq!(
            lmeta(a.layer.join("h")).ino(),
            lmeta(a.layer.join("s")).ino()
        );
    }

    #[test]
    fn device_nodes_need_allow_devices() {
        if !root_or_skip("device_nodes_need_allow_devices") {
            return;
        }
        let mut t = TarBuilder::new();
        let o = E {
            mode: 0o666,
            major: 1,
            minor: 3,
            ..E::default()
        };
        t.raw(b"dev/null", EntryType::Char, b"", &o);
        let o = E {
            mode: 0o660,
            major: 7,
            minor: 0,
            ..E::default()
        };
        t.raw(b"dev/loop0", EntryType::Block, b"", &o);
        t.file("after", b"ok");
        // A whiteout stored as the device itself is always allowed.
        t.raw(b"gone", EntryType::Char, b"", &E::default());
        let tar = t.finish();

        let a = area();
        let stats = apply(&a, &tar).unwrap();
        assert_eq!(stats.entries, 2);
        let m = lmeta(a.layer.join("gone"));
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(fs::symlink_metadata(a.layer.join("dev/null")).is_err());
        assert!(fs::symlink_metadata(a.layer.join("dev/loop0")).is_err());
        assert_eq!(fs::read(a.layer.join("after")).unwrap(), b"ok");

        let a = area();
        let opts = ApplyOptions {
            allow_devices: true,
        };
        apply_tar(&tar[..], &a.layer, &opts).unwrap();
        let m = lmeta(a.layer.join("dev/null"));
        assert!(m.file_type().is_char_device());
        assert_eq!((m.rdev(), m.mode() & 0o7777), (rfs::makedev(1, 3), 0o666));
        let m = lmeta(a.layer.join("dev/loop0"));
        assert!(m.file_type().is_block_device());
        assert_eq!(m.rdev(), rfs::makedev(7, 0));
    }

    #[test]
    fn truncated_streams_fail() {
        if !root_or_skip("truncated_streams_fail") {
            return;
        }
        let mut t = TarBuilder::new();
        t.file("a", &[7u8; 5000]);
        t.file("b", &[8u8; 100]);
        let tar = t.finish();
        // Inside a's data, inside b's header, inside b's data.
        for cut in [512 + 1000, 512 + 5120 + 100, 512 + 5120 + 512 + 50] {
            let a = area();
            let err = apply(&a, &tar[..cut]).unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::InvalidArgument,
                "{cut}: {}",
                err.message
            );
        }
        // A stream that stops cleanly at a header boundary, without the
        // end-of-archive blocks, is accepted, as by Go's archive/tar.
        let a = area();
        apply(&a, &tar[..512 + 5120]).unwrap();
        // Garbage where a header should be.
        let mut bad = tar.clone();
        bad[512 + 5120..512 + 5120 + 512].fill(b'x');
        assert!(apply(&area(), &bad).is_err());
    }

    #[test]
    fn reads_the_stream_to_its_end() {
        if !root_or_skip("reads_the_stream_to_its_end") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        t.file("a", b"a");
        let mut tar = t.finish();
        tar.extend(std::iter::repeat_n(0u8, 10 * 1024));
        let mut r = io::Cursor::new(&tar);
        apply_tar(&mut r, &a.layer, &ApplyOptions::default()).unwrap();
        assert_eq!(r.position() as usize, tar.len());
    }

    #[test]
    fn compressed_layers_apply() {
        if !root_or_skip("compressed_layers_apply") {
            return;
        }
        use crate::compress::{decompress, detect_compression};
        let mut t = TarBuilder::new();
        t.dir("d/");
        t.file("d/f", &b"0123456789".repeat(100_000));
        let tar = t.finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar[..700]).unwrap();
        let mut blob = gz.finish().unwrap();
        let mut gz = flate2::write::GzEncoder::new(blob.clone(), flate2::Compression::fast());
        gz.get_mut().clear();
        gz.write_all(&tar[700..]).unwrap();
        blob.extend(gz.finish().unwrap());
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for blob in [blob, zst, tar.clone()] {
            let a = area();
            let mut r = io::BufReader::new(&blob[..]);
            let c = detect_compression(&mut r).unwrap();
            let stats = apply_tar(
                decompress(r, c).unwrap(),
                &a.layer,
                &ApplyOptions::default(),
            )
            .unwrap();
            assert_eq!(stats.size, 1_000_000);
            assert_eq!(fs::read(a.layer.join("d/f")).unwrap().len(), 1_000_000);
        }
    }

    /// Random sequences of hostile entries: whatever succeeds or fails,
    /// nothing outside the layer changes.
    #[test]
    fn random_hostile_layers_never_escape() {
        if !root_or_skip("random_hostile_layers_never_escape") {
            return;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let passwd = lmeta("/etc/passwd");
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..200 {
            let a = area();
            let sentinel = a.outside.join("sentinel");
            fs::write(&sentinel, b"s").unwrap();
            let before = lmeta(&sentinel);
            let out = a.outside.to_str().unwrap().to_owned();
            let names = [
                "a".to_owned(),
                "b".into(),
                "a/b".into(),
                "a/b/c".into(),
                "../outside/x".into(),
                "/".into(),
                "./".into(),
                "a/..".into(),
                "/../x".into(),
                "evil".into(),
                "evil/x".into(),
                "evil/sentinel".into(),
                "up".into(),
                "up/outside/sentinel".into(),
                "a/.wh.b".into(),
                ".wh.evil".into(),
                "evil/.wh..wh..opq".into(),
                "evil/.wh.sentinel".into(),
                "a/.wh..wh..opq".into(),
                out.clone(),
                format!("{out}/sentinel"),
                "up/outside".into(),
            ];
            let targets = [
                "/".to_owned(),
                "..".into(),
                "../..".into(),
                "../../..".into(),
                out.clone(),
                "../outside".into(),
                "a".into(),
                "/a/b".into(),
                "evil/sentinel".into(),
                "../outside/sentinel".into(),
                "/etc/passwd".into(),
                format!("{out}/sentinel"),
                "up/outside/sentinel".into(),
            ];
            let mut t = TarBuilder::new();
            for _ in 0..1 + rnd(12) {
                let name = names[rnd(names.len())].as_bytes();
                let target = targets[rnd(targets.len())].as_bytes().to_vec();
                let o = E {
                    mode: [0o777, 0o4755, 0o000, 0o644][rnd(4)],
                    uid: [0, 1000][rnd(2)],
                    link: target,
                    pax: vec![("SCHILY.xattr.user.x".into(), b"v".to_vec())],
                    ..E::default()
                };
                let kind = [
                    EntryType::Regular,
                    EntryType::Directory,
                    EntryType::Symlink,
                    EntryType::Symlink,
                    EntryType::Link,
                    EntryType::Fifo,
                ][rnd(6)];
                t.raw(
                    name,
                    kind,
                    if kind == EntryType::Regular {
                        b"pwned"
                    } else {
                        b""
                    },
                    &o,
                );
            }
            match apply(&a, &t.finish()) {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
            let names: Vec<_> = fs::read_dir(&a.outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["sentinel"]);
            assert_eq!(fs::read(&sentinel).unwrap(), b"s");
            let after = lmeta(&sentinel);
            assert_eq!(
                (
                    before.mode(),
                    before.uid(),
                    before.mtime(),
                    before.nlink(),
                    before.ino()
                ),
                (
                    after.mode(),
                    after.uid(),
                    after.mtime(),
                    after.nlink(),
                    after.ino()
                )
            );
            assert_eq!(xattr(&a.outside, OPAQUE_XATTR), None);
            assert_eq!(xattr(&sentinel, "user.x"), None);
            let mut top: Vec<_> = fs::read_dir(a.outside.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            top.sort();
            assert_eq!(top, ["layer", "outside"]);
        }
        let after = lmeta("/etc/passwd");
        assert_eq!(
            (passwd.nlink(), passwd.mode()),
            (after.nlink(), after.mode())
        );
        assert!(ok > 20 && failed > 20, "ok {ok}, failed {failed}");
    }

    /// Corrupted tars fail or apply, but never panic or escape.
    #[test]
    fn corrupted_tars_are_handled() {
        if !root_or_skip("corrupted_tars_are_handled") {
            return;
        }
        let mut t = TarBuilder::new();
        t.dir("d/");
        t.symlink("d/s", "../../..");
        t.file("d/f", &[1u8; 3000]);
        t.hardlink("d/h", "d/f");
        let o = E {
            pax: vec![("SCHILY.xattr.user.a".into(), b"b".to_vec())],
            ..E::default()
        };
        t.raw(&[b'x'; 150], EntryType::Regular, b"long", &o);
        t.file("d/.wh.z", b"");
        let tar = t.finish();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200 {
            let a = area();
            let mut bad = tar.clone();
            for _ in 0..1 + seed % 8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % bad.len();
                bad[at] = (seed >> 32) as u8;
            }
            let _ = apply(&a, &bad);
            assert_empty(&a.outside);
        }
    }

    #[test]
    fn root_entry_must_be_a_directory() {
        if !root_or_skip("root_entry_must_be_a_directory") {
            return;
        }
        let a = area();
        let mut t = TarBuilder::new();
        t.file("./", b"");
        // Type '0' with a trailing slash is a file entry named "./"; only
        // '\0' with a slash is an old-style directory.
        let r = apply(&a, &t.finish());
        assert!(r.is_err());
        let mut t = TarBuilder::new();
        t.symlink("/", "/etc");
        assert!(apply(&area(), &t.finish()).is_err());
    }
}
