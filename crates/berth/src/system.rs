//! version, info, system df, events.

use anyhow::Result;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{Client, empty, enc, json_lines};
use crate::images::filters_json;
use berth_format::{self as format, Template, bytes_size, human_size_with_precision};

#[derive(Args)]
pub struct VersionArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct InfoArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Subcommand)]
#[command(defer = true)]
pub enum SystemCmd {
    /// Show berth disk usage
    Df(DfArgs),
    /// Display system-wide information
    Info(InfoArgs),
    /// Get real time events from the server
    Events(EventsArgs),
    /// Remove unused data
    Prune(PruneArgs),
    /// List (and with --repair remove) what nothing in the data root owns
    Check(CheckArgs),
}

pub async fn system(c: &Client, cmd: SystemCmd) -> Result<()> {
    match cmd {
        SystemCmd::Df(a) => df(c, a).await,
        SystemCmd::Info(a) => info(c, a).await,
        SystemCmd::Events(a) => events(c, a).await,
        SystemCmd::Prune(a) => prune(c, a).await,
        SystemCmd::Check(a) => check(c, a).await,
    }
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short, long)]
    all: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    volumes: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

fn prune_warning(a: &PruneArgs) -> String {
    let mut w = vec![
        "all stopped containers",
        "all networks not used by at least one container",
    ];
    if a.volumes {
        w.push("all anonymous volumes not used by at least one container");
    }
    w.push(if a.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    });
    w.push(if a.all {
        "all build cache"
    } else {
        "unused build cache"
    });
    let mut out = String::from("WARNING! This will remove:");
    for x in w {
        out.push_str(&format!("\n  - {x}"));
    }
    let mut filters: Vec<&String> = a
        .filter
        .iter()
        .filter(|f| {
            f.split_once('=')
                .is_some_and(|(k, _)| ["label", "label!", "until"].contains(&k.trim()))
        })
        .collect();
    filters.sort();
    out.push('\n');
    if !filters.is_empty() {
        out.push_str("\n  Items to be pruned will be filtered with:");
        for f in filters {
            out.push_str(&format!("\n  - {f}"));
        }
        out.push('\n');
    }
    out
}

/// `system prune`: the prune endpoints one after the other, as docker's
/// CLI calls them (containers, networks, volumes with `--volumes`,
/// images, build cache), each report printed as docker prints it.
pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    if a.volumes
        && a.filter
            .iter()
            .any(|f| f.split_once('=').is_some_and(|(k, _)| k.trim() == "until"))
    {
        anyhow::bail!("ERROR: The \"until\" filter is not supported with \"--volumes\"");
    }
    if !a.force && !crate::images::confirm(&prune_warning(&a))? {
        return Ok(());
    }
    let filters = if a.filter.is_empty() {
        String::new()
    } else {
        filters_json(&a.filter)?
    };
    let with = |extra: Option<&str>| -> Result<String> {
        let mut f = a.filter.clone();
        if let Some(e) = extra {
            f.push(e.to_string());
        }
        Ok(if f.is_empty() {
            String::new()
        } else {
            format!("filters={}", enc(&filters_json(&f)?))
        })
    };
    let mut total = 0u64;
    let steps: Vec<(&str, String, &str, &str)> = {
        let mut v = vec![
            (
                "/containers/prune",
                with(None)?,
                "ContainersDeleted",
                "Deleted Containers:",
            ),
            (
                "/networks/prune",
                with(None)?,
                "NetworksDeleted",
                "Deleted Networks:",
            ),
        ];
        if a.volumes {
            v.push((
                "/volumes/prune",
                with(None)?,
                "VolumesDeleted",
                "Deleted Volumes:",
            ));
        }
        let dangling = format!("dangling={}", !a.all);
        v.push((
            "/images/prune",
            with(Some(&dangling))?,
            "ImagesDeleted",
            "Deleted Images:",
        ));
        let mut q = String::new();
        if a.all {
            q.push_str("all=1&");
        }
        q.push_str("keep-storage=0");
        if !filters.is_empty() {
            q.push_str(&format!("&filters={}", enc(&filters)));
        }
        v.push((
            "/build/prune",
            q,
            "CachesDeleted",
            "Deleted build cache objects:",
        ));
        v
    };
    for (endpoint, query, key, title) in steps {
        let path = if query.is_empty() {
            endpoint.to_string()
        } else {
            format!("{endpoint}?{query}")
        };
        let report: Value = c.send_json(Method::POST, &path).await?;
        let items = report[key].as_array().filter(|i| !i.is_empty());
        let reclaimed = report["SpaceReclaimed"].as_u64().unwrap_or(0);
        if endpoint == "/build/prune" {
            total += reclaimed;
        }
        let Some(items) = items else {
            continue;
        };
        if endpoint != "/build/prune" && endpoint != "/networks/prune" {
            total += reclaimed;
        }
        let mut out = format!("{title}\n");
        for i in items {
            if endpoint == "/images/prune" {
                match (i["Untagged"].as_str(), i["Deleted"].as_str()) {
                    (Some(u), _) if !u.is_empty() => out.push_str(&format!("untagged: {u}\n")),
                    (_, d) => out.push_str(&format!("deleted: {}\n", d.unwrap_or(""))),
                }
            } else {
                out.push_str(&format!("{}\n", i.as_str().unwrap_or("")));
            }
        }
        println!("{out}");
    }
    println!(
        "Total reclaimed space: {}",
        human_size_with_precision(total as f64, 4)
    );
    Ok(())
}

#[derive(Args)]
pub struct CheckArgs {
    /// Remove what is listed
    #[arg(long)]
    repair: bool,
    /// Format output using a custom template ('json' for the report)
    #[arg(long)]
    format: Option<String>,
}

/// `system check [--repair]` (a berth extension, `/berth/system/check`):
/// one line per thing under the data root that nothing owns.
pub async fn check(c: &Client, a: CheckArgs) -> Result<()> {
    let method = if a.repair { Method::POST } else { Method::GET };
    let report: Value = c.send_json(method, "/berth/system/check").await?;
    if a.format.as_deref() == Some("json") {
        println!("{}", format::to_go_json(&report, false));
        return Ok(());
    }
    let items = report["Items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("Nothing to repair: every file under the data root is owned.");
        return Ok(());
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "Kind": i["Kind"],
                "Path": i["Path"],
                "Size": human_size_with_precision(i["Size"].as_f64().unwrap_or(0.0), 4),
                "Status": if i["Removed"].as_bool() == Some(true) { "removed".to_string() } else if let Some(e) = i["Error"].as_str() { format!("error: {e}") } else { "unowned".to_string() },
            })
        })
        .collect();
    let header = json!({"Kind": "KIND", "Path": "PATH", "Size": "SIZE", "Status": "STATUS"});
    let fmt = a
        .format
        .clone()
        .unwrap_or_else(|| "table {{.Kind}}\t{{.Path}}\t{{.Size}}\t{{.Status}}".into());
    print!(
        "{}",
        format::render_list(&fmt, &header, &rows)
            .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?
    );
    println!(
        "{} item(s), {}{}",
        items.len(),
        human_size_with_precision(report["Size"].as_f64().unwrap_or(0.0), 4),
        if a.repair {
            " reclaimed"
        } else {
            "; run with --repair to remove them"
        }
    );
    if items.iter().any(|i| i["Error"].is_string()) {
        return Err(crate::Exit(1).into());
    }
    Ok(())
}

fn client_version() -> Value {
    json!({
        "Platform": {"Name": "berth"},
        "Version": env!("CARGO_PKG_VERSION"),
        "APIVersion": berth_api::API_VERSION,
        "DefaultAPIVersion": berth_api::API_VERSION,
        "GitCommit": env!("CARGO_PKG_VERSION"),
        "GoVersion": "rust",
        "Os": "linux",
        "Arch": berth_images_arch(),
        "BuildTime": "",
        "Context": "default",
    })
}

fn berth_images_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

const VERSION_TEMPLATE: &str = "Client:{{if .Client.Platform.Name}} {{.Client.Platform.Name}}{{end}}
 Version:           {{.Client.Version}}
 API version:       {{.Client.APIVersion}}
 Go version:        {{.Client.GoVersion}}
 Git commit:        {{.Client.GitCommit}}
 Built:             {{.Client.BuildTime}}
 OS/Arch:           {{.Client.Os}}/{{.Client.Arch}}
 Context:           {{.Client.Context}}
{{- if .Server}}

Server:{{if .Server.Platform.Name}} {{.Server.Platform.Name}}{{end}}
{{- range $component := .Server.Components}}
 {{$component.Name}}:
  Version:          {{$component.Version}}
  {{- if eq $component.Name \"Engine\"}}
  API version:      {{index $component.Details \"ApiVersion\"}} (minimum version {{index $component.Details \"MinAPIVersion\"}})
  Go version:       {{index $component.Details \"GoVersion\"}}
  Git commit:       {{index $component.Details \"GitCommit\"}}
  Built:            {{index $component.Details \"BuildTime\"}}
  OS/Arch:          {{index $component.Details \"Os\"}}/{{index $component.Details \"Arch\"}}
  Experimental:     {{index $component.Details \"Experimental\"}}
  {{- end}}
{{- end}}
{{- end}}
";

pub async fn version(c: &Client, a: VersionArgs) -> Result<()> {
    let server: Option<Value> = match c.get_value("/version").await {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    };
    // Templates see Go's field names (docker's types.Version has APIVersion).
    let server_t = server.clone().map(|mut v| {
        v["APIVersion"] = v["ApiVersion"].clone();
        v
    });
    let data = json!({"Client": client_version(), "Server": server_t});
    let fmt = match a.format.as_deref() {
        Some("json") => format!("{}\n", format::to_go_json(&data, false)),
        Some(f) => format!("{}\n", Template::parse(f)?.execute(&data)?),
        None => Template::parse(VERSION_TEMPLATE)?.execute(&data)?,
    };
    print!("{fmt}");
    if server.is_none() {
        return Err(crate::Exit(1).into());
    }
    Ok(())
}

pub async fn info(c: &Client, a: InfoArgs) -> Result<()> {
    let s: Value = c.get_value("/info").await?;
    if let Some(f) = &a.format {
        let out = if f == "json" {
            format::to_go_json(&s, false)
        } else {
            Template::parse(f)?.execute(&s)?
        };
        println!("{out}");
        return Ok(());
    }
    let g = |k: &str| s[k].clone();
    let str_of = |v: Value| match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    println!(
        "Client:\n Version:    {}\n Context:    default\n Debug Mode: false\n",
        env!("CARGO_PKG_VERSION")
    );
    println!("Server:");
    println!(" Containers: {}", g("Containers"));
    println!("  Running: {}", g("ContainersRunning"));
    println!("  Paused: {}", g("ContainersPaused"));
    println!("  Stopped: {}", g("ContainersStopped"));
    println!(" Images: {}", g("Images"));
    println!(" Server Version: {}", str_of(g("ServerVersion")));
    println!(" Storage Driver: {}", str_of(g("Driver")));
    for pair in s["DriverStatus"].as_array().into_iter().flatten() {
        println!("  {}: {}", str_of(pair[0].clone()), str_of(pair[1].clone()));
    }
    println!(" Logging Driver: {}", str_of(g("LoggingDriver")));
    println!(" Cgroup Driver: {}", str_of(g("CgroupDriver")));
    println!(" Cgroup Version: {}", str_of(g("CgroupVersion")));
    println!(" Plugins:");
    for k in ["Volume", "Network", "Log"] {
        let v: Vec<String> = s["Plugins"][k]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| str_of(x.clone()))
            .collect();
        println!("  {k}: {}", v.join(" "));
    }
    println!(" Swarm: {}", str_of(s["Swarm"]["LocalNodeState"].clone()));
    let runtimes: Vec<String> = s["Runtimes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    println!(" Runtimes: {}", runtimes.join(" "));
    println!(" Default Runtime: {}", str_of(g("DefaultRuntime")));
    println!(" Kernel Version: {}", str_of(g("KernelVersion")));
    println!(" Operating System: {}", str_of(g("OperatingSystem")));
    println!(" OSType: {}", str_of(g("OSType")));
    println!(" Architecture: {}", str_of(g("Architecture")));
    println!(" CPUs: {}", g("NCPU"));
    println!(
        " Total Memory: {}",
        bytes_size(s["MemTotal"].as_f64().unwrap_or(0.0))
    );
    println!(" Name: {}", str_of(g("Name")));
    println!(" ID: {}", str_of(g("ID")));
    println!(" Docker Root Dir: {}", str_of(g("DockerRootDir")));
    println!(" Debug Mode: {}", g("Debug"));
    println!(" Experimental: false");
    println!(" Live Restore Enabled: {}", g("LiveRestoreEnabled"));
    println!();
    Ok(())
}

#[derive(Args)]
pub struct DfArgs {
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Show detailed information on space usage
    #[arg(short, long)]
    verbose: bool,
}

pub async fn df(c: &Client, a: DfArgs) -> Result<()> {
    let du: Value = c.get_value("/system/df").await?;
    let images = du["Images"].as_array().cloned().unwrap_or_default();
    let size = |v: f64| human_size_with_precision(v, 4);
    let total = du["LayersSize"].as_f64().unwrap_or(0.0);
    let active = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) > 0)
        .count();
    let used: f64 = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) > 0)
        .map(|i| {
            i["Size"].as_f64().unwrap_or(0.0) - i["SharedSize"].as_f64().unwrap_or(0.0).max(0.0)
        })
        .sum();
    let reclaim = (total - used).max(0.0);
    let pct = if total > 0.0 {
        format!(" ({}%)", (reclaim * 100.0 / total) as i64)
    } else {
        String::new()
    };
    let containers = du["Containers"].as_array().cloned().unwrap_or_default();
    let cache = du["BuildCache"].as_array().cloned().unwrap_or_default();
    let pct_of = |part: f64, total: f64| {
        if total > 0.0 {
            format!("{} ({}%)", size(part), (part * 100.0 / total) as i64)
        } else {
            size(part)
        }
    };
    let rows = vec![
        json!({"Active": active.to_string(), "Reclaimable": format!("{}{pct}", size(reclaim)), "Size": size(total), "TotalCount": images.len().to_string(), "Type": "Images"}),
        containers_row(&containers, &pct_of),
        crate::volumes::df_row(&du),
        build_cache_row(&cache),
    ];
    if a.verbose {
        println!("Images space usage:\n");
        let fmt = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}";
        let irows: Vec<Value> = images
            .iter()
            .map(|i| {
                // Only the first tag, as docker shows it.
                let first = i["RepoTags"][0].as_str().filter(|t| *t != "<none>:<none>");
                let (r, tg) = first
                    .and_then(|t| t.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')))
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .unwrap_or(("<none>".into(), "<none>".into()));
                let id = i["Id"].as_str().unwrap_or("").trim_start_matches("sha256:").chars().take(12).collect::<String>();
                let s = i["Size"].as_f64().unwrap_or(0.0);
                let sh = i["SharedSize"].as_f64().unwrap_or(0.0);
                json!({"Repository": r, "Tag": tg, "ID": id, "CreatedSince": format::human_since(i["Created"].as_i64().unwrap_or(0)), "Size": human_size_with_precision(s, 3), "SharedSize": size(sh), "UniqueSize": size(s - sh), "Containers": i["Containers"].as_i64().unwrap_or(0).to_string()})
            })
            .collect();
        let header = json!({"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED", "Size": "SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS"});
        print!(
            "{}",
            format::render_list(fmt, &header, &irows)
                .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?
        );
        println!("\nContainers space usage:\n");
        let crows: Vec<Value> = containers
            .iter()
            .map(|c| {
                // The virtual size is not shown here.
                let mut c = c.clone();
                c["SizeRootFs"] = json!(0);
                crate::containers::ps_row(&c, true)
            })
            .collect();
        let fmt = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}";
        print!(
            "{}",
            format::render_list(fmt, &crate::containers::ps_header(), &crows)
                .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?
        );
        println!(
            "\nLocal Volumes space usage:\n\n{}\nBuild cache usage: {}\n",
            crate::volumes::df_table(&du)?,
            size(builder_size(&cache))
        );
        let brows: Vec<Value> = cache
            .iter()
            .map(|b| {
                let since = |k: &str| {
                    b[k].as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| format::human_since(t.timestamp()))
                        .unwrap_or_default()
                };
                json!({
                    "ID": b["ID"].as_str().unwrap_or("").chars().take(12).collect::<String>(),
                    "CacheType": b["Type"], "Size": size(b["Size"].as_f64().unwrap_or(0.0)),
                    "CreatedSince": since("CreatedAt"), "LastUsedSince": since("LastUsedAt"),
                    "UsageCount": b["UsageCount"].as_i64().unwrap_or(0).to_string(),
                    "Shared": b["Shared"].as_bool().unwrap_or(false).to_string(),
                })
            })
            .collect();
        let header = json!({"ID": "CACHE ID", "CacheType": "CACHE TYPE", "Size": "SIZE", "CreatedSince": "CREATED", "LastUsedSince": "LAST USED", "UsageCount": "USAGE", "Shared": "SHARED"});
        let fmt = "table {{.ID}}\t{{.CacheType}}\t{{.Size}}\t{{.CreatedSince}}\t{{.LastUsedSince}}\t{{.UsageCount}}\t{{.Shared}}";
        print!(
            "{}",
            format::render_list(fmt, &header, &brows)
                .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?
        );
        return Ok(());
    }
    let fmt = a
        .format
        .clone()
        .filter(|f| !f.is_empty() && f != "table")
        .unwrap_or_else(|| {
            "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}".into()
        });
    let header = json!({"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE", "Reclaimable": "RECLAIMABLE"});
    print!(
        "{}",
        format::render_list(&fmt, &header, &rows)
            .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?
    );
    Ok(())
}

/// The `Containers` row of `system df`: active ones run, are paused or
/// restarting; what the others' read-write layers hold is reclaimable.
fn containers_row(containers: &[Value], pct: &dyn Fn(f64, f64) -> String) -> Value {
    let active = |c: &Value| {
        matches!(
            c["State"].as_str(),
            Some("running" | "paused" | "restarting")
        )
    };
    let total: f64 = containers
        .iter()
        .map(|c| c["SizeRw"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        + 0.0;
    let reclaim: f64 = containers
        .iter()
        .filter(|c| !active(c))
        .map(|c| c["SizeRw"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        + 0.0;
    json!({
        "Active": containers.iter().filter(|c| active(c)).count().to_string(),
        "Reclaimable": pct(reclaim, total),
        "Size": human_size_with_precision(total, 4),
        "TotalCount": containers.len().to_string(),
        "Type": "Containers",
    })
}

/// What the build cache holds, shared records counted once (by whoever
/// else holds them).
fn builder_size(cache: &[Value]) -> f64 {
    cache
        .iter()
        .filter(|b| b["Shared"].as_bool() != Some(true))
        .map(|b| b["Size"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0, which would print as "-0B"
}

fn build_cache_row(cache: &[Value]) -> Value {
    let total = builder_size(cache);
    let in_use: f64 = cache
        .iter()
        .filter(|b| b["InUse"].as_bool() == Some(true) && b["Shared"].as_bool() != Some(true))
        .map(|b| b["Size"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        + 0.0;
    json!({
        "Active": cache.iter().filter(|b| b["InUse"].as_bool() == Some(true)).count().to_string(),
        "Reclaimable": human_size_with_precision(total - in_use, 4),
        "Size": human_size_with_precision(total, 4),
        "TotalCount": cache.len().to_string(),
        "Type": "Build Cache",
    })
}

#[derive(Args)]
pub struct EventsArgs {
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Show all events created since timestamp
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    until: Option<String>,
}

/// An event as Go templates see docker's events.Message: field names, not
/// JSON tags (`.ID`, `.Status`, `.Scope`, `.TimeNano`).
fn go_event(m: &Value) -> Value {
    let mut v = json!({
        "Status": m["status"], "ID": m["id"], "From": m["from"],
        "Type": m["Type"], "Action": m["Action"], "Actor": m["Actor"],
        "Scope": m["scope"], "Time": m["time"], "TimeNano": m["timeNano"],
    });
    for k in ["Status", "ID", "From"] {
        if v[k].is_null() {
            v[k] = json!("");
        }
    }
    v
}

/// Absolute times (RFC 3339) go to the daemon as unix seconds, as docker sends them.
fn event_time(s: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos()),
        Err(_) => s.to_string(),
    }
}

pub async fn events(c: &Client, a: EventsArgs) -> Result<()> {
    let mut q = Vec::new();
    if let Some(s) = &a.since {
        q.push(format!("since={}", enc(&event_time(s))));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", enc(&event_time(u))));
    }
    if !a.filter.is_empty() {
        q.push(format!("filters={}", enc(&filters_json(&a.filter)?)));
    }
    let resp = c
        .request(
            Method::GET,
            &format!("/events?{}", q.join("&")),
            empty(),
            None,
        )
        .await?;
    let tmpl = match a.format.as_deref() {
        Some("json") => None,
        Some(f) => Some(Template::parse(
            &f.replace("\\t", "\t").replace("\\n", "\n"),
        )?),
        None => None,
    };
    let mut msgs = Box::pin(json_lines(resp));
    while let Some(m) = msgs.next().await {
        let m = m?;
        match (&tmpl, a.format.as_deref()) {
            (Some(t), _) => println!("{}", t.execute(&go_event(&m))?),
            (None, Some("json")) => println!("{}", format::to_go_json(&m, true)),
            _ => {
                let nanos = m["timeNano"].as_i64().unwrap_or(0);
                let t = chrono::DateTime::from_timestamp(
                    nanos / 1_000_000_000,
                    (nanos % 1_000_000_000) as u32,
                )
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%dT%H:%M:%S%.9f%:z")
                        .to_string()
                })
                .unwrap_or_default();
                let attrs = m["Actor"]["Attributes"]
                    .as_object()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", attrs.join(", "))
                };
                println!(
                    "{t} {} {} {}{attrs}",
                    m["Type"].as_str().unwrap_or(""),
                    m["Action"].as_str().unwrap_or(""),
                    m["Actor"]["ID"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}
