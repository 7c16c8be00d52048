//! Gateway tools: each exposed tool of each configured server as `SERVER__TOOL`, and a
//! call of one as an mcpq job.
//!
//! - The listing comes from the tool catalog the workers keep in Redis
//!   (`queue::tool_catalog`): `mcpq serve` runs no server itself. Only tools that
//!   `[serve.mcp] expose` names, of servers this front's config has, are listed, with
//!   the server's own description and schemas.
//! - A call is a one-step agent job, `literal_arguments` (the client's strings are data,
//!   never templates) and `keep_tool_errors` (the tool's `isError` answer is the
//!   result, as the server gave it), run by any worker with the job's retries, timeout
//!   and dead letters; its id is the task id.

use std::collections::BTreeMap;

use mcpq_core::config::serve::mcp::SEPARATOR;
use mcpq_core::job::{Job, JobOptions, PlanStep};
use mcpq_core::queue::results::{JobRecord, JobStatus};
use mcpq_core::queue::tool_catalog;
use rmcp::model::{CallToolResult, JsonObject, Tool};
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// `SERVER__TOOL` split at the first separator.
pub fn split(name: &str) -> Option<(&str, &str)> {
    let (server, tool) = name.split_once(SEPARATOR)?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// The exposed tools, by gateway name, with the server tool's definition renamed.
pub async fn tools(state: &AppState) -> Result<BTreeMap<String, Tool>, ApiError> {
    let settings = &state.config.serve.mcp;
    if settings.expose.is_empty() {
        return Ok(BTreeMap::new());
    }
    let exposed: Vec<&str> = state
        .servers
        .iter()
        .map(String::as_str)
        .filter(|s| settings.exposes_server(s))
        .collect();
    let listings =
        tool_catalog::read_servers(state.producer.connection(), state.producer.keys(), &exposed)
            .await?;
    let mut out = BTreeMap::new();
    for (server, listing) in listings {
        for raw in listing.tools {
            let Ok(mut tool) = serde_json::from_value::<Tool>(Value::Object(raw)) else {
                continue;
            };
            if !settings.exposes(&server, &tool.name) {
                continue;
            }
            let name = format!("{server}{SEPARATOR}{}", tool.name);
            tool.name = name.clone().into();
            out.insert(name, tool);
        }
    }
    Ok(out)
}

/// Whether `name` is an exposed gateway tool of a configured server (by name only:
/// whether the server lists it is for the worker to find out).
pub fn is_exposed(state: &AppState, name: &str) -> bool {
    split(name).is_some_and(|(server, tool)| {
        state.servers.contains(server) && state.config.serve.mcp.exposes(server, tool)
    })
}

/// Enqueues a call of gateway tool `name` (exposed: see [`is_exposed`]) as a job;
/// returns the job.
pub async fn submit(state: &AppState, name: &str, arguments: JsonObject) -> Result<Job, ApiError> {
    let (server, tool) = split(name)
        .ok_or_else(|| ApiError::bad_request(format!("no tool `{}`", name.escape_debug())))?;
    let step = PlanStep {
        name: None,
        server: server.to_string(),
        tool: tool.to_string(),
        arguments,
        continue_on_error: false,
        literal_arguments: true,
        keep_tool_errors: true,
    };
    let mut job = Job::agent(vec![step], JobOptions::default());
    let submitted = state.producer.submit(&job).await?;
    tracing::info!(job = %submitted.id, tool = %name, "gateway call enqueued");
    // The id it was stored under (a fresh id is re-drawn in its partition).
    job.id = submitted
        .id
        .parse()
        .map_err(|e: mcpq_core::job::JobError| ApiError::bad_request(e.to_string()))?;
    Ok(job)
}

/// How long a plain call waits for its job: the job's timeout plus time in the queue.
pub fn plain_wait(state: &AppState) -> std::time::Duration {
    state.config.defaults.job_timeout + state.config.serve.mcp.queue_wait
}

/// Where a gateway job is, for an MCP client.
#[derive(Debug)]
pub enum Outcome {
    /// Queued, running, or waiting to be retried; a word on which.
    Working(String),
    /// Ended with the tool's answer (`isError` included).
    Completed(Box<CallToolResult>),
    /// Ended without one (dead: timeout, crash, ...): the failure's kind and message.
    Failed { kind: String, message: String },
    /// Cancelled.
    Cancelled,
}

/// The outcome of job `record` (a gateway job's; reads the result when it succeeded).
pub async fn outcome(state: &AppState, record: &JobRecord) -> Result<Outcome, ApiError> {
    Ok(match record.status {
        JobStatus::Queued | JobStatus::Waiting => Outcome::Working("queued".into()),
        JobStatus::Scheduled => Outcome::Working("scheduled (delayed until its run_at)".into()),
        JobStatus::Running => Outcome::Working(format!("running (attempt {})", record.attempts)),
        JobStatus::Failed => Outcome::Working(format!(
            "attempt {} failed, retrying: {}",
            record.attempts,
            record.error.as_ref().map_or("", |e| e.message.as_str())
        )),
        JobStatus::Cancelled => Outcome::Cancelled,
        JobStatus::Dead => {
            let (kind, message) = record
                .error
                .as_ref()
                .map_or(("unknown".to_string(), "the job failed".to_string()), |e| {
                    (e.kind.to_string(), e.message.clone())
                });
            Outcome::Failed { kind, message }
        }
        JobStatus::Succeeded => {
            let whole = state.results.read_json(&record.id).await?.ok_or_else(|| {
                ApiError::not_found(format!("job {} (its record expired)", record.id))
            })?;
            let value: Value = serde_json::from_slice(&whole).unwrap_or(Value::Null);
            match serde_json::from_value::<CallToolResult>(value["result"][0]["result"].clone()) {
                Ok(mut result) => {
                    // Stored as the server answered (maybe an older protocol, without
                    // it); the front answers in its own.
                    result.result_type = Some(rmcp::model::ResultType::COMPLETE);
                    Outcome::Completed(Box::new(result))
                }
                Err(e) => Outcome::Failed {
                    kind: "protocol_error".into(),
                    message: format!(
                        "job {} is not a gateway call or its result is not a tool result: {e}",
                        record.id
                    ),
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_first_separator() {
        assert_eq!(split("fs__read_text_file"), Some(("fs", "read_text_file")));
        assert_eq!(split("a__b__c"), Some(("a", "b__c")));
        assert_eq!(split("__x"), None);
        assert_eq!(split("x__"), None);
        assert_eq!(split("submit_job"), None);
    }
}
