//! `[serve.mcp]`: mcpq as an MCP server (`mcpq serve` at `/mcp`, or `--stdio`).
//!
//! ```toml
//! [serve.mcp]
//! expose = ["fs__read_text_file", "time__*"]  # gateway tools: SERVER__TOOL patterns
//! queue_tools = true    # submit_job & co.: any job, any server (false: exposed tools only)
//! queue_wait = "30s"    # a plain tools/call waits the job's timeout plus this
//! poll_interval = "1s"  # what tasks/get suggests to clients between polls
//! max_sessions = 1000   # MCP sessions open at once (streamable HTTP), per process
//! ```
//!
//! Guarantees: nothing is exposed by default (the queue tools only); a pattern names a
//! configured server before `__` (a typo is a config error at start-up), and its tool
//! part is a name or a glob with `*`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

use crate::tool_pattern::ToolPattern;
/// Separates a server's name from its tool's in a gateway tool's name.
pub use crate::tool_pattern::SEPARATOR;
/// Most patterns in `expose`.
pub const MAX_PATTERNS: usize = 1000;

/// The `[serve.mcp]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpFrontSettings {
    /// Which tools of the configured servers appear as `SERVER__TOOL` gateway tools:
    /// `SERVER__TOOL`, `SERVER__prefix*` or `SERVER__*`. None by default.
    #[serde(default)]
    pub expose: Vec<String>,
    /// Whether the queue tools (`submit_job`, `submit_batch`, ...) are offered (default
    /// true). They run any job on any configured server, so `expose` bounds only the
    /// gateway tools; set false where an MCP client (a model a tool result may
    /// prompt-inject) must reach the exposed tools and nothing else.
    #[serde(default = "default_queue_tools")]
    pub queue_tools: bool,
    /// A plain (not task) `tools/call` waits for its job's timeout plus this (default
    /// 30 s: time in the queue); past it the client gets an error naming the job, which
    /// goes on (read it with `get_job` / `wait_job`).
    #[serde(default = "default_queue_wait", with = "crate::duration")]
    pub queue_wait: Duration,
    /// The polling interval `tasks/get` suggests (default 1 s).
    #[serde(default = "default_poll_interval", with = "crate::duration")]
    pub poll_interval: Duration,
    /// Most MCP sessions (`Mcp-Session-Id`) open at once in one process (default 1,000;
    /// 1 to [`MAX_SESSIONS`]); beyond, a new session is refused until one closes or
    /// idles out.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

/// Highest `serve.mcp.max_sessions`.
pub const MAX_SESSIONS: usize = 100_000;

fn default_max_sessions() -> usize {
    1000
}

fn default_queue_tools() -> bool {
    true
}
fn default_queue_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for McpFrontSettings {
    fn default() -> Self {
        McpFrontSettings {
            expose: Vec::new(),
            queue_tools: true,
            queue_wait: default_queue_wait(),
            poll_interval: default_poll_interval(),
            max_sessions: default_max_sessions(),
        }
    }
}

impl McpFrontSettings {
    /// Whether `tool` of `server` is a gateway tool.
    pub fn exposes(&self, server: &str, tool: &str) -> bool {
        crate::tool_pattern::any_matches(&self.expose, server, tool)
    }

    /// Whether any tool of `server` may be exposed (its tools are then listed).
    pub fn exposes_server(&self, server: &str) -> bool {
        self.expose
            .iter()
            .filter_map(|p| ToolPattern::parse(p))
            .any(|p| p.server == server)
    }

    /// Checks the patterns against the configured server names, and the bounds.
    pub fn validate<'s>(
        &self,
        servers: impl Iterator<Item = &'s str> + Clone,
    ) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid { key, message };
        if self.expose.len() > MAX_PATTERNS {
            return Err(invalid(
                "serve.mcp.expose".into(),
                format!("at most {MAX_PATTERNS} patterns"),
            ));
        }
        for (i, text) in self.expose.iter().enumerate() {
            let key = format!("serve.mcp.expose[{i}]");
            let Some(p) = ToolPattern::parse(text) else {
                return Err(invalid(
                    key,
                    format!(
                        "`{}` is not SERVER__TOOL (e.g. \"fs__read_text_file\" or \"time__*\")",
                        text.escape_debug()
                    ),
                ));
            };
            if !servers.clone().any(|s| s == p.server) {
                return Err(invalid(
                    key,
                    format!(
                        "no server `{}` is configured ([servers.NAME])",
                        p.server.escape_debug()
                    ),
                ));
            }
        }
        if self.queue_wait.is_zero() {
            return Err(invalid(
                "serve.mcp.queue_wait".into(),
                "must be more than 0".into(),
            ));
        }
        if !(1..=MAX_SESSIONS).contains(&self.max_sessions) {
            return Err(invalid(
                "serve.mcp.max_sessions".into(),
                format!("must be 1 to {MAX_SESSIONS}"),
            ));
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(60) {
            return Err(invalid(
                "serve.mcp.poll_interval".into(),
                "must be more than 0 and at most 1m".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_and_globs_of_their_server_only() {
        let s = McpFrontSettings {
            expose: vec![
                "fs__read_text_file".into(),
                "time__*".into(),
                "git__git_*_log".into(),
            ],
            ..Default::default()
        };
        assert!(s.exposes("fs", "read_text_file"));
        assert!(!s.exposes("fs", "read_text_file2"));
        assert!(!s.exposes("fs", "write_file"));
        assert!(s.exposes("time", "get_current_time"));
        assert!(!s.exposes("times", "x"));
        assert!(s.exposes("git", "git_a_log"));
        assert!(!s.exposes("git", "git_a_logs"));
        assert!(s.exposes_server("time") && !s.exposes_server("echo"));
        assert!(!McpFrontSettings::default().exposes("fs", "read_text_file"));
    }

    #[test]
    fn unknown_servers_and_malformed_patterns_are_refused() {
        let servers = ["fs", "time"];
        for bad in ["fs", "__x", "fs__", "nope__x"] {
            let s = McpFrontSettings {
                expose: vec![bad.into()],
                ..Default::default()
            };
            let err = s.validate(servers.iter().copied()).expect_err(bad);
            assert!(err.to_string().contains("serve.mcp.expose[0]"), "{err}");
        }
        let ok = McpFrontSettings {
            expose: vec!["fs__*".into()],
            ..Default::default()
        };
        assert!(ok.validate(servers.iter().copied()).is_ok());
    }
}
