//! `mcpq run job.json` (issue 16, point 6): one job run in-process by `mcpq-worker run`,
//! with no Redis at all, printing its outcome with `mcpq wait`'s exit codes.

use std::process::{Output, Stdio};
use std::time::Duration;

use mcpq_tests::{process_alive, text, wait_until, TestEnv};
use serde_json::{json, Value};

/// Nothing listens here: a command that touched Redis would fail (exit 3).
const NO_REDIS: &str = "redis://127.0.0.1:1";

fn plan(tool: &str, arguments: Value) -> Value {
    json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tool": "echo", "arguments": {"text": "first"}},
        {"server": "echo", "tool": tool, "arguments": arguments},
    ]}, "options": {"timeout": "30s"}})
}

/// `mcpq [--json] run FILE` with Redis unreachable; `stdin` is fed to it.
fn mcpq_run(env: &TestEnv, job: &Value, json_out: bool) -> Output {
    let file = env.dir.join(format!("job-{}.json", ulid::Ulid::generate()));
    std::fs::write(&file, job.to_string()).expect("job file");
    let file = file.display().to_string();
    let mut args = vec!["run", file.as_str()];
    if json_out {
        args.insert(0, "--json");
    }
    env.mcpq_command(&args)
        .env("REDIS_URL", NO_REDIS)
        .stdin(Stdio::null())
        .output()
        .expect("mcpq run")
}

#[test]
fn mcpq_run_prints_a_plans_result_with_exit_0_without_redis_and_stops_its_servers() {
    let env = TestEnv::new("run-ok", "");
    let out = mcpq_run(&env, &plan("add", json!({"a": 2, "b": 3})), false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("step 0 echo/echo: first") && stdout.contains("step 1 echo/add: 5"),
        "{stdout}"
    );
    let pids = env.fixture_pids();
    assert!(!pids.is_empty(), "a real MCP server ran the steps");
    // Stopped at exit (a SIGKILL at the end of the stop time may still be landing).
    assert!(
        wait_until(Duration::from_secs(5), || pids
            .iter()
            .all(|p| !process_alive(*p))),
        "every server was stopped at exit: {pids:?}"
    );

    let out = mcpq_run(&env, &plan("echo", json!({"text": "second"})), true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(
        (line["type"].as_str(), line["status"].as_str()),
        (Some("result"), Some("succeeded"))
    );
    assert_eq!(line["result"][1]["result"]["content"][0]["text"], "second");

    // `-` reads the job from stdin.
    let job = plan("echo", json!({"text": "piped"})).to_string();
    let mut child = env
        .mcpq_command(&["run", "-"])
        .env("REDIS_URL", NO_REDIS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mcpq run -");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(job.as_bytes()).expect("write job");
    }
    let out = child.wait_with_output().expect("mcpq run -");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("step 1 echo/echo: piped"));
}

#[test]
fn mcpq_run_of_a_failing_plan_exits_like_wait_for_a_dead_job() {
    let env = TestEnv::new("run-fail", "");
    let out = mcpq_run(&env, &plan("fail", json!({"message": "no luck"})), false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("[tool_error]") && stderr.contains("no luck") && stderr.contains("step 1"),
        "{stderr}"
    );

    // Under --json: the result line (dead, with its error) and one error line.
    let out = mcpq_run(&env, &plan("add", json!({"a": "x", "b": 1})), true);
    assert_eq!(out.status.code(), Some(1));
    let line: Value = serde_json::from_slice(&out.stdout).expect("result line");
    assert_eq!(line["status"], "dead", "{line}");
    assert_eq!(
        line["error"]["kind"], "invalid_job",
        "schema checked as in a worker: {line}"
    );
    let err: Value = serde_json::from_slice(&out.stderr).expect("error line");
    assert_eq!(err["kind"], "job_failed", "{err}");
}

#[test]
fn mcpq_run_of_a_bad_job_exits_2_with_a_clear_error_and_starts_nothing() {
    let env = TestEnv::new("run-bad", "");
    let typo = json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tol": "echo"}]}});
    let out = mcpq_run(&env, &typo, false);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("payload.steps[0]") && stderr.contains("tol"),
        "{stderr}"
    );

    let unknown = json!({"kind": "agent", "payload": {"steps": [
        {"server": "nope", "tool": "echo"}]}});
    let out = mcpq_run(&env, &unknown, true);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stderr).expect("error line");
    assert_eq!(err["kind"], "invalid_job", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("`nope`")),
        "{err}"
    );

    let missing = env
        .mcpq_command(&["run", "/nonexistent/job.json"])
        .env("REDIS_URL", NO_REDIS)
        .output()
        .expect("mcpq run");
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/job.json"));
    assert!(env.fixture_pids().is_empty(), "no server was started");
}

#[test]
fn sigint_stops_the_job_and_its_servers() {
    let env = TestEnv::new("run-sigint", "");
    let file = env.dir.join("hang.json");
    let job = json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tool": "sleep_forever"}]}, "options": {"timeout": "300s"}});
    std::fs::write(&file, job.to_string()).expect("job");
    let child = env
        .mcpq_command(&["run", &file.display().to_string()])
        .env("REDIS_URL", NO_REDIS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mcpq run");
    assert!(
        wait_until(Duration::from_secs(20), || !env.fixture_pids().is_empty()),
        "the server never started"
    );
    // The server is up; give the call a moment to be sent.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("exit");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cancelled"),
        "{}",
        text(&out.stderr)
    );
    let pids = env.fixture_pids();
    assert!(
        wait_until(Duration::from_secs(5), || pids
            .iter()
            .all(|p| !process_alive(*p))),
        "the server outlived the run: {pids:?}"
    );
}
