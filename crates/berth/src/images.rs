//! Image commands: images/image ls, inspect, history, tag, rmi, save, load,
//! import, image prune.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use hyper::Method;
use serde_json::{Value, json};

use crate::Exit;
use crate::client::{Client, body_stream, empty, enc, json_lines, reader_body};
use berth_format::{self as format, created_at, human_since, human_size_with_precision};

#[derive(Subcommand)]
#[command(defer = true)]
pub enum ImageCmd {
    /// List images
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Display detailed information on one or more images
    Inspect(ImageInspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Save one or more images to a tar archive
    Save(SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// Remove unused images
    Prune(PruneArgs),
}

pub async fn image(c: &Client, cmd: ImageCmd) -> Result<()> {
    match cmd {
        ImageCmd::Ls(a) => list(c, a).await,
        ImageCmd::Inspect(a) => inspect_images(c, &a.names, a.format.as_deref()).await,
        ImageCmd::History(a) => history(c, a).await,
        ImageCmd::Tag(a) => tag(c, a).await,
        ImageCmd::Rm(a) => rmi(c, a).await,
        ImageCmd::Save(a) => save(c, a).await,
        ImageCmd::Load(a) => load(c, a).await,
        ImageCmd::Import(a) => import(c, a).await,
        ImageCmd::Prune(a) => prune(c, a).await,
    }
}

#[derive(Args)]
pub struct ListArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short, long)]
    all: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// [REPOSITORY[:TAG]]
    reference: Option<String>,
}

/// `-f key=value` flags to the API's filters JSON.
pub fn filters_json(flags: &[String]) -> Result<String> {
    let mut m: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for f in flags {
        let (k, v) = f
            .split_once('=')
            .context("bad format of filter (expected name=value)")?;
        m.entry(k.trim().to_lowercase())
            .or_default()
            .insert(v.to_string(), true);
    }
    Ok(serde_json::to_string(&m)?)
}

/// `POST <endpoint>?filters=…` for a `prune` command; prints the names
/// the report lists under `key` after a `title:` line, as docker does, and
/// returns the report and whether anything was deleted.
pub async fn prune_request(
    c: &Client,
    endpoint: &str,
    filters: &[String],
    key: &str,
    title: &str,
) -> Result<(Value, bool)> {
    let mut path = endpoint.to_string();
    if !filters.is_empty() {
        path.push_str(&format!("?filters={}", enc(&filters_json(filters)?)));
    }
    let report: Value = c.send_json(Method::POST, &path).await?;
    let deleted = report[key].as_array().filter(|d| !d.is_empty());
    if let Some(items) = deleted {
        println!("{title}:");
        for i in items {
            println!("{}", i.as_str().unwrap_or_default());
        }
    }
    let any = deleted.is_some();
    Ok((report, any))
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        return id.to_string();
    }
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex[..hex.len().min(12)].to_string()
}

pub async fn list(c: &Client, a: ListArgs) -> Result<()> {
    let mut filters = a.filter.clone();
    if let Some(r) = &a.reference {
        filters.push(format!("reference={r}"));
    }
    let mut path = format!("/images/json?all={}", a.all as u8);
    if !filters.is_empty() {
        path.push_str(&format!("&filters={}", enc(&filters_json(&filters)?)));
    }
    if a.digests {
        path.push_str("&digests=1");
    }
    let images: Vec<Value> = c.get_json(&path).await?;
    let fmt = match (&a.format, a.quiet) {
        (_, true) => "{{.ID}}".to_string(),
        (Some(f), false) if !f.is_empty() && f != "table" => f.clone(),
        _ if a.digests => {
            "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                .into()
        }
        _ => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into(),
    };
    let mut rows = Vec::new();
    for img in &images {
        let id = short_id(img["Id"].as_str().unwrap_or(""), a.no_trunc);
        let created = img["Created"].as_i64().unwrap_or(0);
        let size = img["Size"].as_i64().unwrap_or(0) as f64;
        let digests: Vec<&str> = img["RepoDigests"]
            .as_array()
            .map(|v| v.iter().filter_map(|d| d.as_str()).collect())
            .unwrap_or_default();
        let row = |repo: &str, tag: &str, digest: &str| {
            json!({
                "Containers": match img["Containers"].as_i64() { Some(n) if n >= 0 => n.to_string(), _ => "N/A".into() },
                "CreatedAt": created_at(created),
                "CreatedSince": human_since(created),
                "Digest": digest,
                "ID": id,
                "Repository": repo,
                "SharedSize": match img["SharedSize"].as_i64() { Some(n) if n >= 0 => human_size_with_precision(n as f64, 3), _ => "N/A".into() },
                "Size": human_size_with_precision(size, 3),
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size_with_precision(size, 4),
            })
        };
        let tags: Vec<&str> = img["RepoTags"]
            .as_array()
            .map(|v| v.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        if tags.is_empty() {
            let digest = digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map(|(_, d)| d)
                .unwrap_or("<none>");
            rows.push(row("<none>", "<none>", digest));
        }
        for t in tags {
            let (repo, tag) = t
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .unwrap_or((t, "<none>"));
            let digest = digests
                .iter()
                .find_map(|d| {
                    d.split_once('@')
                        .filter(|(r, _)| *r == repo)
                        .map(|(_, d)| d)
                })
                .unwrap_or("<none>");
            rows.push(row(repo, tag, digest));
        }
    }
    let header = json!({
        "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
        "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
        "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
    });
    let out = format::render_list(&fmt, &header, &rows)
        .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
    print!("{out}");
    Ok(())
}

#[derive(Args)]
pub struct ImageInspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    names: Vec<String>,
}

/// Print inspect output as docker does: the JSON array, or one template line
/// per object; missing objects are reported after, with exit status 1.
async fn inspect_images(c: &Client, names: &[String], fmt: Option<&str>) -> Result<()> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for n in names {
        match c.get_value(&format!("/images/{}/json", path_name(n))).await {
            Ok(v) => items.push(v),
            Err(e) => match e.downcast_ref::<crate::client::DaemonError>() {
                Some(d) if d.status == hyper::StatusCode::NOT_FOUND => errors.push(d.to_string()),
                _ => return Err(e),
            },
        }
    }
    // Templates see docker's typed image (the Config of an OCI image config,
    // empty fields omitted); the plain JSON output is the daemon's as sent.
    if fmt.is_some_and(|f| !f.is_empty() && f != "json") {
        for it in &mut items {
            if let Some(cfg) = it.get_mut("Config").and_then(|c| c.as_object_mut()) {
                const OCI: &[&str] = &[
                    "User",
                    "ExposedPorts",
                    "Env",
                    "Entrypoint",
                    "Cmd",
                    "Volumes",
                    "WorkingDir",
                    "Labels",
                    "StopSignal",
                    "ArgsEscaped",
                    "Healthcheck",
                    "OnBuild",
                    "Shell",
                ];
                cfg.retain(|k, v| OCI.contains(&k.as_str()) && !is_empty_json(v));
            }
        }
    }
    print_inspect(&items, &errors, fmt)
}

/// Print inspect output as docker does: the JSON array or one template line
/// per object, then the errors; exit status 64 for a template that does not
/// parse, 1 when any object was missing or failed the template.
pub(crate) fn print_inspect(items: &[Value], errors: &[String], fmt: Option<&str>) -> Result<()> {
    let (out, exec_errors) = match format::render_inspect(fmt.unwrap_or(""), items) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("template parsing error: {e}");
            return Err(Exit(64).into());
        }
    };
    print!("{out}");
    for e in &exec_errors {
        eprintln!("template parsing error: {e}");
    }
    for e in errors {
        eprintln!("{e}");
    }
    if errors.is_empty() && exec_errors.is_empty() {
        Ok(())
    } else {
        Err(Exit(1).into())
    }
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

/// Image names go into the path as they are (docker's router takes slashes).
fn path_name(n: &str) -> String {
    n.split('/').map(enc).collect::<Vec<_>>().join("/")
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    human: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    image: String,
}

pub async fn history(c: &Client, a: HistoryArgs) -> Result<()> {
    let items: Vec<Value> = c
        .get_json(&format!("/images/{}/history", path_name(&a.image)))
        .await?;
    let fmt = match (&a.format, a.quiet) {
        (_, true) => "{{.ID}}".to_string(),
        (Some(f), false) if !f.is_empty() && f != "table" => f.clone(),
        _ if a.human => {
            "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into()
        }
        _ => "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into(),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|h| {
            let id = h["Id"].as_str().unwrap_or("");
            let id = if id.starts_with("sha256:") { short_id(id, a.no_trunc) } else { id.to_string() };
            let created = h["Created"].as_i64().unwrap_or(0);
            let mut by = h["CreatedBy"].as_str().unwrap_or("").replace('\t', " ");
            if !a.no_trunc && by.chars().count() > 45 {
                by = by.chars().take(44).collect::<String>() + "…";
            }
            let size = h["Size"].as_i64().unwrap_or(0);
            json!({
                "ID": id,
                "CreatedSince": human_since(created),
                "CreatedAt": chrono::DateTime::from_timestamp(created, 0)
                    .map(|t| t.with_timezone(&chrono::Local).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                "CreatedBy": by,
                "Size": if a.human { human_size_with_precision(size as f64, 3) } else { size.to_string() },
                "Comment": h["Comment"].as_str().unwrap_or(""),
            })
        })
        .collect();
    let header = json!({"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"});
    print!(
        "{}",
        format::render_list(&fmt, &header, &rows)
            .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?
    );
    Ok(())
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub async fn tag(c: &Client, a: TagArgs) -> Result<()> {
    let rf = berth_types::Reference::parse(&a.target)?;
    if rf.digest.is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    let mut q = format!("repo={}", enc(&rf.familiar_name()));
    if let Some(t) = &rf.tag {
        q.push_str(&format!("&tag={}", enc(t)));
    }
    c.request(
        Method::POST,
        &format!("/images/{}/tag?{q}", path_name(&a.source)),
        empty(),
        None,
    )
    .await?;
    Ok(())
}

#[derive(Args)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short, long)]
    force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    no_prune: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

fn print_delete_items(items: &[Value], lower: bool) {
    for i in items {
        if let Some(u) = i["Untagged"].as_str() {
            println!("{}: {u}", if lower { "untagged" } else { "Untagged" });
        }
        if let Some(d) = i["Deleted"].as_str() {
            println!("{}: {d}", if lower { "deleted" } else { "Deleted" });
        }
    }
}

pub async fn rmi(c: &Client, a: RmiArgs) -> Result<()> {
    let mut failed = false;
    for img in &a.images {
        let path = format!(
            "/images/{}?force={}&noprune={}",
            path_name(img),
            a.force as u8,
            a.no_prune as u8
        );
        match c.send_json::<Vec<Value>>(Method::DELETE, &path).await {
            Ok(items) => print_delete_items(&items, false),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed { Err(Exit(1).into()) } else { Ok(()) }
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    output: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn save(c: &Client, a: SaveArgs) -> Result<()> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let q: Vec<String> = a
        .images
        .iter()
        .map(|i| format!("names={}", enc(i)))
        .collect();
    let resp = c
        .request(
            Method::GET,
            &format!("/images/get?{}", q.join("&")),
            empty(),
            None,
        )
        .await?;
    let mut stream = Box::pin(body_stream(resp));
    match &a.output {
        Some(path) => {
            // Write next to the target and rename, so a failed save leaves no partial file.
            let target = std::path::Path::new(path);
            let tmp = target.with_file_name(format!(
                ".{}.berth-tmp",
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("save")
            ));
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("failed to save image: create {}", tmp.display()))?;
            let res: Result<()> = async {
                while let Some(chunk) = stream.next().await {
                    f.write_all(&chunk?)?;
                }
                f.sync_all()?;
                Ok(())
            }
            .await;
            match res {
                Ok(()) => std::fs::rename(&tmp, target)
                    .with_context(|| format!("failed to save image: rename to {path}"))?,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.context("failed to save image"));
                }
            }
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

#[derive(Args)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short, long)]
    input: Option<String>,
    /// Suppress the load output
    #[arg(short, long)]
    quiet: bool,
}

/// Print a JSON message stream as docker's jsonmessage does (non-terminal form).
async fn print_messages(resp: hyper::Response<hyper::body::Incoming>, quiet: bool) -> Result<()> {
    let mut msgs = Box::pin(json_lines(resp));
    let mut out = std::io::stdout().lock();
    while let Some(m) = msgs.next().await {
        let m = m?;
        if let Some(e) = m.get("error").and_then(|e| e.as_str()) {
            bail!("{e}");
        }
        if let Some(s) = m.get("stream").and_then(|s| s.as_str()) {
            write!(out, "{s}")?;
        } else if !quiet && let Some(st) = m.get("status").and_then(|s| s.as_str()) {
            match (
                m.get("id").and_then(|i| i.as_str()),
                m.get("progress").and_then(|p| p.as_str()),
            ) {
                (Some(id), Some(p)) => writeln!(out, "{id}: {st} {p}")?,
                (Some(id), None) => writeln!(out, "{id}: {st}")?,
                (None, _) => writeln!(out, "{st}")?,
            }
        }
    }
    Ok(())
}

async fn open_input(path: Option<&str>) -> Result<crate::client::Body> {
    Ok(match path {
        Some("-") | None => reader_body(tokio::io::stdin()),
        Some(p) => reader_body(
            tokio::fs::File::open(p)
                .await
                .with_context(|| format!("open {p}"))?,
        ),
    })
}

pub async fn load(c: &Client, a: LoadArgs) -> Result<()> {
    if a.input.is_none() && std::io::stdin().is_terminal() {
        bail!("requested load from stdin, but stdin is empty");
    }
    let body = open_input(a.input.as_deref()).await?;
    let resp = c
        .request(
            Method::POST,
            &format!("/images/load?quiet={}", a.quiet as u8),
            body,
            Some("application/x-tar"),
        )
        .await?;
    print_messages(resp, true).await
}

#[derive(Args)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long)]
    change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    platform: Option<String>,
    /// file|URL|-
    file: String,
    /// [REPOSITORY[:TAG]]
    reference: Option<String>,
}

pub async fn import(c: &Client, a: ImportArgs) -> Result<()> {
    // As docker's CLI: an http(s) URL is fetched by the daemon.
    let is_url = a.file.starts_with("http://") || a.file.starts_with("https://");
    let mut q = vec![format!(
        "fromSrc={}",
        if is_url {
            enc(&a.file)
        } else {
            "-".to_string()
        }
    )];
    if let Some(r) = &a.reference {
        let rf = berth_types::Reference::parse(r)?;
        q.push(format!("repo={}", enc(&rf.familiar_name())));
        if let Some(t) = &rf.tag {
            q.push(format!("tag={}", enc(t)));
        }
    }
    for ch in &a.change {
        q.push(format!("changes={}", enc(ch)));
    }
    if let Some(m) = &a.message {
        q.push(format!("message={}", enc(m)));
    }
    if let Some(p) = &a.platform {
        q.push(format!("platform={}", enc(p)));
    }
    let body = if is_url {
        crate::client::empty()
    } else {
        open_input(Some(&a.file)).await?
    };
    let resp = c
        .request(
            Method::POST,
            &format!("/images/create?{}", q.join("&")),
            body,
            Some("application/x-tar"),
        )
        .await?;
    print_messages(resp, false).await
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    all: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

/// Docker's y/N prompt; anything but y/yes declines.
pub fn confirm(warning: &str) -> Result<bool> {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim().to_lowercase().as_str(), "y" | "yes"))
}

pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !a.force && !confirm(warning)? {
        return Ok(());
    }
    let mut filters = a.filter.clone();
    filters.push(format!("dangling={}", !a.all));
    let report: Value = c
        .send_json(
            Method::POST,
            &format!("/images/prune?filters={}", enc(&filters_json(&filters)?)),
        )
        .await?;
    if let Some(items) = report["ImagesDeleted"].as_array().filter(|i| !i.is_empty()) {
        println!("Deleted Images:");
        print_delete_items(items, true);
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size_with_precision(report["SpaceReclaimed"].as_f64().unwrap_or(0.0), 4)
    );
    Ok(())
}
