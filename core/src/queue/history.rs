//! How many jobs ended, per 10 seconds, over the last minutes: the dashboard's chart.
//!
//! Every outcome script call (`lua/finish.lua`, through `add_totals` in
//! `lua/common.lua`) adds what it ended to the hash `{ns}:ended:MINUTE` of its
//! partition (MINUTE = Redis's clock in ms / 60,000), one field per outcome and
//! 10-second slot (`succeeded:0` .. `dead:5`), besides the running totals. Each such
//! hash expires 16 minutes after it was made, so the namespace holds at most 16 of
//! them per partition, whatever the load.
//!
//! [`read`] is one pipeline of [`MINUTES`] `HGETALL`s per partition: bounded, whatever
//! the number of jobs. A field that is not a count (written by someone else) reads as
//! 0, a key of another type as empty.

use std::collections::HashMap;

use serde::Serialize;

use super::{Conn, Keys, QueueError};

/// Minutes of history [`read`] returns (the current one included).
pub const MINUTES: u64 = 15;
/// Slots per minute (10 s each).
pub const SLOTS: u64 = 6;
/// Length of one slot, ms.
pub const SLOT_MS: u64 = 60_000 / SLOTS;

/// The jobs that ended in one 10-second slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// When the slot starts (ms since the Unix epoch, Redis's clock).
    pub at: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that went to the dead letters.
    pub dead: u64,
    /// Attempts that failed and will be retried.
    pub retried: u64,
}

/// The slots of the last [`MINUTES`] minutes up to `now_ms` (Redis's clock, e.g.
/// `QueueStats::read_at_ms`), oldest first, summed over partitions; the slot `now_ms`
/// falls in is the last (still filling).
pub async fn read(conn: &Conn, keys: &Keys, now_ms: u64) -> Result<Vec<Slot>, QueueError> {
    let minute = now_ms / 60_000;
    let first = minute.saturating_sub(MINUTES - 1);
    let last_slot = (now_ms % 60_000) / SLOT_MS;
    let mut slots: Vec<Slot> = (first..=minute)
        .flat_map(|m| (0..SLOTS).map(move |s| m * 60_000 + s * SLOT_MS))
        .filter(|&at| at <= minute * 60_000 + last_slot * SLOT_MS)
        .map(|at| Slot {
            at,
            ..Slot::default()
        })
        .collect();
    for part in keys.all() {
        let mut pipe = redis::pipe();
        for m in first..=minute {
            // HGETALL of a key of another type would fail the whole pipeline: types
            // first, then only the hashes are read.
            pipe.cmd("TYPE").arg(part.ended(m));
        }
        let types: Vec<String> = pipe.query_async(&mut conn.clone()).await?;
        let mut pipe = redis::pipe();
        let mut read = Vec::new();
        for (m, t) in (first..=minute).zip(&types) {
            if t == "hash" {
                pipe.cmd("HGETALL").arg(part.ended(m));
                read.push(m);
            }
        }
        if read.is_empty() {
            continue;
        }
        let got: Vec<HashMap<String, String>> = pipe.query_async(&mut conn.clone()).await?;
        for (m, fields) in read.into_iter().zip(got) {
            for (field, value) in fields {
                let Some((outcome, slot)) = field.rsplit_once(':') else {
                    continue;
                };
                let (Ok(slot), Ok(n)) = (slot.parse::<u64>(), value.parse::<u64>()) else {
                    continue;
                };
                if slot >= SLOTS {
                    continue;
                }
                let at = m * 60_000 + slot * SLOT_MS;
                let Some(s) = slots.iter_mut().find(|s| s.at == at) else {
                    continue;
                };
                match outcome {
                    "succeeded" => s.succeeded = s.succeeded.saturating_add(n),
                    "dead" => s.dead = s.dead.saturating_add(n),
                    "retried" => s.retried = s.retried.saturating_add(n),
                    _ => {}
                }
            }
        }
    }
    Ok(slots)
}
