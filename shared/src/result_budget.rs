//! `ResultBudget`: the bound on a job's result, `queue.max_result` (default 8 MiB).
//!
//! Guarantees:
//! - No job stores a result bigger than the limit, measured as the JSON that would be
//!   stored ([`json_len`], counted without building it): the runner checks the final
//!   value, and such a job fails at once, permanently, with `result_too_large` naming
//!   the size, the limit and the key.
//! - A job stops as soon as it is known to be too big: plans charge each step's entry
//!   as it is added and the LLM loop each transcript record, so a job never holds much
//!   more than the limit (plus one tool answer, itself bounded by the same limit, see
//!   [`crate::mcp::answer_limit`]).

use serde::Serialize;

use crate::failure::{FailureKind, JobFailure};

/// The bytes of `value` as compact JSON, counted without allocating them.
pub fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a serde_json::Value (or our own types) into a writer cannot fail but
    // for the writer, which never does; a failure would only under-count.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The running total of a job's result against the limit.
#[derive(Debug, Clone)]
pub struct ResultBudget {
    limit: usize,
    used: usize,
}

impl ResultBudget {
    /// A budget of `limit` bytes (`queue.max_result`).
    pub fn new(limit: usize) -> Self {
        ResultBudget { limit, used: 0 }
    }

    /// Adds `value`'s JSON size; fails once the total is over the limit (boxed: the
    /// failure is rare and big). `what` says
    /// what was being added, for the message ("step 3's result").
    pub fn charge<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        what: &str,
    ) -> Result<(), Box<JobFailure>> {
        self.used = self.used.saturating_add(json_len(value));
        if self.used > self.limit {
            return Err(Box::new(JobFailure::new(
                FailureKind::ResultTooLarge,
                format!(
                    "the job's result reached {} bytes with {what}, over the limit of {} bytes (queue.max_result); the job was stopped there",
                    self.used, self.limit
                ),
                false,
            )));
        }
        Ok(())
    }

    /// Checks a whole result against `limit`.
    pub fn check<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<(), Box<JobFailure>> {
        let bytes = json_len(value);
        if bytes > limit {
            return Err(Box::new(JobFailure::new(
                FailureKind::ResultTooLarge,
                format!(
                    "the job's result is {bytes} bytes, over the limit of {limit} bytes (queue.max_result)"
                ),
                false,
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_compact_json_and_fails_past_the_limit_naming_the_key() {
        let v = serde_json::json!({"a": "xyz"});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).expect("json").len());
        let mut budget = ResultBudget::new(20);
        budget.charge(&v, "step 0's result").expect("11 bytes fit");
        let err = budget
            .charge(&v, "step 1's result")
            .expect_err("22 bytes do not");
        assert_eq!(err.kind, FailureKind::ResultTooLarge);
        assert!(!err.retryable);
        assert!(err.message.contains("queue.max_result"), "{}", err.message);
        assert!(err.message.contains("step 1's result"), "{}", err.message);
        assert!(ResultBudget::check(&v, 11).is_ok());
        let err = ResultBudget::check(&v, 10).expect_err("over");
        assert!(err.message.contains("11 bytes"), "{}", err.message);
    }
}
