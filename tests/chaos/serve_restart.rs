//! Restart Redis (AOF on) under a long poll of `mcpq serve`: the poll neither fails nor
//! gives up while Redis is away; it answers 200 once the job ends after the restart.

use std::time::Duration;

use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::TestEnv;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::private_redis::PrivateRedis;
use crate::{serial, CHAOS_QUEUE};

#[test]
fn a_long_poll_survives_a_redis_restart_and_answers_when_the_job_ends() {
    let _turn = serial();
    let mut redis = PrivateRedis::start("serve-restart");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-serve-restart",
        CHAOS_QUEUE,
        TOKEN_CONFIG,
        "",
    );
    let serve = env.serve(&[]);
    mcpq_shared::tls::install();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client");
    let job = json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tool": "echo", "arguments": {"text": "after the restart"}}
    ]}});
    let submitted: Value = http
        .post(format!("{}/v1/jobs", serve.url))
        .bearer_auth(TOKEN)
        .json(&job)
        .send()
        .expect("POST")
        .json()
        .expect("JSON");
    let id = submitted["id"].as_str().expect("id").to_string();
    let url = format!("{}/v1/jobs/{id}/result?wait=90s", serve.url);
    let poll = std::thread::spawn(move || {
        let resp = http.get(url).bearer_auth(TOKEN).send().expect("poll");
        let status = resp.status();
        (status, resp.text().expect("body"))
    });
    // Redis goes away for longer than a waiter's recheck period (5 s ± 20 %), so the
    // waiter reads while it is down; then it comes back and a worker runs the job.
    std::thread::sleep(Duration::from_secs(1));
    redis.restart(Duration::from_secs(7));
    let _worker = env.worker(&[]);
    let (status, text) = poll.join().expect("poll thread");
    assert_eq!(status, StatusCode::OK, "{text}\n{}", serve.log_text());
    let record: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(
        record["result"][0]["result"]["content"][0]["text"],
        "after the restart"
    );
}
