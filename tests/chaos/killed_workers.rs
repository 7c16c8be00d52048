//! SIGKILL a worker at random moments while jobs run, restart it, and count: every job
//! must succeed, none lost; duplicates are expected (at least once) and reported.

use std::time::{Duration, Instant};

use mcpq_tests::{call_job, wait_until_every, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, long, marks, serial, CHAOS_QUEUE};

/// `(id, worker)` of every job holding a lease right now.
fn leased(env: &TestEnv) -> Vec<(String, String)> {
    let p = format!("{{{}}}", env.namespace);
    let mut redis = env.redis();
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{p}:leases"))
        .arg(0)
        .arg(-1)
        .query(&mut redis)
        .unwrap_or_default();
    let mut out = Vec::new();
    for id in ids {
        let worker: Option<String> = redis::cmd("HGET")
            .arg(format!("{p}:job:{id}"))
            .arg("worker")
            .query(&mut redis)
            .unwrap_or(None);
        out.push((id, worker.unwrap_or_default()));
    }
    out
}

fn redis_now_ms(env: &TestEnv) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(&mut env.redis()).expect("TIME");
    s * 1000 + us / 1000
}

#[test]
fn killing_workers_loses_no_job() {
    let _turn = serial();
    let redis = PrivateRedis::start("kill");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-kill",
        CHAOS_QUEUE,
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "",
    );
    let (n, kills) = if long() { (20_000, 25) } else { (2_000, 5) };
    let marks_path = env.dir.join("marks.log");
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            let ms = if i % 5 == 0 { 200 } else { 0 };
            call_job(
                "echo",
                "mark",
                json!({"path": marks_path, "tag": format!("j{i}"), "ms": ms}),
            )
        })
        .collect();
    let names = |slot: usize, gen: usize| format!("chaos-{}-{gen}", ["a", "b"][slot]);
    let mut workers = [
        env.worker(&["--name", &names(0, 0)]),
        env.worker(&["--name", &names(1, 0)]),
    ];
    for w in &workers {
        assert!(
            w.wait_log("worker started", Duration::from_secs(10)),
            "{}",
            w.log_text()
        );
    }
    let started = Instant::now();
    env.submit_jobs(&jobs);
    // (time of the kill in Redis's clock, the killed worker's name)
    let mut killed: Vec<(u64, String)> = Vec::new();
    let mut rng = fastrand::Rng::new();
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        let slot = k % 2;
        let name = names(slot, k / 2);
        let running_there = leased(&env).iter().filter(|(_, w)| *w == name).count();
        workers[slot].signal(libc::SIGKILL);
        workers[slot]
            .wait_exit(Duration::from_secs(5))
            .expect("SIGKILL ends the worker");
        killed.push((redis_now_ms(&env), name.clone()));
        eprintln!("kill {}: {name} with {running_there} job(s) running", k + 1);
        workers[slot] = env.worker(&["--name", &names(slot, k / 2 + 1)]);
    }
    let drained = wait_until_every(Duration::from_secs(240), Duration::from_millis(200), || {
        env.queue_depth() == 0
    });
    let took = started.elapsed();
    let counts = env.status_counts();
    assert!(
        drained,
        "jobs left in the queue: {}; {counts:?}",
        env.queue_depth()
    );
    assert_eq!(
        counts.get("succeeded"),
        Some(&n),
        "every job succeeded: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), n, "{counts:?}");

    // Every job ran at least once; some ran twice (they were running when killed).
    let seen = marks(&marks_path);
    let missing: Vec<usize> = (0..n)
        .filter(|i| !seen.contains_key(&format!("j{i}")))
        .collect();
    assert!(missing.is_empty(), "jobs that never ran: {missing:?}");
    let duplicates: usize = seen.values().map(|c| c - 1).sum();

    // Recovery: each job of a killed worker was re-queued within lease (2 s) + 5 s.
    let mut redis = env.redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}}}:job:*:attempts", env.namespace))
        .query(&mut redis)
        .unwrap_or_default();
    let mut rescues: Vec<(String, u64)> = Vec::new();
    // Most lost leases of one job: a kill is not the job's failure, so none may die of
    // it while this stays within queue.max_rescues (default 5).
    let mut most_rescues = 0;
    for key in keys {
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query(&mut redis)
            .unwrap_or_default();
        let lost = entries
            .iter()
            .filter(|e| e.contains("\"outcome\":\"lease_expired\""))
            .count();
        most_rescues = most_rescues.max(lost);
        for e in entries {
            let v: serde_json::Value = serde_json::from_str(&e).expect("attempt record");
            if v["outcome"] == "lease_expired" {
                let worker = v["worker"].as_str().unwrap_or("").to_string();
                rescues.push((worker, v["ended_at"].as_u64().unwrap_or(0)));
            }
        }
    }
    let recoveries: Vec<u64> = rescues
        .iter()
        .filter_map(|(worker, ended)| {
            let (at, _) = killed.iter().find(|(_, name)| name == worker)?;
            Some(ended.saturating_sub(*at))
        })
        .collect();
    assert_eq!(
        recoveries.len(),
        rescues.len(),
        "only killed workers lose leases: {rescues:?}"
    );
    let worst = recoveries.iter().copied().max().unwrap_or(0);
    eprintln!(
        "chaos: {n} jobs, {kills} SIGKILLs in {took:?}: 0 lost, {duplicates} duplicate execution(s), {} job(s) rescued (at most {most_rescues} times one job), slowest rescue {worst} ms after the kill (limit 7000)",
        recoveries.len()
    );
    assert!(
        worst <= 7_000,
        "a dead worker's job came back {worst} ms after the kill"
    );
    drop(workers);
    assert_no_leftovers(&env);
}
