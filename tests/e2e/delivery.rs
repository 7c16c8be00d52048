//! Delivery guarantees against the shared Redis (one namespace per test): retries, dead
//! letters, fencing, idempotency, cancellation, retention, priorities. Each test is named
//! in docs/GUARANTEES.md; the crash, restart and scale scenarios are in tests/chaos/.

use std::time::{Duration, Instant};

use mcpq_shared::job::Priority;
use mcpq_shared::queue::fetch::{fetch, fetch_picked};
use mcpq_shared::queue::finish::{finish, Finished, Outcome};
use mcpq_shared::queue::rescue::rescue_once;
use mcpq_shared::queue::{self, JobStatus, Keys, Producer, QueueSettings, ResultStore};
use mcpq_tests::{
    call_job, connect, group_members, runtime, text, wait_until, TestEnv, TEST_QUEUE,
};
use serde_json::json;

#[test]
fn a_tool_error_is_retried_then_dead_with_every_attempt() {
    let env = TestEnv::new("retry-dead", "");
    let worker = env.worker(&[]);
    let id = env.submit_call(
        "echo",
        "fail",
        r#"{"message":"quota exceeded"}"#,
        &["--max-attempts", "3"],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["status"], "dead");
    let s = env.status_json(&id);
    assert_eq!(s["attempts"], 3, "{s}");
    assert_eq!(s["failures"], 3, "{s}");
    let history = s["history"].as_array().expect("history");
    let outcomes: Vec<&str> = history
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "dead"], "{s}");
    for (i, a) in history.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_eq!(a["error"]["kind"], "tool_error");
        assert!(a["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("quota exceeded"));
        assert!(a["ended_at"].as_u64() >= a["started_at"].as_u64());
    }
    // The waits between attempts were backoffs within [0, cap] (cap 200 ms in tests).
    let gap =
        history[1]["started_at"].as_u64().expect("t") - history[0]["ended_at"].as_u64().expect("t");
    assert!(gap < 5_000, "backoff {gap} ms");
    // A permanent error is not retried: a template that fails at run time (the step
    // exists, its result has no such field) fails the same way every time.
    let plan = json!({"kind": "agent", "payload": {"steps": [
        {"name": "a", "server": "echo", "tool": "echo", "arguments": {"text": "x"}},
        {"server": "echo", "tool": "echo", "arguments": {"text": "{{ steps.a.structured.nope }}"}}
    ]}});
    let out = env.mcpq_with_stdin(&["submit", "-"], plan.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "template_error");
    let s = env.status_json(&id);
    assert_eq!(
        (s["status"].clone(), s["attempts"].clone()),
        (json!("dead"), json!(1)),
        "not retried: {s} {}",
        worker.log_text()
    );
}

#[test]
fn a_stale_attempt_cannot_overwrite_a_newer_one() {
    let env = TestEnv::new("fencing", "");
    let rt = runtime();
    rt.block_on(async {
        let mut conn = connect().await;
        let keys = Keys::new(env.namespace.clone());
        // A lease of 50 ms stands for "the worker stalled past its lease".
        let settings = QueueSettings {
            lease: Duration::from_millis(50),
            ..Default::default()
        };
        let producer = Producer::new(conn.clone(), keys.clone(), settings.clone());
        let job = call_job("echo", "echo", json!({"text": "x"}));
        let id = job.id.to_string();
        producer.submit(&job).await.expect("submit");
        let first = fetch(&mut conn, &keys, "slow-worker", &settings)
            .await
            .expect("fetch")
            .expect("job");
        assert_eq!(first.attempt, 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            rescue_once(&mut conn, &keys, &settings)
                .await
                .expect("rescue"),
            (1, 0)
        );
        let second = fetch(&mut conn, &keys, "fast-worker", &settings)
            .await
            .expect("fetch")
            .expect("job");
        assert_eq!((second.id.as_str(), second.attempt), (id.as_str(), 2));
        // The slow worker wakes up and reports: rejected, whatever it says.
        let late = finish(
            &mut conn,
            &keys,
            &settings,
            &id,
            1,
            &Outcome::Succeeded(json!("old")),
        )
        .await
        .expect("finish");
        assert_eq!(
            late,
            Finished::Stale {
                status: "running".into(),
                attempt: 2
            }
        );
        let late = finish(&mut conn, &keys, &settings, &id, 1, &Outcome::Release)
            .await
            .expect("finish");
        assert!(matches!(late, Finished::Stale { .. }));
        let now = finish(
            &mut conn,
            &keys,
            &settings,
            &id,
            2,
            &Outcome::Succeeded(json!("new")),
        )
        .await
        .expect("finish");
        assert_eq!(now, Finished::Stored);
        // And after the newer attempt finished, the old one still cannot write.
        let late = finish(
            &mut conn,
            &keys,
            &settings,
            &id,
            1,
            &Outcome::Dead(queue::JobFailure::new(
                mcpq_shared::failure::FailureKind::Other("x".into()),
                "late",
                false,
            )),
        )
        .await
        .expect("finish");
        assert!(matches!(late, Finished::Stale { .. }));
        let record = ResultStore::new(conn.clone(), keys.clone())
            .get(&id)
            .await
            .expect("get")
            .expect("record");
        assert_eq!(record.status, JobStatus::Succeeded);
        assert_eq!(record.result, Some(json!("new")));
        assert_eq!(record.stale_writes, 3);
        let outcomes: Vec<&str> = record.history.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["lease_expired", "succeeded"]);
        assert_eq!(record.history[0].worker, "slow-worker");
        assert_eq!(record.rescues, 1, "the lost attempt counts as a rescue");
        assert_eq!(record.failures, 0, "a lost worker is not a failed attempt");
    });
}

#[test]
fn dead_letters_can_be_listed_shown_requeued_and_purged() {
    let env = TestEnv::new("dlq", "");
    let worker = env.worker(&[]);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            env.submit_call(
                "echo",
                "fail",
                &format!(r#"{{"message":"bad {i}"}}"#),
                &["--max-attempts", "1"],
            )
        })
        .collect();
    for id in &ids {
        assert_eq!(env.wait_json(id).0, Some(1));
    }
    let out = env.mcpq(&["dlq", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let listed: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "dead")
        .map(|l| l["id"].as_str().unwrap_or(""))
        .collect();
    for id in &ids {
        assert!(listed.contains(&id.as_str()), "{id} not in {listed:?}");
    }
    assert_eq!(lines.last().expect("total")["total"], 3);
    // show: payload, attempts with error and stderr tail.
    let out = env.mcpq(&["dlq", "show", &ids[0], "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["payload"].as_str().expect("payload").contains("bad 0"),
        "{v}"
    );
    assert_eq!(v["history"][0]["error"]["kind"], "tool_error");
    assert!(v["history"][0]["error"]["stderr_tail"]
        .as_str()
        .expect("tail")
        .contains("mcpq-fixture"));
    let out = env.mcpq(&["dlq", "show", &ids[0]]);
    assert!(text(&out.stdout).contains("--- payload ---"));
    // requeue one: it runs again (and fails again, with a fresh set of attempts).
    let out = env.mcpq(&["dlq", "requeue", &ids[0]]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        wait_until(Duration::from_secs(20), || env.status_json(&ids[0])
            ["attempts"]
            == 2),
        "{}",
        worker.log_text()
    );
    assert_eq!(env.wait_json(&ids[0]).1["status"], "dead");
    assert_eq!(
        env.mcpq(&["dlq", "requeue", "01JDX6Q6T3N7Z8YV1K0W2M4C5B"])
            .status
            .code(),
        Some(2)
    );
    // requeue --all, then purge what died again.
    let out = env.mcpq(&["dlq", "requeue", "--all", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["count"], 3);
    assert!(wait_until(Duration::from_secs(20), || ids
        .iter()
        .all(|id| env.status_json(id)["status"] == "dead"
            && env.status_json(id)["attempts"].as_u64() >= Some(2))));
    let out = env.mcpq(&["dlq", "purge", "--older-than", "1h", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")["count"],
        0,
        "none is an hour old"
    );
    let out = env.mcpq(&["dlq", "purge", "--older-than", "0s", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")["count"],
        3
    );
    assert_eq!(
        env.mcpq(&["status", &ids[1]]).status.code(),
        Some(2),
        "purged jobs are gone"
    );
    let out = env.mcpq(&["dlq", "list", "--json"]);
    assert!(
        text(&out.stdout).contains(r#""total":0"#),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_second_submit_with_the_same_idempotency_key_returns_the_first_id() {
    let env = TestEnv::new("idempotency", "");
    let first = env.submit_call(
        "echo",
        "echo",
        r#"{"text":"once"}"#,
        &["--idempotency-key", "order-42"],
    );
    let out = env.mcpq(&[
        "submit",
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
        "--args",
        r#"{"text":"twice"}"#,
        "--idempotency-key",
        "order-42",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["id"], first.as_str());
    assert_eq!(v["created"], false);
    assert!(
        text(&out.stderr).contains("already used"),
        "{}",
        text(&out.stderr)
    );
    // Concurrent submits with one key: exactly one job is enqueued.
    let rt = runtime();
    let created = rt.block_on(async {
        let conn = connect().await;
        let producer = Producer::new(
            conn,
            Keys::new(env.namespace.clone()),
            QueueSettings::default(),
        );
        let attempts = (0..20).map(|_| {
            let producer = producer.clone();
            async move {
                let mut job = call_job("echo", "echo", json!({"text": "race"}));
                job.options.idempotency_key = Some("race".into());
                producer.submit(&job).await.expect("submit")
            }
        });
        futures::future::join_all(attempts).await
    });
    assert_eq!(created.iter().filter(|s| s.created).count(), 1);
    assert!(created.iter().all(|s| s.id == created[0].id));
    let ready: usize = redis::cmd("LLEN")
        .arg(format!("{{{}}}:ready:normal", env.namespace))
        .query(&mut env.redis())
        .expect("LLEN");
    assert_eq!(ready, 2, "one job per key");
    let _worker = env.worker(&[]);
    let (code, v) = env.wait_json(&first);
    assert_eq!(code, Some(0));
    assert_eq!(v["result"][0]["result"]["content"][0]["text"], "once");
}

#[test]
fn cancel_stops_a_running_tool_call_within_2_s_and_a_queued_job_never_runs() {
    let env = TestEnv::with_echo(
        "cancel",
        "[worker]\nconcurrency = 2\n[defaults]\nkill_grace = \"500ms\"\n",
        "pool = false",
    );
    // Queued: cancelled before any worker runs; it never starts.
    let queued = env.submit_call("echo", "echo", r#"{"text":"never"}"#, &[]);
    let out = env.mcpq(&["cancel", &queued, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["cancelled"].clone(), v["was_running"].clone()),
        (json!(true), json!(false)),
        "{v}"
    );
    let worker = env.worker(&[]);
    // Running: the call never ends on its own.
    let running = env.submit_call("echo", "sleep_forever", "{}", &["--timeout", "300s"]);
    assert!(wait_until(Duration::from_secs(15), || env
        .status_json(&running)["status"]
        == "running"
        && !env.fixture_groups().is_empty()));
    std::thread::sleep(Duration::from_millis(200));
    let pgid = env.fixture_groups()[0];
    let asked = Instant::now();
    let out = env.mcpq(&["cancel", &running, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["was_running"], true, "{v}");
    assert_eq!(env.status_json(&running)["status"], "cancelled");
    assert!(
        wait_until(Duration::from_secs(5), || group_members(pgid).is_empty()),
        "the cancelled call's server is still running"
    );
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "stopping the cancelled job took {took:?}"
    );
    assert!(
        worker.wait_log("job cancelled", Duration::from_secs(5)),
        "{}",
        worker.log_text()
    );
    let (code, v) = env.wait_json(&running);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "cancelled");
    // The queued one never ran: no attempt, no server beyond the one for `running`.
    let s = env.status_json(&queued);
    assert_eq!(
        (s["status"].clone(), s["attempts"].clone()),
        (json!("cancelled"), json!(0)),
        "{s}"
    );
    assert_eq!(env.fixture_pids().len(), 1);
    // Cancelling a finished job changes nothing; an unknown one is a usage error.
    let out = env.mcpq(&["cancel", &running]);
    assert!(
        text(&out.stdout).contains("already cancelled"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        env.mcpq(&["cancel", "01JDX6Q6T3N7Z8YV1K0W2M4C5B"])
            .status
            .code(),
        Some(2)
    );
    // The worker goes on.
    let id = env.submit_call("echo", "echo", r#"{"text":"after"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
}

#[test]
fn finished_jobs_expire_after_the_result_ttl() {
    let env = TestEnv::with_queue(
        "retention",
        &format!("{TEST_QUEUE}result_ttl = \"1s\"\ndead_ttl = \"2s\"\n"),
        "",
    );
    let _worker = env.worker(&[]);
    let ok = env.submit_call("echo", "echo", r#"{"text":"x"}"#, &[]);
    let dead = env.submit_call("echo", "fail", "{}", &["--max-attempts", "1"]);
    assert_eq!(env.wait_json(&ok).0, Some(0));
    assert_eq!(env.wait_json(&dead).0, Some(1));
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{{{}}}:job:{ok}", env.namespace))
        .query(&mut env.redis())
        .expect("TTL");
    assert!((0..=1).contains(&ttl), "ttl {ttl}");
    assert!(
        wait_until(Duration::from_secs(5), || env
            .mcpq(&["status", &ok])
            .status
            .code()
            == Some(2)),
        "the succeeded job did not expire"
    );
    assert!(
        wait_until(Duration::from_secs(5), || env
            .mcpq(&["status", &dead])
            .status
            .code()
            == Some(2)),
        "the dead job did not expire"
    );
    // Nothing per job is left (only the worker's server report).
    let left: Vec<String> = env
        .keys()
        .into_iter()
        .filter(|k| k.contains(":job:"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn priorities_are_served_by_weight_and_low_never_starves() {
    let env = TestEnv::new("priorities", "");
    let rt = runtime();
    rt.block_on(async {
        let mut conn = connect().await;
        let keys = Keys::new(env.namespace.clone());
        let settings = QueueSettings::default(); // weights 6 : 3 : 1
        let producer = Producer::new(conn.clone(), keys.clone(), settings.clone());
        let mut jobs = Vec::new();
        for p in [Priority::Low, Priority::Normal, Priority::High] {
            for _ in 0..3 {
                let mut job = call_job("echo", "echo", json!({}));
                job.options.priority = p;
                jobs.push(job);
            }
        }
        producer.submit_many(&jobs).await.expect("submit");
        let priority_of = |id: &str| {
            jobs.iter()
                .find(|j| j.id.to_string() == id)
                .expect("known")
                .options
                .priority
        };
        // One draw per share of the weights: 0-5 high first, 6-8 normal, 9 low.
        let mut got = Vec::new();
        for pick in [9, 6, 0, 0, 0, 9, 6, 9, 0] {
            let d = fetch_picked(&mut conn, &keys, "w", &settings, pick)
                .await
                .expect("fetch")
                .expect("job");
            got.push(priority_of(&d.id));
        }
        use Priority::*;
        // low's draw serves low while low has jobs; an empty queue passes to the highest.
        assert_eq!(
            got,
            [Low, Normal, High, High, High, Low, Normal, Low, Normal]
        );
        assert!(fetch(&mut conn, &keys, "w", &settings)
            .await
            .expect("fetch")
            .is_none());
    });
}

#[test]
fn a_second_job_with_an_existing_id_is_refused_and_binds_no_idempotency_key() {
    let env = TestEnv::new("dup-id", "");
    let first = env.submit_call("echo", "echo", r#"{"text":"first"}"#, &[]);
    let job = format!(
        r#"{{"id": "{first}", "kind": "agent", "payload": {{"steps": [{{"server": "echo", "tool": "echo", "arguments": {{"text": "second"}}}}]}}}}"#
    );
    let out = env.mcpq_with_stdin(
        &["submit", "-", "--idempotency-key", "dup-key"],
        job.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exists already"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "no id printed: {}",
        text(&out.stdout)
    );
    // The key was not bound to the first job: a new submit with it creates a new job.
    let fresh = env.submit_call(
        "echo",
        "echo",
        r#"{"text":"third"}"#,
        &["--idempotency-key", "dup-key"],
    );
    assert_ne!(fresh, first);
    let _worker = env.worker(&[]);
    let (code, v) = env.wait_json(&first);
    assert_eq!(code, Some(0));
    assert_eq!(
        v["result"][0]["result"]["content"][0]["text"], "first",
        "{v}"
    );
    let (code, v) = env.wait_json(&fresh);
    assert_eq!(code, Some(0));
    assert_eq!(
        v["result"][0]["result"]["content"][0]["text"], "third",
        "{v}"
    );
}

#[test]
fn reading_a_status_never_loads_the_result_and_a_corrupt_record_is_reported_not_fatal() {
    // keep_payload: the full read returns the payload too (by default a succeeded
    // job's payload is dropped with its result stored).
    let env = TestEnv::custom(
        "status-light",
        &format!("{}keep_payload = true\n", mcpq_tests::TEST_QUEUE),
        "",
        "",
    );
    let _worker = env.worker(&[]);
    let id = env.submit_call("echo", "echo", r#"{"text":"a result"}"#, &[]);
    let (code, _) = env.wait_json(&id);
    assert_eq!(code, Some(0));
    let rt = runtime();
    let (status, full) = rt.block_on(async {
        let store = ResultStore::new(connect().await, Keys::new(env.namespace.clone()));
        (
            store.status(&id).await.expect("status").expect("known"),
            store.get(&id).await.expect("get").expect("known"),
        )
    });
    assert_eq!(status.status, JobStatus::Succeeded);
    assert!(
        status.result.is_none() && status.payload.is_none(),
        "{status:?}"
    );
    assert!(full.result.is_some() && full.payload.is_some(), "{full:?}");

    // A record someone else scribbled on: the status says what is wrong, exit 0.
    let key = format!("{{{}}}:job:{id}", env.namespace);
    let mut conn = env.redis();
    let _: () = redis::pipe()
        .hset(&key, "error", "{not json")
        .hset(&key, "result", b"\xff\xfe not json".as_slice())
        .rpush(format!("{key}:attempts"), "garbage")
        .query(&mut conn)
        .expect("scribble");
    let out = env.mcpq(&["status", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("corrupt") && shown.contains("not a job error"),
        "{shown}"
    );
    assert!(shown.contains("attempt record does not parse"), "{shown}");
    // A record of another Redis type: a clear error for that job only.
    let other = ulid::Ulid::generate().to_string();
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}}}:job:{other}", env.namespace))
        .arg("not a job")
        .query(&mut conn)
        .expect("SET");
    let out = env.mcpq(&["status", &other]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("another Redis type"),
        "{}",
        text(&out.stderr)
    );
    let out = env.mcpq(&["status", &id]);
    assert_eq!(out.status.code(), Some(0), "other jobs still read");
}

#[test]
fn a_noop_job_succeeds_with_a_compact_record_and_a_submit_wakes_an_idle_worker() {
    // A poll interval far longer than the waits below: only the wake on submit
    // ({ns}:wake) can start the jobs in time.
    let env = TestEnv::new("noop-compact", "[worker]\npoll_interval = \"60s\"\n");
    let _worker = env.started_worker(&[]);
    // Let the worker's first (empty) fetch pass, so it is idle in its long poll.
    std::thread::sleep(Duration::from_millis(500));
    let job = env.dir.join("noop.json");
    std::fs::write(&job, r#"{"kind": "noop"}"#).expect("write job");
    let started = Instant::now();
    let id = env.submit(&[job.to_str().expect("utf-8 path")]);
    let out = env.mcpq(&["wait", &id, "--timeout", "20s", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the idle worker was not woken by the submit"
    );
    let v = env.status_json(&id);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["kind"], "noop", "{v}");
    assert_eq!(v["history"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["history"][0]["outcome"], "succeeded", "{v}");
    // Compact: no history list, no payload kept, and the namespace's totals count it.
    let mut conn = env.redis();
    let p = format!("{{{}}}", env.namespace);
    let history: String = redis::cmd("TYPE")
        .arg(format!("{p}:job:{id}:attempts"))
        .query(&mut conn)
        .expect("TYPE");
    assert_eq!(history, "none");
    let payload: Option<String> = redis::cmd("HGET")
        .arg(format!("{p}:job:{id}"))
        .arg("payload")
        .query(&mut conn)
        .expect("HGET");
    assert_eq!(payload, None);
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(format!("{p}:job:{id}"))
        .query(&mut conn)
        .expect("OBJECT ENCODING");
    assert_eq!(
        encoding, "listpack",
        "a noop job's record stays a compact hash"
    );
    let succeeded: Option<u64> = redis::cmd("HGET")
        .arg(format!("{p}:totals"))
        .arg("succeeded")
        .query(&mut conn)
        .expect("HGET totals");
    assert_eq!(succeeded, Some(1));
    // A second job, submitted while the worker idles again, is woken the same way.
    let again = env.submit(&[job.to_str().expect("utf-8 path")]);
    let out = env.mcpq(&["wait", &again, "--timeout", "20s", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
