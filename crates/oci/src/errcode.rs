//! OCI error codes, the HTTP status each one answers with, and the JSON error envelope
//! `{"errors":[{"code":..., "message":..., "detail":...}]}` of the distribution spec.
//!
//! This is the one table that maps a code to a status; every error ferry answers goes
//! through [`OciError`].

use http::StatusCode;
use serde::Serialize;

/// An error code of the OCI distribution spec (plus distribution's `UNAVAILABLE`/`UNKNOWN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Provided digest did not match uploaded content, or is malformed.
    DigestInvalid,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository (or registry) name not known to the registry.
    NameUnknown,
    /// Invalid tag in a reference.
    TagInvalid,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported (ferry is pull-only).
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// The requested range cannot be satisfied.
    RangeInvalid,
    /// A dependency (upstream registry, storage) is unavailable.
    Unavailable,
    /// Anything else.
    Unknown,
}

impl ErrorCode {
    /// The code string of the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status this code answers with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::DigestInvalid
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::TagInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Parses a code string, as found in an upstream's error body.
    pub fn from_code(s: &str) -> Option<Self> {
        const ALL: [ErrorCode; 14] = [
            ErrorCode::BlobUnknown,
            ErrorCode::DigestInvalid,
            ErrorCode::ManifestInvalid,
            ErrorCode::ManifestUnknown,
            ErrorCode::NameInvalid,
            ErrorCode::NameUnknown,
            ErrorCode::TagInvalid,
            ErrorCode::Unauthorized,
            ErrorCode::Denied,
            ErrorCode::Unsupported,
            ErrorCode::TooManyRequests,
            ErrorCode::RangeInvalid,
            ErrorCode::Unavailable,
            ErrorCode::Unknown,
        ];
        ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One OCI error: a code, a human message, and optional structured detail.
#[derive(Debug, Clone, PartialEq)]
pub struct OciError {
    /// The code (decides the HTTP status).
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// Optional machine-readable detail.
    pub detail: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

impl OciError {
    /// An error with a message and no detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        OciError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds structured detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON body of the spec's error envelope.
    pub fn to_json(&self) -> Vec<u8> {
        let env = Envelope {
            errors: [Entry {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        };
        serde_json::to_vec(&env).expect("error envelope serializes")
    }
}

impl std::fmt::Display for OciError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for OciError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let e = OciError::new(
            ErrorCode::NameUnknown,
            "registry \"foo.io\" is not configured",
        );
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_UNKNOWN");
        assert_eq!(
            v["errors"][0]["message"],
            "registry \"foo.io\" is not configured"
        );
        assert!(v["errors"][0].get("detail").is_none());
    }

    #[test]
    fn codes_round_trip() {
        for c in ["BLOB_UNKNOWN", "TOOMANYREQUESTS", "DENIED", "UNKNOWN"] {
            assert_eq!(ErrorCode::from_code(c).unwrap().as_str(), c);
        }
        assert_eq!(ErrorCode::from_code("NOPE"), None);
        assert_eq!(ErrorCode::TooManyRequests.status().as_u16(), 429);
    }
}
