//! Cold start of the fixture MCP server: spawn + `initialize` + one `tools/call`,
//! through mcpq's `Supervisor` + `McpSession` against a bare `tokio::process::Command` +
//! rmcp client (the anchor), interleaved in one run. Prints p50/p99 of each and the
//! supervisor's overhead. `BENCH_ROUNDS` (default 300) sets the number of starts each.
//!
//! Stopping each server is outside the timed part, on both sides.

use std::process::Stdio;
use std::time::{Duration, Instant};

use mcpq_shared::config::{ServerConfig, ServerTimeouts};
use mcpq_shared::mcp::McpSession;
use mcpq_shared::supervisor::Supervisor;
use rmcp::model::CallToolRequestParams;
use rmcp::ServiceExt;
use serde_json::json;

fn args() -> serde_json::Map<String, serde_json::Value> {
    json!({"text": "cold"})
        .as_object()
        .cloned()
        .expect("object")
}

async fn bare(fixture: &std::path::Path) -> Duration {
    let start = Instant::now();
    let mut child = tokio::process::Command::new(fixture)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let client = ().serve((stdout, stdin)).await.expect("initialize");
    let result = client
        .peer()
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args()))
        .await
        .expect("call");
    let took = start.elapsed();
    assert_ne!(result.is_error, Some(true));
    drop(client);
    let _ = child.wait().await;
    took
}

async fn supervised(
    supervisor: &Supervisor,
    config: &ServerConfig,
    timeouts: ServerTimeouts,
) -> Duration {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let session = McpSession::start(supervisor, "fixture", config, timeouts, deadline)
        .await
        .expect("start");
    let result = session
        .call_tool("echo", args(), Duration::from_secs(30))
        .await
        .expect("call");
    let took = start.elapsed();
    assert_ne!(result.is_error, Some(true));
    session.shutdown().await;
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let fixture = mcpq_tests::bin("mcpq-fixture");
    let config = ServerConfig {
        command: fixture.display().to_string(),
        ..Default::default()
    };
    let timeouts = ServerTimeouts {
        startup: Duration::from_secs(30),
        call: Duration::from_secs(30),
        kill_grace: Duration::from_secs(2),
        max_answer: mcpq_shared::queue::settings::DEFAULT_MAX_RESULT,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let supervisor = Supervisor::new();
    let (mut a, mut s) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    rt.block_on(async {
        // Warm the page cache and the runtime first.
        for _ in 0..10 {
            bare(&fixture).await;
            supervised(&supervisor, &config, timeouts).await;
        }
        for _ in 0..rounds {
            a.push(bare(&fixture).await);
            s.push(supervised(&supervisor, &config, timeouts).await);
        }
    });
    a.sort();
    s.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (a50, a99, s50, s99) = (
        percentile(&a, 0.5),
        percentile(&a, 0.99),
        percentile(&s, 0.5),
        percentile(&s, 0.99),
    );
    println!("cold start: spawn + initialize + one tools/call of the fixture, {rounds} rounds each, interleaved");
    println!(
        "anchor      bare tokio::process + rmcp : p50 {:>7.3} ms   p99 {:>7.3} ms",
        ms(a50),
        ms(a99)
    );
    println!(
        "mcpq        Supervisor + McpSession    : p50 {:>7.3} ms   p99 {:>7.3} ms",
        ms(s50),
        ms(s99)
    );
    println!(
        "overhead    p50 {:+.1} %   p99 {:+.1} %",
        (ms(s50) / ms(a50) - 1.0) * 100.0,
        (ms(s99) / ms(a99) - 1.0) * 100.0
    );
    println!(
        "{}",
        json!({"type": "bench", "name": "cold_start", "rounds": rounds,
               "anchor_p50_ms": ms(a50), "anchor_p99_ms": ms(a99),
               "mcpq_p50_ms": ms(s50), "mcpq_p99_ms": ms(s99),
               "overhead_p50": ms(s50) / ms(a50) - 1.0, "overhead_p99": ms(s99) / ms(a99) - 1.0})
    );
}
