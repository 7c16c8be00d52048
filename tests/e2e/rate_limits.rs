//! Cluster-wide limits (issue 16, point 3): `rate` and `max_concurrent` of a server hold
//! across every worker, measured by the server itself (the fixture's `stamp` tool
//! records when each call arrived and ended); a wait past the deadline fails the job
//! with `timeout` at once; a 429 pause and garbage in the limiter's keys.

use std::path::Path;
use std::time::{Duration, Instant};

use mcpq_shared::queue::{limits, Keys};
use mcpq_tests::{call_job, connect, runtime, TestEnv};
use serde_json::json;

/// The fixture's stamps in `path`: (is start, microseconds), sorted by time.
fn stamps(path: &Path) -> Vec<(bool, u128)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<(bool, u128)> = text
        .lines()
        .filter_map(|line| {
            let (what, at) = line.split_once(' ')?;
            Some((what == "start", at.parse().ok()?))
        })
        .collect();
    out.sort_by_key(|&(_, at)| at);
    out
}

/// The most calls that arrived within any window of `window_us` (half-open).
fn most_in_any_window(starts: &[u128], window_us: u128) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (i, &at) in starts.iter().enumerate() {
        while starts[first] + window_us <= at {
            first += 1;
        }
        most = most.max(i + 1 - first);
    }
    most
}

#[test]
fn two_workers_and_a_hundred_jobs_never_exceed_ten_calls_in_any_second() {
    let env = TestEnv::with_echo(
        "rate-10s",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "rate = \"10/s\"\nmax_sessions = 2\nmax_in_flight = 8",
    );
    let log = env.dir.join("stamps.log");
    let (w1, w2) = (env.worker(&[]), env.worker(&[]));
    let jobs: Vec<_> = (0..100)
        .map(|_| call_job("echo", "stamp", json!({"path": log.display().to_string()})))
        .collect();
    let started = Instant::now();
    env.submit_jobs(&jobs);
    assert!(
        env.wait_finished(100, Duration::from_secs(90)),
        "{}\n{}",
        w1.log_text(),
        w2.log_text()
    );
    let took = started.elapsed();
    let counts = env.status_counts();
    assert_eq!(counts.get("succeeded"), Some(&100), "{counts:?}");
    let starts: Vec<u128> = stamps(&log)
        .into_iter()
        .filter(|(start, _)| *start)
        .map(|(_, at)| at)
        .collect();
    assert_eq!(starts.len(), 100, "every job called the server once");
    let most = most_in_any_window(&starts, 1_000_000);
    eprintln!("100 calls at 10/s: {took:?}, at most {most} in any second at the server");
    assert!(most <= 10, "{most} calls within one second at the server");
    // Without the limit, 16 slots would finish 100 instant calls in well under a second.
    assert!(took >= Duration::from_secs(9), "took only {took:?}");
    // Waiting is no attempt: every job succeeded at its first.
    for job in jobs.iter().step_by(9) {
        let s = env.status_json(&job.id.to_string());
        assert_eq!(s["attempts"], 1, "{s}");
    }
}

#[test]
fn max_concurrent_two_holds_across_two_workers() {
    let env = TestEnv::with_echo(
        "rate-conc",
        "[worker]\nconcurrency = 4\npoll_interval = \"20ms\"\n",
        "max_concurrent = 2\nmax_sessions = 4",
    );
    let log = env.dir.join("stamps.log");
    let _w1 = env.worker(&[]);
    let _w2 = env.worker(&[]);
    let jobs: Vec<_> = (0..12)
        .map(|_| {
            call_job(
                "echo",
                "stamp",
                json!({"path": log.display().to_string(), "ms": 200}),
            )
        })
        .collect();
    env.submit_jobs(&jobs);
    assert!(env.wait_finished(12, Duration::from_secs(60)));
    assert_eq!(env.status_counts().get("succeeded"), Some(&12));
    let (mut now, mut most) = (0i32, 0i32);
    // Sorted by time; at equal times an end comes first (false < true).
    for (start, _) in stamps(&log) {
        now += if start { 1 } else { -1 };
        most = most.max(now);
    }
    assert_eq!(most, 2, "most calls in flight at the server at once");
}

#[test]
fn a_wait_past_the_deadline_fails_the_job_with_timeout_at_once() {
    let env = TestEnv::with_echo("rate-deadline", "", "rate = \"1/min\"");
    let _worker = env.worker(&[]);
    let first = env.submit_call("echo", "echo", r#"{"text":"one"}"#, &[]);
    assert_eq!(env.wait_json(&first).0, Some(0));
    let asked = Instant::now();
    let second = env.submit_call(
        "echo",
        "echo",
        r#"{"text":"two"}"#,
        &["--timeout", "20s", "--max-attempts", "1"],
    );
    let (code, v) = env.wait_json(&second);
    assert_eq!(code, Some(1), "{v}");
    let s = env.status_json(&second);
    let error = &s["history"][0]["error"];
    assert_eq!(error["kind"], "timeout", "{s}");
    let message = error["message"].as_str().unwrap_or("");
    assert!(
        message.contains("rate") && message.contains("server:echo"),
        "{message}"
    );
    // It gave up when it knew, not at the deadline 20 s later.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_pause_written_for_a_429_holds_every_workers_calls() {
    let env = TestEnv::with_echo("rate-pause", "", "rate = \"1000/s\"");
    let _worker = env.worker(&[]);
    // Warm up: the server is started and the worker idle.
    let warm = env.submit_call("echo", "echo", r#"{"text":"warm"}"#, &[]);
    assert_eq!(env.wait_json(&warm).0, Some(0));
    let keys = Keys::new(env.namespace.clone());
    runtime().block_on(async {
        limits::pause(
            connect().await,
            &keys,
            "server:echo",
            Duration::from_secs(2),
        )
        .await
        .expect("pause");
    });
    let paused_at = Instant::now();
    let id = env.submit_call("echo", "echo", r#"{"text":"later"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
    assert!(
        paused_at.elapsed() >= Duration::from_millis(1900),
        "the call did not wait for the pause: {:?}",
        paused_at.elapsed()
    );
    assert_eq!(env.status_json(&id)["attempts"], 1);
}

#[test]
fn garbage_in_the_limiter_keys_is_reset_not_a_crash_or_a_hang() {
    let env = TestEnv::with_echo("rate-garbage", "", "rate = \"5/s\"\nmax_concurrent = 1");
    let mut redis = env.redis();
    let base = format!("{{{}}}:limit:server:echo", env.namespace);
    let _: () = redis::cmd("SET")
        .arg(format!("{base}:state"))
        .arg("not a hash")
        .query(&mut redis)
        .expect("set");
    let _: () = redis::cmd("HSET")
        .arg(format!("{base}:calls"))
        .arg("a")
        .arg("b")
        .query(&mut redis)
        .expect("hset");
    let _: () = redis::cmd("SET")
        .arg(format!("{base}:holders"))
        .arg("x")
        .query(&mut redis)
        .expect("set");
    let worker = env.worker(&[]);
    let id = env.submit_call("echo", "echo", r#"{"text":"ok"}"#, &["--timeout", "20s"]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    assert!(worker.log_text().contains("reset"), "{}", worker.log_text());
    // A hostile pause far in the future is not obeyed either.
    let _: () = redis::cmd("HSET")
        .arg(format!("{base}:state"))
        .arg("paused_until")
        .arg("99999999999999999")
        .query(&mut redis)
        .expect("hset");
    let id = env.submit_call("echo", "echo", r#"{"text":"ok"}"#, &["--timeout", "20s"]);
    assert_eq!(env.wait_json(&id).0, Some(0));
}
