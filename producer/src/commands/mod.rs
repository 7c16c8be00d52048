//! The commands, after the command line is parsed: resolve config and Redis, then act.

mod batch;
mod cancel;
mod dlq;
mod jobs;
mod queues;
mod result;
mod run;
mod schedules;
mod serve;
mod servers;
mod status;
pub mod submit;
mod wait;
mod webhooks;

use mcpq_core::job::JobId;
use mcpq_core::queue::{self, Producer};
use mcpq_core::Config;

use crate::cli::{Cli, Command};
use crate::exit;

/// What every command needs, resolved from flags, env and the config file.
pub struct Ctx {
    pub config: Config,
    pub json: bool,
}

impl Ctx {
    /// Where to connect, password from `redis_password_env` included (`config`, exit 2,
    /// if that variable is not set).
    pub fn redis_target(&self) -> anyhow::Result<queue::RedisTarget> {
        self.config
            .redis_target()
            .map_err(|e| exit::config(e.to_string()))
    }

    /// Connects to Redis (exit 3 with the URL if it cannot).
    pub async fn producer(&self) -> anyhow::Result<Producer> {
        let target = self.redis_target()?;
        let (conn, keys) = queue::open(&target, &self.config.namespace)
            .await
            .map_err(exit::queue)?;
        Ok(Producer::new(conn, keys, self.config.queue.clone())
            .with_durability(target.settings.wait_replicas, target.settings.wait_timeout))
    }
}

/// The record of job `id` (`unknown_job`, exit 2, if there is no such job in the
/// namespace).
pub async fn record(
    ctx: &Ctx,
    store: &mcpq_core::queue::ResultStore,
    id: &JobId,
) -> anyhow::Result<mcpq_core::queue::JobRecord> {
    known(ctx, id, store.get(&id.to_string()).await)
}

/// The record of job `id` without its result and payload (`unknown_job` if there is no
/// such job): what a status needs, however big the result is.
pub async fn status_record(
    ctx: &Ctx,
    store: &mcpq_core::queue::ResultStore,
    id: &JobId,
) -> anyhow::Result<mcpq_core::queue::JobRecord> {
    known(ctx, id, store.status(&id.to_string()).await)
}

/// A read record, or the exit code that says why there is none.
fn known(
    ctx: &Ctx,
    id: &JobId,
    read: Result<Option<mcpq_core::queue::JobRecord>, mcpq_core::queue::QueueError>,
) -> anyhow::Result<mcpq_core::queue::JobRecord> {
    read.map_err(exit::queue)?.ok_or_else(|| {
        exit::unknown_job(format!(
            "no job {id} in namespace `{}`",
            ctx.config.namespace
        ))
    })
}

/// Parses a job id argument (`usage`, exit 2, if it is not one).
pub fn parse_id(text: &str) -> anyhow::Result<JobId> {
    text.parse()
        .map_err(|e: mcpq_core::job::JobError| exit::usage(e.to_string()))
}

/// `name` beside this executable (how mcpq's binaries are installed and built), else the
/// one on PATH.
pub fn sibling_binary(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(name))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| std::path::PathBuf::from(name))
}

/// Runs the parsed command; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let config = Config::load(cli.config.as_deref())
        .and_then(|c| c.with_overrides(cli.redis_url.clone(), cli.namespace.clone()))
        .map_err(|e| exit::config(e.to_string()))?;
    let ctx = Ctx {
        config,
        json: cli.json,
    };
    match cli.command {
        Command::Submit(args) => submit::run(&ctx, *args).await,
        Command::Status(args) => status::run(&ctx, &args.id).await,
        Command::Result(args) => result::run(&ctx, &args.id).await,
        Command::Wait(args) => wait::run(&ctx, &args.id, args.timeout).await,
        Command::Run(args) => run::run(&ctx, cli.config.as_deref(), &args.file),
        Command::Servers(args) => servers::run(&ctx, cli.config.as_deref(), args).await,
        Command::Serve(args) => serve::run(&ctx, cli.config.as_deref(), args),
        Command::Cancel(args) => cancel::run(&ctx, &args.id).await,
        Command::Dlq(args) => dlq::run(&ctx, args.action).await,
        Command::Batch(args) => batch::run(&ctx, args.action).await,
        Command::Jobs(args) => jobs::run(&ctx, args).await,
        Command::Schedules => schedules::run(&ctx).await,
        Command::Webhooks(args) => webhooks::run(&ctx, args.action).await,
        Command::Queues => queues::list(&ctx).await,
        Command::Queue(args) => queues::act(&ctx, args.action).await,
    }
}
