use std::process::{Command, Stdio};
use std::time::Duration;

use mcpq_tests::{bin, text, TestEnv, WorkerProc};

/// Runs `mcpq submit` with `stdin` as the job and returns (exit code, stderr).
fn submit_stdin(env: &TestEnv, job: &str) -> (Option<i32>, String) {
    let out = env.mcpq_with_stdin(&["submit", "-"], job.as_bytes());
    (out.status.code(), text(&out.stderr))
}

#[test]
fn invalid_jobs_exit_2_with_a_message_naming_the_problem_and_enqueue_nothing() {
    let env = TestEnv::new("bad-input", "");
    let cases = [
        ("{not json", "line 1"),
        (r#"{"kind": "fax", "payload": {}}"#, "fax"),
        (
            r#"{"kind": "agent", "payload": {"steps": [{"server": "nope", "tool": "echo"}]}}"#,
            "unknown server `nope`",
        ),
        (
            r#"{"kind": "agent", "payload": {"steps": [{"server": "echo"}]}}"#,
            "missing field `tool`",
        ),
        (
            r#"{"kind": "agent", "payload": {"steps": [{"server": "echo", "tool": "echo", "argumnets": {}}]}}"#,
            "argumnets",
        ),
        (
            r#"{"version": 7, "kind": "agent", "payload": {"steps": []}}"#,
            "unsupported schema version 7",
        ),
        (
            r#"{"kind": "agent", "payload": {"steps": []}}"#,
            "at least one step",
        ),
    ];
    for (job, expected) in cases {
        let (code, stderr) = submit_stdin(&env, job);
        assert_eq!(code, Some(2), "job {job}: {stderr}");
        assert!(
            stderr.contains(expected),
            "job {job}: expected {expected:?} in {stderr:?}"
        );
    }
    let out = env.mcpq(&[
        "submit", "agent", "--server", "echo", "--tool", "echo", "--args", "[1,2]",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--args must be a JSON object"));
    let out = env.mcpq(&["submit", "/nonexistent/job.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/job.json"));
    assert_eq!(
        env.keys(),
        Vec::<String>::new(),
        "a rejected job wrote to Redis"
    );
}

#[test]
fn unknown_job_ids_and_bad_flags_are_usage_errors() {
    let env = TestEnv::new("bad-ids", "");
    let out = env.mcpq(&["status", "not-an-id"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not-an-id"));
    let out = env.mcpq(&["status", "01JDX6Q6T3N7Z8YV1K0W2M4C5B"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no job 01JDX6Q6T3N7Z8YV1K0W2M4C5B"));
    let out = env.mcpq(&["submit", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unreachable_redis_exits_3_and_names_the_url() {
    let env = TestEnv::new("no-redis", "");
    let out = env.mcpq(&[
        "--redis-url",
        "redis://127.0.0.1:1",
        "submit",
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("redis://127.0.0.1:1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_server_whose_binary_is_missing_fails_the_job_naming_the_command_and_the_worker_goes_on() {
    let env = TestEnv::new(
        "missing-bin",
        "[servers.ghost]\ncommand = \"/nonexistent/mcp-ghost-server\"\n",
    );
    let worker = env.worker(&[]);
    let id = env.submit_call("ghost", "anything", "{}", &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "spawn_failed");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("/nonexistent/mcp-ghost-server"),
        "{message}"
    );

    let id = env.submit_call("echo", "echo", r#"{"text":"still here"}"#, &[]);
    let out = env.mcpq(&["wait", &id, "--timeout", "30s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        worker.log_text()
    );
    assert!(text(&out.stdout).contains("still here"));
}

#[test]
fn an_undecodable_job_in_the_queue_is_dead_lettered_and_the_worker_goes_on() {
    let env = TestEnv::new("undecodable", "");
    let worker = env.worker(&[]);
    // What a buggy or hostile producer might write: a record and a queue entry with the
    // right id but a payload mcpq never produced.
    let id = ulid::Ulid::generate().to_string();
    let id = push_raw(
        &env,
        serde_json::json!({"id": id, "kind": "agent", "payload": {"plan": "rm -rf /"}}),
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["status"], "dead", "not retried: retrying cannot fix it");
    assert_eq!(v["error"]["kind"], "invalid_job");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("payload"),
        "{v}"
    );
    assert_eq!(v["error"]["retryable"], false);
    let out = env.mcpq(&["dlq", "list", "--json"]);
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
    let id = env.submit_call("echo", "echo", r#"{"text":"next"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0), "{}", worker.log_text());
}

/// Writes what a buggy or hostile producer might: a queued record and a queue entry whose
/// payload mcpq's own producer would refuse. Returns the id.
fn push_raw(env: &TestEnv, body: serde_json::Value) -> String {
    let id = body["id"].as_str().expect("id").to_string();
    let mut redis = env.redis();
    let prefix = format!("{{{}}}", env.namespace);
    let _: () = redis::pipe()
        .hset_multiple(
            format!("{prefix}:job:{id}"),
            &[
                ("status", "queued"),
                ("payload", &body.to_string()),
                ("kind", "agent"),
                ("priority", "normal"),
                ("max_attempts", "3"),
            ],
        )
        .lpush(format!("{prefix}:ready:normal"), &id)
        .query(&mut redis)
        .expect("write");
    id
}

#[test]
fn a_huge_timeout_exits_2_at_submit_naming_the_maximum_and_a_worker_dead_letters_it_without_panicking(
) {
    let env = TestEnv::new("huge-timeout", "");
    // From a job file: the field and the maximum are named, nothing is enqueued.
    for (timeout, maximum) in [("18446744073709551615s", "365 days"), ("30d", "7 days")] {
        let job = format!(
            r#"{{"kind": "agent", "payload": {{"steps": [{{"server": "echo", "tool": "echo"}}]}}, "options": {{"timeout": "{timeout}"}}}}"#
        );
        let (code, stderr) = submit_stdin(&env, &job);
        assert_eq!(code, Some(2), "{timeout}: {stderr}");
        assert!(
            stderr.contains("options.timeout") && stderr.contains(maximum),
            "{timeout}: {stderr}"
        );
    }
    // From the flag.
    let out = env.mcpq(&[
        "submit",
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
        "--timeout",
        "18446744073709551615s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("365 days"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        env.keys(),
        Vec::<String>::new(),
        "a rejected job wrote to Redis"
    );

    // Written into Redis anyway: dead at once as invalid_job, and the worker goes on.
    let worker = env.worker(&[]);
    let steps = serde_json::json!([{"server": "echo", "tool": "echo", "arguments": {"text": "x"}}]);
    for timeout in ["18446744073709551615s", "30d"] {
        let id = push_raw(
            &env,
            serde_json::json!({"id": ulid::Ulid::generate().to_string(), "kind": "agent",
                "payload": {"steps": steps}, "options": {"timeout": timeout}}),
        );
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(1), "{v}");
        assert_eq!(v["status"], "dead", "{v}");
        assert_eq!(v["error"]["kind"], "invalid_job", "{v}");
        assert_eq!(v["error"]["retryable"], false, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("options.timeout")),
            "{v}"
        );
    }
    let id = env.submit_call("echo", "echo", r#"{"text":"next"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0), "{}", worker.log_text());
    assert!(
        !worker.log_text().contains("panicked"),
        "{}",
        worker.log_text()
    );
}

#[test]
fn a_job_over_max_payload_exits_2_naming_the_limit_and_enqueues_nothing() {
    let env = TestEnv::with_queue("over-payload", "max_payload = 2048\n", "");
    let big = "x".repeat(4096);
    let out = env.mcpq(&[
        "submit",
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
        "--args",
        &format!(r#"{{"text":"{big}"}}"#),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("queue.max_payload"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(env.keys(), Vec::<String>::new());
}

/// Deletes an ACL user when dropped (the test's own, uniquely named).
struct AclUser(String);

impl Drop for AclUser {
    fn drop(&mut self) {
        if let Ok(mut c) =
            redis::Client::open(mcpq_tests::redis_url()).and_then(|c| c.get_connection())
        {
            let _: Result<i64, _> = redis::cmd("ACL").arg("DELUSER").arg(&self.0).query(&mut c);
        }
    }
}

#[test]
fn a_redis_that_refuses_a_submit_by_acl_exits_3_not_1() {
    let env = TestEnv::new("acl-refusal", "");
    let user = AclUser(format!("mcpq-test-ro-{}", ulid::Ulid::generate()));
    let mut redis = env.redis();
    // Read-only on the test's namespace: the submit script is refused (NOPERM).
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user.0)
        .arg("on")
        .arg(">ro-secret")
        .arg(format!("~{{{}}}:*", env.namespace))
        .arg("+@read")
        .arg("+ping")
        .arg("+hello")
        .arg("+client")
        .query(&mut redis)
        .expect("ACL SETUSER");
    let base = mcpq_tests::redis_url();
    let url = base.replacen("redis://", &format!("redis://{}:ro-secret@", user.0), 1);
    let out = env.mcpq(&[
        "--redis-url",
        &url,
        "submit",
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.to_lowercase().contains("noperm") || stderr.contains("permission"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ro-secret"),
        "the password was printed: {stderr}"
    );
}

#[test]
fn a_redis_out_of_memory_on_submit_exits_3_not_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--maxmemory", "1", "--maxmemory-policy", "noeviction"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    let url = format!("redis://127.0.0.1:{port}");
    let up = mcpq_tests::wait_until(std::time::Duration::from_secs(10), || {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    });
    let out = up.then(|| {
        let env = TestEnv::on_redis(&url, "redis-oom", mcpq_tests::TEST_QUEUE, "", "");
        env.mcpq(&["submit", "agent", "--server", "echo", "--tool", "echo"])
    });
    let _ = server.kill();
    let _ = server.wait();
    let out = out.expect("the private redis-server did not start");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("OOM"), "{}", text(&out.stderr));
}

#[test]
fn a_redis_password_from_redis_password_env_connects_and_is_never_shown() {
    let env = TestEnv::new("redis-password-env", "");
    let user = AclUser(format!("mcpq-test-rw-{}", ulid::Ulid::generate()));
    let secret = format!("pw-{}", ulid::Ulid::generate());
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user.0)
        .arg("on")
        .arg(format!(">{secret}"))
        .arg(format!("~{{{}}}:*", env.namespace))
        .arg("&*")
        .arg("+@all")
        .query(&mut env.redis())
        .expect("ACL SETUSER");
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        format!("redis_password_env = \"MCPQ_TEST_REDIS_PASSWORD\"\n{config}"),
    )
    .expect("config");
    // The URL names the user only; the password comes from the environment.
    let url = mcpq_tests::redis_url().replacen("redis://", &format!("redis://{}@", user.0), 1);
    let worker = env.worker_with(&[], |cmd| {
        cmd.env("REDIS_URL", &url)
            .env("MCPQ_TEST_REDIS_PASSWORD", &secret);
    });
    let mcpq = |args: &[&str], password: Option<&str>| {
        let mut cmd = std::process::Command::new(mcpq_tests::bin("mcpq"));
        cmd.arg("--config")
            .arg(&env.config)
            .args(args)
            .env_remove("MCPQ_CONFIG")
            .env("REDIS_URL", &url)
            .env_remove("MCPQ_TEST_REDIS_PASSWORD");
        if let Some(p) = password {
            cmd.env("MCPQ_TEST_REDIS_PASSWORD", p);
        }
        cmd.output().expect("run mcpq")
    };
    let out = mcpq(
        &[
            "submit",
            "agent",
            "--server",
            "echo",
            "--tool",
            "echo",
            "--args",
            r#"{"text":"authed"}"#,
            "--wait",
        ],
        Some(&secret),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        worker.log_text()
    );
    assert!(text(&out.stdout).contains("authed"));
    // Without the variable: a usage error that names it, not a connection attempt.
    let out = mcpq(&["dlq", "list"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("MCPQ_TEST_REDIS_PASSWORD"),
        "{}",
        text(&out.stderr)
    );
    // --help does not print REDIS_URL's value.
    let out = mcpq(&["--help"], Some(&secret));
    assert!(text(&out.stdout).contains("redis_password_env"));
    for shown in [text(&out.stdout), text(&out.stderr), worker.log_text()] {
        assert!(!shown.contains(&secret), "the password was shown: {shown}");
    }
}

/// Issue #12: a per-server `call_timeout = "0s"` (or `startup_timeout`, `kill_grace`,
/// `idle_ttl`) used to be accepted, and then every call of that server failed at run time
/// as a retryable `timeout`. Now the worker and `mcpq` refuse such a config at start-up,
/// exit 2 and name the key.
#[test]
fn a_zero_or_negative_per_server_duration_exits_2_at_start_up_naming_the_key() {
    for (line, key) in [
        ("call_timeout = \"0s\"", "servers.zero.call_timeout"),
        ("startup_timeout = \"-1s\"", "servers.zero.startup_timeout"),
        ("kill_grace = 0", "servers.zero.kill_grace"),
        ("idle_ttl = \"0ms\"", "servers.zero.idle_ttl"),
    ] {
        let env = TestEnv::new("zero-duration", "");
        env.add_config(&format!(
            "[servers.zero]\ncommand = \"{}\"\n{line}\n",
            bin("mcpq-fixture").display()
        ));
        let mut worker = env.worker(&[]);
        let status = worker
            .wait_exit(Duration::from_secs(10))
            .expect("the worker exits at start-up");
        let log = worker.log_text();
        assert_eq!(status.code(), Some(2), "{line}: {log}");
        assert!(log.contains(key), "{line}: {log}");

        let out = env.mcpq(&["servers"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
        assert!(stderr.contains(key), "{line}: {stderr}");
    }
}

/// The same checks for servers read from a Claude Desktop file given to `--config`.
#[test]
fn a_claude_desktop_config_with_a_bad_server_exits_2_at_start_up_naming_the_key() {
    let env = TestEnv::new("claude-bad", "");
    let config = env.dir.join("claude_desktop_config.json");
    std::fs::write(&config, r#"{"mcpServers": {"blank": {"command": " "}}}"#)
        .expect("write config");
    let log = env.dir.join("worker-claude.log");
    let file = std::fs::File::create(&log).expect("worker log");
    let child = Command::new(bin("mcpq-worker"))
        .arg("--config")
        .arg(&config)
        .env_remove("MCPQ_CONFIG")
        .env("REDIS_URL", &env.redis_url)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log"))
        .stderr(file)
        .spawn()
        .expect("start mcpq-worker");
    let mut worker = WorkerProc { child, log };
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .expect("the worker exits at start-up");
    let log = worker.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("servers.blank"), "{log}");
}
