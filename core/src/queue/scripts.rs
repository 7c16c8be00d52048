//! The Lua scripts that are the queue: one per operation, in `lua/`.
//!
//! Every state change of a job is one script, so it is atomic: Redis runs a script to
//! the end before any other command. Each script opens with its contract (ARGV,
//! returns); `lua/common.lua` is prepended to all of them (the prefix, Redis's clock,
//! key names, the attempt record). Scripts are sent by SHA and re-sent in full when
//! Redis answers NOSCRIPT (after a restart), which `redis::Script` does for us.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/common.lua"),
                "\n",
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

/// Add one job (id and idempotency key checked in the same step).
pub(crate) static ENQUEUE: LazyLock<Script> = script!("enqueue.lua");
/// Lease the next job to a worker.
pub(crate) static FETCH: LazyLock<Script> = script!("fetch.lua");
/// Extend the leases a worker still holds; report the lost ones.
pub(crate) static RENEW: LazyLock<Script> = script!("renew.lua");
/// Tell whether a fetch would find work in a partition, read only (`fetch.rs`).
pub(crate) static PEEK: LazyLock<Script> = script!("peek.lua");
/// Store the namespace's partition count if it is unset and the namespace unused.
pub(crate) static PARTITIONS: LazyLock<Script> = script!("partitions.lua");
/// Store one attempt's outcome, fenced by its attempt number.
pub(crate) static FINISH: LazyLock<Script> = script!("finish.lua");
/// Re-queue (or bury) jobs whose lease expired.
pub(crate) static RESCUE: LazyLock<Script> = script!("rescue.lua");
/// Queues due delayed jobs and retries, one chunk per call.
pub(crate) static PROMOTE: LazyLock<Script> = script!("promote.lua");
/// Queue one waiting (failed or delayed) job now (`control::run_now`).
pub(crate) static RUN_NOW: LazyLock<Script> = script!("run_now.lua");
/// Records the newest tick a cron schedule fired (`queue::schedules`).
pub(crate) static SCHEDULE_MARK: LazyLock<Script> = script!("schedule_mark.lua");
/// Cancel a job that has not finished.
pub(crate) static CANCEL: LazyLock<Script> = script!("cancel.lua");
/// Make a batch (and its waiting fan-in job), or find the one a re-run made.
pub(crate) static BATCH_CREATE: LazyLock<Script> = script!("batch_create.lua");
/// Count a batch's never-enqueued jobs as cancelled, so that it can finish.
pub(crate) static BATCH_SEAL: LazyLock<Script> = script!("batch_seal.lua");
/// Put a dead job back in its queue.
pub(crate) static REQUEUE: LazyLock<Script> = script!("requeue.lua");
/// Take due webhook deliveries for one worker (a lease on each).
pub(crate) static WEBHOOK_CLAIM: LazyLock<Script> = script!("webhook_claim.lua");
/// Store what one attempt to send a webhook delivery came to.
pub(crate) static WEBHOOK_DONE: LazyLock<Script> = script!("webhook_done.lua");
/// Make a failed webhook delivery pending again.
pub(crate) static WEBHOOK_RETRY: LazyLock<Script> = script!("webhook_retry.lua");
/// A job's envelope if it is at most so many bytes, read only (`results.rs`).
pub(crate) static PAYLOAD_READ: LazyLock<Script> = script!("payload_read.lua");
/// Count the jobs by state, read only (`stats.rs`).
pub(crate) static STATS: LazyLock<Script> = script!("stats.lua");
/// Keep and announce a running job's newest progress report (`progress.rs`).
pub(crate) static PROGRESS: LazyLock<Script> = script!("progress.lua");
/// One worker's heartbeat, and a bounded prune of dead workers (`workers.rs`).
pub(crate) static HEARTBEAT: LazyLock<Script> = script!("heartbeat.lua");
/// What `mcpq queues` shows, read only (`queues.rs`).
pub(crate) static QUEUES: LazyLock<Script> = script!("queues.lua");
/// One try to pass an endpoint's rate, token and concurrency limits (`limits.rs`).
pub(crate) static LIMIT_ACQUIRE: LazyLock<Script> = script!("limit_acquire.lua");
/// What one endpoint's limits hold now, read only (`limits.rs`).
pub(crate) static LIMIT_USAGE: LazyLock<Script> = script!("limit_usage.lua");
/// Give back one call's concurrency slot (`limits.rs`).
pub(crate) static LIMIT_RELEASE: LazyLock<Script> = script!("limit_release.lua");
/// Pause an endpoint for every worker after a 429 (`limits.rs`).
pub(crate) static LIMIT_PAUSE: LazyLock<Script> = script!("limit_pause.lua");
/// Charge a model answer's tokens to the endpoint's bucket (`limits.rs`).
pub(crate) static LIMIT_DEBIT: LazyLock<Script> = script!("limit_debit.lua");
