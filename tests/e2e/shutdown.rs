use std::time::{Duration, Instant};

use mcpq_tests::{process_alive, text, wait_until, TestEnv};

#[test]
fn sigterm_with_jobs_running_exits_0_within_the_grace_period_and_leaves_no_process() {
    let env = TestEnv::new(
        "shutdown",
        "[worker]\nshutdown_grace = \"2s\"\n[defaults]\nkill_grace = \"500ms\"\n",
    );
    let mut worker = env.worker(&[]);
    let short = env.submit_call("echo", "sleep_ms", r#"{"ms":800}"#, &[]);
    let long = env.submit_call("echo", "sleep_ms", r#"{"ms":600000}"#, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || env.fixture_pids().len() == 2),
        "both jobs started"
    );
    // Both servers are running the calls now.
    assert!(wait_until(Duration::from_secs(5), || {
        let out = env.mcpq(&["status", &long]);
        text(&out.stdout).contains("running")
    }));

    let sent = Instant::now();
    worker.signal(libc::SIGTERM);
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .expect("worker exits");
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", worker.log_text());
    // grace 2 s + kill; a hang would blow far past this (not a speed target).
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");

    // The short job finished inside the grace period.
    let out = env.mcpq(&["status", &short]);
    assert!(
        text(&out.stdout).contains("succeeded"),
        "{}",
        text(&out.stdout)
    );
    // No server process of this worker is left (nor a zombie of it).
    for pid in env.fixture_pids() {
        assert!(
            wait_until(Duration::from_secs(5), || !process_alive(pid)),
            "server {pid} outlived the worker"
        );
    }
}
