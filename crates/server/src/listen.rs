//! The accept loop: one task per connection, HTTP/1.1 and HTTP/2 (prior knowledge) on the same
//! port, a bound on the request head, and graceful shutdown — on `shutdown`, stop accepting, let
//! in-flight responses finish for up to `grace`, then close what is left.
//!
//! Every accepted connection first passes the connection caps ([`crate::conn_limits`]); a
//! refused plain-TCP connection gets a one-shot HTTP error and is closed at once. The rest are
//! served through [`TimedIo`], which closes connections that are slow to send a request head,
//! idle between requests, or never read their response ([`crate::timed_io`]); a TLS handshake
//! must also finish within the head timeout.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use ferry_storage::FileMaps;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::conn_limits::{ConnLimits, ConnPermit};
use crate::sendfile::SendfileStream;
use crate::timed_io::{ActiveRequest, ConnClock, TimedIo, Timeouts};
use ferry_metrics::{Metrics, ReasonLabels};
use std::sync::Arc;

/// Smallest hyper buffer limit: one blob chunk (`ferry_storage::chunks::CHUNK`).
const MIN_BUF: usize = 256 * 1024;

/// Headers hyper parses at most; the router refuses more than [`crate::MAX_HEADER_COUNT`].
const MAX_HEADERS: usize = 1000;

/// How connections are served.
#[derive(Clone)]
pub struct ListenOptions {
    /// Largest request head; larger ones get 431.
    pub max_header_bytes: usize,
    /// Time in-flight responses get after shutdown starts.
    pub grace: Duration,
    /// Where the store registers memory-mapped blobs; plain-TCP connections then send those
    /// with `sendfile` ([`crate::sendfile`]).
    pub file_maps: Option<FileMaps>,
    /// Head, idle and send timeouts of every connection.
    pub timeouts: Timeouts,
    /// Caps on open connections.
    pub limits: ConnLimits,
    /// Where refused and timed-out connections are counted.
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            max_header_bytes: 64 * 1024,
            grace: Duration::from_secs(30),
            file_maps: None,
            timeouts: Timeouts {
                header: Duration::from_secs(10),
                idle: Duration::from_secs(60),
                send: Duration::from_secs(60),
            },
            limits: ConnLimits::unlimited(),
            metrics: None,
        }
    }
}

/// Upgrades an accepted TCP stream (for TLS); `None` drops the connection.
pub type Acceptor = std::sync::Arc<
    dyn Fn(tokio::net::TcpStream) -> futures_util::future::BoxFuture<'static, Option<Box<dyn Io>>>
        + Send
        + Sync,
>;

/// A connection stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Serves `app` on `listener` until `shutdown` fires, then drains connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ListenOptions,
    acceptor: Option<Acceptor>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let builder = http_builder(&opts);
    let opts = Arc::new(opts);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = admit(&opts, &stream, peer, acceptor.is_some()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            app: app.clone(),
            builder: builder.clone(),
            acceptor: acceptor.clone(),
            opts: opts.clone(),
            peer,
            permit,
        };
        let watcher = graceful.watcher();
        tokio::spawn(conn.serve(stream, watcher));
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(opts.grace) => tracing::warn!(grace = ?opts.grace, "shutdown grace period over; closing remaining connections"),
    }
}

fn http_builder(opts: &ListenOptions) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The head and idle deadlines are enforced by `TimedIo` (which also covers a connection
        // that never sent a byte); hyper's own head timer, which it also arms while a
        // keep-alive connection idles, is only a backstop behind both.
        .header_read_timeout(opts.timeouts.idle + opts.timeouts.header)
        // hyper's buffer limit bounds both the request head it reads and the response bytes it
        // queues per connection. The configured head limit is enforced by the router
        // (`head_limit`, a 431 with an OCI error body); hyper's own bare 431 only catches heads
        // beyond 4x that. Keeping it near one blob chunk keeps one chunk in flight per
        // connection, which is what bounds memory while serving many large downloads.
        .max_buf_size(opts.max_header_bytes.saturating_mul(4).max(MIN_BUF))
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(opts.max_header_bytes.saturating_mul(4).max(1 << 20) as u32);
    builder
}

/// Applies the connection caps; a refused plain-TCP peer gets its answer without waiting.
fn admit(
    opts: &ListenOptions,
    stream: &tokio::net::TcpStream,
    peer: SocketAddr,
    tls: bool,
) -> Option<ConnPermit> {
    match opts.limits.admit(peer.ip()) {
        Ok(p) => {
            if let Some(m) = &opts.metrics {
                m.connections_open.set(opts.limits.open() as i64);
            }
            Some(p)
        }
        Err(refusal) => {
            if let Some(m) = &opts.metrics {
                m.connections_refused
                    .get_or_create(&ReasonLabels {
                        reason: refusal.reason(),
                    })
                    .inc();
            }
            tracing::debug!(%peer, cap = refusal.reason(), "connection refused");
            if !tls {
                // Best effort and never blocking: the socket buffer of a new connection takes it.
                let _ = stream.try_write(&refusal.http_answer());
            }
            None
        }
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    app: Router,
    builder: Builder<TokioExecutor>,
    acceptor: Option<Acceptor>,
    opts: Arc<ListenOptions>,
    peer: SocketAddr,
    permit: ConnPermit,
}

impl Conn {
    async fn serve(
        self,
        stream: tokio::net::TcpStream,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let Conn {
            app,
            builder,
            acceptor,
            opts,
            peer,
            permit,
        } = self;
        let timeouts = opts.timeouts;
        let io: Box<dyn Io> = match acceptor {
            Some(a) => match tokio::time::timeout(timeouts.header, a(stream)).await {
                Ok(Some(io)) => io,
                Ok(None) => return,
                Err(_) => {
                    count_timeout(&opts, "tls_handshake_timeout");
                    return;
                }
            },
            None => match opts.file_maps.clone() {
                Some(maps) => Box::new(SendfileStream::new(stream, maps)),
                None => Box::new(stream),
            },
        };
        let clock = ConnClock::new();
        let io = TimedIo::new(io, clock.clone(), timeouts, opts.metrics.clone());
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let active = clock.request_started();
            let call = app.clone().oneshot(req);
            async move {
                let resp = call.await?;
                Ok::<_, std::convert::Infallible>(resp.map(|inner| TrackedBody { inner, active }))
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        drop(permit);
        if let Some(m) = &opts.metrics {
            m.connections_open.set(opts.limits.open() as i64);
        }
    }
}

fn count_timeout(opts: &ListenOptions, reason: &'static str) {
    if let Some(m) = &opts.metrics {
        m.connections_timed_out
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// A response body that tells the connection's clock when it is over (ended or dropped).
struct TrackedBody {
    inner: axum::body::Body,
    active: ActiveRequest,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.active.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Pending connections the kernel queues for `accept`: a burst of new clients (a CI fleet
/// starting at once, or a flood) waits in the queue instead of having its SYNs dropped and
/// retried a second later. Linux caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket on `addr` (`host:port`) with [`LISTEN_BACKLOG`].
pub fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The address a listener is bound to, for logs.
pub fn local(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
