//! Image references as Docker's `distribution/reference` parses them:
//! `ubuntu` → `docker.io/library/ubuntu:latest`, `host:port/a/b:tag`,
//! `name@sha256:…`, `name:tag@sha256:…`.

use std::fmt;

use crate::{Digest, Error};

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";

/// A normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    /// Full repository name including the domain, e.g. `docker.io/library/ubuntu`.
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn invalid() -> Error {
    Error::invalid("invalid reference format")
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host.len() > 2;
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// Split a name into (domain, remainder) as Docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == LEGACY_DOMAIN {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let rest = if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        format!("{OFFICIAL_PREFIX}{rest}")
    } else {
        rest
    };
    (domain, rest)
}

/// Normalise a bare repository name (no tag or digest).
pub fn normalize_name(name: &str) -> Result<String, Error> {
    let r = Reference::parse(name)?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(invalid());
    }
    Ok(r.name)
}

impl Reference {
    /// Parse and normalise; a missing tag stays `None` (see [`Reference::with_default_tag`]).
    pub fn parse(s: &str) -> Result<Reference, Error> {
        if s.is_empty() {
            return Err(invalid());
        }
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::invalid(format!(
                "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
            )));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| invalid())?)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(invalid());
        }
        if name.is_empty() || name.len() > 255 {
            return Err(invalid());
        }
        let (domain, path) = split_domain(name);
        if path.to_lowercase() != path {
            return Err(Error::invalid(format!(
                "invalid reference format: repository name ({path}) must be lowercase"
            )));
        }
        if !valid_domain(&domain) || !path.split('/').all(valid_component) {
            return Err(invalid());
        }
        Ok(Reference {
            name: format!("{domain}/{path}"),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Docker's rule: a reference without tag or digest means `:latest`.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_string());
        }
        self
    }

    pub fn domain(&self) -> &str {
        self.name
            .split_once('/')
            .map(|(d, _)| d)
            .unwrap_or(&self.name)
    }
    pub fn path(&self) -> &str {
        self.name.split_once('/').map(|(_, p)| p).unwrap_or("")
    }

    /// The short form Docker shows: `ubuntu`, `foo/bar`, `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        familiar(&self.name)
    }

    /// `familiar_name:tag`, or `familiar_name@digest`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

/// Familiar form of a full repository name.
pub fn familiar(name: &str) -> String {
    match name.strip_prefix("docker.io/") {
        Some(p) => p.strip_prefix(OFFICIAL_PREFIX).unwrap_or(p).to_string(),
        None => name.to_string(),
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().with_default_tag().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(norm("foo/bar:1.0"), "docker.io/foo/bar:1.0");
        assert_eq!(
            norm("index.docker.io/ubuntu"),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(norm("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("quay.io/x/y"), "quay.io/x/y:latest");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            Reference::parse("docker.io/library/ubuntu:22.04")
                .unwrap()
                .familiar(),
            "ubuntu:22.04"
        );
        assert_eq!(
            Reference::parse("foo/bar").unwrap().familiar_name(),
            "foo/bar"
        );
    }

    #[test]
    fn docker_errors() {
        assert_eq!(
            Reference::parse("Ubuntu").unwrap_err().message,
            "invalid reference format: repository name (library/Ubuntu) must be lowercase"
        );
        assert_eq!(
            Reference::parse("a:b:c").unwrap_err().message,
            "invalid reference format"
        );
        assert_eq!(
            Reference::parse("").unwrap_err().message,
            "invalid reference format"
        );
        assert!(Reference::parse("a/").is_err());
        assert!(Reference::parse("a:").is_err());
        assert!(Reference::parse("-a").is_err());
        assert!(Reference::parse(&"a".repeat(64).replace('a', "b")).is_err());
    }
}
