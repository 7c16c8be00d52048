use std::time::Duration;

use mcpq_tests::{start_with_hostile_signal_state, TestEnv};
use serde_json::{json, Value};

fn signal_state(env: &TestEnv) -> Value {
    let id = env.submit_call("echo", "signal_state", "{}", &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    let state = v["result"][0]["result"]["content"][0]["text"]
        .as_str()
        .expect("text");
    serde_json::from_str(state).expect("signal_state JSON")
}

#[test]
fn child_signal_state_is_clean_even_when_the_worker_inherited_a_hostile_one() {
    let env = TestEnv::new("signals", "");
    let worker = env.worker_with(&[], start_with_hostile_signal_state);
    let state = signal_state(&env);
    assert_eq!(
        state["blocked"],
        json!([]),
        "blocked signals in the server: {state}"
    );
    assert_eq!(
        state["ignored"],
        json!([]),
        "ignored signals in the server: {state}"
    );
    // Own session and process group, not the worker's.
    assert_eq!(state["pgid"], state["pid"]);
    assert_eq!(state["sid"], state["pid"]);
    assert_ne!(state["pgid"].as_u64(), Some(u64::from(worker.pid())));
    // Only stdin, stdout and stderr: no descriptor of the worker (its log, Redis sockets).
    assert_eq!(state["inherited_fds"], json!([0, 1, 2]), "{state}");
    // The worker said what it reset.
    assert!(worker.wait_log("inherited signal state was reset", Duration::from_secs(5)));
    let log = worker.log_text();
    for sig in ["SIGCHLD", "SIGTERM", "SIGINT", "SIGHUP"] {
        assert!(log.contains(sig), "{sig} not reported as reset: {log}");
    }
}

#[test]
fn a_worker_started_by_a_hostile_parent_still_times_out_jobs_and_stops_on_sigterm() {
    let env = TestEnv::new("hostile", "[defaults]\nkill_grace = \"500ms\"\n");
    let mut worker = env.worker_with(&[], start_with_hostile_signal_state);
    // Jobs complete...
    let id = env.submit_call("echo", "echo", r#"{"text":"ok"}"#, &[]);
    assert_eq!(
        env.mcpq(&["wait", &id, "--timeout", "30s"]).status.code(),
        Some(0)
    );
    // ... timeouts fire (a blocked SIGCHLD or an ignored one would break reaping) ...
    let id = env.submit_call("echo", "sleep_forever", "{}", &["--timeout", "1s"]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "timeout", "{v}");
    // ... and SIGTERM, ignored by the parent, still stops the worker gracefully.
    worker.signal(libc::SIGTERM);
    let status = worker
        .wait_exit(Duration::from_secs(15))
        .expect("worker exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", worker.log_text());
}
