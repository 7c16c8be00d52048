//! Agents: what runs an `agent` job. Today, plans (ordered tool calls).

pub mod plan;
pub mod template;

pub use plan::run_plan;
