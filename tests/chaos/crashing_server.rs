//! A server that crashes on every call: the job is dead after max_attempts, with each
//! attempt's error and the server's last words.

use std::time::Duration;

use mcpq_tests::TestEnv;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, serial, CHAOS_QUEUE};

#[test]
fn a_server_that_always_crashes_ends_dead_after_max_attempts() {
    let _turn = serial();
    let redis = PrivateRedis::start("crash");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-crash",
        CHAOS_QUEUE,
        "[defaults]\nrestart_backoff = \"10ms\"\ncrash_loop_threshold = 10\n",
        "",
    );
    let worker = env.worker(&[]);
    let id = env.submit_call("echo", "crash", r#"{"code":9}"#, &["--max-attempts", "4"]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}\n{}", worker.log_text());
    let s = env.status_json(&id);
    assert_eq!(s["status"], "dead", "{s}");
    let history = s["history"].as_array().expect("history");
    let outcomes: Vec<&str> = history
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "failed", "dead"], "{s}");
    for a in history {
        assert_eq!(a["error"]["kind"], "server_exited", "{a}");
        assert!(
            a["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("exit code 9"),
            "{a}"
        );
        assert!(
            a["error"]["stderr_tail"]
                .as_str()
                .unwrap_or("")
                .contains("crashing on purpose"),
            "{a}"
        );
    }
    assert_eq!(env.fixture_pids().len(), 4, "one server per attempt");
    let out = env.mcpq(&["dlq", "list", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    drop(worker);
    std::thread::sleep(Duration::from_millis(100));
    assert_no_leftovers(&env);
}
