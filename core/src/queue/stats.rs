//! Queue statistics: how many jobs are in each state and how old the oldest queued job
//! is, for `/health` and the `mcpq_queue_*` gauges of `/metrics`.
//!
//! [`read`] is one round trip (`lua/stats.lua`, read-only): one O(1) count per key
//! (`LLEN`/`ZCARD` of the ready lists, `scheduled`, `leases`, `suspects`, `dead`) and,
//! per ready list, at most 10 entries read from its tail to find the oldest job still
//! queued. It never scans the jobs, whatever the queue holds.
//!
//! Caveats:
//! - `running` counts leases, so it includes jobs a worker fetched ahead in a batch and
//!   holds before it starts them, and jobs whose worker died until the rescuer takes
//!   their expired lease back.
//! - `queued` counts list entries: a job cancelled while queued keeps its entry (and is
//!   counted) until a fetch drops it.
//! - A batch's fan-in job waiting for its batch is in no list: it is not counted (that
//!   would take a scan).
//! - The oldest age counts from the job's submit: a retried job counts its earlier
//!   runs and backoff too. A job whose tail entry and the 9 before it are stale shows
//!   no age.
//! - A key someone else wrote with the wrong type counts 0 and is named in
//!   [`QueueStats::problems`].

use crate::queue::Conn;
use redis::Value;
use serde::{Deserialize, Serialize};

use super::{scripts, Keys, QueueError};
use crate::job::Priority;

/// One value per priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByPriority<T> {
    /// `high`.
    pub high: T,
    /// `normal`.
    pub normal: T,
    /// `low`.
    pub low: T,
}

impl<T: Copy> ByPriority<T> {
    /// The value of `priority`.
    pub fn get(&self, priority: Priority) -> T {
        match priority {
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }
}

impl ByPriority<u64> {
    /// The sum over all priorities.
    pub fn total(&self) -> u64 {
        self.high + self.normal + self.low
    }
}

impl ByPriority<Option<u64>> {
    /// The largest of the values present (the oldest age of any priority).
    pub fn max(&self) -> Option<u64> {
        Priority::ALL.iter().filter_map(|&p| self.get(p)).max()
    }
}

/// The queue's counts by state, read at one instant (one Lua script).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Jobs waiting for a worker, by priority (entries of `{ns}:ready:*`).
    pub queued: ByPriority<u64>,
    /// Age (ms) of the oldest job still queued, by priority; `None` when there is none.
    pub oldest_queued_age_ms: ByPriority<Option<u64>>,
    /// Delayed jobs and failed jobs waiting for their retry (`{ns}:scheduled`).
    pub scheduled: u64,
    /// Jobs leased to a worker (`{ns}:leases`).
    pub running: u64,
    /// Rescued jobs waiting to run alone on an idle worker (`{ns}:suspects`).
    pub suspects: u64,
    /// Dead jobs, the dead-letter set (`{ns}:dead`).
    pub dead: u64,
    /// When the counts were read, by Redis's clock (ms since the Unix epoch).
    pub read_at_ms: u64,
    /// Keys of the wrong type (written by something other than mcpq), counted as 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl QueueStats {
    /// Jobs queued over all priorities.
    pub fn queued_total(&self) -> u64 {
        self.queued.total()
    }

    /// Age (ms) of the oldest queued job of any priority.
    pub fn oldest_queued_age(&self) -> Option<u64> {
        self.oldest_queued_age_ms.max()
    }
}

/// The jobs ended since the namespace began, by outcome (`{ns}:totals` of every
/// partition, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Jobs that went to the dead letters.
    pub dead: u64,
    /// Jobs given back at a worker's shutdown.
    pub released: u64,
}

/// Reads [`Totals`]: one `HMGET` of the four fields per partition, as bytes (a hash or
/// a value someone else wrote counts 0, never an error).
pub async fn totals(conn: &Conn, keys: &Keys) -> Result<Totals, QueueError> {
    let mut sum = Totals::default();
    for part in keys.all() {
        let got: Vec<Option<Vec<u8>>> = match redis::cmd("HMGET")
            .arg(part.totals())
            .arg(&["succeeded", "retried", "dead", "released"])
            .query_async(&mut conn.clone())
            .await
        {
            Ok(v) => v,
            Err(e) if e.code() == Some("WRONGTYPE") => continue,
            Err(e) => return Err(e.into()),
        };
        let n = |i: usize| {
            got.get(i)
                .cloned()
                .flatten()
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        sum.succeeded = sum.succeeded.saturating_add(n(0));
        sum.retried = sum.retried.saturating_add(n(1));
        sum.dead = sum.dead.saturating_add(n(2));
        sum.released = sum.released.saturating_add(n(3));
    }
    Ok(sum)
}

/// Reads the counts of the namespace of `keys` (see the module doc): one script per
/// partition, summed (each partition's counts are of one instant; the sum is not).
pub async fn read(conn: &Conn, keys: &Keys) -> Result<QueueStats, QueueError> {
    let mut total = read_in(conn, &keys.at(0)).await?;
    for part in keys.all().skip(1) {
        let s = read_in(conn, &part).await?;
        for p in Priority::ALL {
            let (sum, age) = (
                total.queued.get(p) + s.queued.get(p),
                total
                    .oldest_queued_age_ms
                    .get(p)
                    .max(s.oldest_queued_age_ms.get(p)),
            );
            match p {
                Priority::High => (total.queued.high, total.oldest_queued_age_ms.high) = (sum, age),
                Priority::Normal => {
                    (total.queued.normal, total.oldest_queued_age_ms.normal) = (sum, age)
                }
                Priority::Low => (total.queued.low, total.oldest_queued_age_ms.low) = (sum, age),
            }
        }
        total.scheduled += s.scheduled;
        total.running += s.running;
        total.suspects += s.suspects;
        total.dead += s.dead;
        total.read_at_ms = total.read_at_ms.max(s.read_at_ms);
        total.problems.extend(s.problems);
    }
    Ok(total)
}

/// [`read`] of one partition.
async fn read_in(conn: &Conn, keys: &Keys) -> Result<QueueStats, QueueError> {
    let mut conn = conn.clone();
    let answer: Vec<Value> = scripts::STATS
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .invoke_async(&mut conn)
        .await?;
    decode(&answer).ok_or_else(|| QueueError::Corrupt {
        id: keys.prefix().to_string(),
        message: format!("unexpected answer of stats.lua: {answer:?}"),
    })
}

fn decode(answer: &[Value]) -> Option<QueueStats> {
    let int = |i: usize| match answer.get(i)? {
        Value::Int(n) => Some(*n),
        _ => None,
    };
    let count = |i: usize| int(i).map(|n| u64::try_from(n).unwrap_or(0));
    let age = |i: usize| int(i).map(|n| u64::try_from(n).ok());
    let problems = answer
        .iter()
        .skip(11)
        .filter_map(|v| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect();
    Some(QueueStats {
        queued: ByPriority {
            high: count(0)?,
            normal: count(1)?,
            low: count(2)?,
        },
        oldest_queued_age_ms: ByPriority {
            high: age(3)?,
            normal: age(4)?,
            low: age(5)?,
        },
        scheduled: count(6)?,
        running: count(7)?,
        suspects: count(8)?,
        dead: count(9)?,
        read_at_ms: count(10)?,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_decoded_and_a_short_one_refused() {
        let mut answer: Vec<Value> = [4, 0, 1, 1500, -1, 20, 2, 3, 0, 5, 1_700_000_000_000]
            .into_iter()
            .map(Value::Int)
            .collect();
        answer.push(Value::BulkString(b"{t}:dead".to_vec()));
        let stats = decode(&answer).expect("decodes");
        assert_eq!(stats.queued_total(), 5);
        assert_eq!(stats.oldest_queued_age_ms.normal, None);
        assert_eq!(stats.oldest_queued_age(), Some(1500));
        assert_eq!((stats.scheduled, stats.running, stats.dead), (2, 3, 5));
        assert_eq!(stats.problems, vec!["{t}:dead".to_string()]);
        assert_eq!(decode(&answer[..5]), None);
    }
}
