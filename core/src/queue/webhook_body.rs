//! The JSON body of a webhook delivery, read from the job's (or batch's) record when it
//! is sent.
//!
//! ```json
//! {"type": "job.finished", "delivery": "job-01JDX6Q6T3N7Z8YV1K0W2M4C5B-1", "created_at": 1764240000123,
//!  "job": {"id": "01JDX6Q6T3N7Z8YV1K0W2M4C5B", "kind": "agent", "status": "succeeded",
//!          "attempts": 1, "submitted_at": 1764239999000, "started_at": 1764239999100,
//!          "finished_at": 1764240000120, "batch": null, "result": {...}},
//!  "batch": null}
//! {"type": "batch.finished", "delivery": "batch-01JDX...-1", "created_at": ...,
//!  "batch": {"id": "01JDX...", "total": 3, "pending": 0, "succeeded": 2, "dead": 1,
//!            "cancelled": 0, "created_at": ..., "finished_at": ..., "then": null}}
//! ```
//!
//! Times are milliseconds since the Unix epoch (Redis's clock). A job's `status` is the
//! one it ended with when the delivery was made; `result` (succeeded) or `error`
//! (dead, cancelled) is included when the record still holds that end, else
//! `"result_omitted"` says why (expired, run again since, or larger than
//! `webhooks.max_body`: read it with `mcpq result ID`). A job of a batch carries the
//! batch's counts as they are when the body is built.
//!
//! # Guarantees
//! - The body is at most `max_body` bytes: a result or an error that would pass it is
//!   left out (their length is asked first: a result of megabytes is never read).
//! - Everything read from Redis is judged: a field that does not parse is left out.

use std::collections::HashMap;

use crate::queue::Conn;
use serde_json::{json, Map, Value};

use super::webhooks::Claimed;
use super::{Keys, QueueError};

/// Room kept in the body for everything but the result or the error.
const ENVELOPE_ROOM: usize = 4096;

/// Builds the body of `delivery`, at most `max_body` bytes.
pub async fn build(
    conn: &mut Conn,
    keys: &Keys,
    delivery: &Claimed,
    max_body: usize,
) -> Result<Vec<u8>, QueueError> {
    let mut body = Map::new();
    body.insert("delivery".into(), json!(delivery.id));
    body.insert("created_at".into(), json!(delivery.created_at));
    if delivery.kind == "batch" {
        body.insert("type".into(), json!("batch.finished"));
        body.insert("batch".into(), batch(conn, keys, &delivery.subject).await?);
    } else {
        body.insert("type".into(), json!("job.finished"));
        let (job, batch_id) = job(conn, keys, delivery, max_body).await?;
        body.insert("job".into(), job);
        let batch = match batch_id {
            Some(id) => batch(conn, keys, &id).await?,
            None => Value::Null,
        };
        body.insert("batch".into(), batch);
    }
    let mut bytes = serde_json::to_vec(&body).expect("a JSON value always serializes");
    if bytes.len() > max_body {
        // A hostile record (a huge kind or batch id): say so rather than send it.
        if let Some(job) = body.get_mut("job").and_then(Value::as_object_mut) {
            for field in ["result", "error"] {
                job.remove(field);
            }
            job.insert(
                "result_omitted".into(),
                json!("the body would pass webhooks.max_body"),
            );
        }
        bytes = serde_json::to_vec(&body).expect("a JSON value always serializes");
    }
    Ok(bytes)
}

/// Strings of the hash fields asked for (lossy UTF-8); absent fields are left out.
async fn fields(
    conn: &mut Conn,
    key: &str,
    names: &[&'static str],
) -> Result<HashMap<&'static str, String>, QueueError> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await?;
    if kind != "hash" {
        return Ok(HashMap::new());
    }
    let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
        .arg(key)
        .arg(names)
        .query_async(conn)
        .await?;
    Ok(names
        .iter()
        .zip(values)
        .filter_map(|(k, v)| Some((*k, String::from_utf8_lossy(&v?).into_owned())))
        .collect())
}

fn number(map: &HashMap<&str, String>, key: &str) -> Value {
    map.get(key)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Value::Null, |n| json!(n))
}

/// The `job` object, and the id of its batch.
async fn job(
    conn: &mut Conn,
    keys: &Keys,
    delivery: &Claimed,
    max_body: usize,
) -> Result<(Value, Option<String>), QueueError> {
    let key = keys.job(&delivery.subject);
    let f = fields(
        conn,
        &key,
        &[
            "status",
            "kind",
            "attempt",
            "submitted_at",
            "started_at",
            "finished_at",
            "batch",
        ],
    )
    .await?;
    let mut job = Map::new();
    job.insert("id".into(), json!(delivery.subject));
    job.insert(
        "kind".into(),
        f.get("kind").map_or(Value::Null, |k| json!(k)),
    );
    job.insert("status".into(), json!(delivery.status));
    job.insert("attempts".into(), number(&f, "attempt"));
    for t in ["submitted_at", "started_at", "finished_at"] {
        job.insert(t.into(), number(&f, t));
    }
    let batch = f.get("batch").cloned();
    job.insert(
        "batch".into(),
        batch.as_ref().map_or(Value::Null, |b| json!(b)),
    );
    let field = if delivery.status == "succeeded" {
        "result"
    } else {
        "error"
    };
    let omitted = match f.get("status") {
        None => Some("the job's record expired (queue.result_ttl, queue.dead_ttl)".to_string()),
        Some(now) if *now != delivery.status => Some(format!(
            "the job is {} now (it ran again since this end)",
            now.chars().take(20).collect::<String>()
        )),
        Some(_) => {
            let len: usize = redis::cmd("HSTRLEN")
                .arg(&key)
                .arg(field)
                .query_async(conn)
                .await?;
            if len + ENVELOPE_ROOM > max_body {
                Some(format!(
                    "the {field} is {len} bytes, more than webhooks.max_body allows: read it with `mcpq result {}`",
                    delivery.subject
                ))
            } else {
                let text: Option<Vec<u8>> = redis::cmd("HGET")
                    .arg(&key)
                    .arg(field)
                    .query_async(conn)
                    .await?;
                match text.and_then(|t| serde_json::from_slice::<Value>(&t).ok()) {
                    Some(value) => {
                        job.insert(field.into(), value);
                        None
                    }
                    None if field == "error" => None,
                    None => Some("the stored result is not JSON".to_string()),
                }
            }
        }
    };
    if let Some(why) = omitted {
        job.insert("result_omitted".into(), json!(why));
    }
    Ok((Value::Object(job), batch))
}

/// The `batch` object: its counts and times (`null` once its record expired).
async fn batch(conn: &mut Conn, keys: &Keys, id: &str) -> Result<Value, QueueError> {
    const NUMBERS: [&str; 7] = [
        "total",
        "pending",
        "succeeded",
        "dead",
        "cancelled",
        "created_at",
        "finished_at",
    ];
    let mut names = NUMBERS.to_vec();
    names.push("then");
    let f = fields(conn, &keys.batch(id), &names).await?;
    if f.is_empty() {
        return Ok(Value::Null);
    }
    let mut batch = Map::new();
    batch.insert("id".into(), json!(id));
    for n in NUMBERS {
        batch.insert(n.into(), number(&f, n));
    }
    let then = f.get("then").filter(|t| !t.is_empty());
    batch.insert("then".into(), then.map_or(Value::Null, |t| json!(t)));
    Ok(Value::Object(batch))
}
