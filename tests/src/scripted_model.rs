//! A scripted model behind a real OpenAI-compatible HTTP API (`POST
//! /v1/chat/completions`), on 127.0.0.1, for the LLM-mode tests.
//!
//! The job's `llm.model` picks the script. Each script reads the conversation it is
//! sent the way a model would (the tool results it asked for, by `tool_call_id`) and
//! answers `WRONG: ...` when something is not as a real API client must send it, so a
//! test that checks the final answer checks the wire format too. Every request is
//! kept ([`ScriptedModel::requests`]). It requires `Authorization: Bearer test-key`.
//!
//! Scripts: `tools` (two tool calls, then checks their results), `parallel` (two slow
//! calls at once), `loop` (asks for a tool for ever), `flaky` (429, then 500, then an
//! answer), `bad_request` (400), `bad_args` (malformed arguments and an unknown tool,
//! then checks the errors it was told), `allowlist` (an allowed call, one to a tool it
//! was not offered, one with arguments against the schema; checks all three answers),
//! `email` (reads the prompt's attachment path),
//! `huge` (a 2 GB answer, streamed in 1 MiB chunks, never allocated whole),
//! `echo_auth` (a 401 whose message quotes the `Authorization` header it got, as
//! careless APIs do; it is checked before the key), `usage:N` (answers at once,
//! reporting `usage.total_tokens` N: the token-limit tests), `busy:N` (its first request
//! gets 429 with `Retry-After: N`, later ones an answer).
//!
//! When each request arrived, and what it got, is kept too ([`ScriptedModel::arrivals`]):
//! the rate-limit tests measure the limits at the model.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The API key the scripted model accepts.
pub const API_KEY: &str = "test-key";

/// A running scripted model; stops with the test process.
pub struct ScriptedModel {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    /// Every request body received, in order.
    pub requests: Arc<Mutex<Vec<Value>>>,
    /// When every request arrived (after the key check), in order.
    pub arrivals: Arc<Mutex<Vec<Arrival>>>,
}

/// One request as the model saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The script (`model`) it asked for.
    pub model: String,
    /// When it arrived.
    pub at: Instant,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// What the handler shares with the test.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<Value>>>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl ScriptedModel {
    /// Starts one on a free port (its own thread and runtime).
    pub fn start() -> ScriptedModel {
        let seen = Seen::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let state = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .route("/v1/chat/completions", axum::routing::post(complete))
                    .with_state(state);
                let _ = axum::serve(listener, app).await;
            });
        });
        ScriptedModel {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            requests: seen.requests,
            arrivals: seen.arrivals,
        }
    }

    /// The arrivals of requests whose `model` is `script`, in order.
    pub fn arrivals_for(&self, script: &str) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|a| a.model == script)
            .cloned()
            .collect()
    }

    /// The requests whose `model` is `script`.
    pub fn requests_for(&self, script: &str) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r["model"] == script)
            .cloned()
            .collect()
    }
}

fn answer(content: &str) -> Value {
    json!({"role": "assistant", "content": content})
}

fn call(id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

fn calls(list: Vec<Value>) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": list})
}

fn completion(message: Value) -> Response {
    completion_using(message, 15)
}

/// A completion reporting `total_tokens` used.
fn completion_using(message: Value, total_tokens: u64) -> Response {
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    Json(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": total_tokens.saturating_sub(10), "total_tokens": total_tokens},
    }))
    .into_response()
}

/// The content of the tool message answering `id`, if any.
fn tool_result(messages: &[Value], id: &str) -> Option<String> {
    messages
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == id)
        .and_then(|m| m["content"].as_str().map(str::to_string))
}

fn has_tool(body: &Value, name: &str) -> bool {
    body["tools"].as_array().is_some_and(|tools| {
        tools.iter().any(|t| {
            t["type"] == "function"
                && t["function"]["name"] == name
                && t["function"]["parameters"]["type"] == "object"
        })
    })
}

async fn complete(State(seen): State<Seen>, headers: HeaderMap, body: Json<Value>) -> Response {
    let arrived = Instant::now();
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let response = answer_to(&seen.requests, headers, body).await;
    seen.arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arrival {
            model,
            at: arrived,
            status: response.status().as_u16(),
        });
    response
}

async fn answer_to(
    requests: &Mutex<Vec<Value>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if body["model"] == "echo_auth" {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let message = format!("invalid credentials: Authorization: {given}");
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": message}})),
        )
            .into_response();
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "bad API key"}})),
        )
            .into_response();
    }
    let script = body["model"].as_str().unwrap_or_default().to_string();
    let seen = {
        let mut all = requests.lock().unwrap_or_else(|p| p.into_inner());
        all.push(body.clone());
        all.iter().filter(|r| r["model"] == script.as_str()).count()
    };
    let messages: Vec<Value> = body["messages"].as_array().cloned().unwrap_or_default();
    let asked_tools = messages.iter().any(|m| m["role"] == "tool");
    match script.as_str() {
        "tools" => {
            if !has_tool(&body, "echo__echo") || !has_tool(&body, "echo__add") {
                return completion(answer(&format!("WRONG: tools offered: {}", body["tools"])));
            }
            if !asked_tools {
                return completion(calls(vec![
                    call("call_1", "echo__echo", r#"{"text":"ping"}"#),
                    call("call_2", "echo__add", r#"{"a":2,"b":3}"#),
                ]));
            }
            let assistant_calls = messages.iter().any(|m| m["role"] == "assistant" && m["tool_calls"][1]["id"] == "call_2");
            match (tool_result(&messages, "call_1").as_deref(), tool_result(&messages, "call_2").as_deref(), assistant_calls) {
                (Some("ping"), Some("5"), true) => completion(answer("ping and 5 checked")),
                other => completion(answer(&format!("WRONG: tool results {other:?}"))),
            }
        }
        "parallel" => {
            if !asked_tools {
                return completion(calls(vec![
                    call("a", "echo__sleep_ms", r#"{"ms":600}"#),
                    call("b", "echo__sleep_ms", r#"{"ms":600}"#),
                ]));
            }
            completion(answer("both slept"))
        }
        "loop" => completion(calls(vec![call(&format!("l{seen}"), "echo__echo", r#"{"text":"again"}"#)])),
        "flaky" => match seen {
            1 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], Json(json!({"error": {"message": "slow down"}}))).into_response(),
            2 => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
            _ => completion(answer("finally")),
        },
        "bad_request" => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "The model `bad_request` does not exist", "type": "invalid_request_error"}})),
        )
            .into_response(),
        "bad_args" => {
            if !asked_tools {
                return completion(calls(vec![
                    call("x1", "echo__echo", "{not json"),
                    call("x2", "nope__tool", "{}"),
                ]));
            }
            let (a, b) = (tool_result(&messages, "x1"), tool_result(&messages, "x2"));
            match (a.as_deref(), b.as_deref()) {
                (Some(a), Some(b)) if a.contains("not valid JSON") && b.contains("no tool named `nope__tool`") => {
                    completion(answer("recovered"))
                }
                other => completion(answer(&format!("WRONG: errors {other:?}"))),
            }
        }
        "allowlist" => {
            if !asked_tools {
                return completion(calls(vec![
                    call("a1", "echo__echo", &json!({"text": "allowed"}).to_string()),
                    call("a2", "echo__add", &json!({"a": 1, "b": 2}).to_string()),
                    call("a3", "echo__echo", &json!({"text": 5}).to_string()),
                ]));
            }
            let got = (tool_result(&messages, "a1"), tool_result(&messages, "a2"), tool_result(&messages, "a3"));
            match (got.0.as_deref(), got.1.as_deref(), got.2.as_deref()) {
                (Some("allowed"), Some(b), Some(c))
                    if b.contains("no tool named `echo__add`") && c.contains("/text") && c.contains("inputSchema") =>
                {
                    completion(answer("allow-list respected"))
                }
                other => completion(answer(&format!("WRONG: results {other:?}"))),
            }
        }
        "email" => {
            let prompt = messages.iter().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or_default().to_string();
            let path = prompt.lines().find_map(|l| l.split(": ").nth(1).filter(|p| p.starts_with('/'))).map(str::to_string);
            if !asked_tools {
                return match path {
                    Some(p) => completion(calls(vec![call("e1", "echo__echo", &json!({"text": p}).to_string())])),
                    None => completion(answer(&format!("WRONG: no attachment path in the prompt: {prompt}"))),
                };
            }
            match tool_result(&messages, "e1") {
                Some(p) if prompt.contains("Invoice 42") => completion(answer(&format!("Filed the invoice saved at {p}"))),
                other => completion(answer(&format!("WRONG: {other:?}"))),
            }
        }
        "huge" => {
            let chunk = axum::body::Bytes::from(vec![b' '; 1024 * 1024]);
            let chunks = futures::stream::iter(
                (0..2048).map(move |_| Ok::<_, std::convert::Infallible>(chunk.clone())),
            );
            (StatusCode::OK, axum::body::Body::from_stream(chunks)).into_response()
        }
        other if other.starts_with("usage:") => {
            let tokens = other["usage:".len()..].parse().unwrap_or(0);
            completion_using(answer("ok"), tokens)
        }
        other if other.starts_with("busy:") && seen == 1 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", other["busy:".len()..].to_string())],
            Json(json!({"error": {"message": "rate limit reached"}})),
        )
            .into_response(),
        other if other.starts_with("busy:") => completion(answer("ok")),
        other => completion(answer(&format!("WRONG: unknown script {other}"))),
    }
}
