//! `Fate` and [`decide`]: what the runner does with the end of an attempt.
//!
//! This is the runner's outcome table, pure (no I/O, no clock, no randomness: the
//! backoff is passed in), so that every row is tested here. The rows, first match wins:
//!
//! | stop reason            | result | attempts left | fate                         |
//! |------------------------|--------|---------------|------------------------------|
//! | cancelled              | any    | any           | [`Fate::Cancelled`] (nothing stored: `lua/cancel.lua` already wrote the job) |
//! | lease lost             | any    | any           | [`Fate::LeaseLost`] (nothing stored: another attempt owns the job) |
//! | none or shutdown       | `Ok`   | any           | [`Fate::Succeeded`]          |
//! | shutdown               | `Err`  | any           | [`Fate::Release`] (back to its queue, attempt not counted) |
//! | none                   | `Err`, retryable | yes | [`Fate::Retry`] after `backoff(failures)` |
//! | none                   | `Err`, retryable | no  | [`Fate::Dead`]               |
//! | none                   | `Err`, permanent | any | [`Fate::Dead`]               |
//!
//! Test: `fate::tests::the_outcome_table`.
//!
//! It sits above `queue` (it reads [`StopReason`]) and below `runner`; the failure
//! types it carries are in [`crate::failure`], which stays a leaf so that `queue` can
//! store them without importing this.

use std::time::Duration;

use crate::failure::JobFailure;
use crate::queue::lease::StopReason;

/// What becomes of one attempt. `T` is the result of a successful run.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate<T> {
    /// Store the result; the job is done.
    Succeeded(T),
    /// Store the error; run again after `delay`.
    Retry {
        /// The attempt's error.
        error: JobFailure,
        /// Backoff before the next run.
        delay: Duration,
    },
    /// Store the error; the job goes to the dead-letter set.
    Dead(JobFailure),
    /// Cut off by shutdown: back to the front of its queue, attempt not counted.
    Release,
    /// Cancelled by `mcpq cancel`: store nothing (the cancel already did).
    Cancelled,
    /// The lease was lost: store nothing, someone else owns the job.
    LeaseLost {
        /// The job's status in Redis when the loss was seen.
        status: String,
    },
}

/// How many attempts the job has had and may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Failed attempts before this one.
    pub failures: u32,
    /// Most runs allowed (`options.max_attempts`).
    pub max: u32,
}

/// The fate of an attempt that ended with `result`, stopped for `stop` (if it was),
/// given its `attempts`. `backoff(n)` is the delay after the n-th failure; it is called
/// only for a retry. See the module doc for the table.
pub fn decide<T>(
    stop: Option<StopReason>,
    result: Result<T, JobFailure>,
    attempts: Attempts,
    backoff: impl FnOnce(u32) -> Duration,
) -> Fate<T> {
    match (stop, result) {
        (Some(StopReason::Cancelled), _) => Fate::Cancelled,
        (Some(StopReason::LeaseLost { status }), _) => Fate::LeaseLost { status },
        (_, Ok(value)) => Fate::Succeeded(value),
        (Some(StopReason::Shutdown), Err(_)) => Fate::Release,
        (None, Err(error)) => {
            let failures = attempts.failures.saturating_add(1);
            if error.retryable && failures < attempts.max {
                let delay = backoff(failures);
                Fate::Retry { error, delay }
            } else {
                Fate::Dead(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    fn failure(retryable: bool) -> JobFailure {
        JobFailure::new(FailureKind::Timeout, "m", retryable)
    }

    fn lost() -> StopReason {
        StopReason::LeaseLost {
            status: "queued".to_string(),
        }
    }

    /// Name, stop reason, result, attempts, expected fate.
    type Row = (
        &'static str,
        Option<StopReason>,
        Result<&'static str, JobFailure>,
        Attempts,
        Fate<&'static str>,
    );

    #[test]
    fn the_outcome_table() {
        let left = Attempts {
            failures: 0,
            max: 3,
        };
        let last = Attempts {
            failures: 2,
            max: 3,
        };
        let secs = |n: u32| Duration::from_secs(u64::from(n));
        let lost_fate = Fate::LeaseLost {
            status: "queued".to_string(),
        };
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("cancelled, succeeded", Some(StopReason::Cancelled), Ok("v"), left, Fate::Cancelled),
            ("cancelled, failed", Some(StopReason::Cancelled), Err(failure(true)), left, Fate::Cancelled),
            ("lease lost, succeeded", Some(lost()), Ok("v"), left, lost_fate.clone()),
            ("lease lost, failed", Some(lost()), Err(failure(false)), last, lost_fate),
            ("succeeded", None, Ok("v"), left, Fate::Succeeded("v")),
            ("succeeded at shutdown", Some(StopReason::Shutdown), Ok("v"), left, Fate::Succeeded("v")),
            ("cut off by shutdown", Some(StopReason::Shutdown), Err(failure(true)), left, Fate::Release),
            ("cut off by shutdown, permanent", Some(StopReason::Shutdown), Err(failure(false)), last, Fate::Release),
            ("retryable, attempts left", None, Err(failure(true)), left,
                Fate::Retry { error: failure(true), delay: secs(1) }),
            ("retryable, second failure", None, Err(failure(true)), Attempts { failures: 1, max: 3 },
                Fate::Retry { error: failure(true), delay: secs(2) }),
            ("retryable, none left", None, Err(failure(true)), last, Fate::Dead(failure(true))),
            ("retryable, one attempt only", None, Err(failure(true)), Attempts { failures: 0, max: 1 },
                Fate::Dead(failure(true))),
            ("permanent", None, Err(failure(false)), left, Fate::Dead(failure(false))),
        ];
        for (name, stop, result, attempts, expected) in rows {
            assert_eq!(
                decide(stop, result, attempts, secs),
                expected,
                "row: {name}"
            );
        }
    }

    #[test]
    fn backoff_is_asked_only_for_a_retry() {
        let never = |_: u32| -> Duration { panic!("backoff asked outside a retry") };
        let attempts = Attempts {
            failures: 0,
            max: 3,
        };
        decide(None, Err::<(), _>(failure(false)), attempts, never);
        decide(
            Some(StopReason::Shutdown),
            Err::<(), _>(failure(true)),
            attempts,
            never,
        );
        decide(None, Ok(()), attempts, never);
    }
}
