//! `[queue]` settings: defined with the rest of the configuration in
//! [`crate::config::queue`] (data flows down: config does not import the queue), and
//! re-exported here under their old path.

pub use crate::config::queue::{QueueSettings, Weights, DEFAULT_MAX_RESULT};
