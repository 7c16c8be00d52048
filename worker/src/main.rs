//! `mcpq-worker`: the daemon that pulls jobs from Redis and runs them against MCP servers.
//!
//! Started with `--mcpq-template-sandbox` as its first argument, it is instead a
//! template sandbox child of a worker (see `mcpq_shared::agent::template_sandbox`);
//! `mcpq-worker check` starts each server once and lists its tools ([`check`]);
//! `mcpq-worker run FILE` runs one job in-process, without Redis ([`run_one`]).
//!
//! This file is the glue and reads top to bottom (each step says why it comes where it
//! does):
//! 1. reset the inherited signal state (before any thread exists: masks are per thread);
//! 2. parse flags, start non-blocking logging ([`logging`]), log what the reset changed;
//! 3. load the config, start the tokio runtime, connect to Redis;
//! 4. start the background loops (`mcpq_worker`'s launcher): lease renewal, the cancel listener,
//!    the rescuer of dead workers' jobs, server reports ([`reports`]), the attachment
//!    sweep;
//! 5. run an apalis Monitor with one worker of N concurrent jobs over mcpq's own Redis
//!    backend ([`mcpq_shared::backend`]);
//! 6. on SIGTERM/SIGINT ([`signals`]): stop fetching, let running jobs finish within
//!    `worker.shutdown_grace`, then stop the rest: they are released to the front of
//!    their queue (not counted as failures) and their servers stopped; exit 0.
//!
//! Exit codes: 0 clean shutdown, 2 bad flags or config, 3 Redis unreachable at start,
//! 1 anything else.

use mcpq_worker::{check, run_one, signals};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mcpq_shared::agent::template_sandbox;
use mcpq_shared::{logging, supervisor, Config};

/// Runs mcpq jobs: pulls them from Redis, calls MCP tools, stores results.
///
/// The worker spawns only the MCP servers named in its config ([servers.NAME]); a job
/// can name a server, never a command. Stop it with SIGTERM or Ctrl-C: it stops taking
/// jobs, lets running ones finish (worker.shutdown_grace), then stops every server.
#[derive(Debug, Parser)]
#[command(name = "mcpq-worker", version, after_long_help = EXAMPLES)]
struct Args {
    /// Config file (mcpq.toml, or an MCP JSON file: Claude Desktop, Cursor, VS Code).
    #[arg(long, global = true, env = "MCPQ_CONFIG")]
    config: Option<PathBuf>,
    /// Redis URL; overrides redis_url in the config. Put no password here (`ps` shows
    /// it): use REDIS_URL, or redis_password_env in the config.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Key namespace; overrides namespace in the config.
    #[arg(long, env = "MCPQ_NAMESPACE")]
    namespace: Option<String>,
    /// Jobs run at once; overrides worker.concurrency.
    #[arg(long, env = "MCPQ_CONCURRENCY")]
    concurrency: Option<usize>,
    /// The queues to serve, with weights: `emails:3,agents:1` takes 3 jobs from emails
    /// for 1 from agents while both have work (default: the `default` queue alone);
    /// overrides worker.queues.
    #[arg(long, env = "MCPQ_QUEUES", value_name = "NAME[:WEIGHT],...")]
    queues: Option<String>,
    /// This worker's name; must be unique among live workers (default: host-pid-random).
    #[arg(long)]
    name: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9717); overrides
    /// worker.metrics_listen.
    #[arg(long, env = "MCPQ_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log line format (stderr). Filter with MCPQ_LOG or RUST_LOG, e.g. MCPQ_LOG=debug.
    #[arg(long, value_enum, default_value = "text")]
    log_format: logging::LogFormat,
    /// Without a command the worker runs until stopped.
    #[command(subcommand)]
    command: Option<WorkerCommand>,
}

/// What else the worker binary does.
#[derive(Debug, Subcommand)]
enum WorkerCommand {
    /// Start each configured server (or those named) once, the way jobs run it, list its
    /// tools, stop it; report what fails with the server's stderr tail. Needs no Redis.
    /// `mcpq servers check` runs this.
    Check(check::CheckArgs),
    /// Run one job in this process, without Redis (the same runner, supervisor and
    /// pool as a worker), and print its outcome like `mcpq wait`. `mcpq run` runs this.
    Run(run_one::RunArgs),
}

const EXAMPLES: &str = "\
Examples:
  mcpq-worker --config mcpq.toml
  REDIS_URL=redis://10.0.0.5:6379 mcpq-worker --config mcpq.toml --concurrency 16
  MCPQ_LOG=debug mcpq-worker --config mcpq.toml   # also shows MCP servers' stderr
  mcpq-worker --config mcpq.toml check --json     # start each server once, list its tools
  mcpq-worker --config mcpq.toml run plan.json    # run one job here, no Redis

Exit status: 0 after a clean shutdown, 2 bad flags or config, 3 Redis unreachable, 1 other errors;
`check`: 0 every server answered, 1 one or more failed, 2 bad flags, config or server name;
`run`: 0 the job succeeded, 1 it failed or was stopped, 2 bad flags, config or job.";

fn main() -> ExitCode {
    // 0. A child started to render templates (`TemplateSandbox`): nothing of the worker
    //    runs in it, not even flag parsing.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == template_sandbox::SANDBOX_ARG)
    {
        return template_sandbox::serve();
    }
    // 1. Before anything spawns a thread: see the module doc.
    let reset = supervisor::reset_own_signal_state();
    let mut args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return flag_error(e),
    };
    match args.command.take() {
        Some(WorkerCommand::Check(check_args)) => {
            return check::main(args.config.as_deref(), check_args)
        }
        Some(WorkerCommand::Run(run_args)) => {
            return run_one::main(args.config.as_deref(), run_args)
        }
        None => {}
    }
    let log_guard = logging::init(
        "mcpq-worker",
        args.log_format,
        "info,apalis=warn,apalis_core=warn,apalis_redis=warn,rmcp=warn",
    );
    signals::log_reset(&reset);
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpq-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let (redactor, metrics) = mcpq_worker::instrument(&config, &log_guard);
    let name = args.name.clone().unwrap_or_else(default_name);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let run = async {
        let signals = signals::Signals::install()
            .map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
        mcpq_worker::run(
            Arc::new(config),
            name,
            redactor,
            metrics,
            signals::Shutdown::Signals(signals),
        )
        .await
    };
    match runtime.block_on(run) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mcpq-worker: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn default_name() -> String {
    mcpq_worker::default_name()
}

/// Prints clap's error or help and returns its exit status (2, or 0 for --help and
/// --version), as `Args::parse` would; a usage error is one JSON line when `--json` is
/// among the flags (`check --json`, which `mcpq servers check --json` runs).
fn flag_error(e: clap::Error) -> ExitCode {
    let json = mcpq_shared::cli_error::json_requested(std::env::args_os().skip(1));
    if !e.use_stderr() || !json {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let message = e.render().to_string();
    let err = mcpq_shared::cli_error::CliError::new(
        mcpq_shared::cli_error::CliErrorKind::Usage,
        message.trim_end(),
    );
    eprintln!("{}", err.to_json());
    ExitCode::from(err.exit_code())
}

/// Reads and checks the configuration (before the runtime: file reads are blocking).
fn load_config(args: &Args) -> Result<Config, String> {
    let mut config = Config::load(args.config.as_deref())
        .and_then(|c| c.with_overrides(args.redis_url.clone(), args.namespace.clone()))
        .map_err(|e| e.to_string())?;
    // A missing redis_password_env variable is a config error at start-up.
    config.redis_target().map_err(|e| e.to_string())?;
    if let Some(addr) = args.metrics_listen {
        config.worker.metrics_listen = Some(addr);
    }
    if let Some(n) = args.concurrency {
        config.worker.concurrency = n;
        config
            .validate()
            .map_err(|e| format!("--concurrency: {e}"))?;
    }
    if let Some(queues) = &args.queues {
        config.worker.queues = Some(queues.clone());
        config.validate().map_err(|e| format!("--queues: {e}"))?;
    }
    Ok(config)
}
