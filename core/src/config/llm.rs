//! `[llm]`: the model API of LLM-mode jobs. Plain data with defaults (see
//! `agent::chat` for the client and the section's example); `agent::chat` re-exports it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[llm]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// The API's base URL, up to and including `/v1`.
    pub base_url: String,
    /// Default model.
    pub model: String,
    /// Name of the environment variable holding the API key (none: no Authorization).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Bound on one request (default 60 s; the job's deadline bounds it too).
    #[serde(default = "default_request_timeout", with = "crate::duration")]
    pub request_timeout: Duration,
    /// Largest answer body read from the API, in bytes (default 2 MiB).
    #[serde(default = "default_max_response")]
    pub max_response: usize,
    /// Most model requests in any window of the rate's period, over all workers of the
    /// namespace, e.g. `"500/min"` (default: none). A request over it waits, within its
    /// job's deadline (`queue::limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<super::rate::Rate>,
    /// Most tokens per period over all workers, e.g. `"200000/min"`, counted from the
    /// `usage` the model reports after each answer (default: none). Debited after the
    /// fact: a big answer may overdraw it, and the next requests wait until it refills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<super::rate::Rate>,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

/// 2 MiB: a chat completion is text and a few tool calls; a model's longest answers
/// (100k+ tokens) are well under 1 MiB, so this only stops a broken or hostile
/// endpoint. Kept small because the answer is parsed whole into JSON values, which can
/// take about 12 times its size for a hostile shape (`[[],[],...]`).
pub const DEFAULT_MAX_RESPONSE: usize = 2 * 1024 * 1024;
fn default_max_response() -> usize {
    DEFAULT_MAX_RESPONSE
}
