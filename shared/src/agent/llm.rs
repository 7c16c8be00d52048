//! LLM mode: the tool-calling loop of an agent job against an OpenAI-compatible chat
//! completions API ([`super::chat`]).
//!
//! ```json
//! {"kind": "agent", "payload": {
//!   "prompt": "What time is it in Tokyo? Answer in one sentence.",
//!   "servers": ["time"],
//!   "llm": {"model": "gpt-4o-mini", "max_steps": 10, "system": "Be brief.", "temperature": 0}
//! }}
//! ```
//!
//! The loop:
//! 1. lists the tools of `servers` (through the job's [`JobSessions`]: pooled sessions,
//!    or the job's own, stopped when the loop ends) and offers them as `tools`, named `server__tool`
//!    (characters the API does not allow become `_`), with their JSON schemas as sent by
//!    the server; only the tools the servers' `tools` allow-lists (worker config) allow
//!    and, when the job gives `llm.tools` patterns (`["fs__read_text_file", "time__*"]`),
//!    that match one of them: a model is never offered, and cannot call, another;
//! 2. asks the model; when it answers with `tool_calls`, runs them all at once through
//!    MCP, sends the results back as `tool` messages, and asks again;
//! 3. stops on an answer without tool calls (`stop_reason: "answer"`), after `max_steps`
//!    model calls (`"max_steps"`, default 10) or at the job's deadline (a `timeout`
//!    failure).
//!
//! A tool call the model got wrong (a tool it was not offered, arguments that are not a
//! JSON object or do not match the tool's `inputSchema`, with the offending fields named)
//! and a tool that fails are answered to the model as a tool error, as real agents do;
//! the loop goes on, except an answer bigger than `queue.max_result`, which fails the
//! job (`result_too_large`). The transcript is charged to the job's [`ResultBudget`] as
//! it grows: past `queue.max_result` the job stops with `result_too_large`. The result holds the answer, the stop reason, token usage and the
//! transcript (every message, tool call with arguments, result, timing).

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::chat::{ChatClient, ChatError, LlmSettings};
use super::plan::{text_parts, PlanContext};
use crate::failure::{FailureKind, JobFailure};
use crate::mcp::{JobSessions, PoolError};
use crate::result_budget::ResultBudget;
use crate::tool_pattern::any_matches;

pub use crate::job::{LlmOptions, DEFAULT_MAX_STEPS, MAX_STEPS_LIMIT};

/// An API-safe tool name: `[a-zA-Z0-9_-]`, at most 64 characters.
fn api_name(server: &str, tool: &str) -> String {
    let raw = format!("{server}__{tool}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// Runs the loop (see the module doc).
pub async fn run_llm(
    prompt: &str,
    servers: &[String],
    options: &LlmOptions,
    settings: Option<&LlmSettings>,
    ctx: PlanContext<'_>,
) -> Result<Value, JobFailure> {
    let settings = settings.ok_or_else(|| {
        JobFailure::new(
            FailureKind::LlmNotConfigured,
            "this job asks a model, but the worker has no [llm] config (base_url, model)",
            false,
        )
    })?;
    let sessions = JobSessions::new(ctx.config, ctx.pool, ctx.deadline, ctx.cancel)
        .with_progress(ctx.progress.cloned());
    let outcome = match list_tools(servers, &options.tools, &sessions).await {
        Ok(tools) => converse(prompt, options, settings, &tools, &sessions, ctx).await,
        Err((server, e)) => {
            let mut f = JobFailure::new(
                e.kind(),
                format!("listing the tools of `{server}`: {e}"),
                e.is_retryable(),
            );
            f.server = Some(server);
            f.stderr_tail = e.stderr().map(str::to_string);
            Err(f)
        }
    };
    sessions.close().await;
    outcome
}

/// Every tool of `servers` the model may call, with the server that has it (starting
/// sessions where needed): those the servers' own allow-lists allow (the listing of
/// [`JobSessions`]) and, when the job gives `allowed` patterns, that match one of them.
/// The first server that fails ends the listing.
async fn list_tools(
    servers: &[String],
    allowed: &[String],
    sessions: &JobSessions<'_>,
) -> Result<Vec<(String, rmcp::model::Tool)>, (String, PoolError)> {
    let mut tools = Vec::new();
    for server in servers {
        let listed = sessions
            .list_tools(server)
            .await
            .map_err(|e| (server.clone(), e))?;
        tools.extend(
            listed
                .into_iter()
                .filter(|t| allowed.is_empty() || any_matches(allowed, server, &t.name))
                .map(|t| (server.clone(), t)),
        );
    }
    Ok(tools)
}

async fn converse(
    prompt: &str,
    options: &LlmOptions,
    settings: &LlmSettings,
    tools: &[(String, rmcp::model::Tool)],
    sessions: &JobSessions<'_>,
    ctx: PlanContext<'_>,
) -> Result<Value, JobFailure> {
    let started = Instant::now();
    let client = ChatClient::new(settings).with_limiter(ctx.pool.limiter().cloned());
    let mut names: HashMap<String, (String, String)> = HashMap::new();
    let tools: Vec<Value> = tools
        .iter()
        .map(|(server, tool)| {
            let name = api_name(server, &tool.name);
            names.insert(name.clone(), (server.clone(), tool.name.to_string()));
            json!({"type": "function", "function": {
                "name": name,
                "description": tool.description.as_deref().unwrap_or(""),
                "parameters": Value::Object((*tool.input_schema).clone()),
            }})
        })
        .collect();
    let mut messages = Vec::new();
    if let Some(system) = &options.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": prompt}));
    let mut transcript: Vec<Value> = messages.clone();
    let mut budget = ResultBudget::new(ctx.config.queue.max_result);
    budget.charge(&transcript, "the prompt").map_err(|f| *f)?;
    let mut usage = (0u64, 0u64, 0u64);
    let max_steps = options.max_steps.unwrap_or(DEFAULT_MAX_STEPS);
    let model = options
        .model
        .clone()
        .unwrap_or_else(|| settings.model.clone());
    let mut last_content = Value::Null;
    let mut tool_calls_made = 0usize;
    for step in 1..=max_steps {
        let mut body = json!({"model": model, "messages": messages});
        if !tools.is_empty() {
            body["tools"] = json!(tools);
            body["tool_choice"] = json!("auto");
        }
        if let Some(t) = options.temperature {
            body["temperature"] = json!(t);
        }
        let asked = Instant::now();
        let answer = tokio::select! {
            answer = client.complete(&body, ctx.deadline) => answer,
            _ = ctx.cancel.cancelled() => return Err(JobFailure::new(FailureKind::Cancelled, "the job was stopped while the model was thinking", false)),
        }
        .map_err(|e: ChatError| {
            if Instant::now() >= ctx.deadline || matches!(e, ChatError::Limited(_)) {
                JobFailure::new(FailureKind::Timeout, format!("the job's deadline passed while asking the model: {e}"), true)
            } else {
                JobFailure::new(FailureKind::LlmError, e.to_string(), e.is_retryable())
            }
        })?;
        if let Some(u) = &answer.usage {
            usage.0 += u["prompt_tokens"].as_u64().unwrap_or(0);
            usage.1 += u["completion_tokens"].as_u64().unwrap_or(0);
            usage.2 += u["total_tokens"].as_u64().unwrap_or(0);
        }
        let message = &answer.message;
        last_content = message["content"].clone();
        let calls: Vec<Value> = message["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut sent = json!({"role": "assistant", "content": message["content"]});
        if !calls.is_empty() {
            sent["tool_calls"] = json!(calls);
        }
        messages.push(sent.clone());
        let mut record = sent;
        record["ms"] = json!(asked.elapsed().as_millis() as u64);
        record["usage"] = answer.usage.clone().unwrap_or(Value::Null);
        record["finish_reason"] = json!(answer.finish_reason);
        budget
            .charge(&record, &format!("the model's answer {step}"))
            .map_err(|f| *f)?;
        transcript.push(record);
        if calls.is_empty() {
            return Ok(result(
                last_content,
                "answer",
                step,
                usage,
                tool_calls_made,
                transcript,
            ));
        }
        tool_calls_made += calls.len();
        let runs = calls
            .iter()
            .map(|call| run_call(call, &names, sessions, started));
        for outcome in futures::future::join_all(runs).await {
            let (message, record) = outcome?;
            budget
                .charge(&record, &format!("a tool result of step {step}"))
                .map_err(|f| *f)?;
            messages.push(message);
            transcript.push(record);
        }
    }
    Ok(result(
        last_content,
        "max_steps",
        max_steps,
        usage,
        tool_calls_made,
        transcript,
    ))
}

fn result(
    answer: Value,
    stop: &str,
    steps: u32,
    usage: (u64, u64, u64),
    calls: usize,
    transcript: Vec<Value>,
) -> Value {
    json!({
        "answer": answer, "stop_reason": stop, "steps": steps, "tool_calls": calls,
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.2},
        "transcript": transcript,
    })
}

/// One tool call: the `tool` message for the model, and the transcript record. Only a
/// cancelled job is an error; everything else is told to the model.
async fn run_call(
    call: &Value,
    names: &HashMap<String, (String, String)>,
    sessions: &JobSessions<'_>,
    started: Instant,
) -> Result<(Value, Value), JobFailure> {
    let id = call["id"].as_str().unwrap_or_default().to_string();
    let name = call["function"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let raw_args = &call["function"]["arguments"];
    let start_ms = ms_since(started);
    let t0 = Instant::now();
    let args: Result<Map<String, Value>, String> = match raw_args {
        Value::String(s) if s.trim().is_empty() => Ok(Map::new()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(format!("the arguments must be a JSON object, got {other}")),
            Err(e) => Err(format!("the arguments are not valid JSON ({e}): {s}")),
        },
        Value::Object(m) => Ok(m.clone()),
        Value::Null => Ok(Map::new()),
        other => Err(format!("the arguments must be a JSON object, got {other}")),
    };
    let (ok, content) = match (names.get(&name), args) {
        (None, _) => {
            let mut known: Vec<&String> = names.keys().collect();
            known.sort();
            (
                false,
                format!("error: there is no tool named `{name}`; the tools are: {known:?}"),
            )
        }
        (Some(_), Err(e)) => (false, format!("error: {e}")),
        (Some((server, tool)), Ok(args)) => match sessions.call(server, tool, args).await {
            Ok((result, _)) => {
                let mut text = text_parts(&result);
                if text.is_empty() {
                    text = serde_json::to_string(
                        &result
                            .structured_content
                            .clone()
                            .unwrap_or(json!(result.content)),
                    )
                    .unwrap_or_default();
                }
                if result.is_error == Some(true) {
                    (false, format!("error: {text}"))
                } else {
                    (true, text)
                }
            }
            Err(PoolError::Cancelled { .. }) => {
                return Err(JobFailure::new(
                    FailureKind::Cancelled,
                    "the job was stopped during a tool call",
                    false,
                ))
            }
            Err(e) if e.kind() == FailureKind::ResultTooLarge => {
                let mut failure =
                    JobFailure::new(FailureKind::ResultTooLarge, e.to_string(), false);
                failure.server = Some(server.clone());
                failure.tool = Some(tool.clone());
                return Err(failure);
            }
            // Refused before the call: the model can fix its arguments and try again.
            Err(e @ (PoolError::InvalidArguments { .. } | PoolError::ToolNotAllowed { .. })) => {
                (false, format!("error: {e}"))
            }
            Err(e) => (false, format!("error: the tool failed: {e}")),
        },
    };
    let message = json!({"role": "tool", "tool_call_id": id, "content": content});
    let record = json!({
        "role": "tool", "tool_call_id": id, "name": name, "arguments": raw_args,
        "ok": ok, "content": content, "start_ms": start_ms, "ms": t0.elapsed().as_millis() as u64,
    });
    Ok((message, record))
}
