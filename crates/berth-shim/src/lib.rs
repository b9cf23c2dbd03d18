//! berth-shim: the one small process that stays with each container.
//!
//! Owns: the container's stdio or pty (the shim keeps the master, pipe ends
//! and stdin), its json-file log (`<id>-json.log`, Docker's format and
//! rotation), reaping it (as a child subreaper) and recording how it ended
//! (`exit.json`), and the per-container unix socket through which berthd
//! attaches, execs, kills, resizes, pauses and waits ([`proto`]). It
//! survives berthd being killed and restarted: berthd re-adopts it by
//! connecting to its socket, or reads `exit.json` once it is gone.
//!
//! Must not: start threads or an async runtime (it forks through
//! berth-runtime, and forking a multi-threaded process is unsafe), block on
//! a client (a slow client loses output; the container never stalls), link
//! HTTP, image or metadata code, or grow past its memory budget (well under
//! 1 MiB resident per container). Unsafe code lives in `sys.rs` only.
//!
//! Bundle directory, as the shim writes it:
//!
//! ```text
//! <bundle>/
//!   config.json         OCI runtime spec (input; root.path is the mounted rootfs)
//!   shim.pid            the shim's pid (removed when it exits cleanly)
//!   shim.log            the shim's own messages (its stderr)
//!   init.pid            the container init's pid
//!   exit.json           {"exit_code":C,"finished_at":"RFC 3339","oom_killed":B}, written by rename
//!   <id>-json.log       the container's log (unless --no-log), rotated to .1 … .N-1
//! ```
#![deny(unsafe_code)]

pub mod args;
pub mod init;
pub mod jsonlog;
pub mod mux;
pub mod proto;
mod rt;
mod shim;
mod stdio;
mod sys;
pub mod timefmt;

pub use shim::{main_entry, write_atomic};
