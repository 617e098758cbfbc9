//! The accounts of one upstream: pulls are spread over them round-robin, and an account that
//! gets 429 rests until its `Retry-After` (or a default) has passed. With no accounts ferry pulls
//! anonymously (one anonymous "account").

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_config::Account;

/// How long an account rests after a 429 without `Retry-After`.
pub const DEFAULT_REST: Duration = Duration::from_secs(60);

/// A set of accounts with rest periods.
pub struct AccountPool {
    accounts: Vec<Option<Account>>,
    rested_until: Vec<Mutex<Option<Instant>>>,
    next: AtomicUsize,
}

impl AccountPool {
    /// A pool of `accounts`, or one anonymous identity when empty.
    pub fn new(accounts: Vec<Account>) -> Self {
        let accounts: Vec<Option<Account>> = if accounts.is_empty() {
            vec![None]
        } else {
            accounts.into_iter().map(Some).collect()
        };
        let rested_until = accounts.iter().map(|_| Mutex::new(None)).collect();
        AccountPool {
            accounts,
            rested_until,
            next: AtomicUsize::new(0),
        }
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The credentials of identity `i` (`None`: anonymous).
    pub fn get(&self, i: usize) -> Option<&Account> {
        self.accounts[i].as_ref()
    }

    /// The next identity that is not resting, round-robin, skipping `tried`.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.accounts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        (0..n)
            .map(|k| (start + k) % n)
            .find(|i| !tried.contains(i) && !self.is_resting(*i, now))
    }

    fn is_resting(&self, i: usize, now: Instant) -> bool {
        let guard = self.rested_until[i].lock().expect("account lock");
        guard.is_some_and(|t| t > now)
    }

    /// Rests identity `i` for `d`.
    pub fn rest(&self, i: usize, d: Option<Duration>) {
        let until = Instant::now() + d.unwrap_or(DEFAULT_REST);
        *self.rested_until[i].lock().expect("account lock") = Some(until);
    }

    /// Shortest remaining rest among all identities.
    pub fn soonest_available(&self) -> Option<Duration> {
        let now = Instant::now();
        self.rested_until
            .iter()
            .filter_map(|m| *m.lock().expect("account lock"))
            .map(|t| t.saturating_duration_since(now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::Secret;

    fn acct(u: &str) -> Account {
        Account {
            username: u.into(),
            password: Secret("p".into()),
        }
    }

    #[test]
    fn round_robin_and_rest() {
        let pool = AccountPool::new(vec![acct("a"), acct("b")]);
        let first = pool.pick(&[]).unwrap();
        let second = pool.pick(&[]).unwrap();
        assert_ne!(first, second, "pulls alternate between accounts");
        pool.rest(0, Some(Duration::from_secs(30)));
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]), Some(1), "a resting account is skipped");
        }
        assert_eq!(
            pool.pick(&[1]),
            None,
            "nothing left when the other was tried"
        );
        assert!(pool.soonest_available().unwrap() > Duration::from_secs(25));
    }

    #[test]
    fn anonymous_when_no_accounts() {
        let pool = AccountPool::new(vec![]);
        assert_eq!(pool.len(), 1);
        assert!(pool.get(pool.pick(&[]).unwrap()).is_none());
    }
}
