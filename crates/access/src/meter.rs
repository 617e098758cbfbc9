//! The metered response body: counts bytes against the quotas as they go out, holds blob
//! chunks back to keep to the bandwidth cap, and keeps the concurrency slot until the body
//! ends or is dropped.
//!
//! With Redis, bytes are sent to Redis in batches (every [`FLUSH_BYTES`] or [`FLUSH_EVERY`],
//! and when the body ends or is dropped) on a detached task, so a chunk never waits for Redis.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::quota::concurrency::Permit;
use crate::quota::local::LocalStore;
use crate::quota::{Store, Tier, debits, refunds, throttle};

/// What the byte accounting of a grant needs.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    pub(crate) store: Arc<Store>,
    pub(crate) local: Arc<LocalStore>,
    pub(crate) tier: Arc<Tier>,
    pub(crate) subject: String,
    pub(crate) blob: bool,
}

/// Bytes gathered before they are sent to Redis.
pub const FLUSH_BYTES: u64 = 1 << 20;
/// Longest time bytes are gathered before they are sent to Redis.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A response body counted against a client's quotas (see [`crate::Grant::meter`]).
pub struct Metered<S> {
    inner: Pin<Box<S>>,
    acct: Option<Accounting>,
    held: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    permit: Option<Permit>,
}

impl<S> std::fmt::Debug for Metered<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("counted", &self.acct.is_some())
            .finish_non_exhaustive()
    }
}

struct Accounting {
    meter: Meter,
    miss: bool,
    /// Bytes reserved before the body started, and how many of them were sent.
    reserved: Option<(u64, u64)>,
    pending: u64,
    miss_requests: u64,
    flushed_at: Instant,
    flush_bytes: u64,
}

impl<S> Metered<S> {
    pub(crate) fn new(
        body: S,
        meter: Option<Meter>,
        miss: bool,
        reserved: Option<u64>,
        permit: Option<Permit>,
    ) -> Metered<S> {
        let acct = meter.map(|meter| {
            let flush_bytes = match *meter.store {
                Store::Local(_) => 0,
                Store::Redis(_) => FLUSH_BYTES,
            };
            let mut a = Accounting {
                meter,
                miss,
                reserved: reserved.map(|r| (r, 0)),
                pending: 0,
                miss_requests: u64::from(miss),
                flushed_at: Instant::now(),
                flush_bytes,
            };
            a.flush();
            a
        });
        Metered {
            inner: Box::pin(body),
            acct,
            held: None,
            sleep: None,
            permit,
        }
    }

    /// The body ended: send the last count and free the slot.
    fn finish(&mut self) {
        self.acct = None;
        self.permit = None;
    }
}

impl Accounting {
    /// Counts a chunk; returns how long to hold it back.
    fn chunk(&mut self, n: usize) -> Duration {
        match &mut self.reserved {
            Some((_, sent)) => *sent += n as u64,
            None => self.pending += n as u64,
        }
        if self.pending >= self.flush_bytes.max(1) || self.flushed_at.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
        let m = &self.meter;
        if m.blob {
            throttle(&m.local, &m.tier, &m.subject, n)
        } else {
            Duration::ZERO
        }
    }

    fn flush(&mut self) {
        let m = &self.meter;
        let ops = debits(
            &m.tier,
            &m.subject,
            self.pending,
            self.miss,
            self.miss_requests,
        );
        self.pending = 0;
        self.miss_requests = 0;
        self.flushed_at = Instant::now();
        if !ops.is_empty() {
            m.store.debit_detached(ops);
        }
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        if self.pending > 0 || self.miss_requests > 0 {
            self.flush();
        }
        if let Some((reserved, sent)) = self.reserved.take() {
            let m = &self.meter;
            let ops = refunds(
                &m.tier,
                &m.subject,
                reserved.saturating_sub(sent),
                self.miss,
            );
            if !ops.is_empty() {
                m.store.debit_detached(ops);
            }
        }
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
                return Poll::Ready(this.held.take().map(Ok));
            }
            let item = match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            };
            let chunk = match item {
                Some(Ok(chunk)) => chunk,
                None => {
                    this.finish();
                    return Poll::Ready(None);
                }
                other => return Poll::Ready(other),
            };
            let wait = this
                .acct
                .as_mut()
                .map_or(Duration::ZERO, |a| a.chunk(chunk.len()));
            if wait.is_zero() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            this.held = Some(chunk);
            this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }
}
