//! `mcpq result ID`, and how a finished job is shown (also used by `wait`).

use mcpq_shared::queue::{JobRecord, JobStatus};
use serde_json::json;

use crate::commands::{parse_id, record, Ctx};
use crate::{exit, output};

pub async fn run(ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let id = parse_id(id)?;
    let producer = ctx.producer().await?;
    let record = record(ctx, producer.store(), &id).await?;
    Ok(show(ctx, &record))
}

/// Prints a record's outcome; returns the exit code (0 succeeded, 1 failed, 4 not finished).
pub fn show(ctx: &Ctx, record: &JobRecord) -> u8 {
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
        JobStatus::Failed => {
            let failure = record.error.clone();
            if ctx.json {
                output::json_line(
                    "result",
                    json!({"id": record.id, "status": record.status, "error": failure}),
                );
            }
            match &failure {
                Some(f) => eprintln!("{}", output::failure_text(&record.id, f)),
                None => eprintln!("job {} failed (no error was stored)", record.id),
            }
            exit::JOB_FAILED
        }
        JobStatus::Queued | JobStatus::Running => {
            if ctx.json {
                output::json_line("result", json!({"id": record.id, "status": record.status}));
            }
            eprintln!(
                "job {} is {}; run `mcpq wait {}` to wait for it",
                record.id, record.status, record.id
            );
            exit::NOT_FINISHED
        }
    }
}
