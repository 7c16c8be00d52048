//! `[email]` settings: defined with the rest of the configuration in
//! [`crate::config::email`] (data flows down: config does not import the runners), and
//! re-exported here under their old path.

pub use crate::config::email::EmailSettings;
