//! Seccomp: compile an OCI `LinuxSeccomp` into BPF for the host
//! architecture (with seccompiler), and Docker's default profile.
//!
//! seccompiler's `SeccompFilter` has one match action and one mismatch
//! action, while an OCI profile gives each syscall rule its own action. We
//! compile one filter per action and rely on how the kernel combines stacked
//! filters (man 2 seccomp): every filter runs, the most restrictive result
//! wins, and among equally restrictive results the newest filter's wins.
//!
//! - filter D (only if the default action is not ALLOW): every syscall named
//!   by any rule, with that rule's argument conditions → ALLOW; anything
//!   else → the default action. D decides "is this call covered by a rule".
//! - one filter per other action X: the rules with action X → X; anything
//!   else → ALLOW. Installed after D, so ERRNO(ENOSYS) for clone3 beats D's
//!   ERRNO(EPERM).
//!
//! Limits: one architecture (the host's; calls made through another ABI,
//! e.g. i386 `int 0x80` on x86_64, are killed by seccompiler's arch check),
//! SCMP_ACT_NOTIFY is not supported, unknown syscall names are skipped.

use std::collections::BTreeMap;
use std::str::FromStr;

use berth_types::Error;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Filters ready to install, in installation order.
#[derive(Debug, Clone)]
pub(crate) struct CompiledSeccomp {
    pub filters: Vec<BpfProgram>,
    pub flags: u32,
}

fn target_arch() -> Result<TargetArch, Error> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        Error::not_implemented(format!(
            "seccomp is not supported on {}",
            std::env::consts::ARCH
        ))
    })
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, Error> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::not_implemented(
                "seccomp action SCMP_ACT_NOTIFY is not supported",
            ));
        }
    })
}

/// The rules for one syscall: unconditional, or any of several AND-ed
/// condition sets.
#[derive(Clone)]
enum Match {
    Always,
    Any(Vec<SeccompRule>),
}

impl Match {
    fn merge(&mut self, other: Match) {
        match (&mut *self, other) {
            (Match::Always, _) => {}
            (_, Match::Always) => *self = Match::Always,
            (Match::Any(a), Match::Any(b)) => a.extend(b),
        }
    }
    fn into_rules(self) -> Vec<SeccompRule> {
        match self {
            Match::Always => Vec::new(),
            Match::Any(r) => r,
        }
    }
}

fn rule_match(sc: &LinuxSyscall) -> Result<Match, Error> {
    let Some(args) = sc.args().as_ref().filter(|a| !a.is_empty()) else {
        return Ok(Match::Always);
    };
    let mut conds = Vec::with_capacity(args.len());
    for a in args {
        let idx = u8::try_from(a.index())
            .ok()
            .filter(|i| *i < 6)
            .ok_or_else(|| Error::invalid(format!("seccomp: bad argument index {}", a.index())))?;
        let (op, value) = match a.op() {
            LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
            LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
            LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
            LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
            LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
            LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
            // OCI: value is the mask, valueTwo the datum.
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                SeccompCmpOp::MaskedEq(a.value()),
                a.value_two().unwrap_or(0),
            ),
        };
        conds.push(
            SeccompCondition::new(idx, SeccompCmpArgLen::Qword, op, value)
                .map_err(|e| Error::invalid(format!("seccomp condition: {e}")))?,
        );
    }
    let rule = SeccompRule::new(conds).map_err(|e| Error::invalid(format!("seccomp rule: {e}")))?;
    Ok(Match::Any(vec![rule]))
}

fn filter_flags(s: &LinuxSeccomp) -> u32 {
    s.flags()
        .iter()
        .flatten()
        .map(|f| match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 32,
        })
        .fold(0, |a, b| a | b)
}

/// Compile an OCI seccomp profile for the host architecture.
pub(crate) fn compile(s: &LinuxSeccomp) -> Result<CompiledSeccomp, Error> {
    let arch = target_arch()?;
    let default = action(s.default_action(), s.default_errno_ret())?;
    // every syscall covered by a rule, and per action the syscalls it covers
    let mut covered: BTreeMap<i64, Match> = BTreeMap::new();
    let mut by_action: Vec<(SeccompAction, BTreeMap<i64, Match>)> = Vec::new();
    for sc in s.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        let m = rule_match(sc)?;
        for name in sc.names() {
            // Names this architecture does not have are skipped, as
            // libseccomp-based runtimes do.
            let Ok(nr) = syscalls::Sysno::from_str(name) else {
                continue;
            };
            let nr = i64::from(nr.id());
            covered
                .entry(nr)
                .and_modify(|e| e.merge(m.clone()))
                .or_insert_with(|| m.clone());
            if act == SeccompAction::Allow {
                continue;
            }
            let slot = match by_action.iter_mut().position(|(a, _)| *a == act) {
                Some(i) => &mut by_action[i].1,
                None => {
                    by_action.push((act.clone(), BTreeMap::new()));
                    &mut by_action.last_mut().expect("just pushed").1
                }
            };
            slot.entry(nr)
                .and_modify(|e| e.merge(m.clone()))
                .or_insert_with(|| m.clone());
        }
    }
    let build = |rules: BTreeMap<i64, Match>,
                 mismatch: SeccompAction,
                 matched: SeccompAction|
     -> Result<BpfProgram, Error> {
        let rules = rules
            .into_iter()
            .map(|(k, v)| (k, v.into_rules()))
            .collect();
        let f = SeccompFilter::new(rules, mismatch, matched, arch)
            .map_err(|e| Error::invalid(format!("seccomp filter: {e}")))?;
        BpfProgram::try_from(f).map_err(|e| Error::invalid(format!("seccomp filter: {e}")))
    };
    let mut filters = Vec::new();
    if default != SeccompAction::Allow {
        filters.push(build(covered, default.clone(), SeccompAction::Allow)?);
    }
    for (act, rules) in by_action {
        filters.push(build(rules, SeccompAction::Allow, act)?);
    }
    if filters.is_empty() {
        // An all-ALLOW profile: still install a (trivial) filter, so that
        // /proc/<pid>/status shows seccomp mode 2 as with runc.
        filters.push(build(
            BTreeMap::new(),
            SeccompAction::Allow,
            SeccompAction::Log,
        )?);
    }
    Ok(CompiledSeccomp {
        filters,
        flags: filter_flags(s),
    })
}

/// Install compiled filters into the calling thread.
pub(crate) fn install(c: &CompiledSeccomp) -> Result<(), Error> {
    for f in &c.filters {
        crate::sys::install_seccomp(f, c.flags)
            .map_err(|e| crate::sys::os_err("load seccomp filter", e))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Docker's default profile (moby profiles/seccomp/default.json), as data.

/// A group of syscalls of the default profile and when it applies.
struct Group {
    names: &'static [&'static str],
    /// None = ALLOW, Some(errno) = ERRNO(errno)
    errno: Option<u32>,
    /// (index, value, op)
    args: &'static [(usize, u64, LinuxSeccompOperator)],
    /// All of these capabilities must be in the bounding set.
    caps: &'static [Capability],
    /// None of these capabilities may be in the bounding set.
    not_caps: &'static [Capability],
    /// Only on these architectures (Go names), if not empty.
    arches: &'static [&'static str],
    /// Never on these architectures.
    not_arches: &'static [&'static str],
    /// Only from this kernel version on.
    min_kernel: Option<(u32, u32)>,
}

const fn allow(names: &'static [&'static str]) -> Group {
    Group {
        names,
        errno: None,
        args: &[],
        caps: &[],
        not_caps: &[],
        arches: &[],
        not_arches: &[],
        min_kernel: None,
    }
}

const fn allow_with_cap(names: &'static [&'static str], caps: &'static [Capability]) -> Group {
    Group {
        caps,
        ..allow(names)
    }
}

const fn allow_on(names: &'static [&'static str], arches: &'static [&'static str]) -> Group {
    Group {
        arches,
        ..allow(names)
    }
}

const fn allow_arg0(
    name: &'static [&'static str],
    args: &'static [(usize, u64, LinuxSeccompOperator)],
) -> Group {
    Group {
        args,
        ..allow(name)
    }
}

use LinuxSeccompOperator::{ScmpCmpEq as EQ, ScmpCmpMaskedEq as MASKED_EQ, ScmpCmpNe as NE};

/// The namespace flags of clone(2): CLONE_NEWNS | NEWCGROUP | NEWUTS |
/// NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NS_FLAGS: u64 = 0x7E02_0000;

const BASE_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

use Capability as C;

const GROUPS: &[Group] = &[
    allow(BASE_ALLOWED),
    Group {
        min_kernel: Some((4, 8)),
        ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    },
    // socket(AF_VSOCK) stays blocked
    allow_arg0(&["socket"], &[(0, 40, NE)]),
    allow_arg0(&["personality"], &[(0, 0, EQ)]),
    allow_arg0(&["personality"], &[(0, 8, EQ)]),
    allow_arg0(&["personality"], &[(0, 131_072, EQ)]),
    allow_arg0(&["personality"], &[(0, 131_080, EQ)]),
    allow_arg0(&["personality"], &[(0, 4_294_967_295, EQ)]),
    allow_on(&["sync_file_range2", "swapcontext"], &["ppc64le"]),
    allow_on(
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        &["arm", "arm64"],
    ),
    allow_on(&["arch_prctl"], &["amd64", "x32"]),
    allow_on(&["modify_ldt"], &["amd64", "x32", "x86"]),
    allow_on(
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        &["s390", "s390x"],
    ),
    allow_on(&["riscv_flush_icache"], &["riscv64"]),
    allow_with_cap(&["open_by_handle_at"], &[C::DacReadSearch]),
    allow_with_cap(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        &[C::SysAdmin],
    ),
    // clone without namespace flags, for containers without CAP_SYS_ADMIN
    Group {
        args: &[(0, CLONE_NS_FLAGS, MASKED_EQ)],
        not_caps: &[C::SysAdmin],
        not_arches: &["s390", "s390x"],
        ..allow(&["clone"])
    },
    Group {
        args: &[(1, CLONE_NS_FLAGS, MASKED_EQ)],
        arches: &["s390", "s390x"],
        not_caps: &[C::SysAdmin],
        ..allow(&["clone"])
    },
    // clone3 cannot be filtered on its flags (they are in memory): make libc
    // fall back to clone
    Group {
        errno: Some(libc::ENOSYS as u32),
        not_caps: &[C::SysAdmin],
        ..allow(&["clone3"])
    },
    allow_with_cap(&["reboot"], &[C::SysBoot]),
    allow_with_cap(&["chroot"], &[C::SysChroot]),
    allow_with_cap(
        &["delete_module", "init_module", "finit_module"],
        &[C::SysModule],
    ),
    allow_with_cap(&["acct"], &[C::SysPacct]),
    allow_with_cap(
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        &[C::SysPtrace],
    ),
    allow_with_cap(&["iopl", "ioperm"], &[C::SysRawio]),
    allow_with_cap(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &[C::SysTime],
    ),
    allow_with_cap(&["vhangup"], &[C::SysTtyConfig]),
    allow_with_cap(
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        &[C::SysNice],
    ),
    allow_with_cap(&["syslog"], &[C::Syslog]),
    allow_with_cap(&["bpf"], &[C::Bpf]),
    allow_with_cap(&["perf_event_open"], &[C::Perfmon]),
];

/// Go's name for the host architecture, as the profile's arch lists use it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn kernel_version() -> (u32, u32) {
    let uname = rustix::system::uname();
    let rel = uname.release().to_string_lossy();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}

fn profile_arches() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        _ => vec![Arch::ScmpArchNative],
    }
}

/// Docker's default seccomp profile, specialised (as dockerd does) for a
/// container whose bounding set is `bounding`.
pub fn seccomp_profile_for(bounding: &[Capability]) -> LinuxSeccomp {
    let arch = go_arch();
    let kernel = kernel_version();
    let mut syscalls = Vec::new();
    for g in GROUPS {
        if !g.caps.iter().all(|c| bounding.contains(c))
            || g.not_caps.iter().any(|c| bounding.contains(c))
            || (!g.arches.is_empty() && !g.arches.contains(&arch))
            || g.not_arches.contains(&arch)
            || g.min_kernel.is_some_and(|m| kernel < m)
        {
            continue;
        }
        let mut b = LinuxSyscallBuilder::default()
            .names(g.names.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        b = match g.errno {
            None => b.action(LinuxSeccompAction::ScmpActAllow),
            Some(e) => b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(e),
        };
        if !g.args.is_empty() {
            let args = g
                .args
                .iter()
                .map(|&(index, value, op)| {
                    LinuxSeccompArgBuilder::default()
                        .index(index)
                        .value(value)
                        .op(op)
                        .build()
                        .expect("all fields set")
                })
                .collect::<Vec<_>>();
            b = b.args(args);
        }
        syscalls.push(b.build().expect("all fields set"));
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(profile_arches())
        .syscalls(syscalls)
        .build()
        .expect("all fields set")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles() {
        let p = seccomp_profile_for(&crate::default_capabilities());
        let names: Vec<&String> = p
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names())
            .collect();
        assert!(names.iter().any(|n| *n == "read"));
        // no CAP_SYS_ADMIN: mount is not allowed, clone only with a condition
        assert!(!names.iter().any(|n| *n == "mount"));
        let c = compile(&p).unwrap();
        // D (default ERRNO) + ERRNO(ENOSYS) for clone3
        assert_eq!(c.filters.len(), 2);
        assert!(c.filters[0].len() > 300, "{}", c.filters[0].len());
        assert!(c.filters.iter().all(|f| f.len() < 4096));
    }

    #[test]
    fn sys_admin_profile_allows_mount() {
        let mut caps = crate::default_capabilities();
        caps.push(Capability::SysAdmin);
        let p = seccomp_profile_for(&caps);
        let names: Vec<&String> = p
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names())
            .collect();
        assert!(names.iter().any(|n| *n == "mount"));
        // clone3 is not ERRNO'd then, so only filter D
        assert_eq!(compile(&p).unwrap().filters.len(), 1);
    }

    #[test]
    fn custom_profile_actions() {
        let p: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["getpid"], "action": "SCMP_ACT_LOG"},
                {"names": ["kill"], "action": "SCMP_ACT_TRAP",
                 "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        }))
        .unwrap();
        let c = compile(&p).unwrap();
        // default ALLOW → no D; one filter per non-ALLOW action
        assert_eq!(c.filters.len(), 4);
    }

    #[test]
    fn notify_is_rejected() {
        let p: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_NOTIFY"
        }))
        .unwrap();
        assert!(compile(&p).is_err());
    }

    #[test]
    fn all_allow_profile_still_installs() {
        let p: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW"
        }))
        .unwrap();
        assert_eq!(compile(&p).unwrap().filters.len(), 1);
    }
}
