//! Registry errors: one code per failure the distribution spec names, and the
//! one function ([`Code::status`]) that maps a code to its HTTP status.

use std::fmt;

use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

/// An error code of the distribution spec (plus the few HTTP-level failures
/// the spec leaves to the implementation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    /// The operation is not supported here (or by this method): 405.
    Unsupported,
    TooManyRequests,
    /// A chunk out of order or a bad `Range`: 416.
    RangeNotSatisfiable,
    /// A manifest (or another bounded body) over its size limit: 413.
    TooLarge,
    /// A path no endpoint serves: 404.
    NotFound,
    /// A request that is malformed in a way no other code covers: 400.
    BadRequest,
    /// The upstream of a pull-through cache failed: 502.
    Upstream,
    Internal,
}

impl Code {
    /// The code string of the JSON error body.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid | Code::RangeNotSatisfiable => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid | Code::TooLarge => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported | Code::NotFound | Code::BadRequest => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Upstream | Code::Internal => "UNKNOWN",
        }
    }

    /// The HTTP status of a code: the only place this mapping lives.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown
            | Code::NotFound => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid
            | Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Upstream => StatusCode::BAD_GATEWAY,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failed request: its code, a message for the user (lower case, naming
/// the object), optional detail, and headers the response must carry
/// (`WWW-Authenticate`, `Range`, `Allow`, …).
#[derive(Debug)]
pub struct RegError {
    pub code: Code,
    pub message: String,
    pub detail: Option<Box<Value>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

pub type RegResult<T> = Result<T, RegError>;

impl RegError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RegError {
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }
    pub fn detail(mut self, d: Value) -> Self {
        self.detail = Some(Box::new(d));
        self
    }
    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, v));
        }
        self
    }
    pub fn internal(message: impl fmt::Display) -> Self {
        RegError::new(Code::Internal, message.to_string())
    }
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
    /// The spec's JSON error body.
    pub fn body(&self) -> Value {
        let mut e = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(d) = &self.detail {
            e["detail"] = (**d).clone();
        }
        json!({ "errors": [e] })
    }
}

impl fmt::Display for RegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for RegError {}

impl From<std::io::Error> for RegError {
    fn from(e: std::io::Error) -> Self {
        RegError::internal(format!("storage: {e}"))
    }
}

impl From<berth_types::Error> for RegError {
    fn from(e: berth_types::Error) -> Self {
        use berth_types::ErrorKind as K;
        let code = match e.kind {
            K::InvalidArgument => Code::BadRequest,
            K::NotFound => Code::NotFound,
            K::PermissionDenied => Code::Denied,
            K::Unauthorized => Code::Unauthorized,
            K::NotImplemented => Code::Unsupported,
            K::Conflict | K::Unavailable | K::Internal => Code::Internal,
        };
        RegError::new(code, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_spec_statuses() {
        assert_eq!(Code::BlobUnknown.status(), 404);
        assert_eq!(Code::DigestInvalid.status(), 400);
        assert_eq!(Code::ManifestBlobUnknown.status(), 400);
        assert_eq!(Code::RangeNotSatisfiable.status(), 416);
        assert_eq!(Code::TooLarge.status(), 413);
        assert_eq!(Code::Unauthorized.status(), 401);
        assert_eq!(Code::Denied.status(), 403);
        let body = RegError::new(Code::NameUnknown, "repository foo not known").body();
        assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
        assert_eq!(body["errors"][0]["message"], "repository foo not known");
    }
}
