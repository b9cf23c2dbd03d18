//! `pull` and `push`, with docker's progress display: on a terminal one
//! line per layer, redrawn in place with its progress bar; otherwise the
//! plain status lines docker prints when its output is not a terminal.
//! [`pull_image`] is what `run`/`create` call when the image is missing.

use std::io::{IsTerminal, Write};

use anyhow::{Result, bail};
use clap::Args;
use futures_util::StreamExt;
use hyper::Method;
use serde_json::Value;

use crate::client::{Client, empty, enc, json_lines};
use crate::registry;

#[derive(Args)]
#[command(override_usage = "berth pull [OPTIONS] NAME[:TAG|@DIGEST]")]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    quiet: bool,
    /// Skip image verification (accepted for compatibility; berth always verifies digests)
    #[arg(long = "disable-content-trust", hide = true, default_value_t = true)]
    disable_content_trust: bool,
    name: String,
}

#[derive(Args)]
#[command(override_usage = "berth push [OPTIONS] NAME[:TAG]")]
pub struct PushArgs {
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Push a platform-specific manifest as a single-platform image to the registry.
    /// Image index won't be pushed, meaning that other manifests, including attestations won't be preserved.
    /// 'os[/arch[/variant]]': Explicit platform (eg. linux/amd64)
    #[arg(long, verbatim_doc_comment)]
    platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    quiet: bool,
    /// Skip image signing (accepted for compatibility)
    #[arg(long = "disable-content-trust", hide = true, default_value_t = true)]
    disable_content_trust: bool,
    name: String,
}

/// Render a JSON message stream as docker's jsonmessage does.
async fn display(
    resp: hyper::Response<hyper::body::Incoming>,
    out: &mut dyn Write,
    tty: bool,
) -> Result<Vec<Value>> {
    let mut msgs = Box::pin(json_lines(resp));
    let mut ids: Vec<String> = Vec::new();
    let mut aux = Vec::new();
    while let Some(m) = msgs.next().await {
        let m = m?;
        if let Some(e) = m.get("error").and_then(|e| e.as_str()) {
            out.flush()?;
            return Err(PushFailed {
                message: e.to_string(),
                aux,
            }
            .into());
        }
        if let Some(a) = m.get("aux") {
            aux.push(a.clone());
            continue;
        }
        let id = m.get("id").and_then(|i| i.as_str()).unwrap_or("");
        let status = m.get("status").and_then(|s| s.as_str()).unwrap_or("");
        let has_progress = m.get("progressDetail").is_some();
        let bar = m
            .get("progress")
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string();
        if let Some(s) = m.get("stream").and_then(|s| s.as_str()) {
            ids.clear();
            write!(out, "{s}")?;
            continue;
        }
        let mut diff = 0;
        if !id.is_empty() && has_progress {
            let line = match ids.iter().position(|i| i == id) {
                Some(l) => l,
                None => {
                    ids.push(id.to_string());
                    if tty {
                        writeln!(out)?;
                    }
                    ids.len() - 1
                }
            };
            diff = ids.len() - line;
            if tty && diff > 0 {
                write!(out, "\x1b[{diff}A")?;
            }
        } else {
            ids.clear();
        }
        if tty && has_progress {
            write!(out, "\x1b[2K\r")?;
        } else if has_progress && !bar.is_empty() {
            continue; // no progress bars when not on a terminal
        }
        if !id.is_empty() {
            write!(out, "{id}: ")?;
        }
        if tty && has_progress {
            if bar.is_empty() {
                write!(out, "{status} \r")?;
            } else {
                write!(out, "{status} {bar}\r")?;
            }
        } else {
            writeln!(out, "{status}")?;
        }
        if tty && diff > 0 {
            write!(out, "\x1b[{diff}B")?;
        }
        out.flush()?;
    }
    Ok(aux)
}

/// Pull `name` (already normalised to carry a tag or digest, or a bare name
/// with `all`), rendering progress to `out`.
async fn do_pull(
    c: &Client,
    rf: &berth_types::Reference,
    all: bool,
    platform: Option<&str>,
    out: &mut dyn Write,
    tty: bool,
) -> Result<()> {
    let tag = match (&rf.digest, &rf.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) if all => String::new(),
        (None, None) => "latest".into(),
    };
    let mut path = format!(
        "/images/create?fromImage={}&tag={}",
        enc(&rf.name),
        enc(&tag)
    );
    if let Some(p) = platform.filter(|p| !p.is_empty()) {
        path.push_str(&format!("&platform={}", enc(p)));
    }
    let auth = registry::header_for(rf.domain())?;
    let resp = c
        .request_with_headers(Method::POST, &path, empty(), &[("X-Registry-Auth", &auth)])
        .await?;
    display(resp, out, tty).await?;
    Ok(())
}

pub async fn pull(c: &Client, a: PullArgs) -> Result<()> {
    let _ = a.disable_content_trust;
    let mut rf = berth_types::Reference::parse(&a.name)?;
    if a.all_tags && (rf.tag.is_some() || rf.digest.is_some()) {
        bail!("tag can't be used with --all-tags/-a");
    }
    let stdout = std::io::stdout();
    if !a.all_tags && rf.tag.is_none() && rf.digest.is_none() {
        rf.tag = Some("latest".into());
        if !a.quiet {
            println!("Using default tag: latest");
        }
    }
    let tty = stdout.is_terminal();
    if a.quiet {
        do_pull(
            c,
            &rf,
            a.all_tags,
            a.platform.as_deref(),
            &mut std::io::sink(),
            false,
        )
        .await?;
    } else {
        let mut out = stdout.lock();
        do_pull(c, &rf, a.all_tags, a.platform.as_deref(), &mut out, tty).await?;
    }
    println!("{rf}");
    Ok(())
}

/// docker's `--pull` policy for `run`/`create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull when the image is not here (the default)
    Missing,
    /// Pull before creating, always
    Always,
    /// Never pull
    Never,
}

/// Pull an image for `run`/`create`, progress on stderr as docker shows it.
pub async fn pull_image(c: &Client, image: &str, platform: Option<&str>) -> Result<()> {
    let rf = berth_types::Reference::parse(image)?.with_default_tag();
    let stderr = std::io::stderr();
    let tty = stderr.is_terminal();
    let mut out = stderr.lock();
    do_pull(c, &rf, false, platform, &mut out, tty).await
}

/// `create` as docker's run/create do it: with `Missing`, try `create`; on
/// the daemon's 404 "No such image", print "Unable to find image '…'
/// locally", pull (progress on stderr) and `create` once more. `Always`
/// pulls first; `Never` only creates.
pub async fn create_or_pull<T, F, Fut>(
    c: &Client,
    image: &str,
    platform: Option<&str>,
    policy: PullPolicy,
    create: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if policy == PullPolicy::Always {
        pull_image(c, image, platform).await?;
        return create().await;
    }
    match create().await {
        Err(e)
            if policy == PullPolicy::Missing
                && crate::client::daemon_status(&e) == Some(hyper::StatusCode::NOT_FOUND)
                && e.to_string().contains("No such image") =>
        {
            let shown = berth_types::Reference::parse(image)
                .map(|r| r.with_default_tag().familiar())
                .unwrap_or_else(|_| image.to_string());
            eprintln!("Unable to find image '{shown}' locally");
            pull_image(c, image, platform).await?;
            create().await
        }
        r => r,
    }
}

pub async fn push(c: &Client, a: PushArgs) -> Result<()> {
    let _ = a.disable_content_trust;
    let mut rf = berth_types::Reference::parse(&a.name)?;
    if rf.digest.is_some() {
        bail!("invalid reference format: push by digest is not supported");
    }
    if a.all_tags && rf.tag.is_some() {
        bail!("tag can't be used with --all-tags/-a");
    }
    if !a.all_tags && rf.tag.is_none() {
        rf.tag = Some("latest".into());
        if !a.quiet {
            println!("Using default tag: latest");
        }
    }
    let tag = rf.tag.clone().unwrap_or_default();
    let mut path = format!("/images/{}/push?tag={}", rf.familiar_name(), enc(&tag));
    if let Some(p) = a.platform.as_deref().filter(|p| !p.is_empty()) {
        path.push_str(&format!("&platform={}", enc(&oci_platform(p)?)));
        print_note(&[
            "Using --platform pushes only the specified platform manifest of a multi-platform image index.",
            "Other components, like attestations, will not be included.",
            "To push the complete multi-platform image, remove the --platform flag.",
        ]);
    }
    let auth = registry::header_for(rf.domain())?;
    let resp = c
        .request_with_headers(Method::POST, &path, empty(), &[("X-Registry-Auth", &auth)])
        .await?;
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let res = if a.quiet {
        display(resp, &mut std::io::sink(), false).await
    } else {
        let mut out = stdout.lock();
        display(resp, &mut out, tty).await
    };
    // docker's notes for the push's aux messages, after the output.
    let aux = match &res {
        Ok(aux) => aux.clone(),
        Err(e) => e
            .downcast_ref::<PushFailed>()
            .map(|f| f.aux.clone())
            .unwrap_or_default(),
    };
    for m in &aux {
        if m["manifestPushedInsteadOfIndex"] == true {
            print_note(&[
                "Not all multiplatform-content is present and only the available single-platform image was pushed",
                &format!(
                    "{} -> {}",
                    m["originalIndex"]["digest"].as_str().unwrap_or(""),
                    m["selectedManifest"]["digest"].as_str().unwrap_or("")
                ),
            ]);
        }
        if m["contentMissing"] == true {
            print_note(&[
                "You're trying to push a manifest list/index which references multiple platform specific manifests, but not all of them are available locally",
                "or available to the remote repository.",
                "",
                "Make sure you have all the referenced content and try again.",
                "",
                "You can also push only a single platform specific manifest directly by specifying the platform you want to push with the --platform flag.",
            ]);
        }
    }
    res?;
    if a.quiet {
        println!("{rf}");
    }
    Ok(())
}

/// An error message of a push stream, with the `aux` messages before it.
#[derive(Debug)]
struct PushFailed {
    message: String,
    aux: Vec<Value>,
}

impl std::fmt::Display for PushFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PushFailed {}

/// docker's note: ` Info -> ` and the lines under it.
fn print_note(lines: &[&str]) {
    let header = " Info -> ";
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 && !l.is_empty() {
            out.push_str(&" ".repeat(header.len()));
        } else if i == 0 {
            out.push_str(header);
        }
        out.push_str(l);
        out.push('\n');
    }
    println!("{out}");
}

/// `os[/arch[/variant]]` as the JSON OCI platform the API takes.
fn oci_platform(p: &str) -> Result<String> {
    let parts: Vec<&str> = p.split('/').collect();
    if parts.len() > 3 || parts.iter().any(|x| x.is_empty()) {
        bail!("\"{p}\": unknown operating system or architecture: invalid argument");
    }
    let mut v = serde_json::json!({"os": parts[0].to_ascii_lowercase()});
    if let Some(a) = parts.get(1) {
        v["architecture"] = serde_json::json!(a.to_ascii_lowercase());
    }
    if let Some(x) = parts.get(2) {
        v["variant"] = serde_json::json!(x.to_ascii_lowercase());
    }
    Ok(v.to_string())
}
