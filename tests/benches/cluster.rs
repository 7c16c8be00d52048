//! One Redis node vs a Redis Cluster, side by side in one run (`cargo bench --bench
//! cluster`, after `cargo build --release --workspace --bins`):
//!
//! - **1 node**: a private `redis-server` (no persistence), N echo jobs through W real
//!   `mcpq-worker` processes (pooled sessions of the fixture server: the cheapest job a
//!   worker runs end to end);
//! - **cluster**: the same N jobs and W workers on a private 6-node cluster (3 masters,
//!   3 replicas, no persistence) with `[redis] partitions = 16`.
//!
//! Each is timed from the first submit until every job has finished, the workers
//! already running; the producer is made from the config file as `mcpq` makes it.
//! Prints both rates, their ratio, the namespace's keys per master, then one JSON line.
//! `BENCH_JOBS` (default 20000), `BENCH_WORKERS` (4) and `BENCH_CONCURRENCY` (8 per
//! worker) change the sizes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mcpq_shared::queue::{self, Producer, ResultStore};
use mcpq_shared::{Config, Job};
use mcpq_tests::redis_cluster::{namespace_pattern, scan, Cluster, Standalone};
use mcpq_tests::{call_job, TestEnv};
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until every job in `ids` has finished, checked in order, 200 reads at a time.
async fn wait_all(store: &ResultStore, ids: &[String], limit: Duration) {
    let start = Instant::now();
    let mut next = 0;
    while next < ids.len() {
        let chunk = &ids[next..(next + 200).min(ids.len())];
        let reads = chunk.iter().map(|id| async move {
            store
                .status(id)
                .await
                .expect("read a status")
                .is_some_and(|r| r.status.is_finished())
        });
        let done = futures::future::join_all(reads).await;
        let finished = done.iter().take_while(|d| **d).count();
        next += finished;
        if finished < chunk.len() {
            assert!(
                start.elapsed() < limit,
                "jobs stalled at {next} of {}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// N echo jobs through `workers` workers on the Redis at `url`; the time they took.
fn run(
    url: &str,
    tag: &str,
    redis: &str,
    n: usize,
    workers: usize,
    concurrency: usize,
) -> (Duration, TestEnv) {
    let env = TestEnv::on_redis(
        url,
        tag,
        "",
        &format!("[worker]\nconcurrency = {concurrency}\npoll_interval = \"20ms\"\n{redis}"),
        "",
    );
    let procs: Vec<_> = (0..workers).map(|_| env.worker(&[])).collect();
    for w in &procs {
        assert!(
            w.wait_log("worker started", Duration::from_secs(20)),
            "{}",
            w.log_text()
        );
    }
    let config = Config::load(Some(&env.config)).expect("config");
    let target = config.redis_target().expect("target");
    let jobs: Vec<Job> = (0..n)
        .map(|i| call_job("echo", "echo", json!({"text": format!("job {i}")})))
        .collect();
    let rt = mcpq_tests::runtime();
    let took = rt.block_on(async {
        let (conn, keys) = queue::open(&target, &env.namespace).await.expect("redis");
        let producer = Producer::new(conn.clone(), keys.clone(), config.queue.clone());
        let store = ResultStore::new(conn, keys);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start = Instant::now();
        let ids: Vec<String> = producer
            .submit_many(&jobs)
            .await
            .expect("submit")
            .into_iter()
            .map(|s| s.id)
            .collect();
        wait_all(&store, &ids, Duration::from_secs(1200)).await;
        let took = start.elapsed();
        // The work was real: the last job's own echo result is stored.
        let last = store.get(&ids[n - 1]).await.expect("get").expect("record");
        assert_eq!(
            last.result.expect("result")[0]["result"]["content"][0]["text"],
            json!(format!("job {}", n - 1))
        );
        took
    });
    drop(procs);
    (took, env)
}

fn main() {
    let n = env_usize("BENCH_JOBS", 20_000);
    let workers = env_usize("BENCH_WORKERS", 4);
    let concurrency = env_usize("BENCH_CONCURRENCY", 8);
    eprintln!("cluster: {n} echo jobs each, {workers} workers of concurrency {concurrency}");

    let node = Standalone::start("bench");
    let (single, single_env) = run(&node.url(), "bench-node", "", n, workers, concurrency);
    let single_keys = scan(
        &mut mcpq_tests::redis_cluster::node(node.port),
        &namespace_pattern(&single_env.namespace),
    )
    .len();
    drop(single_env);
    drop(node);

    let cluster = Cluster::start("bench");
    let (clustered, cluster_env) = run(
        &cluster.url(),
        "bench-cluster",
        "[redis]\npartitions = 16\n",
        n,
        workers,
        concurrency,
    );
    let per_master: BTreeMap<u16, usize> =
        cluster.count_keys(&namespace_pattern(&cluster_env.namespace));
    drop(cluster_env);
    drop(cluster);

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "1 node                          : {n} jobs in {:>7.2} s = {:>8.1} jobs/s ({single_keys} keys)",
        single.as_secs_f64(),
        rate(single)
    );
    println!(
        "cluster 3 masters, partitions 16: {n} jobs in {:>7.2} s = {:>8.1} jobs/s (keys per master {per_master:?})",
        clustered.as_secs_f64(),
        rate(clustered)
    );
    println!(
        "ratio   cluster / 1 node {:.3}",
        rate(clustered) / rate(single)
    );
    let keys: BTreeMap<String, usize> = per_master
        .iter()
        .map(|(port, n)| (port.to_string(), *n))
        .collect();
    println!(
        "{}",
        json!({"type": "bench", "name": "cluster", "jobs": n, "workers": workers,
               "concurrency": concurrency, "node_jobs_per_s": rate(single),
               "cluster_jobs_per_s": rate(clustered),
               "ratio_cluster_to_node": rate(clustered) / rate(single),
               "cluster_keys_per_master": keys})
    );
}
