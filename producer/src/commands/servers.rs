//! `mcpq servers` (what the workers report) and `mcpq servers check` (ask each server,
//! through `mcpq-worker check`).

use std::os::unix::process::CommandExt;
use std::path::Path;

use mcpq_core::cli_error::CliWarningKind;
use mcpq_core::queue::{self, servers, Keys};
use serde_json::json;

use crate::cli::{ServersAction, ServersArgs};
use crate::commands::Ctx;
use crate::{exit, output};

pub async fn run(ctx: &Ctx, cli_config: Option<&Path>, args: ServersArgs) -> anyhow::Result<u8> {
    match args.action {
        None => list(ctx).await,
        Some(ServersAction::Check(check_args)) => check(ctx, cli_config, &check_args.names),
    }
}

fn target(server: &mcpq_core::config::ServerConfig) -> String {
    if let Some(url) = &server.url {
        return url.clone();
    }
    std::iter::once(server.command.as_str())
        .chain(server.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn list(ctx: &Ctx) -> anyhow::Result<u8> {
    let conn = queue::connect_to(&ctx.redis_target()?)
        .await
        .map_err(exit::queue)?;
    let reports = servers::read_all(&conn, &Keys::new(ctx.config.namespace.clone()))
        .await
        .map_err(exit::queue)?;
    if ctx.config.servers.is_empty() {
        output::warning(
            ctx.json,
            CliWarningKind::NoServersConfigured,
            "no servers configured (pass --config or set MCPQ_CONFIG)",
            "",
        );
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

/// Runs `mcpq-worker check` in place of this process: the worker starts each server with
/// the same supervisor and MCP session it uses for jobs, and the producer links neither.
/// Its output and exit status are this command's (0 all answered, 1 one or more failed).
fn check(ctx: &Ctx, cli_config: Option<&Path>, names: &[String]) -> anyhow::Result<u8> {
    for name in names {
        if !ctx.config.servers.contains_key(name) {
            return Err(exit::usage(format!(
                "unknown server `{name}` (configured: {})",
                ctx.config.server_names().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let worker = super::sibling_binary("mcpq-worker");
    let mut cmd = std::process::Command::new(&worker);
    if let Some(path) = cli_config {
        cmd.arg("--config").arg(path);
    }
    cmd.arg("check");
    if ctx.json {
        cmd.arg("--json");
    }
    cmd.arg("--").args(names);
    // Returns only if the exec failed.
    let err = cmd.exec();
    Err(exit::config(format!(
        "`mcpq servers check` runs `mcpq-worker check`, which could not start ({}: {err}); \
         install mcpq-worker next to mcpq or on PATH",
        worker.display()
    )))
}
