//! mcpq on a real Redis Cluster (6 nodes: 3 masters, 3 replicas, started by the test,
//! `mcpq_tests::redis_cluster`): the real worker binary and the library's producer
//! given a `redis+cluster://` URL. Every job succeeds, also across a coordinated
//! failover of the master that holds the namespace; the namespace's keys are counted
//! per master and printed ("cluster:" lines).
//!
//! Also the cluster chaos scenario (`scripts/chaos --cluster`, ignored here): 20,000
//! jobs, 4 workers, a master failed over and killed mid-run, with and without
//! `[redis] wait_replicas = 1`; it reports submitted / acknowledged / succeeded / lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpq_shared::queue::{self, JobStatus, Producer, ResultStore};
use mcpq_shared::{Config, Job};
use mcpq_tests::redis_cluster::{namespace_pattern, Cluster};
use mcpq_tests::{call_job, wait_until_every, TestEnv, WorkerProc};
use serde_json::json;

/// Short leases: a job whose end was lost in a failover is run again within seconds.
const CLUSTER_QUEUE: &str = "lease = \"3s\"\nretry_base = \"50ms\"\nretry_cap = \"500ms\"\n";

/// An env on `cluster` whose config asks for 16 partitions, with `redis_extra` added to
/// `[redis]` and workers of concurrency 8 polling every 20 ms.
fn cluster_env(cluster: &Cluster, tag: &str, redis_extra: &str) -> TestEnv {
    TestEnv::on_redis(
        &cluster.url(),
        tag,
        CLUSTER_QUEUE,
        &format!(
            "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n[redis]\npartitions = 16\n{redis_extra}"
        ),
        "",
    )
}

fn start_workers(env: &TestEnv, n: usize) -> Vec<WorkerProc> {
    let workers: Vec<WorkerProc> = (0..n).map(|_| env.worker(&[])).collect();
    for w in &workers {
        assert!(
            w.wait_log("worker started", Duration::from_secs(20)),
            "a worker did not start on the cluster:\n{}",
            w.log_text()
        );
    }
    workers
}

fn echo_jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| call_job("echo", "echo", json!({"text": format!("job {i}")})))
        .collect()
}

fn logs(workers: &[WorkerProc]) -> String {
    workers
        .iter()
        .map(|w| {
            let log = w.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n-----\n")
}

/// The workers' WARN and ERROR lines: their number and the first few (for the report).
fn complaints(workers: &[WorkerProc]) -> String {
    let lines: Vec<String> = workers
        .iter()
        .flat_map(|w| {
            w.log_text()
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let first: String = lines.iter().take(8).map(|l| format!("\n  {l}")).collect();
    format!("{} warnings/errors{first}", lines.len())
}

/// Waits (at most `within`) until `n` jobs of the env's namespace have finished.
fn wait_finished(cluster: &Cluster, env: &TestEnv, n: usize, within: Duration) -> bool {
    wait_until_every(within, Duration::from_millis(200), || {
        cluster.finished_count(&env.namespace) >= n
    })
}

/// Every job has its own echo result (read through the library, over the cluster).
/// `ids` are what the submit answered (a fresh id is re-drawn in its partition).
fn assert_results(env: &TestEnv, ids: &[String]) {
    let rt = mcpq_tests::runtime();
    rt.block_on(async {
        let config = mcpq_shared::Config::load(Some(&env.config)).expect("config");
        let target = config.redis_target().expect("target");
        let (conn, keys) = queue::open(&target, &env.namespace).await.expect("cluster");
        assert_eq!(keys.partitions(), 16, "the namespace's partitions");
        let store = ResultStore::new(conn, keys);
        for (i, id) in ids.iter().enumerate().step_by(97) {
            let record = store
                .get(id)
                .await
                .expect("read the record")
                .unwrap_or_else(|| panic!("job {i} has no record"));
            assert_eq!(record.status, JobStatus::Succeeded, "job {i}");
            assert_eq!(
                record.result.expect("result")[0]["result"]["content"][0]["text"],
                json!(format!("job {i}")),
                "job {i} got another job's result"
            );
        }
    });
}

/// 2,000 echo jobs through 2 workers on a fresh cluster; returns the cluster, the env
/// and the namespace's keys per master.
fn two_thousand_jobs(tag: &str) -> (Cluster, TestEnv, BTreeMap<u16, usize>) {
    let cluster = Cluster::start(tag);
    let env = cluster_env(&cluster, tag, "");
    let workers = start_workers(&env, 2);
    let jobs = echo_jobs(2000);
    let start = Instant::now();
    let ids = env.submit_jobs(&jobs);
    let done = wait_finished(&cluster, &env, jobs.len(), Duration::from_secs(60));
    let took = start.elapsed();
    let counts = cluster.status_counts(&env.namespace);
    assert!(
        done,
        "not every job finished within 60 s: {counts:?}\n{}",
        logs(&workers)
    );
    assert_eq!(
        counts.get("succeeded"),
        Some(&jobs.len()),
        "every job succeeds on a cluster: {counts:?}\n{}",
        logs(&workers)
    );
    assert_results(&env, &ids);
    for w in &workers {
        assert!(!w.log_text().contains("panicked"), "{}", w.log_text());
    }
    let keys = cluster.count_keys(&namespace_pattern(&env.namespace));
    eprintln!(
        "cluster: {} jobs, 2 workers, partitions = 16 in the config: all succeeded in {:.2} s; \
         the namespace's keys per master (port: keys): {keys:?}",
        jobs.len(),
        took.as_secs_f64()
    );
    eprintln!("cluster: the workers logged {}", complaints(&workers));
    drop(workers);
    (cluster, env, keys)
}

#[test]
fn two_thousand_jobs_on_a_six_node_cluster_all_succeed() {
    let (cluster, _env, keys) = two_thousand_jobs("cluster-2000");
    assert_eq!(cluster.masters().len(), 3, "3 masters serve the slots");
    assert!(
        keys.values().sum::<usize>() >= 2000,
        "every job's record is in the cluster: {keys:?}"
    );
}

#[test]
fn keys_spread_over_all_masters() {
    let (cluster, _env, keys) = two_thousand_jobs("cluster-spread");
    assert_eq!(keys.len(), 3, "{keys:?}");
    for (port, n) in &keys {
        assert!(
            *n > 0,
            "with 16 partitions every master holds some of the namespace's keys; the master \
             on port {port} holds none: {keys:?} (masters {:?})",
            cluster.masters()
        );
    }
}

#[test]
fn a_coordinated_failover_mid_run_loses_no_job_and_the_workers_go_on() {
    let cluster = Cluster::start("cluster-failover");
    let env = cluster_env(&cluster, "cluster-failover", "");
    let mut workers = start_workers(&env, 2);
    let jobs = echo_jobs(2000);
    let ids = env.submit_jobs(&jobs);
    assert!(
        wait_finished(&cluster, &env, 500, Duration::from_secs(60)),
        "500 jobs did not finish before the failover: {:?}\n{}",
        cluster.status_counts(&env.namespace),
        logs(&workers)
    );
    let tag = format!("{{{}}}", env.namespace);
    let old = cluster.master_of_key(&tag);
    let before = cluster.finished_count(&env.namespace);
    let started = Instant::now();
    let new = cluster.failover(old);
    let failover_took = started.elapsed();
    assert_eq!(
        cluster.master_of_key(&tag),
        new,
        "the replica serves the namespace's slot now"
    );
    assert!(
        before < jobs.len(),
        "the failover happened mid-run ({before} of {} finished)",
        jobs.len()
    );
    assert!(
        wait_finished(&cluster, &env, jobs.len(), Duration::from_secs(60)),
        "not every job finished after the failover: {:?}\n{}",
        cluster.status_counts(&env.namespace),
        logs(&workers)
    );
    let counts = cluster.status_counts(&env.namespace);
    assert_eq!(
        counts.get("succeeded"),
        Some(&jobs.len()),
        "every job succeeds across the failover: {counts:?}\n{}",
        logs(&workers)
    );
    // The workers go on: both still run, and serve jobs submitted after the failover.
    for w in &mut workers {
        assert!(
            w.child.try_wait().expect("try_wait").is_none(),
            "a worker exited after the failover:\n{}",
            w.log_text()
        );
    }
    let more = echo_jobs(100);
    env.submit_jobs(&more);
    assert!(
        wait_finished(
            &cluster,
            &env,
            jobs.len() + more.len(),
            Duration::from_secs(30)
        ),
        "jobs submitted after the failover did not finish: {:?}\n{}",
        cluster.status_counts(&env.namespace),
        logs(&workers)
    );
    assert_results(&env, &ids);
    eprintln!(
        "cluster: across the failover the workers logged {}",
        complaints(&workers)
    );
    eprintln!(
        "cluster: failover of master {old} -> {new} took {:.2} s with {before}/{} jobs done; all \
         succeeded; keys per master after: {:?}",
        failover_took.as_secs_f64(),
        jobs.len(),
        cluster.count_keys(&namespace_pattern(&env.namespace))
    );
}

// ---------------------------------------------------------------------------------
// The chaos scenario (scripts/chaos --cluster).

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one chaos run counted.
#[derive(Debug, Default)]
struct ChaosReport {
    submitted: usize,
    acknowledged: usize,
    refused: usize,
    succeeded: usize,
    other_end: usize,
    gone: usize,
    unfinished: usize,
}

/// 20,000 jobs (`MCPQ_CHAOS_CLUSTER_JOBS`), 4 workers; once half of them are
/// acknowledged (the producer paces its chunks, workers run the first ones), the master holding the namespace is failed over (`CLUSTER FAILOVER` on its
/// replica) and then SIGKILLed; with `MCPQ_CHAOS_CLUSTER_KILL=crash` it is SIGKILLed
/// first and its replica promoted with `CLUSTER FAILOVER FORCE` (unacknowledged
/// replication is lost, as in a crash). The producer submits in chunks of 200 as `mcpq`
/// does (from the config file); a chunk is acknowledged when its submit returned Ok.
fn chaos(wait_replicas: u32) -> ChaosReport {
    let n = env_usize("MCPQ_CHAOS_CLUSTER_JOBS", 20_000);
    let crash = std::env::var("MCPQ_CHAOS_CLUSTER_KILL").is_ok_and(|v| v == "crash");
    let mut cluster = Cluster::start("chaos");
    let env = cluster_env(
        &cluster,
        "chaos-cluster",
        &format!("wait_replicas = {wait_replicas}\n"),
    );
    let workers = start_workers(&env, 4);
    let run_started = Instant::now();
    let config = Config::load(Some(&env.config)).expect("the config loads");
    let target = config.redis_target().expect("the config names a target");
    let jobs = Arc::new(echo_jobs(n));
    // The ids the submits answered (a fresh id is re-drawn in its partition).
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let submitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let (jobs, acknowledged, submitted, refused) = (
            jobs.clone(),
            acknowledged.clone(),
            submitted.clone(),
            refused.clone(),
        );
        let (namespace, settings) = (env.namespace.clone(), config.queue.clone());
        std::thread::spawn(move || {
            let rt = mcpq_tests::runtime();
            rt.block_on(async {
                let (conn, keys) = queue::open(&target, &namespace).await.expect("connect");
                let producer = Producer::new(conn, keys, settings)
                    .with_durability(target.settings.wait_replicas, target.settings.wait_timeout);
                for (c, chunk) in jobs.chunks(200).enumerate() {
                    submitted.fetch_add(chunk.len(), Ordering::SeqCst);
                    match producer.submit_many(chunk).await {
                        Ok(answers) => acknowledged
                            .lock()
                            .expect("lock")
                            .extend(answers.into_iter().map(|s| s.id)),
                        Err(e) => {
                            refused.fetch_add(chunk.len(), Ordering::SeqCst);
                            eprintln!("chaos: submit of chunk {c} failed: {e}");
                        }
                    }
                    // Paced, so that the failover lands while submits are in flight.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
    };
    // Mid-run: half the chunks acknowledged, the rest still to come, jobs running.
    assert!(
        wait_until_every(Duration::from_secs(300), Duration::from_millis(20), || {
            acknowledged.lock().expect("lock").len() >= n / 2 || submitter.is_finished()
        }),
        "half the jobs were not acknowledged within 300 s"
    );
    let tag = format!("{{{}}}", env.namespace);
    let old = cluster.master_of_key(&tag);
    let done_before = cluster.finished_count(&env.namespace);
    let acked_before = acknowledged.lock().expect("lock").len();
    let started = Instant::now();
    let new = if crash {
        cluster.crash_master(old)
    } else {
        let new = cluster.failover(old);
        cluster.kill(old);
        new
    };
    let failover_took = started.elapsed();
    eprintln!(
        "chaos: wait_replicas={wait_replicas}: master {old} {} at {acked_before} acknowledged, {done_before} finished; \
         {new} \
         serves the namespace {:.2} s later",
        if crash {
            "SIGKILLed, its replica forced over"
        } else {
            "failed over, then SIGKILLed"
        },
        failover_took.as_secs_f64()
    );
    submitter.join().expect("the submitter thread");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    // Wait for every acknowledged job, in order, 200 at a time (a job's record read
    // through the library, so it finds whatever partition holds it).
    let rt = mcpq_tests::runtime();
    let mut report = ChaosReport {
        submitted: submitted.load(Ordering::SeqCst),
        acknowledged: acknowledged.len(),
        refused: refused.load(Ordering::SeqCst),
        ..ChaosReport::default()
    };
    let deadline =
        Instant::now() + Duration::from_secs(env_usize("MCPQ_CHAOS_CLUSTER_WAIT", 300) as u64);
    rt.block_on(async {
        let (conn, keys) = queue::open(&config.redis_target().expect("target"), &env.namespace)
            .await
            .expect("cluster");
        let store = ResultStore::new(conn, keys);
        let mut next = 0;
        while next < acknowledged.len() {
            let chunk = &acknowledged[next..(next + 200).min(acknowledged.len())];
            let reads = chunk.iter().map(|id| {
                let store = store.clone();
                let id = id.clone();
                async move { store.status(&id).await.ok().flatten().map(|r| r.status) }
            });
            let statuses = futures::future::join_all(reads).await;
            let finished = statuses
                .iter()
                .take_while(|s| s.is_some_and(|s| s.is_finished()))
                .count();
            next += finished;
            if finished < chunk.len() {
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Count every acknowledged job's final state (after the deadline if it passed).
        for chunk in acknowledged.chunks(200) {
            let reads = chunk.iter().map(|id| {
                let store = store.clone();
                let id = id.clone();
                async move { store.status(&id).await.ok().flatten().map(|r| r.status) }
            });
            for status in futures::future::join_all(reads).await {
                match status {
                    None => report.gone += 1,
                    Some(JobStatus::Succeeded) => report.succeeded += 1,
                    Some(s) if s.is_finished() => report.other_end += 1,
                    Some(_) => report.unfinished += 1,
                }
            }
        }
    });
    let lost = report.gone + report.unfinished;
    let run_took = run_started.elapsed();
    println!(
        "chaos: cluster {} wait_replicas={wait_replicas}: submitted {}, acknowledged {}, refused \
         {}, succeeded {}, ended otherwise {}, lost {lost} (record gone {}, unfinished {}); \
         failover {:.2} s; all checked after {:.1} s ({:.0} jobs/s); keys per master {:?}",
        if crash { "crash" } else { "failover+kill" },
        report.submitted,
        report.acknowledged,
        report.refused,
        report.succeeded,
        report.other_end,
        report.gone,
        report.unfinished,
        failover_took.as_secs_f64(),
        run_took.as_secs_f64(),
        report.succeeded as f64 / run_took.as_secs_f64(),
        cluster.count_keys(&namespace_pattern(&env.namespace)),
    );
    if lost > 0 {
        eprintln!("chaos: worker logs:\n{}", logs(&workers));
    }
    drop(workers);
    report
}

fn check(report: &ChaosReport) {
    // A coordinated failover loses nothing Redis acknowledged, with or without WAIT.
    // After a crash, only `wait_replicas` can promise that: reported, not asserted.
    let crash = std::env::var("MCPQ_CHAOS_CLUSTER_KILL").is_ok_and(|v| v == "crash");
    if !crash {
        assert_eq!(
            report.gone + report.unfinished,
            0,
            "acknowledged jobs were lost: {report:?}"
        );
        assert_eq!(report.succeeded, report.acknowledged, "{report:?}");
    }
}

#[test]
#[ignore = "chaos: scripts/chaos --cluster"]
fn chaos_cluster_master_killed_mid_run_with_wait_replicas() {
    let report = chaos(1);
    check(&report);
}

#[test]
#[ignore = "chaos: scripts/chaos --cluster"]
fn chaos_cluster_master_killed_mid_run_without_wait_replicas() {
    let report = chaos(0);
    check(&report);
}
