//! `WebhookClient`: the HTTP client that POSTs webhook deliveries, with the SSRF guard.
//!
//! # Guarantees
//! - Only addresses [`mcpq_core::public_address::is_public`] accepts are connected to,
//!   unless `webhooks.allow_private`: an address literal in the URL is judged before
//!   anything is sent; a host name goes through [`GuardedResolver`], which resolves it
//!   once and hands reqwest only the addresses it accepted, so the connection goes to
//!   a checked address (no second lookup a hostile DNS server could answer
//!   differently).
//! - No redirect is followed (a 3xx is an answer like any other: the dispatcher retries
//!   it), no proxy from the environment is used (`HTTP_PROXY` would bypass the guard).
//! - One POST takes at most `webhooks.timeout`, connect included; at most
//!   [`MAX_ANSWER_READ`] bytes of the answer are read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mcpq_core::config::webhooks::WebhookSettings;
use mcpq_core::public_address::is_public;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How much of an answer is read (kept as the delivery's `last_response`).
pub const MAX_ANSWER_READ: usize = 512;

/// What a POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The receiver answered with this status; `text` is the start of its body.
    Answered {
        /// HTTP status.
        status: u16,
        /// At most [`MAX_ANSWER_READ`] bytes of the body, lossy UTF-8.
        text: String,
    },
    /// No answer: connection refused, timeout, TLS or DNS failure (retried).
    Unreachable(String),
    /// Not sent: the target's address is not allowed (never retried).
    Refused(String),
}

/// The resolver's refusal, found again in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses that are not public ({addrs}): refused unless webhooks.allow_private = true")]
pub struct AddressRefused {
    host: String,
    addrs: String,
}

/// Resolves host names and keeps only the addresses the guard accepts (see the module
/// doc).
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                let addrs = found
                    .iter()
                    .take(4)
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(AddressRefused { host, addrs }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// POSTs deliveries (see the module doc). Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    /// A client for these settings; fails only when reqwest cannot build one.
    pub fn new(settings: &WebhookSettings) -> Result<Self, reqwest::Error> {
        crate::tls::install();
        let resolver = GuardedResolver {
            allow_private: settings.allow_private,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("mcpq-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(resolver))
            .build()?;
        Ok(WebhookClient {
            http,
            allow_private: settings.allow_private,
        })
    }

    /// POSTs `body` (JSON) to `url` with `headers`.
    pub async fn post(&self, url: &url::Url, body: Vec<u8>, headers: &[(&str, String)]) -> Sent {
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            if !self.allow_private && !is_public(ip) {
                return Sent::Refused(format!(
                    "{ip} is not a public address: refused unless webhooks.allow_private = true"
                ));
            }
        }
        let mut request = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            // Without the URL: its query may hold a token, and this text is stored.
            Err(e) => return unreachable_or_refused(&e.without_url()),
        };
        let status = response.status().as_u16();
        let mut text = Vec::new();
        while text.len() < MAX_ANSWER_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                // The status is the answer; a body cut short does not change it.
                Ok(None) | Err(_) => break,
            }
        }
        text.truncate(MAX_ANSWER_READ);
        Sent::Answered {
            status,
            text: String::from_utf8_lossy(&text).into_owned(),
        }
    }
}

/// A send error: the guard's refusal (somewhere in the chain), or an unreachable
/// receiver, described with its causes.
fn unreachable_or_refused(e: &reqwest::Error) -> Sent {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<AddressRefused>() {
            return Sent::Refused(refused.to_string());
        }
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    let kind = if e.is_timeout() { "timed out: " } else { "" };
    Sent::Unreachable(format!("{kind}{}", parts.join(": ")))
}
