//! mcpq's library: the job model, configuration, the Redis queue and result store, the
//! process supervisor for stdio MCP servers, MCP sessions and the job runners.
//!
//! The binaries (`mcpq-worker`, `mcpq`) are thin glue over this crate.
//!
//! # Guarantees, each with the test that proves it
//! - A job names servers; only servers in the worker's config ever run
//!   (`job::tests::unknown_servers_are_rejected`, e2e `bad_input::unknown_server_*`).
//! - Bad input is rejected with a message naming the field (`job::tests`, e2e
//!   `bad_input`), and a bad job in the queue fails with a stored error instead of
//!   crashing the worker (e2e `bad_input::undecodable_job_in_queue_fails_cleanly`).
//! - Every MCP server starts with an empty signal mask, default dispositions, in its own
//!   process group (e2e `signals::child_signal_state_is_clean_*`).
//! - A server's stderr is its own pipe, always drained; its tail is quoted in errors
//!   (e2e `failures::server_crash_mid_call_*`).
//! - Every MCP operation has a deadline (`mcp::session`), and a stopped server's whole
//!   process group is signalled (e2e `shutdown::sigterm_*`).
//! - A job is acknowledged only after its outcome is stored (`runner`).
//!
//! # Caveats
//! Retries, dead letters, leases with fencing, cancellation and a warm session pool are
//! not built yet: today each job starts the servers it needs and stops them at its end.

pub mod agent;
pub mod config;
pub mod duration;
pub mod job;
pub mod mcp;
pub mod queue;
pub mod runner;
pub mod supervisor;

pub use config::Config;
pub use job::{Job, JobId};
pub use runner::Runner;
