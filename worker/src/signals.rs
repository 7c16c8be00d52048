//! The worker's one signal table. A single task owns the `tokio::signal` streams.
//!
//! - first SIGTERM or SIGINT: stop taking jobs, let running jobs finish within
//!   `worker.shutdown_grace` ([`Signals::first`]);
//! - a second SIGTERM or SIGINT during the grace period: stop waiting ([`Signals::second`]).
//!
//! Installed after [`mcpq_shared::supervisor::unix::reset_own_signal_state`] has put
//! inherited dispositions back to default, so they work even when the worker was started
//! with SIGTERM/SIGINT ignored.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The shutdown signals.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Registers SIGTERM and SIGINT handlers.
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// Resolves at the first shutdown signal, with its name.
    pub async fn first(&mut self) -> &'static str {
        self.next().await
    }

    /// Resolves at the next shutdown signal (the impatient one).
    pub async fn second(&mut self) -> &'static str {
        self.next().await
    }
}
