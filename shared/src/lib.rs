//! mcpq's execution library: the process supervisor for stdio MCP servers, MCP sessions
//! and their pool, the apalis backend over the queue, and the job runners: agent plans
//! with templates, the LLM tool-calling loop, email jobs. The job model, configuration
//! and the Redis queue live in `mcpq-core` and are re-exported here under their old
//! paths (`mcpq_shared::job`, `mcpq_shared::queue`, ...).
//!
//! The worker (`mcpq-worker`) is thin glue over this crate. The producer (`mcpq`) links
//! only `mcpq-core`: no supervisor, no MCP, HTTP or SMTP client.
//!
//! # Guarantees, each with the test that proves it (`tests/e2e/`)
//! - A job names servers; only servers in the worker's config ever run
//!   (`job::tests::unknown_servers_are_rejected`,
//!   `bad_input::invalid_jobs_exit_2_with_a_message_naming_the_problem_and_enqueue_nothing`).
//! - Bad input is rejected with a message naming the field, and a bad job in the queue
//!   fails with a stored error instead of crashing the worker
//!   (`bad_input::an_undecodable_job_in_the_queue_is_stored_as_failed_and_the_worker_goes_on`).
//! - Every MCP server starts with an empty signal mask, default dispositions, in its own
//!   session and process group, with no descriptor of the worker
//!   (`signals::child_signal_state_is_clean_even_when_the_worker_inherited_a_hostile_one`).
//! - A server's stderr is its own pipe, always drained; its tail is quoted in errors
//!   (`failures::a_server_crash_mid_call_fails_the_job_with_exit_status_and_stderr_tail`,
//!   `torture::a_100_mb_stderr_flood_during_a_call_completes_*`).
//! - Every MCP operation has a deadline, and stopping a server stops its whole process
//!   tree (`torture.rs`: the supervisor's contract is listed in [`supervisor`]).
//! - No server answer (stdio line, HTTP body or SSE event) and no job result is bigger
//!   than `queue.max_result`: past it the job fails at once, permanently, with
//!   `result_too_large` (chaos `big_results.rs`,
//!   `http::an_http_answer_over_max_result_fails_the_job_at_once_as_result_too_large_and_the_server_serves_on`).
//! - Warm sessions are shared by jobs within `max_sessions` x `max_in_flight`; a session
//!   that failed is never handed out again (`pool.rs`; contract in [`mcp::pool`]).
//! - Plan templates are checked at submit (a missing reference, a bad template or an
//!   `include`/`import`/`extends` exits 2; checking evaluates nothing) and bounded at
//!   run time: fuel, a 4 MiB output limit, and rendering in a sandbox child limited to
//!   256 MiB, so a template that builds gigabytes fails its job, never the worker
//!   (`plans.rs`, `template` tests, chaos `huge_template.rs`).
//! - An email's attachments are written only inside their job's directory, with
//!   sanitized names and size limits (`email::the_email_corpus_is_processed_or_rejected_with_clear_errors`,
//!   `email::attachments` tests), private to the worker's user (`0700`/`0600`, an unsafe
//!   root refused), capped in count and on disk, and swept only after their job ended
//!   (`attachments.rs`; contract in [`email::attachment_dir`]).
//! - Mail as servers deliver it is accepted: a bounce, a `From` that is missing, empty or
//!   not an address, undisclosed recipients, raw 8-bit headers, HTML only; only a reply,
//!   which needs an address, fails, permanently, with `no_reply_address`
//!   (`email::a_bounce_is_processed_and_a_reply_to_a_from_that_is_not_an_address_fails_clearly`,
//!   `job::eml` tests).
//! - No duration longer than 365 days is read anywhere, a job's timeout is at most 7
//!   days, so no deadline overflows (`duration` tests,
//!   `bad_input::a_huge_timeout_exits_2_at_submit_naming_the_maximum_and_a_worker_dead_letters_it_without_panicking`).
//! - The LLM loop retries 429/5xx within the deadline, fails a 4xx permanently, and
//!   answers malformed tool calls to the model (`llm::the_model_loop_calls_real_mcp_tools_and_handles_every_answer`).
//! - A job's result and each server answer are bounded by `queue.max_result`, a model
//!   answer by `llm.max_response`: past them the job fails at once (`result_too_large`,
//!   `llm_error`) and the worker stays small (chaos `big_results.rs`,
//!   `big_model_answer.rs`).
//! - The secrets the worker read are redacted from every stored error and result and
//!   every log line; the text log escapes control characters, so no input forges a line
//!   (`secrets_and_logs.rs`; contract in [`redact`]).
//! - Each queue entry is judged alone: a malformed one is dead-lettered, the good jobs
//!   of its batch run; the queue's id is the job's identity; a lost worker spends a
//!   rescue (`queue.max_rescues`), not an attempt (chaos `poison_entries.rs`,
//!   `worker_killer.rs`, `killed_workers.rs`).
//! - A worker's `/metrics` is Prometheus text that the reference parser reads, and its
//!   counters are what the worker did (jobs by kind and outcome, tool calls by server
//!   and tool, spawns); label values are bounded ([`metrics`];
//!   `metrics::metrics_parse_with_the_prometheus_parser_and_count_what_the_worker_did`).
//! - Every limit, its default, key and error: `docs/GUARANTEES.md`, "Limits".
//! - Completion webhooks are stored with the end they announce, sent at least once
//!   (across worker restarts), signed, never to a private address unless allowed, never
//!   through a redirect ([`webhook`]; `webhooks.rs`).
//! - Delivery (at least once, leases with fencing, retries with full-jitter backoff,
//!   dead letters, idempotency keys, cancellation, release on shutdown, retention,
//!   priorities): each promise and its test are listed in `docs/GUARANTEES.md`; the
//!   queue is mcpq's own apalis backend over Lua scripts ([`queue`]).
//!
//! # Caveats
//! At least once, not exactly once: a worker that stalls past its lease, or dies, has
//! its job run again. Tools with side effects should use the job id to make a second
//! run harmless.

pub mod agent;
pub mod backend;
pub mod email;
pub mod fate;
pub mod limiter;
pub mod mcp;
pub mod metrics;
pub mod redact;
pub mod result_budget;
pub mod retry_after;
pub mod runner;
pub mod supervisor;
pub mod tls;
pub mod webhook;

// The core crate's modules, under the paths they always had here.
pub use mcpq_core::{
    backoff, cli_error, config, duration, failure, job, logging, outcome_text, public_address,
    queue, template, terminal, tool_pattern,
};

pub use config::Config;
pub use job::{Job, JobId};
pub use runner::Runner;
