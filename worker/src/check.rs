//! `mcpq-worker check [NAME...]`: start each configured server once, exactly the way a
//! worker runs it for a job (the same supervisor, spawn, timeouts and MCP session),
//! list its tools, stop it, and report what fails with the server's stderr tail.
//!
//! `mcpq servers check` runs this command (the producer links no supervisor and no MCP
//! client, see `producer/src/commands/servers.rs`), so its output is the producer's:
//! with `--json` one `{"type": "check", ...}` object per server on stdout, otherwise one
//! line per server with every control character escaped (server names, tool names and
//! stderr come from outside). Every server's start and listing has a deadline
//! (`startup_timeout` + `call_timeout`), so the check ends.
//!
//! Exit status: 0 every server answered, 1 one or more failed, 2 bad flags, config or
//! an unknown server name. Those errors go to stderr, under `--json` as the producer's
//! do: one `{"type": "error", "kind": ...}` line (`mcpq_shared::cli_error`; `config`,
//! `usage`, `internal`), so `mcpq servers check --json` keeps its contract.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use mcpq_shared::cli_error::{CliError, CliErrorKind};
use mcpq_shared::mcp::McpSession;
use mcpq_shared::supervisor::Supervisor;
use mcpq_shared::terminal::{escape, print_json, print_line, Newlines};
use mcpq_shared::Config;
use serde_json::json;

/// `mcpq-worker check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Server names (default: all configured).
    pub names: Vec<String>,
    /// Print one JSON object per server (`"type": "check"`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Loads the config, checks the servers, returns the exit status.
pub fn main(config: Option<&Path>, args: CheckArgs) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            let err = CliError::new(CliErrorKind::Config, e.to_string());
            return report(&args, &err, Newlines::Keep);
        }
    };
    for name in &args.names {
        if !config.servers.contains_key(name) {
            let known = config.server_names().collect::<Vec<_>>().join(", ");
            let err = CliError::new(
                CliErrorKind::Usage,
                format!("unknown server `{name}` (configured: {known})"),
            );
            return report(&args, &err, Newlines::Escape);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let err = CliError::new(
                CliErrorKind::Internal,
                format!("cannot start the async runtime: {e}"),
            );
            return report(&args, &err, Newlines::Keep);
        }
    };
    let failed = runtime.block_on(check(&config, &args));
    ExitCode::from(u8::from(failed > 0))
}

/// Checks the selected servers one after the other; returns how many failed.
async fn check(config: &Config, args: &CheckArgs) -> usize {
    let supervisor = Supervisor::new();
    let mut failed = 0;
    for (name, server) in &config.servers {
        if !args.names.is_empty() && !args.names.contains(name) {
            continue;
        }
        let timeouts = config.timeouts(server);
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeouts.startup + timeouts.call;
        let outcome = match McpSession::start(&supervisor, name, server, timeouts, deadline).await {
            Ok(session) => {
                let tools = session.list_tools(timeouts.call).await;
                session.shutdown().await;
                tools
            }
            Err(e) => Err(e),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(tools) => {
                let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
                if args.json {
                    print_json(
                        "check",
                        json!({"name": name, "ok": true, "elapsed_ms": elapsed_ms, "tools": names}),
                    );
                } else {
                    print_line(&format!(
                        "ok    {name}  ({elapsed_ms} ms, {} tools: {})",
                        names.len(),
                        names.join(", ")
                    ));
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    print_json(
                        "check",
                        json!({"name": name, "ok": false, "elapsed_ms": elapsed_ms,
                        "error": {"kind": e.kind(), "message": e.to_string(), "stderr_tail": e.stderr()}}),
                    );
                } else {
                    print_line(&format!("FAIL  {name}  ({elapsed_ms} ms): {e}"));
                    if let Some(tail) = e.stderr() {
                        print_line(&format!(
                            "  --- stderr (last lines) ---\n  {}",
                            tail.trim_end().replace('\n', "\n  ")
                        ));
                    }
                }
            }
        }
    }
    failed
}

/// Prints an error that stops the check on stderr (`mcpq-worker: MESSAGE`, escaped with
/// `newlines`, or one JSON line under `--json`) and returns its exit code.
fn report(args: &CheckArgs, err: &CliError, newlines: Newlines) -> ExitCode {
    if args.json {
        eprintln!("{}", err.to_json());
    } else {
        eprintln!(
            "{}",
            escape(&format!("mcpq-worker: {}", err.message), newlines)
        );
    }
    ExitCode::from(err.exit_code())
}
