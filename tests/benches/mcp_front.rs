//! Tool-call latency through the MCP front (`mcpq serve` at `/mcp`, gateway tool
//! `echo__echo`, run as a job by a worker) against calling the fixture server directly
//! over stdio with rmcp (the anchor), side by side in one run (release build; run it
//! with `scripts/bench`). Three series, each `BENCH_MCP_CALLS` (default 300) calls one
//! after the other, after a warm-up:
//! - direct: a warm rmcp session to the fixture, `tools/call echo`;
//! - plain: an rmcp client over streamable HTTP, `tools/call echo__echo` (the front
//!   enqueues a job, waits for its end on Redis pub/sub, answers);
//! - task: a client that declares the tasks extension; `tools/call` returns a task,
//!   then `tasks/get` every 2 ms until it is completed (clients would poll at the
//!   suggested interval, 1 s by default; this measures what the queue adds).
//!
//! Not a test: nothing is asserted but that every call succeeded.

use std::process::Stdio;
use std::time::{Duration, Instant};

use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::{bin, TestEnv};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, GetTaskParams,
    Implementation, TaskPayload,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;

fn args() -> rmcp::model::JsonObject {
    serde_json::json!({"text": "ping"})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

async fn direct(n: usize) -> Vec<Duration> {
    let mut child = tokio::process::Command::new(bin("mcpq-fixture"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the fixture");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let client = ().serve((stdout, stdin)).await.expect("initialize");
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let start = Instant::now();
        let r = client
            .peer()
            .call_tool(CallToolRequestParams::new("echo").with_arguments(args()))
            .await
            .expect("call");
        assert_ne!(r.is_error, Some(true));
        if i >= 20 {
            out.push(start.elapsed());
        }
    }
    out
}

fn transport(url: &str) -> StreamableHttpClientTransport<reqwest::Client> {
    StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(TOKEN),
    )
}

async fn plain(url: &str, n: usize) -> Vec<Duration> {
    let client = ().serve(transport(url)).await.expect("initialize");
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let start = Instant::now();
        let r = client
            .peer()
            .call_tool(CallToolRequestParams::new("echo__echo").with_arguments(args()))
            .await
            .expect("call");
        assert_ne!(r.is_error, Some(true), "{r:?}");
        if i >= 20 {
            out.push(start.elapsed());
        }
    }
    out
}

async fn tasks(url: &str, n: usize) -> Vec<Duration> {
    let info = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("mcpq-bench", "0"),
    );
    let client = info.serve(transport(url)).await.expect("initialize");
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let start = Instant::now();
        let created = client
            .peer()
            .call_tool_once(CallToolRequestParams::new("echo__echo").with_arguments(args()))
            .await
            .expect("call");
        let CallToolResponse::Task(created) = created else {
            panic!("not a task: {created:?}")
        };
        loop {
            let got = client
                .peer()
                .get_task(GetTaskParams::new(created.task.task_id.clone()))
                .await
                .expect("tasks/get");
            match got.task.payload {
                TaskPayload::Working => tokio::time::sleep(Duration::from_millis(2)).await,
                TaskPayload::Completed { .. } => break,
                other => panic!("task ended {other:?}"),
            }
        }
        if i >= 20 {
            out.push(start.elapsed());
        }
    }
    out
}

fn main() {
    let n: usize = std::env::var("BENCH_MCP_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    mcpq_shared::tls::install();
    let rt = mcpq_tests::runtime();
    let direct = rt.block_on(direct(n));
    let (d50, d99) = percentiles(direct);
    println!("mcp_front: tools/call latency, {n} calls each, one at a time, same machine, one run");
    println!("anchor  fixture over stdio, warm rmcp session               : p50 {d50:>7.2} ms   p99 {d99:>7.2} ms");
    // An idle worker looks for jobs every worker.poll_interval (default 100 ms): what
    // a call waits in the queue is up to that; measured with the default and with 5 ms.
    for (poll, label) in [("100ms", "default poll 100 ms"), ("5ms", "poll 5 ms")] {
        let env = TestEnv::new(
            "bench-mcp",
            &format!(
                "[worker]\nconcurrency = 8\npoll_interval = \"{poll}\"\n[serve.mcp]\nexpose = [\"echo__echo\"]\n{TOKEN_CONFIG}"
            ),
        );
        let _worker = env.worker(&[]);
        let serve = env.serve(&[]);
        let url = serve.at("/mcp");
        let (plain, tasks) = rt.block_on(async { (plain(&url, n).await, tasks(&url, n).await) });
        let (p50, p99) = percentiles(plain);
        let (t50, t99) = percentiles(tasks);
        println!(
            "mcpq    plain call (a job), {label:<19}      : p50 {p50:>7.2} ms   p99 {p99:>7.2} ms   ratio p50 {:.0}",
            p50 / d50
        );
        println!(
            "mcpq    as a task (2 ms polls), {label:<19}  : p50 {t50:>7.2} ms   p99 {t99:>7.2} ms   ratio p50 {:.0}",
            t50 / d50
        );
    }
}
