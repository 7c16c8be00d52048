//! MCP clients. Runners reach tools only through this module; the processes behind the
//! sessions belong to the [`crate::supervisor::Supervisor`].

pub mod answer_limit;
pub mod http_client;
pub mod pool;
pub mod session;

pub use pool::{McpPool, PoolError};
pub use session::{McpError, McpSession};
