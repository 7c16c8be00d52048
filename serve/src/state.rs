//! What every handler shares: the queue, the job-end subscription, the configuration,
//! and the shutdown signal. Cheap to clone (handles and `Arc`s).

use std::collections::BTreeSet;
use std::sync::Arc;

use mcpq_core::queue::notify::Endings;
use mcpq_core::queue::Producer;
use mcpq_core::Config;
use tokio::sync::watch;

use crate::metrics::ServeMetrics;
use crate::result_reads::ResultReads;

/// The handlers' state.
#[derive(Clone)]
pub struct AppState {
    /// Enqueues and reads jobs.
    pub producer: Producer,
    /// Wakes long polls when jobs end.
    pub endings: Endings,
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// The configured server names (what a job may name).
    pub servers: Arc<BTreeSet<String>>,
    /// Turns true when the server shuts down: long polls answer at once.
    pub shutdown: watch::Receiver<bool>,
    /// The server's own metrics.
    pub metrics: ServeMetrics,
    /// Reads finished jobs' (possibly big) results on a connection of their own.
    pub results: Arc<ResultReads>,
}

impl AppState {
    /// A connection to Redis (a clone of the shared multiplexed one).
    pub fn conn(&self) -> mcpq_shared::queue::Conn {
        self.producer.connection().clone()
    }
}
