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
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one summary on stdout");
    let errors = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json error line"))
        .collect::<Vec<_>>();
    assert_eq!(errors.len(), 3, "one error object per bad line: {errors:?}");
    assert!(errors
        .iter()
        .all(|e| e["type"] == "error" && e["kind"] == "invalid_job"));
    assert_eq!(
        errors
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
    // An id someone else wrote into the batch's list is not the batch's: left alone.
    let stranger = env.submit(&[
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
        "--args",
        r#"{"text":"not mine"}"#,
    ]);
    let mut redis = env.redis();
    let _: () = redis::cmd("RPUSH")
        .arg(format!("{{{}}}:batch:{id}:jobs", env.namespace))
        .arg(&stranger)
        .query(&mut redis)
        .expect("rpush");
    let out = env.mcpq(&["batch", "cancel", id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["cancelled"], 50);
    assert_eq!(env.status_json(&stranger)["status"], "queued");
    let out = env.mcpq(&["batch", "wait", id, "--timeout", "10s"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "cancelled jobs: exit 1; {}",
        text(&out.stderr)
    );
    assert_eq!(env.status_json(then_id)["status"], "cancelled");
    assert_eq!(
        env.queue_depth(),
        1,
        "the fan-in was never queued (the stranger waits)"
    );
    let out = env.mcpq(&["batch", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed["id"], id);
    assert_eq!(listed["cancelled"], 50);
}

#[test]
fn jobs_are_listed_newest_first_by_status_and_by_batch() {
    let env = TestEnv::new("jobs-list", "");
    let single = env.submit(&[
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
        "--args",
        r#"{"text":"one"}"#,
    ]);
    let file = jobs_file(&env, 5, &[]);
    let out = env.mcpq(&["batch", "submit", file.to_str().expect("utf-8"), "--json"]);
    let batch: Value = serde_json::from_slice(&out.stdout).expect("json");
    let batch_id = batch["id"].as_str().expect("id");

    let listed = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["jobs", "--json"];
        all.extend_from_slice(args);
        let out = env.mcpq(&all);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    };
    let all = listed(&[]);
    assert_eq!(all.len(), 6);
    assert_eq!(
        all.last().expect("oldest")["id"],
        single.as_str(),
        "newest first"
    );
    assert!(all
        .iter()
        .all(|j| j["status"] == "queued" && j["type"] == "job"));

    let of_batch = listed(&["--batch", batch_id]);
    assert_eq!(of_batch.len(), 5);
    let ids: Vec<&str> = of_batch
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    let mut newest_first = ids.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, newest_first, "a batch's jobs, last line first");
    assert!(of_batch.iter().all(|j| j["batch"] == batch_id));

    let out = env.mcpq(&["cancel", &single]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cancelled = listed(&["--status", "cancelled"]);
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["id"], single.as_str());
    assert_eq!(cancelled[0]["error_kind"], "cancelled");
    assert_eq!(listed(&["--status", "queued", "--limit", "2"]).len(), 2);

    let out = env.mcpq(&["jobs", "--status", "sleeping"]);
    assert_eq!(out.status.code(), Some(2), "a bad status is a usage error");
}

#[test]
fn lines_naming_an_id_or_an_idempotency_key_are_refused_and_a_pipe_is_read_once() {
    let env = TestEnv::new("batch-lines", "");
    let ok = json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tool": "echo", "arguments": {"text": "x"}}]}});
    let mut with_id = ok.clone();
    with_id["id"] = json!("01JDX6Q6T3N7Z8YV1K0W2M4C5B");
    let mut with_key = ok.clone();
    with_key["options"] = json!({"idempotency_key": "k1"});
    let input = format!("{ok}\n{with_id}\n{with_key}\n\u{feff}{ok}\n");
    let out = env.mcpq_with_stdin(&["batch", "submit", "-"], input.as_bytes());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("line 2: a batch's jobs get their ids from the batch"),
        "{err}"
    );
    assert!(
        err.contains("line 3: leave options.idempotency_key out"),
        "{err}"
    );
    assert!(!err.contains("line 4"), "a BOM is not an error: {err}");

    // A path that is a pipe (/dev/stdin) is read once, into a private copy.
    let input = format!("{ok}\n{ok}\n");
    let out = env.mcpq_with_stdin(
        &["batch", "submit", "/dev/stdin", "--json"],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["enqueued"], 2, "{summary}");
}

#[test]
fn a_requeued_dead_job_moves_its_count_and_a_cut_short_batch_can_be_cancelled_to_its_end() {
    let env = TestEnv::new("batch-recount", "");
    let missing = env.dir.join("later.txt");
    let line = json!({"kind": "agent", "payload": {"steps": [{"server": "echo",
        "tool": "read_text", "arguments": {"path": missing.to_str().expect("utf-8")}}]},
        "options": {"max_attempts": 1}});
    let file = env.dir.join("one.jsonl");
    std::fs::write(&file, format!("{line}\n")).expect("write");
    let out = env.mcpq(&["batch", "submit", file.to_str().expect("utf-8"), "--json"]);
    let id = serde_json::from_slice::<Value>(&out.stdout).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let _worker = env.worker(&[]);
    let out = env.mcpq(&["batch", "wait", &id, "--timeout", "30s", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one dead job: {}",
        text(&out.stderr)
    );
    let out = env.mcpq(&["jobs", "--batch", &id, "--json"]);
    let job: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(job["status"], "dead");
    std::fs::write(&missing, "here now").expect("write");
    let out = env.mcpq(&["dlq", "requeue", job["id"].as_str().expect("id")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        mcpq_tests::wait_until(Duration::from_secs(30), || {
            let out = env.mcpq(&["batch", "status", &id, "--json"]);
            let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            s["succeeded"] == 1 && s["dead"] == 0
        }),
        "the count moved from dead to succeeded"
    );
    let out = env.mcpq(&["batch", "wait", &id, "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    drop(_worker);

    // A submit cut short: 5 of 8 jobs never reached Redis. Cancel ends the batch.
    let file = jobs_file(&env, 8, &[]);
    let out = env.mcpq(&["batch", "submit", file.to_str().expect("utf-8"), "--json"]);
    let id = serde_json::from_slice::<Value>(&out.stdout).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut redis = env.redis();
    let list = format!("{{{}}}:batch:{id}:jobs", env.namespace);
    let _: () = redis::cmd("LTRIM")
        .arg(&list)
        .arg(0)
        .arg(2)
        .query(&mut redis)
        .expect("trim");
    let out = env.mcpq(&["batch", "cancel", &id, "--json"]);
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["cancelled"], 3, "{answer}");
    assert_eq!(answer["never_enqueued"], 5, "{answer}");
    let out = env.mcpq(&["batch", "status", &id, "--json"]);
    let s: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["pending"], 0, "{s}");
    assert_eq!(s["finished"], true, "{s}");
}

#[test]
fn a_maildir_and_an_mbox_become_one_email_job_per_message_with_the_plan_given_once() {
    let env = TestEnv::new("batch-mailbox", "");
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/eml");
    let maildir = env.dir.join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    let picks = ["01-plain.eml", "02-alternative.eml", "19-html-only.eml"];
    for (i, name) in picks.iter().enumerate() {
        std::fs::copy(
            corpus.join(name),
            maildir.join("cur").join(format!("{i}:2,S")),
        )
        .expect("copy");
    }
    std::fs::write(maildir.join("new/junk"), "hello world, no headers here").expect("junk");
    let plan = r#"[{"name":"s","server":"echo","tool":"echo","arguments":{"text":"subject: {{ email.subject }}"}}]"#;
    let submit = |path: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "batch",
            "submit",
            path.to_str().expect("utf-8"),
            "--server",
            "echo",
            "--steps",
            plan,
        ];
        args.extend_from_slice(extra);
        env.mcpq(&args)
    };

    // The junk message is named, and nothing is submitted without --skip-invalid.
    let out = submit(&maildir, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("message 1 (new/junk): "),
        "{}",
        text(&out.stderr)
    );

    let out = submit(&maildir, &["--skip-invalid", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(
        text(&out.stdout)
            .lines()
            .last()
            .expect("summary")
            .as_bytes(),
    )
    .expect("json");
    assert_eq!(summary["enqueued"], 3, "{summary}");
    let maildir_batch = summary["id"].as_str().expect("id").to_string();

    // The same three messages as an mbox (mboxrd quoting of a body line).
    let mut mbox = Vec::new();
    for name in picks {
        mbox.extend_from_slice(b"From sender@example.org Thu Nov 26 10:00:00 2026\n");
        for line in std::fs::read(corpus.join(name))
            .expect("eml")
            .split_inclusive(|b| *b == b'\n')
        {
            if line.starts_with(b"From ") {
                mbox.push(b'>');
            }
            mbox.extend_from_slice(line);
        }
        mbox.push(b'\n');
    }
    let mbox_path = env.dir.join("inbox.mbox");
    std::fs::write(&mbox_path, mbox).expect("mbox");
    let out = submit(&mbox_path, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mbox_batch = serde_json::from_slice::<Value>(&out.stdout).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let _worker = env.worker(&[]);
    for batch in [&maildir_batch, &mbox_batch] {
        let out = env.mcpq(&["batch", "wait", batch, "--timeout", "60s"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let out = env.mcpq(&["batch", "results", batch]);
        let rows: Vec<Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let subjects: Vec<String> = rows
            .iter()
            .map(|r| {
                r["result"]["summary"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            subjects,
            vec![
                "subject: Meeting moved",
                "subject: Your receipt",
                "subject: Your order has shipped"
            ],
            "{rows:?}"
        );
    }
}
