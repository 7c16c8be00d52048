//! The launcher: starts, quiets and stops everything of the worker that runs beside the
//! jobs (Sidekiq's `launcher.rb` plays the same part).
//!
//! [`Launcher::start`] starts, in this order, and owns from then on:
//! 1. the supervisor and the MCP pool, with the pool's maintenance loop (warm
//!    `min_sessions`, close idle sessions);
//! 2. server reports and the worker's heartbeat to Redis ([`crate::reports`]);
//! 3. lease renewal of every held job (`queue::lease::renew_leases`);
//! 4. the cancel listener (`queue::lease::listen_for_cancels`, Redis pub/sub) and the
//!    new-jobs listener (`queue::lease::listen_for_work`: wakes an idle backend);
//! 5. the rescuer of dead workers' jobs (`queue::rescue::rescue_loop`);
//! 6. the sweep of expired email attachment directories;
//! 7. the webhook dispatcher (`webhook::Dispatcher`): sends due completion webhooks;
//!    stopped like the others, its sends in flight are abandoned and sent again after
//!    their claim's lease (at least once).
//! 8. the schedule loop (`queue::schedules::schedule_loop`), when the config has
//!    `[schedules.NAME]`: every worker fires the cron ticks, one job per tick;
//! 9. with `worker.metrics_listen`, `GET /metrics` ([`crate::metrics_server`]; its
//!    address is bound here, so a bad one fails the start).
//!
//! [`Launcher::quiet_on`] ties shutdown to the signals: the first SIGTERM/SIGINT
//! *quiets* the worker (no new jobs; the future it returns resolves, which the Monitor
//! takes as its stop signal); after `worker.shutdown_grace`, or at a second signal,
//! the jobs still running are stopped and release themselves to the front of their
//! queue (attempt not counted).
//!
//! [`Launcher::stop`], once the Monitor has returned, stops in order: the signal task,
//! the loops above (in start order), the pool's warm sessions (gracefully, bounded by
//! the longest stop of a server), idle template sandboxes, then SIGKILL to every server
//! process group still alive, and last removes the worker's heartbeat. Nothing it
//! started outlives it.
//!
//! Caveat: a loop is stopped by aborting its task, at its next await; none holds a
//! state that needs finishing (each Redis change is one script).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mcpq_shared::agent::template_sandbox::TemplateSandbox;
use mcpq_shared::email::{attachment_dir, EmailSettings};
use mcpq_shared::limiter::Limiter;
use mcpq_shared::mcp::{health_policy, McpPool};
use mcpq_shared::metrics::Metrics;
use mcpq_shared::queue::Conn;
use mcpq_shared::queue::{lease, rescue, schedules, workers, InFlight, Keys, Producer, StopReason};
use mcpq_shared::supervisor::{max_stop_time, Supervisor};
use mcpq_shared::webhook::Dispatcher;
use mcpq_shared::Config;
use tokio::task::JoinHandle;

use crate::metrics_server;
use crate::reports::Reporter;
use crate::signals::Shutdown;

/// Owns the worker's background loops and the processes they manage.
pub struct Launcher {
    config: Arc<Config>,
    supervisor: Supervisor,
    pool: McpPool,
    templates: TemplateSandbox,
    jobs: InFlight,
    /// Notified when jobs became ready (`{ns}:wake`).
    wake: Arc<tokio::sync::Notify>,
    /// Where the heartbeat is removed from at the end, and whose.
    conn: Conn,
    keys: Keys,
    worker: String,
    /// The loops, in start order (the order they are stopped in).
    loops: Vec<JoinHandle<()>>,
    /// The shutdown sequence driven by signals ([`Launcher::quiet_on`]).
    signal_task: Option<JoinHandle<()>>,
}

impl Launcher {
    /// Starts the background loops (see the module doc for the list and order).
    /// `conn` is connected to `target` already; the cancel listener opens its own
    /// pub/sub connection to it. Everything counts in `metrics`.
    pub fn start(
        config: Arc<Config>,
        target: &mcpq_shared::queue::RedisTarget,
        conn: Conn,
        keys: Keys,
        worker: &str,
        metrics: Metrics,
    ) -> anyhow::Result<Launcher> {
        let supervisor = Supervisor::with_metrics(health_policy(&config.defaults), metrics.clone());
        // The servers' last errors are kept (and reported) without the config's secrets.
        let redactor = Arc::new(mcpq_shared::redact::Redactor::from_config(&config));
        let redact = redactor.clone();
        supervisor
            .health()
            .set_redactor(Arc::new(move |t| redact.text(t).into_owned()));
        let limiter = Limiter::new(conn.clone(), keys.clone(), worker, Some(metrics.clone()));
        let pool = McpPool::new(&config, supervisor.clone()).with_limiter(limiter);
        let jobs = InFlight::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        // Bound before anything starts: a bad address is a start-up error.
        let listener = config
            .worker
            .metrics_listen
            .map(metrics_server::bind)
            .transpose()?;
        let reporter = Reporter {
            config: config.clone(),
            pool: pool.clone(),
            supervisor: supervisor.clone(),
            worker: worker.to_string(),
            jobs: jobs.clone(),
            metrics: listener.is_some().then(|| metrics.clone()),
            started_at: mcpq_shared::queue::results::now_ms(),
            redactor: redactor.clone(),
        };
        // Built before any loop starts, so that a failure leaves nothing running.
        let counted = metrics.clone();
        let dispatcher =
            Dispatcher::new(conn.clone(), keys.clone(), config.webhooks.clone(), worker)
                .context("building the webhook HTTP client")?
                .on_outcome(move |outcome| counted.webhook_delivery(outcome.as_str()));
        let mut loops = vec![
            pool.start_background(),
            tokio::spawn(reporter.run(conn.clone(), keys.clone())),
            tokio::spawn(lease::renew_leases(
                conn.clone(),
                keys.clone(),
                config.queue.clone(),
                jobs.clone(),
            )),
            tokio::spawn(lease::listen_for_cancels(
                target.clone(),
                keys.clone(),
                jobs.clone(),
            )),
            tokio::spawn(lease::listen_for_work(
                target.clone(),
                keys.clone(),
                wake.clone(),
            )),
            tokio::spawn(rescue::rescue_loop(
                conn.clone(),
                keys.clone(),
                config.queue.clone(),
            )),
            tokio::spawn(sweep_attachments(config.email.clone())),
            tokio::spawn(dispatcher.run()),
            tokio::spawn(schedules::schedule_loop(
                Producer::new(conn.clone(), keys.clone(), config.queue.clone())
                    .with_durability(config.redis.wait_replicas, config.redis.wait_timeout),
                config.resolved_schedules(),
            )),
        ];
        if let Some(listener) = listener {
            let addr = listener.local_addr().ok();
            let pooled = config
                .servers
                .iter()
                .filter(|(_, s)| s.pool)
                .map(|(name, _)| name.clone())
                .collect();
            loops.push(tokio::spawn(metrics_server::serve(
                listener,
                metrics.clone(),
                pool.clone(),
                pooled,
            )));
            tracing::info!(address = ?addr, "serving metrics at /metrics");
        }
        // Children of this very binary, started with the sandbox argument (see `main`).
        let templates = TemplateSandbox::new(supervisor.clone());
        Ok(Launcher {
            config,
            supervisor,
            pool,
            templates,
            jobs,
            wake,
            conn,
            keys,
            worker: worker.to_string(),
            loops,
            signal_task: None,
        })
    }

    /// The warm MCP sessions, shared by jobs.
    pub fn pool(&self) -> &McpPool {
        &self.pool
    }

    /// The jobs this worker holds: their leases are renewed and cancels reach them.
    pub fn jobs(&self) -> &InFlight {
        &self.jobs
    }

    /// Notified when jobs became ready: the backend's early end of an idle poll.
    pub fn wake(&self) -> &Arc<tokio::sync::Notify> {
        &self.wake
    }

    /// The template sandboxes, stopped with the worker.
    pub fn templates(&self) -> &TemplateSandbox {
        &self.templates
    }

    /// Hands the shutdown signals to a task of the launcher; the returned future
    /// resolves at the first one (quiet: fetch no more jobs). After the grace period or
    /// a second signal, the jobs still running are stopped (see the module doc).
    pub fn quiet_on(&mut self, mut signals: Shutdown) -> impl Future<Output = ()> {
        let (quiet_tx, quiet_rx) = tokio::sync::oneshot::channel::<()>();
        let grace = self.config.worker.shutdown_grace;
        let running = self.jobs.clone();
        self.signal_task = Some(tokio::spawn(async move {
            let sig = signals.first().await;
            tracing::info!(signal = sig, grace = ?grace, "shutting down: no new jobs; running jobs may finish within the grace period");
            let _ = quiet_tx.send(());
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                sig = signals.second() => tracing::warn!(signal = sig, "second signal: stopping the jobs still running now"),
            }
            // Jobs still running are released (back to the front of their queue,
            // attempt not counted) so another worker starts them now, not after their
            // lease.
            let stopped = running.stop_all(StopReason::Shutdown);
            if stopped > 0 {
                tracing::warn!(
                    jobs = stopped,
                    "grace period over: stopping and releasing the jobs still running"
                );
            }
            // They store their release within a lease at most; then apalis may drop them.
            std::future::pending::<()>().await
        }));
        async move {
            let _ = quiet_rx.await;
        }
    }

    /// The longest the jobs may take to return once shutdown began: the grace period,
    /// a lease to store their release, and a server's stop.
    pub fn stop_deadline(&self) -> Duration {
        self.config.worker.shutdown_grace
            + self.config.queue.lease
            + max_stop_time(self.config.max_kill_grace())
    }

    /// Stops everything [`Launcher::start`] started, in order (see the module doc).
    /// Call it once the jobs are done or cut off.
    pub async fn stop(self) {
        if let Some(task) = &self.signal_task {
            task.abort();
        }
        for task in &self.loops {
            task.abort();
        }
        // Close the warm sessions (graceful, bounded by each server's kill_grace), then
        // kill whatever is left.
        let _ = tokio::time::timeout(
            max_stop_time(self.config.max_kill_grace()),
            self.pool.shutdown(),
        )
        .await;
        self.templates.stop_idle();
        let killed = self.supervisor.kill_all();
        if killed > 0 {
            tracing::warn!(
                killed,
                "killed server process groups of jobs cut off by shutdown"
            );
        }
        // Gone at once from /health, instead of after the heartbeat's DEAD_AFTER.
        let removed = workers::remove(&self.conn, &self.keys, &self.worker);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), removed).await {
            tracing::debug!("could not remove the heartbeat: {e}");
        }
    }
}

/// Removes finished email jobs' attachment directories `email.retention` after they
/// ended, every `retention / 2` (between 1 s and 60 s). First says whether the root is
/// safe: an unsafe one fails every email job (`attachments_dir_unsafe`) until fixed.
async fn sweep_attachments(settings: EmailSettings) {
    let root = settings.attachments_dir.clone();
    let checked = tokio::task::spawn_blocking(move || attachment_dir::check_root(&root)).await;
    if let Ok(Err(e)) = checked {
        tracing::error!("{e}; email jobs will fail until it is fixed");
    }
    let every = (settings.retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let (root, retention) = (settings.attachments_dir.clone(), settings.retention);
        let removed = tokio::task::spawn_blocking(move || attachment_dir::sweep(&root, retention))
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::debug!(removed, "removed expired attachment directories");
        }
        tokio::time::sleep(every).await;
    }
}
