//! The worker's one signal table. A single task owns the `tokio::signal` streams.
//!
//! - first SIGTERM or SIGINT: stop taking jobs, let running jobs finish within
//!   `worker.shutdown_grace` ([`Signals::first`]);
//! - a second SIGTERM or SIGINT during the grace period: stop waiting ([`Signals::second`]).
//!
//! Installed after [`mcpq_shared::supervisor::reset_own_signal_state`] has put
//! inherited dispositions back to default, so they work even when the worker was started
//! with SIGTERM/SIGINT ignored; [`log_reset`] says what that reset changed.
//!
//! What the signals set off (quiet, then stop the jobs still running) is the
//! launcher's ([`crate::launcher::Launcher::quiet_on`]).

use mcpq_shared::supervisor::{signal_name, SignalReset};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Logs what [`mcpq_shared::supervisor::reset_own_signal_state`] changed (nothing when
/// the parent left the signal state clean), or that it failed.
pub fn log_reset(reset: &std::io::Result<SignalReset>) {
    let names = |sigs: &[i32]| sigs.iter().map(|s| signal_name(*s)).collect::<Vec<_>>();
    match reset {
        Ok(r) if r.unblocked.is_empty() && r.defaulted.is_empty() => {}
        Ok(r) => tracing::info!(
            unblocked = ?names(&r.unblocked),
            defaulted = ?names(&r.defaulted),
            "inherited signal state was reset (a parent had blocked or ignored these signals)"
        ),
        Err(e) => tracing::error!("could not reset the inherited signal state: {e}"),
    }
}

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

/// What tells the worker to shut down: its own signals (the `mcpq-worker` binary), or,
/// for a worker embedded in another process (`mcpq serve --with-worker`), that
/// process's shutdown flag (it owns the signals then).
pub enum Shutdown {
    /// SIGTERM/SIGINT, first and second.
    Signals(Signals),
    /// Turns true once: the first "signal"; there is no second.
    Flag(tokio::sync::watch::Receiver<bool>),
}

impl Shutdown {
    /// Resolves when shutdown begins, with what began it.
    pub async fn first(&mut self) -> &'static str {
        match self {
            Shutdown::Signals(s) => s.first().await,
            Shutdown::Flag(flag) => {
                let _ = flag.wait_for(|down| *down).await;
                "shutdown of the embedding process"
            }
        }
    }

    /// Resolves at the impatient second signal (never for a flag).
    pub async fn second(&mut self) -> &'static str {
        match self {
            Shutdown::Signals(s) => s.second().await,
            Shutdown::Flag(_) => std::future::pending().await,
        }
    }
}
