//! Server reports: what this worker knows about each configured MCP server, turned into
//! [`ServerReport`]s and published to Redis for `mcpq servers`.
//!
//! Every [`REPORT_INTERVAL`], for every server in the config: its health in the
//! supervisor's book (ok, backoff, unhealthy, and when that clears), the pool's live
//! sessions and calls in flight, and the tools a warm session listed (no server is
//! started to answer). The hash expires after `queue::servers::REPORT_TTL` once no
//! worker reports.
//!
//! Caveat: best effort. A failed publish is logged at debug and retried at the next
//! tick; a report is at most [`REPORT_INTERVAL`] old while the worker runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mcpq_shared::mcp::McpPool;
use mcpq_shared::queue::results::now_ms;
use mcpq_shared::queue::servers::{self, ServerReport, ToolInfo};
use mcpq_shared::queue::Keys;
use mcpq_shared::supervisor::Supervisor;
use mcpq_shared::Config;
use redis::aio::ConnectionManager;

/// How often the worker publishes what it knows about its servers (`mcpq servers`).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

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
            };
            out.insert(name.clone(), report);
        }
        out
    }

    /// Publishes a [`Reporter::snapshot`] every [`REPORT_INTERVAL`], until aborted.
    pub async fn run(self, conn: ConnectionManager, keys: Keys) {
        loop {
            let reports = self.snapshot().await;
            if let Err(e) = servers::publish(&conn, &keys, &reports).await {
                tracing::debug!("could not publish server reports: {e}");
            }
            tokio::time::sleep(REPORT_INTERVAL).await;
        }
    }
}
