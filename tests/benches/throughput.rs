//! Throughput, end to end, side by side in one run (run it with `scripts/bench`):
//!
//! - **anchor**: N no-op jobs through bare apalis-redis (an in-process worker, same
//!   concurrency), the floor cost of the queue itself;
//! - **mcpq queue, no-op**: N jobs through mcpq's own backend (in-process apalis worker
//!   over `RedisQueue`): enqueue script, fetch with lease, fenced finish storing a
//!   result; the handler does nothing else. The guarantee is that this is at least as
//!   fast as the anchor;
//! - **mcpq pooled**: N echo-tool jobs through `mcpq-worker` (a separate process), on
//!   warm pooled sessions of the fixture MCP server, storing each result;
//! - **mcpq fresh**: the same with `pool = false`: each job spawns the server,
//!   initializes MCP, calls `echo`, stops the server.
//!
//! Each is timed from the first push until all N jobs are done, with the worker already
//! running. Prints the rates and their ratios, then one JSON line.
//! `BENCH_JOBS` (default 2000) and `BENCH_CONCURRENCY` (default 8) change the sizes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use mcpq_shared::backend::RedisQueue;
use mcpq_shared::job::{Job, JobOptions, PlanStep};
use mcpq_shared::queue::fetch::Delivery;
use mcpq_shared::queue::finish::{finish, Outcome};
use mcpq_shared::queue::lease::InFlight;
use mcpq_shared::queue::{self, Keys, Producer, QueueSettings, ResultStore};
use mcpq_tests::TestEnv;
use redis::AsyncCommands;
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn wait_done(
    conn: &mut (impl redis::aio::ConnectionLike + Send + Sync),
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
    // apalis-redis takes a plain ConnectionManager (one node).
    let conn = redis::Client::open(mcpq_tests::redis_url())
        .expect("redis url")
        .get_connection_manager()
        .await
        .expect("redis");
    let config = apalis_redis::Config::default().queue(format!("{{{}}}:apalis", env.namespace));
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

#[derive(Clone)]
struct NoopCtx {
    conn: mcpq_shared::queue::Conn,
    keys: Keys,
    settings: QueueSettings,
    done: Arc<AtomicUsize>,
    jobs: InFlight,
}

async fn noop_delivery(d: Delivery, ctx: Data<NoopCtx>) -> Result<(), BoxDynError> {
    // What the runner does around a job, minus the job: register, store, unregister.
    let _running = ctx.jobs.register(&d.id, d.attempt);
    let mut conn = ctx.conn.clone();
    let outcome = Outcome::Succeeded(Value::Null);
    finish(
        &mut conn,
        &ctx.keys,
        &ctx.settings,
        &d.id,
        d.attempt,
        &outcome,
    )
    .await?;
    ctx.done.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

fn echo_jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            let step = PlanStep {
                name: None,
                server: "echo".to_string(),
                tool: "echo".to_string(),
                arguments: json!({"text": format!("job {i}")})
                    .as_object()
                    .cloned()
                    .expect("object"),
                continue_on_error: false,
                literal_arguments: false,
                keep_tool_errors: false,
            };
            Job::agent(vec![step], JobOptions::default())
        })
        .collect()
}

async fn mcpq_noop(n: usize, concurrency: usize) -> Duration {
    let env = TestEnv::new("bench-noop", "");
    let keys = Keys::new(env.namespace.clone());
    let conn = queue::connect(&mcpq_tests::redis_url())
        .await
        .expect("redis");
    let settings = QueueSettings::default();
    let done = Arc::new(AtomicUsize::new(0));
    let jobs_running = InFlight::default();
    let ctx = NoopCtx {
        jobs: jobs_running.clone(),
        conn: conn.clone(),
        keys: keys.clone(),
        settings: settings.clone(),
        done: done.clone(),
    };
    let backend = RedisQueue::new(
        conn.clone(),
        keys.clone(),
        settings.clone(),
        format!("bench-noop-{}", std::process::id()),
        Duration::from_millis(20),
    )
    .with_jobs(jobs_running.clone(), concurrency);
    let worker = WorkerBuilder::new(format!("bench-noop-{}", std::process::id()))
        .backend(backend)
        .data(ctx)
        .concurrency(concurrency)
        .parallelize(tokio::spawn)
        .build(noop_delivery);
    let producer = Producer::new(conn.clone(), keys, settings);
    let jobs = echo_jobs(n);
    let measure = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start = Instant::now();
        producer.submit_many(&jobs).await.expect("submit");
        while done.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "no-op jobs stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start.elapsed()
    };
    tokio::select! {
        took = measure => took,
        end = worker.run() => panic!("the no-op worker stopped early: {end:?}"),
    }
}

/// Waits until every job in `ids` has finished (checked in order, 100 per round trip).
async fn wait_all(store: &ResultStore, conn: &mcpq_shared::queue::Conn, ids: &[String]) {
    let start = Instant::now();
    let mut conn = conn.clone();
    let mut next = 0;
    while next < ids.len() {
        let chunk = &ids[next..(next + 100).min(ids.len())];
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.hget(store.keys().job(id), "status");
        }
        let statuses: Vec<Option<String>> = pipe.query_async(&mut conn).await.expect("HGET");
        let finished = statuses
            .iter()
            .take_while(|s| matches!(s.as_deref(), Some("succeeded" | "dead" | "cancelled")))
            .count();
        next += finished;
        if finished < chunk.len() {
            assert!(
                start.elapsed() < Duration::from_secs(1200),
                "jobs stalled at {next}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
    let producer = Producer::new(conn.clone(), keys, QueueSettings::default());
    let jobs = echo_jobs(n);
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let start = Instant::now();
    producer.submit_many(&jobs).await.expect("submit");
    wait_all(producer.store(), &conn, &ids).await;
    let took = start.elapsed();
    // Spot-check that the work was real: a stored echo result.
    let last = producer
        .store()
        .get(&ids[n - 1])
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
    let q = rt.block_on(mcpq_noop(n, concurrency));
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
    row("mcpq    own backend, no-op job (in-process)", q);
    row("mcpq    echo job, pooled session", m);
    row("mcpq    echo job, fresh server per job", f);
    println!(
        "ratio   mcpq no-op / anchor {:.3}, pooled / anchor {:.3}, fresh / anchor {:.3}, pooled / fresh {:.2}",
        rate(q) / rate(a),
        rate(m) / rate(a),
        rate(f) / rate(a),
        rate(m) / rate(f)
    );
    println!(
        "{}",
        json!({"type": "bench", "name": "throughput", "jobs": n, "concurrency": concurrency,
               "anchor_jobs_per_s": rate(a), "mcpq_noop_jobs_per_s": rate(q),
               "ratio_noop_to_anchor": rate(q) / rate(a), "mcpq_pooled_jobs_per_s": rate(m),
               "mcpq_fresh_jobs_per_s": rate(f), "ratio_pooled_to_anchor": rate(m) / rate(a),
               "ratio_fresh_to_anchor": rate(f) / rate(a)})
    );
}
