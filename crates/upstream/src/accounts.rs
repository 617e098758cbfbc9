//! The accounts of one upstream, on each of its source addresses: pulls are spread over the
//! (address, account) pairs round-robin, addresses first, and a pair that gets 429 (or whose
//! `ratelimit-remaining` runs low) rests until its `Retry-After` (or a default) has passed.
//! Where an upstream counts pulls per client address *and* per account, each pair is its own
//! budget, so the pair is the unit of rest. With no accounts ferry pulls anonymously (one
//! anonymous "account"); with no source addresses there is one (the system's choice).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_config::Account;

/// How long an account rests after a 429 without `Retry-After`.
pub const DEFAULT_REST: Duration = Duration::from_secs(60);

/// One budget: an account on a source address (indices into the upstream's lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index of the source address (0 when none are configured).
    pub source: usize,
    /// Index of the account.
    pub account: usize,
}

/// A set of accounts on a set of source addresses, with rest periods per pair.
pub struct AccountPool {
    accounts: Vec<Option<Account>>,
    sources: usize,
    rested_until: Vec<Mutex<Option<Instant>>>,
    next: AtomicUsize,
}

impl AccountPool {
    /// A pool of `accounts` (or one anonymous identity when empty) on one source address.
    pub fn new(accounts: Vec<Account>) -> Self {
        Self::with_sources(accounts, 1)
    }

    /// A pool of `accounts` on `sources` source addresses (at least one).
    pub fn with_sources(accounts: Vec<Account>, sources: usize) -> Self {
        let accounts: Vec<Option<Account>> = if accounts.is_empty() {
            vec![None]
        } else {
            accounts.into_iter().map(Some).collect()
        };
        let sources = sources.max(1);
        let rested_until = (0..accounts.len() * sources)
            .map(|_| Mutex::new(None))
            .collect();
        AccountPool {
            accounts,
            sources,
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

    fn slot(&self, i: usize) -> Slot {
        Slot {
            source: i % self.sources,
            account: (i / self.sources) % self.accounts.len(),
        }
    }

    fn index(&self, s: Slot) -> usize {
        s.account * self.sources + s.source
    }

    /// The next pair that is not resting, round-robin (consecutive picks change the source
    /// address first), skipping `tried`.
    pub fn pick(&self, tried: &[Slot]) -> Option<Slot> {
        let n = self.rested_until.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        (0..n)
            .map(|k| self.slot((start + k) % n))
            .find(|s| !tried.contains(s) && !self.is_resting(*s, now))
    }

    fn is_resting(&self, s: Slot, now: Instant) -> bool {
        let guard = self.rested_until[self.index(s)]
            .lock()
            .expect("account lock");
        guard.is_some_and(|t| t > now)
    }

    /// Rests pair `s` for `d` (never shortening a longer rest already running).
    pub fn rest(&self, s: Slot, d: Option<Duration>) {
        let until = Instant::now() + d.unwrap_or(DEFAULT_REST);
        let mut guard = self.rested_until[self.index(s)]
            .lock()
            .expect("account lock");
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    /// How many accounts are resting on source address `source` now.
    pub fn resting_on(&self, source: usize) -> usize {
        let now = Instant::now();
        (0..self.accounts.len())
            .filter(|&account| self.is_resting(Slot { source, account }, now))
            .count()
    }

    /// Shortest remaining rest among all pairs.
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
        let (a, b) = (slot(0, 0), slot(0, 1));
        pool.rest(a, Some(Duration::from_secs(30)));
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]), Some(b), "a resting account is skipped");
        }
        assert_eq!(
            pool.pick(&[b]),
            None,
            "nothing left when the other was tried"
        );
        assert!(pool.soonest_available().unwrap() > Duration::from_secs(25));
    }

    fn slot(source: usize, account: usize) -> Slot {
        Slot { source, account }
    }

    #[test]
    fn anonymous_when_no_accounts() {
        let pool = AccountPool::new(vec![]);
        assert_eq!(pool.len(), 1);
        assert!(pool.get(pool.pick(&[]).unwrap().account).is_none());
    }

    #[test]
    fn pairs_of_address_and_account_rest_alone() {
        let pool = AccountPool::with_sources(vec![acct("a"), acct("b")], 2);
        let picks: Vec<Slot> = (0..4).map(|_| pool.pick(&[]).unwrap()).collect();
        assert_ne!(picks[0].source, picks[1].source, "addresses alternate");
        let mut all = picks.clone();
        all.sort_by_key(|s| (s.source, s.account));
        all.dedup();
        assert_eq!(all.len(), 4, "four picks use all four pairs: {picks:?}");
        pool.rest(slot(1, 0), Some(Duration::from_secs(30)));
        assert_eq!(pool.resting_on(1), 1);
        assert_eq!(pool.resting_on(0), 0);
        for _ in 0..8 {
            let s = pool.pick(&[]).unwrap();
            assert_ne!(s, slot(1, 0), "the resting pair is skipped");
        }
        pool.rest(slot(1, 1), None);
        assert_eq!(pool.resting_on(1), 2);
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]).unwrap().source, 0, "address 1 rests");
        }
    }
}
