//! The shim process: startup (daemonize, start the container, report
//! readiness) and the single-threaded poll(2) loop that serves it.
//!
//! One loop iteration polls the container's output fds (pty master or
//! pipes), stdin sinks with pending bytes, client connections, the listener
//! and the signal self-pipe, handles what is ready in that order, then does
//! the time-based work: finishing processes whose output is drained,
//! dropping idle or stuck clients, and deciding whether to exit.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Pid, WaitOptions, waitpid};

use crate::args::Args;
use crate::jsonlog::{JsonLog, Stream};
use crate::proto::{self, ExitStatus, Request, Response};
use crate::rt::{self, Process, Spec};
use crate::sys::{self, Fork};
use crate::timefmt::rfc3339_nano;
use crate::{mux, stdio};

/// Bytes read from an fd per wakeup.
const READ_BUF: usize = 16 * 1024;
/// Output queued for one slow client before further output to it is dropped.
const CLIENT_OUT_CAP: usize = 256 * 1024;
/// Stdin bytes queued for a process before clients stop being read.
const STDIN_CAP: usize = 64 * 1024;
/// Connections beyond this are closed at once.
const MAX_CLIENTS: usize = 128;
/// After a process exits, how long its output may take to reach EOF (it
/// does not if something it started still holds the pipe).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// A connection must send its request line within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A closing connection gets this long to take its remaining output.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After the container exited, stay at least this long for a `wait`.
const LINGER: Duration = Duration::from_secs(10);
/// Once the last client has gone for this long, startup-like memory (the
/// request code paths) is given back again.
const IDLE_TRIM: Duration = Duration::from_secs(1);
/// Once it may exit, the shim still waits until no client has been
/// connected for this long, so that a request right after `wait` (a
/// `state`, a `shutdown`) does not find the socket gone.
const QUIET: Duration = Duration::from_secs(1);
/// Finished execs whose exit code `exec_state` still reports.
const MAX_DONE_EXECS: usize = 256;

/// A line in `shim.log` (the shim's stderr once daemonized).
macro_rules! slog {
    ($($t:tt)*) => {
        $crate::shim::log_line(format_args!($($t)*))
    };
}

pub(crate) fn log_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "{} {}", rfc3339_nano(SystemTime::now()), args);
}

/// A startup failure, reported on the readiness fd.
struct Fail {
    message: String,
    exit_code: i32,
}

impl Fail {
    fn new(message: impl Into<String>, exit_code: i32) -> Fail {
        Fail {
            message: message.into(),
            exit_code,
        }
    }
}

/// The readiness pipe: written once, then closed.
struct Ready(Option<OwnedFd>);

impl Ready {
    fn send(&mut self, r: &Response) {
        if let Some(fd) = self.0.take() {
            let _ = File::from(fd).write_all(&r.to_line());
        }
    }
    fn fail(&mut self, f: &Fail) {
        self.send(&Response {
            exit_code: Some(f.exit_code),
            ..Response::error(f.message.clone())
        });
    }
}

/// The program: parse arguments, start, serve; returns the exit code.
pub fn main_entry() -> i32 {
    let mut argv = std::env::args_os();
    if argv
        .next()
        .is_some_and(|a0| crate::init::invoked_as_init(&a0))
    {
        return crate::init::main(argv.collect());
    }
    let args = match crate::args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(io::stderr(), "berth-shim: {e}\n{}", crate::args::USAGE);
            return 125;
        }
    };
    let keep: Vec<i32> = args
        .ready_fd
        .into_iter()
        .chain(args.attach.as_ref().map(|a| a.fd))
        .collect();
    sys::close_inherited_fds(&keep);
    let mut ready = Ready(None);
    if let Some(fd) = args.ready_fd {
        match sys::adopt_fd(fd) {
            Ok(f) => ready.0 = Some(f),
            Err(e) => {
                let _ = writeln!(io::stderr(), "berth-shim: --ready-fd {fd}: {e}");
                return 125;
            }
        }
    }
    match setup(&args, &mut ready) {
        Ok(mut shim) => {
            drop(ready);
            shim.run();
            0
        }
        Err(f) => {
            slog!("container {} did not start: {}", args.id, f.message);
            ready.fail(&f);
            1
        }
    }
}

fn setup(args: &Args, ready: &mut Ready) -> Result<Shim, Fail> {
    let io125 = |what: String| move |e: io::Error| Fail::new(format!("{what}: {e}"), 125);
    let shim_log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(args.bundle.join("shim.log"))
        .map_err(io125(format!(
            "open {}",
            args.bundle.join("shim.log").display()
        )))?;
    let attach_fd = match &args.attach {
        Some(a) => Some(sys::adopt_fd(a.fd).map_err(io125(format!("--attach-fd {}", a.fd)))?),
        None => None,
    };

    daemonize(ready)?;
    // From here on this is the daemon: own session, parent gone.
    redirect_stdio(&shim_log).map_err(io125("redirect stdio".into()))?;
    drop(shim_log);
    rustix::process::chdir("/").map_err(|e| io125("chdir /".into())(e.into()))?;
    let me = rustix::process::getpid();
    rustix::process::set_child_subreaper(Some(me))
        .map_err(|e| io125("set child subreaper".into())(e.into()))?;
    sys::unblock_all_signals().map_err(io125("signal mask".into()))?;
    let (sig_r, sig_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
        .map_err(|e| io125("pipe".into())(e.into()))?;
    sys::catch_signals(
        sig_w,
        &[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP],
    )
    .map_err(io125("signal handlers".into()))?;
    let mut undo = Undo(vec![args.bundle.join("shim.pid")]);
    write_atomic(
        &args.bundle.join("shim.pid"),
        me.as_raw_nonzero().to_string().as_bytes(),
    )
    .map_err(io125("write shim.pid".into()))?;

    let config = args.bundle.join("config.json");
    // Read whole and parsed from memory: `Spec::load` parses from the file
    // a byte at a time.
    let mut spec: Spec = std::fs::read(&config)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| Fail::new(format!("load {}: {e}", config.display()), 125))?;
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(args.tty));
    }
    let listener =
        bind(&args.socket).map_err(io125(format!("listen on {}", args.socket.display())))?;
    undo.0.push(args.socket.clone());
    let socket_id = file_id(&args.socket).unwrap_or_default();
    let log = if args.no_log {
        None
    } else {
        let path = args.bundle.join(format!("{}-json.log", args.id));
        Some(
            JsonLog::open(&path, args.rotation)
                .map_err(io125(format!("open {}", path.display())))?,
        )
    };
    let (container, held) =
        stdio::make(args.tty, args.stdin, None).map_err(io125("container stdio".into()))?;

    let pid = match rt::start(&args.id, &spec, container) {
        Ok(pid) => pid,
        // The runtime leaves nothing behind when start fails.
        Err(e) => return Err(Fail::new(e.message, e.exit_code.unwrap_or(125))),
    };
    undo.0.clear();
    if let Err(e) = write_atomic(&args.bundle.join("init.pid"), pid.to_string().as_bytes()) {
        slog!("write init.pid: {e}");
    }
    ready.send(&Response {
        pid: Some(pid),
        ..Default::default()
    });
    slog!("container {} started, pid {pid}", args.id);

    let init = Proc::new(0, None, pid, args.tty, args.stdin, args.stdin_once, held);
    let mut shim = Shim {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        socket: args.socket.clone(),
        socket_id,
        spec,
        listener,
        sig_r,
        log,
        log_failing: false,
        procs: vec![init],
        done_execs: VecDeque::new(),
        clients: Vec::new(),
        exit: None,
        init_done: false,
        wait_answered: false,
        paused: false,
        shutdown_at: None,
        trim_at: None,
        last_client_at: Instant::now(),
        next_key: 1,
        buf: vec![0; READ_BUF],
    };
    if let (Some(fd), Some(a)) = (attach_fd, &args.attach) {
        // The first attach arrives with the command line, so it sees the
        // container's output from the first byte.
        let sock = UnixStream::from(fd);
        let mut c = Client::new(sock);
        c.mode = Mode::Stream(Sel {
            proc: 0,
            stdin: a.stdin,
            stdout: a.stdout,
            stderr: a.stderr,
        });
        if c.sock.set_nonblocking(true).is_ok() {
            shim.clients.push(c);
        }
    }
    Ok(shim)
}

/// Files setup made, removed again if it fails.
struct Undo(Vec<PathBuf>);

impl Drop for Undo {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Double fork: the process berthd started exits at once (with the status
/// of the middle one), the middle one makes a new session and exits, and
/// the grandchild — in its own session and process group, reparented to a
/// subreaper or init — returns from here.
fn daemonize(ready: &mut Ready) -> Result<(), Fail> {
    match sys::fork() {
        Err(e) => return Err(Fail::new(format!("fork: {e}"), 125)),
        Ok(Fork::Parent(pid)) => {
            let code = Pid::from_raw(pid)
                .and_then(|p| waitpid(Some(p), WaitOptions::empty()).ok().flatten())
                .and_then(|(_, st)| st.exit_status())
                .unwrap_or(1);
            sys::exit_now(code)
        }
        Ok(Fork::Child) => {}
    }
    if let Err(e) = rustix::process::setsid() {
        ready.fail(&Fail::new(format!("setsid: {e}"), 125));
        sys::exit_now(1)
    }
    match sys::fork() {
        Err(e) => {
            ready.fail(&Fail::new(format!("fork: {e}"), 125));
            sys::exit_now(1)
        }
        Ok(Fork::Parent(_)) => sys::exit_now(0),
        Ok(Fork::Child) => Ok(()),
    }
}

fn redirect_stdio(log: &File) -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(log)?;
    Ok(())
}

fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// (device, inode) of a path, not following a final symlink.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Write `path` by writing `path.tmp` and renaming it over: readers see
/// the old file or the new one, even if the shim dies half-way. Not
/// fsynced: these files (pids, an exit status) describe processes that do
/// not outlive the machine, and a sync costs milliseconds per start.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(data)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// A process the shim holds: the container's init (key 0) or an exec.
struct Proc {
    key: u64,
    exec_id: Option<String>,
    pid: i32,
    tty: bool,
    master: Option<OwnedFd>,
    master_eof: bool,
    /// stdout, stderr read ends (pipe mode).
    out: [Option<OwnedFd>; 2],
    /// stdin write end (pipe mode); with a tty stdin goes to the master.
    stdin: Option<OwnedFd>,
    /// Whether client stdin is forwarded at all.
    stdin_open: bool,
    stdin_buf: Vec<u8>,
    stdin_close_pending: bool,
    stdin_once: bool,
    exit_code: Option<i32>,
    exited_at: Option<Instant>,
    finished: bool,
}

impl Proc {
    fn new(
        key: u64,
        exec_id: Option<String>,
        pid: i32,
        tty: bool,
        stdin: bool,
        stdin_once: bool,
        held: stdio::Held,
    ) -> Proc {
        Proc {
            key,
            exec_id,
            pid,
            tty,
            stdin_open: stdin && (tty || held.stdin.is_some()),
            master: held.master,
            master_eof: false,
            out: [held.stdout, held.stderr],
            stdin: held.stdin,
            stdin_buf: Vec::new(),
            stdin_close_pending: false,
            stdin_once,
            exit_code: None,
            exited_at: None,
            finished: false,
        }
    }

    fn running(&self) -> bool {
        self.exit_code.is_none()
    }

    fn outputs_done(&self) -> bool {
        self.out.iter().all(Option::is_none) && (self.master.is_none() || self.master_eof)
    }

    fn stdin_fd(&self) -> Option<&OwnedFd> {
        if !self.stdin_open {
            None
        } else if self.tty {
            self.master.as_ref().filter(|_| !self.master_eof)
        } else {
            self.stdin.as_ref()
        }
    }

    /// Write queued stdin bytes without blocking.
    fn flush_stdin(&mut self) {
        while !self.stdin_buf.is_empty() {
            let r = match self.stdin_fd() {
                Some(fd) => rustix::io::write(fd, &self.stdin_buf),
                None => {
                    self.stdin_buf.clear();
                    break;
                }
            };
            match r {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(_) => {
                    // EPIPE: nobody reads stdin any more.
                    self.stdin_buf = Vec::new();
                    self.stdin = None;
                    self.stdin_open = false;
                }
            }
        }
        if self.stdin_buf.is_empty() && self.stdin_close_pending {
            self.stdin_close_pending = false;
            self.close_stdin_now();
        }
    }

    /// Close the process's stdin once what is queued is written.
    fn close_stdin(&mut self) {
        if self.stdin_buf.is_empty() {
            self.close_stdin_now();
        } else {
            self.stdin_close_pending = true;
        }
    }

    fn close_stdin_now(&mut self) {
        // A pty cannot be half-closed; its stdin just stops being forwarded.
        self.stdin = None;
        self.stdin_open = false;
        self.stdin_buf = Vec::new();
    }
}

/// A finished exec, for `exec_state`.
struct DoneExec {
    exec_id: String,
    pid: i32,
    exit_code: i32,
}

/// Which process and streams a streaming connection is attached to.
#[derive(Debug, Clone, Copy)]
struct Sel {
    proc: u64,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Reading the request line.
    Request,
    /// A `wait` not yet answered.
    Waiting,
    /// Carrying a process's stdio.
    Stream(Sel),
    /// Answered; closed once its output is written.
    Closing,
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    mode: Mode,
    out: Vec<u8>,
    out_pos: usize,
    read_eof: bool,
    dead: bool,
    since: Instant,
    dropped: usize,
}

impl Client {
    fn new(sock: UnixStream) -> Client {
        Client {
            sock,
            inbuf: Vec::new(),
            mode: Mode::Request,
            out: Vec::new(),
            out_pos: 0,
            read_eof: false,
            dead: false,
            since: Instant::now(),
            dropped: 0,
        }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Queue `parts` as one unit; stream data (`droppable`) is dropped
    /// whole rather than let one slow client grow the buffer without bound.
    fn queue(&mut self, parts: &[&[u8]], droppable: bool) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if droppable && self.pending() + len > CLIENT_OUT_CAP {
            if self.dropped == 0 {
                slog!("client too slow, dropping output");
            }
            self.dropped += len;
            return;
        }
        if self.out_pos > 0 && self.out_pos * 2 >= self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        for p in parts {
            self.out.extend_from_slice(p);
        }
    }

    fn respond(&mut self, r: &Response) {
        self.queue(&[&r.to_line()], false);
    }

    fn close_after_flush(&mut self) {
        self.mode = Mode::Closing;
        self.since = Instant::now();
    }

    fn flush(&mut self) {
        while self.pending() > 0 && !self.dead {
            match (&self.sock).write(&self.out[self.out_pos..]) {
                Ok(0) => self.dead = true,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
        if self.pending() == 0 {
            self.out_pos = 0;
            if self.out.capacity() > 64 * 1024 {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        }
    }
}

/// What a poll slot belongs to.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// Process index, fd: 0 stdout pipe, 1 stderr pipe, 2 pty master.
    Out(usize, usize),
    /// Process index: its stdin pipe is writable.
    StdinPipe(usize),
    Client(usize),
    Listener,
    Signal,
}

pub struct Shim {
    id: String,
    bundle: PathBuf,
    socket: PathBuf,
    /// (device, inode) of the socket file this shim bound.
    socket_id: (u64, u64),
    spec: Spec,
    listener: UnixListener,
    sig_r: OwnedFd,
    log: Option<JsonLog>,
    log_failing: bool,
    /// `procs[0]` is the container's init; execs follow.
    procs: Vec<Proc>,
    done_execs: VecDeque<DoneExec>,
    clients: Vec<Client>,
    exit: Option<ExitStatus>,
    /// The init's output is drained, the cgroup deleted, waiters answered.
    init_done: bool,
    wait_answered: bool,
    paused: bool,
    shutdown_at: Option<Instant>,
    /// When to give back memory after the last client left.
    trim_at: Option<Instant>,
    /// The last time a client was connected.
    last_client_at: Instant,
    next_key: u64,
    buf: Vec<u8>,
}

impl Shim {
    /// Serve until the container is gone and berthd has its status.
    pub fn run(&mut self) {
        self.trim_at = Some(Instant::now());
        loop {
            let now = Instant::now();
            self.housekeeping(now);
            if self.should_exit(now) {
                break;
            }
            // Trimming happens last before sleeping, so that little code
            // is faulted back in between the trim and the poll.
            let trim_now = self.trim_at.is_some_and(|t| now >= t);
            if trim_now {
                self.trim_at = None;
            }
            let timeout = self.next_deadline().map(|d| {
                let t = d.saturating_duration_since(Instant::now());
                Timespec {
                    tv_sec: t.as_secs() as _,
                    tv_nsec: t.subsec_nanos() as _,
                }
            });
            let events = match self.poll_once(timeout.as_ref(), trim_now) {
                Ok(ev) => ev,
                Err(e) => {
                    slog!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if !events.is_empty() {
                // Quiet for IDLE_TRIM after this: give back what the work
                // (an exec, a burst of output) left resident, even while
                // berthd keeps its wait connection open.
                self.trim_at = Some(Instant::now() + IDLE_TRIM);
            }
            for (src, rev) in events {
                self.handle(src, rev);
            }
        }
        self.cleanup();
    }

    fn poll_once(
        &self,
        timeout: Option<&Timespec>,
        trim: bool,
    ) -> io::Result<Vec<(Src, PollFlags)>> {
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(8 + self.clients.len());
        let mut srcs: Vec<Src> = Vec::with_capacity(fds.capacity());
        let rd = PollFlags::IN;
        for (i, p) in self.procs.iter().enumerate() {
            if p.finished {
                continue;
            }
            for (j, fd) in p.out.iter().enumerate() {
                if let Some(fd) = fd {
                    fds.push(PollFd::new(fd, rd));
                    srcs.push(Src::Out(i, j));
                }
            }
            if let Some(m) = p.master.as_ref().filter(|_| !p.master_eof) {
                let mut ev = rd;
                if !p.stdin_buf.is_empty() {
                    ev |= PollFlags::OUT;
                }
                fds.push(PollFd::new(m, ev));
                srcs.push(Src::Out(i, 2));
            }
            if let Some(w) = p.stdin.as_ref().filter(|_| !p.stdin_buf.is_empty()) {
                fds.push(PollFd::new(w, PollFlags::OUT));
                srcs.push(Src::StdinPipe(i));
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if c.dead {
                continue;
            }
            let mut ev = PollFlags::empty();
            if self.wants_read(c) {
                ev |= rd;
            }
            if c.pending() > 0 {
                ev |= PollFlags::OUT;
            }
            fds.push(PollFd::new(&c.sock, ev));
            srcs.push(Src::Client(i));
        }
        if self.shutdown_at.is_none() {
            fds.push(PollFd::new(&self.listener, rd));
            srcs.push(Src::Listener);
        }
        fds.push(PollFd::new(&self.sig_r, rd));
        srcs.push(Src::Signal);
        if trim {
            sys::trim_heap();
            sys::trim_resident();
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(fds
            .iter()
            .zip(srcs)
            .filter(|(f, _)| !f.revents().is_empty())
            .map(|(f, s)| (s, f.revents()))
            .collect())
    }

    fn wants_read(&self, c: &Client) -> bool {
        if c.read_eof {
            return false;
        }
        match c.mode {
            Mode::Request => c.inbuf.len() <= proto::MAX_REQUEST,
            Mode::Waiting => true,
            Mode::Stream(sel) => match self.proc_by_key(sel.proc) {
                Some(p) if sel.stdin && p.stdin_open => p.stdin_buf.len() < STDIN_CAP,
                _ => true,
            },
            Mode::Closing => false,
        }
    }

    fn proc_by_key(&self, key: u64) -> Option<&Proc> {
        self.procs.iter().find(|p| p.key == key && !p.finished)
    }

    fn proc_index(&self, key: u64) -> Option<usize> {
        self.procs.iter().position(|p| p.key == key && !p.finished)
    }

    fn handle(&mut self, src: Src, rev: PollFlags) {
        let readable = rev.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR);
        match src {
            Src::Out(i, j) => {
                if rev.contains(PollFlags::OUT) {
                    self.procs[i].flush_stdin();
                }
                if readable {
                    self.read_output(i, j);
                }
            }
            Src::StdinPipe(i) => self.procs[i].flush_stdin(),
            Src::Client(i) => {
                if rev.contains(PollFlags::OUT) {
                    self.clients[i].flush();
                }
                if readable && self.wants_read(&self.clients[i]) {
                    self.read_client(i);
                }
                if rev.intersects(PollFlags::HUP | PollFlags::ERR) {
                    // Both directions are gone: take what was left, then drop.
                    for _ in 0..64 {
                        if !self.read_client(i) {
                            break;
                        }
                    }
                    self.client_eof(i);
                    self.clients[i].dead = true;
                }
            }
            Src::Listener => self.accept_all(),
            Src::Signal => self.on_signals(),
        }
    }

    // ---- output ----

    /// Read once from output fd `j` of process `i`; whether data came.
    fn read_output(&mut self, i: usize, j: usize) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let p = &self.procs[i];
        let fd = if j == 2 {
            p.master.as_ref().filter(|_| !p.master_eof)
        } else {
            p.out[j].as_ref()
        };
        let Some(fd) = fd else {
            self.buf = buf;
            return false;
        };
        let r = rustix::io::read(fd, &mut buf);
        let stream = if j == 1 {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let mut got = false;
        match r {
            Ok(0) => self.output_closed(i, j, stream),
            Ok(n) => {
                self.dispatch(i, stream, &buf[..n]);
                got = true;
            }
            Err(Errno::AGAIN) | Err(Errno::INTR) => {}
            Err(e) => {
                // EIO on a pty master: every slave fd is closed.
                if !(j == 2 && e == Errno::IO) {
                    slog!("read output of pid {}: {e}", self.procs[i].pid);
                }
                self.output_closed(i, j, stream);
            }
        }
        self.buf = buf;
        got
    }

    fn output_closed(&mut self, i: usize, j: usize, stream: Stream) {
        let p = &mut self.procs[i];
        if j == 2 {
            p.master_eof = true;
        } else {
            p.out[j] = None;
        }
        if i == 0 {
            self.log_finish(stream);
        }
    }

    fn dispatch(&mut self, i: usize, stream: Stream, data: &[u8]) {
        let (key, tty) = (self.procs[i].key, self.procs[i].tty);
        if i == 0
            && let Some(log) = &mut self.log
        {
            let r = log.write(stream, data, SystemTime::now());
            note_log_result(&mut self.log_failing, r);
        }
        let hdr = mux::header(
            if stream == Stream::Stderr {
                mux::STDERR
            } else {
                mux::STDOUT
            },
            data.len() as u32,
        );
        for c in &mut self.clients {
            let Mode::Stream(sel) = c.mode else { continue };
            if sel.proc != key || c.dead {
                continue;
            }
            if tty {
                if sel.stdout {
                    c.queue(&[data], true);
                }
            } else if (stream == Stream::Stdout && sel.stdout)
                || (stream == Stream::Stderr && sel.stderr)
            {
                c.queue(&[&hdr, data], true);
            }
        }
    }

    fn log_finish(&mut self, stream: Stream) {
        if let Some(log) = &mut self.log {
            let r = log.finish(stream, SystemTime::now());
            note_log_result(&mut self.log_failing, r);
        }
    }

    // ---- clients ----

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.clients.push(Client::new(sock));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    slog!("accept: {e}");
                    break;
                }
            }
        }
    }

    /// Read once from client `i`; whether data came.
    fn read_client(&mut self, i: usize) -> bool {
        if self.clients[i].dead || self.clients[i].read_eof {
            return false;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let mut got = false;
        match (&self.clients[i].sock).read(&mut buf) {
            Ok(0) => self.client_eof(i),
            Ok(n) => {
                self.client_data(i, &buf[..n]);
                got = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                self.client_eof(i);
                self.clients[i].dead = true;
            }
        }
        self.buf = buf;
        got
    }

    fn client_eof(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.read_eof {
            return;
        }
        c.read_eof = true;
        match c.mode {
            Mode::Request => c.dead = true,
            Mode::Stream(sel) if sel.stdin => {
                // Half-close: this client's stdin is done; output goes on.
                if let Some(pi) = self.proc_index(sel.proc) {
                    let p = &mut self.procs[pi];
                    if p.stdin_once {
                        p.close_stdin();
                    }
                }
            }
            _ => {}
        }
    }

    fn client_data(&mut self, i: usize, data: &[u8]) {
        match self.clients[i].mode {
            Mode::Request => {
                let c = &mut self.clients[i];
                c.inbuf.extend_from_slice(data);
                let Some(nl) = c.inbuf.iter().position(|&b| b == b'\n') else {
                    if c.inbuf.len() > proto::MAX_REQUEST {
                        c.respond(&Response::error("request too long"));
                        c.close_after_flush();
                    }
                    return;
                };
                let mut line = std::mem::take(&mut c.inbuf);
                let rest = line.split_off(nl + 1);
                let req = proto::parse_request(&line);
                drop(line);
                match req {
                    Ok(req) => self.request(i, req),
                    Err(e) => {
                        let c = &mut self.clients[i];
                        c.respond(&Response::error(e));
                        c.close_after_flush();
                    }
                }
                if !rest.is_empty() && !self.clients[i].dead {
                    self.client_data(i, &rest);
                }
            }
            Mode::Stream(sel) if sel.stdin => {
                if let Some(pi) = self.proc_index(sel.proc) {
                    let p = &mut self.procs[pi];
                    if p.stdin_open && !p.stdin_close_pending {
                        p.stdin_buf.extend_from_slice(data);
                        p.flush_stdin();
                    }
                }
            }
            // Anything else a client sends is ignored.
            _ => {}
        }
    }

    fn request(&mut self, i: usize, req: Request) {
        let (resp, mode) = match req {
            Request::Version => (
                Some(Response {
                    protocol: Some(proto::PROTOCOL_VERSION),
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                    ..Default::default()
                }),
                Mode::Closing,
            ),
            Request::State => (Some(self.state()), Mode::Closing),
            Request::Attach(a) => {
                if self.procs[0].running() {
                    let sel = Sel {
                        proc: 0,
                        stdin: a.stdin,
                        stdout: a.stdout,
                        stderr: a.stderr,
                    };
                    (Some(Response::ok()), Mode::Stream(sel))
                } else {
                    (Some(self.not_running()), Mode::Closing)
                }
            }
            Request::Resize(r) => (Some(self.resize(0, r.height, r.width)), Mode::Closing),
            Request::Kill(k) => (Some(self.kill(k.signal)), Mode::Closing),
            Request::Wait => match (&self.exit, self.init_done) {
                (Some(st), true) => {
                    self.wait_answered = true;
                    (Some(Response::from(st)), Mode::Closing)
                }
                _ => (None, Mode::Waiting),
            },
            Request::Exec(e) => self.exec(*e),
            Request::ExecState(r) => (Some(self.exec_state(&r.exec_id)), Mode::Closing),
            Request::ExecResize(r) => {
                let resp = match self.exec_index(&r.exec_id) {
                    Some(pi) => self.resize(pi, r.height, r.width),
                    None => Response::error(format!("no such exec: {}", r.exec_id)),
                };
                (Some(resp), Mode::Closing)
            }
            Request::Pause => (Some(self.freeze(true)), Mode::Closing),
            Request::Resume => (Some(self.freeze(false)), Mode::Closing),
            Request::Shutdown => {
                if self.procs[0].running() {
                    (
                        Some(Response::error(format!(
                            "container {} is running; kill it first",
                            self.id
                        ))),
                        Mode::Closing,
                    )
                } else {
                    self.shutdown_at.get_or_insert_with(Instant::now);
                    (Some(Response::ok()), Mode::Closing)
                }
            }
        };
        let c = &mut self.clients[i];
        if let Some(r) = resp {
            c.respond(&r);
        }
        c.mode = mode;
        c.since = Instant::now();
    }

    fn not_running(&self) -> Response {
        Response::error(format!("container {} is not running", self.id))
    }

    fn state(&self) -> Response {
        let init = &self.procs[0];
        let mut r = Response {
            pid: Some(init.pid),
            running: Some(init.running()),
            paused: Some(self.paused),
            ..Default::default()
        };
        if let Some(st) = &self.exit {
            r.exit_code = Some(st.exit_code);
            r.finished_at = Some(st.finished_at.clone());
            r.oom_killed = Some(st.oom_killed);
        }
        r
    }

    fn resize(&self, pi: usize, height: u16, width: u16) -> Response {
        let p = &self.procs[pi];
        match &p.master {
            None => Response::error("the process has no tty"),
            Some(m) => match stdio::resize(m, height, width) {
                Ok(()) => Response::ok(),
                Err(e) => Response::error(format!("resize: {e}")),
            },
        }
    }

    fn kill(&self, signal: i32) -> Response {
        let init = &self.procs[0];
        if !init.running() {
            return self.not_running();
        }
        match sys::kill(init.pid, signal) {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(format!("kill pid {} with signal {signal}: {e}", init.pid)),
        }
    }

    fn freeze(&mut self, frozen: bool) -> Response {
        if !self.procs[0].running() {
            return self.not_running();
        }
        match rt::freeze(&self.spec, frozen) {
            Ok(()) => {
                self.paused = frozen;
                Response::ok()
            }
            Err(e) => Response::error(e.message),
        }
    }

    fn exec_index(&self, exec_id: &str) -> Option<usize> {
        self.procs
            .iter()
            .position(|p| !p.finished && p.exec_id.as_deref() == Some(exec_id))
    }

    fn exec_state(&self, exec_id: &str) -> Response {
        if let Some(pi) = self.exec_index(exec_id) {
            let p = &self.procs[pi];
            return Response {
                pid: Some(p.pid),
                running: Some(p.running()),
                exit_code: p.exit_code,
                ..Default::default()
            };
        }
        match self.done_execs.iter().find(|d| d.exec_id == exec_id) {
            Some(d) => Response {
                pid: Some(d.pid),
                running: Some(false),
                exit_code: Some(d.exit_code),
                ..Default::default()
            },
            None => Response::error(format!("no such exec: {exec_id}")),
        }
    }

    fn exec(&mut self, e: proto::Exec) -> (Option<Response>, Mode) {
        let fail = |r: Response| (Some(r), Mode::Closing);
        if !self.procs[0].running() {
            return fail(self.not_running());
        }
        if self.paused {
            // The new process would freeze before it could exec.
            return fail(Response::error(format!(
                "container {} is paused, unpause the container before exec",
                self.id
            )));
        }
        if e.exec_id.is_empty()
            || self.exec_index(&e.exec_id).is_some()
            || self.done_execs.iter().any(|d| d.exec_id == e.exec_id)
        {
            return fail(Response::error(format!(
                "exec {:?} already exists",
                e.exec_id
            )));
        }
        let mut process: Process = match serde_json::from_value(e.process) {
            Ok(p) => p,
            Err(err) => return fail(Response::error(format!("invalid process: {err}"))),
        };
        process.set_terminal(Some(e.tty));
        // Nobody will write to a detached exec's stdin.
        let stdin = e.stdin && !e.detach;
        let init_pid = self.procs[0].pid;
        let (container, held) = match stdio::make(e.tty, stdin, Some(init_pid)) {
            Ok(x) => x,
            Err(err) => return fail(Response::error(format!("exec stdio: {err}"))),
        };
        let pid = match rt::exec(&self.id, &self.spec, init_pid, &process, container) {
            Ok(pid) => pid,
            Err(err) => {
                return fail(Response {
                    exit_code: Some(err.exit_code.unwrap_or(126)),
                    ..Response::error(err.message)
                });
            }
        };
        let key = self.next_key;
        self.next_key += 1;
        self.procs.push(Proc::new(
            key,
            Some(e.exec_id),
            pid,
            e.tty,
            stdin,
            true,
            held,
        ));
        let resp = Response {
            pid: Some(pid),
            ..Default::default()
        };
        if e.detach {
            (Some(resp), Mode::Closing)
        } else {
            let sel = Sel {
                proc: key,
                stdin: e.stdin,
                stdout: e.stdout,
                stderr: e.stderr,
            };
            (Some(resp), Mode::Stream(sel))
        }
    }

    // ---- signals and exits ----

    fn on_signals(&mut self) {
        let mut sigs = [0u8; 64];
        let mut chld = false;
        loop {
            match rustix::io::read(&self.sig_r, &mut sigs) {
                Ok(0) | Err(Errno::AGAIN) => break,
                Ok(n) => {
                    for &s in &sigs[..n] {
                        let s = i32::from(s);
                        if s == libc::SIGCHLD {
                            chld = true;
                        } else if self.procs[0].running() {
                            slog!("ignoring signal {s}: the container is running");
                        } else if s == libc::SIGTERM || s == libc::SIGINT {
                            self.shutdown_at.get_or_insert_with(Instant::now);
                        }
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => {
                    slog!("read signal pipe: {e}");
                    break;
                }
            }
        }
        if chld {
            self.reap();
        }
    }

    fn reap(&mut self) {
        loop {
            // wait(), not waitpid(None): the latter is wait4(0), children
            // of our own process group only, and containers have their own.
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let code = status
                        .exit_status()
                        .or_else(|| status.terminating_signal().map(|s| 128 + s))
                        .unwrap_or(255);
                    self.exited(pid.as_raw_nonzero().get(), code);
                }
                Ok(None) => break,
                Err(Errno::INTR) => {}
                Err(Errno::CHILD) => break,
                Err(e) => {
                    slog!("waitpid: {e}");
                    break;
                }
            }
        }
    }

    fn exited(&mut self, pid: i32, code: i32) {
        let Some(pi) = self
            .procs
            .iter()
            .position(|p| p.pid == pid && p.running() && !p.finished)
        else {
            return; // an orphan we reaped as subreaper
        };
        let now = Instant::now();
        let p = &mut self.procs[pi];
        p.exit_code = Some(code);
        p.exited_at = Some(now);
        if pi != 0 {
            return;
        }
        let st = ExitStatus {
            exit_code: code,
            finished_at: rfc3339_nano(SystemTime::now()),
            oom_killed: rt::oom_killed(&self.spec),
        };
        let path = self.bundle.join("exit.json");
        let json = serde_json::to_vec(&st).unwrap_or_default();
        if let Err(e) = write_atomic(&path, &json) {
            slog!("write {}: {e}", path.display());
        }
        slog!(
            "container {} exited with {code}{}",
            self.id,
            if st.oom_killed { " (oom killed)" } else { "" }
        );
        self.exit = Some(st);
    }

    // ---- time-based work ----

    fn housekeeping(&mut self, now: Instant) {
        for pi in 0..self.procs.len() {
            let p = &self.procs[pi];
            if p.finished {
                continue;
            }
            if let Some(at) = p.exited_at
                && (p.outputs_done() || now >= at + DRAIN_GRACE)
            {
                self.finish_proc(pi);
            }
        }
        for c in &mut self.clients {
            if c.pending() > 0 {
                c.flush();
            }
        }
        for c in &mut self.clients {
            let stale = match c.mode {
                Mode::Request => now >= c.since + REQUEST_TIMEOUT,
                Mode::Closing => c.pending() == 0 || now >= c.since + CLOSE_GRACE,
                _ => false,
            };
            if stale {
                c.dead = true;
            }
        }
        let had_clients = !self.clients.is_empty();
        let procs = &mut self.procs;
        self.clients.retain(|c| {
            if !c.dead {
                return true;
            }
            // A client that vanished without half-closing still ends a
            // stdin-once stdin.
            if let Mode::Stream(sel) = c.mode
                && sel.stdin
                && !c.read_eof
                && let Some(p) = procs.iter_mut().find(|p| p.key == sel.proc && !p.finished)
                && p.stdin_once
            {
                p.close_stdin();
            }
            false
        });
        self.procs.retain(|p| p.key == 0 || !p.finished);
        if had_clients {
            self.last_client_at = now;
        }
    }

    /// A process exited and its output is drained (or the grace ran out).
    fn finish_proc(&mut self, pi: usize) {
        // Take what is still buffered (bounded: something the process left
        // behind may still be writing).
        for j in 0..3 {
            for _ in 0..16 {
                if !self.read_output(pi, j) {
                    break;
                }
            }
        }
        let key = self.procs[pi].key;
        let p = &mut self.procs[pi];
        p.finished = true;
        p.out = [None, None];
        p.master = None;
        p.close_stdin_now();
        let (pid, code, exec_id) = (p.pid, p.exit_code.unwrap_or(255), p.exec_id.clone());
        if pi == 0 {
            self.log_finish(Stream::Stdout);
            self.log_finish(Stream::Stderr);
        }
        for c in &mut self.clients {
            if let Mode::Stream(sel) = c.mode
                && sel.proc == key
            {
                c.close_after_flush();
            }
        }
        match exec_id {
            Some(exec_id) => {
                if self.done_execs.len() >= MAX_DONE_EXECS {
                    self.done_execs.pop_front();
                }
                self.done_execs.push_back(DoneExec {
                    exec_id,
                    pid,
                    exit_code: code,
                });
            }
            None => {
                if let Err(e) = rt::delete(&self.spec) {
                    slog!("delete container {}: {e}", self.id);
                }
                self.init_done = true;
                if let Some(st) = &self.exit {
                    let r = Response::from(st);
                    for c in &mut self.clients {
                        if matches!(c.mode, Mode::Waiting) {
                            c.respond(&r);
                            c.close_after_flush();
                            self.wait_answered = true;
                        }
                    }
                }
                self.log = None;
                self.trim_at = Some(Instant::now());
            }
        }
    }

    fn should_exit(&self, now: Instant) -> bool {
        if let Some(at) = self.shutdown_at {
            // Even when told to go, finish the container first (drain its
            // output, delete its cgroup): that takes at most DRAIN_GRACE
            // plus the runtime's delete.
            return self.init_done
                && (self.clients.iter().all(|c| c.pending() == 0) || now >= at + CLOSE_GRACE);
        }
        if !self.init_done || !self.clients.is_empty() || now < self.last_client_at + QUIET {
            return false;
        }
        let exited_at = self.procs[0].exited_at.unwrap_or(now);
        self.wait_answered || now >= exited_at + LINGER
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        for p in &self.procs {
            if let (false, Some(e)) = (p.finished, p.exited_at) {
                at(e + DRAIN_GRACE);
            }
        }
        for c in &self.clients {
            match c.mode {
                Mode::Request => at(c.since + REQUEST_TIMEOUT),
                Mode::Closing => at(c.since + CLOSE_GRACE),
                _ => {}
            }
        }
        if let Some(s) = self.shutdown_at {
            at(s + CLOSE_GRACE);
        }
        if let Some(t) = self.trim_at {
            at(t);
        }
        if self.init_done {
            at(self.last_client_at + QUIET);
            if !self.wait_answered
                && let Some(e) = self.procs[0].exited_at
            {
                at(e + LINGER);
            }
        }
        d
    }

    fn cleanup(&mut self) {
        for c in &mut self.clients {
            c.flush();
        }
        self.clients.clear();
        // berthd may already have started the next shim for this container
        // (a restart) on the same paths: remove only what is still ours.
        if file_id(&self.socket) == Some(self.socket_id) {
            let _ = std::fs::remove_file(&self.socket);
        }
        let pid_file = self.bundle.join("shim.pid");
        let me = std::process::id().to_string();
        if std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == me) {
            let _ = std::fs::remove_file(&pid_file);
        }
        slog!("shim for container {} exits", self.id);
    }
}

fn note_log_result(failing: &mut bool, r: io::Result<()>) {
    match r {
        Ok(()) => *failing = false,
        Err(e) => {
            if !*failing {
                slog!("write container log: {e}");
            }
            *failing = true;
        }
    }
}
