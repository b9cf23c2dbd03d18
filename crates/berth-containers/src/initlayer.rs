//! A container's init layer, as Docker's `<id>-init`: a lower dir between
//! the image's layers and the read-write layer that holds the mount points
//! berth itself bind-mounts or mounts over (`/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`, `/proc`, `/sys`, `/dev`) when the image lacks them.
//! Without it the runtime would create them in the read-write layer, where
//! `diff` would list them and `commit` would put them in the image.
//!
//! ```text
//! <data-root>/containers/<id>/init/   made at create, read-only from then on
//! ```
//!
//! Only what no image layer has is made; a parent directory the image has
//! is made with the image's owner, mode and times, so the merged view of
//! it is unchanged. A path under something that is not a directory in the
//! image (`/etc` a symlink) is left alone.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_types::{Error, Result};
use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// Mount points berth makes, as (path, is a directory).
const ENTRIES: &[(&str, bool)] = &[
    ("dev", true),
    ("etc/hostname", false),
    ("etc/hosts", false),
    ("etc/resolv.conf", false),
    ("proc", true),
    ("sys", true),
];

enum Found {
    Absent,
    Dir(Stat),
    Other,
}

/// What the image (`lowers`, topmost first) has at `rel`.
fn lookup(lowers: &[OwnedFd], rel: &str) -> Result<Found> {
    let c = CString::new(rel).map_err(|_| Error::invalid("path with NUL"))?;
    for l in lowers {
        match rfs::openat2(
            l,
            c.as_c_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        ) {
            Ok(fd) => {
                let st = rfs::fstat(&fd).map_err(|e| Error::from(std::io::Error::from(e)))?;
                return Ok(match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => Found::Dir(st),
                    // A whiteout: deleted in this layer.
                    FileType::CharacterDevice if st.st_rdev == 0 => Found::Absent,
                    _ => Found::Other,
                });
            }
            Err(Errno::NOENT) => continue,
            // A parent is not a directory (or a loop): nothing to make.
            Err(Errno::NOTDIR | Errno::LOOP) => return Ok(Found::Other),
            Err(e) => {
                return Err(Error::from(std::io::Error::from(e))
                    .context(format!("looking up /{rel} in the image")));
            }
        }
    }
    Ok(Found::Absent)
}

/// Makes `dir` (which must not exist) as the init layer over `lowers`.
pub fn make(dir: &Path, lowers: &[PathBuf]) -> Result<()> {
    let fds = lowers
        .iter()
        .map(|l| {
            rfs::open(
                l,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                Error::from(std::io::Error::from(e))
                    .context(format!("opening layer {}", l.display()))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir(dir)?;
    // Parent directories copied from the image get its times last, after
    // their entries are made.
    let mut copied: Vec<(PathBuf, Stat)> = Vec::new();
    'entries: for (rel, is_dir) in ENTRIES {
        if !matches!(lookup(&fds, rel)?, Found::Absent) {
            continue;
        }
        let mut parents = Vec::new();
        let mut p = Path::new(rel).parent();
        while let Some(x) = p.filter(|x| !x.as_os_str().is_empty()) {
            parents.push(x.to_path_buf());
            p = x.parent();
        }
        for parent in parents.iter().rev() {
            let target = dir.join(parent);
            if target.exists() {
                continue;
            }
            match lookup(&fds, &parent.to_string_lossy())? {
                Found::Other => continue 'entries,
                Found::Dir(st) => {
                    std::fs::create_dir(&target)?;
                    rfs::chown(
                        &target,
                        Some(rfs::Uid::from_raw(st.st_uid)),
                        Some(rfs::Gid::from_raw(st.st_gid)),
                    )
                    .map_err(|e| Error::from(std::io::Error::from(e)))?;
                    rfs::chmod(&target, Mode::from_raw_mode(st.st_mode & 0o7777))
                        .map_err(|e| Error::from(std::io::Error::from(e)))?;
                    copied.push((target, st));
                }
                Found::Absent => {
                    std::fs::create_dir(&target)?;
                }
            }
        }
        let target = dir.join(rel);
        if *is_dir {
            std::fs::create_dir(&target)?;
        } else {
            std::fs::File::create(&target)?;
        }
    }
    for (path, st) in copied.iter().rev() {
        let times = rfs::Timestamps {
            last_access: rfs::Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: rfs::Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        rfs::utimensat(rfs::CWD, path, &times, rfs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::from(std::io::Error::from(e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn makes_only_what_the_image_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        let base = tmp.path().join("base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(base.join("proc")).unwrap();
        std::fs::write(base.join("etc/hosts"), b"image hosts").unwrap();
        std::fs::set_permissions(
            base.join("etc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o750),
        )
        .unwrap();
        std::fs::create_dir_all(&top).unwrap();
        // sys is a symlink in the image: left alone.
        std::os::unix::fs::symlink("/proc", top.join("sys")).unwrap();
        let init = tmp.path().join("init");
        make(&init, &[top, base.clone()]).unwrap();
        let mut names: Vec<String> = walk(&init);
        names.sort();
        assert_eq!(names, ["dev", "etc", "etc/hostname", "etc/resolv.conf"]);
        let (a, b) = (
            std::fs::metadata(init.join("etc")).unwrap(),
            std::fs::metadata(base.join("etc")).unwrap(),
        );
        assert_eq!(a.mode(), b.mode());
        assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
    }

    fn walk(d: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                for sub in walk(&e.path()) {
                    out.push(format!("{name}/{sub}"));
                }
            }
            out.push(name);
        }
        out
    }
}
