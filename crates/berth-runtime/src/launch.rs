//! `start` and `exec`: plan in the parent, fork, finish in the child.
//!
//! Process model. The container process is a direct child of the caller
//! (so the shim can waitpid it), made with glibc's `fork()`, or a raw
//! `clone3` into its v2 cgroup when the caller is single-threaded (below):
//!
//! - a new PID namespace only applies to children, so before forking the
//!   caller's *pid_for_children* is switched: `unshare(CLONE_NEWPID)` for a
//!   new namespace (the forked child becomes its PID 1), or
//!   `setns(CLONE_NEWPID)` to join one (exec, `--pid container:…`). Right
//!   after the fork the caller's original namespace is restored with
//!   `setns(/proc/self/ns/pid as opened before)`. pid_for_children is
//!   per-thread, and the caller's own PID namespace never changes.
//! - glibc's fork (rather than a raw clone with a stack) runs glibc's at-fork
//!   handlers, so the child may allocate even if the caller has threads.
//! - the child unshares the other namespaces itself (mount, UTS, IPC,
//!   network), joins the ones given by path with setns, and unshares the
//!   cgroup namespace only once it is in its cgroup in every hierarchy
//!   (so the namespace's root is the container's cgroup).
//! - moving another process into a cgroup (a write to `cgroup.procs`)
//!   blocks for a whole RCU grace period, 7–15 ms here (the kernel's
//!   cgroup_threadgroup_rwsem). So the child joins its v1 hierarchies
//!   itself, first thing after the fork (a single thread moving itself via
//!   `tasks` takes no global lock), and is cloned straight into its v2
//!   cgroup (`clone3` with `CLONE_INTO_CGROUP`) when the caller is
//!   single-threaded, as the shim is. Only when that is not possible does
//!   the parent write the v2 `cgroup.procs`, and `start` does it while the
//!   child builds its rootfs: the first GO lets the child set up, the
//!   second says the cgroup is joined. The child waits for the second
//!   before anything that depends on its cgroup (the cgroup namespace, a
//!   cgroup2 mount) and always before execve, so no container code runs
//!   outside its limits.
//!
//! Parent and child talk over [`crate::sync`].

use std::convert::Infallible;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use berth_types::Error;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use rustix::fs::{Mode, OFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::cgroups::{self, Cgroup, SelfJoin};
use crate::process::{self, ProcPlan};
use crate::rootfs::{self, RootfsPlan};
use crate::sync::{self, SyncChild, SyncParent};
use crate::sys::{self, Forked, os_err};
use crate::{Started, Stdio};

/// What to do with the PID namespace of the new process.
enum PidNs {
    /// The caller's (no pid namespace in the spec).
    Host,
    New,
    Join(OwnedFd),
}

/// Everything `start` needs, resolved before forking.
struct StartPlan {
    pid_ns: PidNs,
    /// Namespaces to join by path (not pid), in spec order.
    join: Vec<(OwnedFd, LinkNameSpaceType, String)>,
    unshare: UnshareFlags,
    new_cgroupns: bool,
    hostname: Option<String>,
    domainname: Option<String>,
    sysctl: Vec<(PathBuf, String)>,
    rootfs: RootfsPlan,
    process: ProcPlan,
    cgroup: Cgroup,
}

fn open_ns(path: &Path, what: &str) -> Result<OwnedFd, Error> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| os_err(format!("open {what} namespace {}", path.display()), e))
}

impl StartPlan {
    fn new(id: &str, spec: &Spec) -> Result<StartPlan, Error> {
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::invalid("spec has no root"))?;
        let root_path = root.path().clone();
        if !root_path.is_absolute() {
            return Err(Error::invalid(format!(
                "root.path {} must be absolute",
                root_path.display()
            )));
        }
        if !root_path.is_dir() {
            return Err(Error::not_found(format!(
                "rootfs {} does not exist or is not a directory",
                root_path.display()
            )));
        }
        let proc_spec = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::invalid("spec has no process"))?;
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| Error::invalid("spec has no linux section"))?;
        if let Some(h) = spec.hooks() {
            // Hooks in the runtime's namespaces (prestart, createRuntime,
            // poststart, poststop) are the caller's to run, around this
            // call; those that run inside the container are not supported.
            let inside = [h.create_container(), h.start_container()]
                .iter()
                .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()));
            if inside {
                return Err(Error::not_implemented(
                    "createContainer and startContainer hooks are not supported yet",
                ));
            }
        }

        let mut pid_ns = PidNs::Host;
        let mut join = Vec::new();
        let mut unshare = UnshareFlags::empty();
        let mut new_cgroupns = false;
        let mut have_mnt = false;
        let mut have_uts = false;
        for ns in linux.namespaces().iter().flatten() {
            let path = ns.path().as_ref().filter(|p| !p.as_os_str().is_empty());
            let (flag, link, name) = match ns.typ() {
                LinuxNamespaceType::Pid => {
                    pid_ns = match path {
                        Some(p) => PidNs::Join(open_ns(p, "pid")?),
                        None => PidNs::New,
                    };
                    continue;
                }
                LinuxNamespaceType::User => {
                    return Err(Error::not_implemented(
                        "user namespaces are not supported yet",
                    ));
                }
                LinuxNamespaceType::Time => {
                    return Err(Error::not_implemented(
                        "time namespaces are not supported yet",
                    ));
                }
                LinuxNamespaceType::Mount => {
                    have_mnt = true;
                    if path.is_some() {
                        return Err(Error::not_implemented(
                            "joining an existing mount namespace is not supported",
                        ));
                    }
                    (UnshareFlags::NEWNS, LinkNameSpaceType::Mount, "mnt")
                }
                LinuxNamespaceType::Uts => {
                    have_uts = true;
                    (
                        UnshareFlags::NEWUTS,
                        LinkNameSpaceType::HostNameAndNISDomainName,
                        "uts",
                    )
                }
                LinuxNamespaceType::Ipc => (
                    UnshareFlags::NEWIPC,
                    LinkNameSpaceType::InterProcessCommunication,
                    "ipc",
                ),
                LinuxNamespaceType::Network => {
                    (UnshareFlags::NEWNET, LinkNameSpaceType::Network, "net")
                }
                LinuxNamespaceType::Cgroup => {
                    if path.is_none() {
                        new_cgroupns = true;
                        continue;
                    }
                    (
                        UnshareFlags::NEWCGROUP,
                        LinkNameSpaceType::ControlGroup,
                        "cgroup",
                    )
                }
            };
            match path {
                Some(p) => join.push((open_ns(p, name)?, link, name.to_string())),
                None => unshare |= flag,
            }
        }
        if !have_mnt {
            return Err(Error::invalid(
                "a mount namespace is required to set up the rootfs",
            ));
        }
        let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        let domainname = spec.domainname().clone().filter(|h| !h.is_empty());
        if (hostname.is_some() || domainname.is_some()) && !have_uts {
            return Err(Error::invalid(
                "setting the hostname needs a private UTS namespace",
            ));
        }

        let mounts = spec
            .mounts()
            .iter()
            .flatten()
            .map(rootfs::plan_mount)
            .collect::<Result<Vec<_>, _>>()?;
        let setup_dev = !mounts.iter().any(|m| {
            m.dest == Path::new("/dev") && matches!(m.kind, rootfs::MountKind::Bind { .. })
        });
        let devices = rootfs::plan_devices(linux.devices().as_deref().unwrap_or(&[]))?;
        let mut sysctl = Vec::new();
        for (k, v) in linux.sysctl().iter().flatten() {
            sysctl.push((rootfs::sysctl_path(k)?, v.clone()));
        }
        let process = ProcPlan::new(proc_spec, linux.seccomp().as_ref())?;
        let cgroup = Cgroup::resolve(&cgroups::spec_path(spec, Some(id))?)?;
        let rootfs = RootfsPlan {
            root: root_path,
            readonly: root.readonly().unwrap_or(false),
            propagation: rootfs::propagation_flags(linux.rootfs_propagation().as_deref())?,
            mounts,
            devices,
            setup_dev,
            masked: linux.masked_paths().clone().unwrap_or_default(),
            readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
            cgroup: Some(cgroup.clone()),
            new_cgroupns,
            terminal: process.terminal,
        };
        Ok(StartPlan {
            pid_ns,
            join,
            unshare,
            new_cgroupns,
            hostname,
            domainname,
            sysctl,
            rootfs,
            process,
            cgroup,
        })
    }
}

/// Switches the calling thread's pid_for_children and puts it back.
struct PidNsSwitch {
    saved: Option<OwnedFd>,
}

impl PidNsSwitch {
    fn enter(ns: &PidNs) -> Result<PidNsSwitch, Error> {
        let target = match ns {
            PidNs::Host => return Ok(PidNsSwitch { saved: None }),
            PidNs::New => None,
            PidNs::Join(fd) => Some(fd.as_fd()),
        };
        let saved = open_ns(Path::new("/proc/self/ns/pid"), "own pid")?;
        match target {
            None => {
                // SAFETY: CLONE_NEWPID only changes this thread's
                // pid_for_children; it does not unshare the fd table, which
                // is what makes unshare unsafe in rustix's terms.
                unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWPID) }
                    .map_err(|e| os_err("create pid namespace", e))?;
            }
            Some(fd) => {
                rustix::thread::move_into_link_name_space(fd, Some(LinkNameSpaceType::ProcessID))
                    .map_err(|e| os_err("join pid namespace", e))?
            }
        }
        Ok(PidNsSwitch { saved: Some(saved) })
    }

    fn restore(mut self) -> Result<(), Error> {
        match self.saved.take() {
            None => Ok(()),
            Some(fd) => rustix::thread::move_into_link_name_space(
                fd.as_fd(),
                Some(LinkNameSpaceType::ProcessID),
            )
            .map_err(|e| os_err("restore the caller's pid namespace", e)),
        }
    }
}

impl Drop for PidNsSwitch {
    fn drop(&mut self) {
        if let Some(fd) = self.saved.take() {
            let _ = rustix::thread::move_into_link_name_space(
                fd.as_fd(),
                Some(LinkNameSpaceType::ProcessID),
            );
        }
    }
}

/// Fork with the pid namespace switched; returns the child's pid in the
/// parent, and never returns in the child (it runs `child`).
fn fork_child(
    pid_ns: &PidNs,
    sync_parent: &mut Option<SyncParent>,
    sync_child: SyncChild,
    join: &SelfJoin,
    child: impl FnOnce(&SyncChild) -> Result<Infallible, Error>,
) -> Result<(i32, bool), Error> {
    let switch = PidNsSwitch::enter(pid_ns)?;
    let into = join.v2.as_ref().filter(|_| sys::single_threaded());
    let (forked, in_v2) = match into {
        Some(fd) => match sys::fork_into_cgroup(fd.as_fd()) {
            Some(f) => (f, true),
            None => (sys::fork().map_err(|e| os_err("fork", e))?, false),
        },
        None => (sys::fork().map_err(|e| os_err("fork", e))?, false),
    };
    match forked {
        Forked::Child => {
            // Close our copy of the parent's end, so that the parent dying
            // shows up as EOF on ours.
            drop(sync_parent.take());
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                // Single-threaded now, whatever the caller was: join the
                // v1 hierarchies ourselves, before anything else.
                join.join_v1()?;
                child(&sync_child)
            }));
            let err = match r {
                Ok(Err(e)) => e,
                Ok(Ok(never)) => match never {},
                Err(p) => {
                    let why = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Error::internal(format!("container process setup panicked: {why}"))
                }
            };
            sync_child.report(&err);
            sys::exit_now(1)
        }
        Forked::Parent(pid) => {
            drop(sync_child);
            if let Err(e) = switch.restore() {
                sys::kill(pid, libc::SIGKILL);
                sys::waitpid(pid);
                return Err(e);
            }
            Ok((pid, in_v2))
        }
    }
}

/// After fork, in the parent: put the child into the v2 cgroup unless it
/// was cloned there, let the child go, wait for its execve. With
/// `overlap`, the child is let go first and told again once the cgroup is
/// joined (see the module's notes). On failure the child is killed and
/// reaped.
fn parent_side(
    (pid, in_v2): (i32, bool),
    cgroup: &Cgroup,
    sync: SyncParent,
    gated: bool,
    overlap: bool,
) -> Result<Started, Error> {
    let join_v2 = || {
        if in_v2 {
            Ok(())
        } else {
            cgroup.add_pid_v2(pid)
        }
    };
    let joined = if overlap {
        sync.go().and_then(|()| join_v2()).and_then(|()| sync.go())
    } else {
        join_v2().and_then(|()| sync.go())
    };
    // The child may have failed meanwhile, even before reading the first GO
    // (its own v1 join comes first), and be gone, so that joining the cgroup
    // or writing a GO fails too (ESRCH, EPIPE): its own error says why.
    let joined = joined.map_err(|e| sync.child_error().unwrap_or(e));
    let r = joined.and_then(|()| {
        if gated {
            sync.wait_ready()
        } else {
            sync.wait_result()
        }
    });
    match r {
        Ok(()) => Ok(Started { pid }),
        Err(e) => {
            sys::kill(pid, libc::SIGKILL);
            sys::waitpid(pid);
            Err(e)
        }
    }
}

/// In the child: stdio onto 0/1/2, nothing else inherited, new session,
/// controlling terminal.
fn child_stdio(stdio: &Stdio, terminal: bool, preserve_fds: u32) -> Result<(), Error> {
    // Move the fds above 2 first, so that none of them is overwritten by
    // another's dup2 and every dup2 clears close-on-exec.
    let fds = [&stdio.stdin, &stdio.stdout, &stdio.stderr];
    let mut high = Vec::with_capacity(3);
    for fd in fds {
        high.push(
            rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| os_err("duplicate stdio", e))?,
        );
    }
    rustix::stdio::dup2_stdin(&high[0]).map_err(|e| os_err("set up stdin", e))?;
    rustix::stdio::dup2_stdout(&high[1]).map_err(|e| os_err("set up stdout", e))?;
    rustix::stdio::dup2_stderr(&high[2]).map_err(|e| os_err("set up stderr", e))?;
    sys::cloexec_from(3 + preserve_fds as i32);
    rustix::process::setsid().map_err(|e| os_err("setsid", e))?;
    if terminal {
        // SAFETY: fd 0 is open (set just above) for the rest of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        rustix::process::ioctl_tiocsctty(stdin)
            .map_err(|e| os_err("set controlling terminal", e))?;
    }
    Ok(())
}

fn start_child(
    plan: &StartPlan,
    stdio: &Stdio,
    sync: &SyncChild,
    opts: &ChildOpts,
) -> Result<Infallible, Error> {
    // The setup is killed with the caller; cleared again just before execve.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if !sync.wait_go() {
        sys::exit_now(1);
    }
    child_stdio(stdio, plan.process.terminal, opts.preserve_fds)?;
    for (fd, link, name) in &plan.join {
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*link))
            .map_err(|e| os_err(format!("join {name} namespace"), e))?;
    }
    if !plan.unshare.is_empty() {
        // SAFETY: no flag here unshares the fd table; the child is single
        // threaded.
        unsafe { rustix::thread::unshare_unsafe(plan.unshare) }
            .map_err(|e| os_err("create namespaces", e))?;
        if plan.unshare.contains(UnshareFlags::NEWNET) {
            // A new network namespace starts with `lo` down; Docker's
            // `--network none` containers have it up.
            sys::loopback_up().map_err(|e| os_err("bring up lo", e))?;
        }
    }
    // The second GO: the parent has moved us into the container's cgroup.
    let mut in_cgroup = false;
    let mut join_cgroup = || -> Result<(), Error> {
        if in_cgroup {
            return Ok(());
        }
        in_cgroup = true;
        if !sync.wait_go() {
            sys::exit_now(1);
        }
        if plan.new_cgroupns {
            // SAFETY: as above.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWCGROUP) }
                .map_err(|e| os_err("create cgroup namespace", e))?;
        }
        Ok(())
    };
    rustix::process::umask(Mode::empty());
    rootfs::setup_rootfs(&plan.rootfs, &mut join_cgroup)?;
    join_cgroup()?;
    if let Some(h) = &plan.hostname {
        rustix::system::sethostname(h.as_bytes()).map_err(|e| os_err("sethostname", e))?;
    }
    if let Some(d) = &plan.domainname {
        rustix::system::setdomainname(d.as_bytes()).map_err(|e| os_err("setdomainname", e))?;
    }
    for (path, value) in &plan.sysctl {
        std::fs::write(path, value.as_bytes())
            .map_err(|e| os_err(format!("write sysctl {}", path.display()), e))?;
    }
    rootfs::finalize_rootfs(&plan.rootfs)?;
    let gate = opts.fifo.as_ref().map(|fifo| process::Gate { sync, fifo });
    process::finish(&plan.process, gate)
}

/// `StartOptions` made ready for the child.
struct ChildOpts {
    fifo: Option<OwnedFd>,
    preserve_fds: u32,
}

pub(crate) fn start(
    id: &str,
    spec: &Spec,
    stdio: Stdio,
    opts: &crate::StartOptions<'_>,
) -> Result<Started, Error> {
    let plan = StartPlan::new(id, spec)?;
    let child_opts = ChildOpts {
        fifo: match opts.exec_fifo {
            Some(p) => Some(
                rustix::fs::open(p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| os_err(format!("open exec fifo {}", p.display()), e))?,
            ),
            None => None,
        },
        preserve_fds: opts.preserve_fds,
    };
    plan.cgroup.create()?;
    let r = (|| {
        if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            plan.cgroup.apply(res)?;
        }
        let join = plan.cgroup.self_join()?;
        let (sp, sc) = sync::pair()?;
        let mut sp = Some(sp);
        let forked = fork_child(&plan.pid_ns, &mut sp, sc, &join, |sc| {
            start_child(&plan, &stdio, sc, &child_opts)
        })?;
        let gated = child_opts.fifo.is_some();
        parent_side(
            forked,
            &plan.cgroup,
            sp.expect("parent keeps its end"),
            gated,
            true,
        )
    })();
    if r.is_err() {
        let _ = plan.cgroup.destroy();
    }
    r
}

// ---------------------------------------------------------------------------
// exec

/// Namespaces an exec'd process joins, in the order it joins them (mount
/// last: after it, /proc/<pid> paths of the host are gone).
const EXEC_NAMESPACES: &[(&str, LinkNameSpaceType)] = &[
    ("ipc", LinkNameSpaceType::InterProcessCommunication),
    ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
    ("net", LinkNameSpaceType::Network),
    ("cgroup", LinkNameSpaceType::ControlGroup),
    ("mnt", LinkNameSpaceType::Mount),
];

fn same_ns(init_pid: i32, name: &str) -> Result<bool, Error> {
    let theirs = rustix::fs::stat(format!("/proc/{init_pid}/ns/{name}").as_str())
        .map_err(|e| os_err(format!("stat /proc/{init_pid}/ns/{name}"), e))?;
    let ours = rustix::fs::stat(format!("/proc/self/ns/{name}").as_str())
        .map_err(|e| os_err(format!("stat /proc/self/ns/{name}"), e))?;
    Ok(theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev)
}

struct ExecPlan {
    pid_ns: PidNs,
    join: Vec<(OwnedFd, LinkNameSpaceType, &'static str)>,
    root: OwnedFd,
    process: ProcPlan,
    cgroup: Cgroup,
}

fn exec_child(plan: &ExecPlan, stdio: &Stdio, sync: &SyncChild) -> Result<Infallible, Error> {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if !sync.wait_go() {
        sys::exit_now(1);
    }
    child_stdio(stdio, plan.process.terminal, 0)?;
    for (fd, link, name) in &plan.join {
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*link))
            .map_err(|e| os_err(format!("join {name} namespace"), e))?;
    }
    // setns(mnt) puts us at the namespace's root mount; the container's
    // root may differ from it (chroot fallback), so enter it explicitly.
    rustix::process::fchdir(&plan.root).map_err(|e| os_err("chdir to container root", e))?;
    rustix::process::chroot(".").map_err(|e| os_err("chroot to container root", e))?;
    process::finish(&plan.process, None)
}

pub(crate) fn exec(
    id: &str,
    spec: &Spec,
    init_pid: i32,
    process: &Process,
    stdio: Stdio,
) -> Result<Started, Error> {
    if init_pid <= 0 || !Path::new(&format!("/proc/{init_pid}")).exists() {
        return Err(Error::not_found(format!(
            "container {id}: init process {init_pid} is not running"
        )));
    }
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let proc_plan = ProcPlan::new(process, seccomp)?;
    let pid_ns = if same_ns(init_pid, "pid")? {
        PidNs::Host
    } else {
        PidNs::Join(open_ns(
            Path::new(&format!("/proc/{init_pid}/ns/pid")),
            "pid",
        )?)
    };
    let mut join = Vec::new();
    for &(name, link) in EXEC_NAMESPACES {
        if !same_ns(init_pid, name)? {
            let p = PathBuf::from(format!("/proc/{init_pid}/ns/{name}"));
            join.push((open_ns(&p, name)?, link, name));
        }
    }
    let root = rustix::fs::open(
        format!("/proc/{init_pid}/root").as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err(format!("open /proc/{init_pid}/root"), e))?;
    let plan = ExecPlan {
        pid_ns,
        join,
        root,
        process: proc_plan,
        cgroup: Cgroup::of_pid(init_pid)?,
    };
    let join = plan.cgroup.self_join()?;
    let (sp, sc) = sync::pair()?;
    let mut sp = Some(sp);
    let forked = fork_child(&plan.pid_ns, &mut sp, sc, &join, |sc| {
        exec_child(&plan, &stdio, sc)
    })?;
    parent_side(
        forked,
        &plan.cgroup,
        sp.expect("parent keeps its end"),
        false,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child whose own join of a v1 hierarchy fails (say its cgroup
    /// vanished) reports why before it ever reads a GO: the caller gets
    /// that message, not the broken sync socket's, on either protocol
    /// (`start`'s two GOs, `exec`'s one), whether the child is already gone
    /// when the parent first writes (waited for here, not reaped) or not.
    #[test]
    fn a_failed_cgroup_join_in_the_child_reaches_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = dir.path().join("gone/tasks");
        let cgroup = Cgroup {
            dirs: Vec::new(),
            unified: false,
        };
        for overlap in [true, false] {
            for gone in [true, false] {
                for _ in 0..10 {
                    let join = SelfJoin {
                        tasks: vec![tasks.clone()],
                        v2: None,
                    };
                    let (sp, sc) = sync::pair().unwrap();
                    let mut sp = Some(sp);
                    let forked = fork_child(&PidNs::Host, &mut sp, sc, &join, |_| {
                        // Not reached: the join fails first.
                        sys::exit_now(3)
                    })
                    .unwrap();
                    if gone {
                        let pid = rustix::process::Pid::from_raw(forked.0).unwrap();
                        rustix::process::waitid(
                            rustix::process::WaitId::Pid(pid),
                            rustix::process::WaitIdOptions::EXITED
                                | rustix::process::WaitIdOptions::NOWAIT,
                        )
                        .unwrap();
                    }
                    let e = parent_side(forked, &cgroup, sp.take().unwrap(), false, overlap)
                        .unwrap_err();
                    let want = format!("write \"0\" to {}: ", tasks.display());
                    assert!(
                        e.message.starts_with(&want) && e.message.contains("no such file"),
                        "overlap {overlap}, gone {gone}: {}",
                        e.message
                    );
                }
            }
        }
    }
}
