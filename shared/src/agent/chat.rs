//! A client for OpenAI-compatible chat completions (`POST {base_url}/chat/completions`
//! with `tools`): OpenAI, vLLM, Ollama, llama.cpp's server and others speak it.
//!
//! Guarantees:
//! - Every request is bounded by the job's deadline (and `llm.request_timeout`).
//! - 429 and 5xx answers, and connection failures, are retried with exponential backoff
//!   and full jitter (honouring `Retry-After`, in seconds or as an HTTP-date, cut to
//!   10 min: `crate::retry_after`), while the deadline allows.
//! - With `rate` or `tokens` set, every request first waits for those cluster-wide
//!   limits (`limiter`, within the deadline), and the `total_tokens` of each answer's
//!   `usage` is charged to the token bucket afterwards. A 429 with `Retry-After` pauses
//!   the model API for every worker of the namespace (cut to 10 min), not only this job.
//! - Any other 4xx is a permanent error quoting the server's message: retrying the same
//!   request cannot help.
//! - An answer is never read past `llm.max_response` bytes (default 2 MiB): a bigger
//!   `Content-Length` is refused before reading, a body without one is read in chunks
//!   and dropped as soon as it passes the limit. Either is a permanent error naming
//!   the limit (`llm_error`).
//!
//! ```toml
//! [llm]
//! base_url = "https://api.openai.com/v1"   # or http://127.0.0.1:11434/v1 (Ollama), ...
//! model = "gpt-4o-mini"                     # a job's llm.model overrides it
//! api_key_env = "OPENAI_API_KEY"            # sent as Authorization: Bearer ...
//! request_timeout = "60s"
//! max_response = 2097152                    # bytes (2 MiB)
//! rate = "500/min"                          # requests, over all workers (default: none)
//! tokens = "200000/min"                     # tokens, from the reported usage (default: none)
//! ```

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::limiter::{LimitError, Limiter};
use crate::queue::limits::{Limits, LLM_ENDPOINT};

pub use crate::config::llm::{LlmSettings, DEFAULT_MAX_RESPONSE};

/// Why the model could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The API refused the request (a 4xx other than 429): not retryable.
    #[error("the model API refused the request: HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's error message (cut to 2,000 characters).
        message: String,
    },
    /// 429/5xx/connection errors until the deadline: retryable later.
    #[error("the model API did not answer successfully before the job's deadline (last: {last})")]
    Unavailable {
        /// The last failure.
        last: String,
    },
    /// The answer's body is bigger than `llm.max_response`: not retryable.
    #[error("the model API's answer is more than {limit} bytes, the limit (llm.max_response); it was not read")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The answer was not a chat completion.
    #[error("the model API answered something that is not a chat completion: {0}")]
    BadAnswer(String),
    /// A cluster-wide limit (`llm.rate`, `llm.tokens`, a 429 pause) held the request
    /// back past the job's deadline: the job fails with `timeout` (retryable).
    #[error("{0}")]
    Limited(LimitError),
}

impl ChatError {
    /// True when trying the job again later could help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ChatError::Unavailable { .. } | ChatError::Limited(_))
    }
}

/// A chat client for one job.
#[derive(Debug, Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    request_timeout: Duration,
    max_response: usize,
    /// The cluster-wide limits of the model API (none: no limiter, as in unit tests).
    limiter: Option<Limiter>,
    limits: Limits,
}

/// One answer: the assistant message and token usage.
#[derive(Debug, Clone)]
pub struct ChatAnswer {
    /// `choices[0].message`, as sent (role, content, tool_calls).
    pub message: Value,
    /// `usage`, if the API reported it.
    pub usage: Option<Value>,
    /// `choices[0].finish_reason`.
    pub finish_reason: Option<String>,
}

fn cut(s: &str) -> String {
    s.chars().take(2000).collect()
}

impl ChatClient {
    /// A client for `settings` (the API key is read from its env var now).
    pub fn new(settings: &LlmSettings) -> Self {
        crate::tls::install();
        ChatClient {
            http: reqwest::Client::new(),
            url: format!(
                "{}/chat/completions",
                settings.base_url.trim_end_matches('/')
            ),
            api_key: settings
                .api_key_env
                .as_ref()
                .and_then(|var| std::env::var(var).ok()),
            request_timeout: settings.request_timeout,
            max_response: settings.max_response,
            limiter: None,
            limits: Limits::of_llm(settings),
        }
    }

    /// Applies the cluster-wide limits and 429 pauses of the model API through
    /// `limiter` (none: not applied).
    pub fn with_limiter(mut self, limiter: Option<Limiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Sends `body` (a chat completions request), retrying as the module doc says.
    pub async fn complete(&self, body: &Value, deadline: Instant) -> Result<ChatAnswer, ChatError> {
        let mut failures = 0u32;
        // Cancellation is the caller's: it drops this future (`agent::llm`).
        let never = CancellationToken::new();
        loop {
            if let Some(limiter) = &self.limiter {
                // No slot is held (the model has no concurrency cap), so the permit
                // needs no keeping.
                limiter
                    .admit(
                        LLM_ENDPOINT,
                        &self.limits,
                        self.request_timeout,
                        deadline,
                        &never,
                    )
                    .await
                    .map_err(ChatError::Limited)?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = match self.once(body, left.min(self.request_timeout)).await {
                Ok(answer) => {
                    self.debit(&answer).await;
                    return Ok(answer);
                }
                Err(Attempt::Permanent(e)) => return Err(e),
                Err(Attempt::Transient {
                    message,
                    retry_after,
                }) => {
                    failures += 1;
                    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
                        .full_jitter(failures);
                    tracing::warn!(attempt = failures, "model API: {message}; retrying");
                    if let (Some(limiter), Some(after)) = (&self.limiter, retry_after) {
                        limiter.pause(LLM_ENDPOINT, after).await;
                    }
                    let wait = retry_after.unwrap_or(backoff);
                    // A hostile `Retry-After: 18446744073709551615` must not overflow.
                    if Instant::now()
                        .checked_add(wait)
                        .is_none_or(|at| at >= deadline)
                    {
                        return Err(ChatError::Unavailable { last: message });
                    }
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Charges the answer's `usage.total_tokens` to the token limit, if one is set.
    async fn debit(&self, answer: &ChatAnswer) {
        let (Some(limiter), Some(tokens)) = (&self.limiter, &self.limits.tokens) else {
            return;
        };
        let used = answer
            .usage
            .as_ref()
            .and_then(|u| u["total_tokens"].as_u64())
            .unwrap_or(0);
        if used > 0 {
            limiter.debit_tokens(LLM_ENDPOINT, used, tokens).await;
        }
    }

    async fn once(&self, body: &Value, timeout: Duration) -> Result<ChatAnswer, Attempt> {
        if timeout.is_zero() {
            return Err(Attempt::Transient {
                message: "no time left before the job's deadline".to_string(),
                retry_after: None,
            });
        }
        let mut request = self.http.post(&self.url).json(body).timeout(timeout);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| Attempt::Transient {
            message: format!("request failed: {e}"),
            retry_after: None,
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(crate::retry_after::from_header);
        let text = self.read_body(response).await?;
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Attempt::Transient {
                message: format!("HTTP {}: {}", status.as_u16(), cut(&text)),
                retry_after,
            });
        }
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| cut(&text));
            return Err(Attempt::Permanent(ChatError::Refused {
                status: status.as_u16(),
                message,
            }));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            Attempt::Permanent(ChatError::BadAnswer(format!("{e}: {}", cut(&text))))
        })?;
        let choice = &v["choices"][0];
        if !choice["message"].is_object() {
            return Err(Attempt::Permanent(ChatError::BadAnswer(format!(
                "no choices[0].message in {}",
                cut(&text)
            ))));
        }
        Ok(ChatAnswer {
            message: choice["message"].clone(),
            usage: v.get("usage").cloned(),
            finish_reason: choice["finish_reason"].as_str().map(str::to_string),
        })
    }
}

impl ChatClient {
    /// The body of `response` as text, never holding more than `max_response` bytes.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<String, Attempt> {
        let limit = self.max_response;
        let too_large = || Attempt::Permanent(ChatError::TooLarge { limit });
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body: Vec<u8> = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len().saturating_add(chunk.len()) > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Attempt::Transient {
                        message: format!("reading the answer failed: {e}"),
                        retry_after: None,
                    })
                }
            }
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

enum Attempt {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Permanent(ChatError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HTTPS is built in: a request to an https URL fails to connect (nothing listens),
    /// it is not refused for lack of TLS support, and nothing panics.
    #[tokio::test]
    async fn https_urls_are_supported() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let client = ChatClient::new(&LlmSettings {
            base_url: format!("https://127.0.0.1:{port}/v1"),
            model: "m".into(),
            api_key_env: None,
            request_timeout: Duration::from_secs(2),
            max_response: DEFAULT_MAX_RESPONSE,
            rate: None,
            tokens: None,
        });
        // Room for one attempt on a loaded machine: building the TLS client and the
        // first connect can take longer than 300 ms in a debug build (seen in CI).
        let deadline = Instant::now() + Duration::from_secs(2);
        let err = client
            .complete(&serde_json::json!({}), deadline)
            .await
            .expect_err("nothing listens");
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(!text.contains("scheme is not"), "{text}");
        // Without a TLS backend reqwest fails in its builder ("scheme is not http"),
        // before sending anything.
        assert!(text.contains("error sending request"), "{text}");
    }
}
