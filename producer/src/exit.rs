//! Exit codes, and the errors that carry one: a [`CliError`] whose kind decides the code
//! and, under `--json`, the `kind` field (`mcpq_core::cli_error`, shared with
//! `mcpq-worker check`).

use mcpq_core::cli_error::{CliError, CliErrorKind};

/// The codes `main` and the commands return themselves; every other code comes from an
/// error's kind ([`CliErrorKind::exit_code`]).
pub use mcpq_core::cli_error::{EXIT_OK as OK, EXIT_USAGE as USAGE};

/// An error of `kind` with `message` (its exit code is the kind's).
pub fn error(kind: CliErrorKind, message: impl Into<String>) -> anyhow::Error {
    CliError::new(kind, message).into()
}

/// Bad flags or arguments (exit 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    error(CliErrorKind::Usage, message)
}

/// The job given cannot be read or fails validation (exit 2).
pub fn invalid_job(message: impl Into<String>) -> anyhow::Error {
    error(CliErrorKind::InvalidJob, message)
}

/// No such job in the namespace (exit 2).
pub fn unknown_job(message: impl Into<String>) -> anyhow::Error {
    error(CliErrorKind::UnknownJob, message)
}

/// The config or the environment is wrong (exit 2).
pub fn config(message: impl Into<String>) -> anyhow::Error {
    error(CliErrorKind::Config, message)
}

/// Maps a queue error: a job over `queue.max_payload` is the input's fault
/// (`invalid_job`, exit 2); a record mcpq did not write is `corrupt_record`; everything
/// else (Redis unreachable, out of memory, an ACL refusal) is `redis`. Both exit 3: the
/// environment, not the job. Never exit 1: that says a *job* is dead or cancelled.
pub fn queue(err: mcpq_core::queue::QueueError) -> anyhow::Error {
    use mcpq_core::queue::QueueError;
    let kind = match err {
        QueueError::TooLarge { .. } => CliErrorKind::InvalidJob,
        QueueError::Corrupt { .. } => CliErrorKind::CorruptRecord,
        QueueError::BadCursor(_) => CliErrorKind::Usage,
        _ => CliErrorKind::Redis,
    };
    error(kind, err.to_string())
}

/// The kind and exit code of an error a command returned: its [`CliError`]'s, or
/// `internal` (exit 1, as before kinds existed) for anything else, which is a bug.
pub fn kind_of(err: &anyhow::Error) -> CliErrorKind {
    err.downcast_ref::<CliError>()
        .map(|e| e.kind)
        .unwrap_or(CliErrorKind::Internal)
}
