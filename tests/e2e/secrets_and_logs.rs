//! What servers and models send back cannot leak a secret or forge a log line (issue
//! #11, findings 7 and 11): every secret the worker read is `[REDACTED]` in Redis and in
//! its log, and control characters in a message are escaped in the text log.

use mcpq_tests::scripted_model::{ScriptedModel, API_KEY};
use mcpq_tests::{text, HttpFixture, TestEnv};
use serde_json::json;

/// Every value of every key of `env`'s namespace, as text.
fn everything_in_redis(env: &TestEnv) -> String {
    let mut conn = env.redis();
    let mut all = String::new();
    for key in env.keys() {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).expect("TYPE");
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut conn),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut conn),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut conn),
            "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut conn),
            _ => redis::cmd("GET")
                .arg(&key)
                .query::<Vec<u8>>(&mut conn)
                .map(|v| vec![v]),
        }
        .unwrap_or_default();
        all.push_str(&key);
        for v in values {
            all.push_str(&String::from_utf8_lossy(&v));
            all.push('\n');
        }
    }
    all
}

#[test]
fn secrets_echoed_by_servers_and_models_are_redacted_in_redis_and_in_the_worker_log() {
    let wrong_token = format!("tok-wrong-{}", ulid::Ulid::generate());
    let fixture = HttpFixture::start(&[
        ("MCPQ_FIXTURE_REQUIRE_BEARER", "the-right-token"),
        ("MCPQ_FIXTURE_ECHO_AUTH", "1"),
    ]);
    let model = ScriptedModel::start();
    let env = TestEnv::new("secrets", "[worker]\nconcurrency = 2\n");
    env.add_config(&format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"echo_auth\"\napi_key_env = \"MCPQ_TEST_LLM_KEY\"\n\
         [servers.leaky]\nurl = \"{}\"\nbearer_token_env = \"MCPQ_TEST_LEAKY_TOKEN\"\nstartup_timeout = \"3s\"\n",
        model.base_url, fixture.url
    ));
    let worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_TEST_LLM_KEY", API_KEY)
            .env("MCPQ_TEST_LEAKY_TOKEN", &wrong_token);
    });
    // An HTTP MCP server whose 401 quotes the bearer token, a model API whose 401
    // quotes the API key.
    let http = env.submit_call(
        "leaky",
        "echo",
        r#"{"text":"hi"}"#,
        &["--max-attempts", "1"],
    );
    let job = json!({"kind": "agent", "payload": {"prompt": "hi", "servers": [], "llm": {"model": "echo_auth"}}, "options": {"max_attempts": 1}});
    let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let llm = text(&out.stdout).trim().to_string();
    for id in [&http, &llm] {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(1), "{v}");
    }
    let (_, v) = env.wait_json(&http);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Bearer [REDACTED]"),
        "{v}"
    );
    let (_, v) = env.wait_json(&llm);
    assert_eq!(v["error"]["kind"], "llm_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("[REDACTED]"),
        "{v}"
    );
    let stored = everything_in_redis(&env);
    let log = worker.log_text();
    for secret in [wrong_token.as_str(), API_KEY] {
        assert!(
            !stored.contains(secret),
            "{secret} stored in Redis:\n{stored}"
        );
        assert!(!log.contains(secret), "{secret} in the worker log:\n{log}");
    }
    let out = env.mcpq(&["status", &http, "--json"]);
    assert!(!text(&out.stdout).contains(&wrong_token));
}

#[test]
fn a_tool_error_with_newlines_cannot_forge_a_line_in_the_text_log() {
    let env = TestEnv::new("log-forging", "");
    let worker = env.worker(&[]);
    let forged = "2026-01-01T00:00:00.000000Z  INFO job succeeded job=FORGED";
    let message = format!("boom\n{forged}\r\u{1b}]0;pwned\u{7}");
    let id = env.submit_call(
        "echo",
        "fail",
        &json!({ "message": message }).to_string(),
        &["--max-attempts", "1"],
    );
    let (code, _) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert!(worker.wait_log("job dead", std::time::Duration::from_secs(10)));
    let log = worker.log_text();
    // tracing-subscriber shows ESC and BEL as `\x1b`, `\x07` already; newlines are ours.
    assert!(log.contains(&format!("boom\\n{forged}\\r")), "{log}");
    assert!(!log.lines().any(|l| l.starts_with(forged)), "{log}");
    assert!(!log.contains('\u{1b}'), "{log}");
}
