//! `mcpq serve`: runs `mcpq-serve` in place of this process (the CLI links no HTTP
//! server), with the same config, namespace and output format.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::cli::ServeArgs;
use crate::commands::{sibling_binary, Ctx};
use crate::exit;

pub fn run(ctx: &Ctx, cli_config: Option<&Path>, args: ServeArgs) -> anyhow::Result<u8> {
    let serve = sibling_binary("mcpq-serve");
    let mut cmd = std::process::Command::new(&serve);
    if let Some(path) = cli_config {
        cmd.arg("--config").arg(path);
    }
    // Resolved here from flags, env and file; passed by environment, never on the
    // command line (`ps` would show a password in the URL).
    cmd.env("REDIS_URL", &ctx.config.redis_url)
        .env("MCPQ_NAMESPACE", &ctx.config.namespace);
    if let Some(listen) = args.listen {
        cmd.arg("--listen").arg(listen.to_string());
    }
    if args.stdio {
        cmd.arg("--stdio");
    } else if ctx.json {
        cmd.arg("--json");
    }
    if args.with_worker {
        cmd.arg("--with-worker");
    }
    // Returns only if the exec failed.
    let err = cmd.exec();
    Err(exit::config(format!(
        "`mcpq serve` runs `mcpq-serve`, which could not start ({}: {err}); install mcpq-serve next to mcpq or on PATH",
        serve.display()
    )))
}
