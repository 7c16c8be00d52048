//! A worker's `GET /metrics` (`[worker] metrics_listen`): fetched over real HTTP and
//! parsed by the reference parser (pip `prometheus-client`, in scripts/test-deps'
//! venv), its counters equal to what the test made the worker do.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use mcpq_tests::prometheus::scrape;
use mcpq_tests::{deps, free_port, text, wait_until, wait_until_every, TestEnv};

#[test]
fn metrics_parse_with_the_prometheus_parser_and_count_what_the_worker_did() {
    let Some(deps) = deps("venv") else { return };
    let python = deps.join("venv/bin/python");
    let addr = format!("127.0.0.1:{}", free_port());
    let env = TestEnv::new(
        "metrics",
        &format!("[worker]\nconcurrency = 1\nmetrics_listen = \"{addr}\"\n"),
    );
    let worker = env.worker(&[]);
    assert!(
        worker.wait_log("serving metrics", Duration::from_secs(20)),
        "{}",
        worker.log_text()
    );
    let url = format!("http://{addr}/metrics");

    // One job at a time, so one pooled session: the job after the crash must start the
    // server again.
    // What the worker does: 3 jobs succeed, 2 fail for good, then the server crashes
    // under a job (dead too) and the next job restarts it, and 1 job is cancelled
    // mid-call.
    let ok: Vec<String> = (0..3)
        .map(|i| env.submit_call("echo", "echo", &format!(r#"{{"text":"{i}"}}"#), &[]))
        .collect();
    let dead: Vec<String> = (0..2)
        .map(|_| {
            env.submit_call(
                "echo",
                "fail",
                r#"{"message":"no"}"#,
                &["--max-attempts", "1"],
            )
        })
        .collect();
    for id in ok.iter().chain(&dead) {
        let (_, v) = env.wait_json(id);
        assert!(v["status"] == "succeeded" || v["status"] == "dead", "{v}");
    }
    let crash = env.submit_call("echo", "crash", "{}", &["--max-attempts", "1"]);
    let (_, v) = env.wait_json(&crash);
    assert_eq!(v["error"]["kind"], "server_exited", "{v}");
    let after = env.submit_call("echo", "echo", r#"{"text":"again"}"#, &[]);
    assert_eq!(env.wait_json(&after).1["status"], "succeeded");
    let slow = env.submit_call("echo", "sleep_forever", "{}", &["--timeout", "300s"]);
    assert!(wait_until(Duration::from_secs(15), || env
        .status_json(&slow)["status"]
        == "running"));
    // The call is on its way once the job runs; give it a moment to reach the server.
    std::thread::sleep(Duration::from_millis(300));
    let out = env.mcpq(&["cancel", &slow]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        worker.wait_log("job cancelled", Duration::from_secs(10)),
        "{}",
        worker.log_text()
    );

    // The queue gauges follow the report loop (every 5 s): wait for them to see the
    // three dead jobs.
    let mut last = None;
    let seen = wait_until_every(Duration::from_secs(20), Duration::from_millis(500), || {
        let s = scrape(&python, &url, None);
        let done = s.value("mcpq_queue_jobs", &[("state", "dead")]) == Some(3.0);
        last = Some(s);
        done
    });
    let s = last.expect("scraped");
    assert!(
        seen,
        "mcpq_queue_jobs{{state=dead}} never became 3: {:?}",
        s.samples
    );

    assert!(
        s.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        s.content_type
    );
    let agent = |outcome: &'static str| vec![("kind", "agent"), ("outcome", outcome)];
    let tool = |t: &'static str| vec![("server", "echo"), ("tool", t)];
    let echo = vec![("server", "echo")];
    for (name, labels, want) in [
        (
            "mcpq_jobs_started_total",
            vec![("kind", "agent")],
            Some(8.0),
        ),
        ("mcpq_jobs_finished_total", agent("succeeded"), Some(4.0)),
        ("mcpq_jobs_finished_total", agent("dead"), Some(3.0)),
        ("mcpq_jobs_finished_total", agent("cancelled"), Some(1.0)),
        ("mcpq_jobs_finished_total", agent("retry"), None),
        (
            "mcpq_job_duration_seconds_count",
            agent("succeeded"),
            Some(4.0),
        ),
        ("mcpq_job_duration_seconds_count", agent("dead"), Some(3.0)),
        (
            "mcpq_tool_call_duration_seconds_count",
            tool("echo"),
            Some(4.0),
        ),
        (
            "mcpq_tool_call_duration_seconds_count",
            tool("fail"),
            Some(2.0),
        ),
        (
            "mcpq_tool_call_duration_seconds_count",
            tool("crash"),
            Some(1.0),
        ),
        (
            "mcpq_tool_call_duration_seconds_count",
            tool("sleep_forever"),
            Some(1.0),
        ),
        ("mcpq_server_crashes_total", echo.clone(), Some(1.0)),
    ] {
        assert_eq!(s.value(name, &labels), want, "{name}{labels:?}");
    }
    // The crashed server was started again (a restart), besides the first start.
    let restarts = s.value("mcpq_server_restarts_total", &echo);
    assert!(restarts.is_some_and(|n| n >= 1.0), "{restarts:?}");
    let spawns = s.value("mcpq_server_spawns_total", &echo);
    assert!(spawns.is_some_and(|n| n >= 2.0), "{spawns:?}");
    assert_eq!(s.value("mcpq_log_lines_dropped_total", &[]), Some(0.0));
    for p in ["high", "normal", "low"] {
        assert_eq!(
            s.value("mcpq_queue_depth", &[("priority", p)]),
            Some(0.0),
            "{p}"
        );
    }
    let busy = s.value(
        "mcpq_pool_sessions",
        &[("server", "echo"), ("state", "busy")],
    );
    let idle = s.value(
        "mcpq_pool_sessions",
        &[("server", "echo"), ("state", "idle")],
    );
    assert!(busy.is_some() && idle.is_some(), "{busy:?} {idle:?}");
    for (family, kind) in [
        ("mcpq_jobs_started", "counter"),
        ("mcpq_job_duration_seconds", "histogram"),
        ("mcpq_tool_call_duration_seconds", "histogram"),
        ("mcpq_queue_depth", "gauge"),
        ("mcpq_queue_oldest_age_seconds", "gauge"),
    ] {
        assert_eq!(
            s.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    // Anything else is not served.
    let other = Command::new(&python)
        .args([
            "-c",
            "import sys, urllib.request\ntry:\n urllib.request.urlopen(sys.argv[1], timeout=10)\nexcept Exception as e:\n print(getattr(e, 'code', e))",
            &format!("http://{addr}/"),
        ])
        .output()
        .expect("python");
    assert_eq!(text(&other.stdout).trim(), "404");
}

#[test]
fn a_metrics_address_in_use_fails_the_start_naming_the_key() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let env = TestEnv::new("metrics-in-use", "");
    let mut worker = env.worker(&["--metrics-listen", &addr]);
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .expect("the worker exits");
    assert!(!status.success());
    let log = worker.log_text();
    assert!(
        log.contains("worker.metrics_listen") && log.contains(&addr),
        "{log}"
    );
}
