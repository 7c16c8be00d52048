//! The MCP front's lifecycle: what happens to gateway jobs when the front stops, when a
//! stdio client's process is told to stop, and when an embedded worker cannot run.

use std::time::{Duration, Instant};

use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::{bin, free_port, text, TestEnv};
use rmcp::model::CallToolRequestParams;
use rmcp::ServiceExt;

const EXPOSE: &str = "[serve.mcp]\nexpose = [\"echo__*\"]\n";

fn sleep_call(ms: u64) -> CallToolRequestParams {
    CallToolRequestParams::new("echo__sleep_ms").with_arguments(
        serde_json::json!({ "ms": ms })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

/// The one job of `env` (what a gateway call enqueued), once it exists.
fn the_job(env: &TestEnv) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = env.mcpq(&["jobs", "--json"]);
        let first = text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["id"].as_str().map(str::to_string));
        if let Some(id) = first {
            return id;
        }
        assert!(Instant::now() < deadline, "no job was enqueued");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_plain_calls_job_goes_on_when_the_front_stops_under_it() {
    mcpq_shared::tls::install();
    let env = TestEnv::new("mcp-front-stops", &format!("{TOKEN_CONFIG}{EXPOSE}"));
    let _worker = env.worker(&[]);
    let mut serve = env.serve(&[]);
    let url = serve.at("/mcp");
    let rt = mcpq_tests::runtime();
    let call = rt.spawn(async move {
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        use rmcp::transport::StreamableHttpClientTransport;
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url).auth_header(TOKEN),
        );
        let client = ().serve(transport).await.expect("initialize");
        client.peer().call_tool(sleep_call(3000)).await
    });
    let id = the_job(&env);
    // A rolling restart: the front goes while its client waits.
    assert!(serve
        .stop(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    // The client may wait on for a server that is gone: its answer does not matter.
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), call).await });
    let (code, record) = env.wait_json(&id);
    assert_eq!(code, Some(0), "the job went on and succeeded: {record}");
    assert_eq!(record["status"], "succeeded", "{record}");
}

#[test]
fn stdio_with_worker_stops_on_sigterm_and_its_running_job_ends_cleanly() {
    use rmcp::transport::TokioChildProcess;
    let env = TestEnv::new("mcp-stdio-term", EXPOSE);
    let mut command = tokio::process::Command::new(bin("mcpq-serve"));
    command
        .args(["--stdio", "--with-worker", "--config"])
        .arg(&env.config)
        .env_remove("MCPQ_CONFIG")
        .env_remove("MCPQ_NAMESPACE")
        .env("REDIS_URL", &env.redis_url);
    let rt = mcpq_tests::runtime();
    let (pid, call) = rt.block_on(async {
        let transport = TokioChildProcess::new(command).expect("start");
        let pid = transport.id().expect("a pid");
        let client = ().serve(transport).await.expect("initialize");
        let call = tokio::spawn(async move { client.peer().call_tool(sleep_call(1500)).await });
        (pid, call)
    });
    let id = the_job(&env);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid only sends a signal.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let gone = mcpq_tests::wait_until(Duration::from_secs(30), || !mcpq_tests::process_alive(pid));
    assert!(gone, "mcpq-serve --stdio did not exit after SIGTERM");
    rt.block_on(async {
        let _ = call.await;
    });
    // Its worker let the running job finish (or released it): never left `running`
    // for a rescuer to find after its lease.
    let status = env.status_json(&id);
    assert!(
        status["status"] == "succeeded" || status["status"] == "queued",
        "{status}"
    );
}

#[test]
fn an_embedded_worker_that_cannot_start_takes_the_front_down() {
    // Its metrics address is taken: the worker fails at start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let env = TestEnv::new(
        "mcp-worker-dies",
        &format!("[worker]\nmetrics_listen = \"{addr}\"\n{EXPOSE}"),
    );
    let port = free_port();
    let started = Instant::now();
    let out = std::process::Command::new(bin("mcpq-serve"))
        .args([
            "--with-worker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&env.config)
        .env_remove("MCPQ_CONFIG")
        .env_remove("MCPQ_NAMESPACE")
        .env("REDIS_URL", &env.redis_url)
        .output()
        .expect("run mcpq-serve");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("embedded worker stopped"),
        "{}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(taken);
}

#[test]
fn mcp_sessions_are_capped_and_a_closed_one_makes_room() {
    mcpq_shared::tls::install();
    let env = TestEnv::new(
        "mcp-session-cap",
        &format!("{TOKEN_CONFIG}[serve.mcp]\nmax_sessions = 2\n"),
    );
    let serve = env.serve(&[]);
    let http = reqwest::blocking::Client::new();
    let initialize = || {
        http.post(serve.at("/mcp"))
            .bearer_auth(TOKEN)
            .header("accept", "application/json, text/event-stream")
            .json(
                &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}}),
            )
            .send()
            .expect("POST /mcp")
    };
    let first = initialize();
    assert!(first.status().is_success(), "{:?}", first.status());
    let id = first
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session id")
        .to_string();
    assert!(initialize().status().is_success());
    let refused = initialize();
    assert_eq!(refused.status().as_u16(), 503, "a third session was opened");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body = refused.text().unwrap_or_default();
    assert!(body.contains("too many MCP sessions"), "{body}");
    // The client that closes its session makes room for the next.
    let closed = http
        .delete(serve.at("/mcp"))
        .bearer_auth(TOKEN)
        .header("mcp-session-id", &id)
        .send()
        .expect("DELETE /mcp");
    assert!(closed.status().is_success(), "{:?}", closed.status());
    assert!(wait_ok(|| initialize().status().is_success()));
}

fn wait_ok(mut f: impl FnMut() -> bool) -> bool {
    mcpq_tests::wait_until(Duration::from_secs(5), &mut f)
}
