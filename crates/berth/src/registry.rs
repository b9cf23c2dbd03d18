//! Registry credentials on the client side, as the docker CLI keeps them:
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`, mode
//! 0600) with `auths`, `credsStore` and `credHelpers`; credential helpers
//! are `docker-credential-<name>` programs speaking get/store/erase.
//! Also `login`/`logout` and the `X-Registry-Auth` header.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use clap::Args;
use serde_json::{Map, Value, json};

use crate::client::Client;

/// The key Docker Hub's credentials are stored under.
pub const HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Creds {
    pub username: String,
    pub password: String,
    pub identity_token: String,
}

fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return d.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker")
}

pub fn config_path() -> PathBuf {
    config_dir().join("config.json")
}

fn read_config() -> Result<Map<String, Value>> {
    let p = config_path();
    match std::fs::read(&p) {
        Ok(b) if b.iter().all(|c| c.is_ascii_whitespace()) => Ok(Map::new()),
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(Value::Object(m)) => Ok(m),
            _ => bail!("loading config file {}: invalid JSON", p.display()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

/// Write the config atomically with mode 0600.
fn write_config(cfg: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = config_path();
    let dir = p.parent().expect("config has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(&Value::Object(cfg.clone()))?.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &p).with_context(|| format!("write {}", p.display()))?;
    Ok(())
}

/// The config.json key of a registry: Docker Hub's URL, else `host[:port]`.
pub fn auth_key(domain: &str) -> String {
    if domain == "docker.io" || domain == "index.docker.io" || domain == "registry-1.docker.io" {
        HUB_KEY.to_string()
    } else {
        domain.to_string()
    }
}

/// `https://h:5000/` → `h:5000`, for matching stored keys.
fn key_host(k: &str) -> String {
    let s = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let h = s.split('/').next().unwrap_or(s);
    match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

fn helper_for(cfg: &Map<String, Value>, key: &str) -> Option<String> {
    let host = key_host(key);
    if let Some(h) = cfg.get("credHelpers").and_then(|h| h.as_object()) {
        for (k, v) in h {
            if key_host(k) == host
                && let Some(s) = v.as_str()
            {
                return Some(s.to_string());
            }
        }
    }
    cfg.get("credsStore")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from)
}

fn run_helper(helper: &str, action: &str, input: &str) -> Result<(bool, String)> {
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("error getting credentials - err: exec: \"{prog}\""))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((out.status.success(), text))
}

/// The stored credentials for a registry domain (`docker.io`, `h:5000`).
pub fn lookup(domain: &str) -> Result<Option<Creds>> {
    let cfg = read_config()?;
    let key = auth_key(domain);
    if let Some(helper) = helper_for(&cfg, &key) {
        let (ok, out) = run_helper(&helper, "get", &key)?;
        if !ok {
            if out.contains("credentials not found") {
                return Ok(None);
            }
            bail!("error getting credentials - err: {out}");
        }
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| anyhow!("error getting credentials - invalid helper output: {e}"))?;
        let user = v["Username"].as_str().unwrap_or("").to_string();
        let secret = v["Secret"].as_str().unwrap_or("").to_string();
        return Ok(Some(if user == "<token>" {
            Creds {
                identity_token: secret,
                ..Default::default()
            }
        } else {
            Creds {
                username: user,
                password: secret,
                ..Default::default()
            }
        }));
    }
    let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let host = key_host(&key);
    for (k, v) in auths {
        if key_host(k) != host {
            continue;
        }
        let mut c = Creds {
            identity_token: v["identitytoken"].as_str().unwrap_or("").to_string(),
            ..Default::default()
        };
        if let Some(a) = v["auth"].as_str().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a)
                .map_err(|_| anyhow!("invalid auth in {}", config_path().display()))?;
            let s = String::from_utf8_lossy(&raw).into_owned();
            let (u, p) = s.split_once(':').unwrap_or((&s, ""));
            c.username = u.to_string();
            c.password = p.to_string();
        }
        return Ok(Some(c));
    }
    Ok(None)
}

/// The `X-Registry-Auth` value for a registry: base64url of Docker's
/// AuthConfig JSON (`e30=`, `{}`, with no credentials).
pub fn header_for(domain: &str) -> Result<String> {
    let body = match lookup(domain)? {
        Some(c) => {
            let mut m = Map::new();
            if !c.username.is_empty() {
                m.insert("username".into(), json!(c.username));
                m.insert("password".into(), json!(c.password));
            }
            if !c.identity_token.is_empty() {
                m.insert("identitytoken".into(), json!(c.identity_token));
            }
            m.insert("serveraddress".into(), json!(auth_key(domain)));
            Value::Object(m)
        }
        None => json!({}),
    };
    Ok(base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&body)?))
}

fn store(key: &str, c: &Creds) -> Result<()> {
    let mut cfg = read_config()?;
    if let Some(helper) = helper_for(&cfg, key) {
        let (user, secret) = if c.identity_token.is_empty() {
            (c.username.as_str(), c.password.as_str())
        } else {
            ("<token>", c.identity_token.as_str())
        };
        let input = json!({"ServerURL": key, "Username": user, "Secret": secret}).to_string();
        let (ok, out) = run_helper(&helper, "store", &input)?;
        if !ok {
            bail!("error storing credentials - err: {out}");
        }
        // Docker records that the registry has credentials, without them.
        let auths = cfg
            .entry("auths")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| anyhow!("auths in config.json is not an object"))?;
        auths.insert(key.to_string(), json!({}));
        return write_config(&cfg);
    }
    let auths = cfg
        .entry("auths")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| anyhow!("auths in config.json is not an object"))?;
    let mut entry = Map::new();
    let pass = if c.identity_token.is_empty() {
        c.password.as_str()
    } else {
        ""
    };
    entry.insert(
        "auth".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(format!("{}:{pass}", c.username))),
    );
    if !c.identity_token.is_empty() {
        entry.insert("identitytoken".into(), json!(c.identity_token));
    }
    auths.insert(key.to_string(), Value::Object(entry));
    write_config(&cfg)
}

/// Remove stored credentials; false when there were none.
fn erase(key: &str) -> Result<bool> {
    let mut cfg = read_config()?;
    let host = key_host(key);
    let mut found = false;
    if let Some(helper) = helper_for(&cfg, key) {
        let (ok, _) = run_helper(&helper, "erase", key)?;
        found |= ok;
    }
    if let Some(auths) = cfg.get_mut("auths").and_then(|a| a.as_object_mut()) {
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| key_host(k) == host)
            .cloned()
            .collect();
        for k in keys {
            auths.remove(&k);
            found = true;
        }
    }
    if found {
        write_config(&cfg)?;
    }
    Ok(found)
}

#[derive(Args)]
#[command(override_usage = "berth login [OPTIONS] [SERVER]")]
pub struct LoginArgs {
    /// Username
    #[arg(short, long)]
    username: Option<String>,
    /// Password
    #[arg(short, long)]
    password: Option<String>,
    /// Take the password from stdin
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// Server (Docker Hub when omitted)
    server: Option<String>,
}

fn prompt(label: &str, echo: bool) -> Result<String> {
    let mut err = std::io::stderr();
    write!(err, "{label}")?;
    err.flush()?;
    let stdin = std::io::stdin();
    let restore = if echo {
        None
    } else {
        let t = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &t {
            let mut n = t.clone();
            n.local_modes.remove(rustix::termios::LocalModes::ECHO);
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &n);
        }
        t
    };
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    if let Some(t) = restore {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t);
        writeln!(err)?;
    }
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The registry domain a login/logout server argument names.
fn server_domain(server: Option<&str>) -> String {
    match server {
        None => "docker.io".into(),
        Some(s) => key_host(s),
    }
}

pub async fn login(c: &Client, a: LoginArgs) -> Result<()> {
    let domain = server_domain(a.server.as_deref());
    let key = auth_key(&domain);
    if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    if a.password_stdin && a.password.is_some() {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let mut password = a.password.clone();
    if a.password_stdin {
        if a.username.is_none() {
            bail!("Must provide --username with --password-stdin");
        }
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        password = Some(s.trim_end_matches(['\r', '\n']).to_string());
    }
    let interactive = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if interactive => prompt("Username: ", true)?,
        None => bail!("Error: Cannot perform an interactive login from a non TTY device"),
    };
    let password = match password {
        Some(p) => p,
        None if interactive => prompt("Password: ", false)?,
        None => bail!("Error: Cannot perform an interactive login from a non TTY device"),
    };
    if username.trim().is_empty() {
        bail!("Error: Non-null Username Required");
    }
    if password.is_empty() {
        bail!("Error: Password Required");
    }
    let resp: Value = c
        .post_json(
            "/auth",
            &json!({"username": username, "password": password, "serveraddress": key}),
        )
        .await?;
    let token = resp["IdentityToken"].as_str().unwrap_or("").to_string();
    let creds = Creds {
        username,
        password: if token.is_empty() {
            password
        } else {
            String::new()
        },
        identity_token: token,
    };
    store(&key, &creds)?;
    if helper_for(&read_config()?, &key).is_none() {
        eprintln!(
            "WARNING! Your credentials are stored unencrypted in '{}'.\nConfigure a credential helper to remove this warning. See\nhttps://docs.docker.com/go/credential-store/\n",
            config_path().display()
        );
    }
    println!("{}", resp["Status"].as_str().unwrap_or("Login Succeeded"));
    Ok(())
}

#[derive(Args)]
#[command(override_usage = "berth logout [SERVER]")]
pub struct LogoutArgs {
    /// Server (Docker Hub when omitted)
    server: Option<String>,
}

pub async fn logout(a: LogoutArgs) -> Result<()> {
    let domain = server_domain(a.server.as_deref());
    let key = auth_key(&domain);
    if erase(&key)? {
        println!("Removing login credentials for {key}");
    } else {
        println!("Not logged in to {key}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(auth_key("docker.io"), HUB_KEY);
        assert_eq!(auth_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(key_host(HUB_KEY), "docker.io");
        assert_eq!(key_host("http://h:5000/v2/"), "h:5000");
    }
}
