//! A container's read-write layer (an overlayfs upper dir) read back as
//! changes (`docker diff`) and written as a layer tar (`docker commit`).
//!
//! - [`changes`] gives what Docker's tree comparison (`ChangesDirs`, which
//!   dockerd's overlay2 driver uses on kernels with overlay `redirect_dir`,
//!   as here) gives for the container's filesystem against its image's,
//!   computed from the upper dir alone: only what is in it can differ. A
//!   path the image lacks is *added* (with everything under it); one it has
//!   is *modified* when type, mode, owner or device differ, or for a
//!   non-directory size or mtime (to the second); a whiteout (char 0/0) is
//!   a *deletion* of what the image had there, and an opaque directory
//!   (`trusted.overlay.opaque=y`) deletes each entry of the image's
//!   directory it does not have again. A directory with changes inside is
//!   listed as modified before them; in a directory, entries come in name
//!   order, deletions last (Docker's order there is a Go map's).
//! - [`write_layer_tar`] writes the whole upper dir as an uncompressed tar,
//!   whiteouts as empty `.wh.NAME` files and opaque dirs followed by an
//!   empty `DIR/.wh..wh..opq`, the way image layers carry them. Headers
//!   hold numeric owners, modes, mtimes truncated to the second (so the
//!   same files give the same diff ID), `security.capability` as a PAX
//!   xattr record, hard links within the layer as links to the first name.
//!
//! The upper dir is read through directory fds with `O_NOFOLLOW`: a
//! symlink in it is recorded as a symlink, never followed.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_types::{Error, Result};
use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const CAPABILITY_XATTR: &str = "security.capability";

/// What happened to a path, with Docker's numbering (the `Kind` of
/// `GET /containers/{id}/changes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

impl ChangeKind {
    /// The letter `docker diff` prints: `C`, `A` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path, absolute inside the container (`/etc/passwd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Non-UTF-8 bytes are replaced, as Docker's JSON does.
    pub path: String,
    pub kind: ChangeKind,
}

fn os_err(path: &[u8], what: &str, e: Errno) -> Error {
    Error::from(io::Error::from(e)).context(format!(
        "{what} {}",
        String::from_utf8_lossy(if path.is_empty() { b"/" } else { path })
    ))
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::from(io::Error::from(e)).context(format!("opening {}", path.display())))
}

/// Entry names of an open directory, sorted bytewise, without `.` and `..`.
fn sorted_names(dir: BorrowedFd<'_>, rel: &[u8]) -> Result<Vec<CString>> {
    let mut names = Vec::new();
    let mut d = Dir::read_from(dir).map_err(|e| os_err(rel, "reading directory", e))?;
    while let Some(ent) = d.read() {
        let ent = ent.map_err(|e| os_err(rel, "reading directory", e))?;
        let n = ent.file_name();
        if n != c"." && n != c".." {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn open_subdir(dir: BorrowedFd<'_>, name: &CStr, rel: &[u8]) -> Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err(rel, "opening", e))
}

/// [`open_subdir`], or `None` when the directory is gone meanwhile.
fn open_subdir_if_there(dir: BorrowedFd<'_>, name: &CStr, rel: &[u8]) -> Result<Option<OwnedFd>> {
    match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(os_err(rel, "opening", e)),
    }
}

fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Reads one xattr of an open file; `None` when it is absent or unreadable.
fn fxattr(fd: BorrowedFd<'_>, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::fgetxattr(fd, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(Errno::RANGE) if buf.len() < (64 << 10) => buf.resize(buf.len() * 4, 0),
            Err(_) => return None,
        }
    }
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    fxattr(dir, OPAQUE_XATTR).is_some_and(|v| v == b"y")
}

/// Docker's sameFsTime: equal, or the same second with either side
/// having no sub-second part (a time that came through a tar).
fn same_time(a: &Stat, b: &Stat) -> bool {
    a.st_mtime == b.st_mtime
        && (a.st_mtime_nsec == b.st_mtime_nsec || a.st_mtime_nsec == 0 || b.st_mtime_nsec == 0)
}

/// Docker's statDifferent: type and mode, owner, device; and for
/// non-directories size and mtime (a directory's are no measure of change).
fn stat_different(old: &Stat, new: &Stat) -> bool {
    old.st_mode != new.st_mode
        || old.st_uid != new.st_uid
        || old.st_gid != new.st_gid
        || old.st_rdev != new.st_rdev
        || (FileType::from_raw_mode(old.st_mode) != FileType::Directory
            && (!same_time(old, new) || old.st_size != new.st_size))
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// What one lower dir has at a path, by overlayfs' lookup rules.
enum InLayer {
    /// There, with its stat and (for a directory) whether it is opaque.
    Found(Stat, bool),
    /// Not there; `true` when an opaque directory on the way hides the
    /// layers below for this path.
    Absent(bool),
    /// A whiteout, or a non-directory on the way: hidden in the layers below.
    Hidden,
}

/// The image's layers as one read-only tree (the lower part of the overlay).
struct Lowers(Vec<OwnedFd>);

impl Lowers {
    fn lookup(layer: &OwnedFd, rel: &[u8]) -> Result<InLayer> {
        let comps: Vec<&[u8]> = rel
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let mut dir: Option<OwnedFd> = None;
        let mut opaque_above = false;
        for (i, comp) in comps.iter().enumerate() {
            let name =
                CString::new(*comp).map_err(|_| os_err(rel, "path with NUL", Errno::INVAL))?;
            let at = dir.as_ref().map_or(layer.as_fd(), |d| d.as_fd());
            let st = match rfs::statat(at, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => return Ok(InLayer::Absent(opaque_above)),
                Err(e) => return Err(os_err(rel, "stat in a lower layer", e)),
            };
            if is_whiteout(&st) {
                return Ok(InLayer::Hidden);
            }
            let last = i + 1 == comps.len();
            if !is_dir(&st) {
                return Ok(if last {
                    InLayer::Found(st, false)
                } else {
                    InLayer::Hidden
                });
            }
            let fd = open_subdir(at, &name, rel)?;
            let opaque = is_opaque(fd.as_fd());
            if last {
                return Ok(InLayer::Found(st, opaque));
            }
            opaque_above |= opaque;
            dir = Some(fd);
        }
        Ok(InLayer::Absent(opaque_above))
    }

    /// What the image has at `rel` (`/a/b`).
    fn stat(&self, rel: &[u8]) -> Result<Option<Stat>> {
        for layer in &self.0 {
            match Self::lookup(layer, rel)? {
                InLayer::Found(st, _) => return Ok(Some(st)),
                InLayer::Absent(false) => continue,
                InLayer::Absent(true) | InLayer::Hidden => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The names the image's directory `rel` holds.
    fn children(&self, rel: &[u8]) -> Result<std::collections::BTreeSet<CString>> {
        let mut names = std::collections::BTreeSet::new();
        let mut hidden = std::collections::HashSet::new();
        for layer in &self.0 {
            match Self::lookup(layer, rel)? {
                InLayer::Found(st, opaque) if is_dir(&st) => {
                    let inner = CString::new(&rel[1..])
                        .map_err(|_| os_err(rel, "path with NUL", Errno::INVAL))?;
                    let fd = rfs::openat(
                        layer,
                        &inner,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| os_err(rel, "opening in a lower layer", e))?;
                    for name in sorted_names(fd.as_fd(), rel)? {
                        let st = rfs::statat(&fd, &name, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| os_err(rel, "stat in a lower layer", e))?;
                        if is_whiteout(&st) {
                            hidden.insert(name);
                        } else if !hidden.contains(&name) {
                            names.insert(name);
                        }
                    }
                    if opaque {
                        break;
                    }
                }
                InLayer::Absent(false) => continue,
                _ => break,
            }
        }
        Ok(names)
    }
}

/// The changes a read-write layer `upper` makes over `lowers` (the image's
/// layer dirs, topmost first). See the module doc for the rules.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let root = open_dir(upper)?;
    let lowers = Lowers(
        lowers
            .iter()
            .map(|l| open_dir(l))
            .collect::<Result<Vec<_>>>()?,
    );
    let mut w = ChangeWalk {
        lowers,
        out: Vec::new(),
    };
    w.walk(root.as_fd(), &mut Vec::new(), true, false, true)?;
    Ok(w.out)
}

struct ChangeWalk {
    lowers: Lowers,
    out: Vec<Change>,
}

impl ChangeWalk {
    fn push(&mut self, path: &[u8], kind: ChangeKind) {
        self.out.push(Change {
            path: String::from_utf8_lossy(path).into_owned(),
            kind,
        });
    }

    /// Compares the upper dir `dir` (path `rel`: empty for the root, else
    /// `/a/b`) with the image's directory there: `old_dir` says the image
    /// has one, `opaque` that the container replaced it, `listed` that the
    /// directory itself is already listed (added or changed).
    fn walk(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &mut Vec<u8>,
        old_dir: bool,
        opaque: bool,
        listed: bool,
    ) -> Result<()> {
        let start = self.out.len();
        let names = sorted_names(dir, rel)?;
        let mut deleted: Vec<Vec<u8>> = Vec::new();
        for name in &names {
            let len = rel.len();
            rel.push(b'/');
            rel.extend_from_slice(name.to_bytes());
            let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Gone since the directory was read (a running container).
                Err(Errno::NOENT) => {
                    rel.truncate(len);
                    continue;
                }
                Err(e) => return Err(os_err(rel, "stat", e)),
            };
            // Under an opaque directory the image's entries are hidden,
            // but a name it had is still a changed (not an added) path.
            let old = if old_dir {
                self.lowers.stat(rel)?
            } else {
                None
            };
            if is_whiteout(&st) {
                if old.is_some() {
                    deleted.push(rel.clone());
                }
                rel.truncate(len);
                continue;
            }
            let mut child_listed = false;
            match &old {
                None => {
                    self.push(rel, ChangeKind::Added);
                    child_listed = true;
                }
                Some(o) if stat_different(o, &st) => {
                    self.push(rel, ChangeKind::Modified);
                    child_listed = true;
                }
                Some(_) => {}
            }
            if is_dir(&st) {
                let sub = match open_subdir_if_there(dir, name, rel)? {
                    Some(sub) => sub,
                    None => {
                        rel.truncate(len);
                        continue;
                    }
                };
                let sub_opaque = is_opaque(sub.as_fd());
                let sub_old = old.as_ref().is_some_and(is_dir);
                self.walk(sub.as_fd(), rel, sub_old, sub_opaque, child_listed)?;
            }
            rel.truncate(len);
        }
        if opaque && old_dir {
            let have: std::collections::HashSet<&CString> = names.iter().collect();
            for name in self.lowers.children(rel)? {
                if !have.contains(&name) {
                    let mut p = rel.clone();
                    p.push(b'/');
                    p.extend_from_slice(name.to_bytes());
                    deleted.push(p);
                }
            }
            deleted.sort();
        }
        for d in deleted {
            self.push(&d, ChangeKind::Deleted);
        }
        // A directory with changes inside is listed (before them) even when
        // it did not change itself.
        if self.out.len() > start && !listed && !rel.is_empty() {
            self.out.insert(
                start,
                Change {
                    path: String::from_utf8_lossy(rel).into_owned(),
                    kind: ChangeKind::Modified,
                },
            );
        }
        Ok(())
    }
}

/// Writes the read-write layer `upper` as an uncompressed layer tar (see
/// the module doc). An empty `upper` gives the 1024-byte empty tar, whose
/// digest Docker treats as "no layer".
pub fn write_layer_tar<W: Write>(upper: &Path, out: W) -> Result<W> {
    let root = open_dir(upper)?;
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let mut t = TarWalk {
        b,
        links: HashMap::new(),
    };
    t.walk(root.as_fd(), &mut Vec::new())?;
    t.b.into_inner()
        .map_err(|e| Error::from(e).context("finishing layer tar"))
}

struct TarWalk<W: Write> {
    b: tar::Builder<W>,
    /// (device, inode) of a multiply linked file → its name in the tar.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn tar_err(rel: &[u8]) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| {
        Error::from(e).context(format!(
            "writing {} to the layer tar",
            String::from_utf8_lossy(rel)
        ))
    }
}

impl<W: Write> TarWalk<W> {
    /// `rel` is the tar name of `dir` with a trailing `/` (empty for the root).
    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &mut Vec<u8>) -> Result<()> {
        for name in sorted_names(dir, rel)? {
            let len = rel.len();
            rel.extend_from_slice(name.to_bytes());
            let st = match rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Gone since the directory was read (a running container
                // committed without a pause): as Docker, left out.
                Err(Errno::NOENT) => {
                    rel.truncate(len);
                    continue;
                }
                Err(e) => return Err(os_err(rel, "stat", e)),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let Some(sub) = open_subdir_if_there(dir, &name, rel)? else {
                        rel.truncate(len);
                        continue;
                    };
                    rel.push(b'/');
                    let caps = fxattr(sub.as_fd(), CAPABILITY_XATTR);
                    let mut h = header(&st, tar::EntryType::Directory);
                    self.append(&mut h, rel, caps.as_deref(), io::empty())?;
                    if is_opaque(sub.as_fd()) {
                        let mut o = header(&st, tar::EntryType::Regular);
                        o.set_mode(st.st_mode & 0o777);
                        let mut opq = rel.clone();
                        opq.extend_from_slice(b".wh..wh..opq");
                        self.append(&mut o, &opq, None, io::empty())?;
                    }
                    self.walk(sub.as_fd(), rel)?;
                }
                _ if is_whiteout(&st) => {
                    let mut h = header(&st, tar::EntryType::Regular);
                    h.set_mode(0o600);
                    let mut wh = rel[..len].to_vec();
                    wh.extend_from_slice(b".wh.");
                    wh.extend_from_slice(name.to_bytes());
                    self.append(&mut h, &wh, None, io::empty())?;
                }
                FileType::Socket | FileType::Unknown => {
                    tracing::debug!(path = %String::from_utf8_lossy(rel), "layer tar skips a socket");
                }
                ft => self.file(dir, &name, &st, ft, rel)?,
            }
            rel.truncate(len);
        }
        Ok(())
    }

    /// A regular file, symlink, FIFO or device node (or a hard link to one
    /// written before).
    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        st: &Stat,
        ft: FileType,
        rel: &[u8],
    ) -> Result<()> {
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let mut h = header(st, tar::EntryType::Link);
                h.set_size(0);
                let first = first.clone();
                return self
                    .b
                    .append_link(&mut h, as_path(rel), as_path(&first))
                    .map_err(tar_err(rel));
            }
            self.links.insert(key, rel.to_vec());
        }
        match ft {
            FileType::RegularFile => {
                let fd = match rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => {
                        self.links.remove(&(st.st_dev, st.st_ino));
                        return Ok(());
                    }
                    Err(e) => return Err(os_err(rel, "opening", e)),
                };
                let caps = fxattr(fd.as_fd(), CAPABILITY_XATTR);
                let mut h = header(st, tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                // A file that changes size under a running container would
                // corrupt the stream: exactly the stat size is written.
                let data = io::Read::take(File::from(fd), st.st_size as u64);
                self.append(
                    &mut h,
                    rel,
                    caps.as_deref(),
                    ExactLen::new(data, st.st_size as u64),
                )
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| os_err(rel, "reading link", e))?;
                let mut h = header(st, tar::EntryType::Symlink);
                self.b
                    .append_link(&mut h, as_path(rel), as_path(target.as_bytes()))
                    .map_err(tar_err(rel))
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                let kind = match ft {
                    FileType::Fifo => tar::EntryType::Fifo,
                    FileType::CharacterDevice => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                };
                let mut h = header(st, kind);
                if ft != FileType::Fifo {
                    h.set_device_major(rustix::fs::major(st.st_rdev))
                        .map_err(tar_err(rel))?;
                    h.set_device_minor(rustix::fs::minor(st.st_rdev))
                        .map_err(tar_err(rel))?;
                }
                self.append(&mut h, rel, None, io::empty())
            }
            _ => Ok(()),
        }
    }

    fn append(
        &mut self,
        h: &mut tar::Header,
        name: &[u8],
        caps: Option<&[u8]>,
        data: impl io::Read,
    ) -> Result<()> {
        if let Some(caps) = caps {
            self.b
                .append_pax_extensions([("SCHILY.xattr.security.capability", caps)])
                .map_err(tar_err(name))?;
        }
        self.b
            .append_data(h, as_path(name), data)
            .map_err(tar_err(name))
    }
}

fn as_path(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

fn header(st: &Stat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// A reader that yields exactly `len` bytes: what the file holds, padded
/// with zeros if it shrank while being read.
struct ExactLen<R> {
    inner: R,
    left: u64,
}

impl<R> ExactLen<R> {
    fn new(inner: R, len: u64) -> Self {
        ExactLen { inner, left: len }
    }
}

impl<R: io::Read> io::Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TarBuilder, in_mount_namespace, root_or_skip};
    use crate::{ApplyOptions, apply_tar, mount_overlay, mount_overlay_readonly, unmount};
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn listing(c: &[Change]) -> Vec<String> {
        c.iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path))
            .collect()
    }

    fn lower(dir: &Path) {
        fs::create_dir(dir).unwrap();
        let tar = TarBuilder::new()
            .dir("etc/")
            .file("etc/passwd", b"root:x:0:0\n")
            .file("etc/group", b"root:x:0:\n")
            .dir("data/")
            .file("data/a", b"a")
            .file("data/b", b"b")
            .dir("keep/")
            .file("keep/x", b"x")
            .dir("gone/")
            .file("gone/y", b"y")
            .file("old", b"old")
            .finish();
        apply_tar(&tar[..], dir, &ApplyOptions::default()).unwrap();
    }

    /// Real overlayfs writes the upper dir; the changes read from it and
    /// the layer tar written from it both say what the container did.
    #[test]
    fn changes_and_layer_tar_from_a_real_overlay() {
        if !root_or_skip("changes_and_layer_tar_from_a_real_overlay") {
            return;
        }
        in_mount_namespace(|| {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            let low = t.join("lower");
            lower(&low);
            let (upper, work, merged) = (t.join("upper"), t.join("work"), t.join("merged"));
            for d in [&upper, &work, &merged] {
                fs::create_dir(d).unwrap();
            }
            mount_overlay(std::slice::from_ref(&low), &upper, &work, &merged).unwrap();
            fs::write(merged.join("new.txt"), b"new").unwrap();
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(merged.join("etc/passwd"))
                .unwrap();
            f.write_all(b"me:x:1000:1000\n").unwrap();
            drop(f);
            fs::remove_file(merged.join("old")).unwrap();
            fs::remove_file(merged.join("etc/group")).unwrap();
            fs::remove_dir_all(merged.join("gone")).unwrap();
            fs::remove_dir_all(merged.join("data")).unwrap();
            fs::create_dir(merged.join("data")).unwrap();
            fs::write(merged.join("data/c"), b"c").unwrap();
            // No redirects: a directory of the image cannot be renamed in
            // place (tools copy it), so the upper dir holds whole trees.
            let e = fs::rename(merged.join("keep"), merged.join("kept")).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{e}");
            fs::create_dir(merged.join("keep/sub")).unwrap();
            fs::write(merged.join("keep/sub/z"), b"z").unwrap();
            unmount(&merged).unwrap();

            let got = listing(&changes(&upper, std::slice::from_ref(&low)).unwrap());
            assert_eq!(
                got,
                [
                    "C /data",
                    "A /data/c",
                    "D /data/a",
                    "D /data/b",
                    "C /etc",
                    "C /etc/passwd",
                    "D /etc/group",
                    "C /keep",
                    "A /keep/sub",
                    "A /keep/sub/z",
                    "A /new.txt",
                    "D /gone",
                    "D /old",
                ],
                "{got:#?}"
            );

            // The layer tar applied as a layer of its own over the lower
            // one gives the same tree the container saw.
            let mut tar = Vec::new();
            tar = write_layer_tar(&upper, tar).unwrap();
            let applied = t.join("applied");
            fs::create_dir(&applied).unwrap();
            apply_tar(&tar[..], &applied, &ApplyOptions::default()).unwrap();
            mount_overlay_readonly(&[applied.clone(), low.clone()], &merged).unwrap();
            let check = || -> std::result::Result<(), String> {
                let read = |p: &str| fs::read(merged.join(p)).map_err(|e| format!("{p}: {e}"));
                if read("new.txt")? != b"new" {
                    return Err("new.txt".into());
                }
                if read("etc/passwd")? != b"root:x:0:0\nme:x:1000:1000\n" {
                    return Err("etc/passwd".into());
                }
                for gone in ["old", "gone", "data/a", "data/b", "etc/group"] {
                    if merged.join(gone).symlink_metadata().is_ok() {
                        return Err(format!("{gone} is still there"));
                    }
                }
                if read("data/c")? != b"c" || read("keep/sub/z")? != b"z" || read("keep/x")? != b"x"
                {
                    return Err("data/c, keep/sub/z or keep/x".into());
                }
                Ok(())
            };
            let res = check();
            unmount(&merged).unwrap();
            res.unwrap();
            // The same upper dir gives the same tar (same diff ID).
            assert_eq!(write_layer_tar(&upper, Vec::new()).unwrap(), tar);
        });
    }

    #[test]
    fn layer_tar_entries() {
        if !root_or_skip("layer_tar_entries") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let up = tmp.path().join("upper");
        fs::create_dir(&up).unwrap();
        assert_eq!(write_layer_tar(&up, Vec::new()).unwrap(), vec![0u8; 1024]);

        fs::create_dir(up.join("opq")).unwrap();
        rfs::setxattr(up.join("opq"), OPAQUE_XATTR, b"y", rfs::XattrFlags::empty()).unwrap();
        fs::write(up.join("opq/f"), b"data").unwrap();
        fs::hard_link(up.join("opq/f"), up.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", up.join("sym")).unwrap();
        rfs::mknodat(
            rfs::CWD,
            up.join("wh"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        let tar = write_layer_tar(&up, Vec::new()).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let got: Vec<(String, tar::EntryType, String)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    link,
                )
            })
            .collect();
        use tar::EntryType as T;
        assert_eq!(
            got,
            [
                ("link".into(), T::Regular, String::new()),
                ("opq/".into(), T::Directory, String::new()),
                ("opq/.wh..wh..opq".into(), T::Regular, String::new()),
                ("opq/f".into(), T::Link, "link".into()),
                ("sym".into(), T::Symlink, "/etc/passwd".into()),
                (".wh.wh".into(), T::Regular, String::new()),
            ]
        );
        // Whole seconds only, so the same content gives the same digest.
        let m = fs::metadata(up.join("link")).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let first = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.header().mtime().unwrap(), m.mtime() as u64);
    }

    #[test]
    fn copies_that_did_not_change_are_not_listed() {
        if !root_or_skip("copies_that_did_not_change_are_not_listed") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let low = tmp.path().join("lower");
        lower(&low);
        let up = tmp.path().join("upper");
        fs::create_dir(&up).unwrap();
        // /etc copied up (as a copy-up makes it: same metadata), /etc/group
        // copied up unchanged, /etc/passwd changed: /etc is listed for
        // what is in it, /etc/group not at all.
        fs::create_dir(up.join("etc")).unwrap();
        fs::write(up.join("etc/passwd"), b"changed").unwrap();
        fs::copy(low.join("etc/group"), up.join("etc/group")).unwrap();
        let same_times = |from: &Path, to: &Path| {
            let st = fs::metadata(from).unwrap();
            let t = |s: i64, n: i64| rfs::Timespec {
                tv_sec: s,
                tv_nsec: n as _,
            };
            let times = rfs::Timestamps {
                last_access: t(st.atime(), st.atime_nsec()),
                last_modification: t(st.mtime(), st.mtime_nsec()),
            };
            fs::set_permissions(to, st.permissions()).unwrap();
            rfs::utimensat(rfs::CWD, to, &times, AtFlags::empty()).unwrap();
        };
        same_times(&low.join("etc/group"), &up.join("etc/group"));
        same_times(&low.join("etc"), &up.join("etc"));
        // A directory whose mode changed is listed for itself.
        fs::create_dir(up.join("keep")).unwrap();
        fs::set_permissions(
            up.join("keep"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let got = listing(&changes(&up, std::slice::from_ref(&low)).unwrap());
        assert_eq!(got, ["C /etc", "C /etc/passwd", "C /keep"]);
    }
}
