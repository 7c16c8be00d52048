//! One pub/sub subscription kept alive for ever: what the worker's cancel listener
//! ([`super::lease::listen_for_cancels`]) and `mcpq serve`'s job-end waiters
//! ([`super::notify::Endings`]) both need.
//!
//! Guarantees: a dropped connection (Redis restarted) is re-subscribed with backoff
//! (100 ms doubling to 5 s); a subscribe that does not answer within 10 s is retried;
//! `on_subscribed` runs after every (re)subscribe, so a caller can catch up on what was
//! published while nobody listened.

use std::time::Duration;

use futures::StreamExt;

use super::conn::pubsub_client;
use crate::backoff::Backoff;
use crate::config::redis_target::RedisTarget;

/// Subscribes to `channel` on `target` (asked anew at every reconnect: after a
/// Sentinel failover that is the new master) and hands every message's payload to `on_message`,
/// for ever (abort the task to stop). `what` names the listener in logs.
pub async fn subscribe_forever(
    target: RedisTarget,
    channel: String,
    what: &'static str,
    mut on_subscribed: impl FnMut(),
    mut on_message: impl FnMut(&[u8]),
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let subscribed = async {
            let mut pubsub = pubsub_client(&target).await?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(10), subscribed).await {
            Ok(Ok(mut pubsub)) => {
                backoff.reset();
                tracing::debug!(%channel, "listening for {what}");
                on_subscribed();
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    on_message(msg.get_payload_bytes());
                }
                tracing::warn!(%channel, "the {what} channel closed (Redis restarted?); reconnecting");
            }
            Ok(Err(e)) => tracing::warn!(
                %channel,
                "cannot listen for {what} (retrying in {:?}): {e}",
                backoff.peek()
            ),
            Err(_) => {
                tracing::warn!(%channel, "cannot listen for {what}: no answer in 10s (retrying)")
            }
        }
        tokio::time::sleep(backoff.advance()).await;
    }
}
