//! Errors under `--json` (issue 13, item 7): a failing command writes exactly one JSON
//! object on stderr, `{"type":"error","kind":...,"message":...}`, with the kind README's
//! table documents and the exit code text mode has; text mode is unchanged (its stderr is
//! `mcpq: ` + the same message, control characters escaped for the terminal, where JSON
//! gives them exactly).

use std::process::Output;

use mcpq_shared::terminal::{escape, Newlines};
use mcpq_tests::{bin, text, TestEnv};
use serde_json::Value;

/// The one JSON object `out` wrote on stderr (asserts there is exactly one line, and
/// nothing else).
fn only_json_error(out: &Output, what: &str) -> Value {
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: stderr is not one line: {stderr:?}");
    let v: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("{what}: stderr is not JSON ({e}): {stderr:?}"));
    assert!(v.is_object(), "{what}: {v}");
    v
}

/// Runs `args` with and without `--json`; asserts the same exit code, exactly one JSON
/// error of `kind` on stderr, nothing on stdout (but a job's outcome), and that text mode's stderr is
/// `prefix` + the JSON message (escaped for a terminal, as text mode shows it) + a
/// newline. Returns (the JSON error, the exit code).
fn same_error_both_ways(
    env: &TestEnv,
    args: &[&str],
    stdin: &[u8],
    kind: &str,
    prefix: &str,
) -> (Value, Option<i32>) {
    let what = args.join(" ");
    let plain = env.mcpq_with_stdin(args, stdin);
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let json = env.mcpq_with_stdin(&with_json, stdin);
    assert_eq!(
        json.status.code(),
        plain.status.code(),
        "{what}: --json changed the exit code ({})",
        text(&json.stderr)
    );
    let v = only_json_error(&json, &what);
    assert_eq!(v["type"], "error", "{what}: {v}");
    assert_eq!(v["kind"], kind, "{what}: {v}");
    // A job's outcome is data: its `result` line stays on stdout.
    if !["job_failed", "job_cancelled", "not_finished"].contains(&kind) {
        assert_eq!(text(&json.stdout), "", "{what}: stdout under --json");
    }
    let message = v["message"].as_str().expect("message is a string");
    assert!(!message.is_empty(), "{what}: {v}");
    assert_eq!(
        text(&plain.stderr),
        format!(
            "{}\n",
            escape(&format!("{prefix}{message}"), Newlines::Keep)
        ),
        "{what}: text mode and the JSON message differ"
    );
    let fields: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        fields
            .iter()
            .all(|f| ["type", "kind", "message"].contains(f)),
        "{what}: unexpected fields (line only for a line of input): {v}"
    );
    (v, json.status.code())
}

#[test]
fn an_invalid_job_is_one_invalid_job_error_on_stderr_with_exit_2_and_nothing_enqueued() {
    let env = TestEnv::new("json-invalid", "");
    for job in [
        "{not json",
        r#"{"kind": "agent", "payload": {"steps": [{"server": "nope", "tool": "echo"}]}}"#,
        // A kind with an escape sequence: shown escaped in text mode, exact in JSON.
        "{\"kind\": \"fax\\u001b[2J\", \"payload\": {}}",
    ] {
        let (v, code) = same_error_both_ways(
            &env,
            &["submit", "-"],
            job.as_bytes(),
            "invalid_job",
            "mcpq: ",
        );
        assert_eq!(code, Some(2), "{job}: {v}");
        if job.contains("fax") {
            let message = v["message"].as_str().expect("message");
            assert!(message.contains("fax\u{1b}[2J"), "{v}");
        }
    }
    let (v, code) = same_error_both_ways(
        &env,
        &[
            "submit", "agent", "--server", "echo", "--tool", "echo", "--args", "[1,2]",
        ],
        b"",
        "invalid_job",
        "mcpq: ",
    );
    assert_eq!(code, Some(2));
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("--args must be a JSON object")),
        "{v}"
    );
    assert_eq!(
        env.keys(),
        Vec::<String>::new(),
        "a rejected job wrote to Redis"
    );
}

#[test]
fn an_unreachable_redis_is_one_redis_error_naming_the_url_with_exit_3() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    // REDIS_URL (and the config) point at it.
    let env = TestEnv::on_redis(&url, "json-no-redis", mcpq_tests::TEST_QUEUE, "", "");
    for args in [
        &["submit", "agent", "--server", "echo", "--tool", "echo"][..],
        &["status", "01JDX6Q6T3N7Z8YV1K0W2M4C5B"],
        &["dlq", "list"],
    ] {
        let (v, code) = same_error_both_ways(&env, args, b"", "redis", "mcpq: ");
        assert_eq!(code, Some(3), "{args:?}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains(&url)),
            "{args:?}: {v}"
        );
    }
}

#[test]
fn an_unknown_job_id_is_one_unknown_job_error_with_exit_2() {
    let env = TestEnv::new("json-unknown", "");
    let id = "01JDX6Q6T3N7Z8YV1K0W2M4C5B";
    for args in [
        &["status", id][..],
        &["result", id],
        &["wait", id, "--timeout", "1s"],
        &["cancel", id],
        &["dlq", "show", id],
        &["dlq", "requeue", id],
    ] {
        let (v, code) = same_error_both_ways(&env, args, b"", "unknown_job", "mcpq: ");
        assert_eq!(code, Some(2), "{args:?}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains(id)),
            "{args:?}: {v}"
        );
    }
    // A malformed id is a usage error, not an unknown job.
    let (_, code) = same_error_both_ways(&env, &["status", "not-an-id"], b"", "usage", "mcpq: ");
    assert_eq!(code, Some(2));
}

#[test]
fn a_clap_usage_error_is_one_usage_error_with_exit_2_and_only_a_json_flag_before_double_dash_counts(
) {
    let env = TestEnv::new("json-usage", "");
    for args in [
        &["submit", "--frobnicate"][..],
        &["status"],
        &["frobnicate"],
        &["wait", "01JDX6Q6T3N7Z8YV1K0W2M4C5B", "--timeout", "soon"],
    ] {
        let what = args.join(" ");
        let plain = env.mcpq(args);
        assert_eq!(plain.status.code(), Some(2), "{what}");
        let plain_stderr = text(&plain.stderr);
        assert!(
            plain_stderr.starts_with("error: "),
            "{what}: {plain_stderr}"
        );
        // --json first (global flags may come anywhere) and last.
        for json_args in [
            [&["--json"][..], args].concat(),
            [args, &["--json"][..]].concat(),
        ] {
            let out = env.mcpq(&json_args);
            assert_eq!(out.status.code(), Some(2), "{json_args:?}");
            let v = only_json_error(&out, &what);
            assert_eq!(v["type"], "error", "{what}: {v}");
            assert_eq!(v["kind"], "usage", "{what}: {v}");
            assert_eq!(text(&out.stdout), "", "{what}");
            // The same text clap prints, without a trailing newline.
            let message = v["message"].as_str().expect("message");
            assert!(message.starts_with("error: "), "{what}: {v}");
            assert!(!message.ends_with('\n'), "{what}: {v}");
        }
    }
    // After `--` every word is a value: `--json` there does not switch to JSON.
    let out = env.mcpq(&["submit", "--frobnicate", "--", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: "),
        "{}",
        text(&out.stderr)
    );
    // --help is not an error, with or without --json.
    let out = env.mcpq(&["--json", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("Usage:"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn config_duplicate_id_and_corrupt_record_errors_have_their_own_kinds() {
    let env = TestEnv::new("json-kinds", "");
    // A job with an id that is taken.
    let job = format!(
        r#"{{"id": "{}", "kind": "agent", "payload": {{"steps": [{{"server": "echo", "tool": "echo"}}]}}}}"#,
        ulid::Ulid::generate()
    );
    let first = env.mcpq_with_stdin(&["submit", "-"], job.as_bytes());
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let (_, code) = same_error_both_ways(
        &env,
        &["submit", "-"],
        job.as_bytes(),
        "duplicate_id",
        "mcpq: ",
    );
    assert_eq!(code, Some(2));

    // A job key that something other than mcpq wrote (a string, not a hash).
    let id = ulid::Ulid::generate().to_string();
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}}}:job:{id}", env.namespace))
        .arg("not a record")
        .query(&mut env.redis())
        .expect("SET");
    let (_, code) = same_error_both_ways(&env, &["status", &id], b"", "corrupt_record", "mcpq: ");
    assert_eq!(code, Some(3));

    // An invalid config.
    let broken = TestEnv::new("json-config", "");
    std::fs::write(&broken.config, "this is = = not toml\n").expect("write config");
    let (_, code) = same_error_both_ways(&broken, &["dlq", "list"], b"", "config", "mcpq: ");
    assert_eq!(code, Some(2));
}

#[test]
fn a_dead_job_an_unfinished_one_and_a_reused_idempotency_key_are_reported_as_json_on_stderr() {
    let env = TestEnv::new("json-outcomes", "");
    // No worker yet: the job stays queued, `wait` gives up (exit 4).
    let id = env.submit_call(
        "echo",
        "fail",
        r#"{"message":"out of stock"}"#,
        &["--max-attempts", "1", "--idempotency-key", "k1"],
    );
    let plain = env.mcpq(&["wait", &id, "--timeout", "100ms"]);
    assert_eq!(plain.status.code(), Some(4), "{}", text(&plain.stderr));
    let json = env.mcpq(&["wait", &id, "--timeout", "100ms", "--json"]);
    assert_eq!(json.status.code(), Some(4));
    let v = only_json_error(&json, "wait");
    assert_eq!(v["kind"], "not_finished", "{v}");
    // Text mode's two lines, the same words: no `mcpq: ` prefix on a job's outcome.
    assert_eq!(
        text(&plain.stderr),
        format!("{}\n", v["message"].as_str().expect("message"))
    );
    assert!(
        text(&plain.stderr).starts_with("gave up waiting after 100ms\njob "),
        "{}",
        text(&plain.stderr)
    );
    // The outcome is still on stdout.
    let line: Value = serde_json::from_slice(&json.stdout).expect("a result line");
    assert_eq!(line["status"], "queued", "{line}");

    // The same key again: a warning (exit 0), and the first id.
    let again = env.mcpq(&[
        "submit",
        "agent",
        "--server",
        "echo",
        "--tool",
        "fail",
        "--idempotency-key",
        "k1",
        "--json",
    ]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let v = only_json_error(&again, "idempotent submit");
    assert_eq!(v["type"], "warning", "{v}");
    assert_eq!(v["kind"], "idempotency_key_used", "{v}");
    let line: Value = serde_json::from_slice(&again.stdout).expect("a submitted line");
    assert_eq!(line["id"], id.as_str(), "{line}");

    // Dead after its one attempt: exit 1, kind job_failed, the tool's words.
    let worker = env.worker(&[]);
    let (code, _) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{}", worker.log_text());
    let (v, code) = same_error_both_ways(&env, &["result", &id], b"", "job_failed", "");
    assert_eq!(code, Some(1));
    let out = env.mcpq(&["result", &id, "--json"]);
    let line: Value = serde_json::from_slice(&out.stdout).expect("a result line");
    assert_eq!(line["status"], "dead", "{line}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("out of stock") && m.contains("tool_error")),
        "{v}"
    );
}

#[test]
fn mcpq_worker_check_reports_its_errors_as_json_under_json() {
    let env = TestEnv::new("json-check", "");
    let check = |config: &std::path::Path, args: &[&str]| {
        std::process::Command::new(bin("mcpq-worker"))
            .arg("--config")
            .arg(config)
            .arg("check")
            .args(args)
            .env_remove("MCPQ_CONFIG")
            .output()
            .expect("run mcpq-worker check")
    };
    let missing = env.dir.join("missing.toml");
    for (config, args, kind) in [
        (env.config.as_path(), &["--json", "nope"][..], "usage"),
        (env.config.as_path(), &["--json", "--frobnicate"], "usage"),
        (missing.as_path(), &["--json"], "config"),
    ] {
        let json = check(config, args);
        let plain_args: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
        let plain = check(config, &plain_args);
        assert_eq!(
            json.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&json.stderr)
        );
        assert_eq!(json.status.code(), plain.status.code(), "{args:?}");
        let v = only_json_error(&json, &format!("check {args:?}"));
        assert_eq!(v["kind"], kind, "{args:?}: {v}");
        assert_eq!(text(&json.stdout), "", "{args:?}");
        assert!(
            !text(&plain.stderr).starts_with('{'),
            "{args:?}: {}",
            text(&plain.stderr)
        );
    }
    // Through `mcpq servers check`: an unknown name is caught by mcpq itself.
    let (_, code) =
        same_error_both_ways(&env, &["servers", "check", "nope"], b"", "usage", "mcpq: ");
    assert_eq!(code, Some(2));
}
