//! Bearer tokens: who may call the API.
//!
//! Tokens come from `[[serve.tokens]]` (a name and the environment variable holding the
//! secret), or, with none configured, from `MCPQ_SERVE_TOKEN` (named `default`). Every
//! route but `/health` needs `Authorization: Bearer <secret>` (the scheme in any case,
//! RFC 9110); a missing or wrong token is 401 `unauthorized`, the same answer for both,
//! after comparing the SHA-256 digest of what was presented against every configured
//! token's digest in constant time (so neither the time, nor the answer, nor the
//! secrets' lengths tell which token came close).
//!
//! Guarantees:
//! - With no token at all, `mcpq serve` refuses to listen on anything but a loopback
//!   address ([`Tokens::check_listen`]); on loopback it is open, for one machine's
//!   programs only: a request with an `Origin` header (what a browser sends when a web
//!   page calls, the way of cross-site request forgery) or with a `Host` that is not
//!   `localhost` or a loopback IP (what DNS rebinding sends) is 403 `forbidden`
//!   ([`local_caller`]). With a token, a page cannot forge the `Authorization` header.
//! - A secret is never logged; the token's name is, as the request's caller.
//! - A secret shorter than [`MIN_TOKEN_BYTES`] or a configured variable that is not set
//!   is a start-up error, never a silently open door.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mcpq_core::config::serve::{ServeSettings, DEFAULT_TOKEN_ENV, MIN_TOKEN_BYTES};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Why the tokens cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A configured variable is not set (or not UTF-8).
    #[error("serve.tokens: token `{name}` reads its secret from ${env}, which is not set")]
    Missing {
        /// The token's name.
        name: String,
        /// The variable.
        env: String,
    },
    /// A secret is too short to be one.
    #[error("serve.tokens: the secret of token `{name}` (${env}) is {len} bytes; at least {MIN_TOKEN_BYTES} are required")]
    TooShort {
        /// The token's name.
        name: String,
        /// The variable.
        env: String,
        /// Its length.
        len: usize,
    },
    /// No token and a non-loopback address.
    #[error("refusing to listen on {0} without a token: anyone who can reach it could submit jobs. Set [[serve.tokens]] in the config or {DEFAULT_TOKEN_ENV}, or listen on 127.0.0.1")]
    OpenToNetwork(SocketAddr),
}

/// One loaded token: its name and the SHA-256 digest of its secret (digests all have
/// the same length, so comparing them tells nothing of the secret's length).
struct Token {
    name: String,
    digest: [u8; 32],
}

/// The SHA-256 digest of `secret`.
fn digest(secret: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
    out
}

/// The credentials of an `Authorization` value `Bearer <token>`, the scheme matched in
/// any case (RFC 9110 §11.1), surrounding spaces trimmed; `None` for another scheme.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(value[7..].trim_ascii())
}

/// The loaded tokens (empty: the API is open, on loopback only).
#[derive(Clone)]
pub struct Tokens(Arc<Vec<Token>>);

/// The caller of a request, put into the request's extensions by [`require`].
#[derive(Clone, Debug)]
pub struct Caller(pub String);

impl Tokens {
    /// No token (for `--stdio`, which has no HTTP listener).
    pub fn none() -> Tokens {
        Tokens(Arc::new(Vec::new()))
    }

    /// Reads every configured token's secret from the environment (see the module docs).
    pub fn load(settings: &ServeSettings) -> Result<Tokens, AuthError> {
        let mut tokens = Vec::new();
        let sources: Vec<(String, String, bool)> = if settings.tokens.is_empty() {
            vec![("default".into(), DEFAULT_TOKEN_ENV.into(), false)]
        } else {
            settings
                .tokens
                .iter()
                .map(|t| (t.name.clone(), t.env.clone(), true))
                .collect()
        };
        for (name, env, required) in sources {
            let secret = match std::env::var(&env) {
                Ok(secret) => secret,
                Err(_) if !required => continue,
                Err(_) => return Err(AuthError::Missing { name, env }),
            };
            let secret = secret.trim().as_bytes().to_vec();
            if secret.len() < MIN_TOKEN_BYTES {
                return Err(AuthError::TooShort {
                    name,
                    env,
                    len: secret.len(),
                });
            }
            tokens.push(Token {
                name,
                digest: digest(&secret),
            });
        }
        Ok(Tokens(Arc::new(tokens)))
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no token is configured (the API is open).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses a non-loopback address when there is no token.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), AuthError> {
        if self.is_empty() && !addr.ip().is_loopback() {
            return Err(AuthError::OpenToNetwork(addr));
        }
        Ok(())
    }

    /// The key a dashboard session of token `name` is signed with (derived from the
    /// digest of its secret, so every `mcpq serve` with the same tokens accepts the
    /// same sessions, and changing a secret ends its sessions).
    pub fn session_key(&self, name: &str) -> Option<[u8; 32]> {
        self.0.iter().find(|t| t.name == name).map(|t| {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(b"mcpq-dashboard-session-v1\0");
            ctx.update(&t.digest);
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            out
        })
    }

    /// The name of the token `presented` is, its digest compared against every token's
    /// in constant time.
    pub fn who(&self, presented: &[u8]) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for token in self.0.iter() {
            if bool::from(token.digest.ct_eq(&presented)) {
                found = Some(token.name.as_str());
            }
        }
        found
    }
}

/// Whether a request is from a program of this machine rather than a web page: no
/// `Origin` header, and a `Host` (if any) that is `localhost` or a loopback IP, with or
/// without a port. What an open (token-less) server answers; see the module docs.
pub fn local_caller(headers: &header::HeaderMap) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{why}: with no token configured, mcpq serve answers only programs of this machine (configure a token in [[serve.tokens]] or MCPQ_SERVE_TOKEN to call it from elsewhere)"),
        ))
    };
    if headers.contains_key(header::ORIGIN) {
        return refuse("a request with an Origin header (a web page's) is refused");
    }
    // A job's webhook callback pointed at this server (allowed when the workers'
    // `webhooks.allow_private` is on): a job must not drive the API it came through.
    let from_webhook = headers.contains_key("x-mcpq-delivery")
        || headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| ua.starts_with("mcpq-webhooks/"));
    if from_webhook {
        return refuse(
            "a webhook delivery (X-Mcpq-Delivery, User-Agent mcpq-webhooks/) is refused",
        );
    }
    for host in headers.get_all(header::HOST) {
        if !host.to_str().is_ok_and(loopback_host) {
            return refuse("the Host header does not name localhost or a loopback address");
        }
    }
    Ok(())
}

/// `localhost` (any case, an optional final dot) or a loopback IP literal (`[::1]` in
/// brackets), each with or without `:port`.
pub fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        return inside
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.parse::<u16>().is_ok()
}

/// The middleware: lets a request through with its [`Caller`], or answers 401 (403
/// for a web page's request to an open server, see [`local_caller`]).
pub async fn require(
    State(tokens): State<Tokens>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if tokens.is_empty() {
        local_caller(request.headers())?;
        request.extensions_mut().insert(Caller("anonymous".into()));
        return Ok(next.run(request).await);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    let Some(name) = presented.and_then(|p| tokens.who(p)) else {
        let mut err = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required: Authorization: Bearer <token>",
        )
        .into_response();
        err.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"mcpq\""),
        );
        return Ok(err);
    };
    request.extensions_mut().insert(Caller(name.to_string()));
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(list: &[(&str, &str)]) -> Tokens {
        Tokens(Arc::new(
            list.iter()
                .map(|(n, s)| Token {
                    name: n.to_string(),
                    digest: digest(s.as_bytes()),
                })
                .collect(),
        ))
    }

    #[test]
    fn each_token_names_its_caller_and_near_misses_name_nobody() {
        let t = tokens(&[("ci", "0123456789abcdef"), ("ops", "fedcba9876543210")]);
        assert_eq!(t.who(b"0123456789abcdef"), Some("ci"));
        assert_eq!(t.who(b"fedcba9876543210"), Some("ops"));
        for bad in [
            &b""[..],
            b"0123456789abcde",
            b"0123456789abcdefX",
            b"0123456789abcdeF",
        ] {
            assert_eq!(t.who(bad), None);
        }
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case_and_other_schemes_are_not_tokens() {
        for ok in [
            &b"Bearer 0123456789abcdef"[..],
            b"bearer 0123456789abcdef",
            b"BEARER  0123456789abcdef ",
            b"bEaReR 0123456789abcdef",
        ] {
            assert_eq!(bearer(ok), Some(&b"0123456789abcdef"[..]), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer0123456789abcdef",
            b"Basic 0123456789abcdef",
            b"Bearerx 0123456789abcdef",
        ] {
            assert_eq!(bearer(bad).filter(|t| !t.is_empty()), None, "{bad:?}");
        }
        let t = tokens(&[("ci", "0123456789abcdef")]);
        assert_eq!(
            bearer(b"BEARER 0123456789abcdef").and_then(|p| t.who(p)),
            Some("ci")
        );
    }

    #[test]
    fn tokens_are_kept_as_digests_of_one_length_whatever_the_secret() {
        let t = tokens(&[("short", "0123456789abcdef"), ("long", &"x".repeat(500))]);
        for token in t.0.iter() {
            assert_eq!(token.digest.len(), 32);
        }
        assert_eq!(t.who("x".repeat(500).as_bytes()), Some("long"));
        assert_eq!(t.who("x".repeat(499).as_bytes()), None);
    }

    #[test]
    fn an_open_server_answers_local_programs_only() {
        for ok in [
            "localhost",
            "LOCALHOST:7717",
            "localhost.:80",
            "127.0.0.1",
            "127.0.0.1:7717",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:7717",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:7717",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:7717",
            "[::2]:7717",
            "[::1]x",
            "::1",
            "localhost:",
            "localhost:99999",
            "localhost:7717:1",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
        let mut headers = header::HeaderMap::new();
        assert!(local_caller(&headers).is_ok(), "no Host: a plain program");
        headers.insert(header::HOST, "localhost:7717".parse().expect("value"));
        assert!(local_caller(&headers).is_ok());
        headers.insert(header::ORIGIN, "null".parse().expect("value"));
        assert_eq!(
            local_caller(&headers).map_err(|e| e.status),
            Err(StatusCode::FORBIDDEN)
        );
        headers.remove(header::ORIGIN);
        // A job's webhook pointed at this server is not a local program.
        for (name, value) in [
            ("x-mcpq-delivery", "job-01JDX6Q6T3N7Z8YV1K0W2M4C5B-1"),
            ("user-agent", "mcpq-webhooks/0.1.0"),
        ] {
            let mut webhook = headers.clone();
            webhook.insert(name, value.parse().expect("value"));
            assert_eq!(local_caller(&webhook).map_err(|e| e.kind), Err("forbidden"));
        }
        headers.insert(header::HOST, "attacker.example".parse().expect("value"));
        assert_eq!(local_caller(&headers).map_err(|e| e.kind), Err("forbidden"));
    }

    #[test]
    fn no_token_means_loopback_only() {
        let none = tokens(&[]);
        assert!(none
            .check_listen("127.0.0.1:7717".parse().expect("addr"))
            .is_ok());
        assert!(none
            .check_listen("[::1]:7717".parse().expect("addr"))
            .is_ok());
        assert!(none
            .check_listen("0.0.0.0:7717".parse().expect("addr"))
            .is_err());
        let one = tokens(&[("ci", "0123456789abcdef")]);
        assert!(one
            .check_listen("0.0.0.0:7717".parse().expect("addr"))
            .is_ok());
    }
}
