//! Listing jobs, newest first: every job (`{ns}:jobs`, the index `lua/enqueue.lua`
//! keeps), or one batch's (its list, from the end), filtered by status.
//!
//! Reads go page by page ([`PAGE`] ids, one pipelined `HMGET` each), so a listing costs
//! what it shows plus what it skips; an id whose record expired is dropped from the
//! index as it is met.

use redis::aio::ConnectionManager;
use serde::Serialize;

use super::{JobStatus, Keys, QueueError};

/// Ids read per round trip.
pub const PAGE: usize = 500;

/// One job, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    /// The job id.
    pub id: String,
    /// Where it is.
    pub status: String,
    /// `agent` or `email` (`unknown` for a dead-lettered malformed entry).
    pub kind: String,
    /// When it was submitted (ms since the Unix epoch).
    pub submitted_at: Option<u64>,
    /// When it ended.
    pub finished_at: Option<u64>,
    /// Attempts started.
    pub attempts: u32,
    /// The batch it belongs to.
    pub batch: Option<String>,
    /// The last error's kind, if any.
    pub error_kind: Option<String>,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only this batch's jobs.
    pub batch: Option<String>,
}

/// Up to `limit` jobs matching `filter`, newest first.
pub async fn list_jobs(
    conn: &mut ConnectionManager,
    keys: &Keys,
    filter: &JobFilter,
    limit: usize,
) -> Result<Vec<JobSummary>, QueueError> {
    let mut out = Vec::new();
    // Position from the newest end: 0 is the newest.
    let mut from_newest = 0usize;
    while out.len() < limit {
        let ids: Vec<String> = match &filter.batch {
            Some(batch) => {
                let end = -1 - from_newest as isize;
                let start = end - PAGE as isize + 1;
                let mut ids: Vec<String> = redis::cmd("LRANGE")
                    .arg(keys.batch_jobs(batch))
                    .arg(start)
                    .arg(end)
                    .query_async(conn)
                    .await?;
                ids.reverse();
                ids
            }
            None => {
                redis::cmd("ZREVRANGE")
                    .arg(keys.jobs())
                    .arg(from_newest)
                    .arg(from_newest + PAGE - 1)
                    .query_async(conn)
                    .await?
            }
        };
        if ids.is_empty() {
            break;
        }
        from_newest += ids.len();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET").arg(keys.job(id)).arg(&[
                "status",
                "kind",
                "submitted_at",
                "finished_at",
                "attempt",
                "batch",
                "error",
            ]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await?;
        let mut expired = Vec::new();
        for (id, mut row) in ids.into_iter().zip(rows) {
            row.resize(7, None);
            let Some(status) = row[0].take() else {
                expired.push(id);
                continue;
            };
            if filter.status.is_some_and(|want| want.as_str() != status) {
                continue;
            }
            let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse().ok());
            out.push(JobSummary {
                id,
                status,
                kind: row[1].take().unwrap_or_else(|| "unknown".to_string()),
                submitted_at: number(&row[2]),
                finished_at: number(&row[3]),
                attempts: number(&row[4]).map_or(0, |n: u64| n.min(u64::from(u32::MAX)) as u32),
                batch: row[5].take(),
                error_kind: row[6].as_deref().and_then(|e| {
                    serde_json::from_str::<serde_json::Value>(e)
                        .ok()?
                        .get("kind")?
                        .as_str()
                        .map(|k| k.chars().take(64).collect())
                }),
            });
            if out.len() == limit {
                break;
            }
        }
        if filter.batch.is_none() && !expired.is_empty() {
            let removed: i64 = redis::cmd("ZREM")
                .arg(keys.jobs())
                .arg(&expired)
                .query_async(conn)
                .await?;
            from_newest = from_newest.saturating_sub(removed.max(0) as usize);
        }
    }
    Ok(out)
}
