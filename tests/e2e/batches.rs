//! `mcpq batch`: a JSON lines file in, every bad line reported, results out in input
//! order, progress to 100 %, and a fan-in job that runs exactly once with two workers.

use std::time::Duration;

use mcpq_tests::{text, TestEnv};
use serde_json::{json, Value};

/// One echo job per line; lines `bad` (1-based) are broken in three different ways.
fn jobs_file(env: &TestEnv, n: usize, bad: &[usize]) -> std::path::PathBuf {
    let mut lines = String::new();
    for i in 1..=n {
        let line = match bad.iter().position(|b| *b == i) {
            Some(0) => "{\"kind\": \"agent\", \"payload\": ".to_string(), // cut short
            Some(1) => json!({"kind": "agent", "payload": {"steps": [
                {"server": "nope", "tool": "echo", "arguments": {"text": "x"}}]}})
            .to_string(), // unknown server
            Some(_) => json!({"kind": "agent", "payload": {"stepz": []}}).to_string(), // unknown field
            None => json!({"kind": "agent", "payload": {"steps": [
                {"server": "echo", "tool": "echo", "arguments": {"text": format!("job {i}")}}]}})
            .to_string(),
        };
        lines.push_str(&line);
        lines.push('\n');
    }
    let path = env.dir.join("jobs.jsonl");
    std::fs::write(&path, lines).expect("write jobs");
    path
}

#[test]
fn a_10k_line_file_with_3_bad_lines_is_refused_then_runs_with_skip_invalid_in_input_order_and_the_fan_in_runs_once(
) {
    let env = TestEnv::new("batch-10k", "[worker]\nconcurrency = 16\n");
    let bad = [17, 5000, 9999];
    let file = jobs_file(&env, 10_000, &bad);
    let file_arg = file.to_str().expect("utf-8 path");

    // Every bad line is named, and nothing is enqueued.
    let out = env.mcpq(&["batch", "submit", file_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for line in bad {
        assert!(
            err.contains(&format!("line {line}: ")),
            "line {line} not reported: {err}"
        );
    }
    assert!(err.contains("unknown server `nope`"), "{err}");
    assert!(err.contains("3 invalid line(s)"), "{err}");
    assert_eq!(env.queue_depth(), 0, "nothing may be enqueued");

    // The fan-in job: its template sees the batch's counts.
    let mark = env.dir.join("fan-in.log");
    let then = env.dir.join("then.json");
    std::fs::write(
        &then,
        json!({"kind": "agent", "payload": {"steps": [{"server": "echo", "tool": "mark",
            "arguments": {"path": mark.to_str().expect("utf-8"),
                          "tag": "done {{ input.batch.succeeded }} of {{ input.batch.total }}, {{ input.batch.dead }} dead"}}]}})
        .to_string(),
    )
    .expect("write then");

    let out = env.mcpq(&[
        "batch",
        "submit",
        file_arg,
        "--skip-invalid",
        "--then",
        then.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut lines = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .collect::<Vec<_>>();
    let summary = lines.pop().expect("summary");
    assert_eq!(
        lines.len(),
        3,
        "one invalid_line object per bad line: {lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .map(|l| l["line"].as_u64().expect("line"))
            .collect::<Vec<_>>(),
        bad.iter().map(|b| *b as u64).collect::<Vec<_>>()
    );
    assert_eq!(summary["type"], "batch");
    assert_eq!(summary["total"], 9_997);
    assert_eq!(summary["enqueued"], 9_997);
    assert_eq!(summary["invalid_skipped"], 3);
    let id = summary["id"].as_str().expect("batch id").to_string();
    let then_id = summary["then"].as_str().expect("fan-in id").to_string();

    // Two workers race on the last jobs.
    let _w1 = env.worker(&[]);
    let _w2 = env.worker(&[]);
    let out = env.mcpq(&["batch", "wait", &id, "--timeout", "300s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let progress = text(&out.stderr);
    assert!(
        progress.contains("9997/9997 done (100 %)"),
        "the progress reaches 100 %: {progress}"
    );

    // The results: 9,997 lines in input order, each succeeded with its own text.
    let results = env.dir.join("results.jsonl");
    let out = env.mcpq(&[
        "batch",
        "results",
        &id,
        "--out",
        results.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<Value> = std::fs::read_to_string(&results)
        .expect("results")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 9_997);
    let expected_lines: Vec<u64> = (1..=10_000u64)
        .filter(|l| !bad.contains(&(*l as usize)))
        .collect();
    let got_lines: Vec<u64> = rows
        .iter()
        .map(|r| r["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(got_lines, expected_lines, "input order");
    for row in &rows {
        assert_eq!(row["status"], "succeeded", "{row}");
        let want = format!("job {}", row["line"]);
        assert!(row["result"].to_string().contains(&want), "{row}");
    }

    // The fan-in ran exactly once, after everything, and saw the counts.
    assert!(
        mcpq_tests::wait_until(Duration::from_secs(60), || {
            env.status_json(&then_id)["status"] == "succeeded"
        }),
        "the fan-in job finishes: {}",
        env.status_json(&then_id)
    );
    let marks = std::fs::read_to_string(&mark).expect("fan-in log");
    assert_eq!(marks, "done 9997 of 9997, 0 dead\n", "ran exactly once");
    assert_eq!(env.status_json(&then_id)["attempts"], 1);

    // Status says so too.
    let out = env.mcpq(&["batch", "status", &id, "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(status["succeeded"], 9_997);
    assert_eq!(status["pending"], 0);
    assert_eq!(status["finished"], true);
}

#[test]
fn a_rerun_with_the_same_idempotency_key_enqueues_nothing_twice_and_other_input_is_refused() {
    let env = TestEnv::new("batch-rerun", "");
    let file = jobs_file(&env, 1_200, &[]);
    let args = [
        "batch",
        "submit",
        file.to_str().expect("utf-8"),
        "--idempotency-key",
        "nightly",
        "--json",
    ];
    let first: Value = serde_json::from_slice(&env.mcpq(&args).stdout).expect("json");
    assert_eq!(first["enqueued"], 1_200);
    // A crash half-way: take the last 700 jobs out again, as if they were never sent.
    let mut redis = env.redis();
    let list = format!(
        "{{{}}}:batch:{}:jobs",
        env.namespace,
        first["id"].as_str().expect("id")
    );
    let ids: Vec<String> = redis::cmd("LRANGE")
        .arg(&list)
        .arg(500)
        .arg(-1)
        .query(&mut redis)
        .expect("ids");
    for id in &ids {
        let _: () = redis::cmd("DEL")
            .arg(format!("{{{}}}:job:{id}", env.namespace))
            .query(&mut redis)
            .expect("del");
    }
    let _: () = redis::cmd("LTRIM")
        .arg(&list)
        .arg(0)
        .arg(499)
        .query(&mut redis)
        .expect("trim");
    let _: () = redis::cmd("DEL")
        .arg(format!("{{{}}}:ready:normal", env.namespace))
        .query(&mut redis)
        .expect("del");

    let again: Value = serde_json::from_slice(&env.mcpq(&args).stdout).expect("json");
    assert_eq!(again["id"], first["id"], "the same batch");
    assert_eq!(again["resumed"], true);
    assert_eq!(again["enqueued"], 700, "only what was missing");
    assert_eq!(again["existing"], 500);
    let len: usize = redis::cmd("LLEN")
        .arg(&list)
        .query(&mut redis)
        .expect("llen");
    assert_eq!(len, 1_200, "every job once in the list");
    let listed: Vec<String> = redis::cmd("LRANGE")
        .arg(&list)
        .arg(0)
        .arg(-1)
        .query(&mut redis)
        .expect("ids");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        listed, sorted,
        "ids derive from the batch's, in input order"
    );

    // Other input under the same key: refused, nothing enqueued.
    let other = jobs_file(&env, 3, &[]);
    let out = env.mcpq(&[
        "batch",
        "submit",
        other.to_str().expect("utf-8"),
        "--idempotency-key",
        "nightly",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("other input"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_job_file_with_more_than_one_job_exits_2_pointing_to_batch_submit() {
    let env = TestEnv::new("batch-trailing", "");
    let file = jobs_file(&env, 2, &[]);
    let out = env.mcpq(&["submit", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("mcpq batch submit"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(env.queue_depth(), 0);
}

#[test]
fn cancelling_a_batch_stops_its_jobs_and_its_fan_in_never_runs() {
    let env = TestEnv::new("batch-cancel", "");
    let file = jobs_file(&env, 50, &[]);
    let then = env.dir.join("then.json");
    std::fs::write(
        &then,
        json!({"kind": "agent", "payload": {"steps": [{"server": "echo", "tool": "echo",
            "arguments": {"text": "{{ input.batch.total }}"}}]}})
        .to_string(),
    )
    .expect("write then");
    let out = env.mcpq(&[
        "batch",
        "submit",
        file.to_str().expect("utf-8"),
        "--then",
        then.to_str().expect("utf-8"),
        "--json",
    ]);
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = summary["id"].as_str().expect("id");
    let then_id = summary["then"].as_str().expect("then id");
    assert_eq!(env.status_json(then_id)["status"], "waiting");
    let out = env.mcpq(&["batch", "cancel", id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["cancelled"], 50);
    let out = env.mcpq(&["batch", "wait", id, "--timeout", "10s"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "cancelled jobs: exit 1; {}",
        text(&out.stderr)
    );
    assert_eq!(env.status_json(then_id)["status"], "cancelled");
    assert_eq!(env.queue_depth(), 0, "the fan-in was never queued");
    let out = env.mcpq(&["batch", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed["id"], id);
    assert_eq!(listed["cancelled"], 50);
}
