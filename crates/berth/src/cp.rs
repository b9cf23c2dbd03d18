//! `berth cp` and `berth export`, as docker's: the copy logic (which
//! directory to extract to, how to rename the top entry) follows
//! go-archive's `CopyInfo`/`PrepareArchiveCopy`, done on the client.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use berth_format::human_size_with_precision;
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame;
use serde_json::Value;

use crate::client::{Body, Client, DaemonError, body_stream, empty, enc};

#[derive(Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long = "archive")]
    archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    follow_link: bool,
    /// Suppress progress output during copy. Progress output is automatically suppressed if no terminal is attached
    #[arg(short = 'q', long)]
    quiet: bool,
    /// CONTAINER:SRC_PATH or SRC_PATH|-
    source: String,
    /// DEST_PATH|- or CONTAINER:DEST_PATH
    destination: String,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    output: Option<String>,
    container: String,
}

const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;
const GO_MODE_DEVICE: u32 = 1 << 26;
const GO_MODE_IRREGULAR: u32 = 1 << 19;

struct Stat {
    mode: u32,
    link_target: String,
}

fn parse_stat(h: Option<&hyper::header::HeaderValue>) -> Result<Stat> {
    let raw = h.ok_or_else(|| anyhow!("unable to get resource stat from response"))?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(raw.as_bytes())
        .context("unable to decode container path stat header")?;
    let v: Value =
        serde_json::from_slice(&json).context("unable to decode container path stat header")?;
    Ok(Stat {
        mode: v["mode"].as_u64().unwrap_or(0) as u32,
        link_target: v["linkTarget"].as_str().unwrap_or("").to_string(),
    })
}

async fn stat_path(c: &Client, container: &str, path: &str) -> Result<Stat> {
    let resp = c
        .request(
            Method::HEAD,
            &format!("/containers/{}/archive?path={}", enc(container), enc(path)),
            empty(),
            None,
        )
        .await?;
    parse_stat(resp.headers().get("X-Docker-Container-Path-Stat"))
}

// ------------------------------------------------------------ go path helpers

use berth_types::gopath::{base, clean, dir};

fn specifies_current_dir(p: &str) -> bool {
    base(p) == "."
}

fn asserts_directory(p: &str) -> bool {
    p.ends_with('/') || specifies_current_dir(p)
}

fn preserve_trailing(cleaned: &str, original: &str) -> String {
    let mut c = cleaned.to_string();
    if !specifies_current_dir(&c) && specifies_current_dir(original) {
        if !c.ends_with('/') {
            c.push('/');
        }
        c.push('.');
    }
    if !c.ends_with('/') && original.ends_with('/') {
        c.push('/');
    }
    c
}

/// go-archive's `SplitPathDirEntry`.
fn split_dir_entry(p: &str) -> (String, String) {
    let mut c = clean(p);
    if specifies_current_dir(p) {
        c.push_str("/.");
    }
    (dir(&c), base(&c))
}

fn join(a: &str, b: &str) -> String {
    clean(&format!("{a}/{b}"))
}

fn get_rebase_name(path: &str, resolved: &str) -> (String, String) {
    let mut r = resolved.to_string();
    if specifies_current_dir(path) && !specifies_current_dir(&r) {
        r.push_str("/.");
    }
    if path.ends_with('/') && !r.ends_with('/') {
        r.push('/');
    }
    let rebase = if base(path) != base(&r) {
        base(path)
    } else {
        String::new()
    };
    (r, rebase)
}

fn abs_local(p: &str) -> Result<String> {
    let a = if p.starts_with('/') {
        clean(p)
    } else {
        let cwd = std::env::current_dir()?;
        join(&cwd.to_string_lossy(), p)
    };
    Ok(preserve_trailing(&a, p))
}

/// docker's `splitCpArg`.
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') => (Some(c), p),
        _ => (None, arg),
    }
}

#[derive(Clone, Debug, Default)]
struct CopyInfo {
    path: String,
    exists: bool,
    is_dir: bool,
    rebase_name: String,
}

/// go-archive's `PrepareArchiveCopy`: where to extract, and the rename of
/// the top entry (old, new) if any.
fn prepare_archive_copy(
    src: &CopyInfo,
    dst: &CopyInfo,
) -> Result<(String, Option<(String, String)>)> {
    let (dst_dir, dst_base) = split_dir_entry(&dst.path);
    let (_, mut src_base) = split_dir_entry(&src.path);
    if !src.rebase_name.is_empty() {
        src_base = src.rebase_name.clone();
    }
    if dst.exists && dst.is_dir {
        return Ok((dst.path.clone(), None));
    }
    if dst.exists && src.is_dir {
        bail!("cannot copy directory");
    }
    if !dst.exists && !src.is_dir && asserts_directory(&dst.path) {
        bail!("no such directory");
    }
    Ok((dst_dir, Some((src_base, dst_base))))
}

fn rebase(name: &str, old: &str, new: &str) -> String {
    let old = old.trim_end_matches('/');
    let new = new.trim_end_matches('/');
    if old.is_empty() {
        let n = name.trim_start_matches('/');
        return if new.is_empty() {
            n.to_string()
        } else {
            format!("{new}/{n}")
        };
    }
    match name.strip_prefix(old) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{new}{rest}"),
        _ => name.to_string(),
    }
}

// ------------------------------------------------------------ cp

pub async fn cp(c: &Client, a: CpArgs) -> Result<()> {
    if a.source.is_empty() {
        bail!("source can not be empty");
    }
    if a.destination.is_empty() {
        bail!("destination can not be empty");
    }
    let quiet = a.quiet || !std::io::stdout().is_terminal();
    let (src_c, src_p) = split_cp_arg(&a.source);
    let (dst_c, dst_p) = split_cp_arg(&a.destination);
    match (src_c, dst_c) {
        (Some(ctr), None) => from_container(c, ctr, src_p, dst_p, a.follow_link, quiet).await,
        (None, Some(ctr)) => {
            to_container(c, ctr, src_p, dst_p, a.follow_link, a.archive, quiet).await
        }
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
    }
}

/// docker's `ValidateOutputPath`.
fn validate_output_path(p: &str) -> Result<()> {
    let d = dir(p);
    if d != "." && std::fs::metadata(&d).is_err() {
        bail!("invalid output path: directory {d:?} does not exist");
    }
    if let Ok(m) = std::fs::metadata(p) {
        let ft = m.file_type();
        if !ft.is_dir() && !ft.is_file() {
            let what = if ft.is_block_device() || ft.is_char_device() {
                "got a device"
            } else {
                "got an irregular file"
            };
            bail!("invalid output path: {p:?} must be a directory or a regular file: {what}");
        }
    }
    Ok(())
}

async fn from_container(
    c: &Client,
    ctr: &str,
    src: &str,
    dst: &str,
    follow: bool,
    quiet: bool,
) -> Result<()> {
    let dst_path = if dst == "-" {
        dst.to_string()
    } else {
        abs_local(dst)?
    };
    validate_output_path(&dst_path)?;
    let mut src_path = src.to_string();
    let mut rebase_name = String::new();
    if follow
        && let Ok(st) = stat_path(c, ctr, src).await
        && st.mode & GO_MODE_SYMLINK != 0
    {
        let mut target = st.link_target.clone();
        if !target.starts_with('/') {
            let (parent, _) = split_dir_entry(src);
            target = join(&parent, &target);
        }
        let (t, r) = get_rebase_name(src, &target);
        src_path = t;
        rebase_name = r;
    }
    let resp = c
        .request(
            Method::GET,
            &format!("/containers/{}/archive?path={}", enc(ctr), enc(&src_path)),
            empty(),
            None,
        )
        .await?;
    let stat = parse_stat(resp.headers().get("X-Docker-Container-Path-Stat"))?;
    let mut stream = Box::pin(body_stream(resp));
    if dst_path == "-" {
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)?;
        }
        out.flush()?;
        return Ok(());
    }
    let src_info = CopyInfo {
        path: src_path,
        exists: true,
        is_dir: stat.mode & GO_MODE_DIR != 0,
        rebase_name,
    };
    let dst_info = copy_info_destination(&dst_path)?;
    let (dst_dir, mut renames) = prepare_archive_copy(&src_info, &dst_info)?;
    let mut pre: Option<(String, String)> = None;
    if !src_info.rebase_name.is_empty() {
        let (_, sb) = split_dir_entry(&src_info.path);
        pre = Some((sb, src_info.rebase_name.clone()));
    }
    // Rebasing twice (the -L name, then the destination's) is one rename.
    if let (Some((o1, n1)), Some((o2, n2))) = (&pre, &renames)
        && n1 == o2
    {
        renames = Some((o1.clone(), n2.clone()));
        pre = None;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Bytes>>(16);
    let dst_dir2 = dst_dir.clone();
    let worker = std::thread::spawn(move || -> Result<u64> {
        let mut r = ChannelReader {
            rx,
            cur: Bytes::new(),
            total: 0,
        };
        let res = untar_local(&mut r, Path::new(&dst_dir2), pre.as_ref(), renames.as_ref());
        // Drain so the sender never blocks on a failed extraction.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        res.map(|()| r.total)
    });
    while let Some(chunk) = stream.next().await {
        if tx.send(chunk).is_err() {
            break;
        }
    }
    drop(tx);
    let total = worker
        .join()
        .map_err(|_| anyhow!("extraction thread panicked"))??;
    if !quiet {
        eprintln!(
            "Successfully copied {} to {dst_path}",
            human_size_with_precision(total as f64, 3)
        );
    }
    Ok(())
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Result<Bytes>>,
    cur: Bytes,
    total: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.cur = b,
                Ok(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        self.total += n as u64;
        Ok(n)
    }
}

/// go-archive's `CopyInfoDestinationPath` (local symlinks followed).
fn copy_info_destination(p: &str) -> Result<CopyInfo> {
    let mut path = p.to_string();
    let mut n = 0;
    loop {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                n += 1;
                if n > 10 {
                    bail!("too many symlinks in {p}");
                }
                let t = std::fs::read_link(&path)?.to_string_lossy().into_owned();
                path = if t.starts_with('/') {
                    t
                } else {
                    join(&split_dir_entry(&path).0, &t)
                };
            }
            Ok(m) => {
                return Ok(CopyInfo {
                    path,
                    exists: true,
                    is_dir: m.is_dir(),
                    rebase_name: String::new(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (parent, _) = split_dir_entry(&path);
                let m = std::fs::metadata(&parent)
                    .map_err(|e| anyhow!("stat {parent}: {}", go_err(&e)))?;
                if !m.is_dir() {
                    bail!("not a directory");
                }
                return Ok(CopyInfo {
                    path,
                    ..Default::default()
                });
            }
            Err(e) => bail!("lstat {path}: {}", go_err(&e)),
        }
    }
}

/// An I/O error as Go prints it ("no such file or directory").
fn go_err(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Extract a tar from the daemon into `dst_dir`, renaming top entries, as
/// go-archive's `Untar` with NoLchown and NoOverwriteDirNonDir.
fn untar_local(
    r: &mut impl Read,
    dst_dir: &Path,
    pre: Option<&(String, String)>,
    renames: Option<&(String, String)>,
) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    let root =
        std::fs::canonicalize(dst_dir).with_context(|| format!("stat {}", dst_dir.display()))?;
    let dst_display = dst_dir.display().to_string();
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        let mut name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if let Some((o, n)) = pre {
            name = rebase(&name, o, n);
        }
        if let Some((o, n)) = renames {
            name = rebase(&name, o, n);
        }
        let name = clean(name.trim_start_matches('/'));
        if name == "." {
            continue;
        }
        let p = Path::new(&name);
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            bail!("invalid entry name {name:?}");
        }
        let target = root.join(p);
        let parent = target.parent().unwrap_or(&root).to_path_buf();
        std::fs::create_dir_all(&parent)?;
        let real_parent = std::fs::canonicalize(&parent)?;
        if !real_parent.starts_with(&root) {
            bail!("invalid entry name {name:?}: outside of {}", dst_display);
        }
        let target = real_parent.join(target.file_name().unwrap_or_default());
        let is_dir = entry.header().entry_type().is_dir();
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            if m.is_dir() && !is_dir {
                bail!("cannot overwrite directory {name:?} with non-directory {dst_display:?}");
            }
            if !m.is_dir() && is_dir {
                bail!("cannot overwrite non-directory {name:?} with directory {dst_display:?}");
            }
            if !m.is_dir() {
                std::fs::remove_file(&target)?;
            }
        }
        match entry.header().entry_type() {
            tar::EntryType::Char | tar::EntryType::Block => continue,
            tar::EntryType::Link => {
                let l = entry.link_name_bytes().unwrap_or_default();
                let mut l = String::from_utf8_lossy(&l).into_owned();
                if let Some((o, n)) = pre {
                    l = rebase(&l, o, n);
                }
                if let Some((o, n)) = renames {
                    l = rebase(&l, o, n);
                }
                let l = clean(l.trim_start_matches('/'));
                if Path::new(&l)
                    .components()
                    .any(|c| matches!(c, Component::ParentDir))
                {
                    bail!("invalid hardlink target {l:?}");
                }
                std::fs::hard_link(root.join(&l), &target)
                    .with_context(|| format!("link {l} {name}"))?;
                continue;
            }
            _ => {}
        }
        entry
            .unpack(&target)
            .with_context(|| format!("extract {name}"))?;
        if is_dir {
            dirs.push((target, entry.header().mtime().unwrap_or(0)));
        }
    }
    for (d, mtime) in dirs.into_iter().rev() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        if let Ok(f) = std::fs::File::open(&d) {
            let _ = f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t));
        }
    }
    Ok(())
}

async fn to_container(
    c: &Client,
    ctr: &str,
    src: &str,
    dst: &str,
    follow: bool,
    archive: bool,
    quiet: bool,
) -> Result<()> {
    let src_path = if src == "-" {
        src.to_string()
    } else {
        abs_local(src)?
    };
    let mut dst_info = CopyInfo {
        path: dst.to_string(),
        ..Default::default()
    };
    if let Ok(st) = stat_path(c, ctr, dst).await {
        let mut st = Ok(st);
        if let Ok(s) = &st
            && s.mode & GO_MODE_SYMLINK != 0
        {
            let mut target = s.link_target.clone();
            if !target.starts_with('/') {
                target = join(&split_dir_entry(dst).0, &target);
            }
            dst_info.path = target.clone();
            st = stat_path(c, ctr, &target).await;
        }
        if let Ok(s) = st {
            if s.mode & GO_MODE_DEVICE != 0 {
                bail!(
                    "destination \"{ctr}:{dst}\" must be a directory or a regular file: got a device"
                );
            }
            if s.mode & GO_MODE_IRREGULAR != 0 {
                bail!(
                    "destination \"{ctr}:{dst}\" must be a directory or a regular file: got an irregular file"
                );
            }
            dst_info.exists = true;
            dst_info.is_dir = s.mode & GO_MODE_DIR != 0;
        }
    }
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (resolved_dst, body): (String, Body) = if src_path == "-" {
        if !dst_info.is_dir {
            bail!("destination \"{ctr}:{dst}\" must be a directory");
        }
        let stdin = tokio::io::stdin();
        (dst_info.path.clone(), crate::client::reader_body(stdin))
    } else {
        let src_info = copy_info_source(&src_path, follow)?;
        let (dst_dir, renames) = prepare_archive_copy(&src_info, &dst_info)?;
        let (_, src_base) = split_dir_entry(&src_info.path);
        let top = match &renames {
            Some((_, new)) => new.clone(),
            None if !src_info.rebase_name.is_empty() => src_info.rebase_name.clone(),
            None => src_base.clone(),
        };
        let top = if top == "/" { ".".to_string() } else { top };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let path = PathBuf::from(&src_info.path);
        let sent2 = sent.clone();
        std::thread::spawn(move || {
            let w = SenderWriter {
                tx: tx.clone(),
                buf: Vec::new(),
                sent: sent2,
            };
            let res = tar_local(&path, &top, w);
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        let s = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (c.map(Frame::data), rx))
        });
        (dst_dir, BodyExt::boxed(StreamBody::new(s)))
    };
    let mut q = format!(
        "/containers/{}/archive?path={}&noOverwriteDirNonDir=true",
        enc(ctr),
        enc(&resolved_dst)
    );
    if archive {
        q.push_str("&copyUIDGID=true");
    }
    c.request(Method::PUT, &q, body, Some("application/x-tar"))
        .await
        .map_err(|e| match e.downcast::<DaemonError>() {
            Ok(d) => anyhow::Error::new(d),
            Err(e) => e,
        })?;
    if !quiet {
        eprintln!(
            "Successfully copied {} to {ctr}:{}",
            human_size_with_precision(sent.load(std::sync::atomic::Ordering::Relaxed) as f64, 3),
            dst_info.path
        );
    }
    Ok(())
}

/// go-archive's `CopyInfoSourcePath`.
fn copy_info_source(path: &str, follow: bool) -> Result<CopyInfo> {
    let (resolved, rebase_name) = if follow {
        let r = std::fs::canonicalize(path)
            .map_err(|e| anyhow!("lstat {path}: {}", go_err(&e)))?
            .to_string_lossy()
            .into_owned();
        get_rebase_name(path, &r)
    } else {
        let (d, b) = match path.rfind('/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => ("", path),
        };
        let rd = std::fs::canonicalize(if d.is_empty() { "." } else { d })
            .map_err(|e| anyhow!("lstat {d}: {}", go_err(&e)))?
            .to_string_lossy()
            .into_owned();
        let r = format!("{}/{b}", rd.trim_end_matches('/'));
        let rebase = if path.ends_with('/') && base(path) != base(&r) {
            base(path)
        } else {
            String::new()
        };
        (r, rebase)
    };
    let m = std::fs::symlink_metadata(&resolved)
        .map_err(|e| anyhow!("lstat {resolved}: {}", go_err(&e)))?;
    Ok(CopyInfo {
        path: resolved,
        exists: true,
        is_dir: m.is_dir(),
        rebase_name,
    })
}

struct SenderWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Write for SenderWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::take(&mut self.buf));
        self.sent
            .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.tx
            .blocking_send(Ok(b))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "request ended"))
    }
}

/// A tar of the local `path` whose top entry is named `top`.
fn tar_local(path: &Path, top: &str, w: impl Write) -> Result<()> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let m = std::fs::symlink_metadata(path)?;
    if m.is_dir() {
        b.append_dir_all(top, path)?;
    } else {
        b.append_path_with_name(path, top)?;
    }
    let mut w = b.into_inner()?;
    w.flush()?;
    Ok(())
}

// ------------------------------------------------------------ export

pub async fn export(c: &Client, a: ExportArgs) -> Result<()> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let resp = c
        .request(
            Method::GET,
            &format!("/containers/{}/export", enc(&a.container)),
            empty(),
            None,
        )
        .await?;
    let mut stream = Box::pin(body_stream(resp));
    match &a.output {
        Some(path) => {
            let mut f = std::fs::File::create(path)
                .map_err(|e| anyhow!("failed to export container: {e}"))?;
            while let Some(chunk) = stream.next().await {
                f.write_all(&chunk?)?;
            }
            f.sync_all()?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
