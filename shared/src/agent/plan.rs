//! Running a plan: the steps of an agent job, in order, each a `tools/call`.
//!
//! - A server is started the first time a step names it and is reused by later steps
//!   of the same job; every server the job started is stopped (whole process tree) when
//!   the plan ends, however it ends.
//! - Each call's deadline is the server's `call_timeout`, cut to what is left of the
//!   job's deadline.
//! - The first failing step ends the plan; the failure names the step, server and tool,
//!   and quotes the server's stderr tail.
//!
//! Result: a JSON array with one entry per step:
//! `{"step": 0, "name": null, "server": "echo", "tool": "echo", "result": <CallToolResult>}`.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::Config;
use crate::job::AgentJob;
use crate::mcp::{McpError, McpSession};
use crate::queue::JobFailure;
use crate::supervisor::{Admission, Supervisor};

/// What a plan needs from the worker.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    /// Server definitions and default deadlines.
    pub config: &'a Config,
    /// Where processes come from.
    pub supervisor: &'a Supervisor,
    /// The job's deadline.
    pub deadline: Instant,
}

/// Builds the failure of step `step` from an MCP error.
pub fn mcp_failure(step: usize, server: &str, tool: &str, err: &McpError) -> JobFailure {
    JobFailure {
        kind: err.kind().to_string(),
        message: format!("step {step}: {err}"),
        step: Some(step),
        server: Some(server.to_string()),
        tool: Some(tool.to_string()),
        stderr_tail: err.stderr().map(str::to_string),
        // A missing binary will still be missing next time; everything else (crash,
        // timeout, a server that failed to start) may pass on a retry.
        retryable: !matches!(err, McpError::Spawn(_)),
    }
}

/// Runs every step of `plan`; see the module doc.
pub async fn run_plan(plan: &AgentJob, ctx: PlanContext<'_>) -> Result<Value, JobFailure> {
    let mut sessions: HashMap<String, McpSession> = HashMap::new();
    let mut outcome = run_steps(plan, ctx, &mut sessions).await;
    let stops = futures::future::join_all(sessions.into_iter().map(|(name, session)| async move {
        let report = session.shutdown().await;
        (name, report)
    }))
    .await;
    for (name, report) in stops {
        if !report.escalated {
            continue;
        }
        let note = format!(
            "server `{name}` ignored SIGTERM for {:?} and was killed with SIGKILL",
            report.kill_grace
        );
        tracing::warn!(server = %name, "{note}");
        if let Err(failure) = &mut outcome {
            failure.message.push_str(&format!("; then {note}"));
        }
    }
    outcome
}

/// Waits until the supervisor may start `server`, or fails: fast if the server is in a
/// crash loop, or when its restart backoff would outlast the job's deadline.
async fn admit(server: &str, ctx: PlanContext<'_>) -> Result<(), (&'static str, String)> {
    let now = Instant::now();
    match ctx.supervisor.health().admission(server, now.into_std()) {
        Admission::Ready => Ok(()),
        Admission::NotBefore(at) => {
            let at = Instant::from_std(at);
            if at > ctx.deadline {
                return Err((
                    "server_backoff",
                    format!("server `{server}` crashed and may not restart for {:?}, past this job's deadline", at - now),
                ));
            }
            tokio::time::sleep_until(at).await;
            Ok(())
        }
        Admission::Unhealthy { crashes, until } => Err((
            "server_unhealthy",
            format!(
                "server `{server}` is unhealthy: it crashed {crashes} times within {:?}; it will not be started again for {:?}",
                ctx.supervisor.health().policy().crash_loop_window,
                until.saturating_duration_since(now.into_std())
            ),
        )),
    }
}

async fn run_steps(
    plan: &AgentJob,
    ctx: PlanContext<'_>,
    sessions: &mut HashMap<String, McpSession>,
) -> Result<Value, JobFailure> {
    let mut results = Vec::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        let fail = |kind: &str, message: String, retryable: bool| JobFailure {
            kind: kind.to_string(),
            message: format!("step {i}: {message}"),
            step: Some(i),
            server: Some(step.server.clone()),
            tool: Some(step.tool.clone()),
            stderr_tail: None,
            retryable,
        };
        let Some(server) = ctx.config.servers.get(&step.server) else {
            return Err(fail(
                "unknown_server",
                format!("server `{}` is not configured on this worker", step.server),
                false,
            ));
        };
        let timeouts = ctx.config.timeouts(server);
        let health = ctx.supervisor.health();
        if !sessions.contains_key(&step.server) {
            admit(&step.server, ctx)
                .await
                .map_err(|(kind, message)| fail(kind, message, true))?;
            let started =
                McpSession::start(ctx.supervisor, &step.server, server, timeouts, ctx.deadline)
                    .await;
            let session = started.map_err(|e| {
                if e.is_crash() {
                    health.record_crash(&step.server, std::time::Instant::now());
                }
                mcp_failure(i, &step.server, &step.tool, &e)
            })?;
            sessions.insert(step.server.clone(), session);
        }
        let session = sessions.get_mut(&step.server).expect("inserted above");
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(
                "timeout",
                "the job's deadline passed before this step could start".to_string(),
                true,
            ));
        }
        let result = match session
            .call_tool(&step.tool, step.arguments.clone(), timeouts.call.min(left))
            .await
        {
            Ok(result) => {
                health.record_success(&step.server);
                result
            }
            Err(e) => {
                if e.is_crash() && health.record_crash(&step.server, std::time::Instant::now()) {
                    tracing::warn!(server = %step.server, "server marked unhealthy: crash loop");
                }
                return Err(mcp_failure(i, &step.server, &step.tool, &e));
            }
        };
        if result.is_error == Some(true) {
            let text = tool_text(&result);
            let mut failure = fail(
                "tool_error",
                format!(
                    "tool `{}` on server `{}` returned an error: {text}",
                    step.tool, step.server
                ),
                true,
            );
            failure.stderr_tail = session.stderr_tail();
            return Err(failure);
        }
        results.push(json!({
            "step": i,
            "name": step.name,
            "server": step.server,
            "tool": step.tool,
            "result": result,
        }));
    }
    Ok(Value::Array(results))
}

/// The text parts of a tool result, joined by newlines.
pub fn tool_text(result: &rmcp::model::CallToolResult) -> String {
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
    if parts.is_empty() {
        "(no text content)".to_string()
    } else {
        parts.join("\n")
    }
}
