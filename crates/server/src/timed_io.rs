//! Deadlines on a client connection, enforced in the stream itself so that no byte (or the lack
//! of one) can keep a connection open past them:
//!
//! - **head**: a connection must deliver a complete request head within `header_timeout` of
//!   opening, whether or not a byte arrived (slowloris clients drip a head forever); after a
//!   request, the clock starts again at the first byte of the next head;
//! - **idle**: a keep-alive connection with no request in progress is closed `idle_timeout`
//!   after its last response ended;
//! - **send**: a response that the client accepts no byte of for `send_timeout` ends the
//!   connection (a client that opens downloads and never reads them).
//!
//! The HTTP service tells the stream when a request head has arrived and when its response is
//! over ([`ConnClock::request_started`], [`ActiveRequest`]); between the two the head and idle
//! deadlines do not apply. A deadline that passes makes the next read (or write) fail with
//! `TimedOut`, which ends the connection in hyper.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_metrics::{Metrics, ReasonLabels};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The three timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time to deliver a complete request head.
    pub header: Duration,
    /// Time a connection may sit between requests.
    pub idle: Duration,
    /// Time a response may wait for the client to accept a byte.
    pub send: Duration,
}

/// A connection's request state, shared by its stream and its service.
#[derive(Clone)]
pub struct ConnClock {
    state: Arc<State>,
}

struct State {
    origin: Instant,
    /// Requests whose head arrived and whose response is not over.
    active: AtomicUsize,
    /// Whether the connection waits for (the rest of) a head rather than idling.
    in_head: AtomicBool,
    /// When the current waiting phase began, in milliseconds since `origin`.
    since_ms: AtomicU64,
    /// The reader to wake when the last request ends (so the idle deadline is armed).
    reader: AtomicWaker,
}

impl ConnClock {
    /// A clock for a connection that opened now: waiting for its first head.
    pub fn new() -> Self {
        ConnClock {
            state: Arc::new(State {
                origin: Instant::now(),
                active: AtomicUsize::new(0),
                in_head: AtomicBool::new(true),
                since_ms: AtomicU64::new(0),
                reader: AtomicWaker::new(),
            }),
        }
    }

    /// A request head arrived; the returned guard marks its response as over when dropped.
    pub fn request_started(&self) -> ActiveRequest {
        self.state.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest {
            state: Some(self.state.clone()),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.state.origin.elapsed().as_millis() as u64
    }
}

impl Default for ConnClock {
    fn default() -> Self {
        Self::new()
    }
}

/// One request in progress on a connection.
pub struct ActiveRequest {
    state: Option<Arc<State>>,
}

impl ActiveRequest {
    /// Marks the response as over (idempotent; also done on drop).
    pub fn finish(&mut self) {
        let Some(s) = self.state.take() else { return };
        if s.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.since_ms
                .store(s.origin.elapsed().as_millis() as u64, Ordering::Release);
            s.in_head.store(false, Ordering::Release);
            s.reader.wake();
        }
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A stream with the head, idle and send deadlines of its [`ConnClock`].
pub struct TimedIo<T> {
    inner: T,
    clock: ConnClock,
    timeouts: Timeouts,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    metrics: Option<Arc<Metrics>>,
}

impl<T> TimedIo<T> {
    /// Wraps `inner`; timeouts are counted in `metrics` by reason.
    pub fn new(
        inner: T,
        clock: ConnClock,
        timeouts: Timeouts,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let first = Instant::now() + timeouts.header;
        TimedIo {
            inner,
            clock,
            timeouts,
            read_timer: Box::pin(tokio::time::sleep_until(first)),
            write_timer: None,
            metrics,
        }
    }

    /// The deadline of the waiting phase, or `None` while a request is in progress.
    fn read_deadline(&self) -> Option<(Instant, &'static str)> {
        let s = &self.clock.state;
        if s.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = s.origin + Duration::from_millis(s.since_ms.load(Ordering::Acquire));
        Some(if s.in_head.load(Ordering::Acquire) {
            (since + self.timeouts.header, "header_timeout")
        } else {
            (since + self.timeouts.idle, "idle_timeout")
        })
    }

    fn timed_out(&self, reason: &'static str) -> io::Error {
        if let Some(m) = &self.metrics {
            m.connections_timed_out
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        io::Error::new(io::ErrorKind::TimedOut, reason)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((deadline, reason)) = this.read_deadline() {
            if this.read_timer.deadline() != deadline {
                this.read_timer.as_mut().reset(deadline);
            }
            if this.read_timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(this.timed_out(reason)));
            }
        }
        this.clock.state.reader.register(cx.waker());
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let s = &this.clock.state;
        if buf.filled().len() > before
            && s.active.load(Ordering::Acquire) == 0
            && !s.in_head.load(Ordering::Acquire)
        {
            // The first byte of the next head: from now on it has `header` to complete.
            s.since_ms.store(this.clock.elapsed_ms(), Ordering::Release);
            s.in_head.store(true, Ordering::Release);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> TimedIo<T> {
    /// Arms (or checks) the send deadline after a write that made no progress.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let send = self.timeouts.send;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(self.timed_out("send_timeout")));
        }
        Poll::Pending
    }

    fn progress(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Pending => self.stalled(cx),
            done => {
                self.write_timer = None;
                done
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_after_the_header_timeout() {
        let (_client, server) = duplex(64);
        let mut io = TimedIo::new(server, ConnClock::new(), T, None);
        let start = Instant::now();
        let e = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), T.header);
    }

    #[tokio::test(start_paused = true)]
    async fn dripping_bytes_does_not_extend_the_head_deadline() {
        let (mut client, server) = duplex(64);
        let mut io = TimedIo::new(server, ConnClock::new(), T, None);
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            let mut buf = [0; 8];
            loop {
                if let Err(e) = io.read(&mut buf).await {
                    return e;
                }
            }
        });
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if client.write_all(b"G").await.is_err() {
                break;
            }
        }
        let e = reader.await.unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() <= T.header + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_progress_have_no_deadline_and_idle_follows_them() {
        let (_client, server) = duplex(64);
        let clock = ConnClock::new();
        let mut io = TimedIo::new(server, clock.clone(), T, None);
        let mut req = clock.request_started();
        let read = tokio::spawn(async move { io.read(&mut [0; 8]).await.unwrap_err() });
        tokio::time::sleep(T.idle * 3).await;
        assert!(!read.is_finished(), "no deadline while a request is active");
        let ended = Instant::now();
        req.finish();
        let e = read.await.unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "idle_timeout");
        assert_eq!(ended.elapsed(), T.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_hits_the_send_timeout() {
        let (_client, server) = duplex(16);
        let mut io = TimedIo::new(server, ConnClock::new(), T, None);
        let start = Instant::now();
        let e = io.write_all(&[7; 1024]).await.unwrap_err();
        assert_eq!(e.to_string(), "send_timeout");
        assert_eq!(start.elapsed(), T.send);
    }
}
