//! `berth build` and `berth builder prune`: the context directory is sent
//! as a tar (what `.dockerignore` excludes left out, as the docker CLI
//! does) to `POST /build`; the answer is Docker's JSON stream, printed as
//! is when stdout is not a terminal and as a compact live view when it is.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_dockerfile::dockerignore::Matcher;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use hyper::Method;
use serde_json::Value;

use crate::Exit;
use crate::client::{Client, enc, json_lines, reader_body};

#[derive(Args)]
pub struct BuildArgs {
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile")
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pull: bool,
    /// Suppress the build output and print image ID on success
    #[arg(short, long)]
    quiet: bool,
    /// Set metadata for an image
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Set the networking mode for the RUN instructions during build
    #[arg(long, default_value = "default")]
    network: String,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    platform: Option<String>,
    /// Write the image ID to the file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Remove intermediate containers after a successful build
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    rm: bool,
    /// Always remove intermediate containers
    #[arg(long = "force-rm")]
    force_rm: bool,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Images to consider as cache sources
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// PATH (a directory), or "-" to read a tar or a Dockerfile from stdin
    context: String,
}

#[derive(Subcommand)]
#[command(defer = true)]
pub enum BuilderCmd {
    /// Remove build cache
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused build cache, not just dangling ones
    #[arg(short, long)]
    all: bool,
    /// Provide filter values (e.g. "until=24h")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Amount of disk space to keep for cache
    #[arg(long = "keep-storage")]
    keep_storage: Option<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

pub async fn builder(c: &Client, cmd: BuilderCmd) -> Result<()> {
    match cmd {
        BuilderCmd::Prune(a) => prune(c, a).await,
    }
}

async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    let warning = if a.all {
        "WARNING! This will remove all build cache."
    } else {
        "WARNING! This will remove all dangling build cache."
    };
    if !a.force && !crate::images::confirm(warning)? {
        return Ok(());
    }
    let mut q = vec![format!("all={}", a.all as u8)];
    if !a.filter.is_empty() {
        q.push(format!(
            "filters={}",
            enc(&crate::images::filters_json(&a.filter)?)
        ));
    }
    if let Some(k) = &a.keep_storage {
        q.push(format!("keep-storage={}", enc(k)));
    }
    let report: Value = c
        .send_json(Method::POST, &format!("/build/prune?{}", q.join("&")))
        .await?;
    if let Some(items) = report["CachesDeleted"].as_array().filter(|d| !d.is_empty()) {
        println!("Deleted build cache objects:");
        for i in items {
            println!("{}", i.as_str().unwrap_or_default());
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        berth_format::human_size(report["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(())
}

/// Write `dir` as a tar to `w`, leaving out what `.dockerignore` excludes
/// (but never the Dockerfile or `.dockerignore` themselves), owners as
/// root, as the docker CLI sends it.
fn write_context(
    dir: &Path,
    keep: &[String],
    extra: Option<(&str, &[u8])>,
    w: impl Write,
) -> Result<()> {
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(t) => Matcher::new(&t).map_err(|e| anyhow::anyhow!("invalid .dockerignore: {e:?}"))?,
        Err(_) => Matcher::new("").expect("empty matcher"),
    };
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    walk(&mut b, dir, Path::new(""), &ignore, keep)?;
    if let Some((name, data)) = extra {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, data)?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    ignore: &Matcher,
    keep: &[String],
) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        let rs = r.to_string_lossy().to_string();
        let ft = e.file_type()?;
        let kept = keep.iter().any(|k| k == &rs);
        if !kept && ignore.excluded(&rs) {
            if ft.is_dir() && ignore.may_reinclude_under(&rs) {
                walk(b, root, &r, ignore, keep)?;
            }
            continue;
        }
        let meta = std::fs::symlink_metadata(e.path())?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        h.set_uid(0);
        h.set_gid(0);
        if ft.is_dir() {
            h.set_size(0);
            b.append_data(&mut h, format!("{rs}/"), std::io::empty())?;
            walk(b, root, &r, ignore, keep)?;
        } else if ft.is_symlink() {
            h.set_size(0);
            b.append_link(&mut h, &rs, std::fs::read_link(e.path())?)?;
        } else if ft.is_file() {
            let f = std::fs::File::open(e.path())?;
            b.append_data(&mut h, &rs, f)?;
        }
    }
    Ok(())
}

fn looks_like_tar(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 262 && &head[257..262] == b"ustar")
}

pub async fn build(c: &Client, a: BuildArgs) -> Result<()> {
    let mut q: Vec<String> = Vec::new();
    for t in &a.tags {
        berth_types::Reference::parse(t).map_err(|_| {
            anyhow::anyhow!(
                "invalid argument {t:?} for \"-t, --tag\" flag: invalid reference format"
            )
        })?;
        q.push(format!("t={}", enc(t)));
    }
    let mut args: BTreeMap<String, Option<String>> = BTreeMap::new();
    for ba in &a.build_args {
        match ba.split_once('=') {
            Some((k, v)) => args.insert(k.to_string(), Some(v.to_string())),
            // `--build-arg NAME` takes the value from the environment.
            None => args.insert(ba.clone(), std::env::var(ba).ok()),
        };
    }
    if !args.is_empty() {
        q.push(format!("buildargs={}", enc(&serde_json::to_string(&args)?)));
    }
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    if !labels.is_empty() {
        q.push(format!("labels={}", enc(&serde_json::to_string(&labels)?)));
    }
    if let Some(t) = &a.target {
        q.push(format!("target={}", enc(t)));
    }
    if let Some(p) = &a.platform {
        q.push(format!("platform={}", enc(p)));
    }
    if a.no_cache {
        q.push("nocache=1".into());
    }
    if a.pull {
        q.push("pull=1".into());
    }
    if a.quiet {
        q.push("q=1".into());
    }
    q.push(format!("rm={}", a.rm as u8));
    if a.force_rm {
        q.push("forcerm=1".into());
    }
    q.push(format!("networkmode={}", enc(&a.network)));
    if !a.add_host.is_empty() {
        q.push(format!("extrahosts={}", enc(&a.add_host.join(","))));
    }
    if !a.cache_from.is_empty() {
        q.push(format!(
            "cachefrom={}",
            enc(&serde_json::to_string(&a.cache_from)?)
        ));
    }

    // The context: a directory, or stdin (a tar, or just a Dockerfile).
    let (tx, rx) = tokio::io::duplex(256 << 10);
    let writer = tokio_util::io::SyncIoBridge::new(tx);
    let task: tokio::task::JoinHandle<Result<()>> = if a.context == "-" {
        let mut stdin = std::io::stdin().lock();
        let mut head = Vec::new();
        (&mut stdin).take(512).read_to_end(&mut head)?;
        drop(stdin);
        if looks_like_tar(&head) {
            if let Some(f) = &a.file {
                q.push(format!("dockerfile={}", enc(f)));
            }
            tokio::task::spawn_blocking(move || {
                let mut w = writer;
                w.write_all(&head)?;
                std::io::copy(&mut std::io::stdin().lock(), &mut w)?;
                w.shutdown()?;
                Ok(())
            })
        } else {
            let mut text = head;
            std::io::stdin().lock().read_to_end(&mut text)?;
            tokio::task::spawn_blocking(move || {
                let mut b = tar::Builder::new(writer);
                let mut h = tar::Header::new_gnu();
                h.set_size(text.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, "Dockerfile", text.as_slice())?;
                let mut w = b.into_inner()?;
                w.shutdown()?;
                Ok(())
            })
        }
    } else {
        let dir = PathBuf::from(&a.context);
        if !dir.is_dir() {
            bail!("unable to prepare context: path {:?} not found", a.context);
        }
        // -f: inside the context it is named by its relative path; outside
        // (or `-f -`) it travels as an extra file, as the docker CLI does.
        let (df_name, extra): (String, Option<Vec<u8>>) = match a.file.as_deref() {
            None => ("Dockerfile".into(), None),
            Some("-") => {
                let mut text = Vec::new();
                std::io::stdin().lock().read_to_end(&mut text)?;
                (
                    format!(".dockerfile.{:012x}", rand_u64() & 0xffff_ffff_ffff),
                    Some(text),
                )
            }
            Some(f) => {
                let p = Path::new(f);
                let abs_dir = std::fs::canonicalize(&dir)?;
                let abs = std::fs::canonicalize(p)
                    .with_context(|| format!("unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {f}: no such file or directory"))?;
                match abs.strip_prefix(&abs_dir) {
                    Ok(rel) => (rel.to_string_lossy().to_string(), None),
                    Err(_) => (
                        format!(".dockerfile.{:012x}", rand_u64() & 0xffff_ffff_ffff),
                        Some(std::fs::read(&abs)?),
                    ),
                }
            }
        };
        q.push(format!("dockerfile={}", enc(&df_name)));
        let keep = vec![df_name.clone(), ".dockerignore".to_string()];
        tokio::task::spawn_blocking(move || {
            let mut w = writer;
            write_context(
                &dir,
                &keep,
                extra.as_deref().map(|d| (df_name.as_str(), d)),
                &mut w,
            )?;
            w.shutdown()?;
            Ok(())
        })
    };
    let resp = c
        .request(
            Method::POST,
            &format!("/build?{}", q.join("&")),
            reader_body(rx),
            Some("application/x-tar"),
        )
        .await;
    let sent = task.await?;
    let resp = resp?;
    sent?;
    let tty = std::io::stdout().is_terminal() && !a.quiet;
    let mut view = View::new(tty);
    let mut msgs = Box::pin(json_lines(resp));
    let mut image_id: Option<String> = None;
    let mut failure: Option<(String, i64)> = None;
    while let Some(m) = msgs.next().await {
        let m = m?;
        if let Some(e) = m.get("error").and_then(|e| e.as_str()) {
            let code = m["errorDetail"]["code"]
                .as_i64()
                .filter(|c| *c != 0)
                .unwrap_or(1);
            failure = Some((e.to_string(), code));
            break;
        }
        if let Some(id) = m["aux"]["ID"].as_str() {
            image_id = Some(id.to_string());
            continue;
        }
        if a.quiet {
            // The daemon answers `-q` with the image ID as a stream line.
            if let Some(s) = m.get("stream").and_then(|s| s.as_str())
                && s.starts_with("sha256:")
            {
                image_id = Some(s.trim().to_string());
            }
            continue;
        }
        if let Some(s) = m.get("stream").and_then(|s| s.as_str()) {
            view.stream(s)?;
        } else if let Some(st) = m.get("status").and_then(|s| s.as_str()) {
            let line = match m.get("id").and_then(|i| i.as_str()) {
                Some(id) => format!("{id}: {st}\n"),
                None => format!("{st}\n"),
            };
            view.stream(&line)?;
        }
    }
    view.finish(failure.is_none())?;
    if let Some((e, code)) = failure {
        eprintln!("{e}");
        return Err(Exit(code.clamp(1, 255) as u8).into());
    }
    if let (Some(path), Some(id)) = (&a.iidfile, &image_id) {
        std::fs::write(path, id)
            .with_context(|| format!("write image ID to {}", path.display()))?;
    }
    if a.quiet
        && let Some(id) = &image_id
    {
        println!("{id}");
    }
    Ok(())
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u64::from_le_bytes(b)
}

/// How the stream is shown: as is, or (on a terminal) one line per step
/// with its outcome and time, the output of a running step dimmed.
struct View {
    tty: bool,
    out: std::io::Stdout,
    /// The step being run: its line and when it started.
    current: Option<(String, Instant, bool)>,
    pending: String,
}

impl View {
    fn new(tty: bool) -> View {
        View {
            tty,
            out: std::io::stdout(),
            current: None,
            pending: String::new(),
        }
    }

    fn stream(&mut self, s: &str) -> Result<()> {
        if !self.tty {
            let mut o = self.out.lock();
            o.write_all(s.as_bytes())?;
            return Ok(o.flush()?);
        }
        self.pending.push_str(s);
        while let Some(i) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=i).collect();
            self.line(line.trim_end_matches('\n'))?;
        }
        Ok(())
    }

    fn end_step(&mut self, ok: bool) -> Result<()> {
        if let Some((step, t, cached)) = self.current.take() {
            let mut o = self.out.lock();
            let status = if !ok {
                "\x1b[31mFAILED\x1b[0m".to_string()
            } else if cached {
                "\x1b[36mCACHED\x1b[0m".to_string()
            } else {
                format!("\x1b[32mDONE\x1b[0m {:.1}s", t.elapsed().as_secs_f64())
            };
            writeln!(o, "\r\x1b[2K\x1b[1m{step}\x1b[0m {status}")?;
            o.flush()?;
        }
        Ok(())
    }

    fn line(&mut self, l: &str) -> Result<()> {
        if let Some(rest) = l.strip_prefix("Step ") {
            self.end_step(true)?;
            let (n, text) = rest.split_once(" : ").unwrap_or((rest, ""));
            let step = format!("[{n}] {text}");
            let mut o = self.out.lock();
            write!(o, "\x1b[1m{step}\x1b[0m ...")?;
            o.flush()?;
            self.current = Some((step, Instant::now(), false));
            return Ok(());
        }
        if l == " ---> Using cache" {
            if let Some(c) = &mut self.current {
                c.2 = true;
            }
            return Ok(());
        }
        if l.starts_with(" ---> ") || l.starts_with("Removing intermediate container") {
            return Ok(());
        }
        if l.starts_with("Successfully ")
            || l.starts_with("[Warning]")
            || l.starts_with("[WARNING]")
        {
            self.end_step(true)?;
            let mut o = self.out.lock();
            writeln!(o, "{l}")?;
            return Ok(o.flush()?);
        }
        // A running step's output, dimmed, under its step line.
        let mut o = self.out.lock();
        writeln!(o, "\r\x1b[2K\x1b[2m  {l}\x1b[0m")?;
        if let Some((step, _, _)) = &self.current {
            write!(o, "\x1b[1m{step}\x1b[0m ...")?;
        }
        Ok(o.flush()?)
    }

    fn finish(&mut self, ok: bool) -> Result<()> {
        if self.tty {
            if !self.pending.is_empty() {
                let p = std::mem::take(&mut self.pending);
                self.line(&p)?;
            }
            self.end_step(ok)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_tar_honours_dockerignore_but_keeps_the_dockerfile() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            d.path().join(".dockerignore"),
            "*.log\nDockerfile\nsecret/\n!secret/keep\n",
        )
        .unwrap();
        std::fs::write(d.path().join("a.log"), "x").unwrap();
        std::fs::write(d.path().join("b.txt"), "x").unwrap();
        std::fs::create_dir(d.path().join("secret")).unwrap();
        std::fs::write(d.path().join("secret/key"), "x").unwrap();
        std::fs::write(d.path().join("secret/keep"), "x").unwrap();
        let mut out = Vec::new();
        write_context(
            d.path(),
            &["Dockerfile".into(), ".dockerignore".into()],
            None,
            &mut out,
        )
        .unwrap();
        let mut names: Vec<String> = tar::Archive::new(out.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".dockerignore", "Dockerfile", "b.txt", "secret/keep"]
        );
    }
}
