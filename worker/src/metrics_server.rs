//! `GET /metrics` of a worker (`[worker] metrics_listen`, `--metrics-listen`): the
//! worker's [`Metrics`] in the Prometheus text format, for Prometheus to scrape.
//!
//! [`bind`] happens at start-up, before any job runs, so an address in use or not
//! allowed is a start-up error naming the key. The server runs on the worker's tokio
//! runtime as one of the launcher's loops and stops with them.
//!
//! At each scrape the pool gauges (`mcpq_pool_sessions`) are read from the pool first
//! (in memory, no I/O); the queue gauges are those of the last report tick
//! (`crate::reports`, every few seconds). Anything but `GET /metrics` is 404 (405 for
//! another method on `/metrics`).
//!
//! Caveat: no authentication and no TLS. Listen on localhost or a private network; the
//! metrics hold server and tool names, never arguments, results or secrets.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use mcpq_shared::mcp::McpPool;
use mcpq_shared::metrics::{self, Metrics};

/// What a scrape reads.
#[derive(Clone)]
struct Scrape {
    metrics: Metrics,
    pool: McpPool,
    /// The pooled servers, whose sessions are counted.
    pooled: Arc<Vec<String>>,
}

impl Scrape {
    fn text(&self) -> String {
        for server in self.pooled.iter() {
            if let Some(s) = self.pool.snapshot(server) {
                self.metrics
                    .set_pool_sessions(server, s.busy, s.sessions.saturating_sub(s.busy));
            }
        }
        self.metrics.encode()
    }
}

/// Binds `addr` (a start-up error names the key and the address).
pub fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("worker.metrics_listen: cannot listen on {addr}"))?;
    listener
        .set_nonblocking(true)
        .context("worker.metrics_listen: set_nonblocking")?;
    tokio::net::TcpListener::from_std(listener).context("worker.metrics_listen")
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    pool: McpPool,
    pooled: Vec<String>,
) {
    let scrape = Scrape {
        metrics,
        pool,
        pooled: Arc::new(pooled),
    };
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let scrape = scrape.clone();
            async move { ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], scrape.text()) }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the metrics server stopped: {e}");
    }
}
