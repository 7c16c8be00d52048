//! Cluster-wide limits of one endpoint: an MCP server (`[servers.NAME] rate`,
//! `max_concurrent`) or the model API (`[llm] rate`, `tokens`), held in Redis so that
//! they hold across every worker of the namespace, not per worker.
//!
//! One endpoint's state lives under [`Keys::limit`] and is changed only by four
//! scripts: `lua/limit_acquire.lua` ([`try_acquire`]: checks a 429 pause, the token
//! bucket, the concurrency cap and the request rate, and takes the call's place in all
//! of them, in one atomic step), `lua/limit_release.lua` ([`release`]),
//! `lua/limit_pause.lua` ([`pause`]) and `lua/limit_debit.lua` ([`debit_tokens`]).
//! Redis's clock is the only clock, so workers' clocks do not matter.
//!
//! Guarantees:
//! - **Rate**: a sliding window: at most `count` calls are admitted in any window of
//!   the rate's period plus [`rate_guard`] (5 % of it), over all workers. The guard
//!   keeps the server's own count within `count` while calls reach it less than the
//!   guard after their admission (`tests/e2e/rate_limits.rs` measures it at the
//!   server); a longer stall (a starved machine) can show the server one or two more
//!   in some window, never more on average.
//! - **Concurrency**: at most `max_concurrent` calls hold a slot at once. A slot is a
//!   lease: it is given back by [`release`] when the call ends (answer, error, timeout,
//!   cancel), and expires by itself at the end of its lease (the call's timeout plus
//!   [`SLOT_LEASE_SLACK`]), so a worker that dies frees its slots within that time.
//! - **Pause**: after a 429 with `Retry-After` from the endpoint, [`pause`] stops every
//!   worker's calls to it until then (capped at [`MAX_PAUSE`]).
//! - **Tokens**: a token bucket (GCRA) of `count` tokens refilled over the period,
//!   debited after each answer with the usage the model reported ([`debit_tokens`]). A
//!   request is admitted while the bucket is not empty, so one answer may overdraw it
//!   (by at most 10 periods' worth); the next requests then wait until it refills.
//! - **Hostile state**: a key of the wrong type (someone else wrote a string where a
//!   hash belongs) is deleted and counted in [`Acquire::resets`]; a field that is not a
//!   number, or a pause or debt beyond the caps above, reads as none. So garbage costs
//!   at most one window of the limit, never an error or a hang.
//!
//! Caveats:
//! - Workers configured differently share the state of an endpoint of the same name:
//!   each checks its own numbers against it. Give every worker the same limits.
//! - Waiting is by polling ([`Acquire::Wait`] says how long at least); there is no
//!   queue, so waiters are not served in order (no fairness between jobs).

use std::time::Duration;

use crate::queue::Conn;

use super::{scripts, Keys, QueueError};
use crate::config::rate::Rate;

/// The longest pause a 429's `Retry-After` can cause: 10 min. A longer (or hostile,
/// `Retry-After: 18446744073709551615`) value is cut to this.
pub const MAX_PAUSE: Duration = Duration::from_secs(600);

/// Added to a concurrency slot's lease beyond the call's own timeout: the time a worker
/// needs to notice the end of a call and release the slot.
pub const SLOT_LEASE_SLACK: Duration = Duration::from_secs(5);

/// The extra time a call stays in the rate window (5 % of the period; 50 ms of 1 s):
/// calls reach the server a few ms after they are admitted, by varying delays, and
/// without it the server could count `count + 1` calls in one period.
pub fn rate_guard(rate: &Rate) -> Duration {
    rate.period / 20
}

/// The limits of one endpoint, as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Calls per period.
    pub rate: Option<Rate>,
    /// Calls in flight at once.
    pub max_concurrent: Option<u32>,
    /// Model tokens per period.
    pub tokens: Option<Rate>,
}

impl Limits {
    /// The limits of an MCP server (`rate`, `max_concurrent` of `[servers.NAME]`), the
    /// endpoint [`server_endpoint`].
    pub fn of_server(server: &crate::config::ServerConfig) -> Limits {
        Limits {
            rate: server.rate,
            max_concurrent: server.max_concurrent,
            tokens: None,
        }
    }

    /// The limits of the model API (`[llm] rate`, `tokens`), the endpoint
    /// [`LLM_ENDPOINT`].
    pub fn of_llm(llm: &crate::config::llm::LlmSettings) -> Limits {
        Limits {
            rate: llm.rate,
            max_concurrent: None,
            tokens: llm.tokens,
        }
    }

    /// True when no limit is set (a 429 pause may still apply).
    pub fn is_none(&self) -> bool {
        self.rate.is_none() && self.max_concurrent.is_none() && self.tokens.is_none()
    }
}

/// Which limit held a call back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A 429 paused the endpoint.
    Paused,
    /// The token bucket is empty.
    Tokens,
    /// Every concurrency slot is taken.
    Concurrency,
    /// The rate's window is full.
    Rate,
}

impl Held {
    /// Its name in logs, errors and metrics: `paused`, `tokens`, `concurrency`, `rate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Held::Paused => "paused",
            Held::Tokens => "tokens",
            Held::Concurrency => "concurrency",
            Held::Rate => "rate",
        }
    }
}

/// What one try came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// Admitted: counted, and with a cap holding a slot (give it back with [`release`]).
    Admitted {
        /// Keys of the wrong type deleted first (see the module doc).
        resets: u32,
    },
    /// Not now.
    Wait {
        /// The earliest the limit frees up (for [`Held::Concurrency`], when the oldest
        /// slot expires: a release may come sooner, so poll).
        after: Duration,
        /// Which limit.
        held: Held,
        /// Keys of the wrong type deleted first.
        resets: u32,
    },
}

/// The endpoint name of MCP server `server`.
pub fn server_endpoint(server: &str) -> String {
    format!("server:{server}")
}

/// The endpoint name of the model API.
pub const LLM_ENDPOINT: &str = "llm";

/// One try to admit the call `holder` (unique per call) to `endpoint` under `limits`;
/// a slot, if taken, lasts `lease` unless released first.
pub async fn try_acquire(
    mut conn: Conn,
    keys: &Keys,
    endpoint: &str,
    limits: &Limits,
    holder: &str,
    lease: Duration,
) -> Result<Acquire, QueueError> {
    let (rate_count, window) = match &limits.rate {
        Some(rate) => (rate.count, ms(rate.period + rate_guard(rate))),
        None => (0, 0),
    };
    let (tokens_count, tokens_period) = match &limits.tokens {
        Some(rate) => (rate.count, rate.period_ms()),
        None => (0, 0),
    };
    let (admitted, wait_ms, held, resets): (i64, i64, String, i64) = scripts::LIMIT_ACQUIRE
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(endpoint)
        .arg(rate_count)
        .arg(window)
        .arg(limits.max_concurrent.unwrap_or(0))
        .arg(holder)
        .arg(ms(lease).max(1))
        .arg(tokens_count)
        .arg(tokens_period)
        .invoke_async(&mut conn)
        .await?;
    let resets = u32::try_from(resets).unwrap_or(0);
    if admitted == 1 {
        return Ok(Acquire::Admitted { resets });
    }
    let held = match held.as_str() {
        "paused" => Held::Paused,
        "tokens" => Held::Tokens,
        "concurrency" => Held::Concurrency,
        _ => Held::Rate,
    };
    // The script bounds the wait; this bounds it again against a script of another
    // version, so a caller never sleeps longer than a pause may last.
    let after = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1).clamp(1, ms(MAX_PAUSE)));
    Ok(Acquire::Wait {
        after,
        held,
        resets,
    })
}

/// What an endpoint's limits hold now (see [`usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Calls admitted within the rate's window (its period plus [`rate_guard`]).
    pub calls_in_window: u64,
    /// Concurrency slots held now.
    pub slots_held: u64,
    /// How long a 429 keeps the endpoint paused still (ms; 0: not paused).
    pub paused_ms: u64,
    /// Tokens of the bucket in use (of the `tokens` count; may exceed it after an
    /// answer overdrew it).
    pub tokens_used: u64,
}

/// What `endpoint`'s limits hold now, by Redis's clock (one read-only script; writes
/// nothing, so it never changes what a caller is admitted to).
pub async fn usage(
    mut conn: Conn,
    keys: &Keys,
    endpoint: &str,
    limits: &Limits,
) -> Result<Usage, QueueError> {
    let window = limits
        .rate
        .as_ref()
        .map_or(0, |rate| ms(rate.period + rate_guard(rate)));
    let (period, count) = limits
        .tokens
        .as_ref()
        .map_or((0, 0), |t| (t.period_ms(), t.count));
    let (calls_in_window, slots_held, paused_ms, tokens_used): (u64, u64, u64, u64) =
        scripts::LIMIT_USAGE
            .prepare_invoke()
            .key(keys.script_key())
            .arg(keys.prefix())
            .arg(endpoint)
            .arg(window)
            .arg(period)
            .arg(count)
            .invoke_async(&mut conn)
            .await?;
    Ok(Usage {
        calls_in_window,
        slots_held,
        paused_ms,
        tokens_used,
    })
}

/// Gives back `holder`'s concurrency slot; true when it was still held.
pub async fn release(
    mut conn: Conn,
    keys: &Keys,
    endpoint: &str,
    holder: &str,
) -> Result<bool, QueueError> {
    let removed: i64 = scripts::LIMIT_RELEASE
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(endpoint)
        .arg(holder)
        .invoke_async(&mut conn)
        .await?;
    Ok(removed == 1)
}

/// Pauses `endpoint` for every worker for `retry_after` (cut to [`MAX_PAUSE`]); a
/// pause already set for longer stays.
pub async fn pause(
    mut conn: Conn,
    keys: &Keys,
    endpoint: &str,
    retry_after: Duration,
) -> Result<(), QueueError> {
    let _: i64 = scripts::LIMIT_PAUSE
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(endpoint)
        .arg(ms(retry_after.min(MAX_PAUSE)))
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

/// Charges `used` tokens to `endpoint`'s bucket of `tokens` per period.
pub async fn debit_tokens(
    mut conn: Conn,
    keys: &Keys,
    endpoint: &str,
    used: u64,
    tokens: &Rate,
) -> Result<(), QueueError> {
    // Lua's numbers are doubles: 2^40 tokens is beyond any answer and still exact.
    let used = used.min(1 << 40);
    let _: i64 = scripts::LIMIT_DEBIT
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(endpoint)
        .arg(used)
        .arg(tokens.count)
        .arg(tokens.period_ms())
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_is_five_percent_of_the_period() {
        let rate = Rate::parse("10/s").expect("rate");
        assert_eq!(rate_guard(&rate), Duration::from_millis(50));
        assert_eq!(server_endpoint("echo"), "server:echo");
    }
}
