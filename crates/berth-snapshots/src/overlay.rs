//! Overlay mounts of layer stacks.
//!
//! Mounts go through the new mount API (`fsopen`/`fsconfig`/`fsmount`) and
//! pass each lower dir as its own `lowerdir+` parameter (Linux 6.8+), so
//! neither the one-page limit of mount(2) options nor `:` and `,` in paths
//! limit the stack. Older kernels fall back to mount(2).

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_types::{Error, Result};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

/// Mount an overlay of `lowers` (topmost first) with the writable `upper`
/// and its `work` dir (same filesystem as `upper`, empty) on `target`.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    mount(lowers, Some((upper, work)), target)
}

/// Mount a read-only overlay of `lowers` (topmost first) on `target`.
/// overlayfs needs two lower dirs without an upper, so a single layer is
/// bind-mounted read-only instead.
pub fn mount_overlay_readonly(lowers: &[PathBuf], target: &Path) -> Result<()> {
    match lowers {
        [only] => bind_readonly(only, target).map_err(|e| {
            Error::from(std::io::Error::from(e)).context(format_args!(
                "bind-mounting {} on {}",
                only.display(),
                target.display()
            ))
        }),
        _ => mount(lowers, None, target),
    }
}

fn bind_readonly(source: &Path, target: &Path) -> rustix::io::Result<()> {
    rustix::mount::mount_bind(source, target)?;
    let ro = MountFlags::BIND | MountFlags::RDONLY;
    if let Err(e) = rustix::mount::mount_remount(target, ro, "") {
        let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
        return Err(e);
    }
    Ok(())
}

/// Run `f` on a new thread in a mount namespace of its own whose mounts
/// are slaves of the host's: what `f` mounts is seen by nobody else and
/// goes away with the thread, even if `f` panics or forgets to unmount.
/// Mounts made by the host while `f` runs still reach it.
pub fn in_private_mount_namespace<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            #[allow(unsafe_code)]
            // SAFETY: only NEWNS (and the CLONE_FS it implies) is unshared,
            // on a thread that ends with `f`; the fd table stays shared,
            // which is what the safety contract of unshare_unsafe is about.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                .map_err(|e| Error::internal(format!("unshare mount namespace: {e}")))?;
            rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::DOWNSTREAM
                    | rustix::mount::MountPropagationFlags::REC,
            )
            .map_err(|e| Error::internal(format!("make mounts slaves: {e}")))?;
            f()
        })
        .join()
        .map_err(|_| Error::internal("private mount namespace thread panicked"))?
    })
}

/// Detach what is mounted on `target` and every mount below it.
pub fn unmount_detach(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|e| {
        Error::from(std::io::Error::from(e))
            .context(format_args!("unmounting {}", target.display()))
    })
}

/// Unmount what is mounted on `target`.
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::empty()).map_err(|e| {
        Error::from(std::io::Error::from(e))
            .context(format_args!("unmounting {}", target.display()))
    })
}

fn mount(lowers: &[PathBuf], rw: Option<(&Path, &Path)>, target: &Path) -> Result<()> {
    if lowers.is_empty() {
        return Err(Error::invalid(format!(
            "overlay on {} needs at least one lower dir",
            target.display()
        )));
    }
    let fail = |e: Errno, detail: &str| {
        let e = Error::from(std::io::Error::from(e));
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        Error::new(
            e.kind,
            format!(
                "mounting overlay on {}: {}{detail}",
                target.display(),
                e.message
            ),
        )
    };
    match mount_fsopen(lowers, rw, target) {
        Ok(()) => Ok(()),
        Err(Failure::Unsupported) => mount_legacy(lowers, rw, target).map_err(|e| fail(e, "")),
        Err(Failure::Failed(e, detail)) => Err(fail(e, &detail)),
    }
}

enum Failure {
    /// The kernel lacks the new mount API or `lowerdir+`.
    Unsupported,
    /// The errno, and what failed with the filesystem's own log messages.
    Failed(Errno, String),
}

fn mount_fsopen(
    lowers: &[PathBuf],
    rw: Option<(&Path, &Path)>,
    target: &Path,
) -> std::result::Result<(), Failure> {
    use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount};
    let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS) => return Err(Failure::Unsupported),
        Err(e) => return Err(Failure::Failed(e, String::new())),
    };
    let failed = |e: Errno| Failure::Failed(e, read_log(&fs));
    let set_path = |key: &str, value: &Path| {
        fsconfig_set_string(&fs, key, value).map_err(|e| {
            let log = read_log(&fs);
            if e == Errno::INVAL && log.contains("nknown parameter") {
                return Failure::Unsupported;
            }
            let mut detail = format!("{key} {}", value.display());
            if !log.is_empty() {
                detail.push_str(": ");
                detail.push_str(&log);
            }
            Failure::Failed(e, detail)
        })
    };
    for lower in lowers {
        set_path("lowerdir+", lower)?;
    }
    if let Some((upper, work)) = rw {
        set_path("upperdir", upper)?;
        set_path("workdir", work)?;
        // The upper dir must hold whole files and directories: it is read
        // back as a layer (diff, commit), and a redirect (a renamed lower
        // directory) or a metacopy (a chmod of a lower file) would leave
        // the content in a lower layer. Kernels built with these on by
        // default get them off here; renaming a lower directory then fails
        // with EXDEV and tools copy instead, as on most kernels.
        for key in ["redirect_dir", "metacopy"] {
            fsconfig_set_string(&fs, key, "off").map_err(failed)?;
        }
    }
    // As Docker and containerd: no inode index, so that layers can be shared
    // by any number of mounts.
    fsconfig_set_string(&fs, "index", "off").map_err(failed)?;
    fsconfig_create(&fs).map_err(failed)?;
    let mnt =
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).map_err(failed)?;
    move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(failed)?;
    Ok(())
}

/// Drains the messages the filesystem logged on its fs context.
fn read_log(fs: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(String::from_utf8_lossy(&buf[..n]).trim_end());
    }
    out
}

fn mount_legacy(
    lowers: &[PathBuf],
    rw: Option<(&Path, &Path)>,
    target: &Path,
) -> rustix::io::Result<()> {
    let mut data = b"index=off,lowerdir=".to_vec();
    for (i, lower) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(option_value(lower)?);
    }
    if let Some((upper, work)) = rw {
        data.extend_from_slice(b",upperdir=");
        data.extend_from_slice(option_value(upper)?);
        data.extend_from_slice(b",workdir=");
        data.extend_from_slice(option_value(work)?);
        data.extend_from_slice(b",redirect_dir=off,metacopy=off");
    }
    let data = CString::new(data).map_err(|_| Errno::INVAL)?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
}

/// A path as a mount(2) option value; the characters that separate options
/// or lower dirs are refused rather than escaped.
fn option_value(p: &Path) -> rustix::io::Result<&[u8]> {
    let b = p.as_os_str().as_bytes();
    if b.iter().any(|c| matches!(c, b',' | b':' | b'\\' | 0)) {
        return Err(Errno::INVAL);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TarBuilder, in_mount_namespace, root_or_skip};
    use crate::{ApplyOptions, apply_tar};
    use std::fs;

    fn layer(root: &Path, name: &str, tar: &[u8]) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap();
        apply_tar(tar, &dir, &ApplyOptions::default()).unwrap();
        dir
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_files() {
        if !root_or_skip("whiteouts_and_opaque_dirs_hide_lower_files") {
            return;
        }
        in_mount_namespace(|| {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            let lower = layer(
                t,
                "lower",
                &TarBuilder::new()
                    .dir("a/")
                    .file("a/f", b"f")
                    .file("b", b"b")
                    .file("c", b"c")
                    .finish(),
            );
            let upper_layer = layer(
                t,
                "upper-layer",
                &TarBuilder::new()
                    .file(".wh.b", b"")
                    .dir("a/")
                    .file("a/.wh..wh..opq", b"")
                    .file("a/g", b"g")
                    .finish(),
            );
            let lowers = vec![upper_layer, lower];

            // Read-only stack.
            let merged = t.join("merged");
            fs::create_dir(&merged).unwrap();
            mount_overlay_readonly(&lowers, &merged).unwrap();
            let check = |m: &Path| {
                assert!(fs::symlink_metadata(m.join("b")).is_err(), "b is visible");
                assert!(
                    fs::symlink_metadata(m.join("a/f")).is_err(),
                    "a/f is visible"
                );
                assert_eq!(fs::read(m.join("a/g")).unwrap(), b"g");
                assert_eq!(fs::read(m.join("c")).unwrap(), b"c");
                let mut names: Vec<_> = fs::read_dir(m)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                assert_eq!(names, ["a", "c"]);
            };
            check(&merged);
            assert!(fs::write(merged.join("new"), b"x").is_err());
            unmount(&merged).unwrap();

            // Writable stack, as a container's rootfs.
            let (upper, work) = (t.join("upper"), t.join("work"));
            fs::create_dir(&upper).unwrap();
            fs::create_dir(&work).unwrap();
            mount_overlay(&lowers, &upper, &work, &merged).unwrap();
            check(&merged);
            fs::write(merged.join("new"), b"x").unwrap();
            fs::remove_file(merged.join("c")).unwrap();
            unmount(&merged).unwrap();
            assert_eq!(fs::read(upper.join("new")).unwrap(), b"x");
            assert_eq!(fs::read(lowers[1].join("c")).unwrap(), b"c");
            assert!(fs::read_dir(&merged).unwrap().next().is_none());
        });
    }

    #[test]
    fn mount_errors_name_the_target() {
        if !root_or_skip("mount_errors_name_the_target") {
            return;
        }
        in_mount_namespace(|| {
            let tmp = tempfile::tempdir().unwrap();
            let target = tmp.path().join("merged");
            fs::create_dir(&target).unwrap();
            let missing = vec![tmp.path().join("nope"), tmp.path().join("nope2")];
            let err = mount_overlay_readonly(&missing, &target).unwrap_err();
            assert!(err.message.contains("merged"), "{}", err.message);
            // The filesystem's own log says which lower dir is missing.
            assert!(err.message.contains("nope"), "{}", err.message);
            assert!(mount_overlay_readonly(&[], &target).is_err());
            assert!(unmount(&target).is_err());
        });
    }

    #[test]
    fn single_layer_readonly_view() {
        if !root_or_skip("single_layer_readonly_view") {
            return;
        }
        in_mount_namespace(|| {
            let tmp = tempfile::tempdir().unwrap();
            let only = layer(
                tmp.path(),
                "only",
                &TarBuilder::new().file("x", b"x").finish(),
            );
            let merged = tmp.path().join("merged");
            fs::create_dir(&merged).unwrap();
            mount_overlay_readonly(std::slice::from_ref(&only), &merged).unwrap();
            assert_eq!(fs::read(merged.join("x")).unwrap(), b"x");
            assert!(fs::write(merged.join("y"), b"y").is_err());
            unmount(&merged).unwrap();
        });
    }

    #[test]
    fn new_mount_api_is_used_where_available() {
        if !root_or_skip("new_mount_api_is_used_where_available") {
            return;
        }
        in_mount_namespace(|| {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            // ':' and ',' in paths need no escaping with lowerdir+.
            let l1 = layer(t, "l:1", &TarBuilder::new().file("a", b"1").finish());
            let l2 = layer(t, "l,2", &TarBuilder::new().file("b", b"2").finish());
            let merged = t.join("merged");
            fs::create_dir(&merged).unwrap();
            match mount_fsopen(&[l1, l2], None, &merged) {
                Ok(()) => {}
                Err(Failure::Unsupported) => {
                    eprintln!("skipping: kernel lacks fsopen or lowerdir+");
                    return;
                }
                Err(Failure::Failed(e, log)) => panic!("{e}: {log}"),
            }
            assert_eq!(fs::read(merged.join("a")).unwrap(), b"1");
            assert_eq!(fs::read(merged.join("b")).unwrap(), b"2");
            unmount(&merged).unwrap();
        });
    }

    #[test]
    fn legacy_mount_fallback_works() {
        if !root_or_skip("legacy_mount_fallback_works") {
            return;
        }
        in_mount_namespace(|| {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            let l1 = layer(t, "l1", &TarBuilder::new().file("a", b"1").finish());
            let l2 = layer(
                t,
                "l2",
                &TarBuilder::new().file("a", b"2").file("b", b"2").finish(),
            );
            let merged = t.join("merged");
            fs::create_dir(&merged).unwrap();
            mount_legacy(&[l1, l2], None, &merged).unwrap();
            assert_eq!(fs::read(merged.join("a")).unwrap(), b"1");
            assert_eq!(fs::read(merged.join("b")).unwrap(), b"2");
            unmount(&merged).unwrap();
            let comma = vec![t.join("x,y"), t.join("l1")];
            assert_eq!(mount_legacy(&comma, None, &merged), Err(Errno::INVAL));
        });
    }
}
