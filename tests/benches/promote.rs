//! Promoting scheduled jobs (issue 16): a million delayed jobs in `{ns}:scheduled`, and
//! the longest single promote script (`lua/promote.lua`, the rescuer tick's chunk of
//! `rescue::PROMOTE_CHUNK`) while none is due and while all of them come due at once.
//! Beside it, a second connection PINGs Redis every millisecond: its slowest answer is
//! how long any other client waited behind a promote script. Release build; run it with
//! `scripts/bench`. `BENCH_SCHEDULED` (default 1000000) sets N.
//!
//! Not a test: nothing is asserted but that every job was promoted once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mcpq_shared::queue::{self, rescue, Keys, Producer, QueueSettings};
use mcpq_tests::{call_job, TestEnv};
use redis::AsyncCommands;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let n: usize = std::env::var("BENCH_SCHEDULED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let env = TestEnv::new("bench-promote", "");
    let rt = mcpq_tests::runtime();
    rt.block_on(async {
        let conn = queue::connect(&env.redis_url).await.expect("redis");
        let keys = Keys::new(env.namespace.clone());
        let settings = QueueSettings::default();
        let producer = Producer::new(conn.clone(), keys.clone(), settings.clone());

        // 1. N delayed jobs, an hour ahead.
        let started = Instant::now();
        let later = SystemTime::now() + Duration::from_secs(3600);
        for first in (0..n).step_by(10_000) {
            let jobs: Vec<_> = (first..(first + 10_000).min(n))
                .map(|i| {
                    let mut job = call_job("echo", "add", json!({"a": i, "b": 1}));
                    job.options.run_at = Some(later);
                    job
                })
                .collect();
            producer.submit_many(&jobs).await.expect("submit");
        }
        let enqueue = started.elapsed();
        let mut c = conn.clone();
        let scheduled: u64 = c.zcard(keys.scheduled()).await.expect("zcard");
        assert_eq!(scheduled as usize, n);

        // The PING watcher: the slowest answer any other client got meanwhile.
        let stop = Arc::new(AtomicBool::new(false));
        let worst_ping = Arc::new(AtomicU64::new(0));
        let watcher = {
            let (stop, worst) = (stop.clone(), worst_ping.clone());
            let mut c = queue::connect(&env.redis_url).await.expect("redis");
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let _: String = redis::cmd("PING").query_async(&mut c).await.expect("ping");
                    worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };

        // 2. None due: what every tick costs with a million waiting.
        let mut idle = Vec::new();
        for _ in 0..200 {
            let mut c = conn.clone();
            let t = Instant::now();
            let taken = rescue::promote_once(&mut c, &keys, &settings).await.expect("promote");
            idle.push(t.elapsed());
            assert_eq!(taken, 0);
        }
        idle.sort();
        let idle_ping = worst_ping.swap(0, Ordering::Relaxed);

        // 3. All due at once: rewrite every score to the past, then drain call by call.
        let mut c = conn.clone();
        for _ in (0..n).step_by(10_000) {
            // Those still in the future (the rescored ones sort first, at -1).
            let ids: Vec<String> = c
                .zrangebyscore_limit(keys.scheduled(), "(0", "+inf", 0, 10_000)
                .await
                .expect("zrange");
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("ZADD").arg(keys.scheduled()).arg("XX").arg(-1).arg(id).ignore();
            }
            let _: () = pipe.query_async(&mut c).await.expect("rescore");
        }
        worst_ping.store(0, Ordering::Relaxed);
        let mut calls = Vec::new();
        let mut promoted = 0u64;
        let drain_started = Instant::now();
        loop {
            let mut c = conn.clone();
            let t = Instant::now();
            let taken = rescue::promote_once(&mut c, &keys, &settings).await.expect("promote");
            calls.push(t.elapsed());
            promoted += u64::from(taken);
            if taken < rescue::PROMOTE_CHUNK {
                break;
            }
        }
        let drain = drain_started.elapsed();
        let drain_ping = worst_ping.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let _ = watcher.await;
        assert_eq!(promoted as usize, n, "every job promoted once");
        calls.sort();

        println!("promote: {n} delayed jobs (enqueued in {:.1} s)", enqueue.as_secs_f64());
        println!(
            "none due : 200 calls, p50 {:.3} ms, max {:.3} ms; slowest PING meanwhile {:.3} ms",
            ms(percentile(&idle, 0.5)),
            ms(*idle.last().expect("calls")),
            idle_ping as f64 / 1000.0
        );
        println!(
            "all due  : {} calls of {} in {:.2} s ({:.0} jobs/s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; slowest PING meanwhile {:.2} ms",
            calls.len(),
            rescue::PROMOTE_CHUNK,
            drain.as_secs_f64(),
            n as f64 / drain.as_secs_f64(),
            ms(percentile(&calls, 0.5)),
            ms(percentile(&calls, 0.99)),
            ms(*calls.last().expect("calls")),
            drain_ping as f64 / 1000.0
        );
        println!(
            "{}",
            json!({"type": "bench", "name": "promote", "jobs": n,
                   "idle_p50_ms": ms(percentile(&idle, 0.5)), "idle_max_ms": ms(*idle.last().expect("calls")),
                   "drain_calls": calls.len(), "drain_s": drain.as_secs_f64(),
                   "call_p50_ms": ms(percentile(&calls, 0.5)), "call_p99_ms": ms(percentile(&calls, 0.99)),
                   "call_max_ms": ms(*calls.last().expect("calls")),
                   "ping_max_ms": drain_ping as f64 / 1000.0})
        );

        // Clean up by SCAN + UNLINK (TestEnv's KEYS would block the shared Redis).
        let mut c = conn.clone();
        let pattern = format!("{}:*", keys.prefix());
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(5000)
                .query_async(&mut c)
                .await
                .expect("scan");
            if !batch.is_empty() {
                let _: () = redis::cmd("UNLINK").arg(&batch).query_async(&mut c).await.expect("unlink");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    });
}
