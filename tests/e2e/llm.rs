//! LLM mode against a scripted model behind a real OpenAI-compatible HTTP API
//! (tests/src/scripted_model.rs): tool calls through real MCP servers, parallel calls,
//! max_steps, 429/500 retries, a 400, malformed tool calls, email jobs.

use std::path::Path;

use mcpq_tests::scripted_model::{ScriptedModel, API_KEY};
use mcpq_tests::{text, TestEnv};
use serde_json::{json, Value};

fn llm_env(tag: &str, model: &ScriptedModel) -> (TestEnv, mcpq_tests::WorkerProc) {
    let env = TestEnv::new(tag, "[worker]\nconcurrency = 4\n");
    env.add_config(&format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"tools\"\napi_key_env = \"MCPQ_TEST_LLM_KEY\"\nrequest_timeout = \"10s\"\n[email]\nattachments_dir = \"{}\"\n",
        model.base_url,
        env.dir.join("attachments").display()
    ));
    let worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_TEST_LLM_KEY", API_KEY);
    });
    (env, worker)
}

fn ask(env: &TestEnv, script: &str, extra_llm: Value) -> String {
    let mut llm = json!({"model": script});
    if let (Some(l), Some(extra)) = (llm.as_object_mut(), extra_llm.as_object()) {
        l.extend(extra.clone());
    }
    let job = json!({"kind": "agent", "payload": {
        "prompt": "Use the tools, then answer.", "servers": ["echo"], "llm": llm,
    }, "options": {"max_attempts": 3, "timeout": "60s"}});
    let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn the_model_loop_calls_real_mcp_tools_and_handles_every_answer() {
    let model = ScriptedModel::start();
    let (env, worker) = llm_env("llm-loop", &model);
    let ids: Vec<(&str, String)> = [
        ("tools", json!({})),
        ("parallel", json!({})),
        ("loop", json!({"max_steps": 3})),
        ("flaky", json!({})),
        ("bad_args", json!({})),
        ("bad_request", json!({})),
    ]
    .into_iter()
    .map(|(script, extra)| (script, ask(&env, script, extra)))
    .collect();
    let result = |script: &str| {
        let id = &ids.iter().find(|(s, _)| *s == script).expect("script").1;
        env.wait_json(id)
    };

    // Two tool calls through the fixture MCP server, results checked by the model.
    let (code, v) = result("tools");
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    let r = &v["result"];
    assert_eq!(r["answer"], "ping and 5 checked", "{r}");
    assert_eq!(
        (
            r["stop_reason"].clone(),
            r["steps"].clone(),
            r["tool_calls"].clone()
        ),
        (json!("answer"), json!(2), json!(2))
    );
    assert_eq!(r["usage"]["total_tokens"], 30);
    let roles: Vec<&str> = r["transcript"]
        .as_array()
        .expect("t")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool", "assistant"]);
    assert_eq!(r["transcript"][2]["name"], "echo__echo");
    assert_eq!(r["transcript"][2]["ok"], true);
    assert!(
        !env.fixture_pids().is_empty(),
        "the calls went through real MCP server processes"
    );
    let first = &model.requests_for("tools")[0];
    assert_eq!(first["tool_choice"], "auto");
    let echo = first["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["function"]["name"] == "echo__echo")
        .expect("echo tool");
    assert!(
        echo["function"]["parameters"]["properties"]["text"].is_object(),
        "schemas passed through: {echo}"
    );

    // Parallel tool calls run at once: two 600 ms calls overlap.
    let (code, v) = result("parallel");
    assert_eq!(code, Some(0), "{v}");
    let tools: Vec<&Value> = v["result"]["transcript"]
        .as_array()
        .expect("t")
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tools.len(), 2);
    let (s0, s1) = (
        tools[0]["start_ms"].as_u64().expect("s"),
        tools[1]["start_ms"].as_u64().expect("s"),
    );
    let end = tools
        .iter()
        .map(|t| t["start_ms"].as_u64().unwrap_or(0) + t["ms"].as_u64().unwrap_or(0))
        .max()
        .expect("end");
    assert!(
        end - s0.min(s1) < 1100,
        "the calls ran one after the other: {tools:?}"
    );

    // max_steps stops a model that never answers.
    let (code, v) = result("loop");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        (
            v["result"]["stop_reason"].clone(),
            v["result"]["steps"].clone()
        ),
        (json!("max_steps"), json!(3))
    );
    assert_eq!(model.requests_for("loop").len(), 3);

    // 429 then 500 are retried inside the job; the answer comes on the third request.
    let (code, v) = result("flaky");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["result"]["answer"], "finally");
    assert_eq!(model.requests_for("flaky").len(), 3);

    // Malformed arguments and an unknown tool are told to the model, which recovers.
    let (code, v) = result("bad_args");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["result"]["answer"], "recovered");

    // A 400 is a clear, permanent error: dead after one attempt.
    let id = &ids.iter().find(|(s, _)| *s == "bad_request").expect("s").1;
    let (code, v) = env.wait_json(id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "llm_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("HTTP 400: The model `bad_request` does not exist"),
        "{v}"
    );
    let s = env.status_json(id);
    assert_eq!(
        (s["status"].clone(), s["attempts"].clone()),
        (json!("dead"), json!(1))
    );
}

#[test]
fn llm_mode_without_an_llm_config_is_a_clear_permanent_error() {
    let env = TestEnv::new("llm-none", "");
    let _worker = env.worker(&[]);
    let id = ask(&env, "tools", json!({}));
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "llm_not_configured");
    // Both modes at once, or neither, are usage errors at submit.
    for payload in [
        json!({"prompt": "x", "steps": [{"server": "echo", "tool": "echo"}]}),
        json!({"servers": ["echo"]}),
        json!({"prompt": "x", "servers": ["nope"]}),
    ] {
        let job = json!({"kind": "agent", "payload": payload});
        let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{payload}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn an_email_job_in_llm_mode_gives_the_model_its_attachments() {
    let model = ScriptedModel::start();
    let (env, worker) = llm_env("llm-email", &model);
    let eml = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/eml/03-nested.eml");
    let raw = std::fs::read(&eml).expect("eml");
    let mut email = mcpq_shared::email::parse::parse_eml(&raw).expect("parse");
    email.instructions = "File the invoice.".into();
    email.servers = vec!["echo".into()];
    email.llm = Some(mcpq_shared::agent::llm::LlmOptions {
        model: Some("email".into()),
        ..Default::default()
    });
    email.reply = Some(mcpq_shared::email::ReplySpec {
        text: "{{ answer }}".into(),
        subject: None,
        send: false,
    });
    let job = mcpq_shared::Job::email(email, Default::default());
    job.validate().expect("valid");
    env.submit_jobs(std::slice::from_ref(&job));
    let (code, v) = env.wait_json(&job.id.to_string());
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    let summary = v["result"]["summary"].as_str().expect("summary");
    let path = env
        .dir
        .join("attachments")
        .join(job.id.to_string())
        .join("invoice-42.pdf");
    assert_eq!(
        summary,
        format!("Filed the invoice saved at {}", path.display())
    );
    assert_eq!(v["result"]["reply"]["text"], summary);
    assert_eq!(v["result"]["reply"]["subject"], "Re: Invoice 42");
}
