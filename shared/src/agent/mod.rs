//! Agents: what runs an `agent` job: a plan (ordered tool calls with templates,
//! [`plan`], [`template`], rendered in the [`template_sandbox`]) or a model's tool-calling loop ([`llm`] over [`chat`]), both
//! reaching tools through a job's [`JobSessions`](crate::mcp::JobSessions), never
//! knowing whether a server is pooled.

pub mod chat;
pub mod llm;
pub mod plan;
pub mod template_sandbox;

pub use plan::run_plan;

/// The template language, checked at submit by `job` and so defined below it, in
/// layer 1 ([`crate::template`]); re-exported here under its old path.
pub use crate::template;
