//! Real third-party MCP servers (npm and PyPI), installed by scripts/test-deps.

use std::path::PathBuf;

use mcpq_tests::{text, TestEnv};
use serde_json::Value;

/// The deps directory, or `None` with a loud message when scripts/test-deps could not
/// install `what` (registry unreachable).
fn deps(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("MCPQ_DEPS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mcpq-deps")))?;
    if dir.join(what).join(".stamp").exists() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {what} MCP servers are not installed in {} (run scripts/test-deps; is the registry reachable?)", dir.display());
        None
    }
}

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
    let out = env.mcpq(&["wait", &id, "--timeout", "60s", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
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
    let out = env.mcpq(&["wait", &id, "--timeout", "60s", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
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
    let out = env.mcpq(&["wait", &id, "--timeout", "60s", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
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
