//! mcpq's core: what a job is, how mcpq is configured, and the Redis queue and result
//! store. Everything here is data, validation and Redis: no child process, no MCP
//! session, no HTTP or SMTP client. The producer (`mcpq`) links only this crate; the
//! worker links it through `mcpq-shared`, which adds the supervisor, MCP sessions and
//! the runners on top and re-exports these modules under the same names.
//!
//! The layers (docs/ARCHITECTURE.md): 1 data and validation, no I/O (`duration`,
//! `public_address`, `failure`, `template`, `job`, `config`, `backoff`, `terminal`, `cli_error`) -> 2
//! `queue` (Redis).
//! Imports only go down (`tests/layers.rs`), and nothing here can import the execution
//! layers: they live in another crate that depends on this one.
//!
//! # Guarantees
//! - A job names servers, never a command or a path; its JSON is checked field by field
//!   with a message naming the field, and bounded in size ([`job`]).
//! - A configuration is checked whole at load: a bad key, a zero duration or a duration
//!   over 365 days is an error naming its key path, never a surprise at run time
//!   ([`config`], [`duration`]).
//! - Plan templates are checked at submit without evaluating anything ([`template`]).
//! - Every change of a job's state in Redis is one Lua script with fencing; each entry
//!   is judged before any write ([`queue`]; the promises and their tests are listed in
//!   `docs/GUARANTEES.md`).
//! - Every failure has one [`failure::FailureKind`], and the README's error table is
//!   checked against the enum by a test.
//! - Every error of a command line has one [`cli_error::CliErrorKind`] and one exit code,
//!   the same under `--json`; README's table of them is checked by a test too.

//!
//! # Enqueueing from Rust
//! A Rust service enqueues without the CLI through [`queue::Producer`]: build a [`Job`]
//! (from JSON, as `mcpq submit` reads it, or with [`Job::agent`]), then submit one job,
//! or many as a batch, and read or wait for the outcome. The workers need nothing else.
//! A whole program, `core/examples/producer.rs` (compiled with the crate's checks), is
//! below.
//!
//! [`queue::Producer::status`] reads where a job is without loading its result; the
//! whole record (attempts, errors, result) is [`queue::ResultStore::get`].

#![doc = concat!("```ignore\n", include_str!("../examples/producer.rs"), "\n```")]

pub mod backoff;
pub mod cli_error;
pub mod config;
pub mod duration;
pub mod failure;
pub mod job;
pub mod lines;
#[cfg(feature = "logging")]
pub mod logging;
pub mod outcome_text;
pub mod public_address;
pub mod queue;
pub mod template;
pub mod terminal;
pub mod tool_pattern;

pub use config::Config;
pub use job::{Job, JobId};
