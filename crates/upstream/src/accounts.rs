//! The accounts of one upstream, on each of its source addresses: pulls are spread over the
//! (address, account) pairs round-robin, addresses first, and a pair that gets 429 rests until
//! its `Retry-After` (or a default) has passed; one whose `ratelimit-remaining` runs low is
//! left alone by the ledger while another pair has requests to spare.
//! Where an upstream counts pulls per client address *and* per account, each pair is its own
//! budget, so the pair is the unit of rest, and of the [`Ledger`] of rate-limit headers that
//! moves requests off a pair before it runs out: background work ([`Priority::Background`])
//! leaves a pair's reserve to interactive pulls. With no accounts ferry pulls anonymously (one
//! anonymous "account"); with no source addresses there is one (the system's choice).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_config::Account;

use crate::priority::Priority;
use crate::ratelimit::Ledger;
use crate::sources::LOW_REMAINING;

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
    ledger: Ledger,
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
            ledger: Ledger::new(accounts.len() * sources),
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

    /// The account's name for metrics: its username, or `anonymous`.
    pub fn label(&self, account: usize) -> &str {
        self.accounts[account]
            .as_ref()
            .map_or("anonymous", |a| a.username.as_str())
    }

    /// The rate-limit ledger (one entry per pair, indexed by [`AccountPool::index`]).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn slot(&self, i: usize) -> Slot {
        Slot {
            source: i % self.sources,
            account: (i / self.sources) % self.accounts.len(),
        }
    }

    /// The position of pair `s` in the pool (and in its ledger).
    pub fn index(&self, s: Slot) -> usize {
        s.account * self.sources + s.source
    }

    /// The next pair that is not resting, round-robin (consecutive picks change the source
    /// address first), skipping `tried`: one with requests to spare first; then, for an
    /// interactive pull, one down to its reserve.
    pub fn pick(&self, tried: &[Slot]) -> Option<Slot> {
        let n = self.rested_until.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let priority = Priority::current();
        let usable = |s: &Slot| !tried.contains(s) && !self.is_resting(*s, now);
        let order = || (0..n).map(|k| self.slot((start + k) % n));
        order()
            .filter(usable)
            .find(|s| {
                self.ledger
                    .allows(self.index(*s), Priority::Background, now)
            })
            .or_else(|| {
                order()
                    .filter(usable)
                    .find(|s| self.ledger.allows(self.index(*s), priority, now))
            })
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

    /// How many accounts are resting on source address `source` now: after a 429, or with
    /// [`LOW_REMAINING`] requests or fewer left by the ledger (those serve only interactive
    /// pulls that find no other pair).
    pub fn resting_on(&self, source: usize) -> usize {
        let now = Instant::now();
        (0..self.accounts.len())
            .map(|account| Slot { source, account })
            .filter(|&s| {
                self.is_resting(s, now)
                    || self
                        .ledger
                        .remaining(self.index(s), now)
                        .is_some_and(|r| r <= LOW_REMAINING)
            })
            .count()
    }

    /// How long until some pair may be used by the current task: the shortest rest or
    /// ledger wait (`None` when nothing is known).
    pub fn soonest_available(&self) -> Option<Duration> {
        let now = Instant::now();
        let priority = Priority::current();
        (0..self.rested_until.len())
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

    #[tokio::test]
    async fn the_ledger_moves_off_an_account_before_it_runs_out() {
        use crate::ratelimit::{RESERVE, RateLimit};
        let pool = AccountPool::new(vec![acct("a"), acct("b")]);
        let left = |n| RateLimit {
            remaining: Some(n),
            window: Some(Duration::from_secs(60)),
            ..RateLimit::default()
        };
        pool.ledger()
            .observe(pool.index(slot(0, 0)), &left(RESERVE));
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]), Some(slot(0, 1)), "a is down to its reserve");
        }
        assert_eq!(
            pool.pick(&[slot(0, 1)]),
            Some(slot(0, 0)),
            "an interactive pull may use a's reserve"
        );
        let background = Priority::Background
            .scope(async { pool.pick(&[slot(0, 1)]) })
            .await;
        assert_eq!(background, None, "background work leaves the reserve alone");
        pool.ledger().observe(pool.index(slot(0, 1)), &left(0));
        assert_eq!(
            pool.pick(&[]),
            Some(slot(0, 0)),
            "b is exhausted; a's reserve remains"
        );
        let wait = Priority::Background
            .scope(async { pool.soonest_available() })
            .await;
        assert!(wait.unwrap() > Duration::from_secs(50), "{wait:?}");
        assert_eq!(pool.label(0), "a");
        assert_eq!(AccountPool::new(vec![]).label(0), "anonymous");
    }

    #[tokio::test]
    async fn the_ledger_counts_each_address_and_account_pair() {
        use crate::ratelimit::{RESERVE, RateLimit};
        let pool = AccountPool::with_sources(vec![acct("a")], 2);
        let low = RateLimit {
            remaining: Some(RESERVE),
            window: Some(Duration::from_secs(60)),
            ..RateLimit::default()
        };
        pool.ledger().observe(pool.index(slot(0, 0)), &low);
        let picks = Priority::Background
            .scope(async { (0..4).map(|_| pool.pick(&[])).collect::<Vec<_>>() })
            .await;
        for p in picks {
            assert_eq!(p, Some(slot(1, 0)), "the other address still has requests");
        }
        let interactive: Vec<_> = (0..4).map(|_| pool.pick(&[slot(1, 0)])).collect();
        for p in interactive {
            assert_eq!(
                p,
                Some(slot(0, 0)),
                "an interactive pull may use the reserve"
            );
        }
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
