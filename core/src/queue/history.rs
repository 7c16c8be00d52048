//! How many jobs ended, per 10 seconds, over the last minutes: the dashboard's chart.
//!
//! Every outcome script call (`lua/finish.lua`, through `add_totals` in
//! `lua/common.lua`) adds what it ended to the hash `{ns}:ended:MINUTE` of its
//! partition (MINUTE = Redis's clock in ms / 60,000), one field per outcome and
//! 10-second slot (`succeeded:0` .. `dead:5`), besides the running totals. Each such
//! hash expires 16 minutes after it was made, so the namespace holds at most 16 of
//! them per partition, whatever the load.
//!
//! [`read`] is two pipelines per partition (`TYPE`, then `HMGET` of the 18 fields mcpq
//! writes, of the 16 minutes the window touches): bounded, whatever the number of jobs
//! or what else a hash holds. A field that is not a count (written by someone else)
//! reads as 0, a key of another type as empty.

use serde::Serialize;

use super::hashes::hmget_hashes;
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

/// The outcomes counted, as the fields' prefixes.
const OUTCOMES: [&str; 3] = ["succeeded", "dead", "retried"];

/// Largest count read from one field: more is someone else's number (a real slot holds
/// what one namespace ends in 10 s), read as this.
const MAX_COUNT: u64 = 1 << 40;

/// The [`MINUTES`] x [`SLOTS`] slots up to the one `now_ms` falls in (Redis's clock,
/// e.g. `QueueStats::read_at_ms`), oldest first, summed over partitions; the last one is
/// still filling. Always the same number of slots, so a chart keeps its scale.
pub async fn read(conn: &Conn, keys: &Keys, now_ms: u64) -> Result<Vec<Slot>, QueueError> {
    let count = MINUTES * SLOTS;
    let current = now_ms / SLOT_MS;
    let first = current.saturating_sub(count - 1);
    let mut slots: Vec<Slot> = (first..=current)
        .map(|n| Slot {
            at: n * SLOT_MS,
            ..Slot::default()
        })
        .collect();
    let minutes: Vec<u64> = (first * SLOT_MS / 60_000..=current * SLOT_MS / 60_000).collect();
    let fields: Vec<String> = OUTCOMES
        .iter()
        .flat_map(|o| (0..SLOTS).map(move |s| format!("{o}:{s}")))
        .collect();
    for part in keys.all() {
        // Only the fields mcpq writes: a hash someone else filled with millions of
        // fields costs the same.
        let names: Vec<String> = minutes.iter().map(|m| part.ended(*m)).collect();
        let got = hmget_hashes(&mut conn.clone(), &names, &fields).await?;
        for (m, values) in minutes.iter().zip(got) {
            let Some(values) = values else { continue };
            for (i, value) in values.into_iter().enumerate() {
                let Some(n) = value
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                else {
                    continue;
                };
                let (outcome, slot) = (i as u64 / SLOTS, i as u64 % SLOTS);
                // The slot's number since the epoch (10 s each).
                let at = m * SLOTS + slot;
                let Some(s) = at
                    .checked_sub(first)
                    .and_then(|k| slots.get_mut(k as usize))
                else {
                    continue;
                };
                let n = n.min(MAX_COUNT);
                match outcome {
                    0 => s.succeeded = s.succeeded.saturating_add(n),
                    1 => s.dead = s.dead.saturating_add(n),
                    _ => s.retried = s.retried.saturating_add(n),
                }
            }
        }
    }
    Ok(slots)
}
