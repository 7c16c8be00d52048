//! A model API that answers 2 GB (issue #11, finding 6): the worker reads at most
//! `llm.max_response` (2 MiB) of it, the job fails at once, permanently, with
//! `llm_error` naming the limit; the LLM jobs around it succeed; the worker lives and
//! stays small.

use mcpq_tests::scripted_model::{ScriptedModel, API_KEY};
use mcpq_tests::{text, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, assert_survived_small, serial, CHAOS_QUEUE, MAX_WORKER_RSS};

fn ask(env: &TestEnv, script: &str) -> String {
    let job = json!({"kind": "agent", "payload": {
        "prompt": "Use the tools, then answer.", "servers": ["echo"], "llm": {"model": script},
    }, "options": {"max_attempts": 3, "timeout": "60s"}});
    let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn a_2_gb_model_answer_fails_its_job_with_the_limit_named_and_the_worker_stays_small() {
    let _turn = serial();
    let redis = PrivateRedis::start("big-model");
    let model = ScriptedModel::start();
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-big-model",
        CHAOS_QUEUE,
        &format!(
            "[worker]\nconcurrency = 2\npoll_interval = \"20ms\"\n\
             [llm]\nbase_url = \"{}\"\nmodel = \"tools\"\napi_key_env = \"MCPQ_TEST_LLM_KEY\"\nrequest_timeout = \"30s\"\n",
            model.base_url
        ),
        "",
    );
    let mut worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_TEST_LLM_KEY", API_KEY);
    });
    let before = ask(&env, "tools");
    let huge = ask(&env, "huge");
    let after = ask(&env, "tools");
    for id in [&before, &after] {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(v["result"]["answer"], "ping and 5 checked", "{v}");
    }
    let (code, v) = env.wait_json(&huge);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "llm_error", "{v}");
    assert_eq!(v["error"]["retryable"], false, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("llm.max_response"), "{message}");
    assert!(message.contains("2097152"), "{message}");
    assert_eq!(env.status_json(&huge)["attempts"], 1);
    let rss = assert_survived_small(&mut worker);
    eprintln!(
        "chaos: 2 GB model answer: worker peak RSS {:.1} MB (bound {} MB)",
        rss as f64 / 1e6,
        MAX_WORKER_RSS / 1024 / 1024
    );
    drop(worker);
    assert_no_leftovers(&env);
}
