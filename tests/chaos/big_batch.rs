//! 100,000 jobs pushed at once into one queue: drained, with bounded worker memory.
//! (apalis-redis 1.0 stopped at ~8,000 due jobs: "too many results to unpack".)

use std::time::{Duration, Instant};

use mcpq_tests::{call_job, wait_until_every, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, long, serial, CHAOS_QUEUE};

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_100k_job_batch_is_drained() {
    let _turn = serial();
    let redis = PrivateRedis::start("batch");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-batch",
        CHAOS_QUEUE,
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "max_sessions = 2",
    );
    let n = if long() { 300_000 } else { 100_000 };
    let jobs: Vec<_> = (0..n)
        .map(|i| call_job("echo", "add", json!({"a": i, "b": 1})))
        .collect();
    let workers = [env.worker(&[]), env.worker(&[])];
    for w in &workers {
        assert!(
            w.wait_log("worker started", Duration::from_secs(10)),
            "{}",
            w.log_text()
        );
    }
    let baseline: Vec<u64> = workers.iter().map(|w| rss_kib(w.pid())).collect();
    let started = Instant::now();
    env.submit_jobs(&jobs);
    let pushed = started.elapsed();
    let mut peak = baseline.clone();
    let drained = wait_until_every(Duration::from_secs(400), Duration::from_millis(500), || {
        for (i, w) in workers.iter().enumerate() {
            peak[i] = peak[i].max(rss_kib(w.pid()));
        }
        env.queue_depth() == 0
    });
    let took = started.elapsed();
    assert!(drained, "{} jobs left after {took:?}", env.queue_depth());
    let counts = env.status_counts();
    assert_eq!(counts.get("succeeded"), Some(&n), "{counts:?}");
    eprintln!(
        "chaos: {n} jobs pushed in {pushed:?}, drained in {took:?} ({:.0} jobs/s); worker RSS {baseline:?} KiB at start, peak {peak:?} KiB",
        n as f64 / took.as_secs_f64()
    );
    for (start, top) in baseline.iter().zip(&peak) {
        // One job at a time per slot: memory does not follow the queue's length.
        assert!(
            top - start < 100 * 1024,
            "worker memory grew by {} KiB",
            top - start
        );
    }
    drop(workers);
    assert_no_leftovers(&env);
}
