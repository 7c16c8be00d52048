use std::time::{Duration, Instant};

use mcpq_tests::{process_alive, text, wait_until, TestEnv};

#[test]
fn sigterm_with_jobs_running_exits_0_within_the_grace_period_and_leaves_no_process() {
    // Also: a_job_cut_off_by_shutdown_is_released_and_runs_again_at_once (GUARANTEES.md 7).
    // Serial sessions: each job on its own server.
    let env = TestEnv::with_echo(
        "shutdown",
        "[worker]\nshutdown_grace = \"2s\"\n[defaults]\nkill_grace = \"500ms\"\n",
        "max_in_flight = 1",
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
    // The long job was released, not left running under a lease: it is queued again,
    // its cut-off attempt recorded and not counted as a failure.
    let v = env.status_json(&long);
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["failures"], 0, "{v}");
    assert_eq!(v["history"][0]["outcome"], "released", "{v}");
    // A new worker starts it at once (the lease is 30 s; a leftover lease would wait).
    let _next = env.worker(&[]);
    assert!(
        wait_until(Duration::from_secs(5), || env.status_json(&long)
            ["attempts"]
            == 2),
        "the released job did not run again at once: {}",
        env.status_json(&long)
    );
}
