//! Cold start of the fixture MCP server: spawn + `initialize` + one `tools/call`,
//! through mcpq's `Supervisor` + `McpSession` against a bare `tokio::process::Command` +
//! rmcp client (the anchor), interleaved in one run. Prints p50/p99 of each and the
//! supervisor's overhead. `BENCH_ROUNDS` (default 300) sets the number of starts each.
//!
//! The `fork` rows answer whether the supervisor's own `clone(CLONE_VM | CLONE_VFORK)`
//! still earns its unsafe code: the same start with `tokio::process::Command` and a
//! `pre_exec` hook doing the supervisor's resets (own session, parent-death signal,
//! empty mask), which makes std fork. Fork copies the page tables, so its cost grows
//! with the parent's memory: both are measured again with `BENCH_BALLAST_MB` (default
//! 512) of touched heap in this process, as a busy worker would hold.
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

/// Spawns `command` (stdio piped), initializes an rmcp client on it and calls `echo`
/// once: the time from `start` to the answer. Stopping the child is not timed.
async fn spawn_initialize_call(mut command: tokio::process::Command, start: Instant) -> Duration {
    let mut child = command
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

async fn bare(fixture: &std::path::Path) -> Duration {
    let start = Instant::now();
    spawn_initialize_call(tokio::process::Command::new(fixture), start).await
}

/// Like [`bare`], with the supervisor's resets in a `pre_exec` hook (so std forks).
async fn forked(fixture: &std::path::Path) -> Duration {
    let start = Instant::now();
    let mut command = tokio::process::Command::new(fixture);
    // SAFETY: the hook runs in the forked child before exec and makes only
    // async-signal-safe syscalls on stack values.
    unsafe {
        command.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::setsid();
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    spawn_initialize_call(command, start).await
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
        .call_tool("echo", args(), Duration::from_secs(30), None)
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
    let ballast_mb: usize = std::env::var("BENCH_BALLAST_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let supervisor = Supervisor::new();
    let (mut a, mut s, mut f) = (Vec::new(), Vec::new(), Vec::new());
    let (mut s_big, mut f_big) = (Vec::new(), Vec::new());
    rt.block_on(async {
        // Warm the page cache and the runtime first.
        for _ in 0..10 {
            bare(&fixture).await;
            supervised(&supervisor, &config, timeouts).await;
            forked(&fixture).await;
        }
        for _ in 0..rounds {
            a.push(bare(&fixture).await);
            s.push(supervised(&supervisor, &config, timeouts).await);
            f.push(forked(&fixture).await);
        }
    });
    // A worker's memory: touched, so every page is mapped.
    let ballast: Vec<u8> = vec![1u8; ballast_mb << 20];
    rt.block_on(async {
        for _ in 0..rounds {
            s_big.push(supervised(&supervisor, &config, timeouts).await);
            f_big.push(forked(&fixture).await);
        }
    });
    assert!(ballast.iter().step_by(4096).all(|b| *b == 1));
    drop(ballast);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |v: &mut Vec<Duration>| {
        v.sort();
        (ms(percentile(v, 0.5)), ms(percentile(v, 0.99)))
    };
    let ((a50, a99), (s50, s99), (f50, f99)) = (p(&mut a), p(&mut s), p(&mut f));
    let ((sb50, sb99), (fb50, fb99)) = (p(&mut s_big), p(&mut f_big));
    println!("cold start: spawn + initialize + one tools/call of the fixture, {rounds} rounds each, interleaved");
    let row = |name: &str, p50: f64, p99: f64| {
        println!("{name:<52}: p50 {p50:>7.3} ms   p99 {p99:>7.3} ms");
    };
    row("anchor      bare tokio::process + rmcp", a50, a99);
    row("mcpq        Supervisor + McpSession (vfork)", s50, s99);
    row(
        "fork        tokio::process + pre_exec resets + rmcp",
        f50,
        f99,
    );
    println!(
        "overhead    mcpq vs anchor: p50 {:+.1} %   p99 {:+.1} %",
        (s50 / a50 - 1.0) * 100.0,
        (s99 / a99 - 1.0) * 100.0
    );
    println!("fork / vfork: p50 {:.3}   p99 {:.3}", f50 / s50, f99 / s99);
    println!("with {ballast_mb} MiB of touched heap in the parent:");
    row("mcpq        Supervisor + McpSession (vfork)", sb50, sb99);
    row(
        "fork        tokio::process + pre_exec resets + rmcp",
        fb50,
        fb99,
    );
    println!(
        "fork / vfork: p50 {:.3}   p99 {:.3}",
        fb50 / sb50,
        fb99 / sb99
    );
    println!(
        "{}",
        json!({"type": "bench", "name": "cold_start", "rounds": rounds,
               "anchor_p50_ms": a50, "anchor_p99_ms": a99,
               "mcpq_p50_ms": s50, "mcpq_p99_ms": s99,
               "fork_p50_ms": f50, "fork_p99_ms": f99,
               "overhead_p50": s50 / a50 - 1.0, "overhead_p99": s99 / a99 - 1.0,
               "ballast_mb": ballast_mb,
               "mcpq_ballast_p50_ms": sb50, "mcpq_ballast_p99_ms": sb99,
               "fork_ballast_p50_ms": fb50, "fork_ballast_p99_ms": fb99})
    );
}
