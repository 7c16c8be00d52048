//! Completion webhooks: the sending side. A worker's [`dispatcher`] claims due
//! deliveries from Redis (`queue::webhooks`), builds each body from the job's record
//! (`queue::webhook_body`), signs it ([`signature`]) and POSTs it through the
//! [`client`], which refuses non-public addresses and never follows a redirect.
//!
//! # Guarantees
//! 1. At least once, across worker restarts: a delivery is made in the same Lua script
//!    that stores a job's (or batch's) end, and stays pending until a 2xx or a 410
//!    answers it or `webhooks.max_age` passes; a worker that dies mid-send loses
//!    nothing (the claim's lease runs out and another worker sends it). A receiver
//!    dedupes on `X-Mcpq-Delivery`: one id per end, however often it is sent.
//!    Test: `webhooks::every_callback_arrives_through_500s_an_outage_and_a_worker_restart_and_verifies_with_the_readme_snippets`.
//! 2. Signed: `X-Mcpq-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
//!    with `X-Mcpq-Timestamp` (Unix seconds); the secret is read from the worker's
//!    environment at send time, from a variable the config allows, and never stored or
//!    logged. Test: the same, with the README's Python and Node snippets.
//! 3. SSRF guard: only `http`/`https`; the host's addresses are resolved and checked
//!    ([`mcpq_core::public_address`]) unless `webhooks.allow_private`, and the
//!    connection goes to an address that was checked (no second lookup to rebind);
//!    no proxy; redirects are answers (3xx: retried), never followed.
//!    Tests: `webhooks::the_guard_refuses_private_targets_and_redirects_are_not_followed`,
//!    `public_address` tests.
//! 4. Bounded: one POST at most `webhooks.timeout`; a body at most `webhooks.max_body`;
//!    at most 512 bytes of an answer read; at most `webhooks.concurrency` POSTs per
//!    worker.
//!
//! # Caveats
//! - A receiver that answers 2xx and then loses the delivery will not get it again:
//!   `mcpq webhooks retry ID` sends an ended delivery once more by hand.
//! - `X-Mcpq-Timestamp` is the sending worker's clock: keep workers' clocks in sync
//!   (NTP) if receivers refuse old timestamps.

pub mod client;
pub mod dispatcher;
pub mod signature;

pub use client::WebhookClient;
pub use dispatcher::Dispatcher;

/// What one attempt to send a delivery came to: the label of the metric
/// `mcpq_webhook_deliveries_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryOutcome {
    /// A 2xx answered it: done.
    Delivered,
    /// A 410 answered it: the receiver wants no more; not sent again.
    Gone,
    /// Another status, a timeout or an unreachable receiver: it is tried again later.
    Retry,
    /// It would have been retried, but `webhooks.max_age` has passed: failed.
    Failed,
    /// Never sent: the callback or its target is refused (a private address, an
    /// unknown endpoint, a secret variable not allowed): failed at once.
    Refused,
}

impl DeliveryOutcome {
    /// Every outcome.
    pub const ALL: [DeliveryOutcome; 5] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Gone,
        DeliveryOutcome::Retry,
        DeliveryOutcome::Failed,
        DeliveryOutcome::Refused,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Gone => "gone",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Refused => "refused",
        }
    }
}

impl std::fmt::Display for DeliveryOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
