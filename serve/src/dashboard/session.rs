//! Dashboard sessions: who is looking, and the CSRF token of their forms.
//!
//! A browser cannot send `Authorization: Bearer` by itself, so the dashboard trades a
//! bearer token, typed once into its login form, for a session cookie. The cookie holds
//! no secret and the server keeps no session store (any number of `mcpq serve` behind a
//! load balancer accept each other's sessions): it is the token's *name* and an expiry,
//! signed with HMAC-SHA256 under a key derived from that token's secret
//! ([`Tokens::session_key`]).
//!
//! Guarantees:
//! - The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//!   page sends it), `Path=/`, and `Secure` when the request came through a TLS proxy
//!   (`X-Forwarded-Proto: https`). It expires after [`SESSION_TTL`]; a forged, altered,
//!   expired or oversized cookie is no session. Changing a token's secret ends its
//!   sessions; removing the token too.
//! - Every form carries a CSRF token: an HMAC of the session cookie under the same
//!   key, compared in constant time ([`Sessions::check_csrf`]); a POST without it, or
//!   from another origin (`Origin` not this `Host`), is refused before anything runs.
//! - With no token configured (`mcpq serve` then listens on loopback only), there is no
//!   login: a caller that passes the loopback checks of [`crate::auth`] gets an
//!   `anonymous` session signed with a key made at start-up (a restart ends it).

use std::time::Duration;

use axum::http::{header, HeaderMap};
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::auth::Tokens;

/// The session cookie's name.
pub const COOKIE: &str = "mcpq_session";

/// How long a session lasts: a working day.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Longest cookie value looked at (a token name is at most a few dozen bytes).
const MAX_COOKIE: usize = 512;

/// The name of the session of a server with no token.
pub const ANONYMOUS: &str = "anonymous";

/// Makes and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    tokens: Tokens,
    /// Signs the anonymous sessions of a server with no token.
    open_key: [u8; 32],
}

/// A valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The token's name (`anonymous` with no token).
    pub who: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl Sessions {
    /// Sessions for `tokens` (none: the anonymous sessions of an open server).
    pub fn new(tokens: Tokens) -> Self {
        let mut open_key = [0u8; 32];
        // A failure of the system's random source leaves an all-zero key: refuse the
        // anonymous sessions then rather than sign them with a known key.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut open_key).is_err()
        {
            tracing::error!(
                "no randomness for the dashboard's session key: anonymous sessions are refused"
            );
        }
        Sessions { tokens, open_key }
    }

    /// True when no token is configured: no login, anonymous sessions.
    pub fn open(&self) -> bool {
        self.tokens.is_empty()
    }

    fn key(&self, who: &str) -> Option<hmac::Key> {
        let raw = if self.open() {
            (who == ANONYMOUS && self.open_key != [0u8; 32]).then_some(self.open_key)
        } else {
            self.tokens.session_key(who)
        }?;
        Some(hmac::Key::new(hmac::HMAC_SHA256, &raw))
    }

    /// The session a bearer token `presented` opens, and its cookie value (`None`: no
    /// such token).
    pub fn login(&self, presented: &[u8], now_ms: u64) -> Option<(Session, String)> {
        let who = self.tokens.who(presented.trim_ascii())?.to_string();
        self.issue(&who, now_ms)
    }

    /// An anonymous session (an open server only).
    pub fn anonymous(&self, now_ms: u64) -> Option<(Session, String)> {
        if !self.open() {
            return None;
        }
        self.issue(ANONYMOUS, now_ms)
    }

    fn issue(&self, who: &str, now_ms: u64) -> Option<(Session, String)> {
        let key = self.key(who)?;
        let expires = now_ms.saturating_add(SESSION_TTL.as_millis() as u64);
        let name = hex(who.as_bytes());
        let mac = hex(hmac::sign(&key, format!("session|{name}|{expires}").as_bytes()).as_ref());
        let value = format!("v1.{name}.{expires}.{mac}");
        let csrf = csrf_of(&key, &value);
        Some((
            Session {
                who: who.to_string(),
                csrf,
            },
            value,
        ))
    }

    /// The session of a request's cookie, if it holds a valid one.
    pub fn of_request(&self, headers: &HeaderMap, now_ms: u64) -> Option<Session> {
        let value = cookie(headers, COOKIE)?;
        self.check(value, now_ms)
    }

    /// The session of cookie value `value`, if valid at `now_ms`.
    pub fn check(&self, value: &str, now_ms: u64) -> Option<Session> {
        if value.len() > MAX_COOKIE {
            return None;
        }
        let mut parts = value.split('.');
        let (Some("v1"), Some(name), Some(expires), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let who = String::from_utf8(unhex(name)?).ok()?;
        let key = self.key(&who)?;
        let mac = unhex(mac)?;
        hmac::verify(&key, format!("session|{name}|{expires}").as_bytes(), &mac).ok()?;
        if expires.parse::<u64>().ok()? <= now_ms {
            return None;
        }
        Some(Session {
            csrf: csrf_of(&key, value),
            who,
        })
    }

    /// True when `presented` is `session`'s CSRF token (constant time).
    pub fn check_csrf(session: &Session, presented: &str) -> bool {
        presented.len() == session.csrf.len()
            && bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes()))
    }
}

/// The `Set-Cookie` value that stores `value` (or, with `None`, removes the cookie).
pub fn set_cookie(value: Option<&str>, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let (value, age) = match value {
        Some(v) => (v, SESSION_TTL.as_secs()),
        None => ("", 0),
    };
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// True when a state-changing request comes from the dashboard's own pages: no
/// `Origin`, or one whose host (and port) is the request's `Host`; and no
/// `Sec-Fetch-Site` other than `same-origin`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" && site.as_bytes() != b"none" {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Some(origin), Some(host)) = (
        origin.to_str().ok(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    // Behind a proxy that rewrites Host, the public name is in X-Forwarded-Host (a page
    // of another site cannot set it on a form post).
    let forwarded = headers
        .get("x-forwarded-host")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(',').next())
        .map(str::trim);
    authority.is_some_and(|a| {
        a.eq_ignore_ascii_case(host) || forwarded.is_some_and(|f| a.eq_ignore_ascii_case(f))
    })
}

/// The value of cookie `name` in a request's `Cookie` headers; `None` when it is sent
/// twice (another site of the same host may plant one: browsers do not separate
/// cookies by port, so which is ours cannot be told).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn csrf_of(key: &hmac::Key, cookie: &str) -> String {
    let tag = hmac::sign(key, format!("csrf|{cookie}").as_bytes());
    hex(&tag.as_ref()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > MAX_COOKIE {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_token() -> Sessions {
        std::env::set_var(
            "MCPQ_TEST_DASHBOARD_TOKEN",
            "a-long-enough-secret-for-tests-123",
        );
        let settings = mcpq_core::config::serve::ServeSettings {
            tokens: vec![mcpq_core::config::serve::TokenSource {
                name: "ops".into(),
                env: "MCPQ_TEST_DASHBOARD_TOKEN".into(),
            }],
            ..Default::default()
        };
        Sessions::new(Tokens::load(&settings).expect("tokens"))
    }

    #[test]
    fn a_login_gives_a_cookie_that_checks_and_a_csrf_token_tied_to_it() {
        let s = with_token();
        assert!(s.login(b"wrong-secret-wrong-secret-wrong", 1_000).is_none());
        let (session, cookie) = s
            .login(b"a-long-enough-secret-for-tests-123", 1_000)
            .expect("login");
        assert_eq!(session.who, "ops");
        assert_eq!(s.check(&cookie, 2_000), Some(session.clone()));
        assert!(Sessions::check_csrf(&session, &session.csrf));
        assert!(!Sessions::check_csrf(&session, "00"));
        // Expired, altered, truncated, foreign.
        let later = 1_000 + SESSION_TTL.as_millis() as u64;
        assert!(s.check(&cookie, later).is_none());
        let altered = cookie.replace(".v1", "").replacen('7', "8", 1);
        assert!(altered == cookie || s.check(&altered, 2_000).is_none());
        let mut longer: Vec<&str> = cookie.split('.').collect();
        let far = (u64::MAX / 2).to_string();
        longer[2] = &far;
        assert!(
            s.check(&longer.join("."), 2_000).is_none(),
            "expiry is signed"
        );
        assert!(s.check(&cookie[..cookie.len() - 2], 2_000).is_none());
        assert!(with_open().check(&cookie, 2_000).is_none());
        assert!(
            s.anonymous(1_000).is_none(),
            "no anonymous session with a token"
        );
    }

    fn with_open() -> Sessions {
        Sessions::new(Tokens::none())
    }

    #[test]
    fn an_open_server_gives_anonymous_sessions_signed_by_its_own_key() {
        let (a, b) = (with_open(), with_open());
        let (session, cookie) = a.anonymous(1_000).expect("anonymous");
        assert_eq!(session.who, ANONYMOUS);
        assert!(a.check(&cookie, 2_000).is_some());
        assert!(b.check(&cookie, 2_000).is_none(), "another process's key");
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_with_its_flags() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mcpq_session=v1.x.y.z; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("v1.x.y.z"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("mcpq_session=planted"),
        );
        assert_eq!(cookie(&headers, COOKIE), None, "two: neither is trusted");
        headers.remove(header::COOKIE);
        let set = set_cookie(Some("v"), &headers);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(!set.contains("Secure"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(set_cookie(None, &headers).ends_with("Max-Age=0; Secure"));
    }

    #[test]
    fn only_same_origin_posts_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://mcpq.example.com"),
        );
        assert!(!same_origin(&h));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("mcpq.example.com"),
        );
        assert!(same_origin(&h), "behind a proxy");
        h.remove("x-forwarded-host");
        h.remove(header::ORIGIN);
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }
}
