//! `[email]`: where attachments go and how big they may be; `[smtp]`: how replies are
//! sent.
//!
//! ```toml
//! [email]
//! attachments_dir = "/var/lib/mcpq/attachments"   # default: $TMPDIR/mcpq-attachments
//! max_attachment = 10485760          # bytes per attachment (default 10 MiB)
//! max_attachments_total = 26214400   # bytes per job (default 25 MiB)
//! retention = "1h"                   # job directories are removed this long after
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[email]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// Root of the per-job attachment directories.
    #[serde(default = "default_dir")]
    pub attachments_dir: PathBuf,
    /// Largest attachment in bytes.
    #[serde(default = "default_max_attachment")]
    pub max_attachment: u64,
    /// Largest total of one job's attachments in bytes.
    #[serde(default = "default_max_total")]
    pub max_attachments_total: u64,
    /// How long a job's attachment directory is kept.
    #[serde(default = "default_retention", with = "crate::duration")]
    pub retention: Duration,
}

fn default_dir() -> PathBuf {
    std::env::temp_dir().join("mcpq-attachments")
}
fn default_max_attachment() -> u64 {
    10 * 1024 * 1024
}
fn default_max_total() -> u64 {
    25 * 1024 * 1024
}
fn default_retention() -> Duration {
    Duration::from_secs(3600)
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            attachments_dir: default_dir(),
            max_attachment: default_max_attachment(),
            max_attachments_total: default_max_total(),
            retention: default_retention(),
        }
    }
}
