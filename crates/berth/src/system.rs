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
pub enum SystemCmd {
    /// Show berth disk usage
    Df(DfArgs),
    /// Display system-wide information
    Info(InfoArgs),
    /// Get real time events from the server
    Events(EventsArgs),
}

pub async fn system(c: &Client, cmd: SystemCmd) -> Result<()> {
    match cmd {
        SystemCmd::Df(a) => df(c, a).await,
        SystemCmd::Info(a) => info(c, a).await,
        SystemCmd::Events(a) => events(c, a).await,
    }
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
    let rows = vec![
        json!({"Active": active.to_string(), "Reclaimable": format!("{}{pct}", size(reclaim)), "Size": size(total), "TotalCount": images.len().to_string(), "Type": "Images"}),
        json!({"Active": "0", "Reclaimable": "0B", "Size": "0B", "TotalCount": "0", "Type": "Containers"}),
        crate::volumes::df_row(&du),
        json!({"Active": "0", "Reclaimable": "0B", "Size": "0B", "TotalCount": "0", "Type": "Build Cache"}),
    ];
    if a.verbose {
        println!("Images space usage:\n");
        let fmt = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}";
        let irows: Vec<Value> = images
            .iter()
            .flat_map(|i| {
                let tags: Vec<String> = i["RepoTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)).collect();
                let tags = if tags.is_empty() { vec!["<none>:<none>".to_string()] } else { tags };
                let id = i["Id"].as_str().unwrap_or("").trim_start_matches("sha256:").chars().take(12).collect::<String>();
                let s = i["Size"].as_f64().unwrap_or(0.0);
                let sh = i["SharedSize"].as_f64().unwrap_or(0.0);
                tags.into_iter().map(move |t| {
                    let (r, tg) = t.rsplit_once(':').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or((t.clone(), "<none>".into()));
                    json!({"Repository": r, "Tag": tg, "ID": id, "CreatedSince": format::human_since(i["Created"].as_i64().unwrap_or(0)), "Size": size(s), "SharedSize": size(sh), "UniqueSize": size(s - sh), "Containers": i["Containers"].as_i64().unwrap_or(0).to_string()})
                })
            })
            .collect();
        let header = json!({"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED", "Size": "SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS"});
        print!(
            "{}",
            format::render_list(fmt, &header, &irows)
                .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?
        );
        println!(
            "\nContainers space usage:\n\nCONTAINER ID   IMAGE     COMMAND   LOCAL VOLUMES   SIZE      CREATED   STATUS    NAMES\n\nLocal Volumes space usage:\n\n{}\nBuild cache usage: 0B\n\nCACHE ID   CACHE TYPE   SIZE      CREATED   LAST USED   USAGE     SHARED",
            crate::volumes::df_table(&du)?
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
