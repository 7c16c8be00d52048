//! Server reports: what this worker knows about each configured MCP server, turned into
//! [`ServerReport`]s and published to Redis for `mcpq servers`; with them, this
//! worker's heartbeat (`queue::workers`, for `/health`) and, when it serves metrics,
//! the queue gauges (`queue::stats` -> `mcpq_queue_*`).
//!
//! Every [`REPORT_INTERVAL`], for every server in the config: its health in the
//! supervisor's book (ok, backoff, unhealthy, and when that clears), the pool's live
//! sessions and calls in flight, the tools a warm session listed (no server is
//! started to answer), the crashes since start and the last error with its stderr tail
//! (secrets redacted). The hash expires after `queue::servers::REPORT_TTL` once no
//! worker reports.
//!
//! Caveat: best effort. A failed publish (or heartbeat, or stats read) is logged at
//! debug and retried at the next tick; a report is at most [`REPORT_INTERVAL`] old
//! while the worker runs, the queue gauges too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mcpq_shared::job::Priority;
use mcpq_shared::mcp::McpPool;
use mcpq_shared::metrics::Metrics;
use mcpq_shared::queue::results::now_ms;
use mcpq_shared::queue::servers::{self, ServerError, ServerReport, ToolInfo};
use mcpq_shared::queue::workers::{self, Heartbeat, WorkerInfo};
use mcpq_shared::queue::Conn;
use mcpq_shared::queue::{stats, tool_catalog, InFlight, Keys};
use mcpq_shared::redact::Redactor;
use mcpq_shared::supervisor::Supervisor;
use mcpq_shared::Config;

/// How often the worker publishes what it knows about its servers (`mcpq servers`) and
/// beats (the heartbeat's interval, which `queue::workers::DEAD_AFTER` counts on).
pub const REPORT_INTERVAL: Duration = workers::HEARTBEAT_EVERY;
/// How long listing an exposed server's tools may take (start included).
const CATALOG_LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// The pool and the supervisor's health book, read for reports.
pub struct Reporter {
    /// Every configured server is reported.
    pub config: Arc<Config>,
    /// Sessions, calls in flight, warm tools.
    pub pool: McpPool,
    /// Health (crash records) of every server.
    pub supervisor: Supervisor,
    /// This worker's name, in each report.
    pub worker: String,
    /// Its jobs (how many it holds goes in the heartbeat).
    pub jobs: InFlight,
    /// Set when the worker serves metrics: the queue gauges are refreshed each tick.
    pub metrics: Option<Metrics>,
    /// When the worker started (ms since the Unix epoch).
    pub started_at: u64,
    /// Keeps secrets out of the errors reported.
    pub redactor: Arc<Redactor>,
}

impl Reporter {
    /// This worker's report on every server of the config, now.
    pub async fn snapshot(&self) -> BTreeMap<String, ServerReport> {
        let mut out = BTreeMap::new();
        for (name, server) in &self.config.servers {
            let (health, clears) = self
                .supervisor
                .health()
                .describe(name, std::time::Instant::now());
            let snapshot = self.pool.snapshot(name);
            let facts = self.supervisor.health().facts(name);
            let tools = self.pool.tools_if_warm(name).await.map(|tools| {
                tools
                    .iter()
                    .map(|t| ToolInfo {
                        name: t.name.to_string(),
                        description: t.description.as_ref().map(|d| d.to_string()),
                    })
                    .collect()
            });
            let report = ServerReport {
                worker: self.worker.clone(),
                reported_at: now_ms(),
                health: health.to_string(),
                health_clears_in_ms: clears.map(|d| d.as_millis() as u64),
                pooled: server.pool,
                sessions: snapshot.as_ref().map_or(0, |s| s.sessions),
                in_flight: snapshot.as_ref().map_or(0, |s| s.in_flight),
                tools,
                crashes: facts.crashes,
                last_error: facts.last_error.map(|e| ServerError {
                    at: e.at_ms,
                    message: self.redactor.text(&e.message).into_owned(),
                    stderr_tail: e.stderr_tail.map(|t| self.redactor.text(&t).into_owned()),
                }),
            };
            out.insert(name.clone(), report);
        }
        out
    }

    /// What this worker says in its heartbeat, now.
    pub fn worker_info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.worker.clone(),
            host: host_name(),
            pid: std::process::id(),
            started_at: self.started_at,
            running: self.jobs.len(),
            concurrency: self.config.worker.concurrency,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Publishes the tool listing of every server the MCP front exposes
    /// (`[serve.mcp] expose`) to the catalog (`queue::tool_catalog`), starting a pooled
    /// session of it when none is warm (unless the server is in backoff). A listing
    /// that changed is announced to the fronts.
    pub async fn publish_catalog(&self, conn: &Conn, keys: &Keys) {
        for (name, server) in &self.config.servers {
            if !self.config.serve.mcp.exposes_server(name) || !server.pool {
                continue;
            }
            let tools = match self.pool.tools_if_warm(name).await {
                Some(tools) => Some(tools),
                None => {
                    let (health, _) = self
                        .supervisor
                        .health()
                        .describe(name, std::time::Instant::now());
                    if health != "ok" {
                        continue;
                    }
                    let deadline = tokio::time::Instant::now() + CATALOG_LIST_TIMEOUT;
                    let cancel = tokio_util::sync::CancellationToken::new();
                    match self.pool.list_tools(name, deadline, &cancel).await {
                        Ok(tools) => Some(tools),
                        Err(e) => {
                            tracing::warn!(server = %name, "cannot list the tools the MCP front exposes: {e}");
                            None
                        }
                    }
                }
            };
            let Some(tools) = tools else { continue };
            let listing = tool_catalog::Listing {
                worker: self.worker.clone(),
                listed_at: now_ms(),
                // A tool outside the server's own allow-list is no gateway tool: its
                // call would be refused anyway.
                tools: tools
                    .iter()
                    .filter(|t| server.allows_tool(&t.name))
                    .filter_map(|t| match serde_json::to_value(t) {
                        Ok(serde_json::Value::Object(map)) => Some(map),
                        _ => None,
                    })
                    .collect(),
            };
            match tool_catalog::publish(conn, keys, name, &listing).await {
                Ok(true) => {
                    tracing::info!(server = %name, tools = listing.tools.len(), "published a new tool listing for the MCP front")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(server = %name, "cannot publish the tool listing: {e}"),
            }
        }
    }

    /// Publishes a [`Reporter::snapshot`] and beats every [`REPORT_INTERVAL`] (and
    /// refreshes the queue gauges when metrics are served), until aborted.
    pub async fn run(self, conn: Conn, keys: Keys) {
        // Side by side in this task (aborting it stops both): listing a slow server
        // for the catalog never delays a heartbeat.
        tokio::join!(self.beat(&conn, &keys), self.catalog(&conn, &keys));
    }

    /// Publishes the tool catalog every [`REPORT_INTERVAL`], for ever.
    async fn catalog(&self, conn: &Conn, keys: &Keys) {
        loop {
            self.publish_catalog(conn, keys).await;
            tokio::time::sleep(REPORT_INTERVAL).await;
        }
    }

    /// Reports, heartbeats and queue gauges every [`REPORT_INTERVAL`], for ever.
    async fn beat(&self, conn: &Conn, keys: &Keys) {
        let (conn, keys) = (conn.clone(), keys.clone());
        let mut heartbeat = Heartbeat::default();
        loop {
            let reports = self.snapshot().await;
            if let Err(e) = servers::publish(&conn, &keys, &reports).await {
                tracing::debug!("could not publish server reports: {e}");
            }
            match heartbeat.beat(&conn, &keys, &self.worker_info()).await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned heartbeats of dead workers"),
                Err(e) => tracing::debug!("could not write the heartbeat: {e}"),
            }
            if let Some(metrics) = &self.metrics {
                match stats::read(&conn, &keys).await {
                    Ok(s) => metrics.set_queue(
                        Priority::ALL.map(|p| (p.as_str(), s.queued.get(p))),
                        [
                            ("scheduled", s.scheduled),
                            ("running", s.running),
                            ("suspects", s.suspects),
                            ("dead", s.dead),
                        ],
                        s.oldest_queued_age().map(Duration::from_millis),
                    ),
                    Err(e) => tracing::debug!("could not read the queue's counts: {e}"),
                }
            }
            tokio::time::sleep(REPORT_INTERVAL).await;
        }
    }
}

/// This host's name (`/proc/sys/kernel/hostname`), or `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
