//! 100,000 jobs through `mcpq batch submit` and `mcpq batch wait`: drained, with bounded
//! memory on both sides (the producer streams the file; each worker runs one job per
//! slot). (apalis-redis 1.0 stopped at ~8,000 due jobs: "too many results to unpack".)

use std::io::Write;
use std::time::{Duration, Instant};

use mcpq_tests::{text, TestEnv};
use serde_json::{json, Value};

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, long, serial, CHAOS_QUEUE};

/// Resident memory of a process in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    mcpq_tests::proc_memory(pid, "VmRSS").unwrap_or(0) / 1024
}

/// The producer's bound for a 100k-line file of 1 KB jobs (issue 13: under 100 MB).
const MAX_PRODUCER_RSS: u64 = 100 << 20;

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
    let n: u64 = if long() { 300_000 } else { 100_000 };
    // One job per line, about 1 KB each.
    let file = env.dir.join("jobs.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("jobs file"));
        let pad = "x".repeat(900);
        for i in 0..n {
            let job = json!({"kind": "agent", "payload": {
                "steps": [{"server": "echo", "tool": "add", "arguments": {"a": i, "b": 1}}],
                "input": {"pad": pad}}});
            writeln!(out, "{job}").expect("write job");
        }
    }
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
    let file_arg = file.to_str().expect("utf-8 path");
    let (out, submit_peak) = env.mcpq_measured(&["batch", "submit", file_arg, "--json"]);
    let pushed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["enqueued"], n);
    let id = summary["id"].as_str().expect("batch id").to_string();

    // Worker memory, sampled while `batch wait` follows the batch.
    let sampling = std::sync::atomic::AtomicBool::new(true);
    let (peak, (out, wait_peak)) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = baseline.clone();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, w) in workers.iter().enumerate() {
                    peak[i] = peak[i].max(rss_kib(w.pid()));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
        });
        let waited = env.mcpq_measured(&["batch", "wait", &id, "--timeout", "400s", "--json"]);
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        (sampler.join().expect("sampler"), waited)
    });
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last: Value = text(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a progress object");
    assert_eq!(last["succeeded"], n, "{last}");
    assert_eq!(last["finished"], true, "{last}");
    let counts = env.status_counts();
    assert_eq!(counts.get("succeeded"), Some(&(n as usize)), "{counts:?}");
    eprintln!(
        "chaos: {n} jobs (1 KB each) submitted by `mcpq batch submit` in {pushed:?} ({:.0} jobs/s, producer peak RSS {} KiB), \
         drained in {took:?} ({:.0} jobs/s; `batch wait` peak RSS {} KiB); worker RSS {baseline:?} KiB at start, peak {peak:?} KiB",
        n as f64 / pushed.as_secs_f64(),
        submit_peak / 1024,
        n as f64 / took.as_secs_f64(),
        wait_peak / 1024,
    );
    assert!(
        submit_peak < MAX_PRODUCER_RSS && wait_peak < MAX_PRODUCER_RSS,
        "producer peak RSS: submit {submit_peak} B, wait {wait_peak} B (bound {MAX_PRODUCER_RSS})"
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
