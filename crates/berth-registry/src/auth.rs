//! Authentication and authorization.
//!
//! Three modes: `none` (everyone is anonymous), `basic` (htpasswd users with
//! bcrypt hashes, credentials on every request) and `token` (Docker's token
//! protocol: a 401 names this registry's own `/token` endpoint as realm; the
//! client trades its basic credentials there for a short-lived bearer token
//! listing the repository actions it was granted). What a user may do is
//! decided by the access rules of the configuration (see `config.rs`);
//! tokens carry the grants, so a token for repository A is worthless for B.
//!
//! Tokens are JWTs signed with HMAC-SHA256 under a key kept in the root
//! (`token.key`); only this registry verifies them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::config::{AccessRule, AuthMode, Config};
use crate::error::{Code, RegError, RegResult};
use crate::names::valid_repo_name;

/// A set of repository actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    pub const ALL: Actions = Actions(7);

    pub fn contains(self, o: Actions) -> bool {
        self.0 & o.0 == o.0
    }
    pub fn union(self, o: Actions) -> Actions {
        Actions(self.0 | o.0)
    }
    pub fn intersect(self, o: Actions) -> Actions {
        Actions(self.0 & o.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn parse(s: &str) -> Actions {
        s.split(',').fold(Actions::NONE, |a, x| {
            a.union(match x.trim() {
                "pull" => Actions::PULL,
                "push" => Actions::PUSH,
                "delete" => Actions::DELETE,
                "*" => Actions::ALL,
                _ => Actions::NONE,
            })
        })
    }
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.contains(Actions::PULL) {
            v.push("pull");
        }
        if self.contains(Actions::PUSH) {
            v.push("push");
        }
        if self.contains(Actions::DELETE) {
            v.push("delete");
        }
        v
    }
}

/// Users and bcrypt hashes from an htpasswd file.
#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash of nothing in particular at the file's cost, verified against
    /// for unknown users so that a wrong name takes as long as a wrong password.
    dummy: String,
}

impl Htpasswd {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let s = std::fs::read_to_string(path)
            .with_context(|| format!("reading htpasswd {}", path.display()))?;
        Self::parse(&s).with_context(|| format!("htpasswd {}", path.display()))
    }

    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let mut users = HashMap::new();
        for (i, line) in s.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                bail!("line {}: expected user:hash", i + 1);
            };
            if !["$2a$", "$2b$", "$2x$", "$2y$"]
                .iter()
                .any(|p| hash.starts_with(p))
            {
                bail!(
                    "line {}: user {user:?} has a non-bcrypt hash; only bcrypt is supported (htpasswd -B, or berth-registry htpasswd)",
                    i + 1
                );
            }
            users.insert(user.to_string(), hash.to_string());
        }
        let cost = users
            .values()
            .next()
            .and_then(|h| h.get(4..6))
            .and_then(|c| c.parse().ok())
            .unwrap_or(10);
        let dummy = bcrypt::hash("no such user", cost).context("bcrypt")?;
        Ok(Htpasswd { users, dummy })
    }

    /// Checks a password (slow: bcrypt). Run it off the async threads.
    pub fn verify(&self, user: &str, pass: &str) -> bool {
        match self.users.get(user) {
            Some(h) => bcrypt::verify(pass, h).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(pass, &self.dummy);
                false
            }
        }
    }
}

/// One grant of a token: `{"type":"repository","name":"foo","actions":["pull"]}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Grant>,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    Anonymous,
    /// A user who presented valid basic credentials.
    User(String),
    /// A bearer token: its subject ("" for anonymous) and grants.
    Token {
        sub: String,
        grants: Vec<Grant>,
    },
}

impl Identity {
    /// The user name for logs and upload ownership.
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(u),
            Identity::Token { sub, .. } if !sub.is_empty() => Some(sub),
            Identity::Token { .. } => None,
        }
    }
}

/// How to build challenges: what this request came in on.
#[derive(Debug, Clone)]
pub struct ChallengeOrigin {
    pub host: String,
    pub tls: bool,
}

pub struct Auth {
    mode: AuthMode,
    htpasswd: Option<Arc<Htpasswd>>,
    access: Vec<AccessRule>,
    service: String,
    realm: Option<String>,
    ttl: Duration,
    key: ring::hmac::Key,
    /// sha256(user ":" password) of recently verified credentials → (user, until).
    verified: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

const VERIFIED_TTL: Duration = Duration::from_secs(300);

fn pattern_matches(pattern: &str, s: &str) -> bool {
    // '*' matches any run of characters, '/' included
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

impl Auth {
    /// Builds the auth layer for `cfg`; `key_path` holds the token key.
    pub fn new(cfg: &Config, key_path: &Path) -> anyhow::Result<Self> {
        let htpasswd = match &cfg.htpasswd {
            Some(p) if cfg.auth != AuthMode::None => Some(Arc::new(Htpasswd::load(p)?)),
            _ => None,
        };
        let key = if cfg.auth == AuthMode::Token {
            load_or_create_key(key_path)?
        } else {
            rand::random::<[u8; 32]>().to_vec()
        };
        Ok(Auth {
            mode: cfg.auth,
            htpasswd,
            access: cfg.access.clone(),
            service: cfg.service.clone(),
            realm: cfg.realm.clone(),
            ttl: cfg.token_ttl,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// What the access rules let `user` (None: anonymous) do in `repo`.
    pub fn allowed(&self, user: Option<&str>, repo: &str) -> Actions {
        if self.access.is_empty() {
            // no rules: everything for whoever got in
            return match (self.mode, user) {
                (AuthMode::None, _) | (_, Some(_)) => Actions::ALL,
                (_, None) => Actions::NONE,
            };
        }
        let mut a = Actions::NONE;
        for r in &self.access {
            let who = r.users.iter().any(|u| match (u.as_str(), user) {
                ("anonymous", None) => true,
                ("*", Some(_)) => true,
                (name, Some(user)) => name == user,
                _ => false,
            });
            if !who {
                continue;
            }
            let name = user.unwrap_or("");
            if r.repos
                .iter()
                .any(|p| pattern_matches(&p.replace("{user}", name), repo))
            {
                a = a.union(Actions::parse(&r.actions.join(",")));
            }
        }
        a
    }

    /// What `id` may do in `repo`.
    pub fn permitted(&self, id: &Identity, repo: &str) -> Actions {
        match id {
            Identity::Token { grants, .. } => grants
                .iter()
                .filter(|g| g.kind == "repository" && g.name == repo)
                .fold(Actions::NONE, |a, g| {
                    a.union(Actions::parse(&g.actions.join(",")))
                }),
            Identity::User(u) => self.allowed(Some(u), repo),
            Identity::Anonymous => self.allowed(None, repo),
        }
    }

    /// The user whose access rules apply to `id` (for catalog filtering).
    pub fn rules_user<'a>(&self, id: &'a Identity) -> Option<&'a str> {
        id.name()
    }

    /// Works out who sent `headers`. Bad credentials are a 401.
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        origin: &ChallengeOrigin,
    ) -> RegResult<Identity> {
        let Some(h) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Ok(Identity::Anonymous);
        };
        if self.mode == AuthMode::None {
            return Ok(Identity::Anonymous);
        }
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match self.check_basic(rest.trim()).await {
                Some(u) => Ok(Identity::User(u)),
                None => Err(self.unauthorized(
                    origin,
                    None,
                    Some("invalid_token"),
                    "invalid username or password",
                )),
            },
            "bearer" if self.mode == AuthMode::Token => match self.verify_token(rest.trim()) {
                Ok(id) => Ok(id),
                Err(why) => Err(self.unauthorized(origin, None, Some("invalid_token"), &why)),
            },
            _ => Err(self.unauthorized(origin, None, None, "unsupported authorization scheme")),
        }
    }

    /// Verifies `base64(user:pass)`; Some(user) if valid.
    pub async fn check_basic(&self, b64: &str) -> Option<String> {
        let raw = STANDARD.decode(b64).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (user, pass) = s.split_once(':')?;
        let ht = self.htpasswd.clone()?;
        let key: [u8; 32] = Sha256::digest(s.as_bytes()).into();
        if let Some((u, until)) = self.verified.lock().unwrap().get(&key)
            && *until > Instant::now()
        {
            return Some(u.clone());
        }
        let (u, p) = (user.to_string(), pass.to_string());
        let ok = tokio::task::spawn_blocking(move || ht.verify(&u, &p))
            .await
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let mut v = self.verified.lock().unwrap();
        if v.len() > 10_000 {
            v.clear();
        }
        v.insert(key, (user.to_string(), Instant::now() + VERIFIED_TTL));
        Some(user.to_string())
    }

    /// Refuses `id` unless it may do `need` in `repo`: 401 with a challenge
    /// naming the scope when more credentials could help, 403 otherwise.
    pub fn require(
        &self,
        id: &Identity,
        repo: &str,
        need: Actions,
        origin: &ChallengeOrigin,
    ) -> RegResult<()> {
        if self.permitted(id, repo).contains(need) {
            return Ok(());
        }
        let scope = format!("repository:{repo}:{}", need.names().join(","));
        match (self.mode, id) {
            (AuthMode::Token, Identity::Token { .. }) => Err(self.unauthorized(
                origin,
                Some(&scope),
                Some("insufficient_scope"),
                &format!("token does not grant {scope}"),
            )),
            (AuthMode::None, _) | (_, Identity::User(_)) => Err(RegError::new(
                Code::Denied,
                format!("requested access to {scope} is denied"),
            )),
            _ => Err(self.unauthorized(origin, Some(&scope), None, "authentication required")),
        }
    }

    /// Refuses anonymous requests when authentication is on (`/v2/`, metrics).
    pub fn require_login(&self, id: &Identity, origin: &ChallengeOrigin) -> RegResult<()> {
        match (self.mode, id) {
            (AuthMode::None, _) => Ok(()),
            (_, Identity::Anonymous) => {
                Err(self.unauthorized(origin, None, None, "authentication required"))
            }
            _ => Ok(()),
        }
    }

    /// A 401 with the mode's challenge.
    pub fn unauthorized(
        &self,
        origin: &ChallengeOrigin,
        scope: Option<&str>,
        error: Option<&str>,
        msg: &str,
    ) -> RegError {
        let challenge = match self.mode {
            AuthMode::Token => {
                let mut c = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    self.realm_for(origin),
                    self.service
                );
                if let Some(s) = scope {
                    c.push_str(&format!(",scope=\"{s}\""));
                }
                if let Some(e) = error {
                    c.push_str(&format!(",error=\"{e}\""));
                }
                c
            }
            _ => format!("Basic realm=\"{}\"", self.service),
        };
        let mut e = RegError::new(Code::Unauthorized, msg).header(WWW_AUTHENTICATE, challenge);
        if let Some(s) = scope {
            let mut parts = s.splitn(3, ':');
            let (t, n, a) = (parts.next(), parts.next(), parts.next());
            if let (Some(t), Some(n), Some(a)) = (t, n, a) {
                e = e.detail(json!([{"Type": t, "Name": n, "Action": a}]));
            }
        }
        e
    }

    /// A 401 asking for basic credentials (the token endpoint's own challenge).
    pub fn unauthorized_basic(&self, _origin: &ChallengeOrigin, msg: &str) -> RegError {
        RegError::new(Code::Unauthorized, msg).header(
            WWW_AUTHENTICATE,
            format!("Basic realm=\"{}\"", self.service),
        )
    }

    fn realm_for(&self, origin: &ChallengeOrigin) -> String {
        match &self.realm {
            Some(r) => r.clone(),
            None => format!(
                "{}://{}/token",
                if origin.tls { "https" } else { "http" },
                origin.host
            ),
        }
    }

    /// Issues a token for `user` (None: anonymous) covering what the access
    /// rules grant of the requested `scopes`.
    pub fn issue(&self, user: Option<&str>, scopes: &[String]) -> Value {
        let mut grants: Vec<Grant> = Vec::new();
        for scope in scopes.iter().flat_map(|s| s.split(' ')) {
            let mut it = scope.splitn(2, ':');
            let (Some(kind), Some(rest)) = (it.next(), it.next()) else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let granted = match kind {
                "repository" if valid_repo_name(name) => Actions::parse(actions)
                    .intersect(self.allowed(user, name))
                    .names(),
                "registry" if name == "catalog" && actions == "*" => vec!["*"],
                _ => continue,
            };
            if granted.is_empty() {
                continue;
            }
            match grants.iter_mut().find(|g| g.kind == kind && g.name == name) {
                Some(g) => {
                    for a in granted {
                        if !g.actions.iter().any(|x| x == a) {
                            g.actions.push(a.to_string());
                        }
                    }
                }
                None => grants.push(Grant {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    actions: granted.into_iter().map(String::from).collect(),
                }),
            }
        }
        let now = crate::meta::now();
        let claims = Claims {
            iss: self.service.clone(),
            sub: user.unwrap_or("").to_string(),
            aud: self.service.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: now.saturating_sub(10),
            iat: now,
            jti: crate::storage::random_id(),
            access: grants,
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signed = format!("{header}.{body}");
        let sig = ring::hmac::sign(&self.key, signed.as_bytes());
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        json!({
            "token": token,
            "access_token": token,
            "expires_in": self.ttl.as_secs(),
            "issued_at": rfc3339(now),
        })
    }

    /// Checks a token's signature, audience and lifetime.
    pub fn verify_token(&self, token: &str) -> Result<Identity, String> {
        let mut parts = token.rsplitn(2, '.');
        let (Some(sig), Some(signed)) = (parts.next(), parts.next()) else {
            return Err("malformed token".into());
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| "malformed token signature".to_string())?;
        ring::hmac::verify(&self.key, signed.as_bytes(), &sig)
            .map_err(|_| "token signature is invalid".to_string())?;
        let body = signed.split('.').nth(1).ok_or("malformed token")?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed token claims")?;
        let now = crate::meta::now();
        if claims.aud != self.service {
            return Err(format!("token is for service {:?}", claims.aud));
        }
        if claims.exp <= now {
            return Err("token has expired".into());
        }
        if claims.nbf > now + 60 {
            return Err("token is not valid yet".into());
        }
        Ok(Identity::Token {
            sub: claims.sub,
            grants: claims.access,
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }
}

fn load_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => bail!("token key {} is shorter than 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let key: [u8; 32] = rand::random();
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&key)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(key.to_vec())
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Overrides};

    fn auth(mode: &str, access: Vec<AccessRule>, dir: &Path) -> Auth {
        let ht = dir.join("htpasswd");
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(&ht, format!("alice:{hash}\nbob:{hash}\n")).unwrap();
        let f = FileConfig {
            access,
            ..Default::default()
        };
        let cfg = Config::resolve(
            f,
            Overrides {
                auth: Some(mode.into()),
                htpasswd: Some(ht),
                ..Default::default()
            },
        )
        .unwrap();
        Auth::new(&cfg, &dir.join("token.key")).unwrap()
    }

    fn rule(users: &[&str], repos: &[&str], actions: &[&str]) -> AccessRule {
        AccessRule {
            users: users.iter().map(|s| s.to_string()).collect(),
            repos: repos.iter().map(|s| s.to_string()).collect(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "a/b/c"));
        assert!(pattern_matches("team/*", "team/x/y"));
        assert!(!pattern_matches("team/*", "teamx"));
        assert!(pattern_matches("a*c", "abbbc"));
        assert!(!pattern_matches("a*c", "abcd"));
        assert!(pattern_matches("exact", "exact"));
    }

    #[test]
    fn access_rules() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(
            "basic",
            vec![
                rule(&["*"], &["{user}/*"], &["pull", "push", "delete"]),
                rule(&["anonymous", "*"], &["public/*"], &["pull"]),
                rule(&["bob"], &["shared"], &["pull", "push"]),
            ],
            dir.path(),
        );
        assert_eq!(a.allowed(Some("alice"), "alice/x"), Actions::ALL);
        assert_eq!(a.allowed(Some("alice"), "bob/x"), Actions::NONE);
        assert_eq!(a.allowed(None, "public/x"), Actions::PULL);
        assert_eq!(a.allowed(None, "alice/x"), Actions::NONE);
        assert_eq!(
            a.allowed(Some("bob"), "shared"),
            Actions::PULL.union(Actions::PUSH)
        );
        assert_eq!(a.allowed(Some("alice"), "shared"), Actions::NONE);
        // no rules: authenticated users may do everything, anonymous nothing
        let b = auth("basic", vec![], dir.path());
        assert_eq!(b.allowed(Some("x"), "y"), Actions::ALL);
        assert_eq!(b.allowed(None, "y"), Actions::NONE);
    }

    #[test]
    fn tokens_carry_only_granted_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(
            "token",
            vec![rule(&["alice"], &["a"], &["pull", "push"])],
            dir.path(),
        );
        let t = a.issue(
            Some("alice"),
            &[
                "repository:a:pull,push,delete".into(),
                "repository:b:pull".into(),
            ],
        );
        let id = a.verify_token(t["token"].as_str().unwrap()).unwrap();
        assert_eq!(a.permitted(&id, "a"), Actions::PULL.union(Actions::PUSH));
        assert_eq!(a.permitted(&id, "b"), Actions::NONE);
        // tampering breaks the signature
        let tok = t["token"].as_str().unwrap();
        let mut parts: Vec<&str> = tok.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            br#"{"iss":"berth-registry","sub":"alice","aud":"berth-registry","exp":99999999999,"nbf":0,"iat":0,"jti":"x","access":[{"type":"repository","name":"b","actions":["pull"]}]}"#,
        );
        parts[1] = &forged_claims;
        assert!(a.verify_token(&parts.join(".")).is_err());
        // a token from another key (another registry) is refused
        let other = tempfile::tempdir().unwrap();
        let b = auth("token", vec![], other.path());
        assert!(b.verify_token(tok).is_err());
        // the key survives a restart
        let a2 = auth("token", vec![], dir.path());
        assert!(a2.verify_token(tok).is_ok());
    }

    #[test]
    fn htpasswd_only_takes_bcrypt() {
        assert!(Htpasswd::parse("alice:{SHA}abc").is_err());
        assert!(Htpasswd::parse("alice:$apr1$abc").is_err());
        let h =
            Htpasswd::parse(&format!("# c\n\nalice:{}", bcrypt::hash("pw", 4).unwrap())).unwrap();
        assert!(h.verify("alice", "pw"));
        assert!(!h.verify("alice", "nope"));
        assert!(!h.verify("mallory", "pw"));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
