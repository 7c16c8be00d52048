//! Entries that break a fetch script, mixed into batches of good jobs: each bad entry is
//! judged alone and dead-lettered with a clear error, readable by `mcpq dlq show` and
//! `mcpq status`; the good jobs fetched in the same batches run once each (no lease
//! expires under a live worker); a payload claiming another job's id cannot touch that
//! job; the workers never restart and stay small.

use std::time::Duration;

use mcpq_tests::{call_job, wait_until_every, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, assert_survived_small, serial, CHAOS_QUEUE};

/// The kinds of poison written straight into Redis, and what `mcpq dlq show` must say.
const POISON: [(&str, &str); 10] = [
    ("not_utf8", "not UTF-8"),
    (
        "max_attempts_not_utf8",
        "max_attempts counter is not a number",
    ),
    ("attempt_overflow", "attempt counter is not a number"),
    ("string_record", "not a hash"),
    ("attempts_hash", "attempt history is a hash"),
    ("bogus_priority", "priority \"bogus\""),
    ("bogus_retry_priority", "priority \"urgent\""),
    ("attempt_not_number", "attempt counter is not a number"),
    ("no_status", "no status"),
    ("forged_id", "but it was queued as job"),
];

#[test]
fn poison_entries_are_dead_lettered_alone_and_the_good_jobs_of_their_batch_run_once() {
    let _turn = serial();
    let redis = PrivateRedis::start("poison");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-poison",
        CHAOS_QUEUE,
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "",
    );
    let p = format!("{{{}}}", env.namespace);
    let mut conn = env.redis();
    // A slow good job whose id the forged entries claim.
    let victim = call_job("echo", "sleep_ms", json!({"ms": 1500}));
    env.submit_jobs(std::slice::from_ref(&victim));
    let victim_id = victim.id.to_string();
    let mut good = Vec::new();
    let mut poison: Vec<(String, &str, &str)> = Vec::new();
    for round in 0..5 {
        for (kind, says) in POISON {
            let job = call_job(
                "echo",
                "echo",
                json!({"text": format!("good {round} {kind}")}),
            );
            env.submit_jobs(std::slice::from_ref(&job));
            good.push(job.id.to_string());
            let id = ulid::Ulid::generate().to_string();
            let key = format!("{p}:job:{id}");
            let fine = call_job("echo", "echo", json!({"text": "poison"}));
            let mut envelope = fine.to_value();
            envelope["id"] = json!(id);
            let payload = envelope.to_string();
            let record = |priority: &str, status: &str| {
                vec![
                    ("status", status.to_string()),
                    ("payload", payload.clone()),
                    ("kind", "agent".to_string()),
                    ("priority", priority.to_string()),
                    ("max_attempts", "3".to_string()),
                ]
            };
            let mut pipe = redis::pipe();
            match kind {
                "not_utf8" => {
                    let mut bytes = payload.clone().into_bytes();
                    bytes.extend_from_slice(b"\xff\xfe");
                    pipe.hset_multiple(&key, &record("normal", "queued"))
                        .hset(&key, "payload", bytes);
                }
                "string_record" => {
                    pipe.set(&key, "I am not a job");
                }
                "attempts_hash" => {
                    pipe.hset_multiple(&key, &record("normal", "queued")).hset(
                        format!("{key}:attempts"),
                        "x",
                        "y",
                    );
                }
                "bogus_priority" => {
                    pipe.hset_multiple(&key, &record("bogus", "queued"));
                }
                "bogus_retry_priority" => {
                    // A failed job due for its retry, whose priority names no queue.
                    pipe.hset_multiple(&key, &record("urgent", "failed")).zadd(
                        format!("{p}:scheduled"),
                        &id,
                        0,
                    );
                }
                "max_attempts_not_utf8" => {
                    pipe.hset_multiple(&key, &record("normal", "queued")).hset(
                        &key,
                        "max_attempts",
                        b"\xff\xfe".as_slice(),
                    );
                }
                "attempt_overflow" => {
                    pipe.hset_multiple(&key, &record("normal", "queued")).hset(
                        &key,
                        "attempt",
                        "9223372036854775807",
                    );
                }
                "attempt_not_number" => {
                    pipe.hset_multiple(&key, &record("normal", "queued"))
                        .hset(&key, "attempt", "many");
                }
                "no_status" => {
                    pipe.hset(&key, "payload", &payload);
                }
                _ => {
                    // forged_id: a well-formed entry whose payload claims the victim's id.
                    let mut forged = envelope.clone();
                    forged["id"] = json!(victim_id);
                    forged["payload"]["steps"][0]["arguments"]["text"] = json!("FORGED");
                    pipe.hset_multiple(&key, &record("normal", "queued")).hset(
                        &key,
                        "payload",
                        forged.to_string(),
                    );
                }
            }
            if kind != "bogus_retry_priority" {
                pipe.lpush(format!("{p}:ready:normal"), &id);
            }
            let _: () = pipe.query(&mut conn).expect("write poison");
            poison.push((id, kind, says));
        }
    }
    // An entry that names another job's keys ("ID:attempts") is buried under a name of
    // its own, never touching that job's history.
    let _: () = redis::cmd("LPUSH")
        .arg(format!("{p}:ready:normal"))
        .arg(format!("{victim_id}:attempts"))
        .query(&mut conn)
        .expect("LPUSH");
    // A job whose record someone scribbles on while it runs: dead-lettered when it
    // stores its outcome, with no half-done write.
    let late = call_job("echo", "sleep_ms", json!({"ms": 1500}));
    env.submit_jobs(std::slice::from_ref(&late));
    let late_id = late.id.to_string();
    // Workers start after everything is queued, so that batches mix good and bad.
    let mut workers = [env.worker(&[]), env.worker(&[])];
    let pids: Vec<u32> = workers.iter().map(|w| w.pid()).collect();
    assert!(
        mcpq_tests::wait_until(Duration::from_secs(30), || env.status_json(&late_id)
            ["status"]
            == "running"),
        "the late job never started"
    );
    let _: () = redis::cmd("HSET")
        .arg(format!("{p}:job:{late_id}"))
        .arg("failures")
        .arg("scribbled")
        .query(&mut conn)
        .expect("HSET");
    // Good jobs, the victim, the late job, the poison, the colon entry.
    let total = good.len() + 1 + 1 + poison.len() + 1;
    let drained = wait_until_every(Duration::from_secs(60), Duration::from_millis(100), || {
        env.queue_depth() == 0 && env.finished_count() >= total
    });
    let counts = env.status_counts();
    assert!(drained, "{} entries left; {counts:?}", env.queue_depth());

    // Every good job ran exactly once: one attempt, succeeded, no lease expired.
    for id in good.iter().chain(std::iter::once(&victim_id)) {
        let s = env.status_json(id);
        assert_eq!(s["status"], "succeeded", "{s}");
        let history = s["history"].as_array().expect("history");
        assert_eq!(history.len(), 1, "one attempt, no lease lost: {s}");
    }
    // The victim's result is its own, not the forger's.
    let out = env.mcpq(&["result", &victim_id, "--json"]);
    let result = String::from_utf8_lossy(&out.stdout);
    assert!(!result.contains("FORGED"), "{result}");

    // Every poison entry is dead, with an error that says what is wrong, and both
    // `mcpq dlq show` and `mcpq status` read it.
    for (id, kind, says) in &poison {
        let out = env.mcpq(&["dlq", "show", id, "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{kind}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("dead_job JSON");
        assert_eq!(v["status"], "dead", "{kind}: {v}");
        assert_eq!(v["error"]["kind"], "invalid_job", "{kind}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{kind}: {message}");
        let out = env.mcpq(&["status", id]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = env.status_json(&late_id);
    assert_eq!(s["status"], "dead", "{s}");
    assert_eq!(s["error"]["kind"], "invalid_job", "{s}");
    let message = s["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("stored its outcome"), "{message}");
    // The colon entry was buried under its own hashed name; the victim's history was
    // not touched (a first-attempt success keeps no history list: no key, or a list)
    // and its record shows its one attempt.
    let victim_history: String = redis::cmd("TYPE")
        .arg(format!("{p}:job:{victim_id}:attempts"))
        .query(&mut conn)
        .expect("TYPE");
    assert!(
        victim_history == "none" || victim_history == "list",
        "{victim_history}"
    );
    let victim = env.status_json(&victim_id);
    assert_eq!(victim["status"], "succeeded", "{victim}");
    assert_eq!(
        victim["history"].as_array().map(Vec::len),
        Some(1),
        "{victim}"
    );
    // The listing holds them all.
    let out = env.mcpq(&["dlq", "list", "--limit", "1000", "--json"]);
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"type\":\"dead\""))
        .map(str::to_string)
        .collect();
    assert_eq!(listed.len(), poison.len() + 2, "{counts:?}");
    assert_eq!(
        listed
            .iter()
            .filter(|l| l.contains("\"id\":\"invalid-"))
            .count(),
        1,
        "the colon entry, under its hashed name"
    );

    let peaks: Vec<u64> = workers.iter_mut().map(assert_survived_small).collect();
    assert_eq!(pids, workers.iter().map(|w| w.pid()).collect::<Vec<_>>());
    let peak = peaks.iter().copied().max().unwrap_or(0);
    eprintln!(
        "chaos: {} poison entries dead-lettered alone, {} good jobs each ran once; worker peak RSS {:.1} MB",
        poison.len(),
        good.len() + 1,
        peak as f64 / 1048576.0
    );
    drop(workers);
    assert_no_leftovers(&env);
}
