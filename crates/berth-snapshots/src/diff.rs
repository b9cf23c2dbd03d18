//! A container's read-write layer (an overlayfs upper dir) read back as
//! changes (`docker diff`) and written as a layer tar (`docker commit`).
//!
//! Both follow Docker's overlay2 driver:
//! - [`changes`] walks the upper dir in lexical order. A char device 0/0
//!   (a whiteout) and a directory with `trusted.overlay.opaque=y` are
//!   deletions of their path; anything else is *added*, unless its path
//!   exists in a lower dir (the first one that has it, symlinks followed
//!   inside that lower dir), then *modified* — except a directory whose
//!   size, mode and mtime (to the second) equal the lower one's, which is
//!   only there because something below it changed and is not listed. The
//!   parent of an added or deleted path is listed as modified, once,
//!   unless it is `/` or already listed.
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
use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat};
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

/// The changes a read-write layer `upper` makes over `lowers` (the image's
/// layer dirs, topmost first). See the module doc for the rules.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let root = open_dir(upper)?;
    let lowers = lowers
        .iter()
        .map(|l| open_dir(l))
        .collect::<Result<Vec<_>>>()?;
    let mut w = ChangeWalk {
        lowers,
        out: Vec::new(),
        changed_dirs: std::collections::HashSet::new(),
    };
    w.walk(root.as_fd(), &mut Vec::new())?;
    Ok(w.out)
}

struct ChangeWalk {
    lowers: Vec<OwnedFd>,
    out: Vec<Change>,
    /// Directories already listed (or known changed), by path.
    changed_dirs: std::collections::HashSet<Vec<u8>>,
}

impl ChangeWalk {
    /// Walks the entries of `dir`, whose path is `rel` (empty for the root,
    /// else `/a/b`).
    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &mut Vec<u8>) -> Result<()> {
        for name in sorted_names(dir, rel)? {
            let len = rel.len();
            rel.push(b'/');
            rel.extend_from_slice(name.to_bytes());
            let st = rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| os_err(rel, "stat", e))?;
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            let sub = if is_dir {
                Some(open_subdir(dir, &name, rel)?)
            } else {
                None
            };
            let deleted = is_whiteout(&st) || sub.as_ref().is_some_and(|d| is_opaque(d.as_fd()));
            let kind = if deleted {
                Some(ChangeKind::Deleted)
            } else {
                self.added_or_modified(rel, &st, is_dir)?
            };
            if let Some(kind) = kind {
                if is_dir {
                    self.changed_dirs.insert(rel.clone());
                }
                if kind != ChangeKind::Modified {
                    let parent = &rel[..len];
                    if !parent.is_empty() && self.changed_dirs.insert(parent.to_vec()) {
                        self.out.push(Change {
                            path: String::from_utf8_lossy(parent).into_owned(),
                            kind: ChangeKind::Modified,
                        });
                    }
                }
                self.out.push(Change {
                    path: String::from_utf8_lossy(rel).into_owned(),
                    kind,
                });
            }
            if let Some(sub) = sub {
                self.walk(sub.as_fd(), rel)?;
            }
            rel.truncate(len);
        }
        Ok(())
    }

    /// Added, modified, or (a directory only there for its children) none.
    fn added_or_modified(&self, rel: &[u8], st: &Stat, is_dir: bool) -> Result<Option<ChangeKind>> {
        let inner =
            CString::new(&rel[1..]).map_err(|_| os_err(rel, "path with NUL", Errno::INVAL))?;
        for lower in &self.lowers {
            let fd = match rfs::openat2(
                lower,
                inner.as_c_str(),
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(os_err(rel, "looking up in a lower layer", e)),
            };
            let lst = rfs::fstat(&fd).map_err(|e| os_err(rel, "stat in a lower layer", e))?;
            if is_dir
                && FileType::from_raw_mode(lst.st_mode) == FileType::Directory
                && lst.st_size == st.st_size
                && lst.st_mode == st.st_mode
                && same_time(&lst, st)
            {
                return Ok(None);
            }
            return Ok(Some(ChangeKind::Modified));
        }
        Ok(Some(ChangeKind::Added))
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
            let st = rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| os_err(rel, "stat", e))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let sub = open_subdir(dir, &name, rel)?;
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
                let fd = rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| os_err(rel, "opening", e))?;
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
            fs::create_dir(merged.join("keep/sub")).unwrap();
            fs::write(merged.join("keep/sub/z"), b"z").unwrap();
            unmount(&merged).unwrap();

            let got = listing(&changes(&upper, std::slice::from_ref(&low)).unwrap());
            assert_eq!(
                got,
                [
                    "D /data",
                    "A /data/c",
                    "C /etc",
                    "D /etc/group",
                    "C /etc/passwd",
                    "D /gone",
                    "C /keep",
                    "A /keep/sub",
                    "A /keep/sub/z",
                    "A /new.txt",
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
    fn unchanged_directory_copies_are_not_listed() {
        if !root_or_skip("unchanged_directory_copies_are_not_listed") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let low = tmp.path().join("lower");
        lower(&low);
        let up = tmp.path().join("upper");
        fs::create_dir(&up).unwrap();
        // /etc copied up with the same metadata (as a copy-up makes it),
        // files in it changed: only the files are listed.
        fs::create_dir(up.join("etc")).unwrap();
        fs::write(up.join("etc/passwd"), b"changed").unwrap();
        // As many entries as the lower one (tmpfs sizes directories by them).
        fs::write(up.join("etc/group"), b"changed").unwrap();
        let st = fs::metadata(low.join("etc")).unwrap();
        fs::set_permissions(up.join("etc"), st.permissions()).unwrap();
        let times = rfs::Timestamps {
            last_access: rfs::Timespec {
                tv_sec: st.atime(),
                tv_nsec: st.atime_nsec() as _,
            },
            last_modification: rfs::Timespec {
                tv_sec: st.mtime(),
                tv_nsec: st.mtime_nsec() as _,
            },
        };
        rfs::utimensat(rfs::CWD, up.join("etc"), &times, AtFlags::empty()).unwrap();
        let got = listing(&changes(&up, std::slice::from_ref(&low)).unwrap());
        assert_eq!(got, ["C /etc/group", "C /etc/passwd"]);
    }
}
