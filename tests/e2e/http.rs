//! Streamable-HTTP MCP servers: the fixture served over HTTP on 127.0.0.1.

use mcpq_tests::{text, HttpFixture, TestEnv};

#[test]
fn a_job_calls_tools_on_a_streamable_http_server_with_a_bearer_token() {
    let token = format!("tok-{}", ulid::Ulid::generate());
    let fixture = HttpFixture::start(&[("MCPQ_FIXTURE_REQUIRE_BEARER", token.as_str())]);
    assert!(
        fixture.url.starts_with("http://127.0.0.1:"),
        "{}",
        fixture.url
    );
    let env = TestEnv::new("http", "");
    env.add_config(&format!(
        "[servers.remote]\nurl = \"{url}\"\nbearer_token_env = \"MCPQ_TEST_REMOTE_TOKEN\"\nheaders = {{ \"X-Team\" = \"billing\" }}\nmax_in_flight = 4\n\
         [servers.wrong_token]\nurl = \"{url}\"\nbearer_token_env = \"MCPQ_TEST_WRONG_TOKEN\"\nstartup_timeout = \"3s\"\n\
         [servers.no_token]\nurl = \"{url}\"\nbearer_token_env = \"MCPQ_TEST_UNSET_TOKEN\"\n",
        url = fixture.url
    ));
    let worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_TEST_REMOTE_TOKEN", &token)
            .env("MCPQ_TEST_WRONG_TOKEN", "not-the-token")
            .env_remove("MCPQ_TEST_UNSET_TOKEN");
    });
    let job = r#"{"kind":"agent","payload":{"steps":[
        {"server":"remote","tool":"echo","arguments":{"text":"over http"}},
        {"server":"remote","tool":"add","arguments":{"a":1,"b":2}}]}}"#;
    let out = env.mcpq_with_stdin(&["submit", "-", "--wait"], job.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("remote/echo: over http"), "{stdout}");
    assert!(stdout.contains("remote/add: 3"), "{stdout}");

    // A rejected token is a clear start-up failure; the token never reaches the log.
    let id = env.submit_call("wrong_token", "echo", r#"{"text":"x"}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "startup_failed", "{v}");
    let id = env.submit_call("no_token", "echo", r#"{"text":"x"}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("MCPQ_TEST_UNSET_TOKEN"), "{message}");
    assert!(
        !worker.log_text().contains(&token),
        "the bearer token was logged"
    );

    // The HTTP server goes away: jobs fail with an error, they do not hang.
    drop(fixture);
    let id = env.submit_call(
        "remote",
        "echo",
        r#"{"text":"gone"}"#,
        &["--timeout", "10s"],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
}

#[test]
fn an_http_answer_over_max_result_fails_the_job_at_once_as_result_too_large_and_the_server_serves_on(
) {
    // Both ways a streamable-HTTP server answers: an SSE stream (rmcp's default) and one
    // JSON body.
    let sse = HttpFixture::start(&[]);
    let json = HttpFixture::start(&[("MCPQ_FIXTURE_JSON_RESPONSE", "1")]);
    let env = TestEnv::with_queue(
        "http-big",
        &format!("{}max_result = 65536\n", mcpq_tests::TEST_QUEUE),
        &format!(
            "[servers.sse]\nurl = \"{}\"\n[servers.json]\nurl = \"{}\"\n",
            sse.url, json.url
        ),
    );
    let worker = env.worker(&[]);
    for server in ["sse", "json"] {
        let id = env.submit_call(server, "big_answer", r#"{"bytes": 200000}"#, &[]);
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(1), "{server}: {v}");
        let error = &v["error"];
        assert_eq!(error["kind"], "result_too_large", "{server}: {v}");
        assert_eq!(error["retryable"], false, "{server}: {v}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("queue.max_result"), "{server}: {message}");
        assert!(message.contains("65536"), "{server}: {message}");
        let status = env.status_json(&id);
        assert_eq!(status["status"], "dead", "{server}: {status}");
        assert_eq!(status["attempts"], 1, "{server}: never retried: {status}");

        // The session that got the big answer is retired; the server serves on, and an
        // answer within the limit passes.
        let id = env.submit_call(server, "big_answer", r#"{"bytes": 30000}"#, &[]);
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(0), "{server}: {v}");
        let id = env.submit_call(server, "echo", r#"{"text":"still here"}"#, &[]);
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(0), "{server}: {v}");
        assert!(v.to_string().contains("still here"), "{server}: {v}");
    }
    assert!(!worker.log_text().contains("panicked"));
}
