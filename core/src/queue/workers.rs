//! Worker heartbeats: which workers are alive, for `/health` (`mcpq serve`).
//!
//! Every worker writes, every [`HEARTBEAT_EVERY`] (with its server reports), one entry
//! into the hash [`Keys::workers`]: its [`WorkerInfo`] (id, host, pid, start time, jobs
//! held, concurrency, version) stamped with Redis's clock (`lua/heartbeat.lua`), so
//! workers' clocks do not matter. A worker whose entry is older than [`DEAD_AFTER`]
//! is dead: [`live`] leaves it out, and each heartbeat prunes one page of such entries
//! (the sweep goes on where the previous one stopped), so the hash does not grow with
//! workers that were killed. A worker that stops cleanly removes its entry
//! ([`remove`]). The hash expires [`HASH_TTL`] after the last heartbeat of any worker.
//!
//! Caveats:
//! - "Alive" means "beat within [`DEAD_AFTER`]": a worker killed a moment ago is still
//!   listed for up to that long, and one stalled for longer (a paused VM) is left out
//!   although it may come back.
//! - [`live`] reads at most [`MAX_LISTED`] entries; a bigger fleet is cut there.

use std::time::Duration;

use crate::queue::Conn;
use serde::{Deserialize, Serialize};

use super::{scripts, Keys, QueueError};

/// How often a worker beats (its server reports go with it).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A worker whose last heartbeat is older than this is dead (6 missed beats: a worker
/// busy with a slow Redis for a few seconds is not declared dead).
pub const DEAD_AFTER: Duration = Duration::from_secs(30);

/// The hash expires this long after the last heartbeat of any worker.
pub const HASH_TTL: Duration = Duration::from_secs(120);

/// Most entries [`live`] reads.
pub const MAX_LISTED: usize = 1000;

/// One hash field and its value, as raw bytes (someone else may have written them).
type Field = (Vec<u8>, Vec<u8>);

/// An entry's value longer than this was not written by a worker: skipped.
const MAX_ENTRY: usize = 64 * 1024;

/// What a worker says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's name (`--name`, unique among live workers).
    pub id: String,
    /// Its host name.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// When it started (ms since the Unix epoch, its own clock).
    pub started_at: u64,
    /// Jobs it holds now (running, or fetched ahead and about to run).
    pub running: usize,
    /// Jobs it runs at once at most (`worker.concurrency`).
    pub concurrency: usize,
    /// Its version (`mcpq-worker --version`).
    pub version: String,
}

/// A live worker: its info and when it last beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWorker {
    /// What it said.
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// Its last heartbeat (ms since the Unix epoch, Redis's clock).
    pub last_heartbeat: u64,
    /// How long ago that was (ms).
    pub heartbeat_age_ms: u64,
}

/// One worker's heartbeats: keeps the prune sweep's place between beats.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    cursor: String,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            cursor: "0".to_string(),
        }
    }
}

impl Heartbeat {
    /// Writes `info` as this worker's heartbeat and prunes one page of dead entries;
    /// returns how many were pruned.
    pub async fn beat(
        &mut self,
        conn: &Conn,
        keys: &Keys,
        info: &WorkerInfo,
    ) -> Result<u64, QueueError> {
        let mut conn = conn.clone();
        let json = serde_json::to_string(info).expect("worker info is plain data");
        let (cursor, pruned): (String, u64) = scripts::HEARTBEAT
            .prepare_invoke()
            .key(keys.script_key())
            .arg(keys.prefix())
            .arg(&info.id)
            .arg(json)
            .arg(DEAD_AFTER.as_millis() as u64)
            .arg(HASH_TTL.as_secs())
            .arg(&self.cursor)
            .invoke_async(&mut conn)
            .await?;
        self.cursor = cursor;
        Ok(pruned)
    }
}

/// Removes worker `id`'s entry (it stops cleanly).
pub async fn remove(conn: &Conn, keys: &Keys, id: &str) -> Result<(), QueueError> {
    let mut conn = conn.clone();
    let _: () = redis::cmd("HDEL")
        .arg(keys.workers())
        .arg(id)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// The workers that beat within [`DEAD_AFTER`], by id.
pub async fn live(conn: &Conn, keys: &Keys) -> Result<Vec<LiveWorker>, QueueError> {
    live_within(conn, keys, DEAD_AFTER).await
}

/// The workers that beat within `dead_after`, by id (at most [`MAX_LISTED`] read).
pub async fn live_within(
    conn: &Conn,
    keys: &Keys,
    dead_after: Duration,
) -> Result<Vec<LiveWorker>, QueueError> {
    let mut conn = conn.clone();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
    let now = secs * 1000 + micros / 1000;
    let key = keys.workers();
    if key_type(&mut conn, &key).await? != "hash" {
        return Ok(Vec::new());
    }
    let mut cursor = 0u64;
    let mut seen = 0usize;
    let mut out = Vec::new();
    loop {
        let (next, page): (u64, Vec<Field>) = redis::cmd("HSCAN")
            .arg(&key)
            .arg(cursor)
            .arg("COUNT")
            .arg(100)
            .query_async(&mut conn)
            .await?;
        for (_, value) in page {
            seen += 1;
            if let Some(worker) = parse_entry(&value, now) {
                if worker.heartbeat_age_ms <= dead_after.as_millis() as u64 {
                    out.push(worker);
                }
            }
        }
        cursor = next;
        if cursor == 0 || seen >= MAX_LISTED {
            break;
        }
    }
    out.sort_by(|a, b| a.info.id.cmp(&b.info.id));
    // HSCAN may return an entry twice when the hash is rehashed meanwhile.
    out.dedup_by(|a, b| a.info.id == b.info.id);
    Ok(out)
}

async fn key_type(conn: &mut Conn, key: &str) -> Result<String, QueueError> {
    Ok(redis::cmd("TYPE").arg(key).query_async(conn).await?)
}

/// An entry ("MS INFO") read at `now` (ms), or `None` if a worker did not write it.
fn parse_entry(value: &[u8], now: u64) -> Option<LiveWorker> {
    if value.len() > MAX_ENTRY {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let (at, json) = text.split_once(' ')?;
    let last_heartbeat: u64 = at.parse().ok()?;
    let info: WorkerInfo = serde_json::from_str(json).ok()?;
    Some(LiveWorker {
        info,
        last_heartbeat,
        heartbeat_age_ms: now.saturating_sub(last_heartbeat),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_and_foreign_ones_skipped() {
        let info = WorkerInfo {
            id: "w1".into(),
            host: "h".into(),
            pid: 7,
            started_at: 1,
            running: 2,
            concurrency: 4,
            version: "0.1.0".into(),
        };
        let value = format!("1000 {}", serde_json::to_string(&info).expect("json"));
        let w = parse_entry(value.as_bytes(), 1500).expect("parsed");
        assert_eq!(
            (w.info, w.last_heartbeat, w.heartbeat_age_ms),
            (info, 1000, 500)
        );
        assert!(parse_entry(b"not a heartbeat", 1500).is_none());
        assert!(parse_entry(b"12 {}", 1500).is_none());
    }
}
