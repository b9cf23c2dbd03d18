//! Where the filesystem puts new directories.
//!
//! ext4's Orlov allocator keeps a subdirectory in its parent's block group,
//! so every layer staged under `tmp/` lands in the groups where the
//! previous layers were, and was deleted from. On ext4 without a journal
//! the inode allocator skips inodes freed in the last minute (six while
//! their table block is dirty) one by one, from the start of the group for
//! every new inode: after `rmi` of a Debian-sized image, the next pull
//! spent 80% of its time there (6.6 s instead of 1 s). A directory with
//! the TOPDIR flag (`chattr +T`) makes the allocator spread its
//! subdirectories over the groups with the most free inodes instead, as it
//! does below `/`.
//!
//! A group just emptied by a deletion is one of those, so a spread staging
//! directory still lands now and then where a layer was just removed, and
//! that pull takes several times as long. [`RecentlyFreed`] remembers the
//! inode regions this process emptied, so that a new staging directory that
//! lands in one can be made again elsewhere.
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::fs::{IFlags, Mode, OFlags};

/// Mark `dir` as the top of directory hierarchies (`FS_TOPDIR_FL`), so its
/// subdirectories are spread over the filesystem. A hint: filesystems
/// without the flag, and errors, are ignored. Returns whether it is set.
pub fn spread_subdirectories(dir: &Path) -> bool {
    let Ok(fd) = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    ) else {
        return false;
    };
    match rustix::fs::ioctl_getflags(&fd) {
        Ok(f) if f.contains(IFlags::TOPDIR) => true,
        Ok(f) => rustix::fs::ioctl_setflags(&fd, f | IFlags::TOPDIR).is_ok(),
        Err(_) => false,
    }
}

/// Whether `dir` is on ext4 without a journal, where the allocator avoids
/// (scanning past them for every new inode) inodes freed in the last minutes.
/// Read from `/sys/fs/ext4/<device>/journal_task`, `<none>` then.
pub fn delays_inode_reuse(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(dir) else {
        return false;
    };
    let dev = m.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let Ok(link) = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")) else {
        return false;
    };
    let Some(name) = link.file_name() else {
        return false;
    };
    let task = Path::new("/sys/fs/ext4").join(name).join("journal_task");
    std::fs::read_to_string(task).is_ok_and(|t| t.trim() == "<none>")
}

/// Inodes per region: one ext4 flex group with mkfs' defaults (16 block
/// groups of 8192 inodes), the unit new directories are placed in.
const REGION_SHIFT: u32 = 17;
/// How long deleted inodes are avoided: ext4's `RECENTCY_MIN` plus
/// `RECENTCY_DIRTY` (60 s + 300 s).
const AVOIDED_FOR: Duration = Duration::from_secs(360);
/// Deletions of fewer inodes in a region than this are not worth avoiding.
const MIN_FREED: u32 = 64;

/// The inode regions where this process deleted many inodes lately.
#[derive(Debug, Default)]
pub struct RecentlyFreed {
    regions: Mutex<Vec<(u64, Instant)>>,
}

impl RecentlyFreed {
    /// Remove the directory tree at `path` (without following symlinks), and
    /// remember the regions its inodes were in. A missing `path` is not an
    /// error.
    pub fn remove_tree(&self, path: &Path) -> std::io::Result<()> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(std::io::Error::other(format!(
                "cannot remove {}",
                path.display()
            )));
        };
        let dir = match rustix::fs::open(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut counts: Vec<(u64, u32)> = Vec::new();
        let r = crate::apply::remove_dir_all(dir.as_fd(), name.as_bytes(), &mut |ino| {
            let region = ino >> REGION_SHIFT;
            match counts.iter_mut().find(|(r, _)| *r == region) {
                Some((_, n)) => *n += 1,
                None => counts.push((region, 1)),
            }
        });
        self.note(counts);
        match r {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn note(&self, counts: Vec<(u64, u32)>) {
        let now = Instant::now();
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.retain(|(_, at)| now.duration_since(*at) < AVOIDED_FOR);
        for (region, n) in counts {
            if n < MIN_FREED {
                continue;
            }
            match regions.iter_mut().find(|(r, _)| *r == region) {
                Some((_, at)) => *at = now,
                None => regions.push((region, now)),
            }
        }
    }

    /// Whether the inode `ino` is in a region this process deleted many
    /// inodes from lately: a directory there is better made again.
    pub fn is_recent(&self, ino: u64) -> bool {
        let now = Instant::now();
        let region = ino >> REGION_SHIFT;
        let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions
            .iter()
            .any(|(r, at)| *r == region && now.duration_since(*at) < AVOIDED_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_flag_where_the_filesystem_has_it() {
        let d = tempfile::tempdir().unwrap();
        let set = spread_subdirectories(d.path());
        // tmpfs has no such flag; ext4 (the data root's usual home) has.
        let fd =
            rustix::fs::open(d.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let now = rustix::fs::ioctl_getflags(&fd).map(|f| f.contains(IFlags::TOPDIR));
        assert_eq!(now.unwrap_or(false), set);
        // a second call keeps it and says so
        assert_eq!(spread_subdirectories(d.path()), set);
        assert!(!spread_subdirectories(&d.path().join("missing")));
    }

    #[test]
    fn removing_a_tree_remembers_its_inode_regions() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("layer");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("a/link")).unwrap();
        for i in 0..MIN_FREED {
            std::fs::write(tree.join(format!("a/b/f{i}")), b"x").unwrap();
        }
        let ino = std::fs::metadata(tree.join("a/b/f0")).unwrap().ino();
        let freed = RecentlyFreed::default();
        assert!(!freed.is_recent(ino));
        freed.remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(std::path::Path::new("/etc/passwd").exists());
        assert!(freed.is_recent(ino), "the files' region is remembered");
        assert!(!freed.is_recent(ino ^ (1 << 40)), "other regions are not");
        // gone already: fine, and nothing more is remembered
        freed.remove_tree(&tree).unwrap();
        freed.remove_tree(&d.path().join("missing/x")).unwrap();
        // a few inodes are not worth avoiding
        let small = d.path().join("small");
        std::fs::create_dir_all(&small).unwrap();
        std::fs::write(small.join("f"), b"x").unwrap();
        let small_ino = std::fs::metadata(small.join("f")).unwrap().ino();
        let other = RecentlyFreed::default();
        other.remove_tree(&small).unwrap();
        assert!(!other.is_recent(small_ino));
    }

    #[test]
    fn journal_detection_copes_with_anything() {
        let d = tempfile::tempdir().unwrap();
        // Either answer is right on a given filesystem; neither may fail.
        let _ = delays_inode_reuse(d.path());
        assert!(!delays_inode_reuse(&d.path().join("missing")));
    }
}
