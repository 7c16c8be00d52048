//! Real third-party MCP servers (npm and PyPI), installed by scripts/test-deps.

use mcpq_tests::{deps, text, TestEnv};
use serde_json::Value;

#[test]
fn filesystem_server_from_npm_reads_a_file_and_its_stderr_banner_is_drained() {
    let Some(deps) = deps("npm") else { return };
    let files = std::env::temp_dir().join(format!("mcpq-fs-{}", std::process::id()));
    std::fs::create_dir_all(&files).expect("dir");
    std::fs::write(files.join("hello.txt"), "hello from a file\n").expect("file");
    let server = format!(
        "[servers.filesystem]\ncommand = \"node\"\nargs = [\"{}\", \"{}\"]\n",
        deps.join("npm/node_modules/.bin/mcp-server-filesystem")
            .display(),
        files.display()
    );
    let env = TestEnv::new("npm-fs", &server);
    let _worker = env.worker(&[]);
    let args = format!(r#"{{"path":"{}"}}"#, files.join("hello.txt").display());
    let id = env.submit_call("filesystem", "read_text_file", &args, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["result"][0]["result"]["content"][0]["text"],
        "hello from a file\n"
    );

    // Outside its allowed directories the server refuses: a tool error, stored as such.
    let id = env.submit_call(
        "filesystem",
        "read_text_file",
        r#"{"path":"/etc/hostname"}"#,
        &[],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "tool_error", "{v}");
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn time_server_from_pypi_answers_in_a_job() {
    let Some(deps) = deps("venv") else { return };
    let server = format!(
        "[servers.time]\ncommand = \"{}\"\nargs = [\"--local-timezone\", \"UTC\"]\n",
        deps.join("venv/bin/mcp-server-time").display()
    );
    let env = TestEnv::new("pypi-time", &server);
    let _worker = env.worker(&[]);
    let id = env.submit_call(
        "time",
        "get_current_time",
        r#"{"timezone":"Asia/Tokyo"}"#,
        &[],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    let body = v["result"][0]["result"]["content"][0]["text"]
        .as_str()
        .expect("text");
    let time: Value = serde_json::from_str(body).expect("time JSON");
    assert_eq!(time["timezone"], "Asia/Tokyo");
    assert!(
        time["datetime"]
            .as_str()
            .expect("datetime")
            .ends_with("+09:00"),
        "{time}"
    );
}

fn everything_bin(deps: &std::path::Path) -> String {
    deps.join("npm/node_modules/.bin/mcp-server-everything")
        .display()
        .to_string()
}

#[test]
fn everything_server_from_npm_lists_and_calls_tools_from_pooled_jobs() {
    let Some(deps) = deps("npm") else { return };
    let server = format!(
        "[servers.everything]\ncommand = \"node\"\nargs = [\"{}\"]\n",
        everything_bin(&deps)
    );
    let env = TestEnv::new("npm-everything", &server);
    let _worker = env.worker(&[]);
    let job = r#"{"kind":"agent","payload":{"steps":[
        {"server":"everything","tool":"echo","arguments":{"message":"hello node"}},
        {"server":"everything","tool":"get-sum","arguments":{"a":19,"b":23}}]}}"#;
    let out = env.mcpq_with_stdin(&["submit", "-", "--wait", "--json"], job.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last = text(&out.stdout)
        .lines()
        .last()
        .map(str::to_string)
        .expect("result line");
    let v: Value = serde_json::from_str(&last).expect("JSON");
    let echo = v["result"][0]["result"]["content"][0]["text"]
        .as_str()
        .expect("echo");
    assert!(echo.contains("hello node"), "{echo}");
    let sum = v["result"][1]["result"]["content"][0]["text"]
        .as_str()
        .expect("sum");
    assert!(sum.contains("42"), "{sum}");
    // Its tools, listed by `mcpq servers check`.
    let out = env.mcpq(&["servers", "check", "everything", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let check: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let tools = check["tools"].as_array().expect("tools");
    for tool in ["echo", "get-sum"] {
        assert!(tools.iter().any(|t| t == tool), "{tool} not in {tools:?}");
    }
}

#[test]
fn everything_through_npx_leaves_no_node_process_when_its_job_times_out() {
    let Some(deps) = deps("npm") else { return };
    let tag = format!("MCPQ_TEST_TAG={}", ulid::Ulid::generate());
    let (key, value) = tag.split_once('=').expect("tag");
    // `npx` (npm exec, then sh, then node) stands between us and the server; it finds
    // the package installed in the prefix, so nothing is downloaded.
    let server = format!(
        "[servers.npx_everything]\ncommand = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-everything\"]\ncwd = \"{}\"\nenv = {{ {key} = \"{value}\" }}\npool = false\nstartup_timeout = \"60s\"\n[defaults]\nkill_grace = \"1s\"\n",
        deps.join("npm").display()
    );
    let env = TestEnv::new("npx-everything", &server);
    let _worker = env.worker(&[]);
    let id = env.submit_call(
        "npx_everything",
        "trigger-long-running-operation",
        r#"{"duration":60,"steps":5}"#,
        &["--timeout", "20s", "--max-attempts", "1"],
    );
    // While it runs, the launcher and the server both carry the tag.
    assert!(
        mcpq_tests::wait_until(std::time::Duration::from_secs(30), || {
            mcpq_tests::processes_with_env(&tag).len() >= 2
        }),
        "npx and node never ran: {:?}",
        mcpq_tests::processes_with_env(&tag)
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "timeout", "{v}");
    assert!(
        mcpq_tests::wait_until(std::time::Duration::from_secs(5), || {
            mcpq_tests::processes_with_env(&tag).is_empty()
        }),
        "left behind: {:?}",
        mcpq_tests::processes_with_env(&tag)
    );
}

#[test]
fn memory_server_from_npm_keeps_what_a_plan_stores() {
    let Some(deps) = deps("npm") else { return };
    let env = TestEnv::new("npm-memory", "");
    let server = format!(
        "[servers.memory]\ncommand = \"node\"\nargs = [\"{}\"]\nenv = {{ MEMORY_FILE_PATH = \"{}\" }}\n",
        deps.join("npm/node_modules/.bin/mcp-server-memory").display(),
        env.dir.join("memory.jsonl").display()
    );
    env.add_config(&server);
    let _worker = env.worker(&[]);
    let job = r#"{"kind":"agent","payload":{"steps":[
        {"server":"memory","tool":"create_entities","arguments":{"entities":[
            {"name":"ACME","entityType":"customer","observations":["pays in EUR"]}]}},
        {"server":"memory","tool":"read_graph"}]}}"#;
    let out = env.mcpq_with_stdin(&["submit", "-", "--wait", "--json"], job.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last = text(&out.stdout)
        .lines()
        .last()
        .map(str::to_string)
        .expect("result line");
    assert!(last.contains("pays in EUR"), "{last}");
}

#[test]
fn git_server_from_pypi_reports_a_repositorys_status() {
    let Some(deps) = deps("venv") else { return };
    let env = TestEnv::new("pypi-git", "");
    let repo = env.dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    let init = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(&repo)
        .status()
        .expect("git init");
    assert!(init.success());
    std::fs::write(repo.join("untracked.txt"), "x").expect("file");
    let server = format!(
        "[servers.git]\ncommand = \"{}\"\n",
        deps.join("venv/bin/mcp-server-git").display()
    );
    env.add_config(&server);
    let _worker = env.worker(&[]);
    let args = serde_json::json!({"repo_path": repo.display().to_string()}).to_string();
    let id = env.submit_call("git", "git_status", &args, &["--timeout", "60s"]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    let status = v["result"][0]["result"]["content"][0]["text"]
        .as_str()
        .expect("status");
    assert!(status.contains("untracked.txt"), "{status}");
}
