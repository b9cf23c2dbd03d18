//! The kernel side of the local driver: mounting a volume that has driver
//! options (`type`, `device`, `o`) over its `_data` directory, as
//! `mount -t TYPE -o O DEVICE _data` would, and reading
//! /proc/self/mountinfo.

use std::path::{Path, PathBuf};

use berth_types::{Error, Result};
use rustix::mount::{MountFlags, UnmountFlags};

/// `o=` options that are mount flags (set or cleared), as moby's
/// `mount.parseOptions`; everything else is filesystem data.
const FLAGS: &[(&str, bool, u64)] = &[
    ("ro", false, libc::MS_RDONLY),
    ("rw", true, libc::MS_RDONLY),
    ("suid", true, libc::MS_NOSUID),
    ("nosuid", false, libc::MS_NOSUID),
    ("dev", true, libc::MS_NODEV),
    ("nodev", false, libc::MS_NODEV),
    ("exec", true, libc::MS_NOEXEC),
    ("noexec", false, libc::MS_NOEXEC),
    ("sync", false, libc::MS_SYNCHRONOUS),
    ("async", true, libc::MS_SYNCHRONOUS),
    ("dirsync", false, libc::MS_DIRSYNC),
    ("remount", false, libc::MS_REMOUNT),
    ("mand", false, libc::MS_MANDLOCK),
    ("nomand", true, libc::MS_MANDLOCK),
    ("atime", true, libc::MS_NOATIME),
    ("noatime", false, libc::MS_NOATIME),
    ("diratime", true, libc::MS_NODIRATIME),
    ("nodiratime", false, libc::MS_NODIRATIME),
    ("bind", false, libc::MS_BIND),
    ("rbind", false, libc::MS_BIND | libc::MS_REC),
    ("unbindable", false, libc::MS_UNBINDABLE),
    ("runbindable", false, libc::MS_UNBINDABLE | libc::MS_REC),
    ("private", false, libc::MS_PRIVATE),
    ("rprivate", false, libc::MS_PRIVATE | libc::MS_REC),
    ("shared", false, libc::MS_SHARED),
    ("rshared", false, libc::MS_SHARED | libc::MS_REC),
    ("slave", false, libc::MS_SLAVE),
    ("rslave", false, libc::MS_SLAVE | libc::MS_REC),
    ("relatime", false, libc::MS_RELATIME),
    ("norelatime", true, libc::MS_RELATIME),
    ("strictatime", false, libc::MS_STRICTATIME),
    ("nostrictatime", true, libc::MS_STRICTATIME),
];

/// Splits `o=` into mount flags and the data string.
pub fn parse_options(o: &str) -> (u64, String) {
    let mut flags = 0u64;
    let mut data = Vec::new();
    for opt in o.split(',') {
        match FLAGS.iter().find(|(n, _, _)| *n == opt) {
            Some((_, clear, f)) => {
                if *clear {
                    flags &= !f;
                } else {
                    flags |= f;
                }
            }
            None if opt.is_empty() => {}
            None => data.push(opt),
        }
    }
    (flags, data.join(","))
}

/// Mounts `device` of type `fstype` with the options `o` on `target`.
pub fn mount(device: &str, target: &Path, fstype: &str, o: &str) -> Result<()> {
    let (flags, data) = parse_options(o);
    let cdata = std::ffi::CString::new(data.clone())
        .map_err(|_| Error::invalid("mount options contain a NUL byte"))?;
    rustix::mount::mount(
        device,
        target,
        fstype,
        MountFlags::from_bits_retain(flags as _),
        (!data.is_empty()).then_some(cdata.as_c_str()),
    )
    .map_err(|e| {
        Error::internal(format!(
            "failed to mount local volume: mount {device}:{}, flags: {flags:#x}, data: {data}: {}",
            target.display(),
            std::io::Error::from(e)
        ))
    })
}

/// Detaches the mount on `target` (as moby's `mount.Unmount`); not being
/// mounted is not an error.
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) if !is_mountpoint(target) => {
            Ok(())
        }
        Err(e) => Err(Error::internal(format!(
            "unmount {}: {}",
            target.display(),
            std::io::Error::from(e)
        ))),
    }
}

/// Mount points of this process (field 5 of /proc/self/mountinfo, with
/// the kernel's octal escapes undone).
pub fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// Whether something is mounted on `p`.
pub fn is_mountpoint(p: &Path) -> bool {
    mount_points().iter().any(|m| m == p)
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    v.dedup();
    v
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        assert_eq!(
            parse_options("size=1m,uid=1000"),
            (0, "size=1m,uid=1000".to_string())
        );
        assert_eq!(parse_options("bind"), (libc::MS_BIND, String::new()));
        assert_eq!(
            parse_options("ro,noexec,mode=0755"),
            (libc::MS_RDONLY | libc::MS_NOEXEC, "mode=0755".to_string())
        );
        assert_eq!(parse_options("ro,rw"), (0, String::new()));
        assert_eq!(
            parse_options("rbind,rprivate"),
            (
                libc::MS_BIND | libc::MS_REC | libc::MS_PRIVATE,
                String::new()
            )
        );
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape("/plain"), "/plain");
        assert!(is_mountpoint(Path::new("/")) || mount_points().is_empty());
    }
}
