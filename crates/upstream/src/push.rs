//! The push side of the distribution API, for `ferry copy`: blob existence checks, cross-
//! repository mounts, blob uploads (one streaming `PUT`, or `PATCH` chunks then `PUT`) and
//! manifest `PUT`s.
//!
//! An [`Upstream`] made with [`Upstream::for_push`] asks token services for `pull,push`. Requests
//! go to the registry's own URL (never to a mirror), with credentials only while the upload
//! `Location` stays on that origin. A streamed body cannot be sent twice, so every upload
//! starts with a bodyless `POST` that settles the auth challenge first; a transfer that fails
//! half-way is retried by the caller from the start with a fresh upload session.
//!
//! Blob bodies stream through: memory per upload is a few network chunks, never a layer.

use std::sync::Arc;

use bytes::Bytes;
use ferry_oci::{Digest, Reference, RepoName};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{Method, StatusCode, header};
use reqwest::Response;
use url::Url;

use crate::client::SHORT_TIMEOUT;
use crate::error::{UpstreamError, retry_after};
use crate::{Result, Upstream};

/// A stream of blob bytes to upload.
pub type PushStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What a mount attempt achieved.
#[derive(Debug)]
pub enum Mount {
    /// The registry linked the blob into the repository: nothing to upload.
    Mounted,
    /// The registry declined and opened an upload session instead.
    Session(UploadSession),
}

/// An open upload session (the registry's `Location` for the next request).
#[derive(Debug, Clone)]
pub struct UploadSession {
    location: Url,
}

/// A request body: replayable bytes, or a stream of known length sent once.
enum PushBody {
    Bytes(Bytes),
    Stream(PushStream, u64),
}

/// One push-side request.
struct PushRequest<'a> {
    method: Method,
    url: Url,
    repo: &'a str,
    extra_scope: Option<String>,
    content_type: Option<&'a str>,
    content_range: Option<String>,
    kind: &'static str,
}

impl Upstream {
    /// This client with tokens that also allow pushing (for a copy destination).
    pub fn for_push(mut self) -> Self {
        self.client.actions = "pull,push";
        self
    }

    /// Whether `repo` already has blob `digest` (`HEAD`).
    pub async fn has_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        match self.blob_head(repo, digest).await {
            Ok(_) => Ok(true),
            Err(UpstreamError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Asks the registry to link blob `digest` from repository `from` into `repo`
    /// (`POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Mount> {
        let ep = self.push_endpoint();
        let from_name = self.client.endpoints[ep].repository(from.as_str());
        let mut url = self.api_url(&format!("{repo}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", &from_name);
        let req = PushRequest {
            extra_scope: Some(format!("repository:{from_name}:pull")),
            ..PushRequest::new(Method::POST, url, repo.as_str(), "blob_mount")
        };
        let resp = self.push_send(req, PushBody::empty()).await?;
        if resp.status() == StatusCode::CREATED {
            return Ok(Mount::Mounted);
        }
        Ok(Mount::Session(self.session_from(&resp)?))
    }

    /// Opens an upload session (`POST /v2/<repo>/blobs/uploads/`).
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadSession> {
        let url = self.api_url(&format!("{repo}/blobs/uploads/"))?;
        let req = PushRequest::new(Method::POST, url, repo.as_str(), "blob_upload");
        let resp = self.push_send(req, PushBody::empty()).await?;
        self.session_from(&resp)
    }

    /// Uploads blob `digest` of `size` bytes from `body` into an open session: one streaming
    /// `PUT` when `size <= chunk_size`, else `PATCH` requests of `chunk_size` bytes and a final
    /// `PUT`. The registry checks the digest; a mismatch is its `DIGEST_INVALID` error.
    pub async fn upload_blob(
        &self,
        repo: &RepoName,
        session: UploadSession,
        digest: &Digest,
        size: u64,
        body: PushStream,
        chunk_size: u64,
    ) -> Result<()> {
        let chunk_size = chunk_size.max(1);
        let (session, last) = if size <= chunk_size {
            (session, PushBody::Stream(body, size))
        } else {
            let session = self
                .upload_chunks(repo, session, size, body, chunk_size)
                .await?;
            (session, PushBody::empty())
        };
        let mut url = session.location;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let req = PushRequest {
            content_type: Some("application/octet-stream"),
            ..PushRequest::new(Method::PUT, url, repo.as_str(), "blob_upload")
        };
        let resp = self.push_send(req, last).await?;
        if resp.status() != StatusCode::CREATED && resp.status() != StatusCode::ACCEPTED {
            return Err(self.client.invalid(&format!(
                "blob upload answered {} instead of 201 Created",
                resp.status()
            )));
        }
        Ok(())
    }

    async fn upload_chunks(
        &self,
        repo: &RepoName,
        mut session: UploadSession,
        size: u64,
        body: PushStream,
        chunk_size: u64,
    ) -> Result<UploadSession> {
        let source = Arc::new(tokio::sync::Mutex::new(Source {
            stream: body,
            leftover: None,
        }));
        let mut offset = 0;
        while offset < size {
            let len = chunk_size.min(size - offset);
            let req = PushRequest {
                content_type: Some("application/octet-stream"),
                content_range: Some(format!("{offset}-{}", offset + len - 1)),
                ..PushRequest::new(
                    Method::PATCH,
                    session.location.clone(),
                    repo.as_str(),
                    "blob_upload",
                )
            };
            let body = PushBody::Stream(take(source.clone(), len), len);
            let resp = self.push_send(req, body).await?;
            session = self.session_from(&resp)?;
            offset += len;
        }
        Ok(session)
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the exact `bytes` and `media_type`; checks
    /// that the registry computed the same digest. Returns that digest.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest> {
        let expected = Digest::sha256_of(&bytes);
        let url = self.api_url(&format!("{repo}/manifests/{reference}"))?;
        let req = PushRequest {
            content_type: Some(media_type),
            ..PushRequest::new(Method::PUT, url, repo.as_str(), "manifest_put")
        };
        let resp = self.push_send(req, PushBody::Bytes(bytes)).await?;
        let reported = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v.trim()).ok());
        match reported {
            Some(d) if d != expected && d.algorithm() == expected.algorithm() => {
                Err(self.client.invalid(&format!(
                    "registry stored manifest {reference} as {d}, expected {expected}"
                )))
            }
            _ => Ok(expected),
        }
    }

    /// Pushes go to the registry itself (the last endpoint), never to a pull mirror.
    fn push_endpoint(&self) -> usize {
        self.client.endpoints.len() - 1
    }

    fn api_url(&self, tail: &str) -> Result<Url> {
        let url = self.client.endpoints[self.push_endpoint()].url(tail);
        Url::parse(&url).map_err(|e| self.client.invalid(&format!("bad URL {url:?}: {e}")))
    }

    fn session_from(&self, resp: &Response) -> Result<UploadSession> {
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                self.client
                    .invalid("upload answer without a Location header")
            })?;
        let location = resp
            .url()
            .join(location)
            .map_err(|e| self.client.invalid(&format!("bad upload Location: {e}")))?;
        Ok(UploadSession { location })
    }

    /// Sends a push request, answering one auth challenge when the body can be sent again.
    async fn push_send(&self, req: PushRequest<'_>, body: PushBody) -> Result<Response> {
        let ep = self.push_endpoint();
        let account = self.client.accounts.pick(&[]).map_or(0, |s| s.account);
        let same_origin = origin(&req.url) == self.client.endpoints[ep].origin;
        let mut scope = self.client.scope(ep, req.repo);
        if let Some(extra) = &req.extra_scope {
            scope = format!("{scope} {extra}");
        }
        let mut body = Some(body);
        for attempt in 0..2 {
            let auth = if same_origin {
                self.client
                    .auth_header_for(ep, account, scope.clone())
                    .await?
            } else {
                None
            };
            let (len, sent, replay) = body.take().expect("a body per attempt").into_parts();
            let resp = self.execute_push(&req, len, sent, auth).await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED
                && attempt == 0
                && same_origin
                && let Some(b) = replay
            {
                self.client
                    .learn_challenge(ep, account, req.repo, &resp)
                    .await?;
                self.client
                    .tokens
                    .invalidate(&(ep, account, scope.clone()))
                    .await;
                body = Some(PushBody::Bytes(b));
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(UpstreamError::RateLimited {
                    upstream: self.client.name.clone(),
                    retry_after: retry_after(resp.headers()),
                });
            }
            return Err(self.client.error_from(resp, req.kind).await);
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn execute_push(
        &self,
        req: &PushRequest<'_>,
        len: u64,
        body: SendBody,
        auth: Option<String>,
    ) -> Result<Response> {
        let mut b = self
            .client
            .http
            .request(req.method.clone(), req.url.clone())
            .header(header::CONTENT_LENGTH, len);
        if let Some(ct) = req.content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        if let Some(r) = &req.content_range {
            b = b.header(header::CONTENT_RANGE, r);
        }
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        let body = match body {
            SendBody::Bytes(bytes) => {
                b = b.timeout(SHORT_TIMEOUT);
                reqwest::Body::from(bytes)
            }
            SendBody::Stream(s) => reqwest::Body::wrap_stream(s),
        };
        self.client.timed(req.kind, b.body(body)).await
    }
}

impl<'a> PushRequest<'a> {
    fn new(method: Method, url: Url, repo: &'a str, kind: &'static str) -> Self {
        PushRequest {
            method,
            url,
            repo,
            extra_scope: None,
            content_type: None,
            content_range: None,
            kind,
        }
    }
}

impl PushBody {
    fn empty() -> Self {
        PushBody::Bytes(Bytes::new())
    }

    /// Length, what to send, and a copy to send again if the body is replayable.
    fn into_parts(self) -> (u64, SendBody, Option<Bytes>) {
        match self {
            PushBody::Bytes(b) => (b.len() as u64, SendBody::Bytes(b.clone()), Some(b)),
            PushBody::Stream(s, n) => (n, SendBody::Stream(s), None),
        }
    }
}

/// A body on its way out.
enum SendBody {
    Bytes(Bytes),
    Stream(PushStream),
}

fn origin(url: &Url) -> String {
    match url.port() {
        Some(p) => format!(
            "{}://{}:{p}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
    }
}

/// The upload source shared by the chunk bodies cut from it.
struct Source {
    stream: PushStream,
    leftover: Option<Bytes>,
}

/// A body of exactly `len` bytes taken from the front of `source`.
fn take(source: Arc<tokio::sync::Mutex<Source>>, len: u64) -> PushStream {
    futures_util::stream::unfold((source, len), |(source, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let mut src = source.lock().await;
        let mut chunk = match src.leftover.take() {
            Some(b) => b,
            None => match src.stream.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => return Some((Err(e), (source.clone(), 0))),
                None => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob source ended early",
                    );
                    return Some((Err(e), (source.clone(), 0)));
                }
            },
        };
        if chunk.len() as u64 > remaining {
            src.leftover = Some(chunk.split_off(remaining as usize));
        }
        drop(src);
        let left = remaining - chunk.len() as u64;
        Some((Ok(chunk), (source, left)))
    })
    .boxed()
}

/// A sensible chunk size for callers: blobs above it are uploaded in `PATCH` requests of
/// this size (some proxies and registries cap request bodies).
pub const DEFAULT_CHUNK_SIZE: u64 = 64 * 1024 * 1024;

#[cfg(test)]
mod tests;
