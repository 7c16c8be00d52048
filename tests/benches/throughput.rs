//! Throughput end to end, side by side in one run (`scripts/bench`, release build).
//!
//! Every mcpq row runs through the real `mcpq-worker` binary (a separate process,
//! started before the clock starts and stopped after), fed by a producer in this
//! process that enqueues 500 jobs per script call while the worker drains:
//!
//! - **noop**: N `{"kind": "noop"}` jobs (default 100,000, concurrency 32): the cost of
//!   the queue alone (enqueue, fetch with lease, fenced outcome stored);
//! - **pooled echo**: N one-call jobs (`echo` on the Rust fixture server, warm pooled
//!   sessions, default pool settings), concurrency 8;
//! - **fresh echo**: the same with `pool = false` (a server spawned per job);
//! - **anchor**: N no-op jobs through bare apalis-redis 1.0 (its own worker, in this
//!   process: it ships no binary), concurrency 8. It stops above ~8,000 jobs
//!   ("too many results to unpack"), so its N is capped at 5,000.
//!
//! Each row is timed from the first enqueue until its last outcome is stored, seen
//! through Redis the same way for every row: one read every 20 ms of a counter the
//! queue keeps anyway (mcpq: the `succeeded` total of `{ns}:totals`; apalis-redis:
//! the size of its done set). Rows run in rounds (round 1 every row, round 2 every row,
//! ...; default 3), and each row reports the median with min and max.
//!
//! For the noop row it also reports, per job: Redis commands (from `INFO
//! commandstats`, commands called inside scripts included) by command, Redis CPU,
//! worker CPU and producer CPU (this process), and the bytes a finished job keeps in
//! Redis (`used_memory` after minus before, over N, while the results are kept for
//! `queue.result_ttl`).
//!
//! Sizes: `BENCH_NOOP_JOBS` (100000), `BENCH_NOOP_CONCURRENCY` (32), `BENCH_JOBS`
//! (5000, the echo rows; the fresh row takes a tenth), `BENCH_CONCURRENCY` (8),
//! `BENCH_ROUNDS` (3), `BENCH_ROWS` (comma-separated subset of noop,pooled,fresh,anchor).
//! Prints a table, then one JSON line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use mcpq_shared::job::{Job, JobOptions, PlanStep};
use mcpq_shared::queue::{self, Keys, Producer, QueueSettings};
use mcpq_tests::TestEnv;
use redis::AsyncCommands;
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How often every row's completion counter is read.
const POLL: Duration = Duration::from_millis(20);
/// Longest any row may take.
const LIMIT: Duration = Duration::from_secs(900);

/// Waits until `count` reaches `n`, reading it every [`POLL`]; the time from `start`.
async fn wait_count<F, Fut>(start: Instant, n: usize, mut count: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    loop {
        let done = count().await;
        if done >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < LIMIT,
            "only {done}/{n} jobs done after {LIMIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// What Redis says about itself: commands called (by name), CPU seconds, memory.
#[derive(Debug, Default, Clone)]
struct RedisSample {
    calls: BTreeMap<String, u64>,
    cpu: f64,
    memory: u64,
}

async fn redis_sample(conn: &mut queue::Conn) -> RedisSample {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let mut calls = BTreeMap::new();
    for line in stats.lines() {
        // cmdstat_hset:calls=12,usec=...
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let (name, fields) = rest.split_once(':').unwrap_or((rest, ""));
            let n = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            calls.insert(name.to_string(), n);
        }
    }
    let cpu_text: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .expect("INFO cpu");
    let field = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let cpu = field(&cpu_text, "used_cpu_sys") + field(&cpu_text, "used_cpu_user");
    let mem_text: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO memory");
    RedisSample {
        calls,
        cpu,
        memory: field(&mem_text, "used_memory") as u64,
    }
}

/// CPU seconds (user + system) of process `pid` so far.
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// CPU seconds (user + system) of this process so far.
fn self_cpu() -> f64 {
    proc_cpu(std::process::id())
}

/// One row's result in one round.
#[derive(Debug, Clone, Default)]
struct Run {
    took: Duration,
    n: usize,
    /// Per-job figures (noop row only).
    per_job: Option<PerJob>,
}

#[derive(Debug, Clone, Default)]
struct PerJob {
    commands: f64,
    by_command: Vec<(String, f64)>,
    redis_cpu_us: f64,
    worker_cpu_us: f64,
    producer_cpu_us: f64,
    bytes: f64,
}

fn noop_jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|_| Job::from_json(br#"{"kind":"noop"}"#).expect("a noop job"))
        .collect()
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

/// The `succeeded` total of every partition of `keys`' namespace.
async fn succeeded(conn: &mut queue::Conn, keys: &Keys) -> usize {
    let mut sum = 0;
    for part in keys.all() {
        let n: Option<usize> = conn
            .hget(format!("{}:totals", part.prefix()), "succeeded")
            .await
            .expect("HGET totals");
        sum += n.unwrap_or(0);
    }
    sum
}

/// N jobs through a fresh `mcpq-worker` of `concurrency` slots; `echo_extra` goes into
/// the fixture's `[servers.echo]` table.
async fn mcpq(jobs: Vec<Job>, concurrency: usize, echo_extra: &str, measure: bool) -> Run {
    let n = jobs.len();
    let extra = format!("[worker]\nconcurrency = {concurrency}\n");
    let env = TestEnv::with_echo("bench-mcpq", &extra, echo_extra);
    let worker = env.started_worker(&[]);
    let keys = Keys::new(env.namespace.clone());
    let conn = queue::connect(&mcpq_tests::redis_url())
        .await
        .expect("redis");
    let producer = Producer::new(conn.clone(), keys.clone(), QueueSettings::default());
    // Let the worker settle (its first polls, the pool's first session for echo jobs).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut probe = conn.clone();
    let before = if measure {
        Some((
            redis_sample(&mut probe).await,
            proc_cpu(worker.pid()),
            self_cpu(),
        ))
    } else {
        None
    };
    let start = Instant::now();
    let submit = async {
        producer.submit_many(&jobs).await.expect("submit");
    };
    let counter = conn.clone();
    let (_, took) = tokio::join!(
        submit,
        wait_count(start, n, || {
            let (mut c, k) = (counter.clone(), keys.clone());
            async move { succeeded(&mut c, &k).await }
        })
    );
    let per_job = match before {
        Some((r0, w0, p0)) => {
            let (w1, p1) = (proc_cpu(worker.pid()), self_cpu());
            let r1 = redis_sample(&mut probe).await;
            let per = |x: f64| x / n as f64;
            let mut by_command: Vec<(String, f64)> = r1
                .calls
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        per((v - r0.calls.get(k).copied().unwrap_or(0)) as f64),
                    )
                })
                .filter(|(_, v)| *v >= 0.005)
                .collect();
            by_command.sort_by(|a, b| b.1.total_cmp(&a.1));
            Some(PerJob {
                commands: by_command.iter().map(|(_, v)| v).sum(),
                by_command,
                redis_cpu_us: per(r1.cpu - r0.cpu) * 1e6,
                worker_cpu_us: per(w1 - w0) * 1e6,
                producer_cpu_us: per(p1 - p0) * 1e6,
                bytes: per(r1.memory as f64 - r0.memory as f64),
            })
        }
        None => None,
    };
    drop(worker);
    Run { took, n, per_job }
}

async fn anchor(n: usize, concurrency: usize) -> Run {
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
        .poll_with_interval(Duration::from_millis(100));
    let worker = WorkerBuilder::new(format!("bench-anchor-{}", std::process::id()))
        .backend(storage)
        .concurrency(concurrency)
        .parallelize(tokio::spawn)
        .build(|_job: u32| async { Ok::<(), BoxDynError>(()) });
    let measure = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut pusher = RedisStorage::<u32>::new(conn.clone()).with_config(config);
        let start = Instant::now();
        let jobs: Vec<u32> = (0..n as u32).collect();
        let push = async {
            for chunk in jobs.chunks(500) {
                pusher.push_bulk(chunk.to_vec()).await.expect("push");
            }
        };
        let (_, took) = tokio::join!(
            push,
            wait_count(start, n, || {
                let (mut c, key) = (conn.clone(), done_key.clone());
                async move { c.scard::<_, usize>(key).await.expect("SCARD") }
            })
        );
        took
    };
    let took = tokio::select! {
        took = measure => took,
        end = worker.run() => panic!("the anchor worker stopped early: {end:?}"),
    };
    Run {
        took,
        n,
        per_job: None,
    }
}

fn median_min_max(rates: &[f64]) -> (f64, f64, f64) {
    let mut v = rates.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let noop_n = env_usize("BENCH_NOOP_JOBS", 100_000);
    let noop_c = env_usize("BENCH_NOOP_CONCURRENCY", 32);
    let n = env_usize("BENCH_JOBS", 5_000);
    let c = env_usize("BENCH_CONCURRENCY", 8);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let rows: Vec<String> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "noop,pooled,fresh,anchor".to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    eprintln!(
        "throughput: rows {rows:?}, {rounds} rounds; noop N={noop_n} x{noop_c}, echo N={n} x{c}, Redis {}",
        mcpq_tests::redis_url()
    );
    let mut results: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for round in 1..=rounds {
        for row in &rows {
            let run = match row.as_str() {
                "noop" => rt.block_on(mcpq(noop_jobs(noop_n), noop_c, "", true)),
                "pooled" => rt.block_on(mcpq(echo_jobs(n), c, "", false)),
                "fresh" => rt.block_on(mcpq(echo_jobs((n / 10).max(1)), c, "pool = false", false)),
                "anchor" => rt.block_on(anchor(n.min(5_000), c)),
                other => panic!("unknown row {other} (BENCH_ROWS: noop,pooled,fresh,anchor)"),
            };
            eprintln!(
                "round {round} {row:<7} {:>7} jobs in {:>7.2} s = {:>9.1} jobs/s",
                run.n,
                run.took.as_secs_f64(),
                run.n as f64 / run.took.as_secs_f64()
            );
            results.entry(row.clone()).or_default().push(run);
        }
    }
    let labels = [
        ("noop", "mcpq-worker, noop job"),
        ("pooled", "mcpq-worker, echo on the fixture, pooled"),
        ("fresh", "mcpq-worker, echo, a server per job"),
        ("anchor", "bare apalis-redis, no-op (in-process)"),
    ];
    let mut json_rows = serde_json::Map::new();
    println!("| row | N | concurrency | jobs/s median | min | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (key, label) in labels {
        let Some(runs) = results.get(key) else {
            continue;
        };
        let rates: Vec<f64> = runs
            .iter()
            .map(|r| r.n as f64 / r.took.as_secs_f64())
            .collect();
        let (med, min, max) = median_min_max(&rates);
        let conc = if key == "noop" { noop_c } else { c };
        println!(
            "| {label} | {} | {conc} | {med:.0} | {min:.0} | {max:.0} |",
            runs[0].n
        );
        json_rows.insert(
            key.to_string(),
            json!({"n": runs[0].n, "concurrency": conc, "median": med, "min": min, "max": max, "rates": rates}),
        );
    }
    if let Some(runs) = results.get("noop") {
        // Per-job figures of the median round.
        let mut by_rate: Vec<&Run> = runs.iter().collect();
        by_rate.sort_by_key(|r| std::cmp::Reverse(r.took));
        if let Some(p) = by_rate[by_rate.len() / 2].per_job.as_ref() {
            println!(
                "\nnoop, per job (median round): {:.2} Redis commands, Redis CPU {:.1} us, worker CPU {:.1} us, producer CPU {:.1} us, {:.0} bytes kept in Redis",
                p.commands, p.redis_cpu_us, p.worker_cpu_us, p.producer_cpu_us, p.bytes
            );
            let top: Vec<String> = p
                .by_command
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            println!("commands per job: {}", top.join(", "));
            json_rows.insert(
                "noop_per_job".to_string(),
                json!({"commands": p.commands, "by_command": p.by_command, "redis_cpu_us": p.redis_cpu_us,
                       "worker_cpu_us": p.worker_cpu_us, "producer_cpu_us": p.producer_cpu_us, "bytes": p.bytes}),
            );
        }
    }
    let mut out = json!({"type": "bench", "name": "throughput", "rounds": rounds});
    if let Value::Object(m) = &mut out {
        m.extend(json_rows);
    }
    println!("{out}");
}
