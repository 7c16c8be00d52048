//! Warm MCP calls through the pool, against the floor of a raw stdio round trip, in one
//! run (`scripts/bench`):
//!
//! - **floor**: write one line to a trivial child (`cat`) and read it back;
//! - **warm echo, 1 in flight**: `McpPool::call` of the fixture's `echo`, sequential;
//! - **warm echo, 16 in flight**: 16 concurrent callers on one session
//!   (`max_in_flight = 16`).
//!
//! - **anchor**: the same calls on one bare `McpSession` (no pool), to show what the
//!   pool itself adds.
//!
//! Prints p50/p99 latency and calls/s, and the ratios warm p50 / floor p50 and
//! pool / bare session.
//! `BENCH_CALLS` (default 5000) sets the calls per measurement.

use std::process::Stdio;
use std::time::{Duration, Instant};

use mcpq_shared::config::{Config, ServerConfig};
use mcpq_shared::mcp::McpPool;
use mcpq_shared::supervisor::Supervisor;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn floor(n: usize) -> Vec<Duration> {
    let mut child = tokio::process::Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cat");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let line = format!("{}\n", json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    let mut back = String::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        stdin.write_all(line.as_bytes()).await.expect("write");
        stdin.flush().await.expect("flush");
        back.clear();
        stdout.read_line(&mut back).await.expect("read");
        out.push(start.elapsed());
    }
    out
}

fn pool_for(in_flight: usize) -> McpPool {
    let mut config = Config::default();
    config.worker.concurrency = 16;
    let server = ServerConfig {
        command: mcpq_tests::bin("mcpq-fixture").display().to_string(),
        max_sessions: Some(1),
        max_in_flight: in_flight,
        ..Default::default()
    };
    config.servers.insert("fixture".to_string(), server);
    McpPool::new(&config, Supervisor::new())
}

/// Runs `n` calls of `call` from `callers` concurrent tasks (after 100 warm-up calls);
/// returns every call's latency and the wall time.
async fn measure<F, Fut>(callers: usize, n: usize, call: F) -> (Vec<Duration>, Duration)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    for _ in 0..100 {
        call().await;
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n / callers);
                for _ in 0..n / callers {
                    let t = Instant::now();
                    call().await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    (all, start.elapsed())
}

fn echo_args() -> serde_json::Map<String, serde_json::Value> {
    json!({"text": "warm"})
        .as_object()
        .cloned()
        .expect("object")
}

async fn warm(pool: &McpPool, callers: usize, n: usize) -> (Vec<Duration>, Duration) {
    let pool = pool.clone();
    measure(callers, n, move || {
        let pool = pool.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let cancel = tokio_util::sync::CancellationToken::new();
            // No cluster-wide limits here: the admission is a no-op.
            let admitted = async { Ok::<(), mcpq_shared::mcp::pool::PoolError>(()) };
            pool.call(
                "fixture",
                "echo",
                echo_args(),
                deadline,
                &cancel,
                None,
                admitted,
            )
            .await
            .expect("call");
        }
    })
    .await
}

/// The same calls on one `McpSession` without the pool: what the pool adds.
async fn bare(callers: usize, n: usize) -> (Vec<Duration>, Duration) {
    let server = ServerConfig {
        command: mcpq_tests::bin("mcpq-fixture").display().to_string(),
        ..Default::default()
    };
    let timeouts = mcpq_shared::config::ServerTimeouts {
        startup: Duration::from_secs(30),
        call: Duration::from_secs(30),
        kill_grace: Duration::from_secs(2),
        max_answer: mcpq_shared::queue::settings::DEFAULT_MAX_RESULT,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let supervisor = Supervisor::new();
    let session = std::sync::Arc::new(
        mcpq_shared::mcp::McpSession::start(&supervisor, "fixture", &server, timeouts, deadline)
            .await
            .expect("start"),
    );
    let measured = measure(callers, n, {
        let session = session.clone();
        move || {
            let session = session.clone();
            async move {
                session
                    .call_tool("echo", echo_args(), Duration::from_secs(30), None)
                    .await
                    .expect("call");
            }
        }
    })
    .await;
    session.shutdown().await;
    measured
}

fn main() {
    let n: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut raw = rt.block_on(floor(n));
    raw.sort();
    let one = pool_for(1);
    let (mut w1, t1) = rt.block_on(warm(&one, 1, n));
    w1.sort();
    rt.block_on(one.shutdown());
    let many = pool_for(16);
    let (mut w16, t16) = rt.block_on(warm(&many, 16, n));
    w16.sort();
    rt.block_on(many.shutdown());
    let (mut b1, bt1) = rt.block_on(bare(1, n));
    b1.sort();
    let (mut b16, bt16) = rt.block_on(bare(16, n));
    b16.sort();
    let rate = |count: usize, d: Duration| count as f64 / d.as_secs_f64();
    println!("warm calls: {n} calls per row, fixture server, one pooled session");
    println!(
        "floor   raw stdio round trip (cat)  : p50 {:>7.3} ms  p99 {:>7.3} ms",
        ms(percentile(&raw, 0.5)),
        ms(percentile(&raw, 0.99))
    );
    println!(
        "mcpq    warm echo, 1 in flight      : p50 {:>7.3} ms  p99 {:>7.3} ms  {:>8.0} calls/s",
        ms(percentile(&w1, 0.5)),
        ms(percentile(&w1, 0.99)),
        rate(w1.len(), t1)
    );
    println!(
        "mcpq    warm echo, 16 in flight     : p50 {:>7.3} ms  p99 {:>7.3} ms  {:>8.0} calls/s",
        ms(percentile(&w16, 0.5)),
        ms(percentile(&w16, 0.99)),
        rate(w16.len(), t16)
    );
    println!(
        "anchor  bare session, 1 in flight   : p50 {:>7.3} ms  p99 {:>7.3} ms  {:>8.0} calls/s",
        ms(percentile(&b1, 0.5)),
        ms(percentile(&b1, 0.99)),
        rate(b1.len(), bt1)
    );
    println!(
        "anchor  bare session, 16 in flight  : p50 {:>7.3} ms  p99 {:>7.3} ms  {:>8.0} calls/s",
        ms(percentile(&b16, 0.5)),
        ms(percentile(&b16, 0.99)),
        rate(b16.len(), bt16)
    );
    let ratio = ms(percentile(&w1, 0.5)) / ms(percentile(&raw, 0.5));
    println!(
        "ratio   pool p50 / bare session p50 : {:.2} (1 in flight), {:.2} (16 in flight)",
        ms(percentile(&w1, 0.5)) / ms(percentile(&b1, 0.5)),
        ms(percentile(&w16, 0.5)) / ms(percentile(&b16, 0.5))
    );
    println!("ratio   warm p50 / floor p50        : {ratio:.2} (goal <= 2)");
    println!(
        "{}",
        json!({"type": "bench", "name": "warm_calls", "calls": n,
               "floor_p50_ms": ms(percentile(&raw, 0.5)), "floor_p99_ms": ms(percentile(&raw, 0.99)),
               "warm1_p50_ms": ms(percentile(&w1, 0.5)), "warm1_p99_ms": ms(percentile(&w1, 0.99)),
               "warm1_calls_per_s": rate(w1.len(), t1),
               "warm16_p50_ms": ms(percentile(&w16, 0.5)), "warm16_p99_ms": ms(percentile(&w16, 0.99)),
               "warm16_calls_per_s": rate(w16.len(), t16), "ratio_warm_to_floor": ratio,
               "bare1_p50_ms": ms(percentile(&b1, 0.5)), "bare1_calls_per_s": rate(b1.len(), bt1),
               "bare16_p50_ms": ms(percentile(&b16, 0.5)), "bare16_calls_per_s": rate(b16.len(), bt16)})
    );
}
