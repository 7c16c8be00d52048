//! Cluster-wide limits (issue 16, point 3): `rate` and `max_concurrent` of a server hold
//! across every worker, measured by the server itself (the fixture's `stamp` tool
//! records when each call arrived and ended); a wait past the deadline fails the job
//! with `timeout` at once; a 429 pause and garbage in the limiter's keys. A 429 with
//! `Retry-After` from an HTTP MCP server or from the model pauses it for every worker
//! (measured at the server / the scripted model). `[llm] rate` and `tokens` hold at the
//! model across two workers.

use std::path::Path;
use std::time::{Duration, Instant};

use mcpq_shared::queue::{limits, Keys};
use mcpq_tests::scripted_model::{Arrival, ScriptedModel, API_KEY};
use mcpq_tests::{call_job, connect, runtime, text, wait_until, HttpFixture, TestEnv, WorkerProc};
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
fn two_workers_and_a_hundred_jobs_stay_at_ten_calls_a_second_at_the_server() {
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
    // Redis admits at most 10 calls in any 1.05 s (the period and its guard). A call
    // reaches the server some time after its admission; a delay of up to D shifts the
    // bound at the server to 10 in any (1.05 s - D). On a quiet box D is a few ms and
    // no second sees more than 10; a loaded 2-core CI box has stalled calls for
    // 250 ms (12 in one second once), so the window checked allows D = 300 ms. A
    // limit held per worker instead of cluster-wide (20/s) shows ~15 in it.
    let most_second = most_in_any_window(&starts, 1_000_000);
    let most = most_in_any_window(&starts, 750_000);
    eprintln!(
        "100 calls at 10/s: {took:?}, at most {most_second} in any second and {most} in \
         any 750 ms at the server"
    );
    assert!(most <= 10, "{most} calls within 750 ms at the server");
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
    // Slots that never expire and calls from the far future (someone else's, or a
    // Redis clock that jumped back) would shut the endpoint: they are dropped.
    for (key, member) in [("holders", "forever"), ("calls", "c1"), ("calls", "c2")] {
        let _: () = redis::cmd("ZADD")
            .arg(format!("{base}:{key}"))
            .arg("+inf")
            .arg(member)
            .query(&mut redis)
            .expect("zadd");
    }
    for n in 0..5 {
        let _: () = redis::cmd("ZADD")
            .arg(format!("{base}:calls"))
            .arg("99999999999999")
            .arg(format!("future-{n}"))
            .query(&mut redis)
            .expect("zadd");
    }
    let id = env.submit_call("echo", "echo", r#"{"text":"ok"}"#, &["--timeout", "10s"]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
}

/// The time of the fixture's `429 MICROS` line in `path`, if it answered one.
fn the_429(path: &Path) -> Option<u128> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("429 ")?.parse().ok())
}

/// Two workers named `w1` and `w2` of `concurrency` each on `env`, with the scripted
/// model's key.
fn two_workers(env: &TestEnv, concurrency: u32) -> (WorkerProc, WorkerProc) {
    let start = |name: &str| {
        let concurrency = concurrency.to_string();
        env.worker_with(&["--name", name, "--concurrency", &concurrency], |cmd| {
            cmd.env("MCPQ_TEST_LLM_KEY", API_KEY);
        })
    };
    (start("w1"), start("w2"))
}

#[test]
fn a_429_from_an_http_server_pauses_it_for_every_worker_and_the_call_is_made_again() {
    let env = TestEnv::new("rate-http-429", "[worker]\npoll_interval = \"20ms\"\n");
    let log = env.dir.join("stamps.log");
    let log_text = log.display().to_string();
    let fixture = HttpFixture::start(&[("MCPQ_FIXTURE_429_ONCE", log_text.as_str())]);
    env.add_config(&format!("[servers.remote]\nurl = \"{}\"\n", fixture.url));
    // One job at a time per worker: while the first worker waits out the pause with
    // the job that got the 429, the next job must go to the other worker.
    let (w1, w2) = two_workers(&env, 1);
    let args = json!({"path": log_text}).to_string();
    let first = env.submit_call("remote", "stamp", &args, &["--max-attempts", "1"]);
    assert!(
        wait_until(Duration::from_secs(20), || the_429(&log).is_some()),
        "no 429 answered\n{}\n{}",
        w1.log_text(),
        w2.log_text()
    );
    let paused_at = the_429(&log).expect("the 429");
    // Well after the pause was written, while it lasts (Retry-After: 2).
    std::thread::sleep(Duration::from_millis(300));
    let later: Vec<String> = (0..3)
        .map(|_| env.submit_call("remote", "stamp", &args, &["--max-attempts", "1"]))
        .collect();
    for id in std::iter::once(&first).chain(&later) {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(0), "{v}\n{}\n{}", w1.log_text(), w2.log_text());
        // The 429 cost no attempt: the call was made again within the job.
        assert_eq!(env.status_json(id)["attempts"], 1);
    }
    let starts: Vec<u128> = stamps(&log)
        .into_iter()
        .filter(|(start, _)| *start)
        .map(|(_, at)| at)
        .collect();
    assert_eq!(starts.len(), 4, "each job reached the tool once");
    let waited: Vec<u128> = starts
        .iter()
        .map(|at| at.saturating_sub(paused_at) / 1000)
        .collect();
    eprintln!("tool calls at the server, ms after the 429: {waited:?}");
    assert!(
        starts.iter().all(|&at| at >= paused_at + 1_900_000),
        "a call reached the server during the pause (ms after the 429: {waited:?})"
    );
    // The worker that never saw a 429 held its calls too.
    let first_worker = env.status_json(&first)["worker"].clone();
    assert!(
        later
            .iter()
            .any(|id| env.status_json(id)["worker"] != first_worker),
        "every job ran on {first_worker}"
    );
}

/// An env whose `[llm]` is `model`, with `limits` (TOML lines) in `[llm]`.
fn llm_env(tag: &str, model: &ScriptedModel, limits: &str) -> TestEnv {
    let env = TestEnv::new(tag, "[worker]\npoll_interval = \"20ms\"\n");
    env.add_config(&format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"usage:15\"\napi_key_env = \"MCPQ_TEST_LLM_KEY\"\nrequest_timeout = \"10s\"\n{limits}\n",
        model.base_url
    ));
    env
}

/// Submits an agent job asking the model `script` once; returns its id.
fn ask(env: &TestEnv, script: &str) -> String {
    let job = json!({"kind": "agent", "payload": {
        "prompt": "Answer.", "servers": ["echo"], "llm": {"model": script},
    }, "options": {"max_attempts": 1, "timeout": "60s"}});
    let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Arrival times in µs since the first, sorted.
fn since_first(arrivals: &[Arrival]) -> Vec<u128> {
    let mut at: Vec<Instant> = arrivals.iter().map(|a| a.at).collect();
    at.sort();
    at.iter()
        .map(|t| t.duration_since(at[0]).as_micros())
        .collect()
}

#[test]
fn llm_rate_five_per_second_holds_at_the_model_across_two_workers() {
    let model = ScriptedModel::start();
    let env = llm_env("rate-llm", &model, "rate = \"5/s\"");
    let (w1, w2) = two_workers(&env, 4);
    let ids: Vec<String> = (0..15).map(|_| ask(&env, "usage:15")).collect();
    for id in &ids {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(0), "{v}\n{}\n{}", w1.log_text(), w2.log_text());
    }
    let arrivals = since_first(&model.arrivals_for("usage:15"));
    assert_eq!(arrivals.len(), 15, "one request per job");
    // Calls are counted when admitted, at the worker; they reach the model a few ms
    // later, by varying delays. The limiter's guard (5 % of the period) covers that on
    // an idle machine; on a loaded 2-core one a request can take longer, so the window
    // measured here is 100 ms short of a second.
    let most = most_in_any_window(&arrivals, 900_000);
    let took = arrivals.last().copied().unwrap_or(0);
    eprintln!(
        "15 model requests at 5/s: at most {most} in any 900 ms, ms from the first: {:?}",
        arrivals.iter().map(|a| a / 1000).collect::<Vec<_>>()
    );
    assert!(most <= 5, "{most} requests within 900 ms at the model");
    // Three windows' worth: without the limit, 8 slots send them all at once.
    assert!(took >= 1_800_000, "all within {took} µs");
    let workers: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| env.status_json(id)["worker"].to_string())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both workers asked the model: {workers:?}"
    );
}

#[test]
fn llm_tokens_are_counted_from_the_reported_usage_across_two_workers() {
    let model = ScriptedModel::start();
    let env = llm_env("rate-tokens", &model, "tokens = \"1000/s\"");
    // One request in flight per worker: at most two answers are not yet debited when
    // a request is admitted.
    let (w1, w2) = two_workers(&env, 1);
    let ids: Vec<String> = (0..12).map(|_| ask(&env, "usage:600")).collect();
    for id in &ids {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(0), "{v}\n{}\n{}", w1.log_text(), w2.log_text());
    }
    let arrivals = since_first(&model.arrivals_for("usage:600"));
    assert_eq!(arrivals.len(), 12);
    eprintln!(
        "12 requests of 600 tokens at 1000/s, ms from the first: {:?}",
        arrivals.iter().map(|a| a / 1000).collect::<Vec<_>>()
    );
    // A token bucket of 1000 refilled at 1000/s, debited after each answer: by the
    // time the k-th request (from 1) goes, at most 1000 + 1000/s x t tokens were
    // admitted, plus what the answers still in flight (one per worker) and the one
    // that overdrew the bucket add: 3 x 600.
    for (k, &at) in arrivals.iter().enumerate() {
        let admitted = (k as u128 + 1) * 600;
        let earliest_ms = admitted.saturating_sub(1000 + 3 * 600);
        assert!(
            at / 1000 + 50 >= earliest_ms,
            "request {} of 600 tokens went at {} ms, before {earliest_ms} ms: {arrivals:?}",
            k + 1,
            at / 1000
        );
    }
    // Without the limit, all 12 would go within a second.
    assert!(arrivals[11] >= 4_000_000, "{arrivals:?}");
}

#[test]
fn a_429_from_the_model_pauses_every_workers_model_calls() {
    let model = ScriptedModel::start();
    let env = llm_env("rate-llm-429", &model, "");
    let (w1, w2) = two_workers(&env, 1);
    let first = ask(&env, "busy:2");
    let rejected = || {
        model
            .arrivals_for("busy:2")
            .into_iter()
            .find(|a| a.status == 429)
    };
    assert!(
        wait_until(Duration::from_secs(20), || rejected().is_some()),
        "no 429\n{}\n{}",
        w1.log_text(),
        w2.log_text()
    );
    let paused_at = rejected().expect("the 429").at;
    std::thread::sleep(Duration::from_millis(300));
    let later: Vec<String> = (0..3).map(|_| ask(&env, "busy:2")).collect();
    for id in std::iter::once(&first).chain(&later) {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(0), "{v}\n{}\n{}", w1.log_text(), w2.log_text());
    }
    let answered: Vec<Duration> = model
        .arrivals_for("busy:2")
        .into_iter()
        .filter(|a| a.status == 200)
        .map(|a| a.at.duration_since(paused_at))
        .collect();
    eprintln!("model requests after the 429: {answered:?}");
    assert_eq!(answered.len(), 4, "{answered:?}");
    assert!(
        answered
            .iter()
            .all(|&after| after >= Duration::from_millis(1900)),
        "a request reached the model during the pause: {answered:?}"
    );
    let first_worker = env.status_json(&first)["worker"].clone();
    assert!(
        later
            .iter()
            .any(|id| env.status_json(id)["worker"] != first_worker),
        "every job ran on {first_worker}"
    );
}
