//! `mcpq servers` (what the workers report) and `mcpq servers check` (ask each server).

use std::time::Instant;

use mcpq_shared::mcp::McpSession;
use mcpq_shared::queue::{self, servers, Keys};
use mcpq_shared::supervisor::Supervisor;
use serde_json::json;

use crate::cli::{ServersAction, ServersArgs};
use crate::commands::Ctx;
use crate::{exit, output};

pub async fn run(ctx: &Ctx, args: ServersArgs) -> anyhow::Result<u8> {
    match args.action {
        None => list(ctx).await,
        Some(ServersAction::Check(check_args)) => check(ctx, &check_args.names).await,
    }
}

fn target(server: &mcpq_shared::config::ServerConfig) -> String {
    if let Some(url) = &server.url {
        return url.clone();
    }
    std::iter::once(server.command.as_str())
        .chain(server.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn list(ctx: &Ctx) -> anyhow::Result<u8> {
    let conn = queue::connect(&ctx.redis_url()?)
        .await
        .map_err(exit::queue)?;
    let reports = servers::read_all(&conn, &Keys::new(ctx.config.namespace.clone()))
        .await
        .map_err(exit::queue)?;
    if ctx.config.servers.is_empty() {
        eprintln!("no servers configured (pass --config or set MCPQ_CONFIG)");
    }
    for (name, server) in &ctx.config.servers {
        let report = reports.get(name);
        if ctx.json {
            output::json_line(
                "server",
                json!({"name": name, "command": target(server), "pooled": server.pool, "report": report}),
            );
            continue;
        }
        let Some(r) = report else {
            output::line(&format!(
                "{name}  (no worker report: is a worker running? try `mcpq servers check`)\n  command: {}",
                target(server)
            ));
            continue;
        };
        let health = match r.health_clears_in_ms {
            Some(ms) => format!("{} ({} ms left)", r.health, ms),
            None => r.health.clone(),
        };
        let tools = match &r.tools {
            Some(tools) => tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            None => "(unknown until a session is up)".to_string(),
        };
        output::line(&format!(
            "{name}  {health}  sessions {} ({} in flight){}\n  command: {}\n  tools: {tools}",
            r.sessions,
            r.in_flight,
            if r.pooled { "" } else { ", fresh per job" },
            target(server)
        ));
    }
    Ok(exit::OK)
}

async fn check(ctx: &Ctx, names: &[String]) -> anyhow::Result<u8> {
    for name in names {
        if !ctx.config.servers.contains_key(name) {
            return Err(exit::usage(format!(
                "unknown server `{name}` (configured: {})",
                ctx.config.server_names().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let supervisor = Supervisor::new();
    let mut failed = 0;
    for (name, server) in &ctx.config.servers {
        if !names.is_empty() && !names.contains(name) {
            continue;
        }
        let timeouts = ctx.config.timeouts(server);
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
                if ctx.json {
                    output::json_line(
                        "check",
                        json!({"name": name, "ok": true, "elapsed_ms": elapsed_ms, "tools": names}),
                    );
                } else {
                    output::line(&format!(
                        "ok    {name}  ({elapsed_ms} ms, {} tools: {})",
                        names.len(),
                        names.join(", ")
                    ));
                }
            }
            Err(e) => {
                failed += 1;
                if ctx.json {
                    output::json_line(
                        "check",
                        json!({"name": name, "ok": false, "elapsed_ms": elapsed_ms,
                               "error": {"kind": e.kind(), "message": e.to_string(), "stderr_tail": e.stderr()}}),
                    );
                } else {
                    output::line(&format!("FAIL  {name}  ({elapsed_ms} ms): {e}"));
                    if let Some(tail) = e.stderr() {
                        output::line(&format!(
                            "  --- stderr (last lines) ---\n  {}",
                            tail.trim_end().replace('\n', "\n  ")
                        ));
                    }
                }
            }
        }
    }
    Ok(if failed > 0 {
        exit::JOB_FAILED
    } else {
        exit::OK
    })
}
