//! 1,000 malformed entries written straight into the queue keys, with good jobs between
//! them: every bad one is dead-lettered with a clear error, every good one succeeds, and
//! the workers never restart.

use std::time::Duration;

use mcpq_tests::{call_job, wait_until_every, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, serial, CHAOS_QUEUE};

#[test]
fn malformed_queue_entries_are_dead_lettered_and_good_jobs_between_them_succeed() {
    let _turn = serial();
    let redis = PrivateRedis::start("garbage");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-garbage",
        &format!("{CHAOS_QUEUE}max_payload = 1048576\n"),
        "[worker]\nconcurrency = 4\npoll_interval = \"20ms\"\n",
        "",
    );
    let mut workers = [env.worker(&[]), env.worker(&[])];
    let pids: Vec<u32> = workers.iter().map(|w| w.pid()).collect();
    let p = format!("{{{}}}", env.namespace);
    let mut conn = env.redis();
    let huge = "x".repeat(2 * 1024 * 1024);
    let mut good = Vec::new();
    let n_bad = 1000;
    let mut huge_made = 0;
    for i in 0..n_bad {
        if i % 10 == 0 {
            let job = call_job("echo", "echo", json!({"text": format!("good {i}")}));
            env.submit_jobs(std::slice::from_ref(&job));
            good.push(job.id.to_string());
        }
        let id = ulid::Ulid::generate().to_string();
        let huge_one = i % 6 == 4 && huge_made < 10;
        huge_made += usize::from(huge_one);
        let payload = match i % 6 {
            // No record at all, just a string in the queue.
            0 => {
                let entry = format!("garbage entry {i} \u{1} with spaces");
                let _: () = redis::cmd("LPUSH").arg(format!("{p}:ready:normal")).arg(entry).query(&mut conn).expect("LPUSH");
                continue;
            }
            1 => format!("{{not json {i}"),
            2 => json!({"version": 99, "kind": "agent", "payload": {"steps": []}}).to_string(),
            3 => json!({"kind": "agent", "payload": {"steps": "rm -rf /"}}).to_string(),
            4 if huge_one => format!(r#"{{"kind":"agent","payload":{{"steps":[{{"server":"echo","tool":"echo","arguments":{{"text":"{huge}"}}}}]}}}}"#),
            4 => json!({"kind": "agent", "payload": {"steps": [{"server": "/bin/sh", "tool": "-c"}]}}).to_string(),
            _ => json!({"kind": 42, "payload": null, "options": {"max_attempts": "many"}}).to_string(),
        };
        let _: () = redis::pipe()
            .hset_multiple(
                format!("{p}:job:{id}"),
                &[
                    ("status", "queued"),
                    ("payload", payload.as_str()),
                    ("kind", "agent"),
                    ("priority", "normal"),
                    ("max_attempts", "3"),
                ],
            )
            .lpush(format!("{p}:ready:normal"), &id)
            .query(&mut conn)
            .expect("write");
    }
    let drained = wait_until_every(Duration::from_secs(120), Duration::from_millis(200), || {
        env.queue_depth() == 0
    });
    assert!(drained, "{} entries left", env.queue_depth());
    let counts = env.status_counts();
    assert_eq!(counts.get("dead"), Some(&n_bad), "{counts:?}");
    assert_eq!(counts.get("succeeded"), Some(&good.len()), "{counts:?}");
    let out = env.mcpq(&["dlq", "list", "--limit", "5000", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["type"] == "dead")
        .collect();
    assert_eq!(lines.len(), n_bad);
    let mut kinds = std::collections::BTreeMap::new();
    for l in &lines {
        let kind = l["error_kind"].as_str().unwrap_or("").to_string();
        assert!(
            matches!(kind.as_str(), "invalid_job" | "unknown_server"),
            "{l}"
        );
        assert!(!l["error"].as_str().unwrap_or("").is_empty(), "{l}");
        assert!(l["attempts"].as_u64().unwrap_or(0) <= 1, "not retried: {l}");
        *kinds.entry(kind).or_insert(0) += 1;
    }
    let huge_errors = lines
        .iter()
        .filter(|l| {
            l["error"]
                .as_str()
                .unwrap_or("")
                .contains("queue.max_payload")
        })
        .count();
    assert_eq!(huge_errors, 10, "the 2 MiB payloads are refused by size");
    // A dead entry with no record behind it cannot be requeued, and says why.
    let garbage = lines
        .iter()
        .find(|l| l["kind"] == "unknown")
        .and_then(|l| l["id"].as_str())
        .expect("a no-record entry");
    let out = env.mcpq(&["dlq", "requeue", garbage]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no payload"), "{stderr}");
    for w in &mut workers {
        assert!(
            w.child.try_wait().expect("try_wait").is_none(),
            "a worker died:\n{}",
            w.log_text()
        );
        assert!(!w.log_text().contains("panicked"), "{}", w.log_text());
    }
    assert_eq!(pids, workers.iter().map(|w| w.pid()).collect::<Vec<_>>());
    eprintln!("chaos: {n_bad} malformed entries dead-lettered {kinds:?}; {} good jobs between them succeeded", good.len());
    drop(workers);
    assert_no_leftovers(&env);
}
