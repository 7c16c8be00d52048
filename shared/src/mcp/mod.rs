//! MCP clients. Runners reach tools only through this module, by one path:
//! [`JobSessions`] (a pooled session or the job's own, decided here, never by the
//! runner). The processes behind the sessions belong to the
//! [`crate::supervisor::Supervisor`].

pub mod answer_limit;
pub mod arguments;
pub mod http_client;
pub mod job_sessions;
pub mod pool;
pub mod progress;
pub mod session;
pub mod spawn_spec;
pub mod throttle;

pub use job_sessions::JobSessions;
pub use pool::{McpPool, PoolError};
pub use progress::{Progress, ProgressSink};
pub use session::{JobCall, McpError, McpSession};
pub use spawn_spec::{health_policy, spawn_spec};
