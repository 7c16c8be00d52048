//! Co-hosting: `mcpq serve --with-worker` runs the MCP front and a worker in one
//! process, and a job of that worker calls a gateway tool of that same front. In other
//! stacks a synchronous call on the event loop's thread blocks the co-hosted server
//! and the first call waits for its timeout (60 s); here nothing blocks the runtime,
//! so the call completes on its first attempt, in well under its deadline.

use std::time::Duration;

use mcpq_tests::serve::TOKEN_CONFIG;
use mcpq_tests::{free_port, wait_until, TestEnv};

#[test]
fn a_job_calling_a_gateway_tool_of_its_own_process_completes_on_the_first_call() {
    let port = free_port();
    let env = TestEnv::new(
        "cohost",
        &format!(
            "[worker]\nconcurrency = 4\n[serve.mcp]\nexpose = [\"echo__echo\"]\n{TOKEN_CONFIG}"
        ),
    );
    // The front itself, as an MCP server of the worker that runs in it.
    env.add_config(&format!(
        "[servers.front]\nurl = \"http://127.0.0.1:{port}/mcp\"\nbearer_token_env = \"MCPQ_TEST_TOKEN\"\n"
    ));
    let listen = format!("127.0.0.1:{port}");
    let mut serve = env.serve(&["--listen", &listen, "--with-worker"]);
    assert!(
        wait_until(Duration::from_secs(10), || serve
            .log_text()
            .contains("worker started")),
        "the embedded worker did not start: {}",
        serve.log_text()
    );
    // A short deadline: a deadlocked first call would time out and be retried.
    let id = env.submit_call(
        "front",
        "echo__echo",
        r#"{"text":"through the front"}"#,
        &["--timeout", "20s", "--max-attempts", "1"],
    );
    let (code, record) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{record} / log: {}", serve.log_text());
    assert_eq!(record["status"], "succeeded", "{record}");
    let status = env.status_json(&id);
    assert_eq!(status["attempts"], 1, "{status}");
    let answer = &record["result"][0]["result"];
    assert_eq!(
        answer["content"][0]["text"], "through the front",
        "the gateway call's own result: {record}"
    );
    // The gateway job the front enqueued ran on the same worker, once.
    let took = env.run_millis(&id);
    eprintln!("co-hosted gateway call took {took} ms");
    assert!(
        took < 10_000,
        "the co-hosted call took {took} ms: something waited for a timeout"
    );
    assert!(serve
        .stop(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
}
