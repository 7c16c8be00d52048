//! Webhook deliveries in Redis: claiming due ones, recording each attempt, retrying a
//! failed one by hand, listing. The sending is `mcpq_shared::webhook`'s.
//!
//! A delivery is made by the same Lua script that stores a job's end (`common.lua`'s
//! `job_ended`, every script that ends a job calls it) or a batch's (`batch_done`),
//! when the job or batch has a `callback`: so no end is ever stored without its
//! delivery. Its life:
//!
//! 1. `pending`, due at once, in `{ns}:webhooks:due`;
//! 2. a worker claims it ([`claim`], `lua/webhook_claim.lua`): attempt n, due time
//!    pushed a lease ahead, so a worker that dies mid-send loses nothing;
//! 3. the worker records the attempt ([`record`], `lua/webhook_done.lua`): 2xx
//!    `delivered`; 410 `gone` (the receiver asks for no more); anything else (another
//!    status, a timeout, a refused connection) a retry after a backoff with full jitter,
//!    until `webhooks.max_age` after the delivery was made: then `failed`, listed in
//!    `{ns}:webhooks:failed` for `mcpq webhooks list --failed` and
//!    `mcpq webhooks retry ID` ([`retry`]);
//! 4. an ended delivery expires `webhooks.retention` after it ended.
//!
//! # Guarantees
//! - At least once: every end of a job or batch with a callback is POSTed until a 2xx or
//!   a 410 answers it, or `max_age` passes (across worker restarts: everything is in
//!   Redis). A receiver may get a delivery twice (a worker died after the POST and
//!   before recording it; a 2xx that was lost): it dedupes on the delivery id
//!   (`X-Mcpq-Delivery`), which is one per end, whoever sends it how often.
//! - A late answer of an older attempt (its lease ran out, another worker took the
//!   delivery over) cannot schedule a second retry; a late 2xx still ends it.
//!
//! # Caveats
//! Pending deliveries do not expire: they end by `max_age` when a worker runs.

use std::collections::HashMap;
use std::time::Duration;

use crate::queue::Conn;
use serde::Serialize;

use super::{scripts, Keys, QueueError, QueueSettings};
use crate::config::webhooks::WebhookSettings;

/// A delivery a worker claimed and now sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The delivery id (`X-Mcpq-Delivery`): `job-ID-N` or `batch-ID-N`.
    pub id: String,
    /// This attempt's number (from 1); the fencing token of [`record`].
    pub attempt: u32,
    /// `job` or `batch` (anything else was not written by mcpq: the dispatcher refuses it).
    pub kind: String,
    /// The job's or batch's id.
    pub subject: String,
    /// The job's status when it ended (`succeeded`, `dead`, `cancelled`), `finished`
    /// for a batch.
    pub status: String,
    /// The callback as stored (JSON).
    pub callback: String,
    /// When the delivery was made (ms since the Unix epoch, Redis's clock).
    pub created_at: u64,
}

/// Takes up to `max` due deliveries for `worker` (see the module doc); `serial` names
/// the endpoints that take one delivery at a time (one per partition: with several
/// partitions, a serial endpoint may get one delivery from each at once).
pub async fn claim(
    conn: &mut Conn,
    keys: &Keys,
    max: usize,
    lease: Duration,
    settings: &WebhookSettings,
    worker: &str,
    serial: &[&str],
) -> Result<Vec<Claimed>, QueueError> {
    let mut out = Vec::new();
    let start = fastrand::u16(..keys.partitions());
    for i in 0..keys.partitions() {
        if out.len() >= max {
            break;
        }
        let part = keys.at(start.wrapping_add(i) % keys.partitions());
        let left = max - out.len();
        out.extend(claim_in(conn, &part, left, lease, settings, worker, serial).await?);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn claim_in(
    conn: &mut Conn,
    keys: &Keys,
    max: usize,
    lease: Duration,
    settings: &WebhookSettings,
    worker: &str,
    serial: &[&str],
) -> Result<Vec<Claimed>, QueueError> {
    let mut invocation = scripts::WEBHOOK_CLAIM.prepare_invoke();
    invocation
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(max)
        .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
        .arg(QueueSettings::secs(settings.retention))
        .arg(worker);
    for name in serial {
        invocation.arg(*name);
    }
    // Bytes, not strings: a field someone else wrote may not be UTF-8.
    let rows: Vec<Vec<Vec<u8>>> = invocation.invoke_async(conn).await?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(rows
        .into_iter()
        .filter(|row| row.len() == 7)
        .map(|row| Claimed {
            id: text(&row[0]),
            attempt: text(&row[1]).parse().unwrap_or(1),
            kind: text(&row[2]),
            subject: text(&row[3]),
            status: text(&row[4]),
            callback: text(&row[5]),
            created_at: text(&row[6]).parse().unwrap_or(0),
        })
        .collect())
}

/// What one attempt came to, as [`record`] stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempted {
    /// A 2xx answer.
    Delivered,
    /// 410 Gone: the receiver asks for no more.
    Gone,
    /// Anything else: try again after `delay` (unless that passes `max_age`).
    Retry {
        /// The backoff, full jitter already applied.
        delay: Duration,
    },
    /// Never to be sent as it is (the callback was refused): failed at once.
    Failed,
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting to be sent (again).
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// A 410 answered it: not sent again.
    Gone,
    /// Refused, or `max_age` passed without a 2xx or 410.
    Failed,
    /// [`record`]: nothing written (another worker ended or took over the delivery).
    Stale,
}

impl DeliveryState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Gone => "gone",
            DeliveryState::Failed => "failed",
            DeliveryState::Stale => "stale",
        }
    }

    fn parse(s: &str) -> DeliveryState {
        match s {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "gone" => DeliveryState::Gone,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Stale,
        }
    }
}

/// Longest answer text kept with a delivery (`last_response`), in bytes.
pub const MAX_RESPONSE_TEXT: usize = 512;

/// Records attempt `attempt` of delivery `id` (see [`Attempted`]); `response` is what
/// the receiver answered or why it could not be reached (cut to
/// [`MAX_RESPONSE_TEXT`]). Returns the state the delivery is in now.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
    attempt: u32,
    outcome: Attempted,
    settings: &WebhookSettings,
    response: &str,
    status: Option<u16>,
) -> Result<DeliveryState, QueueError> {
    let (name, delay) = match outcome {
        Attempted::Delivered => ("delivered", Duration::ZERO),
        Attempted::Gone => ("gone", Duration::ZERO),
        Attempted::Retry { delay } => ("retry", delay),
        Attempted::Failed => ("failed", Duration::ZERO),
    };
    let mut cut = response.len().min(MAX_RESPONSE_TEXT);
    while !response.is_char_boundary(cut) {
        cut -= 1;
    }
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let keys = &keys.for_webhook(id);
    let state: String = scripts::WEBHOOK_DONE
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(id)
        .arg(attempt)
        .arg(name)
        .arg(ms(delay))
        .arg(ms(settings.max_age))
        .arg(QueueSettings::secs(settings.retention))
        .arg(&response[..cut])
        .arg(status.map(|s| s.to_string()).unwrap_or_default())
        .invoke_async(conn)
        .await?;
    Ok(DeliveryState::parse(&state))
}

/// What [`retry`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// Pending again, due at once (it was `failed` or `gone`).
    Yes,
    /// Not failed or gone: nothing done (its state).
    NotEnded(String),
    /// No such delivery (never made, or expired).
    Unknown,
}

/// Makes a failed (or gone) delivery pending again, with a fresh `max_age`.
pub async fn retry(conn: &mut Conn, keys: &Keys, id: &str) -> Result<Retried, QueueError> {
    let keys = &keys.for_webhook(id);
    let state: String = scripts::WEBHOOK_RETRY
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(id)
        .invoke_async(conn)
        .await?;
    Ok(match state.as_str() {
        "failed" | "gone" => Retried::Yes,
        "unknown" => Retried::Unknown,
        other => Retried::NotEnded(other.chars().take(50).collect()),
    })
}

/// One delivery, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryInfo {
    /// The delivery id.
    pub id: String,
    /// `job` or `batch`.
    pub kind: String,
    /// The job's or batch's id.
    pub subject: String,
    /// How the job ended (`finished` for a batch).
    pub status: String,
    /// `pending`, `delivered`, `gone` or `failed`.
    pub state: String,
    /// Where it goes: the URL, or `endpoint:NAME`.
    pub target: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was made (ms).
    pub created_at: Option<u64>,
    /// When it was last tried (ms).
    pub last_attempt_at: Option<u64>,
    /// When it is tried next, while pending after a failed attempt (ms).
    pub next_at: Option<u64>,
    /// The last answer's HTTP status.
    pub last_status: Option<u16>,
    /// The last answer (cut), or why the receiver could not be reached.
    pub last_response: Option<String>,
}

const LIST_FIELDS: [&str; 10] = [
    "type",
    "subject",
    "status",
    "state",
    "callback",
    "attempts",
    "created_at",
    "last_attempt_at",
    "next_at",
    "last_status",
];

/// The newest `limit` deliveries (only the failed ones with `failed_only`), and how
/// many there are in all. Entries whose hash is gone (expired) are skipped.
pub async fn list(
    conn: &mut Conn,
    keys: &Keys,
    failed_only: bool,
    limit: usize,
) -> Result<(Vec<DeliveryInfo>, u64), QueueError> {
    let (mut all, mut total) = (Vec::new(), 0);
    for part in keys.all() {
        let (found, count) = list_in(conn, &part, failed_only, limit).await?;
        all.extend(found);
        total += count;
    }
    all.sort_by_key(|d| std::cmp::Reverse(d.created_at));
    all.truncate(limit);
    Ok((all, total))
}

async fn list_in(
    conn: &mut Conn,
    keys: &Keys,
    failed_only: bool,
    limit: usize,
) -> Result<(Vec<DeliveryInfo>, u64), QueueError> {
    let set = if failed_only {
        keys.webhooks_failed()
    } else {
        keys.webhooks()
    };
    let (ids, total): (Vec<Vec<u8>>, u64) = redis::pipe()
        .zrevrange(&set, 0, limit.saturating_sub(1) as isize)
        .zcard(&set)
        .query_async(conn)
        .await?;
    Ok((read_deliveries(conn, keys, &ids).await?, total))
}

/// Most deliveries [`of_job`] reads (the newest).
pub const MAX_OF_JOB: u64 = 20;

/// The webhook deliveries of job `id`, newest first (at most [`MAX_OF_JOB`]): one per
/// end of the job (a requeued dead job ends again). Reads the job's count of
/// deliveries, then each one's hash: two round trips, whatever the namespace holds.
pub async fn of_job(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
) -> Result<Vec<DeliveryInfo>, QueueError> {
    let keys = keys.for_job(id);
    let count: Option<Vec<u8>> = match redis::cmd("HGET")
        .arg(keys.job(id))
        .arg("webhooks")
        .query_async(conn)
        .await
    {
        Ok(v) => v,
        Err(e) if e.code() == Some("WRONGTYPE") => None,
        Err(e) => return Err(e.into()),
    };
    let n: u64 = count
        .and_then(|c| String::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
        .min(1_000_000_000);
    let ids: Vec<Vec<u8>> = (n.saturating_sub(MAX_OF_JOB - 1).max(1)..=n)
        .rev()
        .map(|i| format!("job-{id}-{i}").into_bytes())
        .collect();
    read_deliveries(conn, &keys, &ids).await
}

/// The deliveries `ids` of partition `keys`, in that order; one whose hash is gone (or
/// is not a hash) is left out.
async fn read_deliveries(
    conn: &mut Conn,
    keys: &Keys,
    ids: &[Vec<u8>],
) -> Result<Vec<DeliveryInfo>, QueueError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let key = |id: &[u8]| {
        let mut k = keys.webhook("").into_bytes();
        k.extend_from_slice(id);
        k
    };
    // HMGET on a key of another type fails a whole pipeline: types first.
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("TYPE").arg(key(id));
    }
    let types: Vec<String> = pipe.query_async(conn).await?;
    let mut pipe = redis::pipe();
    for (id, _) in ids.iter().zip(&types).filter(|(_, t)| *t == "hash") {
        pipe.cmd("HMGET")
            .arg(key(id))
            .arg(&LIST_FIELDS)
            .cmd("HGET")
            .arg(key(id))
            .arg("last_response");
    }
    type Row = (Vec<Option<Vec<u8>>>, Option<Vec<u8>>);
    let rows: Vec<Row> = pipe.query_async(conn).await?;
    let mut rows = rows.into_iter();
    let mut out = Vec::new();
    for (id, t) in ids.iter().zip(&types) {
        if t != "hash" {
            continue;
        }
        let Some((values, response)) = rows.next() else {
            break;
        };
        let map: HashMap<&str, String> = LIST_FIELDS
            .iter()
            .zip(values)
            .filter_map(|(k, v)| Some((*k, String::from_utf8_lossy(&v?).into_owned())))
            .collect();
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        let num = |k: &str| map.get(k).and_then(|v| v.parse::<u64>().ok());
        out.push(DeliveryInfo {
            id: String::from_utf8_lossy(id).into_owned(),
            kind: get("type"),
            subject: get("subject"),
            status: get("status"),
            state: get("state"),
            target: target_of(&get("callback")),
            attempts: num("attempts").unwrap_or(0).min(u64::from(u32::MAX)) as u32,
            created_at: num("created_at"),
            last_attempt_at: num("last_attempt_at"),
            next_at: num("next_at"),
            last_status: map.get("last_status").and_then(|v| v.parse().ok()),
            last_response: response.map(|r| String::from_utf8_lossy(&r).into_owned()),
        });
    }
    Ok(out)
}

/// Where a stored callback goes, for a listing: its URL or `endpoint:NAME`.
fn target_of(callback: &str) -> String {
    match serde_json::from_str::<crate::job::Callback>(callback) {
        Ok(c) => match (c.url, c.endpoint) {
            (Some(url), _) => url,
            (None, Some(name)) => format!("endpoint:{name}"),
            _ => String::new(),
        },
        Err(_) => "(not a callback mcpq wrote)".to_string(),
    }
}
