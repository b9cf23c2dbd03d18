//! The grammar of repository names, tags and references, and the routing of
//! request paths to endpoints. Names are checked here, before any handler
//! sees them, so no path trick (`..`, `%2F`, empty components, upper case)
//! reaches the store.

use berth_types::Digest;

use crate::error::{Code, RegError, RegResult};

/// Longest accepted repository name (the spec: "less than 256 characters").
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag (the spec's `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;

/// True if `name` matches
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
/// and is at most [`MAX_NAME_LEN`] bytes.
pub fn valid_repo_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false; // empty component, leading or doubled separator
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// True if `t` is a valid tag.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// Parses a digest from a path or query; only sha256 is supported.
pub fn parse_digest(s: &str) -> RegResult<Digest> {
    s.parse::<Digest>().map_err(|e| {
        RegError::new(Code::DigestInvalid, format!("invalid digest {s:?}: {e}"))
            .detail(serde_json::json!({ "digest": s }))
    })
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

impl ManifestRef {
    pub fn parse(s: &str) -> RegResult<Self> {
        if s.contains(':') {
            return Ok(ManifestRef::Digest(parse_digest(s)?));
        }
        if valid_tag(s) {
            Ok(ManifestRef::Tag(s.to_string()))
        } else {
            Err(RegError::new(
                Code::ManifestInvalid,
                format!("invalid tag {s:?}: a tag matches [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"),
            ))
        }
    }
}

impl std::fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestRef::Tag(t) => f.write_str(t),
            ManifestRef::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(String),
    /// `/v2/<name>/manifests/<reference>` (reference not yet parsed)
    Manifest(String, String),
    /// `/v2/<name>/blobs/<digest>` (digest not yet parsed)
    Blob(String, String),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(String),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(String, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(String, String),
    /// The token endpoint of the bearer-token protocol.
    Token,
    Health,
    Metrics,
}

impl Route {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(_) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(_) => "upload_start",
            Route::Upload(..) => "upload",
            Route::Referrers(..) => "referrers",
            Route::Token => "token",
            Route::Health => "health",
            Route::Metrics => "metrics",
        }
    }

    /// The repository this route is about, if any.
    pub fn repo(&self) -> Option<&str> {
        match self {
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
            _ => None,
        }
    }
}

/// Maps a request path to a route. Unknown paths are `NotFound`; a path of
/// a known shape with an invalid repository name is `NAME_INVALID`.
pub fn route(path: &str) -> RegResult<Route> {
    match path {
        "/v2" | "/v2/" => return Ok(Route::Base),
        "/v2/_catalog" => return Ok(Route::Catalog),
        "/token" => return Ok(Route::Token),
        "/healthz" => return Ok(Route::Health),
        "/metrics" => return Ok(Route::Metrics),
        _ => {}
    }
    let not_found = || RegError::new(Code::NotFound, format!("no endpoint at {path}"));
    let rest = path.strip_prefix("/v2/").ok_or_else(not_found)?;
    let mut segs = Vec::new();
    for s in rest.split('/') {
        let d = percent_decode(s).ok_or_else(not_found)?;
        if d.contains('/') {
            return Err(RegError::new(
                Code::NameInvalid,
                format!("invalid path {path:?}: encoded slash"),
            ));
        }
        segs.push(d);
    }
    let n = segs.len();
    let name = |k: usize| -> RegResult<String> {
        let name = segs[..k].join("/");
        if valid_repo_name(&name) {
            Ok(name)
        } else {
            Err(RegError::new(
                Code::NameInvalid,
                format!("invalid repository name {name:?}"),
            )
            .detail(serde_json::json!({ "name": name })))
        }
    };
    let last = |i: usize| segs[n - i].as_str();
    if n >= 3 && last(2) == "tags" && last(1) == "list" {
        return Ok(Route::Tags(name(n - 2)?));
    }
    if n >= 4 && last(3) == "blobs" && last(2) == "uploads" {
        return Ok(if last(1).is_empty() {
            Route::UploadStart(name(n - 3)?)
        } else {
            Route::Upload(name(n - 3)?, last(1).to_string())
        });
    }
    if n >= 3 && last(2) == "blobs" && last(1) == "uploads" {
        return Ok(Route::UploadStart(name(n - 2)?));
    }
    if n >= 3 && !last(1).is_empty() {
        match last(2) {
            "blobs" => return Ok(Route::Blob(name(n - 2)?, last(1).to_string())),
            "manifests" => return Ok(Route::Manifest(name(n - 2)?, last(1).to_string())),
            "referrers" => return Ok(Route::Referrers(name(n - 2)?, last(1).to_string())),
            _ => {}
        }
    }
    Err(not_found())
}

/// Decodes `%XX` escapes; `None` for a malformed escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes a query string into (key, value) pairs (`+` is a space).
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_grammar() {
        for ok in [
            "a",
            "library/busybox",
            "a.b_c__d---e/f0",
            "x/y/z",
            "9",
            &"a".repeat(255),
        ] {
            assert!(valid_repo_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "../x",
            "a/../b",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a_",
            ".",
            "a b",
            "a%2fb",
            &"a".repeat(256),
        ] {
            assert!(!valid_repo_name(bad), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_grammar() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_v1.2-rc.3"));
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag(".hidden"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag("a/b"));
        assert!(!valid_tag(""));
    }

    #[test]
    fn routes() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(route("/v2/").unwrap(), Route::Base);
        assert_eq!(route("/v2").unwrap(), Route::Base);
        assert_eq!(route("/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            route("/v2/a/b/tags/list").unwrap(),
            Route::Tags("a/b".into())
        );
        assert_eq!(
            route("/v2/a/manifests/latest").unwrap(),
            Route::Manifest("a".into(), "latest".into())
        );
        assert_eq!(
            route(&format!("/v2/a/blobs/{}", d.replace(':', "%3A"))).unwrap(),
            Route::Blob("a".into(), d.into())
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/").unwrap(),
            Route::UploadStart("a".into())
        );
        assert_eq!(
            route("/v2/a/blobs/uploads").unwrap(),
            Route::UploadStart("a".into())
        );
        assert_eq!(
            route("/v2/x/blobs/uploads/abc").unwrap(),
            Route::Upload("x".into(), "abc".into())
        );
        assert_eq!(
            route(&format!("/v2/a/referrers/{d}")).unwrap(),
            Route::Referrers("a".into(), d.into())
        );
        // a repository may be named like an endpoint word
        assert_eq!(
            route("/v2/manifests/manifests/x").unwrap(),
            Route::Manifest("manifests".into(), "x".into())
        );
        assert_eq!(
            route("/v2/../x/manifests/a").unwrap_err().code,
            Code::NameInvalid
        );
        assert_eq!(
            route("/v2/a%2F..%2Fb/manifests/a").unwrap_err().code,
            Code::NameInvalid
        );
        assert_eq!(
            route("/v2/A/manifests/a").unwrap_err().code,
            Code::NameInvalid
        );
        assert_eq!(route("/v2/a/other/x").unwrap_err().code, Code::NotFound);
        assert_eq!(route("/v1/a").unwrap_err().code, Code::NotFound);
        assert_eq!(route("/v2/a/manifests/").unwrap_err().code, Code::NotFound);
    }

    #[test]
    fn references() {
        assert_eq!(
            ManifestRef::parse("v1").unwrap(),
            ManifestRef::Tag("v1".into())
        );
        assert_eq!(
            ManifestRef::parse("sha256:abc").unwrap_err().code,
            Code::DigestInvalid
        );
        assert_eq!(
            ManifestRef::parse("sha512:abc").unwrap_err().code,
            Code::DigestInvalid
        );
        assert_eq!(
            ManifestRef::parse("-x").unwrap_err().code,
            Code::ManifestInvalid
        );
    }

    #[test]
    fn query_strings() {
        let q = query_pairs(Some("n=2&last=a%2Bb&scope=repository%3Afoo%3Apull&x"));
        assert_eq!(q[0], ("n".into(), "2".into()));
        assert_eq!(q[1], ("last".into(), "a+b".into()));
        assert_eq!(q[2], ("scope".into(), "repository:foo:pull".into()));
        assert_eq!(q[3], ("x".into(), "".into()));
        assert_eq!(query_escape("a b:c/d"), "a%20b%3Ac%2Fd");
    }
}
