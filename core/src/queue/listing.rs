//! Listing jobs, newest first: every job (`{ns}:jobs`, the index `lua/enqueue.lua`
//! keeps), or one batch's (its list, from the end), filtered by status.
//!
//! Reads go page by page ([`PAGE`] ids, one pipelined `HMGET` each), so a listing costs
//! what it shows plus what it skips; an id whose record expired is dropped from the
//! index as it is met.

use crate::queue::Conn;
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
    /// The queue it waits or waited in (`default` when the record names none).
    pub queue: String,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only this batch's jobs.
    pub batch: Option<String>,
    /// Only jobs of this queue (a record that names none is in `default`).
    pub queue: Option<String>,
}

/// Up to `limit` jobs matching `filter`, newest first, page after page (for `mcpq
/// jobs`: it reads as much of the index as it takes to find `limit` jobs).
pub async fn list_jobs(
    conn: &mut Conn,
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

/// Where a listing goes on. Opaque to callers (a string in `?cursor=`).
///
/// For the job index (scored by submit time, ms): the last entry listed, `(score, id)`;
/// the next page starts strictly after it in the index's order (score descending, then,
/// among equal scores, id descending, as `ZREVRANGEBYSCORE` returns them). Jobs
/// submitted later score at least as high: even one submitted in the same millisecond
/// as the last entry listed (an equal score, a tie) sorts by its id, never shifts the
/// pages, and is listed at most once. For a batch: the list index to read next (a
/// batch's list only grows at its end).
#[derive(Debug, Clone, PartialEq)]
enum Cursor {
    Index { score: f64, id: String },
    Batch { next: i64 },
}

/// Longest id a cursor carries (a job id is 26 characters; an index entry of more was
/// not written by mcpq and may be passed over).
const MAX_CURSOR_ID: usize = 128;

/// Most entries of one score read to find where a tie left off (mcpq writes at most
/// [`super::enqueue::BATCH`] per script call, a few such calls per millisecond at most).
const MAX_TIES: usize = 100 * PAGE;

impl Cursor {
    fn encode(&self) -> String {
        match self {
            // `{}` of an f64 never uses an exponent and reads back exactly; the id in
            // hex, so the cursor is URL-safe whatever the index holds.
            Cursor::Index { score, id } => {
                let hex: String = id
                    .bytes()
                    .take(MAX_CURSOR_ID)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("i{score}_{hex}")
            }
            Cursor::Batch { next } => format!("b{next}"),
        }
    }

    fn decode(text: &str) -> Option<Cursor> {
        if text.len() > 64 + 2 * MAX_CURSOR_ID {
            return None;
        }
        if let Some(rest) = text.strip_prefix('i') {
            let (score, hex) = rest.split_once('_')?;
            let score: f64 = score.parse().ok()?;
            if score.is_nan() || hex.is_empty() || hex.len() % 2 != 0 {
                return None;
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            return Some(Cursor::Index {
                score,
                id: String::from_utf8(bytes).ok()?,
            });
        }
        let next: i64 = text.strip_prefix('b')?.parse().ok()?;
        (next >= 0).then_some(Cursor::Batch { next })
    }
}

/// A score as Redis reads one (`inf`, `-inf` included).
fn score_arg(score: f64) -> String {
    format!("{score}")
}

/// Up to `chunk` (at most [`PAGE`]) entries of the job index strictly after `after`
/// (`None`: from the newest), newest first, with their scores: always the first
/// `chunk` of what is left (fewer only when no more are left), so that the lists of
/// several partitions merge ([`index_after_all`]).
async fn index_after(
    conn: &mut Conn,
    keys: &Keys,
    after: Option<&(f64, String)>,
    chunk: usize,
) -> Result<Vec<(String, f64)>, QueueError> {
    let Some((score, id)) = after else {
        return Ok(redis::cmd("ZREVRANGEBYSCORE")
            .arg(keys.jobs())
            .arg("+inf")
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(chunk)
            .query_async(conn)
            .await?);
    };
    // The ties first: entries of the same score sort by id, descending, so those after
    // `id` are the tail of the tie group (ids compare as bytes, like Redis's).
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut offset = 0;
    while offset < MAX_TIES {
        let ties: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(keys.jobs())
            .arg(score_arg(*score))
            .arg(score_arg(*score))
            .arg("LIMIT")
            .arg(offset)
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let read = ties.len();
        out.extend(
            ties.into_iter()
                .filter(|t| t.as_bytes() < id.as_bytes())
                .map(|t| (t, *score)),
        );
        if out.len() >= chunk {
            out.truncate(chunk);
            return Ok(out);
        }
        if read < PAGE {
            break;
        }
        offset += read;
    }
    // Then the older scores, up to a page in all.
    let older: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(keys.jobs())
        .arg(format!("({}", score_arg(*score)))
        .arg("-inf")
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(chunk - out.len())
        .query_async(conn)
        .await?;
    out.extend(older);
    Ok(out)
}

/// [`index_after`] over every partition's index: the first [`PAGE`] of their merge,
/// each entry with the partition it was found in. One cursor serves them all: the
/// order (score, then id, descending) is one order across partitions.
async fn index_after_all(
    conn: &mut Conn,
    keys: &Keys,
    after: Option<&(f64, String)>,
    chunk: usize,
) -> Result<Vec<(String, f64, u16)>, QueueError> {
    let chunk = chunk.clamp(1, PAGE);
    let mut all = Vec::new();
    for part in keys.all() {
        let p = part.partition();
        all.extend(
            index_after(conn, &part, after, chunk)
                .await?
                .into_iter()
                .map(|(id, score)| (id, score, p)),
        );
    }
    if keys.partitions() > 1 {
        all.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| b.0.as_bytes().cmp(a.0.as_bytes()))
        });
        all.truncate(chunk);
    }
    Ok(all)
}

/// Up to `limit` jobs matching `filter`, newest first, from `cursor` (a [`JobPage::next`]
/// of the same filter; `None` for the first page). A cursor that is not one, or that
/// belongs to another kind of listing, is [`QueueError::BadCursor`].
///
/// A page may hold fewer than `limit` jobs, none even, and still have a `next`: one
/// call reads at most [`MAX_SCAN`] entries. Keep following `next` until it is absent.
pub async fn list_page(
    conn: &mut Conn,
    keys: &Keys,
    filter: &JobFilter,
    limit: usize,
    cursor: Option<&str>,
) -> Result<JobPage, QueueError> {
    let bad = || QueueError::BadCursor(cursor.unwrap_or_default().chars().take(64).collect());
    // Where the index listing stands: after this entry (`None`: before the newest).
    let mut index_at: Option<(f64, String)> = None;
    let mut batch_at: Option<i64> = None;
    match (
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
            batch_at = Some(len - 1);
        }
        (None, None) => {}
        (Some(Cursor::Batch { next }), Some(_)) => batch_at = Some(next),
        (Some(Cursor::Index { score, id }), None) => index_at = Some((score, id)),
        (Some(_), _) => return Err(bad()),
    };
    let mut out = Vec::new();
    let mut complete = false;
    let mut scanned = 0u64;
    let filtered = filter.status.is_some() || filter.queue.is_some();
    let chunk = |listed: usize| if filtered { PAGE } else { limit - listed };
    while out.len() < limit && scanned < MAX_SCAN {
        let entries: Vec<(String, f64, u16)> = match batch_at {
            Some(next) => {
                if next < 0 {
                    complete = true;
                    break;
                }
                let batch = filter.batch.as_deref().unwrap_or_default();
                let start = (next - chunk(out.len()) as i64 + 1).max(0);
                let mut ids: Vec<String> = redis::cmd("LRANGE")
                    .arg(keys.batch_jobs(batch))
                    .arg(start)
                    .arg(next)
                    .query_async(conn)
                    .await?;
                ids.reverse();
                let home = keys.for_job(batch).partition();
                ids.into_iter().map(|id| (id, 0.0, home)).collect()
            }
            // Unfiltered, every entry read is listed: read only what the page lacks.
            None => index_after_all(conn, keys, index_at.as_ref(), chunk(out.len())).await?,
        };
        if entries.is_empty() {
            complete = true;
            break;
        }
        // One pipeline per partition (a cluster runs a pipeline on one node), each
        // record read in the partition its entry was found in.
        let mut rows: Vec<Vec<Option<String>>> = vec![Vec::new(); entries.len()];
        for part in keys.all() {
            let p = part.partition();
            let at: Vec<usize> = (0..entries.len()).filter(|i| entries[*i].2 == p).collect();
            if at.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for i in &at {
                pipe.cmd("HMGET")
                    .arg(part.job_raw(entries[*i].0.as_bytes()))
                    .arg(&[
                        "status",
                        "kind",
                        "submitted_at",
                        "finished_at",
                        "attempt",
                        "batch",
                        "error",
                        "queue",
                    ]);
            }
            let got: Vec<Vec<Option<String>>> = pipe.query_async(conn).await?;
            for (i, row) in at.into_iter().zip(got) {
                rows[i] = row;
            }
        }
        let mut expired: Vec<(String, u16)> = Vec::new();
        let mut read = 0u64;
        let mut last = None;
        for ((id, score, p), mut row) in entries.into_iter().zip(rows) {
            read += 1;
            last = Some((score, id.clone()));
            row.resize(8, None);
            let Some(status) = row[0].take() else {
                expired.push((id, p));
                continue;
            };
            if filter.status.is_some_and(|want| want.as_str() != status) {
                continue;
            }
            let queue = row[7]
                .take()
                .filter(|q| !q.is_empty())
                .unwrap_or_else(|| crate::job::DEFAULT_QUEUE.to_string());
            if filter.queue.as_deref().is_some_and(|want| want != queue) {
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
                queue,
            });
            if out.len() == limit {
                break;
            }
        }
        scanned += read;
        match &mut batch_at {
            Some(next) => *next -= read as i64,
            None => index_at = last,
        }
        if batch_at.is_none() && !expired.is_empty() {
            // Expired records leave the index as they are met (the cursor names an
            // entry by score and id, so removing passed ones shifts nothing).
            for part in keys.all() {
                let gone: Vec<&String> = expired
                    .iter()
                    .filter(|(_, p)| *p == part.partition())
                    .map(|(id, _)| id)
                    .collect();
                if gone.is_empty() {
                    continue;
                }
                let _: i64 = redis::cmd("ZREM")
                    .arg(part.jobs())
                    .arg(&gone)
                    .query_async(conn)
                    .await?;
            }
        }
    }
    let next = match (complete, batch_at, index_at) {
        (true, _, _) => None,
        (false, Some(next), _) => Some(Cursor::Batch { next }.encode()),
        (false, None, Some((score, id))) => Some(Cursor::Index { score, id }.encode()),
        (false, None, None) => None,
    };
    Ok(JobPage { jobs: out, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_junk_is_refused() {
        for c in [
            Cursor::Index {
                score: 1_700_000_000_000.0,
                id: "01JDX6Q6T3N7Z8YV1K0W2M4C5B".into(),
            },
            Cursor::Index {
                score: 1.5,
                id: "odd id_with.dots~and spaces".into(),
            },
            Cursor::Index {
                score: f64::INFINITY,
                id: "x".into(),
            },
            Cursor::Batch { next: 0 },
        ] {
            let text = c.encode();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "{text} is not URL-safe"
            );
            assert_eq!(Cursor::decode(&text), Some(c));
        }
        for junk in [
            "",
            "i",
            "i1",
            "i1_",
            "i1_x",
            "i1_abc",
            "iNaN_61",
            "ix_61",
            "i1800000000000.18446744073709551615",
            "i1_ff",
            "b-1",
            "bx",
            "x1",
            &format!("i1_{}", "61".repeat(200)),
        ] {
            assert_eq!(Cursor::decode(junk), None, "{junk}");
        }
    }
}
