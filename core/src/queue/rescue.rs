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

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{scripts, Keys, QueueError, QueueSettings};

/// How often each worker looks for expired leases: recovery takes at most lease + this.
pub const RESCUE_INTERVAL: Duration = Duration::from_secs(1);

/// One pass: handles up to 100 expired leases; returns (requeued, dead).
pub async fn rescue_once(
    conn: &mut ConnectionManager,
    keys: &Keys,
    settings: &QueueSettings,
) -> Result<(u32, u32), QueueError> {
    let (requeued, dead): (u32, u32) = scripts::RESCUE
        .prepare_invoke()
        .arg(keys.prefix())
        .arg(QueueSettings::secs(settings.dead_ttl))
        .arg(settings.max_rescues)
        .invoke_async(conn)
        .await?;
    Ok((requeued, dead))
}

/// Rescues for ever (abort the task to stop); errors are logged and retried.
pub async fn rescue_loop(mut conn: ConnectionManager, keys: Keys, settings: QueueSettings) {
    loop {
        loop {
            match rescue_once(&mut conn, &keys, &settings).await {
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
        tokio::time::sleep(RESCUE_INTERVAL).await;
    }
}
