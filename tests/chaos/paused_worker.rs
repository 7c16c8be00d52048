//! A worker paused (SIGSTOP) past its lease: another worker re-runs the job; when the
//! paused one resumes, its late result is rejected, and the record shows exactly one
//! attempt's outcome.

use std::time::Duration;

use mcpq_tests::{wait_until, TestEnv};

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, marks, serial, CHAOS_QUEUE};

#[test]
fn a_paused_worker_loses_its_lease_and_its_late_result_is_rejected() {
    let _turn = serial();
    let redis = PrivateRedis::start("pause");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-pause",
        CHAOS_QUEUE,
        "[worker]\nconcurrency = 1\n",
        "",
    );
    let marks_path = env.dir.join("marks.log");
    let paused = env.worker(&["--name", "chaos-paused"]);
    assert!(paused.wait_log("worker started", Duration::from_secs(10)));
    let args = serde_json::json!({"path": marks_path, "tag": "slow", "ms": 3000}).to_string();
    let id = env.submit_call("echo", "mark", &args, &[]);
    // Paused only once the tool really runs (its mark is written): a worker stopped
    // between the lease and the call would never run attempt 1's tool at all.
    assert!(wait_until(Duration::from_secs(10), || {
        let s = env.status_json(&id);
        s["status"] == "running"
            && s["worker"] == "chaos-paused"
            && marks(&marks_path).get("slow") == Some(&1)
    }));
    paused.signal(libc::SIGSTOP);
    let rescuer = env.worker(&["--name", "chaos-rescuer"]);
    // lease 2 s + rescue pass 1 s: attempt 2 starts on the rescuer.
    assert!(
        wait_until(Duration::from_secs(10), || env.status_json(&id)["attempts"]
            == 2),
        "the job was not re-run: {}\n{}",
        env.status_json(&id),
        rescuer.log_text()
    );
    paused.signal(libc::SIGCONT);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    // The paused worker notices: its lease is gone, its outcome is dropped or rejected.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = paused.log_text();
            log.contains("late outcome rejected") || log.contains("lease lost")
        }),
        "{}",
        paused.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let s = env.status_json(&id);
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["worker"], "chaos-rescuer", "{s}");
    let history = s["history"].as_array().expect("history");
    let outcomes: Vec<(&str, &str)> = history
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap_or(""),
                a["worker"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("lease_expired", "chaos-paused"),
            ("succeeded", "chaos-rescuer")
        ],
        "{s}"
    );
    assert_eq!(
        marks(&marks_path).get("slow"),
        Some(&2),
        "both attempts ran the tool"
    );
    eprintln!(
        "chaos: paused worker: {} late write(s) rejected by fencing; 1 duplicate execution",
        s["stale_writes"]
    );
    drop(paused);
    drop(rescuer);
    assert_no_leftovers(&env);
}
