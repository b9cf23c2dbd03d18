//! The container's filesystem view: spec mounts, /dev, pivot_root, masked
//! and read-only paths. Planning (option parsing) is pure and runs in the
//! parent; the `setup_*` functions run in the child, inside its new mount
//! namespace, following runc's rootfs_linux.go order:
//!
//! 1. `/` gets the spec's rootfs propagation (default rslave), so nothing
//!    we mount leaks back to the host;
//! 2. the rootfs is bind-mounted onto itself (pivot_root needs a mount);
//! 3. spec mounts in order, each destination resolved inside the rootfs with
//!    openat2(RESOLVE_IN_ROOT) and mounted through /proc/self/fd/N, so a
//!    symlink in the image can never point a mount outside the rootfs;
//! 4. device nodes, /dev symlinks, /dev/ptmx, /dev/console;
//! 5. pivot_root (MS_MOVE + chroot when the rootfs is on ramfs), detach the
//!    old root;
//! 6. later, after sysctls: read-only paths, masked paths, read-only root.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use berth_types::Error;
use libc::c_ulong;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::cgroups::Cgroup;
use crate::sys::{self, os_err};

/// One spec mount, with its options parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountPlan {
    pub dest: PathBuf,
    pub kind: MountKind,
    /// MS_* flags other than MS_BIND/MS_REC and propagation.
    pub flags: c_ulong,
    /// Propagation changes (MS_SHARED, MS_PRIVATE|MS_REC, ...) in order.
    pub propagation: Vec<c_ulong>,
    /// Filesystem-specific options, comma separated.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountKind {
    Bind {
        source: PathBuf,
        recursive: bool,
    },
    /// Type "cgroup": the container's own cgroups (see `mount_cgroup`).
    Cgroup,
    Fs {
        fstype: String,
        source: String,
    },
}

/// Parse mount options the way runc does: (set flags, cleared flags,
/// propagation, bind, recursive, data).
fn parse_options(opts: &[String]) -> (c_ulong, Vec<c_ulong>, bool, bool, String) {
    let mut flags: c_ulong = 0;
    let mut prop = Vec::new();
    let mut bind = false;
    let mut rec = false;
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        let (set, clear): (c_ulong, c_ulong) = match o.as_str() {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "suid" => (0, libc::MS_NOSUID),
            "nosuid" => (libc::MS_NOSUID, 0),
            "dev" => (0, libc::MS_NODEV),
            "nodev" => (libc::MS_NODEV, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noexec" => (libc::MS_NOEXEC, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "lazytime" => (libc::MS_LAZYTIME, 0),
            "nolazytime" => (0, libc::MS_LAZYTIME),
            "silent" => (libc::MS_SILENT, 0),
            "loud" => (0, libc::MS_SILENT),
            "iversion" => (libc::MS_I_VERSION, 0),
            "noiversion" => (0, libc::MS_I_VERSION),
            "bind" => {
                bind = true;
                (0, 0)
            }
            "rbind" => {
                bind = true;
                rec = true;
                (0, 0)
            }
            "private" => {
                prop.push(libc::MS_PRIVATE);
                (0, 0)
            }
            "rprivate" => {
                prop.push(libc::MS_PRIVATE | libc::MS_REC);
                (0, 0)
            }
            "shared" => {
                prop.push(libc::MS_SHARED);
                (0, 0)
            }
            "rshared" => {
                prop.push(libc::MS_SHARED | libc::MS_REC);
                (0, 0)
            }
            "slave" => {
                prop.push(libc::MS_SLAVE);
                (0, 0)
            }
            "rslave" => {
                prop.push(libc::MS_SLAVE | libc::MS_REC);
                (0, 0)
            }
            "unbindable" => {
                prop.push(libc::MS_UNBINDABLE);
                (0, 0)
            }
            "runbindable" => {
                prop.push(libc::MS_UNBINDABLE | libc::MS_REC);
                (0, 0)
            }
            // runc extensions with no meaning here
            "tmpcopyup" | "rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev" | "rnoexec"
            | "rexec" => (0, 0),
            other => {
                data.push(other);
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, prop, bind, rec, data.join(","))
}

/// Plan one spec mount.
pub(crate) fn plan_mount(m: &Mount) -> Result<MountPlan, Error> {
    let dest = m.destination().clone();
    if !dest.is_absolute() {
        return Err(Error::invalid(format!(
            "mount destination {} is not absolute",
            dest.display()
        )));
    }
    let opts = m.options().clone().unwrap_or_default();
    if opts.iter().any(|o| o == "idmap" || o == "ridmap") {
        return Err(Error::not_implemented(format!(
            "mount {}: idmapped mounts are not supported",
            dest.display()
        )));
    }
    let (flags, propagation, bind_opt, rec, data) = parse_options(&opts);
    let typ = m.typ().clone().unwrap_or_default();
    let source = m.source().clone().unwrap_or_default();
    let kind = if typ == "bind" || bind_opt {
        if !source.is_absolute() {
            return Err(Error::invalid(format!(
                "bind mount source {} for {} must be an absolute path",
                source.display(),
                dest.display()
            )));
        }
        MountKind::Bind {
            source,
            recursive: rec,
        }
    } else if typ == "cgroup" {
        MountKind::Cgroup
    } else {
        if typ.is_empty() {
            return Err(Error::invalid(format!(
                "mount {} has no type",
                dest.display()
            )));
        }
        let src = source.to_string_lossy().into_owned();
        MountKind::Fs {
            source: if src.is_empty() { typ.clone() } else { src },
            fstype: typ,
        }
    };
    Ok(MountPlan {
        dest,
        kind,
        flags,
        propagation,
        data,
    })
}

/// Rootfs propagation from the spec (`linux.rootfsPropagation`); runc's
/// default is rslave.
pub(crate) fn propagation_flags(p: Option<&str>) -> Result<c_ulong, Error> {
    Ok(match p.unwrap_or("") {
        "" | "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        other => {
            return Err(Error::invalid(format!("invalid rootfsPropagation {other}")));
        }
    })
}

/// A device node to create under the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevicePlan {
    pub path: PathBuf,
    pub file_type: rustix::fs::FileType,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every container gets (OCI "default devices"), then the
/// spec's, which win on the same path.
pub(crate) fn plan_devices(spec_devices: &[LinuxDevice]) -> Result<Vec<DevicePlan>, Error> {
    use rustix::fs::FileType as F;
    let mut out: Vec<DevicePlan> = [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(p, major, minor)| DevicePlan {
        path: PathBuf::from(p),
        file_type: F::CharacterDevice,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect();
    for d in spec_devices {
        let file_type = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => F::CharacterDevice,
            LinuxDeviceType::B => F::BlockDevice,
            LinuxDeviceType::P => F::Fifo,
            LinuxDeviceType::A => {
                return Err(Error::invalid(format!(
                    "device {}: type a is only valid in cgroup rules",
                    d.path().display()
                )));
            }
        };
        if !d.path().is_absolute() {
            return Err(Error::invalid(format!(
                "device path {} is not absolute",
                d.path().display()
            )));
        }
        let plan = DevicePlan {
            path: d.path().clone(),
            file_type,
            major: u32::try_from(d.major()).unwrap_or(0),
            minor: u32::try_from(d.minor()).unwrap_or(0),
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        out.retain(|o| o.path != plan.path);
        out.push(plan);
    }
    Ok(out)
}

/// Everything the child needs to build the container's filesystem.
#[derive(Debug)]
pub(crate) struct RootfsPlan {
    pub root: PathBuf,
    pub readonly: bool,
    pub propagation: c_ulong,
    pub mounts: Vec<MountPlan>,
    pub devices: Vec<DevicePlan>,
    /// False when /dev is a bind mount from the spec: then it is left alone.
    pub setup_dev: bool,
    pub masked: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub cgroup: Option<Cgroup>,
    pub new_cgroupns: bool,
    pub terminal: bool,
}

// ---------------------------------------------------------------------------
// Path resolution inside the rootfs

/// The components of an absolute container path, with `.` and `..` resolved
/// lexically (`..` stops at `/`).
fn clean(p: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn join(parts: &[OsString]) -> PathBuf {
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

/// Open `parts` under `root`, with symlinks resolved as if `root` were `/`.
fn open_in_root(root: BorrowedFd<'_>, parts: &[OsString], flags: OFlags) -> io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        join(parts),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(io::Error::from)
}

/// Resolve `path` inside the rootfs to a symlink-free list of components,
/// following symlinks as if the rootfs were `/` (a dangling absolute link
/// `/evil -> /tmp/x` means `<rootfs>/tmp/x`) and creating missing
/// directories on the way; the last component is created as a directory
/// only when `mkdir_last`. Like runc's securejoin + MkdirAll: every step is
/// opened relative to the rootfs with RESOLVE_IN_ROOT, so nothing can lead
/// outside it.
fn walk_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    mkdir_last: bool,
) -> Result<Vec<OsString>, Error> {
    let err = |what: &str, e: rustix::io::Errno| os_err(format!("{what} {}", path.display()), e);
    let mut todo: VecDeque<OsString> = lexical(path).into();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        let is_last = todo.is_empty();
        done.push(c);
        let r = rustix::fs::openat2(
            root,
            join(&done),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        );
        match r {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(|e| err("stat", e))?;
                let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
                if ft.is_symlink() {
                    links += 1;
                    if links > 40 {
                        return Err(err("resolve", rustix::io::Errno::LOOP));
                    }
                    let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                        .map_err(|e| err("readlink", e))?;
                    let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                    done.pop();
                    if target.is_absolute() {
                        done.clear();
                    }
                    for t in lexical(&target).into_iter().rev() {
                        todo.push_front(t);
                    }
                } else if !ft.is_dir() && !is_last {
                    return Err(err("resolve", rustix::io::Errno::NOTDIR));
                }
            }
            Err(rustix::io::Errno::NOENT) => {
                if is_last && !mkdir_last {
                    continue;
                }
                let parent = open_in_root(
                    root,
                    &done[..done.len() - 1],
                    OFlags::PATH | OFlags::DIRECTORY,
                )
                .map_err(|e| os_err(format!("open {}", path.display()), e))?;
                match rustix::fs::mkdirat(
                    &parent,
                    &done[done.len() - 1],
                    Mode::from_raw_mode(0o755),
                ) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(err("mkdir", e)),
                }
            }
            Err(e) => return Err(err("open", e)),
        }
    }
    Ok(done)
}

/// The components of a path as written (`..` kept, `.` and `/` dropped).
fn lexical(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Resolve (creating missing directories) a directory inside the rootfs.
fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, Error> {
    let parts = walk_in_root(root, path, true)?;
    open_in_root(root, &parts, OFlags::PATH | OFlags::DIRECTORY)
        .map_err(|e| os_err(format!("open {}", path.display()), e))
}

/// Resolve (creating it empty if missing) a file inside the rootfs, to use
/// as a bind-mount target.
fn mkfile_in_root(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, Error> {
    let parts = walk_in_root(root, path, false)?;
    let Some((name, dir)) = parts.split_last() else {
        return Err(Error::invalid("cannot bind a file over /"));
    };
    if let Ok(fd) = open_in_root(root, &parts, OFlags::PATH) {
        return Ok(fd);
    }
    let parent = open_in_root(root, dir, OFlags::PATH | OFlags::DIRECTORY)
        .map_err(|e| os_err(format!("open {}", path.display()), e))?;
    match rustix::fs::openat(
        &parent,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(_) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(os_err(format!("create {}", path.display()), e)),
    }
    open_in_root(root, &parts, OFlags::PATH)
        .map_err(|e| os_err(format!("open {}", path.display()), e))
}

/// MS_* flags of the mount a path is on, for the flags a bind remount must
/// keep (otherwise remounting ro would silently drop nosuid/nodev/noexec).
fn kept_mount_flags(fd: BorrowedFd<'_>) -> c_ulong {
    use rustix::fs::StatVfsMountFlags as S;
    let Ok(st) = rustix::fs::fstatvfs(fd) else {
        return 0;
    };
    let f = st.f_flag;
    let mut out = 0;
    for (s, m) in [
        (S::NOSUID, libc::MS_NOSUID),
        (S::NODEV, libc::MS_NODEV),
        (S::NOEXEC, libc::MS_NOEXEC),
        (S::NOATIME, libc::MS_NOATIME),
        (S::NODIRATIME, libc::MS_NODIRATIME),
        (S::RELATIME, libc::MS_RELATIME),
        (S::RDONLY, libc::MS_RDONLY),
    ] {
        if f.contains(s) {
            out |= m;
        }
    }
    out
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Child side

/// Steps 1–5: everything up to and including pivot_root. `join_cgroup`
/// waits until the process is in its cgroup (and enters its cgroup
/// namespace); it is called before a mount that depends on that.
pub(crate) fn setup_rootfs(
    plan: &RootfsPlan,
    join_cgroup: &mut dyn FnMut() -> Result<(), Error>,
) -> Result<(), Error> {
    let root_c = sys::path_cstring(&plan.root)?;
    sys::mount(None, c"/", None, plan.propagation, None)
        .map_err(|e| os_err("set propagation of /", e))?;
    if plan.propagation & libc::MS_SHARED != 0 {
        // pivot_root refuses a shared parent mount; make the mount the
        // rootfs lives on private (runc's rootfsParentMountPrivate).
        make_parent_mount_private(&plan.root)?;
    }
    sys::mount(
        Some(&root_c),
        &root_c,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| os_err(format!("bind rootfs {}", plan.root.display()), e))?;
    let root = rustix::fs::open(
        &plan.root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err(format!("open rootfs {}", plan.root.display()), e))?;

    for m in &plan.mounts {
        let cgroup2 = plan.cgroup.as_ref().is_some_and(|c| c.unified);
        if matches!(m.kind, MountKind::Cgroup) && plan.new_cgroupns && cgroup2 {
            // cgroup2 shows the namespace's root: the container's cgroup.
            // (On v1 the mount binds the cgroup's directories by path.)
            join_cgroup()?;
        }
        mount_one(root.as_fd(), m, plan)?;
    }
    if plan.setup_dev {
        setup_dev(root.as_fd(), plan)?;
    }
    pivot(&root_c)
}

fn make_parent_mount_private(root: &Path) -> Result<(), Error> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| os_err("read /proc/self/mountinfo", e))?;
    let best = mi
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mp| root.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"));
    let c = sys::path_cstring(&best)?;
    sys::mount(None, &c, None, libc::MS_PRIVATE, None)
        .map_err(|e| os_err(format!("make {} private", best.display()), e))
}

fn mount_one(root: BorrowedFd<'_>, m: &MountPlan, plan: &RootfsPlan) -> Result<(), Error> {
    let what = |e: io::Error| os_err(format!("mount {}", m.dest.display()), e);
    let data = (!m.data.is_empty()).then(|| cstr(&m.data));
    match &m.kind {
        MountKind::Bind { source, recursive } => {
            let src_meta = std::fs::metadata(source)
                .map_err(|e| os_err(format!("bind mount source {}", source.display()), e))?;
            let target = if src_meta.is_dir() {
                mkdir_all_in_root(root, &m.dest)?
            } else {
                mkfile_in_root(root, &m.dest)?
            };
            let src = sys::path_cstring(source)?;
            let rec = if *recursive { libc::MS_REC } else { 0 };
            sys::mount(
                Some(&src),
                &sys::fd_path(target.as_fd()),
                None,
                libc::MS_BIND | rec,
                None,
            )
            .map_err(what)?;
            // Flags on a bind need a second, remount call; keep the flags
            // the bind got from its source mount, so that adding one flag
            // never drops another (ro, nosuid, nodev, noexec).
            let extra = m.flags & !(libc::MS_REMOUNT);
            let mounted = reopen(root, &m.dest, src_meta.is_dir())?;
            if extra != 0 {
                let keep = kept_mount_flags(mounted.as_fd());
                sys::mount(
                    None,
                    &sys::fd_path(mounted.as_fd()),
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | extra | keep,
                    None,
                )
                .map_err(what)?;
            }
            set_propagation(mounted.as_fd(), m)?;
        }
        MountKind::Cgroup => mount_cgroup(root, m, plan)?,
        MountKind::Fs { fstype, source } => {
            let target = mkdir_all_in_root(root, &m.dest)?;
            let fstype_c = cstr(fstype);
            let src_c = cstr(source);
            let r = sys::mount(
                Some(&src_c),
                &sys::fd_path(target.as_fd()),
                Some(&fstype_c),
                m.flags,
                data.as_deref(),
            );
            match r {
                // sysfs/mqueue cannot be mounted in some setups (a shared
                // network namespace in a user namespace); fall back to a
                // bind of the host's, as runc does for sysfs.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && fstype == "sysfs" => {
                    sys::mount(
                        Some(c"/sys"),
                        &sys::fd_path(target.as_fd()),
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    )
                    .map_err(what)?;
                    let mounted = reopen(root, &m.dest, true)?;
                    sys::mount(
                        None,
                        &sys::fd_path(mounted.as_fd()),
                        None,
                        libc::MS_BIND | libc::MS_REMOUNT | m.flags,
                        None,
                    )
                    .map_err(what)?;
                }
                r => r.map_err(what)?,
            }
            if !m.propagation.is_empty() {
                let mounted = reopen(root, &m.dest, true)?;
                set_propagation(mounted.as_fd(), m)?;
            }
        }
    }
    Ok(())
}

/// Open a destination again after mounting on it: the fd used as mount
/// target still points at the covered directory, not at the new mount.
fn reopen(root: BorrowedFd<'_>, dest: &Path, dir: bool) -> Result<OwnedFd, Error> {
    let flags = if dir {
        OFlags::PATH | OFlags::DIRECTORY
    } else {
        OFlags::PATH
    };
    open_in_root(root, &clean(dest), flags)
        .map_err(|e| os_err(format!("open {}", dest.display()), e))
}

fn set_propagation(fd: BorrowedFd<'_>, m: &MountPlan) -> Result<(), Error> {
    for p in &m.propagation {
        sys::mount(None, &sys::fd_path(fd), None, *p, None)
            .map_err(|e| os_err(format!("set propagation of {}", m.dest.display()), e))?;
    }
    Ok(())
}

/// The "cgroup" mount. Pure v2 host: cgroup2 (the container's cgroup is its
/// root when it has a cgroup namespace), or a bind of its cgroup directory
/// otherwise. v1/hybrid host: a tmpfs with one read-only bind per hierarchy
/// of the container's own cgroup directory (memory/, cpu/, pids/, ...,
/// unified/ on hybrid hosts), plus cpu → cpu,cpuacct style symlinks.
fn mount_cgroup(root: BorrowedFd<'_>, m: &MountPlan, plan: &RootfsPlan) -> Result<(), Error> {
    let what = |e: io::Error| os_err(format!("mount cgroup on {}", m.dest.display()), e);
    let Some(cg) = &plan.cgroup else {
        return Ok(());
    };
    let target = mkdir_all_in_root(root, &m.dest)?;
    if cg.unified {
        if plan.new_cgroupns {
            sys::mount(
                Some(c"cgroup2"),
                &sys::fd_path(target.as_fd()),
                Some(c"cgroup2"),
                m.flags,
                None,
            )
            .map_err(what)?;
        } else if let Some((_, dir)) = cg.dirs.first() {
            let src = sys::path_cstring(dir)?;
            sys::mount(
                Some(&src),
                &sys::fd_path(target.as_fd()),
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(what)?;
            let mounted = reopen(root, &m.dest, true)?;
            sys::mount(
                None,
                &sys::fd_path(mounted.as_fd()),
                None,
                libc::MS_BIND | libc::MS_REMOUNT | m.flags,
                None,
            )
            .map_err(what)?;
        }
        return Ok(());
    }
    sys::mount(
        Some(c"cgroup"),
        &sys::fd_path(target.as_fd()),
        Some(c"tmpfs"),
        (m.flags & !libc::MS_RDONLY) | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(c"mode=755"),
    )
    .map_err(what)?;
    let tmpfs = reopen(root, &m.dest, true)?;
    // O_PATH fds cannot be used as the dirfd of mkdirat; open it for real.
    let tmpfs_dir = rustix::fs::openat(
        &tmpfs,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| what(e.into()))?;
    for (h, dir) in &cg.dirs {
        let Some(name) = h.mountpoint.file_name() else {
            continue;
        };
        match rustix::fs::mkdirat(&tmpfs_dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(what(e.into())),
        }
        let sub = rustix::fs::openat(
            &tmpfs_dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| what(e.into()))?;
        let src = sys::path_cstring(dir)?;
        sys::mount(
            Some(&src),
            &sys::fd_path(sub.as_fd()),
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(what)?;
        let mounted = rustix::fs::openat(
            &tmpfs_dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| what(e.into()))?;
        sys::mount(
            None,
            &sys::fd_path(mounted.as_fd()),
            None,
            libc::MS_BIND
                | libc::MS_REMOUNT
                | m.flags
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        )
        .map_err(what)?;
        let name_s = name.to_string_lossy();
        if name_s.contains(',') {
            for part in name_s.split(',') {
                let _ = rustix::fs::symlinkat(name, &tmpfs_dir, part);
            }
        }
    }
    if m.flags & libc::MS_RDONLY != 0 {
        sys::mount(
            None,
            &sys::fd_path(tmpfs.as_fd()),
            None,
            libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        )
        .map_err(what)?;
    }
    Ok(())
}

fn setup_dev(root: BorrowedFd<'_>, plan: &RootfsPlan) -> Result<(), Error> {
    for d in &plan.devices {
        create_device(root, d)?;
    }
    let dev_path = mkdir_all_in_root(root, Path::new("/dev"))?;
    let dev = rustix::fs::openat(
        &dev_path,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err("open /dev", e))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match rustix::fs::symlinkat(target, &dev, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(os_err(format!("symlink /dev/{name}"), e)),
        }
    }
    // /dev/ptmx must be the container's devpts instance's ptmx
    match rustix::fs::unlinkat(&dev, "ptmx", rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(os_err("remove /dev/ptmx", e)),
    }
    rustix::fs::symlinkat("pts/ptmx", &dev, "ptmx").map_err(|e| os_err("symlink /dev/ptmx", e))?;
    if plan.terminal {
        // The shim's pty slave is our fd 0; /dev/console shows it. The fd's
        // mount belongs to the caller's mount namespace, which cannot be a
        // bind source here, so bind the slave by its path in our copy.
        if let Ok(slave) = std::fs::read_link("/proc/self/fd/0")
            && slave.starts_with("/dev/")
        {
            let console = mkfile_in_root(root, Path::new("/dev/console"))?;
            sys::mount(
                Some(&sys::path_cstring(&slave)?),
                &sys::fd_path(console.as_fd()),
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(|e| os_err(format!("bind {} to /dev/console", slave.display()), e))?;
        }
    }
    Ok(())
}

fn create_device(root: BorrowedFd<'_>, d: &DevicePlan) -> Result<(), Error> {
    let parts = clean(&d.path);
    let Some((name, dir)) = parts.split_last() else {
        return Err(Error::invalid(format!(
            "bad device path {}",
            d.path.display()
        )));
    };
    let parent_path = mkdir_all_in_root(root, &join(dir))?;
    let parent = rustix::fs::openat(
        &parent_path,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err(format!("open {}", join(dir).display()), e))?;
    let dev = rustix::fs::makedev(d.major, d.minor);
    match rustix::fs::mknodat(&parent, name, d.file_type, Mode::from_raw_mode(d.mode), dev) {
        Ok(()) => {
            rustix::fs::chownat(
                &parent,
                name,
                Some(rustix::fs::Uid::from_raw(d.uid)),
                Some(rustix::fs::Gid::from_raw(d.gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| os_err(format!("chown {}", d.path.display()), e))?;
            Ok(())
        }
        Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(rustix::io::Errno::PERM) => {
            // No CAP_MKNOD (e.g. in a user namespace): bind the host's node.
            let target = mkfile_in_root(root, &d.path)?;
            let src = sys::path_cstring(&d.path)?;
            sys::mount(
                Some(&src),
                &sys::fd_path(target.as_fd()),
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(|e| os_err(format!("bind device {}", d.path.display()), e))
        }
        Err(e) => Err(os_err(format!("mknod {}", d.path.display()), e)),
    }
}

fn pivot(root: &CString) -> Result<(), Error> {
    let old = rustix::fs::open(
        "/",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err("open /", e))?;
    let new = rustix::fs::open(
        root.as_c_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err("open rootfs", e))?;
    rustix::process::fchdir(&new).map_err(|e| os_err("chdir to rootfs", e))?;
    // pivot_root(".", ".") stacks the old root on top of the new one at
    // ".", so no put_old directory is needed (runc's trick).
    match rustix::process::pivot_root(".", ".") {
        Ok(()) => {
            rustix::process::fchdir(&old).map_err(|e| os_err("chdir to old root", e))?;
            // rslave first, so that the detach below cannot propagate to the
            // host's mounts.
            sys::mount(None, c".", None, libc::MS_SLAVE | libc::MS_REC, None)
                .map_err(|e| os_err("make old root rslave", e))?;
            rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
                .map_err(|e| os_err("detach old root", e))?;
            rustix::process::chdir("/").map_err(|e| os_err("chdir /", e))?;
            Ok(())
        }
        // pivot_root does not work when the rootfs is on the initramfs
        Err(rustix::io::Errno::INVAL) => {
            sys::mount(Some(c"."), c"/", None, libc::MS_MOVE, None)
                .map_err(|e| os_err("move rootfs to /", e))?;
            rustix::process::chroot(".").map_err(|e| os_err("chroot", e))?;
            rustix::process::chdir("/").map_err(|e| os_err("chdir /", e))?;
            Ok(())
        }
        Err(e) => Err(os_err("pivot_root", e)),
    }
}

/// Step 6 (after pivot_root and sysctls): read-only paths, masked paths,
/// read-only root.
pub(crate) fn finalize_rootfs(plan: &RootfsPlan) -> Result<(), Error> {
    for p in &plan.readonly_paths {
        readonly_path(p)?;
    }
    for p in &plan.masked {
        mask_path(p)?;
    }
    if plan.readonly {
        let root = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| os_err("open /", e))?;
        let keep = kept_mount_flags(root.as_fd());
        sys::mount(
            None,
            c"/",
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep,
            None,
        )
        .map_err(|e| os_err("remount / read-only", e))?;
    }
    Ok(())
}

fn readonly_path(p: &str) -> Result<(), Error> {
    let c = cstr(p);
    match sys::mount(Some(&c), &c, None, libc::MS_BIND | libc::MS_REC, None) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(os_err(format!("bind read-only path {p}"), e)),
    }
    let keep = rustix::fs::open(p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map(|fd| kept_mount_flags(fd.as_fd()))
        .unwrap_or(0);
    sys::mount(
        Some(&c),
        &c,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | keep,
        None,
    )
    .map_err(|e| os_err(format!("remount {p} read-only"), e))
}

fn mask_path(p: &str) -> Result<(), Error> {
    let c = cstr(p);
    let st = match rustix::fs::stat(p) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(os_err(format!("stat masked path {p}"), e)),
    };
    let r = if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
        sys::mount(Some(c"tmpfs"), &c, Some(c"tmpfs"), libc::MS_RDONLY, None)
    } else {
        sys::mount(Some(c"/dev/null"), &c, None, libc::MS_BIND, None)
    };
    r.map_err(|e| os_err(format!("mask {p}"), e))
}

/// `sysctl` keys become /proc/sys paths; refuse anything that could walk
/// elsewhere.
pub(crate) fn sysctl_path(key: &str) -> Result<PathBuf, Error> {
    if key.is_empty()
        || key.contains('/')
        || key.split('.').any(|p| p.is_empty())
        || key.as_bytes().contains(&0)
    {
        return Err(Error::invalid(format!("invalid sysctl key {key:?}")));
    }
    Ok(Path::new("/proc/sys").join(key.replace('.', "/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(v: serde_json::Value) -> Mount {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn plans_docker_default_mounts() {
        let m = plan_mount(&mount(serde_json::json!({
            "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
        })))
        .unwrap();
        assert_eq!(m.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(m.data, "mode=755,size=65536k");
        assert_eq!(
            m.kind,
            MountKind::Fs {
                fstype: "tmpfs".into(),
                source: "tmpfs".into()
            }
        );
        let m = plan_mount(&mount(serde_json::json!({
            "destination": "/dev/pts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
        })))
        .unwrap();
        assert_eq!(m.data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
        let m = plan_mount(&mount(serde_json::json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["ro", "nosuid", "noexec", "nodev"]
        })))
        .unwrap();
        assert_eq!(m.kind, MountKind::Cgroup);
        assert_eq!(
            m.flags,
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV
        );
    }

    #[test]
    fn plans_bind_mounts() {
        let m = plan_mount(&mount(serde_json::json!({
            "destination": "/data", "type": "bind", "source": "/srv/data",
            "options": ["rbind", "ro", "rprivate"]
        })))
        .unwrap();
        assert_eq!(
            m.kind,
            MountKind::Bind {
                source: "/srv/data".into(),
                recursive: true
            }
        );
        assert_eq!(m.flags, libc::MS_RDONLY);
        assert_eq!(m.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        // "rw" after "ro" clears it
        let m = plan_mount(&mount(serde_json::json!({
            "destination": "/d", "source": "/s", "options": ["bind", "ro", "rw"]
        })))
        .unwrap();
        assert_eq!(m.flags, 0);
        assert!(matches!(
            m.kind,
            MountKind::Bind {
                recursive: false,
                ..
            }
        ));
        assert!(
            plan_mount(&mount(serde_json::json!({
                "destination": "/d", "type": "bind", "source": "relative"
            })))
            .is_err()
        );
        assert!(
            plan_mount(&mount(
                serde_json::json!({"destination": "rel", "type": "tmpfs"})
            ))
            .is_err()
        );
    }

    #[test]
    fn cleans_paths() {
        assert_eq!(
            clean(Path::new("/a/../../b/./c")),
            vec![OsString::from("b"), OsString::from("c")]
        );
        assert_eq!(join(&clean(Path::new("/"))), PathBuf::from("."));
    }

    #[test]
    fn sysctl_keys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert!(sysctl_path("../../etc").is_err());
        assert!(sysctl_path("a..b").is_err());
        assert!(sysctl_path("a/b").is_err());
    }

    #[test]
    fn devices_merge() {
        let d: LinuxDevice = serde_json::from_value(serde_json::json!({
            "path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 5
        }))
        .unwrap();
        let plan = plan_devices(&[d]).unwrap();
        assert_eq!(plan.len(), 6);
        assert_eq!(plan.last().unwrap().uid, 5);
    }
}
