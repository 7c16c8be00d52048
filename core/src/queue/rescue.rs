//! The rescuer: re-queues jobs whose lease expired (`lua/rescue.lua`).
//!
//! Every worker runs it every [`RESCUE_INTERVAL`], so a dead worker's jobs run again
//! within `lease + 1 s` as long as one worker is alive. Running it on every worker is
//! safe: each expired lease is handled once, by whichever script call comes first.
//! A worker's death is not the job's failure: the lost attempt does not count against
//! `max_attempts` but against `queue.max_rescues` (default 5), so crashes of the
//! infrastructure never burn a job's attempts, while a job that kills its worker every
//! time ends `dead` after `max_rescues + 1` lost leases instead of taking workers down
//! for ever. An expired lease whose record is malformed is dead-lettered alone.
//!
//! The same tick promotes `{ns}:scheduled` (delayed jobs whose `run_at` came, retries
//! whose backoff is over; `lua/promote.lua`) in chunks of [`PROMOTE_CHUNK`], calling
//! again while a chunk comes back full: a backlog of any size is drained without one
//! long script (fetches promote too, 100 at a time, so a lone due job does not wait
//! for the tick).

use std::time::Duration;

use crate::queue::Conn;

use super::{scripts, Keys, QueueError, QueueSettings};

/// How often each worker looks for expired leases: recovery takes at most lease + this.
pub const RESCUE_INTERVAL: Duration = Duration::from_secs(1);

/// Scheduled entries one promote call takes at most: 500 due jobs cost ~6 ms of script
/// (about 12 µs each, measured on a set of a million, docs/BENCHMARKS.md), under Redis's
/// 10 ms slow-log threshold, so other clients wait at most that long behind one call.
pub const PROMOTE_CHUNK: u32 = 500;

/// One promote call: queues up to [`PROMOTE_CHUNK`] due entries of `{ns}:scheduled`;
/// returns how many it took out of the set.
pub async fn promote_once(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
) -> Result<u32, QueueError> {
    let taken: u32 = scripts::PROMOTE
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(QueueSettings::secs(settings.dead_ttl))
        .arg(PROMOTE_CHUNK)
        .invoke_async(conn)
        .await?;
    Ok(taken)
}

/// Promotes chunk after chunk until a chunk comes back short; returns the total.
pub async fn promote_due(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
) -> Result<u64, QueueError> {
    let mut total = 0u64;
    loop {
        let taken = promote_once(conn, keys, settings).await?;
        total += u64::from(taken);
        if taken < PROMOTE_CHUNK {
            return Ok(total);
        }
    }
}

/// One pass: handles up to 100 expired leases; returns (requeued, dead).
pub async fn rescue_once(
    conn: &mut Conn,
    keys: &Keys,
    settings: &QueueSettings,
) -> Result<(u32, u32), QueueError> {
    let (requeued, dead): (u32, u32) = scripts::RESCUE
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(QueueSettings::secs(settings.dead_ttl))
        .arg(settings.max_rescues)
        .invoke_async(conn)
        .await?;
    Ok((requeued, dead))
}

/// Rescues and promotes in every partition, for ever (abort the task to stop);
/// errors are logged and retried.
pub async fn rescue_loop(mut conn: Conn, keys: Keys, settings: QueueSettings) {
    loop {
        for part in keys.all() {
            rescue_partition(&mut conn, &part, &settings).await;
        }
        // Another process may have stored another count since this one started.
        let stored: Result<Option<String>, _> = redis::cmd("GET")
            .arg(keys.partitions_key())
            .query_async(&mut conn)
            .await;
        if let Ok(Some(stored)) = stored {
            if stored != keys.partitions().to_string() {
                tracing::error!(
                    stored = %stored.chars().take(20).collect::<String>(),
                    ours = keys.partitions(),
                    "the namespace's partition count in Redis is not this worker's: jobs go where it does not look; restart every process with one [redis] partitions"
                );
            }
        }
        tokio::time::sleep(RESCUE_INTERVAL).await;
    }
}

/// One partition's rescue passes (until one handles fewer than 100) and promotions.
async fn rescue_partition(conn: &mut Conn, keys: &Keys, settings: &QueueSettings) {
    loop {
        match rescue_once(conn, keys, settings).await {
            Ok((0, 0)) => break,
            Ok((requeued, dead)) => {
                tracing::warn!(
                    requeued,
                    dead,
                    "rescued jobs whose lease expired (their worker died or stalled)"
                );
                if requeued + dead < 100 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("rescue pass failed (retrying): {e}");
                break;
            }
        }
    }
    if let Err(e) = promote_due(conn, keys, settings).await {
        tracing::warn!("promoting scheduled jobs failed (retrying): {e}");
    }
}
