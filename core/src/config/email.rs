//! `[email]`: where attachments go and how big they may be; `[smtp]`: how replies are
//! sent. Plain data with defaults; `email::settings` and `email::smtp` re-export it.
//!
//! ```toml
//! [email]
//! attachments_dir = "/var/lib/mcpq/attachments"   # default: see below
//! max_attachment = 10485760          # bytes per attachment (default 10 MiB)
//! max_attachments_total = 26214400   # bytes per job (default 25 MiB)
//! max_attachments = 100              # attachments per job
//! max_attachments_dir = 1073741824   # bytes under attachments_dir, all jobs (1 GiB)
//! retention = "1h"                   # a finished job's directory is removed this long after
//! ```
//!
//! The default `attachments_dir` is under the worker's own state directory:
//! `$XDG_STATE_HOME/mcpq/attachments`, else `$HOME/.local/state/mcpq/attachments`
//! (else `$TMPDIR/mcpq-<uid>/attachments`); a service sets `/var/lib/mcpq/attachments`.
//! Never a shared, guessable directory that another local user could create first.

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
    /// Most attachments in one job (default 100).
    #[serde(default = "default_max_count")]
    pub max_attachments: usize,
    /// Largest total of every job's files under `attachments_dir` in bytes (default
    /// 1 GiB): a job whose attachments would go beyond it fails (`attachment_too_large`)
    /// instead of filling the disk.
    #[serde(default = "default_max_dir")]
    pub max_attachments_dir: u64,
    /// How long a job's attachment directory is kept.
    #[serde(default = "default_retention", with = "crate::duration")]
    pub retention: Duration,
}

fn default_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local/state"))
        });
    match state {
        Some(dir) => dir.join("mcpq").join("attachments"),
        None => std::env::temp_dir()
            .join(format!("mcpq-{}", own_uid()))
            .join("attachments"),
    }
}
fn default_max_count() -> usize {
    100
}
fn default_max_dir() -> u64 {
    1024 * 1024 * 1024
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
            max_attachments: default_max_count(),
            max_attachments_dir: default_max_dir(),
            retention: default_retention(),
        }
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP (a local relay, tests).
    None,
    /// STARTTLS upgrade, required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// The `[smtp]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Server host name.
    pub host: String,
    /// Port (default by `security`: 25, 587 or 465).
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub security: Security,
    /// User for AUTH, if any.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The reply's sender.
    pub from: String,
    /// Bound on connecting and each SMTP command (default 30 s).
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// This process's uid, without libc (config is plain data; every libc call lives in
/// `supervisor::unix`): on Linux `/proc/self` belongs to the process's user. `unknown`
/// if `/proc` is not mounted.
fn own_uid() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
