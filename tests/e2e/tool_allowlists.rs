//! Tool allow-lists and `inputSchema` checks (issue 16, point 5): a server's `tools` in
//! the worker's config and a job's `llm.tools` bound what a model is offered and what
//! any job can call; arguments that do not fit a tool's schema never reach the server.

use mcpq_tests::scripted_model::{ScriptedModel, API_KEY};
use mcpq_tests::{text, TestEnv};
use serde_json::{json, Value};

/// The fixture as `echo`, limited to three of its tools.
const ECHO_TOOLS: &str = "tools = [\"echo\", \"add\", \"sleep_ms\"]";

#[test]
fn the_model_is_offered_only_allowed_tools_and_told_of_calls_outside_them_or_their_schema() {
    let model = ScriptedModel::start();
    let env = TestEnv::with_echo("allow-llm", "", ECHO_TOOLS);
    env.add_config(&format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"allowlist\"\napi_key_env = \"MCPQ_TEST_LLM_KEY\"\nrequest_timeout = \"10s\"\n",
        model.base_url
    ));
    let worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_TEST_LLM_KEY", API_KEY);
    });
    // The job narrows the server's three tools to echo and sleep_*: `add` is allowed
    // by the server but not by the job, sleep_forever by neither.
    let job = json!({"kind": "agent", "payload": {
        "prompt": "Use the tools.", "servers": ["echo"],
        "llm": {"model": "allowlist", "tools": ["echo__echo", "echo__sleep*"]},
    }, "options": {"max_attempts": 1, "timeout": "60s"}});
    let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();

    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    // The scripted model answers this only when the allowed call worked, the call to
    // `echo__add` was answered "no tool named", and the call with `{"text": 5}` was
    // answered with the schema error naming /text.
    assert_eq!(v["result"]["answer"], "allow-list respected", "{v}");
    let first = &model.requests_for("allowlist")[0];
    let mut offered: Vec<&str> = first["tools"]
        .as_array()
        .expect("tools offered")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    offered.sort_unstable();
    assert_eq!(offered, ["echo__echo", "echo__sleep_ms"]);
    let refused = v["result"]["transcript"]
        .as_array()
        .expect("transcript")
        .iter()
        .find(|m| m["tool_call_id"] == "a3")
        .expect("the schema-refused call")
        .clone();
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["content"]
            .as_str()
            .is_some_and(|c| c.contains("/text") && c.contains("\"string\"")),
        "{refused}"
    );
}

/// Submits one plan step and waits for it; returns `mcpq wait`'s code, its JSON and
/// the job's status.
fn run_step(env: &TestEnv, tool: &str, args: Value) -> (Option<i32>, Value, Value) {
    let id = env.submit_call("echo", tool, &args.to_string(), &["--max-attempts", "3"]);
    let (code, v) = env.wait_json(&id);
    (code, v, env.status_json(&id))
}

#[test]
fn a_plan_step_outside_the_servers_allow_list_is_dead_at_once_naming_the_tool() {
    let env = TestEnv::with_echo("allow-plan", "", "tools = [\"echo\"]");
    let worker = env.worker(&[]);
    let (code, v, status) = run_step(&env, "add", json!({"a": 1, "b": 2}));
    assert_eq!(code, Some(1), "{v}\n{}", worker.log_text());
    assert_eq!(v["status"], "dead", "{v}");
    assert_eq!(v["error"]["kind"], "invalid_job", "{v}");
    assert_eq!(status["attempts"], 1, "not retried: {status}");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("`add`") && message.contains("not allowed") && message.contains("echo"),
        "{message}"
    );
    // An allowed tool of the same server still runs.
    let (code, v, _) = run_step(&env, "echo", json!({"text": "fine"}));
    assert_eq!(code, Some(0), "{v}");
}

#[test]
fn plan_arguments_against_the_input_schema_fail_the_step_naming_the_field() {
    let env = TestEnv::new("schema-plan", "");
    let worker = env.worker(&[]);
    let (code, v, status) = run_step(&env, "add", json!({"a": 1, "b": "two"}));
    assert_eq!(code, Some(1), "{v}\n{}", worker.log_text());
    assert_eq!(v["error"]["kind"], "invalid_job", "{v}");
    assert_eq!(status["attempts"], 1, "not retried: {status}");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("step 0") && message.contains("/b") && message.contains("inputSchema"),
        "{message}"
    );
    // A missing required field is named too.
    let (_, v, _) = run_step(&env, "echo", json!({}));
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("\"text\""), "{message}");
    // And arguments that fit go through.
    let (code, v, _) = run_step(&env, "add", json!({"a": 1, "b": 2}));
    assert_eq!(code, Some(0), "{v}");
}

#[test]
fn a_job_whose_tool_patterns_name_a_server_it_does_not_use_is_refused_at_submit() {
    let env = TestEnv::new("allow-submit", "[servers.other]\ncommand = \"true\"\n");
    let job = json!({"kind": "agent", "payload": {
        "prompt": "hi", "servers": ["echo"], "llm": {"tools": ["echo__echo", "other__x"]},
    }});
    let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("payload.llm.tools[1]") && err.contains("`other`"),
        "{err}"
    );
    assert_eq!(env.queue_depth(), 0, "nothing enqueued");
}
