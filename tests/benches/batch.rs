//! `mcpq batch submit` of N no-op-sized jobs (release build; run it with `scripts/bench`):
//! enqueue jobs/s and the producer's peak RSS, side by side in one run with the anchor,
//! the library's `Producer::submit_many` of the same jobs already in memory (what a Rust
//! service would do); then the drain by two `mcpq-worker`s started afterwards (jobs/s,
//! timed by `mcpq batch wait`) and their peak RSS. Each job is one `add` call on a warm
//! pooled session of the fixture. `BENCH_BATCH` (default 100000) sets N.
//!
//! Not a test: nothing is asserted but that every job succeeded.

use std::io::Write;
use std::time::{Duration, Instant};

use mcpq_shared::job::Job;
use mcpq_tests::{text, TestEnv};
use serde_json::{json, Value};

fn job_line(i: usize) -> Value {
    json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tool": "add", "arguments": {"a": i, "b": 1}}]}})
}

fn main() {
    let n: usize = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let env = TestEnv::new(
        "bench-batch",
        "[worker]\nconcurrency = 16\npoll_interval = \"20ms\"\n",
    );
    let file = env.dir.join("jobs.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("jobs file"));
        for i in 0..n {
            writeln!(out, "{}", job_line(i)).expect("write");
        }
    }
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);

    // Anchor: the same jobs from memory through the library (another namespace).
    let anchor_env = TestEnv::new("bench-batch-anchor", "");
    let jobs: Vec<Job> = (0..n)
        .map(|i| Job::from_value(job_line(i)).expect("job"))
        .collect();
    let started = Instant::now();
    anchor_env.submit_jobs(&jobs);
    let anchor = started.elapsed();
    drop(jobs);

    let started = Instant::now();
    let (out, producer_peak) =
        env.mcpq_measured(&["batch", "submit", file.to_str().expect("utf-8"), "--json"]);
    let submit = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    let id = summary["id"].as_str().expect("id").to_string();

    let workers = [env.worker(&[]), env.worker(&[])];
    let started = Instant::now();
    let (out, wait_peak) = env.mcpq_measured(&["batch", "wait", &id, "--timeout", "30m"]);
    let drain = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let worker_peaks: Vec<u64> = workers
        .iter()
        .map(|w| w.peak_rss().unwrap_or(0) >> 20)
        .collect();

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "batch: {n} jobs ({:.1} MB of JSON lines)",
        bytes as f64 / 1e6
    );
    println!(
        "anchor  Producer::submit_many from memory : {:>8.0} jobs/s",
        rate(anchor)
    );
    println!(
        "mcpq    batch submit (2 passes, streamed) : {:>8.0} jobs/s   ratio {:.2}   peak RSS {} MiB",
        rate(submit),
        rate(submit) / rate(anchor),
        producer_peak >> 20
    );
    println!(
        "drain   2 workers x 16, pooled fixture    : {:>8.0} jobs/s   worker peak RSS {worker_peaks:?} MiB, batch wait {} MiB",
        rate(drain),
        wait_peak >> 20
    );
    println!(
        "{}",
        json!({"type": "bench", "name": "batch", "jobs": n, "file_bytes": bytes,
               "anchor_jobs_per_s": rate(anchor), "submit_jobs_per_s": rate(submit),
               "drain_jobs_per_s": rate(drain), "producer_peak_rss": producer_peak,
               "wait_peak_rss": wait_peak, "worker_peak_rss_mib": worker_peaks})
    );
    drop(workers);
}
