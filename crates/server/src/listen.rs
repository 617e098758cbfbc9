//! The accept loop: one task per connection, HTTP/1.1 and HTTP/2 (prior knowledge) on the same
//! port, a bound on the request head, and graceful shutdown — on `shutdown`, stop accepting, let
//! in-flight responses finish for up to `grace`, then close what is left.

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

use crate::sendfile::SendfileStream;

/// Smallest hyper buffer limit: one blob chunk (`ferry_storage::chunks::CHUNK`).
const MIN_BUF: usize = 256 * 1024;

/// Headers hyper parses at most; the router refuses more than [`crate::MAX_HEADER_COUNT`].
const MAX_HEADERS: usize = 1000;

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Largest request head; larger ones get 431.
    pub max_header_bytes: usize,
    /// Time in-flight responses get after shutdown starts.
    pub grace: Duration,
    /// Where the store registers memory-mapped blobs; plain-TCP connections then send those
    /// with `sendfile` ([`crate::sendfile`]).
    pub file_maps: Option<FileMaps>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            max_header_bytes: 64 * 1024,
            grace: Duration::from_secs(30),
            file_maps: None,
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
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
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
        let _ = stream.set_nodelay(true);
        let (app, builder, acceptor) = (app.clone(), builder.clone(), acceptor.clone());
        let maps = opts.file_maps.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let io: Box<dyn Io> = match acceptor {
                Some(a) => match a(stream).await {
                    Some(io) => io,
                    None => return,
                },
                None => match maps {
                    Some(maps) => Box::new(SendfileStream::new(stream, maps)),
                    None => Box::new(stream),
                },
            };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req)
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(opts.grace) => tracing::warn!(grace = ?opts.grace, "shutdown grace period over; closing remaining connections"),
    }
}

/// The address a listener is bound to, for logs.
pub fn local(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
