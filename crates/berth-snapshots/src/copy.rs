//! Copy a directory tree with its metadata: what Docker does when an empty
//! volume is first mounted over a path where the image has content
//! ("copy-up").
//!
//! Everything is addressed relative to open directory fds: a name is
//! opened with `O_NOFOLLOW`, so a symlink in the source tree is copied as a
//! symlink and never followed, and nothing is ever written outside `dst`.
//! Kept: owners, permission bits (setuid/setgid/sticky included, set after
//! the chown that would clear them), access and modification times,
//! symlink targets, hard links within the tree, FIFOs and device nodes,
//! and extended attributes of files and directories (EPERM/ENOTSUP from an
//! xattr are skipped, as Docker's copy ignores unsupported xattrs;
//! overlayfs' own `trusted.overlay.*` are never copied). Sockets are
//! skipped. The root of `dst` takes the owner, mode and times of `src`'s
//! root.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_types::{Error, Result};
use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid,
    XattrFlags,
};

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    pub bytes: u64,
}

/// Copies the contents of the directory `src` into the directory `dst`
/// (which should be empty: an existing name is an error) and gives `dst`
/// the owner, mode and times of `src`.
pub fn copy_tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<CopyStats> {
    let mut c = Copier {
        stats: CopyStats::default(),
        links: HashMap::new(),
        dst_root: dst,
    };
    let st = rfs::fstat(src).map_err(|e| os_err(Path::new("."), "stat", e))?;
    c.copy_dir_contents(src, dst, Path::new(""))?;
    copy_xattrs(src, dst, Path::new("."));
    rfs::fchown(
        dst,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )
    .map_err(|e| os_err(Path::new("."), "chown", e))?;
    rfs::fchmod(dst, mode_of(&st)).map_err(|e| os_err(Path::new("."), "chmod", e))?;
    rfs::futimens(dst, &times_of(&st)).map_err(|e| os_err(Path::new("."), "set times of", e))?;
    Ok(c.stats)
}

struct Copier<'a> {
    stats: CopyStats,
    /// (device, inode) of a multiply linked source file → its copy, relative
    /// to `dst_root`.
    links: HashMap<(u64, u64), PathBuf>,
    dst_root: BorrowedFd<'a>,
}

fn os_err(path: &Path, what: &str, e: rustix::io::Errno) -> Error {
    Error::from(std::io::Error::from(e)).context(format!("copy {what} {}", path.display()))
}

fn mode_of(st: &Stat) -> Mode {
    Mode::from_raw_mode(st.st_mode & 0o7777)
}

fn times_of(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn owner_of(st: &Stat) -> (Option<Uid>, Option<Gid>) {
    (
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )
}

/// Copies the extended attributes of one open file or directory; errors
/// are logged and skipped.
fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, path: &Path) {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rfs::flistxattr(src, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < (1 << 20) => {
                names.resize(names.len() * 4, 0)
            }
            Err(_) => return,
        }
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let mut value = vec![0u8; 256];
        let len = loop {
            match rfs::fgetxattr(src, name, &mut value[..]) {
                Ok(l) => break Some(l),
                Err(rustix::io::Errno::RANGE) if value.len() < (1 << 20) => {
                    value.resize(value.len() * 4, 0)
                }
                Err(_) => break None,
            }
        };
        let Some(len) = len else { continue };
        if let Err(e) = rfs::fsetxattr(dst, name, &value[..len], XattrFlags::empty()) {
            tracing::debug!(path = %path.display(), xattr = %String::from_utf8_lossy(name), error = %e, "xattr not copied");
        }
    }
}

impl Copier<'_> {
    fn copy_dir_contents(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &Path,
    ) -> Result<()> {
        let mut names: Vec<CString> = Vec::new();
        let mut dir = Dir::read_from(src).map_err(|e| os_err(rel, "read directory", e))?;
        while let Some(ent) = dir.read() {
            let ent = ent.map_err(|e| os_err(rel, "read directory", e))?;
            let n = ent.file_name();
            if n == c"." || n == c".." {
                continue;
            }
            names.push(n.to_owned());
        }
        drop(dir);
        names.sort();
        for name in &names {
            self.copy_entry(
                src,
                dst,
                name,
                &rel.join(OsStr::from_bytes(name.to_bytes())),
            )?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        sdir: BorrowedFd<'_>,
        ddir: BorrowedFd<'_>,
        name: &CStr,
        rel: &Path,
    ) -> Result<()> {
        let st = rfs::statat(sdir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| os_err(rel, "stat", e))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let (uid, gid) = owner_of(&st);
        if ft != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                rfs::linkat(self.dst_root, first, ddir, name, AtFlags::empty())
                    .map_err(|e| os_err(rel, "hard link", e))?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
            self.links.insert(key, rel.to_path_buf());
        }
        match ft {
            FileType::Directory => {
                let s = rfs::openat(
                    sdir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| os_err(rel, "open", e))?;
                rfs::mkdirat(ddir, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| os_err(rel, "create directory", e))?;
                let d = rfs::openat(
                    ddir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| os_err(rel, "open", e))?;
                self.stats.dirs += 1;
                self.copy_dir_contents(s.as_fd(), d.as_fd(), rel)?;
                self.finish(&s, &d, &st, rel)?;
            }
            FileType::RegularFile => {
                let s = rfs::openat(
                    sdir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| os_err(rel, "open", e))?;
                let d = rfs::openat(
                    ddir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| os_err(rel, "create", e))?;
                let mut from = File::from(s);
                let mut to = File::from(d);
                let n = std::io::copy(&mut from, &mut to)
                    .map_err(|e| Error::from(e).context(format!("copy {}", rel.display())))?;
                self.stats.files += 1;
                self.stats.bytes += n;
                let (s, d): (OwnedFd, OwnedFd) = (from.into(), to.into());
                self.finish(&s, &d, &st, rel)?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(sdir, name, Vec::new())
                    .map_err(|e| os_err(rel, "read link", e))?;
                rfs::symlinkat(target.as_c_str(), ddir, name)
                    .map_err(|e| os_err(rel, "create symlink", e))?;
                rfs::chownat(ddir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| os_err(rel, "chown", e))?;
                rfs::utimensat(ddir, name, &times_of(&st), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| os_err(rel, "set times of", e))?;
                self.stats.symlinks += 1;
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                rfs::mknodat(ddir, name, ft, Mode::from_raw_mode(0o600), st.st_rdev)
                    .map_err(|e| os_err(rel, "create node", e))?;
                rfs::chownat(ddir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| os_err(rel, "chown", e))?;
                rfs::chmodat(ddir, name, mode_of(&st), AtFlags::empty())
                    .map_err(|e| os_err(rel, "chmod", e))?;
                rfs::utimensat(ddir, name, &times_of(&st), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| os_err(rel, "set times of", e))?;
                self.stats.specials += 1;
            }
            _ => {
                tracing::debug!(path = %rel.display(), "copy skips a socket");
            }
        }
        Ok(())
    }

    /// Owner, then mode (a chown clears setuid bits), xattrs, then times.
    fn finish(&self, s: &OwnedFd, d: &OwnedFd, st: &Stat, rel: &Path) -> Result<()> {
        let (uid, gid) = owner_of(st);
        rfs::fchown(d, uid, gid).map_err(|e| os_err(rel, "chown", e))?;
        rfs::fchmod(d, mode_of(st)).map_err(|e| os_err(rel, "chmod", e))?;
        copy_xattrs(s.as_fd(), d.as_fd(), rel);
        rfs::futimens(d, &times_of(st)).map_err(|e| os_err(rel, "set times of", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn open_dir(p: &Path) -> OwnedFd {
        rfs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn copies_a_tree_with_its_metadata() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("f"), b"hello").unwrap();
        std::fs::set_permissions(src.join("f"), std::fs::Permissions::from_mode(0o4640)).unwrap();
        std::fs::write(src.join("sub/deeper/g"), b"g").unwrap();
        std::fs::hard_link(src.join("f"), src.join("sub/f-link")).unwrap();
        std::os::unix::fs::symlink("../f", src.join("sub/sym")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();
        let root = rustix::process::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(src.join("f"), Some(1000), Some(2000)).unwrap();
            std::fs::set_permissions(src.join("f"), std::fs::Permissions::from_mode(0o4640))
                .unwrap();
            std::os::unix::fs::lchown(src.join("sub/sym"), Some(7), Some(8)).unwrap();
            rfs::mknodat(
                open_dir(&src),
                "fifo",
                FileType::Fifo,
                Mode::from_raw_mode(0o620),
                0,
            )
            .unwrap();
            std::fs::set_permissions(src.join("fifo"), std::fs::Permissions::from_mode(0o620))
                .unwrap();
        }
        let old = Timestamps {
            last_access: Timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 5,
            },
            last_modification: Timespec {
                tv_sec: 1_000_000_001,
                tv_nsec: 7,
            },
        };
        rfs::utimensat(
            open_dir(&src),
            "sub/deeper",
            &old,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        rfs::utimensat(open_dir(&src), "sub/sym", &old, AtFlags::SYMLINK_NOFOLLOW).unwrap();

        let stats = copy_tree(open_dir(&src).as_fd(), open_dir(&dst).as_fd()).unwrap();
        assert_eq!(stats.files, 2);
        assert_eq!(stats.hardlinks, 1);
        assert_eq!(stats.symlinks, 2);
        assert_eq!(stats.bytes, 6);

        assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"hello");
        let f = std::fs::metadata(dst.join("f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4640);
        let link = std::fs::metadata(dst.join("sub/f-link")).unwrap();
        assert_eq!((f.ino(), f.nlink()), (link.ino(), 2));
        assert_eq!(
            std::fs::read_link(dst.join("sub/sym")).unwrap(),
            Path::new("../f")
        );
        assert_eq!(
            std::fs::read_link(dst.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        let deeper = std::fs::metadata(dst.join("sub/deeper")).unwrap();
        assert_eq!((deeper.mtime(), deeper.mtime_nsec()), (1_000_000_001, 7));
        assert_eq!((deeper.atime(), deeper.atime_nsec()), (1_000_000_000, 5));
        let sym = std::fs::symlink_metadata(dst.join("sub/sym")).unwrap();
        assert_eq!(sym.mtime(), 1_000_000_001);
        assert_eq!(
            std::fs::metadata(&dst).unwrap().mode() & 0o7777,
            0o750,
            "the root takes the source root's mode"
        );
        if root {
            assert_eq!((f.uid(), f.gid()), (1000, 2000));
            assert_eq!((sym.uid(), sym.gid()), (7, 8));
            let fifo = std::fs::symlink_metadata(dst.join("fifo")).unwrap();
            assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
            assert_eq!(fifo.mode() & 0o777, 0o620);
        }
    }

    #[test]
    fn an_existing_name_in_the_target_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dst = t.path().join("dst");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("f"), b"new").unwrap();
        std::fs::write(dst.join("f"), b"old").unwrap();
        let e = copy_tree(open_dir(&src).as_fd(), open_dir(&dst).as_fd()).unwrap_err();
        assert!(e.message.contains("copy create f"), "{e}");
        assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"old");
    }
}
