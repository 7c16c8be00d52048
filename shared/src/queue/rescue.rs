//! The rescuer: re-queues jobs whose lease expired (`lua/rescue.lua`).
//!
//! Every worker runs it every [`RESCUE_INTERVAL`], so a dead worker's jobs run again
//! within `lease + 1 s` as long as one worker is alive. Running it on every worker is
//! safe: each expired lease is handled once, by whichever script call comes first.
//! The lost attempt counts as a failure: a job that kills its worker every time ends
//! `dead` after `max_attempts` instead of taking workers down for ever.

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
