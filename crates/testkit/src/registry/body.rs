//! Content answers: digest headers, single ranges, and the body faults (cuts, wrong bytes,
//! delays, throttling, stalls).

use super::*;

/// Parses a single `bytes=a-b` / `bytes=a-` / `bytes=-n` range against `size`: the half-open
/// byte interval, or Err for an unsatisfiable or multi-range header.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), ()> {
    let spec = value.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(size)
        };
        (start, end)
    };
    if start >= end {
        return Err(());
    }
    Ok((start, end))
}

/// Answers GET/HEAD for content with digest headers, single ranges and body faults.
pub(super) async fn serve_content(
    shared: &Shared,
    source: Source,
    digest: &str,
    media_type: &str,
    headers: &HeaderMap,
    head: bool,
    faults: &[Fault],
) -> Response {
    let size = source.size();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| !faults.contains(&Fault::IgnoreRange));
    let (status, start, end) = match range {
        Some(range) => match parse_range(range, size) {
            Ok((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
            Err(()) => {
                let mut r = oci_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "UNKNOWN",
                    "range not satisfiable",
                );
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("header"),
                );
                return r;
            }
        },
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, end - start)
        .header("Docker-Content-Digest", digest)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    if head {
        return builder.body(Body::empty()).expect("response");
    }
    let body = BodyState {
        source,
        pos: start,
        end,
        sent: 0,
        faults: faults.to_vec(),
        started: false,
        finished: false,
        stalled: false,
        release: shared.release.subscribe(),
        release_seen: *shared.release.borrow(),
        file: None,
    };
    let stream = futures_util::stream::unfold(body, next_chunk);
    builder.body(Body::from_stream(stream)).expect("response")
}

struct BodyState {
    source: Source,
    pos: u64,
    end: u64,
    sent: u64,
    faults: Vec<Fault>,
    started: bool,
    finished: bool,
    stalled: bool,
    release: tokio::sync::watch::Receiver<u64>,
    release_seen: u64,
    file: Option<tokio::fs::File>,
}

impl BodyState {
    fn find<T>(&self, f: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        self.faults.iter().find_map(f)
    }

    async fn read(&mut self, n: usize) -> std::io::Result<Bytes> {
        match &self.source {
            Source::Memory(b) => Ok(b.slice(self.pos as usize..self.pos as usize + n)),
            Source::Pattern { seed, .. } => Ok(Bytes::from(pattern_bytes(*seed, self.pos, n))),
            Source::File { path, .. } => {
                if self.file.is_none() {
                    let mut f = tokio::fs::File::open(path).await?;
                    f.seek(std::io::SeekFrom::Start(self.pos)).await?;
                    self.file = Some(f);
                }
                let mut buf = vec![0; n];
                self.file
                    .as_mut()
                    .expect("file opened")
                    .read_exact(&mut buf)
                    .await?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// Produces the next body chunk, applying the body faults.
async fn next_chunk(mut st: BodyState) -> Option<(std::io::Result<Bytes>, BodyState)> {
    if st.finished || st.pos >= st.end {
        return None;
    }
    if !st.started {
        st.started = true;
        if let Some(d) = st.find(|f| match f {
            Fault::DelayBody(d) => Some(*d),
            _ => None,
        }) {
            tokio::time::sleep(d).await;
        }
    }
    let mut n = CHUNK.min((st.end - st.pos) as usize);
    let throttle = st.find(|f| match f {
        Fault::Throttle(bps) => Some((*bps).max(1)),
        _ => None,
    });
    if let Some(bps) = throttle {
        n = n.min((bps / 20).max(1) as usize);
    }
    if let Some(cut) = st.find(|f| match f {
        Fault::CutAfter(c) => Some(*c),
        _ => None,
    }) {
        if st.sent >= cut {
            st.finished = true;
            // Let hyper flush the headers and bytes sent so far: an error aborts the connection
            // without flushing what is still buffered.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Some((Err(std::io::Error::other("injected fault: cut")), st));
        }
        n = n.min((cut - st.sent) as usize);
    }
    if let Some(stall) = st.find(|f| match f {
        Fault::StallAfter(s) => Some(*s),
        _ => None,
    }) && !st.stalled
    {
        if st.sent >= stall {
            st.stalled = true;
            let seen = st.release_seen;
            if st.release.wait_for(|g| *g > seen).await.is_err() {
                return None;
            }
        } else {
            n = n.min((stall - st.sent) as usize);
        }
    }
    let chunk = match st.read(n).await {
        Ok(c) => c,
        Err(e) => {
            st.finished = true;
            return Some((Err(e), st));
        }
    };
    let chunk = if st.sent == 0 && st.faults.contains(&Fault::WrongBytes) {
        let mut v = chunk.to_vec();
        v[0] ^= 0xff;
        Bytes::from(v)
    } else {
        chunk
    };
    if let Some(bps) = throttle {
        tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / bps as f64)).await;
    }
    st.pos += chunk.len() as u64;
    st.sent += chunk.len() as u64;
    Some((Ok(chunk), st))
}
