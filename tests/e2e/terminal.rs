//! Human output holds no escape sequence from outside: results, errors, email subjects,
//! dead-letter listings and status lines show control characters as text.

use mcpq_tests::{text, TestEnv};
use serde_json::json;

/// Screen clear, window title, clipboard write (OSC 52), a C1 CSI, a carriage return.
const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{1b}]52;c;ZXZpbA==\u{7}\u{9b}31m\rX";
/// A newline followed by what looks like a worker log line.
const FORGED: &str = "\n2026-11-27T10:00:00Z  INFO job succeeded job=FORGED";

/// Asserts `bytes` hold no raw control sequence a terminal would obey.
fn assert_inert(what: &str, bytes: &[u8]) {
    let s = text(bytes);
    for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\r'] {
        assert!(!s.contains(bad), "{what} holds {bad:?} raw: {s:?}");
    }
}

#[test]
fn human_output_escapes_control_characters_from_results_errors_and_subjects() {
    let env = TestEnv::new("terminal", "");
    let worker = env.worker(&[]);

    // A tool result full of escape sequences: shown, not obeyed.
    let args = json!({"text": format!("result {HOSTILE}")}).to_string();
    let id = env.submit_call("echo", "echo", &args, &[]);
    let out = env.mcpq(&["wait", &id, "--timeout", "60s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        worker.log_text()
    );
    assert_inert("wait stdout", &out.stdout);
    assert!(
        text(&out.stdout).contains("\\u{1b}[2J"),
        "{}",
        text(&out.stdout)
    );
    let out = env.mcpq(&["result", &id]);
    assert_inert("result stdout", &out.stdout);
    // JSON keeps the exact text (escaped the JSON way).
    let (_, v) = env.wait_json(&id);
    assert!(v["result"][0]["result"]["content"][0]["text"]
        .as_str()
        .is_some_and(|t| t.ends_with(HOSTILE)));

    // A tool error with escapes and a forged line: one line in every human view.
    let args = json!({"message": format!("boom {HOSTILE}{FORGED}")}).to_string();
    let id = env.submit_call("echo", "fail", &args, &["--max-attempts", "1"]);
    let out = env.mcpq(&["wait", &id, "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let outputs = [
        ("wait stderr", out.stderr),
        ("status", env.mcpq(&["status", &id]).stdout),
        ("dlq list", env.mcpq(&["dlq", "list"]).stdout),
        ("dlq show", env.mcpq(&["dlq", "show", &id]).stdout),
    ];
    for (what, bytes) in &outputs {
        assert_inert(what, bytes);
        let s = text(bytes);
        assert!(
            !s.lines().any(|l| l.starts_with("2026-")),
            "{what}: a forged line stands alone: {s}"
        );
    }
    assert!(
        text(&outputs[1].1).contains("\\n2026-"),
        "{}",
        text(&outputs[1].1)
    );

    // An email whose subject is hostile: the reply draft's subject line is inert.
    let job = json!({"kind": "email", "payload": {
        "from": "x@example.com", "subject": format!("hello {HOSTILE}"), "instructions": "",
        "servers": ["echo"],
        "steps": [{"server": "echo", "tool": "echo", "arguments": {"text": "{{ email.subject }}"}}],
        "reply": {"text": "re: {{ email.subject }}"}}});
    let out = env.mcpq_with_stdin(&["submit", "-", "--wait"], job.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_inert("email wait stdout", &out.stdout);
    assert!(
        text(&out.stdout).contains("Re: hello \\u{1b}"),
        "{}",
        text(&out.stdout)
    );
}
