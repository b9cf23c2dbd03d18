//! Volume commands (`volume create/ls/inspect/rm/prune`) and the mount
//! flags of `run`/`create` (`-v`, `--mount`, `--tmpfs`, `--volumes-from`),
//! turned into the create request exactly as the docker CLI 28 does
//! (`loader.ParseVolume`, `opts.MountOpt`, `containerOptions.parse`).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use hyper::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::Exit;
use crate::client::{Client, DaemonError, daemon_status, enc};
use crate::containers::FlagError;
use crate::images::{confirm, filters_json};
use berth_format::{self as format, human_size_with_precision};

// ---------------------------------------------------------------- commands

#[derive(Subcommand)]
#[command(defer = true)]
pub enum VolumeCmd {
    /// Create a volume
    Create(CreateArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove all unused local volumes
    Prune(PruneArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(RmArgs),
}

pub async fn volume(c: &Client, cmd: VolumeCmd) -> Result<()> {
    match cmd {
        VolumeCmd::Create(a) => create(c, a).await,
        VolumeCmd::Inspect(a) => inspect(c, a).await,
        VolumeCmd::Ls(a) => list(c, a).await,
        VolumeCmd::Prune(a) => prune(c, a).await,
        VolumeCmd::Rm(a) => rm(c, a).await,
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    /// Set metadata for a volume
    #[arg(long = "label")]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Specify volume name
    #[arg(long, hide = true)]
    name: Option<String>,
    /// [VOLUME]
    volume: Option<String>,
}

/// `key=value` flags as the docker CLI's MapOpts / ConvertKVStringsToMap.
fn kv_map(items: &[String]) -> Map<String, Value> {
    items
        .iter()
        .map(|i| {
            let (k, v) = i.split_once('=').unwrap_or((i, ""));
            (k.to_string(), json!(v))
        })
        .collect()
}

async fn create(c: &Client, a: CreateArgs) -> Result<()> {
    let name = match (a.volume, a.name) {
        (Some(_), Some(_)) => bail!(
            "conflicting options: cannot specify a volume-name through both --name and as a positional arg"
        ),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => String::new(),
    };
    // Go's encoder omits the empty fields of volume.CreateOptions.
    let mut body = Map::new();
    for (k, v) in [
        ("Driver", json!(a.driver)),
        ("DriverOpts", Value::Object(kv_map(&a.opt))),
        ("Labels", Value::Object(kv_map(&a.label))),
        ("Name", json!(name)),
    ] {
        if v != json!("") && v != json!({}) {
            body.insert(k.into(), v);
        }
    }
    let body = Value::Object(body);
    let v: Value = c.post_json("/volumes/create", &body).await?;
    println!("{}", v["Name"].as_str().unwrap_or(""));
    Ok(())
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true, value_name = "VOLUME")]
    names: Vec<String>,
}

async fn inspect(c: &Client, a: InspectArgs) -> Result<()> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for n in &a.names {
        match c.get_value(&format!("/volumes/{}", enc(n))).await {
            Ok(v) => items.push(v),
            Err(e) if daemon_status(&e) == Some(StatusCode::NOT_FOUND) => {
                errors.push(e.to_string())
            }
            Err(e) => return Err(e),
        }
    }
    crate::images::print_inspect(&items, &errors, a.format.as_deref())
}

#[derive(Args)]
pub struct ListArgs {
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Only display volume names
    #[arg(short, long)]
    quiet: bool,
}

/// sortorder.NaturalLess: digit runs compare as numbers.
pub fn natural_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i] == b'0' {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j] == b'0' {
                j += 1;
            }
            let (ni, nj) = (i, j);
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (da, db) = (&a[ni..i], &b[nj..j]);
            if da.len() != db.len() {
                return da.len() < db.len();
            }
            if da != db {
                return da < db;
            }
            if i - si != j - sj {
                return i - si < j - sj;
            }
            continue;
        }
        if a[i] != b[j] {
            return a[i] < b[j];
        }
        i += 1;
        j += 1;
    }
    a.len() - i < b.len() - j
}

fn labels_text(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

async fn list(c: &Client, a: ListArgs) -> Result<()> {
    let mut path = "/volumes".to_string();
    if !a.filter.is_empty() {
        path.push_str(&format!("?filters={}", enc(&filters_json(&a.filter)?)));
    }
    let resp: Value = c.get_json(&path).await?;
    let mut vols: Vec<Value> = resp["Volumes"].as_array().cloned().unwrap_or_default();
    vols.sort_by(|x, y| {
        let (x, y) = (
            x["Name"].as_str().unwrap_or(""),
            y["Name"].as_str().unwrap_or(""),
        );
        if natural_less(x, y) {
            std::cmp::Ordering::Less
        } else if natural_less(y, x) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    let fmt = match (a.format.as_deref(), a.quiet) {
        (None | Some("") | Some("table"), true) => "{{.Name}}".to_string(),
        (None | Some(""), false) | (Some("table"), false) => "table {{.Driver}}\t{{.Name}}".into(),
        (Some("raw"), true) => "name: {{.Name}}".into(),
        (Some("raw"), false) => "name: {{.Name}}\ndriver: {{.Driver}}\n".into(),
        (Some(f), _) => f.to_string(),
    };
    let rows: Vec<Value> = vols
        .iter()
        .map(|v| {
            let usage = &v["UsageData"];
            json!({
                "Availability": "N/A",
                "Driver": v["Driver"],
                "Group": "N/A",
                "ID": "N/A",
                "Labels": labels_text(&v["Labels"]),
                "Links": usage["RefCount"].as_i64().map_or("N/A".to_string(), |n| n.to_string()),
                "Mountpoint": v["Mountpoint"],
                "Name": v["Name"],
                "Scope": v["Scope"],
                "Size": usage["Size"].as_f64().map_or("N/A".to_string(), |s| human_size_with_precision(s, 4)),
                "Status": "N/A",
            })
        })
        .collect();
    let header = json!({
        "ID": "ID", "Name": "VOLUME NAME", "Group": "GROUP", "Driver": "DRIVER", "Scope": "SCOPE",
        "Availability": "AVAILABILITY", "Mountpoint": "MOUNTPOINT", "Labels": "LABELS",
        "Links": "LINKS", "Size": "SIZE", "Status": "STATUS",
    });
    let out = format::render_list(&fmt, &header, &rows)
        .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
    print!("{out}");
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of one or more volumes
    #[arg(short, long)]
    force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    names: Vec<String>,
}

async fn rm(c: &Client, a: RmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for n in &a.names {
        let path = format!("/volumes/{}?force={}", enc(n), a.force as u8);
        match c.send_json::<Value>(Method::DELETE, &path).await {
            Ok(_) => println!("{n}"),
            Err(e) => match e.downcast_ref::<DaemonError>() {
                Some(d) => errors.push(d.to_string()),
                None => return Err(e),
            },
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    eprintln!("{}", errors.join("\n"));
    Err(Exit(1).into())
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short, long)]
    all: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long)]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    let mut filters = a.filter.clone();
    let warning = if a.all {
        if filters
            .iter()
            .any(|f| f.split_once('=').is_some_and(|(k, _)| k.trim() == "all"))
        {
            bail!("conflicting options: cannot specify both --all and --filter all=1");
        }
        filters.push("all=true".into());
        "WARNING! This will remove all local volumes not used by at least one container."
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    };
    if !a.force && !confirm(warning)? {
        return Ok(());
    }
    let (report, deleted) = crate::images::prune_request(
        c,
        "/volumes/prune",
        &filters,
        "VolumesDeleted",
        "Deleted Volumes",
    )
    .await?;
    let mut reclaimed = 0.0;
    if deleted {
        println!();
        reclaimed = report["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    }
    println!(
        "Total reclaimed space: {}",
        human_size_with_precision(reclaimed, 4)
    );
    Ok(())
}

/// The `Local Volumes` row of `system df` (the CLI's diskUsageVolumesContext).
pub fn df_row(du: &Value) -> Value {
    let vols = du["Volumes"].as_array().cloned().unwrap_or_default();
    let usage = |v: &Value| {
        (
            v["UsageData"]["RefCount"].as_i64().unwrap_or(0),
            v["UsageData"]["Size"].as_i64().unwrap_or(-1),
        )
    };
    let active = vols.iter().filter(|v| usage(v).0 > 0).count();
    let (mut total, mut reclaimable) = (0i64, 0i64);
    for v in &vols {
        let (refs, size) = usage(v);
        if size != -1 {
            total += size;
            if refs == 0 {
                reclaimable += size;
            }
        }
    }
    let size = |n: i64| human_size_with_precision(n as f64, 4);
    let reclaim = if total > 0 {
        format!("{} ({}%)", size(reclaimable), reclaimable * 100 / total)
    } else {
        size(reclaimable)
    };
    json!({"Active": active.to_string(), "Reclaimable": reclaim, "Size": size(total),
           "TotalCount": vols.len().to_string(), "Type": "Local Volumes"})
}

/// The volumes table of `system df -v`.
pub fn df_table(du: &Value) -> Result<String> {
    let rows: Vec<Value> = du["Volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            json!({
                "Name": v["Name"],
                "Links": v["UsageData"]["RefCount"].as_i64().unwrap_or(0).to_string(),
                "Size": human_size_with_precision(v["UsageData"]["Size"].as_f64().unwrap_or(0.0), 4),
            })
        })
        .collect();
    let header = json!({"Name": "VOLUME NAME", "Links": "LINKS", "Size": "SIZE"});
    format::render_list("table {{.Name}}\t{{.Links}}\t{{.Size}}", &header, &rows)
        .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))
}

// ---------------------------------------------------------------- run/create flags

/// The compose loader's `ParseVolume` (what the docker CLI uses for `-v`):
/// `(source, target, is_bind)`.
fn parse_volume(spec: &str) -> std::result::Result<(String, String, bool), String> {
    if spec.is_empty() {
        return Err("invalid empty volume spec".into());
    }
    if spec.len() <= 2 {
        return Ok((String::new(), spec.to_string(), false));
    }
    let (mut source, mut target) = (None::<String>, None::<String>);
    let mut buffer: Vec<char> = Vec::new();
    let chars: Vec<char> = spec.chars().collect();
    let wrap = |e: &str| format!("invalid spec: {spec}: {e}");
    for i in 0..=chars.len() {
        let c = chars.get(i).copied();
        let windows_drive = c == Some(':') && buffer.len() == 1 && buffer[0].is_alphabetic();
        if windows_drive {
            buffer.push(':');
            continue;
        }
        if c == Some(':') || c.is_none() {
            let s: String = buffer.iter().collect();
            if buffer.is_empty() {
                return Err(wrap("empty section between colons"));
            } else if source.is_none() && c.is_none() {
                target = Some(s);
            } else if source.is_none() {
                source = Some(s);
            } else if target.is_none() {
                target = Some(s);
            } else if c == Some(':') {
                return Err(wrap("too many colons"));
            }
            // A third section is the mode; ParseVolume only reads it.
            buffer.clear();
            continue;
        }
        buffer.push(c.unwrap());
    }
    let source = source.unwrap_or_default();
    let is_bind = !source.is_empty() && is_file_path(&source);
    Ok((source, target.unwrap_or_default(), is_bind))
}

fn is_file_path(source: &str) -> bool {
    let mut chars = source.chars();
    let first = chars.next().unwrap_or(' ');
    if matches!(first, '.' | '/' | '~') {
        return true;
    }
    if source.chars().count() == 1 {
        return false;
    }
    if source.starts_with("\\\\") {
        return true;
    }
    first.is_alphabetic() && chars.next() == Some(':')
}

/// Go's `encoding/csv` for one record (the `--mount` value).
fn csv_fields(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("parse error on line 1, column 1: extraneous or missing \" in quoted-field".into());
                    }
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' => {
                return Err("parse error on line 1, column 1: bare \" in non-quoted-field".into());
            }
            ',' => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            c => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err(
            "parse error on line 1, column 1: extraneous or missing \" in quoted-field".into(),
        );
    }
    out.push(cur);
    Ok(out)
}

fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn make_abs(p: &str) -> String {
    if !p.starts_with('/') && p.starts_with('.') {
        std::env::current_dir()
            .map(|d| clean(&d.join(p).display().to_string()))
            .unwrap_or_else(|_| p.to_string())
    } else {
        p.to_string()
    }
}

/// Go's `filepath.Clean` for absolute paths.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    format!("/{}", out.join("/"))
}

/// The CLI's `volumeOptions()`: VolumeOptions with Labels and DriverConfig.
fn vol_opts(vol: &mut Option<Map<String, Value>>) -> &mut Map<String, Value> {
    let v = vol.get_or_insert_with(|| {
        let mut v = Map::new();
        v.insert("Labels".into(), json!({}));
        v
    });
    if !v.contains_key("DriverConfig") {
        v.insert("DriverConfig".into(), json!({}));
    }
    v
}

/// `--mount` (docker CLI's `MountOpt.Set`): one entry of `HostConfig.Mounts`.
pub fn parse_mount(value: &str) -> std::result::Result<Value, String> {
    let fields = csv_fields(value)?;
    let mut typ = "volume".to_string();
    let mut m = Map::new();
    let mut vol = None::<Map<String, Value>>;
    let mut bind = None::<Map<String, Value>>;
    let mut tmpfs = None::<Map<String, Value>>;
    let mut image = None::<Map<String, Value>>;
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.insert("ReadOnly".into(), json!(true));
                }
                "volume-nocopy" => {
                    vol_opts(&mut vol).insert("NoCopy".into(), json!(true));
                }
                "bind-nonrecursive" => {
                    bind.get_or_insert_with(Map::new)
                        .insert("NonRecursive".into(), json!(true));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let bad = || format!("invalid value for {key}: {val}");
        match key.as_str() {
            "type" => typ = val.to_lowercase(),
            "source" | "src" => {
                m.insert("Source".into(), json!(make_abs(val)));
            }
            "target" | "dst" | "destination" => {
                m.insert("Target".into(), json!(val));
            }
            "readonly" | "ro" => {
                m.insert(
                    "ReadOnly".into(),
                    json!(parse_go_bool(val).ok_or_else(bad)?),
                );
            }
            "consistency" => {
                m.insert("Consistency".into(), json!(val.to_lowercase()));
            }
            "bind-propagation" => {
                bind.get_or_insert_with(Map::new)
                    .insert("Propagation".into(), json!(val.to_lowercase()));
            }
            "bind-nonrecursive" => {
                let b = parse_go_bool(val).ok_or_else(bad)?;
                bind.get_or_insert_with(Map::new)
                    .insert("NonRecursive".into(), json!(b));
                eprintln!(
                    "WARNING: bind-nonrecursive is deprecated, use bind-recursive=disabled instead"
                );
            }
            "bind-recursive" => {
                let b = bind.get_or_insert_with(Map::new);
                match val {
                    "enabled" => {}
                    "disabled" => {
                        b.insert("NonRecursive".into(), json!(true));
                    }
                    "writable" => {
                        b.insert("ReadOnlyNonRecursive".into(), json!(true));
                    }
                    "readonly" => {
                        b.insert("ReadOnlyForceRecursive".into(), json!(true));
                    }
                    _ => {
                        return Err(format!(
                            "invalid value for {key}: {val} (must be \"enabled\", \"disabled\", \"writable\", or \"readonly\")"
                        ));
                    }
                }
            }
            "volume-subpath" => {
                vol_opts(&mut vol).insert("Subpath".into(), json!(val));
            }
            "volume-nocopy" => {
                let b = parse_go_bool(val)
                    .ok_or_else(|| format!("invalid value for volume-nocopy: {val}"))?;
                vol_opts(&mut vol).insert("NoCopy".into(), json!(b));
            }
            "volume-label" => {
                let (k, v) = val.split_once('=').unwrap_or((val, ""));
                if !k.is_empty() {
                    vol_opts(&mut vol)["Labels"][k] = json!(v);
                }
            }
            "volume-driver" => {
                vol_opts(&mut vol)["DriverConfig"]["Name"] = json!(val);
            }
            "volume-opt" => {
                let v = vol_opts(&mut vol);
                let dc = &mut v["DriverConfig"];
                if dc.get("Options").is_none() {
                    dc["Options"] = json!({});
                }
                let (k, o) = val.split_once('=').unwrap_or((val, ""));
                if !k.is_empty() {
                    dc["Options"][k] = json!(o);
                }
            }
            "image-subpath" => {
                image
                    .get_or_insert_with(Map::new)
                    .insert("Subpath".into(), json!(val));
            }
            "tmpfs-size" => {
                let n = berth_format::ram_in_bytes(val).map_err(|_| bad())?;
                tmpfs
                    .get_or_insert_with(Map::new)
                    .insert("SizeBytes".into(), json!(n));
            }
            "tmpfs-mode" => {
                let n = u32::from_str_radix(val, 8).map_err(|_| bad())?;
                tmpfs
                    .get_or_insert_with(Map::new)
                    .insert("Mode".into(), json!(n));
            }
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    if typ.is_empty() {
        return Err("type is required".into());
    }
    if !m.contains_key("Target") || m["Target"] == "" {
        return Err("target is required".into());
    }
    for (opts, prefix, t) in [
        (&vol, "volume", "volume"),
        (&image, "image", "image"),
        (&bind, "bind", "bind"),
        (&tmpfs, "tmpfs", "tmpfs"),
    ] {
        if opts.is_some() && typ != t {
            return Err(format!(
                "cannot mix '{prefix}-*' options with mount type '{typ}'"
            ));
        }
    }
    let read_only = m.get("ReadOnly").and_then(Value::as_bool) == Some(true);
    if let Some(b) = &bind {
        if b.get("ReadOnlyNonRecursive").is_some() && !read_only {
            return Err(
                "option 'bind-recursive=writable' requires 'readonly' to be specified in conjunction"
                    .into(),
            );
        }
        if b.get("ReadOnlyForceRecursive").is_some() {
            if !read_only {
                return Err("option 'bind-recursive=readonly' requires 'readonly' to be specified in conjunction".into());
            }
            if b.get("Propagation").and_then(Value::as_str) != Some("rprivate") {
                return Err("option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' to be specified in conjunction".into());
            }
        }
    }
    // The JSON Go's encoder gives the Mount struct (omitempty everywhere).
    let mut out = Map::new();
    out.insert("Type".into(), json!(typ));
    for k in ["Source", "Target", "ReadOnly", "Consistency"] {
        if let Some(v) = m.get(k).filter(|v| **v != json!("") && **v != json!(false)) {
            out.insert(k.into(), v.clone());
        }
    }
    let omit_empty = |o: Map<String, Value>| -> Map<String, Value> {
        o.into_iter()
            .filter(|(_, v)| match v {
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Object(_) => true,
                Value::Number(n) => n.as_i64() != Some(0),
                _ => true,
            })
            .collect()
    };
    if let Some(b) = bind {
        out.insert("BindOptions".into(), Value::Object(omit_empty(b)));
    }
    if let Some(mut v) = vol {
        if v["Labels"].as_object().is_some_and(|l| l.is_empty()) {
            v.remove("Labels");
        }
        out.insert("VolumeOptions".into(), Value::Object(omit_empty(v)));
    }
    if let Some(i) = image {
        out.insert("ImageOptions".into(), Value::Object(omit_empty(i)));
    }
    if let Some(t) = tmpfs {
        out.insert("TmpfsOptions".into(), Value::Object(omit_empty(t)));
    }
    Ok(Value::Object(out))
}

/// What the mount flags of `run`/`create` add to a create request:
/// `Config.Volumes` (anonymous `-v /path`), `HostConfig.Binds`, `Mounts`,
/// `Tmpfs` and `VolumesFrom`, as the docker CLI fills them.
pub fn apply_mount_flags(
    cfg: &mut Value,
    hc: &mut Value,
    volumes: &[String],
    mounts: &[String],
    tmpfs: &[String],
    volumes_from: &[String],
) -> Result<()> {
    let mut specs = Vec::new();
    for m in mounts {
        specs.push(
            parse_mount(m).map_err(|e| {
                FlagError(format!("invalid argument {m:?} for \"--mount\" flag: {e}"))
            })?,
        );
    }
    let mut anonymous = Map::new();
    let mut binds: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for v in volumes {
        if !seen.insert(v.clone()) {
            continue;
        }
        let (source, _target, is_bind) = parse_volume(v).map_err(anyhow::Error::msg)?;
        if source.is_empty() {
            anonymous.insert(v.clone(), json!({}));
            continue;
        }
        let mut bind = v.clone();
        if is_bind && let Some((host, rest)) = v.split_once(':') {
            bind = format!("{}:{rest}", make_abs(host));
        }
        binds.push(bind);
    }
    if !anonymous.is_empty() {
        cfg["Volumes"] = Value::Object(anonymous);
    }
    hc["Binds"] = if binds.is_empty() {
        Value::Null
    } else {
        json!(binds)
    };
    let mut t = BTreeMap::new();
    for spec in tmpfs {
        let (k, v) = spec.split_once(':').unwrap_or((spec, ""));
        t.insert(k.to_string(), v.to_string());
    }
    if !t.is_empty() {
        hc["Tmpfs"] = json!(t);
    }
    hc["VolumesFrom"] = if volumes_from.is_empty() {
        Value::Null
    } else {
        json!(volumes_from)
    };
    if !specs.is_empty() {
        hc["Mounts"] = Value::Array(specs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs_parse_as_the_docker_cli() {
        assert_eq!(
            parse_volume("/data").unwrap(),
            ("".into(), "/data".into(), false)
        );
        assert_eq!(
            parse_volume("name:/data:ro").unwrap(),
            ("name".into(), "/data".into(), false)
        );
        assert_eq!(
            parse_volume("/h:/c").unwrap(),
            ("/h".into(), "/c".into(), true)
        );
        assert_eq!(
            parse_volume("./rel:/c").unwrap(),
            ("./rel".into(), "/c".into(), true)
        );
        // One letter before a colon is a Windows drive: the whole spec is
        // an (odd) anonymous volume target.
        assert_eq!(
            parse_volume("a:/x").unwrap(),
            ("".into(), "a:/x".into(), false)
        );
        assert_eq!(
            parse_volume(":/x").unwrap_err(),
            "invalid spec: :/x: empty section between colons"
        );
        assert_eq!(
            parse_volume("/a:/b:ro:x").unwrap_err(),
            "invalid spec: /a:/b:ro:x: too many colons"
        );
        assert_eq!(parse_volume("").unwrap_err(), "invalid empty volume spec");
    }

    #[test]
    fn mount_flags_parse_as_the_docker_cli() {
        assert_eq!(
            parse_mount("type=bind,src=/h,dst=/c,readonly,bind-propagation=rshared").unwrap(),
            json!({"Type": "bind", "Source": "/h", "Target": "/c", "ReadOnly": true,
                   "BindOptions": {"Propagation": "rshared"}})
        );
        assert_eq!(
            parse_mount("type=volume,dst=/c").unwrap(),
            json!({"Type": "volume", "Target": "/c"})
        );
        assert_eq!(
            parse_mount("src=v,dst=/c,volume-nocopy,volume-label=a=b,volume-opt=type=tmpfs")
                .unwrap(),
            json!({"Type": "volume", "Source": "v", "Target": "/c",
                   "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"},
                                     "DriverConfig": {"Options": {"type": "tmpfs"}}}})
        );
        assert_eq!(
            parse_mount("type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap(),
            json!({"Type": "tmpfs", "Target": "/t",
                   "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 0o1770}})
        );
        assert_eq!(
            parse_mount("type=volume,foo=bar,dst=/x").unwrap_err(),
            "unexpected key 'foo' in 'foo=bar'"
        );
        assert_eq!(
            parse_mount("type=volume,src=x").unwrap_err(),
            "target is required"
        );
        assert_eq!(
            parse_mount("type=volume,dst=/x,tmpfs-size=1m").unwrap_err(),
            "cannot mix 'tmpfs-*' options with mount type 'volume'"
        );
        assert_eq!(
            parse_mount("type=tmpfs,dst=/x,tmpfs-mode=999").unwrap_err(),
            "invalid value for tmpfs-mode: 999"
        );
        assert_eq!(
            parse_mount("type=bind,dst=/x,bogus").unwrap_err(),
            "invalid field 'bogus' must be a key=value pair"
        );
        assert_eq!(
            parse_mount("\"type=bind\",\"dst=/a,b\"").unwrap()["Target"],
            "/a,b"
        );
    }

    #[test]
    fn run_flags_fill_the_request() {
        let mut cfg = json!({"Volumes": null});
        let mut hc = json!({});
        apply_mount_flags(
            &mut cfg,
            &mut hc,
            &[
                "/anon".into(),
                "named:/n:ro".into(),
                "/h:/c".into(),
                "/anon".into(),
            ],
            &["type=tmpfs,dst=/t".into()],
            &["/run:size=1m".into(), "/x".into()],
            &["other:ro".into()],
        )
        .unwrap();
        assert_eq!(cfg["Volumes"], json!({"/anon": {}}));
        assert_eq!(hc["Binds"], json!(["named:/n:ro", "/h:/c"]));
        assert_eq!(hc["Tmpfs"], json!({"/run": "size=1m", "/x": ""}));
        assert_eq!(hc["VolumesFrom"], json!(["other:ro"]));
        assert_eq!(hc["Mounts"], json!([{"Type": "tmpfs", "Target": "/t"}]));
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["v10", "v2", "a", "v1"];
        v.sort_by(|a, b| {
            if natural_less(a, b) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        assert_eq!(v, ["a", "v1", "v2", "v10"]);
    }
}
