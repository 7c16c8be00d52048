use std::time::Duration;

use mcpq_shared::job::Job;
use mcpq_shared::queue::{self, JobStatus, Keys, ResultStore};
use mcpq_tests::{call_job, text, wait_until, TestEnv};
use serde_json::{json, Value};

#[test]
fn submit_run_and_wait_returns_the_echo_result() {
    let env = TestEnv::new("e2e-echo", "");
    let _worker = env.worker(&[]);
    let id = env.submit_call(
        "echo",
        "echo",
        r#"{"text":"hi there"}"#,
        &["--timeout", "30s"],
    );
    assert_eq!(id.len(), 26, "a ULID: {id}");

    let out = env.mcpq(&["wait", &id, "--timeout", "30s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "step 0 echo/echo: hi there");

    let out = env.mcpq(&["result", &id, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON line");
    assert_eq!(v["type"], "result");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"][0]["result"]["content"][0]["text"], "hi there");

    let out = env.mcpq(&["status", &id, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON line");
    assert_eq!(v["type"], "status");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["attempts"], 1);
    assert!(v["started_at"].as_u64() <= v["finished_at"].as_u64());
}

#[test]
fn a_two_step_plan_from_stdin_returns_both_results_in_order() {
    let env = TestEnv::new("e2e-plan", "");
    let _worker = env.worker(&[]);
    let job = json!({
        "kind": "agent",
        "payload": {"steps": [
            {"name": "greet", "server": "echo", "tool": "echo", "arguments": {"text": "first"}},
            {"server": "echo", "tool": "add", "arguments": {"a": 2, "b": 40}}
        ]},
        "options": {"timeout": "30s"}
    });
    let out = env.mcpq_with_stdin(
        &["submit", "-", "--wait", "--json"],
        job.to_string().as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["type"], "submitted");
    assert_eq!(lines[1]["type"], "result");
    let steps = lines[1]["result"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["name"], "greet");
    assert_eq!(steps[0]["result"]["content"][0]["text"], "first");
    assert_eq!(steps[1]["tool"], "add");
    assert_eq!(steps[1]["result"]["content"][0]["text"], "42");
    // One server process served both steps of the job.
    assert_eq!(env.fixture_pids().len(), 1);
}

#[test]
fn two_hundred_jobs_at_concurrency_eight_all_complete_with_their_own_results() {
    let env = TestEnv::new(
        "e2e-200",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
    );
    let worker = env.worker(&[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let jobs: Vec<Job> = (0..200)
        .map(|i| call_job("echo", "add", json!({"a": i, "b": 1000})))
        .collect();
    env.submit_jobs(&jobs);
    let store = rt.block_on(async {
        let conn = queue::connect(&mcpq_tests::redis_url())
            .await
            .expect("redis");
        ResultStore::new(conn, Keys::new(env.namespace.clone()))
    });
    let all_done = wait_until(Duration::from_secs(120), || {
        rt.block_on(async {
            for job in &jobs {
                match store.get(&job.id.to_string()).await.expect("record") {
                    Some(r) if r.status.is_finished() => {}
                    _ => return false,
                }
            }
            true
        })
    });
    assert!(
        all_done,
        "not every job finished; worker log:\n{}",
        worker.log_text()
    );
    let records = rt.block_on(async {
        let mut records = Vec::new();
        for job in &jobs {
            records.push(
                store
                    .get(&job.id.to_string())
                    .await
                    .expect("record")
                    .expect("exists"),
            );
        }
        records
    });
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.status, JobStatus::Succeeded, "job {i}: {:?}", r.error);
        let got = &r.result.as_ref().expect("result")[0]["result"]["content"][0]["text"];
        assert_eq!(
            got,
            &json!((i + 1000).to_string()),
            "job {i} got another job's result"
        );
    }
    // Jobs really ran side by side: some start-finish intervals overlap, never more than 8.
    let mut events: Vec<(u64, i32)> = Vec::new();
    for r in &records {
        events.push((r.started_at.expect("started"), 1));
        events.push((r.finished_at.expect("finished"), -1));
    }
    events.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, delta) in events {
        now += delta;
        peak = peak.max(now);
    }
    assert!((2..=8).contains(&peak), "peak concurrency {peak}");
    // The pool served them all: at most max_sessions (= concurrency, 8) servers started.
    let spawned = env.fixture_pids().len();
    assert!((1..=8).contains(&spawned), "{spawned} servers for 200 jobs");
}
