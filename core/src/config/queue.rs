//! `[queue]`: leases, retries, retention and priority weights. Plain data and its
//! validation (no Redis here); `queue::settings` re-exports it.
//!
//! ```toml
//! [queue]
//! lease = "30s"             # a running job's lease; renewed every lease/3
//! retry_base = "1s"         # first retry waits up to this long (full jitter) ...
//! retry_cap = "5m"          # ... doubling per failure, never more than this
//! result_ttl = "24h"        # succeeded and cancelled jobs are deleted this long after
//! dead_ttl = "7d"           # dead jobs (the dead-letter set) are deleted this long after
//! idempotency_ttl = "24h"   # how long an idempotency key maps to its first job
//! max_payload = 33554432    # bytes (32 MiB: emails carry attachments); a bigger job is
//!                           # refused (producer) or dead (worker)
//! max_rescues = 5          # lost leases (dead workers) a job survives; the next is dead
//! max_result = 8388608     # bytes (8 MiB): the largest result (and the largest single
//!                           # tool answer) a job may produce; see `max_result` below
//! keep_payload = false      # keep a succeeded job's payload until result_ttl
//! weights = { high = 6, normal = 3, low = 1 }
//! ```
//!
//! Producers and workers of one namespace should use the same values; the worker's are
//! the ones that count for leases, retries and retention, the producer's for
//! idempotency and the payload limit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The `[queue]` section; see the module doc for defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// A running job's lease (default 30 s, at least 1 s). Its worker renews it every
    /// `lease / 3`; when it is not renewed, another worker re-runs the job.
    #[serde(default = "default_lease", with = "crate::duration")]
    pub lease: Duration,
    /// Upper bound of the first retry's delay (default 1 s).
    #[serde(default = "default_retry_base", with = "crate::duration")]
    pub retry_base: Duration,
    /// Upper bound of any retry's delay (default 5 min).
    #[serde(default = "default_retry_cap", with = "crate::duration")]
    pub retry_cap: Duration,
    /// How long succeeded and cancelled jobs are kept (default 24 h, at least 1 s).
    #[serde(default = "default_result_ttl", with = "crate::duration")]
    pub result_ttl: Duration,
    /// How long dead jobs are kept (default 7 days, at least 1 s).
    #[serde(default = "default_dead_ttl", with = "crate::duration")]
    pub dead_ttl: Duration,
    /// How long an idempotency key maps to its first job (default 24 h, at least 1 s).
    #[serde(default = "default_idempotency_ttl", with = "crate::duration")]
    pub idempotency_ttl: Duration,
    /// Largest job envelope in bytes (default 32 MiB: email jobs carry their
    /// attachments, base64).
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// How many times a job is re-queued after its worker died (its lease expired)
    /// before the next loss makes it dead (default 5). A worker's death is not the
    /// job's failure: these do not count against `max_attempts`; this budget only stops
    /// a job that kills every worker that runs it.
    #[serde(default = "default_max_rescues")]
    pub max_rescues: u32,
    /// Largest result in bytes (default 8 MiB, at least 1024): the JSON a job would
    /// store, and also the largest single answer (one JSON-RPC message, one HTTP body)
    /// accepted from an MCP server. A job that goes past it fails at once, permanently,
    /// with `result_too_large`: a plan counts its steps' results as they come, so the
    /// worker never holds much more than this per job; a server whose answer is bigger
    /// has its session closed (the stream is cut mid-message).
    #[serde(default = "default_max_result")]
    pub max_result: usize,
    /// Keep a succeeded job's payload in its record until `result_ttl` (default false:
    /// it is dropped when the result is stored, so a finished job costs Redis a few
    /// hundred bytes; dead jobs always keep theirs, for `mcpq dlq requeue`).
    #[serde(default)]
    pub keep_payload: bool,
    /// Share of fetches that look at each priority first.
    #[serde(default)]
    pub weights: Weights,
}

/// Priority weights: of `high + normal + low` fetches, each priority is looked at first
/// in its share; an empty queue passes its turn to the others, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Default 6.
    pub high: u32,
    /// Default 3.
    pub normal: u32,
    /// Default 1; at least 1, so low never starves.
    pub low: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            high: 6,
            normal: 3,
            low: 1,
        }
    }
}

impl Weights {
    /// The sum of the weights.
    pub fn total(&self) -> u32 {
        self.high + self.normal + self.low
    }
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_retry_base() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_cap() -> Duration {
    Duration::from_secs(300)
}
fn default_result_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_dead_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_idempotency_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_payload() -> usize {
    32 * 1024 * 1024
}
fn default_max_rescues() -> u32 {
    5
}
/// 8 MiB: a result is read back whole by `mcpq result`; far below Redis's 512 MB value
/// limit and small enough that `concurrency` jobs at the limit keep a worker small.
pub const DEFAULT_MAX_RESULT: usize = 8 * 1024 * 1024;
fn default_max_result() -> usize {
    DEFAULT_MAX_RESULT
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            lease: default_lease(),
            retry_base: default_retry_base(),
            retry_cap: default_retry_cap(),
            result_ttl: default_result_ttl(),
            dead_ttl: default_dead_ttl(),
            idempotency_ttl: default_idempotency_ttl(),
            max_payload: default_max_payload(),
            max_rescues: default_max_rescues(),
            max_result: default_max_result(),
            keep_payload: false,
            weights: Weights::default(),
        }
    }
}

impl QueueSettings {
    /// Rejects values that would break a promise (a lease too short to renew, a low
    /// weight of 0 that would starve low-priority jobs).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: format!("queue.{key}"),
                message: message.to_string(),
            })
        };
        let second = Duration::from_secs(1);
        if self.lease < second {
            return invalid("lease", "must be at least 1s (it is renewed every lease/3)");
        }
        for (key, d) in [
            ("result_ttl", self.result_ttl),
            ("dead_ttl", self.dead_ttl),
            ("idempotency_ttl", self.idempotency_ttl),
        ] {
            if d < second {
                return invalid(key, "must be at least 1s (Redis expiry works in seconds)");
            }
        }
        if self.retry_cap < self.retry_base {
            return invalid("retry_cap", "must not be shorter than retry_base");
        }
        if self.max_payload < 1024 {
            return invalid("max_payload", "must be at least 1024 bytes");
        }
        if self.max_rescues > 1000 {
            return invalid("max_rescues", "must be at most 1000");
        }
        if self.max_result < 1024 {
            return invalid("max_result", "must be at least 1024 bytes");
        }
        if self.weights.high == 0 || self.weights.normal == 0 || self.weights.low == 0 {
            return invalid(
                "weights",
                "every weight must be at least 1 (0 would starve a priority)",
            );
        }
        if self.weights.total() > 1000 {
            return invalid("weights", "the weights must add up to at most 1000");
        }
        Ok(())
    }

    /// Whole seconds for Redis `EXPIRE`, at least 1.
    pub fn secs(d: Duration) -> u64 {
        d.as_secs().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert!(QueueSettings::default().validate().is_ok());
        let s = QueueSettings {
            weights: Weights {
                low: 0,
                ..Weights::default()
            },
            ..QueueSettings::default()
        };
        let err = s.validate().expect_err("low weight 0 starves").to_string();
        assert!(err.contains("queue.weights"), "{err}");
        let s = QueueSettings {
            lease: Duration::from_millis(10),
            ..QueueSettings::default()
        };
        assert!(s
            .validate()
            .expect_err("too short")
            .to_string()
            .contains("queue.lease"));
    }
}
