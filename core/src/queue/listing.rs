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

/// Most index entries one [`list_page`] call reads: a filter few jobs match answers
/// with a short (even empty) page and a `next` cursor after this many, instead of
/// reading the whole index in one request.
pub const MAX_SCAN: u64 = 10 * PAGE as u64;

/// One job, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Up to `limit` jobs matching `filter`, newest first, page after page (for `mcpq
/// jobs`: it reads as much of the index as it takes to find `limit` jobs).
pub async fn list_jobs(
    conn: &mut ConnectionManager,
    keys: &Keys,
    filter: &JobFilter,
    limit: usize,
) -> Result<Vec<JobSummary>, QueueError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    while out.len() < limit {
        let page = list_page(conn, keys, filter, limit - out.len(), cursor.as_deref()).await?;
        out.extend(page.jobs);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(out)
}

/// One page of a listing, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<JobSummary>,
    /// Pass this as `cursor` for the next page; `None` when the listing is complete.
    pub next: Option<String>,
}

/// Where a listing goes on. Opaque to callers (a string in `?cursor=`): for the job
/// index, the score the first page started at and how many entries at or below it were
/// passed (jobs submitted later score higher, so they never shift a listing under way);
/// for a batch, the list index to read next (a batch's list only grows at its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Index { top: u64, passed: u64 },
    Batch { next: i64 },
}

impl Cursor {
    fn encode(self) -> String {
        match self {
            Cursor::Index { top, passed } => format!("i{top}.{passed}"),
            Cursor::Batch { next } => format!("b{next}"),
        }
    }

    fn decode(text: &str) -> Option<Cursor> {
        if text.len() > 64 {
            return None;
        }
        if let Some(rest) = text.strip_prefix('i') {
            let (top, passed) = rest.split_once('.')?;
            // `passed` goes to Redis as a LIMIT offset, a signed 64-bit number.
            let passed: u64 = passed.parse().ok()?;
            return (passed <= i64::MAX as u64).then_some(Cursor::Index {
                top: top.parse().ok()?,
                passed,
            });
        }
        let next: i64 = text.strip_prefix('b')?.parse().ok()?;
        (next >= 0).then_some(Cursor::Batch { next })
    }
}

/// Up to `limit` jobs matching `filter`, newest first, from `cursor` (a [`JobPage::next`]
/// of the same filter; `None` for the first page). A cursor that is not one, or that
/// belongs to another kind of listing, is [`QueueError::BadCursor`].
///
/// A page may hold fewer than `limit` jobs, none even, and still have a `next`: one
/// call reads at most [`MAX_SCAN`] entries. Keep following `next` until it is absent.
pub async fn list_page(
    conn: &mut ConnectionManager,
    keys: &Keys,
    filter: &JobFilter,
    limit: usize,
    cursor: Option<&str>,
) -> Result<JobPage, QueueError> {
    let bad = || QueueError::BadCursor(cursor.unwrap_or_default().chars().take(64).collect());
    let mut at = match (
        cursor
            .map(|c| Cursor::decode(c).ok_or_else(bad))
            .transpose()?,
        &filter.batch,
    ) {
        (None, Some(batch)) => {
            let len: i64 = redis::cmd("LLEN")
                .arg(keys.batch_jobs(batch))
                .query_async(conn)
                .await?;
            Cursor::Batch { next: len - 1 }
        }
        (None, None) => {
            let top: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
                .arg(keys.jobs())
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query_async(conn)
                .await?;
            Cursor::Index {
                top: top.first().map_or(0, |(_, score)| *score as u64),
                passed: 0,
            }
        }
        (Some(c @ Cursor::Batch { .. }), Some(_)) | (Some(c @ Cursor::Index { .. }), None) => c,
        (Some(_), _) => return Err(bad()),
    };
    let mut out = Vec::new();
    let mut complete = false;
    let mut scanned = 0u64;
    while out.len() < limit && scanned < MAX_SCAN {
        let ids: Vec<String> = match at {
            Cursor::Batch { next } => {
                if next < 0 {
                    complete = true;
                    break;
                }
                let batch = filter.batch.as_deref().unwrap_or_default();
                let start = (next - PAGE as i64 + 1).max(0);
                let mut ids: Vec<String> = redis::cmd("LRANGE")
                    .arg(keys.batch_jobs(batch))
                    .arg(start)
                    .arg(next)
                    .query_async(conn)
                    .await?;
                ids.reverse();
                ids
            }
            Cursor::Index { top, passed } => {
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(keys.jobs())
                    .arg(top)
                    .arg("-inf")
                    .arg("LIMIT")
                    .arg(passed)
                    .arg(PAGE)
                    .query_async(conn)
                    .await?
            }
        };
        if ids.is_empty() {
            complete = true;
            break;
        }
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
        let mut read = 0u64;
        for (id, mut row) in ids.into_iter().zip(rows) {
            read += 1;
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
        scanned += read;
        at = match at {
            Cursor::Batch { next } => Cursor::Batch {
                next: next - read as i64,
            },
            Cursor::Index { top, passed } => {
                let mut passed = passed + read;
                if !expired.is_empty() {
                    // Expired records leave the index as they are met; they were passed,
                    // so the count of passed entries shrinks with them.
                    let removed: i64 = redis::cmd("ZREM")
                        .arg(keys.jobs())
                        .arg(&expired)
                        .query_async(conn)
                        .await?;
                    passed = passed.saturating_sub(removed.max(0) as u64);
                }
                Cursor::Index { top, passed }
            }
        };
    }
    Ok(JobPage {
        jobs: out,
        next: (!complete).then(|| at.encode()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_junk_is_refused() {
        for c in [
            Cursor::Index {
                top: 1_700_000_000_000,
                passed: 12,
            },
            Cursor::Batch { next: 0 },
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        for junk in [
            "",
            "i",
            "i1",
            "i1.x",
            "i1800000000000.18446744073709551615",
            "b-1",
            "bx",
            "x1",
            &"i1.1".repeat(40),
        ] {
            assert_eq!(Cursor::decode(junk), None, "{junk}");
        }
    }
}
