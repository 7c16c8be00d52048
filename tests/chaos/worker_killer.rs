//! A job that kills every worker that runs it: its lost leases are rescues, not failed
//! attempts, so it is re-queued `queue.max_rescues` times and dead at the next loss,
//! with every lost attempt in its history; the jobs queued behind it succeed.

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
        // One job at a time: nothing else runs beside the killer when a worker dies.
        "[worker]\nconcurrency = 1\npoll_interval = \"20ms\"\n",
        "",
    );
    let killer = call_job("echo", "kill_parent", json!({}));
    let good: Vec<_> = (0..5)
        .map(|i| call_job("echo", "echo", json!({"text": format!("after {i}")})))
        .collect();
    env.submit_jobs(std::slice::from_ref(&killer));
    env.submit_jobs(&good);
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
    for job in &good {
        let (code, v) = env.wait_json(&job.id.to_string());
        assert_eq!(code, Some(0), "{v}");
    }
    eprintln!("chaos: a worker-killing job took {deaths} workers down, then was dead-lettered [lease_expired]; the 5 jobs behind it succeeded");
    drop(worker);
    assert_no_leftovers(&env);
}
