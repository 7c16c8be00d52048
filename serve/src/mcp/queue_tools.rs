//! The queue tools: the HTTP API's job, batch and server routes as MCP tools.
//!
//! Each tool is one request to the same routes `/v1/...` serve over HTTP, made
//! in-process (after the MCP front's own auth), so a tool checks, limits and answers
//! exactly as its route does: a 2xx answer is the tool's `structuredContent` (and its
//! text), anything else a tool error (`isError`) whose text is the route's error
//! `kind: message`.

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use crate::auth::Caller;

/// The most bytes of an answer a queue tool reads (results are bounded by the queue
/// already; this is the backstop).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Default `wait` of `wait_job`.
const DEFAULT_WAIT: &str = "30s";

/// The queue tools' definitions.
pub fn definitions() -> Vec<Tool> {
    let id =
        json!({"type": "string", "description": "The job id (a ULID, as submit_job returned)"});
    vec![
        tool(
            "submit_job",
            "Enqueue one job (the JSON envelope `mcpq submit` reads: {\"kind\": \"agent\"|\"email\", \"payload\": ..., \"options\": ...}). Returns its id at once; the job runs on a worker. Read it with get_job or wait_job.",
            json!({
                "type": "object",
                "properties": {
                    "job": {"type": "object", "description": "The job envelope"},
                    "idempotency_key": {"type": "string", "description": "A second submit with the same key returns the first job's id"}
                },
                "required": ["job"]
            }),
            json!({
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "kind": {"type": "string"}, "created": {"type": "boolean"}
                },
                "required": ["id", "kind", "created"]
            }),
        ),
        tool(
            "get_job",
            "A job's status, attempts, timings and last error (not its result: see wait_job).",
            json!({"type": "object", "properties": {"id": id}, "required": ["id"]}),
            record_schema(),
        ),
        tool(
            "wait_job",
            "Wait until a job ends (at most `wait`, default 30s, at most serve.max_wait), then return its record with the result or error; if it has not ended by then, its record without result.",
            json!({
                "type": "object",
                "properties": {
                    "id": id,
                    "wait": {"type": "string", "description": "How long to wait, e.g. \"30s\", \"2m\""}
                },
                "required": ["id"]
            }),
            record_schema(),
        ),
        tool(
            "cancel_job",
            "Cancel a job: a queued one never runs, a running one is stopped (its server's process tree too).",
            json!({"type": "object", "properties": {"id": id}, "required": ["id"]}),
            json!({
                "type": "object",
                "properties": {"id": {"type": "string"}, "cancelled": {"type": "boolean"}, "status": {"type": "string"}},
                "required": ["id", "cancelled", "status"]
            }),
        ),
        tool(
            "list_jobs",
            "List jobs, newest first, a page at a time (pass `next` as `cursor`).",
            json!({
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["queued", "running", "failed", "succeeded", "dead", "cancelled", "waiting"]},
                    "batch": {"type": "string", "description": "Only this batch's jobs"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "cursor": {"type": "string"}
                }
            }),
            json!({
                "type": "object",
                "properties": {"jobs": {"type": "array", "items": {"type": "object"}}, "next": {"type": ["string", "null"]}},
                "required": ["jobs"]
            }),
        ),
        tool(
            "submit_batch",
            "Enqueue many jobs as one batch (each a job envelope as submit_job takes, without id or idempotency_key). Every job is checked first: one bad job and nothing is enqueued, unless skip_invalid.",
            json!({
                "type": "object",
                "properties": {
                    "jobs": {"type": "array", "items": {"type": "object"}, "minItems": 1},
                    "skip_invalid": {"type": "boolean"},
                    "idempotency_key": {"type": "string"}
                },
                "required": ["jobs"]
            }),
            json!({
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "total": {"type": "integer"}, "enqueued": {"type": "integer"},
                    "existing": {"type": "integer"}, "invalid_skipped": {"type": "integer"}, "resumed": {"type": "boolean"}
                },
                "required": ["id", "total"]
            }),
        ),
        tool(
            "get_batch",
            "A batch's counts (queued, running, succeeded, dead, cancelled) and times.",
            json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}),
            json!({"type": "object", "properties": {"id": {"type": "string"}, "total": {"type": "integer"}}, "required": ["id"]}),
        ),
        tool(
            "list_servers",
            "The configured MCP servers, what the workers report of them (health, sessions, calls in flight) and their tools.",
            json!({"type": "object", "properties": {}}),
            json!({"type": "object", "properties": {"servers": {"type": "array", "items": {"type": "object"}}}, "required": ["servers"]}),
        ),
    ]
}

fn record_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "status": {"type": "string"},
            "attempts": {"type": "integer"},
            "result": {},
            "error": {}
        },
        "required": ["id", "status"]
    })
}

fn tool(name: &'static str, description: &'static str, input: Value, output: Value) -> Tool {
    let mut tool = Tool::new(name, description, object(input));
    tool.output_schema = Some(std::sync::Arc::new(object(output)));
    tool
}

fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Whether `name` is a queue tool.
pub fn is_queue_tool(name: &str) -> bool {
    matches!(
        name,
        "submit_job"
            | "get_job"
            | "wait_job"
            | "cancel_job"
            | "list_jobs"
            | "submit_batch"
            | "get_batch"
            | "list_servers"
    )
}

/// One request to the API routes.
struct ApiCall {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    idempotency_key: Option<String>,
    body: Vec<u8>,
}

impl ApiCall {
    fn get(path: String) -> Self {
        ApiCall {
            method: Method::GET,
            path,
            content_type: None,
            idempotency_key: None,
            body: Vec::new(),
        }
    }
}

/// Runs queue tool `name` with `args` against `api` (the routes, without auth) as
/// `caller`.
pub async fn call(api: &Router, caller: &Caller, name: &str, args: &JsonObject) -> CallToolResult {
    match request(name, args) {
        Ok(req) => send(api, caller, req).await,
        Err(message) => error_result("invalid_arguments", &message),
    }
}

fn request(name: &str, args: &JsonObject) -> Result<ApiCall, String> {
    let string = |key: &str| -> Result<Option<String>, String> {
        match args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    };
    let required = |key: &str| -> Result<String, String> {
        string(key)?.ok_or_else(|| format!("`{key}` is required"))
    };
    Ok(match name {
        "submit_job" => {
            let job = match args.get("job") {
                Some(job @ Value::Object(_)) => job,
                _ => return Err("`job` is required: a job envelope (a JSON object)".into()),
            };
            ApiCall {
                method: Method::POST,
                path: "/v1/jobs".into(),
                content_type: Some("application/json"),
                idempotency_key: string("idempotency_key")?,
                body: serde_json::to_vec(job).map_err(|e| e.to_string())?,
            }
        }
        "get_job" => ApiCall::get(format!("/v1/jobs/{}", segment(&required("id")?))),
        "wait_job" => {
            let wait = string("wait")?.unwrap_or_else(|| DEFAULT_WAIT.to_string());
            ApiCall::get(format!(
                "/v1/jobs/{}/result?{}",
                segment(&required("id")?),
                query(&[("wait", Some(wait))])
            ))
        }
        "cancel_job" => ApiCall {
            method: Method::POST,
            ..ApiCall::get(format!("/v1/jobs/{}/cancel", segment(&required("id")?)))
        },
        "list_jobs" => {
            let limit = match args.get("limit") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
                Some(_) => return Err("`limit` must be a whole number from 1 to 1000".into()),
            };
            ApiCall::get(format!(
                "/v1/jobs?{}",
                query(&[
                    ("status", string("status")?),
                    ("batch", string("batch")?),
                    ("limit", limit),
                    ("cursor", string("cursor")?),
                ])
            ))
        }
        "submit_batch" => {
            let Some(Value::Array(jobs)) = args.get("jobs") else {
                return Err("`jobs` is required: an array of job envelopes".into());
            };
            let mut body = Vec::new();
            for job in jobs {
                serde_json::to_writer(&mut body, job).map_err(|e| e.to_string())?;
                body.push(b'\n');
            }
            let skip = match args.get("skip_invalid") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(_) => return Err("`skip_invalid` must be true or false".into()),
            };
            ApiCall {
                method: Method::POST,
                path: format!("/v1/batches?{}", query(&[("skip_invalid", skip)])),
                content_type: Some("application/x-ndjson"),
                idempotency_key: string("idempotency_key")?,
                body,
            }
        }
        "get_batch" => ApiCall::get(format!("/v1/batches/{}", segment(&required("id")?))),
        "list_servers" => ApiCall::get("/v1/servers".into()),
        other => return Err(format!("no queue tool `{}`", other.escape_debug())),
    })
}

/// `text` as one path segment: everything but unreserved characters percent-encoded
/// (an id cannot reach another route).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", segment(v))))
        .collect::<Vec<_>>()
        .join("&")
}

async fn send(api: &Router, caller: &Caller, call: ApiCall) -> CallToolResult {
    let mut builder = Request::builder().method(call.method).uri(&call.path);
    if let Some(ct) = call.content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    if let Some(key) = &call.idempotency_key {
        builder = builder.header("idempotency-key", key);
    }
    let mut request = match builder.body(Body::from(call.body)) {
        Ok(r) => r,
        Err(e) => return error_result("invalid_arguments", &e.to_string()),
    };
    request.extensions_mut().insert(caller.clone());
    let response = match api.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let bytes = match axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
        Ok(b) => b,
        Err(e) => return error_result("internal", &format!("reading the answer: {e}")),
    };
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        let structured = match value {
            Value::Object(_) => value,
            other => json!({ "value": other }),
        };
        return CallToolResult::structured(structured);
    }
    let kind = value["error"]["kind"].as_str().unwrap_or("error");
    let message = value["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}"));
    let mut text = message;
    if let Some(path) = value["error"]["path"].as_str() {
        text = format!("{text} (at {path})");
    }
    if let Some(lines) = value["error"]["lines"].as_array() {
        for line in lines.iter().take(20) {
            text.push_str(&format!(
                "\nline {}: {}",
                line["line"],
                line["message"].as_str().unwrap_or("")
            ));
        }
    }
    error_result(kind, &text)
}

/// A tool error whose text is `kind: message`.
pub fn error_result(kind: &str, message: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!("{kind}: {message}"))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_leave_their_route() {
        let mut args = Map::new();
        args.insert("id".into(), json!("../dlq?x=1#y"));
        let call = request("get_job", &args).expect("a request");
        assert_eq!(call.path, "/v1/jobs/..%2Fdlq%3Fx%3D1%23y");
        args.insert("id".into(), json!(5));
        assert!(request("get_job", &args).is_err());
        assert!(request("nope", &Map::new()).is_err());
    }

    #[test]
    fn every_definition_is_a_queue_tool_with_object_schemas() {
        let defs = definitions();
        assert_eq!(defs.len(), 8);
        for t in defs {
            assert!(is_queue_tool(&t.name), "{}", t.name);
            assert_eq!(t.input_schema["type"], "object");
            assert!(t.output_schema.is_some());
        }
    }
}
