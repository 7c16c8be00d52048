//! mcpq as an MCP server: `/mcp` (streamable HTTP) and `mcpq serve --stdio`.
//!
//! Two kinds of tools ([`handler`]):
//! - the queue tools ([`queue_tools`]): submit, read, wait for, cancel and list jobs
//!   and batches, list servers; each is the HTTP API's route, called in-process;
//! - gateway tools ([`gateway`]): each tool `[serve.mcp] expose` names, of each
//!   configured server, as `SERVER__TOOL`; a call is an mcpq job on a worker. A plain
//!   call waits for the job and answers with the tool's own result; a task-augmented
//!   call answers at once with a task whose id is the job's id, and `tasks/get` reads
//!   the job from Redis, so any `mcpq serve` answers it, after a restart too
//!   ([`tasks`]).
//!
//! Guarantees: the front keeps no state of its own (a task is a job); every wait is
//! bounded (`serve.max_wait`, the job's timeout plus `serve.mcp.queue_wait`); `/mcp`
//! has the same bearer auth as the API.

pub mod events;
pub mod gateway;
pub mod handler;
pub mod queue_tools;
pub mod sessions;
pub mod tasks;
