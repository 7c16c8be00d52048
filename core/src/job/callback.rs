//! `options.callback`: where a finished job (or batch) is announced, by a signed HTTP
//! POST (a webhook; the dispatcher is `mcpq_shared::webhook`).
//!
//! ```json
//! {"url": "https://example.com/hooks/mcpq", "secret_env": "MCPQ_WEBHOOK_SECRET"}
//! {"endpoint": "billing"}
//! ```
//!
//! Guarantees (checked here, at submit and again by the dispatcher before each send):
//! - exactly one of `url` (with an optional `secret_env`) or `endpoint` (a name from
//!   the config's `[webhooks.endpoints]`); unknown fields are refused, naming their
//!   path (`options.callback.urll`);
//! - `url` is `http://` or `https://`, at most [`MAX_URL_BYTES`], with a host and no
//!   user name or password in it (a credential in a URL ends up in logs);
//! - `secret_env` and `endpoint` are plain names (at most [`MAX_NAME_BYTES`]).
//!
//! What a callback may name against the configuration (an endpoint that exists, a
//! `secret_env` on the allowlist, a private address only with `allow_private`) is
//! checked by [`crate::config::webhooks::WebhookSettings::check_callback`], which
//! the producer, the HTTP API and the dispatcher share.

use serde::{Deserialize, Serialize};

use super::JobError;

/// Longest callback URL, in bytes: longer ones are refused at submit.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest `secret_env` or `endpoint` name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// A job's or a batch's `callback` (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// Where to POST: `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The worker's environment variable holding the HMAC secret (it must be on the
    /// config's `webhooks.secret_envs` allowlist, or be `webhooks.secret_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// A named endpoint of the config (`[webhooks.endpoints.NAME]`), instead of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl Callback {
    /// A callback to `url`, signed with the secret in `secret_env` (or the default one).
    pub fn url(url: impl Into<String>, secret_env: Option<String>) -> Callback {
        Callback {
            url: Some(url.into()),
            secret_env,
            endpoint: None,
        }
    }

    /// A callback to the configured endpoint `name`.
    pub fn endpoint(name: impl Into<String>) -> Callback {
        Callback {
            url: None,
            secret_env: None,
            endpoint: Some(name.into()),
        }
    }

    /// Checks the shape (see the module doc); `path` is where the callback sits
    /// (`options.callback`), for the error.
    pub fn validate(&self, path: &str) -> Result<(), JobError> {
        let at = |field: &str| format!("{path}.{field}");
        match (&self.url, &self.endpoint) {
            (Some(_), Some(_)) => {
                return Err(JobError::invalid(
                    path,
                    "give either `url` or `endpoint`, not both",
                ))
            }
            (None, None) => {
                return Err(JobError::invalid(
                    path,
                    "needs `url` (with an optional `secret_env`) or `endpoint` (a name from [webhooks.endpoints])",
                ))
            }
            (None, Some(_)) if self.secret_env.is_some() => {
                return Err(JobError::invalid(
                    at("secret_env"),
                    "an endpoint has its own secret_env in the config: leave it out",
                ))
            }
            _ => {}
        }
        if let Some(url) = &self.url {
            check_url(url).map_err(|m| JobError::invalid(at("url"), m))?;
        }
        if let Some(name) = &self.secret_env {
            check_env_name(name).map_err(|m| JobError::invalid(at("secret_env"), m))?;
        }
        if let Some(name) = &self.endpoint {
            check_endpoint_name(name).map_err(|m| JobError::invalid(at("endpoint"), m))?;
        }
        Ok(())
    }

    /// The callback as the JSON text stored with the job in Redis.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a callback is plain data and always serializes")
    }
}

/// Parses a callback URL and checks its shape (see the module doc); the message says
/// what is wrong. Does not judge the address (see `webhooks.allow_private`).
pub fn check_url(url: &str) -> Result<url::Url, String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!(
            "is {} bytes; a callback URL is at most {MAX_URL_BYTES}",
            url.len()
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "must start with http:// or https:// (not {}:)",
            parsed.scheme()
        ));
    }
    if parsed.host().is_none() {
        return Err("has no host".to_string());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "must not carry a user name or password (they would be logged): sign with secret_env instead"
                .to_string(),
        );
    }
    Ok(parsed)
}

/// An environment variable's name: letters, digits and `_`, not starting with a digit.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be an environment variable name (letters, digits, _; at most {MAX_NAME_BYTES} bytes)"
        ))
    }
}

/// An endpoint's name: letters, digits, `_`, `-` and `.`.
pub fn check_endpoint_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be an endpoint name (letters, digits, _, - and .; at most {MAX_NAME_BYTES} bytes)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_url_or_endpoint() {
        Callback::url("https://example.com/h", None)
            .validate("options.callback")
            .expect("url");
        Callback::endpoint("billing")
            .validate("options.callback")
            .expect("endpoint");
        let both = Callback {
            url: Some("https://example.com".into()),
            secret_env: None,
            endpoint: Some("x".into()),
        };
        let e = both.validate("options.callback").expect_err("both");
        assert!(e.to_string().contains("options.callback"), "{e}");
        let none = Callback {
            url: None,
            secret_env: Some("S".into()),
            endpoint: None,
        };
        assert!(none.validate("options.callback").is_err());
    }

    #[test]
    fn urls_are_http_with_a_host_bounded_and_without_credentials() {
        for (url, words) in [
            ("ftp://example.com/x", "http://"),
            ("file:///etc/passwd", "http://"),
            ("not a url", "not a URL"),
            ("https://user:pw@example.com/", "password"),
            ("https://user@example.com/", "user name"),
        ] {
            let e = Callback::url(url, None)
                .validate("options.callback")
                .expect_err(url)
                .to_string();
            assert!(
                e.contains("options.callback.url") && e.contains(words),
                "{url}: {e}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        let e = Callback::url(long, None)
            .validate("options.callback")
            .expect_err("long")
            .to_string();
        assert!(e.contains("at most 2048"), "{e}");
    }

    #[test]
    fn names_are_plain() {
        assert!(check_env_name("MCPQ_WEBHOOK_SECRET").is_ok());
        for bad in ["", "1ABC", "A-B", "A B", "A=B"] {
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_endpoint_name("billing-eu.1").is_ok());
        assert!(check_endpoint_name("a/b").is_err());
    }
}
