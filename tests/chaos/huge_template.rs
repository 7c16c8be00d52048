//! Templates that ask for gigabytes (issue #11, finding 1): `{% set a = a ~ a %}` six
//! times over a 100 MB string, a filter that grows its input, constants that fold into
//! gigabytes, output past the template output limit, a render that takes minutes, an
//! email reply. Each job ends dead with `template_error` naming the limit, after one
//! attempt; the worker lives (same pid, small), and the good jobs around them succeed.

use std::time::Duration;

use mcpq_tests::{proc_stat, process_alive, text, wait_until, TestEnv};
use serde_json::json;

use crate::private_redis::PrivateRedis;
use crate::{assert_no_leftovers, assert_survived_small, serial, CHAOS_QUEUE, MAX_WORKER_RSS};

/// Pids of the template sandbox children of `worker`.
fn sandboxes_of(worker: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(_, ppid, _)| ppid == worker))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--mcpq-template-sandbox"))
        })
        .collect()
}

fn one_step(arguments: serde_json::Value, input: serde_json::Value) -> String {
    json!({"kind": "agent", "payload": {"input": input, "steps": [
        {"server": "echo", "tool": "echo", "arguments": arguments}
    ]}, "options": {"max_attempts": 3, "timeout": "60s"}})
    .to_string()
}

#[test]
fn templates_that_build_gigabytes_fail_their_jobs_and_the_worker_and_the_jobs_around_them_live() {
    let _turn = serial();
    let redis = PrivateRedis::start("huge-template");
    let env = TestEnv::on_redis(
        &redis.url(),
        "chaos-huge-template",
        CHAOS_QUEUE,
        "[worker]\nconcurrency = 2\npoll_interval = \"20ms\"\n",
        "",
    );
    let mut worker = env.worker(&[]);
    let pid = worker.pid();
    let submit = |job: String| {
        let out = env.mcpq_with_stdin(&["submit", "-"], job.as_bytes());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let good = |i: usize| {
        one_step(
            json!({"text": "good {{ input.n }} of {{ job.id | length }}"}),
            json!({"n": i}),
        )
    };
    let doubling = format!(
        "{{% set a = \"a\" * 100000000 %}}{}{{{{ a | length }}}}",
        "{% set a = a ~ a %}".repeat(6)
    );
    // (template arguments, what its error must say)
    let bad = [
        (json!({"text": doubling}), "template memory limit"),
        (
            json!({"text": "{{ (\"a\\n\" * 50000000) | indent(100) | length }}"}),
            "template memory limit",
        ),
        // Constants: minijinja folds them when it compiles, so even checking this
        // template (at submit, and in the worker) would build 5 GB if it compiled it.
        (
            json!({"text": format!("{{{{ {} }}}}", vec!["(\"a\" * 100000000)"; 50].join(" ~ "))}),
            "template memory limit",
        ),
        (
            json!({"text": "{% for i in range(50) %}{{ \"a\" * 1000000 }}{% endfor %}"}),
            "template output limit of 4 MiB",
        ),
        (
            json!({"a": "{{ \"a\" * 3000000 }}", "b": "{{ \"b\" * 3000000 }}"}),
            "template output limit of 4 MiB",
        ),
        // Little fuel, little memory, minutes of work: the sandbox is killed.
        (
            json!({"text": "{% for i in range(1000) %}{{ (\"a\" * 50000000) | replace(\"a\", \"b\") | length }}{% endfor %}"}),
            "template time limit of 10 s",
        ),
    ];
    let mut good_ids = vec![submit(good(0))];
    let mut bad_ids = Vec::new();
    for (i, (arguments, expected)) in bad.iter().enumerate() {
        bad_ids.push((submit(one_step(arguments.clone(), json!({}))), *expected));
        good_ids.push(submit(good(i + 1)));
    }
    // An email reply renders in the sandbox too.
    let email = json!({"kind": "email", "payload": {
        "from": "ana@example.com", "to": ["inbox@example.com"], "subject": "hi",
        "text": "x", "message_id": "m1@example.com", "instructions": "reply",
        "steps": [{"server": "echo", "tool": "echo", "arguments": {"text": "ok"}}],
        "reply": {"text": doubling, "send": false}}, "options": {"max_attempts": 3}});
    bad_ids.push((submit(email.to_string()), "template memory limit"));
    good_ids.push(submit(good(9)));

    for (id, expected) in &bad_ids {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(1), "{v}");
        assert_eq!(v["error"]["kind"], "template_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message}"
        );
        eprintln!("chaos: {}", message.chars().take(400).collect::<String>());
        let s = env.status_json(id);
        assert_eq!(
            (s["status"].clone(), s["attempts"].clone()),
            (json!("dead"), json!(1)),
            "permanent, not retried: {s}"
        );
    }
    for (i, id) in good_ids.iter().enumerate() {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(0), "good job {i}: {v}\n{}", worker.log_text());
        let n = if i == good_ids.len() - 1 { 9 } else { i };
        assert!(
            v.to_string().contains(&format!("good {n} of 26")),
            "good job {i}: {v}"
        );
    }
    assert_eq!(worker.pid(), pid);
    let peak = assert_survived_small(&mut worker);
    eprintln!(
        "chaos: {} hostile templates failed their jobs; worker peak RSS {} MiB (bound {} MiB); \
         sandbox memory limit {} MiB",
        bad_ids.len(),
        peak / (1024 * 1024),
        MAX_WORKER_RSS / (1024 * 1024),
        mcpq_shared::agent::template_sandbox::MEMORY_LIMIT_BYTES / (1024 * 1024)
    );
    // The sandbox children go with the worker, quietly: they are not servers cut off.
    let sandboxes = sandboxes_of(pid);
    assert!(!sandboxes.is_empty(), "no sandbox child of the worker");
    worker.signal(libc::SIGTERM);
    let exit = worker.wait_exit(Duration::from_secs(15));
    assert_eq!(
        exit.and_then(|e| e.code()),
        Some(0),
        "{}",
        worker.log_text()
    );
    assert!(
        !worker.log_text().contains("killing server process group"),
        "{}",
        worker.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(5), || sandboxes
            .iter()
            .all(|&p| !process_alive(p))),
        "sandboxes outlived the worker: {sandboxes:?}"
    );
    assert_no_leftovers(&env);
}
