//! Credentials as Docker passes them (`X-Registry-Auth`, `POST /auth`) and
//! the `WWW-Authenticate` challenges of Docker's token protocol.

use base64::Engine as _;
use berth_types::{Error, Result};
use serde::{Deserialize, Serialize};

/// Docker's `AuthConfig` (the JSON inside `X-Registry-Auth`, the body of
/// `POST /auth`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AuthConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// base64 of `username:password` (config.json's form).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serveraddress: String,
    /// An OAuth refresh token from an earlier login.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identitytoken: String,
    /// A bearer token to send to the registry as is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registrytoken: String,
}

impl AuthConfig {
    /// Decode an `X-Registry-Auth` header: base64url JSON (padded or not;
    /// old clients sent standard base64). An empty header or `{}` means
    /// no credentials.
    pub fn from_header(h: &str) -> Result<Option<AuthConfig>> {
        let h = h.trim();
        if h.is_empty() {
            return Ok(None);
        }
        let engines = [
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|e| e.decode(h).ok())
            .ok_or_else(|| Error::invalid("invalid X-Registry-Auth header: not base64"))?;
        let a: AuthConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("invalid X-Registry-Auth header: {e}")))?;
        Ok(Some(a.normalized()?).filter(|a| !a.is_empty()))
    }

    /// Fill username and password from `auth` when only it is set.
    pub fn normalized(mut self) -> Result<AuthConfig> {
        if self.username.is_empty() && self.password.is_empty() && !self.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| Error::invalid("invalid auth configuration: auth is not base64"))?;
            let s = String::from_utf8(raw)
                .map_err(|_| Error::invalid("invalid auth configuration: auth is not UTF-8"))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| Error::invalid("invalid auth configuration: auth has no ':'"))?;
            self.username = u.to_string();
            self.password = p.to_string();
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identitytoken.is_empty()
            && self.registrytoken.is_empty()
    }

    /// `Basic base64(username:password)`, when there is a username.
    pub fn basic(&self) -> Option<String> {
        (!self.username.is_empty()).then(|| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", self.username, self.password))
            )
        })
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq)]
pub struct Challenge {
    /// Lower case: `bearer`, `basic`.
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// Parse a `WWW-Authenticate` value: `Bearer realm="…",service="…"`,
/// `Basic realm="…"`, several challenges separated by commas.
pub fn parse_challenges(h: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = h.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=') {
            *i += 1;
        }
        h[s..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let word = token(&mut i);
        if i < b.len() && b[i] == b'=' {
            // a parameter of the current challenge
            i += 1;
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = h[i..].chars().next().unwrap_or(' ');
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            if let Some(c) = out.last_mut() {
                c.params.push((word.to_ascii_lowercase(), value));
            }
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: vec![],
            });
        }
    }
    out
}

/// A token server's answer (Docker's token spec; OAuth's `access_token`).
#[derive(Deserialize, Debug)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:library/busybox:pull,push")
        );
        let c = parse_challenges(r#"Basic realm="Registry Realm", Bearer realm=x"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[1].param("realm"), Some("x"));
    }

    #[test]
    fn registry_auth_header() {
        use base64::Engine as _;
        let json = r#"{"username":"u","password":"p?>","serveraddress":"127.0.0.1:5000"}"#;
        let enc = base64::engine::general_purpose::URL_SAFE.encode(json);
        let a = AuthConfig::from_header(&enc).unwrap().unwrap();
        assert_eq!(a.username, "u");
        assert_eq!(a.password, "p?>");
        assert_eq!(a.basic().unwrap(), "Basic dTpwPz4=");
        let e = base64::engine::general_purpose::URL_SAFE.encode("{}");
        assert_eq!(AuthConfig::from_header(&e).unwrap(), None);
        assert_eq!(AuthConfig::from_header("").unwrap(), None);
        assert!(AuthConfig::from_header("!!!").is_err());
        let a = AuthConfig {
            auth: "dTpw".into(),
            ..Default::default()
        }
        .normalized()
        .unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
    }
}
