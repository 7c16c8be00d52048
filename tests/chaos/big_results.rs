//! Results too big to keep (issue #11, finding 5): tool answers of 15 MB over stdio and
//! over HTTP, and a plan whose 1 MB steps add up past `queue.max_result` (8 MiB). Each
//! fails at once and permanently, with `result_too_large`, after one attempt; the good jobs
//! around them succeed on the same servers; the worker lives and stays small.

use std::time::Duration;

use mcpq_shared::job::PlanStep;
use mcpq_shared::Job;
use mcpq_tests::{call_job, HttpFixture, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, assert_survived_small, serial, CHAOS_QUEUE, MAX_WORKER_RSS};

fn plan(server: &str, tool: &str, args: serde_json::Value, steps: usize) -> Job {
    let step = PlanStep {
        name: None,
        server: server.to_string(),
        tool: tool.to_string(),
        arguments: args.as_object().cloned().expect("object"),
        continue_on_error: true,
        literal_arguments: false,
        keep_tool_errors: false,
    };
    Job::agent(vec![step; steps], Default::default())
}

#[test]
fn oversized_tool_answers_and_results_fail_the_job_at_once_and_the_worker_stays_small() {
    let _turn = serial();
    let redis = PrivateRedis::start("big-results");
    let fixture = HttpFixture::start(&[]);
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-big-results",
        CHAOS_QUEUE,
        &format!(
            "[worker]\nconcurrency = 2\npoll_interval = \"20ms\"\n\
             [defaults]\ncall_timeout = \"40s\"\n\
             [servers.remote]\nurl = \"{}\"\n",
            fixture.url
        ),
        "",
    );
    let mut worker = env.worker(&[]);
    let mb15 = json!({"bytes": 15_000_000});
    let before = call_job("echo", "echo", json!({"text": "before"}));
    // The repro: 20 steps x 15 MB (the first answer is already too big).
    let huge_steps = plan("echo", "big_answer", mb15.clone(), 20);
    // Every answer fits, their sum does not: 20 x 1 MB against 8 MiB.
    let adds_up = plan("echo", "big_answer", json!({"bytes": 1_000_000}), 20);
    let huge_http = call_job("remote", "big_answer", mb15);
    let after = call_job("echo", "echo", json!({"text": "after"}));
    let after_http = call_job("remote", "echo", json!({"text": "after http"}));
    let jobs = [before, huge_steps, adds_up, huge_http, after, after_http];
    env.submit_jobs(&jobs);
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let outcomes: Vec<(Option<i32>, serde_json::Value)> =
        ids.iter().map(|id| env.wait_json(id)).collect();
    for (i, text) in [(0, "before"), (4, "after"), (5, "after http")] {
        let (code, v) = &outcomes[i];
        assert_eq!(*code, Some(0), "{v}");
        assert!(v.to_string().contains(text), "{v}");
    }
    // Over HTTP rmcp refuses the SSE event past the limit; the session's client says
    // why, so the job fails the same way as over stdio.
    for i in [1, 2, 3] {
        let (code, v) = &outcomes[i];
        assert_eq!(*code, Some(1), "job {i}: {v}");
        let error = &v["error"];
        assert_eq!(error["kind"], "result_too_large", "job {i}: {v}");
        assert_eq!(error["retryable"], false, "job {i}: {v}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("queue.max_result"), "job {i}: {message}");
        assert!(message.contains("8388608"), "job {i}: {message}");
        let status = env.status_json(&ids[i]);
        assert_eq!(status["status"], "dead", "job {i}: {status}");
        assert_eq!(status["attempts"], 1, "never retried: {status}");
    }
    // The plan stopped where the sum passed the limit, not after 20 steps.
    let step = outcomes[2].1["error"]["step"].as_u64().expect("step");
    assert!((7..=9).contains(&step), "{}", outcomes[2].1);
    // One answer too big: the first step, not a call_timeout later.
    assert_eq!(outcomes[1].1["error"]["step"], 0, "{}", outcomes[1].1);
    let rss = assert_survived_small(&mut worker);
    eprintln!(
        "chaos: big results: worker peak RSS {:.1} MB (bound {} MB)",
        rss as f64 / 1e6,
        MAX_WORKER_RSS / 1024 / 1024
    );
    let _ = worker.wait_exit(Duration::ZERO);
    drop(worker);
    assert_no_leftovers(&env);
}
