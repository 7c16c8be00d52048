//! `mcpq run FILE`: run one job in-process, without Redis, through `mcpq-worker run`.
//!
//! The producer links no supervisor and no MCP client (docs/ARCHITECTURE.md, "Two
//! library crates"), so, like `mcpq servers check`, this command replaces itself (exec)
//! with `mcpq-worker run`, found beside `mcpq` or on PATH: the worker runs the job
//! through its own runner, and its output and exit status are this command's (those of
//! `mcpq wait`: 0 succeeded, 1 failed or stopped, 2 bad job, flag or config). Stdin
//! (`-`) and signals go to it unchanged, as it is this very process.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::commands::Ctx;
use crate::exit;

/// Execs `mcpq-worker [--config PATH] run [--json] -- FILE`; returns only if that fails.
pub fn run(ctx: &Ctx, cli_config: Option<&Path>, file: &str) -> anyhow::Result<u8> {
    let worker = super::sibling_binary("mcpq-worker");
    let mut cmd = std::process::Command::new(&worker);
    if let Some(path) = cli_config {
        cmd.arg("--config").arg(path);
    }
    cmd.arg("run");
    if ctx.json {
        cmd.arg("--json");
    }
    cmd.arg("--").arg(file);
    let err = cmd.exec();
    Err(exit::config(format!(
        "`mcpq run` runs `mcpq-worker run`, which could not start ({}: {err}); \
         install mcpq-worker next to mcpq or on PATH",
        worker.display()
    )))
}
