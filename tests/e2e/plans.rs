//! Agent plans as small programs: templates over the job's input and earlier steps,
//! `continue_on_error`, and the submit-time check of both.

use mcpq_tests::{text, TestEnv};
use serde_json::json;

#[test]
fn templates_pass_input_and_earlier_results_between_steps() {
    let env = TestEnv::new("plan-templates", "");
    let _worker = env.worker(&[]);
    let plan = json!({
        "kind": "agent",
        "payload": {
            "input": {"name": "ada", "n": 3},
            "steps": [
                {"name": "greet", "server": "echo", "tool": "echo", "arguments": {"text": "hello {{ input.name }}"}},
                {"name": "sum", "server": "echo", "tool": "add", "arguments": {"a": "{{ input.n }}", "b": 2}},
                {"server": "echo", "tool": "echo", "arguments": {"text": "{{ steps.greet.text | upper }} / {{ steps.sum.text }} / {{ job.id | length }}"}}
            ]
        }
    });
    let out = env.mcpq_with_stdin(&["submit", "-"], plan.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    // `{{ input.n }}` alone kept its type: add got the number 3.
    assert_eq!(v["result"][1]["result"]["content"][0]["text"], "5");
    assert_eq!(
        v["result"][2]["result"]["content"][0]["text"],
        "HELLO ADA / 5 / 26"
    );
}

#[test]
fn a_continue_on_error_step_is_recorded_and_the_plan_goes_on() {
    let env = TestEnv::new("plan-continue", "");
    let _worker = env.worker(&[]);
    let plan = json!({
        "kind": "agent",
        "payload": {"steps": [
            {"name": "bad", "server": "echo", "tool": "fail", "arguments": {"message": "no stock"}, "continue_on_error": true},
            {"server": "echo", "tool": "echo", "arguments": {"text": "failed={{ steps.bad.is_error }} kind={{ steps.bad.error.kind }}"}}
        ]},
        "options": {"max_attempts": 1}
    });
    let out = env.mcpq_with_stdin(&["submit", "-"], plan.to_string().as_bytes());
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["result"][0]["error"]["kind"], "tool_error");
    assert!(v["result"][0]["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("no stock"));
    assert_eq!(
        v["result"][1]["result"]["content"][0]["text"],
        "failed=true kind=tool_error"
    );
    // Without the flag, the same failure ends the plan.
    let plan = json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tool": "fail", "arguments": {}},
        {"server": "echo", "tool": "echo", "arguments": {"text": "never"}}
    ]}, "options": {"max_attempts": 1}});
    let out = env.mcpq_with_stdin(&["submit", "-"], plan.to_string().as_bytes());
    let (code, v) = env.wait_json(text(&out.stdout).trim());
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["step"], 0);
}

#[test]
fn bad_templates_are_usage_errors_at_submit_and_enqueue_nothing() {
    let env = TestEnv::new("plan-bad-templates", "");
    let cases = [
        (json!([{"server": "echo", "tool": "echo", "arguments": {"text": "{{ steps.later.text }}"}},
                {"name": "later", "server": "echo", "tool": "echo"}]),
         "payload.steps[0].arguments.text: template \"{{ steps.later.text }}\": `steps.later`: no earlier step is named `later`"),
        (json!([{"server": "echo", "tool": "echo", "arguments": {"text": "{{ input.city }}"}}]),
         "the job's input has no `city`"),
        (json!([{"server": "echo", "tool": "echo", "arguments": {"text": "{{ input.city "}}]),
         "payload.steps[0].arguments.text"),
        (json!([{"server": "echo", "tool": "echo", "arguments": {"text": "{{ email.subject }}"}}]),
         "exists only in email jobs"),
        (json!([{"name": "a", "server": "echo", "tool": "echo"}, {"name": "a", "server": "echo", "tool": "echo"}]),
         "two steps are named `a`"),
    ];
    for (steps, expected) in cases {
        let job = json!({"kind": "agent", "payload": {"steps": steps}});
        let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
        assert_eq!(out.status.code(), Some(2), "{job}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
    }
    assert!(
        env.keys().is_empty(),
        "a rejected job wrote to Redis: {:?}",
        env.keys()
    );
}

#[test]
fn include_import_from_and_extends_are_refused_at_submit_with_exit_2() {
    let env = TestEnv::new("plan-loader-statements", "");
    for template in [
        "{% include 'other' %}",
        "{% import 'macros' as m %}{{ m.f() }}",
        "{% from 'macros' import f %}{{ f() }}",
        "{% extends 'base' %}",
    ] {
        let job = json!({"kind": "agent", "payload": {"steps": [
            {"server": "echo", "tool": "echo", "arguments": {"text": template}}
        ]}});
        let out = env.mcpq_with_stdin(&["submit", "-"], job.to_string().as_bytes());
        assert_eq!(out.status.code(), Some(2), "{template}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("payload.steps[0].arguments.text")
                && stderr.contains("cannot load other templates"),
            "{template}: {stderr}"
        );
    }
    // An email reply is a template too.
    let email = json!({"kind": "email", "payload": {
        "from": "ana@example.com", "to": ["inbox@example.com"], "subject": "hi", "text": "x",
        "instructions": "reply",
        "steps": [{"server": "echo", "tool": "echo", "arguments": {"text": "ok"}}],
        "reply": {"text": "{% include 'signature' %}"}}});
    let out = env.mcpq_with_stdin(&["submit", "-"], email.to_string().as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("payload.reply.text"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        env.keys().is_empty(),
        "a rejected job wrote to Redis: {:?}",
        env.keys()
    );
}
