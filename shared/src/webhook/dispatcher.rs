//! The dispatcher: the task in every worker that sends due webhook deliveries.
//!
//! Every [`POLL`] it claims as many due deliveries as it has free slots
//! (`webhooks.concurrency`) and sends each in its own task:
//! 1. the stored callback is resolved against the config (`WebhookSettings::target`):
//!    an unknown endpoint, a secret variable not on the allowlist, a private address
//!    literal, or anything mcpq did not write is refused (failed at once);
//! 2. the body is built from the job's record (`queue::webhook_body`);
//! 3. it is signed with the secret read now from the worker's environment;
//! 4. it is POSTed ([`WebhookClient`]), and what came of it is recorded
//!    (`queue::webhooks::record`): 2xx delivered, 410 gone, anything else a retry after
//!    a backoff with full jitter (`webhooks.retry_base` doubling to `retry_cap`) until
//!    `webhooks.max_age`.
//!
//! Running it in every worker is safe: a claim is a lease, each delivery is sent by one
//! worker at a time (a receiver may still see one twice: see `queue::webhooks`).
//!
//! Shutdown: the launcher aborts the task, which aborts the sends in flight (their
//! tasks are in a `JoinSet` it owns); each abandoned delivery is sent again once its
//! claim's lease runs out: at least once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpq_core::backoff::Backoff;
use mcpq_core::config::webhooks::WebhookSettings;
use mcpq_core::job::Callback;
use mcpq_core::queue::webhooks::{self, Attempted, Claimed, DeliveryState};
use mcpq_core::queue::Conn;
use mcpq_core::queue::{webhook_body, Keys};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{Sent, WebhookClient};
use super::signature;
use super::DeliveryOutcome;

/// How often an idle dispatcher looks for due deliveries: a delivery leaves at most
/// this long after its job ended, for one cheap script call per worker per interval.
pub const POLL: Duration = Duration::from_millis(250);
/// A claim's lease beyond `webhooks.timeout`: time to build the body and record the
/// outcome. A worker that dies mid-send delays its deliveries by about this much.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Sends the due deliveries of one namespace (see the module doc).
#[derive(Clone)]
pub struct Dispatcher {
    conn: Conn,
    keys: Keys,
    settings: Arc<WebhookSettings>,
    worker: String,
    client: WebhookClient,
    /// Called with every attempt's outcome (the metrics counter hooks in here).
    on_outcome: Arc<dyn Fn(DeliveryOutcome) + Send + Sync>,
}

impl Dispatcher {
    /// A dispatcher for `worker`; fails only when the HTTP client cannot be built.
    pub fn new(
        conn: Conn,
        keys: Keys,
        settings: WebhookSettings,
        worker: &str,
    ) -> Result<Self, reqwest::Error> {
        Ok(Dispatcher {
            client: WebhookClient::new(&settings)?,
            conn,
            keys,
            settings: Arc::new(settings),
            worker: worker.to_string(),
            on_outcome: Arc::new(|_| {}),
        })
    }

    /// Calls `f` with the outcome of every attempt (for a metrics counter).
    pub fn on_outcome(mut self, f: impl Fn(DeliveryOutcome) + Send + Sync + 'static) -> Self {
        self.on_outcome = Arc::new(f);
        self
    }

    /// Sends for ever (abort the task to stop); Redis errors are logged and retried.
    pub async fn run(self) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let serial: Vec<String> = self
            .settings
            .endpoints
            .iter()
            .filter(|(_, e)| e.serial)
            .map(|(name, _)| name.clone())
            .collect();
        let lease = self.settings.timeout + LEASE_MARGIN;
        let mut sending = JoinSet::new();
        let mut conn = self.conn.clone();
        loop {
            while sending.try_join_next().is_some() {}
            let free = slots.available_permits();
            let mut full = false;
            if free > 0 {
                let names: Vec<&str> = serial.iter().map(String::as_str).collect();
                match webhooks::claim(
                    &mut conn,
                    &self.keys,
                    free,
                    lease,
                    &self.settings,
                    &self.worker,
                    &names,
                )
                .await
                {
                    Ok(claimed) => {
                        full = claimed.len() == free;
                        for delivery in claimed {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                break; // cannot happen: claimed at most `free`
                            };
                            let this = self.clone();
                            sending.spawn(async move {
                                let outcome = this.deliver(&delivery).await;
                                if let Some(outcome) = outcome {
                                    (this.on_outcome)(outcome);
                                }
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!("claiming webhook deliveries failed (retrying): {e}"),
                }
            }
            if !full {
                tokio::time::sleep(POLL).await;
            } else {
                // Slots full: wait for one to free, without spinning.
                let _ = tokio::time::timeout(POLL, sending.join_next()).await;
            }
        }
    }

    /// Sends one claimed delivery and records the outcome; `None` when Redis failed
    /// (the claim's lease brings the delivery back).
    async fn deliver(&self, delivery: &Claimed) -> Option<DeliveryOutcome> {
        let target = match self.resolve(delivery) {
            Ok(t) => t,
            Err(why) => {
                return self
                    .finish(delivery, DeliveryOutcome::Refused, &why, None)
                    .await
            }
        };
        let mut conn = self.conn.clone();
        let body = match webhook_body::build(
            &mut conn,
            &self.keys,
            delivery,
            self.settings.max_body,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(delivery = %delivery.id, "cannot read what webhook delivery announces (retried after its lease): {e}");
                return None;
            }
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut headers = vec![
            ("X-Mcpq-Delivery", delivery.id.clone()),
            ("X-Mcpq-Timestamp", timestamp.to_string()),
        ];
        // Read now, from this worker's environment; never stored, never logged.
        match std::env::var(&target.secret_env) {
            Ok(secret) if !secret.is_empty() => headers.push((
                "X-Mcpq-Signature",
                signature::sign(secret.as_bytes(), timestamp, &body),
            )),
            _ if target.secret_required => {
                let why = format!(
                    "the secret variable {} is not set on worker {}: not sent unsigned",
                    target.secret_env, self.worker
                );
                return self
                    .finish(delivery, DeliveryOutcome::Retry, &why, None)
                    .await;
            }
            _ => {}
        }
        let host = target.url.host_str().unwrap_or("").to_string();
        match self.client.post(&target.url, body, &headers).await {
            Sent::Answered { status, text } => {
                let outcome = match status {
                    200..=299 => DeliveryOutcome::Delivered,
                    410 => DeliveryOutcome::Gone,
                    _ => DeliveryOutcome::Retry,
                };
                let why = format!("HTTP {status}: {text}");
                tracing::debug!(delivery = %delivery.id, %host, status, "webhook answered");
                self.finish(delivery, outcome, &why, Some(status)).await
            }
            Sent::Unreachable(why) => {
                self.finish(delivery, DeliveryOutcome::Retry, &why, None)
                    .await
            }
            Sent::Refused(why) => {
                self.finish(delivery, DeliveryOutcome::Refused, &why, None)
                    .await
            }
        }
    }

    /// Where the delivery goes, or why it is refused.
    fn resolve(&self, delivery: &Claimed) -> Result<mcpq_core::config::webhooks::Target, String> {
        if delivery.kind != "job" && delivery.kind != "batch" {
            return Err("not a delivery mcpq made (unknown type)".to_string());
        }
        let callback: Callback = serde_json::from_str(&delivery.callback)
            .map_err(|e| format!("the stored callback is not one mcpq wrote: {e}"))?;
        self.settings.target(&callback).map_err(|(field, message)| {
            if field.is_empty() {
                format!("callback refused: {message}")
            } else {
                format!("callback refused: {field}: {message}")
            }
        })
    }

    /// Records the attempt; returns the outcome (`Failed` when a retry passed
    /// `max_age`), or `None` when Redis could not be told.
    async fn finish(
        &self,
        delivery: &Claimed,
        outcome: DeliveryOutcome,
        why: &str,
        status: Option<u16>,
    ) -> Option<DeliveryOutcome> {
        let attempted = match outcome {
            DeliveryOutcome::Delivered => Attempted::Delivered,
            DeliveryOutcome::Gone => Attempted::Gone,
            DeliveryOutcome::Retry => Attempted::Retry {
                delay: Backoff::new(self.settings.retry_base, self.settings.retry_cap)
                    .full_jitter(delivery.attempt),
            },
            DeliveryOutcome::Failed | DeliveryOutcome::Refused => Attempted::Failed,
        };
        let mut conn = self.conn.clone();
        let state = match webhooks::record(
            &mut conn,
            &self.keys,
            &delivery.id,
            delivery.attempt,
            attempted,
            &self.settings,
            why,
            status,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(delivery = %delivery.id, "cannot record a webhook attempt (the delivery is sent again after its lease): {e}");
                return None;
            }
        };
        let outcome = match (outcome, state) {
            (DeliveryOutcome::Retry, DeliveryState::Failed) => DeliveryOutcome::Failed,
            (o, _) => o,
        };
        match outcome {
            DeliveryOutcome::Delivered | DeliveryOutcome::Gone => {
                tracing::info!(delivery = %delivery.id, attempt = delivery.attempt, outcome = %outcome, "webhook delivered")
            }
            DeliveryOutcome::Retry => {
                tracing::info!(delivery = %delivery.id, attempt = delivery.attempt, "webhook attempt failed, retrying later: {why}")
            }
            _ => {
                tracing::warn!(delivery = %delivery.id, attempt = delivery.attempt, outcome = %outcome, "webhook delivery failed: {why}")
            }
        }
        Some(outcome)
    }
}
