//! Typed builders of the pull API's successful answers: each kind of answer sets its headers
//! in one place (`Content-Type`, `Content-Length`, `Docker-Content-Digest`, ranges, links), so
//! handlers only say what they answer.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use ferry_oci::Digest;
use ferry_oci::range::ByteRange;
use http::{HeaderValue, StatusCode, header};

const DIGEST_HEADER: &str = "docker-content-digest";

fn digest_value(d: &Digest) -> HeaderValue {
    HeaderValue::from_str(d.as_str()).expect("a digest is a header value")
}

/// A manifest: its media type, length, digest and `ETag`; `body` is empty for `HEAD`.
pub fn manifest(media_type: &str, len: usize, digest: &Digest, body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(DIGEST_HEADER, digest_value(digest));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// A blob of `size` bytes, or the `range` of it (206 with `Content-Range`); `body` is empty
/// for `HEAD`.
pub fn blob(digest: &Digest, size: u64, range: Option<ByteRange>, body: Body) -> Response {
    let (status, len) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.len()),
        None => (StatusCode::OK, size),
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(DIGEST_HEADER, digest_value(digest));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(r) = range
        && let Ok(v) = HeaderValue::from_str(&r.content_range(size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// A redirect of a blob download to a presigned store URL.
pub fn redirect(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(v) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => crate::error::ApiError::internal(format!("unusable redirect URL {url:?}"))
            .into_response(),
    }
}

/// A JSON document (`GET /v2/`, tag lists) with an optional `Link` to the next page.
pub fn json(body: String, link: Option<String>) -> Response {
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
}

/// A referrers index: its content type and, when the `artifactType` filter was applied,
/// `OCI-Filters-Applied`.
pub fn referrers(content_type: &str, filtered: bool, body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if filtered {
        h.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Digest {
        Digest::sha256_of(b"x")
    }

    #[test]
    fn blob_answers_carry_length_digest_and_ranges() {
        let full = blob(&d(), 10, None, Body::empty());
        assert_eq!(full.status(), StatusCode::OK);
        assert_eq!(full.headers()[header::CONTENT_LENGTH], "10");
        assert_eq!(full.headers()[DIGEST_HEADER], d().as_str());
        let part = blob(
            &d(),
            10,
            Some(ByteRange { start: 2, end: 5 }),
            Body::empty(),
        );
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.headers()[header::CONTENT_LENGTH], "4");
        assert_eq!(part.headers()[header::CONTENT_RANGE], "bytes 2-5/10");
    }

    #[test]
    fn manifests_carry_their_media_type_and_etag() {
        let m = manifest(
            "application/vnd.oci.image.index.v1+json",
            3,
            &d(),
            Body::empty(),
        );
        assert_eq!(
            m.headers()[header::CONTENT_TYPE],
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(m.headers()[header::ETAG], format!("\"{}\"", d()).as_str());
    }

    #[test]
    fn a_redirect_that_no_header_can_carry_is_an_error() {
        assert_eq!(
            redirect("https://s3/x?sig=1").status(),
            StatusCode::TEMPORARY_REDIRECT
        );
        assert_eq!(
            redirect("bad\nurl").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
