//! Throughput, end to end, side by side in one run (run it with `scripts/bench`):
//!
//! - **anchor**: N no-op jobs through bare apalis-redis (an in-process worker, same
//!   concurrency), the floor cost of the queue itself;
//! - **mcpq pooled**: N echo-tool jobs through `mcpq-worker` (a separate process), on
//!   warm pooled sessions of the fixture MCP server, storing each result;
//! - **mcpq fresh**: the same with `pool = false`: each job spawns the server,
//!   initializes MCP, calls `echo`, stops the server.
//!
//! Both are timed from the first push until apalis's done set holds all N jobs, with the
//! worker already running. Prints both rates and their ratio, then one JSON line.
//! `BENCH_JOBS` (default 2000) and `BENCH_CONCURRENCY` (default 8) change the sizes.

use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use mcpq_shared::job::{Job, JobOptions, PlanStep};
use mcpq_shared::queue::{self, enqueue::apalis_config, Keys, Producer};
use mcpq_tests::TestEnv;
use redis::AsyncCommands;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn wait_done(
    conn: &mut redis::aio::ConnectionManager,
    done_key: &str,
    n: usize,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let count: usize = conn.scard(done_key).await.expect("SCARD");
        if count >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "only {count}/{n} jobs done after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn noop(_job: u32) -> Result<(), BoxDynError> {
    Ok(())
}

async fn anchor(n: usize, concurrency: usize) -> Duration {
    let env = TestEnv::new("bench-anchor", "");
    let keys = Keys::new(env.namespace.clone());
    let conn = queue::connect(&mcpq_tests::redis_url())
        .await
        .expect("redis");
    let config = apalis_config(&keys);
    let done_key = config.done_jobs_set();
    let storage = RedisStorage::<u32>::new(conn.clone())
        .with_config(config.clone())
        .poll_with_interval(Duration::from_millis(20));
    let worker = WorkerBuilder::new(format!("bench-anchor-{}", std::process::id()))
        .backend(storage)
        .concurrency(concurrency)
        .parallelize(tokio::spawn)
        .build(noop);
    let measure = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut pusher = RedisStorage::<u32>::new(conn.clone()).with_config(config);
        let start = Instant::now();
        pusher
            .push_bulk((0..n as u32).collect())
            .await
            .expect("push");
        let mut c = conn.clone();
        wait_done(&mut c, &done_key, n, Duration::from_secs(600)).await;
        start.elapsed()
    };
    // The worker runs until the measurement is done, then is dropped.
    tokio::select! {
        took = measure => took,
        end = worker.run() => panic!("the anchor worker stopped early: {end:?}"),
    }
}

async fn mcpq(n: usize, concurrency: usize, pooled: bool) -> Duration {
    let extra = format!("[worker]\nconcurrency = {concurrency}\npoll_interval = \"20ms\"\n");
    let env = TestEnv::with_echo("bench-mcpq", &extra, &format!("pool = {pooled}"));
    let worker = env.worker(&[]);
    assert!(
        worker.wait_log("worker started", Duration::from_secs(10)),
        "{}",
        worker.log_text()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys = Keys::new(env.namespace.clone());
    let conn = queue::connect(&mcpq_tests::redis_url())
        .await
        .expect("redis");
    let done_key = apalis_config(&keys).done_jobs_set();
    let producer = Producer::new(conn.clone(), keys);
    let jobs: Vec<Job> = (0..n)
        .map(|i| {
            let step = PlanStep {
                name: None,
                server: "echo".to_string(),
                tool: "echo".to_string(),
                arguments: json!({"text": format!("job {i}")})
                    .as_object()
                    .cloned()
                    .expect("object"),
            };
            Job::agent(vec![step], JobOptions::default())
        })
        .collect();
    let start = Instant::now();
    producer.submit_many(&jobs).await.expect("submit");
    let mut c = conn.clone();
    wait_done(&mut c, &done_key, n, Duration::from_secs(1200)).await;
    let took = start.elapsed();
    // Spot-check that the work was real: a stored echo result.
    let last = producer
        .store()
        .get(&jobs[n - 1].id)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(
        last.result.expect("result")[0]["result"]["content"][0]["text"],
        json!(format!("job {}", n - 1))
    );
    drop(worker);
    took
}

fn main() {
    let n = env_usize("BENCH_JOBS", 2000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 8);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    eprintln!(
        "throughput: {n} jobs each, concurrency {concurrency}, Redis {}",
        mcpq_tests::redis_url()
    );
    let a = rt.block_on(anchor(n, concurrency));
    let m = rt.block_on(mcpq(n, concurrency, true));
    let f = rt.block_on(mcpq(n, concurrency, false));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let row = |label: &str, d: Duration| {
        println!(
            "{label:<44}: {n} jobs in {:>7.2} s = {:>8.1} jobs/s",
            d.as_secs_f64(),
            rate(d)
        )
    };
    row("anchor  bare apalis-redis, no-op job", a);
    row("mcpq    echo job, pooled session", m);
    row("mcpq    echo job, fresh server per job", f);
    println!(
        "ratio   pooled / anchor {:.3}, fresh / anchor {:.3}, pooled / fresh {:.2}",
        rate(m) / rate(a),
        rate(f) / rate(a),
        rate(m) / rate(f)
    );
    println!(
        "{}",
        json!({"type": "bench", "name": "throughput", "jobs": n, "concurrency": concurrency,
               "anchor_jobs_per_s": rate(a), "mcpq_pooled_jobs_per_s": rate(m),
               "mcpq_fresh_jobs_per_s": rate(f), "ratio_pooled_to_anchor": rate(m) / rate(a),
               "ratio_fresh_to_anchor": rate(f) / rate(a)})
    );
}
