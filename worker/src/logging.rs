//! The worker's logging: never blocks the runtime.
//!
//! Log lines go to stderr through `tracing-appender`'s non-blocking writer: a dedicated
//! thread does the writing, and the runtime only pushes into a bounded channel
//! ([`BUFFERED_LINES`]). If whatever reads our stderr stops reading, the channel fills and
//! further lines are dropped (lossy mode) instead of stalling jobs. MCP servers never
//! write to this stream: each has its own stderr pipe (see the supervisor).

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines held while the sink is slow; past that, lines are dropped.
pub const BUFFERED_LINES: usize = 16 * 1024;

/// Output format of log lines.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Keep the guard alive until exit: dropping it flushes.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("mcpq-log-writer")
        .finish(std::io::stderr());
    let filter = EnvFilter::try_from_env("MCPQ_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            EnvFilter::new("info,apalis=warn,apalis_core=warn,apalis_redis=warn,rmcp=warn")
        });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}
