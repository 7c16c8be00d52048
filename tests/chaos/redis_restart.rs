//! Restart Redis (AOF on) in the middle of a run: workers keep running, reconnect with
//! backoff, and every job finishes.

use std::time::{Duration, Instant};

use mcpq_tests::{call_job, wait_until_every, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, long, marks, serial, CHAOS_QUEUE};

#[test]
fn workers_survive_a_redis_restart() {
    let _turn = serial();
    let mut redis = PrivateRedis::start("restart");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-restart",
        CHAOS_QUEUE,
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "",
    );
    let (n, restarts) = if long() { (5_000, 5) } else { (800, 1) };
    let marks_path = env.dir.join("marks.log");
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            call_job(
                "echo",
                "mark",
                json!({"path": marks_path, "tag": format!("j{i}"), "ms": 50}),
            )
        })
        .collect();
    let mut workers = [env.worker(&[]), env.worker(&[])];
    for w in &workers {
        assert!(
            w.wait_log("worker started", Duration::from_secs(10)),
            "{}",
            w.log_text()
        );
    }
    env.submit_jobs(&jobs);
    let started = Instant::now();
    for _ in 0..restarts {
        std::thread::sleep(Duration::from_millis(800));
        redis.restart(Duration::from_millis(500));
    }
    let drained = wait_until_every(Duration::from_secs(120), Duration::from_millis(200), || {
        env.queue_depth() == 0
    });
    let counts = env.status_counts();
    for w in &mut workers {
        assert!(
            w.child.try_wait().expect("try_wait").is_none(),
            "a worker exited when Redis restarted:\n{}",
            w.log_text()
        );
    }
    assert!(drained, "jobs left: {}; {counts:?}", env.queue_depth());
    assert_eq!(counts.get("succeeded"), Some(&n), "{counts:?}");
    let seen = marks(&marks_path);
    assert_eq!(seen.len(), n, "every job ran");
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    let noticed = workers
        .iter()
        .filter(|w| w.log_text().contains("retrying"))
        .count();
    eprintln!(
        "chaos: {n} jobs, {restarts} Redis restart(s) in {:?}: 0 lost, {duplicates} duplicate execution(s); {noticed} of 2 workers logged the outage",
        started.elapsed()
    );
    drop(workers);
    assert_no_leftovers(&env);
}
