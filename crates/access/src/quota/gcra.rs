//! The generic cell rate algorithm (GCRA) that every counter uses, in memory and in Redis
//! (`gcra.lua` is the same arithmetic).
//!
//! A limit of `amount` per `window` is a token bucket that holds `amount` and refills evenly
//! over `window`: a client may use all of it at once, then gets it back steadily, and after a
//! whole idle window it has all of it again. The state of a key is one number, the
//! theoretical arrival time (TAT, microseconds): how far "in the future" the client has used
//! its allowance. Each unit costs `interval = window / amount`; a request is within the limit
//! while `TAT - now <= window`.
//!
//! Six operations share that state:
//! - `Take` (requests): add the cost if it stays within the limit, else refuse and keep state;
//! - `Require`: refuse if the cost would not fit, but add nothing (bytes before a request, with
//!   cost 0: refused while the client is over; failed logins, with cost 1);
//! - `Peek`: like `Require` but never blocks the batch (for cache-miss quotas, reported aside);
//! - `Debit` (bytes after they were sent, bandwidth): add the cost unconditionally, so a
//!   download in progress is never cut and its excess is paid for by waiting afterwards;
//! - `Reserve` (a download's whole length before its first byte): refuse while the client is
//!   already over, else add the whole cost, so parallel downloads cannot all start on the same
//!   remaining allowance (at most one download can overrun it);
//! - `Refund` (the unsent rest of a reservation): move the TAT back by the cost, never below
//!   now.
//!
//! A batch is all-or-nothing: its `Take`s are stored only if no `Take` or `Require` refused.

/// The parameters of one limit, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Params {
    /// Time per unit.
    pub(crate) interval: f64,
    /// How far ahead the TAT may run: the window (or a burst, for bandwidth).
    pub(crate) tolerance: f64,
}

impl Params {
    /// `amount` per `window_us`.
    pub(crate) fn per(amount: u64, window_us: f64) -> Params {
        Params {
            interval: window_us / amount.max(1) as f64,
            tolerance: window_us,
        }
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Consume if within the limit.
    Take,
    /// Refuse (and block the batch) while over the limit.
    Require,
    /// Report whether over the limit.
    Peek,
    /// Consume unconditionally; the verdict's wait is how far over the limit it went.
    Debit,
    /// Consume the whole cost if not over the limit before it (refuse otherwise).
    Reserve,
    /// Give back the cost.
    Refund,
}

impl Mode {
    /// The name the Lua script uses.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Take => "take",
            Mode::Require => "require",
            Mode::Peek => "peek",
            Mode::Debit => "debit",
            Mode::Reserve => "reserve",
            Mode::Refund => "refund",
        }
    }
}

/// One operation on one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Op {
    /// The key, without the store's prefix.
    pub(crate) key: String,
    /// The limit.
    pub(crate) params: Params,
    /// Units (requests or bytes).
    pub(crate) cost: f64,
    /// What to do.
    pub(crate) mode: Mode,
}

/// The answer for one operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Verdict {
    /// Within the limit.
    pub(crate) allowed: bool,
    /// Microseconds until it would be (for `Debit`: how far past the tolerance it went).
    pub(crate) wait_us: f64,
}

/// Evaluates a batch at `now` over the current TATs; returns the verdicts and the TATs to
/// store (index into `ops`, new TAT).
pub(crate) fn evaluate(
    now: f64,
    ops: &[Op],
    tats: &[Option<f64>],
) -> (Vec<Verdict>, Vec<(usize, f64)>) {
    let mut verdicts = Vec::with_capacity(ops.len());
    let mut news = Vec::with_capacity(ops.len());
    let mut ok = true;
    for (op, tat) in ops.iter().zip(tats) {
        let tat = tat.unwrap_or(now).max(now);
        let new = match op.mode {
            Mode::Refund => (tat - op.cost * op.params.interval).max(now),
            _ => tat + op.cost * op.params.interval,
        };
        let (allowed, wait) = match op.mode {
            Mode::Reserve if tat - now > op.params.tolerance => {
                (false, tat - now - op.params.tolerance)
            }
            Mode::Take if new - now > op.params.tolerance => {
                (false, new - now - op.params.tolerance)
            }
            Mode::Require | Mode::Peek if new - now > op.params.tolerance => {
                (false, new - now - op.params.tolerance)
            }
            Mode::Debit => (true, (new - now - op.params.tolerance).max(0.0)),
            _ => (true, 0.0),
        };
        if !allowed && op.mode != Mode::Peek {
            ok = false;
        }
        verdicts.push(Verdict {
            allowed,
            wait_us: wait,
        });
        news.push(new);
    }
    let stores = ops
        .iter()
        .zip(news)
        .enumerate()
        .filter(|(_, (op, _))| match op.mode {
            Mode::Debit | Mode::Refund => true,
            Mode::Take | Mode::Reserve => ok,
            Mode::Require | Mode::Peek => false,
        })
        .map(|(i, (_, new))| (i, new))
        .collect();
    (verdicts, stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: f64 = 1_000_000.0;

    fn op(mode: Mode, cost: f64, amount: u64, window_s: f64) -> Op {
        Op {
            key: "k".into(),
            params: Params::per(amount, window_s * SEC),
            cost,
            mode,
        }
    }

    /// Runs ops one by one against a single key's TAT.
    fn run(tat: &mut Option<f64>, now: f64, o: &Op) -> Verdict {
        let (v, stores) = evaluate(now, std::slice::from_ref(o), &[*tat]);
        if let Some((_, new)) = stores.first() {
            *tat = Some(*new);
        }
        v[0]
    }

    #[test]
    fn take_allows_the_amount_then_refuses_then_recovers() {
        let take = op(Mode::Take, 1.0, 3, 60.0);
        let mut tat = None;
        for _ in 0..3 {
            assert!(run(&mut tat, 0.0, &take).allowed);
        }
        let v = run(&mut tat, 0.0, &take);
        assert!(!v.allowed);
        assert_eq!(v.wait_us, 20.0 * SEC);
        assert!(
            run(&mut tat, 20.0 * SEC, &take).allowed,
            "one unit back after interval"
        );
        assert!(!run(&mut tat, 20.0 * SEC, &take).allowed);
        for _ in 0..3 {
            assert!(
                run(&mut tat, 200.0 * SEC, &take).allowed,
                "all back after a window"
            );
        }
    }

    #[test]
    fn debit_overdraws_and_require_waits_it_out() {
        let mut tat = None;
        let debit = op(Mode::Debit, 300.0, 100, 3600.0);
        let require = op(Mode::Require, 0.0, 100, 3600.0);
        assert!(run(&mut tat, 0.0, &require).allowed);
        let v = run(&mut tat, 0.0, &debit);
        assert!(v.allowed, "a download in progress is never cut");
        assert_eq!(v.wait_us, 7200.0 * SEC);
        let v = run(&mut tat, 0.0, &require);
        assert!(!v.allowed);
        assert_eq!(v.wait_us, 7200.0 * SEC);
        assert!(!run(&mut tat, 7199.0 * SEC, &require).allowed);
        assert!(run(&mut tat, 7200.0 * SEC, &require).allowed);
    }

    #[test]
    fn require_with_a_cost_refuses_what_would_not_fit() {
        let mut tat = None;
        let debit = op(Mode::Debit, 1.0, 2, 60.0);
        let require = op(Mode::Require, 1.0, 2, 60.0);
        for _ in 0..2 {
            assert!(run(&mut tat, 0.0, &require).allowed);
            run(&mut tat, 0.0, &debit);
        }
        let v = run(&mut tat, 1.0, &require);
        assert!(!v.allowed);
        assert_eq!(v.wait_us, 30.0 * SEC - 1.0);
    }

    #[test]
    fn reserve_admits_while_not_over_then_refund_gives_back_the_rest() {
        let mut tat = None;
        let reserve = |cost| op(Mode::Reserve, cost, 30, 3600.0);
        // A fresh client may start one download bigger than its whole allowance...
        assert!(run(&mut tat, 0.0, &reserve(20.0)).allowed);
        assert!(
            run(&mut tat, 0.0, &reserve(20.0)).allowed,
            "10 left: it starts"
        );
        // ...but once over, no parallel download starts.
        let v = run(&mut tat, 0.0, &reserve(20.0));
        assert!(!v.allowed);
        assert_eq!(v.wait_us, 10.0 * 120.0 * SEC, "10 units over at 120 s each");
        // The unsent 15 of the second download come back.
        run(&mut tat, 0.0, &op(Mode::Refund, 15.0, 30, 3600.0));
        assert!(run(&mut tat, 0.0, &reserve(1.0)).allowed);
        // A refund never moves the TAT before now.
        run(&mut tat, 0.0, &op(Mode::Refund, 1000.0, 30, 3600.0));
        assert_eq!(tat, Some(0.0));
    }

    #[test]
    fn a_refused_reserve_commits_nothing_in_its_batch() {
        let take = op(Mode::Take, 1.0, 10, 60.0);
        let reserve = op(Mode::Reserve, 5.0, 1, 60.0);
        let (v, stores) = evaluate(0.0, &[take, reserve], &[None, Some(120.0 * SEC)]);
        assert!(v[0].allowed && !v[1].allowed);
        assert!(stores.is_empty());
    }

    #[test]
    fn a_refused_require_keeps_takes_uncommitted_but_peek_does_not() {
        let take = op(Mode::Take, 1.0, 10, 60.0);
        let require = op(Mode::Require, 0.0, 1, 60.0);
        let peek = op(Mode::Peek, 0.0, 1, 60.0);
        let over = Some(120.0 * SEC);
        let (v, stores) = evaluate(0.0, &[take.clone(), require], &[None, over]);
        assert!(v[0].allowed && !v[1].allowed);
        assert!(stores.is_empty());
        let (v, stores) = evaluate(0.0, &[take, peek], &[None, over]);
        assert!(v[0].allowed && !v[1].allowed);
        assert_eq!(stores.len(), 1);
    }
}
