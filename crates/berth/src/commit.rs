//! `berth diff` and `berth commit`.

use anyhow::{Result, bail};
use clap::{ArgAction, Args};
use serde_json::Value;

use crate::client::{Client, enc};

#[derive(Args, Debug)]
pub struct DiffArgs {
    container: String,
}

/// `docker diff`: one `KIND PATH` line per change (`A` added, `C`
/// changed, `D` deleted).
pub async fn diff(c: &Client, a: DiffArgs) -> Result<()> {
    let v = c
        .get_value(&format!("/containers/{}/changes", enc(&a.container)))
        .await?;
    let mut out = String::new();
    for ch in v.as_array().into_iter().flatten() {
        let kind = match ch["Kind"].as_u64() {
            Some(0) => "C",
            Some(1) => "A",
            Some(2) => "D",
            _ => "",
        };
        out.push_str(&format!("{kind} {}\n", ch["Path"].as_str().unwrap_or("")));
    }
    print!("{out}");
    Ok(())
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    change: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pause: bool,
    /// Disable pausing container during commit
    #[arg(long)]
    no_pause: bool,
    container: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

/// `docker commit`: prints the new image's ID.
pub async fn commit(c: &Client, a: CommitArgs) -> Result<()> {
    let mut q = vec![("container".to_string(), a.container.clone())];
    if let Some(r) = a.reference.as_deref().filter(|r| !r.is_empty()) {
        let rf = berth_types::Reference::parse(r)?;
        if rf.digest.is_some() {
            bail!("refusing to create a tag with a digest reference");
        }
        let rf = rf.with_default_tag();
        q.push(("repo".into(), rf.familiar_name()));
        q.push(("tag".into(), rf.tag.clone().unwrap_or_default()));
    }
    q.push(("comment".into(), a.message.unwrap_or_default()));
    q.push(("author".into(), a.author.unwrap_or_default()));
    for ch in a.change {
        q.push(("changes".into(), ch));
    }
    if a.no_pause || !a.pause {
        q.push(("pause".into(), "0".into()));
    }
    let query = serde_urlencoded::to_string(&q)?;
    let v: Value = c
        .post_json(&format!("/commit?{query}"), &Value::Null)
        .await?;
    println!("{}", v["Id"].as_str().unwrap_or(""));
    Ok(())
}
