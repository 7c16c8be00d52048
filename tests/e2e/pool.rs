//! The warm session pool: reuse, multiplexing, growth and shrinking, replacement,
//! cancellation, limits.

use std::time::Duration;

use mcpq_tests::{call_job, group_members, process_alive, wait_until, TestEnv};
use serde_json::json;

/// Start-to-finish span of several finished jobs, in ms (from their status records).
fn span_millis(env: &TestEnv, ids: &[String]) -> u64 {
    let records: Vec<_> = ids.iter().map(|id| env.status_json(id)).collect();
    let start = records
        .iter()
        .filter_map(|r| r["started_at"].as_u64())
        .min();
    let end = records
        .iter()
        .filter_map(|r| r["finished_at"].as_u64())
        .max();
    end.expect("finished") - start.expect("started")
}

/// Runs `n` jobs `add(i, 0.5)` through one worker of `env` and checks that all
/// succeeded, with the right sums.
fn run_adds(env: &TestEnv, n: usize) {
    let worker = env.worker(&[]);
    let jobs: Vec<_> = (0..n)
        .map(|i| call_job("echo", "add", json!({"a": i, "b": 0.5})))
        .collect();
    env.submit_jobs(&jobs);
    assert!(
        env.wait_finished(n, Duration::from_secs(120)),
        "{}",
        worker.log_text()
    );
    assert_eq!(env.status_counts().get("succeeded"), Some(&n));
    for (i, job) in jobs.iter().enumerate().step_by(23) {
        let (code, v) = env.wait_json(&job.id.to_string());
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(
            v["result"][0]["result"]["content"][0]["text"],
            format!("{i}.5")
        );
    }
}

#[test]
fn five_hundred_jobs_on_two_pooled_sessions_start_exactly_two_servers() {
    // Serial (one call per session), so that 8 jobs at once need every session.
    let env = TestEnv::with_echo(
        "pool-500",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "max_sessions = 2\nmax_in_flight = 1",
    );
    run_adds(&env, 500);
    assert_eq!(env.fixture_pids().len(), 2, "servers started for 500 jobs");
}

/// Issue 18: with the defaults, 8 jobs at once share one warm server (or few, if the
/// machine is so loaded that an echo call takes longer than `grow_after`), not one
/// server per job slot.
#[test]
fn a_default_pool_runs_200_jobs_of_8_at_once_on_one_server() {
    let env = TestEnv::new(
        "pool-default",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
    );
    run_adds(&env, 200);
    let spawned = env.fixture_pids().len();
    assert!(
        (1..=2).contains(&spawned),
        "{spawned} servers started for 200 jobs, 8 at once"
    );
}

/// Answers of the fixture's `overlap` tool: (pid, most calls it ran at once).
fn overlaps(env: &TestEnv, ids: &[String]) -> Vec<(u64, u64)> {
    ids.iter()
        .map(|id| {
            let (code, v) = env.wait_json(id);
            assert_eq!(code, Some(0), "{v}");
            let text = v["result"][0]["result"]["content"][0]["text"]
                .as_str()
                .expect("text");
            let answer: serde_json::Value = serde_json::from_str(text).expect("overlap json");
            (
                answer["pid"].as_u64().expect("pid"),
                answer["most"].as_u64().expect("most"),
            )
        })
        .collect()
}

#[test]
fn a_serial_server_gets_one_call_at_a_time_per_session() {
    let env = TestEnv::with_echo(
        "pool-serial",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "max_in_flight = 1",
    );
    let _worker = env.worker(&[]);
    let jobs: Vec<_> = (0..24)
        .map(|_| call_job("echo", "overlap", json!({"ms": 200})))
        .collect();
    let ids = env.submit_jobs(&jobs);
    let answers = overlaps(&env, &ids);
    for (pid, most) in &answers {
        assert_eq!(*most, 1, "server {pid} ran {most} calls at once");
    }
    // The jobs ran side by side, on several sessions: one per concurrent call.
    let servers: std::collections::BTreeSet<u64> = answers.iter().map(|a| a.0).collect();
    assert!(servers.len() >= 2, "{servers:?}");
    assert!(env.fixture_pids().len() <= 8);
}

#[test]
fn a_serial_server_makes_the_pool_grow_and_the_extra_sessions_close_after_the_load() {
    // Default max_in_flight and grow_after: the pool does not know the server is serial.
    let env = TestEnv::with_echo(
        "pool-grow",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "min_sessions = 1\nidle_ttl = \"2s\"",
    );
    let worker = env.worker(&[]);
    assert!(wait_until(Duration::from_secs(10), || env
        .fixture_pids()
        .len()
        == 1));
    let jobs: Vec<_> = (0..48)
        .map(|_| call_job("echo", "sleep_serial", json!({"ms": 100})))
        .collect();
    env.submit_jobs(&jobs);
    assert!(
        env.wait_finished(48, Duration::from_secs(60)),
        "{}",
        worker.log_text()
    );
    assert_eq!(env.status_counts().get("succeeded"), Some(&48));
    // 48 x 100 ms in turn on one session would take 4.8 s; the calls queued, so the
    // pool started more sessions (one at a time, up to max_sessions = 8).
    let spawned = env.fixture_pids().len();
    assert!(
        (3..=8).contains(&spawned),
        "{spawned} servers for a serial server under 8 jobs at once"
    );
    // Once the load is gone, the grown sessions close (idle_ttl, here shorter than the
    // 60 s for grown sessions); min_sessions stays.
    let alive = || {
        env.fixture_pids()
            .into_iter()
            .filter(|&p| process_alive(p))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(15), || alive() == 1),
        "{} sessions alive after the load",
        alive()
    );
}

#[test]
fn eight_calls_multiplexed_on_one_session_run_concurrently() {
    let env = TestEnv::with_echo(
        "pool-mux",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "max_sessions = 1\nmax_in_flight = 8",
    );
    let _worker = env.worker(&[]);
    let jobs: Vec<_> = (0..8)
        .map(|_| call_job("echo", "sleep_ms", json!({"ms": 500})))
        .collect();
    env.submit_jobs(&jobs);
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    for id in &ids {
        assert_eq!(env.wait_json(id).0, Some(0));
    }
    let span = span_millis(&env, &ids);
    // One after the other would take 4 s.
    assert!(span < 2000, "8 x 500 ms on one session took {span} ms");
    assert_eq!(env.fixture_pids().len(), 1);
}

#[test]
fn a_pooled_server_killed_between_jobs_is_replaced_and_the_next_job_succeeds() {
    let env = TestEnv::new("pool-kill-idle", "");
    let _worker = env.worker(&[]);
    let id = env.submit_call("echo", "echo", r#"{"text":"one"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
    let first = env.fixture_pids()[0];
    // SAFETY: kill(2) on a fixture server this test's worker started.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(5), || !process_alive(first)));
    let id = env.submit_call("echo", "echo", r#"{"text":"two"}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["result"][0]["result"]["content"][0]["text"], "two");
    assert_eq!(env.fixture_pids().len(), 2);
}

#[test]
fn a_pooled_server_killed_during_a_call_fails_that_job_and_is_replaced() {
    let env = TestEnv::new("pool-kill-busy", "");
    let _worker = env.worker(&[]);
    let id = env.submit_call(
        "echo",
        "sleep_ms",
        r#"{"ms":30000}"#,
        &["--max-attempts", "1"],
    );
    assert!(wait_until(Duration::from_secs(10), || {
        env.status_json(&id)["status"] == "running" && !env.fixture_pids().is_empty()
    }));
    std::thread::sleep(Duration::from_millis(200));
    let first = env.fixture_pids()[0];
    // SAFETY: kill(2) on a fixture server this test's worker started.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "server_exited", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("SIGKILL"));
    let id = env.submit_call("echo", "echo", r#"{"text":"after"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
    assert_eq!(env.fixture_pids().len(), 2);
}

#[test]
fn a_timed_out_call_on_a_multiplexed_session_leaves_the_others_to_finish() {
    // The default max_in_flight (16), all on one session: 15 slow calls and one that
    // times out.
    let env = TestEnv::with_echo(
        "pool-cancel",
        "[worker]\nconcurrency = 16\npoll_interval = \"20ms\"\n[defaults]\nkill_grace = \"500ms\"\n",
        "max_sessions = 1",
    );
    let _worker = env.worker(&[]);
    let slow: Vec<_> = (0..15)
        .map(|_| call_job("echo", "overlap", json!({"ms": 3000})))
        .collect();
    env.submit_jobs(&slow);
    assert!(wait_until(Duration::from_secs(10), || {
        slow.iter()
            .all(|j| env.status_json(&j.id.to_string())["status"] == "running")
    }));
    let doomed = env.submit_call(
        "echo",
        "sleep_forever",
        "{}",
        &["--timeout", "1s", "--max-attempts", "1"],
    );
    let (code, v) = env.wait_json(&doomed);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "timeout", "{v}");
    for job in &slow {
        let (code, v) = env.wait_json(&job.id.to_string());
        assert_eq!(code, Some(0), "a cancellation disturbed another call: {v}");
    }
    // They really were in flight together on that session.
    let ids: Vec<String> = slow.iter().map(|j| j.id.to_string()).collect();
    let most = overlaps(&env, &ids).iter().map(|a| a.1).max();
    assert_eq!(most, Some(15));
    // One session served all sixteen; once its other calls were done, the session of the
    // cancelled call was stopped.
    assert_eq!(env.fixture_pids().len(), 1);
    let pgid = env.fixture_groups()[0];
    assert!(
        wait_until(Duration::from_secs(5), || group_members(pgid).is_empty()),
        "the retired session's server is still running"
    );
}

#[test]
fn an_oversized_answer_on_a_multiplexed_session_fails_only_its_own_job() {
    // One session, 8 calls at once: 7 slow echoes share it with one answer of 200 kB
    // against a limit of 64 KiB. Only that job fails (result_too_large, once); the
    // others succeed at their first attempt on the same server, which serves on.
    let env = TestEnv::custom(
        "pool-big-shared",
        &format!("{}max_result = 65536\n", mcpq_tests::TEST_QUEUE),
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "max_sessions = 1\nmax_in_flight = 8",
    );
    let _worker = env.worker(&[]);
    let slow: Vec<_> = (0..7)
        .map(|_| call_job("echo", "overlap", json!({"ms": 1500})))
        .collect();
    env.submit_jobs(&slow);
    assert!(wait_until(Duration::from_secs(10), || {
        slow.iter()
            .all(|j| env.status_json(&j.id.to_string())["status"] == "running")
    }));
    let big = env.submit_call("echo", "big_answer", r#"{"bytes": 200000}"#, &[]);
    let (code, v) = env.wait_json(&big);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "result_too_large", "{v}");
    assert_eq!(v["error"]["retryable"], false, "{v}");
    assert!(v.to_string().contains("65536"), "{v}");
    assert_eq!(env.status_json(&big)["attempts"], 1);
    for job in &slow {
        let id = job.id.to_string();
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(0), "an innocent call failed: {v}");
        assert_eq!(env.status_json(&id)["attempts"], 1, "retried: {v}");
    }
    let ids: Vec<String> = slow.iter().map(|j| j.id.to_string()).collect();
    let most = overlaps(&env, &ids).iter().map(|a| a.1).max();
    assert_eq!(most, Some(7), "they shared the session");
    // The session serves on: same server, one more call.
    let id = env.submit_call("echo", "echo", r#"{"text":"still here"}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(env.fixture_pids().len(), 1, "the session was not replaced");
}

#[test]
fn a_full_pool_fails_the_job_at_its_deadline_with_pool_exhausted() {
    let env = TestEnv::with_echo(
        "pool-exhausted",
        "[worker]\nconcurrency = 2\npoll_interval = \"20ms\"\n",
        "max_sessions = 1\nmax_in_flight = 1",
    );
    let _worker = env.worker(&[]);
    let busy = env.submit_call("echo", "sleep_ms", r#"{"ms":3000}"#, &[]);
    assert!(wait_until(Duration::from_secs(10), || {
        env.status_json(&busy)["status"] == "running"
    }));
    let id = env.submit_call(
        "echo",
        "echo",
        r#"{"text":"x"}"#,
        &["--timeout", "1s", "--max-attempts", "1"],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "pool_exhausted", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("max_sessions"));
    assert_eq!(env.wait_json(&busy).0, Some(0));
}

#[test]
fn min_sessions_start_with_the_worker_and_idle_ones_beyond_it_are_closed() {
    let env = TestEnv::with_echo(
        "pool-min-idle",
        "[worker]\nconcurrency = 4\npoll_interval = \"20ms\"\n",
        "min_sessions = 1\nidle_ttl = \"1s\"\nmax_in_flight = 1",
    );
    let _worker = env.worker(&[]);
    // Started with the worker, before any job.
    assert!(wait_until(Duration::from_secs(10), || env
        .fixture_pids()
        .len()
        == 1));
    // The worker's first report has been made (it lists the warm session's tools,
    // holding it for a moment, every few seconds): two jobs arriving just then would
    // find it busy and rightly start a third session.
    let mut redis = env.redis();
    let servers = format!("{{{}}}:servers", env.namespace);
    assert!(wait_until(Duration::from_secs(10), || {
        redis::cmd("HGET")
            .arg(&servers)
            .arg("echo")
            .query::<Option<String>>(&mut redis)
            .ok()
            .flatten()
            .is_some_and(|r| r.contains("\"sessions\":1"))
    }));
    // Two jobs at once need a second session...
    let jobs: Vec<_> = (0..2)
        .map(|_| call_job("echo", "sleep_ms", json!({"ms": 300})))
        .collect();
    env.submit_jobs(&jobs);
    for job in &jobs {
        assert_eq!(env.wait_json(&job.id.to_string()).0, Some(0));
    }
    assert_eq!(env.fixture_pids().len(), 2);
    // ... and once both are idle for idle_ttl, one is closed: min_sessions stays.
    let alive = || {
        env.fixture_pids()
            .into_iter()
            .filter(|&p| process_alive(p))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || alive() == 1),
        "{} sessions alive after idle_ttl",
        alive()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(alive(), 1, "min_sessions is kept");
}

#[test]
fn a_session_is_replaced_after_max_calls() {
    let env = TestEnv::with_echo("pool-max-calls", "", "max_calls = 3");
    let _worker = env.worker(&[]);
    for i in 0..7 {
        let args = json!({"text": format!("{i}")}).to_string();
        let id = env.submit_call("echo", "echo", &args, &[]);
        assert_eq!(env.wait_json(&id).0, Some(0));
    }
    assert_eq!(env.fixture_pids().len(), 3, "7 calls at 3 per session");
}

#[test]
fn an_idle_session_that_stopped_answering_fails_its_ping_and_is_replaced() {
    let env = TestEnv::with_echo("pool-ping", "", "idle_ttl = \"4s\"\ncall_timeout = \"1s\"");
    let _worker = env.worker(&[]);
    let id = env.submit_call("echo", "freeze_after", r#"{"ms":100}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
    // Idle for more than idle_ttl / 2 (and the server frozen): the next checkout pings,
    // the ping fails, and the job runs on a new session instead of timing out.
    std::thread::sleep(Duration::from_millis(2500));
    let id = env.submit_call("echo", "echo", r#"{"text":"fresh"}"#, &["--timeout", "20s"]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["result"][0]["result"]["content"][0]["text"], "fresh");
    let pids = env.fixture_pids();
    assert_eq!(pids.len(), 2);
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pids[0])),
        "the frozen server was not stopped"
    );
}
