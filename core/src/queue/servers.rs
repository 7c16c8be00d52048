//! What workers know about their MCP servers, published for `mcpq servers`.
//!
//! Each worker writes, every few seconds, one JSON entry per configured server into the
//! hash [`Keys::servers`]: health, pooled sessions, calls in flight and the tools a warm
//! session listed. The newest report wins; each names the worker and when it was made.
//! Entries expire with the hash ([`REPORT_TTL`]) when no worker reports any more.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::queue::Conn;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{Keys, QueueError};

/// A report older than this is gone (the hash expires): no worker is running.
pub const REPORT_TTL: Duration = Duration::from_secs(60);

/// One tool, as listed by a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolInfo {
    /// Tool name.
    pub name: String,
    /// Its description, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What one worker knows about one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerReport {
    /// The worker that reported.
    pub worker: String,
    /// When (ms since the Unix epoch).
    pub reported_at: u64,
    /// `ok`, `backoff` or `unhealthy`.
    pub health: String,
    /// Milliseconds until a backoff or unhealthy window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_clears_in_ms: Option<u64>,
    /// Whether sessions outlive jobs.
    pub pooled: bool,
    /// Live pooled sessions.
    pub sessions: usize,
    /// Calls in flight.
    pub in_flight: usize,
    /// Tools listed by a warm session, if one was up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolInfo>>,
}

/// Writes this worker's reports (one per server).
pub async fn publish(
    conn: &Conn,
    keys: &Keys,
    reports: &BTreeMap<String, ServerReport>,
) -> Result<(), QueueError> {
    if reports.is_empty() {
        return Ok(());
    }
    let mut conn = conn.clone();
    let fields: Vec<(String, String)> = reports
        .iter()
        .map(|(name, r)| {
            let json = serde_json::to_string(r).expect("a report is plain data");
            (name.clone(), json)
        })
        .collect();
    let key = keys.servers();
    let _: () = redis::pipe()
        .hset_multiple(&key, &fields)
        .ignore()
        .expire(&key, REPORT_TTL.as_secs() as i64)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Every server report of the namespace, by server name.
pub async fn read_all(
    conn: &Conn,
    keys: &Keys,
) -> Result<BTreeMap<String, ServerReport>, QueueError> {
    let mut conn = conn.clone();
    let raw: BTreeMap<String, String> = conn.hgetall(keys.servers()).await?;
    Ok(raw
        .into_iter()
        .filter_map(|(name, json)| Some((name, serde_json::from_str(&json).ok()?)))
        .collect())
}
