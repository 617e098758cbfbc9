//! The rate-limit ledger: what each account of an upstream has left, read from the headers
//! Docker Hub sends on every answer (`ratelimit-limit: 100;w=21600`,
//! `ratelimit-remaining: 76;w=21600`, optionally `ratelimit-reset: <seconds>`) and from
//! `Retry-After`, one entry per (source address, account) pair. The [account pool](crate::accounts::AccountPool) consults it to move to
//! another account before one runs out: an account at or below [`RESERVE`] requests left is
//! only used by interactive pulls, one with none left by nobody, until its window has passed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_metrics::AccountLabels;
use http::HeaderMap;

use crate::accounts::Slot;
use crate::client::Client;
use crate::error::retry_after;
use crate::priority::Priority;

/// Requests left in an account's window that only interactive pulls may use.
pub const RESERVE: u64 = 2;
/// How long an observation counts when the upstream names no window or reset time.
const DEFAULT_VALIDITY: Duration = Duration::from_secs(60);

/// What one upstream answer said about the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    /// `ratelimit-limit`: requests per window.
    pub limit: Option<u64>,
    /// `ratelimit-remaining`: requests left.
    pub remaining: Option<u64>,
    /// The `w=` window of either header.
    pub window: Option<Duration>,
    /// `ratelimit-reset` (seconds until the window resets) or `Retry-After`.
    pub reset: Option<Duration>,
}

impl RateLimit {
    /// Reads the headers; `None` when the answer says nothing about a rate limit.
    pub fn parse(h: &HeaderMap) -> Option<RateLimit> {
        let value = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).and_then(quota);
        let limit = value("ratelimit-limit");
        let remaining = value("ratelimit-remaining");
        let reset = h
            .get("ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs)
            .or_else(|| retry_after(h));
        let rl = RateLimit {
            limit: limit.map(|l| l.0),
            remaining: remaining.map(|r| r.0),
            window: remaining.and_then(|r| r.1).or(limit.and_then(|l| l.1)),
            reset,
        };
        (rl != RateLimit::default()).then_some(rl)
    }

    fn validity(&self) -> Duration {
        self.reset.or(self.window).unwrap_or(DEFAULT_VALIDITY)
    }
}

/// `76;w=21600` -> (76, Some(21600 s)).
fn quota(v: &str) -> Option<(u64, Option<Duration>)> {
    let mut parts = v.split(';');
    let n = parts.next()?.trim().parse().ok()?;
    let w = parts
        .filter_map(|p| p.trim().strip_prefix("w="))
        .find_map(|w| w.trim().parse().ok())
        .map(Duration::from_secs);
    Some((n, w))
}

/// How far an account may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Unknown, or more than the reserve left.
    Open,
    /// Only the reserve left: interactive pulls only.
    Reserve,
    /// Nothing left.
    Exhausted,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    remaining: Option<u64>,
    valid_until: Option<Instant>,
}

/// The last observation per account.
pub struct Ledger {
    seen: Vec<Mutex<Seen>>,
}

impl Ledger {
    /// A ledger for `n` accounts, all unknown.
    pub fn new(n: usize) -> Self {
        Ledger {
            seen: (0..n).map(|_| Mutex::default()).collect(),
        }
    }

    /// Records what an answer to account `i` said.
    pub fn observe(&self, i: usize, rl: &RateLimit) {
        let mut s = self.seen[i].lock().expect("ledger lock");
        if rl.remaining.is_some() {
            s.remaining = rl.remaining;
        }
        s.valid_until = Some(Instant::now() + rl.validity());
    }

    /// What entry `i` had left at its last observation, while that observation counts.
    pub fn remaining(&self, i: usize, now: Instant) -> Option<u64> {
        let s = *self.seen[i].lock().expect("ledger lock");
        s.valid_until.filter(|t| *t > now).and(s.remaining)
    }

    /// How far account `i` may be used at `now`.
    pub fn standing(&self, i: usize, now: Instant) -> Standing {
        let s = *self.seen[i].lock().expect("ledger lock");
        match s.remaining {
            _ if s.valid_until.is_none_or(|t| t <= now) => Standing::Open,
            Some(0) => Standing::Exhausted,
            Some(r) if r <= RESERVE => Standing::Reserve,
            _ => Standing::Open,
        }
    }

    /// Whether a request of `priority` may use account `i` at `now`.
    pub fn allows(&self, i: usize, priority: Priority, now: Instant) -> bool {
        match self.standing(i, now) {
            Standing::Open => true,
            Standing::Reserve => priority == Priority::Interactive,
            Standing::Exhausted => false,
        }
    }

    /// How long until account `i` may be used with `priority` again (zero: now).
    pub fn wait(&self, i: usize, priority: Priority, now: Instant) -> Duration {
        if self.allows(i, priority, now) {
            return Duration::ZERO;
        }
        let s = *self.seen[i].lock().expect("ledger lock");
        s.valid_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }
}

impl Client {
    /// Records the rate-limit headers of an answer to pair `slot` in the ledger and the gauges.
    /// The ledger keeps one entry per (source address, account) pair; the gauges are per
    /// account (the last answer seen for it, on whichever address).
    pub(crate) fn note_rate_limit(&self, slot: Slot, headers: &HeaderMap) {
        let Some(rl) = RateLimit::parse(headers) else {
            return;
        };
        self.accounts
            .ledger()
            .observe(self.accounts.index(slot), &rl);
        let labels = AccountLabels {
            upstream: self.name.clone(),
            account: self.accounts.label(slot.account).to_owned(),
        };
        if let Some(l) = rl.limit {
            self.metrics
                .ratelimit_limit
                .get_or_create(&labels)
                .set(l as i64);
        }
        if let Some(r) = rl.remaining {
            self.metrics
                .ratelimit_remaining
                .get_or_create(&labels)
                .set(r as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn docker_hub_headers() {
        let h = headers(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "76;w=21600"),
        ]);
        let rl = RateLimit::parse(&h).unwrap();
        assert_eq!(rl.limit, Some(100));
        assert_eq!(rl.remaining, Some(76));
        assert_eq!(rl.window, Some(Duration::from_secs(21600)));
        assert_eq!(RateLimit::parse(&HeaderMap::new()), None);
        let odd = headers(&[("ratelimit-remaining", " 3 ; w = 60 ")]);
        assert_eq!(RateLimit::parse(&odd).unwrap().remaining, Some(3));
        let junk = headers(&[("ratelimit-remaining", "lots")]);
        assert_eq!(RateLimit::parse(&junk), None);
    }

    #[test]
    fn reserve_is_for_interactive_pulls() {
        let ledger = Ledger::new(1);
        let now = Instant::now();
        assert_eq!(ledger.standing(0, now), Standing::Open, "unknown is open");
        let seen = |remaining, w| RateLimit {
            remaining: Some(remaining),
            window: Some(Duration::from_secs(w)),
            ..RateLimit::default()
        };
        ledger.observe(0, &seen(RESERVE + 1, 60));
        assert!(ledger.allows(0, Priority::Background, Instant::now()));
        ledger.observe(0, &seen(RESERVE, 60));
        let now = Instant::now();
        assert!(ledger.allows(0, Priority::Interactive, now));
        assert!(!ledger.allows(0, Priority::Background, now));
        assert!(ledger.wait(0, Priority::Background, now) > Duration::from_secs(50));
        ledger.observe(0, &seen(0, 60));
        assert!(!ledger.allows(0, Priority::Interactive, Instant::now()));
        let later = Instant::now() + Duration::from_secs(61);
        assert!(
            ledger.allows(0, Priority::Background, later),
            "the window passed"
        );
    }
}
