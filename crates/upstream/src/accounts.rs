//! The accounts of one upstream: pulls are spread over them round-robin, and an account that
//! gets 429 rests until its `Retry-After` (or a default) has passed. The [`Ledger`] of
//! rate-limit headers moves requests off an account before it runs out: background work
//! ([`Priority::Background`]) leaves an account's reserve to interactive pulls. With no
//! accounts ferry pulls anonymously (one anonymous "account").

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_config::Account;

use crate::priority::Priority;
use crate::ratelimit::Ledger;

/// How long an account rests after a 429 without `Retry-After`.
pub const DEFAULT_REST: Duration = Duration::from_secs(60);

/// A set of accounts with rest periods.
pub struct AccountPool {
    accounts: Vec<Option<Account>>,
    rested_until: Vec<Mutex<Option<Instant>>>,
    next: AtomicUsize,
    ledger: Ledger,
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
            ledger: Ledger::new(accounts.len()),
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

    /// The account's name for metrics: its username, or `anonymous`.
    pub fn label(&self, i: usize) -> &str {
        self.accounts[i]
            .as_ref()
            .map_or("anonymous", |a| a.username.as_str())
    }

    /// The rate-limit ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The next identity that is not resting, round-robin, skipping `tried`: one with requests
    /// to spare first; then, for an interactive pull, one down to its reserve.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.accounts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let priority = Priority::current();
        let usable = |i: &usize| !tried.contains(i) && !self.is_resting(*i, now);
        let order = || (0..n).map(|k| (start + k) % n);
        order()
            .filter(usable)
            .find(|i| self.ledger.allows(*i, Priority::Background, now))
            .or_else(|| {
                order()
                    .filter(usable)
                    .find(|i| self.ledger.allows(*i, priority, now))
            })
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

    /// How long until some identity may be used by the current task: the shortest rest or
    /// ledger wait (`None` when nothing is known).
    pub fn soonest_available(&self) -> Option<Duration> {
        let now = Instant::now();
        let priority = Priority::current();
        (0..self.accounts.len())
            .map(|i| {
                let rest = self.rested_until[i]
                    .lock()
                    .expect("account lock")
                    .map(|t| t.saturating_duration_since(now));
                let wait = self.ledger.wait(i, priority, now);
                rest.unwrap_or_default().max(wait)
            })
            .filter(|d| !d.is_zero())
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

    #[tokio::test]
    async fn the_ledger_moves_off_an_account_before_it_runs_out() {
        use crate::ratelimit::{RESERVE, RateLimit};
        let pool = AccountPool::new(vec![acct("a"), acct("b")]);
        let left = |n| RateLimit {
            remaining: Some(n),
            window: Some(Duration::from_secs(60)),
            ..RateLimit::default()
        };
        pool.ledger().observe(0, &left(RESERVE));
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]), Some(1), "a is down to its reserve");
        }
        assert_eq!(
            pool.pick(&[1]),
            Some(0),
            "an interactive pull may use a's reserve"
        );
        let background = Priority::Background.scope(async { pool.pick(&[1]) }).await;
        assert_eq!(background, None, "background work leaves the reserve alone");
        pool.ledger().observe(1, &left(0));
        assert_eq!(
            pool.pick(&[]),
            Some(0),
            "b is exhausted; a's reserve remains"
        );
        let wait = Priority::Background
            .scope(async { pool.soonest_available() })
            .await;
        assert!(wait.unwrap() > Duration::from_secs(50), "{wait:?}");
        assert_eq!(pool.label(0), "a");
        assert_eq!(AccountPool::new(vec![]).label(0), "anonymous");
    }

    #[test]
    fn anonymous_when_no_accounts() {
        let pool = AccountPool::new(vec![]);
        assert_eq!(pool.len(), 1);
        assert!(pool.get(pool.pick(&[]).unwrap()).is_none());
    }
}
