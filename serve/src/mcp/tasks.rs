//! Tasks are jobs: a task's state is read from the job's record in Redis.
//!
//! | job status | task status |
//! | --- | --- |
//! | queued, waiting, running, failed (a retry is due) | `working` (the message says which) |
//! | succeeded | `completed`, with the tool's result (`isError` included) |
//! | dead | `failed`, with a JSON-RPC error (-32603) naming the failure kind |
//! | cancelled | `cancelled` |
//!
//! The TTL is the job record's retention (`queue.result_ttl`); an unknown or expired
//! task id is -32602 (invalid params), as the tasks extension asks.

use std::time::{Duration, UNIX_EPOCH};

use mcpq_core::job::JobId;
use mcpq_core::queue::progress::Progress;
use rmcp::model::{DetailedTask, Task, TaskPayload, TaskStatus};
use rmcp::ErrorData as McpError;
use serde_json::json;

use super::gateway::{self, Outcome};
use crate::state::AppState;

/// The error for a task id that names no job.
pub fn unknown(id: &str) -> McpError {
    McpError::invalid_params(
        format!("no task {} (or it expired)", id.escape_debug()),
        None,
    )
}

/// Parses a task id (a job id).
pub fn parse(id: &str) -> Result<String, McpError> {
    id.parse::<JobId>()
        .map(|id| id.to_string())
        .map_err(|_| unknown(id))
}

fn iso(ms: Option<u64>) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// A progress report as words: `progress 3/10: copying`.
fn progress_text(report: &Progress) -> String {
    let mut text = match report.total {
        Some(total) => format!("progress {}/{total}", report.progress),
        None => format!("progress {}", report.progress),
    };
    if let Some(message) = &report.message {
        text.push_str(": ");
        text.extend(message.chars().take(200));
    }
    text
}

/// The task of a job just enqueued: `working`, `queued`, created now.
pub fn created(state: &AppState, id: &str) -> Task {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    Task::new(id.to_string(), TaskStatus::Working, now.clone(), now)
        .with_status_message("queued")
        .with_ttl_ms(state.config.queue.result_ttl.as_millis() as u64)
        .with_poll_interval_ms(state.config.serve.mcp.poll_interval.as_millis() as u64)
}

/// Task `id`, now.
pub async fn read(state: &AppState, id: &str) -> Result<DetailedTask, McpError> {
    let id = parse(id)?;
    let record = state
        .producer
        .status(&id)
        .await
        .map_err(|e| McpError::internal_error(format!("redis: {e}"), None))?
        .ok_or_else(|| unknown(&id))?;
    let outcome = gateway::outcome(state, &record)
        .await
        .map_err(|e| McpError::internal_error(format!("{}: {}", e.kind, e.message), None))?;
    let updated = record
        .finished_at
        .or(record.started_at)
        .or(record.submitted_at);
    let mut task = Task::new(
        id.clone(),
        TaskStatus::Working,
        iso(record.submitted_at),
        iso(updated),
    )
    .with_ttl_ms(state.config.queue.result_ttl.as_millis() as u64)
    .with_poll_interval_ms(state.config.serve.mcp.poll_interval.as_millis() as u64);
    let payload = match outcome {
        Outcome::Working(mut what) => {
            if let Some(p) = &record.progress {
                what = format!("{what}; {}", progress_text(p));
            }
            task = task.with_status_message(what);
            TaskPayload::Working
        }
        Outcome::Completed(result) => {
            let result = match serde_json::to_value(&*result) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => Default::default(),
            };
            TaskPayload::Completed { result }
        }
        Outcome::Failed { kind, message } => {
            task = task.with_status_message(format!("{kind}: {message}"));
            let error = json!({
                "code": -32603,
                "message": format!("{kind}: {message}"),
                "data": {"kind": kind, "job": id},
            });
            TaskPayload::Failed {
                error: error.as_object().cloned().unwrap_or_default(),
            }
        }
        Outcome::Cancelled => TaskPayload::Cancelled,
    };
    Ok(DetailedTask::new(task, payload))
}
