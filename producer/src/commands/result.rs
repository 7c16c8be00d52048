//! `mcpq result ID`, and how a finished job is shown (also used by `wait`).

use mcpq_core::cli_error::{CliError, CliErrorKind};
use mcpq_core::queue::{JobRecord, JobStatus};
use serde_json::json;

use crate::commands::{parse_id, record, Ctx};
use crate::{exit, output};
use mcpq_core::terminal::one_line;

pub async fn run(ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let id = parse_id(id)?;
    let producer = ctx.producer().await?;
    let record = record(ctx, producer.store(), &id).await?;
    Ok(show(ctx, &record, None))
}

/// Prints a record's outcome; returns the exit code (0 succeeded, 1 dead or cancelled,
/// 4 not finished). The outcome goes to stdout (a `result` line under `--json`); a job
/// that did not succeed is also reported on stderr as one error (`job_failed`,
/// `job_cancelled`, `not_finished`), whose message starts with `unfinished_note` (on a
/// line of its own) when the job has not finished.
pub fn show(ctx: &Ctx, record: &JobRecord, unfinished_note: Option<&str>) -> u8 {
    match record.status {
        JobStatus::Succeeded => {
            let result = record.result.clone().unwrap_or_default();
            if ctx.json {
                output::json_line(
                    "result",
                    json!({"id": record.id, "status": record.status, "result": result}),
                );
            } else {
                output::line(&output::result_text(&result));
            }
            exit::OK
        }
        JobStatus::Dead | JobStatus::Cancelled => {
            let failure = record.error.clone();
            if ctx.json {
                output::json_line(
                    "result",
                    json!({"id": record.id, "status": record.status, "error": failure}),
                );
            }
            let message = match &failure {
                Some(f) => output::failure_text(&record.id, f),
                None => format!(
                    "job {} is {} (no error was stored)",
                    record.id, record.status
                ),
            };
            let kind = if record.status == JobStatus::Cancelled {
                CliErrorKind::JobCancelled
            } else {
                CliErrorKind::JobFailed
            };
            report(ctx, CliError::new(kind, message))
        }
        JobStatus::Queued
        | JobStatus::Scheduled
        | JobStatus::Running
        | JobStatus::Failed
        | JobStatus::Waiting => {
            if ctx.json {
                output::json_line(
                    "result",
                    json!({"id": record.id, "status": record.status, "error": record.error}),
                );
            }
            let retry = match (&record.error, record.status) {
                (Some(e), JobStatus::Failed) => format!(
                    " (attempt {} of {} failed: [{}] {}; it will run again)",
                    record.attempts,
                    record.max_attempts,
                    one_line(e.kind.as_str()),
                    one_line(&e.message)
                ),
                _ => String::new(),
            };
            let message = format!(
                "job {} is {}{retry}; run `mcpq wait {}` to wait for it",
                record.id, record.status, record.id
            );
            let message = match unfinished_note {
                Some(note) => format!("{note}\n{message}"),
                None => message,
            };
            report(ctx, CliError::new(CliErrorKind::NotFinished, message))
        }
    }
}

/// Prints a job's outcome error on stderr (no `mcpq: ` prefix: it is the job's, not the
/// command's) and returns its exit code.
fn report(ctx: &Ctx, err: CliError) -> u8 {
    output::error(ctx.json, &err, "");
    err.exit_code()
}
