//! berth-e2e: the harness of berth's end-to-end tests. The tests themselves
//! live in `tests/*.rs`; each starts its own `berthd` ([`Daemon`]) on a
//! fresh data root and socket under `/tmp`, drives it only through the
//! Engine API with real clients (the docker CLI 28 at [`DOCKER_CLI`], the
//! berth CLI, skopeo, a tiny raw HTTP client in [`http`]), and looks at the
//! data root from outside ([`store`]) to check that nothing is left behind.
//!
//! Every berthd runs in a network namespace of its own ([`Netns`]), made
//! and deleted by its [`Daemon`], so its bridges, veths and nftables table
//! never touch the host's network and tests cannot collide.
//!
//! Owns: spawning and tearing down `berthd` and, for interop tests, a real
//! `dockerd` ([`Dockerd`]); running clients against them ([`Run`]); reading
//! the data root. Must not: link any berth crate but `berth-fixtures` (the
//! tests judge berthd from outside), or touch processes and files it did not
//! create.
//!
//! The binaries are taken from the target directory the test executable
//! runs from (`target/debug/deps/<test>` → `target/debug/berthd`); build
//! them first with `cargo build --workspace --bins`. Set `BERTH_E2E_KEEP=1`
//! to keep each test's temporary directory (data root, daemon log) for a
//! post-mortem.
#![forbid(unsafe_code)]

pub mod daemon;
pub mod dockerd;
pub mod fixtures;
pub mod forks;
pub mod http;
pub mod netns;
pub mod registry;
pub mod run;
pub mod store;
pub mod term;
pub mod text;
pub mod token;

use std::path::{Path, PathBuf};

pub use daemon::Daemon;
pub use dockerd::Dockerd;
pub use forks::Forks;
pub use http::Response;
pub use netns::Netns;
pub use registry::Registry;
pub use run::Run;
pub use store::{StoreState, chain_ids};
pub use term::Term;

/// The docker CLI the tests drive (docker 28; Debian's `/usr/bin/docker` is
/// an older client and is not used).
pub const DOCKER_CLI: &str = "/usr/local/bin/docker";

/// A path as a command-line argument (the harness's paths are UTF-8).
#[track_caller]
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("the harness only makes UTF-8 paths")
}

/// Whether the tests run as root; berthd's tests need it (layer extraction
/// keeps ownership and device nodes).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Returns from the calling test, with a message, unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!(
                "SKIPPED {}:{}: end-to-end tests need root (berthd extracts layers with their owners and devices)",
                file!(),
                line!()
            );
            return;
        }
    };
}

/// The directory holding the workspace's binaries: `BERTH_BIN_DIR` if set,
/// else the directory above the test executable's `deps/`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let deps = exe.parent().expect("test executable has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps/ has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Whether a workspace binary has been built.
pub fn has_bin(name: &str) -> bool {
    bin_dir().join(name).is_file()
}

/// Path of a workspace binary; panics with what to do when it is missing.
#[track_caller]
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` first (or set BERTH_BIN_DIR)",
        path.display()
    );
    path
}

/// Whether `name` is a program on PATH.
pub fn has_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
}

/// Path of the docker CLI; panics when it is missing.
#[track_caller]
pub fn docker_cli() -> &'static Path {
    let p = Path::new(DOCKER_CLI);
    assert!(
        p.is_file(),
        "{DOCKER_CLI} not found: the end-to-end tests need the docker CLI 28"
    );
    p
}

/// A fresh temporary directory under `/tmp` (short, so unix socket paths
/// in it stay under the 108-byte limit).
pub fn short_tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create a temporary directory under /tmp")
}

/// Whether temporary directories should be kept (`BERTH_E2E_KEEP=1`).
pub(crate) fn keep_tempdirs() -> bool {
    std::env::var_os("BERTH_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
