//! The mcpq worker as a library: what `mcpq-worker` runs, and what `mcpq serve
//! --with-worker` runs inside its own process.
//!
//! [`run`] connects to Redis, starts the background loops ([`launcher`]): lease
//! renewal, the cancel listener, the rescuer of dead workers' jobs, server reports and
//! the tool catalog ([`reports`]), the attachment sweep, the webhook dispatcher; then
//! runs an apalis Monitor with one worker of N concurrent jobs over mcpq's own Redis
//! backend ([`mcpq_shared::backend`]) until [`signals::Shutdown`] says stop: no new
//! jobs, running ones finish within `worker.shutdown_grace`, the rest are released to
//! the front of their queue (not counted as failures), every server is stopped.
//!
//! The caller resets the process's signal state first, and, since template sandboxes
//! are children of the running binary started with
//! [`mcpq_shared::agent::template_sandbox::SANDBOX_ARG`], its `main` must hand that
//! argument to [`mcpq_shared::agent::template_sandbox::serve`] before anything else.

pub mod check;
mod launcher;
mod metrics_server;
mod reports;
pub mod run_one;
pub mod signals;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use apalis::prelude::*;
use mcpq_shared::backend::RedisQueue;
use mcpq_shared::config::served::Served;
use mcpq_shared::queue::{self, Delivery, Keys};
use mcpq_shared::{Config, Runner};

use launcher::Launcher;

/// The worker's one Redactor (its log and its runner: stored errors, results) and its
/// metrics, wired into the process's log: from here on no log line carries a secret
/// the worker read (API keys, tokens, passwords: servers and APIs echo them in errors),
/// and dropped log lines are counted.
pub fn instrument(
    config: &Config,
    log_guard: &mcpq_shared::logging::LogGuard,
) -> (
    Arc<mcpq_shared::redact::Redactor>,
    mcpq_shared::metrics::Metrics,
) {
    let redactor = Arc::new(mcpq_shared::redact::Redactor::from_config(config));
    log_guard.set_redactor(redactor.clone());
    let metrics = mcpq_shared::metrics::Metrics::new();
    let dropped = metrics.log_lines_dropped();
    log_guard.count_drops_with(move || {
        dropped.inc();
    });
    (redactor, metrics)
}

/// A worker name: host-pid-random (unique among live workers).
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    let random = ulid::Ulid::generate().random() as u32;
    format!("{host}-{}-{random:08x}", std::process::id())
}

/// Runs a worker until `shutdown` (see the crate doc). Exit code 3 when Redis cannot
/// be reached at start.
pub async fn run(
    config: Arc<Config>,
    name: String,
    redactor: Arc<mcpq_shared::redact::Redactor>,
    metrics: mcpq_shared::metrics::Metrics,
    shutdown: signals::Shutdown,
) -> anyhow::Result<ExitCode> {
    let signals = shutdown;
    let target = config.redis_target().context("redis_url")?;
    let (conn, keys) = match queue::open(&target, &config.namespace).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpq-worker: {e}");
            return Ok(ExitCode::from(3));
        }
    };
    let mut launcher = Launcher::start(
        config.clone(),
        &target,
        conn.clone(),
        keys.clone(),
        &name,
        metrics,
    )?;
    let runner = Runner::new(
        config.clone(),
        launcher.pool().clone(),
        conn.clone(),
        keys.clone(),
        launcher.jobs().clone(),
        launcher.templates().clone(),
        redactor,
    );
    let served = config
        .worker
        .served()
        .map_err(anyhow::Error::msg)
        .context("worker.queues")?;
    tracing::info!(
        worker = %name,
        namespace = %keys.namespace(),
        redis = %queue::redacted(&config.redis_url),
        concurrency = config.worker.concurrency,
        queues = %served,
        servers = ?config.server_names().collect::<Vec<_>>(),
        disabled = ?config.disabled_servers,
        "worker started"
    );

    let monitor = monitor(
        &config,
        conn,
        keys,
        name,
        served,
        launcher.jobs().clone(),
        launcher.wake().clone(),
        runner,
    );
    let quiet = launcher.quiet_on(signals);
    let shutdown_signal = async move {
        quiet.await;
        Ok(())
    };
    // apalis waits for running jobs by itself; the terminator is only the last resort
    // when a job does not return after being stopped (a bug: every wait has a deadline).
    let stop_wait = launcher.stop_deadline();
    let terminator = async move {
        tokio::time::sleep(stop_wait).await;
        tracing::error!("jobs did not return {stop_wait:?} after shutdown began; dropping them");
    };
    let result = monitor
        .with_terminator(terminator)
        .run_with_signal(shutdown_signal)
        .await;
    // Jobs are done or cut off: stop the loops and every server.
    launcher.stop().await;
    match result {
        Ok(()) => {
            tracing::info!("worker stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(anyhow::anyhow!("worker stopped with an error: {e}")),
    }
}

/// One apalis worker named `name`, running up to `worker.concurrency` jobs at once from
/// mcpq's Redis backend; `jobs` holds what it fetched (for leases and cancels).
#[allow(clippy::too_many_arguments)]
fn monitor(
    config: &Config,
    conn: mcpq_shared::queue::Conn,
    keys: Keys,
    name: String,
    served: Served,
    jobs: queue::InFlight,
    wake: Arc<tokio::sync::Notify>,
    runner: Runner,
) -> Monitor {
    let (concurrency, poll) = (config.worker.concurrency, config.worker.poll_interval);
    let settings = config.queue.clone();
    Monitor::new().register(move |_restarts| {
        let backend = RedisQueue::new(
            conn.clone(),
            keys.clone(),
            settings.clone(),
            name.clone(),
            poll,
        )
        .with_jobs(jobs.clone(), concurrency)
        .with_queues(served.clone())
        .with_wake(Some(wake.clone()));
        WorkerBuilder::new(name.clone())
            .backend(backend)
            .data(runner.clone())
            .concurrency(concurrency)
            .parallelize(tokio::spawn)
            .build(handle)
    })
}

/// The apalis handler: one job. It never fails: the runner stores every outcome itself
/// (or leaves the job to the rescuer), see [`Runner::run`].
async fn handle(delivery: Delivery, runner: Data<Runner>) -> Result<(), BoxDynError> {
    runner.run(delivery).await;
    Ok(())
}
