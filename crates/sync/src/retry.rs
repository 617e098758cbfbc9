//! Retries with exponential backoff for transient failures: connection errors, timeouts, 5xx
//! answers and 429 (waiting what `Retry-After` says, within a cap). "Not found", "unauthorized"
//! and digest mismatches are answers, not accidents, and are never retried.

use std::future::Future;
use std::time::Duration;

use crate::error::SyncError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time.
    pub base: Duration,
    /// Longest single wait (also caps `Retry-After`).
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn wait(&self, attempt: u32, error: &SyncError) -> Duration {
        let backoff = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        error
            .retry_after()
            .map_or(backoff, |r| r.max(backoff))
            .min(self.max_wait)
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts; `on_retry` hears
    /// of each retry (attempt number, wait, error) before the wait.
    pub async fn run<T, F, Fut>(
        &self,
        mut op: F,
        on_retry: impl Fn(u32, Duration, &SyncError),
    ) -> Result<T, SyncError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SyncError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.attempts.max(1) => {
                    let wait = self.wait(attempt, &e);
                    on_retry(attempt, wait, &e);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max_wait: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let calls = AtomicU32::new(0);
        let retries = AtomicU32::new(0);
        let r = fast()
            .run(
                || async {
                    match calls.fetch_add(1, Ordering::SeqCst) {
                        0 | 1 => Err(SyncError::Transient("503".into())),
                        _ => Ok(7),
                    }
                },
                |_, _, _| {
                    retries.fetch_add(1, Ordering::SeqCst);
                },
            )
            .await;
        assert_eq!(r, Ok(7));
        assert_eq!(retries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn gives_up_and_never_retries_answers() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = fast()
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(SyncError::Transient("reset".into()))
                },
                |_, _, _| {},
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = fast()
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(SyncError::NotFound("x".into()))
                },
                |_, _, _| {},
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        let p = RetryPolicy::default();
        let t = SyncError::Transient("x".into());
        assert_eq!(p.wait(1, &t), Duration::from_millis(500));
        assert_eq!(p.wait(3, &t), Duration::from_secs(2));
        let rl = SyncError::RateLimited {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(p.wait(1, &rl), Duration::from_secs(7));
        let long = SyncError::RateLimited {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(p.wait(1, &long), Duration::from_secs(60));
    }
}
