use mcpq_tests::{text, TestEnv};

#[test]
fn a_tool_error_fails_the_job_with_the_tool_text_and_the_next_job_succeeds() {
    let env = TestEnv::new("tool-error", "");
    let _worker = env.worker(&[]);
    let id = env.submit_call("echo", "fail", r#"{"message":"quota exceeded"}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["status"], "dead", "retried max_attempts times, then dead");
    assert_eq!(v["error"]["kind"], "tool_error");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("quota exceeded"));
    assert_eq!(v["error"]["tool"], "fail");
    assert!(v["error"]["stderr_tail"]
        .as_str()
        .expect("tail")
        .contains("mcpq-fixture"));

    let out = env.mcpq(&["result", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("quota exceeded"));

    let id = env.submit_call("echo", "echo", r#"{"text":"ok"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
}

#[test]
fn a_server_crash_mid_call_fails_the_job_with_exit_status_and_stderr_tail() {
    let env = TestEnv::new("crash", "");
    let worker = env.worker(&[]);
    let id = env.submit_call("echo", "crash", r#"{"code":7}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "server_exited");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("exit code 7"), "{message}");
    let tail = v["error"]["stderr_tail"].as_str().expect("tail");
    assert!(
        tail.contains("crashing on purpose with exit code 7"),
        "{tail}"
    );

    let id = env.submit_call("echo", "add", r#"{"a":1,"b":1}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{}", worker.log_text());
    assert_eq!(v["result"][0]["result"]["content"][0]["text"], "2");
}

#[test]
fn a_server_flooding_stderr_never_blocks_and_its_tail_is_bounded() {
    let env = TestEnv::new("flood", "");
    let _worker = env.worker(&[]);
    // 20 MB: far more than any pipe buffer; an undrained pipe would block the server.
    let id = env.submit_call(
        "echo",
        "stderr_flood",
        r#"{"bytes":20000000}"#,
        &["--timeout", "60s"],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["result"][0]["result"]["content"][0]["text"],
        "wrote 20000000 bytes to stderr"
    );
    // The tail in a later failure of the same kind of server stays small.
    let id = env.submit_call("echo", "stderr_flood", r#"{"bytes":5000000}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
}

#[test]
fn a_tool_that_outlives_its_timeout_fails_the_job_as_timeout() {
    let env = TestEnv::new(
        "call-timeout",
        "[defaults]\ncall_timeout = \"500ms\"\nkill_grace = \"500ms\"\n",
    );
    let _worker = env.worker(&[]);
    let id = env.submit_call(
        "echo",
        "sleep_ms",
        r#"{"ms":30000}"#,
        &["--max-attempts", "1"],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "timeout");
    // The server of the timed-out call was stopped, not left behind.
    let pids = env.fixture_pids();
    assert_eq!(pids.len(), 1);
    assert!(
        mcpq_tests::wait_until(std::time::Duration::from_secs(5), || {
            !mcpq_tests::process_alive(pids[0])
        }),
        "server {} still alive after its job timed out",
        pids[0]
    );
}
