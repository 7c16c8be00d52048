//! What workers know about their MCP servers, published for `mcpq servers`.
//!
//! Each worker writes, every few seconds, one JSON entry per configured server into the
//! hash [`Keys::servers`]: health, pooled sessions, calls in flight, the tools a warm
//! session listed, crashes since the worker started and the last error (with the
//! server's stderr tail). The newest report wins; each names the worker and when it was
//! made. Entries expire with the hash ([`REPORT_TTL`]) when no worker reports any more.
//! The same reports also go into the worker's own hash [`Keys::servers_of`] (expiring
//! [`REPORT_TTL`] after that worker's last report), for a view per worker.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::queue::Conn;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::hashes::hmget_hashes;
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
    /// Crashes the worker recorded since it started (a success does not clear them).
    #[serde(default)]
    pub crashes: u64,
    /// The last error a start or a call of the server came to on that worker (secrets
    /// redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ServerError>,
}

/// A server's last error, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerError {
    /// When (ms since the Unix epoch, the worker's clock).
    pub at: u64,
    /// The error.
    pub message: String,
    /// The server's stderr tail with it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
}

/// Most workers whose own reports [`read_by_worker`] reads.
pub const MAX_WORKERS_READ: usize = 100;

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
    // The newest report of each server (`mcpq servers`), and this worker's own ones
    // (the dashboard's per-worker view), which expire with the worker's silence.
    let own = reports
        .values()
        .next()
        .map(|r| keys.servers_of(&r.worker))
        .unwrap_or_else(|| keys.servers_of(""));
    // One transaction (all keys under `{ns}`: one slot): a reader never sees the
    // worker's hash between its DEL and its HSET.
    let _: () = redis::pipe()
        .atomic()
        .hset_multiple(&key, &fields)
        .ignore()
        .expire(&key, REPORT_TTL.as_secs() as i64)
        .ignore()
        .del(&own)
        .ignore()
        .hset_multiple(&own, &fields)
        .ignore()
        .expire(&own, REPORT_TTL.as_secs() as i64)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// The reports on `servers` of each of `workers` (at most [`MAX_WORKERS_READ`] workers
/// and [`MAX_REPORTS`] servers: one pipeline of `HMGET`s, so a hash someone else filled
/// costs no more), by worker then server; a worker with none is left out, and so is a
/// report that does not parse.
pub async fn read_by_worker(
    conn: &Conn,
    keys: &Keys,
    workers: &[String],
    servers: &[&str],
) -> Result<BTreeMap<String, BTreeMap<String, ServerReport>>, QueueError> {
    let workers: Vec<&String> = workers.iter().take(MAX_WORKERS_READ).collect();
    let servers: Vec<&str> = servers.iter().copied().take(MAX_REPORTS).collect();
    if workers.is_empty() || servers.is_empty() {
        return Ok(BTreeMap::new());
    }
    let hashes: Vec<String> = workers.iter().map(|w| keys.servers_of(w)).collect();
    let got = hmget_hashes(&mut conn.clone(), &hashes, &servers).await?;
    Ok(workers
        .into_iter()
        .zip(got)
        .filter_map(|(w, values)| {
            let raw = servers
                .iter()
                .zip(values?)
                .filter_map(|(name, v)| Some((name.as_bytes().to_vec(), v?)))
                .collect();
            Some((w.clone(), parse_reports(raw)))
        })
        .filter(|(_, reports)| !reports.is_empty())
        .collect())
}

/// Longest report read: a tool list of a few hundred tools fits; more is not a report
/// mcpq wrote.
const MAX_REPORT: usize = 1024 * 1024;
/// Most reports kept from one hash (servers of a config).
const MAX_REPORTS: usize = 1000;

/// The reports of a hash as read (bytes: a field someone else wrote may not be UTF-8):
/// a field whose name is not UTF-8, or whose value is too long or not a report, is left
/// out.
fn parse_reports(raw: Vec<(Vec<u8>, Vec<u8>)>) -> BTreeMap<String, ServerReport> {
    raw.into_iter()
        .filter(|(_, json)| json.len() <= MAX_REPORT)
        .filter_map(|(name, json)| {
            Some((
                String::from_utf8(name).ok()?,
                serde_json::from_slice(&json).ok()?,
            ))
        })
        .take(MAX_REPORTS)
        .collect()
}

/// Every server report of the namespace, by server name.
pub async fn read_all(
    conn: &Conn,
    keys: &Keys,
) -> Result<BTreeMap<String, ServerReport>, QueueError> {
    let mut conn = conn.clone();
    let raw: Vec<(Vec<u8>, Vec<u8>)> = conn.hgetall(keys.servers()).await?;
    Ok(parse_reports(raw))
}
