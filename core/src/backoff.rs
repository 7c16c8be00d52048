//! Doubling backoff: the one helper behind every wait-and-try-again in mcpq.
//!
//! A [`Backoff`] is a first delay and a cap; the n-th delay is
//! `min(max, first x 2^(n-1))`. It is used two ways:
//! - as a running sequence for a loop that retries (`peek`, `advance`, `reset`): the
//!   fetch loop, the cancel listener, storing an outcome, connecting to an HTTP server,
//!   `mcpq wait`'s polling;
//! - by number, for a delay that depends on a count kept elsewhere (`delay(n)`,
//!   `full_jitter(n)`): a job's retry delay, the model API's retries, the supervisor's
//!   restart backoff.
//!
//! # Guarantees
//! - Exact integer arithmetic on [`Duration`]: `100 ms` doubles to exactly `200 ms`
//!   (no float rounding), and no input can overflow or panic (the doubling saturates,
//!   then the cap applies).
//! - The sequence never exceeds `max` and never decreases until [`Backoff::reset`].
//! - [`Backoff::full_jitter`] is uniform in `[0, delay(n)]` (AWS's "Exponential Backoff
//!   and Jitter"): jobs that failed together do not all come back in the same instant.
//!
//! Not `backon` (already in the lock through `redis`): its steps are computed in `f32`
//! (100 ms doubles to 200.000002 ms), its jitter is added on top of the delay rather than
//! full, and its retry wrappers do not fit loops that reset on success or log the next
//! wait. The sequences each caller uses are pinned by the tests below.
//!
//! # Caveats
//! Pure arithmetic: the caller sleeps, and checks its own deadline.

use std::time::Duration;

/// A doubling delay, `first` then twice the last, capped at `max`; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A sequence starting at `first` (or `max` if smaller), doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        let next = if first.as_nanos() < max.as_nanos() {
            first
        } else {
            max
        };
        Backoff { first, max, next }
    }

    /// The n-th delay of the sequence (1 = the first): `min(max, first x 2^(n-1))`;
    /// `n = 0` counts as 1.
    pub fn delay(&self, n: u32) -> Duration {
        let mut delay = self.first;
        for _ in 1..n {
            // At most ~95 doublings before `max` (<= Duration::MAX) is reached.
            if delay >= self.max || delay.is_zero() {
                break;
            }
            delay = delay.saturating_mul(2);
        }
        delay.min(self.max)
    }

    /// A uniformly random delay in `[0, delay(n)]`, in whole milliseconds ("full
    /// jitter").
    pub fn full_jitter(&self, n: u32) -> Duration {
        let ceiling = u64::try_from(self.delay(n).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=ceiling))
    }

    /// The delay that [`advance`](Self::advance) will return next.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Returns the next delay of the sequence and doubles it (up to `max`) for the call
    /// after.
    pub fn advance(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts the sequence again at `first` (after a success).
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn run(first: Duration, max: Duration, n: usize) -> Vec<u128> {
        let mut b = Backoff::new(first, max);
        (0..n).map(|_| b.advance().as_millis()).collect()
    }

    #[test]
    fn the_sequences_each_caller_used_are_kept() {
        // queue/backend.rs (failed fetch), queue/lease.rs (cancel listener),
        // runner.rs (storing an outcome): 100 ms doubling to 5 s.
        let s = run(ms(100), Duration::from_secs(5), 9);
        assert_eq!(s, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // mcp/session.rs (HTTP connect): 100 ms doubling to 2 s.
        let s = run(ms(100), Duration::from_secs(2), 7);
        assert_eq!(s, [100, 200, 400, 800, 1600, 2000, 2000]);
        // producer `mcpq wait`: 20 ms doubling to 250 ms.
        let s = run(ms(20), ms(250), 7);
        assert_eq!(s, [20, 40, 80, 160, 250, 250, 250]);
        // The same numbers by index.
        let b = Backoff::new(ms(20), ms(250));
        let by_index: Vec<u128> = (1..=7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(by_index, [20, 40, 80, 160, 250, 250, 250]);
    }

    #[test]
    fn exact_not_float() {
        let mut b = Backoff::new(ms(100), Duration::from_secs(5));
        b.advance();
        assert_eq!(b.advance(), Duration::from_nanos(200_000_000));
        let odd = Backoff::new(Duration::from_nanos(3), Duration::MAX);
        assert_eq!(odd.delay(4), Duration::from_nanos(24));
    }

    #[test]
    fn peek_does_not_advance_and_reset_starts_again() {
        let mut b = Backoff::new(ms(100), Duration::from_secs(5));
        assert_eq!(b.peek(), ms(100));
        assert_eq!(b.peek(), ms(100));
        assert_eq!(b.advance(), ms(100));
        assert_eq!(b.peek(), ms(200));
        b.advance();
        b.reset();
        assert_eq!(b.advance(), ms(100));
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        // The job retry defaults as the old queue::retry pinned them (1 s to 10 s).
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let ceilings: Vec<u64> = (1..=6).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(1000), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(10));
        for n in 1..50 {
            assert!(b.full_jitter(n) <= b.delay(n));
        }
        // The supervisor's restart backoff as supervisor/health.rs pins it (100 ms to 1 s).
        let r = Backoff::new(ms(100), Duration::from_secs(1));
        let restart: Vec<u128> = [1, 2, 4, 5, 500].map(|n| r.delay(n).as_millis()).to_vec();
        assert_eq!(restart, [100, 200, 800, 1000, 1000]);
    }

    #[test]
    fn full_jitter_spreads_delays() {
        let b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| b.full_jitter(1)).collect();
        assert!(delays.len() > 10, "full jitter spreads delays: {delays:?}");
    }

    #[test]
    fn no_input_overflows() {
        let b = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(b.delay(u32::MAX), Duration::MAX);
        let mut s = Backoff::new(Duration::from_secs(u64::MAX / 2 + 1), Duration::MAX);
        s.advance();
        assert_eq!(s.advance(), Duration::MAX);
        let zero = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(zero.delay(u32::MAX), Duration::ZERO);
        assert_eq!(zero.full_jitter(3), Duration::ZERO);
        // A cap below the first delay wins.
        let mut capped = Backoff::new(Duration::from_secs(9), Duration::from_secs(1));
        assert_eq!(capped.delay(1), Duration::from_secs(1));
        assert_eq!(capped.advance(), Duration::from_secs(1));
    }
}
