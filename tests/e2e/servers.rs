//! `mcpq servers` and `mcpq servers check`: tool discovery and what fails.

use std::time::Duration;

use mcpq_tests::{text, wait_until, TestEnv};
use serde_json::Value;

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn servers_check_lists_tools_and_reports_what_fails_with_its_stderr() {
    let fixture = mcpq_tests::bin("mcpq-fixture").display().to_string();
    let env = TestEnv::new("servers-check", "");
    env.add_config(&format!(
        "[servers.ghost]\ncommand = \"/nonexistent/ghost-mcp\"\n\
         [servers.mute]\ncommand = \"{fixture}\"\nstartup_timeout = \"1s\"\nenv = {{ MCPQ_FIXTURE_HANG_INITIALIZE = \"1\" }}\n"
    ));
    let out = env.mcpq(&["servers", "check", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let by_name = |n: &str| {
        lines
            .iter()
            .find(|l| l["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no line for {n}"))
    };
    let echo = by_name("echo");
    assert_eq!(echo["ok"], true);
    let tools: Vec<&str> = echo["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for tool in ["echo", "add", "sleep_ms", "crash", "signal_state"] {
        assert!(tools.contains(&tool), "{tool} missing from {tools:?}");
    }
    let ghost = by_name("ghost");
    assert_eq!(ghost["ok"], false);
    assert!(ghost["error"]["message"]
        .as_str()
        .expect("message")
        .contains("/nonexistent/ghost-mcp"));
    let mute = by_name("mute");
    assert_eq!(mute["error"]["kind"], "startup_timeout");
    assert!(mute["error"]["stderr_tail"]
        .as_str()
        .expect("tail")
        .contains("never answer initialize"));

    // Only the named servers, and text output.
    let out = env.mcpq(&["servers", "check", "echo"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).starts_with("ok    echo"),
        "{}",
        text(&out.stdout)
    );
    let out = env.mcpq(&["servers", "check", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn servers_shows_the_health_sessions_and_tools_a_worker_reports() {
    let env = TestEnv::new("servers-list", "");
    let out = env.mcpq(&["servers"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("no worker report"),
        "{}",
        text(&out.stdout)
    );

    let _worker = env.worker(&[]);
    let id = env.submit_call("echo", "echo", r#"{"text":"warm"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
    let mut last = Value::Null;
    let reported = wait_until(Duration::from_secs(15), || {
        let out = env.mcpq(&["servers", "--json"]);
        last = json_lines(&out).into_iter().next().unwrap_or(Value::Null);
        last["report"]["tools"].is_array()
    });
    assert!(reported, "no tools reported: {last}");
    assert_eq!(last["type"], "server");
    assert_eq!(last["name"], "echo");
    assert_eq!(last["report"]["health"], "ok");
    assert_eq!(last["report"]["sessions"], 1);
    assert!(last["report"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .any(|t| t["name"] == "echo"));
    let out = env.mcpq(&["servers"]);
    assert!(
        text(&out.stdout).contains("tools: "),
        "{}",
        text(&out.stdout)
    );
}
