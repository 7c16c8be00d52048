//! A job that kills every worker that runs it, among good jobs running beside it: its
//! lost leases are rescues, not failed attempts, so it is re-queued `queue.max_rescues`
//! times and dead at the next loss, with every lost attempt in its history. The good
//! jobs that were running beside it when it first killed a worker are suspects too, but
//! each runs alone next, so the killer never takes them down again: all succeed.

use std::time::{Duration, Instant};

use mcpq_tests::{call_job, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, serial, CHAOS_QUEUE};

#[test]
fn a_job_that_kills_its_worker_every_time_ends_dead_after_max_rescues() {
    let _turn = serial();
    let redis = PrivateRedis::start("killer");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-killer",
        &format!("{CHAOS_QUEUE}max_rescues = 2\n"),
        "[worker]\nconcurrency = 4\npoll_interval = \"20ms\"\n",
        "",
    );
    let killer = call_job("echo", "kill_parent", json!({}));
    // Slow enough to be running beside the killer when it strikes.
    let good: Vec<_> = (0..12)
        .map(|i| {
            call_job(
                "echo",
                "sleep_ms",
                json!({"ms": if i < 3 { 3000 } else { 50 }}),
            )
        })
        .collect();
    env.submit_jobs(&good[..3]);
    env.submit_jobs(std::slice::from_ref(&killer));
    env.submit_jobs(&good[3..]);
    let killer_id = killer.id.to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut deaths = 0;
    let mut worker = env.worker(&[]);
    loop {
        let status = env.status_json(&killer_id)["status"].clone();
        if status == "dead" || Instant::now() > deadline {
            break;
        }
        if worker.wait_exit(Duration::from_millis(100)).is_some() {
            deaths += 1;
            // A supervisor (systemd, Kubernetes) would start it again.
            worker = env.worker(&[]);
        }
    }
    let s = env.status_json(&killer_id);
    assert_eq!(s["status"], "dead", "{s}");
    assert_eq!(s["error"]["kind"], "lease_expired", "{s}");
    let message = s["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("queue.max_rescues"), "{message}");
    assert_eq!(s["rescues"], 3, "two rescues, dead at the third loss: {s}");
    assert_eq!(
        s["failures"], 0,
        "a lost worker is not a failed attempt: {s}"
    );
    let lost = s["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|a| a["outcome"] == "lease_expired")
        .count();
    assert_eq!(lost, 3, "{s}");
    assert_eq!(deaths, 3, "it killed one worker per run");
    let mut rescued_neighbours = 0;
    for job in &good {
        let (code, v) = env.wait_json(&job.id.to_string());
        assert_eq!(code, Some(0), "{v}");
        let s = env.status_json(&job.id.to_string());
        assert!(
            s["rescues"].as_u64().unwrap_or(0) <= 1,
            "charged once at most: {s}"
        );
        rescued_neighbours += usize::from(s["rescues"] == 1);
    }
    assert!(
        rescued_neighbours >= 1,
        "some good jobs ran beside the killer when it struck"
    );
    eprintln!("chaos: a worker-killing job took {deaths} workers down, then was dead-lettered [lease_expired]; {rescued_neighbours} good jobs running beside it were rescued once and all 12 succeeded");
    drop(worker);
    assert_no_leftovers(&env);
}
