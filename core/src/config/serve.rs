//! `[serve]`: the HTTP front (`mcpq serve`). Plain data and its validation.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:7717"   # where `mcpq serve` binds (--listen overrides)
//! request_timeout = "30s"     # a request that is not answered by then gets 503
//! max_wait = "5m"             # the longest ?wait= a long poll may ask for
//! max_batch_bytes = 1073741824  # the largest POST /v1/batches body (1 GiB)
//! header_timeout = "10s"      # a request's header must arrive within this, or the
//!                             # connection is closed (also: idle keep-alive)
//! max_connections = 1024      # open connections at most; beyond, accepting waits
//! batch_upload_timeout = "10m"  # a POST /v1/batches body must arrive whole by then
//! max_batch_uploads = 4       # batch uploads at once; beyond: 503 busy
//! [serve.mcp]                # the MCP front: see [`mcp`]
//! expose = ["time__*"]
//! [[serve.tokens]]            # bearer tokens; the secret is read from the named
//! name = "ci"                 # environment variable at start-up, never from the file
//! env = "MCPQ_TOKEN_CI"
//! ```
//!
//! With no `[[serve.tokens]]`, `MCPQ_SERVE_TOKEN` (if set) is the one token, named
//! `default`. With no token at all, `mcpq serve` answers only on a loopback address
//! and refuses to start on any other.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

pub mod mcp;

pub use mcp::McpFrontSettings;

/// The `[serve]` section; see the module doc for defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Address and port to bind (default `127.0.0.1:7717`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer tokens, each with a name (for logs) and the environment variable holding
    /// its secret.
    #[serde(default)]
    pub tokens: Vec<TokenSource>,
    /// Longest time a request may take, long polls excepted (default 30 s).
    #[serde(default = "default_request_timeout", with = "crate::duration")]
    pub request_timeout: Duration,
    /// Longest `?wait=` of a long poll (default 5 min).
    #[serde(default = "default_max_wait", with = "crate::duration")]
    pub max_wait: Duration,
    /// Largest `POST /v1/batches` body in bytes (default 1 GiB); spooled to a private
    /// temporary file, never held in memory.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: u64,
    /// Longest time a client may take to send a request's header, and longest a
    /// kept-alive connection may stay idle, before the connection is closed (default
    /// 10 s; at most 5 min). What keeps slow or silent connections (slowloris) from
    /// holding the server.
    #[serde(default = "default_header_timeout", with = "crate::duration")]
    pub header_timeout: Duration,
    /// Most connections open at once (default 1,024; 1 to [`MAX_CONNECTIONS`]);
    /// beyond it the server stops accepting until one closes. Keep it under the
    /// process's file descriptor limit (`ulimit -n`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest time a `POST /v1/batches` body may take to arrive whole (default 10 min;
    /// each chunk must also come within `request_timeout`).
    #[serde(default = "default_batch_upload_timeout", with = "crate::duration")]
    pub batch_upload_timeout: Duration,
    /// Most batch uploads under way at once (default 4; 1 to [`MAX_BATCH_UPLOADS`]):
    /// each spools to a temporary file and checks every line, so more would only share
    /// the disk and the CPU. One more is answered 503 `busy` with `Retry-After`.
    #[serde(default = "default_max_batch_uploads")]
    pub max_batch_uploads: usize,
    /// `[serve.mcp]`: the MCP front at `/mcp` (and `--stdio`).
    #[serde(default)]
    pub mcp: McpFrontSettings,
}

/// One bearer token: its name and where its secret is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    /// Shown in logs as who made a request (never the secret).
    pub name: String,
    /// The environment variable that holds the secret.
    pub env: String,
}

/// The environment variable read when no `[[serve.tokens]]` is configured.
pub const DEFAULT_TOKEN_ENV: &str = "MCPQ_SERVE_TOKEN";
/// The default port: 7717.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7717";
/// Shortest secret a token may have.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Highest `serve.max_connections`.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Highest `serve.max_batch_uploads`.
pub const MAX_BATCH_UPLOADS: usize = 1024;
/// Longest `serve.header_timeout`.
pub const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(300);

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7717))
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_wait() -> Duration {
    Duration::from_secs(300)
}
fn default_max_batch_bytes() -> u64 {
    1 << 30
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    1024
}
fn default_batch_upload_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_max_batch_uploads() -> usize {
    4
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: default_listen(),
            tokens: Vec::new(),
            request_timeout: default_request_timeout(),
            max_wait: default_max_wait(),
            max_batch_bytes: default_max_batch_bytes(),
            header_timeout: default_header_timeout(),
            max_connections: default_max_connections(),
            batch_upload_timeout: default_batch_upload_timeout(),
            max_batch_uploads: default_max_batch_uploads(),
            mcp: McpFrontSettings::default(),
        }
    }
}

impl ServeSettings {
    /// Checks names, env names and bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            key,
            message: message.to_string(),
        };
        for (i, t) in self.tokens.iter().enumerate() {
            let ok_name = |s: &str| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            if !ok_name(&t.name) {
                return Err(invalid(
                    format!("serve.tokens[{i}].name"),
                    "1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            if !ok_name(&t.env) {
                return Err(invalid(
                    format!("serve.tokens[{i}].env"),
                    "the name of an environment variable (letters, digits, '_')",
                ));
            }
            if self.tokens[..i].iter().any(|o| o.name == t.name) {
                return Err(invalid(
                    format!("serve.tokens[{i}].name"),
                    "two tokens have this name",
                ));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(invalid(
                "serve.request_timeout".into(),
                "must be more than 0",
            ));
        }
        if self.max_wait.is_zero() {
            return Err(invalid("serve.max_wait".into(), "must be more than 0"));
        }
        if self.max_batch_bytes == 0 {
            return Err(invalid(
                "serve.max_batch_bytes".into(),
                "must be more than 0",
            ));
        }
        if self.header_timeout.is_zero() || self.header_timeout > MAX_HEADER_TIMEOUT {
            return Err(invalid(
                "serve.header_timeout".into(),
                "must be more than 0 and at most 5m",
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(invalid(
                "serve.max_connections".into(),
                "must be 1 to 1000000",
            ));
        }
        if self.batch_upload_timeout.is_zero() {
            return Err(invalid(
                "serve.batch_upload_timeout".into(),
                "must be more than 0",
            ));
        }
        if !(1..=MAX_BATCH_UPLOADS).contains(&self.max_batch_uploads) {
            return Err(invalid(
                "serve.max_batch_uploads".into(),
                "must be 1 to 1024",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_loopback_and_bad_tokens_are_refused() {
        let s = ServeSettings::default();
        assert!(s.listen.ip().is_loopback());
        assert!(s.validate().is_ok());
        let bad: ServeSettings =
            toml::from_str("[[tokens]]\nname = \"a b\"\nenv = \"X\"\n").expect("parses");
        assert!(bad.validate().is_err());
        let twice: ServeSettings = toml::from_str(
            "[[tokens]]\nname = \"a\"\nenv = \"X\"\n[[tokens]]\nname = \"a\"\nenv = \"Y\"\n",
        )
        .expect("parses");
        assert!(twice.validate().is_err());
        for bad in [
            "header_timeout = \"0s\"",
            "header_timeout = \"6m\"",
            "max_connections = 0",
            "max_connections = 1000001",
            "batch_upload_timeout = \"0s\"",
            "max_batch_uploads = 0",
            "max_batch_uploads = 1025",
        ] {
            let s: ServeSettings = toml::from_str(bad).expect("parses");
            assert!(s.validate().is_err(), "{bad}");
        }
        let ok: ServeSettings =
            toml::from_str("header_timeout = \"1s\"\nmax_connections = 8").expect("parses");
        assert!(ok.validate().is_ok());
    }
}
