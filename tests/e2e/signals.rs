use mcpq_tests::{start_with_hostile_signal_state, text, TestEnv};
use serde_json::Value;

fn signal_state(env: &TestEnv) -> Value {
    let id = env.submit(&["agent", "--server", "echo", "--tool", "signal_state"]);
    let out = env.mcpq(&["wait", &id, "--timeout", "30s", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
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
        serde_json::json!([]),
        "blocked signals in the server: {state}"
    );
    assert_eq!(
        state["ignored"],
        serde_json::json!([]),
        "ignored signals in the server: {state}"
    );
    // Own session and process group, not the worker's.
    assert_eq!(state["pgid"], state["pid"]);
    assert_eq!(state["sid"], state["pid"]);
    assert_ne!(state["pgid"].as_u64(), Some(u64::from(worker.pid())));
    // Only stdin, stdout and stderr: no descriptor of the worker (its log, Redis sockets).
    assert_eq!(
        state["inherited_fds"],
        serde_json::json!([0, 1, 2]),
        "{state}"
    );
    // The worker said what it reset.
    assert!(worker.wait_log(
        "inherited signal state was reset",
        std::time::Duration::from_secs(5)
    ));
    let log = worker.log_text();
    assert!(
        log.contains("SIGCHLD") && log.contains("SIGTERM") && log.contains("SIGINT"),
        "{log}"
    );
}

#[test]
fn a_worker_started_with_sigterm_ignored_still_stops_on_sigterm() {
    let env = TestEnv::new("sigterm-ignored", "");
    let mut worker = env.worker_with(&[], start_with_hostile_signal_state);
    assert!(
        worker.wait_log("worker started", std::time::Duration::from_secs(10)),
        "{}",
        worker.log_text()
    );
    worker.signal(libc::SIGTERM);
    let status = worker
        .wait_exit(std::time::Duration::from_secs(15))
        .expect("worker exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", worker.log_text());
}
