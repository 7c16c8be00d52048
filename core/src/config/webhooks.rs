//! `[webhooks]`: how finished jobs and batches are announced to their `callback` (see
//! [`crate::job::callback`]). Plain data, its validation, and the check of a callback
//! against it, which the producer, the HTTP API and the worker's dispatcher share.
//!
//! ```toml
//! [webhooks]
//! secret_env = "MCPQ_WEBHOOK_SECRET"  # signs deliveries whose callback names no secret_env
//! secret_envs = []          # other env vars a job's callback may name as its secret_env
//! max_age = "24h"           # a delivery is retried this long, then it is failed
//! timeout = "10s"           # one POST, connect to last byte
//! retry_base = "5s"         # first retry waits up to this long (full jitter) ...
//! retry_cap = "1h"          # ... doubling per attempt, never more than this
//! retention = "7d"          # ended deliveries (delivered, gone, failed) are kept this long
//! allow_private = false     # true: callbacks may reach loopback and private addresses
//! max_body = 1048576        # bytes (1 MiB): a bigger result is left out of the body
//! concurrency = 8           # deliveries in flight per worker
//!
//! [webhooks.endpoints.billing]   # a named endpoint: jobs say {"endpoint": "billing"}
//! url = "https://billing.example.com/hooks/mcpq"
//! secret_env = "BILLING_WEBHOOK_SECRET"
//! serial = false            # true: one delivery at a time to this endpoint (all workers)
//! ```
//!
//! # Secrets
//! Only names of environment variables are configured; the worker reads the value at
//! send time and never stores or logs it. A job may only name a variable that is
//! `secret_env` or on `secret_envs`: otherwise a job could make workers sign with
//! (and so reveal an oracle for) any variable they hold, such as
//! `AWS_SECRET_ACCESS_KEY`. A delivery is signed when its secret is set; one whose
//! callback (or endpoint) names a `secret_env` that is not set on the worker is not
//! sent unsigned but retried (the error names the variable); one that relies on the
//! default `secret_env`, unset, goes out unsigned.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::job::callback::{check_endpoint_name, check_env_name, check_url};
use crate::job::{Callback, Job, JobError};
use crate::public_address::is_public;

/// The variable that signs deliveries when a callback names none.
pub const DEFAULT_SECRET_ENV: &str = "MCPQ_WEBHOOK_SECRET";
/// 24 h of retries: a receiver down for a day still gets every delivery (the issue's
/// promise); then the delivery is `failed`, listed and retried by hand.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// 10 s per POST: a receiver should answer at once and work later.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// 5 s before the first retry (at most; full jitter), doubling.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(5);
/// 1 h at most between two tries: a receiver back after a long outage waits no more.
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(3600);
/// 7 days: ended deliveries stay listable (and failed ones retryable) for a week.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// 1 MiB per body: receivers (and their proxies) often refuse more; a bigger result is
/// read from the API instead.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// 8 POSTs in flight per worker: deliveries wait on the network, not on the CPU.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The `[webhooks]` section; see the module doc for the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The variable holding the secret of callbacks that name none (default
    /// `MCPQ_WEBHOOK_SECRET`); unset: those deliveries go out unsigned.
    #[serde(default = "default_secret_env")]
    pub secret_env: String,
    /// Other variables a job's callback may name as its `secret_env` (default none).
    #[serde(default)]
    pub secret_envs: Vec<String>,
    /// How long a delivery is retried before it is `failed` (default 24 h).
    #[serde(default = "default_max_age", with = "crate::duration")]
    pub max_age: Duration,
    /// One POST, from connect to the last byte of the answer's head (default 10 s).
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// Upper bound of the first retry's delay (default 5 s); doubles per attempt.
    #[serde(default = "default_retry_base", with = "crate::duration")]
    pub retry_base: Duration,
    /// Upper bound of any retry's delay (default 1 h).
    #[serde(default = "default_retry_cap", with = "crate::duration")]
    pub retry_cap: Duration,
    /// How long an ended delivery is kept (default 7 days).
    #[serde(default = "default_retention", with = "crate::duration")]
    pub retention: Duration,
    /// Allow callbacks to loopback, private, link-local and other non-public addresses
    /// (default false: see [`crate::public_address`]).
    #[serde(default)]
    pub allow_private: bool,
    /// Largest body in bytes (default 1 MiB, at least 4 KiB): a result that would make
    /// it bigger is left out (the body says so; read it with `mcpq result`).
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Deliveries in flight at once per worker (default 8, 1 to 256).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Named endpoints, by name.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// `[webhooks.endpoints.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Where to POST.
    pub url: String,
    /// The variable holding its secret (default: `webhooks.secret_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// One delivery at a time to this endpoint, across all workers (default false).
    #[serde(default)]
    pub serial: bool,
}

/// Where a callback goes, resolved against the settings: what the dispatcher sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL, parsed and checked.
    pub url: url::Url,
    /// The variable holding the secret.
    pub secret_env: String,
    /// True when the callback or its endpoint named `secret_env` itself: then an unset
    /// variable is an error, never an unsigned delivery.
    pub secret_required: bool,
    /// The endpoint's name, for a named endpoint.
    pub endpoint: Option<String>,
    /// One delivery at a time (a serial endpoint).
    pub serial: bool,
}

fn default_secret_env() -> String {
    DEFAULT_SECRET_ENV.to_string()
}
fn default_max_age() -> Duration {
    DEFAULT_MAX_AGE
}
fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_retry_base() -> Duration {
    DEFAULT_RETRY_BASE
}
fn default_retry_cap() -> Duration {
    DEFAULT_RETRY_CAP
}
fn default_retention() -> Duration {
    DEFAULT_RETENTION
}
fn default_max_body() -> usize {
    DEFAULT_MAX_BODY
}
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            secret_env: default_secret_env(),
            secret_envs: Vec::new(),
            max_age: DEFAULT_MAX_AGE,
            timeout: DEFAULT_TIMEOUT,
            retry_base: DEFAULT_RETRY_BASE,
            retry_cap: DEFAULT_RETRY_CAP,
            retention: DEFAULT_RETENTION,
            allow_private: false,
            max_body: DEFAULT_MAX_BODY,
            concurrency: DEFAULT_CONCURRENCY,
            endpoints: BTreeMap::new(),
        }
    }
}

impl WebhookSettings {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("webhooks.{key}"),
            message,
        };
        for (key, d) in [
            ("max_age", self.max_age),
            ("timeout", self.timeout),
            ("retry_base", self.retry_base),
            ("retry_cap", self.retry_cap),
            ("retention", self.retention),
        ] {
            if d.is_zero() {
                return Err(invalid(
                    key,
                    "must be longer than zero, e.g. \"10s\"".into(),
                ));
            }
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(invalid("concurrency", "must be between 1 and 256".into()));
        }
        if !(4096..=64 << 20).contains(&self.max_body) {
            return Err(invalid(
                "max_body",
                "must be between 4096 and 67108864 bytes".into(),
            ));
        }
        check_env_name(&self.secret_env).map_err(|m| invalid("secret_env", m))?;
        for (i, name) in self.secret_envs.iter().enumerate() {
            check_env_name(name).map_err(|m| invalid(&format!("secret_envs[{i}]"), m))?;
        }
        for (name, endpoint) in &self.endpoints {
            let key = |k: &str| format!("endpoints.{name}{k}");
            check_endpoint_name(name).map_err(|m| invalid(&key(""), m))?;
            let url = check_url(&endpoint.url).map_err(|m| invalid(&key(".url"), m))?;
            self.check_literal_address(&url)
                .map_err(|m| invalid(&key(".url"), m))?;
            if let Some(env) = &endpoint.secret_env {
                check_env_name(env).map_err(|m| invalid(&key(".secret_env"), m))?;
            }
        }
        Ok(())
    }

    /// Checks a job's `options.callback` against these settings (see
    /// [`WebhookSettings::check_callback`]); a job without one passes.
    pub fn check_job(&self, job: &Job) -> Result<(), JobError> {
        match &job.options.callback {
            Some(callback) => self.check_callback(callback, "options.callback"),
            None => Ok(()),
        }
    }

    /// Checks a callback (at `path`, for the error) against these settings: its shape,
    /// an endpoint that exists, a `secret_env` that is allowed, no private address
    /// literal unless `allow_private`. Host names are judged when they are resolved, at
    /// send time.
    pub fn check_callback(&self, callback: &Callback, path: &str) -> Result<(), JobError> {
        self.target(callback)
            .map(|_| ())
            .map_err(|(field, message)| JobError::Invalid {
                path: if field.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}.{field}")
                },
                message,
            })
    }

    /// Resolves a callback into where to send it, or says why it cannot be sent:
    /// (the field at fault, `""` for the whole callback; the message).
    pub fn target(&self, callback: &Callback) -> Result<Target, (&'static str, String)> {
        callback.validate("").map_err(|e| match e {
            JobError::Invalid { path, message } => (
                match path.trim_start_matches('.') {
                    "url" => "url",
                    "secret_env" => "secret_env",
                    "endpoint" => "endpoint",
                    _ => "",
                },
                message,
            ),
            other => ("", other.to_string()),
        })?;
        if let Some(name) = &callback.endpoint {
            let endpoint = self.endpoints.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.endpoints.keys().map(String::as_str).collect();
                (
                    "endpoint",
                    format!(
                        "unknown endpoint `{name}` (configured in [webhooks.endpoints]: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })?;
            let url = check_url(&endpoint.url).map_err(|m| ("endpoint", m))?;
            self.check_literal_address(&url)
                .map_err(|m| ("endpoint", m))?;
            return Ok(Target {
                url,
                secret_env: endpoint
                    .secret_env
                    .clone()
                    .unwrap_or_else(|| self.secret_env.clone()),
                secret_required: endpoint.secret_env.is_some(),
                endpoint: Some(name.clone()),
                serial: endpoint.serial,
            });
        }
        let url = callback.url.as_deref().unwrap_or_default();
        let url = check_url(url).map_err(|m| ("url", m))?;
        self.check_literal_address(&url).map_err(|m| ("url", m))?;
        if let Some(env) = &callback.secret_env {
            if *env != self.secret_env && !self.secret_envs.contains(env) {
                return Err((
                    "secret_env",
                    format!(
                        "{env} is not an allowed secret variable: name it in webhooks.secret_envs (or use webhooks.secret_env, {})",
                        self.secret_env
                    ),
                ));
            }
        }
        Ok(Target {
            url,
            secret_env: callback
                .secret_env
                .clone()
                .unwrap_or_else(|| self.secret_env.clone()),
            secret_required: callback.secret_env.is_some(),
            endpoint: None,
            serial: false,
        })
    }

    /// Refuses a URL whose host is a non-public address literal, unless `allow_private`.
    fn check_literal_address(&self, url: &url::Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(format!(
                "{ip} is not a public address (loopback, private, link-local...): refused unless webhooks.allow_private = true"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        let mut s = WebhookSettings {
            secret_envs: vec!["TEAM_SECRET".into()],
            ..WebhookSettings::default()
        };
        s.endpoints.insert(
            "billing".into(),
            Endpoint {
                url: "https://billing.example.com/h".into(),
                secret_env: Some("BILLING_SECRET".into()),
                serial: true,
            },
        );
        s
    }

    #[test]
    fn endpoints_must_exist_and_secrets_must_be_allowed() {
        let s = settings();
        let t = s.target(&Callback::endpoint("billing")).expect("known");
        assert!(t.serial && t.secret_required);
        assert_eq!(t.secret_env, "BILLING_SECRET");
        let e = s
            .check_callback(&Callback::endpoint("nope"), "options.callback")
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("options.callback.endpoint") && e.contains("billing"),
            "{e}"
        );
        let url = "https://example.com/h";
        s.check_callback(&Callback::url(url, Some("TEAM_SECRET".into())), "c")
            .expect("allowed");
        let t = s.target(&Callback::url(url, None)).expect("default secret");
        assert_eq!(t.secret_env, DEFAULT_SECRET_ENV);
        assert!(!t.secret_required);
        let e = s
            .check_callback(
                &Callback::url(url, Some("AWS_SECRET_ACCESS_KEY".into())),
                "options.callback",
            )
            .expect_err("not allowed")
            .to_string();
        assert!(
            e.contains("options.callback.secret_env") && e.contains("webhooks.secret_envs"),
            "{e}"
        );
    }

    #[test]
    fn private_address_literals_need_allow_private() {
        let mut s = settings();
        for url in [
            "http://127.0.0.1:8080/h",
            "http://[::1]/h",
            "http://169.254.169.254/latest",
            "http://10.0.0.8/",
        ] {
            let e = s
                .check_callback(&Callback::url(url, None), "options.callback")
                .expect_err(url)
                .to_string();
            assert!(e.contains("allow_private"), "{url}: {e}");
        }
        s.allow_private = true;
        s.check_callback(&Callback::url("http://127.0.0.1:8080/h", None), "c")
            .expect("allowed");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let mut s = settings();
        s.endpoints.get_mut("billing").expect("billing").url = "ftp://x".into();
        let e = s.validate().expect_err("ftp").to_string();
        assert!(e.contains("webhooks.endpoints.billing.url"), "{e}");
        let s = WebhookSettings {
            concurrency: 0,
            ..WebhookSettings::default()
        };
        assert!(s
            .validate()
            .expect_err("zero")
            .to_string()
            .contains("webhooks.concurrency"));
        let s = WebhookSettings {
            secret_envs: vec!["A-B".into()],
            ..WebhookSettings::default()
        };
        assert!(s
            .validate()
            .expect_err("name")
            .to_string()
            .contains("secret_envs[0]"));
        WebhookSettings::default()
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let doc: String = include_str!("webhooks.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .skip_while(|l| *l != "[webhooks]")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let example: WebhookSettings =
            toml::from_str(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        assert_eq!(example, WebhookSettings::default());
    }
}
