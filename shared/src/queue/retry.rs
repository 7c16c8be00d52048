//! Retry delays: exponential backoff with full jitter.
//!
//! The n-th failure waits a uniformly random time in `[0, min(cap, base x 2^(n-1))]`
//! ("full jitter", as in AWS's "Exponential Backoff and Jitter"): jobs that failed
//! together (a server that was down) do not all come back in the same instant.

use std::time::Duration;

/// The delay before the run that follows the `failures`-th failure (1 = first failure).
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = ceiling(failures, base, cap);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// The upper bound of [`backoff`]: `min(cap, base x 2^(failures-1))`.
pub fn ceiling(failures: u32, base: Duration, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    base.saturating_mul(1u32 << doublings.min(31)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap_and_delays_stay_under_it() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(10));
        let ceilings: Vec<u64> = (1..=6).map(|n| ceiling(n, base, cap).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 10, 10]);
        assert_eq!(ceiling(1000, base, cap), cap);
        for n in 1..50 {
            assert!(backoff(n, base, cap) <= ceiling(n, base, cap));
        }
    }

    #[test]
    fn delays_are_spread_not_equal() {
        let (base, cap) = (Duration::from_secs(60), Duration::from_secs(60));
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff(1, base, cap)).collect();
        assert!(delays.len() > 10, "full jitter spreads delays: {delays:?}");
    }
}
