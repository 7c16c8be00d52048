//! Running a plan: the steps of an agent job, in order, each a `tools/call`.
//!
//! - Every step calls its tool through the plan's [`JobSessions`]: a pooled server
//!   (`pool = true`, the default) through the [`McpPool`]'s warm sessions shared with
//!   other jobs; any other server is started the first time a step names it, reused by
//!   later steps of the same job, and stopped (whole process tree) when the plan ends,
//!   however it ends.
//! - Each call's deadline is the server's `call_timeout`, cut to what is left of the
//!   job's deadline.
//! - A step's arguments are rendered just before its call: templates over the job's
//!   input, earlier steps' results and the email ([`super::template`]), in the
//!   [`TemplateSandbox`], never in the worker itself; a template that fails at run time
//!   (an error, or a template memory, output or time limit) fails the step
//!   (`template_error`, not retried).
//! - The first failing step ends the plan, unless it is marked `continue_on_error`: then
//!   its failure is recorded (and visible to later steps as `steps.NAME.error`) and the
//!   plan goes on. The failure names the step, server and tool, and quotes the server's
//!   stderr tail. A cancelled job always stops.
//!
//! - Each step's entry is charged to the job's [`ResultBudget`] (`queue.max_result`) as
//!   it is added: once the results add up to more than the limit the plan stops with
//!   `result_too_large` (permanent; `continue_on_error` does not apply). One answer
//!   bigger than the limit fails its step the same way (the session is closed).
//!
//! Result: a JSON array with one entry per step:
//! `{"step": 0, "name": null, "server": "echo", "tool": "echo", "result": <CallToolResult>}`,
//! or, for a failed `continue_on_error` step, `{..., "error": <failure>}`.

use rmcp::model::CallToolResult;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::template_sandbox::TemplateSandbox;
use crate::config::Config;
use crate::failure::{FailureKind, JobFailure};
use crate::job::{AgentJob, PlanStep};
use crate::mcp::{JobSessions, McpPool, PoolError, ProgressSink};
use crate::result_budget::ResultBudget;

/// What a plan needs from the worker.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    /// Server definitions and default deadlines.
    pub config: &'a Config,
    /// Warm sessions of pooled servers; its supervisor starts the fresh ones (both
    /// reached through a [`JobSessions`] the runner opens).
    pub pool: &'a McpPool,
    /// The job's deadline.
    pub deadline: Instant,
    /// Fires when the job must stop (cancel, lost lease, end of shutdown grace): the call
    /// in progress ends, a fresh server is stopped with its process tree, a pooled
    /// session is retired.
    pub cancel: &'a CancellationToken,
    /// What templates see besides `input` and `steps`: `job`, and in email jobs `email`
    /// and `attachments` (an object; may be `Value::Null`).
    pub data: &'a Value,
    /// Where templates are rendered (a memory-limited child process, never the worker).
    pub templates: &'a TemplateSandbox,
    /// Where the servers' progress reports go (the job's record), if anywhere.
    pub progress: Option<&'a ProgressSink>,
}

/// The failure of step `i`.
fn step_failure(
    i: usize,
    step: &PlanStep,
    kind: FailureKind,
    message: String,
    retryable: bool,
) -> JobFailure {
    JobFailure {
        kind,
        message: format!("step {i}: {message}"),
        step: Some(i),
        server: Some(step.server.clone()),
        tool: Some(step.tool.clone()),
        stderr_tail: None,
        retryable,
    }
}

/// The failure of step `i` from a pool (or fresh-session) error.
fn pool_failure(i: usize, step: &PlanStep, err: &PoolError) -> JobFailure {
    let mut failure = step_failure(i, step, err.kind(), err.to_string(), err.is_retryable());
    failure.stderr_tail = err.stderr().map(str::to_string);
    failure
}

/// Runs every step of `plan`; see the module doc.
pub async fn run_plan(plan: &AgentJob, ctx: PlanContext<'_>) -> Result<Value, JobFailure> {
    run_plan_with_data(plan, ctx)
        .await
        .map(|(results, _)| results)
}

/// [`run_plan`], also returning what templates saw at the end (`input`, `steps`, and
/// the context's data), for templates rendered after the plan (an email reply).
pub async fn run_plan_with_data(
    plan: &AgentJob,
    ctx: PlanContext<'_>,
) -> Result<(Value, Value), JobFailure> {
    let sessions = JobSessions::new(ctx.config, ctx.pool, ctx.deadline, ctx.cancel)
        .with_progress(ctx.progress.cloned());
    let mut outcome = run_steps(plan, ctx, &sessions).await;
    for (_, note) in sessions.close().await {
        if let Err(failure) = &mut outcome {
            failure.message.push_str(&format!("; then {note}"));
        }
    }
    outcome
}

async fn run_steps(
    plan: &AgentJob,
    ctx: PlanContext<'_>,
    sessions: &JobSessions<'_>,
) -> Result<(Value, Value), JobFailure> {
    let mut data = match ctx.data {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    data.insert("input".to_string(), Value::Object(plan.input.clone()));
    data.insert("steps".to_string(), Value::Object(Map::new()));
    let mut data = Value::Object(data);
    let mut results = Vec::with_capacity(plan.steps.len());
    let mut budget = ResultBudget::new(ctx.config.queue.max_result);
    for (i, step) in plan.steps.iter().enumerate() {
        let mut entry =
            json!({"step": i, "name": step.name, "server": step.server, "tool": step.tool});
        match run_step(i, step, &data, ctx, sessions).await {
            Ok((result, seen)) => {
                entry["result"] = serde_json::to_value(&result).unwrap_or(Value::Null);
                drop(result);
                charge(&mut budget, &entry, i, step).map_err(|f| *f)?;
                results.push(entry);
                remember(&mut data, step, seen);
            }
            Err(failure)
                if step.continue_on_error
                    && failure.kind != FailureKind::Cancelled
                    && failure.kind != FailureKind::ResultTooLarge =>
            {
                tracing::info!(step = i, kind = %failure.kind, "step failed; continue_on_error: going on");
                entry["error"] = serde_json::to_value(&failure).unwrap_or(Value::Null);
                charge(&mut budget, &entry, i, step).map_err(|f| *f)?;
                results.push(entry);
                remember(&mut data, step, json!({"is_error": true, "error": failure}));
            }
            Err(failure) => return Err(failure),
        }
    }
    Ok((Value::Array(results), data))
}

/// Charges step `i`'s entry to the job's result budget.
fn charge(
    budget: &mut ResultBudget,
    entry: &Value,
    i: usize,
    step: &PlanStep,
) -> Result<(), Box<JobFailure>> {
    budget
        .charge(entry, &format!("step {i}'s result"))
        .map_err(|f| Box::new(step_failure(i, step, f.kind, f.message, false)))
}

/// Makes a step's outcome visible to later templates as `steps.NAME`.
fn remember(data: &mut Value, step: &PlanStep, seen: Value) {
    if let (Some(name), Some(steps)) = (&step.name, data["steps"].as_object_mut()) {
        steps.insert(name.clone(), seen);
    }
}

/// One step: render its arguments, call its tool. On success, the tool result and what
/// later templates see of it.
async fn run_step(
    i: usize,
    step: &PlanStep,
    data: &Value,
    ctx: PlanContext<'_>,
    sessions: &JobSessions<'_>,
) -> Result<(CallToolResult, Value), JobFailure> {
    if !ctx.config.servers.contains_key(&step.server) {
        let message = format!("server `{}` is not configured on this worker", step.server);
        return Err(step_failure(
            i,
            step,
            FailureKind::UnknownServer,
            message,
            false,
        ));
    }
    if ctx.cancel.is_cancelled() {
        let message = "the job was stopped before this step".to_string();
        return Err(step_failure(
            i,
            step,
            FailureKind::Cancelled,
            message,
            false,
        ));
    }
    if Instant::now() >= ctx.deadline {
        let message = "the job's deadline passed before this step could start".to_string();
        return Err(step_failure(i, step, FailureKind::Timeout, message, true));
    }
    let arguments = if step.literal_arguments {
        step.arguments.clone()
    } else {
        let arguments = Value::Object(step.arguments.clone());
        let rendered = ctx
            .templates
            .render(&arguments, data, ctx.deadline, ctx.cancel)
            .await;
        match rendered {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(e) => {
                let (kind, retryable) = (e.kind(), e.is_retryable());
                return Err(step_failure(i, step, kind, e.to_string(), retryable));
            }
        }
    };
    let called = sessions.call(&step.server, &step.tool, arguments).await;
    let (result, stderr) = called.map_err(|e| pool_failure(i, step, &e))?;
    let text = text_parts(&result);
    if result.is_error == Some(true) && !step.keep_tool_errors {
        let message = format!(
            "tool `{}` on server `{}` returned an error: {}",
            step.tool,
            step.server,
            tool_text(&result)
        );
        let mut failure = step_failure(i, step, FailureKind::ToolError, message, true);
        failure.stderr_tail = stderr;
        return Err(failure);
    }
    let seen = json!({
        "text": text,
        "result": result,
        "structured": result.structured_content,
        "is_error": result.is_error == Some(true),
    });
    Ok((result, seen))
}

/// The text parts of a tool result, joined by newlines (empty when there are none).
pub fn text_parts(result: &CallToolResult) -> String {
    let value = serde_json::to_value(&result.content).unwrap_or(Value::Null);
    let parts: Vec<String> = value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c.get("text").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    parts.join("\n")
}

/// The text parts of a tool result for messages: `(no text content)` when there are none.
pub fn tool_text(result: &CallToolResult) -> String {
    let text = text_parts(result);
    if text.is_empty() {
        "(no text content)".to_string()
    } else {
        text
    }
}
