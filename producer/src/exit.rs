//! Exit codes, and the error type that carries one.

use std::fmt;

/// The job succeeded / the command worked.
pub const OK: u8 = 0;
/// The job failed.
pub const JOB_FAILED: u8 = 1;
/// Usage or input error.
pub const USAGE: u8 = 2;
/// Redis cannot be reached, or refused the command (out of memory, an ACL, read-only
/// replica...): the environment, not the job.
pub const REDIS_DOWN: u8 = 3;
/// The job has not finished.
pub const NOT_FINISHED: u8 = 4;

/// An error that decides the exit code.
#[derive(Debug)]
pub struct Exit {
    /// The code.
    pub code: u8,
    /// The message for stderr.
    pub message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// A usage/input error (exit 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Exit {
        code: USAGE,
        message: message.into(),
    }
    .into()
}

/// Maps a queue error: a job over `queue.max_payload` is the input's fault (exit 2);
/// everything else (Redis unreachable, out of memory, an ACL refusal, unreadable data)
/// is the environment's (exit 3). Never exit 1: that says a *job* is dead or cancelled.
pub fn queue(err: mcpq_core::queue::QueueError) -> anyhow::Error {
    let code = match err {
        mcpq_core::queue::QueueError::TooLarge { .. } => USAGE,
        _ => REDIS_DOWN,
    };
    Exit {
        code,
        message: err.to_string(),
    }
    .into()
}
