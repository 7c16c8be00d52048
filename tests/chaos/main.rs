//! The chaos suite: mcpq's delivery guarantees under crashes, pauses, restarts and
//! garbage, each scenario bounded in time. Run it alone with `scripts/chaos`
//! (`--long` for a longer soak); `scripts/test` runs it too.
//!
//! Every scenario starts its own `redis-server` on a free loopback port, with AOF on
//! ([`private_redis`]), so it can kill and restart it without touching the shared one,
//! and runs the real `mcpq-worker` binaries. Scenarios run one at a time (a lock), so
//! their timings do not fight over the two cores. Each ends by checking that no MCP
//! server process and no zombie is left.

mod private_redis;

mod bad_entries; // 1,000 malformed queue entries between good jobs
mod big_batch; // 100,000 jobs pushed at once
mod big_model_answer; // a model API answering 2 GB
mod big_results; // tool answers and results past queue.max_result
mod crashing_server; // a server that crashes on every call
mod huge_template; // templates that build gigabytes, and the jobs around them
mod killed_workers; // SIGKILL workers mid-run, 5 times
mod paused_worker; // SIGSTOP past the lease, then SIGCONT
mod poison_entries; // entries that broke whole fetch batches, mixed with good jobs
mod redis_restart; // restart Redis mid-run
mod serve_restart; // restart Redis under a long poll of mcpq serve
mod worker_killer; // a job that kills every worker that runs it

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mcpq_tests::{processes_with_env, wait_until, zombie_children, TestEnv, WorkerProc};

/// Scenarios take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the turn for one scenario (a failed scenario does not block the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// True when `scripts/chaos --long` asked for the soak sizes.
pub fn long() -> bool {
    std::env::var("MCPQ_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// Fast leases and retries for the scenarios: a dead worker's jobs come back within
/// about 3 s instead of 31 s.
pub const CHAOS_QUEUE: &str = "lease = \"2s\"\nretry_base = \"50ms\"\nretry_cap = \"500ms\"\n";

/// The bound on a worker's peak RSS in the hostile-input scenarios (issue #11: 200 MB).
pub const MAX_WORKER_RSS: u64 = 200 * 1024 * 1024;

/// After a hostile scenario: `worker` is still alive, logged no panic, and its peak RSS
/// stayed under [`MAX_WORKER_RSS`]. Returns that peak in bytes, for the report.
pub fn assert_survived_small(worker: &mut WorkerProc) -> u64 {
    assert!(
        worker.child.try_wait().expect("try_wait").is_none(),
        "the worker died:\n{}",
        worker.log_text()
    );
    assert!(
        !worker.log_text().contains("panicked"),
        "{}",
        worker.log_text()
    );
    let peak = worker.peak_rss().expect("the worker is alive");
    assert!(
        peak < MAX_WORKER_RSS,
        "worker peak RSS {peak} bytes, over {MAX_WORKER_RSS}"
    );
    peak
}

/// After the workers are gone: no fixture server of `env` is alive, no zombie is ours.
pub fn assert_no_leftovers(env: &TestEnv) {
    let tag = format!(
        "MCPQ_FIXTURE_SPAWN_LOG={}",
        env.dir.join("spawns.log").display()
    );
    assert!(
        wait_until(Duration::from_secs(10), || processes_with_env(&tag)
            .is_empty()),
        "orphan MCP server processes: {:?}",
        processes_with_env(&tag)
    );
    assert!(
        zombie_children(std::process::id()).is_empty(),
        "zombies: {:?}",
        zombie_children(std::process::id())
    );
}

/// Lines of a `mark` log, counted per tag.
pub fn marks(path: &std::path::Path) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}
