//! The README's "Use mcpq from an MCP client" snippets work as copied: the Claude
//! Desktop entry (`mcpq serve --stdio --with-worker`) is started as a client would
//! start it and answers a gateway call with nothing else running but Redis; the VS Code
//! `mcp.json` is read by mcpq's own config reader (its `${input:...}` from
//! `MCPQ_INPUT_*`) and a worker calls a gateway tool through it.

use std::time::Duration;

use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::{bin, free_port, TestEnv};
use serde_json::Value;

/// The `n`th fenced ```json block of the README's "Use mcpq from an MCP client".
fn snippet(n: usize) -> Value {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Use mcpq from an MCP client\n")
        .nth(1)
        .expect("README.md has the section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let block = section
        .split("```json\n")
        .nth(n + 1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("no json block {n} in the section"));
    serde_json::from_str(block).unwrap_or_else(|e| panic!("json block {n}: {e}\n{block}"))
}

#[test]
fn the_claude_desktop_entry_serves_gateway_calls_with_its_own_worker() {
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::TokioChildProcess;
    use rmcp::ServiceExt;
    let entry = snippet(0)["mcpServers"]["mcpq"].clone();
    assert_eq!(entry["command"], "mcpq", "{entry}");
    let env = TestEnv::new("readme-claude", "[serve.mcp]\nexpose = [\"echo__*\"]\n");
    // As copied, but for where this machine keeps mcpq and the config, and its Redis.
    let args: Vec<String> = entry["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| match a.as_str().expect("a string") {
            "/home/me/mcpq/mcpq.toml" => env.config.display().to_string(),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(entry["env"]["REDIS_URL"], "redis://127.0.0.1:6379");
    let mut command = tokio::process::Command::new(bin("mcpq"));
    command
        .args(&args)
        .env_remove("MCPQ_CONFIG")
        .env_remove("MCPQ_NAMESPACE")
        .env("REDIS_URL", &env.redis_url)
        .current_dir(&env.dir);
    let rt = mcpq_tests::runtime();
    rt.block_on(async {
        let transport = TokioChildProcess::new(command).expect("start mcpq serve --stdio");
        let client = tokio::time::timeout(Duration::from_secs(30), ().serve(transport))
            .await
            .expect("initialize in time")
            .expect("initialize");
        let call = CallToolRequestParams::new("echo__echo").with_arguments(
            serde_json::json!({"text": "from Claude"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let result = tokio::time::timeout(Duration::from_secs(60), client.peer().call_tool(call))
            .await
            .expect("answered in time")
            .expect("tools/call");
        assert_ne!(result.is_error, Some(true), "{result:?}");
        let text = serde_json::to_value(&result.content).expect("json")[0]["text"].clone();
        assert_eq!(text, "from Claude");
        let _ = client.cancel().await;
    });
}

#[test]
fn the_vs_code_mcp_json_is_read_by_mcpq_and_reaches_the_front() {
    let port = free_port();
    let file = snippet(1);
    let url = file["servers"]["mcpq"]["url"].as_str().expect("url");
    assert_eq!(url, "http://127.0.0.1:7717/mcp");
    // This test's front listens elsewhere than 7717 (tests run side by side).
    let text = file
        .to_string()
        .replace("127.0.0.1:7717", &format!("127.0.0.1:{port}"));
    let env = TestEnv::new(
        "readme-vscode",
        &format!(
            "[worker]\nconcurrency = 4\n[serve.mcp]\nexpose = [\"echo__echo\"]\n{TOKEN_CONFIG}"
        ),
    );
    // The front reads no VS Code file: it starts first, with the config as it is.
    let listen = format!("127.0.0.1:{port}");
    let serve = env.serve(&["--listen", &listen]);
    let vscode = env.dir.join("mcp.json");
    std::fs::write(&vscode, text).expect("write mcp.json");
    // mcp_servers_file is a top-level key: it goes above the tables.
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        format!("mcp_servers_file = \"{}\"\n{config}", vscode.display()),
    )
    .expect("config");
    // The worker reads the VS Code file; its input comes from MCPQ_INPUT_MCPQ_TOKEN.
    let _worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_INPUT_MCPQ_TOKEN", TOKEN);
    });
    // So does the CLI, which reads the same config.
    let mcpq = |args: &[&str]| {
        env.mcpq_command(args)
            .env("MCPQ_INPUT_MCPQ_TOKEN", TOKEN)
            .output()
            .expect("run mcpq")
    };
    let out = mcpq(&[
        "submit",
        "agent",
        "--server",
        "mcpq",
        "--tool",
        "echo__echo",
        "--args",
        r#"{"text":"from VS Code's file"}"#,
        "--timeout",
        "30s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        mcpq_tests::text(&out.stderr)
    );
    let id = mcpq_tests::text(&out.stdout).trim().to_string();
    let out = mcpq(&["wait", &id, "--timeout", "60s", "--json"]);
    let record: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{record} / {}",
        serve.log_text()
    );
    assert_eq!(
        record["result"][0]["result"]["content"][0]["text"], "from VS Code's file",
        "{record}"
    );
}
